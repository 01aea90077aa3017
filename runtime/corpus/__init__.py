"""Many videos at once: a job list, per-video records, and runners (in this process,
local worker processes, or Ray actors). Nothing is lost and nothing is done twice: a
video is marked done only after its last mask, a rerun skips finished videos and redoes
unfinished ones, and a worker that dies has its videos retried elsewhere.

- :mod:`runtime.corpus.jobs`: the input layouts -> :class:`VideoJob` list.
- :mod:`runtime.corpus.records`: output ownership, done records, clearing partial output.
- :mod:`runtime.corpus.worker`: one worker: a backend and the per-video loop.
- :mod:`runtime.corpus.batch_worker`: a worker's videos stepped together (``--streams``).
- :mod:`runtime.corpus.local_pool`: N local worker processes (no Ray).
- :mod:`runtime.corpus.ray_runner`: one Ray actor per GPU or per group of CPU cores.
- :mod:`runtime.corpus.run`: :func:`run_corpus`, the plan / dispatch / summary.

Ray is imported only inside :mod:`runtime.corpus.ray_runner`; this package imports nothing
heavy until a run starts (``--help`` stays instant).
"""
