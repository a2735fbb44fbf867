"""PostgreSQL ingest with 1, 2 and 4 flushers draining one backlog, and their lock waits.

    .venv/bin/python -m bench.writers [--flushers 1,2,4] [--mix uniform,mix]
                                      [--purchases 60000] [--quick] [--code CHECKOUT]

Per case (account mix x flusher count), on a fresh throwaway stack:
1. the backlog is written straight into shard 0's stream (pipelined XADD, no gateway), with
   the values the gateway would append (``core.entries.values``; format 1, the one JSON
   field of 943f4b2, when ``--code`` is a checkout without core/entries.py);
2. N ``python -m flusher`` processes of ``--code`` (each its own ``MONOKERA_CONSUMER``, one
   shard) start on the empty stream and migrate the database themselves. Once all N are
   reading, the bench locks ``transactions`` against writes and fills the stream: every
   flusher takes a batch and waits, at its insert or behind another batch's locks, whatever
   the checkout's locking. Releasing the lock starts the clock, so interpreter start, migrations and the fill are outside the drain's time;
3. the drain ends when the group has nothing pending and was delivered the last entry.
   Drain rate: purchases / wall time from the release. CPU: the flushers' and all of
   PostgreSQL's processes (exited backends too, through the postmaster's reaped children;
   the bench's own backend left out) from before the fill to the end, so the first batches,
   read and decoded before the release, are in it; Redis's CPU (INFO) from the release;
4. meanwhile one connection samples ``pg_stat_activity`` every 20 ms: a sample is busy when
   at least one client backend is active; among busy samples, the share with a backend
   waiting on a heavyweight lock (``wait_event_type = 'Lock'``: an advisory lock, a row
   lock, a transaction id), on an LWLock, with two or more backends active, and with two or more
   active without waiting on a lock (writing side by side);
5. afterwards ``transactions`` must hold exactly one row per purchase.

Accounts: ``uniform`` is the seed's one buyer and one seller for every purchase; ``mix``
draws the buyer from a Zipf(1.1) over 100,000 accounts and the seller from one hot seller
(20% of purchases) or a Zipf(1.1) over 10,000 sellers (seeded; buyer and seller always
differ). The bare COPY reference (``bench.references.copy_reference``, one row per purchase
in transactions of the batch size) runs once, on its own stack, in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from bench.harness import save_result, throwaway_stack
from bench.references import copy_reference, process_cpu, redis_cpu
from core.constants import GROUP, stream_key
from core.entries import FIELDS, VERSION, VERSION_FIELD, values
from core.events import CustomerInfo, EventV1, Leg, PurchaseRequest, SellerInfo, encoder
from core.replies import text
from core.settings import Settings
from devstack.processes import stop_process, wait_until
from devstack.stack import DATABASE, EmbeddedStack

HERE = Path(__file__).resolve().parent
STREAM = stream_key(0)
SAMPLE_EVERY_S = 0.02
CONSUMER_PREFIX = "bench-writer-"

# The seed's purchase (bench.references.SAMPLE).
SEED_BUYER, SEED_SELLER, SEED_AMOUNT = "23131342342342321", "23132131", 20000
BUYERS, SELLERS, ZIPF_S, HOT_SELLER_SHARE = 100_000, 10_000, 1.1, 0.2


@dataclass(frozen=True, slots=True)
class Purchase:
    transaction_id: str
    buyer: str
    buyer_name: str
    seller: str
    seller_name: str
    amount: int


def zipf_cumulative(n: int, s: float) -> list[float]:
    """Cumulative weights of a Zipf(s) over ranks 1..n (``random.choices`` bisects them)."""
    return list(itertools.accumulate(k**-s for k in range(1, n + 1)))


def purchases(mix: str, n: int, seed: int) -> list[Purchase]:
    run = time.time_ns()
    if mix == "uniform":
        return [
            Purchase(f"w{run}-{i}", SEED_BUYER, "User 1", SEED_SELLER, "User 2", SEED_AMOUNT)
            for i in range(n)
        ]
    rng = random.Random(seed)
    buyer_ranks = rng.choices(range(BUYERS), cum_weights=zipf_cumulative(BUYERS, ZIPF_S), k=n)
    seller_cum = zipf_cumulative(SELLERS, ZIPF_S)
    out = []
    for i, rank in enumerate(buyer_ranks):
        buyer = str(100_000_000_000 + rank)  # 12 digits: never a seller's number
        if rng.random() < HOT_SELLER_SHARE:
            seller, seller_name = SEED_SELLER, "Hot shop"
        else:
            srank = rng.choices(range(SELLERS), cum_weights=seller_cum)[0]
            seller, seller_name = str(90_000_000 + srank), f"Shop {srank}"
        assert buyer != seller
        out.append(
            Purchase(f"w{run}-{i}", buyer, f"Buyer {rank}", seller, seller_name,
                     rng.randint(100, 1_000_000))
        )  # fmt: skip
    return out


def entry_format(code: Path) -> int:
    """2 when the checkout reads and writes format-2 entries (it has core/entries.py), else
    1: 943f4b2's one field ``p`` holding the purchase as JSON with both legs."""
    return 2 if (code / "core" / "entries.py").is_file() else 1


def entry_fields(p: Purchase, fmt: int, request_id: str, accepted_at_us: int) -> list[Any]:
    """One entry's field names and values, flat, as the gateway's append script writes them."""
    if fmt == 2:
        request = PurchaseRequest(
            p.transaction_id,
            CustomerInfo(p.buyer_name, p.buyer, p.amount),
            SellerInfo(p.seller_name, p.seller),
        )
        vals = values(request, request_id, accepted_at_us)
        return [VERSION_FIELD, VERSION, *itertools.chain(*zip(FIELDS, vals, strict=True))]
    event = EventV1(
        transaction_id=p.transaction_id,
        customer_name=p.buyer_name,
        seller_name=p.seller_name,
        legs=(Leg(p.buyer, "DEBIT", p.amount), Leg(p.seller, "CREDIT", p.amount)),
        request_id=request_id,
        accepted_at_us=accepted_at_us,
    )
    return [b"p", encoder.encode(event)]


CHECK_V1 = """
import sys
from core.events import CustomerInfo, PurchaseRequest, SellerInfo, encoder, event_from_request
r = PurchaseRequest("t-1", CustomerInfo("User 1", "23131342342342321", 20000),
                    SellerInfo("User 2", "23132131"))
sys.stdout.buffer.write(encoder.encode(event_from_request(r, "abc-1f", 1700000000000000)))
"""


def check_v1_format(code: Path) -> None:
    """The format-1 entry written here is byte for byte what ``code``'s gateway appends."""
    ours = entry_fields(
        Purchase("t-1", SEED_BUYER, "User 1", SEED_SELLER, "User 2", SEED_AMOUNT),
        1, "abc-1f", 1700000000000000,
    )[1]  # fmt: skip
    theirs = subprocess.run(
        [sys.executable, "-c", CHECK_V1], cwd=code, env={**os.environ, "PYTHONPATH": str(code)},
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    if ours != theirs:
        raise SystemExit(f"format-1 entry differs from {code}'s:\n{ours!r}\n{theirs!r}")


def fill(redis: Redis, items: list[Purchase], fmt: int, chunk: int = 1000) -> str:
    """XADD every purchase to shard 0's stream, pipelined; the last entry's id."""
    prefix = os.urandom(6).hex()
    accepted_at_us = time.time_ns() // 1000
    pipe = redis.pipeline(transaction=False)
    last = ""
    for first in range(0, len(items), chunk):
        for i, p in enumerate(items[first : first + chunk], first):
            pipe.execute_command("XADD", STREAM, "*",
                                 *entry_fields(p, fmt, f"{prefix}-{i + 1:x}", accepted_at_us))  # fmt: skip
        last = text(pipe.execute()[-1])
    return last


@contextlib.contextmanager
def bare_stack(name: str) -> Iterator[EmbeddedStack]:
    """Embedded Redis and PostgreSQL with an empty database: the flushers of the checkout
    under test apply their own migrations (``bench.harness.throwaway_stack`` applies this
    checkout's)."""
    work = Path(tempfile.mkdtemp(prefix=f"monokera-{name}-"))
    work.chmod(0o755)  # PostgreSQL may run as another user when we are root
    stack = EmbeddedStack(work / "stack")
    try:
        stack.start(postgres=False)
        stack.postgres.start()
        stack.postgres.create_database(DATABASE)
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


def postgres_cpu(postmaster: int) -> tuple[float, dict[int, float]]:
    """PostgreSQL's CPU seconds: the postmaster's own and its reaped children's (backends
    that exited), and each live child's by pid."""
    root = psutil.Process(postmaster)
    t = root.cpu_times()
    live: dict[int, float] = {}
    for child in root.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            c = child.cpu_times()
            live[child.pid] = c.user + c.system
    return t.user + t.system + t.children_user + t.children_system, live


def postgres_delta(
    before: tuple[float, dict[int, float]], after: tuple[float, dict[int, float]], skip: int
) -> float:
    """CPU seconds between two ``postgres_cpu`` readings, without backend ``skip``'s."""
    own = after[1].get(skip, 0.0) - before[1].get(skip, 0.0)
    return after[0] + sum(after[1].values()) - before[0] - sum(before[1].values()) - own


ACTIVITY = """
SELECT state, wait_event_type, wait_event FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
  AND datname = current_database()
"""
WAITING = """
SELECT count(*) FROM pg_stat_activity
WHERE backend_type = 'client backend' AND wait_event_type = 'Lock'
  AND datname = current_database()
"""
GATE = "LOCK TABLE transactions IN SHARE MODE"
"""Held by the bench at the start line: every flusher's batch waits at its insert into
transactions (or behind another batch's locks), whatever the checkout's locking."""


@dataclass
class Samples:
    """What ``pg_stat_activity`` showed, sample by sample (flusher backends only)."""

    total: int = 0
    busy: int = 0
    lock: int = 0
    lwlock: int = 0
    two_active: int = 0
    two_working: int = 0
    """Two or more active and not waiting on a heavyweight lock: writing side by side."""
    idle_in_tx_holding: int = 0
    """A backend idle in transaction while another waits on a lock: the lock is held
    across a client round trip (Redis, the next statement)."""
    lock_events: Counter[str] = field(default_factory=Counter)

    def add(self, rows: list[asyncpg.Record]) -> None:
        self.total += 1
        active = [r for r in rows if r["state"] == "active"]
        if not active:
            return
        self.busy += 1
        locked = [r for r in active if r["wait_event_type"] == "Lock"]
        self.lock += bool(locked)
        self.lwlock += any(r["wait_event_type"] == "LWLock" for r in active)
        self.two_active += len(active) >= 2
        self.two_working += len(active) - len(locked) >= 2
        self.idle_in_tx_holding += bool(locked) and any(
            r["state"] == "idle in transaction" for r in rows
        )
        self.lock_events.update(str(r["wait_event"]) for r in locked)

    def share(self, count: int) -> float:
        return 100 * count / self.busy if self.busy else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "samples": self.total,
            "busy": self.busy,
            "lock_pct": self.share(self.lock),
            "lwlock_pct": self.share(self.lwlock),
            "two_active_pct": self.share(self.two_active),
            "two_working_pct": self.share(self.two_working),
            "idle_in_tx_while_waited_pct": self.share(self.idle_in_tx_holding),
            "lock_wait_events": dict(self.lock_events),
        }


async def sample_activity(conn: asyncpg.Connection, samples: Samples, stop: asyncio.Event) -> None:
    next_at = time.monotonic()
    while not stop.is_set():
        samples.add(await conn.fetch(ACTIVITY))
        next_at += SAMPLE_EVERY_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))


async def drained(redis: AsyncRedis, last_id: str) -> bool:
    groups: Any = await redis.xinfo_groups(STREAM)
    group = next(g for g in groups if text(g["name"]) == GROUP)
    return int(group["pending"]) == 0 and text(group["last-delivered-id"]) == last_id


@contextlib.contextmanager
def flushers(
    code: Path, env: dict[str, str], n: int, logs: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``n`` flusher processes of ``code``, each under its own consumer name (without one
    all are ``flusher-<hostname>``: one consumer, whose pending list each one's start
    takes for its own)."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(n):
            with (logs / f"flusher-{i}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "flusher"], cwd=code, stdout=log, stderr=log,
                        env={**env, "MONOKERA_CONSUMER": f"{CONSUMER_PREFIX}{i}"},
                    )
                )  # fmt: skip
        yield procs
    finally:
        for proc in procs:
            stop_process(proc)


def tails(logs: Path) -> str:
    return "\n".join(
        f"--- {path.name}:\n{path.read_text(errors='replace')[-1500:]}"
        for path in sorted(logs.glob("flusher-*.log"))
        if path.stat().st_size
    )


async def run_case(
    code: Path, fmt: int, mix: str, n_flushers: int, items: list[Purchase]
) -> dict[str, Any]:
    n = len(items)
    logs = Path(tempfile.mkdtemp(prefix="monokera-writers-logs-"))
    with bare_stack("writers") as stack:
        env = {
            **os.environ,
            "REDIS_URL": stack.redis_url,
            "DATABASE_URL": stack.database_url,
            "MONOKERA_LOG_LEVEL": "WARNING",
            "MONOKERA_STREAM_SHARDS": "1",
            "PYTHONPATH": str(code),
        }
        redis = Redis.from_url(stack.redis_url)
        aredis = AsyncRedis.from_url(stack.redis_url)
        redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)  # core.groups.ensure_group's
        sampler = await asyncpg.connect(stack.database_url)
        gate = await asyncpg.connect(stack.database_url)
        try:
            with flushers(code, env, n_flushers, logs) as procs:

                def reading() -> bool:
                    if any(p.poll() is not None for p in procs):
                        raise RuntimeError(f"a flusher exited early:\n{tails(logs)}")
                    consumers: Any = redis.xinfo_consumers(STREAM, GROUP)
                    return len(consumers) == n_flushers

                wait_until(reading, 120, f"{n_flushers} flushers reading")
                sampler_pid = await sampler.fetchval("SELECT pg_backend_pid()")
                await gate.execute("BEGIN")
                await gate.execute(GATE)
                cpu0 = {p.pid: process_cpu(p.pid) for p in procs}
                pg0 = postgres_cpu(stack.postgres.pid)

                last_id = fill(redis, items, fmt)
                deadline, gated = time.monotonic() + 30, True
                while await sampler.fetchval(WAITING) < n_flushers:
                    if time.monotonic() > deadline:
                        gated = False  # timed from the release all the same
                        print(f"  warning: not every flusher waited at the gate ({mix}, {n_flushers})")  # fmt: skip
                        break
                    await asyncio.sleep(0.01)

                samples, stop = Samples(), asyncio.Event()
                redis0 = redis_cpu(redis)
                started = time.monotonic()
                await gate.execute("COMMIT")
                sampling = asyncio.create_task(sample_activity(sampler, samples, stop))
                while not await drained(aredis, last_id):
                    if time.monotonic() - started > 600:
                        raise RuntimeError(f"not drained after 600 s:\n{tails(logs)}")
                    await asyncio.sleep(0.01)
                seconds = time.monotonic() - started
                redis_s = redis_cpu(redis) - redis0
                flusher_s = sum(process_cpu(p.pid) - cpu0[p.pid] for p in procs)
                postgres_s = postgres_delta(pg0, postgres_cpu(stack.postgres.pid), sampler_pid)
                stop.set()
                await sampling

            rows = await sampler.fetchval("SELECT count(*) FROM transactions")
            dead = await sampler.fetchval("SELECT count(*) FROM dead_letters")
            dups = await sampler.fetchval("SELECT count(*) FROM duplicate_entries")
        finally:
            await gate.close()
            await sampler.close()
            await aredis.aclose()
            redis.close()
    problems = tails(logs)
    shutil.rmtree(logs, ignore_errors=True)
    return {
        "mix": mix,
        "flushers": n_flushers,
        "purchases": n,
        "gated": gated,
        "seconds": seconds,
        "rate": n / seconds,
        "flusher_us": 1e6 * flusher_s / n,
        "postgres_us": 1e6 * postgres_s / n,
        "cpu_us": 1e6 * (flusher_s + postgres_s) / n,
        "redis_us": 1e6 * redis_s / n,
        "activity": samples.as_dict(),
        "rows": int(rows),
        "dead_letters": int(dead),
        "duplicates": int(dups),
        "ok": rows == n and dead == 0 and dups == 0,
        "flusher_logs": problems,
    }


def commit_of(code: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() or str(code)


def render(cases: list[dict[str, Any]], copy_us: float) -> str:
    uniform = {c["flushers"]: c["cpu_us"] for c in cases if c["mix"] == "uniform"}
    head = (f"{'mix':<8} {'flushers':>8} {'drained/s':>10} {'CPU µs/purchase':>16} "
            f"{'(flusher + PG)':>15} {'÷ COPY':>7} {'mix÷unif':>8} {'Redis µs':>8} "
            f"{'lock waits':>10} {'≥2 active':>9} {'≥2 working':>10} {'LWLock':>7} {'busy':>6}")  # fmt: skip
    lines = [head]
    for c in cases:
        a = c["activity"]
        ratio = (
            f"{c['cpu_us'] / uniform[c['flushers']]:.2f}"
            if c["mix"] != "uniform" and c["flushers"] in uniform
            else "-"
        )
        split = f"({c['flusher_us']:.1f} + {c['postgres_us']:.1f})"
        lines.append(
            f"{c['mix']:<8} {c['flushers']:>8} {c['rate']:>10,.0f} {c['cpu_us']:>16.1f} "
            f"{split:>15} {c['cpu_us'] / copy_us:>6.2f}x {ratio:>8} {c['redis_us']:>8.1f} "
            f"{a['lock_pct']:>9.1f}% {a['two_active_pct']:>8.1f}% {a['two_working_pct']:>9.1f}% "
            f"{a['lwlock_pct']:>6.1f}% {a['busy']:>6}"
        )  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flushers", default="1,2,4", help="flusher counts (default 1,2,4)")
    parser.add_argument("--mix", default="uniform,mix", help="account mixes: uniform, mix")
    parser.add_argument("--purchases", type=int, help="backlog per case (default 60,000)")
    parser.add_argument("--quick", action="store_true", help="30,000 purchases per case")
    parser.add_argument(
        "--code", type=Path, default=HERE.parent,
        help="the checkout whose flusher runs (default: this one), e.g. one of 943f4b2",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=12, help="the mix's random seed")
    opts = parser.parse_args()
    counts = [int(x) for x in opts.flushers.split(",")]
    mixes = opts.mix.split(",")
    if set(mixes) - {"uniform", "mix"}:
        parser.error(f"--mix: uniform or mix, not {opts.mix}")
    n = opts.purchases or (30_000 if opts.quick else 60_000)
    code = opts.code.resolve()
    fmt = entry_format(code)
    if fmt == 1:
        check_v1_format(code)
    batch = Settings.for_command("bench").batch_size
    commit = commit_of(code)
    print(f"writers: {n:,} purchases per case, batch {batch}, flusher of {commit} "
          f"({code}), entry format {fmt}")  # fmt: skip
    if n < max(counts) * batch:
        print(f"  note: fewer purchases than {max(counts)} batches: not every flusher gets one")

    with throwaway_stack("writers-copy") as (stack, _):
        copy = copy_reference(stack.database_url, stack.postgres.pid, n, batch)
    print(f"COPY reference: {copy['rows']:,} rows, {copy['batch']} per COPY: "
          f"{copy['us_per_row']:.1f} µs/row (client {copy['client_us_per_row']:.1f} + "
          f"PostgreSQL {copy['postgres_us_per_row']:.1f}), {copy['rate']:,.0f} rows/s")  # fmt: skip

    cases: list[dict[str, Any]] = []
    for mix in mixes:
        items = purchases(mix, n, opts.seed)
        for count in counts:
            case = asyncio.run(run_case(code, fmt, mix, count, items))
            cases.append(case)
            a = case["activity"]
            print(f"  {mix} x{count}: {case['seconds']:.2f} s, {case['rate']:,.0f}/s, "
                  f"{case['cpu_us']:.1f} CPU µs/purchase; lock waits in {a['lock_pct']:.1f}% "
                  f"of {a['busy']} busy samples {a['lock_wait_events'] or ''}")  # fmt: skip
            if not case["ok"]:
                print(f"  CHECK FAILED: {case['rows']} rows in transactions for {n} purchases, "
                      f"{case['dead_letters']} dead letters, {case['duplicates']} duplicates\n"
                      f"{case['flusher_logs']}")  # fmt: skip

    print()
    print(render(cases, copy["us_per_row"]))
    print(
        "lock waits, ≥2 active, ≥2 working (active, not waiting on a lock), LWLock: shares of"
        " busy samples (≥1 flusher backend active), sampled every 20 ms"
    )
    for c in cases:
        a = c["activity"]
        if a["lock_wait_events"]:
            print(f"  {c['mix']} x{c['flushers']}: lock waits by event {a['lock_wait_events']}; "
                  f"a backend idle in transaction while another waited: "
                  f"{a['idle_in_tx_while_waited_pct']:.1f}%")  # fmt: skip
    failed = [c for c in cases if not c["ok"]]
    if failed:
        print(f"CHECK FAILED in {len(failed)} case(s): rows in transactions != purchases")
    else:
        print(f"check: every case stored exactly {n:,} transactions, no dead letter, no duplicate")
    saved = save_result(
        "writers-quick" if opts.quick else "writers",
        {"code": str(code), "commit": commit, "entry_format": fmt, "purchases": n,
         "batch": batch, "copy_reference": copy, "cases": cases},
    )  # fmt: skip
    print(f"results: {saved}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
