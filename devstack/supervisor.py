"""`make run`'s restart policy: a child that dies is restarted, with backoff, logged, counted.

A stack where one crashed flusher stops everything is a poor stand-in for production, where
the orchestrator restarts a task while the others keep serving. Here each child (gateway,
flusher, the embedded servers) is watched on its own: when it exits without being asked to,
one line says so, it is started again after a delay that doubles from ``backoff_s`` up to
``backoff_max_s``, and the delay resets once a run lasted ``stable_after_s``. Several exits
in a short window get a line of their own naming the crash loop, so a broken child is never
restarted in silence. Only ``stop_all`` (Ctrl-C, SIGTERM) stops children for good, in the
order given. Counts and states are published for the gateway's /readyz and /metrics;
while Redis is down they stay in memory and are published once it answers.

A child that does not exit but stops making progress (SIGSTOP, a deadlock, a syscall that
never returns) is caught by its heartbeat (``devstack.liveness``): one line says it is hung
and which heartbeat is missing since when, its whole session is SIGKILLed (a stopped process
leaves a SIGTERM pending until it is continued) and it is restarted like any exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from redis import Redis

from core.redis_clients import REDIS_UNAVAILABLE, sync_redis_client
from core.settings import Settings
from core.supervisor_status import ChildStatus, State, publish_status
from devstack.liveness import Liveness
from devstack.processes import stop_process

Start = Callable[[], "subprocess.Popen[bytes]"]
Stop = Callable[["subprocess.Popen[bytes]"], None]


@dataclass(frozen=True)
class CrashLoop:
    """``exits`` exits within ``window_s`` seconds is a crash loop, and is said so."""

    exits: int = 5
    window_s: float = 60.0


@dataclass(frozen=True)
class RestartPolicy:
    backoff_s: float = 0.5
    backoff_max_s: float = 10.0
    stable_after_s: float = 30.0
    crash_loop: CrashLoop = field(default_factory=CrashLoop)

    @classmethod
    def from_settings(cls, settings: Settings) -> RestartPolicy:
        return cls(
            backoff_s=settings.restart_backoff_s,
            backoff_max_s=settings.restart_backoff_max_s,
            stable_after_s=settings.restart_stable_after_s,
        )

    def delay(self, failures: int) -> float:
        """Delay before the restart after ``failures`` short runs in a row (1, 2, ...)."""
        return float(min(self.backoff_s * 2 ** (failures - 1), self.backoff_max_s))


class Child:
    """One supervised process: how to start and stop it, and what happened to it so far."""

    def __init__(
        self, name: str, start: Start, stop: Stop, liveness: Liveness | None = None
    ) -> None:
        self.name = name
        self._start = start
        self._stop = stop
        self.liveness = liveness
        self.proc: subprocess.Popen[bytes] | None = None
        self.state: State = "stopped"
        self.restarts = 0
        self.last_exit_code: int | None = None
        self.started_at = 0.0
        self.failures = 0
        """Runs in a row shorter than the policy's ``stable_after_s``."""
        self.restart_at: float | None = None
        self.exits: deque[float] = deque()
        self.delays: list[float] = []
        """Every restart delay chosen so far, oldest first."""
        self.crash_looping = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def launch(self) -> None:
        self.proc = None
        if self.liveness is not None:
            self.liveness.reset()
        self.proc = self._start()
        self.started_at = time.monotonic()
        self.state = "running"

    def adopt(self, proc: subprocess.Popen[bytes]) -> Child:
        """Watch a process started elsewhere (the embedded servers) as if launched here."""
        self.proc = proc
        self.started_at = time.monotonic()
        self.state = "running"
        return self

    def stop(self) -> None:
        """Stop it for good; never raises. A child in its restart backoff has no process
        (the one that exited was reaped, its pid maybe reused), so nothing is signalled.
        A stop that fails (a timeout, a server that would not go) ends in a SIGKILL of the
        whole session, so ``stop_all`` always goes on to the next child."""
        self.state = "stopping"
        self.restart_at = None
        if self.proc is not None:
            try:
                self._stop(self.proc)
            except Exception as exc:  # whatever it was: kill it, go on to the next
                say(
                    f"make run: stopping {self.name} failed ({type(exc).__name__}: {exc});"
                    " killing it",
                    error=True,
                )
                self.kill()
            self.clean_up()
            self.reaped()
        self.state = "stopped"

    def kill(self) -> None:
        """SIGKILL its whole session and reap it: also what a stopped (SIGSTOP) process,
        which leaves a SIGTERM pending until continued, cannot ignore."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)

    def reaped(self) -> None:
        """Forget the process once it is reaped and its session cleaned up: from then on
        its pid may belong to anybody, and nothing may signal it again."""
        if self.proc is not None and self.proc.poll() is not None:
            self.proc = None

    def clean_up(self) -> None:
        """Kill what is left of its session: a Granian main process that died leaves its
        workers serving, orphaned, and a SIGKILLed postmaster its backends."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.02)

    def status(self) -> ChildStatus:
        return ChildStatus(
            state=self.state,
            pid=self.pid if self.state == "running" else None,
            restarts=self.restarts,
            last_exit_code=self.last_exit_code,
            crash_looping=self.crash_looping,
        )


def process_child(
    name: str,
    command: Sequence[str],
    env: Mapping[str, str],
    stop_timeout_s: float = 30,
    pass_fds: Sequence[int] = (),
    liveness: Liveness | None = None,
) -> Child:
    """A child that is a command: its own session (a Ctrl-C in the terminal reaches the runner
    only, which then stops things in order), SIGTERM to stop, SIGKILL after the timeout.
    ``pass_fds`` it inherits (the data folder's lock); ``liveness`` is its heartbeat."""

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            list(command), env=dict(env), start_new_session=True, pass_fds=tuple(pass_fds)
        )

    def stop(proc: subprocess.Popen[bytes]) -> None:
        stop_process(proc, signal.SIGTERM, timeout=stop_timeout_s)

    return Child(name, start, stop, liveness)


class Server(Protocol):
    """An embedded server (``RedisServer``, ``PostgresServer``): start waits until it is ready."""

    proc: subprocess.Popen[bytes] | None

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def kill(self) -> None: ...


def server_child(name: str, server: Server) -> Child:
    """A child that is an embedded server, started and stopped its own way (Redis fsyncs its
    AOF on SIGTERM, PostgreSQL rolls back on SIGINT); one that fails to start is killed."""

    def start() -> subprocess.Popen[bytes]:
        try:
            server.start()
        except BaseException:
            server.kill()
            raise
        assert server.proc is not None
        return server.proc

    return Child(name, start, lambda proc: server.stop())


class StatusPublisher:
    """Writes the children's status to Redis at most every ``interval_s``; a failure (Redis
    down or restarting) is retried on the next tick, the counts are kept here meanwhile."""

    def __init__(self, redis: Redis, interval_s: float = 1.0) -> None:
        self.redis = redis
        self.interval_s = interval_s
        self._published_at = 0.0
        self._last: dict[str, ChildStatus] | None = None

    @classmethod
    def for_settings(cls, settings: Settings) -> StatusPublisher:
        return cls(sync_redis_client(settings, timeout_s=0.5))

    def publish(self, children: dict[str, ChildStatus]) -> None:
        now = time.monotonic()
        if children == self._last and now - self._published_at < self.interval_s:
            return
        try:
            publish_status(self.redis, children)
        except REDIS_UNAVAILABLE:
            self._last = None  # retry on the next tick
            self._published_at = now
            return
        self._last, self._published_at = children, now

    def close(self) -> None:
        self.redis.close()


class Supervisor:
    def __init__(
        self,
        children: Sequence[Child],
        policy: RestartPolicy,
        publisher: StatusPublisher | None = None,
    ) -> None:
        self.children = list(children)
        self.policy = policy
        self.publisher = publisher

    def start_all(self) -> None:
        for child in self.children:
            child.launch()

    def tick(self) -> None:
        """Notice exits, start what is due, publish; call it a few times a second."""
        for child in self.children:
            now = time.monotonic()
            if child.state == "running":
                assert child.proc is not None
                if child.proc.poll() is not None:
                    self._exited(child, child.proc.returncode, now)
                elif child.liveness is not None and (
                    reason := child.liveness.hung(now - child.started_at)
                ):
                    self._hung(child, reason, now)
                elif child.failures and now - child.started_at >= self.policy.stable_after_s:
                    self._stable(child)
            elif child.state == "restarting" and now >= (child.restart_at or 0):
                self._restart(child)
        self.publish()

    def publish(self) -> None:
        if self.publisher is not None:
            self.publisher.publish({c.name: c.status() for c in self.children})

    def stop_all(self) -> None:
        """Stop every child for good, in the order they were given, one line each; a child
        that fails to stop is killed and the others are still stopped (``Child.stop``)."""
        try:
            for child in self.children:
                child.stop()
                say(f"make run: stopped {child.name}")
        finally:
            if self.publisher is not None:
                self.publisher.close()

    def _stable(self, child: Child) -> None:
        child.failures = 0
        if child.crash_looping:
            child.crash_looping = False
            say(
                f"make run: {child.name} has been up {self.policy.stable_after_s:g} s; stable again"
            )

    def _hung(self, child: Child, reason: str, now: float) -> None:
        say(f"make run: {child.name} hung: {reason}; killing it", error=True)
        child.kill()
        assert child.proc is not None
        self._exited(child, child.proc.poll(), now)

    def _exited(self, child: Child, code: int | None, now: float) -> None:
        child.clean_up()
        child.reaped()
        child.last_exit_code = code
        uptime = now - child.started_at
        child.failures = 1 if uptime >= self.policy.stable_after_s else child.failures + 1
        loop = self.policy.crash_loop
        child.exits.append(now)
        while child.exits and now - child.exits[0] > loop.window_s:
            child.exits.popleft()
        delay = self.policy.delay(child.failures)
        child.delays.append(delay)
        child.state = "restarting"
        child.restart_at = now + delay
        say(
            f"make run: {child.name} exited with {code} after {uptime:.1f} s;"
            f" restarting it in {delay:g} s",
            error=True,
        )
        if len(child.exits) >= loop.exits and not child.crash_looping:
            child.crash_looping = True
            say(
                f"make run: {child.name} crashed {len(child.exits)} times in"
                f" {loop.window_s:g} s; last exit code {code}; see its output above;"
                f" retrying every {self.policy.backoff_max_s:g} s at most",
                error=True,
            )
        self.publish()

    def _restart(self, child: Child) -> None:
        child.restarts += 1
        child.restart_at = None
        say(f"make run: restarting {child.name} (restart {child.restarts})", error=True)
        try:
            child.launch()
        except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as exc:
            say(f"make run: {child.name} did not start: {exc}", error=True)
            code = child.proc.poll() if child.proc is not None else None
            if child.proc is not None and code is None:
                child.proc.kill()
                code = child.proc.wait()
            self._exited(child, code, time.monotonic())
        else:
            say(f"make run: {child.name} running again (pid {child.pid})", error=True)


def say(text: str, *, error: bool = False) -> None:
    """Print, unless the terminal or pipe is gone (Ctrl-C also kills a `| tee`)."""
    with contextlib.suppress(OSError):
        print(text, file=sys.stderr if error else sys.stdout, flush=True)
