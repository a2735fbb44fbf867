"""The flusher's side of the Redis stream: read, acknowledge, reclaim, trim."""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis

from core.constants import GROUP, stream_key
from core.entries import Fields
from core.groups import ensure_group
from core.redis_clients import is_cluster
from core.replies import format_id, parse_id, text

Entry = tuple[str, Fields | None]
"""A stream entry id and its fields (None when it has none: deleted or trimmed)."""


def _entries(raw: list[Any]) -> list[Entry]:
    out: list[Entry] = []
    for item in raw:
        if not item or item[0] is None:
            continue  # Redis 6.2 XAUTOCLAIM: a nil for an entry deleted meanwhile
        entry_id, fields = item
        eid = text(entry_id)
        # A pending entry that was trimmed or deleted comes back with no fields.
        out.append((eid, fields or None))
    return out


class GroupReader:
    def __init__(
        self,
        redis: Redis,
        consumer: str,
        *,
        shard: int = 0,
        group: str = GROUP,
    ):
        self.redis = redis
        self.consumer = consumer
        self.shard = shard
        self.stream = stream_key(shard)
        self.group = group
        self._claim_cursor = "0-0"

    async def ensure_group(self) -> bool:
        """Create the group from the stream's start; True if it had to be created."""
        return await ensure_group(self.redis, self.stream, self.group)

    async def read(self, count: int, block_ms: int | None, *, pending: bool = False) -> list[Entry]:
        """New entries (``>``), or with ``pending`` this consumer's own unacknowledged ones."""
        response: Any = await self.redis.xreadgroup(
            self.group,
            self.consumer,
            {self.stream: "0" if pending else ">"},
            count=count,
            block=None if pending else block_ms,
        )
        if not response:
            return []
        return _entries(response[0][1])

    async def claim_idle(self, min_idle_ms: int, count: int) -> list[Entry]:
        """One XAUTOCLAIM step of entries other consumers left pending for too long.

        Entries deleted from the stream while pending come back without a payload, so the
        flusher dead-letters them instead of losing track of them.
        """
        reply: Any = await self.redis.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            min_idle_time=min_idle_ms,
            start_id=self._claim_cursor,
            count=count,
        )
        cursor, claimed = reply[0], reply[1]
        deleted = reply[2] if len(reply) > 2 else []  # Redis 7: ids already gone
        self._claim_cursor = text(cursor)
        return _entries(claimed) + [(text(d), None) for d in deleted]

    @property
    def claim_sweep_done(self) -> bool:
        return self._claim_cursor == "0-0"

    async def memory_pressure(self, ratio: float) -> bool:
        """The stream's Redis uses at least ``ratio`` of its ``maxmemory`` (False without a
        limit). Read-only: INFO answers while Redis refuses writes."""
        if is_cluster(self.redis):
            node = self.redis.get_node_from_key(self.stream)  # type: ignore[attr-defined]
            info: Any = await self.redis.info("memory", target_nodes=node)
        else:
            info = await self.redis.info("memory")
        limit = int(info.get("maxmemory", 0))
        return limit > 0 and int(info.get("used_memory", 0)) >= ratio * limit

    async def ack(self, entry_ids: list[str]) -> int:
        if not entry_ids:
            return 0
        return int(await self.redis.xack(self.stream, self.group, *entry_ids))

    async def trim(self, retain_s: float, *, unlimited: bool = False) -> int:
        """Trim below the oldest entry any group still needs, and below ``retain_s`` of age.

        An approximate XTRIM removes at most 10,000 entries a call (100 nodes of 100);
        ``unlimited`` lifts that (LIMIT 0), for when Redis needs the memory now.

        The group state is read last-delivered ids first, then the pending lists, in one
        round trip: an entry at or below a group's last-delivered id that is not pending
        a moment later was acknowledged, and entries delivered later have larger ids, so
        they are above the trim point whatever happens next. No MULTI: Redis refuses
        every command queued in one while it is out of memory, and trimming is what
        frees memory then.
        """
        groups: Any = await self.redis.xinfo_groups(self.stream)
        names = [g["name"] for g in groups]
        if not names:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        pipe.xinfo_groups(self.stream)
        for name in names:
            pipe.xpending(self.stream, name)
        infos, *pendings = await pipe.execute()
        if [g["name"] for g in infos] != names:
            return 0  # groups changed under us; try again next round
        floor = (int((time.time() - retain_s) * 1000), 0)
        for info, pending in zip(infos, pendings, strict=True):
            last = info["last-delivered-id"]
            ms, seq = parse_id(text(last))
            floor = min(floor, (ms, seq + 1))
            if pending["pending"]:
                low = pending["min"]
                floor = min(floor, parse_id(text(low)))
        if floor <= (0, 1):
            return 0
        return int(
            await self.redis.xtrim(
                self.stream,
                minid=format_id(floor),
                approximate=True,
                limit=0 if unlimited else None,
            )
        )
