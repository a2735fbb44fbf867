"""A heartbeat file: its modification time says the event loop that touches it still turns.

`make run`'s supervisor restarts what exits, but a process that stops making progress
(SIGSTOP, a deadlock, a syscall that never returns) does not exit. So each process of a
supervised child touches a file of its own in ``Settings.heartbeat_dir`` (one per gateway
worker, one per flusher shard) and the supervisor kills the child when one of them is older
than ``Settings.liveness_timeout_s`` (``devstack.liveness``).

The file is touched from the event loop's own work, never from a thread: a thread would go
on beating while the loop it vouches for is stuck. Touching is throttled to one ``utime``
per ``interval_s``, so calling ``beat`` on every turn of a loop costs a clock read.

`python -m core.heartbeat` reads the files instead of a supervisor: a container healthcheck
for a process with no HTTP server to ask (the flusher in docker-compose.yml).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

from core.settings import Settings

BEATS_PER_TIMEOUT = 5
"""Beats within one liveness timeout: a late beat or two is never taken for a hang."""


class Heartbeat:
    def __init__(self, path: Path | None, interval_s: float = 1.0) -> None:
        self.path = path
        self.interval_s = interval_s
        self._next = 0.0

    @classmethod
    def for_settings(cls, settings: Settings, name: str) -> Heartbeat:
        """``name``'s file in the child's heartbeat folder; a no-op when there is none."""
        return cls.in_folder(settings.heartbeat_dir, name, settings.liveness_timeout_s)

    @classmethod
    def in_folder(cls, folder: str, name: str, liveness_timeout_s: float) -> Heartbeat:
        """``name``'s file in ``folder``; a no-op when ``folder`` is empty. For callers that
        hold these two values rather than the whole Settings (the flusher's config)."""
        path = Path(folder) / name if folder else None
        return cls(path, min(1.0, liveness_timeout_s / BEATS_PER_TIMEOUT))

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def beat(self) -> None:
        """Touch the file, unless it was touched less than ``interval_s`` ago."""
        if self.path is None:
            return
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval_s
        try:
            os.utime(self.path)
        except FileNotFoundError:
            try:
                self.path.touch()
            except OSError:
                self._next = now  # the folder is being reset (a restart): try next turn
        except OSError:
            self._next = now

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def beat_ages(folder: Path) -> dict[str, float] | None:
    """Each heartbeat file's age in seconds, by name; None when ``folder`` does not exist.
    A file removed while the folder is read (its process stopping) is left out."""
    now = time.time()
    try:
        paths = list(folder.iterdir())
    except FileNotFoundError:
        return None
    ages: dict[str, float] = {}
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            ages[path.name] = now - path.stat().st_mtime
    return ages


def quiet(ages: dict[str, float], timeout_s: float) -> str | None:
    """The oldest beat, when it is older than ``timeout_s``, said; None otherwise."""
    if not ages:
        return None
    name, age = max(ages.items(), key=lambda item: item[1])
    if age <= timeout_s:
        return None
    return f"no heartbeat from {name} for {age:.1f} s (timeout {timeout_s:g} s)"


def stale(folder: Path, max_age_s: float) -> str | None:
    """Why the beats in ``folder`` do not vouch for its process (none written yet, or one
    older than ``max_age_s``), or None when every one is fresh."""
    ages = beat_ages(folder)
    if ages is None:
        return f"no heartbeat folder {folder}"
    if not ages:
        return f"no heartbeat in {folder} yet"
    return quiet(ages, max_age_s)


def main() -> int:
    """0 while every file in MONOKERA_HEARTBEAT_DIR is younger than
    MONOKERA_LIVENESS_TIMEOUT_S, else 1 (a healthcheck's "unhealthy") with the reason."""
    settings = Settings.for_command("python -m core.heartbeat")
    if not settings.heartbeat_dir:
        print("MONOKERA_HEARTBEAT_DIR is not set: no heartbeat to check", file=sys.stderr)
        return 1
    reason = stale(Path(settings.heartbeat_dir), settings.liveness_timeout_s)
    if reason is not None:
        print(reason, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
