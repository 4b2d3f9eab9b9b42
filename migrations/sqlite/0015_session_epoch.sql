-- Sessions that can be ended (issue 25, point 6). Kept in step with the other engine's
-- 0015_session_epoch.sql.
--
-- A session cookie carries the epoch its user had when it was issued; it is accepted
-- only while the user's row still has that epoch. Logout, a password change or reset,
-- disabling the account and an admin's "sign out everywhere" add one, which ends every
-- cookie issued before at once.
ALTER TABLE users ADD COLUMN session_epoch BIGINT NOT NULL DEFAULT 0;
