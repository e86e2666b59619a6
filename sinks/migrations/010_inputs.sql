-- Input events: attendance and activity (partitioned by day on occurred_at), alerts, audit findings, labels.
-- Partitions are created by the sink ahead of the rows (sinks/partitions.py); the primary key includes
-- the partition column, so the sink upserts on (id, occurred_at) and redelivery hits the same row.

CREATE TABLE attendance (
    event_id          TEXT NOT NULL,
    tenant_id         BIGINT NOT NULL,
    site_id           TEXT NOT NULL,
    person_id         TEXT NOT NULL,
    occurred_at       TIMESTAMPTZ NOT NULL,
    received_at       TIMESTAMPTZ NOT NULL,
    event_type        TEXT NOT NULL,             -- CHECK_IN | CHECK_OUT
    shift_id          TEXT,
    lat               DOUBLE PRECISION NOT NULL,
    lon               DOUBLE PRECISION NOT NULL,
    accuracy_m        DOUBLE PRECISION NOT NULL,
    device_id         TEXT NOT NULL,
    is_mock_location  BOOLEAN NOT NULL,
    face_match_score  DOUBLE PRECISION,
    ingested_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE INDEX attendance_tenant_time ON attendance (tenant_id, occurred_at DESC);
CREATE INDEX attendance_person_time ON attendance (tenant_id, person_id, occurred_at DESC);
CREATE INDEX attendance_site_time ON attendance (tenant_id, site_id, occurred_at DESC);

CREATE TABLE activity (
    event_id          TEXT NOT NULL,
    tenant_id         BIGINT NOT NULL,
    site_id           TEXT NOT NULL,
    person_id         TEXT NOT NULL,
    occurred_at       TIMESTAMPTZ NOT NULL,
    received_at       TIMESTAMPTZ NOT NULL,
    kind              TEXT NOT NULL,             -- PHONE_EVENT | LOCATION_UPDATE | TASK_COMPLETED | TOUR_CHECKPOINT_SCANNED
    device_id         TEXT,
    shift_id          TEXT,
    lat               DOUBLE PRECISION,
    lon               DOUBLE PRECISION,
    accuracy_m        DOUBLE PRECISION,
    is_mock_location  BOOLEAN NOT NULL,
    phone_event_type  TEXT,
    task_id           TEXT,
    tour_id           TEXT,
    checkpoint_id     TEXT,
    ingested_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE INDEX activity_tenant_time ON activity (tenant_id, occurred_at DESC);
CREATE INDEX activity_person_time ON activity (tenant_id, person_id, occurred_at DESC);
CREATE INDEX activity_site_time ON activity (tenant_id, site_id, occurred_at DESC);

CREATE TABLE alerts (
    event_id     TEXT PRIMARY KEY,
    tenant_id    BIGINT NOT NULL,
    site_id      TEXT NOT NULL,
    person_id    TEXT,
    occurred_at  TIMESTAMPTZ NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL,
    alert_type   TEXT NOT NULL,
    severity     TEXT NOT NULL,                  -- LOW | MEDIUM | HIGH | CRITICAL
    message      TEXT NOT NULL,
    source       TEXT NOT NULL,
    ingested_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX alerts_tenant_time ON alerts (tenant_id, occurred_at DESC);
CREATE INDEX alerts_site_time ON alerts (tenant_id, site_id, occurred_at DESC);
CREATE INDEX alerts_person_time ON alerts (tenant_id, person_id, occurred_at DESC) WHERE person_id IS NOT NULL;

-- One row per finding. The escalation columns come from the finding-escalations topic; either record
-- may arrive first, so the columns only the finding carries are nullable.
CREATE TABLE audit_findings (
    event_id              TEXT PRIMARY KEY,      -- the finding id (= finding_escalation.finding_id)
    tenant_id             BIGINT NOT NULL,
    site_id               TEXT NOT NULL,
    person_id             TEXT,
    occurred_at           TIMESTAMPTZ NOT NULL,
    received_at           TIMESTAMPTZ,           -- NULL until the finding itself arrives
    finding_type          TEXT,                  -- NULL until the finding itself arrives
    severity              TEXT NOT NULL,
    evidence_summary      TEXT NOT NULL,
    auditor_id            TEXT,
    evidence_urls         TEXT[] NOT NULL DEFAULT '{}',
    escalated_to_ticket   BOOLEAN NOT NULL DEFAULT FALSE,
    escalation_ticket_id  TEXT,
    escalated_at          TIMESTAMPTZ,
    ingested_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX audit_findings_tenant_time ON audit_findings (tenant_id, occurred_at DESC);
CREATE INDEX audit_findings_site_time ON audit_findings (tenant_id, site_id, occurred_at DESC);
CREATE INDEX audit_findings_person_time ON audit_findings (tenant_id, person_id, occurred_at DESC)
    WHERE person_id IS NOT NULL;
CREATE INDEX audit_findings_escalated ON audit_findings (tenant_id, escalated_at DESC) WHERE escalated_to_ticket;

CREATE TABLE labels (
    label_id     TEXT PRIMARY KEY,
    tenant_id    BIGINT NOT NULL,
    site_id      TEXT,
    person_id    TEXT,
    event_id     TEXT NOT NULL,                  -- labelled event, usually an attendance event
    is_fraud     BOOLEAN NOT NULL,
    scenario     TEXT NOT NULL,
    source       TEXT NOT NULL,                  -- SIMULATOR | TICKET_RESOLUTION | ANALYST
    occurred_at  TIMESTAMPTZ NOT NULL,
    ingested_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX labels_event ON labels (event_id);
CREATE INDEX labels_tenant_time ON labels (tenant_id, occurred_at DESC);
