"""The console's JSON: GET /console/api/overview and GET /console/api/trace?tx=.

Only GETs, and nothing here writes: the overview reads the counters /metrics reads, the
backlog per shard and a few facts about Redis and PostgreSQL; the trace is the one
``make trace`` prints (``ops.trace.trace_transaction``). No URL or password is shown.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
from typing import Any, Final

import asyncpg
import msgspec
from redis.asyncio import Redis

from core.backlog import measure
from core.constants import stream_key
from core.flusher_stats import (
    BATCHES,
    CONFLICTING_DUPLICATES,
    DEAD_LETTERS,
    DUPLICATES,
    ROWS_WRITTEN,
    read_flusher_stats,
)
from core.redis_clients import REDIS_UNAVAILABLE
from core.replies import text
from core.settings import Settings
from gateway.api.errors import InvalidQuery
from gateway.api.params import decode
from gateway.console.assets import assets
from gateway.console.sampler import CURRENT_WINDOW_S, Rates, Sampler, rates
from gateway.console.schemas import (
    Durability,
    FlusherFigures,
    Overview,
    Point,
    ShardBacklog,
    ShardPublishers,
    Shards,
    TraceQuery,
)
from gateway.http.asgi import Receive, Scope
from gateway.http.errors import NotFound
from gateway.http.responses import Response, json_response
from gateway.http.routing import Handler
from gateway.ingest.appender import AppendStats
from gateway.ingest.backpressure import BacklogMonitor
from gateway.reads.cache import CacheStats
from gateway.reads.history import HistoryReader
from gateway.refusals import HistoryUnavailable, StoreUnavailable
from gateway.status.shard_watch import ShardWatch
from gateway.telemetry.counters import LATENCY_BUCKETS_S, Metrics
from ops.trace import trace_transaction

log = logging.getLogger("gateway.console")

# An exact count up to a million purchases; past that the planner's estimate, so an open
# console never makes PostgreSQL count a large table every few seconds.
STORED: Final = """
SELECT CASE WHEN c.reltuples < 1e6 THEN (SELECT count(*) FROM transactions)
            ELSE c.reltuples::bigint END AS stored,
       c.reltuples >= 1e6 AS estimated
FROM pg_class c WHERE c.oid = 'transactions'::regclass
"""
SLOW_FACTS_TTL_S: Final = 5.0
_NO_STORE: Final = (b"cache-control", b"no-store")
_encoder: Final = msgspec.json.Encoder()
_ZERO: Final = Rates(0.0, None, None, 0.0, 0.0)


class ConsoleApi:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        appends: AppendStats,
        cache: CacheStats,
        backlog: BacklogMonitor,
        shard_watch: ShardWatch,
        history: HistoryReader,
        redis: Redis,
    ) -> None:
        self._settings = settings
        self._shard_watch = shard_watch
        self._appends = appends
        self._cache = cache
        self._backlog = backlog
        self._history = history
        self._redis = redis
        self.sampler = Sampler(metrics, lambda: appends, redis)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._stored: tuple[int | None, bool] = (None, False)
        self._durability: Durability | None = None
        self._slow_read_at = 0.0

    def handlers(self) -> dict[str, Handler]:
        """By the names the route table (gateway/api/routes.py) gives them; all GETs: nothing
        on the console can change data."""
        return {"consoleOverview": self.overview, "consoleTrace": self.trace, **assets()}

    async def overview(self, scope: Scope, receive: Receive) -> Response:
        sampler = self.sampler
        newest = sampler.take() if not sampler.readings else sampler.readings[-1]
        readings = list(sampler.readings)
        window = readings[-1 - CURRENT_WINDOW_S :]
        current = rates(window[0], newest, LATENCY_BUCKETS_S) if len(window) > 1 else _ZERO
        history = []
        for older, newer in itertools.pairwise(readings):
            r = rates(older, newer, LATENCY_BUCKETS_S)
            history.append(Point(newer.at, r.ack_per_s, r.p50_ms, r.p99_ms))
        redis_state, shards = await self._shards()
        await self._slow_facts()
        hits, misses = self._cache.hits, self._cache.misses
        body = Overview(
            worker=self.worker,
            at=time.time(),
            acknowledged_total=self._appends.appends,
            replays_total=self._appends.replays,
            errors_total=sampler.errors(),
            ack_per_s=current.ack_per_s,
            ack_p50_ms=current.p50_ms,
            ack_p99_ms=current.p99_ms,
            flusher_batches_per_s=current.flusher_batches_per_s,
            flusher_rows_per_s=current.flusher_rows_per_s,
            stored_in_postgres=self._stored[0],
            stored_is_estimate=self._stored[1],
            cache_hits_total=hits,
            cache_misses_total=misses,
            cache_hit_ratio=hits / (hits + misses) if hits + misses else None,
            durability=self._durability or _durability(self._settings, None),
            refusing=self._backlog.refusal,
            redis=redis_state,
            backlog=shards,
            shards=self._shard_counts(),
            flushers=await self._flushers(),
            history=history,
        )
        return json_response(200, _encoder.encode(body), _NO_STORE)

    async def _shards(self) -> tuple[str, list[ShardBacklog]]:
        found = []
        try:
            for shard in range(self._settings.stream_shards):
                b = await measure(self._redis, stream_key(shard))
                found.append(
                    ShardBacklog(
                        shard, b.stream_length, round(b.oldest_unflushed_age_s, 3), b.pending
                    )
                )
        except REDIS_UNAVAILABLE as exc:
            return type(exc).__name__, found
        return "ok", found

    def _shard_counts(self) -> Shards:
        last = self._shard_watch.last
        if last is None:
            return Shards("unknown", self._settings.stream_shards, None, [], {})
        return Shards(
            last.status,
            last.own,
            last.flusher_reads,
            [ShardPublishers(r, s, n) for (r, s), n in sorted(last.publishers.items())],
            last.unread,
        )

    async def _flushers(self) -> list[FlusherFigures]:
        try:
            published = await read_flusher_stats(self._redis)
        except REDIS_UNAVAILABLE:
            return []
        return [
            FlusherFigures(
                consumer,
                v[BATCHES.name],
                v[ROWS_WRITTEN.name],
                v[DUPLICATES.name],
                v[CONFLICTING_DUPLICATES.name],
                v[DEAD_LETTERS.name],
            )
            for consumer, v in sorted(published.items())
        ]

    async def _slow_facts(self) -> None:
        """Stored purchases and Redis persistence: read at most every few seconds."""
        now = time.monotonic()
        if now - self._slow_read_at < SLOW_FACTS_TTL_S and self._durability is not None:
            return
        self._slow_read_at = now
        try:
            row = await self._history.with_connection(lambda conn: conn.fetchrow(STORED))
            self._stored = (int(row["stored"]), bool(row["estimated"])) if row else (None, False)
        except (HistoryUnavailable, asyncpg.PostgresError):
            self._stored = (None, False)
        config: dict[str, Any] | None
        try:
            raw: Any = await self._redis.config_get("append*")
            config = dict(raw)
        except REDIS_UNAVAILABLE:
            config = None  # managed Redis often forbids CONFIG
        self._durability = _durability(self._settings, config)

    async def trace(self, scope: Scope, receive: Receive) -> Response:
        try:
            tx = decode(TraceQuery, scope).tx
        except InvalidQuery as exc:
            if any(detail.message == "missing" for detail in exc.details):
                raise
            raise NotFound("no such transaction: not a valid transaction_id") from None
        shards, window_s = self._settings.stream_shards, self._settings.idempotency_ttl_s
        try:
            found = await self._history.with_connection(
                lambda conn: trace_transaction(self._redis, conn, tx, shards, window_s)
            )
        except REDIS_UNAVAILABLE as exc:
            log.warning("trace: Redis failed: %s: %s", type(exc).__name__, exc)
            raise StoreUnavailable() from exc
        if found.stage == "UNKNOWN":
            raise NotFound(f"no trace of transaction {tx!r}: not in Redis, not in PostgreSQL")
        return json_response(200, _encoder.encode(found), _NO_STORE)


def _durability(settings: Settings, config: dict[Any, Any] | None) -> Durability:
    """The durability modes of docs/guarantees.md, named from what Redis and the settings say."""
    values = {text(k): text(v) for k, v in (config or {}).items()}
    appendonly, appendfsync = values.get("appendonly"), values.get("appendfsync")
    replicas = settings.ack_replicas
    if replicas:
        mode = "replicas"
        detail = (
            f"a 200 once {replicas} replica(s) confirm (WAIT,"
            f" {settings.ack_replicas_timeout_ms} ms, else 503)"
        )
    elif appendonly == "no":
        mode, detail = "no-aof", "Redis has no AOF: a Redis crash loses acknowledged purchases"
    elif appendfsync == "always":
        mode, detail = "fsync", "a 200 once the AOF is fsynced"
    elif appendfsync is not None:
        mode = "default"
        detail = f"a 200 once the AOF write is done; appendfsync {appendfsync}"
    else:
        mode, detail = "unknown", "Redis does not allow CONFIG GET; see its own settings"
    return Durability(mode, detail, appendonly, appendfsync, replicas)
