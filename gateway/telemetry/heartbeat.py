"""Each worker's heartbeat for `make run` (``core.heartbeat``): one file per worker process.

/healthz reaches whichever worker the kernel hands the connection to, so polling it could
miss a stopped worker for a long while; a file per worker names the one that went quiet.
The file is touched by a task on the worker's event loop: a worker whose loop is stuck
(SIGSTOP, a blocking call) stops beating even if its threads run on.
"""

from __future__ import annotations

import asyncio
import os

from core.heartbeat import Heartbeat
from core.lifetime_task import LifetimeTask
from core.settings import Settings


class WorkerHeartbeat:
    def __init__(self, settings: Settings) -> None:
        self._beat = Heartbeat.for_settings(settings, f"worker-{os.getpid()}")
        self._background = LifetimeTask()

    def start(self) -> None:
        if self._beat.enabled:
            self._background.run(self._loop())

    async def stop(self) -> None:
        await self._background.stop()
        self._beat.remove()

    async def _loop(self) -> None:
        while True:
            self._beat.beat()
            await asyncio.sleep(self._beat.interval_s)
