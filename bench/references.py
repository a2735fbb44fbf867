"""The least a stage can cost, measured on the same servers in the same run.

- Redis: the append script (``gateway/ingest/append.lua``: idempotency check, XADD, idempotency
  record per purchase) against a pipelined plain ``XADD`` of the same entry, both in batches as the
  gateway sends them; Redis's own CPU per entry, from INFO CPU. The script also while 943f4b2's
  idempotency keys are still read, beside the row.
- PostgreSQL: a bare ``COPY`` of one row per purchase, in transactions of the flusher's
  batch size, into a table shaped like ``transactions`` with a primary key and both
  accounts indexed; the client's CPU
  (this process) plus PostgreSQL's (all its processes) per row.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import psutil
from redis import Redis

from core.constants import idempotency_bucket_prefix, idempotency_key
from core.entries import FIELDS, SCRIPT_HEADER, VERSION, VERSION_FIELD, values
from core.events import PurchaseRequest, request_decoder
from core.idempotency import REACH, bucket_width_s
from gateway.ingest.appender import APPEND_SCRIPT

SAMPLE = (
    b'{"transaction_id":"ref-0","customer_info":{"customer_name":"User 1",'
    b'"customer_account":"23131342342342321","ammount":20000},'
    b'"seller_info":{"seller_name":"User 2","seller_account":"23132131"}}'
)


def process_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (PostgreSQL's backends, Granian's worker)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def _values() -> Callable[[str], tuple[Any, ...]]:
    """The entry values the gateway would append for SAMPLE, with another transaction_id."""
    request: PurchaseRequest = request_decoder.decode(SAMPLE)
    _, *rest = values(request, "0123456789ab-1f", time.time_ns() // 1000)
    return lambda transaction_id: (transaction_id.encode(), *rest)


def redis_cpu(client: Redis) -> float:
    """Redis's own CPU seconds (getrusage, microseconds): /proc counts in 10 ms ticks, too
    coarse for rounds of a few milliseconds."""
    info: Any = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def redis_reference(
    url: str, entries: int, batch: int = 100, calls_per_trip: int = 10
) -> dict[str, Any]:
    """Redis CPU µs per entry: the append script vs a plain XADD of the same payload.

    The script twice: as the gateway runs it once no 943f4b2 idempotency key is left (the
    stage table's row), and while some are (each purchase's legacy key named and read).
    The three alternate in ten rounds, so whatever else the machine does falls on each."""
    client = Redis.from_url(url)
    run = f"{time.time_ns()}"
    fingerprint = b"0" * 8
    _entry = _values()
    spent = {"script": 0.0, "script_legacy": 0.0, "xadd": 0.0}
    rounds = 10
    per_round = max(batch, entries // rounds)
    try:
        sha = client.script_load(APPEND_SCRIPT)
        streams = {mode: f"bench:ref:{mode}:{run}" for mode in spent}
        pipe = client.pipeline(transaction=False)
        names = (VERSION_FIELD, *FIELDS)
        entries_ = [
            dict(zip(names, (VERSION, *_entry(f"ref-{run}-x{i}")), strict=True))
            for i in range(batch)
        ]

        def script_calls(round_: int, legacy: bool) -> list[tuple[int, list[Any], list[Any]]]:
            calls = []
            stream = streams["script_legacy" if legacy else "script"]
            for first in range(round_ * per_round, (round_ + 1) * per_round, batch):
                ids = [f"ref-{run}-{legacy:d}-{i}" for i in range(first, first + batch)]
                keys = [stream, *(idempotency_key(0, tid) for tid in ids if legacy)]
                args: list[Any] = [900, b"0", bucket_width_s(900), REACH, b"1" if legacy else b"0"]
                args += [idempotency_bucket_prefix(0), *SCRIPT_HEADER]
                for tid in ids:
                    args += [fingerprint, *_entry(tid)]
                calls.append((len(keys), keys, args))
            return calls

        for round_ in range(rounds):
            for mode in ("script", "script_legacy"):
                calls = script_calls(round_, legacy=mode == "script_legacy")
                started = redis_cpu(client)
                for n, keys, args in calls:
                    pipe.evalsha(sha, n, *keys, *args)
                    if len(pipe) >= calls_per_trip:
                        pipe.execute()
                pipe.execute()
                spent[mode] += redis_cpu(client) - started

            started = redis_cpu(client)
            for _ in range(per_round // batch):
                for fields in entries_:
                    pipe.xadd(streams["xadd"], fields)  # type: ignore[arg-type]
                if len(pipe) >= batch * calls_per_trip:
                    pipe.execute()
            pipe.execute()
            spent["xadd"] += redis_cpu(client) - started
        client.delete(*streams.values())
    finally:
        client.close()
    total = rounds * per_round
    return {
        "entries": total,
        "batch": batch,
        **{f"{mode}_us_per_entry": 1e6 * seconds / total for mode, seconds in spent.items()},
    }


COPY_TABLE = """
CREATE TABLE bench_copy_reference (LIKE transactions INCLUDING DEFAULTS);
ALTER TABLE bench_copy_reference ADD PRIMARY KEY (transaction_id);
CREATE INDEX ON bench_copy_reference (customer_account);
CREATE INDEX ON bench_copy_reference (seller_account);
"""
COPY_COLUMNS = (
    "transaction_id", "customer_name", "customer_account", "seller_name", "seller_account",
    "amount", "request_id", "stream_shard", "stream_entry_id", "accepted_at",
)  # fmt: skip


async def _copy(dsn: str, pg_pid: int, rows: int, batch: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(COPY_TABLE)
        now = datetime.now(UTC)
        records = [
            (f"copy-{i}", "User 1", "23131342342342321", "User 2", "23132131", 20000,
             "0123456789abcdef0123456789abcdef", 0, f"{1700000000000 + i}-0", now)
            for i in range(rows)
        ]  # fmt: skip
        me = psutil.Process()
        client0, pg0, wall0 = sum(me.cpu_times()[:2]), process_cpu(pg_pid), time.monotonic()
        for first in range(0, rows, batch):
            await conn.copy_records_to_table(
                "bench_copy_reference", records=records[first : first + batch], columns=COPY_COLUMNS
            )
        wall = time.monotonic() - wall0
        client_s, pg_s = sum(me.cpu_times()[:2]) - client0, process_cpu(pg_pid) - pg0
        await conn.execute("DROP TABLE bench_copy_reference")
    finally:
        await conn.close()
    return {
        "rows": rows,
        "batch": batch,
        "rate": rows / wall if wall else 0.0,
        "client_us_per_row": 1e6 * client_s / rows,
        "postgres_us_per_row": 1e6 * pg_s / rows,
        "us_per_row": 1e6 * (client_s + pg_s) / rows,
    }


def copy_reference(dsn: str, pg_pid: int, rows: int, batch: int) -> dict[str, Any]:
    """CPU µs per row of a bare COPY (client plus PostgreSQL), one transaction per batch."""
    return asyncio.run(_copy(dsn, pg_pid, rows, batch))
