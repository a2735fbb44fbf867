"""Schemathesis' own CLI with every check against /openapi.json and a real gateway.

The CLI, not its Python API: it runs the phases the API loop does not (examples from the
document, coverage of every keyword's boundaries, stateful links from a purchase to its
transaction) and the checks that compare the document with the behaviour both ways:
schema-valid requests must not be rejected (positive_data_acceptance), schema-violating
ones must not be accepted (negative_data_rejection). Deterministic, so CI sees the same
cases on every run; one worker, because schemathesis 4.32's strategy descriptions are not
safe across its worker threads (a KeyError in Hypothesis' lambda cache, seen with -w 2).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.helpers import Gateway

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
EXAMPLES_PER_OPERATION = 30  # about 600 requests in all; under a minute on 2 busy cores


def test_schemathesis_finds_no_failure_with_every_check(gateway: Gateway, tmp_path: Path) -> None:
    with urllib.request.urlopen(f"{gateway.url}/openapi.json", timeout=10) as reply:
        paths = json.load(reply)["paths"]
    # Schemathesis leaves out the operation serving the document it loaded (GET /openapi.json).
    operations = sum(len(methods) for methods in paths.values()) - 1
    assert "get" in paths["/openapi.json"]
    run = subprocess.run(
        [
            SCHEMATHESIS,
            "run",
            f"{gateway.url}/openapi.json",
            "--checks",
            "all",
            "--generation-deterministic",
            "--max-examples",
            str(EXAMPLES_PER_OPERATION),
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--no-color",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-20_000:]
    tested = rf"Selected: {operations}/{operations}\s+Tested: {operations}\b"
    assert re.search(tested, output), output[-5_000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", output)
    assert generated and generated[1] == generated[2] and int(generated[1]) > 300, output[-5_000:]
