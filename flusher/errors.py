"""What can go wrong in the flusher, split by what to do about it.

FlusherError
├── DatabaseUnavailable  PostgreSQL unreachable, restarting or shutting down: retry, ack nothing
├── StreamUnavailable    an acknowledgement Redis kept refusing until the flusher stopped:
│                        give it up, the entries stay pending and are delivered again
└── StrandedEntries      unflushed entries above the shard count: refuse to start

What PostgreSQL raises that is worth retrying is named in ``core.pg_errors``
(``PG_RETRYABLE``); the ledger writer turns it into DatabaseUnavailable. Redis unreachable
(``REDIS_RETRYABLE``) is retried as redis-py raises it, not wrapped.

Redis also refuses commands for a while without being unreachable: out of memory (OOM),
a script running too long (BUSY), a failover or resharding under way (READONLY,
TRYAGAIN, CLUSTERDOWN, MASTERDOWN, NOREPLICAS), a restart reading its data (LOADING).
``is_transient`` names those replies: the flusher waits and retries them instead of
exiting, and acknowledges nothing meanwhile.
"""

from __future__ import annotations

import re

from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

from core.redis_clients import REDIS_UNREACHABLE
from core.stranded import StrandedStream


class FlusherError(Exception):
    pass


class DatabaseUnavailable(FlusherError):
    """PostgreSQL could not take the batch: nothing of it was committed."""


class StreamUnavailable(FlusherError):
    """Acknowledging failed and the flusher is stopping: no more retries.

    Only ``Flusher.ack`` raises it, and only once ``stop()`` was called; ``Flusher.run``
    ends the step quietly on it. The batch is committed, so its redelivery on the
    next start inserts nothing: what is lost is an acknowledgement, never a purchase.
    """


class StrandedEntries(FlusherError):
    """Unflushed entries in streams above the shard count (``core.stranded``).

    Refused rather than drained: a lower count while entries are still unflushed is most
    often a configuration mistake on one machine (its gateways may still write there),
    and a flusher that quietly worked other streams than configured would hide it. The
    message names the streams and what to set; draining with the old count is one command.
    """

    def __init__(self, shards: int, stranded: list[StrandedStream]) -> None:
        self.stranded = stranded
        needed = max(s.shard for s in stranded) + 1
        streams = ", ".join(f"{s.stream} ({s.unflushed} unflushed)" for s in stranded)
        super().__init__(
            f"refusing to start: {sum(s.unflushed for s in stranded)} purchases are not yet"
            f" flushed in streams above MONOKERA_STREAM_SHARDS={shards}, where no flusher"
            f" would ever read them: {streams}. Set MONOKERA_STREAM_SHARDS={needed} (the"
            " count they were written with) until they are flushed (python -m flusher"
            " --drain does it and exits), then lower it again."
        )


REDIS_RETRYABLE: tuple[type[BaseException], ...] = REDIS_UNREACHABLE
"""Unreachable, the cluster's "cannot be connected" included (core.redis_clients)."""

_TRANSIENT_CLASSES: tuple[type[ResponseError], ...] = (
    OutOfMemoryError,
    ReadOnlyError,
    TryAgainError,
    ClusterDownError,
    MasterDownError,
)

# redis-py strips the code of the replies it has a class for; the others keep it in front,
# and Redis 6.2 wraps an error raised inside a script as "... @user_script: 1: -OOM ...".
_TRANSIENT_CODE = re.compile(
    r"(?:^|: -)(?:OOM|BUSY|TRYAGAIN|CLUSTERDOWN|READONLY|LOADING|MASTERDOWN|NOREPLICAS)\b"
)


def is_transient(exc: BaseException) -> bool:
    """A Redis refusal that goes away by itself (memory freed, failover over, data loaded)."""
    if isinstance(exc, (*_TRANSIENT_CLASSES, BusyLoadingError)):
        return True
    return isinstance(exc, ResponseError) and _TRANSIENT_CODE.search(str(exc)) is not None
