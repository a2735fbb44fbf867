"""core/redis_clients.py against real servers: every client built from the settings, one
Redis or a cluster, asyncio or blocking, follows the same retry policy (none), and the
gateway's pool sizes reach the cluster client too."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import msgspec
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from core.redis_clients import RETRIES, flusher_client, redis_client, sync_redis_client
from core.settings import Settings
from devstack.redis_cluster import RedisCluster


def cluster(settings: Settings, redis_cluster: RedisCluster) -> Settings:
    redis_cluster.wait_settled()
    return msgspec.structs.replace(settings, redis_url=redis_cluster.seed_url, redis_cluster=True)


def retries_of(client: object) -> int:
    """The retry count a client applies to a failed command."""
    retry = getattr(client, "retry", None)  # the cluster clients keep theirs here
    if retry is None:
        retry = client.get_connection_kwargs()["retry"]  # type: ignore[attr-defined]
    count: int = retry.get_retries()
    return count


async def test_single_and_cluster_clients_have_the_same_retry_policy(
    settings: Settings, redis_cluster: RedisCluster
) -> None:
    on_cluster = cluster(settings, redis_cluster)
    clients = [
        redis_client(settings),
        redis_client(settings, max_connections=4),
        flusher_client(settings),
        redis_client(on_cluster),
        redis_client(on_cluster, max_connections=4),
        flusher_client(on_cluster),
    ]
    blocking = [sync_redis_client(settings, 0.5), sync_redis_client(on_cluster, 0.5)]
    try:
        assert [retries_of(c) for c in clients + blocking] == [RETRIES] * 8
        assert RETRIES == 0
        for client in clients:
            assert await client.ping()
        for blocking_client in blocking:
            assert blocking_client.ping()
    finally:
        for client in clients:
            await client.aclose()
        for blocking_client in blocking:
            blocking_client.close()


async def test_the_gateways_pool_size_reaches_every_cluster_node(
    settings: Settings, redis_cluster: RedisCluster
) -> None:
    client = redis_client(cluster(settings, redis_cluster), max_connections=4)
    try:
        await client.ping()
        nodes = client.get_nodes()  # type: ignore[attr-defined]
        assert nodes and {node.max_connections for node in nodes} == {4}
    finally:
        await client.aclose()


@pytest.fixture
def refusing_server() -> Iterator[tuple[str, list[int]]]:
    """A TCP server that accepts each connection and closes it at once, counting them."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = [0]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted[0] += 1
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0", accepted
    listener.close()
    thread.join(timeout=5)


async def test_a_failed_command_is_not_sent_again(
    settings: Settings, refusing_server: tuple[str, list[int]]
) -> None:
    url, accepted = refusing_server
    broken = msgspec.structs.replace(settings, redis_url=url)
    client: Redis = redis_client(broken)
    try:
        with pytest.raises(RedisConnectionError):
            await client.get("k")
    finally:
        await client.aclose()
    with pytest.raises(RedisConnectionError):
        sync_redis_client(broken, 0.5).get("k")
    await asyncio.sleep(0.1)  # let the server thread count the last one
    assert accepted[0] == 2  # one connection per client: no retry
