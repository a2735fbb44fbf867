"""Test helpers: purchases, a real Granian gateway process, a real flusher process."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy
from prometheus_client.parser import text_string_to_metric_families

from core.entries import FIELDS, VERSION, VERSION_FIELD, Fields, values
from core.events import PurchaseRequest, request_decoder
from core.settings import Settings
from devstack.processes import free_port, stop_process
from flusher.connections import Close, open_flushers
from flusher.worker import Flusher

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "tests" / "seed"
"""The original service's example request and response: the wire contract we keep."""

_ids = itertools.count(1)


def purchase(
    transaction_id: str | None = None,
    *,
    amount: int = 20000,
    customer: str = "23131342342342321",
    seller: str = "23132131",
) -> dict[str, Any]:
    return {
        "transaction_id": transaction_id or f"tx-{os.getpid()}-{next(_ids)}",
        "customer_info": {
            "customer_name": "User 1",
            "customer_account": customer,
            "ammount": amount,
        },
        "seller_info": {"seller_name": "User 2", "seller_account": seller},
    }


def entry_fields(request: PurchaseRequest, request_id: str, accepted_at_us: int) -> Fields:
    """The stream entry the gateway appends for ``request`` (format 2)."""
    names = (VERSION_FIELD, *FIELDS)
    return dict(zip(names, (VERSION, *values(request, request_id, accepted_at_us)), strict=True))


def stream_entry(
    tx: str, *, customer: str = "buyer", seller: str = "seller", request_id: str = "r"
) -> Fields:
    """A format-2 entry of a purchase ``tx`` of 5, for a test to XADD itself."""
    request = request_decoder.decode(
        json.dumps(purchase(tx, amount=5, customer=customer, seller=seller))
    )
    return entry_fields(request, request_id, 1)


def v1_entry(request: PurchaseRequest, request_id: str, accepted_at_us: int) -> Fields:
    """The stream entry 943f4b2's gateway appended for ``request`` (format 1): the purchase
    as one JSON text in field ``p``, both legs in full, as its gateway wrote it."""
    amount = request.customer_info.ammount
    legacy = {
        "v": 1,
        "transaction_id": request.transaction_id,
        "customer_name": request.customer_info.customer_name,
        "seller_name": request.seller_info.seller_name,
        "legs": [
            [request.customer_info.customer_account, "DEBIT", amount],
            [request.seller_info.seller_account, "CREDIT", amount],
        ],
        "request_id": request_id,
        "accepted_at_us": accepted_at_us,
    }
    return {b"p": json.dumps(legacy, separators=(",", ":")).encode()}


async def idempotency_records(redis: Any, tx: str, shard: int = 0) -> dict[bytes, bytes]:
    """The idempotency buckets holding a record of ``tx``, and the record in each."""
    found = {}
    for bucket in await redis.keys(f"monokera:{{{shard}}}:idempotency:*"):
        raw = await redis.hget(bucket, tx)
        if raw is not None:
            found[bucket] = raw
    return found


async def idempotency_record_count(redis: Any, shard: int = 0) -> int:
    """Idempotency records of a shard, over all its buckets."""
    buckets = await redis.keys(f"monokera:{{{shard}}}:idempotency:*")
    return sum([await redis.hlen(bucket) for bucket in buckets])


async def forget_idempotency(redis: Any, tx: str, shard: int = 0) -> None:
    """As if the window had passed for ``tx``: its record removed."""
    for bucket in await idempotency_records(redis, tx, shard):
        await redis.hdel(bucket, tx)


async def open_flusher(settings: Settings, shard: int = 0) -> tuple[Flusher, Close]:
    """One shard's flusher, for a test to drive step by step."""
    flushers, close = await open_flushers(settings, [shard])
    return flushers[0], close


def raw_cursor(text: str) -> str:
    """A history cursor with the given content, valid or not."""
    return base64.urlsafe_b64encode(text.encode()).decode()


def samples(metrics_text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """The samples of series ``name`` whose labels include ``labels``, as prometheus_client's
    parser reads the exposition (so a malformed one fails the test)."""
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]


def metric_total(metrics_text: str, name: str, **labels: str) -> float:
    """Summed over the series that match, e.g. over every gateway worker."""
    return sum(value for _, value in samples(metrics_text, name, **labels))


class Process:
    """A child process of ours with its output in a file, for real signals in fault tests."""

    def __init__(self, args: list[str], env: Mapping[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            args,
            env=dict(env),
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,  # kill() can reach its children too
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Stop it if it runs; either way close its log. Returns its exit status."""
        stop_process(self.proc, sig, timeout)
        # Whatever the main process left behind in its session (a Granian worker that did
        # not stop with it) goes too: nothing of a test outlives it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if not self._out.closed:
            self._out.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL it and its children: a Granian main process killed alone leaves its
        worker serving, orphaned, long after the test."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.stop(signal.SIGKILL)


class Gateway(Process):
    def __init__(self, env: Mapping[str, str], log: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**env, "MONOKERA_HOST": "127.0.0.1", "MONOKERA_PORT": str(self.port)}
        env["MONOKERA_WORKERS"] = str(workers)
        args = [sys.executable, "-m", "gateway"]
        super().__init__(args, env, log)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"gateway not ready:\n{self.output()}")


class FlusherProcess(Process):
    def __init__(self, env: Mapping[str, str], log: Path) -> None:
        super().__init__([sys.executable, "-m", "flusher"], env, log)


def flusher_processes(
    env: Callable[[str], Mapping[str, str]], folder: Path, prefix: str, count: int = 2
) -> list[FlusherProcess]:
    """``count`` flusher processes named ``<prefix>-0``, ``<prefix>-1``, ...; ``env(name)``
    gives each its environment (the consumer name goes in there)."""
    return [
        FlusherProcess(env(f"{prefix}-{i}"), folder / f"{prefix}-{i}.log") for i in range(count)
    ]


@contextlib.asynccontextmanager
async def serving(gateway: Gateway, *flushers: FlusherProcess) -> AsyncIterator[HttpClient]:
    """A client of ``gateway``; on the way out it, the flushers and the gateway stop."""
    client = HttpClient(gateway.url)
    try:
        yield client
    finally:
        await client.close()
        for flusher in flushers:
            flusher.stop()
        gateway.stop()


@dataclass(frozen=True)
class HttpReply:
    status_code: int
    headers: CIMultiDictProxy[str]
    body: bytes
    request_headers: CIMultiDictProxy[str]

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


class HttpClient:
    """Real HTTP over aiohttp (httpx's pool collapses under thousands of concurrent requests).

    Sends exactly the headers given: no Content-Type is added unless asked for.
    """

    def __init__(self, base_url: str, connections: int = 256) -> None:
        self._session = aiohttp.ClientSession(
            base_url, connector=aiohttp.TCPConnector(limit=connections)
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpReply:
        send_headers = dict(headers or {})
        data = content
        if json_body is not None:
            data = json.dumps(json_body).encode()
            send_headers.setdefault("Content-Type", "application/json")
        async with self._session.request(
            method, path, data=data, headers=send_headers, skip_auto_headers=("Content-Type",)
        ) as resp:
            return HttpReply(
                resp.status, resp.headers, await resp.read(), resp.request_info.headers
            )

    async def post(self, path: str, json: Any = None, **kwargs: Any) -> HttpReply:
        return await self.request("POST", path, json_body=json, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> HttpReply:
        return await self.request("GET", path, **kwargs)

    async def close(self) -> None:
        await self._session.close()
