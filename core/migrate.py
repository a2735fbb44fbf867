"""Apply the SQL files in core/migrations once each, in name order, under an advisory lock."""

from __future__ import annotations

from importlib.resources import files

import asyncpg

from core.constants import PG_MIGRATION_LOCK

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text        PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


def migration_files() -> list[tuple[str, str]]:
    folder = files("core") / "migrations"
    found = [(p.name, p.read_text()) for p in folder.iterdir() if p.name.endswith(".sql")]
    return sorted(found)


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Returns the versions applied now; safe to call from many processes at once."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", PG_MIGRATION_LOCK)
    try:
        await conn.execute(_CREATE_LEDGER)
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", PG_MIGRATION_LOCK)
    return applied
