-- Tickets (current state), their history (one row per accepted change) and per-tenant number counters.

CREATE TABLE ticket_counters (
    tenant_id  BIGINT NOT NULL,
    year       INTEGER NOT NULL,
    last_no    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, year)
);

CREATE TABLE tickets (
    ticket_id         TEXT PRIMARY KEY,
    tenant_id         BIGINT NOT NULL,
    ticket_no         TEXT NOT NULL,             -- NOC-2026-000123, per tenant and year (event time)
    site_id           TEXT,
    person_id         TEXT,
    category          TEXT NOT NULL,
    source            TEXT NOT NULL,             -- SYSTEM_GENERATED | USER
    status            TEXT NOT NULL,             -- NEW | OPEN | IN_PROGRESS | RESOLVED | CLOSED
    priority          TEXT NOT NULL,             -- LOW | MEDIUM | HIGH | URGENT
    resolution        TEXT,                      -- FRAUD_CONFIRMED | FALSE_POSITIVE | RESOLVED_OTHER | DUPLICATE
    title             TEXT NOT NULL,
    description       TEXT NOT NULL,
    related_event_id  TEXT,
    related_kind      TEXT,                      -- AUDIT_FINDING | FRAUD_SCORE | INCIDENT (commands only)
    evidence_summary  TEXT,
    command_id        TEXT,                      -- the ticket command that created it, if any
    created_by        TEXT,
    created_at        TIMESTAMPTZ NOT NULL,      -- event time of the creation
    updated_at        TIMESTAMPTZ NOT NULL,      -- event time of the latest change
    resolved_at       TIMESTAMPTZ,
    closed_at         TIMESTAMPTZ,
    version           INTEGER NOT NULL,          -- 1 at creation, +1 per accepted change
    ingested_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, ticket_no)
);
CREATE INDEX tickets_queue ON tickets (tenant_id, status, priority, updated_at DESC);
CREATE INDEX tickets_tenant_created ON tickets (tenant_id, created_at DESC);
CREATE INDEX tickets_site ON tickets (tenant_id, site_id, created_at DESC) WHERE site_id IS NOT NULL;
CREATE INDEX tickets_person ON tickets (tenant_id, person_id, created_at DESC) WHERE person_id IS NOT NULL;
CREATE INDEX tickets_related ON tickets (related_event_id) WHERE related_event_id IS NOT NULL;

CREATE TABLE ticket_history (
    change_id    TEXT PRIMARY KEY,               -- command_id, upstream ticket event_id, or the API's change id
    ticket_id    TEXT NOT NULL REFERENCES tickets (ticket_id),
    tenant_id    BIGINT NOT NULL,
    version      INTEGER NOT NULL,               -- the ticket's version after this change
    from_status  TEXT,                           -- NULL for the creation
    to_status    TEXT NOT NULL,
    resolution   TEXT,
    actor        TEXT,
    note         TEXT,
    origin       TEXT NOT NULL,                  -- COMMAND | UPSTREAM | API
    occurred_at  TIMESTAMPTZ NOT NULL,
    recorded_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (ticket_id, version)
);
CREATE INDEX ticket_history_tenant_time ON ticket_history (tenant_id, occurred_at DESC);
