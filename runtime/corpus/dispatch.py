"""The work list every runner hands videos out from: pending videos, attempts, retries.

A video whose worker died (killed, OOM) or that failed with an out-of-memory error goes
back to the list until it has died ``retries + 1`` times; then it fails with the reason.
A worker that steps several videos together (``--streams``) holds several at once; when
it dies, every video it held goes back. A video that has died before then runs alone in
its worker (nothing joins it), so a video that kills its worker cannot take others down
with it again.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Callable

from .jobs import VideoJob


class RunnerError(RuntimeError):
    """The runner cannot go on (e.g. no worker can build its backend). ``user_error``:
    the cause is the user's input (bad checkpoint, missing export), exit status 2."""

    def __init__(self, message: str, user_error: bool = False) -> None:
        super().__init__(message)
        self.user_error = user_error


class WorkList:
    """Videos to hand out. on_result(result) is called once per video with its final
    outcome (``attempts`` and ``retried`` added); on_retry(name, reason) at each retry."""

    def __init__(
        self,
        jobs: list[VideoJob],
        retries: int,
        on_result: Callable[[dict], None],
        on_retry: Callable[[str, str], None] | None = None,
    ) -> None:
        self.pending: deque[VideoJob] = deque(jobs)
        self.retries = retries
        self.deaths: Counter[str] = Counter()
        self.in_flight = 0
        self.remaining = len(jobs)
        self._on_result = on_result
        self._on_retry = on_retry

    @property
    def complete(self) -> bool:
        return self.remaining == 0

    def next(self) -> VideoJob | None:
        """The next video to hand to a free worker, or None if none is waiting."""
        if not self.pending:
            return None
        self.in_flight += 1
        return self.pending.popleft()

    def take(self, held: list[VideoJob], capacity: int) -> list[VideoJob]:
        """Videos for a worker that holds ``held`` and steps up to ``capacity`` together:
        the first waiting ones that fit, except that a video that died before goes only to
        an empty worker and alone (and a worker holding one gets nothing more)."""
        if any(self.deaths[job.name] for job in held):
            return []
        taken: list[VideoJob] = []
        for job in self.pending:
            if len(held) + len(taken) >= capacity:
                break
            if self.deaths[job.name]:
                if held or taken:
                    continue
                taken.append(job)
                break
            taken.append(job)
        for job in taken:
            self.pending.remove(job)
        self.in_flight += len(taken)
        return taken

    def finished(self, job: VideoJob, result: dict) -> None:
        """A worker returned ``result`` for ``job`` (done, or failed)."""
        self.in_flight -= 1
        if result.get("status") == "failed" and result.get("retriable"):
            self.in_flight += 1
            self.died(job, result.get("error") or "out of memory")
            return
        self._final(job, result, self.deaths[job.name] + 1)

    def died(self, job: VideoJob, reason: str) -> None:
        """The worker holding ``job`` died: retry it elsewhere, or fail it for good."""
        self.in_flight -= 1
        self.deaths[job.name] += 1
        if self.deaths[job.name] <= self.retries:
            if self._on_retry is not None:
                self._on_retry(job.name, reason)
            self.pending.append(job)
            return
        error = f"failed {self.deaths[job.name]} times, last: {reason}"
        failed = {"name": job.name, "status": "failed", "error": error, "retriable": False, "record": None}
        self._final(job, failed, self.deaths[job.name])

    def _final(self, job: VideoJob, result: dict, attempts: int) -> None:
        self.remaining -= 1
        result = {**result, "attempts": attempts, "retried": attempts > 1}
        self._on_result(result)
