"""Open the flusher's workers, each with its Redis client and PostgreSQL ledger writer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from core.redis_clients import flusher_client
from core.settings import Settings
from flusher.config import FlusherConfig
from flusher.ledger_writer import LedgerWriter
from flusher.stream import GroupReader
from flusher.worker import Flusher

Close = Callable[[], Awaitable[None]]


def ledger_writer(settings: Settings, shard: int = 0) -> LedgerWriter:
    return LedgerWriter(
        settings.database_url,
        shard=shard,
        command_timeout_s=settings.pg_command_timeout_s,
        transaction_timeout_s=settings.pg_transaction_timeout_s,
    )


async def open_flushers(
    settings: Settings, shards: list[int] | None = None
) -> tuple[list[Flusher], Close]:
    """A flusher per shard, each with a Redis client and a PostgreSQL connection of its own:
    a slow shard never holds up the others' reads or writes (batches of different shards
    commit side by side unless they share an account), and no client is used by two tasks at once (redis-py's asyncio
    cluster client can fail with an AttributeError when concurrent tasks make it
    initialise or reconnect at the same time; seen in the failover test)."""
    clients: list[Redis] = []
    writers: list[LedgerWriter] = []
    flushers: list[Flusher] = []
    config = FlusherConfig.from_settings(settings)
    for shard in range(settings.stream_shards) if shards is None else shards:
        redis = flusher_client(settings)
        writer = ledger_writer(settings, shard)
        clients.append(redis)
        writers.append(writer)
        reader = GroupReader(redis, settings.consumer_name, shard=shard)
        flushers.append(Flusher(config, reader, writer))

    async def close() -> None:
        for writer in writers:
            await writer.close()
        for redis in clients:
            await redis.aclose()

    return flushers, close
