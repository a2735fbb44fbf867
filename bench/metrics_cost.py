"""What the metrics cost the hot path: the per-request counter calls, timed with timeit.

A purchase bumps a (route, status) counter, observes its ack latency and counts its
append; each append round trip counts itself and observes its batch size. These are the
calls timed here, in this process: nanoseconds per call, the best of five repeats. Then
what a scrape costs the worker that answers it, without the Redis reads: a reading of its
counters, publishing it to the workers' folder, and prometheus_client writing the text for
two workers, two flushers and four supervised processes.
Run: .venv/bin/python -m bench.metrics_cost
"""

from __future__ import annotations

import tempfile
import timeit
from pathlib import Path

from prometheus_client.exposition import generate_latest

from core.backlog import Backlog
from core.flusher_stats import FLUSHER_STATS
from core.supervisor_status import ChildStatus
from gateway.ingest.appender import AppendStats
from gateway.reads.cache import CacheStats
from gateway.reads.history import HistoryReader
from gateway.status.prometheus import Scrape, WorkerSources
from gateway.telemetry.counters import Metrics
from gateway.telemetry.worker_board import WorkerBoard

NUMBER = 200_000


def main() -> int:
    metrics, stats = Metrics(), AppendStats()
    requests, ack, batches = metrics.requests, metrics.ack_latency, metrics.append_batch

    def per_request() -> None:
        requests[("/purchase", 200)] += 1
        ack.observe(0.00042)
        stats.appends += 1

    def per_round_trip() -> None:
        stats.round_trips += 1
        batches.observe(8)

    for name, call in (("per request", per_request), ("per round trip", per_round_trip)):
        best = min(timeit.repeat(call, number=NUMBER, repeat=5)) / NUMBER
        print(f"{name}: {best * 1e9:.0f} ns")
    scrape_cost(metrics, stats)
    return 0


def scrape_cost(metrics: Metrics, stats: AppendStats) -> None:
    for route in ("/purchase", "/purchases", "/healthz", "/metrics", "/accounts/{account}"):
        for status in (200, 409, 422, 503):
            metrics.requests[(route, status)] += 1
    history = HistoryReader("postgresql://unused/", retry_after_s=1)  # never connects
    sources = WorkerSources(metrics, stats, CacheStats(), history)
    flushers = {f"flusher-{i}": {s.name: 1.0 for s in FLUSHER_STATS} for i in range(2)}
    children = {n: ChildStatus(state="running") for n in ("redis", "postgres", "gw", "fl")}
    with tempfile.TemporaryDirectory() as folder:
        board = WorkerBoard(Path(folder))
        scrape = Scrape([sources.read(), sources.read()], Backlog(0.2, 10, 2), flushers, children)
        for name, call in (
            ("scrape: read counters", sources.read),
            ("scrape: publish reading", lambda: board.publish(sources.read())),
            ("scrape: write text", lambda: generate_latest(scrape)),
        ):
            best = min(timeit.repeat(call, number=200, repeat=5)) / 200
            print(f"{name}: {best * 1e6:.0f} us")
        print(f"scrape: {len(generate_latest(scrape))} bytes")


if __name__ == "__main__":
    raise SystemExit(main())
