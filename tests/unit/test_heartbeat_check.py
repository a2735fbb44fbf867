"""`python -m core.heartbeat`: the flusher's container healthcheck reads its heartbeat files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from core.heartbeat import Heartbeat, main, stale


def test_fresh_heartbeats_are_healthy(tmp_path: Path) -> None:
    for shard in range(3):
        Heartbeat(tmp_path / f"shard{shard}").beat()
    assert stale(tmp_path, 60) is None


def test_one_old_heartbeat_is_unhealthy(tmp_path: Path) -> None:
    Heartbeat(tmp_path / "shard0").beat()
    Heartbeat(tmp_path / "shard1").beat()
    past = time.time() - 120
    os.utime(tmp_path / "shard1", (past, past))
    reason = stale(tmp_path, 60)
    assert reason is not None and "shard1" in reason


def test_no_heartbeat_yet_is_unhealthy(tmp_path: Path) -> None:
    assert stale(tmp_path, 60) == f"no heartbeat in {tmp_path} yet"
    assert stale(tmp_path / "missing", 60) == f"no heartbeat folder {tmp_path / 'missing'}"


def test_command_exits_1_on_a_stale_heartbeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONOKERA_HEARTBEAT_DIR", str(tmp_path))
    monkeypatch.setenv("MONOKERA_LIVENESS_TIMEOUT_S", "30")
    Heartbeat(tmp_path / "shard0").beat()
    assert main() == 0
    past = time.time() - 31
    os.utime(tmp_path / "shard0", (past, past))
    assert main() == 1
    monkeypatch.delenv("MONOKERA_HEARTBEAT_DIR")
    assert main() == 1
