"""Which Redis connection serves a key: one server, or the master that owns its slot.

The appender, the read cache and the reads ask ``pipe_for(key)`` and get an auto-pipelined
connection (``RedisPipe``). Opened the same way in both deployments (``Nodes(settings)``, then
``start()``); the slot map (``core.redis_clients.SlotMap``) says whether there is more than one server. With
one Redis every key gets the same connection. With a Redis Cluster the gateway keeps one
pipelined connection per master, so each master gets one round trip per batch; a command
that meets a moved slot, a failover or a dead node fails (the purchase gets a 503, safe to
retry: appends are idempotent) and the slot map is read again. Keys with the same hash tag
(a shard's stream and its purchases' idempotency keys) get the same connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit, urlunsplit

from redis.exceptions import RedisError

from core.redis_clients import REDIS_UNAVAILABLE, SlotMap, slot_of
from core.settings import Settings
from gateway.redis_io.pipe import RedisPipe

log = logging.getLogger("gateway.redis_io.nodes")


class Nodes:
    def __init__(self, settings: Settings) -> None:
        self._seed_url = settings.redis_url
        self._timeout_s = settings.redis_timeout_s
        self._map = SlotMap(settings)
        self._single = None if self._map.clustered else self._pipe(settings.redis_url)
        self._pipes: dict[str, RedisPipe] = {}
        self._slots: list[str] = []
        self._refresh: asyncio.Task[None] | None = None

    def _pipe(self, url: str) -> RedisPipe:
        return RedisPipe(url, timeout_s=self._timeout_s)

    async def start(self) -> None:
        """Read the slot map (a cluster), raising if it cannot be read; a gateway that
        starts without it reads it again at the first command that needs it."""
        self._slots = await self._map.read() or []

    def pipe_for(self, key: bytes | str) -> RedisPipe:
        if self._single is not None:
            return self._single
        return self._pipe_at(self._slot_map()[slot_of(key)])

    def _slot_map(self) -> list[str]:
        """The master's address of each slot; raises while it is unknown."""
        if not self._slots:
            error = RedisError("the cluster's slot map is not known yet")
            self.failed(error)  # Redis was away at start: read it now
            raise error
        return self._slots

    def _pipe_at(self, address: str) -> RedisPipe:
        pipe = self._pipes.get(address)
        if pipe is None:
            pipe = self._pipes[address] = self._pipe(node_url(self._seed_url, address))
        return pipe

    def all(self) -> list[RedisPipe]:
        """The connections opened so far (a cluster's are opened at their first key)."""
        return [self._single] if self._single is not None else list(self._pipes.values())

    def masters(self) -> list[RedisPipe]:
        """A connection to every master the slot map names (one Redis: its own), for what
        must look at every node, such as a SCAN; raises while the slot map is unknown."""
        if self._single is not None:
            return [self._single]
        return [self._pipe_at(address) for address in dict.fromkeys(self._slot_map())]

    def failed(self, exc: BaseException) -> None:
        """A cluster node failed or answered MOVED/CLUSTERDOWN: read the slot map again,
        once. One Redis: nothing to relearn, the pipe reconnects by itself."""
        if self._single is None and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.get_running_loop().create_task(self._reload(exc))

    async def _reload(self, exc: BaseException) -> None:
        log.warning("Redis Cluster node failed (%r); reading the slot map again", exc)
        try:
            await self.start()
        except REDIS_UNAVAILABLE as again:
            log.warning("slot map not readable yet: %r", again)
            await asyncio.sleep(0.2)  # the next failure schedules another attempt

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError, *REDIS_UNAVAILABLE):
                await self._refresh
        for pipe in self.all():
            await pipe.close()
        await self._map.close()


def node_url(seed_url: str, address: str) -> str:
    """The seed's scheme and credentials, another node's host:port (cluster mode: db 0)."""
    parts = urlsplit(seed_url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{address}" if credentials else address
    return urlunsplit((parts.scheme, netloc, "/0", "", ""))
