"""Which Redis connection serves a key: one server, or the master that owns its slot.

The appender and the read cache ask ``pipe_for(key)`` and get an auto-pipelined
connection (``RedisPipe``). With one Redis that is always the same connection. With a
Redis Cluster (``MONOKERA_REDIS_CLUSTER``), redis-py's cluster client discovers the slot
map and the gateway keeps one pipelined connection per master, so each master gets one
round trip per batch; a command that meets a moved slot, a failover or a dead node fails
(the purchase gets a 503, safe to retry: appends are idempotent) and the slot map is
read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from gateway.redis_pipe import RedisPipe

log = logging.getLogger("gateway.nodes")


class SingleNode:
    def __init__(self, url: str, *, timeout_s: float) -> None:
        self._pipe = RedisPipe(url, timeout_s=timeout_s)

    def pipe_for(self, key: bytes | str) -> RedisPipe:
        return self._pipe

    def all(self) -> list[RedisPipe]:
        return [self._pipe]

    def failed(self, exc: BaseException) -> None:
        """Nothing to relearn: the pipe reconnects by itself."""

    async def close(self) -> None:
        await self._pipe.close()


class ClusterNodes:
    def __init__(self, seed_url: str, *, timeout_s: float) -> None:
        self._seed_url = seed_url
        self._timeout_s = timeout_s
        self._cluster = RedisCluster.from_url(
            seed_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._pipes: dict[str, RedisPipe] = {}
        self._slots: list[str] = []
        self._refresh: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._load_slots()

    async def _load_slots(self) -> None:
        await self._cluster.initialize()
        slots: list[str] = []
        for slot in range(16384):
            node = self._cluster.nodes_manager.get_node_from_slot(slot)
            slots.append(f"{node.host}:{node.port}")
        self._slots = slots

    def pipe_for(self, key: bytes | str) -> RedisPipe:
        if not self._slots:
            raise RedisError("the cluster's slot map is not known yet")
        address = self._slots[self._cluster.keyslot(key)]
        pipe = self._pipes.get(address)
        if pipe is None:
            url = node_url(self._seed_url, address)
            pipe = self._pipes[address] = RedisPipe(url, timeout_s=self._timeout_s)
        return pipe

    def all(self) -> list[RedisPipe]:
        return list(self._pipes.values())

    def failed(self, exc: BaseException) -> None:
        """A node failed or answered MOVED/CLUSTERDOWN: read the slot map again, once."""
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.get_running_loop().create_task(self._reload(exc))

    async def _reload(self, exc: BaseException) -> None:
        log.warning("Redis Cluster node failed (%r); reading the slot map again", exc)
        try:
            await self._cluster.nodes_manager.initialize()
            await self._load_slots()
        except (RedisError, OSError) as again:
            log.warning("slot map not readable yet: %r", again)
            await asyncio.sleep(0.2)  # the next failure schedules another attempt

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await self._refresh
        for pipe in self._pipes.values():
            await pipe.close()
        await self._cluster.aclose()


Nodes = SingleNode | ClusterNodes


def node_url(seed_url: str, address: str) -> str:
    """The seed's scheme and credentials, another node's host:port (cluster mode: db 0)."""
    parts = urlsplit(seed_url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{address}" if credentials else address
    return urlunsplit((parts.scheme, netloc, "/0", "", ""))
