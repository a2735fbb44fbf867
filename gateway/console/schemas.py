"""What the console's JSON endpoints take and answer: typed once, described in OpenAPI."""

from __future__ import annotations

import msgspec

from core.events import TransactionId


class TraceQuery(msgspec.Struct):
    tx: TransactionId


class Point(msgspec.Struct):
    """One second of the chart."""

    at: float
    """Unix time, seconds."""
    ack_per_s: float
    p50_ms: float | None
    p99_ms: float | None


class ShardBacklog(msgspec.Struct):
    shard: int
    stream_length: int
    oldest_unflushed_age_s: float
    pending: int


class FlusherFigures(msgspec.Struct):
    consumer: str
    batches_total: float
    rows_written_total: float
    duplicates_total: float
    """Entries of a transaction_id already stored, conflicting ones included."""
    conflicting_duplicates_total: float
    """Duplicates naming other accounts or another amount: answered 200, not in the ledger."""
    dead_letters_total: float


class ShardPublishers(msgspec.Struct):
    role: str
    """gateway or flusher (workers: a flusher process has one per shard)."""
    shards: int
    count: int


class Shards(msgspec.Struct):
    """The stream shard counts in use (gateway.status.shard_watch)."""

    status: str
    """ok; mismatch (counts differ); unread (a stream no live flusher reads holds
    unflushed entries); writes_unread (this gateway writes such streams: /readyz 503);
    unknown (no live flusher, or Redis unavailable)."""
    own: int
    flushers_read: int | None
    publishers: list[ShardPublishers]
    unread: dict[str, int]


class Durability(msgspec.Struct):
    mode: str
    """default, fsync, replicas, no-aof or unknown (docs/guarantees.md's durability modes)."""
    detail: str
    appendonly: str | None
    appendfsync: str | None
    ack_replicas: int


class Overview(msgspec.Struct):
    """One gateway worker's view: its own counters (as its /metrics) and the shared backlog."""

    worker: str
    at: float
    acknowledged_total: int
    replays_total: int
    errors_total: dict[str, int]
    """Answers by HTTP status over every route: 400, 409, 413, 415, 422, 500, 503."""
    ack_per_s: float
    ack_p50_ms: float | None
    ack_p99_ms: float | None
    flusher_batches_per_s: float
    flusher_rows_per_s: float
    stored_in_postgres: int | None
    """Purchases in PostgreSQL; None while it cannot be read."""
    stored_is_estimate: bool
    """True past a million rows: the planner's estimate instead of a count."""
    cache_hits_total: int
    cache_misses_total: int
    cache_hit_ratio: float | None
    durability: Durability
    refusing: str | None
    """Why purchases are refused right now (backpressure), or None."""
    redis: str
    """ok, or the error class that the last Redis read ended in."""
    backlog: list[ShardBacklog]
    shards: Shards
    flushers: list[FlusherFigures]
    history: list[Point]
    """Last five minutes, one point a second, oldest first."""
