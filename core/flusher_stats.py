"""Flusher figures published in Redis, for the gateway's /metrics to expose.

The flusher has no HTTP server of its own; once a second it writes its counters to a hash
(expiring, so a dead flusher disappears) and beats in the registry of live processes
(``core.live``), which is where readers find the flushers' names. ``FLUSHER_STATS`` is
the one list of those figures: the flusher publishes by it and the gateway collects by it,
so a figure added here shows in /metrics with its type and help, and nowhere else names a
hash field.

The console's sampler reads, in every gateway worker every second, the flushers' batches
and rows: rather than every live flusher's hash, it reads one hash, ``TOTALS``, that each
flusher adds its increments to (``SUMMED``). Those sums only grow (a flusher that
restarts counts from zero again in its own hash, not there), so rates taken from them
never dip when a flusher dies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from redis.asyncio import Redis

from core.live import heartbeat, live_members

STATS_PREFIX: Final = b"monokera:flusher:stats:"
STATS_TTL_S: Final = 60
TOTALS: Final = b"monokera:flusher:totals"
"""Summed over every flusher that ever ran: the ``SUMMED`` figures, by name."""


@dataclass(frozen=True, slots=True)
class FlusherStat:
    name: str
    """The hash field, and the metric ``monokera_flusher_<name>``."""
    source: str
    """The attribute of the flusher's own stats object (``flusher.worker.FlusherStats``)."""
    kind: Literal["counter", "max"]
    """``max``: the largest value so far, exposed as a gauge."""
    help: str

    @property
    def metric(self) -> str:
        return f"monokera_flusher_{self.name}"


BATCHES: Final = FlusherStat("batches_total", "batches", "counter", "Batches committed.")
ENTRIES: Final = FlusherStat("entries_total", "entries", "counter", "Stream entries processed.")
ROWS_WRITTEN: Final = FlusherStat(
    "rows_written_total",
    "inserted",
    "counter",
    "Purchases written (a transaction row and two ledger legs each).",
)
DUPLICATES: Final = FlusherStat(
    "duplicates_total",
    "duplicates",
    "counter",
    "Entries recorded as duplicates of an earlier transaction_id (conflicting ones included).",
)
CONFLICTING_DUPLICATES: Final = FlusherStat(
    "conflicting_duplicates_total",
    "conflicting_duplicates",
    "counter",
    "Duplicates naming other accounts or another amount than the stored purchase: answered"
    " 200 past the idempotency window, not what the ledger holds.",
)
REDELIVERED: Final = FlusherStat(
    "redelivered_total",
    "redelivered",
    "counter",
    "Entries delivered again after a crash, written nothing.",
)
DEAD_LETTERS: Final = FlusherStat(
    "dead_letters_total", "dead_letters", "counter", "Entries stored as dead letters."
)
BATCH_SECONDS: Final = FlusherStat(
    "batch_seconds_total",
    "batch_seconds",
    "counter",
    "Time spent writing and acknowledging batches.",
)
BATCH_SIZE_MAX: Final = FlusherStat(
    "batch_size_max", "batch_size_max", "max", "Largest batch so far (a gauge)."
)
FLUSHER_STATS: Final = (
    BATCHES,
    ENTRIES,
    ROWS_WRITTEN,
    DUPLICATES,
    CONFLICTING_DUPLICATES,
    REDELIVERED,
    DEAD_LETTERS,
    BATCH_SECONDS,
    BATCH_SIZE_MAX,
)

SUMMED: Final = (BATCHES, ROWS_WRITTEN)
"""What the console charts as rates, kept summed over the flushers in ``TOTALS``."""

FlusherFigures = dict[str, float]
"""One flusher's published figures by ``FlusherStat.name``; each table entry present."""


async def publish_stats(
    redis: Redis,
    consumer: str,
    stats: object,
    *,
    shards: int = 1,
    summed: dict[str, int] | None = None,
) -> None:
    """Every ``FLUSHER_STATS`` figure, read from ``stats`` by its ``source`` attribute, and
    a heartbeat naming ``shards``, the stream count this flusher runs with.

    ``summed`` is how much of each ``SUMMED`` counter ``TOTALS`` already holds from this
    flusher; what grew since is added there, and ``summed`` moves on once Redis took it.
    Refused (out of memory), it is added at a later publish instead.
    """
    key = STATS_PREFIX + consumer.encode()
    pipe = redis.pipeline(transaction=False)
    pipe.hset(key, mapping={s.name: str(getattr(stats, s.source)) for s in FLUSHER_STATS})
    pipe.expire(key, STATS_TTL_S)
    heartbeat(pipe, "flusher", shards, consumer)
    grown: dict[str, int] = {}
    if summed is not None:
        for s in SUMMED:
            if (n := int(getattr(stats, s.source)) - summed.get(s.name, 0)) > 0:
                grown[s.name] = n
                pipe.hincrby(TOTALS, s.name, n)
    replies = await pipe.execute(raise_on_error=False)
    if summed is not None and not any(
        isinstance(r, Exception) for r in replies[len(replies) - len(grown) :]
    ):
        for name, n in grown.items():
            summed[name] = summed.get(name, 0) + n
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


async def read_summed(redis: Redis) -> dict[str, float]:
    """The ``SUMMED`` figures over every flusher so far: one HMGET, however many flushers."""
    raw: Any = await redis.hmget(TOTALS, [s.name for s in SUMMED])
    return {
        s.name: _number(None if v is None else v.decode()) for s, v in zip(SUMMED, raw, strict=True)
    }


async def read_published_stats(redis: Redis) -> dict[str, dict[str, str]]:
    """Each live flusher's hash as text, by consumer (what ``make trace`` prints)."""
    consumers = sorted({m.name for m in await live_members(redis) if m.role == "flusher"})
    if not consumers:
        return {}
    pipe = redis.pipeline(transaction=False)
    for consumer in consumers:
        pipe.hgetall(STATS_PREFIX + consumer.encode())
    found: dict[str, dict[str, str]] = {}
    for consumer, raw in zip(consumers, await pipe.execute(), strict=True):
        if raw:
            found[consumer] = {k.decode(): v.decode() for k, v in raw.items()}
    return found


async def read_flusher_stats(redis: Redis) -> dict[str, FlusherFigures]:
    """Each live flusher's figures as numbers, by consumer: a field missing or not a
    number (an older flusher) reads as 0 rather than failing a scrape."""
    return {
        consumer: {s.name: _number(values.get(s.name)) for s in FLUSHER_STATS}
        for consumer, values in (await read_published_stats(redis)).items()
    }


def _number(text: str | None) -> float:
    try:
        return float(text) if text is not None else 0.0
    except ValueError:
        return 0.0
