-- Stream entry ids are unique per stream only: with several shards (MONOKERA_STREAM_SHARDS)
-- two shards hand out the same id, so a row keyed on the id alone let one shard's dead
-- letter or rejected duplicate hide (ON CONFLICT DO NOTHING) behind another's, and let
-- reconcile take one shard's stored entry for another's lost one. Every row that names a
-- stream entry now also names its shard (the N of stream key monokera:{N}:purchases).
--
-- Existing rows get shard 0: the only shard of the default single-stream setup, where
-- every row so far came from. (A deployment that already ran several shards cannot be
-- told apart here: their rows stay findable by transaction_id, and reconcile only looks
-- up entries still in the streams, trimmed a minute after they are acknowledged.)
-- The defaults stay so that a flusher of the previous release still writing during a
-- rolling upgrade inserts shard 0 instead of failing; this release always sets it.
-- Adding a column with a constant default rewrites nothing; the two primary keys are
-- rebuilt, on tables that only hold the rare rejected entries.
ALTER TABLE transactions ADD COLUMN stream_shard smallint NOT NULL DEFAULT 0;

ALTER TABLE duplicate_entries ADD COLUMN stream_shard smallint NOT NULL DEFAULT 0;
ALTER TABLE duplicate_entries DROP CONSTRAINT duplicate_entries_pkey;
ALTER TABLE duplicate_entries ADD PRIMARY KEY (stream_shard, stream_entry_id);

ALTER TABLE dead_letters ADD COLUMN stream_shard smallint NOT NULL DEFAULT 0;
ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_pkey;
ALTER TABLE dead_letters ADD PRIMARY KEY (stream_shard, stream_entry_id);
