"""The flushers of earlier releases, as far as an upgrade test needs them: their schema
(the migrations they shipped) and their batch statement (a verbatim copy of each in this
folder), run the way they ran it: one global advisory lock per batch, the batch COPYed
into the same staging table, dead letters inserted beside it.

They read and acknowledge the stream like a flusher of the consumer group, so the stream
and the database end up as that release left them: entries acknowledged once committed,
and whatever was appended after that still waiting for the new flusher.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import asyncpg
import msgspec
from redis.asyncio import Redis

from core.constants import GROUP, stream_key
from core.entries import decode
from core.migrate import migration_files
from flusher.ledger_writer import STAGING_COLUMNS, Decoded, staging_record
from flusher.queries import CREATE_STAGING

HERE: Final = Path(__file__).parent

OLD_WRITE_LOCK: Final = 0x4D4F4E57
"""The advisory lock every batch of those releases held while it wrote ("MONW")."""

INSERT_DEAD_LETTER: Final = """
INSERT INTO dead_letters (stream_shard, stream_entry_id, payload, error) VALUES ($1, $2, $3, $4)
ON CONFLICT (stream_shard, stream_entry_id) DO NOTHING
"""


@dataclass(frozen=True)
class OldRelease:
    commit: str
    last_migration: str
    """The newest migration the release shipped (a file name's number)."""

    @property
    def insert(self) -> str:
        return (HERE / f"insert_{self.commit}.sql").read_text()

    async def create_schema(self, conn: asyncpg.Connection) -> None:
        """The release's migrations, recorded as its migrate() recorded them; the batches'
        staging table on ``conn``."""
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, sql in migration_files():
            if version[:3] <= self.last_migration:
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)", version
                    )
        await conn.execute(CREATE_STAGING)  # on this connection, for write_batch

    async def flush(self, redis: Redis, conn: asyncpg.Connection, shard: int = 0) -> int:
        """Deliver every new entry of the shard's stream to this release's statement, one
        batch, and acknowledge it after the commit. Returns the purchases inserted."""
        stream = stream_key(shard)
        try:
            await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except Exception as exc:  # BUSYGROUP: it exists
            if "BUSYGROUP" not in str(exc):
                raise
        reply: Any = await redis.xreadgroup(GROUP, "old-flusher", {stream: ">"}, count=10_000)
        entries = reply[0][1] if reply else []
        good: list[Decoded] = []
        bad: list[tuple[str, bytes, str]] = []
        for raw_id, fields in entries:
            entry_id = raw_id.decode()
            try:
                good.append(Decoded(entry_id, decode(fields)))
            except (ValueError, msgspec.DecodeError) as exc:
                bad.append((entry_id, repr(fields).encode(), str(exc)))
        inserted = await self.write_batch(conn, shard, good, bad)
        if entries:
            await redis.xack(stream, GROUP, *(raw_id for raw_id, _ in entries))
        return inserted

    async def write_batch(
        self,
        conn: asyncpg.Connection,
        shard: int,
        good: list[Decoded],
        bad: list[tuple[str, bytes, str]],
    ) -> int:
        """One batch committed as the release did (``conn`` as ``create_schema`` left it);
        the purchases inserted."""
        inserted = 0
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", OLD_WRITE_LOCK)
            if good:
                await conn.copy_records_to_table(
                    "incoming",
                    records=[staging_record(i, item) for i, item in enumerate(good)],
                    columns=STAGING_COLUMNS,
                )
                counts = await conn.fetchrow(self.insert, shard)
                assert counts is not None
                inserted = counts["inserted"]
            if bad:
                await conn.executemany(INSERT_DEAD_LETTER, [(shard, *b) for b in bad])
        return inserted


RELEASE_943F4B2: Final = OldRelease("943f4b2", "006")
RELEASE_6B597BA: Final = OldRelease("6b597ba", "007")
