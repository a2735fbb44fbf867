"""Coalesced appends to the purchase stream.

Every request that asks to append during one event-loop turn joins the same batch; the
batch goes to Redis as one pipelined round trip and each request gets its own future back.
While ``max_inflight`` round trips are already waiting on Redis, new appends keep joining
the next batch, which is sent as soon as one returns: under load the batches grow instead
of the round trips multiplying.
"""

from __future__ import annotations

import asyncio
from typing import Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.constants import PAYLOAD_FIELD, STREAM
from gateway.errors import StoreUnavailable

_FIELD: Final = PAYLOAD_FIELD.encode()


class AppendStats:
    __slots__ = ("appends", "failed", "largest_batch", "round_trips")

    def __init__(self) -> None:
        self.appends = 0
        self.round_trips = 0
        self.largest_batch = 0
        self.failed = 0


class StreamAppender:
    def __init__(
        self, redis: Redis, *, stream: str = STREAM, max_inflight: int = 4, retry_after_s: int = 1
    ) -> None:
        self._redis = redis
        self._stream = stream.encode()
        self._max_inflight = max_inflight
        self._retry_after_s = retry_after_s
        self._batch: list[tuple[bytes, asyncio.Future[bytes]]] = []
        self._scheduled = False
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = AppendStats()

    async def append(self, payload: bytes) -> bytes:
        """Append one entry; returns its stream id once Redis has confirmed it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        self._batch.append((payload, future))
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

    async def _send(self, batch: list[tuple[bytes, asyncio.Future[bytes]]]) -> None:
        try:
            pipe = self._redis.pipeline(transaction=False)
            for payload, _ in batch:
                pipe.execute_command("XADD", self._stream, "*", _FIELD, payload)
            try:
                ids = await pipe.execute(raise_on_error=False)
            except (RedisError, OSError) as exc:
                self.stats.failed += len(batch)
                reason = f"purchase store unavailable: {type(exc).__name__}"
                for _, future in batch:
                    if not future.done():
                        future.set_exception(StoreUnavailable(reason, self._retry_after_s))
                return
            self.stats.round_trips += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            for (_, future), entry_id in zip(batch, ids, strict=True):
                if future.done():
                    continue
                if isinstance(entry_id, Exception):
                    self.stats.failed += 1
                    future.set_exception(
                        StoreUnavailable(
                            f"purchase store refused the append: {entry_id}", self._retry_after_s
                        )
                    )
                else:
                    self.stats.appends += 1
                    future.set_result(entry_id)
        finally:
            self._inflight -= 1
            if self._batch and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._dispatch)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
