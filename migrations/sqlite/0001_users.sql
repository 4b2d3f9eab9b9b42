-- Console accounts (issue 2). Kept in step with migrations/postgres/0001_users.sql:
-- the console talks to both through sqlx's Any driver with the same queries.
-- Passwords are Argon2id PHC strings; times are unix milliseconds.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('admin', 'operator', 'requester', 'auditor')),
    created_at    BIGINT  NOT NULL,
    -- NULL while the account may log in; set when an admin disables it.
    disabled_at   BIGINT
);
