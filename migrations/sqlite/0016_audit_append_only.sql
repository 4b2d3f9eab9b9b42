-- The audit log refuses UPDATE and DELETE (issue 25, point 5). Kept in step with
-- migrations/postgres/0016_audit_append_only.sql.
--
-- Against mistakes and casual edits: whoever owns the database file can drop these
-- triggers. What finds such an edit anyway is the keyed chain and its signed head,
-- written outside the database (see app/src/ssr/audit.rs).
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
