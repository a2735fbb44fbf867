"""Compare the stream, its consumer group and PostgreSQL, and say what does not add up.

``python -m ops.reconcile [--json]`` (or ``make reconcile``). Exit status 1 when a
discrepancy is found: an acknowledged entry missing from PostgreSQL, a transaction without
exactly one ledger row (its DEBIT and CREDIT) or one that disagrees with it, a ledger row
without its transaction, an account whose entry numbers have a gap or a repeat or do not
end at its counter, or whose totals differ from the sum of its entries, or unflushed
entries stranded in a stream above the shard count (see core.stranded). Conflicting
duplicates (a transaction_id the gateway accepted again past its idempotency window with
other accounts or another amount: the client was answered 200, the ledger holds the first
purchase) are counted and listed for someone to settle with the client, but do not fail
it: the ledger itself is consistent, and they stay in the table for good.

Every entry still in the stream is classified: undelivered, pending (on which consumer),
or acknowledged; an acknowledged one must be in PostgreSQL as a transaction, a recorded
duplicate or a dead letter of the same shard (entry ids are unique per stream only).
Entries trimmed from the stream are checked on the PostgreSQL side only (ledger rows and
orphans). Transactions older than the ledger's retention (persisted before its oldest
partition begins: see ``MONOKERA_LEDGER_RETENTION_DAYS``) have had their ledger rows
dropped on purpose and are left out of the ledger checks; an account that lost entries to
the retention is checked for gaps from its oldest entry left, and its totals not at all.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg
import msgspec
from redis.asyncio import Redis

from core.constants import GROUP, stream_key
from core.groups import group_info
from core.redis_clients import redis_client
from core.replies import parse_id, text
from core.settings import Settings
from core.stranded import streams_beyond
from ops._table import table

SCAN_CHUNK: Final = 5000

COUNTS: Final = """
SELECT (SELECT count(*) FROM transactions),
       (SELECT count(*) FROM ledger_transfers),
       (SELECT count(*) FROM duplicate_entries),
       (SELECT count(*) FROM dead_letters),
       (SELECT count(*) FROM duplicate_entries WHERE conflicting)
"""

CONFLICTING: Final = """
SELECT DISTINCT transaction_id FROM duplicate_entries WHERE conflicting
ORDER BY transaction_id LIMIT 100
"""

# A transaction's persisted_at is its ledger row's recorded_at (one time per batch): rows
# older than the oldest ledger partition were dropped by retention, not lost.
RETAINED_FROM: Final = "SELECT min(lower_bound) FROM ledger_partitions"

PAST_RETENTION: Final = "SELECT count(*) FROM transactions WHERE persisted_at < $1"

LEDGER_BROKEN: Final = """
SELECT t.transaction_id
FROM transactions t LEFT JOIN ledger_transfers l USING (transaction_id)
WHERE $1::timestamptz IS NULL OR t.persisted_at >= $1
GROUP BY t.transaction_id, t.customer_account, t.seller_account, t.amount
HAVING count(l.transaction_id) <> 1
    OR count(*) FILTER (WHERE l.debit_account = t.customer_account
                        AND l.credit_account = t.seller_account AND l.amount = t.amount) <> 1
LIMIT 100
"""

ORPHAN_ROWS: Final = """
SELECT count(*) FROM ledger_transfers l
WHERE NOT EXISTS (SELECT 1 FROM transactions t WHERE t.transaction_id = l.transaction_id)
"""

# Each account's entries (both sides) must be numbered lo, lo + 1, ... up to its counter
# (debit_count + credit_count), once each; where nothing was dropped (lo = 1), its totals
# must be the sums of its entries.
ACCOUNTS_BROKEN: Final = """
WITH sides AS (
    SELECT debit_account AS account, debit_seq AS seq, true AS debit, amount
    FROM ledger_transfers
    UNION ALL
    SELECT credit_account, credit_seq, false, amount FROM ledger_transfers
), per_account AS (
    SELECT account, count(*) AS entries, count(DISTINCT seq) AS numbers,
           min(seq) AS lo, max(seq) AS hi,
           coalesce(sum(amount) FILTER (WHERE debit), 0) AS debited,
           coalesce(sum(amount) FILTER (WHERE NOT debit), 0) AS credited,
           count(*) FILTER (WHERE debit) AS debits
    FROM sides GROUP BY account
)
SELECT p.account
FROM per_account p LEFT JOIN account_totals t USING (account)
WHERE p.numbers <> p.entries
   OR p.hi - p.lo + 1 <> p.entries
   OR t.account IS NULL
   OR p.hi <> t.debit_count + t.credit_count
   OR (p.lo = 1 AND (p.debited, p.credited, p.debits)
                    <> (t.debited_total, t.credited_total, t.debit_count))
ORDER BY p.account
LIMIT 100
"""

STORED_ENTRIES: Final = """
SELECT stream_entry_id FROM transactions
WHERE stream_shard = $1 AND stream_entry_id = ANY($2::text[])
UNION ALL
SELECT stream_entry_id FROM duplicate_entries
WHERE stream_shard = $1 AND stream_entry_id = ANY($2::text[])
UNION ALL
SELECT stream_entry_id FROM dead_letters
WHERE stream_shard = $1 AND stream_entry_id = ANY($2::text[])
"""


class Report(msgspec.Struct):
    stream_length: int = 0
    group_exists: bool = False
    undelivered: int = 0
    pending: int = 0
    pending_by_consumer: dict[str, int] = {}
    acknowledged_in_stream: int = 0
    acknowledged_missing_in_postgres: list[str] = []
    """``<stream key> <entry id>``: entry ids are unique per stream only."""
    stranded: dict[str, int] = {}
    """Streams above the shard count (see core.stranded): their unflushed entries."""
    transactions: int = 0
    transactions_past_retention: int = 0
    ledger_transfers: int = 0
    """Ledger rows: one per purchase still within the retention (its DEBIT and CREDIT)."""
    duplicate_entries: int = 0
    conflicting_duplicates: int = 0
    """Of ``duplicate_entries``, those naming other accounts or another amount than the
    stored purchase (rows written before migration 007 count only if the amount differs)."""
    conflicting_transactions: list[str] = []
    """Their transaction_ids (the first 100)."""
    dead_letters: int = 0
    transactions_with_broken_ledger: list[str] = []
    orphan_ledger_rows: int = 0
    accounts_with_broken_sequences: list[str] = []
    """Accounts whose entry numbers have a gap or a repeat, or end before or after the
    account's counter, or whose totals differ from its entries (the first 100)."""

    @property
    def ok(self) -> bool:
        return not (
            self.acknowledged_missing_in_postgres
            or self.stranded
            or self.transactions_with_broken_ledger
            or self.orphan_ledger_rows
            or self.accounts_with_broken_sequences
            or self.ledger_transfers != self.transactions - self.transactions_past_retention
        )


@dataclass(slots=True)
class _GroupState:
    shard: int
    last_delivered: tuple[int, int] = (0, 0)
    pending_ids: set[str] = field(default_factory=set)


async def reconcile(redis: Redis, conn: asyncpg.Connection, shards: int = 1) -> Report:
    """Streams above ``shards`` that still hold entries are reconciled too, and reported.

    Redis first, PostgreSQL after, in one snapshot: every entry the groups show as
    acknowledged was committed before the snapshot is taken (the flusher acknowledges
    only after COMMIT), and every count comes from that one snapshot, so entries flushed
    while reconcile runs cause no false alarm (ledger rows counted without their transactions).
    """
    report = Report(group_exists=True)
    beyond = await streams_beyond(redis, shards)
    report.stranded = {s.stream: s.unflushed for s in beyond if s.unflushed}
    states = [
        await _group_state(redis, shard, report)
        for shard in [*range(shards), *(s.shard for s in beyond)]
    ]
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        for state in states:
            await _scan_stream(redis, conn, state, report)
        [counts] = await conn.fetch(COUNTS)
        report.transactions, report.ledger_transfers = counts[0], counts[1]
        report.duplicate_entries, report.dead_letters = counts[2], counts[3]
        report.conflicting_duplicates = counts[4]
        report.conflicting_transactions = [r[0] for r in await conn.fetch(CONFLICTING)]
        retained_from = await conn.fetchval(RETAINED_FROM)
        if retained_from is not None:
            report.transactions_past_retention = await conn.fetchval(PAST_RETENTION, retained_from)
        broken = await conn.fetch(LEDGER_BROKEN, retained_from)
        report.transactions_with_broken_ledger = [r[0] for r in broken]
        report.orphan_ledger_rows = await conn.fetchval(ORPHAN_ROWS)
        sequences = await conn.fetch(ACCOUNTS_BROKEN)
        report.accounts_with_broken_sequences = [r[0] for r in sequences]
    return report


async def _group_state(redis: Redis, shard: int, report: Report) -> _GroupState:
    """One shard's group: what it delivered and what is still pending, added to ``report``."""
    stream = stream_key(shard)
    state = _GroupState(shard)
    report.stream_length += int(await redis.xlen(stream))
    info = await group_info(redis, stream)
    if info is None:
        report.group_exists = False
        return state
    state.last_delivered = parse_id(text(info["last-delivered-id"]))
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
        state.pending_ids = {text(p["message_id"]) for p in detail}
    return state


async def _scan_stream(
    redis: Redis, conn: asyncpg.Connection, state: _GroupState, report: Report
) -> None:
    """Classify one shard's entries by its group state; look the acknowledged ones up."""
    stream = stream_key(state.shard)
    cursor = "-"
    while True:
        chunk: Any = await redis.xrange(stream, min=cursor, count=SCAN_CHUNK)
        if not chunk:
            break
        acked: list[str] = []
        for raw_id, _fields in chunk:
            entry_id = text(raw_id)
            if parse_id(entry_id) > state.last_delivered:
                report.undelivered += 1
            elif entry_id not in state.pending_ids:
                acked.append(entry_id)
        if acked:
            report.acknowledged_in_stream += len(acked)
            stored = {r[0] for r in await conn.fetch(STORED_ENTRIES, state.shard, acked)}
            report.acknowledged_missing_in_postgres += [
                f"{stream} {e}" for e in acked if e not in stored
            ]
        if len(chunk) < SCAN_CHUNK:
            break
        cursor = "(" + text(chunk[-1][0])


def render(report: Report) -> str:
    rows: list[tuple[str, object]] = [
        ("stream length", report.stream_length),
        ("consumer group", GROUP if report.group_exists else "MISSING"),
        ("undelivered", report.undelivered),
        ("pending", report.pending),
        *((f"  pending on {name}", n) for name, n in sorted(report.pending_by_consumer.items())),
        ("acknowledged, still in stream", report.acknowledged_in_stream),
        ("  of which missing in PostgreSQL", len(report.acknowledged_missing_in_postgres)),
        ("unflushed beyond the shard count", sum(report.stranded.values())),
        ("transactions", report.transactions),
        ("  of which past the ledger retention", report.transactions_past_retention),
        ("ledger rows (one per purchase: its DEBIT and CREDIT)", report.ledger_transfers),
        ("duplicate entries (rejected)", report.duplicate_entries),
        ("  of which conflicting (other accounts or amount)", report.conflicting_duplicates),
        ("dead letters", report.dead_letters),
        ("transactions without their ledger row", len(report.transactions_with_broken_ledger)),
        ("ledger rows without transaction", report.orphan_ledger_rows),
        (
            "accounts with broken entry numbers or totals",
            len(report.accounts_with_broken_sequences),
        ),
    ]
    lines = [table(rows)]
    for entry in report.acknowledged_missing_in_postgres[:20]:
        lines.append(f"MISSING acknowledged entry {entry}")
    for stream, count in sorted(report.stranded.items()):
        lines.append(
            f"STRANDED {count} unflushed entries in {stream}, above the shard count:"
            " raise MONOKERA_STREAM_SHARDS until they are flushed"
        )
    for tx in report.conflicting_transactions[:20]:
        lines.append(
            f"CONFLICT transaction {tx!r} was accepted again with other accounts or amount"
            " past the idempotency window: the ledger holds the first purchase"
        )
    for tx in report.transactions_with_broken_ledger[:20]:
        lines.append(f"BROKEN ledger row for transaction {tx!r}")
    for account in report.accounts_with_broken_sequences[:20]:
        lines.append(f"BROKEN entry numbers or totals of account {account!r}")
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
    parser = argparse.ArgumentParser(prog="python -m ops.reconcile", description=__doc__)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    settings = Settings.for_command("reconcile")
    return asyncio.run(_main(settings, args.json))


if __name__ == "__main__":
    sys.exit(main())
