"""The flusher: stream entries in, committed PostgreSQL rows out, acknowledged after commit.

Each step is a method of its own (``read_batch``, ``write_batch``, ``ack``,
``reclaim_idle``, ``trim``); ``run`` loops over them until stopped, ``drain`` runs them
until nothing is left and returns, which is what tests and one-shot catch-ups use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import TypeVar

from redis.exceptions import ResponseError

from core.cache_version import BatchHold
from core.entries import decode_all, raw
from core.flusher_stats import publish_stats
from core.groups import is_missing_stream
from core.heartbeat import Heartbeat
from core.redis_clients import REDIS_UNAVAILABLE
from core.replies import parse_id
from core.stranded import stranded_streams
from flusher.config import FlusherConfig
from flusher.errors import (
    REDIS_RETRYABLE,
    DatabaseUnavailable,
    StrandedEntries,
    StreamUnavailable,
    is_transient,
)
from flusher.ledger_writer import Decoded, LedgerWriter, Undecodable, WriteResult
from flusher.stream import Entry, GroupReader

log = logging.getLogger("flusher")

T = TypeVar("T")

MEMORY_PRESSURE_RATIO = 0.9
"""Redis's ``used_memory`` from this share of ``maxmemory`` on waives the stream retention."""

RETRYABLE: tuple[type[BaseException], ...] = (DatabaseUnavailable, *REDIS_RETRYABLE)
ACK_RETRYABLE: tuple[type[BaseException], ...] = (ResponseError, *REDIS_RETRYABLE)
"""What acknowledging retries (of the ResponseErrors, only the transient ones)."""


@dataclass(slots=True)
class FlusherStats:
    batches: int = 0
    entries: int = 0
    inserted: int = 0
    duplicates: int = 0
    conflicting_duplicates: int = 0
    redelivered: int = 0
    dead_letters: int = 0
    acked: int = 0
    reclaimed: int = 0
    trimmed: int = 0
    groups_recreated: int = 0
    store_retries: int = 0
    batch_seconds: float = 0.0
    batch_size_max: int = 0
    stream_retries: int = 0
    """Redis calls retried: unreachable, or refusing for a while (OOM, failover, ...)."""
    stats_publish_failures: int = 0


def decode_entries(entries: list[Entry]) -> tuple[list[Decoded], list[Undecodable]]:
    good: list[Decoded] = []
    bad: list[Undecodable] = []
    present = [(entry_id, fields) for entry_id, fields in entries if fields is not None]
    for entry_id, fields in entries:
        if fields is None:
            bad.append(Undecodable(entry_id, b"", "entry has no payload (deleted or trimmed)"))
    decoded = decode_all([fields for _, fields in present])
    for (entry_id, fields), event in zip(present, decoded, strict=True):
        if isinstance(event, ValueError):
            bad.append(Undecodable(entry_id, raw(fields), f"undecodable event: {event}"))
        else:
            good.append(Decoded(entry_id, event))
    return good, bad


class Flusher:
    def __init__(self, config: FlusherConfig, reader: GroupReader, writer: LedgerWriter) -> None:
        self.config = config
        self.reader = reader
        self.writer = writer
        self.stats = FlusherStats()
        self.last_committed_entry_id: str | None = None
        self.redis_out_of_memory = False
        """A hold was refused for memory, or INFO showed Redis near ``maxmemory``, and
        nothing since said otherwise: trim without waiting for the retention."""
        self._summed: dict[str, int] = {}
        """How much of our counters the flushers' sums in Redis hold (core.flusher_stats)."""
        self._stopping = asyncio.Event()
        self.heartbeat = Heartbeat.in_folder(
            config.heartbeat_dir, f"shard{reader.shard}", config.liveness_timeout_s
        )
        """Touched by this shard's loop as it goes round, and while it waits to retry: a
        flusher waiting for PostgreSQL or Redis to come back is alive, one stuck is not."""

    # -- steps ---------------------------------------------------------------------------

    async def read_batch(self, *, pending: bool = False) -> list[Entry]:
        """Up to ``batch_size`` entries. New entries that do not fill a batch wait
        ``batch_linger_ms`` once for more (Kafka's linger.ms): at moderate load every
        transaction, fsync and XACK then carries many purchases instead of a handful, for
        at most that much more flush delay. A full batch, or our own pending entries, never
        wait."""
        size, linger_ms = self.config.batch_size, self.config.batch_linger_ms
        entries = await self.reader.read(size, self.config.batch_wait_ms, pending=pending)
        if pending or not entries or not linger_ms or len(entries) >= size:
            return entries
        await self._sleep_unless_stopping(linger_ms / 1000)
        return entries + await self.reader.read(size - len(entries), None)

    async def write_batch(
        self, good: list[Decoded], bad: list[Undecodable], batch: BatchHold | None = None
    ) -> WriteResult:
        """Commit the batch, retrying while PostgreSQL is away; DatabaseUnavailable if stopped.

        ``batch``'s hold is taken inside the transaction, right before COMMIT: reads of its
        accounts skip the cache for the COMMIT and the release only, not for the batch's
        statements (and the wait for its accounts' locks) too."""
        before_commit = None if batch is None else partial(self.hold, batch)
        failures = 0
        while True:
            try:
                return await self.writer.write(good, bad, before_commit)
            except DatabaseUnavailable as exc:
                self.stats.store_retries += 1
                if self._stopping.is_set():
                    raise
                failures += 1
                delay_s = self.config.backoff.delay(failures)
                log.warning("store unavailable, retrying in %.2fs: %s", delay_s, exc)
                await self._sleep_unless_stopping(delay_s)

    async def hold(self, batch: BatchHold) -> None:
        """Before the commit: hold the batch's accounts' cached reads (core/cache_version).

        Retried while Redis is unreachable or refusing for a while: nothing is committed
        before cached reads are guarded. Out of memory is not waited for: the versions are
        deleted instead, and the retention of acknowledged entries is waived until Redis has
        memory again, so that trimming gives the memory back."""
        held = await self._retry_redis(
            "holding cached reads",
            partial(batch.hold, self.reader.redis, self.config.cache_ttl_s),
        )
        self._memory_short(not held, "Redis refuses writes for memory")

    def _memory_short(self, short: bool, why: str) -> None:
        """Record whether Redis is short of memory (a refused hold, or INFO at a trim): while
        it is, acknowledged entries are trimmed without the retention. Said on changes."""
        if short and not self.redis_out_of_memory:
            log.warning(
                "%s: committing, invalidating and acknowledging anyway, and trimming"
                " acknowledged entries without the %ss retention until it has memory again",
                why,
                self.config.stream_retain_s,
            )
        elif not short and self.redis_out_of_memory:
            log.info("Redis has memory again: the stream retention applies again")
        self.redis_out_of_memory = short

    async def ack(self, entries: list[Entry], batch: BatchHold | None = None) -> None:
        """XACK after the commit; retried, since a lost ack only means a harmless redelivery.

        ``batch`` (the hold on the accounts the committed batch touched) is released first:
        their versions deleted, their hold taken back. The XACK is sent only once that
        succeeded: an entry is acknowledged only when no cached read of its accounts can be
        served without it any more. Both need only commands Redis takes out of memory.
        """
        ids = [entry_id for entry_id, _ in entries]

        async def release_and_ack() -> None:
            if batch is not None and ids:
                await batch.release(self.reader.redis)
            self.stats.acked += await self.reader.ack(ids)

        await self._retry_redis("ack", release_and_ack)

    async def _retry_redis(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        """``step()``, retried with backoff while Redis is unreachable or refusing for a
        while; StreamUnavailable once stopping (the entries stay pending, delivered again)."""
        failures = 0
        while True:
            try:
                return await step()
            except ACK_RETRYABLE as exc:
                if isinstance(exc, ResponseError) and not is_transient(exc):
                    raise
                self.stats.stream_retries += 1
                if self._stopping.is_set():
                    raise StreamUnavailable(f"{what} failed while stopping") from exc
                failures += 1
                delay_s = self.config.backoff.delay(failures)
                log.warning("%s failed, retrying in %.2fs: %r", what, delay_s, exc)
                await self._sleep_unless_stopping(delay_s)

    async def reclaim_idle(self) -> list[Entry]:
        entries = await self.reader.claim_idle(self.config.claim_idle_ms, self.config.batch_size)
        self.stats.reclaimed += len(entries)
        return entries

    async def trim(self) -> int:
        """Acknowledged entries past the retention; all of them while Redis is out of
        memory or close to it, since the memory they hold is what lets purchases in again
        (the retention is for tracing; it never costs refused purchases)."""
        pressed = await self.reader.memory_pressure(MEMORY_PRESSURE_RATIO)
        self._memory_short(
            pressed, f"Redis memory at {MEMORY_PRESSURE_RATIO:.0%} of maxmemory or more"
        )
        if self.redis_out_of_memory:
            trimmed = await self.reader.trim(0.0, unlimited=True)
        else:
            trimmed = await self.reader.trim(self.config.stream_retain_s)
        self.stats.trimmed += trimmed
        return trimmed

    async def maintain_partitions(self) -> None:
        """Ledger partitions for the days ahead; the ones past the retention dropped."""
        changes = await self.writer.maintain_partitions(
            ahead_days=self.config.ledger_partitions_ahead_days,
            retention_days=self.config.ledger_retention_days,
        )
        if changes is None:
            log.warning(
                "ledger partition maintenance skipped: lock not available; retrying in %.0fs",
                self.config.ledger_maintenance_interval_s,
            )
            return
        for change in changes:
            log.info("ledger partition %s %s", change.partition, change.action)

    async def process(self, entries: list[Entry]) -> int:
        self.heartbeat.beat()
        if not entries:
            return 0
        started = time.monotonic()
        good, bad = decode_entries(entries)
        # Every account of the batch, not only the ones it will insert: after a crash
        # between COMMIT and release, the redelivered batch inserts nothing yet must still
        # invalidate what its first delivery left behind.
        batch = BatchHold(leg.account for item in good for leg in item.event.legs)
        result = await self.write_batch(good, bad, batch)
        newest = max(entries, key=lambda e: parse_id(e[0]))[0]
        if self.last_committed_entry_id is None or parse_id(newest) > parse_id(
            self.last_committed_entry_id
        ):
            self.last_committed_entry_id = newest
        await self.ack(entries, batch)
        self.stats.batches += 1
        self.stats.batch_seconds += time.monotonic() - started
        self.stats.batch_size_max = max(self.stats.batch_size_max, len(entries))
        self.stats.entries += len(entries)
        self.stats.inserted += result.inserted
        self.stats.duplicates += result.duplicates
        self.stats.conflicting_duplicates += result.conflicting
        self.stats.redelivered += result.redelivered
        self.stats.dead_letters += result.dead_letters
        return len(entries)

    # -- loops ---------------------------------------------------------------------------

    async def prepare(self) -> None:
        """What comes before the first batch: refuse streams stranded above the shard count,
        create the consumer group if it is missing, connect to PostgreSQL (migrating it),
        maintain the ledger partitions. It starts nothing: ``run`` and ``drain`` call it."""
        if self.reader.shard == 0:  # one check per flusher process is enough
            stranded = await stranded_streams(self.reader.redis, self.config.stream_shards)
            if stranded:
                raise StrandedEntries(self.config.stream_shards, stranded)
        created = await self.reader.ensure_group()
        if created:
            log.info("created consumer group %s on %s", self.reader.group, self.reader.stream)
        await self.writer.connect()  # migrates
        if self.reader.shard == 0:  # one worker per flusher process is enough
            await self.maintain_partitions()

    async def finish_own_pending(self) -> int:
        done = 0
        while entries := await self.read_batch(pending=True):
            done += await self.process(entries)
        return done

    async def reclaim_all(self) -> int:
        """Sweep the whole pending list once, taking over what idled too long."""
        done = 0
        while True:
            done += await self.process(await self.reclaim_idle())
            if self.reader.claim_sweep_done:
                break
        # Redis 6.2 claims entries deleted meanwhile without returning them; as our own
        # pending entries they come back, payload-less, to be dead-lettered.
        return done + await self.finish_own_pending()

    async def drain(self) -> int:
        """Burst mode: own pending, idle ones of others, then new entries until none are left."""
        await self.prepare()
        done = await self.finish_own_pending() + await self.reclaim_all()
        while entries := await self.reader.read(self.config.batch_size, None):
            done += await self.process(entries)
        return done

    async def run(self) -> None:
        self.heartbeat.beat()
        await self._retrying(self.prepare)
        await self._retrying(self.finish_own_pending)
        next_reclaim = next_trim = next_publish = 0.0
        next_partitions = time.monotonic() + self.config.ledger_maintenance_interval_s
        while not self._stopping.is_set():
            self.heartbeat.beat()
            now = time.monotonic()
            if now >= next_partitions and self.reader.shard == 0:
                await self._retrying(self.maintain_partitions)
                next_partitions = now + self.config.ledger_maintenance_interval_s
            if now >= next_publish:
                await self._retrying(self.publish_stats)
                next_publish = now + 1.0
            if now >= next_reclaim:
                await self._retrying(self.reclaim_all)
                next_reclaim = now + self.config.reclaim_interval_s
            if now >= next_trim:
                await self._retrying(self.trim)
                next_trim = now + self.config.trim_interval_s
            await self._retrying(self._read_and_process)

    async def _read_and_process(self) -> None:
        await self.process(await self.read_batch())

    async def _retrying(self, step: Callable[[], Awaitable[object]]) -> None:
        """Run one step, retrying with backoff while Redis or PostgreSQL is away.

        A missing stream or group becomes the next step: recovering from it can meet
        Redis or PostgreSQL away too, and is retried the same way.
        """
        failures = 0
        while not self._stopping.is_set():
            self.heartbeat.beat()
            delay_s = self.config.backoff.delay(failures + 1)
            try:
                await step()
                return
            except StreamUnavailable:
                return  # only raised once stopping
            except ResponseError as exc:
                if is_missing_stream(exc):
                    reason = str(exc)
                    step = partial(self.recover_missing_stream, reason, then=step)
                    continue
                if not is_transient(exc):
                    raise
                self.stats.stream_retries += 1
                log.warning(
                    "Redis refused (%s: %s), retrying in %.2fs", type(exc).__name__, exc, delay_s
                )
            except RETRYABLE as exc:
                if self._stopping.is_set():
                    return
                self.stats.stream_retries += not isinstance(exc, DatabaseUnavailable)
                log.warning("%s, retrying in %.2fs", exc, delay_s)
            failures += 1
            await self._sleep_unless_stopping(delay_s)

    async def recover_missing_stream(
        self, reason: str, then: Callable[[], Awaitable[object]] | None = None
    ) -> None:
        """Say it loudly, record it in PostgreSQL, recreate the group from the start.

        Entries acknowledged by the gateway but not yet flushed when Redis lost the stream
        are gone with it; the incident row names the last entry this flusher committed.
        """
        self.stats.groups_recreated += 1
        log.error(
            "stream %s or group %s missing (deleted, or Redis lost its data): %s;"
            " purchases acknowledged after entry %s and not yet flushed may be lost;"
            " recreating the group from the start of the stream",
            self.reader.stream,
            self.reader.group,
            reason,
            self.last_committed_entry_id,
        )
        await self.writer.record_incident(
            self.reader.consumer, reason, self.last_committed_entry_id
        )
        await self.reader.ensure_group()

    async def _sleep_unless_stopping(self, delay: float) -> None:
        self.heartbeat.beat()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    @property
    def name(self) -> str:
        """The consumer, and the shard when it is not the first: one name per worker."""
        reader = self.reader
        return reader.consumer if reader.shard == 0 else f"{reader.consumer}:shard{reader.shard}"

    async def publish_stats(self) -> None:
        """For the gateway's /metrics and console: this flusher's counters and the shard
        count it runs with, in Redis.

        Best effort: the first write a Redis out of memory refuses, and figures that cannot
        be published must not stop the flushing that frees the memory.
        """
        st = self.stats
        try:
            await self._publish(st)
        except REDIS_UNAVAILABLE as exc:
            st.stats_publish_failures += 1
            log.warning("could not publish flusher stats: %s: %s", type(exc).__name__, exc)

    async def _publish(self, st: FlusherStats) -> None:
        await publish_stats(
            self.reader.redis,
            self.name,
            st,
            shards=self.config.stream_shards,
            summed=self._summed,
        )

    def stop(self) -> None:
        """Idempotent: finish the batch in hand, then return from ``run``."""
        self._stopping.set()

    def summary(self) -> dict[str, int]:
        return asdict(self.stats)
