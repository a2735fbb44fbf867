"""The flusher's SQL: every statement it sends, each named and described, in one place.

None is built from input: values travel as parameters ($1, ...), and the few statements
made from a template (``_LOCK_ACCOUNTS_OF``, ``_ADD_TO_TOTALS``, ``_INSERT_FROM_STAGING``)
are filled here, once at import, with constant fragments. The tables are the migrations'
(core/migrations); the two temporary ones are created per connection, below.
"""

from __future__ import annotations

from typing import Final

# -- per connection -----------------------------------------------------------------------

CREATE_STAGING: Final = """
CREATE TEMP TABLE IF NOT EXISTS incoming (
    seq              int         NOT NULL,
    transaction_id   text        NOT NULL,
    customer_name    text        NOT NULL,
    customer_account text        NOT NULL,
    seller_name      text        NOT NULL,
    seller_account   text        NOT NULL,
    amount           bigint      NOT NULL,
    request_id       text        NOT NULL,
    stream_entry_id  text        NOT NULL,
    accepted_at      timestamptz NOT NULL
) ON COMMIT DELETE ROWS
"""
"""The staging path's batch, COPYed in: one unique violation would abort a COPY
into transactions, so a batch that may hold stored transaction_ids is staged first and
inserted by one statement (``INSERT_FROM_STAGING``). Emptied at every COMMIT."""

CREATE_MOVES: Final = """
CREATE TEMP TABLE IF NOT EXISTS batch_moves (
    account           text        NOT NULL,
    debited           bigint      NOT NULL,
    credited          bigint      NOT NULL,
    debits            bigint      NOT NULL,
    credits           bigint      NOT NULL,
    first_activity_at timestamptz NOT NULL,
    last_activity_at  timestamptz NOT NULL
) ON COMMIT DELETE ROWS
"""
"""The direct path's batch, one row per account with what the batch moves on it
(``flusher.ledger_rows.account_moves``): its accounts to lock, and what to add to their
totals. Emptied at every COMMIT."""

# -- per batch transaction ----------------------------------------------------------------

SET_TRANSACTION_TIMEOUT: Final = "SELECT set_config('transaction_timeout', $1, true)"
"""For this transaction only (SET LOCAL): PostgreSQL ends a batch frozen
mid-transaction, which would hold its accounts' locks; migrations and partition
maintenance may rightly take longer."""

_LOCK_ACCOUNTS_OF: Final = """
-- Every account of the batch, created when new and locked, in one order (by account):
-- batches that share accounts queue on the first one they share and cannot deadlock over
-- them; batches that share none commit side by side. The rows are locked, not updated
-- (DO UPDATE ... WHERE false): each gets one new version per batch, from the totals upsert.
INSERT INTO account_totals AS t (account)
SELECT account FROM ({accounts}) AS batch (account)
ORDER BY account
ON CONFLICT (account) DO UPDATE SET account = EXCLUDED.account WHERE false
"""
"""``{accounts}``: a SELECT of the batch's accounts, filled below."""

LOCK_ACCOUNTS: Final = _LOCK_ACCOUNTS_OF.replace(
    "{accounts}", "SELECT customer_account FROM incoming UNION SELECT seller_account FROM incoming"
)
"""The staging path's: the accounts of ``incoming``."""

LOCK_MOVED_ACCOUNTS: Final = _LOCK_ACCOUNTS_OF.replace(
    "{accounts}", "SELECT account FROM batch_moves"
)
"""The direct path's: the accounts of ``batch_moves``."""

COUNTERS: Final = """
-- The locked accounts' last numbers (current: nobody else can move them now).
SELECT t.account, t.debit_count + t.credit_count
FROM batch_moves m JOIN account_totals t USING (account)
"""
"""The direct path numbers its rows in Python from these (``batch_rows``)."""

BATCH_TIME: Final = """
-- The batch's recorded_at: never behind the last one of any of its accounts, so that
-- within an account recorded_at (the partition key) follows the entry numbers.
SELECT greatest(clock_timestamp(), max(t.last_recorded_at))
FROM batch_moves m JOIN account_totals t USING (account)
"""
"""The direct path's ``recorded_at``, one value for the whole batch."""

_ADD_TO_TOTALS: Final = """
INSERT INTO account_totals AS t (
    account, debited_total, credited_total, debit_count, credit_count,
    first_activity_at, last_activity_at, last_recorded_at
)
{moves}
ON CONFLICT (account) DO UPDATE SET
    debited_total = t.debited_total + EXCLUDED.debited_total,
    credited_total = t.credited_total + EXCLUDED.credited_total,
    debit_count = t.debit_count + EXCLUDED.debit_count,
    credit_count = t.credit_count + EXCLUDED.credit_count,
    first_activity_at = least(t.first_activity_at, EXCLUDED.first_activity_at),
    last_activity_at = greatest(t.last_activity_at, EXCLUDED.last_activity_at),
    last_recorded_at = EXCLUDED.last_recorded_at
"""
"""What a batch adds to its accounts' totals and counters; ``{moves}``: a SELECT of one row
per account in the column order above. Every row exists and is locked (the batch locked
its accounts first): the upsert always updates, finding each by its key."""

ADD_MOVES: Final = _ADD_TO_TOTALS.replace(
    "{moves}",
    """-- $1: the batch's recorded_at.
SELECT account, debited, credited, debits, credits, first_activity_at, last_activity_at,
       $1::timestamptz
FROM batch_moves""",
)
"""The direct path's totals: ``batch_moves`` added to the locked accounts."""

_INSERT_FROM_STAGING: Final = """
-- $1: the stream shard of the whole batch (entry ids are unique per stream only).
-- The batch's accounts are locked (LOCK_ACCOUNTS): their totals rows, read here, are
-- current, and the numbers handed out below are the next ones of each account. Every
-- access to account_totals goes by its primary key: a batch costs the same however many
-- accounts there are.
WITH accounts AS MATERIALIZED (
    -- The batch's accounts, each found by its primary key (however many accounts exist).
    SELECT t.account, t.debit_count + t.credit_count AS last_seq, t.last_recorded_at
    FROM account_totals t
    WHERE t.account = ANY (ARRAY(SELECT customer_account FROM incoming
                                 UNION SELECT seller_account FROM incoming))
), clock AS (
    -- One time for the whole batch, never behind the last one of any of its accounts:
    -- within an account, recorded_at (the partition key) follows the entry numbers.
    SELECT greatest(clock_timestamp(), max(last_recorded_at)) AS recorded_at FROM accounts
), fresh AS (
    INSERT INTO transactions (
        transaction_id, customer_name, customer_account, seller_name, seller_account,
        amount, request_id, stream_shard, stream_entry_id, accepted_at, persisted_at
    )
    SELECT DISTINCT ON (transaction_id)
        transaction_id, customer_name, customer_account, seller_name, seller_account,
        amount, request_id, $1::smallint, stream_entry_id, accepted_at, clock.recorded_at
    FROM incoming CROSS JOIN clock
    ORDER BY transaction_id, seq
    ON CONFLICT (transaction_id) DO NOTHING
    RETURNING transaction_id, stream_entry_id, customer_account, seller_account, amount,
              accepted_at
), legs AS (
    -- Both sides of each new purchase, in stream order (incoming.seq).
    SELECT f.transaction_id, f.customer_account AS account, true AS debit, f.amount,
           f.accepted_at, i.seq
    FROM fresh f JOIN incoming i USING (stream_entry_id)
    UNION ALL
    SELECT f.transaction_id, f.seller_account, false, f.amount, f.accepted_at, i.seq
    FROM fresh f JOIN incoming i USING (stream_entry_id)
), numbered AS (
    SELECT l.transaction_id, l.account, l.debit, l.amount, l.accepted_at,
           a.last_seq + row_number() OVER (PARTITION BY l.account ORDER BY l.seq) AS account_seq
    FROM legs l JOIN accounts a USING (account)
), transfers AS (
    INSERT INTO ledger_transfers (
        transaction_id, debit_account, debit_seq, credit_account, credit_seq, amount,
        accepted_at, recorded_at
    )
    SELECT d.transaction_id, d.account, d.account_seq, c.account, c.account_seq, d.amount,
           d.accepted_at, clock.recorded_at
    FROM numbered d
    JOIN numbered c ON c.transaction_id = d.transaction_id AND NOT c.debit
    CROSS JOIN clock
    WHERE d.debit
), totals AS (
    -- Aggregates and counters move with the entries, in the same transaction: reads never
    -- scan history, and debit_count + credit_count is the account's last entry number.
    {add_to_totals}
), stored AS (
    -- What the ledger holds for each transaction_id of the batch: inserted before (the
    -- table, as of this statement's snapshot) or just now (fresh, which the table does
    -- not show yet inside this statement).
    SELECT transaction_id, customer_account, seller_account, amount FROM transactions
    WHERE transaction_id IN (SELECT transaction_id FROM incoming)
    UNION ALL
    SELECT transaction_id, customer_account, seller_account, amount FROM fresh
), duplicates AS (
    -- Not inserted now, and not a redelivery of the entry that was inserted before;
    -- conflicting when it names other accounts or another amount than the stored purchase.
    -- Only looked for when some entry was not inserted (a one-time filter: the usual batch,
    -- all new, probes nothing).
    INSERT INTO duplicate_entries (
        stream_shard, stream_entry_id, transaction_id, request_id, amount, accepted_at,
        customer_account, seller_account, conflicting
    )
    SELECT $1::smallint, i.stream_entry_id, i.transaction_id, i.request_id, i.amount,
           i.accepted_at, i.customer_account, i.seller_account,
           EXISTS (
               SELECT 1 FROM stored s
               WHERE s.transaction_id = i.transaction_id
                 AND (s.customer_account, s.seller_account, s.amount)
                     IS DISTINCT FROM (i.customer_account, i.seller_account, i.amount)
           )
    FROM incoming i
    WHERE (SELECT count(*) FROM fresh) < (SELECT count(*) FROM incoming)
      AND NOT EXISTS (SELECT 1 FROM fresh f WHERE f.stream_entry_id = i.stream_entry_id)
      AND NOT EXISTS (
          SELECT 1 FROM transactions t
          WHERE t.transaction_id = i.transaction_id AND t.stream_entry_id = i.stream_entry_id
            AND t.stream_shard = $1::smallint
      )
    ON CONFLICT (stream_shard, stream_entry_id) DO NOTHING
    RETURNING conflicting
)
SELECT (SELECT count(*) FROM fresh) AS inserted,
       (SELECT count(*) FROM duplicates) AS duplicates,
       (SELECT count(*) FROM duplicates WHERE conflicting) AS conflicting
"""
"""The staging path's statement; ``{add_to_totals}``: the totals upsert, filled
below from the new legs."""

INSERT_FROM_STAGING: Final = _INSERT_FROM_STAGING.replace(
    "{add_to_totals}",
    _ADD_TO_TOTALS.replace(
        "{moves}",
        """SELECT account,
       coalesce(sum(amount) FILTER (WHERE debit), 0),
       coalesce(sum(amount) FILTER (WHERE NOT debit), 0),
       count(*) FILTER (WHERE debit),
       count(*) FILTER (WHERE NOT debit),
       min(accepted_at), max(accepted_at), (SELECT recorded_at FROM clock)
FROM legs
GROUP BY account""",
    ).strip(),
)
"""The staging path: a batch holding a transaction_id stored before (a redelivery,
a duplicate), inserted, numbered and added to the totals in one statement; returns one
row of counts (inserted, duplicates, conflicting)."""

INSERT_DEAD_LETTER: Final = """
INSERT INTO dead_letters (stream_shard, stream_entry_id, payload, error) VALUES ($1, $2, $3, $4)
ON CONFLICT (stream_shard, stream_entry_id) DO NOTHING
"""
"""An entry that cannot be stored (undecodable, or refused by PostgreSQL), kept
with the reason; once per entry, however often it is delivered."""

INSERT_INCIDENT: Final = """
INSERT INTO stream_incidents (consumer, reason, last_committed_entry_id) VALUES ($1, $2, $3)
"""
"""A stream or consumer group found missing (Redis lost its data): recorded with
the last entry this flusher committed, for the operator to see what may be lost."""

# -- ledger partitions (flusher.partitions) -----------------------------------------------

SET_LOCK_TIMEOUT: Final = "SELECT set_config('lock_timeout', $1, true)"
"""For this transaction only: partition maintenance gives up rather than make
readers and batches queue behind it while it waits for a lock."""

LOCK_PARTITIONS: Final = "SELECT pg_advisory_xact_lock($1)"
"""$1: ``core.constants.PG_PARTITIONS_LOCK``, which batches never take: flushers
starting together would otherwise create the same day twice."""

MAINTAIN_PARTITIONS: Final = "SELECT action, partition_name FROM ledger_maintain_partitions($1, $2)"
"""Migration 008's function: days created ahead ($1), days past the retention ($2)
dropped; one row per change."""
