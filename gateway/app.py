"""The ASGI callable: lifespan, routing by dict lookup, and the one place errors become HTTP."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.settings import Settings
from gateway import redis_client
from gateway.appender import StreamAppender
from gateway.errors import (
    ClientDisconnected,
    HTTPError,
    MethodNotAllowed,
    NotFound,
    error_response,
    internal_error_body,
)
from gateway.purchase import PurchaseHandler
from gateway.request_ids import RequestIds
from gateway.responses import CONTENT_TYPE_TEXT, send_response
from gateway.types import Message, Receive, Scope, Send

log = logging.getLogger("gateway")

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]

_OK = msgspec.json.encode({"status": "ok"})


class App:
    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings
        self._redis: Redis | None = None
        self._appender: StreamAppender | None = None
        self._routes: dict[str, dict[str, Handler]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            methods = self._routes.get(scope["path"])
            if methods is None:
                raise NotFound(f"no route for {scope['path']}")
            handler = methods.get(scope["method"])
            if handler is None:
                raise MethodNotAllowed(scope["method"], sorted(methods))
            await handler(scope, receive, tracking_send)
        except HTTPError as exc:
            if started:
                raise
            status, headers, body = error_response(exc)
            await send_response(send, status, body, headers)
        except ClientDisconnected:
            return
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await send_response(send, 500, internal_error_body())
            raise

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
        await self._redis.ping()
        await redis_client.ensure_group(self._redis)
        self._appender = StreamAppender(
            self._redis,
            idempotency_ttl_s=settings.idempotency_ttl_s,
            max_inflight=settings.append_max_inflight,
            retry_after_s=settings.retry_after_s,
            ack_replicas=settings.ack_replicas,
            ack_replicas_timeout_ms=settings.ack_replicas_timeout_ms,
        )
        await self._appender.load_script()
        purchase = PurchaseHandler(self._appender, RequestIds(), settings.max_body_bytes)
        self._routes = {
            "/purchase": {"POST": purchase},
            "/healthz": {"GET": self._healthz},
            "/readyz": {"GET": self._readyz},
            "/metrics": {"GET": self._metrics},
        }

    async def shutdown(self) -> None:
        if self._appender is not None:
            await self._appender.close()
        if self._redis is not None:
            await self._redis.aclose()

    async def _healthz(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_response(send, 200, _OK)

    async def _readyz(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self._redis is not None
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            body = msgspec.json.encode({"status": "unavailable", "redis": type(exc).__name__})
            await send_response(send, 503, body, [(b"retry-after", b"1")])
            return
        await send_response(send, 200, msgspec.json.encode({"status": "ready", "redis": "ok"}))

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
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
        await send_response(
            send, 200, ("\n".join(lines) + "\n").encode(), content_type=CONTENT_TYPE_TEXT
        )


app = App()
