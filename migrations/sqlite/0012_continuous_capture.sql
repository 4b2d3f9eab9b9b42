-- Continuous capture for point-in-time restore (issue 12). Kept in step with
-- migrations/postgres/0012_continuous_capture.sql.

-- A policy on a PostgreSQL source may capture changes continuously: every
-- capture_secs seconds; NULL: snapshots only.
ALTER TABLE policies ADD COLUMN capture_secs BIGINT;

-- The capture of each continuous policy: which worker runs it (a lease, so several
-- workers sharing one history run each capture once), when its next round is due, and
-- what the last round found.
CREATE TABLE captures (
    policy_id       BIGINT  PRIMARY KEY REFERENCES policies (id) ON DELETE CASCADE,
    worker          TEXT,
    lease_until     BIGINT,
    next_round_at   BIGINT  NOT NULL DEFAULT 0,
    slot            TEXT,
    -- Every commit up to this instant (unix ms) is stored: the end of the restorable range.
    covers_until_ms BIGINT,
    lag_bytes       BIGINT,
    last_error      TEXT,
    updated_at      BIGINT
);
