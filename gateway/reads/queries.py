"""The reads' SQL, named and described: constants with $n parameters, never built from input.

The history page's two variants are formatted once, here, from constant fragments.
"""

from __future__ import annotations

from typing import Final

# One purchase as the flusher stored it, with its trace (request id, stream entry, times).
TRANSACTION: Final = """
SELECT transaction_id, customer_name, customer_account, seller_name, seller_account, amount,
       request_id, stream_entry_id, accepted_at, persisted_at
FROM transactions WHERE transaction_id = $1
"""

# Newest first in the account's own sequence. One ledger row per purchase, indexed on each
# side; within an account recorded_at (the partition key) follows the sequence, so each
# side is read newest first by (recorded_at, seq): partition after partition, newest first,
# each by an index scan, and the LIMIT stops before older partitions are opened
# (docs/history-partitions.md). The two sides are merged by seq. A side the account has
# never used is not read at all (its count in account_totals is 0); once the debits fill a
# page, credits older than its oldest debit cannot be on it, and their partitions are
# pruned; partitions made ahead for days to come are pruned by the account's newest
# entry's time.
_SIDES: Final = """
WITH used AS (
    SELECT debit_count > 0 AS debits, credit_count > 0 AS credits,
           coalesce(last_recorded_at, 'infinity') AS newest
    FROM account_totals WHERE account = $1
), debits AS (
    SELECT debit_seq AS entry_id, transaction_id, 'DEBIT' AS direction, amount,
           credit_account AS counterparty, accepted_at, recorded_at
    FROM ledger_transfers
    WHERE debit_account = $1 AND {debit_bound} AND (SELECT debits FROM used)
    ORDER BY recorded_at DESC, debit_seq DESC LIMIT $2
), credits AS (
    SELECT credit_seq AS entry_id, transaction_id, 'CREDIT' AS direction, amount,
           debit_account AS counterparty, accepted_at, recorded_at
    FROM ledger_transfers
    WHERE credit_account = $1 AND {credit_bound} AND (SELECT credits FROM used)
      AND recorded_at >= coalesce(
          (SELECT min(recorded_at) FROM debits HAVING count(*) = $2), '-infinity'
      )
    ORDER BY recorded_at DESC, credit_seq DESC LIMIT $2
)
SELECT * FROM debits UNION ALL SELECT * FROM credits
ORDER BY entry_id DESC LIMIT $2
"""

HISTORY_FIRST: Final = _SIDES.format(
    debit_bound="recorded_at <= (SELECT newest FROM used)",
    credit_bound="recorded_at <= (SELECT newest FROM used)",
)

# `recorded_at <= $3` is implied by the row comparison; spelled out, it also prunes the
# partitions newer than the cursor.
HISTORY_AFTER: Final = _SIDES.format(
    debit_bound="recorded_at <= $3 AND (recorded_at, debit_seq) < ($3, $4)",
    credit_bound="recorded_at <= $3 AND (recorded_at, credit_seq) < ($3, $4)",
)

# An account's totals, counts and first and last activity: one row, by key.
SUMMARY: Final = """
SELECT debited_total, credited_total, debit_count, credit_count,
       first_activity_at, last_activity_at
FROM account_totals WHERE account = $1
"""
