"""What the gateway answers: typed once, encoded by msgspec, described in OpenAPI."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from core.events import Direction, PurchaseRequest

Status = Literal["ACCEPTED", "PERSISTED"]


class CustomerReceipt(msgspec.Struct):
    customer_name: str
    customer_account: str
    debit_ammount: int


class SellerReceipt(msgspec.Struct):
    seller_name: str
    seller_account: str
    credit_ammount: int


class PurchaseResponse(msgspec.Struct):
    """Exactly the seed's response body; anything new goes in headers."""

    transaction_id: str
    customer_info: CustomerReceipt
    seller_info: SellerReceipt


def response_for(req: PurchaseRequest) -> PurchaseResponse:
    amount = req.customer_info.ammount
    return PurchaseResponse(
        transaction_id=req.transaction_id,
        customer_info=CustomerReceipt(
            req.customer_info.customer_name, req.customer_info.customer_account, amount
        ),
        seller_info=SellerReceipt(
            req.seller_info.seller_name, req.seller_info.seller_account, amount
        ),
    )


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
    """This entry's number in the account's own sequence: 1, 2, 3 ... without gaps, in the
    order the account's purchases were accepted."""
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
    """Opaque; pass it back as ``cursor`` for the next, older page. None when this page holds
    fewer than ``limit`` entries (a full last page is followed by an empty one)."""


class AccountSummary(msgspec.Struct):
    account: str
    debited_total: int
    credited_total: int
    debit_count: int
    credit_count: int
    first_activity_at: datetime | None
    last_activity_at: datetime | None
