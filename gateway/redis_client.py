"""The gateway's Redis connection and the consumer group it appends for."""

from __future__ import annotations

from typing import cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from core.constants import GROUP, stream_key
from core.settings import Settings


def connect(settings: Settings, max_connections: int) -> Redis:
    """A client whose pool makes callers wait for a free connection instead of failing.

    No automatic retries: every caller already turns a failure into a 503 (or, for the
    cache, into a PostgreSQL read). With a Redis Cluster: the cluster client.
    """
    if settings.redis_cluster:
        return cluster_client(settings)
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=max_connections,
        timeout=settings.redis_timeout_s,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    return Redis(connection_pool=pool)


async def ensure_groups(redis: Redis, shards: int, group: str = GROUP) -> None:
    """Create each shard's consumer group from the stream's start: no entry is ever skipped."""
    for shard in range(shards):
        try:
            await redis.xgroup_create(stream_key(shard), group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


def cluster_client(settings: Settings) -> Redis:
    """redis-py's cluster client: it routes each single-key command to the key's master.
    Typed as ``Redis`` since every caller uses only commands both clients share."""
    client = RedisCluster.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
    )
    return cast(Redis, client)
