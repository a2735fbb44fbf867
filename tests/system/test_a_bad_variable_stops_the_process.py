"""A bad variable stops a process at start with exit status 2, naming the variable and
printing no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import ROOT


def test_a_command_with_a_bad_variable_exits_2_and_says_which() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flusher"],
        env={**os.environ, "MONOKERA_BATCH_SIZE": "-5"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "MONOKERA_BATCH_SIZE" in done.stderr
    assert "Traceback" not in done.stderr
