"""Compare the stream, its consumer group and PostgreSQL, and say what does not add up.

``python -m flusher.reconcile [--json]`` (or ``make reconcile``). Exit status 1 when a
discrepancy is found: an acknowledged entry missing from PostgreSQL, a transaction without
exactly one DEBIT and one CREDIT, or a ledger leg without its transaction.

Every entry still in the stream is classified: undelivered, pending (on which consumer),
or acknowledged; an acknowledged one must be in PostgreSQL as a transaction, a recorded
duplicate or a dead letter. Entries trimmed from the stream are checked on the PostgreSQL
side only (legs and orphans). Transactions older than the ledger's retention (persisted
before its oldest partition begins: see ``MONOKERA_LEDGER_RETENTION_DAYS``) have had their
legs dropped on purpose and are left out of the leg checks.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import asyncpg
import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from core.constants import GROUP, stream_key
from core.settings import Settings
from flusher.connections import redis_client
from flusher.stream import parse_id, text

SCAN_CHUNK = 5000

# A transaction's persisted_at is its legs' recorded_at (one time per batch): legs older
# than the oldest ledger partition were dropped by retention, not lost.
RETAINED_FROM = "SELECT min(lower_bound) FROM ledger_partitions"

PAST_RETENTION = "SELECT count(*) FROM transactions WHERE persisted_at < $1"

LEGS_BROKEN = """
SELECT t.transaction_id
FROM transactions t LEFT JOIN ledger_entries l USING (transaction_id)
WHERE $1::timestamptz IS NULL OR t.persisted_at >= $1
GROUP BY t.transaction_id, t.customer_account, t.seller_account, t.amount
HAVING count(l.entry_id) <> 2
    OR count(*) FILTER (WHERE l.direction = 'DEBIT' AND l.account = t.customer_account
                        AND l.amount = t.amount) <> 1
    OR count(*) FILTER (WHERE l.direction = 'CREDIT' AND l.account = t.seller_account
                        AND l.amount = t.amount) <> 1
LIMIT 100
"""

ORPHAN_LEGS = """
SELECT count(*) FROM ledger_entries l
WHERE NOT EXISTS (SELECT 1 FROM transactions t WHERE t.transaction_id = l.transaction_id)
"""

STORED_ENTRIES = """
SELECT stream_entry_id FROM transactions WHERE stream_entry_id = ANY($1::text[])
UNION ALL
SELECT stream_entry_id FROM duplicate_entries WHERE stream_entry_id = ANY($1::text[])
UNION ALL
SELECT stream_entry_id FROM dead_letters WHERE stream_entry_id = ANY($1::text[])
"""


class Report(msgspec.Struct):
    stream_length: int = 0
    group_exists: bool = False
    undelivered: int = 0
    pending: int = 0
    pending_by_consumer: dict[str, int] = {}
    acknowledged_in_stream: int = 0
    acknowledged_missing_in_postgres: list[str] = []
    transactions: int = 0
    transactions_past_retention: int = 0
    ledger_entries: int = 0
    duplicate_entries: int = 0
    dead_letters: int = 0
    transactions_with_broken_legs: list[str] = []
    orphan_legs: int = 0

    @property
    def ok(self) -> bool:
        return not (
            self.acknowledged_missing_in_postgres
            or self.transactions_with_broken_legs
            or self.orphan_legs
            or self.ledger_entries != 2 * (self.transactions - self.transactions_past_retention)
        )


async def reconcile(redis: Redis, conn: asyncpg.Connection, shards: int = 1) -> Report:
    report = Report(group_exists=True)
    for shard in range(shards):
        await _reconcile_stream(redis, conn, stream_key(shard), report)
    report.transactions = await conn.fetchval("SELECT count(*) FROM transactions")
    report.ledger_entries = await conn.fetchval("SELECT count(*) FROM ledger_entries")
    report.duplicate_entries = await conn.fetchval("SELECT count(*) FROM duplicate_entries")
    report.dead_letters = await conn.fetchval("SELECT count(*) FROM dead_letters")
    retained_from = await conn.fetchval(RETAINED_FROM)
    if retained_from is not None:
        report.transactions_past_retention = await conn.fetchval(PAST_RETENTION, retained_from)
    broken = await conn.fetch(LEGS_BROKEN, retained_from)
    report.transactions_with_broken_legs = [r[0] for r in broken]
    report.orphan_legs = await conn.fetchval(ORPHAN_LEGS)
    return report


async def _reconcile_stream(
    redis: Redis, conn: asyncpg.Connection, stream: str, report: Report
) -> None:
    """One shard's stream and group, added to ``report``."""
    report.stream_length += int(await redis.xlen(stream))
    last_delivered = (0, 0)
    pending_ids: set[str] = set()
    try:
        groups: Any = await redis.xinfo_groups(stream)
    except ResponseError:
        groups = []
    info = next((g for g in groups if g["name"] in (GROUP, GROUP.encode())), None)
    if info is None:
        report.group_exists = False
    else:
        last_delivered = parse_id(text(info["last-delivered-id"]))
        summary: Any = await redis.xpending(stream, GROUP)
        pending = int(summary["pending"])
        report.pending += pending
        for c in summary["consumers"] or []:
            name = text(c["name"])
            report.pending_by_consumer[name] = report.pending_by_consumer.get(name, 0) + int(
                c["pending"]
            )
        if pending:
            detail: Any = await redis.xpending_range(stream, GROUP, min="-", max="+", count=pending)
            pending_ids = {text(p["message_id"]) for p in detail}

    cursor = "-"
    while True:
        chunk: Any = await redis.xrange(stream, min=cursor, count=SCAN_CHUNK)
        if not chunk:
            break
        acked: list[str] = []
        for raw_id, _fields in chunk:
            entry_id = text(raw_id)
            if parse_id(entry_id) > last_delivered:
                report.undelivered += 1
            elif entry_id not in pending_ids:
                acked.append(entry_id)
        if acked:
            report.acknowledged_in_stream += len(acked)
            stored = {r[0] for r in await conn.fetch(STORED_ENTRIES, acked)}
            report.acknowledged_missing_in_postgres += [e for e in acked if e not in stored]
        if len(chunk) < SCAN_CHUNK:
            break
        cursor = "(" + text(chunk[-1][0])


def render(report: Report) -> str:
    rows = [
        ("stream length", report.stream_length),
        ("consumer group", GROUP if report.group_exists else "MISSING"),
        ("undelivered", report.undelivered),
        ("pending", report.pending),
        *((f"  pending on {name}", n) for name, n in sorted(report.pending_by_consumer.items())),
        ("acknowledged, still in stream", report.acknowledged_in_stream),
        ("  of which missing in PostgreSQL", len(report.acknowledged_missing_in_postgres)),
        ("transactions", report.transactions),
        ("  of which past the ledger retention", report.transactions_past_retention),
        ("ledger entries", report.ledger_entries),
        ("duplicate entries (rejected)", report.duplicate_entries),
        ("dead letters", report.dead_letters),
        ("transactions with broken legs", len(report.transactions_with_broken_legs)),
        ("ledger legs without transaction", report.orphan_legs),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    for entry in report.acknowledged_missing_in_postgres[:20]:
        lines.append(f"MISSING acknowledged entry {entry}")
    for tx in report.transactions_with_broken_legs[:20]:
        lines.append(f"BROKEN legs for transaction {tx!r}")
    lines.append("OK: everything reconciles" if report.ok else "DISCREPANCIES FOUND")
    return "\n".join(lines)


async def _main(settings: Settings, as_json: bool) -> int:
    redis = redis_client(settings)
    conn = await asyncpg.connect(settings.database_url)
    try:
        report = await reconcile(redis, conn, settings.stream_shards)
    finally:
        await conn.close()
        await redis.aclose()
    if as_json:
        payload = msgspec.structs.asdict(report) | {"ok": report.ok}
        print(msgspec.json.encode(payload).decode())
    else:
        print(render(report))
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flusher.reconcile", description=__doc__)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    settings = Settings.for_command("reconcile")
    return asyncio.run(_main(settings, args.json))


if __name__ == "__main__":
    sys.exit(main())
