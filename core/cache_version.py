"""Account cache versions and holds: how the flusher keeps cached account reads fresh.

A cached account read is stored as ``version|page`` and served only while the account's
version key still holds that same version. A version is a fresh random token each time,
created by the gateway (SET NX) when it finds none; a token is never handed out twice, so a
lost or reset version can only make cached pages unreachable, never stale-but-served.

The flusher writes a batch in three steps around its COMMIT:

1. ``hold``: before the commit, the batch's token joins each account's hold set. While an
   account has a hold, the gateway neither serves its cached pages nor stores new ones.
2. COMMIT in PostgreSQL.
3. ``release``: the account's version is deleted (every page cached so far becomes
   unreachable), then the batch's token leaves the hold. Only then is the batch's stream
   entry acknowledged.

A flusher killed between 2 and 3 leaves the hold behind: the account is read from
PostgreSQL, uncached, until the hold expires (``HOLD_TTL_FACTOR`` times the cache TTL, longer
than any page stored meanwhile can live). A crash costs cache hits, never freshness.

Out of memory: Redis refuses SADD (and every command that may grow memory) but takes DEL
and SREM, which free it. ``hold`` then deletes the versions instead of holding them, the
gateway cannot create a new version (its SET NX is refused too) and so caches nothing, and
``release`` needs only DEL and SREM: the flusher commits, invalidates and acknowledges while
Redis is full, and the trimming that follows gives memory back. The one gap: if memory comes
back between that DEL and the COMMIT, a read may create a version and cache a page without
the batch, and a flusher killed right after its COMMIT would leave that page served until
the batch is delivered again (which deletes the version once more).

Version and hold keys expire with the cache: a version only needs to outlive the pages
stored under it, and the gateway extends its lifetime each time it stores one.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Final

from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError, ResponseError

from core.constants import account_hold_key, account_version_key
from core.redis_clients import is_cluster

HOLD_TTL_FACTOR: Final = 2
"""A hold outlives every page cached before it was taken (pages live one cache TTL)."""

HOLD_SCRIPT: Final = """
for i = 1, #KEYS do
  redis.call('SADD', KEYS[i], ARGV[1])
  redis.call('EXPIRE', KEYS[i], ARGV[2])
end
return #KEYS
"""
"""Adds the batch's token to every account's hold (KEYS: hold keys; ARGV: token, TTL)."""

RELEASE_SCRIPT: Final = """
local n = #KEYS / 2
for i = 1, n do
  redis.call('DEL', KEYS[i])
  redis.call('SREM', KEYS[n + i], ARGV[1])
end
return n
"""
"""Deletes every version, then takes the token out of every hold (KEYS: version keys, then
hold keys in the same order; ARGV: token). DEL and SREM only: allowed out of memory."""


def new_version() -> bytes:
    """128 random bits as hex: never equal to any version handed out before."""
    return secrets.token_hex(16).encode()


def is_out_of_memory(exc: BaseException) -> bool:
    """Redis refusing a write that may grow memory (Redis 6.2 wraps it inside scripts)."""
    return isinstance(exc, OutOfMemoryError) or (
        isinstance(exc, ResponseError) and "OOM " in str(exc)
    )


class BatchHold:
    """One batch's hold on its accounts' cached reads, from before its COMMIT to after."""

    def __init__(self, accounts: Iterable[str]) -> None:
        self.accounts = sorted(set(accounts))
        self.token = new_version()
        self.held = False
        """False when Redis was out of memory: the versions were deleted instead."""

    async def hold(self, redis: Redis, cache_ttl_s: int) -> bool:
        """Before the commit. True if held; False if Redis is out of memory, in which case
        the versions are deleted instead (cached pages unreachable, none can be stored
        while the memory lasts). Other refusals and lost connections raise."""
        if not self.accounts:
            return True
        keys = [account_hold_key(a) for a in self.accounts]
        ttl = cache_ttl_s * HOLD_TTL_FACTOR
        try:
            if is_cluster(redis):
                pipe = redis.pipeline(transaction=False)
                for key in keys:
                    pipe.sadd(key, self.token)
                    pipe.expire(key, ttl)
                await pipe.execute()
            else:
                await redis.eval(HOLD_SCRIPT, len(keys), *keys, self.token, ttl)
        except ResponseError as exc:
            if not is_out_of_memory(exc):
                raise
            await self._delete_versions(redis)
            self.held = False
            return False
        self.held = True
        return True

    async def release(self, redis: Redis) -> None:
        """After the commit: versions deleted, then the hold released. Raises when Redis is
        unreachable; the caller retries before acknowledging anything."""
        if not self.accounts:
            return
        if is_cluster(redis):
            # Keys of many slots: DEL one account's version before its hold goes, account
            # by account, so no account is ever released with its version still in place.
            pipe = redis.pipeline(transaction=False)
            for account in self.accounts:
                pipe.delete(account_version_key(account))
                pipe.srem(account_hold_key(account), self.token)
            await pipe.execute()
            return
        versions = [account_version_key(a) for a in self.accounts]
        holds = [account_hold_key(a) for a in self.accounts]
        await redis.eval(RELEASE_SCRIPT, len(versions) * 2, *versions, *holds, self.token)

    async def _delete_versions(self, redis: Redis) -> None:
        keys = [account_version_key(a) for a in self.accounts]
        if is_cluster(redis):
            pipe = redis.pipeline(transaction=False)
            for key in keys:
                pipe.delete(key)
            await pipe.execute()
        else:
            await redis.delete(*keys)
