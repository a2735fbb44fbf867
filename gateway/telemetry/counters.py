"""This worker's counters: plain integers and lists, bumped on the hot path.

The request path only bumps integers in dicts and lists (a few hundred nanoseconds),
nothing of prometheus_client: ``gateway.status.prometheus`` reads these when /metrics is scraped.
``WorkerCounters`` is one reading of them, the unit a worker hands to the others
(``gateway.telemetry.worker_board``) so that any worker answers a scrape for all of them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from typing import Final

import msgspec

LATENCY_BUCKETS_S: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
"""Fine below a millisecond, where acknowledgments land, so p50/p99 are not a bucket wide."""
BATCH_BUCKETS: Final = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


class Histogram:
    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        """Per bucket, not cumulative; the last one is past every bound."""
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def reading(self) -> HistogramCounts:
        return HistogramCounts(list(self.counts), self.sum)


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.ack_latency = Histogram(LATENCY_BUCKETS_S)
        self.append_batch = Histogram(BATCH_BUCKETS)


class HistogramCounts(msgspec.Struct, array_like=True, frozen=True):
    counts: list[int]
    sum: float


class WorkerCounters(msgspec.Struct, frozen=True, kw_only=True):
    """One reading of one worker's counters, everything /metrics labels with ``worker``."""

    worker: str
    requests: list[tuple[str, int, int]]
    """(route, status, answered)."""
    ack_latency: HistogramCounts
    append_batch: HistogramCounts
    appends: int = 0
    replays: int = 0
    append_failures: int = 0
    round_trips: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    pg_queries: int = 0
