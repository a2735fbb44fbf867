"""What a flusher worker is configured with, and nothing else.

``Settings`` holds every process's configuration; a ``Flusher`` reads only these fields,
taken from it once at start by ``FlusherConfig.from_settings``. A test or a tool builds
one directly (or ``dataclasses.replace`` one) without a whole ``Settings``.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import Settings
from flusher.retry import Backoff


@dataclass(frozen=True, slots=True)
class FlusherConfig:
    stream_shards: int
    """The shard count of this process: its stats say it, and shard 0 checks none above it
    holds unflushed entries (``core.stranded``)."""
    batch_size: int
    batch_wait_ms: int
    """How long a read blocks for new entries."""
    batch_linger_ms: int
    """A batch read short of ``batch_size`` waits this long for more, once."""
    claim_idle_ms: int
    """Entries pending this long with another consumer are taken over."""
    reclaim_interval_s: float
    trim_interval_s: float
    stream_retain_s: float
    """Acknowledged entries are kept this long (for tracing) unless Redis needs the memory."""
    backoff: Backoff
    """Every retry of the worker's, for PostgreSQL and Redis alike (``flusher.retry``)."""
    cache_ttl_s: int
    """The lifetime of a batch's hold on its accounts' cached reads (core.cache_version)."""
    ledger_partitions_ahead_days: int
    ledger_retention_days: int
    ledger_maintenance_interval_s: float
    heartbeat_dir: str
    """Empty: no heartbeat (``core.heartbeat``)."""
    liveness_timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> FlusherConfig:
        return cls(
            stream_shards=settings.stream_shards,
            batch_size=settings.batch_size,
            batch_wait_ms=settings.batch_wait_ms,
            batch_linger_ms=settings.batch_linger_ms,
            claim_idle_ms=settings.claim_idle_ms,
            reclaim_interval_s=settings.reclaim_interval_s,
            trim_interval_s=settings.trim_interval_s,
            stream_retain_s=settings.stream_retain_s,
            backoff=Backoff(max_s=settings.pg_retry_max_s),
            cache_ttl_s=settings.cache_ttl_s,
            ledger_partitions_ahead_days=settings.ledger_partitions_ahead_days,
            ledger_retention_days=settings.ledger_retention_days,
            ledger_maintenance_interval_s=settings.ledger_maintenance_interval_s,
            heartbeat_dir=settings.heartbeat_dir,
            liveness_timeout_s=settings.liveness_timeout_s,
        )
