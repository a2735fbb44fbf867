"""What the read endpoints answer: typed once, encoded by msgspec, described in OpenAPI."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from core.events import CustomerReceipt, Direction, SellerReceipt

Status = Literal["ACCEPTED", "PERSISTED"]


class LegView(msgspec.Struct):
    account: str
    direction: Direction
    amount: int


class TransactionView(msgspec.Struct):
    """A purchase with both legs and its trace through the pipeline."""

    transaction_id: str
    status: Status
    """ACCEPTED: in the Redis stream, not yet in PostgreSQL. PERSISTED: in PostgreSQL."""
    request_id: str
    stream_entry_id: str
    accepted_at: datetime
    persisted_at: datetime | None
    customer_info: CustomerReceipt
    seller_info: SellerReceipt
    legs: list[LegView]


class HistoryEntry(msgspec.Struct):
    entry_id: int
    transaction_id: str
    direction: Direction
    """DEBIT: a purchase by this account. CREDIT: a sale."""
    amount: int
    counterparty: str
    accepted_at: datetime


class HistoryPage(msgspec.Struct):
    account: str
    entries: list[HistoryEntry]
    next_cursor: str | None
    """Opaque; pass it back as ``cursor`` for the next, older page. None on the last page."""


class AccountSummary(msgspec.Struct):
    account: str
    debited_total: int
    credited_total: int
    debit_count: int
    credit_count: int
    first_activity_at: datetime | None
    last_activity_at: datetime | None
