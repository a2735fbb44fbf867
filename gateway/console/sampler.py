"""The console's memory of the last minutes: this worker's counters, read once a second.

Rates and latency percentiles need two readings of a counter. Keeping the readings here
rather than in the page means a page opened now draws the last five minutes at once, many
open pages share one sampler, and the figures are those of /metrics: the sampler reads the
very objects /metrics renders (one source of truth). A reading copies a few integers; the
flushers' batches and rows come from the one hash where the flushers sum them
(``core.flusher_stats.TOTALS``): one HMGET a second per worker, however many flushers run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from redis.asyncio import Redis

from core.flusher_stats import BATCHES, ROWS_WRITTEN, read_summed
from core.lifetime_task import LifetimeTask
from core.redis_clients import REDIS_UNAVAILABLE
from gateway.ingest.appender import AppendStats
from gateway.telemetry.counters import Metrics

ERROR_STATUSES: Final = (400, 409, 413, 415, 422, 500, 503)
HISTORY_S: Final = 300
CURRENT_WINDOW_S: Final = 5


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    acknowledged: int
    replays: int
    ack_buckets: tuple[int, ...]
    flusher_batches: float
    flusher_rows: float


def quantile(q: float, bounds: Sequence[float], buckets: Sequence[int]) -> float | None:
    """Like PromQL's histogram_quantile: linear within the bucket that holds the rank.

    ``buckets`` are per-bucket counts (not cumulative), the last one past every bound; a
    rank in that one is reported as the highest bound, as Prometheus does.
    """
    total = sum(buckets)
    if total <= 0:
        return None
    rank, running, lower = q * total, 0, 0.0
    for bound, count in zip(bounds, buckets, strict=False):
        if count and running + count >= rank:
            return lower + (bound - lower) * (rank - running) / count
        running += count
        lower = bound
    return bounds[-1]


class Sampler:
    def __init__(
        self,
        metrics: Metrics,
        appends: Callable[[], AppendStats],
        redis: Redis,
        interval_s: float = 1.0,
    ) -> None:
        self._metrics = metrics
        self._appends = appends
        self._redis = redis
        self._interval_s = interval_s
        self.readings: deque[Sample] = deque(maxlen=HISTORY_S + 1)
        self._flushers: tuple[float, float] = (0.0, 0.0)
        self._background = LifetimeTask()

    async def read_flushers(self) -> None:
        """Batches and rows summed over every flusher so far; unchanged if Redis fails."""
        with contextlib.suppress(*REDIS_UNAVAILABLE):
            summed = await read_summed(self._redis)
            self._flushers = (summed[BATCHES.name], summed[ROWS_WRITTEN.name])

    def take(self) -> Sample:
        stats = self._appends()
        reading = Sample(
            at=time.time(),
            acknowledged=stats.appends,
            replays=stats.replays,
            ack_buckets=tuple(self._metrics.ack_latency.counts),
            flusher_batches=self._flushers[0],
            flusher_rows=self._flushers[1],
        )
        self.readings.append(reading)
        return reading

    def errors(self) -> dict[str, int]:
        """Answers by status, over every route, since this worker started."""
        totals = dict.fromkeys(ERROR_STATUSES, 0)
        for (_, status), count in list(self._metrics.requests.items()):
            if status in totals:
                totals[status] += count
        return {str(status): count for status, count in totals.items()}

    async def _loop(self) -> None:
        while True:
            await self.read_flushers()
            self.take()
            await asyncio.sleep(self._interval_s)

    def start(self) -> None:
        self._background.run(self._loop())

    async def stop(self) -> None:
        await self._background.stop()


@dataclass(frozen=True, slots=True)
class Rates:
    ack_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    flusher_batches_per_s: float
    flusher_rows_per_s: float


def rates(older: Sample, newer: Sample, bounds: Sequence[float]) -> Rates:
    """Between two readings; never negative (Redis may have lost the flushers' sums)."""
    span = max(newer.at - older.at, 1e-6)
    buckets = [max(0, n - o) for n, o in zip(newer.ack_buckets, older.ack_buckets, strict=True)]
    p50, p99 = quantile(0.5, bounds, buckets), quantile(0.99, bounds, buckets)
    return Rates(
        ack_per_s=max(0, newer.acknowledged - older.acknowledged) / span,
        p50_ms=None if p50 is None else p50 * 1000,
        p99_ms=None if p99 is None else p99 * 1000,
        flusher_batches_per_s=max(0.0, newer.flusher_batches - older.flusher_batches) / span,
        flusher_rows_per_s=max(0.0, newer.flusher_rows - older.flusher_rows) / span,
    )
