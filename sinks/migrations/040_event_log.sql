-- The NOC feed (events topic), partitioned by day on ts. The gateway fills broadcast_at and
-- broadcast_latency_ms when it pushes the event; the sink never overwrites a stored event.

CREATE TABLE event_log (
    event_id              TEXT NOT NULL,
    type                  TEXT NOT NULL,         -- alert_created, ..., ticket_updated
    ts                    TIMESTAMPTZ NOT NULL,  -- event time of what happened
    tenant_id             BIGINT NOT NULL,
    site_id               TEXT,
    person_id             TEXT,
    payload               JSONB NOT NULL,
    broadcast_at          TIMESTAMPTZ,
    broadcast_latency_ms  DOUBLE PRECISION,
    ingested_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX event_log_tenant_time ON event_log (tenant_id, ts DESC);
CREATE INDEX event_log_tenant_type_time ON event_log (tenant_id, type, ts DESC);
