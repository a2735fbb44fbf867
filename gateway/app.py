"""The ASGI callable: lifespan, routing by dict lookup, and the one place errors become HTTP."""

from __future__ import annotations

import gc
import logging

from core import logs
from core.settings import Settings
from gateway.api.errors import ErrorResponses
from gateway.http.asgi import Receive, Scope, Send
from gateway.http.errors import (
    INTERNAL_ERROR,
    ClientDisconnected,
    HTTPError,
    MethodNotAllowed,
    NotFound,
)
from gateway.http.responses import send_response
from gateway.http.routing import Router
from gateway.refusals import Unavailable
from gateway.services import Services, served_routes
from gateway.telemetry.counters import Metrics
from gateway.telemetry.heartbeat import WorkerHeartbeat

log = logging.getLogger("gateway")


class App:
    def __init__(self) -> None:
        self.metrics = Metrics()
        self.services: Services | None = None
        """Set once startup has built every service, with the router that uses them."""
        self.heartbeat: WorkerHeartbeat | None = None
        self._router = Router()  # empty until then: every path a 404
        self._errors = ErrorResponses()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = "unmatched"
        try:
            matched = self._router.match(scope)
            if matched is None:
                raise NotFound(f"no route for {scope['path']!r}")
            route, methods = matched
            handler = methods.get(scope["method"])
            if handler is None:
                raise MethodNotAllowed(scope["method"], sorted(methods))
            response = await handler(scope, receive)
            if response.status == 503:
                response = self._errors.retry_later(response)
        except (HTTPError, Unavailable) as exc:
            response = self._errors.response(exc)
        except ClientDisconnected:
            return
        except Exception:
            # Handlers send nothing themselves, so nothing was sent yet: answer, then re-raise
            # so the server logs it.
            log.exception("unhandled error on %r %r", scope.get("method"), scope.get("path"))
            self.metrics.requests[(route, 500)] += 1
            await send_response(send, INTERNAL_ERROR)
            raise
        self.metrics.requests[(route, response.status)] += 1
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
        settings = Settings.from_env()
        logs.configure(settings.log_level)
        self.heartbeat = WorkerHeartbeat(settings)  # first: a slow startup is not a hang
        self.heartbeat.start()
        services = await Services.open(settings, self.metrics)
        handlers = services.handlers()
        self._router = Router(served_routes(settings), handlers)
        self._errors = ErrorResponses(settings.retry_after_s)
        self.services = services
        tune_collector(settings.gc_threshold)

    async def shutdown(self) -> None:
        if self.heartbeat is not None:
            await self.heartbeat.stop()
        if self.services is not None:
            await self.services.close()
        logs.flush()


def tune_collector(threshold: int) -> None:
    """Each request leaves a few container objects (messages, futures, tuples) for a while;
    with Python's default generation-0 threshold of 700 that ran a collection every ~40
    purchases, 6 to 10 µs of CPU per purchase under load (bench/history.md). Startup's objects
    (modules, services) never become garbage: frozen, no collection walks them again."""
    gc.freeze()
    if threshold:
        gc.set_threshold(threshold, *gc.get_threshold()[1:])


app = App()
