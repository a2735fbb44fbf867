"""`python -m gateway`: serve the ASGI app on Granian with uvloop, configured by Settings."""

from __future__ import annotations

import sys

from granian import Granian
from granian.constants import Interfaces, Loops
from granian.log import LogLevels

from core import logs
from core.settings import Settings
from gateway.port_guard import exit_if_taken


def main() -> int:
    settings = Settings.for_command("gateway")
    exit_if_taken(settings.host, settings.port, "gateway")
    Granian(
        "gateway.app:app",
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        workers=settings.workers,
        websockets=False,
        log_level=LogLevels(settings.log_level.lower()),
        log_access=settings.access_log,
        log_dictconfig=logs.granian_dictconfig(settings.log_level),
    ).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
