-- Restore drills (issue 13). Kept in step with migrations/sqlite/0013_restore_drills.sql.

-- Jobs of kind 'drill'.
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN ('backup', 'restore', 'verify', 'prune', 'copy', 'drill'));

-- A policy's drill: when it runs (cron or shorthand in a time zone; '' on demand only),
-- which snapshot it proves ('latest' or 'random' among the policy's), where the scratch
-- copy goes (a PostgreSQL source's server, where a database is created and dropped;
-- NULL for SQLite, a temporary file), and the SQL assertions (JSON array of strings).
CREATE TABLE drill_plans (
    policy_id         BIGINT  PRIMARY KEY REFERENCES policies (id) ON DELETE CASCADE,
    schedule          TEXT    NOT NULL DEFAULT '',
    timezone          TEXT    NOT NULL DEFAULT 'UTC',
    pick              TEXT    NOT NULL DEFAULT 'latest' CHECK (pick IN ('latest', 'random')),
    scratch_source_id BIGINT  REFERENCES sources (id) ON DELETE SET NULL,
    assertions        TEXT    NOT NULL DEFAULT '[]',
    next_run_at       BIGINT,
    updated_at        BIGINT  NOT NULL
);

-- The evidence of every drill run: kept when the policy goes (auditors keep history).
CREATE TABLE drills (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    policy_id     BIGINT,
    policy_name   TEXT    NOT NULL,
    job_id        BIGINT,
    target_id     BIGINT,
    snapshot_id   TEXT    NOT NULL,
    snapshot_time BIGINT  NOT NULL,
    started_at    BIGINT  NOT NULL,
    duration_ms   BIGINT  NOT NULL,
    table_count   BIGINT  NOT NULL,
    row_count     BIGINT  NOT NULL,
    passed        BIGINT  NOT NULL,
    -- engine::drill::DrillReport as JSON: every table's and assertion's outcome.
    report        TEXT    NOT NULL
);
CREATE INDEX drills_policy ON drills (policy_id, id);
