"""`make run`: the whole stack in the foreground, stopped cleanly by Ctrl-C.

Starts embedded Redis and PostgreSQL (unless REDIS_URL / DATABASE_URL are set), applies the
migrations, then the gateway (Granian) and the flusher as child processes. On SIGINT or
SIGTERM it stops them in dependency order: gateway first (no new purchases), flusher next
(its batch in hand commits), servers last. Data stays in the data folder for the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.settings import Settings, env_name, redact
from devstack.processes import port_accepts, stop_process, wait_until
from devstack.stack import EmbeddedStack, migrate_url

DEFAULT_REDIS_PORT = 6390
DEFAULT_PG_PORT = 5440


def gateway_command() -> list[str]:
    return [sys.executable, "-m", "gateway"]


def flusher_command() -> list[str]:
    return [sys.executable, "-m", "flusher"]


def main() -> int:
    settings = Settings.for_command("make run")
    started = time.monotonic()
    stop_requested = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    env = dict(os.environ)
    embed_redis = env_name("redis_url") not in env
    embed_postgres = env_name("database_url") not in env
    stack = EmbeddedStack(
        Path(settings.data_dir),
        redis_port=DEFAULT_REDIS_PORT,
        pg_port=DEFAULT_PG_PORT,
        appendfsync=settings.redis_appendfsync,
        redis_version=settings.embedded_redis,
    )
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        stack.start(redis=embed_redis, postgres=embed_postgres)
        if embed_redis:
            env["REDIS_URL"] = stack.redis_url
        if embed_postgres:
            env["DATABASE_URL"] = stack.database_url
        else:
            asyncio.run(migrate_url(env["DATABASE_URL"]))
        settings = Settings.from_env(env)
        env.update(settings.as_env())
        write_stack_env(
            stack.data_dir, embed_redis and stack.redis_url, embed_postgres and stack.database_url
        )

        # Own sessions: a Ctrl-C reaches this runner only, which then stops things in order.
        children["gateway"] = subprocess.Popen(gateway_command(), env=env, start_new_session=True)
        children["flusher"] = subprocess.Popen(flusher_command(), env=env, start_new_session=True)
        wait_until(lambda: port_accepts(settings.port), 30, "gateway listening")
        say(
            f"\nMonokera is up in {time.monotonic() - started:.1f}s\n"
            f"  gateway       http://{settings.host}:{settings.port}  (POST /purchase)\n"
            f"  REDIS_URL     {redact(settings.redis_url)}{embedded_note(embed_redis)}\n"
            f"  DATABASE_URL  {redact(settings.database_url)}{embedded_note(embed_postgres)}\n"
            f"  data          {stack.data_dir}\n"
            "Ctrl-C stops everything.\n"
        )
        while not stop_requested:
            for name, child in children.items():
                if child.poll() is not None:
                    print(f"make run: {name} exited with {child.returncode}", file=sys.stderr)
                    return 1
            time.sleep(0.2)
        return 0
    finally:
        say("\nstopping: gateway, flusher, servers")
        for child in children.values():
            stop_process(child, signal.SIGTERM, timeout=settings.shutdown_grace_s + 5)
        stack.stop()
        say("stopped; data kept for the next run")


def say(text: str) -> None:
    """Print, unless the terminal or pipe is gone (Ctrl-C also kills a `| tee`)."""
    with contextlib.suppress(OSError):
        print(text, flush=True)


def write_stack_env(data_dir: Path, redis_url: str | bool, database_url: str | bool) -> None:
    """Where the embedded servers listen, for `make reconcile` and friends to pick up.

    Only embedded URLs are written: URLs given from outside may carry passwords.
    """
    lines = []
    if redis_url:
        lines.append(f"REDIS_URL={redis_url}")
    if database_url:
        lines.append(f"DATABASE_URL={database_url}")
    (data_dir / "stack.env").write_text("".join(f"{line}\n" for line in lines))


def embedded_note(embedded: bool) -> str:
    return "  (embedded)" if embedded else "  (external, from the environment)"


if __name__ == "__main__":
    sys.exit(main())
