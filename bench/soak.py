"""Memory soak: the gateway's RSS over a sustained load, flusher and PostgreSQL writing.

    .venv/bin/python -m bench.soak [--minutes 5] [--connections 16]   (make bench-soak)

wrk keeps purchases coming for the whole soak; every 10 s the gateway's resident memory
(main process and workers) is sampled. The first minute is warm-up; after it the RSS
should stay flat (within ±10%). Writes bench/results/soak-<time>.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bench.ack_modes import SCRIPT
from bench.harness import save_result, serve_gateway, throwaway_stack, wrk_missing
from devstack.processes import stop_process

HERE = Path(__file__).resolve().parent


def rss_mib(pid: int) -> float:
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--connections", type=int, default=16)
    opts = parser.parse_args()
    if wrk_missing():
        return 2
    samples: list[tuple[float, float]] = []
    with throwaway_stack("soak") as (_, env):
        gateway, base = serve_gateway(env)
        flusher = subprocess.Popen([sys.executable, "-m", "flusher"], env=env)
        seconds = int(opts.minutes * 60)
        load = subprocess.Popen(
            ["wrk", "-t1", f"-c{opts.connections}", f"-d{seconds}s", "-s", str(SCRIPT),
             f"{base}/purchase"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        started = time.monotonic()
        while load.poll() is None:
            samples.append((round(time.monotonic() - started, 1), round(rss_mib(gateway.pid), 1)))
            time.sleep(10)
        wrk_out = load.stdout.read() if load.stdout else ""
        stop_process(flusher)
        stop_process(gateway)

    steady = [rss for t, rss in samples if t >= 60] or [rss for _, rss in samples]
    low, high = min(steady), max(steady)
    spread = (high - low) / low
    rate = next((line for line in wrk_out.splitlines() if "Requests/sec" in line), "").strip()
    print(f"gateway RSS after warm-up: {low:.1f}-{high:.1f} MiB ({spread:+.1%} spread); {rate}")
    save_result("soak", {"samples_s_mib": samples, "steady_spread": spread, "wrk": wrk_out})
    return 0 if spread <= 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
