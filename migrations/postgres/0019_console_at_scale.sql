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
-- snapshots come and go (once per statement, however many rows it touched), instead
-- of counted on every visit.
ALTER TABLE targets ADD COLUMN snapshot_count BIGINT NOT NULL DEFAULT 0;
UPDATE targets SET snapshot_count = (SELECT COUNT(*) FROM snapshots s WHERE s.target_id = targets.id);
CREATE FUNCTION snapshots_count_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE targets t SET snapshot_count = t.snapshot_count + n.c
      FROM (SELECT target_id, COUNT(*) AS c FROM added GROUP BY target_id) n WHERE t.id = n.target_id;
    RETURN NULL;
END
$$;
CREATE FUNCTION snapshots_count_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE targets t SET snapshot_count = t.snapshot_count - n.c
      FROM (SELECT target_id, COUNT(*) AS c FROM removed GROUP BY target_id) n WHERE t.id = n.target_id;
    RETURN NULL;
END
$$;
-- (No code moves a snapshot to another target; should one, only the net change is
-- written, so that marking snapshots verified touches no target.)
CREATE FUNCTION snapshots_count_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE targets t SET snapshot_count = t.snapshot_count + n.c
      FROM (SELECT target_id, SUM(c) AS c FROM (SELECT target_id, 1 AS c FROM added
            UNION ALL SELECT target_id, -1 FROM removed) m GROUP BY target_id HAVING SUM(c) <> 0) n
     WHERE t.id = n.target_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER snapshots_counted AFTER INSERT ON snapshots
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION snapshots_count_added();
CREATE TRIGGER snapshots_uncounted AFTER DELETE ON snapshots
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION snapshots_count_removed();
CREATE TRIGGER snapshots_moved AFTER UPDATE ON snapshots
    REFERENCING OLD TABLE AS removed NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION snapshots_count_moved();

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
CREATE FUNCTION audit_kinds_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_kinds (username, action, outcome) VALUES (NEW.username, NEW.action, NEW.outcome)
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
CREATE TRIGGER audit_kinds_kept AFTER INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_kinds_keep();
