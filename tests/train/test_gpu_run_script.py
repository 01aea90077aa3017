"""train/gpu_run.sh (the GPU fine-tuning recipe of weights/README.md): valid bash, and a
call without its three arguments exits 2 with the usage line. (It ran on an H200 and, with
DEVICE=cpu BATCH=2 WORKERS=2, on the CPU; a CPU run takes a minute, too long for the suite.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "train" / "gpu_run.sh"


def test_script_is_valid_bash_and_refuses_missing_arguments():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip() == "usage: train/gpu_run.sh PACK_DIR RUN_DIR SECONDS"
