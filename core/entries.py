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

import operator
import re
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
if PurchaseEvent.__struct_fields__ != _NAMES:  # decode_all converts values by position
    raise RuntimeError(f"FIELDS {_NAMES} out of PurchaseEvent's order")


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
    [decoded] = decode_all([fields])
    if isinstance(decoded, Exception):
        raise decoded
    return decoded


def decode_all(entries: list[Fields]) -> list[PurchaseEvent | ValueError]:
    """Each entry's purchase, or why it does not decode (msgspec's errors are ValueErrors).

    Format-2 entries are validated in one call for the whole list: checking every value
    against the gateway's constraints (lengths, patterns, bounds) costs msgspec about half
    as much per entry that way as one call each. A list with an invalid entry is checked
    again entry by entry, to tell which."""
    decoded: list[PurchaseEvent | ValueError] = []
    rows: list[list[str]] = []
    at: list[int] = []
    for fields in entries:
        try:
            version = fields.get(VERSION_FIELD)
            if version == VERSION:
                rows.append(_texts(fields))
                at.append(len(decoded))
                decoded.append(_PENDING)
            elif version is None and V1_FIELD in fields:
                decoded.append(v1_decoder.decode(fields[V1_FIELD]).upgraded())
            else:
                raise ValueError(f"unknown entry format (v={version!r}, fields {sorted(fields)})")
        except ValueError as exc:  # msgspec's DecodeError and UnicodeDecodeError are ones
            decoded.append(exc)
    try:
        events: list[PurchaseEvent | ValueError] = [*_convert(rows)]
    except msgspec.ValidationError:
        events = [_convert_one(row) for row in rows]
    for i, event in zip(at, events, strict=True):
        decoded[i] = event
    return decoded


_PENDING: Final = ValueError("not converted yet")
_VALUES: Final = operator.itemgetter(*FIELDS)


def _texts(fields: Fields) -> list[str]:
    """A format-2 entry's values in ``PurchaseEvent``'s field order, as text: joined, decoded
    and split in one go each (a third of the cost of decoding them one by one). NUL is the
    separator; no value may hold one (PostgreSQL text cannot)."""
    try:
        if len(fields) != len(FIELDS) + 1:
            raise KeyError
        texts = b"\0".join(_VALUES(fields)).decode().split("\0")
    except KeyError:
        raise ValueError(f"format 2 entry with fields {sorted(fields)}") from None
    if len(texts) != len(FIELDS):
        raise ValueError("format 2 entry with a NUL in a value")
    return texts


def _convert(rows: list[list[str]]) -> list[PurchaseEvent]:
    return msgspec.convert(rows, list[PurchaseEvent], strict=False)


def _convert_one(row: list[str]) -> PurchaseEvent | ValueError:
    try:
        return msgspec.convert(row, PurchaseEvent, strict=False)
    except msgspec.ValidationError as exc:  # "... - at `$[5]`": named instead
        return ValueError(_POSITION.sub(lambda m: "`$." + _NAMES[int(m[1])] + "`", str(exc)))


_POSITION: Final = re.compile(r"`\$\[(\d+)\]`")


def raw(fields: Fields) -> bytes:
    """An entry as one byte string, for a dead letter: format 1's JSON as it is, any other
    entry as ``name=value`` lines."""
    if len(fields) == 1 and V1_FIELD in fields:
        return fields[V1_FIELD]
    return b"\n".join(name + b"=" + value for name, value in fields.items())


def from_reply(flat: list[bytes]) -> Fields:
    """Fields from a raw RESP reply (``[name, value, name, value, ...]``)."""
    return dict(zip(flat[::2], flat[1::2], strict=True))
