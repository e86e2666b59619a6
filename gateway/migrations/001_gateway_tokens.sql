-- API tokens of the gateway (owned by gateway/tokens.py, which applies this file idempotently).
-- Only the sha256 of the secret is stored: the token is shown once, when it is created.
CREATE TABLE IF NOT EXISTS gateway_tokens (
    token_hash   TEXT PRIMARY KEY,              -- hex sha256 of the whole bearer token
    token_id     TEXT NOT NULL UNIQUE,          -- short public id, for listing and revoking
    tenant_id    BIGINT NOT NULL,
    capabilities TEXT[] NOT NULL,
    label        TEXT NOT NULL DEFAULT '',
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS gateway_tokens_tenant ON gateway_tokens (tenant_id);
