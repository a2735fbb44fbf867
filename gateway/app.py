"""The ASGI callable: lifespan, routing by dict lookup, and the one place errors become HTTP."""

from __future__ import annotations

import logging

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core import logs
from core.flusher_stats import FLUSHER_FIELDS, read_published_stats
from core.groups import ensure_groups
from core.redis_clients import initialize, redis_client
from core.settings import Settings
from core.supervisor_status import read_status
from gateway import openapi
from gateway.appender import StreamAppender
from gateway.backlog import BacklogMonitor
from gateway.cache import ReadCache
from gateway.console.api import ConsoleApi
from gateway.deadlines import BodyDeadlines
from gateway.errors import (
    INTERNAL_ERROR,
    ClientDisconnected,
    HTTPError,
    MethodNotAllowed,
    NotFound,
    error_response,
)
from gateway.history import HistoryStore
from gateway.metrics import Metrics, counter, gauge, label
from gateway.nodes import Nodes
from gateway.purchase import PurchaseHandler
from gateway.reads import Reads
from gateway.request_ids import RequestIds
from gateway.responses import CONTENT_TYPE_TEXT, Response, json_response, send_response
from gateway.routing import Router
from gateway.types import Receive, Scope, Send

log = logging.getLogger("gateway")


_encoder = msgspec.json.Encoder()
_OK = _encoder.encode({"status": "ok"})


class App:
    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings
        self._appends: Nodes | None = None
        self._cache_nodes: Nodes | None = None
        self._control: Redis | None = None
        self._reads_redis: Redis | None = None
        self._appender: StreamAppender | None = None
        self._backlog: BacklogMonitor | None = None
        self._deadlines: BodyDeadlines | None = None
        self._router = Router()
        self.metrics = Metrics()
        self._history: HistoryStore | None = None
        self._cache: ReadCache | None = None
        self._console: ConsoleApi | None = None

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
        settings = self._settings or Settings.from_env()
        self._settings = settings
        logs.configure(settings.log_level)
        # Separate connections: readiness and backlog checks, reads and the read cache never
        # queue behind the appends.
        self._appends = Nodes(settings)
        self._cache_nodes = Nodes(settings)
        self._control = redis_client(settings, max_connections=4)
        self._reads_redis = redis_client(settings, max_connections=16)
        self._appender = StreamAppender(
            self._appends,
            shards=settings.stream_shards,
            idempotency_ttl_s=settings.idempotency_ttl_s,
            max_inflight=settings.append_max_inflight,
            max_pending=settings.append_max_pending,
            retry_after_s=settings.retry_after_s,
            ack_replicas=settings.ack_replicas,
            ack_replicas_timeout_ms=settings.ack_replicas_timeout_ms,
            batch_sizes=self.metrics.append_batch,
        )
        self._backlog = BacklogMonitor(
            self._control,
            shards=settings.stream_shards,
            max_age_s=settings.backlog_max_age_s,
            max_length=settings.backlog_max_length,
            stall_s=settings.backlog_stall_s,
            interval_s=settings.backlog_check_interval_s,
        )
        try:
            for connections in (self._appends, self._cache_nodes):
                await connections.start()
            for client in (self._control, self._reads_redis):
                await initialize(client)
            await ensure_groups(self._control, settings.stream_shards)
            await self._appender.load_script()
            await self._backlog.check()
        except (RedisError, OSError) as exc:
            # Start anyway: purchases get a 503 and /readyz says why until Redis is back.
            log.warning("Redis not reachable at start (%r); serving 503s until it is", exc)
        self._backlog.start()
        self._deadlines = BodyDeadlines(settings.body_timeout_s)
        self._deadlines.start()
        purchase = PurchaseHandler(
            self._appender,
            self._backlog,
            RequestIds(),
            self._deadlines,
            max_body_bytes=settings.max_body_bytes,
            retry_after_s=settings.retry_after_s,
            ack_latency=self.metrics.ack_latency,
            log_purchases=settings.log_purchases,
        )
        self._history = HistoryStore(
            settings.database_url,
            retry_after_s=settings.retry_after_s,
            max_size=settings.pg_pool_size,
        )
        self._cache = ReadCache(
            self._cache_nodes,
            ttl_s=settings.cache_ttl_s,
            immutable_ttl_s=settings.cache_immutable_ttl_s,
            enabled=settings.cache_enabled,
        )
        reads = Reads(self._history, self._cache, self._cache_nodes, settings.stream_shards)
        router = Router()
        router.add("/purchase", {"POST": purchase})
        router.add("/purchases", {"POST": purchase.batch})
        router.add("/transactions/{transaction_id}", {"GET": reads.transaction})
        router.add("/accounts/{account}", {"GET": reads.summary})
        router.add("/accounts/{account}/transactions", {"GET": reads.history})
        router.add("/healthz", {"GET": self._healthz})
        router.add("/readyz", {"GET": self._readyz})
        router.add("/metrics", {"GET": self._metrics})
        router.add("/openapi.json", {"GET": self._openapi})
        if settings.console:
            self._console = ConsoleApi(
                settings,
                self.metrics,
                self._appender.stats,
                self._cache.stats,
                self._backlog,
                self._history,
                self._reads_redis,
            )
            self._console.add_routes(router)
            self._console.sampler.start()
        self._router = router

    async def shutdown(self) -> None:
        if self._console is not None:
            await self._console.sampler.stop()
        if self._backlog is not None:
            await self._backlog.stop()
        if self._deadlines is not None:
            await self._deadlines.stop()
        if self._appender is not None:
            await self._appender.close()
        if self._history is not None:
            await self._history.close()
        for connections in (self._appends, self._cache_nodes):
            if connections is not None:
                await connections.close()
        for client in (self._control, self._reads_redis):
            if client is not None:
                await client.aclose()
        logs.flush()

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
        supervised = await self._supervised()
        if supervised:
            report["supervisor"] = supervised
        if self._backlog.refusal is not None:
            report["status"] = "overloaded"
            report["reason"] = self._backlog.refusal
            return json_response(503, _encoder.encode(report), retry)
        return json_response(200, _encoder.encode(report))

    async def _metrics(self, scope: Scope, receive: Receive) -> Response:
        assert self._appender is not None and self._backlog is not None
        assert self._cache is not None and self._history is not None
        stats, m = self._appender.stats, self.metrics
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
        backlog = self._backlog.last
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
        cache = self._cache.stats
        lines += counter("monokera_cache_hits_total", "Reads served from Redis.", cache.hits)
        lines += counter(
            "monokera_cache_misses_total", "Reads that went to PostgreSQL.", cache.misses
        )
        lines += counter(
            "monokera_pg_queries_total", "Read queries sent to PostgreSQL.", self._history.queries
        )
        lines += await self._flusher_metrics()
        lines += self._supervisor_metrics(await self._supervised())
        return Response(200, ("\n".join(lines) + "\n").encode(), [CONTENT_TYPE_TEXT])

    async def _flusher_metrics(self) -> list[str]:
        """What each flusher publishes in Redis (``flusher.worker.publish_stats``)."""
        assert self._control is not None
        try:
            published = await read_published_stats(self._control)
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

    async def _supervised(self) -> dict[str, dict[str, object]]:
        """The processes `make run` supervises, as it publishes them; empty elsewhere."""
        assert self._control is not None
        try:
            found = await read_status(self._control)
        except (RedisError, OSError):
            return {}
        return {name: msgspec.structs.asdict(status) for name, status in found.items()}

    @staticmethod
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
            [
                (f'{{process="{label(n)}"}}', int(supervised[n]["state"] == "running"))
                for n in names
            ],
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
