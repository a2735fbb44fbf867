"""A batch as the rows it adds: what it moves in each account's totals, and one transaction
row and one ledger row per purchase, numbered in both its accounts' sequences in stream
order.

The ledger writer's direct path COPYs these (flusher.ledger_writer): the moves first, to
lock the accounts and read their last numbers, then the rows numbered from those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from core.events import PurchaseEvent

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

TRANSACTION_COLUMNS: Final = (
    "transaction_id",
    "customer_name",
    "customer_account",
    "seller_name",
    "seller_account",
    "amount",
    "request_id",
    "stream_shard",
    "stream_entry_id",
    "accepted_at",
    "persisted_at",
)

LEDGER_COLUMNS: Final = (
    "transaction_id",
    "debit_account",
    "debit_seq",
    "credit_account",
    "credit_seq",
    "amount",
    "accepted_at",
    "recorded_at",
)


def accepted_at(event: PurchaseEvent) -> datetime:
    return _EPOCH + timedelta(microseconds=event.accepted_at_us)


MOVE_COLUMNS: Final = (
    "account",
    "debited",
    "credited",
    "debits",
    "credits",
    "first_activity_at",
    "last_activity_at",
)


@dataclass(slots=True)
class Move:
    """What a batch adds to one account's totals."""

    debited: int = 0
    credited: int = 0
    debits: int = 0
    credits: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None

    def add(self, amount: int, at: datetime, *, debit: bool) -> None:
        if debit:
            self.debited += amount
            self.debits += 1
        else:
            self.credited += amount
            self.credits += 1
        if self.first_at is None or at < self.first_at:
            self.first_at = at
        if self.last_at is None or at > self.last_at:
            self.last_at = at


def account_moves(
    purchases: Sequence[tuple[str, PurchaseEvent]], times: Sequence[datetime]
) -> list[tuple[object, ...]]:
    """Each account of the batch with what the batch adds to it (``MOVE_COLUMNS``);
    ``times``: the purchases' ``accepted_at``."""
    moves: dict[str, Move] = {}
    for (_, e), at in zip(purchases, times, strict=True):
        moves.setdefault(e.customer_account, Move()).add(e.amount, at, debit=True)
        moves.setdefault(e.seller_account, Move()).add(e.amount, at, debit=False)
    return [
        (account, m.debited, m.credited, m.debits, m.credits, m.first_at, m.last_at)
        for account, m in moves.items()
    ]


@dataclass(slots=True)
class BatchRows:
    transactions: list[tuple[object, ...]] = field(default_factory=list)
    ledger: list[tuple[object, ...]] = field(default_factory=list)


def batch_rows(
    purchases: Sequence[tuple[str, PurchaseEvent]],
    times: Sequence[datetime],
    *,
    shard: int,
    last_seq: dict[str, int],
    recorded_at: datetime,
) -> BatchRows:
    """``purchases``: (stream entry id, purchase) in stream order, every transaction_id
    new; ``times``: their ``accepted_at``; ``last_seq``: each account's last number before
    the batch."""
    rows = BatchRows()
    seq = dict(last_seq)
    for (entry_id, e), at in zip(purchases, times, strict=True):
        buyer, seller = e.customer_account, e.seller_account
        debit_seq = seq[buyer] = seq[buyer] + 1
        credit_seq = seq[seller] = seq[seller] + 1
        rows.transactions.append(
            (e.transaction_id, e.customer_name, buyer, e.seller_name, seller, e.amount,
             e.request_id, shard, entry_id, at, recorded_at)
        )  # fmt: skip
        rows.ledger.append(
            (e.transaction_id, buyer, debit_seq, seller, credit_seq, e.amount, at, recorded_at)
        )
    return rows
