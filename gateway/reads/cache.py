"""Read-through cache in Redis for the read endpoints.

Account reads (history pages, summaries) are stored with the account's version, which the
flusher deletes after every commit touching the account and before acknowledging it. A
read fetches the current version, the account's hold and the cached copy in one round
trip and uses the copy only if it was stored under that same version and no batch holds
the account: a deleted version makes all older copies unreachable at once, and a hold
(taken before a batch's COMMIT, released after its version is deleted) keeps pages loaded
around a commit out of the cache even if that flusher dies before releasing it
(core/cache_version.py). When the version key is missing, nothing cached is served, and a
fresh version is created before the page is cached under it. Persisted transactions never
change and are cached without invalidation, bounded by a TTL and Redis eviction.

The cache is an optimisation: when Redis fails, reads go to PostgreSQL and nothing is
stored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from core.cache_version import new_version
from core.constants import account_cache_key, account_hold_key, account_version_key
from core.redis_clients import REDIS_UNAVAILABLE
from gateway.redis_io.nodes import Nodes


class CacheStats:
    __slots__ = ("hits", "misses")

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0


class ReadCache:
    def __init__(self, nodes: Nodes, *, ttl_s: int, immutable_ttl_s: int, enabled: bool = True):
        self._nodes = nodes
        self._ttl_s = ttl_s
        self._immutable_ttl_s = immutable_ttl_s
        self._enabled = enabled
        self.stats = CacheStats()

    async def account_read(
        self, account: str, kind: bytes, suffix: bytes, load: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        """``load()`` unless a copy for the account's current version is cached."""
        if not self._enabled:
            return await load()
        key = account_cache_key(account, kind, suffix)
        version_key = account_version_key(account)
        try:
            pipe = self._nodes.pipe_for(version_key)  # one slot for the three: one hash tag
            replies: Any = await pipe.call_many(
                [(b"MGET", version_key, key), (b"EXISTS", account_hold_key(account))]
            )
            version: bytes | None = replies[0][0]
            cached = replies[0][1]
            if replies[1]:
                # A batch of this account is being committed: neither the cached copy nor
                # what PostgreSQL has at this instant is sure to hold it.
                self.stats.misses += 1
                return await load()
            if version is None:
                # Nothing cached for this account can be trusted; whoever creates the
                # version first wins, and a flusher replacing it later makes this page stale.
                cached = None
                fresh = new_version()
                created = await pipe.call(b"SET", version_key, fresh, b"NX", b"EX", self._ttl_s)
                version = fresh if created is not None else None
        except REDIS_UNAVAILABLE:
            return await load()
        if cached is not None:
            stored_version, _, value = bytes(cached).partition(b"|")
            if stored_version == version:
                self.stats.hits += 1
                return value
        self.stats.misses += 1
        value = await load()
        if version is not None:
            # Stored with the version read *before* loading: if the flusher replaced it
            # meanwhile, this copy is already stale and will never be served.
            await self._store_account(version_key, key, bytes(version) + b"|" + value)
        return value

    async def immutable_get(self, key: bytes) -> bytes | None:
        if not self._enabled:
            return None
        try:
            cached: Any = await self._nodes.pipe_for(key).call(b"GET", key)
        except REDIS_UNAVAILABLE:
            return None
        if cached is None:
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        return bytes(cached)

    async def immutable_set(self, key: bytes, value: bytes) -> None:
        if self._enabled:
            await self._store(key, value, self._immutable_ttl_s)

    async def _store_account(self, version_key: bytes, key: bytes, value: bytes) -> None:
        """The page, and its version kept alive at least as long (EXPIRE of a version the
        flusher replaced meanwhile only keeps that newer version a little longer)."""
        ttl = b"%d" % self._ttl_s
        with contextlib.suppress(*REDIS_UNAVAILABLE):  # not cached: the next read loads it
            await self._nodes.pipe_for(key).call_many(
                [(b"SET", key, value, b"EX", ttl), (b"EXPIRE", version_key, ttl)]
            )

    async def _store(self, key: bytes, value: bytes, ttl_s: int) -> None:
        with contextlib.suppress(*REDIS_UNAVAILABLE):  # not cached: the next read loads it
            await self._nodes.pipe_for(key).call(b"SET", key, value, b"EX", ttl_s)
