"""The ASGI callable: lifespan, routing by dict lookup, and the one place errors become HTTP."""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from core import logs
from core.flusher_stats import FLUSHER_FIELDS, read_published_stats
from core.settings import Settings
from gateway import routes
from gateway.errors import (
    INTERNAL_ERROR,
    ClientDisconnected,
    HTTPError,
    MethodNotAllowed,
    NotFound,
    error_response,
)
from gateway.metrics import Metrics, counter, gauge, label
from gateway.probes import supervised
from gateway.responses import CONTENT_TYPE_TEXT, Response, send_response
from gateway.routing import Router
from gateway.services import Services
from gateway.types import Receive, Scope, Send

log = logging.getLogger("gateway")


class App:
    def __init__(self) -> None:
        self.metrics = Metrics()
        self.services: Services | None = None
        """Set once startup has built every service, with the router that uses them."""
        self._router = Router()  # empty until then: every path a 404

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
        except HTTPError as exc:
            response = error_response(exc)
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
        services = await Services.open(settings, self.metrics)
        handlers = services.handlers()
        handlers["metrics"] = lambda scope, receive: render_metrics(services, self.metrics)
        self._router = Router(routes.served(settings), handlers)
        self.services = services

    async def shutdown(self) -> None:
        if self.services is not None:
            await self.services.close()
        logs.flush()


async def render_metrics(services: Services, m: Metrics) -> Response:
    """GET /metrics: the Prometheus text of this worker's counters."""
    stats = services.appender.stats
    lines = [
        "# HELP monokera_http_requests_total Requests answered, by route and status.",
        "# TYPE monokera_http_requests_total counter",
    ]
    lines += [
        f'monokera_http_requests_total{{route="{label(r)}",status="{s}"}} {n}'
        for (r, s), n in sorted(m.requests.items())
    ]
    lines += m.ack_latency.render(
        "monokera_purchase_ack_seconds", "Time from request to Redis-confirmed append."
    )
    lines += m.append_batch.render(
        "monokera_append_batch_size",
        "Purchases per append script call (one per shard per round trip).",
    )
    lines += counter("monokera_stream_appends_total", "Purchases appended.", stats.appends)
    lines += counter(
        "monokera_idempotent_replays_total", "Retries answered by replay.", stats.replays
    )
    lines += counter(
        "monokera_stream_append_failures_total", "Appends that got a 503.", stats.failed
    )
    lines += counter(
        "monokera_redis_append_round_trips_total", "Append round trips.", stats.round_trips
    )
    backlog = services.backlog.last
    if backlog is not None:
        lines += gauge(
            "monokera_stream_length", "Entries in the stream.", [("", backlog.stream_length)]
        )
        lines += gauge(
            "monokera_consumer_pending",
            "Entries delivered, not acknowledged.",
            [("", backlog.pending)],
        )
        lines += gauge(
            "monokera_consumer_lag_seconds",
            "Age of the oldest entry the flusher has not acknowledged.",
            [("", backlog.oldest_unflushed_age_s)],
        )
    cache = services.cache.stats
    lines += counter("monokera_cache_hits_total", "Reads served from Redis.", cache.hits)
    lines += counter("monokera_cache_misses_total", "Reads that went to PostgreSQL.", cache.misses)
    lines += counter(
        "monokera_pg_queries_total", "Read queries sent to PostgreSQL.", services.history.queries
    )
    lines += await _flusher_metrics(services.control)
    lines += _supervisor_metrics(await supervised(services.control))
    return Response(200, ("\n".join(lines) + "\n").encode(), [CONTENT_TYPE_TEXT])


async def _flusher_metrics(control: Redis) -> list[str]:
    """What each flusher publishes in Redis (``flusher.worker.publish_stats``)."""
    try:
        published = await read_published_stats(control)
    except (RedisError, OSError):
        return []
    lines: list[str] = []
    for field, help_text in FLUSHER_FIELDS.items():
        samples = [
            (f'{{consumer="{label(consumer)}"}}', float(values.get(field, 0)))
            for consumer, values in sorted(published.items())
        ]
        if samples:
            lines += [
                f"# HELP monokera_flusher_{field} {help_text}",
                f"# TYPE monokera_flusher_{field} {'gauge' if field.endswith('_max') else 'counter'}",
            ]
            lines += [f"monokera_flusher_{field}{labels} {value}" for labels, value in samples]
    return lines


def _supervisor_metrics(supervised: dict[str, dict[str, object]]) -> list[str]:
    if not supervised:
        return []
    names = sorted(supervised)
    lines = [
        "# HELP monokera_supervisor_restarts_total Restarts of a child process by `make run`.",
        "# TYPE monokera_supervisor_restarts_total counter",
    ]
    lines += [
        f'monokera_supervisor_restarts_total{{process="{label(n)}"}} {supervised[n]["restarts"]}'
        for n in names
    ]
    lines += gauge(
        "monokera_supervisor_up",
        "1 while the child process runs, 0 while it is down or restarting.",
        [(f'{{process="{label(n)}"}}', int(supervised[n]["state"] == "running")) for n in names],
    )
    lines += gauge(
        "monokera_supervisor_last_exit_code",
        "The child's last exit status (negative: the signal that killed it).",
        [
            (f'{{process="{label(n)}"}}', code)
            for n in names
            if isinstance(code := supervised[n]["last_exit_code"], int)
        ],
    )
    return lines


app = App()
