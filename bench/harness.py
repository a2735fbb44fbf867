"""What every benchmark needs: wrk, a throwaway stack, servers started and waited for."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from devstack.processes import free_port, port_accepts, wait_until
from devstack.stack import EmbeddedStack


def wrk_missing() -> bool:
    if shutil.which("wrk") is not None:
        return False
    print("wrk is missing: apt-get install wrk (Debian), then run this again", file=sys.stderr)
    return True


@contextlib.contextmanager
def throwaway_stack(name: str, **settings: str) -> Iterator[tuple[EmbeddedStack, dict[str, str]]]:
    """Embedded Redis and PostgreSQL in a temporary folder, and the environment that points
    the gateway and the flusher at them (production log level, plus ``settings``)."""
    work = Path(tempfile.mkdtemp(prefix=f"monokera-{name}-"))
    work.chmod(0o755)  # PostgreSQL may run as another user when we are root
    stack = EmbeddedStack(work / "stack")
    try:
        stack.start()
        env = {
            **os.environ,
            "REDIS_URL": stack.redis_url,
            "DATABASE_URL": stack.database_url,
            "MONOKERA_LOG_LEVEL": "WARNING",
            **settings,
        }
        yield stack, env
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


def serve(
    args: list[str], env: dict[str, str], port: int, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        args, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_until(lambda: port_accepts(port), 30, f"server on {port}")
    time.sleep(0.5)
    return proc


def serve_gateway(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = serve([sys.executable, "-m", "gateway"], {**env, "MONOKERA_PORT": str(port)}, port)
    return proc, f"http://127.0.0.1:{port}"


def serve_empty_asgi(
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """The reference: the minimal ASGI app (``empty_asgi.py``) on Granian started exactly as
    the gateway starts it (``gateway.__main__.server``), with the same settings."""
    port = free_port()
    run_env = {**(env or os.environ), "MONOKERA_PORT": str(port)}
    proc = serve([sys.executable, "-m", "bench.empty_asgi"], run_env, port)
    return proc, f"http://127.0.0.1:{port}"


def save_result(name: str, data: object) -> Path:
    """bench/results/<name>-<time>.json (git-ignored)."""
    import json

    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(data, indent=2))
    return path
