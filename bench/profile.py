"""Where the gateway's or the flusher's CPU goes: py-spy on the running process under load.

    .venv/bin/python -m bench.profile [--batch] [--flusher] [--seconds 8]

Starts a throwaway stack and the gateway, loads it with wrk (single purchases, c64, or with
``--batch`` POST /purchases of 1,000 items, c8), samples the Granian worker with
``py-spy record`` (native frames off, idle frames off) and prints the top functions by own
samples and by inclusive samples, as shares of all samples. With ``--flusher`` the flusher
is sampled instead while it drains what the gateway took, or with ``--rate`` while k6
sends that many purchases per second. The collapsed stacks are kept in
bench/results/profile-*.txt (flamegraph.pl or speedscope read them).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from bench.harness import serve_empty_asgi, serve_gateway, throwaway_stack, wrk_missing
from bench.suite import k6_run
from bench.wrk import run_wrk
from devstack.processes import stop_process

HERE = Path(__file__).resolve().parent
PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")


def record(pid: int, seconds: int, out: Path) -> None:
    subprocess.run(
        [PY_SPY, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "250",
         "--format", "raw", "--output", str(out), "--nonblocking"],
        check=True, capture_output=True,
    )  # fmt: skip


def summarize(collapsed: Path, top: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]  # fmt: skip
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total} samples", "own:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines.append("inclusive:")
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


def worker_threads(pid: int) -> tuple[int, dict[int, float]]:
    """The Granian worker's pid and the CPU seconds of each of its threads."""
    worker = psutil.Process(pid).children(recursive=True)[-1]
    return worker.pid, {t.id: t.user_time + t.system_time for t in worker.threads()}


def by_thread(seconds: int) -> int:
    """The main thread runs the event loop and every line of Python; Granian's own threads
    parse HTTP and move bytes. Which of them does the gateway's extra CPU land on?"""
    with throwaway_stack(
        "threads", MONOKERA_BACKLOG_MAX_LENGTH="100000000", MONOKERA_BACKLOG_MAX_AGE_S="3600"
    ) as (_, env):
        for _ in range(2):
            for name, start in (("minimal app", serve_empty_asgi), ("gateway", serve_gateway)):
                proc, base = start(env)
                main, before = worker_threads(proc.pid)
                result = run_wrk(f"{base}/purchase", seconds, 64, HERE / "purchase.lua")
                _, after = worker_threads(proc.pid)
                stop_process(proc)
                n = max(1, int(result["requests"] - result["non_2xx"]))
                spent = {t: after[t] - before.get(t, 0.0) for t in after}
                others = sum(v for t, v in spent.items() if t != main)
                print(f"{name:<12} {result['rate']:>7.0f}/s  main thread {1e6 * spent[main] / n:5.1f}"
                      f" µs/request, Granian's threads {1e6 * others / n:5.1f}")  # fmt: skip
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", action="store_true")
    parser.add_argument("--flusher", action="store_true")
    parser.add_argument("--minimal", action="store_true", help="the minimal ASGI app instead")
    parser.add_argument(
        "--threads", action="store_true",
        help="no sampling: CPU per request of the worker's main thread and of Granian's"
        " threads, minimal app and gateway, two rounds",
    )  # fmt: skip
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument(
        "--rate", type=int, default=0, help="with --flusher: k6 at this rate while sampling"
    )
    opts = parser.parse_args()
    if wrk_missing():
        return 2
    if opts.threads:
        return by_thread(opts.seconds)
    out = HERE / "results" / f"profile-{time.strftime('%Y%m%dT%H%M%S')}.txt"
    out.parent.mkdir(exist_ok=True)
    with throwaway_stack(
        "profile", MONOKERA_BACKLOG_MAX_LENGTH="100000000", MONOKERA_BACKLOG_MAX_AGE_S="3600"
    ) as (_, env):
        gateway, base = serve_empty_asgi(env) if opts.minimal else serve_gateway(env)
        try:
            if opts.batch:
                load = (f"{base}/purchases", 8, HERE / "batch.lua")
            else:
                load = (f"{base}/purchase", 64, HERE / "purchase.lua")
            worker = psutil.Process(gateway.pid).children(recursive=True)[-1].pid
            target = worker
            seconds = opts.seconds
            if opts.flusher:
                if not opts.rate:
                    run_wrk(load[0], opts.seconds * 2, load[1], load[2])
                flusher = subprocess.Popen([sys.executable, "-m", "flusher"], env=env)
                time.sleep(1.5)
                target = flusher.pid
            sampler = threading.Thread(target=record, args=(target, seconds, out))
            sampler.start()
            if opts.rate:
                k6_run("constant.js", base, {"RATE": str(opts.rate), "DURATION": f"{seconds}s"})
            elif not opts.flusher:
                run_wrk(load[0], seconds, load[1], load[2])
            sampler.join()
            if opts.flusher:
                stop_process(flusher)
        finally:
            stop_process(gateway)
    print(summarize(out))
    print(f"collapsed stacks: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
