"""The purchase as it crosses the wire and the stream: typed once, used by every side.

``PurchaseRequest`` is the seed service's request schema (``ammount`` is spelled that way on
the wire); constraints are checked while decoding. What the gateway answers is its own
(gateway/views.py). ``PurchaseEvent`` is the stream entry the
gateway appends and the flusher reads: one entry carries both legs of the double entry, so a
debit can never exist without its credit. New event fields must get defaults so that entries
already in the stream still decode.
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

EVENT_VERSION: Final = 1


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


class PurchaseEvent(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One stream entry: a purchase and both of its legs."""

    v: int = EVENT_VERSION
    transaction_id: TransactionId
    customer_name: Name
    seller_name: Name
    legs: tuple[Leg, Leg]
    request_id: Annotated[str, Meta(max_length=80, pattern=_PRINTABLE)]  # id[:item]
    accepted_at_us: Annotated[int, Meta(ge=0, lt=253_402_300_800_000_000)]  # before year 10000

    @property
    def debit(self) -> Leg:
        return self.legs[0]

    @property
    def credit(self) -> Leg:
        return self.legs[1]

    @property
    def amount(self) -> int:
        return self.legs[0].amount


def event_from_request(req: PurchaseRequest, request_id: str, accepted_at_us: int) -> PurchaseEvent:
    amount = req.customer_info.ammount
    return PurchaseEvent(
        transaction_id=req.transaction_id,
        customer_name=req.customer_info.customer_name,
        seller_name=req.seller_info.seller_name,
        legs=(
            Leg(req.customer_info.customer_account, "DEBIT", amount),
            Leg(req.seller_info.seller_account, "CREDIT", amount),
        ),
        request_id=request_id,
        accepted_at_us=accepted_at_us,
    )


request_decoder: Final = msgspec.json.Decoder(PurchaseRequest)
event_decoder: Final = msgspec.json.Decoder(PurchaseEvent)
encoder: Final = msgspec.json.Encoder()
