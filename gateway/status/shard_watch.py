"""Does a flusher read every stream this gateway writes? The shard counts in use, watched.

``MONOKERA_STREAM_SHARDS`` must be the same in every gateway and flusher; the flusher
checks it only when it starts (``core.stranded``). During a rolling change a gateway with
a higher count than the flushers' answers 200 for purchases appended to streams no
flusher reads. So every ``shard_check_interval_s`` each gateway worker beats in the
registry of live processes (``core.live``) with its own count, as every flusher does with
its, reads who else is there, and probes the streams no live flusher reads for entries not
yet flushed. The request path and /readyz, /metrics and the console only read ``last``.

How it is judged (``ShardReading.status``), and what /readyz makes of it:

- ``writes_unread``: this gateway's count is above every live flusher's: part of what it
  acknowledges goes where nobody reads. /readyz answers 503, so a load balancer stops
  sending it purchases while the others (and a rollback) go on.
- ``unread``: a stream no live flusher reads holds unflushed entries (another gateway
  wrote them, or the count was lowered too early): degraded, still ready (200); this
  gateway is not the cause, and taking every gateway out would stop all purchases.
- ``mismatch``: the live processes run with different counts, nothing unread (yet):
  degraded, still ready; retries may miss their idempotency record (docs/api.md).
- ``unknown``: no flusher is alive (or Redis does not answer): not judged here; the
  backlog's backpressure covers a backlog that nobody drains.
- ``ok``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field

from redis.asyncio import Redis

from core.lifetime_task import LifetimeTask
from core.live import heartbeat, live_members
from core.redis_clients import REDIS_UNAVAILABLE
from core.stranded import stranded_streams

log = logging.getLogger("gateway.shards")


@dataclass(frozen=True, slots=True)
class ShardReading:
    own: int
    """This gateway's ``MONOKERA_STREAM_SHARDS``."""
    publishers: dict[tuple[str, int], int] = field(default_factory=dict)
    """Live publishers (gateway workers, flusher workers) by (role, shard count)."""
    unread: dict[str, int] = field(default_factory=dict)
    """Streams no live flusher reads, with their unflushed entries (none when unknown)."""

    @property
    def flusher_reads(self) -> int | None:
        """Streams 0..n-1 are read: n is the largest count of a live flusher."""
        counts = [shards for role, shards in self.publishers if role == "flusher"]
        return max(counts) if counts else None

    @property
    def mismatch(self) -> bool:
        return len({shards for _, shards in self.publishers} | {self.own}) > 1

    @property
    def status(self) -> str:
        reads = self.flusher_reads
        if reads is None:
            return "unknown"
        if self.own > reads:
            return "writes_unread"
        if self.unread:
            return "unread"
        return "mismatch" if self.mismatch else "ok"

    def report(self) -> dict[str, object]:
        """For /readyz and the console."""
        return {
            "status": self.status,
            "own": self.own,
            "flushers_read": self.flusher_reads,
            "publishers": [
                {"role": role, "shards": shards, "count": count}
                for (role, shards), count in sorted(self.publishers.items())
            ],
            "unread": self.unread,
        }


class ShardWatch:
    def __init__(self, redis: Redis, shards: int, interval_s: float) -> None:
        self._redis = redis
        self._shards = shards
        self._interval_s = interval_s
        self._name = f"{socket.gethostname()}:{os.getpid()}"
        self._background = LifetimeTask()
        self.last: ShardReading | None = None

    async def beat(self) -> None:
        """Best effort: a refused heartbeat (out of memory) must not stop the reading."""
        try:
            pipe = self._redis.pipeline(transaction=False)
            heartbeat(pipe, "gateway", self._shards, self._name)
            await pipe.execute()
        except REDIS_UNAVAILABLE as exc:
            log.debug("shard count heartbeat failed: %r", exc)

    async def check(self) -> None:
        await self.beat()
        publishers: dict[tuple[str, int], int] = {}
        for m in await live_members(self._redis):
            publishers[(m.role, m.shards)] = publishers.get((m.role, m.shards), 0) + 1
        reading = ShardReading(self._shards, publishers)
        reads = reading.flusher_reads
        if reads is not None:
            stranded = await stranded_streams(self._redis, reads)
            reading = ShardReading(
                self._shards, publishers, {s.stream: s.unflushed for s in stranded}
            )
        if self.last is None or reading.status != self.last.status:
            if reading.status in ("ok", "unknown"):
                log.info("stream shard counts: %s", reading.status)
            else:
                log.warning("stream shard counts: %s: %s", reading.status, reading.report())
        self.last = reading

    async def _loop(self) -> None:
        while True:
            try:
                await self.check()
            except REDIS_UNAVAILABLE as exc:
                log.debug("shard count check failed: %r", exc)
                self.last = None
            except Exception:  # anything else: a dead loop would freeze the verdict for good
                log.exception("shard count check failed")
                self.last = None
            await asyncio.sleep(self._interval_s)

    def start(self) -> None:
        self._background.run(self._loop())

    async def stop(self) -> None:
        await self._background.stop()
