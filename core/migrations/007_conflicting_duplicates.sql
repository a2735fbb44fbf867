-- A duplicate entry is either a repeat of the stored purchase (a client retry that came
-- back after the idempotency window, harmless) or a conflicting one: the same
-- transaction_id with other accounts or another amount. The gateway answered that one
-- 200 (past the window it cannot know), yet the ledger holds the first purchase: the
-- flusher now says which (conflicting) and keeps the accounts the rejected entry named.
--
-- Rows of earlier releases kept only the amount: one whose amount differs from the stored
-- purchase's is known to conflict; the others stay NULL (unknown). A flusher of the
-- previous release still writing during a rolling upgrade leaves the new columns NULL
-- too. Nullable columns without a default rewrite nothing; the UPDATE touches only the
-- rare rejected entries.
ALTER TABLE duplicate_entries ADD COLUMN customer_account text;
ALTER TABLE duplicate_entries ADD COLUMN seller_account text;
ALTER TABLE duplicate_entries ADD COLUMN conflicting boolean;

UPDATE duplicate_entries d SET conflicting = true
FROM transactions t
WHERE t.transaction_id = d.transaction_id AND t.amount <> d.amount;
