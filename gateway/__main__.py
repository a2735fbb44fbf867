"""`python -m gateway`: serve the ASGI app on Granian with uvloop, configured by Settings.

Slow-client limits: HTTP/1 only, because in Granian's auto mode a connection that sends
nothing waits for its protocol sniff with no timeout and holds a connection slot forever;
in HTTP/1 mode hyper's header-read timeout runs from the moment a connection (or a
keep-alive connection between requests) waits for headers, so silent, idle and
mid-header connections are all closed after ``header_timeout_s``. The body deadline is
the app's (``gateway.http.deadlines``).

Workers share a folder for their counters (``gateway.telemetry.worker_board``): unless
MONOKERA_METRICS_DIR names one, a fresh one is made here, handed down to the workers in
the environment, and removed when the server stops.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile

from granian import Granian
from granian.constants import HTTPModes, Interfaces, Loops
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server import MPServer, MTServer

from core import logs
from core.port_guard import exit_if_taken
from core.settings import Settings


def main() -> int:
    settings = Settings.for_command("gateway")
    exit_if_taken(settings.host, settings.port, "gateway")
    made = None
    if not settings.metrics_dir:
        made = tempfile.mkdtemp(prefix="monokera-metrics-")
        os.environ["MONOKERA_METRICS_DIR"] = made
    try:
        server("gateway.app:app", settings).serve()
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
    return 0


def server(target: str, settings: Settings) -> MPServer | MTServer:
    """Granian as the gateway runs it; the benchmarks serve their minimal app through this
    too, so both run with the same options."""
    return Granian(
        target,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        workers=settings.workers,
        websockets=False,
        http=HTTPModes.http1,
        http1_settings=HTTP1Settings(header_read_timeout=round(settings.header_timeout_s * 1000)),
        backpressure=settings.connections_per_worker,
        # A worker still busy past the grace period is killed, not waited for forever.
        workers_kill_timeout=max(1, math.ceil(settings.shutdown_grace_s)),
        log_level=LogLevels(settings.log_level.lower()),
        log_access=settings.access_log,
        log_dictconfig=logs.granian_dictconfig(settings.log_level),
    )


if __name__ == "__main__":
    sys.exit(main())
