"""What `make run`'s supervisor tells the gateway about its children, through Redis.

The supervisor (``devstack.supervisor``) writes one JSON value per child into a hash; the
gateway reads it for /readyz and /metrics. The hash expires unless refreshed, so the report
disappears with the supervisor, and is absent where something else (Docker, ECS) restarts
processes.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from core.constants import SUPERVISOR_STATUS

STATUS_TTL_S: Final = 30

State = Literal["running", "restarting", "stopping", "stopped"]


class ChildStatus(msgspec.Struct, frozen=True, kw_only=True):
    state: State
    pid: int | None = None
    restarts: int = 0
    """Times the supervisor started it again after it exited."""
    last_exit_code: int | None = None
    """Its last exit status; negative: killed by that signal number."""
    crash_looping: bool = False


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(ChildStatus)


def publish_status(redis: SyncRedis, children: dict[str, ChildStatus]) -> None:
    pipe = redis.pipeline(transaction=False)
    pipe.hset(SUPERVISOR_STATUS, mapping={k: _encoder.encode(v) for k, v in children.items()})
    pipe.expire(SUPERVISOR_STATUS, STATUS_TTL_S)
    pipe.execute()


async def read_status(redis: Redis) -> dict[str, ChildStatus]:
    """Each supervised child's status; empty when no supervisor publishes one. A value that
    does not decode (another version wrote it) is skipped rather than failing /readyz."""
    raw: Any = await redis.hgetall(SUPERVISOR_STATUS)
    found: dict[str, ChildStatus] = {}
    for name, value in sorted(raw.items()):
        try:
            found[name.decode()] = _decoder.decode(value)
        except msgspec.DecodeError:
            continue
    return found
