"""Every worker's counters for a scrape that lands on any one of them.

Granian's workers are processes, each with its own counters, and a scrape is answered by
whichever worker the connection lands on. So once a second each worker writes a reading
of its counters to a file of its own in a folder private to this gateway
(``Settings.metrics_dir``, made by ``python -m gateway``), and /metrics answers with the
serving worker's live counters plus the others' latest readings (at most a second old),
each series labelled with its worker. A scrape also publishes the serving worker's
reading, so the next scrape, wherever it lands, never shows a worker's counter smaller.

Why files, not Redis or prometheus_client's multiprocess mode: the folder belongs to one
gateway, so a scrape never counts another gateway's workers (Prometheus scrapes each
gateway itself), and /metrics stays whole while Redis is down, which is when it matters.
The multiprocess mode would write an mmap'd value on every increment, on the hot path;
here the hot path is untouched and a worker pays one small file write a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

import msgspec

from core.lifetime_task import LifetimeTask
from gateway.telemetry.counters import WorkerCounters

log = logging.getLogger("gateway")

PUBLISH_INTERVAL_S: Final = 1.0
_SUFFIX: Final = ".json"
_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(WorkerCounters)


class WorkerBoard:
    """The folder of readings: one file per worker, named by its process id."""

    def __init__(self, folder: Path, pid: int | None = None) -> None:
        self._folder = folder
        self._pid = os.getpid() if pid is None else pid
        self._path = folder / f"{self._pid}{_SUFFIX}"
        self._background = LifetimeTask()

    def publish(self, counters: WorkerCounters) -> None:
        """Written aside and renamed, so a reader never sees half a file."""
        scratch = self._path.with_suffix(".tmp")
        scratch.write_bytes(_encoder.encode(counters))
        os.replace(scratch, self._path)

    def others(self) -> list[WorkerCounters]:
        """The other workers' latest readings; a dead worker's file is removed, since
        Granian starts a new worker (a new process id) in its place."""
        found = []
        for path in sorted(self._folder.glob(f"*{_SUFFIX}")):
            pid = int(path.stem) if path.stem.isdigit() else None
            if pid is None or pid == self._pid:
                continue
            if not _alive(pid):
                path.unlink(missing_ok=True)
                continue
            with contextlib.suppress(OSError, msgspec.DecodeError):
                found.append(_decoder.decode(path.read_bytes()))
        return found

    def start(self, read: Callable[[], WorkerCounters]) -> None:
        self._background.run(self._loop(read))

    async def stop(self) -> None:
        """Stop publishing and take this worker's file away: its counters go with it."""
        await self._background.stop()
        self._path.unlink(missing_ok=True)

    async def _loop(self, read: Callable[[], WorkerCounters]) -> None:
        while True:
            try:
                self.publish(read())
            except OSError as exc:  # a full disk must not stop the worker
                log.warning("could not publish this worker's counters: %s", exc)
            await asyncio.sleep(PUBLISH_INTERVAL_S)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
