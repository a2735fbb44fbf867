-- One account's history is read newest first by ledger sequence (entry_id): new entries
-- always sort before the pages a reader has already seen, so keyset pagination neither
-- skips nor repeats an entry while the flusher keeps inserting.
CREATE INDEX IF NOT EXISTS ledger_entries_account_entry
    ON ledger_entries (account, entry_id DESC)
    INCLUDE (direction, amount, counterparty, transaction_id, accepted_at);
DROP INDEX IF EXISTS ledger_entries_account_time;

-- Per-account aggregates, updated by the flusher in the same transaction as the legs
-- (never computed by scanning history on a read). Balances stay out of scope.
CREATE TABLE IF NOT EXISTS account_totals (
    account           text        PRIMARY KEY,
    debited_total     numeric     NOT NULL DEFAULT 0,
    credited_total    numeric     NOT NULL DEFAULT 0,
    debit_count       bigint      NOT NULL DEFAULT 0,
    credit_count      bigint      NOT NULL DEFAULT 0,
    first_activity_at timestamptz NOT NULL,
    last_activity_at  timestamptz NOT NULL
);
