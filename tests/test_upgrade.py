"""An upgrade from 943f4b2 with its purchases still in Redis: entries of the old stream
format not yet flushed, their idempotency keys still live.

The old purchases are written the way 943f4b2's gateway wrote them: its append script (a
verbatim copy in tests/upgrade/), its idempotency key and marker, its JSON payload.
"""

from __future__ import annotations

import json
from hashlib import blake2b
from pathlib import Path

import asyncpg
from redis.asyncio import Redis

from core.constants import STREAM
from core.events import PurchaseRequest, encoder, request_decoder
from core.settings import Settings
from flusher.worker import Flusher
from ops.trace import trace_transaction
from tests.conftest import both_redis
from tests.helpers import HttpClient, idempotency_records, purchase, v1_entry

OLD_APPEND = (Path(__file__).parent / "upgrade" / "append_943f4b2.lua").read_text()


def request(tx: str, amount: int = 20000) -> PurchaseRequest:
    return request_decoder.decode(json.dumps(purchase(tx, amount=amount)))


async def old_gateway_append(redis: Redis, tx: str, amount: int = 20000) -> str:
    """One purchase appended by 943f4b2's gateway: the new stream entry's id."""
    req = request(tx, amount)
    reply = await redis.eval(  # type: ignore[misc]
        OLD_APPEND,
        2,
        STREAM,
        b"monokera:{0}:idem:" + tx.encode(),
        "900",
        "0",
        blake2b(encoder.encode(req), digest_size=16).hexdigest().encode(),
        v1_entry(req, f"old-req-{tx}", 1_700_000_000_000_000)[b"p"],
    )
    return bytes(reply[0]).decode()


@both_redis
async def test_old_format_entries_are_read_and_flushed_beside_new_ones(
    client: HttpClient, flusher: Flusher, redis: Redis, pg: asyncpg.Connection, settings: Settings
) -> None:
    old_entry = await old_gateway_append(redis, "up-old", amount=4321)
    assert (await client.post("/purchase", json=purchase("up-new"))).status_code == 200
    [(_, old_fields), (_, new_fields)] = await redis.xrange(STREAM)
    assert list(old_fields) == [b"p"] and new_fields[b"v"] == b"2"

    view = await client.get("/transactions/up-old")
    assert view.status_code == 200, view.text
    body = view.json()
    assert (body["status"], body["stream_entry_id"]) == ("ACCEPTED", old_entry)
    assert body["request_id"] == "old-req-up-old"
    assert body["customer_info"]["debit_ammount"] == 4321
    assert [(leg["account"], leg["direction"]) for leg in body["legs"]] == [
        ("23131342342342321", "DEBIT"),
        ("23132131", "CREDIT"),
    ]
    traced = await trace_transaction(redis, pg, "up-old")
    assert (traced.stage, traced.stream_entry_id) == ("ACCEPTED", old_entry)
    assert traced.request_id == "old-req-up-old"

    assert await flusher.drain() == 2
    assert flusher.stats.dead_letters == 0
    rows = await pg.fetch(
        "SELECT transaction_id, amount, customer_account, seller_account, stream_entry_id"
        " FROM transactions ORDER BY transaction_id"
    )
    assert tuple(rows[0])[:4] == ("up-new", 20000, "23131342342342321", "23132131")
    assert tuple(rows[1]) == ("up-old", 4321, "23131342342342321", "23132131", old_entry)
    assert await pg.fetchval("SELECT count(*) FROM ledger_entries") == 4
    persisted = (await client.get("/transactions/up-old")).json()
    assert persisted["status"] == "PERSISTED"


@both_redis
async def test_old_idempotency_keys_still_make_retries_replays_or_conflicts(
    client: HttpClient, redis: Redis
) -> None:
    replayed_entry = await old_gateway_append(redis, "up-replay", amount=500)
    clashed_entry = await old_gateway_append(redis, "up-clash", amount=500)
    batch_entry = await old_gateway_append(redis, "up-batch", amount=500)

    replay = await client.post("/purchase", json=purchase("up-replay", amount=500))
    assert replay.status_code == 200, replay.text
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.headers["x-stream-entry-id"] == replayed_entry

    clash = await client.post("/purchase", json=purchase("up-clash", amount=501))
    assert clash.status_code == 409, clash.text
    assert clash.json()["error"] == "idempotency_conflict"

    batch = await client.post(
        "/purchases",
        json=[purchase("up-batch", amount=500), purchase("up-batch", amount=7)],
    )
    assert batch.status_code == 200, batch.text
    first, second = batch.json()
    assert first["transaction_id"] == "up-batch"
    assert second["error"] == "idempotency_conflict"

    assert await redis.xlen(STREAM) == 3  # nothing appended again
    assert clashed_entry != batch_entry
    assert not await idempotency_records(redis, "up-replay")  # the old key still rules
