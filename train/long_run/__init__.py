"""A training run that goes on across sessions (``python -m train.long_run``): resumed from
``runs/long/`` if it is there, else from the committed state under ``weights/long_run/``,
else started; the yardstick's held-out sequences are never trained on; its snapshots are
scored on the yardstick's selection half as they come (:mod:`train.long_run.core`)."""

STARTS = ("v3", "scratch")  # where a new long run starts: v3's weights, or a fresh network
