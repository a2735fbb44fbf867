"""A stream's consumer group as Redis reports it (XINFO GROUPS), read one way by all.

A stream that does not exist yet (nothing appended, or Redis lost its data) is a stream
without groups here, not an error: the readers (backlog, stranded streams, the tools)
report what is there. The gateway (at start) and the flusher create the groups, both
with ``ensure_group``.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from core.constants import GROUP, stream_key
from core.replies import text


async def groups_of(redis: Redis, stream: str) -> list[dict[Any, Any]]:
    """Every group of ``stream``; none if the stream does not exist."""
    try:
        groups: Any = await redis.xinfo_groups(stream)
    except ResponseError:
        return []
    return list(groups)


async def group_info(redis: Redis, stream: str, group: str = GROUP) -> dict[Any, Any] | None:
    """``group``'s entry (name, pending, last-delivered-id, ...), or None if it is missing."""
    return next((g for g in await groups_of(redis, stream) if text(g["name"]) == group), None)


async def ensure_group(redis: Redis, stream: str, group: str = GROUP) -> bool:
    """Create the group from the stream's start (no entry is ever skipped); True if it had
    to be created.

    Looks first: XGROUP CREATE is refused while Redis is out of memory, even for a group
    that exists, and a flusher must be able to start then (it only reads and acknowledges
    until memory is freed).
    """
    try:
        groups: Any = await redis.xinfo_groups(stream)
    except ResponseError as exc:
        if not is_missing_stream(exc):
            raise
        groups = []
    if any(text(g["name"]) == group for g in groups):
        return False
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" in str(exc):
            return False
        raise
    return True


async def ensure_groups(redis: Redis, shards: int, group: str = GROUP) -> None:
    """``ensure_group`` on every shard's stream."""
    for shard in range(shards):
        await ensure_group(redis, stream_key(shard), group)


def is_missing_stream(exc: ResponseError) -> bool:
    """The stream or the group is gone (deleted, or Redis restarted without its data)."""
    message = str(exc)
    return message.startswith(("NOGROUP", "UNBLOCKED")) or "no such key" in message
