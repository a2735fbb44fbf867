"""What each storage shape costs PostgreSQL per purchase, the flusher's Python left out.

    .venv/bin/python -m bench.ledger_shapes [--purchases 60000] [--batch 2000] [--rounds 2]

One throwaway PostgreSQL, one fresh database per shape, the same purchases (the seed's one
buyer and seller, ``uniform``, or ``bench.writers``' Zipf ``mix``) written in batches as
the flusher writes them, one transaction a batch. Per shape: the client's CPU (this
process: building and sending the rows) and PostgreSQL's (all its processes), per
purchase. The shapes, each with its own batch statement:

- ``floor``: a bare ``COPY`` of one row per purchase into a table shaped like
  ``transactions`` with a primary key and both accounts indexed (``make bench``'s
  reference): what one row per purchase costs at the least;
- ``6b597ba``: a transaction row and two leg rows per purchase, a covering index on the
  legs, ``ledger_clock`` and the global write lock (its statement, kept verbatim in
  tests/upgrade/insert_6b597ba.sql and run by tests/upgrade/old_flushers.py, on its schema:
  migrations 001 to 007);
- ``008``: a transaction row and one ledger row per purchase, each account numbered under
  its totals row's lock (``flusher.ledger_writer.LedgerWriter.write``, this release);
- ``008 + covering``: the same with the ledger's two indexes covering what a history
  page reads (``INCLUDE``), so that pages are index-only: what that would cost writes.

Rounds alternate the shapes (floor, 6b597ba, 008, 008 + covering, again) so that a noisy
machine weighs on all of them alike; each figure is the median of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg
import psutil

from bench.harness import save_result
from bench.references import copy_reference, process_cpu
from bench.writers import Purchase, bare_stack, purchases
from core.events import PurchaseEvent
from core.migrate import migrate
from flusher.ledger_writer import Decoded, LedgerWriter
from tests.upgrade.old_flushers import RELEASE_6B597BA

COVERING: Final = """
DROP INDEX ledger_transfers_debit;
DROP INDEX ledger_transfers_credit;
CREATE INDEX ledger_transfers_debit
    ON ledger_transfers (debit_account, recorded_at DESC, debit_seq DESC)
    INCLUDE (transaction_id, amount, credit_account, accepted_at);
CREATE INDEX ledger_transfers_credit
    ON ledger_transfers (credit_account, recorded_at DESC, credit_seq DESC)
    INCLUDE (transaction_id, amount, debit_account, accepted_at);
"""

Batches = list[list[Decoded]]


def batches(items: list[Purchase], size: int, tag: str) -> Batches:
    now_us = time.time_ns() // 1000
    decoded = [
        Decoded(
            f"{now_us // 1000}-{i}",
            PurchaseEvent(
                transaction_id=f"{tag}-{p.transaction_id}",
                customer_account=p.buyer,
                customer_name=p.buyer_name,
                seller_account=p.seller,
                seller_name=p.seller_name,
                amount=p.amount,
                request_id=f"r-{i}",
                accepted_at_us=now_us,
            ),
        )
        for i, p in enumerate(items)
    ]
    return [decoded[i : i + size] for i in range(0, len(decoded), size)]


async def measure(pg_pid: int, n: int, write: Callable[[], Awaitable[None]]) -> dict[str, float]:
    me = psutil.Process()
    client0, pg0, wall0 = sum(me.cpu_times()[:2]), process_cpu(pg_pid), time.monotonic()
    await write()
    wall = time.monotonic() - wall0
    client, pg = sum(me.cpu_times()[:2]) - client0, process_cpu(pg_pid) - pg0
    return {
        "client_us": 1e6 * client / n,
        "postgres_us": 1e6 * pg / n,
        "us": 1e6 * (client + pg) / n,
        "rate": n / wall,
    }


async def old_shape(dsn: str, pg_pid: int, work: Batches) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    try:
        await RELEASE_6B597BA.create_schema(conn)

        async def write() -> None:
            for batch in work:
                await RELEASE_6B597BA.write_batch(conn, 0, batch, [])

        return await measure(pg_pid, sum(map(len, work)), write)
    finally:
        await conn.close()


async def new_shape(dsn: str, pg_pid: int, work: Batches, covering: bool) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        if covering:
            await conn.execute(COVERING)
    finally:
        await conn.close()
    store = LedgerWriter(dsn)
    await store.connect()
    try:

        async def write() -> None:
            for batch in work:
                await store.write(batch, [])

        return await measure(pg_pid, sum(map(len, work)), write)
    finally:
        await store.close()


async def run_round(stack: Any, items: list[Purchase], batch: int, rnd: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    base = stack.database_url.rsplit("/", 1)[0]
    admin = await asyncpg.connect(stack.database_url)
    try:
        for shape in ("6b597ba", "008", "008 + covering"):
            name = f"shape_{rnd}_{shape.replace(' ', '').replace('+', '_')}"
            await admin.execute(f'CREATE DATABASE "{name}"')
            dsn = f"{base}/{name}"
            work = batches(items, batch, f"{rnd}{shape}")
            if shape == "6b597ba":
                out[shape] = await old_shape(dsn, stack.postgres.pid, work)
            else:
                out[shape] = await new_shape(dsn, stack.postgres.pid, work, "covering" in shape)
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    return out


async def migrated(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--purchases", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mix", default="uniform,mix")
    opts = parser.parse_args()
    results: dict[str, Any] = {"purchases": opts.purchases, "batch": opts.batch}
    with bare_stack("shapes") as stack:
        asyncio.run(migrated(stack.database_url))  # the floor's table is shaped like transactions
        for mix in opts.mix.split(","):
            items = purchases(mix, opts.purchases, seed=20261203)
            rounds = []
            for rnd in range(opts.rounds):
                floor = copy_reference(
                    stack.database_url, stack.postgres.pid, opts.purchases, opts.batch
                )
                one = asyncio.run(run_round(stack, items, opts.batch, rnd))
                one["floor"] = {
                    "client_us": floor["client_us_per_row"],
                    "postgres_us": floor["postgres_us_per_row"],
                    "us": floor["us_per_row"],
                    "rate": floor["rate"],
                }
                rounds.append(one)
            results[mix] = {
                shape: {k: statistics.median(r[shape][k] for r in rounds) for k in rounds[0][shape]}
                for shape in rounds[0]
            }
    print(render(results))
    saved = save_result("ledger-shapes", {"at": datetime.now(UTC).isoformat(), **results})
    print(f"results: {saved}")
    return 0


def render(results: dict[str, Any]) -> str:
    lines = [
        f"{results['purchases']:,} purchases a mix, batches of {results['batch']:,};"
        " CPU µs per purchase (median of the rounds)",
        f"{'mix':<8} {'shape':<16} {'client':>7} {'PostgreSQL':>11} {'total':>7}"
        f" {'÷ floor':>8} {'rows/s':>9}",
    ]
    for mix in ("uniform", "mix"):
        if mix not in results:
            continue
        floor = results[mix]["floor"]["us"]
        for shape in ("floor", "6b597ba", "008", "008 + covering"):
            r = results[mix][shape]
            lines.append(
                f"{mix:<8} {shape:<16} {r['client_us']:>7.1f} {r['postgres_us']:>11.1f}"
                f" {r['us']:>7.1f} {r['us'] / floor:>7.2f}x {r['rate']:>9,.0f}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
