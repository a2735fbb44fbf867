"""Memory soak: the gateway's RSS over a sustained load, flusher and PostgreSQL writing.

    .venv/bin/python -m bench.soak [--minutes 5] [--connections 16]   (make bench-soak)

wrk keeps purchases coming for the whole soak; every 10 s the gateway's resident memory
(main process and workers) is sampled. The first minute is warm-up; after it the RSS
should stay flat (within ±10%). Writes bench/results/soak-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench.ack_modes import SCRIPT, serve
from devstack.processes import free_port, stop_process
from devstack.stack import EmbeddedStack

HERE = Path(__file__).resolve().parent


def rss_mib(pid: int) -> float:
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--connections", type=int, default=16)
    opts = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install wrk (Debian), then run this again", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="monokera-soak-"))
    work.chmod(0o755)
    stack = EmbeddedStack(work / "stack")
    stack.start()
    env = {
        **os.environ,
        "REDIS_URL": stack.redis_url,
        "DATABASE_URL": stack.database_url,
        "MONOKERA_LOG_LEVEL": "WARNING",
    }
    samples: list[tuple[float, float]] = []
    try:
        port = free_port()
        gateway = serve(
            [sys.executable, "-m", "gateway"], {**env, "MONOKERA_PORT": str(port)}, port
        )
        flusher = subprocess.Popen([sys.executable, "-m", "flusher"], env=env)
        seconds = int(opts.minutes * 60)
        load = subprocess.Popen(
            ["wrk", "-t1", f"-c{opts.connections}", f"-d{seconds}s", "-s", str(SCRIPT),
             f"http://127.0.0.1:{port}/purchase"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        started = time.monotonic()
        while load.poll() is None:
            samples.append((round(time.monotonic() - started, 1), round(rss_mib(gateway.pid), 1)))
            time.sleep(10)
        wrk_out = load.stdout.read() if load.stdout else ""
        stop_process(flusher)
        stop_process(gateway)
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)

    steady = [rss for t, rss in samples if t >= 60] or [rss for _, rss in samples]
    low, high = min(steady), max(steady)
    spread = (high - low) / low
    rate = next((line for line in wrk_out.splitlines() if "Requests/sec" in line), "").strip()
    print(f"gateway RSS after warm-up: {low:.1f}-{high:.1f} MiB ({spread:+.1%} spread); {rate}")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"soak-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(
        json.dumps({"samples_s_mib": samples, "steady_spread": spread, "wrk": wrk_out}, indent=2)
    )
    return 0 if spread <= 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
