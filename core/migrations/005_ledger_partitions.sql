-- ledger_entries becomes a table partitioned by day (UTC) on recorded_at, the time the
-- flusher wrote the row. That time comes from ledger_clock (below), read under the
-- flusher's global write lock, so it never decreases from one batch to the next, and
-- every row of a batch shares it, so both legs of a purchase always land in the same
-- partition. Reading newest first by (recorded_at, entry_id) therefore follows the ledger
-- order, and as it matches the partition key, PostgreSQL scans the partitions one after
-- the other, newest first (an ordered Append): a LIMIT stops in the newest partitions and
-- the older ones are never executed, however many there are.
--
-- transactions stays unpartitioned: its primary key is what makes a purchase exactly once.
-- The UNIQUE (transaction_id, direction) guard of 001 cannot stay: a unique index on a
-- partitioned table must contain the partition key, which would make it per partition
-- and prove nothing. Nothing relied on it: legs are only ever inserted by the statement
-- that inserted their transaction, from exactly the rows it inserted. entry_id has no
-- unique index for the same reason; it is unique because it is GENERATED ALWAYS.
--
-- Partitions: ledger_entries_pYYYYMMDD for [day, day + 1), and one catch-all,
-- ledger_entries_future, for everything from the end of the last daily partition onward.
-- The catch-all is a MAXVALUE range partition rather than a DEFAULT partition on purpose:
-- a DEFAULT partition that cannot be pruned makes PostgreSQL give up the ordered Append
-- (a Merge Append then reads the head of every partition on every page). A row that
-- arrives before its day's partition exists (maintenance late or failing) lands in the
-- catch-all, is read like any other, and is moved into its day's partition when
-- ledger_maintain_partitions creates that day. Nothing ever fails for lack of a partition.
--
-- Moving existing rows (none on a fresh database): they get as recorded_at the running
-- maximum of their transaction's persisted_at in entry_id order, which keeps their order;
-- this copies the table once into the catch-all and once more into its day partitions,
-- under an ACCESS EXCLUSIVE lock: on a large existing ledger, run it in a quiet window.

-- The last recorded_at handed out. Each batch takes greatest(this, clock_timestamp()), so
-- a system clock stepping back cannot make a new entry sort behind one already read.
CREATE TABLE ledger_clock (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    recorded_at timestamptz NOT NULL
);

ALTER TABLE ledger_entries RENAME TO ledger_entries_before_005;

CREATE TABLE ledger_entries (
    entry_id       bigint      GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME ledger_entry_ids),
    transaction_id text        NOT NULL,
    account        text        NOT NULL,
    direction      text        NOT NULL CHECK (direction IN ('DEBIT', 'CREDIT')),
    amount         bigint      NOT NULL CHECK (amount > 0),
    counterparty   text        NOT NULL,
    accepted_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL
) PARTITION BY RANGE (recorded_at);

-- The partitions of ledger_entries with their bounds (NULL for MINVALUE / MAXVALUE).
CREATE VIEW ledger_partitions AS
SELECT c.relname::text AS name, b[1]::timestamptz AS lower_bound, b[2]::timestamptz AS upper_bound
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
CROSS JOIN LATERAL regexp_match(
    pg_get_expr(c.relpartbound, c.oid),
    'FROM \((?:''([^'']*)''|MINVALUE)\) TO \((?:''([^'']*)''|MAXVALUE)\)'
) AS b
WHERE i.inhparent = 'ledger_entries'::regclass;

DO $$
DECLARE
    lo timestamptz;
BEGIN
    SELECT date_trunc('day', coalesce(min(least(t.persisted_at, l.accepted_at)), clock_timestamp()), 'UTC')
    INTO lo
    FROM ledger_entries_before_005 l LEFT JOIN transactions t USING (transaction_id);
    EXECUTE format(
        'CREATE TABLE ledger_entries_future PARTITION OF ledger_entries'
        ' FOR VALUES FROM (%L) TO (MAXVALUE)', lo
    );
END $$;

INSERT INTO ledger_entries (
    entry_id, transaction_id, account, direction, amount, counterparty, accepted_at, recorded_at
) OVERRIDING SYSTEM VALUE
SELECT l.entry_id, l.transaction_id, l.account, l.direction, l.amount, l.counterparty,
       l.accepted_at,
       max(coalesce(t.persisted_at, l.accepted_at)) OVER (ORDER BY l.entry_id)
FROM ledger_entries_before_005 l LEFT JOIN transactions t USING (transaction_id);

SELECT setval('ledger_entry_ids', max(entry_id)) FROM ledger_entries_before_005 HAVING count(*) > 0;

DROP TABLE ledger_entries_before_005;

INSERT INTO ledger_clock (recorded_at)
SELECT coalesce(max(recorded_at), '-infinity') FROM ledger_entries;

-- One account's history, newest first, answered from the index alone (every partition
-- gets its own copy of it).
CREATE INDEX ledger_entries_account_recorded
    ON ledger_entries (account, recorded_at DESC, entry_id DESC)
    INCLUDE (direction, amount, counterparty, transaction_id, accepted_at);

-- Creates the daily partitions up to ahead_days after today (UTC; "today" is never before
-- ledger_clock), out of the catch-all, moving into them any rows it held; with
-- retention_days > 0, drops the daily partitions that ended retention_days or more before
-- today. Only ledger partitions are dropped: transactions and account_totals stay.
-- Returns what it did. The caller holds the flusher's write lock: the DDL here must not
-- wait behind a batch, nor a batch behind it for long.
CREATE FUNCTION ledger_maintain_partitions(ahead_days int, retention_days int)
RETURNS TABLE (action text, partition_name text)
LANGUAGE plpgsql
SET TimeZone = 'UTC'
AS $$
DECLARE
    today timestamptz := date_trunc(
        'day', greatest(clock_timestamp(), (SELECT c.recorded_at FROM ledger_clock c))
    );
    target timestamptz := today + make_interval(days => greatest(ahead_days, 0) + 1);
    lo timestamptz;
    hi timestamptz;
    expired text;
BEGIN
    SELECT p.lower_bound INTO lo FROM ledger_partitions p WHERE p.name = 'ledger_entries_future';
    IF lo IS NULL THEN
        RAISE EXCEPTION 'ledger_entries_future is not a partition of ledger_entries';
    END IF;
    IF lo < target THEN
        ALTER TABLE ledger_entries DETACH PARTITION ledger_entries_future;
        WHILE lo < target LOOP
            -- Days skipped while nothing ran (lo before today) become one partition.
            hi := CASE WHEN lo < today THEN today ELSE lo + interval '1 day' END;
            partition_name := 'ledger_entries_p' || to_char(lo, 'YYYYMMDD');
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF ledger_entries FOR VALUES FROM (%L) TO (%L)',
                partition_name, lo, hi
            );
            action := 'created';
            RETURN NEXT;
            lo := hi;
        END LOOP;
        WITH moved AS (
            DELETE FROM ledger_entries_future f WHERE f.recorded_at < target RETURNING f.*
        )
        INSERT INTO ledger_entries (
            entry_id, transaction_id, account, direction, amount, counterparty, accepted_at,
            recorded_at
        ) OVERRIDING SYSTEM VALUE
        SELECT m.entry_id, m.transaction_id, m.account, m.direction, m.amount, m.counterparty,
               m.accepted_at, m.recorded_at
        FROM moved m;
        EXECUTE format(
            'ALTER TABLE ledger_entries ATTACH PARTITION ledger_entries_future'
            ' FOR VALUES FROM (%L) TO (MAXVALUE)', target
        );
    END IF;
    IF retention_days > 0 THEN
        FOR expired IN
            SELECT p.name FROM ledger_partitions p
            WHERE p.name <> 'ledger_entries_future'
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

-- Today's partition and the catch-all after it; the flusher adds the days ahead at start.
SELECT * FROM ledger_maintain_partitions(0, 0);
