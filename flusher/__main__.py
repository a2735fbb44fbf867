"""`python -m flusher`: run one flusher until SIGTERM or SIGINT (``--drain``: until empty)."""

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
from flusher.connections import open_flusher

log = logging.getLogger("flusher")


async def serve(settings: Settings, *, drain: bool) -> int:
    flusher, close = await open_flusher(settings)
    try:
        if drain:
            count = await flusher.drain()
            log.info("drained %d entries", count)
            return 0
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, flusher.stop)
        log.info("flusher %s started", flusher.reader.consumer)
        task = asyncio.create_task(flusher.run())
        stop = asyncio.create_task(flusher.stopped())
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():  # run() only returns early by raising
            stop.cancel()
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
        log.info("flusher stopping: %s", flusher.summary())
        await close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flusher", description=__doc__)
    parser.add_argument("--drain", action="store_true", help="flush what is there, then exit")
    args = parser.parse_args(argv)
    settings = Settings.for_command("flusher")
    logs.configure(settings.log_level)
    return uvloop.run(serve(settings, drain=args.drain))


if __name__ == "__main__":
    sys.exit(main())
