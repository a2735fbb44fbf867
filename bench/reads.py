"""Read benchmark: cached vs uncached history and summary reads on a 100,000-entry account.

    .venv/bin/python -m bench.reads [--entries 100000] [--seconds 8]   (make bench-reads)

Builds a throwaway stack, writes the history through the flusher's own bulk path, then:
1. uncached: the gateway with MONOKERA_CACHE_ENABLED=false, wrk over a fixed set of reads
   (first pages, deep pages reached by cursor, summaries) of the big account;
2. cached: the same reads on a gateway with the cache on, after one warm-up pass;
3. mixed: purchases keep arriving for a few hot accounts (a flusher commits them, which
   invalidates their pages) while wrk reads 200 accounts with a skewed popularity; the hit
   ratio comes from the gateway's /metrics.
Latency is measured with one wrk connection (no queueing), the mix with four. Results go to bench/results/reads-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench.harness import save_result, serve_gateway, throwaway_stack, wrk_missing
from bench.wrk import wrk_paths
from core.events import PurchaseEvent
from devstack.processes import stop_process
from flusher.ledger_writer import Decoded, LedgerWriter

HERE = Path(__file__).resolve().parent
BIG = "big-account"


async def seed(dsn: str, entries: int, accounts: int) -> list[str]:
    """The big account buys from everyone; 200 others trade among themselves."""
    store = LedgerWriter(dsn)
    names = [f"acct-{i}" for i in range(accounts)]
    rng = random.Random(7)
    now_us = int(time.time() * 1_000_000) - entries * 1000
    batch: list[Decoded] = []
    for i in range(entries + accounts * 50):
        if i < entries:
            buyer, seller = BIG, rng.choice(names)
        else:
            buyer, seller = rng.sample(names, 2)
        amount = rng.randint(100, 100_000)
        event = PurchaseEvent(
            transaction_id=f"seed-{i}",
            customer_account=buyer,
            customer_name="Buyer",
            seller_account=seller,
            seller_name="Seller",
            amount=amount,
            request_id=f"seed-{i}",
            accepted_at_us=now_us + i * 1000,
        )
        batch.append(Decoded(f"{now_us // 1000 + i}-0", event))
        if len(batch) == 5000:
            await store.write(batch, [])
            batch = []
    if batch:
        await store.write(batch, [])
    await store.close()
    return names


def deep_cursors(base: str, pages: int) -> list[str]:
    """Follow next_cursor through the big account's history to get deep-page URLs."""
    paths, cursor = [], ""
    for _ in range(pages):
        path = f"/accounts/{BIG}/transactions?limit=50" + (f"&cursor={cursor}" if cursor else "")
        paths.append(path)
        with urllib.request.urlopen(base + path) as reply:
            cursor = json.loads(reply.read())["next_cursor"] or ""
        for _ in range(20):  # jump ahead: pages 1, 21, 41, ... deep into 100k entries
            if not cursor:
                break
            with urllib.request.urlopen(
                f"{base}/accounts/{BIG}/transactions?limit=500&cursor={cursor}"
            ) as r:
                cursor = json.loads(r.read())["next_cursor"] or ""
    return paths


def metric(base: str, name: str) -> float:
    """Summed over every series of ``name`` (one per gateway worker)."""
    with urllib.request.urlopen(base + "/metrics") as reply:
        families = text_string_to_metric_families(reply.read().decode())
        return sum(s.value for f in families for s in f.samples if s.name == name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=8)
    opts = parser.parse_args()
    if wrk_missing():
        return 2
    results: dict[str, dict[str, float]] = {}
    with throwaway_stack("reads", MONOKERA_LOG_LEVEL="ERROR") as (stack, base_env):
        t = time.monotonic()
        names = asyncio.run(seed(stack.database_url, opts.entries, 200))
        print(f"seeded {opts.entries} entries for {BIG} in {time.monotonic() - t:.1f}s", flush=True)
        for label, cache in (("uncached", "false"), ("cached", "true")):
            gateway, base = serve_gateway({**base_env, "MONOKERA_CACHE_ENABLED": cache})
            paths = deep_cursors(base, 10) + [f"/accounts/{BIG}"] * 5
            wrk_paths(base, paths, 2, 1)  # warm-up pass
            results[label] = wrk_paths(base, paths, opts.seconds, 1)
            stop_process(gateway)

        # Mixed: skewed reads over 200 accounts while purchases invalidate the hot ones.
        gateway, base = serve_gateway(base_env)
        flusher = subprocess.Popen(
            [sys.executable, "-m", "flusher"],
            env=base_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        rng = random.Random(11)
        weights = [1 / (rank + 1) for rank in range(len(names))]
        mixed = [
            f"/accounts/{a}/transactions?limit=20" if rng.random() < 0.7 else f"/accounts/{a}"
            for a in rng.choices(names, weights, k=400)
        ]
        writer = subprocess.Popen(
            [sys.executable, "-m", "bench.hot_writes", base, str(opts.seconds), *names[:5]],
            stdout=subprocess.DEVNULL,
        )
        hits0, misses0 = (
            metric(base, "monokera_cache_hits_total"),
            metric(base, "monokera_cache_misses_total"),
        )
        results["mixed"] = wrk_paths(base, mixed, opts.seconds, 4)
        writer.wait()
        hits = metric(base, "monokera_cache_hits_total") - hits0
        misses = metric(base, "monokera_cache_misses_total") - misses0
        results["mixed"]["hit_ratio"] = hits / max(1.0, hits + misses)
        stop_process(flusher)
        stop_process(gateway)

    print(f"{'reads':<10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'hit ratio':>10}")
    for label, r in results.items():
        ratio = f"{r['hit_ratio']:.3f}" if "hit_ratio" in r else "-"
        print(
            f"{label:<10} {r['rate']:>8.0f} {r.get('p50_ms', 0):>8.3f} {r.get('p99_ms', 0):>8.3f} {ratio:>10}"
        )
    speedup = results["uncached"]["p50_ms"] / results["cached"]["p50_ms"]
    print(f"cached p50 is {speedup:.1f}x lower than uncached")
    save_result(
        "reads",
        {
            "entries": opts.entries,
            "seconds": opts.seconds,
            "results": results,
            "p50_speedup": speedup,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
