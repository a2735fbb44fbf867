"""What the metrics cost the hot path: the per-request counter calls, timed with timeit.

A purchase bumps a (route, status) counter, observes its ack latency and counts its
append; each append round trip counts itself and observes its batch size. These are the
calls timed here, in this process, with nothing else running: nanoseconds per call, the
best of five repeats. Run: .venv/bin/python -m bench.metrics_cost
"""

from __future__ import annotations

import timeit

from gateway.appender import AppendStats
from gateway.metrics import Metrics

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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
