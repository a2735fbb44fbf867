-- 6b597ba's flusher statement (flusher/store.py INSERT_FROM_STAGING), verbatim: the upgrade
-- tests write the ledger as that release did, with its global write lock held.
-- $1: the stream shard of the whole batch (entry ids are unique per stream only).
WITH clock AS (
    -- One time for the whole batch, taken under the write lock and never behind the last
    -- batch's: history is read newest first by (recorded_at, entry_id), partitioned by day
    -- on recorded_at, and both legs land in the same partition.
    UPDATE ledger_clock SET recorded_at = greatest(recorded_at, clock_timestamp())
    RETURNING recorded_at
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
              accepted_at, persisted_at
), legs AS (
    INSERT INTO ledger_entries (
        transaction_id, account, direction, amount, counterparty, accepted_at, recorded_at
    )
    SELECT transaction_id, customer_account, 'DEBIT', amount, seller_account, accepted_at,
           persisted_at
    FROM fresh
    UNION ALL
    SELECT transaction_id, seller_account, 'CREDIT', amount, customer_account, accepted_at,
           persisted_at
    FROM fresh
    RETURNING account, direction, amount, accepted_at
), totals AS (
    -- Aggregates move with the legs, in the same transaction: reads never scan history.
    INSERT INTO account_totals AS t (
        account, debited_total, credited_total, debit_count, credit_count,
        first_activity_at, last_activity_at
    )
    SELECT account,
           coalesce(sum(amount) FILTER (WHERE direction = 'DEBIT'), 0),
           coalesce(sum(amount) FILTER (WHERE direction = 'CREDIT'), 0),
           count(*) FILTER (WHERE direction = 'DEBIT'),
           count(*) FILTER (WHERE direction = 'CREDIT'),
           min(accepted_at), max(accepted_at)
    FROM legs
    GROUP BY account
    ON CONFLICT (account) DO UPDATE SET
        debited_total = t.debited_total + EXCLUDED.debited_total,
        credited_total = t.credited_total + EXCLUDED.credited_total,
        debit_count = t.debit_count + EXCLUDED.debit_count,
        credit_count = t.credit_count + EXCLUDED.credit_count,
        first_activity_at = least(t.first_activity_at, EXCLUDED.first_activity_at),
        last_activity_at = greatest(t.last_activity_at, EXCLUDED.last_activity_at)
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
    WHERE NOT EXISTS (SELECT 1 FROM fresh f WHERE f.stream_entry_id = i.stream_entry_id)
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
