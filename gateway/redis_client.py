"""The gateway's Redis connection and the consumer group it appends for."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from core.constants import GROUP, STREAM
from core.settings import Settings


def connect(settings: Settings, max_connections: int) -> Redis:
    """A client whose pool makes callers wait for a free connection instead of failing.

    No automatic retries: a re-sent append could run twice, and every caller already
    turns a failure into a 503 (or, for the cache, into a PostgreSQL read).
    """
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=max_connections,
        timeout=settings.redis_timeout_s,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    return Redis(connection_pool=pool)


async def ensure_group(redis: Redis, stream: str = STREAM, group: str = GROUP) -> None:
    """Create the consumer group from the stream's start, so no entry is ever skipped."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
