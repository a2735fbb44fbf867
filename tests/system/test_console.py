"""The console's JSON and files: the counters of /metrics, the trace of `make trace`,
only GETs, no secrets, and a setting that turns it off."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from redis.asyncio import Redis

from core.constants import PAYLOAD_FIELD, STREAM, idempotency_key
from core.settings import Settings
from flusher.worker import Flusher
from tests.conftest import both_redis, env_for
from tests.helpers import Gateway, HttpClient, purchase, samples, serving
from tests.system.test_trace import trace as make_trace


async def metric(client: HttpClient, name: str) -> float:
    found = samples((await client.get("/metrics")).text, name)
    assert found, name
    return sum(value for _, value in found)


async def overview(client: HttpClient) -> dict[str, object]:
    reply = await client.get("/console/api/overview")
    assert reply.status_code == 200, reply.text
    assert reply.headers["cache-control"] == "no-store"
    body: dict[str, object] = reply.json()
    return body


async def test_overview_reads_the_counters_metrics_reads(client: HttpClient) -> None:
    before = await overview(client)
    for i in range(5):
        assert (await client.post("/purchase", json=purchase(f"ov-{i}"))).status_code == 200
    assert (await client.post("/purchase", json=purchase("ov-0"))).status_code == 200  # replay
    assert (await client.post("/purchase", json={"transaction_id": 1})).status_code == 422

    after = await overview(client)
    assert after["acknowledged_total"] == await metric(client, "monokera_stream_appends_total")
    assert after["replays_total"] == await metric(client, "monokera_idempotent_replays_total")
    assert after["acknowledged_total"] == before["acknowledged_total"] + 5  # type: ignore[operator]
    assert after["replays_total"] == before["replays_total"] + 1  # type: ignore[operator]
    errors_before, errors_after = before["errors_total"], after["errors_total"]
    assert errors_after["422"] == errors_before["422"] + 1  # type: ignore[index]
    assert set(errors_after) == {"400", "409", "413", "415", "422", "500", "503"}  # type: ignore[arg-type]
    [shard] = after["backlog"]  # type: ignore[misc]
    assert (shard["shard"], shard["stream_length"], shard["pending"]) == (0, 5, 0)
    assert after["durability"]["mode"] in {"default", "fsync", "no-aof"}  # type: ignore[index]

    # The sampler reads once a second: the rate shows within a few readings.
    deadline = time.monotonic() + 15
    while (now := await overview(client))["ack_per_s"] == 0:
        assert time.monotonic() < deadline, now
        await asyncio.sleep(0.2)
    assert now["ack_p99_ms"] is not None
    assert any(p["ack_per_s"] > 0 for p in now["history"])  # type: ignore[attr-defined]


async def test_overview_counts_what_postgresql_stores(client: HttpClient, flusher: Flusher) -> None:
    for i in range(3):
        await client.post("/purchase", json=purchase(f"stored-{i}"))
    await flusher.drain()
    await flusher.publish_stats()
    deadline = time.monotonic() + 15  # stored is re-read every few seconds
    while (now := await overview(client))["stored_in_postgres"] != 3:
        assert time.monotonic() < deadline, now
        await asyncio.sleep(0.3)
    assert now["stored_is_estimate"] is False
    assert [f["consumer"] for f in now["flushers"]] == [flusher.name]  # type: ignore[attr-defined]
    assert now["flushers"][0]["rows_written_total"] >= 3  # type: ignore[index]


async def test_trace_endpoint_answers_what_make_trace_prints(
    client: HttpClient, flusher: Flusher, settings: Settings
) -> None:
    ok = await client.post("/purchase", json=purchase("console-traced"))
    accepted = (await client.get("/console/api/trace?tx=console-traced")).json()
    assert (accepted["stage"], accepted["stream_entry_id"]) == (
        "ACCEPTED",
        ok.headers["x-stream-entry-id"],
    )
    await flusher.drain()
    await client.post("/purchase", json=purchase("console-traced"))  # a replay, not a duplicate
    reply = await client.get("/console/api/trace?tx=console-traced")
    assert reply.status_code == 200
    code, printed = make_trace(settings, "tx", "console-traced")
    assert code == 0
    served = reply.json()
    for volatile in ("idempotency_ttl_s", "pending_idle_ms"):
        served.pop(volatile), printed.pop(volatile)
    assert served == printed
    assert served["stage"] == "PERSISTED"


async def test_trace_of_an_unknown_or_missing_id_is_a_clear_error(client: HttpClient) -> None:
    unknown = await client.get("/console/api/trace?tx=never-posted")
    assert unknown.status_code == 404
    assert unknown.json()["message"] == (
        "no trace of transaction 'never-posted': not in Redis, not in PostgreSQL"
    )
    assert (await client.get("/console/api/trace?tx=%00")).status_code == 404
    missing = await client.get("/console/api/trace")
    assert missing.status_code == 422
    assert missing.json()["details"] == [{"path": "tx", "message": "missing"}]


async def test_console_files_have_types_validators_and_no_outside_sources(
    client: HttpClient,
) -> None:
    expected = {
        "/console": "text/html; charset=utf-8",
        "/console/console.css": "text/css; charset=utf-8",
        "/console/console.js": "text/javascript; charset=utf-8",
    }
    for path, content_type in expected.items():
        reply = await client.get(path)
        assert reply.status_code == 200
        assert reply.headers["content-type"] == content_type
        assert reply.headers["cache-control"] == "no-cache"
        assert "default-src 'none'" in reply.headers["content-security-policy"]
        assert not re.search(r"https?://|//[a-z]", reply.text)  # nothing from elsewhere
        again = await client.get(path, headers={"If-None-Match": reply.headers["etag"]})
        assert (again.status_code, again.body) == (304, b"")
    page = (await client.get("/console")).text
    assert re.findall(r'(?:src|href)="([^"]+)"', page) == [
        "/console/console.css",
        "data:,",
        "/console",
        "/console?tx=",
        "/console?account=",
        "/console/console.js",
    ]


async def test_console_is_read_only_and_shows_no_connection_url(
    client: HttpClient, settings: Settings
) -> None:
    for path in ("/console", "/console/api/overview", "/console/api/trace"):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            reply = await client.request(method, path)
            assert reply.status_code == 405, (method, path)
            assert reply.headers["allow"] == "GET"
    await client.post("/purchase", json=purchase("no-secret"))
    bodies = [
        (await client.get(path)).text
        for path in (
            "/console",
            "/console/console.js",
            "/console/api/overview",
            "/console/api/trace?tx=no-secret",
        )
    ]
    for body in bodies:
        for secret in (settings.redis_url, settings.database_url, "redis://", "postgresql://"):
            assert secret not in body


async def test_console_setting_off_answers_404(settings: Settings, workdir: Path) -> None:
    env = {**env_for(settings), "MONOKERA_CONSOLE": "false"}
    async with serving(Gateway(env, workdir / "gateway-no-console.log")) as client:
        for path in ("/console", "/console/console.js", "/console/api/overview"):
            assert (await client.get(path)).status_code == 404
        assert (await client.get("/healthz")).status_code == 200


@both_redis
async def test_trace_of_an_undecodable_entry_says_so_instead_of_a_500(
    client: HttpClient, flusher: Flusher, redis: Redis
) -> None:
    entry = await redis.xadd(STREAM, {PAYLOAD_FIELD: b"\xff not an event"})
    await redis.set(idempotency_key(0, "garbled"), b"0123|" + entry, ex=60)
    reply = await client.get("/console/api/trace?tx=garbled")
    assert reply.status_code == 200, reply.text
    traced = reply.json()
    assert (traced["stage"], traced["stream_entry_id"]) == ("ACCEPTED", entry.decode())
    assert traced["undecodable"].startswith("undecodable event")
    assert (await client.get("/transactions/garbled")).status_code == 404

    await flusher.drain()  # dead-letters it
    traced = (await client.get("/console/api/trace?tx=garbled")).json()
    assert traced["stage"] == "DEAD_LETTERED"
    assert traced["dead_letter"].startswith("undecodable event")
