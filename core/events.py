"""The purchase as it crosses the wire and the stream: typed once, used by every side.

``PurchaseRequest`` is the seed service's request schema (``ammount`` is spelled that way on
the wire); constraints are checked while decoding. What the gateway answers is its own
(gateway/api/schemas.py). ``PurchaseEvent`` is the stream entry the
gateway appends and the flusher reads: one entry holds the whole purchase, so a debit can
never exist without its credit. Its layout in the stream, and the older layouts still read,
are core/entries.py's.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

# No control characters: PostgreSQL text cannot hold NUL, and none belongs in an id or a name.
# "(?!\n)$" because Python's "$" also matches before a final newline (ECMA's does not).
_PRINTABLE = r"^[^\x00-\x1f\x7f]*(?!\n)$"
TransactionId = Annotated[str, Meta(min_length=1, max_length=64, pattern=_PRINTABLE)]
Name = Annotated[str, Meta(min_length=1, max_length=200, pattern=_PRINTABLE)]
Account = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+(?!\n)$")]
Amount = Annotated[int, Meta(gt=0, le=10**15, description="minor units")]
Direction = Literal["DEBIT", "CREDIT"]


class CustomerInfo(msgspec.Struct, forbid_unknown_fields=True):
    customer_name: Name
    customer_account: Account
    ammount: Amount


class SellerInfo(msgspec.Struct, forbid_unknown_fields=True):
    seller_name: Name
    seller_account: Account


class PurchaseRequest(msgspec.Struct, forbid_unknown_fields=True):
    transaction_id: TransactionId
    customer_info: CustomerInfo
    seller_info: SellerInfo

    def __post_init__(self) -> None:
        if self.customer_info.customer_account == self.seller_info.seller_account:
            # msgspec turns this into a ValidationError, so it reaches the client as a 422.
            raise ValueError(
                "$.seller_info.seller_account must differ from $.customer_info.customer_account"
            )


class Leg(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    account: Account
    direction: Direction
    amount: Amount


RequestId = Annotated[str, Meta(max_length=80, pattern=_PRINTABLE)]  # id[:item]
AcceptedAtUs = Annotated[int, Meta(ge=0, lt=253_402_300_800_000_000)]  # before year 10000


class PurchaseEvent(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, array_like=True):
    """One stream entry: a purchase, each value once. Its two legs (the buyer debited, the
    seller credited, by the same amount) follow from it, so they are derived where they are
    read rather than stored (core/entries.py holds the stream entry's layout, whose values
    come in this order: array_like lets msgspec check a whole batch of them in one call)."""

    transaction_id: TransactionId
    customer_account: Account
    customer_name: Name
    seller_account: Account
    seller_name: Name
    amount: Amount
    request_id: RequestId
    accepted_at_us: AcceptedAtUs

    @property
    def debit(self) -> Leg:
        return Leg(self.customer_account, "DEBIT", self.amount)

    @property
    def credit(self) -> Leg:
        return Leg(self.seller_account, "CREDIT", self.amount)

    @property
    def legs(self) -> tuple[Leg, Leg]:
        return self.debit, self.credit


class EventV1(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The stream entry up to format 1: one JSON text with both legs in full. Entries of
    that format still in a stream after an upgrade are decoded through it."""

    v: int = 1
    transaction_id: TransactionId
    customer_name: Name
    seller_name: Name
    legs: tuple[Leg, Leg]
    request_id: RequestId
    accepted_at_us: AcceptedAtUs

    def upgraded(self) -> PurchaseEvent:
        """The same purchase; ValueError if its legs are not one debit and its credit."""
        debit, credit = self.legs
        if (debit.direction, credit.direction) != ("DEBIT", "CREDIT") or (
            debit.amount != credit.amount
        ):
            raise ValueError("legs are not a debit and a credit of one amount")
        return PurchaseEvent(
            transaction_id=self.transaction_id,
            customer_account=debit.account,
            customer_name=self.customer_name,
            seller_account=credit.account,
            seller_name=self.seller_name,
            amount=debit.amount,
            request_id=self.request_id,
            accepted_at_us=self.accepted_at_us,
        )


request_decoder: Final = msgspec.json.Decoder(PurchaseRequest)
v1_decoder: Final = msgspec.json.Decoder(EventV1)
encoder: Final = msgspec.json.Encoder()
