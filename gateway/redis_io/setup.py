"""What the gateway prepares in Redis at start, tried again in the background until done.

The slot maps, the cluster clients' first discovery, the consumer groups and the append
script. A gateway started while Redis, or every node of the cluster, is away must still
start: purchases get a 503 and /readyz says why. Each of those steps would happen
lazily anyway except the groups (a stream the gateway creates with its group is read by
the flusher from its first entry, whoever starts first), so instead of counting on
that, the whole setup is retried here until it succeeds once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from core.lifetime_task import LifetimeTask
from core.logs import Sparse
from core.redis_clients import REDIS_UNAVAILABLE

log = logging.getLogger("gateway")

Setup = Callable[[], Awaitable[None]]


class RedisSetup:
    def __init__(self, setup: Setup, *, retry_s: float = 0.5, retry_max_s: float = 5.0) -> None:
        self._setup = setup
        self._retry_s = retry_s
        self._retry_max_s = retry_max_s
        self._background = LifetimeTask()
        self._failures = Sparse(log, interval_s=10.0)
        self.done = False

    async def start(self, then: Setup | None = None) -> None:
        """Try once (and ``then``, e.g. a first measurement); if Redis is away, log it, keep
        trying in the background and return: the gateway serves 503s meanwhile."""
        try:
            await self._setup()
            self.done = True
            if then is not None:
                await then()
        except REDIS_UNAVAILABLE as exc:
            log.warning(
                "Redis not reachable at start (%s: %s); serving 503s until it is",
                type(exc).__name__,
                exc,
            )
            if not self.done:
                self._background.run(self._retry())

    async def _retry(self) -> None:
        delay = self._retry_s
        while True:
            await asyncio.sleep(delay)
            try:
                await self._setup()
            except REDIS_UNAVAILABLE as exc:
                self._failures.warning("Redis still not reachable: %s: %s", type(exc).__name__, exc)
                delay = min(delay * 2, self._retry_max_s)
                continue
            self.done = True
            log.warning("Redis reachable: consumer groups and append script in place")
            return

    async def stop(self) -> None:
        await self._background.stop()
