"""`python -m flusher`: flush every shard until SIGTERM or SIGINT (``--drain``: until empty).

One worker per stream shard, all in this process; any number of such processes may run,
each under its own consumer name: the shards' consumer groups spread the entries over
them, and entries a dead one left pending are claimed by the others."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

import uvloop

from core import logs
from core.settings import Settings
from flusher.connections import open_flushers
from flusher.errors import StrandedEntries
from flusher.worker import Flusher

log = logging.getLogger("flusher")


async def serve(settings: Settings, *, drain: bool) -> int:
    flushers, close = await open_flushers(settings)
    try:
        if drain:
            count = sum([await flusher.drain() for flusher in flushers])
            log.info("drained %d entries", count)
            return 0
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()

        def stop() -> None:
            stopping.set()
            for flusher in flushers:
                flusher.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        log.info("flusher %s started on %d shard(s)", settings.consumer_name, len(flushers))
        task = asyncio.create_task(run_all(flushers))
        stopped = asyncio.create_task(stopping.wait())
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():  # run() only returns early by raising
            stopped.cancel()
            task.result()
            return 1
        # The batch in hand gets a grace period to commit; after that it stays pending
        # in Redis (not acknowledged) and is delivered again on the next start.
        done, _ = await asyncio.wait({task}, timeout=settings.shutdown_grace_s)
        if not done:
            log.warning(
                "batch not committed within %.1fs; leaving it pending", settings.shutdown_grace_s
            )
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        else:
            task.result()
        return 0
    finally:
        for flusher in flushers:
            log.info("flusher %s stopping: %s", flusher.name, flusher.summary())
        await close()


async def run_all(flushers: list[Flusher]) -> None:
    """Every shard's loop; one that fails stops the others, and the process exits non-zero."""
    tasks = [asyncio.create_task(flusher.run()) for flusher in flushers]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:  # the grace period ran out
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    for flusher in flushers:
        flusher.stop()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flusher", description=__doc__)
    parser.add_argument("--drain", action="store_true", help="flush what is there, then exit")
    args = parser.parse_args(argv)
    settings = Settings.for_command("flusher")
    logs.configure(settings.log_level)
    try:
        return uvloop.run(serve(settings, drain=args.drain))
    except StrandedEntries as exc:
        log.critical("%s", exc)
        logs.flush()
        return 2


if __name__ == "__main__":
    sys.exit(main())
