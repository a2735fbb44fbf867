"""`make run`: the whole stack in the foreground, stopped cleanly by Ctrl-C.

Starts embedded Redis and PostgreSQL (unless REDIS_URL / DATABASE_URL are set), applies the
migrations, then the gateway (Granian) and the flusher as child processes. On SIGINT or
SIGTERM it stops them in dependency order: gateway first (no new purchases), flusher next
(its batch in hand commits), servers last. Data stays in the data folder for the next run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.settings import Settings, SettingsError, env_name, redact
from devstack.processes import port_accepts, stop_process, wait_until
from devstack.stack import EmbeddedStack, migrate_url

DEFAULT_REDIS_PORT = 6390
DEFAULT_PG_PORT = 5440


def gateway_command(settings: Settings) -> list[str]:
    cmd = [
        sys.executable, "-m", "granian",
        "--interface", "asgi",
        "--loop", "uvloop",
        "--host", settings.host,
        "--port", str(settings.port),
        "--workers", str(settings.workers),
        "--no-ws",
        "--log-level", settings.log_level.lower(),
    ]  # fmt: skip
    if settings.access_log:
        cmd.append("--access-log")
    return [*cmd, "gateway.app:app"]


def flusher_command() -> list[str]:
    return [sys.executable, "-m", "flusher"]


def main() -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"make run: configuration error: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    env = dict(os.environ)
    stack: EmbeddedStack | None = None
    embedded = env_name("redis_url") not in env or env_name("database_url") not in env
    if embedded:
        stack = EmbeddedStack(
            Path(settings.data_dir),
            redis_port=DEFAULT_REDIS_PORT,
            pg_port=DEFAULT_PG_PORT,
            appendfsync=settings.redis_appendfsync,
        )
        stack.start()
        env.setdefault("REDIS_URL", stack.redis_url)
        env.setdefault("DATABASE_URL", stack.database_url)
    else:
        asyncio.run(migrate_url(env["DATABASE_URL"]))
    settings = Settings.from_env(env)
    env.update(settings.as_env())

    children: dict[str, subprocess.Popen[bytes]] = {}
    stop_requested = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        children["gateway"] = subprocess.Popen(gateway_command(settings), env=env)
        children["flusher"] = subprocess.Popen(flusher_command(), env=env)
        wait_until(lambda: port_accepts(settings.port), 30, "gateway listening")
        print(
            f"\nMonokera is up in {time.monotonic() - started:.1f}s\n"
            f"  gateway       http://{settings.host}:{settings.port}  (POST /purchase)\n"
            f"  REDIS_URL     {redact(settings.redis_url)}\n"
            f"  DATABASE_URL  {redact(settings.database_url)}\n"
            f"  data          {Path(settings.data_dir).resolve() if embedded else '(external servers)'}\n"
            "Ctrl-C stops everything.\n",
            flush=True,
        )
        while not stop_requested:
            for name, child in children.items():
                if child.poll() is not None:
                    print(f"make run: {name} exited with {child.returncode}", file=sys.stderr)
                    return 1
            time.sleep(0.2)
        return 0
    finally:
        print("\nstopping: gateway, flusher, servers", flush=True)
        for child in children.values():
            stop_process(child, signal.SIGTERM, timeout=settings.shutdown_grace_s + 5)
        if stack is not None:
            stack.stop()


if __name__ == "__main__":
    sys.exit(main())
