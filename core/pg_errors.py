"""What counts as "PostgreSQL unavailable", named once for the flusher and the reads.

Both retry (or answer 503 with Retry-After) only what can succeed when tried again: the
server unreachable, restarting, out of connections, or a transaction it aborted that the
same statements may well get through next time. Any other server error (``PostgresError``
with its SQLSTATE) is a bug or bad data, and retrying it would only repeat it.
"""

from __future__ import annotations

from typing import Final

import asyncpg

PG_UNREACHABLE: Final[tuple[type[BaseException], ...]] = (
    OSError,  # refused, reset, unreachable
    TimeoutError,  # asyncio.TimeoutError is this one
    asyncpg.InterfaceError,  # connection closed underneath us
    # The protocol state machine confused by a server dying mid-operation (seen during a
    # fast shutdown): a new connection is the cure, and batches are safe to write again.
    asyncpg.exceptions.InternalClientError,
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections, disk full
)
"""The connection, not the statement: PostgreSQL cannot be reached or cannot serve now."""

PG_RETRYABLE: Final[tuple[type[BaseException], ...]] = (
    *PG_UNREACHABLE,
    asyncpg.exceptions.TransactionRollbackError,  # class 40: serialization failure, deadlock
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # 25006: a standby, mid-failover
    asyncpg.exceptions.LockNotAvailableError,  # 55P03: lock_timeout
)
"""Unreachable, or a transaction aborted for reasons of the moment: worth trying again."""
