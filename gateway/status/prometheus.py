"""GET /metrics: the plain counters, read at scrape time by a prometheus_client collector.

Nothing of prometheus_client runs on the hot path: the request path bumps the integers of
``gateway.telemetry.counters``; a scrape reads them (this worker's live, the other workers' from
``gateway.telemetry.worker_board``), the backlog this worker last measured, the figures each
flusher publishes in Redis (``core.flusher_stats``) and what `make run`'s supervisor
publishes (``core.supervisor_status``), and prometheus_client writes the text, escaping
labels included. Per-worker series carry a ``worker`` label (its process id): sum them
in PromQL.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from core.backlog import Backlog
from core.flusher_stats import FLUSHER_STATS, FlusherFigures, read_flusher_stats
from core.redis_clients import REDIS_UNAVAILABLE
from core.supervisor_status import ChildStatus, read_status
from gateway.http.responses import Response
from gateway.ingest.appender import AppendStats
from gateway.ingest.backpressure import BacklogMonitor
from gateway.reads.cache import CacheStats
from gateway.reads.history import HistoryReader
from gateway.status.shard_watch import ShardReading, ShardWatch
from gateway.telemetry.counters import (
    BATCH_BUCKETS,
    LATENCY_BUCKETS_S,
    HistogramCounts,
    Metrics,
    WorkerCounters,
)
from gateway.telemetry.worker_board import WorkerBoard

CONTENT_TYPE: Final = (b"content-type", CONTENT_TYPE_PLAIN_0_0_4.encode())
_WORKER_COUNTERS: Final = (
    ("monokera_stream_appends", "Purchases appended.", "appends"),
    ("monokera_idempotent_replays", "Retries answered by replay.", "replays"),
    ("monokera_stream_append_failures", "Appends that got a 503.", "append_failures"),
    ("monokera_redis_append_round_trips", "Append round trips.", "round_trips"),
    ("monokera_cache_hits", "Reads served from Redis.", "cache_hits"),
    ("monokera_cache_misses", "Reads that went to PostgreSQL.", "cache_misses"),
    ("monokera_pg_queries", "Read queries sent to PostgreSQL.", "pg_queries"),
)
"""(metric, help, ``WorkerCounters`` field): the plain counters, one series per worker."""


@dataclass(frozen=True, slots=True)
class WorkerSources:
    """Where this worker's counters live; ``read`` copies them (a few microseconds)."""

    metrics: Metrics
    appends: AppendStats
    cache: CacheStats
    history: HistoryReader
    worker: str = field(default_factory=lambda: str(os.getpid()))

    def read(self) -> WorkerCounters:
        m, a = self.metrics, self.appends
        return WorkerCounters(
            worker=self.worker,
            requests=[(r, s, n) for (r, s), n in sorted(m.requests.items())],
            ack_latency=m.ack_latency.reading(),
            append_batch=m.append_batch.reading(),
            appends=a.appends,
            replays=a.replays,
            append_failures=a.failed,
            round_trips=a.round_trips,
            cache_hits=self.cache.hits,
            cache_misses=self.cache.misses,
            pg_queries=self.history.queries,
        )


@dataclass(frozen=True, slots=True)
class Exposition:
    sources: WorkerSources
    board: WorkerBoard | None
    backlog: BacklogMonitor
    shards: ShardWatch
    redis: Redis

    async def response(self) -> Response:
        return Response(200, await self.render(), [CONTENT_TYPE])

    async def render(self) -> bytes:
        """Redis away: the flusher and supervisor figures and the stale backlog are left
        out, the rest answers."""
        try:
            flushers = await read_flusher_stats(self.redis)
            supervised = await read_status(self.redis)
        except REDIS_UNAVAILABLE:
            flushers, supervised = {}, {}
        workers = [self.sources.read()]
        if self.board is not None:
            # Published first: a later scrape that lands on another worker then reads at
            # least these values, so no worker's series ever goes backwards (which
            # Prometheus would take for a counter reset).
            with contextlib.suppress(OSError):
                self.board.publish(workers[0])
            workers += self.board.others()
        monitor = self.backlog
        backlog = None if monitor.stale else monitor.last
        measured_s_ago = None
        if monitor.measured_at is not None:
            measured_s_ago = time.monotonic() - monitor.measured_at
        return generate_latest(
            Scrape(
                workers,
                backlog,
                flushers,
                supervised,
                shards=self.shards.last,
                backlog_measured_s_ago=measured_s_ago,
            )
        )


@dataclass(frozen=True, slots=True)
class Scrape(Collector):
    """One scrape's readings, as metric families."""

    workers: Sequence[WorkerCounters]
    backlog: Backlog | None
    flushers: dict[str, FlusherFigures]
    supervised: dict[str, ChildStatus]
    shards: ShardReading | None = None
    backlog_measured_s_ago: float | None = None

    def collect(self) -> Iterator[Metric]:
        yield from self._workers()
        yield from self._backlog()
        yield from self._shards()
        yield from self._flushers()
        yield from self._supervisor()

    def _workers(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "monokera_http_requests_total",
            "Requests answered, by route and status.",
            labels=["route", "status", "worker"],
        )
        for w in self.workers:
            for route, status, count in w.requests:
                requests.add_metric([route, str(status), w.worker], count)
        yield requests
        yield _histogram(
            "monokera_purchase_ack_seconds",
            "Time from request to Redis-confirmed append.",
            LATENCY_BUCKETS_S,
            [(w.worker, w.ack_latency) for w in self.workers],
        )
        yield _histogram(
            "monokera_append_batch_size",
            "Purchases per append script call (one per shard per round trip).",
            BATCH_BUCKETS,
            [(w.worker, w.append_batch) for w in self.workers],
        )
        for name, help_text, attribute in _WORKER_COUNTERS:
            family = CounterMetricFamily(name, help_text, labels=["worker"])
            for w in self.workers:
                family.add_metric([w.worker], getattr(w, attribute))
            yield family

    def _backlog(self) -> Iterator[Metric]:
        """Measured in Redis, the same for every worker: no worker label. Left out while
        measuring fails (stale): a gap says "unknown", an old figure would not."""
        if self.backlog_measured_s_ago is not None:
            yield GaugeMetricFamily(
                "monokera_backlog_measured_seconds_ago",
                "Time since this worker last measured the backlog in Redis.",
                value=self.backlog_measured_s_ago,
            )
        b = self.backlog
        if b is None:
            return
        yield GaugeMetricFamily(
            "monokera_stream_length", "Entries in the stream.", value=b.stream_length
        )
        yield GaugeMetricFamily(
            "monokera_consumer_pending", "Entries delivered, not acknowledged.", value=b.pending
        )
        yield GaugeMetricFamily(
            "monokera_consumer_lag_seconds",
            "Age of the oldest entry the flusher has not acknowledged.",
            value=b.oldest_unflushed_age_s,
        )

    def _shards(self) -> Iterator[Metric]:
        """The shard counts in use (``gateway.status.shard_watch``), as this worker last read them."""
        s = self.shards
        if s is None:
            return
        yield GaugeMetricFamily(
            "monokera_stream_shards", "This gateway's stream shard count.", value=s.own
        )
        publishers = GaugeMetricFamily(
            "monokera_stream_shards_publishers",
            "Live gateway and flusher workers by the stream shard count they run with.",
            labels=["role", "shards"],
        )
        for (role, shards), count in sorted(s.publishers.items()):
            publishers.add_metric([role, str(shards)], count)
        yield publishers
        yield GaugeMetricFamily(
            "monokera_stream_shards_mismatch",
            "1 while live gateways and flushers run with different stream shard counts.",
            value=int(s.mismatch),
        )
        yield GaugeMetricFamily(
            "monokera_unread_stream_entries",
            "Unflushed entries in streams no live flusher reads.",
            value=sum(s.unread.values()),
        )

    def _flushers(self) -> Iterator[Metric]:
        if not self.flushers:
            return
        for stat in FLUSHER_STATS:
            kind = CounterMetricFamily if stat.kind == "counter" else GaugeMetricFamily
            family = kind(stat.metric, stat.help, labels=["consumer"])
            for consumer, figures in sorted(self.flushers.items()):
                family.add_metric([consumer], figures[stat.name])
            yield family

    def _supervisor(self) -> Iterator[Metric]:
        if not self.supervised:
            return
        children = sorted(self.supervised.items())
        for family, value in (
            (
                CounterMetricFamily(
                    "monokera_supervisor_restarts",
                    "Restarts of a child process by `make run`.",
                    labels=["process"],
                ),
                lambda c: c.restarts,
            ),
            (
                GaugeMetricFamily(
                    "monokera_supervisor_up",
                    "1 while the child process runs, 0 while it is down or restarting.",
                    labels=["process"],
                ),
                lambda c: int(c.state == "running"),
            ),
            (
                GaugeMetricFamily(
                    "monokera_supervisor_last_exit_code",
                    "The child's last exit status (negative: the signal that killed it).",
                    labels=["process"],
                ),
                lambda c: c.last_exit_code,
            ),
        ):
            for name, child in children:
                if (v := value(child)) is not None:
                    family.add_metric([name], v)
            yield family


def _histogram(
    name: str,
    help_text: str,
    bounds: Sequence[float],
    readings: Sequence[tuple[str, HistogramCounts]],
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, help_text, labels=["worker"])
    les = [repr(float(b)) for b in bounds] + ["+Inf"]
    for worker, reading in readings:
        running, buckets = 0, []
        for le, count in zip(les, reading.counts, strict=True):
            running += count
            buckets.append((le, float(running)))
        family.add_metric([worker], buckets, reading.sum)
    return family
