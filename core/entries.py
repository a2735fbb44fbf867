"""The stream entry's layout: what the gateway hands append.lua and what readers decode.

Format 2 (now): one stream field per value, ``v`` first, then the purchase's values in
``FIELDS`` order. Every entry has the same fields, so Redis stores their names once per
stream node and each entry holds only its values (numbers as integers): readable in
``redis-cli XRANGE`` and about half the bytes of the JSON text it replaces.

Format 1 (up to 943f4b2): one field ``p`` holding the purchase as JSON with both legs.
Entries of that format still in a stream after an upgrade decode through
``core.events.EventV1``; an entry without ``v`` is format 1.
"""

from __future__ import annotations

from typing import Final

import msgspec

from core.constants import PAYLOAD_FIELD
from core.events import PurchaseEvent, PurchaseRequest, v1_decoder

Fields = dict[bytes, bytes]
"""A stream entry's fields as redis-py returns them (names and values as bytes)."""
Values = tuple[str | int, ...]
"""A purchase's values as the gateway sends them: str and int, which the client library
encodes in C (hiredis) while packing the command, cheaper than ``.encode()`` each here."""

VERSION_FIELD: Final = b"v"
VERSION: Final = b"2"
FIELDS: Final = (
    b"transaction_id",
    b"customer_account",
    b"customer_name",
    b"seller_account",
    b"seller_name",
    b"amount",
    b"request_id",
    b"accepted_at_us",
)
"""The names of a format-2 entry's values, in the order ``values`` gives them; append.lua
gets them from the gateway (``SCRIPT_HEADER``), so they are written down only here."""

SCRIPT_HEADER: Final = (VERSION_FIELD, VERSION, *FIELDS)
V1_FIELD: Final = PAYLOAD_FIELD.encode()
_NAMES: Final = tuple(name.decode() for name in FIELDS)


def values(req: PurchaseRequest, request_id: str, accepted_at_us: int) -> Values:
    """A purchase's values in ``FIELDS`` order, as append.lua writes them."""
    customer, seller = req.customer_info, req.seller_info
    return (
        req.transaction_id,
        customer.customer_account,
        customer.customer_name,
        seller.seller_account,
        seller.seller_name,
        customer.ammount,
        request_id,
        accepted_at_us,
    )


def decode(fields: Fields) -> PurchaseEvent:
    """The purchase an entry holds, validated as the gateway validated it; raises
    msgspec.DecodeError or ValueError (UnicodeDecodeError is one) when it does not decode."""
    version = fields.get(VERSION_FIELD)
    if version == VERSION:
        if len(fields) != len(FIELDS) + 1 or not all(field in fields for field in FIELDS):
            raise ValueError(f"format 2 entry with fields {sorted(fields)}")
        text = {name: fields[field].decode() for name, field in zip(_NAMES, FIELDS, strict=True)}
        return msgspec.convert(text, PurchaseEvent, strict=False)
    if version is None and V1_FIELD in fields:
        return v1_decoder.decode(fields[V1_FIELD]).upgraded()
    raise ValueError(f"unknown entry format (v={version!r}, fields {sorted(fields)})")


def raw(fields: Fields) -> bytes:
    """An entry as one byte string, for a dead letter: format 1's JSON as it is, any other
    entry as ``name=value`` lines."""
    if len(fields) == 1 and V1_FIELD in fields:
        return fields[V1_FIELD]
    return b"\n".join(name + b"=" + value for name, value in fields.items())


def from_reply(flat: list[bytes]) -> Fields:
    """Fields from a raw RESP reply (``[name, value, name, value, ...]``)."""
    return dict(zip(flat[::2], flat[1::2], strict=True))
