"""The idempotency record (core/idempotency.py) against the real append script and a real
Redis: what the script stores is what the module parses, and a transaction_id leads to
its accepted event."""

from __future__ import annotations

from redis.asyncio import Redis

from core.constants import idempotency_bucket_prefix, idempotency_key, shard_of, stream_key
from core.entries import SCRIPT_HEADER, values
from core.events import PurchaseRequest, encoder, request_decoder
from core.idempotency import (
    REACH,
    Appended,
    ClientLookups,
    Outcome,
    buckets_to_read,
    find_accepted,
    fingerprint,
    outcome,
    parse_record,
    record,
)
from gateway.ingest.appender import APPEND_SCRIPT
from tests.conftest import both_redis
from tests.helpers import idempotency_records, purchase


def decoded(tx: str, amount: int = 1500) -> PurchaseRequest:
    return request_decoder.decode(encoder.encode(purchase(tx, amount=amount)))


async def append(redis: Redis, tx: str, req: PurchaseRequest, shards: int = 1) -> bytes:
    """One purchase through append.lua, as the gateway sends it; the script's reply."""
    shard = shard_of(tx, shards)
    reply = await redis.eval(  # type: ignore[misc]
        APPEND_SCRIPT.decode(),
        2,
        stream_key(shard),
        idempotency_key(shard, tx),
        "900",
        "0",
        "450",
        str(REACH),
        "1",
        idempotency_bucket_prefix(shard),
        *SCRIPT_HEADER,
        fingerprint(encoder.encode(req)),
        *values(req, "req-1", 1_700_000_000_000_000),
    )
    return bytes(reply[0])


def test_fingerprint_is_the_same_for_the_same_purchase_and_differs_otherwise() -> None:
    a, b = decoded("fp-1"), decoded("fp-1")
    assert fingerprint(encoder.encode(a)) == fingerprint(encoder.encode(b))
    assert fingerprint(encoder.encode(a)) != fingerprint(encoder.encode(decoded("fp-1", 1501)))
    assert len(fingerprint(encoder.encode(a))) == 8  # 64 bits, raw


@both_redis
async def test_the_script_stores_the_record_this_module_writes_and_parses(redis: Redis) -> None:
    req = decoded("marker-1")
    entry_id = await append(redis, "marker-1", req)
    [(bucket, stored)] = (await idempotency_records(redis, "marker-1")).items()
    assert bucket in buckets_to_read(0, 900)
    assert stored == record(fingerprint(encoder.encode(req)), entry_id)
    assert parse_record(stored) == (fingerprint(encoder.encode(req)), entry_id)
    assert not await redis.exists(idempotency_key(0, "marker-1"))  # no key per purchase


@both_redis
async def test_the_scripts_replies_become_accepted_replayed_and_conflict(redis: Redis) -> None:
    req = decoded("outcome-1")
    mine = fingerprint(encoder.encode(req))
    first = await append(redis, "outcome-1", req)
    assert outcome(first, mine) == Appended(Outcome.ACCEPTED, first)
    again = await append(redis, "outcome-1", req)
    assert outcome(again, mine) == Appended(Outcome.REPLAYED, first)
    other = decoded("outcome-1", amount=99)
    clash = await append(redis, "outcome-1", other)
    assert outcome(clash, fingerprint(encoder.encode(other))) == Appended(Outcome.CONFLICT, first)
    assert await redis.xlen(stream_key(0)) == 1


@both_redis
async def test_find_accepted_goes_from_a_transaction_id_to_its_stream_entry(
    redis: Redis,
) -> None:
    lookups = ClientLookups(redis)
    assert await find_accepted(lookups, "never-seen", 4, 900) is None
    req = decoded("find-1")
    entry_id = await append(redis, "find-1", req, shards=4)
    found = await find_accepted(lookups, "find-1", 4, 900)
    assert found is not None
    assert found.entry_id == entry_id.decode()
    assert found.event is not None
    assert (found.event.transaction_id, found.event.request_id) == ("find-1", "req-1")
    # The entry trimmed after its flush: the record still names it, the event is gone.
    await redis.xdel(stream_key(shard_of("find-1", 4)), entry_id)
    gone = await find_accepted(lookups, "find-1", 4, 900)
    assert gone is not None and (gone.entry_id, gone.event) == (entry_id.decode(), None)
