"""Names shared by the gateway, the flusher and the tools: one place, so they cannot drift."""

import zlib
from typing import Final


def stream_key(shard: int) -> str:
    """Shard ``shard``'s purchase stream. The hash tag ``{N}`` puts the stream and the
    idempotency keys of its purchases in one Redis Cluster slot, so the append script that
    touches both stays atomic there."""
    return f"monokera:{{{shard}}}:purchases"


def idempotency_bucket(shard: int, start_s: int) -> bytes:
    """The hash of shard ``shard``'s idempotency records accepted from ``start_s`` (unix
    seconds) on, one field per transaction_id (core/idempotency.py). Its hash tag is the
    stream's: the append script touches both in one cluster slot."""
    return b"monokera:{%d}:idempotency:%d" % (shard, start_s)


def idempotency_bucket_prefix(shard: int) -> bytes:
    """``idempotency_bucket`` without its start: append.lua completes it."""
    return b"monokera:{%d}:idempotency:" % shard


def idempotency_key(shard: int, transaction_id: str) -> bytes:
    """Up to 943f4b2, the one key per purchase that made its retries safe (value:
    fingerprint|entry id, in hex). Read only now, while such keys may still be live after
    an upgrade (``MONOKERA_IDEMPOTENCY_LEGACY_KEYS``); no bucket name starts with it."""
    return b"monokera:{%d}:idem:" % shard + transaction_id.encode()


IDEMPOTENCY_KEY_PATTERN: Final = b"monokera:{*}:idem:*"
"""Every ``idempotency_key`` of every shard, as a SCAN MATCH pattern (Redis's glob: braces
are plain characters; ``idempotency:`` has no colon after ``idem``)."""


def shard_of(transaction_id: str, shards: int) -> int:
    """A stable hash (CRC-32, the same in every process and release) picks the shard."""
    return zlib.crc32(transaction_id.encode()) % shards if shards > 1 else 0


MAX_SHARDS: Final = 1024
"""The most purchase streams ``MONOKERA_STREAM_SHARDS`` allows: no stream above it exists."""

STREAM: Final = stream_key(0)
"""Shard 0's stream: the only one with the default single shard."""

GROUP: Final = "flusher"
"""The consumer group whose members copy stream entries into PostgreSQL."""

PAYLOAD_FIELD: Final = "p"
"""The single field of a format-1 stream entry (JSON); core/entries.py reads it still."""

PG_MIGRATION_LOCK: Final = 0x4D4F4E4F
"""Advisory-lock key that serialises migrations between processes ("MONO")."""

PG_PARTITIONS_LOCK: Final = 0x4D4F4E50
"""Transaction-level advisory lock of ledger partition maintenance ("MONP"): flushers
starting together would otherwise create the same partition twice. Batches never take it."""


def account_version_key(account: str) -> bytes:
    """Per-account version, deleted by the flusher after each commit that touches the account.

    Cached history pages and summaries are stored with it, so deleting it makes every older
    copy unreachable at once: invalidation without having to find and delete the pages.
    The hash tag keeps an account's version, its hold and its cached reads in one cluster
    slot, so one round trip reads them all."""
    return b"monokera:{a:%s}:v" % account.encode()


def account_hold_key(account: str) -> bytes:
    """The batches being committed that touch the account (a set of batch tokens): while it
    exists, the account's reads are neither served from the cache nor stored in it."""
    return b"monokera:{a:%s}:hold" % account.encode()


def account_cache_key(account: str, kind: bytes, suffix: bytes) -> bytes:
    """A cached read of one account (``kind`` h: history page, s: summary)."""
    return b"monokera:{a:%s}:cache:%s:%s" % (account.encode(), kind, suffix)


def transaction_cache_key(transaction_id: str) -> bytes:
    """A persisted transaction's cached view: it never changes, so it is never invalidated."""
    return b"monokera:cache:tx:" + transaction_id.encode()


CACHE_PATTERN: Final = b"monokera:*cache:*"
"""Every cached read, for tools and tests that clear the cache."""

SUPERVISOR_STATUS: Final = b"monokera:supervisor"
"""Hash written by `make run`'s supervisor: one field per child process, its restarts and
state as JSON, for the gateway's /readyz and /metrics (``core.supervisor_status``)."""
