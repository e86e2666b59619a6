-- Idempotency keys of ticket changes (owned by gateway/idempotency.py; applied idempotently by gateway/tokens.py).
-- One row per (tenant, key): the request it was first used for, and once known the answer given. A retry with the
-- same key gets that answer again, and the feed event of the change is published once (pending_event holds it
-- until its delivery is confirmed). Rows older than the gateway's idempotency_ttl_s are deleted.
CREATE TABLE IF NOT EXISTS gateway_idempotency (
    tenant_id     BIGINT NOT NULL,
    idem_key      TEXT NOT NULL,
    request_hash  TEXT NOT NULL,                 -- sha256 of the method, path and canonical body
    status_code   INTEGER,                       -- NULL while the first request is being processed
    response      BYTEA,                         -- the response body given
    pending_event BYTEA,                         -- the ticket_updated event (JSON) not yet confirmed delivered
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, idem_key)
);
CREATE INDEX IF NOT EXISTS gateway_idempotency_created ON gateway_idempotency (created_at);
