"""Names shared by the gateway, the flusher and the tools: one place, so they cannot drift."""

from typing import Final

STREAM: Final = "monokera:purchases"
"""The Redis stream every accepted purchase is appended to, one entry per purchase."""

GROUP: Final = "flusher"
"""The consumer group whose members copy stream entries into PostgreSQL."""

PAYLOAD_FIELD: Final = "p"
"""The single field of a stream entry; its value is an encoded ``PurchaseEvent``."""

PG_MIGRATION_LOCK: Final = 0x4D4F4E4F
"""Advisory-lock key that serialises migrations between processes ("MONO")."""

PG_WRITE_LOCK: Final = 0x4D4F4E57
"""Transaction-level advisory lock every flusher batch holds while it writes ("MONW")."""

IDEMPOTENCY_PREFIX: Final = b"monokera:idem:"
"""Prefix of the per-transaction_id keys that make retries safe (value: fingerprint|entry id)."""

ACCOUNT_VERSION_PREFIX: Final = b"monokera:acct:v:"
"""Per-account version, bumped by the flusher after each commit that touches the account.

Cached history pages and summaries are keyed by it, so a bump makes every older copy
unreachable at once: invalidation without having to find and delete anything."""

CACHE_PREFIX: Final = b"monokera:cache:"
