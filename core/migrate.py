"""Apply the SQL files in core/migrations once each, in name order, under an advisory lock.

`python -m core.migrate` does it once for ``DATABASE_URL`` and exits: the one-shot step a
deployment runs before the gateway serves reads (docker-compose.yml's ``migrate``). The
flusher and `make run` migrate at their start as well; done twice, it applies nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from importlib.resources import files

import asyncpg

from core import logs
from core.constants import PG_MIGRATION_LOCK
from core.pg_errors import PG_UNREACHABLE
from core.settings import Settings, redact

log = logging.getLogger("migrate")

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


async def migrate_url(dsn: str, wait_s: float = 0.0) -> list[str]:
    """Connect to ``dsn`` and migrate. For up to ``wait_s`` a PostgreSQL that cannot be
    reached yet (a container starting beside this one) is tried again every second."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            conn = await asyncpg.connect(dsn)
            break
        except PG_UNREACHABLE as exc:
            if time.monotonic() >= deadline:
                raise
            log.info("PostgreSQL not reachable yet (%r), trying again", exc)
            await asyncio.sleep(1.0)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.migrate", description=__doc__)
    parser.add_argument(
        "--wait-s",
        type=float,
        default=30.0,
        help="how long to keep trying while PostgreSQL cannot be reached (default: 30)",
    )
    args = parser.parse_args(argv)
    settings = Settings.for_command("python -m core.migrate")
    logs.configure(settings.log_level)
    target = redact(settings.database_url)
    try:
        applied = asyncio.run(migrate_url(settings.database_url, args.wait_s))
    except PG_UNREACHABLE as exc:
        log.error("PostgreSQL at %s unreachable: %r", target, exc)
        logs.flush()
        return 1
    log.info("%s: %d migration(s) applied: %s", target, len(applied), ", ".join(applied) or "-")
    return 0


if __name__ == "__main__":
    sys.exit(main())
