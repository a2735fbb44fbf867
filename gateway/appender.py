"""Coalesced, idempotent appends to the purchase stream.

Every request that asks to append during one event-loop turn joins the same batch; the
batch goes to Redis as one script call (``append.lua``) in one round trip, and each request
gets its own future back. While ``max_inflight`` round trips are already waiting on Redis,
new appends keep joining the next batch, which is sent as soon as one returns: under load
the batches grow instead of the round trips multiplying.

The script checks each purchase's idempotency key and appends it in the same atomic step,
so concurrent retries of one transaction_id produce exactly one stream entry.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from importlib.resources import files
from typing import Final

from redis.exceptions import NoScriptError, RedisError

from core.constants import IDEMPOTENCY_PREFIX, STREAM
from gateway.errors import Overloaded, StoreUnavailable
from gateway.metrics import BATCH_BUCKETS, Histogram
from gateway.redis_pipe import RedisPipe

APPEND_SCRIPT: Final = (files("gateway") / "append.lua").read_bytes()


@dataclass(frozen=True, slots=True)
class Appended:
    entry_id: bytes
    """The stream entry holding this purchase (the original one for a replay)."""
    replayed: bool = False
    """The transaction_id was already appended within the idempotency window."""
    fingerprint: bytes = b""
    """For a replay: the fingerprint the first request had."""


@dataclass(frozen=True, slots=True)
class Pending:
    key: bytes
    fingerprint: bytes
    payload: bytes
    future: asyncio.Future[Appended]


class AppendStats:
    __slots__ = ("appends", "failed", "replays", "round_trips")

    def __init__(self) -> None:
        self.appends = 0
        self.replays = 0
        self.round_trips = 0
        self.failed = 0


class StreamAppender:
    def __init__(
        self,
        redis: RedisPipe,
        *,
        stream: str = STREAM,
        idempotency_ttl_s: int = 900,
        max_inflight: int = 4,
        max_pending: int = 10_000,
        retry_after_s: int = 1,
        ack_replicas: int = 0,
        ack_replicas_timeout_ms: int = 100,
        batch_sizes: Histogram | None = None,
    ) -> None:
        self._redis = redis
        self._stream = stream.encode()
        self._ttl = str(idempotency_ttl_s).encode()
        self._max_inflight = max_inflight
        self._max_pending = max_pending
        self._retry_after_s = retry_after_s
        self._ack_replicas = ack_replicas
        self._ack_replicas_timeout_ms = ack_replicas_timeout_ms
        self._sha: str | None = None
        self._batch: list[Pending] = []
        self._scheduled = False
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = AppendStats()
        self._batch_sizes = batch_sizes or Histogram(BATCH_BUCKETS)

    async def load_script(self) -> None:
        self._sha = (await self._redis.call(b"SCRIPT", b"LOAD", APPEND_SCRIPT)).decode()

    async def append(self, transaction_id: str, fingerprint: bytes, payload: bytes) -> Appended:
        """Append one purchase unless its transaction_id is known; once Redis confirmed it."""
        if len(self._batch) >= self._max_pending:
            raise Overloaded(
                f"{len(self._batch)} purchases already waiting for Redis", self._retry_after_s
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Appended] = loop.create_future()
        key = IDEMPOTENCY_PREFIX + transaction_id.encode()
        self._batch.append(Pending(key, fingerprint, payload, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._dispatch)
        return await future

    def _dispatch(self) -> None:
        self._scheduled = False
        if not self._batch or self._inflight >= self._max_inflight:
            return  # a returning round trip dispatches what waits
        batch, self._batch = self._batch, []
        self._inflight += 1
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[Pending]) -> None:
        try:
            try:
                results = await self._call(batch)
            except (RedisError, OSError) as exc:
                self._fail(batch, f"purchase store unavailable: {type(exc).__name__}")
                return
            except BaseException:
                # Cancelled at shutdown, or a bug: nobody may wait forever for an answer.
                self._fail(batch, "purchase store call did not complete")
                raise
            self.stats.round_trips += 1
            self._batch_sizes.observe(len(batch))
            for item, result in zip(batch, results, strict=True):
                if item.future.done():
                    continue  # the client went away; the purchase is appended all the same
                fingerprint, sep, entry_id = result.rpartition(b"|")
                if sep:
                    self.stats.replays += 1
                    item.future.set_result(Appended(entry_id, True, fingerprint))
                else:
                    self.stats.appends += 1
                    item.future.set_result(Appended(result))
        finally:
            self._inflight -= 1
            if self._batch and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._dispatch)

    async def _call(self, batch: list[Pending]) -> list[bytes]:
        if self._sha is None:
            await self.load_script()
        keys: list[bytes] = [self._stream]
        args: list[bytes] = [self._ttl]
        for item in batch:
            keys.append(item.key)
            args.append(item.fingerprint)
            args.append(item.payload)
        commands: list[tuple[bytes | str | int, ...]] = [
            (b"EVALSHA", self._sha or "", len(keys), *keys, *args)
        ]
        if self._ack_replicas:
            commands.append((b"WAIT", self._ack_replicas, self._ack_replicas_timeout_ms))
        try:
            replies = await self._redis.call_many(commands)
        except NoScriptError:
            # Redis restarted or flushed its scripts: nothing ran, so running again is safe.
            await self.load_script()
            return await self._call(batch)
        if self._ack_replicas and int(replies[1]) < self._ack_replicas:
            raise ReplicationLag(f"{replies[1]} of {self._ack_replicas} replicas confirmed")
        return list(replies[0])

    def _fail(self, batch: list[Pending], reason: str) -> None:
        self.stats.failed += len(batch)
        for item in batch:
            if not item.future.done():
                item.future.set_exception(StoreUnavailable(reason, self._retry_after_s))

    async def close(self) -> None:
        """Send what is queued, then wait for every round trip in flight."""
        while self._batch or self._tasks:
            if self._batch and self._inflight < self._max_inflight:
                self._dispatch()
            if self._tasks:
                await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)


class ReplicationLag(RedisError):
    """Appended on the primary, but fewer replicas than required confirmed it in time."""
