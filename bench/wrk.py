"""Running wrk and reading its numbers."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_wrk(
    url: str, seconds: int, connections: int, script: Path, env: dict[str, str] | None = None
) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result: dict[str, float] = {
        "rate": float(rate.group(1)) if rate else 0.0,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "requests": int(total.group(1)) if total else 0,
    }
    for p in ("50", "90", "99"):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)([a-z]+)\s*$", out, re.M)
        if m:
            result[f"p{p}_ms"] = (
                float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
            )
    return result


def wrk_paths(base: str, paths: list[str], seconds: int, connections: int) -> dict[str, float]:
    """GET each path in turn for ``seconds``."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as listing:
        listing.write("\n".join(paths) + "\n")
    try:
        return run_wrk(base, seconds, connections, HERE / "paths.lua", {"PATHS_FILE": listing.name})
    finally:
        Path(listing.name).unlink()
