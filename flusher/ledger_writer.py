"""Bulk writes of purchases into PostgreSQL, idempotent on transaction_id.

A batch is COPYed into a temporary table; its accounts are locked in one order; then one
statement inserts the new transactions (``ON CONFLICT DO NOTHING``) and, from exactly the
rows it inserted, one ledger row each (the buyer's DEBIT and the seller's CREDIT, numbered
in each account's own sequence), and moves the accounts' totals. A redelivered entry
therefore writes nothing. No global lock: batches that share no account commit side by
side (migration 008 gives the reasons). One unique violation would abort a plain COPY,
hence the staging table. The statements are named and described in ``flusher.queries``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, cast

import asyncpg

from core.events import PurchaseEvent
from core.migrate import migrate
from core.pg_errors import PG_RETRYABLE
from flusher.errors import DatabaseUnavailable
from flusher.ledger_rows import (
    LEDGER_COLUMNS,
    MOVE_COLUMNS,
    TRANSACTION_COLUMNS,
    accepted_at,
    account_moves,
    batch_rows,
)
from flusher.partitions import PartitionChange, maintain_partitions
from flusher.queries import (
    ADD_MOVES,
    BATCH_TIME,
    COUNTERS,
    CREATE_MOVES,
    CREATE_STAGING,
    INSERT_DEAD_LETTER,
    INSERT_FROM_STAGING,
    INSERT_INCIDENT,
    LOCK_ACCOUNTS,
    LOCK_MOVED_ACCOUNTS,
    SET_TRANSACTION_TIMEOUT,
)

BeforeCommit = Callable[[], Awaitable[object]] | None
"""Run inside a batch's transaction right before its COMMIT (``LedgerWriter.write``)."""

STAGING_COLUMNS: Final = (
    "seq",
    "transaction_id",
    "customer_name",
    "customer_account",
    "seller_name",
    "seller_account",
    "amount",
    "request_id",
    "stream_entry_id",
    "accepted_at",
)
"""The columns of ``incoming`` (``flusher.queries.CREATE_STAGING``), in the order of
``staging_record``'s fields."""

REFUSED: Final = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
)
"""Server errors that retrying the same rows cannot fix."""

DEADLOCK_ATTEMPTS: Final = 5
"""Tries of one batch aborted as a deadlock before it is left to the flusher's retry loop."""


@dataclass(frozen=True, slots=True)
class Decoded:
    entry_id: str
    event: PurchaseEvent


@dataclass(frozen=True, slots=True)
class Undecodable:
    entry_id: str
    payload: bytes
    error: str


@dataclass(slots=True)
class WriteResult:
    inserted: int = 0
    """New purchases: one transaction row and two ledger legs each."""
    duplicates: int = 0
    """Entries for a transaction_id stored from another entry (see duplicate_entries)."""
    conflicting: int = 0
    """Of the duplicates, those naming other accounts or another amount than the stored
    purchase: answered 200 by the gateway, not what the ledger holds."""
    redelivered: int = 0
    """Entries stored before, delivered again (a crash between commit and XACK)."""
    dead_letters: int = 0


def staging_record(seq: int, item: Decoded) -> tuple[object, ...]:
    e = item.event
    return (
        seq,
        e.transaction_id,
        e.customer_name,
        e.debit.account,
        e.seller_name,
        e.credit.account,
        e.amount,
        e.request_id,
        item.entry_id,
        accepted_at(e),
    )


class LedgerWriter:
    """One shard's writer: one connection, reopened when PostgreSQL comes back. One batch
    at a time. Rows naming a stream entry name ``shard`` with it (migration 006)."""

    def __init__(
        self,
        dsn: str,
        *,
        shard: int = 0,
        timeout_s: float = 10.0,
        command_timeout_s: float = 60.0,
        transaction_timeout_s: float = 30.0,
    ) -> None:
        self._dsn = dsn
        self.shard = shard
        self._timeout_s = timeout_s
        # A flusher frozen mid-transaction (SIGSTOP, a stuck host) holds its accounts' locks
        # and would stall every batch sharing one, and whoever takes its entries over: PostgreSQL ends such a transaction.
        # transaction_timeout (PostgreSQL 17+) also covers a client frozen in the middle of
        # the extended protocol, which idle_in_transaction_session_timeout does not. It is
        # set for each batch transaction only (SET LOCAL): migrations and partition
        # maintenance may rightly take longer, and must not be killed every time.
        self._transaction_timeout_ms = str(int(transaction_timeout_s * 1000))
        self._has_transaction_timeout = False
        # A PostgreSQL that hangs without closing the connection must not hang the flusher:
        # past this a statement fails, the connection is dropped and the batch retried.
        self._command_timeout_s = command_timeout_s
        self._conn: asyncpg.Connection | None = None
        self.deadlocks_retried = 0
        """Batches PostgreSQL aborted as deadlocked and this writer wrote again."""
        self.staged_after_conflict = 0
        """Batches the direct path found a stored transaction_id in, written again staged."""

    async def connect(self) -> asyncpg.Connection:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        try:
            await self._migrate()
            conn = await asyncpg.connect(
                self._dsn,
                timeout=self._timeout_s,
                command_timeout=self._command_timeout_s,
                server_settings={
                    "idle_in_transaction_session_timeout": self._transaction_timeout_ms
                },
            )
        except PG_RETRYABLE as exc:
            raise DatabaseUnavailable(f"PostgreSQL unavailable: {exc!r}") from exc
        try:
            self._has_transaction_timeout = conn.get_server_version().major >= 17
            await conn.execute(CREATE_STAGING)
            await conn.execute(CREATE_MOVES)
        except BaseException as exc:
            conn.terminate()
            if isinstance(exc, PG_RETRYABLE):
                raise DatabaseUnavailable(f"PostgreSQL unavailable: {exc!r}") from exc
            raise
        self._conn = conn
        return conn

    async def _migrate(self) -> None:
        """On a connection of its own, without the batches' timeouts: a migration on a large
        ledger (or waiting for another process's) may take minutes, and one killed at a
        timeout would be killed again at every start."""
        conn = await asyncpg.connect(self._dsn, timeout=self._timeout_s, command_timeout=None)
        try:
            await migrate(conn)
        except BaseException:
            conn.terminate()
            raise
        await conn.close(timeout=2)

    async def write(
        self, good: list[Decoded], bad: list[Undecodable], before_commit: BeforeCommit = None
    ) -> WriteResult:
        """Commit one batch; raises DatabaseUnavailable when it could not (nothing committed).

        ``before_commit`` runs inside the transaction, after its statements, right before
        COMMIT (once per transaction: the one-by-one path runs it for each); what it raises
        rolls the batch back. The flusher guards cached reads there, so that they are held
        for the COMMIT only, not for the whole batch."""
        conn = await self.connect()
        try:
            try:
                return await self._write_retrying_deadlocks(conn, good, bad, before_commit)
            except REFUSED:
                return await self._write_one_by_one(conn, good, bad, before_commit)
        except PG_RETRYABLE as exc:
            await self._discard(conn)
            raise DatabaseUnavailable(f"PostgreSQL write failed: {exc!r}") from exc
        except BaseException:
            await self._discard(conn)  # whatever state it is in, the next batch gets a new one
            raise

    async def _write_retrying_deadlocks(
        self,
        conn: asyncpg.Connection,
        good: list[Decoded],
        bad: list[Undecodable],
        before_commit: BeforeCommit = None,
    ) -> WriteResult:
        """Accounts are locked in one order, but two batches holding the same transaction_id
        (a redelivery racing its first delivery) can still wait on each other's insert:
        PostgreSQL aborts one of them (40P01), which is rolled back whole and tried again
        at once, on the same connection."""
        for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
            try:
                return await self._write(conn, good, bad, before_commit)
            except asyncpg.exceptions.DeadlockDetectedError:
                self.deadlocks_retried += 1
                if attempt == DEADLOCK_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    async def _write(
        self,
        conn: asyncpg.Connection,
        good: list[Decoded],
        bad: list[Undecodable],
        before_commit: BeforeCommit = None,
    ) -> WriteResult:
        if good and len({item.event.transaction_id for item in good}) == len(good):
            try:
                return await self._write_direct(conn, good, bad, before_commit)
            except asyncpg.exceptions.UniqueViolationError:
                self.staged_after_conflict += 1  # rolled back: written the general way
        return await self._write_staged(conn, good, bad, before_commit)

    async def _write_direct(
        self,
        conn: asyncpg.Connection,
        good: list[Decoded],
        bad: list[Undecodable],
        before_commit: BeforeCommit = None,
    ) -> WriteResult:
        """The usual batch, every transaction_id new and once: its rows numbered here and
        COPYed straight into transactions and ledger_transfers. A transaction_id already
        stored aborts the COPY (UniqueViolationError), and the caller writes the batch
        again through the staging table, which sorts out redeliveries and duplicates."""
        purchases = [(item.entry_id, item.event) for item in good]
        times = [accepted_at(item.event) for item in good]
        async with conn.transaction():
            if self._has_transaction_timeout:
                await conn.execute(SET_TRANSACTION_TIMEOUT, self._transaction_timeout_ms)
            await conn.copy_records_to_table(
                "batch_moves", records=account_moves(purchases, times), columns=MOVE_COLUMNS
            )
            await conn.execute(LOCK_MOVED_ACCOUNTS)
            last_seq = dict(cast(list[tuple[str, int]], await conn.fetch(COUNTERS)))
            recorded_at = await conn.fetchval(BATCH_TIME)
            rows = batch_rows(
                purchases, times, shard=self.shard, last_seq=last_seq, recorded_at=recorded_at
            )
            await conn.copy_records_to_table(
                "transactions", records=rows.transactions, columns=TRANSACTION_COLUMNS
            )
            await conn.copy_records_to_table(
                "ledger_transfers", records=rows.ledger, columns=LEDGER_COLUMNS
            )
            await conn.execute(ADD_MOVES, recorded_at)
            await self._dead_letters(conn, bad)
            if before_commit is not None:
                await before_commit()
        return WriteResult(inserted=len(good), dead_letters=len(bad))

    async def _dead_letters(self, conn: asyncpg.Connection, bad: list[Undecodable]) -> None:
        if bad:
            await conn.executemany(
                INSERT_DEAD_LETTER, [(self.shard, b.entry_id, b.payload, b.error) for b in bad]
            )

    async def _write_staged(
        self,
        conn: asyncpg.Connection,
        good: list[Decoded],
        bad: list[Undecodable],
        before_commit: BeforeCommit = None,
    ) -> WriteResult:
        result = WriteResult()
        async with conn.transaction():
            if self._has_transaction_timeout:
                await conn.execute(SET_TRANSACTION_TIMEOUT, self._transaction_timeout_ms)
            if good:
                await conn.copy_records_to_table(
                    "incoming",
                    records=[staging_record(i, item) for i, item in enumerate(good)],
                    columns=STAGING_COLUMNS,
                )
                await conn.execute(LOCK_ACCOUNTS)
                counts = await conn.fetchrow(INSERT_FROM_STAGING, self.shard)
                assert counts is not None  # the statement always returns one row
                result.inserted = counts["inserted"]
                result.duplicates = counts["duplicates"]
                result.conflicting = counts["conflicting"]
                result.redelivered = len(good) - result.inserted - result.duplicates
            await self._dead_letters(conn, bad)
            result.dead_letters = len(bad)
            if before_commit is not None:
                await before_commit()
        return result

    async def _write_one_by_one(
        self,
        conn: asyncpg.Connection,
        good: list[Decoded],
        bad: list[Undecodable],
        before_commit: BeforeCommit = None,
    ) -> WriteResult:
        """A batch the database refused: store each entry alone, dead-letter the ones it refuses."""
        total = WriteResult()
        for item in good:
            try:
                one = await self._write_retrying_deadlocks(conn, [item], [], before_commit)
            except REFUSED as exc:
                payload = repr(item.event).encode()
                reason = f"rejected by PostgreSQL: {exc}".replace("\x00", "\\0")
                bad = [*bad, Undecodable(item.entry_id, payload, reason)]
                continue
            total.inserted += one.inserted
            total.duplicates += one.duplicates
            total.conflicting += one.conflicting
            total.redelivered += one.redelivered
        if bad:
            total.dead_letters = (await self._write(conn, [], bad)).dead_letters
        return total

    async def maintain_partitions(
        self, *, ahead_days: int, retention_days: int
    ) -> list[PartitionChange] | None:
        """None when the locks were not had in time (see flusher.partitions)."""
        conn = await self.connect()
        try:
            return await maintain_partitions(
                conn, ahead_days=ahead_days, retention_days=retention_days
            )
        except asyncpg.exceptions.LockNotAvailableError:
            return None
        except PG_RETRYABLE as exc:
            await self._discard(conn)
            raise DatabaseUnavailable(f"PostgreSQL partition maintenance failed: {exc!r}") from exc

    async def record_incident(
        self, consumer: str, reason: str, last_committed_entry_id: str | None
    ) -> None:
        conn = await self.connect()
        try:
            await conn.execute(INSERT_INCIDENT, consumer, reason, last_committed_entry_id)
        except PG_RETRYABLE as exc:
            await self._discard(conn)
            raise DatabaseUnavailable(f"PostgreSQL write failed: {exc!r}") from exc

    async def _discard(self, conn: asyncpg.Connection) -> None:
        self._conn = None
        conn.terminate()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close(timeout=2)
            self._conn = None
