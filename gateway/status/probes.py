"""GET /healthz, /readyz and /openapi.json: what the gateway says about itself."""

from __future__ import annotations

from typing import Final

import msgspec
from redis.asyncio import Redis

from core.redis_clients import REDIS_UNAVAILABLE
from core.supervisor_status import read_status
from gateway.http.asgi import Receive, Scope
from gateway.http.responses import Response, json_response
from gateway.ingest.backpressure import BacklogMonitor
from gateway.status.shard_watch import ShardWatch

_encoder: Final = msgspec.json.Encoder()
_OK: Final = _encoder.encode({"status": "ok"})


class Probes:
    def __init__(
        self,
        control: Redis,
        backlog: BacklogMonitor,
        shards: ShardWatch,
        document: bytes,
    ) -> None:
        self._control = control
        self._backlog = backlog
        self._shards = shards
        self._document = document

    async def healthz(self, scope: Scope, receive: Receive) -> Response:
        return json_response(200, _OK)

    async def openapi(self, scope: Scope, receive: Receive) -> Response:
        return json_response(200, self._document)

    async def readyz(self, scope: Scope, receive: Receive) -> Response:
        """Ready: Redis answers, the backlog is under its limits, and a live flusher reads
        every stream this gateway writes (``gateway.status.shard_watch``: a shard-count mismatch
        that leaves none of ours unread is reported, not a 503)."""
        try:
            await self._control.ping()
        except REDIS_UNAVAILABLE as exc:
            body = _encoder.encode({"status": "unavailable", "redis": type(exc).__name__})
            return json_response(503, body)
        backlog = self._backlog.last
        report: dict[str, object] = {"status": "ready", "redis": "ok"}
        if backlog is not None:
            report["backlog"] = {
                "oldest_unflushed_age_s": round(backlog.oldest_unflushed_age_s, 3),
                "stream_length": backlog.stream_length,
                "pending": backlog.pending,
                "stale": self._backlog.stale,
            }
        shards = self._shards.last
        if shards is not None:
            report["shards"] = shards.report()
        found = await supervised(self._control)
        if found:
            report["supervisor"] = found
        if self._backlog.refusal is not None:
            report["status"] = "overloaded"
            report["reason"] = self._backlog.refusal
            return json_response(503, _encoder.encode(report))
        if shards is not None and shards.status == "writes_unread":
            report["status"] = "misconfigured"
            report["reason"] = (
                f"this gateway writes {shards.own} stream shards, the live flushers read"
                f" {shards.flusher_reads}: set MONOKERA_STREAM_SHARDS alike everywhere"
            )
            return json_response(503, _encoder.encode(report))
        return json_response(200, _encoder.encode(report))


async def supervised(control: Redis) -> dict[str, dict[str, object]]:
    """The processes `make run` supervises, as it publishes them; empty elsewhere."""
    try:
        found = await read_status(control)
    except REDIS_UNAVAILABLE:
        return {}
    return {name: msgspec.structs.asdict(status) for name, status in found.items()}
