"""`make run`'s liveness check: a child whose heartbeat went quiet is hung.

A child's processes touch one file each in the child's folder (``core.heartbeat``). The
child is hung when one file is older than the timeout, or when, a timeout after the start,
fewer files than expected were ever written (a worker stopped before its first beat).
The folder is emptied at each start: a new process never answers for an old one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.heartbeat import beat_ages, quiet


@dataclass(frozen=True)
class Liveness:
    folder: Path
    expected: int
    """Files a healthy child keeps fresh: one per gateway worker, one per flusher shard."""
    timeout_s: float

    def reset(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for path in self.folder.iterdir():
            path.unlink(missing_ok=True)

    def hung(self, uptime_s: float) -> str | None:
        """Why the child counts as hung (the signal missing, and for how long), or None."""
        ages = beat_ages(self.folder) or {}
        silent = quiet(ages, self.timeout_s)
        if silent is not None:
            return silent
        if len(ages) < self.expected and uptime_s > self.timeout_s:
            return (
                f"{self.expected - len(ages)} of {self.expected} heartbeats never written"
                f" in {uptime_s:.1f} s since the start (timeout {self.timeout_s:g} s)"
            )
        return None
