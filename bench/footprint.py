"""Redis bytes per purchase: used_memory before and after N unique purchases, no flusher.

    .venv/bin/python -m bench.footprint [--purchases 100000] [--base /tmp/old-checkout]

On a throwaway stack, the gateway takes N purchases like the seed's (12-digit
transaction_ids, the seed's accounts, names and amount) in ``POST /purchases`` of 1,000
items; no flusher runs, so every entry is still in its stream, as during a PostgreSQL
outage. The delta of INFO ``used_memory`` is split by key: the streams and the idempotency
records (MEMORY USAGE … SAMPLES 0 of each key), and the rest (every other key the
purchases left, and what Redis itself allocated). With ``--base`` the same runs against
another checkout's gateway first (``bench.ab``'s way), on the same Redis after FLUSHALL.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from redis import Redis

from bench.ab import serve_checkout
from bench.harness import save_result, throwaway_stack
from devstack.processes import stop_process

HERE = Path(__file__).resolve().parent
BATCH = 1000
KINDS = (("stream", b"monokera:{*}:purchases"), ("idempotency", b"monokera:{*}:idem*"))


def purchases(first: int, n: int) -> bytes:
    seed = json.loads((HERE.parent / "tests" / "seed" / "ExampleRequest.json").read_text())
    items = []
    for i in range(first, first + n):
        seed["transaction_id"] = str(312312312312 + i)
        items.append(json.dumps(seed, separators=(",", ":")))
    return ("[" + ",".join(items) + "]").encode()


def post_all(url: str, n: int) -> None:
    for first in range(0, n, BATCH):
        body = purchases(first, min(BATCH, n - first))
        request = urllib.request.Request(
            url + "/purchases", body, {"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            results = json.loads(reply.read())
        refused = [r for r in results if "error" in r]
        if refused:
            raise SystemExit(f"refused: {refused[:3]}")


def used_memory(redis: Redis) -> int:
    info: Any = redis.info("memory")
    return int(info["used_memory"])


def bytes_of(redis: Redis, pattern: bytes) -> tuple[int, int]:
    """(MEMORY USAGE summed over the keys matching ``pattern``, how many keys)."""
    keys = list(redis.scan_iter(match=pattern, count=1000))
    return sum(int(redis.memory_usage(k, samples=0) or 0) for k in keys), len(keys)


def measure(redis: Redis, checkout: Path, env: dict[str, str], n: int) -> dict[str, Any]:
    redis.flushall()
    gateway, url = serve_checkout(checkout, env)
    try:
        time.sleep(1)  # the workers' own keys (heartbeats, registries) are written
        before = used_memory(redis)
        post_all(url, n)
        time.sleep(0.5)
        after = used_memory(redis)
    finally:
        stop_process(gateway)
    delta = after - before
    out: dict[str, Any] = {"purchases": n, "used_memory_delta": delta, "per_purchase": delta / n}
    accounted = 0
    for kind, pattern in KINDS:
        size, keys = bytes_of(redis, pattern)
        out[kind] = {"keys": keys, "per_purchase": size / n}
        accounted += size
    out["rest_per_purchase"] = (delta - accounted) / n
    return out


def render(name: str, r: dict[str, Any]) -> str:
    return (
        f"{name}: {r['per_purchase']:.1f} B of used_memory per purchase "
        f"(stream {r['stream']['per_purchase']:.1f}, "
        f"idempotency {r['idempotency']['per_purchase']:.1f} in {r['idempotency']['keys']} keys, "
        f"rest {r['rest_per_purchase']:.1f}) over {r['purchases']:,} purchases"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--purchases", type=int, default=100_000)
    parser.add_argument("--base", type=Path, help="another checkout, measured first")
    opts = parser.parse_args()
    results: dict[str, Any] = {}
    with throwaway_stack(
        "footprint", MONOKERA_BACKLOG_MAX_LENGTH="100000000", MONOKERA_BACKLOG_MAX_AGE_S="3600"
    ) as (stack, env):
        redis = Redis.from_url(stack.redis_url)
        checkouts = [("base", opts.base)] if opts.base else []
        for name, checkout in [*checkouts, ("this", HERE.parent)]:
            results[name] = measure(redis, checkout.resolve(), env, opts.purchases)
            print(render(name, results[name]), flush=True)
        redis.close()
    print(f"saved {save_result('footprint', results)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MONOKERA_LOG_LEVEL", "WARNING")
    sys.exit(main())
