"""Acknowledgment throughput on one Redis vs a 3-master Redis Cluster, by shard count.

    .venv/bin/python -m bench.cluster [--seconds 8] [--connections 64]   (make bench-cluster)

Runs, one after the other, with the flusher stopped: the empty ASGI app (ceiling); the
gateway on one Redis with 1 and 4 shards; the gateway on a local Redis Cluster (3 masters,
each with a replica, all on this machine) with 6 shards, in the default mode and with WAIT
for one replica. Prints each rate as a ratio of the ceiling and the CPU seconds per 1,000
purchases of the gateway and of all Redis processes. On one 2-core machine a cluster cannot
be faster than one Redis (its nodes share the same cores); what this measures is what the
cluster path costs per purchase, the input of docs/scaling.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from bench.harness import save_result, serve_empty_asgi, serve_gateway, wrk_missing
from bench.suite import Meter
from bench.wrk import run_wrk
from devstack.processes import free_port, stop_process
from devstack.redis_cluster import RedisCluster
from devstack.redis_server import RedisServer

SCRIPT = Path(__file__).resolve().parent / "purchase.lua"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    opts = parser.parse_args()
    if wrk_missing():
        return 2
    work = Path(tempfile.mkdtemp(prefix="monokera-cluster-bench-"))
    single = RedisServer(work / "single", free_port())
    cluster = RedisCluster(work / "cluster")
    results: dict[str, dict[str, float]] = {}
    try:
        single.start()
        cluster.start()
        empty, base = serve_empty_asgi()
        results["empty ASGI (ceiling)"] = run_wrk(base, opts.seconds, opts.connections, SCRIPT)
        stop_process(empty)
        runs = [
            ("one Redis, 1 shard", single.url, [single.pid], {}),
            ("one Redis, 4 shards", single.url, [single.pid], {"MONOKERA_STREAM_SHARDS": "4"}),
            *[
                (label, cluster.seed_url, [n.pid for n in cluster.nodes], env)
                for label, env in (
                    ("cluster, 6 shards", {"MONOKERA_STREAM_SHARDS": "6"}),
                    ("cluster, 6 shards, WAIT 1", {
                        "MONOKERA_STREAM_SHARDS": "6", "MONOKERA_ACK_REPLICAS": "1",
                        "MONOKERA_ACK_REPLICAS_TIMEOUT_MS": "500"}),
                )
            ],
        ]  # fmt: skip
        for label, url, redis_pids, extra in runs:
            env = {
                "REDIS_URL": url,
                "MONOKERA_REDIS_CLUSTER": str(url == cluster.seed_url).lower(),
                "MONOKERA_LOG_LEVEL": "WARNING",
                **extra,
            }
            gateway, gw_url = serve_gateway({**os.environ, **env})
            meter = Meter(
                {"gateway": gateway.pid, **{f"redis{i}": p for i, p in enumerate(redis_pids)}}
            )
            meter.start()
            result = run_wrk(gw_url, opts.seconds, opts.connections, SCRIPT)
            used = meter.stop()
            stop_process(gateway)
            done = max(1, result["requests"] - result["non_2xx"])
            result["gateway_cpu_s_per_1000"] = round(1000 * used["gateway"] / done, 4)
            redis_cpu = sum(v for k, v in used.items() if k.startswith("redis"))
            result["redis_cpu_s_per_1000"] = round(1000 * redis_cpu / done, 4)
            results[label] = result
    finally:
        cluster.stop()
        single.stop()
    ceiling = results["empty ASGI (ceiling)"]["rate"]
    print(f"{'run':<28} {'rate/s':>8} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>8}"
          f" {'gw cpu/1k':>9} {'redis cpu/1k':>12}")  # fmt: skip
    for label, r in results.items():
        print(
            f"{label:<28} {r['rate']:>8.0f} {r['rate'] / ceiling:>6.2f} {r.get('p50_ms', 0):>7.2f}"
            f" {r.get('p99_ms', 0):>7.2f} {int(r['non_2xx']):>8}"
            f" {r.get('gateway_cpu_s_per_1000', 0):>9.4f} {r.get('redis_cpu_s_per_1000', 0):>12.4f}"
        )
    print(f"results: {save_result('cluster', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
