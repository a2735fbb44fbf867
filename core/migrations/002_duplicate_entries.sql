-- Stream entries whose transaction_id was already persisted from another entry: a client
-- retry that arrived after the gateway's idempotency window. Nothing is written to the
-- ledger for them; they are kept here so the history shows the rejected duplicate.
CREATE TABLE IF NOT EXISTS duplicate_entries (
    stream_entry_id text        PRIMARY KEY,
    transaction_id  text        NOT NULL,
    request_id      text        NOT NULL,
    amount          bigint      NOT NULL,
    accepted_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS duplicate_entries_transaction ON duplicate_entries (transaction_id);
