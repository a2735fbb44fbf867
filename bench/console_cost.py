"""Does an open console cost the hot path? wrk on POST /purchase, with and without it.

Alternates "closed" and "open" rounds (10 s, 64 connections each, three of each) and
reads the gateway's CPU per acknowledged purchase from /proc in each. "Open" is what the page
does to the server: GET /console/api/overview once a second (a browser adds its own CPU
on this machine, not on the gateway's). Run: make bench-console.
"""

from __future__ import annotations

import statistics
import sys
import threading
import urllib.request

from bench.harness import save_result, serve_gateway, throwaway_stack, wrk_missing
from bench.references import process_cpu
from bench.wrk import HERE, run_wrk

SECONDS = 10
CONNECTIONS = 64


def poll(url: str, stop: threading.Event, seen: list[int]) -> None:
    while not stop.is_set():
        with urllib.request.urlopen(f"{url}/console/api/overview", timeout=5) as reply:
            reply.read()
            seen.append(reply.status)
        stop.wait(1.0)


def main() -> int:
    if wrk_missing():
        return 1
    rounds: list[dict[str, object]] = []
    with throwaway_stack("console-cost") as (_, env):
        gateway, url = serve_gateway(env)
        try:
            for label in ("closed", "open") * 3:
                stop, seen = threading.Event(), list[int]()
                poller = threading.Thread(target=poll, args=(url, stop, seen))
                if label == "open":
                    poller.start()
                cpu_before = process_cpu(gateway.pid)
                result = run_wrk(url, SECONDS, CONNECTIONS, HERE / "purchase.lua")
                cpu_us = (process_cpu(gateway.pid) - cpu_before) * 1e6
                result["cpu_us_per_purchase"] = cpu_us / max(
                    1, result["requests"] - result["non_2xx"]
                )
                stop.set()
                if label == "open":
                    poller.join()
                rounds.append({"console": label, "overview_polls": len(seen), **result})
                print(
                    f"console {label:6}  {result['rate']:>9,.0f} purchases/s"
                    f"  p50 {result.get('p50_ms', 0):.2f} ms  p99 {result.get('p99_ms', 0):.2f} ms"
                    f"  non-2xx {result['non_2xx']:.0f}  overview polls {len(seen)}"
                    f"  gateway CPU {result['cpu_us_per_purchase']:.1f} µs/purchase"
                )
        finally:
            gateway.terminate()
            gateway.wait(30)
    medians = {
        label: statistics.median(
            float(str(r["cpu_us_per_purchase"])) for r in rounds if r["console"] == label
        )
        for label in ("closed", "open")
    }
    print(
        f"median gateway CPU per purchase: closed {medians['closed']:.1f} µs,"
        f" open {medians['open']:.1f} µs (open/closed {medians['open'] / medians['closed']:.2f})"
    )
    print(save_result("console-cost", rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
