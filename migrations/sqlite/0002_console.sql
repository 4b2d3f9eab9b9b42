-- The console (issue 4). Kept in step with migrations/postgres/0002_console.sql.
-- Times are unix milliseconds; JSON is stored as TEXT; flags are BIGINT 0/1 (the Any
-- driver reads the same type from both engines). Secrets (database URLs with passwords,
-- repository passwords) are sealed with a key derived from server.key and stored hex.

CREATE TABLE sources (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE,
    engine        TEXT    NOT NULL CHECK (engine IN ('sqlite', 'postgres')),
    -- The URL with any password removed, for display.
    display_url   TEXT    NOT NULL,
    sealed_url    TEXT    NOT NULL,
    created_by    BIGINT,
    created_at    BIGINT  NOT NULL
);

-- Sources a requester may see and restore from.
CREATE TABLE source_grants (
    source_id     BIGINT  NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    user_id       BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (source_id, user_id)
);

CREATE TABLE targets (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE,
    kind          TEXT    NOT NULL CHECK (kind IN ('local')),
    location      TEXT    NOT NULL,
    sealed_password TEXT  NOT NULL,
    created_by    BIGINT,
    created_at    BIGINT  NOT NULL
);

CREATE TABLE policies (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE,
    source_id     BIGINT  NOT NULL REFERENCES sources (id),
    target_id     BIGINT  NOT NULL REFERENCES targets (id),
    -- {"include": [...], "exclude": [...], "columns": {"table": ["col", ...]}}
    selection     TEXT    NOT NULL,
    -- A cron expression or shorthand; executed by the scheduler (a later issue).
    schedule      TEXT    NOT NULL DEFAULT '',
    timezone      TEXT    NOT NULL DEFAULT 'UTC',
    enabled       BIGINT  NOT NULL DEFAULT 1,
    created_by    BIGINT,
    created_at    BIGINT  NOT NULL
);

-- The durable job queue. Workers claim a queued job with one conditional UPDATE, keep
-- `heartbeat_at` fresh while it runs, and poll `cancel_requested`.
CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT    NOT NULL CHECK (kind IN ('backup', 'restore', 'verify')),
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
CREATE INDEX jobs_queue ON jobs (status, id);
CREATE INDEX jobs_recent ON jobs (id DESC);
CREATE INDEX jobs_policy ON jobs (policy_id, id DESC);

CREATE TABLE job_logs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id        BIGINT  NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at            BIGINT  NOT NULL,
    level         TEXT    NOT NULL,
    message       TEXT    NOT NULL
);
CREATE INDEX job_logs_job ON job_logs (job_id, id);

-- Snapshots the console knows of (written when a backup job finishes), for history
-- pages that must not open every repository.
CREATE TABLE snapshots (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    target_id     BIGINT  NOT NULL REFERENCES targets (id),
    snapshot_id   TEXT    NOT NULL,
    policy_id     BIGINT,
    source_id     BIGINT,
    job_id        BIGINT,
    time_ms       BIGINT  NOT NULL,
    table_count   BIGINT  NOT NULL,
    row_count     BIGINT  NOT NULL,
    bytes         BIGINT  NOT NULL,
    bytes_stored  BIGINT  NOT NULL,
    duration_ms   BIGINT  NOT NULL,
    -- Per table: name, rows, bytes, segment, as JSON.
    details       TEXT    NOT NULL,
    verified_at   BIGINT,
    -- NULL: never verified; 1 ok; 0 problems found.
    verify_ok     BIGINT,
    UNIQUE (target_id, snapshot_id)
);
CREATE INDEX snapshots_time ON snapshots (time_ms DESC, id DESC);
CREATE INDEX snapshots_policy ON snapshots (policy_id, time_ms DESC);
CREATE INDEX snapshots_source ON snapshots (source_id, time_ms DESC);

-- Append-only and hash-chained: each entry's hash covers its fields and the previous
-- entry's hash; `prev_hash` is unique, so two writers cannot both extend one entry.
CREATE TABLE audit_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            BIGINT  NOT NULL,
    user_id       BIGINT,
    username      TEXT    NOT NULL,
    address       TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    target        TEXT    NOT NULL,
    outcome       TEXT    NOT NULL,
    detail        TEXT    NOT NULL,
    prev_hash     TEXT    NOT NULL UNIQUE,
    hash          TEXT    NOT NULL UNIQUE
);
CREATE INDEX audit_at ON audit_log (at DESC, id DESC);
