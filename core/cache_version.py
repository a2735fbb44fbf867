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
from typing import Final

BUMP_SCRIPT: Final = """
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[1], 'EX', ARGV[2]) end
return #KEYS
"""
"""Sets every key of the batch to one new version (KEYS: version keys; ARGV: version, TTL)."""


def new_version() -> bytes:
    """128 random bits as hex: never equal to any version handed out before."""
    return secrets.token_hex(16).encode()
