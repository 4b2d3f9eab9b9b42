-- Restore requests with approval (issue 11). Kept in step with
-- migrations/postgres/0009_restore_requests.sql.

-- Per source: how many approvals a restore of its data (or into it) needs: 0 none,
-- 1 one approver, 2 two different approvers; and how long a request waits for them.
ALTER TABLE sources ADD COLUMN approvals_required BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sources ADD COLUMN request_ttl_minutes BIGINT NOT NULL DEFAULT 4320;

-- Users besides admins and operators who may approve requests on a source.
CREATE TABLE source_approvers (
    source_id     BIGINT  NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    user_id       BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (source_id, user_id)
);

-- A request is `requested` until enough approvals bind to its current parameters, then
-- `approved` with a job (whose status then says running / done / failed), or
-- `rejected` / `cancelled`. `expired` is not stored: a `requested` row past
-- `expires_at` is expired.
CREATE TABLE restore_requests (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    status        TEXT    NOT NULL CHECK (status IN ('requested', 'approved', 'rejected', 'cancelled')),
    -- The snapshot's source and the destination (both decide the approvals needed).
    source_id     BIGINT,
    dest_source_id BIGINT NOT NULL,
    snapshot      BIGINT  NOT NULL,
    -- What to restore, as the wizard's JSON (api::history::RestoreRequest).
    params        TEXT    NOT NULL,
    -- BLAKE3 of `params` and `reason`: an approval counts only for the version it saw.
    version_hash  TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    -- One line a person reads in lists.
    title         TEXT    NOT NULL,
    approvals_required BIGINT NOT NULL,
    requested_by  BIGINT  NOT NULL REFERENCES users (id),
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL,
    expires_at    BIGINT  NOT NULL,
    decided_by    BIGINT,
    decided_at    BIGINT,
    reject_reason TEXT,
    job_id        BIGINT
);
CREATE INDEX restore_requests_recent ON restore_requests (id DESC);
CREATE INDEX restore_requests_status ON restore_requests (status, id DESC);
CREATE INDEX restore_requests_by ON restore_requests (requested_by, id DESC);
CREATE INDEX restore_requests_job ON restore_requests (job_id);

CREATE TABLE request_approvals (
    request_id    BIGINT  NOT NULL REFERENCES restore_requests (id) ON DELETE CASCADE,
    user_id       BIGINT  NOT NULL REFERENCES users (id),
    version_hash  TEXT    NOT NULL,
    at            BIGINT  NOT NULL,
    PRIMARY KEY (request_id, user_id)
);

-- A request's history is its entries in the audit log.
CREATE INDEX audit_target ON audit_log (target, id);
