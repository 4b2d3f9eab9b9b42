-- Removing a user (issue 26, point 1). Kept in step with the other engine's
-- 0017_user_removal.sql.
--
-- A removed account is not deleted: the history (jobs, restore requests, approvals,
-- the audit log) keeps naming who did what, and the name cannot be given to someone
-- else. It is disabled, its password hash replaced by one nothing matches, its
-- sessions ended, and its tokens, grants and approver rights deleted; the console no
-- longer lists it.
ALTER TABLE users ADD COLUMN removed_at BIGINT;
