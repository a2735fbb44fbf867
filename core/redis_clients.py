"""The Redis client of the flusher and the operator tools, built from the settings.

One Redis or a cluster (``MONOKERA_REDIS_CLUSTER``): the cluster client is typed as
``Redis`` since its callers use only commands both clients share. The gateway opens its
own, with pools that make callers wait (``gateway/redis_client.py``).
"""

from __future__ import annotations

from typing import cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from core.settings import Settings


def redis_client(settings: Settings) -> Redis:
    # The socket timeout must outlast the flusher's XREADGROUP BLOCK.
    socket_timeout = settings.redis_timeout_s + settings.batch_wait_ms / 1000
    if settings.redis_cluster:
        cluster = RedisCluster.from_url(
            settings.redis_url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=settings.redis_timeout_s,
        )
        return cast(Redis, cluster)
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=settings.redis_timeout_s,
    )
