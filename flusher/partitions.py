"""Ledger partitions: days created ahead, days past the retention dropped.

The work is ``ledger_maintain_partitions()`` from migration 008: DDL on names made from
dates belongs in the database, where ``format('%I', ...)`` quotes them. This runs it under an
advisory lock of its own (flushers starting together would make the same day twice), with
a short ``lock_timeout``: detaching the catch-all partition needs a moment of exclusive lock
on ledger_transfers (batches wait for it, and it for them), and readers and batches must
not queue behind it while it waits for a long query.
If the lock is not had in time, the next run tries again; the catch-all partition takes
the rows meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import asyncpg

from core.constants import PG_PARTITIONS_LOCK
from flusher.queries import LOCK_PARTITIONS, MAINTAIN_PARTITIONS, SET_LOCK_TIMEOUT

LOCK_TIMEOUT_MS: Final = 1000


@dataclass(frozen=True, slots=True)
class PartitionChange:
    action: str
    """``created`` or ``dropped``."""
    partition: str


async def maintain_partitions(
    conn: asyncpg.Connection, *, ahead_days: int, retention_days: int
) -> list[PartitionChange]:
    """Raises asyncpg's LockNotAvailableError when the locks were not had in time."""
    async with conn.transaction():
        await conn.execute(SET_LOCK_TIMEOUT, str(LOCK_TIMEOUT_MS))
        await conn.execute(LOCK_PARTITIONS, PG_PARTITIONS_LOCK)
        rows = await conn.fetch(MAINTAIN_PARTITIONS, ahead_days, retention_days)
    return [PartitionChange(r["action"], r["partition_name"]) for r in rows]
