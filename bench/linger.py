"""The flusher's linger at moderate load: CPU per purchase and batch size, alternated.

    .venv/bin/python -m bench.linger [--lingers 0,10] [--rate 2000] [--seconds 10] [--rounds 2]

One stack and one gateway; for each linger value in turn a flusher with
MONOKERA_BATCH_LINGER_MS set, k6 at a constant arrival rate, and the flusher's, Redis's and
PostgreSQL's CPU per purchase from /proc; batches counted by Redis's XACK calls. Rounds
alternate the values so a busy machine's drift falls on all of them alike.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any

from redis import Redis

from bench.harness import serve_gateway, throwaway_stack
from bench.references import process_cpu
from bench.suite import k6_run, wait_drained
from devstack.processes import stop_process


def xack_calls(redis: Redis) -> int:
    stats: Any = redis.info("commandstats")
    return int(stats.get("cmdstat_xack", {}).get("calls", 0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lingers", default="0,10")
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    opts = parser.parse_args()
    lingers = [int(x) for x in opts.lingers.split(",")]
    with throwaway_stack("linger") as (stack, env):
        redis = Redis.from_url(stack.redis_url)
        gateway, base = serve_gateway(env)
        try:
            for round_ in range(opts.rounds):
                for linger in lingers:
                    flusher = subprocess.Popen(
                        [sys.executable, "-m", "flusher"],
                        env={**env, "MONOKERA_BATCH_LINGER_MS": str(linger)},
                    )
                    pids = {"flusher": flusher.pid, "redis": stack.redis.pid,
                            "postgres": stack.postgres.pid}  # fmt: skip
                    wait_drained(redis)
                    before = {k: process_cpu(p) for k, p in pids.items()}
                    acks = xack_calls(redis)
                    k6 = k6_run("constant.js", base,
                                {"RATE": str(opts.rate), "DURATION": f"{opts.seconds}s"})  # fmt: skip
                    wait_drained(redis)
                    cpu = {k: process_cpu(p) - before[k] for k, p in pids.items()}
                    batches = xack_calls(redis) - acks
                    stop_process(flusher)
                    n = max(1, k6["requests"] - k6["failed"])
                    per = {k: round(1e6 * v / n, 1) for k, v in cpu.items()}
                    print(f"round {round_ + 1} linger {linger:>3} ms: {k6['rate']:.0f}/s, "
                          f"{n / max(1, batches):.0f} purchases/batch, CPU µs/purchase {per}, "
                          f"sum {sum(per.values()):.1f}", flush=True)  # fmt: skip
        finally:
            stop_process(gateway)
            redis.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
