"""Inspect the pipeline directly: one purchase end to end, or the stream as a whole.

    python -m ops.trace tx TRANSACTION_ID [--json]     (make trace TX=...)
    python -m ops.trace stream [--json]                (make stream)

For a transaction: its stream entry, whether it is pending and on which consumer, its
delivery count and idle time, and whether it is persisted (or was recorded as a rejected
duplicate or a dead letter). For the stream: length, memory, consumer groups, lag,
pending per consumer, age of the oldest unacknowledged entry, and the flushers' figures.

``trace_transaction`` is also the console's trace (GET /console/api/trace).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, Final

import asyncpg
import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from core.backlog import measure
from core.constants import GROUP, shard_of, stream_key
from core.flusher_stats import read_published_stats
from core.groups import group_info, groups_of
from core.idempotency import ClientLookups, decode_entry, find_accepted
from core.redis_clients import redis_client
from core.replies import parse_id, text
from core.settings import Settings
from ops._table import table

LAG_SCAN_CAP: Final = 100_000
"""Redis 6.2 reports no lag: past this many undelivered entries counted, it shows ">="."""
LAG_SCAN_CHUNK: Final = 5000

PERSISTED: Final = """
SELECT stream_shard, stream_entry_id, request_id, persisted_at FROM transactions
WHERE transaction_id = $1
"""

REJECTED_DUPLICATES: Final = """
SELECT stream_entry_id FROM duplicate_entries WHERE transaction_id = $1 ORDER BY recorded_at
"""

# Entry ids are unique per stream only: the shard is part of the key.
DEAD_LETTER: Final = """
SELECT error FROM dead_letters WHERE stream_shard = $1 AND stream_entry_id = $2
"""


class TxTrace(msgspec.Struct):
    transaction_id: str
    stage: str
    """UNKNOWN; ACCEPTED (in the stream, not yet delivered); PENDING (delivered to a consumer,
    not acknowledged); PERSISTED; ORPHANED (delivered and no longer pending, yet not in
    PostgreSQL: someone removed it from the group, e.g. XGROUP DELCONSUMER); DEAD_LETTERED
    (not persisted: its entry was stored as a dead letter, e.g. an undecodable payload)."""
    stream_entry_id: str | None = None
    stream_shard: int | None = None
    """The shard of ``stream_entry_id`` (entry ids are unique per stream only)."""
    in_stream: bool = False
    undecodable: str | None = None
    """Why the entry's payload does not decode (the flusher dead-letters such an entry)."""
    request_id: str | None = None
    accepted_at_us: int | None = None
    idempotency_ttl_s: int | None = None
    pending_consumer: str | None = None
    pending_idle_ms: int | None = None
    delivery_count: int | None = None
    persisted_at: str | None = None
    persisted_entry_id: str | None = None
    rejected_duplicates: list[str] = []
    dead_letter: str | None = None


class ConsumerView(msgspec.Struct):
    name: str
    pending: int
    idle_ms: int


class GroupView(msgspec.Struct):
    name: str
    last_delivered_id: str
    pending: int
    lag: int
    lag_is_lower_bound: bool
    consumers: list[ConsumerView]


class StreamView(msgspec.Struct):
    stream: str
    length: int
    first_entry_id: str | None
    last_entry_id: str | None
    memory_bytes: int | None
    redis_used_memory_bytes: int
    oldest_unacked_age_s: float
    groups: list[GroupView]
    flushers: dict[str, dict[str, str]]


async def trace_transaction(
    redis: Redis, conn: asyncpg.Connection, tx: str, shards: int = 1, window_s: int = 900
) -> TxTrace:
    trace = TxTrace(tx, "UNKNOWN")
    lookups = ClientLookups(redis)
    found = await find_accepted(lookups, tx, shards, window_s)
    row = await conn.fetchrow(PERSISTED, tx)
    event = None
    if found is not None:
        # Through the marker: in the shard the current count hashes the id to.
        shard = shard_of(tx, shards)
        trace.stream_entry_id, event = found.entry_id, found.event
        trace.undecodable = found.undecodable
        trace.idempotency_ttl_s = int(await redis.ttl(found.key))
    elif row is not None:
        # Persisted: in the shard it was flushed from, whatever the shard count is now.
        shard = row["stream_shard"]
        trace.stream_entry_id = row["stream_entry_id"]
        stream = stream_key(shard)
        fields = await lookups.entry(stream.encode(), row["stream_entry_id"].encode())
        decoded = None if fields is None else decode_entry(fields)
        event = None if isinstance(decoded, str) else decoded
        trace.undecodable = decoded if isinstance(decoded, str) else None
    else:
        shard = shard_of(tx, shards)
    stream = stream_key(shard)
    if trace.stream_entry_id:
        trace.stream_shard = shard
        entry_id = trace.stream_entry_id
        if event is not None or trace.undecodable is not None:
            trace.in_stream = True
            if event is not None:
                trace.request_id, trace.accepted_at_us = event.request_id, event.accepted_at_us
            delivered = await _last_delivered(redis, stream)
            orphaned = delivered is not None and parse_id(entry_id) <= delivered
            trace.stage = "ORPHANED" if orphaned else "ACCEPTED"
        try:
            detail: Any = await redis.xpending_range(stream, GROUP, entry_id, entry_id, 1)
        except ResponseError:
            detail = []
        if detail:
            trace.stage = "PENDING"
            trace.pending_consumer = text(detail[0]["consumer"])
            trace.pending_idle_ms = int(detail[0]["time_since_delivered"])
            trace.delivery_count = int(detail[0]["times_delivered"])
    if row is not None:
        trace.stage = "PERSISTED"
        trace.persisted_at = row["persisted_at"].isoformat()
        trace.persisted_entry_id = row["stream_entry_id"]
        trace.request_id = trace.request_id or row["request_id"]
    trace.rejected_duplicates = [
        r["stream_entry_id"] for r in await conn.fetch(REJECTED_DUPLICATES, tx)
    ]
    if trace.stream_entry_id:
        trace.dead_letter = await conn.fetchval(DEAD_LETTER, shard, trace.stream_entry_id)
        if trace.dead_letter is not None and row is None:
            trace.stage = "DEAD_LETTERED"
    return trace


async def _last_delivered(redis: Redis, stream: str) -> tuple[int, int] | None:
    info = await group_info(redis, stream)
    return None if info is None else parse_id(text(info["last-delivered-id"]))


async def inspect_stream(redis: Redis, shard: int = 0) -> StreamView:
    stream = stream_key(shard)
    length = int(await redis.xlen(stream))
    first: Any = await redis.xrange(stream, count=1)
    last: Any = await redis.xrevrange(stream, count=1)
    try:
        memory = await redis.memory_usage(stream)
    except ResponseError:
        memory = None
    info: Any = await redis.info("memory")
    backlog = await measure(redis, stream)
    groups = []
    for g in await groups_of(redis, stream):
        name = text(g["name"])
        last_delivered = text(g["last-delivered-id"])
        consumers: Any = await redis.xinfo_consumers(stream, name)
        lag, capped = await _lag(redis, stream, g, last_delivered)
        groups.append(
            GroupView(
                name=name,
                last_delivered_id=last_delivered,
                pending=int(g["pending"]),
                lag=lag,
                lag_is_lower_bound=capped,
                consumers=[
                    ConsumerView(text(c["name"]), int(c["pending"]), int(c["idle"]))
                    for c in consumers
                ],
            )
        )
    return StreamView(
        stream=stream,
        length=length,
        first_entry_id=text(first[0][0]) if first else None,
        last_entry_id=text(last[0][0]) if last else None,
        memory_bytes=memory,
        redis_used_memory_bytes=int(info["used_memory"]),
        oldest_unacked_age_s=round(backlog.oldest_unflushed_age_s, 3),
        groups=groups,
        flushers=await read_published_stats(redis),
    )


async def _lag(redis: Redis, stream: str, group: Any, last_delivered: str) -> tuple[int, bool]:
    """Entries not yet delivered to the group (Redis 7 reports it; 6.2 is counted)."""
    if group.get("lag") is not None:
        return int(group["lag"]), False
    counted, cursor = 0, f"({last_delivered}"
    while counted < LAG_SCAN_CAP:
        chunk: Any = await redis.xrange(stream, min=cursor, count=LAG_SCAN_CHUNK)
        counted += len(chunk)
        if len(chunk) < LAG_SCAN_CHUNK:
            return counted, False
        cursor = "(" + text(chunk[-1][0])
    return counted, True


def render_tx(t: TxTrace) -> str:
    rows: list[tuple[str, object]] = [
        ("transaction", t.transaction_id),
        ("stage", t.stage),
        ("stream entry", t.stream_entry_id or "-"),
        ("stream shard", "-" if t.stream_shard is None else t.stream_shard),
        ("still in stream", "yes" if t.in_stream else "no"),
        ("undecodable", t.undecodable or "-"),
        ("request id", t.request_id or "-"),
        ("idempotency record ttl", f"{t.idempotency_ttl_s}s" if t.idempotency_ttl_s else "-"),
    ]
    if t.pending_consumer:
        rows += [
            ("pending on", t.pending_consumer),
            ("idle", f"{t.pending_idle_ms} ms"),
            ("deliveries", t.delivery_count),
        ]
    rows += [
        ("persisted at", t.persisted_at or "-"),
        ("rejected duplicates", ", ".join(t.rejected_duplicates) or "-"),
        ("dead letter", t.dead_letter or "-"),
    ]
    return table(rows)


def render_stream(v: StreamView) -> str:
    rows: list[tuple[str, object]] = [
        ("stream", v.stream),
        ("length", v.length),
        ("first / last entry", f"{v.first_entry_id or '-'} / {v.last_entry_id or '-'}"),
        ("stream memory", f"{v.memory_bytes} bytes" if v.memory_bytes is not None else "-"),
        ("redis used memory", f"{v.redis_used_memory_bytes} bytes"),
        ("oldest unacknowledged", f"{v.oldest_unacked_age_s} s"),
    ]
    for g in v.groups:
        lag = f"{'>=' if g.lag_is_lower_bound else ''}{g.lag}"
        rows += [
            (
                f"group {g.name}",
                f"last delivered {g.last_delivered_id}, lag {lag}, pending {g.pending}",
            )
        ]
        rows += [
            (f"  consumer {c.name}", f"pending {c.pending}, idle {c.idle_ms} ms")
            for c in g.consumers
        ]
    for name, figures in v.flushers.items():
        rows.append(
            (
                f"flusher {name}",
                f"batches {figures.get('batches_total')}, rows {figures.get('rows_written_total')}",
            )
        )
    return table(rows)


async def _main(settings: Settings, args: argparse.Namespace) -> int:
    redis = redis_client(settings)
    shards = settings.stream_shards
    try:
        if args.what == "tx":
            conn = await asyncpg.connect(settings.database_url)
            try:
                traced = await trace_transaction(
                    redis, conn, args.transaction_id, shards, settings.idempotency_ttl_s
                )
            finally:
                await conn.close()
            print(msgspec.json.encode(traced).decode() if args.json else render_tx(traced))
            return 1 if traced.stage == "UNKNOWN" else 0
        views = [await inspect_stream(redis, shard) for shard in range(shards)]
    finally:
        await redis.aclose()
    if args.json:  # one shard: the object; several: a list of them, by shard
        print(msgspec.json.encode(views[0] if shards == 1 else views).decode())
    else:
        print("\n\n".join(render_stream(view) for view in views))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ops.trace",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="what", required=True)
    tx = sub.add_parser("tx", help="one purchase, end to end")
    tx.add_argument("transaction_id")
    tx.add_argument("--json", action="store_true")
    stream = sub.add_parser("stream", help="the stream, its groups and consumers")
    stream.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    settings = Settings.for_command("trace")
    return asyncio.run(_main(settings, args))


if __name__ == "__main__":
    sys.exit(main())
