-- Restore drills (issue 13). Kept in step with migrations/postgres/0013_restore_drills.sql.

-- Jobs of kind 'drill'. SQLite cannot change a CHECK constraint, so `jobs` is rebuilt
-- the way 0006_policy_retention.sql explains (deferred foreign keys; job logs put back).
PRAGMA defer_foreign_keys = ON;
CREATE TEMP TABLE job_logs_keep AS SELECT * FROM job_logs;
CREATE TEMP TABLE jobs_keep AS SELECT * FROM jobs;
CREATE TABLE jobs_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT    NOT NULL CHECK (kind IN ('backup', 'restore', 'verify', 'prune', 'copy', 'drill')),
    status        TEXT    NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    policy_id     BIGINT,
    source_id     BIGINT,
    target_id     BIGINT,
    -- What to do, as JSON (the job kind's parameters).
    params        TEXT    NOT NULL,
    -- One line a person reads in lists ("backup of shop to nightly-disk").
    title         TEXT    NOT NULL,
    created_by    BIGINT,
    created_at    BIGINT  NOT NULL,
    started_at    BIGINT,
    finished_at   BIGINT,
    worker        TEXT,
    heartbeat_at  BIGINT,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    rows_done     BIGINT  NOT NULL DEFAULT 0,
    bytes_done    BIGINT  NOT NULL DEFAULT 0,
    rows_total    BIGINT,
    bytes_total   BIGINT,
    current_table TEXT,
    error         TEXT,
    -- The outcome as JSON (snapshot summary, restored tables, verify report).
    result        TEXT,
    snapshot_id   TEXT,
    retry_of      BIGINT
);
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
INSERT INTO jobs SELECT * FROM jobs_keep;
INSERT INTO job_logs SELECT * FROM job_logs_keep WHERE id NOT IN (SELECT id FROM job_logs);
DROP TABLE jobs_keep;
DROP TABLE job_logs_keep;
CREATE INDEX jobs_queue ON jobs (status, id);
CREATE INDEX jobs_recent ON jobs (id DESC);
CREATE INDEX jobs_policy ON jobs (policy_id, id DESC);
CREATE INDEX jobs_source_last ON jobs (source_id, kind, status, finished_at);
CREATE INDEX jobs_source_failed ON jobs (source_id, status, created_at);

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
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
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
