"""The idempotency record: what makes a retried purchase safe, written and read here only.

For each accepted purchase ``gateway/ingest/append.lua`` stores a record in a hash per time bucket
(``core.constants.idempotency_bucket``, same hash tag as its shard's stream): the field is
the transaction_id, the value ``fingerprint + entry id``, 8 raw bytes of a hash of the
canonical request then the stream entry holding it. A whole bucket expires at once, so a
purchase costs one hash field, not a key with its own expiry.

The window's boundary. Buckets are ``bucket_width_s`` wide (half the window, rounded up)
by Redis's clock (TIME in the script); bucket ``k`` (from ``k * width``) expires at
``(k + 1) * width + window``. A record therefore lives at least the window and at most the
window plus one width (900 s to 1,350 s by default): a retry within the window is always a
replay or a conflict, as before; one up to a width later may still be. Every live bucket
is looked at (the current and the ``REACH`` before it), so a record is found wherever it
lives. Changing ``MONOKERA_IDEMPOTENCY_TTL_S`` changes the width and with it the bucket
names: the records written before are not found again (the window restarts).

The script answers a new purchase with the bare entry id and a known transaction_id with
``#`` + its record (or, for a key of 943f4b2's, its ``hex fingerprint|entry id``);
``outcome`` tells them apart and compares fingerprints, so the gateway maps an
``Appended`` to HTTP without knowing the format. ``find_accepted`` goes from a
transaction_id through its record to its stream entry (the reads' "accepted, not yet
persisted" and ``make trace``).
"""

from __future__ import annotations

import enum
import math
import time
from hashlib import blake2b
from typing import Any, Final, NamedTuple, Protocol

import msgspec
from redis.asyncio import Redis

from core.constants import idempotency_bucket, idempotency_key, shard_of, stream_key
from core.entries import Fields, decode
from core.events import PurchaseEvent

FINGERPRINT_BYTES: Final = 8
"""64 bits: two different purchases reusing one transaction_id look like a replay with a
chance of 2^-64. The record's length in memory is what is saved."""
BUCKETS_PER_WINDOW: Final = 2
"""Wider buckets keep records longer (up to a width past the window); narrower ones cost a
lookup more per new purchase. Two: a record lives 1 to 1.5 windows, 3 lookups."""
REACH: Final = BUCKETS_PER_WINDOW
"""Buckets before the current one that may still be live (width * REACH >= window)."""
SEEN: Final = b"#"
"""Before a record in the script's answer (an entry id starts with a digit)."""
LEGACY_SEPARATOR: Final = b"|"


def bucket_width_s(window_s: int) -> int:
    return math.ceil(window_s / BUCKETS_PER_WINDOW)


def fingerprint(canonical_request: bytes) -> bytes:
    """The first 8 bytes of a 128-bit BLAKE2b of the request as the gateway re-encodes it:
    equal for the same purchase however its JSON was spaced or ordered. Their hex is the
    start of 943f4b2's fingerprint (the same digest, in hex), which keys of that version
    are compared with."""
    return blake2b(canonical_request, digest_size=16).digest()[:FINGERPRINT_BYTES]


def record(fingerprint: bytes, entry_id: bytes) -> bytes:
    """What append.lua stores for an accepted purchase (tests check the script agrees)."""
    return fingerprint + entry_id


class Record(NamedTuple):
    fingerprint: bytes
    """Raw bytes of this version's records; hex text of a key of 943f4b2's."""
    entry_id: bytes


def parse_record(raw: bytes, *, legacy: bool = False) -> Record:
    """A stored record's parts, or with ``legacy`` a legacy key's (``hex|entry id``)."""
    if legacy:
        fingerprint, _, entry_id = raw.rpartition(LEGACY_SEPARATOR)
        return Record(fingerprint, entry_id)
    return Record(raw[:FINGERPRINT_BYTES], raw[FINGERPRINT_BYTES:])


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
_SEEN: Final = SEEN[0]


def outcome(reply: bytes, fingerprint: bytes) -> Appended:
    """append.lua's reply for one purchase, judged against that purchase's fingerprint."""
    if reply[0] == _SEEN:
        prior, entry_id = reply[1 : 1 + FINGERPRINT_BYTES], reply[1 + FINGERPRINT_BYTES :]
        return Appended(_REPLAYED if prior == fingerprint else _CONFLICT, entry_id)
    prior, sep, entry_id = reply.rpartition(LEGACY_SEPARATOR)
    if not sep:
        return Appended(_ACCEPTED, reply)
    same = prior[: 2 * FINGERPRINT_BYTES] == fingerprint.hex().encode()
    return Appended(_REPLAYED if same else _CONFLICT, entry_id)


def buckets_to_read(shard: int, window_s: int, now_s: float | None = None) -> list[bytes]:
    """The buckets a record written around ``now_s`` may be in, newest first: every live one,
    and one ahead for a reader whose clock is behind Redis's."""
    width = bucket_width_s(window_s)
    current = int(time.time() if now_s is None else now_s) // width
    return [idempotency_bucket(shard, (current - j) * width) for j in range(-1, REACH + 1)]


class Lookups(Protocol):
    """The reads ``find_accepted`` needs, on whatever connection serves the keys."""

    async def records(self, buckets: list[bytes], field: bytes, legacy: bytes) -> list[Any]:
        """HGET ``field`` of each bucket, then GET ``legacy``: one round trip (one slot)."""
        ...

    async def entry(self, stream: bytes, entry_id: bytes) -> Fields | None:
        """The entry's fields; None if the entry is gone (trimmed) or has none."""
        ...


class ClientLookups:
    """``Lookups`` through a redis-py client (one Redis, or a cluster routing by key)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def records(self, buckets: list[bytes], field: bytes, legacy: bytes) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for bucket in buckets:
            pipe.hget(bucket, field)
        pipe.get(legacy)
        return list(await pipe.execute())

    async def entry(self, stream: bytes, entry_id: bytes) -> Fields | None:
        entries: Any = await self._redis.xrange(stream, entry_id, entry_id)
        return (entries[0][1] or None) if entries else None


class Found(NamedTuple):
    entry_id: str
    """The entry id the record names."""
    event: PurchaseEvent | None
    """The entry's event; None once the entry left the stream (trimmed after its flush), or
    when it does not decode (see ``undecodable``)."""
    undecodable: str | None = None
    """Why the entry does not decode: the flusher will dead-letter it."""
    key: bytes = b""
    """Where the record is: a bucket, or a legacy key (its TTL is the record's)."""


def decode_entry(fields: Fields) -> PurchaseEvent | str:
    """The event, or why it cannot be decoded (never raised: readers report, not fail)."""
    try:
        return decode(fields)
    except (msgspec.DecodeError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        return f"undecodable event: {exc}"


async def find_accepted(
    lookups: Lookups, transaction_id: str, shards: int, window_s: int
) -> Found | None:
    """The stream entry an accepted purchase went to: None when no record exists (never
    accepted, or accepted longer ago than the idempotency window)."""
    shard = shard_of(transaction_id, shards)
    buckets = buckets_to_read(shard, window_s)
    legacy = idempotency_key(shard, transaction_id)
    replies = await lookups.records(buckets, transaction_id.encode(), legacy)
    found = next(
        ((key, bytes(raw)) for key, raw in zip([*buckets, legacy], replies, strict=True) if raw),
        None,
    )
    if found is None:
        return None
    key, raw = found
    entry_id = parse_record(raw, legacy=key == legacy).entry_id
    fields = await lookups.entry(stream_key(shard).encode(), entry_id)
    decoded = None if fields is None else decode_entry(fields)
    if isinstance(decoded, str):
        return Found(entry_id.decode(), None, decoded, key)
    return Found(entry_id.decode(), decoded, None, key)
