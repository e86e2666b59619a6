-- Dashboard sessions (owned by gateway/sessions.py; applied idempotently by gateway/tokens.py). Signing in on the
-- dashboard with a token sets an HttpOnly cookie; only the sha256 of its value is stored, with the token it stands
-- for: revoking (or expiring) the token ends its sessions, and signing out deletes the row.
CREATE TABLE IF NOT EXISTS gateway_sessions (
    session_hash TEXT PRIMARY KEY,                                   -- hex sha256 of the cookie value
    token_hash   TEXT NOT NULL REFERENCES gateway_tokens (token_hash) ON DELETE CASCADE,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS gateway_sessions_expires ON gateway_sessions (expires_at);
CREATE INDEX IF NOT EXISTS gateway_sessions_token ON gateway_sessions (token_hash, created_at);
