-- The tenant is part of every key the sink upserts on, so a record of one tenant can never update, suppress
-- or collide with another tenant's row: two tenants using the same producer-chosen id get two rows.
-- Each new key is the old key plus tenant_id (the id stays the leading column, so lookups by id alone keep
-- their index). Rows already stored are unique under the old key, hence under the new one too.
-- dead_letters keeps its key: its ids are derived from (source topic, partition, offset, component).

ALTER TABLE attendance DROP CONSTRAINT attendance_pkey;
ALTER TABLE attendance ADD PRIMARY KEY (event_id, tenant_id, occurred_at);

ALTER TABLE activity DROP CONSTRAINT activity_pkey;
ALTER TABLE activity ADD PRIMARY KEY (event_id, tenant_id, occurred_at);

ALTER TABLE alerts DROP CONSTRAINT alerts_pkey;
ALTER TABLE alerts ADD PRIMARY KEY (event_id, tenant_id);

ALTER TABLE audit_findings DROP CONSTRAINT audit_findings_pkey;
ALTER TABLE audit_findings ADD PRIMARY KEY (event_id, tenant_id);

ALTER TABLE labels DROP CONSTRAINT labels_pkey;
ALTER TABLE labels ADD PRIMARY KEY (label_id, tenant_id);

ALTER TABLE signal_windows DROP CONSTRAINT signal_windows_pkey;
ALTER TABLE signal_windows ADD PRIMARY KEY (window_id, tenant_id, window_start);

ALTER TABLE baselines DROP CONSTRAINT baselines_pkey;
ALTER TABLE baselines ADD PRIMARY KEY (baseline_id, tenant_id);

ALTER TABLE anomalies DROP CONSTRAINT anomalies_pkey;
ALTER TABLE anomalies ADD PRIMARY KEY (anomaly_id, tenant_id);

ALTER TABLE incidents DROP CONSTRAINT incidents_pkey;
ALTER TABLE incidents ADD PRIMARY KEY (incident_id, tenant_id);

ALTER TABLE incident_events DROP CONSTRAINT incident_events_pkey;
ALTER TABLE incident_events ADD PRIMARY KEY (incident_id, tenant_id, event_id);

ALTER TABLE fraud_scores DROP CONSTRAINT fraud_scores_pkey;
ALTER TABLE fraud_scores ADD PRIMARY KEY (score_id, tenant_id, occurred_at);

ALTER TABLE event_log DROP CONSTRAINT event_log_pkey;
ALTER TABLE event_log ADD PRIMARY KEY (event_id, tenant_id, ts);

-- Tickets: the history references its ticket by (ticket_id, tenant_id); change ids are per tenant.
ALTER TABLE ticket_history DROP CONSTRAINT ticket_history_ticket_id_fkey;
ALTER TABLE ticket_history DROP CONSTRAINT ticket_history_ticket_id_version_key;
ALTER TABLE ticket_history DROP CONSTRAINT ticket_history_pkey;
ALTER TABLE tickets DROP CONSTRAINT tickets_pkey;
ALTER TABLE tickets ADD PRIMARY KEY (ticket_id, tenant_id);
ALTER TABLE ticket_history ADD PRIMARY KEY (change_id, tenant_id);
ALTER TABLE ticket_history ADD CONSTRAINT ticket_history_ticket_version UNIQUE (ticket_id, tenant_id, version);
ALTER TABLE ticket_history ADD CONSTRAINT ticket_history_ticket_fkey
    FOREIGN KEY (ticket_id, tenant_id) REFERENCES tickets (ticket_id, tenant_id);
