-- MySQL and MariaDB sources (issue 14). Kept in step with
-- migrations/postgres/0014_mysql_sources.sql.
--
-- SQLite cannot change a CHECK constraint, so `sources` is rebuilt the way
-- 0006_policy_retention.sql explains: foreign-key checks are deferred to the commit, and
-- the rows go back under the old name. Dropping `sources` deletes the grants and
-- approvers that reference it (ON DELETE CASCADE) and clears drill plans' scratch
-- servers (ON DELETE SET NULL): all three are put back.
PRAGMA defer_foreign_keys = ON;
CREATE TEMP TABLE sources_keep AS SELECT * FROM sources;
CREATE TEMP TABLE source_grants_keep AS SELECT * FROM source_grants;
CREATE TEMP TABLE source_approvers_keep AS SELECT * FROM source_approvers;
CREATE TEMP TABLE drill_scratch_keep AS
    SELECT policy_id, scratch_source_id FROM drill_plans WHERE scratch_source_id IS NOT NULL;
CREATE TABLE sources_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE,
    engine        TEXT    NOT NULL CHECK (engine IN ('sqlite', 'postgres', 'mysql')),
    -- The URL with any password removed, for display.
    display_url   TEXT    NOT NULL,
    sealed_url    TEXT    NOT NULL,
    created_by    BIGINT,
    created_at    BIGINT  NOT NULL,
    approvals_required BIGINT NOT NULL DEFAULT 0,
    request_ttl_minutes BIGINT NOT NULL DEFAULT 4320
);
DROP TABLE sources;
ALTER TABLE sources_new RENAME TO sources;
INSERT INTO sources (id, name, engine, display_url, sealed_url, created_by, created_at, approvals_required, request_ttl_minutes)
    SELECT id, name, engine, display_url, sealed_url, created_by, created_at, approvals_required, request_ttl_minutes
    FROM sources_keep;
INSERT INTO source_grants SELECT * FROM source_grants_keep
    WHERE NOT EXISTS (SELECT 1 FROM source_grants g
                      WHERE g.source_id = source_grants_keep.source_id AND g.user_id = source_grants_keep.user_id);
INSERT INTO source_approvers SELECT * FROM source_approvers_keep
    WHERE NOT EXISTS (SELECT 1 FROM source_approvers a
                      WHERE a.source_id = source_approvers_keep.source_id AND a.user_id = source_approvers_keep.user_id);
UPDATE drill_plans SET scratch_source_id =
    (SELECT k.scratch_source_id FROM drill_scratch_keep k WHERE k.policy_id = drill_plans.policy_id)
    WHERE policy_id IN (SELECT policy_id FROM drill_scratch_keep);
DROP TABLE sources_keep;
DROP TABLE source_grants_keep;
DROP TABLE source_approvers_keep;
DROP TABLE drill_scratch_keep;
