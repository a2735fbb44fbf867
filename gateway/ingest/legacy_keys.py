"""943f4b2's idempotency keys: read while any is left, then no longer.

Up to 943f4b2 each purchase's idempotency record was a key of its own
(``core.constants.idempotency_key``). After an upgrade such keys live on for up to a window,
and a retry of their purchase must still be a replay, so the append script reads the key of
every purchase it is given (one MGET per call; about 1 µs of Redis CPU a purchase, a
seventh of the script). Only 943f4b2 wrote them: once a whole SCAN of every master finds
none, none can appear again, and the appender stops naming them.

A gateway starts reading them (safe) and checks at once, then every ``interval_s`` while
some are left or Redis cannot be asked; a check that fails is logged and tried again.
``MONOKERA_IDEMPOTENCY_LEGACY_KEYS=false`` turns the lookups and the checks off from the
start. SCAN returns every key present for its whole length, so a finished scan with no
match proves none existed; in a cluster the set of masters must be the same before and
after (keys do not move between them unseen).
"""

from __future__ import annotations

import asyncio
import logging

from core.constants import IDEMPOTENCY_KEY_PATTERN
from core.lifetime_task import LifetimeTask
from core.logs import Sparse
from core.redis_clients import REDIS_UNAVAILABLE
from gateway.ingest.appender import StreamAppender
from gateway.redis_io.nodes import Nodes

log = logging.getLogger("gateway.ingest.legacy_keys")

SCAN_COUNT = 1000
"""Keys a SCAN step looks at: one short step of Redis's time each."""


class LegacyKeyWatch:
    def __init__(self, nodes: Nodes, appender: StreamAppender, interval_s: float = 30.0) -> None:
        self._nodes = nodes
        self._appender = appender
        self._interval_s = interval_s
        self._background = LifetimeTask()
        self._failures = Sparse(log, interval_s=60.0)

    async def any_left(self) -> bool:
        """Whether some master holds a 943f4b2 idempotency key (raises if one cannot say)."""
        masters = self._nodes.masters()
        for pipe in masters:
            cursor = b"0"
            while True:
                cursor, found = await pipe.call(
                    b"SCAN", cursor, b"MATCH", IDEMPOTENCY_KEY_PATTERN, b"COUNT", SCAN_COUNT
                )
                if found:
                    return True
                if cursor == b"0":
                    break
        if self._nodes.masters() != masters:
            raise RuntimeError("the cluster's masters changed during the scan")
        return False

    async def check(self) -> bool:
        """Stop the lookups if no key is left; True once they are stopped."""
        if await self.any_left():
            return False
        self._appender.forget_legacy_keys()
        log.info("no idempotency key of 943f4b2 is left: purchases no longer look them up")
        return True

    def start(self) -> None:
        if self._appender.legacy_keys:
            self._background.run(self._loop())

    async def stop(self) -> None:
        await self._background.stop()

    async def _loop(self) -> None:
        while True:
            try:
                if await self.check():
                    return
            except Exception as exc:  # Redis away, a cluster moving: ask again later
                self._failures.warning(
                    "could not check for 943f4b2 idempotency keys, still reading them: %s: %s",
                    type(exc).__name__,
                    exc,
                    exc_info=not isinstance(exc, REDIS_UNAVAILABLE),
                )
            await asyncio.sleep(self._interval_s)
