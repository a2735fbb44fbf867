"""/metrics: valid exposition, escaped labels, every flusher figure, and every worker in
every scrape however many workers the gateway runs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import msgspec
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from core.flusher_stats import FLUSHER_STATS, publish_stats
from core.settings import Settings
from flusher.worker import Flusher, FlusherStats
from gateway.telemetry.counters import HistogramCounts, WorkerCounters
from gateway.telemetry.worker_board import WorkerBoard
from tests.conftest import env_for
from tests.helpers import Gateway, HttpClient, purchase, samples, serving


async def scrape(client: HttpClient) -> str:
    reply = await client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    return reply.text


async def test_exposition_parses_and_acks_are_seen_below_a_millisecond(
    client: HttpClient,
) -> None:
    assert (await client.post("/purchase", json=purchase())).status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(await scrape(client))}
    assert families["monokera_purchase_ack_seconds"].type == "histogram"
    assert families["monokera_http_requests"].type == "counter"
    bounds = [
        s.labels["le"]
        for s in families["monokera_purchase_ack_seconds"].samples
        if s.name.endswith("_bucket")
    ]
    assert {"0.0001", "0.00025", "0.0005", "0.00075", "0.001"} <= set(bounds)
    assert bounds[-1] == "+Inf"


async def test_odd_label_values_come_back_unchanged(
    client: HttpClient, redis: Redis, flusher: Flusher
) -> None:
    odd = 'flusher "quoted" \\back\\slash\nnewline {braces}=,'
    await publish_stats(redis, odd, FlusherStats(batches=7))
    found = samples(await scrape(client), "monokera_flusher_batches_total", consumer=odd)
    assert [value for _, value in found] == [7.0]


async def test_every_flusher_figure_published_reaches_metrics(
    client: HttpClient, flusher: Flusher
) -> None:
    for i in range(4):
        assert (await client.post("/purchase", json=purchase(f"fig-{i}"))).status_code == 200
    assert (await client.post("/purchase", json=purchase("fig-0"))).status_code == 200
    await flusher.drain()
    await flusher.publish_stats()
    text = await scrape(client)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for stat in FLUSHER_STATS:
        expected = float(getattr(flusher.stats, stat.source))
        family = families[stat.metric.removesuffix("_total")]
        assert family.type == ("counter" if stat.kind == "counter" else "gauge"), stat
        assert samples(text, stat.metric, consumer=flusher.name) == [
            ({"consumer": flusher.name}, expected)
        ], stat
    assert flusher.stats.inserted == 4 and flusher.stats.batch_size_max >= 1


async def test_a_scrape_on_any_worker_counts_every_worker(
    settings: Settings, tmp_path: Path
) -> None:
    batches, per_batch = 6, 10
    folder = tmp_path / "worker-counters"
    folder.mkdir()
    env = {**env_for(settings), "MONOKERA_METRICS_DIR": str(folder)}
    gateway = Gateway(env, tmp_path / "gateway.log", workers=2)
    seen: dict[str, float] = {}

    async def scrape_fresh() -> list[tuple[dict[str, str], float]]:
        """On a connection of its own, which may land on either worker; no worker's
        counter is ever smaller than a previous scrape showed."""
        fresh = HttpClient(gateway.url)
        try:
            appends = samples(await scrape(fresh), "monokera_stream_appends_total")
        finally:
            await fresh.close()
        assert len({labels["worker"] for labels, _ in appends}) == 2, appends
        for labels, value in appends:
            assert value >= seen.get(labels["worker"], 0), (appends, seen)
            seen[labels["worker"]] = value
        return appends

    async with serving(gateway) as client:
        deadline = time.monotonic() + 20  # /healthz answered by one worker; the other starts
        while len(readings(folder)) < 2:
            assert time.monotonic() < deadline, gateway.output()
            await asyncio.sleep(0.1)
        for b in range(batches):
            replies = await asyncio.gather(
                *(client.post("/purchase", json=purchase(f"w2-{b}-{i}")) for i in range(per_batch))
            )
            assert [r.status_code for r in replies] == [200] * per_batch
            for _ in range(3):
                await scrape_fresh()
        purchases = batches * per_batch

        # Each worker publishes its counters once a second: wait until both readings are
        # in the folder with every purchase, then every scrape must add up.
        deadline = time.monotonic() + 20
        while sum(c.appends for c in readings(folder)) != purchases:
            assert time.monotonic() < deadline, readings(folder)
            await asyncio.sleep(0.1)
        for _ in range(12):
            appends = await scrape_fresh()
            assert sum(value for _, value in appends) == purchases, appends


def readings(folder: Path) -> list[WorkerCounters]:
    return [msgspec.json.decode(p.read_bytes(), type=WorkerCounters) for p in folder.glob("*.json")]


def test_a_dead_workers_counters_are_dropped(tmp_path: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(gone.stdout)
    live_pid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for pid in (dead_pid, live_pid.pid):
            WorkerBoard(tmp_path, pid).publish(counters(str(pid)))
        seen = WorkerBoard(tmp_path).others()
        assert [c.worker for c in seen] == [str(live_pid.pid)]
        assert not (tmp_path / f"{dead_pid}.json").exists()
    finally:
        live_pid.kill()
        live_pid.wait()


def counters(worker: str) -> WorkerCounters:
    empty = HistogramCounts([0], 0.0)
    return WorkerCounters(worker=worker, requests=[], ack_latency=empty, append_batch=empty)
