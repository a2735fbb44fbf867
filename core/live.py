"""Who runs now, and with how many stream shards: a heartbeat registry in Redis.

Every gateway worker and every flusher worker adds itself to one sorted set, scored by the
Unix time of its last heartbeat, as ``role|shards|name``. Each heartbeat also prunes the
members older than ``LIVE_FOR_S``, and readers ignore them, so a process that died or was
renamed disappears by itself (the ``monokera:flushers`` set this replaces only grew).
The shard count in the member is what lets a gateway see that the flushers read fewer
streams than it writes (``gateway.status.shard_watch``); the flusher names are what /metrics
looks up the published figures by (``core.flusher_stats``).

Heartbeats are best effort: a Redis that is out of memory refuses ZADD, its publishers
then fall out of the set after ``LIVE_FOR_S``, and readers see fewer processes, never a
false mismatch. Scores are the publishers' clocks: hosts need to agree within seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final, Literal

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from core.replies import text

LIVE: Final = b"monokera:live"
LIVE_FOR_S: Final = 30.0
"""A member whose last heartbeat is older than this is gone. Publishers beat every few
seconds at most (the gateway's ``shard_check_interval_s`` is capped at 10)."""

Role = Literal["gateway", "flusher"]
ROLES: Final[tuple[Role, ...]] = ("gateway", "flusher")


@dataclass(frozen=True, slots=True)
class Member:
    role: Role
    shards: int
    name: str


def member(role: Role, shards: int, name: str) -> bytes:
    return f"{role}|{shards}|{name}".encode()


def parse_member(raw: bytes | str) -> Member | None:
    """None for a member this release does not understand (never raised: a reader must
    not fail on what another release wrote)."""
    role, _, rest = text(raw).partition("|")
    shards, _, name = rest.partition("|")
    if role not in ROLES or not shards.isdigit():
        return None
    return Member(role, int(shards), name)


def heartbeat(pipe: Pipeline, role: Role, shards: int, name: str, now: float | None = None) -> None:
    """Queue on ``pipe`` this process's heartbeat and the pruning of the departed."""
    now = time.time() if now is None else now
    pipe.zadd(LIVE, {member(role, shards, name): now})
    pipe.zremrangebyscore(LIVE, "-inf", f"({now - LIVE_FOR_S}")


async def live_members(redis: Redis, now: float | None = None) -> list[Member]:
    """Every member that beat within ``LIVE_FOR_S``, sorted by role, shards and name."""
    now = time.time() if now is None else now
    raw: Any = await redis.zrangebyscore(LIVE, now - LIVE_FOR_S, "+inf")
    found = [m for m in map(parse_member, raw) if m is not None]
    return sorted(found, key=lambda m: (m.role, m.shards, m.name))
