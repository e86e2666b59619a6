-- Records that could not be processed: from the dead-letters topic and the sink's own decode failures.

CREATE TABLE dead_letters (
    dead_letter_id    TEXT PRIMARY KEY,
    source_topic      TEXT NOT NULL,
    "partition"       INTEGER NOT NULL,
    "offset"          BIGINT NOT NULL,
    reason            TEXT NOT NULL,             -- MALFORMED, UNKNOWN_SCHEMA, WRONG_SCHEMA, MISSING_FIELD, ...
    detail            TEXT NOT NULL,
    component         TEXT NOT NULL,
    key               BYTEA,
    value             BYTEA,
    record_timestamp  TIMESTAMPTZ NOT NULL,
    ingested_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_time ON dead_letters (ingested_at DESC);
CREATE INDEX dead_letters_source ON dead_letters (source_topic, "partition", "offset");
CREATE INDEX dead_letters_reason ON dead_letters (reason, ingested_at DESC);
