"""A second gateway or `make run` on a taken port or data folder refuses to start, never shares.

Granian binds with SO_REUSEPORT, so without a check a second server on the same port starts
and the kernel splits connections between two unrelated stacks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import Settings
from tests.conftest import env_for
from tests.helpers import ROOT, Gateway, HttpClient, metric_total


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port somebody listens on with SO_REUSEPORT, as Granian does."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def run_to_exit(args: list[str], env: dict[str, str], timeout: float = 40) -> tuple[int, str]:
    """Run ``args`` until it exits on its own; a server that keeps running fails the test
    (and is killed with its whole session, Granian's worker included)."""
    with subprocess.Popen(
        args,
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    ) as proc:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            pytest.fail(f"{args} kept running:\n{out.decode(errors='replace')}")
    return proc.returncode, out.decode(errors="replace")


def gateway_env(settings: Settings, port: int) -> dict[str, str]:
    return {**env_for(settings), "MONOKERA_HOST": "127.0.0.1", "MONOKERA_PORT": str(port)}


def test_gateway_on_a_port_held_with_reuseport_refuses_to_start(
    settings: Settings, held_port: int
) -> None:
    code, out = run_to_exit([sys.executable, "-m", "gateway"], gateway_env(settings, held_port))
    assert code != 0
    assert f"port {held_port} on 127.0.0.1 is in use by another process" in out
    assert "MONOKERA_PORT" in out


async def test_second_gateway_refuses_and_the_first_gets_every_request(
    settings: Settings, tmp_path: Path
) -> None:
    first = Gateway(env_for(settings), tmp_path / "first.log")
    try:
        code, out = run_to_exit(
            [sys.executable, "-m", "gateway"], gateway_env(settings, first.port)
        )
        assert code != 0 and "is in use by another process" in out
        client = HttpClient(first.url)
        try:
            before = healthz_answered((await client.get("/metrics")).text)
            for _ in range(50):
                assert (await client.get("/healthz")).status_code == 200
            after = healthz_answered((await client.get("/metrics")).text)
        finally:
            await client.close()
        assert after - before == 50, "some requests went to another server"
    finally:
        first.stop()


def healthz_answered(metrics: str) -> int:
    """How many /healthz requests this gateway (one worker) answered."""
    return int(
        metric_total(metrics, "monokera_http_requests_total", route="/healthz", status="200")
    )


def runner_env(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(MONOKERA_DATA_DIR=str(data_dir), MONOKERA_HOST="127.0.0.1", MONOKERA_PORT=str(port))
    return env


def test_make_run_on_a_taken_port_refuses_before_starting_anything(
    tmp_path: Path, held_port: int
) -> None:
    data = tmp_path / "data"
    code, out = run_to_exit([sys.executable, "-m", "devstack.run"], runner_env(data, held_port))
    assert code != 0
    assert f"port {held_port} on 127.0.0.1 is in use by another process" in out
    assert not (data / "postgres").exists(), "servers were started before the port check"
