-- The console at scale (issue 28, S8: 1 M jobs, 1 M snapshots, 5 M audit entries,
-- every list call within 50 ms). Kept in step with the other engine's
-- 0019_console_at_scale.sql. No row changes: every page shows what it showed before.

-- The last successful backup of each policy (policies page, /api/v1/policies, late
-- alerts, /metrics) and whether a job of a policy is queued or running (scheduler, Run
-- now, deletion): one index descent per policy, not a pass over every job.
CREATE INDEX jobs_policy_last ON jobs (policy_id, kind, status, finished_at);
-- The dashboard's duration series: the newest succeeded backups / restores.
CREATE INDEX jobs_kind_recent ON jobs (kind, status, id);
-- The dashboard and the drills page show each policy's newest passed drill.
CREATE INDEX drills_passed ON drills (policy_id, passed, id);
-- The channels page counts each channel's waiting and given-up deliveries: from this
-- index, not a pass over every delivery ever made.
CREATE INDEX notify_outbox_status ON notify_outbox (status, channel_id);

-- Snapshot lists filtered by policy or source are ordered by (time, id), newest first:
-- with the id in the index the page is read in order, not sorted out of every snapshot
-- of the policy or source.
DROP INDEX snapshots_policy;
DROP INDEX snapshots_source;
CREATE INDEX snapshots_policy ON snapshots (policy_id, time_ms DESC, id DESC);
CREATE INDEX snapshots_source ON snapshots (source_id, time_ms DESC, id DESC);

-- The targets page shows each target's number of snapshots: kept up to date here as
-- snapshots come and go, instead of counted on every visit.
ALTER TABLE targets ADD COLUMN snapshot_count BIGINT NOT NULL DEFAULT 0;
UPDATE targets SET snapshot_count = (SELECT COUNT(*) FROM snapshots s WHERE s.target_id = targets.id);
CREATE TRIGGER snapshots_counted AFTER INSERT ON snapshots
BEGIN
    UPDATE targets SET snapshot_count = snapshot_count + 1 WHERE id = NEW.target_id;
END;
CREATE TRIGGER snapshots_uncounted AFTER DELETE ON snapshots
BEGIN
    UPDATE targets SET snapshot_count = snapshot_count - 1 WHERE id = OLD.target_id;
END;
CREATE TRIGGER snapshots_moved AFTER UPDATE OF target_id ON snapshots
BEGIN
    UPDATE targets SET snapshot_count = snapshot_count - 1 WHERE id = OLD.target_id;
    UPDATE targets SET snapshot_count = snapshot_count + 1 WHERE id = NEW.target_id;
END;

-- The audit page's search (a prefix of the user name and of the action, the outcome):
-- the distinct (user, action, outcome) triples, kept as entries are appended, are
-- matched first; then each matching triple's newest entries come from its index
-- (store/audit_search.rs). A search that matched rarely read the whole log.
CREATE TABLE audit_kinds (
    username      TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    outcome       TEXT    NOT NULL,
    PRIMARY KEY (username, action, outcome)
);
INSERT INTO audit_kinds SELECT DISTINCT username, action, outcome FROM audit_log;
CREATE INDEX audit_kind_recent ON audit_log (username, action, outcome, id);
CREATE TRIGGER audit_kinds_kept AFTER INSERT ON audit_log
BEGIN
    INSERT OR IGNORE INTO audit_kinds (username, action, outcome) VALUES (NEW.username, NEW.action, NEW.outcome);
END;
