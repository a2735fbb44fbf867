"""Every Redis client, built from the settings: the one module that tells one Redis from a
Redis Cluster (``MONOKERA_REDIS_CLUSTER``).

Retry policy, the same for every client: no automatic retries. A command that fails
raises at once, single node or cluster: the gateway answers 503 with Retry-After and
clients retry (appends are idempotent), the flusher retries in its own backoff loop, the
supervisor on its next tick, the operator tools are run again. A client that retried by
itself would hold a request or a batch for seconds behind the error it is about to give
anyway; redis-py's cluster client, left to its default, retries a failed command ten
times. Following a cluster's MOVED/ASK redirection is routing, not a retry: the command
had not run.

The cluster client is typed as ``Redis``: its callers use only commands both clients
share. Its pool size is per node, and beyond it a command fails at once
(``MaxConnectionsError``, a ``ConnectionError``) where the single node's pool waits up to
``redis_timeout_s``: redis-py's cluster client has no waiting pool.

What counts as "Redis unavailable" is named here once (``REDIS_UNREACHABLE``,
``REDIS_UNAVAILABLE``): redis-py's cluster client raises ``RedisClusterException``, which
is not a ``RedisError``, when it cannot read the slot map again after a connection error
("Redis Cluster cannot be connected"), so a bare ``except RedisError`` lets the commonest
cluster outage escape.
"""

from __future__ import annotations

from typing import Final, cast

from redis import Redis as SyncRedis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster as SyncRedisCluster
from redis.crc import key_slot
from redis.exceptions import ClusterError, RedisClusterException, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as SyncRetry

from core.settings import Settings

RETRIES: Final = 0
"""Automatic retries of a failed command, in every client (see the module docstring)."""

SLOTS: Final = 16384

REDIS_UNREACHABLE: Final[tuple[type[Exception], ...]] = (
    OSError,
    RedisConnectionError,
    RedisTimeoutError,
    ClusterError,  # redirected too often: slots moving
    RedisClusterException,  # no node answers for the slot map, or a slot has no master
)
"""Redis, or the cluster, cannot be reached right now: retrying later can succeed. The
flusher retries exactly these (and the transient refusals of ``flusher.errors``). Also
catches the few ``RedisClusterException`` subclasses that are misuse (a cross-slot
transaction): we send none, and a retried bug is still logged on every attempt."""

REDIS_UNAVAILABLE: Final[tuple[type[Exception], ...]] = (RedisError, *REDIS_UNREACHABLE)
"""Anything that makes a Redis call fail, refusals included: the gateway answers 503 (or
leaves Redis's figures out) on these, never 500."""


def no_retry() -> Retry:
    return Retry(NoBackoff(), RETRIES)


def redis_client(
    settings: Settings,
    *,
    max_connections: int | None = None,
    socket_timeout_s: float | None = None,
) -> Redis:
    """An asyncio client. ``max_connections``: a pool that makes callers wait for a free
    connection (per node on a cluster, failing at once there); None: redis-py's default
    pool. ``socket_timeout_s`` defaults to ``redis_timeout_s``."""
    socket_timeout = settings.redis_timeout_s if socket_timeout_s is None else socket_timeout_s
    connect_timeout = settings.redis_timeout_s
    if settings.redis_cluster:
        cluster = RedisCluster.from_url(
            settings.redis_url,
            retry=no_retry(),
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            # The cluster's own default (100 per node) where no size is asked for.
            max_connections=100 if max_connections is None else max_connections,
        )
        return cast(Redis, cluster)
    if max_connections is None:
        return Redis.from_url(
            settings.redis_url,
            retry=no_retry(),
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
        )
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=max_connections,
        timeout=settings.redis_timeout_s,
        retry=no_retry(),
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
    )
    return Redis.from_pool(pool)  # owns the pool: closing the client closes it


def flusher_client(settings: Settings) -> Redis:
    """The flusher's: its socket timeout outlasts its XREADGROUP BLOCK."""
    return redis_client(
        settings, socket_timeout_s=settings.redis_timeout_s + settings.batch_wait_ms / 1000
    )


def sync_redis_client(settings: Settings, timeout_s: float) -> SyncRedis:
    """A blocking client (the supervisor's, which has no event loop)."""
    timeouts = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    retry = SyncRetry(NoBackoff(), RETRIES)
    if settings.redis_cluster:
        cluster = SyncRedisCluster.from_url(settings.redis_url, retry=retry, **timeouts)
        return cast(SyncRedis, cluster)
    return SyncRedis.from_url(settings.redis_url, retry=retry, **timeouts)


async def initialize(redis: Redis) -> None:
    """Discover a cluster's nodes once, before concurrent tasks share the client (redis-py's
    asyncio cluster client can fail when several trigger its first initialisation). Nothing
    to do for one Redis."""
    if isinstance(redis, RedisCluster):
        await redis.initialize()


def is_cluster(redis: Redis) -> bool:
    return isinstance(redis, RedisCluster)


class SlotMap:
    """Which node serves each hash slot: ``read()`` gives one ``host:port`` per slot, or
    None for one Redis (the URL's server serves every key)."""

    def __init__(self, settings: Settings) -> None:
        self._cluster: RedisCluster | None = (
            cast(RedisCluster, redis_client(settings)) if settings.redis_cluster else None
        )
        self._read_before = False

    @property
    def clustered(self) -> bool:
        return self._cluster is not None

    async def read(self) -> list[str] | None:
        """The slot owners as the cluster reports them now (read again on every call)."""
        cluster = self._cluster
        if cluster is None:
            return None
        if self._read_before:
            await cluster.nodes_manager.initialize()
        else:
            await cluster.initialize()
            self._read_before = True
        owners: list[str] = []
        for slot in range(SLOTS):
            node = cluster.nodes_manager.get_node_from_slot(slot)
            owners.append(f"{node.host}:{node.port}")
        return owners

    async def close(self) -> None:
        if self._cluster is not None:
            await self._cluster.aclose()


def slot_of(key: bytes | str) -> int:
    """The key's hash slot (its ``{hash tag}`` when it has one)."""
    return int(key_slot(key.encode() if isinstance(key, str) else key))
