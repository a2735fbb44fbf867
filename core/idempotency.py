"""The idempotency marker: what makes a retried purchase safe, written and read here only.

For each accepted purchase, ``gateway/append.lua`` stores under its idempotency key
(``core.constants.idempotency_key``, same hash tag as its shard's stream) the marker
``fingerprint|entry id``: a hash of the canonical request and the stream entry holding
it. The script answers a new purchase with the bare entry id and a known transaction_id
with the stored marker; ``outcome`` tells the two apart and compares fingerprints, so the
gateway maps an ``Appended`` to HTTP without knowing the format. ``find_accepted`` goes
from a transaction_id through the marker to its stream entry (the reads' "accepted, not yet
persisted" and ``make trace``).
"""

from __future__ import annotations

import enum
from hashlib import blake2b
from typing import Any, Final, NamedTuple, Protocol

import msgspec
from redis.asyncio import Redis

from core.constants import idempotency_key, shard_of, stream_key
from core.entries import Fields, decode
from core.events import PurchaseEvent

SEPARATOR: Final = b"|"
"""Between the fingerprint and the entry id; append.lua writes it (``fingerprint .. '|' ..
id``). Neither side contains it: the fingerprint is hex, an entry id is ``ms-seq``."""


def fingerprint(canonical_request: bytes) -> bytes:
    """128 bits of BLAKE2b of the request as the gateway re-encodes it, in hex: equal for
    the same purchase however its JSON was spaced or ordered."""
    return blake2b(canonical_request, digest_size=16).hexdigest().encode()


def marker(fingerprint: bytes, entry_id: bytes) -> bytes:
    """What append.lua stores for an accepted purchase (tests check the script agrees)."""
    return fingerprint + SEPARATOR + entry_id


class Marker(NamedTuple):
    fingerprint: bytes
    entry_id: bytes


def parse_marker(raw: bytes) -> Marker:
    """A stored marker's parts; a bare entry id (no separator) has an empty fingerprint."""
    fingerprint, _, entry_id = raw.rpartition(SEPARATOR)
    return Marker(fingerprint, entry_id)


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    """Appended now: a new stream entry."""
    REPLAYED = "replayed"
    """The same purchase was appended before within the idempotency window: its entry."""
    CONFLICT = "conflict"
    """The transaction_id was appended before for a different purchase."""


class Appended(NamedTuple):
    """One append's result. A tuple, not a dataclass: one is built per purchase, and a
    frozen dataclass's ``__init__`` costs several times as much."""

    outcome: Outcome
    entry_id: bytes
    """The stream entry holding the purchase (the original one for a replay or conflict)."""


_ACCEPTED: Final = Outcome.ACCEPTED
_REPLAYED: Final = Outcome.REPLAYED
_CONFLICT: Final = Outcome.CONFLICT


def outcome(reply: bytes, fingerprint: bytes) -> Appended:
    """append.lua's reply for one purchase, judged against that purchase's fingerprint."""
    prior, sep, entry_id = reply.rpartition(SEPARATOR)
    if not sep:
        return Appended(_ACCEPTED, reply)
    return Appended(_REPLAYED if prior == fingerprint else _CONFLICT, entry_id)


class Lookups(Protocol):
    """The two reads ``find_accepted`` needs, on whatever connection serves the key."""

    async def marker(self, key: bytes) -> bytes | None: ...

    async def entry(self, stream: bytes, entry_id: bytes) -> Fields | None:
        """The entry's fields; None if the entry is gone (trimmed) or has none."""
        ...


class ClientLookups:
    """``Lookups`` through a redis-py client (one Redis, or a cluster routing by key)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def marker(self, key: bytes) -> bytes | None:
        raw: Any = await self._redis.get(key)
        return None if raw is None else bytes(raw)

    async def entry(self, stream: bytes, entry_id: bytes) -> Fields | None:
        entries: Any = await self._redis.xrange(stream, entry_id, entry_id)
        return (entries[0][1] or None) if entries else None


class Found(NamedTuple):
    entry_id: str
    """The entry id the marker names."""
    event: PurchaseEvent | None
    """The entry's event; None once the entry left the stream (trimmed after its flush), or
    when it does not decode (see ``undecodable``)."""
    undecodable: str | None = None
    """Why the entry does not decode: the flusher will dead-letter it."""


def decode_entry(fields: Fields) -> PurchaseEvent | str:
    """The event, or why it cannot be decoded (never raised: readers report, not fail)."""
    try:
        return decode(fields)
    except (msgspec.DecodeError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        return f"undecodable event: {exc}"


async def find_accepted(lookups: Lookups, transaction_id: str, shards: int) -> Found | None:
    """The stream entry an accepted purchase went to: None when no marker exists (never
    accepted, or accepted longer ago than the idempotency window)."""
    shard = shard_of(transaction_id, shards)
    raw = await lookups.marker(idempotency_key(shard, transaction_id))
    if raw is None:
        return None
    entry_id = parse_marker(raw).entry_id
    fields = await lookups.entry(stream_key(shard).encode(), entry_id)
    decoded = None if fields is None else decode_entry(fields)
    if isinstance(decoded, str):
        return Found(entry_id.decode(), None, decoded)
    return Found(entry_id.decode(), decoded)
