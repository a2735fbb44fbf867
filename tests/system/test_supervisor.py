"""`make run` as a supervisor: real runner, real stack, real SIGKILLs.

Each test starts `python -m devstack.run` with a data folder and ports of its own, keeps
purchases flowing, kills a child, and checks that the runner restarted it (new pid, counted
in /readyz and /metrics), that every acknowledged purchase reached PostgreSQL exactly once,
and that SIGTERM then stops everything in order with no process left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from devstack.data_lock import DataDirInUse, DataLock
from devstack.processes import free_port
from devstack.supervisor import Child, CrashLoop, RestartPolicy, Supervisor, process_child
from tests.helpers import ROOT, HttpClient, purchase
from tests.reconcile import assert_exactly_once, matrix_row
from tests.system.test_faults import Load
from tests.system.test_port_guard import run_to_exit, runner_env


class Runner:
    """`python -m devstack.run` in its own session, its output in a file."""

    def __init__(self, data_dir: Path, log: Path, **extra_env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        env = runner_env(data_dir, self.port)
        env.update(MONOKERA_CONSUMER="supervised", MONOKERA_SHUTDOWN_GRACE_S="5", **extra_env)
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devstack.run"],
            env=env,
            cwd=ROOT,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while "Monokera is up" not in self.output():
            assert self.proc.poll() is None, f"runner exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"runner not up:\n{self.output()}"
            await asyncio.sleep(0.1)

    @property
    def database_url(self) -> str:
        for line in (self.data_dir / "stack.env").read_text().splitlines():
            if line.startswith("DATABASE_URL="):
                return line.partition("=")[2]
        raise AssertionError("no DATABASE_URL in stack.env")

    def server_pids(self) -> list[int]:
        """redis-server and the postmaster, read from their own pid files."""
        pids = [int((self.data_dir / "postgres" / "postmaster.pid").read_text().split()[0])]
        out = subprocess.run(
            ["pgrep", "-f", f"redis-server.*--dir {self.data_dir}/redis"],
            capture_output=True,
            text=True,
            check=False,
        )
        pids += [int(p) for p in out.stdout.split()]
        return pids

    def stop(self) -> int:
        """SIGTERM, as `docker stop` or Ctrl-C would; SIGKILL the whole session if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._out.close()
        return self.proc.returncode


@contextlib.asynccontextmanager
async def running(folder: Path, **extra_env: str) -> AsyncIterator[Runner]:
    started = Runner(folder / "data", folder / "run.log", **extra_env)
    try:
        await started.wait_up()
        yield started
    finally:
        started.stop()


@pytest.fixture
async def runner(workdir: Path, request: pytest.FixtureRequest) -> AsyncIterator[Runner]:
    """A runner with a folder of its own under the session's folder (made traversable for
    PostgreSQL's user), not pytest's tmp_path, which other pytest sessions may prune."""
    async with running(workdir / request.node.name) as started:
        yield started


LIVENESS_TIMEOUT_S = 10
"""Short enough for a test, long enough that a busy machine never looks hung."""


@pytest.fixture
async def watched_runner(workdir: Path, request: pytest.FixtureRequest) -> AsyncIterator[Runner]:
    """A runner with a short liveness timeout and two gateway workers (one to freeze)."""
    async with running(
        workdir / request.node.name,
        MONOKERA_LIVENESS_TIMEOUT_S=str(LIVENESS_TIMEOUT_S),
        MONOKERA_WORKERS="2",
    ) as started:
        yield started


async def supervised(client: HttpClient) -> dict[str, Any]:
    """What /readyz reports about the supervised processes."""
    reply = await client.get("/readyz")
    report: dict[str, Any] = reply.json().get("supervisor", {})
    return report


async def wait_for(
    check: Callable[[], Any], what: str, timeout: float = 40, interval: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = await check()
        except OSError:
            value = None
        except Exception as exc:  # connection refused mid-restart and the like
            if "Cannot connect" not in str(exc) and "Server disconnected" not in str(exc):
                raise
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        await asyncio.sleep(interval)


def children_of(pid: int) -> list[int]:
    with contextlib.suppress(FileNotFoundError):
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


async def restarted(
    runner: Runner, client: HttpClient, name: str, old_pid: int, restarts: int
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        child = (await supervised(client)).get(name)
        ok = child and child["pid"] != old_pid and child["restarts"] >= restarts
        return child if ok and child["state"] == "running" else None

    try:
        found: dict[str, Any] = await wait_for(check, f"{name} restarted")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; runner output:\n{runner.output()[-5000:]}") from None
    return found


async def flushed_after(runner: Runner, client: HttpClient, load: Load, killed_at: float) -> float:
    """Seconds from ``killed_at`` until a purchase sent now is in PostgreSQL."""
    tx = f"{load.prefix}-probe"
    assert (await client.post("/purchase", json=purchase(tx))).status_code == 200
    load.acknowledged.add(tx)
    conn = await asyncpg.connect(runner.database_url)
    try:
        query = "SELECT count(*) FROM transactions WHERE transaction_id = $1"
        deadline = time.monotonic() + 40
        while not await conn.fetchval(query, tx):
            assert time.monotonic() < deadline, "the restarted flusher wrote nothing"
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    return time.monotonic() - killed_at


async def stored_exactly_once(runner: Runner, load: Load, timeout: float = 60) -> int:
    """Every acknowledged purchase in PostgreSQL once, both legs; returns how many are stored."""
    conn = await asyncpg.connect(runner.database_url)
    try:
        # Counted by id, not in total: purchases whose answer was lost (a worker killed
        # after its XADD) are stored too, and would make a total reach the count early.
        acknowledged = sorted(load.acknowledged)
        query = "SELECT count(*) FROM transactions WHERE transaction_id = ANY($1::text[])"
        deadline = time.monotonic() + timeout
        while await conn.fetchval(query, acknowledged) < len(acknowledged):
            assert time.monotonic() < deadline, "acknowledged purchases not all in PostgreSQL"
            await asyncio.sleep(0.1)
        await assert_exactly_once(conn, load.acknowledged, load.unanswered)
        count: int = await conn.fetchval("SELECT count(*) FROM transactions")
        assert await conn.fetchval("SELECT count(*) FROM duplicate_entries") == 0
        return count
    finally:
        await conn.close()


def assert_stops_in_order_leaving_nothing(runner: Runner, pids: list[int]) -> None:
    assert runner.stop() == 0, runner.output()
    out = runner.output()
    order = [
        out.find(f"make run: stopped {name}")
        for name in ("gateway", "flusher", "postgres", "redis")
    ]
    assert -1 not in order and order == sorted(order), out[-3000:]
    left = [pid for pid in pids if alive(pid)]
    assert not left, f"still running after the runner stopped: {left}"


async def kill_and_recover(
    runner: Runner, name: str, kill: Callable[[dict[str, Any]], None], fault: str
) -> None:
    client = HttpClient(runner.url)
    load = Load(runner.url, name, concurrency=4, pause_s=0.005).start()
    try:
        await load.wait_for(200)
        before = (await supervised(client))[name]
        assert before["state"] == "running" and before["restarts"] == 0
        pids = [before["pid"], *children_of(before["pid"]), *runner.server_pids()]
        load.mark_fault()
        killed_at = time.monotonic()
        kill(before)
        after = await restarted(runner, client, name, before["pid"], 1)
        if name == "gateway":  # serving again: a purchase sent after the kill got a 200
            deadline = time.monotonic() + 40
            while load.first_ok_after is None:
                assert time.monotonic() < deadline, "no 200 within 40 s of the kill"
                await asyncio.sleep(0.05)
            recovery = load.first_ok_after
        else:  # serving again: a purchase acknowledged after the restart is in PostgreSQL
            recovery = await flushed_after(runner, client, load, killed_at)
        seen = len(load.acknowledged)
        await load.wait_for(seen + 200)
        metrics = (await client.get("/metrics")).text
        assert f'monokera_supervisor_restarts_total{{process="{name}"}} 1' in metrics
        assert f'monokera_supervisor_up{{process="{name}"}} 1' in metrics
        pids += [after["pid"], *children_of(after["pid"])]
    finally:
        await load.stop()
        await client.close()
    stored = await stored_exactly_once(runner, load)
    assert "make run: " + name + " exited" in runner.output()
    assert "make run: restarting " + name in runner.output()
    matrix_row(fault, len(load.acknowledged), stored, recovery)
    assert_stops_in_order_leaving_nothing(runner, pids)


async def test_killed_flusher_is_restarted_and_nothing_is_lost(runner: Runner) -> None:
    await kill_and_recover(
        runner,
        "flusher",
        lambda child: os.kill(child["pid"], signal.SIGKILL),
        "make run: kill -9 flusher",
    )


async def test_killed_gateway_is_restarted_and_nothing_is_lost(runner: Runner) -> None:
    await kill_and_recover(
        runner,
        "gateway",
        lambda child: os.killpg(child["pid"], signal.SIGKILL),
        "make run: kill -9 gateway (main and workers)",
    )


async def test_killed_gateway_worker_restarts_the_gateway(runner: Runner) -> None:
    """Granian's main process exits when a worker dies (respawn is off), so the supervisor
    restarts the gateway as a whole."""

    def kill_worker(child: dict[str, Any]) -> None:
        workers = children_of(child["pid"])
        assert workers, "the gateway has no worker processes"
        os.kill(workers[-1], signal.SIGKILL)

    await kill_and_recover(runner, "gateway", kill_worker, "make run: kill -9 gateway worker")


async def test_second_make_run_on_the_same_data_folder_is_refused(runner: Runner) -> None:
    """Two stacks on one folder would corrupt it: the second refuses, the first serves on."""
    code, out = run_to_exit(
        [sys.executable, "-m", "devstack.run"], runner_env(runner.data_dir, free_port())
    )
    assert code != 0
    assert f"is in use by another `make run` (pid {runner.proc.pid})" in out
    assert "MONOKERA_DATA_DIR" in out
    client = HttpClient(runner.url)
    try:
        assert (await client.get("/readyz")).status_code == 200
    finally:
        await client.close()


async def test_stopped_flusher_is_found_hung_and_restarted(watched_runner: Runner) -> None:
    """SIGSTOP: the flusher neither exits nor flushes. Its heartbeat goes quiet, the
    supervisor says so, kills it and restarts it; nothing acknowledged is lost."""
    await kill_and_recover(
        watched_runner,
        "flusher",
        lambda child: os.kill(child["pid"], signal.SIGSTOP),
        "make run: SIGSTOP flusher",
    )
    out = watched_runner.output()
    assert "make run: flusher hung: no heartbeat from shard0 for " in out, out[-3000:]
    assert f"(timeout {LIVENESS_TIMEOUT_S} s); killing it" in out


async def test_stopped_gateway_worker_is_found_hung_and_the_gateway_restarted(
    watched_runner: Runner,
) -> None:
    """One of two Granian workers stopped: the other serves on, the stopped one would hold
    every connection the kernel hands it. Its heartbeat names it; the gateway restarts."""
    frozen: list[int] = []

    def stop_worker(child: dict[str, Any]) -> None:
        workers = children_of(child["pid"])
        assert len(workers) == 2, f"expected two workers, found {workers}"
        os.kill(workers[-1], signal.SIGSTOP)
        frozen.append(workers[-1])

    await kill_and_recover(
        watched_runner, "gateway", stop_worker, "make run: SIGSTOP one gateway worker"
    )
    out = watched_runner.output()
    assert f"make run: gateway hung: no heartbeat from worker-{frozen[0]} for " in out, out[-3000:]


def test_crash_loop_backs_off_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A child that exits at once is retried with doubling delays up to the cap, counted,
    and named as crash-looping, not restarted in a silent spin."""
    policy = RestartPolicy(
        backoff_s=0.05, backoff_max_s=0.2, stable_after_s=30, crash_loop=CrashLoop(3, 60)
    )
    crasher = process_child(
        "crasher", [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ)
    )
    supervisor = Supervisor([crasher], policy)
    supervisor.start_all()
    deadline = time.monotonic() + 30
    while crasher.restarts < 5:
        assert time.monotonic() < deadline
        supervisor.tick()
        time.sleep(0.01)
    supervisor.stop_all()
    assert crasher.last_exit_code == 3
    assert crasher.delays[:4] == [0.05, 0.1, 0.2, 0.2]
    err = capsys.readouterr().err
    assert err.count("make run: crasher exited with 3") >= 5
    assert "crasher crashed 3 times in 60 s; last exit code 3; see its output above;" in err
    assert "retrying every 0.2 s at most" in err


def started(command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, start_new_session=True)


def test_stop_all_reaches_every_child_when_one_fails_to_stop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A child whose stop times out is killed, and the children after it are still stopped."""
    ready = tmp_path / "ignoring"
    ignore_term = (
        "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        " pathlib.Path(sys.argv[1]).touch(); time.sleep(600)"
    )

    def stop_too_briefly(proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(0.2)  # raises TimeoutExpired: it ignores SIGTERM

    command = [sys.executable, "-c", ignore_term, str(ready)]
    stubborn = Child("stubborn", partial(started, command), stop_too_briefly)
    after = process_child("after", [sys.executable, "-c", "import time; time.sleep(600)"], {})
    supervisor = Supervisor([stubborn, after], RestartPolicy())
    supervisor.start_all()
    procs = [child.proc for child in (stubborn, after)]
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < deadline, "the child never started ignoring SIGTERM"
            time.sleep(0.01)
        supervisor.stop_all()
    finally:
        for proc in procs:
            assert proc is not None
            if proc.poll() is None:
                proc.kill()
                proc.wait()
                pytest.fail(f"pid {proc.pid} still ran after stop_all")
    assert [p.returncode for p in procs if p is not None] == [-signal.SIGKILL, -signal.SIGTERM]
    assert stubborn.state == after.state == "stopped"
    err = capsys.readouterr().err
    assert "make run: stopping stubborn failed (TimeoutExpired" in err


def test_stop_all_signals_nothing_for_a_child_in_its_restart_backoff(tmp_path: Path) -> None:
    """A child that exited was reaped: its pid may be anybody's by now. Stopping it while it
    waits for its restart must not signal that pid, nor call its stop at all."""
    stopped: list[int] = []

    def recording_stop(proc: subprocess.Popen[bytes]) -> None:
        stopped.append(proc.pid)

    policy = RestartPolicy(backoff_s=60, backoff_max_s=60)
    quitter = Child(
        "quitter", partial(started, [sys.executable, "-c", "raise SystemExit(4)"]), recording_stop
    )
    supervisor = Supervisor([quitter], policy)
    supervisor.start_all()
    deadline = time.monotonic() + 30
    while quitter.state != "restarting":
        assert time.monotonic() < deadline, "the child never exited"
        supervisor.tick()
        time.sleep(0.01)
    assert quitter.last_exit_code == 4
    supervisor.stop_all()
    assert stopped == [], f"stop was called for pid(s) reaped earlier: {stopped}"
    assert quitter.proc is None, "a reaped process is still held, to be signalled later"
    assert quitter.state == "stopped" and quitter.restarts == 0


async def stack_pids(runner: Runner) -> dict[str, int]:
    """The runner's four children by name, once /readyz shows all of them running."""
    client = HttpClient(runner.url)
    try:

        async def check() -> dict[str, Any] | None:
            found = await supervised(client)
            names = ("gateway", "flusher", "postgres", "redis")
            if all(found.get(n, {}).get("state") == "running" for n in names):
                return found
            return None

        found = await wait_for(check, "all four children running")
    finally:
        await client.close()
    return {name: child["pid"] for name, child in found.items()}


def kill_sessions(leaders: list[int]) -> None:
    """SIGKILL what the children left running (each leads a session of its own)."""
    for pid in leaders:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def holds(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open."""
    fds = Path(f"/proc/{pid}/fd")
    return any(os.path.realpath(fd) == str(path.resolve()) for fd in fds.iterdir())


def lock_is_free(data_dir: Path) -> bool:
    lock = DataLock(data_dir)
    try:
        lock.acquire()
    except DataDirInUse:
        return False
    lock.release()
    return True


async def test_sighup_stops_every_child_before_the_runner_exits(runner: Runner) -> None:
    """Closing the terminal sends SIGHUP to the runner alone (the children have sessions of
    their own): it stops them as SIGTERM does, then releases the data folder."""
    leaders = list((await stack_pids(runner)).values())
    pids = [*leaders, *children_of(leaders[0])]
    try:
        runner.proc.send_signal(signal.SIGHUP)
        assert runner.proc.wait(90) == 0, runner.output()[-3000:]
        left = [pid for pid in pids if alive(pid)]
        assert not left, f"still running after SIGHUP: {left}\n{runner.output()[-3000:]}"
    finally:
        kill_sessions(leaders)
    assert "make run: stopped redis" in runner.output()
    assert lock_is_free(runner.data_dir)


async def test_children_of_a_killed_runner_keep_the_data_folder_locked(runner: Runner) -> None:
    """A runner killed outright cannot stop its children; they keep the lock it handed them,
    so a second run refuses the folder until the last of them is gone."""
    leaders = await stack_pids(runner)
    try:
        runner.proc.kill()
        runner.proc.wait(30)
        assert all(alive(pid) for pid in leaders.values())
        holders = {name: holds(pid, runner.data_dir / ".lock") for name, pid in leaders.items()}
        assert all(holders.values()), f"children not holding the lock: {holders}"
        assert not lock_is_free(runner.data_dir), "the lock went with the runner"
        code, out = run_to_exit(
            [sys.executable, "-m", "devstack.run"], runner_env(runner.data_dir, free_port())
        )
        assert code != 0 and "is in use by another `make run`" in out, out
    finally:
        kill_sessions(list(leaders.values()))
    deadline = time.monotonic() + 60  # PostgreSQL's backends exit once they see it gone
    while not lock_is_free(runner.data_dir):
        assert time.monotonic() < deadline, "the lock outlived every child"
        await asyncio.sleep(0.1)
