"""Per-account order under writers that commit side by side.

An account's entries are numbered 1, 2, 3 ... in the transaction that writes them, under
the account's lock; a reader pages newest first by that number. Whatever order writers
commit in, a reader who has passed a cursor never finds a new entry behind it: every entry
committed later sorts above the newest one it has seen.

The first test plays one schedule step by step, against the flusher's store and against
a naive ledger numbered by a global bigserial (the negative control, which the same check
must catch). The soak runs four writers with random delays before COMMIT, rollbacks and
redeliveries, and two readers paging the same hot accounts meanwhile.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

import asyncpg
import pytest

from core.events import PurchaseEvent
from core.settings import Settings
from flusher.ledger_writer import Decoded, LedgerWriter
from gateway.reads.history import HistoryReader
from ops.reconcile import ACCOUNTS_BROKEN, LEDGER_BROKEN

HOT: Final = "hot"
SOAK_S: Final = 60.0


def event(tx: str, customer: str, seller: str, amount: int = 5) -> PurchaseEvent:
    return PurchaseEvent(
        transaction_id=tx,
        customer_account=customer,
        customer_name="Buyer",
        seller_account=seller,
        seller_name="Seller",
        amount=amount,
        request_id=f"r-{tx}",
        accepted_at_us=time.time_ns() // 1000,
    )


def assert_nothing_behind(first_page: list[int], everything: list[int]) -> None:
    """``first_page``: the numbers a reader saw on a page, newest first, while some writers
    had not committed. ``everything``: the account's numbers once all had committed. An
    entry that was not on the page must sort below the page (the reader's cursor still
    reaches it) or above its newest entry (it is new): never between, behind the cursor."""
    top, cursor = first_page[0], first_page[-1]
    behind = [n for n in everything if cursor < n < top and n not in first_page]
    assert not behind, f"entries {behind} committed behind a passed cursor ({cursor}..{top})"


class Ledger(Protocol):
    async def begin(self, tx: str, counterparty: str) -> None:
        """Start writing a purchase of HOT; returns once its numbers are handed out, or
        once it is blocked waiting for another writer."""

    async def commit(self, tx: str) -> None: ...

    async def page(self, limit: int) -> list[int]:
        """HOT's newest ``limit`` numbers, newest first."""

    async def numbers(self) -> list[int]: ...


async def blocked(conn: asyncpg.Connection, pid: int) -> bool:
    return bool(await conn.fetchval("SELECT cardinality(pg_blocking_pids($1)) > 0", pid))


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 30
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@dataclass
class FlusherLedger:
    """The flusher's store: one LedgerWriter (one connection) per writer, each batch held
    open right before its COMMIT until told to commit."""

    settings: Settings
    watcher: asyncpg.Connection
    writers: dict[str, tuple[LedgerWriter, asyncio.Event, asyncio.Task[object]]] = field(
        default_factory=dict
    )

    async def begin(self, tx: str, counterparty: str) -> None:
        store = LedgerWriter(self.settings.database_url)
        conn = await store.connect()
        pid = conn.get_server_pid()
        release, reached = asyncio.Event(), asyncio.Event()

        async def before_commit() -> None:
            reached.set()
            await release.wait()

        item = Decoded(f"{len(self.writers) + 1}-0", event(tx, HOT, counterparty))
        task = asyncio.create_task(store.write([item], [], before_commit))
        self.writers[tx] = (store, release, task)

        async def numbered_or_blocked() -> bool:
            return reached.is_set() or await blocked(self.watcher, pid)

        await until(numbered_or_blocked, f"{tx} to be numbered or blocked")

    async def commit(self, tx: str) -> None:
        store, release, task = self.writers.pop(tx)
        release.set()
        await asyncio.wait_for(task, 30)
        await store.close()

    async def page(self, limit: int) -> list[int]:
        history = HistoryReader(self.settings.database_url)
        try:
            entries, _ = await history.history(HOT, limit, None)
        finally:
            await history.close()
        return [e.entry_id for e in entries]

    async def numbers(self) -> list[int]:
        rows = await self.watcher.fetch(
            "SELECT CASE WHEN debit_account = $1 THEN debit_seq ELSE credit_seq END"
            " FROM ledger_transfers WHERE $1 IN (debit_account, credit_account)",
            HOT,
        )
        return sorted((r[0] for r in rows), reverse=True)


@dataclass
class BigserialLedger:
    """The negative control: entries numbered by a global bigserial when inserted, the way
    a ledger without per-account numbering would; each writer its own transaction."""

    settings: Settings
    watcher: asyncpg.Connection
    writers: dict[str, asyncpg.Connection] = field(default_factory=dict)

    async def begin(self, tx: str, counterparty: str) -> None:
        conn = await asyncpg.connect(self.settings.database_url)
        await conn.execute("BEGIN")
        await conn.execute(
            "INSERT INTO naive_ledger (account, transaction_id) VALUES ($1, $2)", HOT, tx
        )
        self.writers[tx] = conn

    async def commit(self, tx: str) -> None:
        conn = self.writers.pop(tx)
        await conn.execute("COMMIT")
        await conn.close()

    async def page(self, limit: int) -> list[int]:
        rows = await self.watcher.fetch(
            "SELECT id FROM naive_ledger WHERE account = $1 ORDER BY id DESC LIMIT $2",
            HOT,
            limit,
        )
        return [r[0] for r in rows]

    async def numbers(self) -> list[int]:
        rows = await self.watcher.fetch("SELECT id FROM naive_ledger ORDER BY id DESC")
        return [r[0] for r in rows]


async def out_of_order_commits(ledger: Ledger) -> None:
    """x and b commit; a begins and waits before its COMMIT; c begins (and commits, unless
    a holds it back); a reader takes a page; then a and c commit."""
    for tx in ("x", "b"):
        await ledger.begin(tx, f"shop-{tx}")
        await ledger.commit(tx)
    await ledger.begin("a", "shop-a")
    await ledger.begin("c", "shop-c")
    if isinstance(ledger, BigserialLedger):  # nothing holds c back there
        await ledger.commit("c")
    first_page = await ledger.page(2)
    await ledger.commit("a")
    if "c" in getattr(ledger, "writers", {}):
        await ledger.commit("c")
    assert_nothing_behind(first_page, await ledger.numbers())


async def test_writers_committing_out_of_order_never_put_an_entry_behind_a_read_cursor(
    settings: Settings, pg: asyncpg.Connection
) -> None:
    ledger = FlusherLedger(settings, pg)
    await out_of_order_commits(ledger)
    assert await ledger.numbers() == [4, 3, 2, 1]


async def test_the_same_schedule_catches_a_ledger_numbered_by_a_global_sequence(
    settings: Settings, pg: asyncpg.Connection
) -> None:
    await pg.execute(
        "CREATE TABLE naive_ledger (id bigserial PRIMARY KEY, account text, transaction_id text)"
    )
    try:
        with pytest.raises(AssertionError, match="behind a passed cursor"):
            await out_of_order_commits(BigserialLedger(settings, pg))
    finally:
        await pg.execute("DROP TABLE naive_ledger")


async def test_a_batch_holding_a_stored_purchase_is_written_staged_and_numbered_on(
    settings: Settings, pg: asyncpg.Connection
) -> None:
    """A batch is COPYed straight in when every transaction_id is new; one already stored
    (a redelivery) aborts that, and the batch goes through the staging table instead."""
    store = LedgerWriter(settings.database_url)
    try:
        first = [
            Decoded("1-0", event("st-1", HOT, "shop")),
            Decoded("1-1", event("st-2", "shop", HOT)),
        ]
        assert (await store.write(first, [])).inserted == 2
        assert store.staged_after_conflict == 0
        again = [
            Decoded("2-0", event("st-3", HOT, "shop")),
            first[0],
            Decoded("2-1", event("st-4", HOT, "mall")),
        ]
        result = await store.write(again, [])
    finally:
        await store.close()
    assert (result.inserted, result.redelivered, store.staged_after_conflict) == (2, 1, 1)
    ledger = FlusherLedger(settings, pg)
    assert await ledger.numbers() == [4, 3, 2, 1]
    assert await pg.fetch(ACCOUNTS_BROKEN) == []


# The soak.

HOT_ACCOUNTS: Final = ("hot-a", "hot-b", "hot-c")


class RolledBack(Exception):
    """Raised right before COMMIT: the batch's numbers must vanish with it."""


@dataclass
class Soak:
    stop_at: float
    rng: random.Random
    committed: set[str] = field(default_factory=set)
    batches: int = 0
    rollbacks: int = 0
    redeliveries: int = 0
    passes: int = 0
    counter: int = 0

    def purchase(self) -> PurchaseEvent:
        self.counter += 1
        buyer = self.rng.choice([*HOT_ACCOUNTS, f"buyer-{self.rng.randrange(50)}"])
        seller = self.rng.choice([a for a in HOT_ACCOUNTS if a != buyer] + ["shop"])
        return event(f"soak-{self.counter}", buyer, seller, amount=self.rng.randrange(1, 1000))


async def soak_writer(soak: Soak, store: LedgerWriter, name: str) -> None:
    done: list[Decoded] = []
    while time.monotonic() < soak.stop_at:
        batch = [
            Decoded(f"{name}-{soak.counter}-{i}", soak.purchase())
            for i in range(soak.rng.randrange(1, 40))
        ]
        if done and soak.rng.random() < 0.2:  # a redelivery: entries committed before
            batch += soak.rng.sample(done, min(len(done), 5))
            soak.redeliveries += 1
        roll_back = soak.rng.random() < 0.15
        delay = soak.rng.random() * 0.02

        async def before_commit(roll_back: bool = roll_back, delay: float = delay) -> None:
            await asyncio.sleep(delay)  # holding its accounts' locks
            if roll_back:
                raise RolledBack

        try:
            await store.write(batch, [], before_commit)
        except RolledBack:
            soak.rollbacks += 1
            await store.write(batch, [])  # delivered again, committed this time
        soak.batches += 1
        done = [*done, *batch][-200:]
        soak.committed.update(d.event.transaction_id for d in batch)


async def soak_reader(soak: Soak, settings: Settings, account: str) -> None:
    """Pages an account from its newest entry down to its first, again and again: each pass
    must see every number from its top down to 1, once, in order."""
    history = HistoryReader(settings.database_url)
    try:
        while time.monotonic() < soak.stop_at:
            entries, last = await history.history(account, 7, None)
            seen = [e.entry_id for e in entries]
            while last is not None and len(entries) == 7:
                entries, last = await history.history(account, 7, last)
                seen += [e.entry_id for e in entries]
            if seen:
                assert seen == list(range(seen[0], 0, -1)), f"{account}: {seen}"
                soak.passes += 1
    finally:
        await history.close()


async def test_four_writers_and_two_readers_keep_every_account_in_order(
    settings: Settings, pg: asyncpg.Connection
) -> None:
    soak = Soak(stop_at=time.monotonic() + SOAK_S, rng=random.Random(20261203))
    stores = [LedgerWriter(settings.database_url) for _ in range(4)]
    try:
        await asyncio.gather(
            *(soak_writer(soak, store, f"w{i}") for i, store in enumerate(stores)),
            soak_reader(soak, settings, "hot-a"),
            soak_reader(soak, settings, "hot-b"),
        )
    finally:
        for store in stores:
            await store.close()
    assert soak.rollbacks and soak.redeliveries and soak.passes > 10, soak
    stored = {r[0] for r in await pg.fetch("SELECT transaction_id FROM transactions")}
    assert stored == soak.committed
    assert await pg.fetch(LEDGER_BROKEN, None) == []  # one row each, debit = credit
    assert await pg.fetch(ACCOUNTS_BROKEN) == []  # contiguous numbers, totals = sums
    debited, credited = await pg.fetchrow(
        "SELECT sum(debited_total), sum(credited_total) FROM account_totals"
    )
    assert debited == credited
