"""A component's one task for its whole lifetime: started with it, cancelled when it stops.

Not Starlette's BackgroundTask (work run after a response is sent): this one is a
component's loop, such as a periodic check, that lives as long as the component does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


class LifetimeTask:
    """Runs one coroutine for the component's lifetime; ``stop`` cancels it and waits."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def run(self, work: Coroutine[Any, Any, None]) -> None:
        self._task = asyncio.get_running_loop().create_task(work)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
