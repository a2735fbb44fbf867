-- Times the flusher found its stream or consumer group gone (deleted, or Redis restarted
-- without its data). Purchases acknowledged after last_committed_entry_id and not yet
-- flushed at that moment may be lost with the stream: this row is where an operator
-- starts looking, instead of the loss passing silently.
CREATE TABLE IF NOT EXISTS stream_incidents (
    incident_id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    detected_at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    consumer                text        NOT NULL,
    reason                  text        NOT NULL,
    last_committed_entry_id text
);
