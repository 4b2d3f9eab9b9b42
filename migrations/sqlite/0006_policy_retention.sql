-- Retention rules per policy; prune and copy jobs; S3 and SFTP targets.
-- SQLite cannot change a CHECK constraint, so `jobs` and `targets` are rebuilt. sqlx
-- runs this in a transaction, where foreign keys cannot be switched off: their checks
-- are deferred to the commit instead, and the rows go back into the rebuilt tables
-- *after* they have their old names (SQLite counts a deferred violation as fixed only
-- when a matching parent row is inserted under the referenced name). The job logs that
-- dropping `jobs` deletes (ON DELETE CASCADE) are put back the same way.
PRAGMA defer_foreign_keys = ON;
CREATE TEMP TABLE job_logs_keep AS SELECT * FROM job_logs;
CREATE TEMP TABLE jobs_keep AS SELECT * FROM jobs;
CREATE TEMP TABLE targets_keep AS SELECT * FROM targets;

-- Retention rules of a policy, as JSON (engine::retention::KeepRules); '' keeps everything.
ALTER TABLE policies ADD COLUMN retention TEXT NOT NULL DEFAULT '';

CREATE TABLE jobs_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT    NOT NULL CHECK (kind IN ('backup', 'restore', 'verify', 'prune', 'copy')),
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

CREATE TABLE targets_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE,
    kind          TEXT    NOT NULL CHECK (kind IN ('local', 's3', 'sftp')),
    location      TEXT    NOT NULL,
    sealed_password TEXT  NOT NULL,
    created_by    BIGINT,
    created_at    BIGINT  NOT NULL
);
DROP TABLE targets;
ALTER TABLE targets_new RENAME TO targets;
INSERT INTO targets SELECT * FROM targets_keep;
DROP TABLE targets_keep;
