"""Throughput and latency over time, from the gateway's own /metrics, as a PNG.

A thread scrapes /metrics once a second during a run; per-second acknowledged purchases
come from the request counter, p50 and p99 from the acknowledgment-latency histogram (the
upper bound of the bucket the quantile falls in), both summed over the gateway's workers.
"""

from __future__ import annotations

import itertools
import threading
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

Sample = tuple[float, int, list[tuple[float, int]]]


class MetricsSampler:
    def __init__(self, base: str, interval_s: float = 1.0) -> None:
        self.base = base
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.base + "/metrics", timeout=2) as reply:
                    text = reply.read().decode()
            except OSError:
                text = ""
            parsed = parse(text)
            if parsed is not None:
                self.samples.append((time.monotonic() - self._started, *parsed))
            self._stop.wait(self.interval_s)

    def start(self) -> MetricsSampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        self._thread.join()
        return self.samples


def parse(text: str) -> tuple[int, list[tuple[float, int]]] | None:
    """Purchases answered 200 and the ack-latency buckets, summed over the gateway's workers."""
    ok = 0.0
    buckets: dict[float, float] = {}
    seen = False
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError:
        return None
    for family in families:
        for sample in family.samples:
            if sample.name == "monokera_http_requests_total":
                if (
                    sample.labels.get("route") == "/purchase"
                    and sample.labels.get("status") == "200"
                ):
                    ok += sample.value
                    seen = True
            elif sample.name == "monokera_purchase_ack_seconds_bucket":
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    if not seen:
        return None
    return int(ok), [(le, int(n)) for le, n in sorted(buckets.items())]


def quantile(deltas: list[tuple[float, int]], q: float) -> float | None:
    total = deltas[-1][1] if deltas else 0
    if total <= 0:
        return None
    for bound, cumulative in deltas:
        if cumulative >= q * total:
            return bound
    return None


def series(samples: list[Sample]) -> list[tuple[float, float, float | None, float | None]]:
    """(seconds, purchases/s, p50 ms, p99 ms) for each interval between samples."""
    out = []
    for (t0, ok0, b0), (t1, ok1, b1) in itertools.pairwise(samples):
        deltas = [(le, n1 - n0) for (le, n1), (_, n0) in zip(b1, b0, strict=False)]
        p50, p99 = quantile(deltas, 0.5), quantile(deltas, 0.99)
        out.append(
            (
                t1,
                (ok1 - ok0) / (t1 - t0),
                None if p50 is None or p50 == float("inf") else p50 * 1000,
                None if p99 is None or p99 == float("inf") else p99 * 1000,
            )
        )
    return out


def render_chart(phases: dict[str, list[Sample]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rate_ax, latency_ax) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    offset = 0.0
    for name, samples in phases.items():
        points = series(samples)
        if not points:
            continue
        times = [offset + t for t, *_ in points]
        rate_ax.plot(times, [r for _, r, _, _ in points], label=name)
        latency_ax.plot(times, [p or float("nan") for *_, p, _ in points], label=f"{name} p50")
        latency_ax.plot(times, [p or float("nan") for *_, p in points], "--", label=f"{name} p99")
        offset = times[-1] + 2
    rate_ax.set_ylabel("acknowledged purchases/s")
    rate_ax.legend(loc="upper right", fontsize="small")
    latency_ax.set_ylabel("ack latency, ms (bucket bound)")
    latency_ax.set_yscale("log")
    latency_ax.set_xlabel("seconds")
    latency_ax.legend(loc="upper right", fontsize="small")
    fig.suptitle("Monokera gateway: throughput and acknowledgment latency")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
