"""`make run`: the whole stack in the foreground, supervised, stopped cleanly by Ctrl-C.

Starts embedded Redis and PostgreSQL (unless REDIS_URL / DATABASE_URL are set), applies the
migrations, then the gateway (Granian) and the flusher as child processes. A child that dies
is restarted with backoff while the others keep serving (``devstack.supervisor``); its
restarts show in the gateway's /readyz and /metrics. On SIGINT, SIGTERM or SIGHUP (the
terminal closed: the children, in sessions of their own, would not hear it) it stops them
in dependency order: gateway first (no new purchases), flusher next (its batch in hand
commits), servers last. Data stays in the data folder for the next run, which is locked
against a second run, as the gateway's port is against a second server; every child holds
that lock too (``devstack.data_lock``), so it outlives a runner killed outright.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from core.migrate import migrate_url
from core.port_guard import PortInUse, ensure_port_free
from core.settings import Settings, env_name, redact
from devstack.data_lock import DataDirInUse, DataLock
from devstack.liveness import Liveness
from devstack.processes import port_accepts
from devstack.stack import EmbeddedStack
from devstack.supervisor import (
    RestartPolicy,
    Server,
    StatusPublisher,
    Supervisor,
    process_child,
    say,
    server_child,
)

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

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, request_stop)

    lock = DataLock(Path(settings.data_dir).resolve())
    try:
        lock.acquire()
        ensure_port_free(settings.host, settings.port)
    except (DataDirInUse, PortInUse) as exc:
        lock.release()
        print(f"make run: {exc}", file=sys.stderr)
        return 1

    env = dict(os.environ)
    embed_redis = env_name("redis_url") not in env
    embed_postgres = env_name("database_url") not in env
    stack = EmbeddedStack(
        Path(settings.data_dir),
        redis_port=DEFAULT_REDIS_PORT,
        pg_port=DEFAULT_PG_PORT,
        appendfsync=settings.redis_appendfsync,
        redis_version=settings.embedded_redis,
        pass_fds=(lock.fd,),
    )
    supervisor: Supervisor | None = None
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

        # Stop order: gateway (no new purchases), flusher (its batch commits), servers.
        stop_timeout = settings.shutdown_grace_s + 5
        heartbeats = stack.data_dir / "heartbeats"
        expected = {"gateway": settings.workers, "flusher": settings.stream_shards}
        children = [
            process_child(
                name,
                command,
                {**env, env_name("heartbeat_dir"): str(heartbeats / name)},
                stop_timeout,
                (lock.fd,),
                Liveness(heartbeats / name, expected[name], settings.liveness_timeout_s),
            )
            for name, command in (("gateway", gateway_command()), ("flusher", flusher_command()))
        ]
        servers: dict[str, Server] = {"postgres": stack.postgres} if embed_postgres else {}
        if embed_redis:
            servers["redis"] = stack.redis
        for name, server in servers.items():  # already running: watched from now on
            assert server.proc is not None
            children.append(server_child(name, server).adopt(server.proc))
        supervisor = Supervisor(
            children,
            RestartPolicy.from_settings(settings),
            StatusPublisher.for_settings(settings),
        )
        for child in children[:2]:
            child.launch()
        deadline = time.monotonic() + 60
        while not port_accepts(settings.port) and not stop_requested:
            if time.monotonic() > deadline:
                raise TimeoutError("the gateway did not listen within 60 s; see its output above")
            supervisor.tick()
            time.sleep(0.05)
        say(
            f"\nMonokera is up in {time.monotonic() - started:.1f}s\n"
            f"  gateway       http://{settings.host}:{settings.port}  (POST /purchase)\n"
            f"  REDIS_URL     {redact(settings.redis_url)}{embedded_note(embed_redis)}\n"
            f"  DATABASE_URL  {redact(settings.database_url)}{embedded_note(embed_postgres)}\n"
            f"  data          {stack.data_dir}\n"
            "A child that exits is restarted. Ctrl-C stops everything.\n"
        )
        while not stop_requested:
            supervisor.tick()
            time.sleep(0.1)
        return 0
    finally:
        say("\nstopping: gateway, flusher, servers")
        try:
            if supervisor is not None:
                supervisor.stop_all()
        finally:
            try:
                stack.stop()
            finally:
                lock.release()  # the last holder: every child is gone by now
        say("stopped; data kept for the next run")


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
