"""The benchmark suite: `make bench` (under 3 minutes) and `make bench-quick` (about 1.5).

On a throwaway embedded stack with production settings (no debug, no access log), every
stage is measured against the least that stage can cost, in the same run, as CPU per
purchase read from /proc:
1. reference: the minimal ASGI app (``empty_asgi.py``) on the same Granian with the same
   options, wrk c64 POSTs (CPU per request, rate) and wrk c1 GETs (p50);
2. peak: wrk c64 against the gateway, flusher stopped (gateway and Redis CPU per purchase);
3. batches: wrk c8 of ``POST /purchases`` with 1,000 items each (gateway CPU per purchase);
4. drain: the flusher alone drains that backlog (flusher and PostgreSQL CPU per purchase,
   drain rate);
5. end to end: wrk c64 with the flusher running (rate against the reference);
6. sustained: k6 at a constant 5,000/s with the flusher running (all four processes);
7. reads: p50 of a cached 50-entry history page with one connection; then 16 connections
   of history reads beside 32 of purchases (flusher running), cache on and cache off;
8. check: every purchase that got a 200 is in PostgreSQL exactly once (reconcile);
9. references for Redis (append script vs pipelined XADD) and PostgreSQL (bare COPY).
Prints the stage table (``stages.py``) and the phase table, writes
bench/results/suite-<time>.json and a PNG of throughput and acknowledgment latency over time
from the gateway's /metrics.
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
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
from redis import Redis

from bench.chart import MetricsSampler, Sample, render_chart
from bench.harness import save_result, serve_empty_asgi, serve_gateway, throwaway_stack, wrk_missing
from bench.references import copy_reference, process_cpu, redis_reference
from bench.stages import Stage, render
from bench.wrk import run_wrk, wrk_paths
from core.constants import GROUP, stream_key
from core.settings import Settings
from devstack.processes import stop_process
from ops.reconcile import reconcile
from ops.reconcile import render as render_reconcile

HERE = Path(__file__).resolve().parent
K6 = shutil.which("k6") or str(Path(sys.executable).parent / "k6")
BATCH_ITEMS = 1000
READS_ACCOUNT = "bench-reads"
READS_ENTRIES = 5000

cpu_seconds = process_cpu


class Meter:
    """CPU seconds used by each part of the stack between start() and stop()."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start_values: dict[str, float] = {}

    def start(self) -> Meter:
        self.start_values = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return self

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


SETTINGS = Settings.for_command("bench")
SHARDS = SETTINGS.stream_shards
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
    return int(rows), report.ok, render_reconcile(report)


def post_json(url: str, body: object) -> Any:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return json.loads(reply.read())


def seed_history(base: str) -> int:
    """READS_ENTRIES purchases of one account, through POST /purchases."""
    run = time.time_ns()
    for first in range(0, READS_ENTRIES, BATCH_ITEMS):
        items = [
            {"transaction_id": f"seed-{run}-{i}",
             "customer_info": {"customer_name": "Reader", "customer_account": READS_ACCOUNT,
                               "ammount": 100 + i},
             "seller_info": {"seller_name": "Shop", "seller_account": f"shop-{i % 50}"}}
            for i in range(first, first + BATCH_ITEMS)
        ]  # fmt: skip
        post_json(f"{base}/purchases", items)
    return READS_ENTRIES


def history_pages(base: str, pages: int = 10) -> list[str]:
    """The account's first ``pages`` pages of 50, by following next_cursor."""
    paths, cursor = [], ""
    for _ in range(pages):
        path = f"/accounts/{READS_ACCOUNT}/transactions?limit=50" + (
            f"&cursor={cursor}" if cursor else ""
        )
        paths.append(path)
        cursor = get_json(base + path)["next_cursor"] or ""
        if not cursor:
            break
    return paths


def reads_beside_purchases(base: str, paths: list[str], seconds: int) -> dict[str, Any]:
    """16 connections of history reads while 32 connections send purchases."""
    with ThreadPoolExecutor(2) as pool:
        purchases = pool.submit(run_wrk, f"{base}/purchase", seconds, 32, HERE / "purchase.lua")
        reads = pool.submit(wrk_paths, base, paths, seconds, 16)
        return {"reads": reads.result(), "purchases": purchases.result()}


def per_thousand(cpu: dict[str, float], purchases: int) -> dict[str, float]:
    return {name: round(1000 * s / max(1, purchases), 4) for name, s in cpu.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5 s phases")
    parser.add_argument("--rate", type=int, default=5000)
    opts = parser.parse_args()
    seconds = 5 if opts.quick else 30
    peak_seconds = 5 if opts.quick else 10
    reference_entries = 100_000 if opts.quick else 200_000
    if wrk_missing():
        return 2
    rows: list[dict[str, Any]] = []
    phases: dict[str, list[Sample]] = {}
    extra: dict[str, Any] = {}
    flusher: subprocess.Popen[bytes] | None = None
    gateway: subprocess.Popen[bytes] | None = None
    expected = 0
    backlog_limits = {
        "MONOKERA_BACKLOG_MAX_LENGTH": "100000000",
        "MONOKERA_BACKLOG_MAX_AGE_S": "3600",
    }
    with throwaway_stack("bench", **backlog_limits) as (stack, env):
        redis = Redis.from_url(stack.redis_url)
        pids = {
            "gateway": 0,
            "flusher": 0,
            "redis": stack.redis.pid,
            "postgres": stack.postgres.pid,
        }
        try:
            # 1. The reference app: POSTs for CPU and rate, one connection of GETs for p50.
            empty, empty_base = serve_empty_asgi(env)
            meter = Meter({"app": empty.pid}).start()
            ceiling = run_wrk(f"{empty_base}/purchase", peak_seconds, 64, HERE / "purchase.lua")
            empty_cpu = meter.stop()["app"]
            empty_get = wrk_paths(empty_base, [f"/accounts/{READS_ACCOUNT}/transactions?limit=50"],
                                  max(3, peak_seconds // 3), 1)  # fmt: skip
            stop_process(empty)
            rows.append({"phase": "reference: minimal ASGI app, wrk c64", **ceiling,
                         "cpu_us_per_request": 1e6 * empty_cpu / max(1, ceiling["requests"])})  # fmt: skip

            # 2. Peak: single purchases, flusher stopped.
            gateway, base = serve_gateway(env)
            pids["gateway"] = gateway.pid
            meter = Meter({k: pids[k] for k in ("gateway", "redis", "postgres")}).start()
            sampler = MetricsSampler(base).start()
            peak = run_wrk(f"{base}/purchase", peak_seconds, 64, HERE / "purchase.lua")
            phases["peak (wrk c64, flusher stopped)"] = sampler.stop()
            accepted = wrk_ok(peak)
            expected += accepted
            peak_cpu = meter.stop()
            rows.append({"phase": "peak: gateway, flusher stopped, wrk c64", **peak,
                         "ratio": peak["rate"] / ceiling["rate"],
                         "cpu_s_per_1000": per_thousand(peak_cpu, accepted)})  # fmt: skip

            # 3. Batches of 1,000 purchases.
            meter = Meter({k: pids[k] for k in ("gateway", "redis")}).start()
            # Half as long: at 50,000 purchases/s it fills the backlog the drain must empty.
            batches = run_wrk(f"{base}/purchases", max(5, peak_seconds // 2), 8,
                              HERE / "batch.lua", {"ITEMS": str(BATCH_ITEMS)})  # fmt: skip
            batched = wrk_ok(batches) * BATCH_ITEMS
            expected += batched
            batch_cpu = meter.stop()
            rows.append({"phase": f"batches: POST /purchases x{BATCH_ITEMS}, wrk c8", **batches,
                         "purchases_per_s": batches["rate"] * BATCH_ITEMS,
                         "cpu_s_per_1000": per_thousand(batch_cpu, batched)})  # fmt: skip

            # 4. The flusher drains that backlog alone.
            # Timed from its first commit, so the interpreter's start is not in the rate.
            backlog_before = backlog(redis)
            flusher = subprocess.Popen([sys.executable, "-m", "flusher"], env=env)
            pids["flusher"] = flusher.pid
            while (left := backlog(redis)) >= backlog_before:
                time.sleep(0.01)
            meter = Meter({k: pids[k] for k in ("flusher", "redis", "postgres")}).start()
            drain_s = wait_drained(redis)
            drain_cpu = meter.stop()
            extra["flusher_drain"] = {
                "entries": left,
                "seconds": drain_s,
                "rate": left / drain_s if drain_s else 0.0,
                "cpu_s_per_1000": per_thousand(drain_cpu, left),
            }

            # 5. End to end: wrk c64 with the flusher running.
            meter = Meter(pids).start()
            sampler = MetricsSampler(base).start()
            e2e = run_wrk(f"{base}/purchase", peak_seconds, 64, HERE / "purchase.lua")
            phases["end to end (wrk c64, flusher running)"] = sampler.stop()
            expected += wrk_ok(e2e)
            wait_drained(redis)
            rows.append({"phase": "end to end: wrk c64, flusher running", **e2e,
                         "ratio": e2e["rate"] / ceiling["rate"],
                         "cpu_s_per_1000": per_thousand(meter.stop(), wrk_ok(e2e))})  # fmt: skip

            # 6. Sustained: a constant arrival rate with the flusher running.
            meter = Meter(pids).start()
            sampler = MetricsSampler(base).start()
            k6 = k6_run("constant.js", base, {"RATE": str(opts.rate), "DURATION": f"{seconds}s"})
            phases[f"sustained (k6 {opts.rate}/s, flusher running)"] = sampler.stop()
            drain_after = wait_drained(redis)
            sustained_cpu = meter.stop()
            k6_ok = k6["requests"] - k6["failed"]
            expected += k6_ok
            rows.append({"phase": f"sustained: k6 {opts.rate}/s, flusher running", **k6,
                         "cpu_s_per_1000": per_thousand(sustained_cpu, k6_ok)})  # fmt: skip
            extra["sustained"] = {"drained_after_load_s": drain_after}

            # 7. Reads: a cached page's p50, then reads beside purchases, cache on and off.
            expected += seed_history(base)
            wait_drained(redis)
            paths = history_pages(base)
            wrk_paths(base, paths, 1, 1)  # warm the cache
            cached_get = wrk_paths(base, paths, max(3, peak_seconds // 3), 1)
            mixed: dict[str, dict[str, Any]] = {}
            for label, cache in (("cached", "true"), ("uncached", "false")):
                if label == "uncached":
                    stop_process(gateway)
                    gateway, base = serve_gateway({**env, "MONOKERA_CACHE_ENABLED": cache})
                wrk_paths(base, paths, 1, 1)
                mixed[label] = reads_beside_purchases(base, paths, peak_seconds)
                expected += wrk_ok(mixed[label]["purchases"])
            wait_drained(redis)
            extra["reads"] = {"reference_get": empty_get, "cached_get": cached_get, **mixed}

            # 8. Check, with everything stored.
            stored, ok, report = asyncio.run(check(stack.database_url, stack.redis_url))
            extra["check"] = {"acknowledged": expected, "in_postgres": stored, "reconcile_ok": ok}
            stop_process(gateway)
            gateway = None
            stop_process(flusher)
            flusher = None

            # 9. References for Redis and PostgreSQL, on the same servers, now idle.
            extra["redis_reference"] = redis_reference(stack.redis_url, reference_entries)
            extra["copy_reference"] = copy_reference(
                stack.database_url, stack.postgres.pid, reference_entries, SETTINGS.batch_size
            )
        finally:
            for proc in (gateway, flusher):
                if proc is not None:
                    stop_process(proc)
            redis.close()

    stages = stage_table(rows, extra)
    print_phases(rows, extra)
    print()
    print(render(stages))
    # wrk and k6 stop mid-flight: a purchase the server acknowledged as the clock ran out
    # is stored but not counted as a 200, so stored may exceed the count, never fall short.
    passed = ok and stored >= expected
    if not passed:
        print(report)
    saved = save_result(
        "suite-quick" if opts.quick else "suite",
        {"stages": [s.as_dict() for s in stages], "rows": rows, **extra},
    )
    render_chart(phases, saved.with_suffix(".png"))
    print(f"results: {saved} and {saved.with_suffix('.png').name}")
    return 0 if passed else 1


def stage_table(rows: list[dict[str, Any]], extra: dict[str, Any]) -> list[Stage]:
    reference, peak, batches, e2e, sustained = rows
    peak_cpu, batch_cpu = peak["cpu_s_per_1000"], batches["cpu_s_per_1000"]
    drain = extra["flusher_drain"]
    drain_cpu = drain["cpu_s_per_1000"]
    redis_ref, copy_ref, reads = extra["redis_reference"], extra["copy_reference"], extra["reads"]
    # The least the whole pipeline costs per purchase: the gateway and Redis at peak, plus
    # the flusher, Redis and PostgreSQL of the drain (every stage at its fullest batches).
    at_peak = peak_cpu["gateway"] + peak_cpu["redis"] + sum(drain_cpu.values())
    return [
        Stage("gateway", 1000 * peak_cpu["gateway"], reference["cpu_us_per_request"],
              "CPU µs/purchase", "minimal ASGI app, CPU µs/request", 1.5),
        Stage("Redis", redis_ref["script_us_per_entry"], redis_ref["xadd_us_per_entry"],
              "Redis CPU µs/entry", f"pipelined XADD, batches of {redis_ref['batch']}", 2.0),
        Stage("flusher + PostgreSQL", 1000 * (drain_cpu["flusher"] + drain_cpu["postgres"]),
              copy_ref["us_per_row"], "CPU µs/purchase", "bare COPY, PK + 2 account indexes",
              2.0),
        Stage("flusher drain rate", drain["rate"], 60_000, "purchases/s",
              "target rate, one writer", 1.0, at_least=True),
        Stage("pipeline at 5,000/s", 1000 * sum(sustained["cpu_s_per_1000"].values()),
              1000 * at_peak, "CPU µs/purchase", "peak: gateway+Redis, drain", 1.5),
        Stage(f"batch POST /purchases x{BATCH_ITEMS}", 1000 * batch_cpu["gateway"],
              1000 * peak_cpu["gateway"], "gateway CPU µs/purchase", "single POST /purchase",
              0.2),
        Stage("reads: cached page p50", reads["cached_get"]["p50_ms"],
              reads["reference_get"]["p50_ms"], "ms, 1 connection", "minimal ASGI app GET", 1.5),
        Stage("reads beside purchases", reads["cached"]["reads"]["rate"],
              reads["uncached"]["reads"]["rate"], "cached reads/s", "uncached reads/s", 3.0,
              at_least=True),
        Stage("ack throughput (flusher paused)", peak["rate"], reference["rate"], "purchases/s",
              "minimal ASGI app req/s", None),
        Stage("end to end (flusher running)", e2e["rate"], reference["rate"], "purchases/s",
              "minimal ASGI app req/s", None),
    ]  # fmt: skip


def print_phases(rows: list[dict[str, Any]], extra: dict[str, Any]) -> None:
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
    r, c = extra["redis_reference"], extra["copy_reference"]
    print(f"Redis reference ({r['entries']} entries, batches of {r['batch']}): append script "
          f"{r['script_us_per_entry']:.2f} µs/entry (reading 943f4b2's keys too: "
          f"{r['script_legacy_us_per_entry']:.2f}), XADD {r['xadd_us_per_entry']:.2f} µs/entry")  # fmt: skip
    print(f"COPY reference ({c['rows']} rows, {c['batch']} per COPY): {c['rate']:.0f} rows/s, "
          f"client {c['client_us_per_row']:.2f} + PostgreSQL {c['postgres_us_per_row']:.2f} µs/row")  # fmt: skip
    reads = extra["reads"]
    for label in ("cached", "uncached"):
        m = reads[label]
        print(f"reads beside purchases, {label}: {m['reads']['rate']:.0f} reads/s "
              f"(p50 {m['reads'].get('p50_ms', 0):.2f} ms), purchases {m['purchases']['rate']:.0f}/s")  # fmt: skip
    c = extra["check"]
    print(
        f"check: {c['acknowledged']} acknowledged, {c['in_postgres']} in PostgreSQL, reconcile ok: {c['reconcile_ok']}"
    )


if __name__ == "__main__":
    sys.exit(main())
