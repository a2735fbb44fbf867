"""`python -m core.migrate`: the one-shot step docker-compose.yml's ``migrate`` service runs
before the gateway serves reads, on a database of its own in the suite's PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator

import asyncpg
import pytest

from core.migrate import migration_files
from devstack.processes import free_port
from devstack.stack import EmbeddedStack
from tests.helpers import ROOT


async def run_migrate(database_url: str, *args: str) -> tuple[int, str]:
    """The command's exit status and what it logged."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "core.migrate",
        *args,
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.fixture
def empty_database(stack: EmbeddedStack) -> Iterator[str]:
    name = f"migrate_command_{os.getpid()}"
    stack.postgres.psql("postgres", f'DROP DATABASE IF EXISTS "{name}"')
    stack.postgres.create_database(name)
    yield stack.postgres.url(name)
    stack.postgres.psql("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_migrate_command_builds_the_schema_of_an_empty_database(
    empty_database: str,
) -> None:
    status, output = await run_migrate(empty_database)
    assert status == 0, output
    conn = await asyncpg.connect(empty_database)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == [version for version, _ in migration_files()]
        assert await conn.fetchval("SELECT to_regclass('transactions')::text") == "transactions"
    finally:
        await conn.close()

    status, output = await run_migrate(empty_database)  # a second run: nothing left to do
    assert status == 0, output
    assert "0 migration(s) applied" in output


async def test_migrate_command_fails_when_postgresql_cannot_be_reached() -> None:
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/monokera"
    status, output = await run_migrate(unreachable, "--wait-s", "0")
    assert status == 1
    assert "unreachable" in output
