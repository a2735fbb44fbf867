"""Account cache versions: what they are made of, how the flusher bumps them, how long they live.

A cached account read is stored as ``version|page`` and served only while the account's
version key still holds that same version. A version is a fresh random token each time,
never a counter: a counter that restarts from zero (Redis restarted without its data, a
failover that lost the last increment) climbs back to values old cached pages were stored
under, and would serve them as fresh. A token is never handed out twice, so a lost or
reset version can only make cached pages unreachable, never stale-but-served.

Version keys expire with the cache: a version only needs to outlive the pages stored
under it, and the gateway extends its lifetime each time it stores one. A missing version
means nothing cached for the account can be served; the gateway creates a fresh one (SET
NX) before caching again.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Final

from redis.asyncio import Redis

from core.constants import account_version_key
from core.redis_clients import is_cluster

BUMP_SCRIPT: Final = """
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[1], 'EX', ARGV[2]) end
return #KEYS
"""
"""Sets every key of the batch to one new version (KEYS: version keys; ARGV: version, TTL)."""


def new_version() -> bytes:
    """128 random bits as hex: never equal to any version handed out before."""
    return secrets.token_hex(16).encode()


async def bump(redis: Redis, accounts: Iterable[str], ttl_s: int) -> None:
    """Give every account one new version. Raises when Redis refuses (out of memory, a
    failover): the flusher then acknowledges nothing and tries again."""
    keys = [account_version_key(a) for a in sorted(accounts)]
    if not keys:
        return
    version = new_version()
    if is_cluster(redis):
        # Keys of many slots: the cluster pipeline splits them by node, and raises the
        # first refusal after all replies are in.
        pipe = redis.pipeline(transaction=False)
        for key in keys:
            pipe.set(key, version, ex=ttl_s)
        await pipe.execute()
    else:
        # One command for the whole batch, not one SET each (hundreds per batch).
        await redis.eval(BUMP_SCRIPT, len(keys), *keys, version, ttl_s)
