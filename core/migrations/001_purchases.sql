-- One row per purchase. transaction_id is unique: a redelivered stream entry cannot write twice.
CREATE TABLE IF NOT EXISTS transactions (
    transaction_id   text        PRIMARY KEY,
    customer_name    text        NOT NULL,
    customer_account text        NOT NULL,
    seller_name      text        NOT NULL,
    seller_account   text        NOT NULL,
    amount           bigint      NOT NULL CHECK (amount > 0),
    request_id       text        NOT NULL,
    stream_entry_id  text        NOT NULL,
    accepted_at      timestamptz NOT NULL,
    persisted_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (customer_account <> seller_account)
);

-- Two rows per purchase, written in the same statement as the transaction row:
-- a DEBIT of the customer's account and a CREDIT of the seller's, for the same amount.
CREATE TABLE IF NOT EXISTS ledger_entries (
    entry_id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id text        NOT NULL,
    account        text        NOT NULL,
    direction      text        NOT NULL CHECK (direction IN ('DEBIT', 'CREDIT')),
    amount         bigint      NOT NULL CHECK (amount > 0),
    counterparty   text        NOT NULL,
    accepted_at    timestamptz NOT NULL,
    UNIQUE (transaction_id, direction)
);

-- One account's history in time order, newest first.
CREATE INDEX IF NOT EXISTS ledger_entries_account_time
    ON ledger_entries (account, accepted_at DESC, entry_id DESC);

-- Stream entries the flusher could not decode or store: kept, never silently dropped.
CREATE TABLE IF NOT EXISTS dead_letters (
    stream_entry_id text        PRIMARY KEY,
    payload         bytea       NOT NULL,
    error           text        NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
