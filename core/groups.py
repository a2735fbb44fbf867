"""A stream's consumer group as Redis reports it (XINFO GROUPS), read one way by all.

A stream that does not exist yet (nothing appended, or Redis lost its data) is a stream
without groups here, not an error: the readers (backlog, stranded streams, the tools)
report what is there; only the flusher creates the group.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from core.constants import GROUP
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
