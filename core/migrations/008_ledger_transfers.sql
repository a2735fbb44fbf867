-- One ledger row per purchase, numbered per account, and no global write lock.
--
-- Until now a purchase cost three rows (the transaction and two legs in ledger_entries),
-- and every flusher batch took one global advisory lock and the singleton ledger_clock
-- row, so that ledger ids were handed out in commit order. However many flushers ran,
-- PostgreSQL ingest was one writer.
--
-- ledger_transfers holds one row per purchase: the DEBIT of debit_account and the CREDIT
-- of credit_account, for one amount (TigerBeetle's transfer). Double entry is a property
-- of the row: both legs exist, for the same amount, or neither. An account's history is
-- an index on each side, not a second copy of the row. transactions stays, unpartitioned:
-- its primary key is what makes a purchase exactly once, and it outlives the retention.
--
-- Each account numbers its entries 1, 2, 3 ... without gaps: debit_seq is the position of
-- this row in debit_account's sequence, credit_seq in credit_account's. The counter is the
-- account's totals row (debit_count + credit_count is the last number handed out), bumped
-- in the same transaction that writes the entries, under that row's lock. A flusher locks
-- the accounts of its batch in one order (by account) before writing, so batches that
-- share accounts queue on the first one they share, and batches that share none commit
-- side by side. Within a batch, numbers follow the stream order.
--
-- recorded_at (when the row was written, the partition key) never goes backwards within
-- an account: it is greatest(clock_timestamp(), the last recorded_at of every account of
-- the batch), and stored back as each account's last_recorded_at. So (recorded_at, seq)
-- and seq alone give the same order within an account, and reading newest first by
-- (recorded_at DESC, seq DESC) follows the partition key: the partitions are read one
-- after the other, newest first, and a page's LIMIT stops before the older ones are
-- opened, however many there are (docs/history-partitions.md).
--
-- Existing rows move over in their order: each leg's number is its position in its
-- account's (recorded_at, entry_id) order, counted so that the account's last entry gets
-- debit_count + credit_count (legs dropped by the retention keep their numbers used).
-- Partitions keep their bounds. This copies the ledger once, under an exclusive lock: on
-- a large existing ledger, run it in a quiet window.

ALTER TABLE account_totals ADD COLUMN last_recorded_at timestamptz;
ALTER TABLE account_totals ALTER COLUMN first_activity_at DROP NOT NULL;
ALTER TABLE account_totals ALTER COLUMN last_activity_at DROP NOT NULL;
UPDATE account_totals SET last_recorded_at = (SELECT c.recorded_at FROM ledger_clock c);

CREATE TABLE ledger_transfers (
    transaction_id text        NOT NULL,
    debit_account  text        NOT NULL,
    debit_seq      bigint      NOT NULL CHECK (debit_seq > 0),
    credit_account text        NOT NULL,
    credit_seq     bigint      NOT NULL CHECK (credit_seq > 0),
    amount         bigint      NOT NULL CHECK (amount > 0),
    accepted_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL,
    CHECK (debit_account <> credit_account)
) PARTITION BY RANGE (recorded_at);

-- The old partitions' bounds, kept: ledger_entries_pX becomes ledger_transfers_pX.
DO $$
DECLARE
    p record;
BEGIN
    FOR p IN SELECT name, lower_bound, upper_bound FROM ledger_partitions LOOP
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF ledger_transfers FOR VALUES FROM (%s) TO (%s)',
            replace(p.name, 'ledger_entries_', 'ledger_transfers_'),
            coalesce(quote_literal(p.lower_bound), 'MINVALUE'),
            coalesce(quote_literal(p.upper_bound), 'MAXVALUE')
        );
    END LOOP;
END $$;

WITH numbered AS (
    SELECT l.transaction_id, l.account, l.direction, l.amount, l.accepted_at, l.recorded_at,
           coalesce(t.debit_count + t.credit_count, 0)
             - count(*) OVER (PARTITION BY l.account)
             + row_number() OVER (PARTITION BY l.account ORDER BY l.recorded_at, l.entry_id)
             AS seq
    FROM ledger_entries l LEFT JOIN account_totals t USING (account)
)
INSERT INTO ledger_transfers (
    transaction_id, debit_account, debit_seq, credit_account, credit_seq, amount,
    accepted_at, recorded_at
)
SELECT d.transaction_id, d.account, d.seq, c.account, c.seq, d.amount, d.accepted_at,
       d.recorded_at
FROM numbered d JOIN numbered c ON c.transaction_id = d.transaction_id AND c.direction = 'CREDIT'
WHERE d.direction = 'DEBIT';

DROP FUNCTION ledger_maintain_partitions(int, int);
DROP VIEW ledger_partitions;
DROP TABLE ledger_entries;
DROP TABLE ledger_clock;

-- One account's history, newest first, on each side. No INCLUDE: a page reads its rows
-- from the heap, and a purchase writes two short index entries instead of two covering
-- ones (every partition gets its own copy of both).
CREATE INDEX ledger_transfers_debit
    ON ledger_transfers (debit_account, recorded_at DESC, debit_seq DESC);
CREATE INDEX ledger_transfers_credit
    ON ledger_transfers (credit_account, recorded_at DESC, credit_seq DESC);

-- The partitions of ledger_transfers with their bounds (NULL for MINVALUE / MAXVALUE).
CREATE VIEW ledger_partitions AS
SELECT c.relname::text AS name, b[1]::timestamptz AS lower_bound, b[2]::timestamptz AS upper_bound
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
CROSS JOIN LATERAL regexp_match(
    pg_get_expr(c.relpartbound, c.oid),
    'FROM \((?:''([^'']*)''|MINVALUE)\) TO \((?:''([^'']*)''|MAXVALUE)\)'
) AS b
WHERE i.inhparent = 'ledger_transfers'::regclass;

-- Creates the daily partitions up to ahead_days after today (UTC), out of the catch-all
-- ledger_transfers_future, moving into them any rows it held; with retention_days > 0,
-- drops the daily partitions that ended retention_days or more before today. Only ledger
-- partitions are dropped: transactions and account_totals stay. Returns what it did.
-- Detaching the catch-all takes an exclusive lock on ledger_transfers for a moment: the
-- caller sets a short lock_timeout so that batches and reads never queue behind it long.
CREATE FUNCTION ledger_maintain_partitions(ahead_days int, retention_days int)
RETURNS TABLE (action text, partition_name text)
LANGUAGE plpgsql
SET TimeZone = 'UTC'
AS $$
DECLARE
    today timestamptz := date_trunc('day', clock_timestamp());
    target timestamptz := today + make_interval(days => greatest(ahead_days, 0) + 1);
    lo timestamptz;
    hi timestamptz;
    expired text;
BEGIN
    SELECT p.lower_bound INTO lo FROM ledger_partitions p WHERE p.name = 'ledger_transfers_future';
    IF lo IS NULL THEN
        RAISE EXCEPTION 'ledger_transfers_future is not a partition of ledger_transfers';
    END IF;
    IF lo < target THEN
        ALTER TABLE ledger_transfers DETACH PARTITION ledger_transfers_future;
        WHILE lo < target LOOP
            -- Days skipped while nothing ran (lo before today) become one partition.
            hi := CASE WHEN lo < today THEN today ELSE lo + interval '1 day' END;
            partition_name := 'ledger_transfers_p' || to_char(lo, 'YYYYMMDD');
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF ledger_transfers FOR VALUES FROM (%L) TO (%L)',
                partition_name, lo, hi
            );
            action := 'created';
            RETURN NEXT;
            lo := hi;
        END LOOP;
        WITH moved AS (
            DELETE FROM ledger_transfers_future f WHERE f.recorded_at < target RETURNING f.*
        )
        INSERT INTO ledger_transfers SELECT * FROM moved;
        EXECUTE format(
            'ALTER TABLE ledger_transfers ATTACH PARTITION ledger_transfers_future'
            ' FOR VALUES FROM (%L) TO (MAXVALUE)', target
        );
    END IF;
    IF retention_days > 0 THEN
        FOR expired IN
            SELECT p.name FROM ledger_partitions p
            WHERE p.name <> 'ledger_transfers_future'
              AND p.upper_bound <= today - make_interval(days => retention_days)
            ORDER BY p.lower_bound
        LOOP
            EXECUTE format('DROP TABLE %I', expired);
            action := 'dropped';
            partition_name := expired;
            RETURN NEXT;
        END LOOP;
    END IF;
END $$;

SELECT * FROM ledger_maintain_partitions(0, 0);
