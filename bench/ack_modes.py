"""Acknowledgment throughput per durability mode, with the empty ASGI app as the ceiling.

    .venv/bin/python -m bench.ack_modes [--seconds 10] [--connections 64]

Runs, one after the other on the same machine: the empty ASGI app on Granian, then the
gateway with Redis in appendfsync everysec (default), appendfsync always, and everysec
plus WAIT for one replica. The flusher is not running, so the numbers are the gateway's
acknowledgment path alone. Needs wrk (Debian: apt-get install wrk). Writes
bench/results/ack_modes-<time>.json and prints a table with each rate as a ratio of the
ceiling measured in the same run: compare ratios, not absolute numbers, on shared machines.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import redis

from bench.harness import save_result, serve_empty_asgi, serve_gateway, wrk_missing
from bench.wrk import run_wrk
from devstack.processes import free_port, stop_process
from devstack.redis_server import RedisServer

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "purchase.lua"


def wrk(url: str, seconds: int, connections: int) -> dict[str, float]:
    return run_wrk(url, seconds, connections, SCRIPT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    opts = parser.parse_args()
    if wrk_missing():
        return 2
    work = Path(tempfile.mkdtemp(prefix="monokera-ack-modes-"))
    primary = RedisServer(work / "primary", free_port())
    replica = RedisServer(work / "replica", free_port(), replica_of=primary.port)
    primary.start()
    replica.start()
    results: dict[str, dict[str, float]] = {}
    try:
        empty, base = serve_empty_asgi()
        results["empty ASGI (ceiling)"] = wrk(f"{base}/purchase", opts.seconds, opts.connections)
        stop_process(empty)
        modes = [
            ("everysec (default)", "everysec", 0),
            ("appendfsync always", "always", 0),
            ("everysec + WAIT 1 replica", "everysec", 1),
        ]
        for label, fsync, replicas in modes:
            with redis.Redis.from_url(primary.url) as admin:
                admin.config_set("appendfsync", fsync)
            env = {
                **os.environ,
                "REDIS_URL": primary.url,
                "MONOKERA_LOG_LEVEL": "ERROR",
                "MONOKERA_ACK_REPLICAS": str(replicas),
                "MONOKERA_BACKLOG_MAX_LENGTH": "100000000",
                "MONOKERA_BACKLOG_MAX_AGE_S": "100000",
            }
            gateway, base = serve_gateway(env)
            results[label] = wrk(f"{base}/purchase", opts.seconds, opts.connections)
            stop_process(gateway)
    finally:
        replica.stop()
        primary.stop()
        shutil.rmtree(work, ignore_errors=True)

    ceiling = results["empty ASGI (ceiling)"]["rate"]
    print(
        f"{'mode':<28} {'req/s':>9} {'ratio':>6} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'non-2xx':>8}"
    )
    for label, r in results.items():
        print(
            f"{label:<28} {r['rate']:>9.0f} {r['rate'] / ceiling:>6.2f} {r.get('p50_ms', 0):>7.2f}"
            f" {r.get('p90_ms', 0):>7.2f} {r.get('p99_ms', 0):>7.2f} {r['non_2xx']:>8.0f}"
        )
    save_result(
        "ack_modes",
        {"seconds": opts.seconds, "connections": opts.connections, "results": results},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
