"""The benchmark suite: `make bench` (about 4 minutes) and `make bench-quick` (under one).

On a throwaway embedded stack with production settings (no debug, no access log):
1. ceiling: wrk, 64 connections, against an empty ASGI app on the same Granian;
2. peak: wrk, 64 connections, against the gateway with the flusher stopped; then the
   flusher alone drains that backlog (its drain rate);
3. sustained: k6 at a constant arrival rate (5,000/s) with the flusher running;
4. check: every purchase that got a 200 is in PostgreSQL exactly once (reconcile, and
   the row count against the 200s counted by wrk and k6).
Prints one table and writes bench/results/suite-<time>.json, and a PNG of throughput
and acknowledgment latency over time taken from the gateway's /metrics. CPU seconds per 1,000
purchases are read from /proc for the gateway, the flusher, Redis and PostgreSQL.
Compare rates as ratios to the ceiling measured in the same run: machines are shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from redis import Redis

from bench.chart import MetricsSampler, Sample, render_chart
from bench.harness import save_result, serve_empty_asgi, serve_gateway, throwaway_stack, wrk_missing
from bench.wrk import run_wrk
from core.constants import GROUP, stream_key
from core.settings import Settings
from devstack.processes import stop_process
from ops.reconcile import reconcile, render

HERE = Path(__file__).resolve().parent
K6 = shutil.which("k6") or str(Path(sys.executable).parent / "k6")


def cpu_seconds(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


class Meter:
    """CPU seconds used by each part of the stack between start() and stop()."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start_values: dict[str, float] = {}

    def start(self) -> None:
        self.start_values = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) - self.start_values[name] for name, pid in self.pids.items()}


def wrk_ok(result: dict[str, float]) -> int:
    """Requests wrk completed with a 2xx (it counts every completed response)."""
    return int(result["requests"]) - int(result["non_2xx"])


def k6_run(script: str, base: str, env: dict[str, str]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as summary:
        path = summary.name
    args = [K6, "run", "--quiet", "--summary-export", path,
            "--summary-trend-stats", "avg,p(50),p(90),p(99),p(99.9),max",
            "-e", f"BASE={base}", *[x for k, v in env.items() for x in ("-e", f"{k}={v}")],
            str(HERE / "k6" / script)]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True)
    data = json.loads(Path(path).read_text())
    Path(path).unlink()
    metrics = data["metrics"]
    duration = metrics["http_req_duration"]
    failed = metrics.get("http_req_failed", {})
    return {
        "thresholds_passed": done.returncode == 0,
        "requests": int(metrics["http_reqs"]["count"]),
        "rate": metrics["http_reqs"]["rate"],
        "failed": int(failed.get("passes", 0)),  # "passes" counts failed requests here
        "p50_ms": duration["p(50)"],
        "p90_ms": duration["p(90)"],
        "p99_ms": duration["p(99)"],
        "p99.9_ms": duration["p(99.9)"],
    }


SHARDS = Settings.for_command("bench").stream_shards
"""MONOKERA_STREAM_SHARDS as the gateway and the flusher of the run will see it."""


def backlog(redis: Redis) -> int:
    """Entries not yet acknowledged in any shard: pending plus undelivered."""
    total = 0
    for stream in map(stream_key, range(SHARDS)):
        info: Any = redis.xinfo_groups(stream)
        group = next(g for g in info if g["name"] in (GROUP, GROUP.encode()))
        last = group["last-delivered-id"]
        last = last.decode() if isinstance(last, bytes) else last
        undelivered = len(redis.xrange(stream, min=f"({last}", count=10_000_000))
        total += int(group["pending"]) + undelivered
    return total


def stream_length(redis: Redis) -> int:
    return sum(int(redis.xlen(stream_key(shard))) for shard in range(SHARDS))


def wait_drained(redis: Redis, timeout: float = 600) -> float:
    started = time.monotonic()
    while backlog(redis) and time.monotonic() - started < timeout:
        time.sleep(0.05)
    return time.monotonic() - started


async def check(dsn: str, redis_url: str) -> tuple[int, bool, str]:
    from redis.asyncio import Redis as AsyncRedis

    conn = await asyncpg.connect(dsn)
    client = AsyncRedis.from_url(redis_url)
    try:
        report = await reconcile(client, conn, SHARDS)
        rows = await conn.fetchval("SELECT count(*) FROM transactions")
    finally:
        await conn.close()
        await client.aclose()
    return int(rows), report.ok, render(report)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5 s phases, under a minute")
    parser.add_argument("--rate", type=int, default=5000)
    opts = parser.parse_args()
    seconds = 5 if opts.quick else 60
    peak_seconds = 5 if opts.quick else 20
    if wrk_missing():
        return 2
    rows: list[dict[str, Any]] = []
    phases: dict[str, list[Sample]] = {}
    extra: dict[str, Any] = {}
    flusher: subprocess.Popen[bytes] | None = None
    backlog_limits = {
        "MONOKERA_BACKLOG_MAX_LENGTH": "100000000",
        "MONOKERA_BACKLOG_MAX_AGE_S": "3600",
    }
    with throwaway_stack("bench", **backlog_limits) as (stack, env):
        redis = Redis.from_url(stack.redis_url)
        try:
            empty, empty_base = serve_empty_asgi()
            ceiling = run_wrk(f"{empty_base}/purchase", peak_seconds, 64, HERE / "purchase.lua")
            stop_process(empty)
            rows.append({"phase": "ceiling: empty ASGI, wrk c64", **ceiling})

            gateway, base = serve_gateway(env)
            meter = Meter(
                {"gateway": gateway.pid, "redis": stack.redis.pid, "postgres": stack.postgres.pid}
            )
            meter.start()
            sampler = MetricsSampler(base).start()
            peak = run_wrk(f"{base}/purchase", peak_seconds, 64, HERE / "purchase.lua")
            phases["peak (wrk c64, flusher stopped)"] = sampler.stop()
            accepted = wrk_ok(peak)
            rows.append({"phase": "peak: gateway, flusher stopped, wrk c64", **peak,
                         "ratio": peak["rate"] / ceiling["rate"],
                         "cpu_s_per_1000": per_thousand(meter.stop(), accepted)})  # fmt: skip

            backlog_before = backlog(redis)
            flusher = subprocess.Popen([sys.executable, "-m", "flusher"], env=env)
            meter = Meter(
                {"flusher": flusher.pid, "redis": stack.redis.pid, "postgres": stack.postgres.pid}
            )
            meter.start()
            drain_s = wait_drained(redis)
            extra["flusher_drain"] = {
                "entries": backlog_before,
                "seconds": drain_s,
                "rate": backlog_before / drain_s if drain_s else 0.0,
                "cpu_s_per_1000": per_thousand(meter.stop(), backlog_before),
            }

            meter = Meter({"gateway": gateway.pid, "flusher": flusher.pid, "redis": stack.redis.pid,
                           "postgres": stack.postgres.pid})  # fmt: skip
            meter.start()
            peak_len = 0
            sampling = True

            async def sample() -> None:
                nonlocal peak_len
                while sampling:
                    peak_len = max(peak_len, stream_length(redis))
                    await asyncio.sleep(0.5)

            async def sustained() -> dict[str, Any]:
                nonlocal sampling
                sampler = asyncio.create_task(sample())
                result = await asyncio.to_thread(
                    k6_run, "constant.js", base, {"RATE": str(opts.rate), "DURATION": f"{seconds}s"}
                )
                sampling = False
                await sampler
                return result

            sampler = MetricsSampler(base).start()
            k6 = asyncio.run(sustained())
            phases[f"sustained (k6 {opts.rate}/s, flusher running)"] = sampler.stop()
            drain_after = wait_drained(redis)
            rows.append({"phase": f"sustained: k6 {opts.rate}/s, flusher running", **k6,
                         "cpu_s_per_1000": per_thousand(meter.stop(), k6["requests"] - k6["failed"])})  # fmt: skip
            extra["sustained"] = {
                "peak_stream_length": peak_len,
                "drained_after_load_s": drain_after,
            }

            stored, ok, report = asyncio.run(check(stack.database_url, stack.redis_url))
            expected = accepted + k6["requests"] - k6["failed"]
            extra["check"] = {"acknowledged": expected, "in_postgres": stored, "reconcile_ok": ok}
            stop_process(gateway)
        finally:
            if flusher is not None:
                stop_process(flusher)
            redis.close()

    print_table(rows, extra)
    # wrk and k6 stop mid-flight: a purchase the server acknowledged as the clock ran out
    # is stored but not counted as a 200, so stored may exceed the count, never fall short.
    passed = ok and stored >= expected
    if not passed:
        print(report)
    saved = save_result("suite-quick" if opts.quick else "suite", {"rows": rows, **extra})
    render_chart(phases, saved.with_suffix(".png"))
    print(f"results: {saved} and {saved.with_suffix('.png').name}")
    return 0 if passed else 1


def per_thousand(cpu: dict[str, float], purchases: int) -> dict[str, float]:
    return {name: round(1000 * s / max(1, purchases), 4) for name, s in cpu.items()}


def print_table(rows: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    print(
        f"\n{'phase':<44} {'rate/s':>8} {'ratio':>6} {'p50':>7} {'p90':>7} {'p99':>7} {'p99.9':>7} {'errors':>7}"
    )
    for r in rows:
        errors = r.get("failed", r.get("non_2xx", 0))
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else "-"
        print(f"{r['phase']:<44} {r['rate']:>8.0f} {ratio:>6} {r.get('p50_ms', 0):>6.2f}m"
              f" {r.get('p90_ms', 0):>6.2f}m {r.get('p99_ms', 0):>6.2f}m"
              f" {r.get('p99.9_ms', 0) or 0:>6.2f}m {errors:>7.0f}")  # fmt: skip
    for r in rows:
        if "cpu_s_per_1000" in r:
            print(f"CPU s per 1,000 purchases, {r['phase']}: {r['cpu_s_per_1000']}")
    d = extra["flusher_drain"]
    print(f"flusher alone drained {d['entries']} entries in {d['seconds']:.2f}s: {d['rate']:.0f}/s,"
          f" CPU s per 1,000: {d['cpu_s_per_1000']}")  # fmt: skip
    s = extra["sustained"]
    print(
        f"sustained: peak stream length {s['peak_stream_length']}, drained {s['drained_after_load_s']:.2f}s after the load"
    )
    c = extra["check"]
    print(
        f"check: {c['acknowledged']} acknowledged, {c['in_postgres']} in PostgreSQL, reconcile ok: {c['reconcile_ok']}"
    )
    if "thresholds_passed" in rows[-1]:
        print(f"k6 thresholds (p99 <= 5 ms, zero errors) passed: {rows[-1]['thresholds_passed']}")


if __name__ == "__main__":
    sys.exit(main())
