-- The audit log refuses UPDATE, DELETE and TRUNCATE (issue 25, point 5). Kept in step
-- with migrations/sqlite/0016_audit_append_only.sql.
--
-- The table's owner (the role the console connects as) can still disable or drop
-- these triggers. What finds such an edit anyway is the keyed chain and its signed
-- head, written outside the database (see app/src/ssr/audit.rs). Give the console a
-- role that does not own the table to take even that away.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_delete BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
