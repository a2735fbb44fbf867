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
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
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

    async def _healthz(self, scope: Scope, receive: Receive) -> Response:
        return json_response(200, _OK)

    async def _readyz(self, scope: Scope, receive: Receive) -> Response:
        assert self._redis is not None
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            body = msgspec.json.encode({"status": "unavailable", "redis": type(exc).__name__})
            return json_response(503, body, (b"retry-after", b"1"))
        return json_response(200, msgspec.json.encode({"status": "ready", "redis": "ok"}))

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
