"""What can go wrong in the flusher, split by what to do about it.

FlusherError
├── StoreUnavailable   PostgreSQL unreachable, restarting or shutting down: retry, ack nothing
└── StreamUnavailable  Redis unreachable or failing: retry
"""

from __future__ import annotations

import asyncio

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


class FlusherError(Exception):
    pass


class StoreUnavailable(FlusherError):
    pass


class StreamUnavailable(FlusherError):
    pass


PG_RETRYABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable
    asyncio.TimeoutError,
    asyncpg.InterfaceError,  # connection closed underneath us
    # The protocol state machine confused by a server dying mid-operation (seen during a
    # fast shutdown): a new connection is the cure, and batches are safe to write again.
    asyncpg.exceptions.InternalClientError,
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # class 40: serialization failure, deadlock
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # 25006: a standby, mid-failover
    asyncpg.exceptions.LockNotAvailableError,  # 55P03: lock_timeout
)

REDIS_RETRYABLE: tuple[type[BaseException], ...] = (
    OSError,
    RedisConnectionError,
    RedisTimeoutError,
)
