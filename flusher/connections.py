"""Open the flusher's Redis client and PostgreSQL store from the settings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from core.settings import Settings
from flusher.store import PurchaseStore
from flusher.stream import GroupReader
from flusher.worker import Flusher


async def open_flusher(settings: Settings) -> tuple[Flusher, Callable[[], Awaitable[None]]]:
    # The socket timeout must outlast the BLOCK of XREADGROUP.
    redis = Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_s + settings.batch_wait_ms / 1000,
        socket_connect_timeout=settings.redis_timeout_s,
    )
    store = PurchaseStore(
        settings.database_url,
        command_timeout_s=settings.pg_command_timeout_s,
        transaction_timeout_s=settings.pg_transaction_timeout_s,
    )
    flusher = Flusher(settings, GroupReader(redis, settings.consumer_name), store)

    async def close() -> None:
        await store.close()
        await redis.aclose()

    return flusher, close
