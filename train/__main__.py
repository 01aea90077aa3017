"""``python -m train`` and ``torchrun --nproc_per_node=N -m train``: the stmae-train CLI."""

import sys

from .cli import main

sys.exit(main())
