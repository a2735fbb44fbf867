"""Everything the handlers use, built whole at startup and released whole at shutdown.

``Services.open`` builds the Redis connections, the appender (and its watch for 943f4b2's
idempotency keys), the backlog monitor, the body deadlines, the history store, the read
cache, the handlers over them and the console; the app binds the route table to handlers
only once it holds a complete ``Services``, so no request can see a half-built gateway.
If building fails, what was built is closed again and the error reaches the lifespan
(``lifespan.startup.failed``). Redis being down is not such a failure: the gateway
starts, answers 503 and /readyz says why, until Redis is back (``gateway.redis_io.setup``
retries the setup meanwhile).
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from core.groups import ensure_groups
from core.redis_clients import initialize, redis_client
from core.settings import Settings
from gateway.api import openapi
from gateway.api import routes as service_routes
from gateway.console import routes as console_routes
from gateway.console.handlers import ConsoleApi
from gateway.http.deadlines import BodyDeadlines
from gateway.http.request_ids import RequestIds
from gateway.http.routing import Handler, Route
from gateway.ingest.appender import StreamAppender
from gateway.ingest.backpressure import BacklogMonitor
from gateway.ingest.legacy_keys import LegacyKeyWatch
from gateway.ingest.purchase import PurchaseHandler
from gateway.reads.cache import ReadCache
from gateway.reads.handlers import ReadHandlers
from gateway.reads.history import HistoryReader
from gateway.redis_io.nodes import Nodes
from gateway.redis_io.setup import RedisSetup
from gateway.status.probes import Probes
from gateway.status.prometheus import Exposition, WorkerSources
from gateway.status.shard_watch import ShardWatch
from gateway.telemetry.counters import Metrics
from gateway.telemetry.worker_board import WorkerBoard


def served_routes(settings: Settings) -> tuple[Route, ...]:
    """The service's routes, and the console's when it is on."""
    return service_routes.ROUTES + (console_routes.ROUTES if settings.console else ())


@dataclass(frozen=True, kw_only=True)
class Services:
    settings: Settings
    control: Redis
    """Readiness, backlog and /metrics reads: never queued behind the appends."""
    appender: StreamAppender
    backlog: BacklogMonitor
    shard_watch: ShardWatch
    history: HistoryReader
    cache: ReadCache
    purchase: PurchaseHandler
    reads: ReadHandlers
    probes: Probes
    console: ConsoleApi | None
    exposition: Exposition
    """/metrics: this worker's counters live, the other workers' from their readings."""
    closing: AsyncExitStack
    """Stops and closes what ``open`` started, in reverse order."""

    @classmethod
    async def open(cls, settings: Settings, metrics: Metrics) -> Services:
        closing = AsyncExitStack()
        try:
            return await cls._build(settings, metrics, closing)
        except BaseException:
            await closing.aclose()
            raise

    @classmethod
    async def _build(
        cls, settings: Settings, metrics: Metrics, closing: AsyncExitStack
    ) -> Services:
        # Separate connections: readiness and backlog checks, reads and the read cache never
        # queue behind the appends.
        control = redis_client(settings, max_connections=4)
        closing.push_async_callback(control.aclose)
        reads_redis = redis_client(settings, max_connections=16)
        closing.push_async_callback(reads_redis.aclose)
        appends = Nodes(settings)
        closing.push_async_callback(appends.close)
        cache_nodes = Nodes(settings)
        closing.push_async_callback(cache_nodes.close)
        history = HistoryReader(
            settings.database_url,
            max_size=settings.pg_pool_size,
        )
        closing.push_async_callback(history.close)
        appender = StreamAppender(
            appends,
            shards=settings.stream_shards,
            idempotency_ttl_s=settings.idempotency_ttl_s,
            idempotency_legacy_keys=settings.idempotency_legacy_keys,
            max_inflight=settings.append_max_inflight,
            max_pending=settings.append_max_pending,
            ack_replicas=settings.ack_replicas,
            ack_replicas_timeout_ms=settings.ack_replicas_timeout_ms,
            batch_sizes=metrics.append_batch,
        )
        closing.push_async_callback(appender.close)
        backlog = BacklogMonitor(
            control,
            shards=settings.stream_shards,
            max_age_s=settings.backlog_max_age_s,
            max_length=settings.backlog_max_length,
            stall_s=settings.backlog_stall_s,
            interval_s=settings.backlog_check_interval_s,
        )
        shard_watch = ShardWatch(control, settings.stream_shards, settings.shard_check_interval_s)

        async def prepare_redis() -> None:
            for connections in (appends, cache_nodes):
                await connections.start()
            for client in (control, reads_redis):
                await initialize(client)
            await ensure_groups(control, settings.stream_shards)
            await appender.load_script()

        async def first_measurements() -> None:
            await backlog.check()
            await shard_watch.check()

        setup = RedisSetup(prepare_redis)
        await setup.start(then=first_measurements)  # Redis away: retried in the background
        closing.push_async_callback(setup.stop)
        backlog.start()
        closing.push_async_callback(backlog.stop)
        legacy_keys = LegacyKeyWatch(appends, appender)
        legacy_keys.start()
        closing.push_async_callback(legacy_keys.stop)
        shard_watch.start()
        closing.push_async_callback(shard_watch.stop)
        deadlines = BodyDeadlines(settings.body_timeout_s)
        deadlines.start()
        closing.push_async_callback(deadlines.stop)
        purchase = PurchaseHandler(
            appender,
            backlog,
            RequestIds(),
            deadlines,
            max_body_bytes=settings.max_body_bytes,
            max_batch_items=settings.max_batch_items,
            max_batch_body_bytes=settings.max_batch_body_bytes,
            ack_latency=metrics.ack_latency,
            log_purchases=settings.log_purchases,
        )
        cache = ReadCache(
            cache_nodes,
            ttl_s=settings.cache_ttl_s,
            immutable_ttl_s=settings.cache_immutable_ttl_s,
            enabled=settings.cache_enabled,
        )
        sources = WorkerSources(metrics, appender.stats, cache.stats, history)
        board = None
        if settings.metrics_dir:
            board = WorkerBoard(Path(settings.metrics_dir))
            board.start(sources.read)
            closing.push_async_callback(board.stop)
        console = None
        if settings.console:
            console = ConsoleApi(
                settings,
                metrics,
                appender.stats,
                cache.stats,
                backlog,
                shard_watch,
                history,
                reads_redis,
            )
            console.sampler.start()
            closing.push_async_callback(console.sampler.stop)
        return cls(
            settings=settings,
            control=control,
            appender=appender,
            backlog=backlog,
            shard_watch=shard_watch,
            history=history,
            cache=cache,
            purchase=purchase,
            reads=ReadHandlers(
                history,
                cache,
                cache_nodes,
                settings.stream_shards,
                idempotency_window_s=settings.idempotency_ttl_s,
            ),
            probes=Probes(
                control,
                backlog,
                shard_watch,
                openapi.document(served_routes(settings), settings),
            ),
            console=console,
            exposition=Exposition(sources, board, backlog, shard_watch, control),
            closing=closing,
        )

    def handlers(self) -> dict[str, Handler]:
        """The handlers by the names the route tables (``served_routes``) give them."""
        handlers: dict[str, Handler] = {
            "purchase": self.purchase,
            "purchases": self.purchase.batch,
            "transaction": self.reads.transaction,
            "summary": self.reads.summary,
            "history": self.reads.history,
            "healthz": self.probes.healthz,
            "readyz": self.probes.readyz,
            "openapi": self.probes.openapi,
            "metrics": lambda scope, receive: self.exposition.response(),
        }
        if self.console is not None:
            handlers.update(self.console.handlers())
        return handlers

    async def close(self) -> None:
        """Stops the background tasks, then closes the pools and connections (in the
        reverse order of their opening)."""
        await self.closing.aclose()
