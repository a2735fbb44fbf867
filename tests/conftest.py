"""Real servers for the whole session, a clean stream and schema for every test."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from core.settings import Settings
from devstack.redis_cluster import RedisCluster
from devstack.stack import EmbeddedStack
from flusher.worker import Flusher
from gateway.redis_client import ensure_groups
from tests.helpers import Gateway, HttpClient, open_flusher

TABLES = (
    "transactions, ledger_entries, dead_letters, duplicate_entries, stream_incidents,"
    " account_totals"
)


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="monokera-test-"))
    path.chmod(0o755)  # PostgreSQL may run as another user when we are root
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def stack(workdir: Path) -> Iterator[EmbeddedStack]:
    stack = EmbeddedStack(workdir / "stack", durable=False)
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def redis_cluster(workdir: Path) -> Iterator[RedisCluster]:
    """Six redis-servers, started only when a test asks: the rest of the suite does not pay."""
    cluster = RedisCluster(workdir / "redis-cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def settings(stack: EmbeddedStack) -> Settings:
    return Settings(
        redis_url=stack.redis_url,
        database_url=stack.database_url,
        consumer="test-flusher",
        batch_size=500,
        batch_wait_ms=20,
        claim_idle_ms=500,
        reclaim_interval_s=0.2,
        pg_retry_max_s=0.5,
        stream_retain_s=0,
        shutdown_grace_s=5,
    )


def env_for(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings.as_env()}


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def pg(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.database_url)
    yield conn
    await conn.close()


@pytest.fixture(autouse=True)
async def clean(request: pytest.FixtureRequest) -> None:
    """Every test that touches the stack starts from an empty stream and empty tables."""
    if "stack" not in request.fixturenames and not {"redis", "pg", "gateway"} & set(
        request.fixturenames
    ):
        return
    settings: Settings = request.getfixturevalue("settings")
    redis = Redis.from_url(settings.redis_url)
    await redis.flushdb()
    await ensure_groups(redis, 1)
    await redis.aclose()
    conn = await asyncpg.connect(settings.database_url)
    await conn.execute(f"TRUNCATE {TABLES}")
    await conn.close()


@pytest.fixture(scope="session")
def gateway(settings: Settings, workdir: Path) -> Iterator[Gateway]:
    gw = Gateway(env_for(settings), workdir / "gateway.log")
    yield gw
    gw.stop()


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[HttpClient]:
    http = HttpClient(gateway.url)
    yield http
    await http.close()


@pytest.fixture
async def flusher(settings: Settings) -> AsyncIterator[Flusher]:
    """An in-process flusher for deterministic steps (``drain``, ``process``)."""
    worker, close = await open_flusher(settings)
    yield worker
    await close()
