-- Per-user API tokens (issue 11). Kept in step with migrations/postgres/0010_api_tokens.sql.
-- The token itself is shown once; only its BLAKE3 hash is stored.
CREATE TABLE api_tokens (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id       BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          TEXT    NOT NULL,
    token_hash    TEXT    NOT NULL UNIQUE,
    -- The role the token acts with: the user's own or a narrower one.
    role          TEXT    NOT NULL CHECK (role IN ('admin', 'operator', 'requester', 'auditor')),
    created_at    BIGINT  NOT NULL,
    expires_at    BIGINT  NOT NULL,
    revoked_at    BIGINT,
    last_used_at  BIGINT
);
CREATE INDEX api_tokens_user ON api_tokens (user_id, id);
