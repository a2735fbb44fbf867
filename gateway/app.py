"""The ASGI callable: lifespan, routing by dict lookup, and the one place errors become HTTP."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.settings import Settings
from gateway import openapi, redis_client
from gateway.appender import StreamAppender
from gateway.backlog import BacklogMonitor
from gateway.errors import (
    INTERNAL_ERROR,
    ClientDisconnected,
    HTTPError,
    MethodNotAllowed,
    NotFound,
    error_response,
)
from gateway.purchase import PurchaseHandler
from gateway.request_ids import RequestIds
from gateway.responses import CONTENT_TYPE_TEXT, Response, json_response, send_response
from gateway.types import Receive, Scope, Send

log = logging.getLogger("gateway")

Handler = Callable[[Scope, Receive], Awaitable[Response]]

_encoder = msgspec.json.Encoder()
_OK = _encoder.encode({"status": "ok"})


class App:
    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings
        self._redis: Redis | None = None
        self._control: Redis | None = None
        self._appender: StreamAppender | None = None
        self._backlog: BacklogMonitor | None = None
        self._routes: dict[str, dict[str, Handler]] = {}

    @property
    def _retry_after_s(self) -> int:
        return self._settings.retry_after_s if self._settings else 1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            methods = self._routes.get(scope["path"])
            if methods is None:
                raise NotFound(f"no route for {scope['path']}")
            handler = methods.get(scope["method"])
            if handler is None:
                raise MethodNotAllowed(scope["method"], sorted(methods))
            response = await handler(scope, receive)
        except HTTPError as exc:
            response = error_response(exc)
        except ClientDisconnected:
            return
        except Exception:
            # Handlers send nothing themselves, so nothing was sent yet: answer, then re-raise
            # so the server logs it.
            log.exception("unhandled error on %r %r", scope.get("method"), scope.get("path"))
            await send_response(send, INTERNAL_ERROR)
            raise
        await send_response(send, response)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("gateway startup failed")
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        settings = self._settings or Settings.from_env()
        self._settings = settings
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
        self._redis = redis_client.connect(settings)
        # A separate small pool for readiness and backlog checks: they never queue behind,
        # or take connections from, the appends.
        self._control = redis_client.connect(settings, max_connections=2)
        self._appender = StreamAppender(
            self._redis,
            idempotency_ttl_s=settings.idempotency_ttl_s,
            max_inflight=settings.append_max_inflight,
            max_pending=settings.append_max_pending,
            retry_after_s=settings.retry_after_s,
            ack_replicas=settings.ack_replicas,
            ack_replicas_timeout_ms=settings.ack_replicas_timeout_ms,
        )
        self._backlog = BacklogMonitor(
            self._control,
            max_age_s=settings.backlog_max_age_s,
            max_length=settings.backlog_max_length,
            interval_s=settings.backlog_check_interval_s,
        )
        try:
            await redis_client.ensure_group(self._redis)
            await self._appender.load_script()
            await self._backlog.check()
        except (RedisError, OSError) as exc:
            # Start anyway: purchases get a 503 and /readyz says why until Redis is back.
            log.warning("Redis not reachable at start (%r); serving 503s until it is", exc)
        self._backlog.start()
        purchase = PurchaseHandler(
            self._appender,
            self._backlog,
            RequestIds(),
            max_body_bytes=settings.max_body_bytes,
            retry_after_s=settings.retry_after_s,
        )
        self._routes = {
            "/purchase": {"POST": purchase},
            "/healthz": {"GET": self._healthz},
            "/readyz": {"GET": self._readyz},
            "/metrics": {"GET": self._metrics},
            "/openapi.json": {"GET": self._openapi},
        }

    async def shutdown(self) -> None:
        if self._backlog is not None:
            await self._backlog.stop()
        if self._appender is not None:
            await self._appender.close()
        for client in (self._redis, self._control):
            if client is not None:
                await client.aclose()

    async def _openapi(self, scope: Scope, receive: Receive) -> Response:
        return json_response(200, openapi.DOCUMENT)

    async def _healthz(self, scope: Scope, receive: Receive) -> Response:
        return json_response(200, _OK)

    async def _readyz(self, scope: Scope, receive: Receive) -> Response:
        """Ready: Redis answers and the backlog is under its limits."""
        assert self._control is not None and self._backlog is not None
        retry = (b"retry-after", str(self._retry_after_s).encode())
        try:
            await self._control.ping()
        except (RedisError, OSError) as exc:
            body = _encoder.encode({"status": "unavailable", "redis": type(exc).__name__})
            return json_response(503, body, retry)
        backlog = self._backlog.last
        report: dict[str, object] = {"status": "ready", "redis": "ok"}
        if backlog is not None:
            report["backlog"] = {
                "oldest_unflushed_age_s": round(backlog.oldest_unflushed_age_s, 3),
                "stream_length": backlog.stream_length,
                "pending": backlog.pending,
            }
        if self._backlog.refusal is not None:
            report["status"] = "overloaded"
            report["reason"] = self._backlog.refusal
            return json_response(503, _encoder.encode(report), retry)
        return json_response(200, _encoder.encode(report))

    async def _metrics(self, scope: Scope, receive: Receive) -> Response:
        assert self._appender is not None
        stats = self._appender.stats
        lines = [
            "# TYPE monokera_stream_appends_total counter",
            f"monokera_stream_appends_total {stats.appends}",
            "# TYPE monokera_stream_append_failures_total counter",
            f"monokera_stream_append_failures_total {stats.failed}",
            "# TYPE monokera_idempotent_replays_total counter",
            f"monokera_idempotent_replays_total {stats.replays}",
            "# TYPE monokera_redis_append_round_trips_total counter",
            f"monokera_redis_append_round_trips_total {stats.round_trips}",
            "# TYPE monokera_stream_append_largest_batch gauge",
            f"monokera_stream_append_largest_batch {stats.largest_batch}",
        ]
        return Response(200, ("\n".join(lines) + "\n").encode(), [CONTENT_TYPE_TEXT])


app = App()
