"""Logs are JSON lines: one per purchase with its ids, nothing a client sends unescaped."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from core.settings import Settings
from tests.conftest import env_for
from tests.helpers import Gateway, HttpClient, purchase


async def test_one_json_line_per_purchase_and_no_forged_lines(
    settings: Settings, tmp_path: Path, redis: object
) -> None:
    env = {**env_for(settings), "MONOKERA_LOG_PURCHASES": "true", "MONOKERA_ACCESS_LOG": "true"}
    gateway = Gateway(env, tmp_path / "gateway.log")
    client = HttpClient(gateway.url)
    try:
        replies = [
            await client.post(
                "/purchase", json=purchase(f"logged-{i}"), headers={"x-request-id": f"req-{i}"}
            )
            for i in range(5)
        ]
        await client.get('/nope%0A{"level":"CRITICAL","msg":"forged"}')
        await asyncio.sleep(0.5)  # the writer thread flushes
    finally:
        await client.close()
        gateway.stop()

    lines = [json.loads(line) for line in gateway.output().splitlines() if line.strip()]
    assert all(isinstance(line, dict) and "level" in line for line in lines)
    purchases = [line for line in lines if line["logger"] == "monokera.purchase"]
    assert [(p["transaction_id"], p["request_id"]) for p in purchases] == [
        (f"logged-{i}", f"req-{i}") for i in range(5)
    ]
    assert [p["stream_entry_id"] for p in purchases] == [
        r.headers["x-stream-entry-id"] for r in replies
    ]
    assert not any(line.get("msg") == "forged" for line in lines)
    assert any("/nope" in line["msg"] for line in lines if line["logger"] == "granian.access")
