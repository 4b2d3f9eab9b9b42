-- Sessions that can be ended (issue 25, point 6). Kept in step with the other engine's
-- 0015_session_epoch.sql.
--
-- A session cookie carries the epoch its user had when it was issued; it is accepted
-- only while the user's row still has that epoch. A password change or reset,
-- disabling the account and "sign out everywhere" add one, which ends every cookie
-- issued before at once.
ALTER TABLE users ADD COLUMN session_epoch BIGINT NOT NULL DEFAULT 0;

-- Logout ends one session (one browser), not all: a cookie names its session, and a
-- logged-out session's id is kept here until the cookie would have expired anyway.
CREATE TABLE ended_sessions (
    sid           TEXT    PRIMARY KEY,
    user_id       BIGINT  NOT NULL,
    expires_at    BIGINT  NOT NULL
);
CREATE INDEX ended_sessions_expiry ON ended_sessions (expires_at);
