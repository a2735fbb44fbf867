"""A/B: the gateway of another checkout against this one, alternated, on one stack.

    .venv/bin/python -m bench.ab --base /tmp/old-checkout [--rounds 3] [--seconds 5] [--batch]

Each round runs wrk against the minimal ASGI app, the base checkout's gateway and this
checkout's gateway, one after the other, and reads each one's CPU per acknowledged purchase
from /proc; alternating rounds keeps a busy machine's drift out of the comparison. With
``--batch`` the gateways get ``POST /purchases`` of 1,000 items (8 connections) instead
of single purchases (64 connections). The flusher is not running.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench.harness import serve, serve_empty_asgi, throwaway_stack, wrk_missing
from bench.references import process_cpu
from bench.wrk import run_wrk
from devstack.processes import free_port, stop_process

HERE = Path(__file__).resolve().parent


def serve_checkout(checkout: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m gateway`` from ``checkout``: its code comes first on sys.path."""
    port = free_port()
    run_env = {**env, "MONOKERA_PORT": str(port), "PYTHONPATH": str(checkout)}
    proc = serve([sys.executable, "-m", "gateway"], run_env, port, cwd=checkout)
    return proc, f"http://127.0.0.1:{port}"


def measure(pid: int, url: str, seconds: int, batch: bool) -> tuple[float, float]:
    """(CPU µs per acknowledged purchase, purchases/s)."""
    before = process_cpu(pid)
    if batch:
        result = run_wrk(url + "/purchases", seconds, 8, HERE / "batch.lua", {"ITEMS": "1000"})
        items = 1000
    else:
        result = run_wrk(url + "/purchase", seconds, 64, HERE / "purchase.lua")
        items = 1
    ok = (result["requests"] - result["non_2xx"]) * items
    return 1e6 * (process_cpu(pid) - before) / max(1, ok), result["rate"] * items


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", type=Path, required=True, help="the other checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--batch", action="store_true")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE",
        help="a setting for this checkout's gateway only (with --base . : a settings A/B)",
    )  # fmt: skip
    opts = parser.parse_args()
    this_env = dict(item.split("=", 1) for item in opts.env)
    if wrk_missing():
        return 2
    this = HERE.parent
    figures: dict[str, list[float]] = {"minimal app": [], "base": [], "this": []}
    with throwaway_stack(
        "ab", MONOKERA_BACKLOG_MAX_LENGTH="100000000", MONOKERA_BACKLOG_MAX_AGE_S="3600"
    ) as (_, env):
        for round_ in range(opts.rounds):
            empty, url = serve_empty_asgi(env)
            cpu, _ = measure(empty.pid, url, opts.seconds, False)
            stop_process(empty)
            figures["minimal app"].append(cpu)
            line = [f"round {round_ + 1}: minimal app {cpu:.1f} µs/request"]
            for name, checkout in (("base", opts.base), ("this", this)):
                extra = this_env if name == "this" else {}
                gateway, url = serve_checkout(checkout.resolve(), {**env, **extra})
                cpu, rate = measure(gateway.pid, url, opts.seconds, opts.batch)
                stop_process(gateway)
                figures[name].append(cpu)
                line.append(f"{name} {cpu:.1f} µs/purchase ({rate:.0f}/s)")
            print(", ".join(line), flush=True)
    base, mine, app = (statistics.median(figures[k]) for k in ("base", "this", "minimal app"))
    print(f"median CPU µs per purchase: base {base:.1f} ({base / app:.2f}x the minimal app), "
          f"this {mine:.1f} ({mine / app:.2f}x); this/base {mine / base:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MONOKERA_LOG_LEVEL", "WARNING")
    sys.exit(main())
