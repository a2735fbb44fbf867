"""Real servers for the whole session, a clean stream and schema for every test.

Redis 8.2 is the default. A test marked ``@both_redis`` (or a module with
``pytestmark = both_redis``) runs once per Redis version, the version in its id
(``[redis8.2]``, ``[redis6.2]``): ``redis_version`` picks the servers, the gateway and the
cluster of that version. Each is started once per session, the first time a test asks for
it, and all of them live until the session ends, so a test's order never restarts one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from core.groups import ensure_groups
from core.settings import Settings
from devstack.processes import free_port
from devstack.redis_cluster import RedisCluster
from devstack.redis_server import (
    DEFAULT_REDIS_VERSION,
    REDIS_VERSIONS,
    RedisServer,
    RedisVersion,
)
from devstack.stack import EmbeddedStack
from flusher.worker import Flusher
from tests.helpers import Gateway, HttpClient, open_flusher

TABLES = (
    "transactions, ledger_transfers, dead_letters, duplicate_entries, stream_incidents,"
    " account_totals"
)


both_redis = pytest.mark.parametrize(
    "redis_version", REDIS_VERSIONS, indirect=True, ids=lambda v: f"redis{v}"
)
"""Run the test on every Redis version the project supports."""


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="monokera-test-"))
    path.chmod(0o755)  # PostgreSQL may run as another user when we are root
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def redis_version(request: pytest.FixtureRequest) -> RedisVersion:
    """The Redis this test runs on: the default unless ``both_redis`` parametrizes it."""
    version: RedisVersion = getattr(request, "param", DEFAULT_REDIS_VERSION)
    return version


@pytest.fixture(scope="session")
def stack(workdir: Path) -> Iterator[EmbeddedStack]:
    """PostgreSQL, shared by every version, and the default version's Redis."""
    stack = EmbeddedStack(workdir / "stack", durable=False)
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def _redis_servers(stack: EmbeddedStack) -> Iterator[dict[RedisVersion, RedisServer]]:
    servers: dict[RedisVersion, RedisServer] = {DEFAULT_REDIS_VERSION: stack.redis}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def redis_server(
    redis_version: RedisVersion, _redis_servers: dict[RedisVersion, RedisServer], workdir: Path
) -> RedisServer:
    """The session's Redis of this test's version, started the first time it is asked for."""
    server = _redis_servers.get(redis_version)
    if server is None:
        server = RedisServer(workdir / f"redis-{redis_version}", free_port(), version=redis_version)
        server.start()
        _redis_servers[redis_version] = server
    return server


@pytest.fixture(scope="session")
def _redis_clusters(workdir: Path) -> Iterator[dict[RedisVersion, RedisCluster]]:
    clusters: dict[RedisVersion, RedisCluster] = {}
    yield clusters
    for cluster in clusters.values():
        cluster.stop()


@pytest.fixture
def redis_cluster(
    redis_version: RedisVersion, _redis_clusters: dict[RedisVersion, RedisCluster], workdir: Path
) -> RedisCluster:
    """Six redis-servers, started only when a test asks: the rest of the suite does not pay."""
    cluster = _redis_clusters.get(redis_version)
    if cluster is None:
        cluster = RedisCluster(workdir / f"redis-cluster-{redis_version}", version=redis_version)
        _redis_clusters[redis_version] = cluster  # stopped at the end even if start fails
        cluster.start()
    return cluster


@pytest.fixture
def settings(stack: EmbeddedStack, redis_server: RedisServer) -> Settings:
    return Settings(
        redis_url=redis_server.url,
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
def _gateways() -> Iterator[dict[RedisVersion, Gateway]]:
    gateways: dict[RedisVersion, Gateway] = {}
    yield gateways
    for gw in gateways.values():
        gw.stop()


@pytest.fixture
def gateway(
    settings: Settings,
    redis_version: RedisVersion,
    _gateways: dict[RedisVersion, Gateway],
    workdir: Path,
) -> Gateway:
    """The session's gateway on this test's Redis, started the first time it is asked for."""
    gw = _gateways.get(redis_version)
    if gw is None:
        gw = Gateway(env_for(settings), workdir / f"gateway-redis{redis_version}.log")
        _gateways[redis_version] = gw
    return gw


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
