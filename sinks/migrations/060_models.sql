-- Fraud model registry (owned by models/registry.py). Idempotent: safe to run again.

CREATE TABLE IF NOT EXISTS models (
    version          TEXT PRIMARY KEY,          -- e.g. t1-xgb-20260301-101500-123
    tenant_id        BIGINT,                    -- NULL = the global model
    algorithm        TEXT NOT NULL CHECK (algorithm IN ('xgboost', 'lightgbm')),
    metrics          JSONB NOT NULL,            -- holdout PR-AUC, ROC-AUC, precision at 80% recall, sizes
    feature_names    JSONB NOT NULL,
    feature_hash     TEXT NOT NULL,
    artifact_path    TEXT NOT NULL,
    artifact_sha256  TEXT NOT NULL,
    trained_at       TIMESTAMPTZ NOT NULL,
    is_active        BOOLEAN NOT NULL DEFAULT FALSE,
    activated_at     TIMESTAMPTZ
);

-- At most one active model per tenant (and one global).
CREATE UNIQUE INDEX IF NOT EXISTS models_one_active
    ON models ((COALESCE(tenant_id, -1))) WHERE is_active;
CREATE INDEX IF NOT EXISTS models_tenant_trained ON models (tenant_id, trained_at DESC);

-- Every activation, so a rollback returns to the model that was active before.
CREATE TABLE IF NOT EXISTS model_activations (
    id                BIGSERIAL PRIMARY KEY,
    tenant_id         BIGINT,
    version           TEXT NOT NULL REFERENCES models (version),
    previous_version  TEXT REFERENCES models (version),
    action            TEXT NOT NULL CHECK (action IN ('ACTIVATED', 'ROLLED_BACK', 'DEACTIVATED')),
    at                TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS model_activations_tenant ON model_activations (tenant_id, id DESC);
