"""Refuse to start on a port somebody else listens on, instead of silently sharing it.

Granian binds every worker's socket with SO_REUSEPORT and has no option to turn that off, so
a second server on a taken port starts, reports success, and the kernel splits connections
between two unrelated stacks. A probe socket bound *without* SO_REUSEPORT fails with
EADDRINUSE while anyone listens on the address; with SO_REUSEADDR it is not fooled by
connections of an earlier run still in TIME_WAIT. The probe is closed before Granian binds,
so two servers started in the same instant could still both pass: it guards against the
usual case (a forgotten `make run`), not a race.
"""

from __future__ import annotations

import errno
import socket
import sys

from core.settings import env_name


class PortInUse(RuntimeError):
    """Another process listens on the address; the message says which variable to change."""


def ensure_port_free(host: str, port: int) -> None:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise PortInUse(
                f"port {port} on {host} is in use by another process; stop it, or set"
                f" {env_name('port')} to a free port (the server would otherwise share it"
                " through SO_REUSEPORT and get only some of the connections)"
            ) from None


def exit_if_taken(host: str, port: int, program: str) -> None:
    """For command line programs: a taken port ends them with status 1 and the reason."""
    try:
        ensure_port_free(host, port)
    except PortInUse as exc:
        print(f"{program}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
