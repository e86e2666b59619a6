-- Derived records: signal windows (partitioned by day on window_start), baselines, anomalies,
-- correlated incidents with their evidence, fraud scores (partitioned by day on occurred_at).

CREATE TABLE signal_windows (
    window_id                 TEXT NOT NULL,
    scope                     TEXT NOT NULL,     -- PERSON | SITE
    tenant_id                 BIGINT NOT NULL,
    site_id                   TEXT NOT NULL,
    person_id                 TEXT,
    window_start              TIMESTAMPTZ NOT NULL,
    window_end                TIMESTAMPTZ NOT NULL,
    phone_events_count        INTEGER NOT NULL,
    location_updates_count    INTEGER NOT NULL,
    movement_distance_meters  DOUBLE PRECISION NOT NULL,
    tasks_completed_count     INTEGER NOT NULL,
    tour_checkpoints_scanned  INTEGER NOT NULL,
    tours                     JSONB NOT NULL,    -- [{tour_id, checkpoints_expected, checkpoints_scanned}]
    event_count               INTEGER NOT NULL,
    late_event_count          INTEGER NOT NULL,
    ingested_at               TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (window_id, window_start)
) PARTITION BY RANGE (window_start);
CREATE INDEX signal_windows_site_time ON signal_windows (tenant_id, site_id, window_start DESC);
CREATE INDEX signal_windows_person_time ON signal_windows (tenant_id, person_id, window_start DESC)
    WHERE person_id IS NOT NULL;

-- Latest state per baseline: an update older (updated_at) than the stored one is ignored.
CREATE TABLE baselines (
    baseline_id            TEXT PRIMARY KEY,     -- tenant:site:metric:hour_of_week
    tenant_id              BIGINT NOT NULL,
    site_id                TEXT NOT NULL,
    metric                 TEXT NOT NULL,
    hour_of_week           SMALLINT NOT NULL,
    sample_count           BIGINT NOT NULL,
    mean                   DOUBLE PRECISION NOT NULL,
    m2                     DOUBLE PRECISION NOT NULL,
    stddev                 DOUBLE PRECISION NOT NULL,
    is_stable              BOOLEAN NOT NULL,
    dynamic_threshold      DOUBLE PRECISION NOT NULL,
    false_positive_rate    DOUBLE PRECISION NOT NULL,
    feedback_total         INTEGER NOT NULL,
    false_positives        INTEGER NOT NULL,
    last_threshold_update  TIMESTAMPTZ,
    updated_at             TIMESTAMPTZ NOT NULL,
    ingested_at            TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX baselines_site_metric ON baselines (tenant_id, site_id, metric, hour_of_week);

CREATE TABLE anomalies (
    anomaly_id    TEXT PRIMARY KEY,
    tenant_id     BIGINT NOT NULL,
    site_id       TEXT NOT NULL,
    person_id     TEXT,
    window_id     TEXT NOT NULL,
    baseline_id   TEXT NOT NULL,
    metric        TEXT NOT NULL,
    observed      DOUBLE PRECISION NOT NULL,
    expected      DOUBLE PRECISION NOT NULL,
    stddev        DOUBLE PRECISION NOT NULL,
    threshold     DOUBLE PRECISION NOT NULL,
    score         DOUBLE PRECISION NOT NULL,
    severity      TEXT NOT NULL,
    window_start  TIMESTAMPTZ NOT NULL,
    window_end    TIMESTAMPTZ NOT NULL,          -- the anomaly's event time
    ingested_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX anomalies_tenant_time ON anomalies (tenant_id, window_end DESC);
CREATE INDEX anomalies_site_time ON anomalies (tenant_id, site_id, window_end DESC);
CREATE INDEX anomalies_person_time ON anomalies (tenant_id, person_id, window_end DESC) WHERE person_id IS NOT NULL;
CREATE INDEX anomalies_baseline ON anomalies (baseline_id);

-- Latest revision per incident: a revision lower than or equal to the stored one is ignored.
CREATE TABLE incidents (
    incident_id        TEXT PRIMARY KEY,
    tenant_id          BIGINT NOT NULL,
    site_id            TEXT NOT NULL,
    person_id          TEXT,
    status             TEXT NOT NULL,            -- OPEN | CLOSED
    combined_severity  TEXT NOT NULL,
    kinds              TEXT[] NOT NULL,
    related_event_ids  TEXT[] NOT NULL,
    evidence           JSONB NOT NULL,           -- [{event_id, kind, severity, occurred_at, summary}]
    title              TEXT NOT NULL,
    first_seen         TIMESTAMPTZ NOT NULL,
    last_seen          TIMESTAMPTZ NOT NULL,
    revision           INTEGER NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    ingested_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX incidents_open ON incidents (tenant_id, last_seen DESC) WHERE status = 'OPEN';
CREATE INDEX incidents_tenant_time ON incidents (tenant_id, last_seen DESC);
CREATE INDEX incidents_site_time ON incidents (tenant_id, site_id, last_seen DESC);
CREATE INDEX incidents_person_time ON incidents (tenant_id, person_id, last_seen DESC) WHERE person_id IS NOT NULL;

-- Evidence of each incident, one row per related event (only grows with revisions).
CREATE TABLE incident_events (
    incident_id  TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    tenant_id    BIGINT NOT NULL,
    kind         TEXT NOT NULL,                  -- NOC_ALERT | ANOMALY | AUDIT_FINDING | FRAUD_SCORE
    severity     TEXT NOT NULL,
    occurred_at  TIMESTAMPTZ NOT NULL,
    summary      TEXT NOT NULL,
    PRIMARY KEY (incident_id, event_id)
);
CREATE INDEX incident_events_event ON incident_events (event_id);

CREATE TABLE fraud_scores (
    score_id           TEXT NOT NULL,
    event_id           TEXT NOT NULL,            -- attendance event scored
    tenant_id          BIGINT NOT NULL,
    site_id            TEXT NOT NULL,
    person_id          TEXT NOT NULL,
    device_id          TEXT NOT NULL,
    shift_id           TEXT,
    event_type         TEXT NOT NULL,
    occurred_at        TIMESTAMPTZ NOT NULL,
    fraud_probability  DOUBLE PRECISION NOT NULL,
    risk_level         TEXT NOT NULL,            -- LOW | MEDIUM | HIGH | CRITICAL
    model_version      TEXT NOT NULL,
    reasons            JSONB NOT NULL,           -- [{feature, value, contribution, description}]
    feature_names      TEXT[] NOT NULL,
    features           DOUBLE PRECISION[] NOT NULL,  -- NaN for missing
    ingested_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (score_id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE INDEX fraud_scores_tenant_time ON fraud_scores (tenant_id, occurred_at DESC);
CREATE INDEX fraud_scores_person_time ON fraud_scores (tenant_id, person_id, occurred_at DESC);
CREATE INDEX fraud_scores_site_time ON fraud_scores (tenant_id, site_id, occurred_at DESC);
CREATE INDEX fraud_scores_risky ON fraud_scores (tenant_id, occurred_at DESC) WHERE risk_level IN ('HIGH', 'CRITICAL');
CREATE INDEX fraud_scores_event ON fraud_scores (event_id);
