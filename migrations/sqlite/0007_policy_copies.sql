-- Several copies per policy: the targets a policy's snapshots are copied to besides its
-- own target, and, per snapshot row, the row of the snapshot it is a copy of.
CREATE TABLE policy_copy_targets (
    policy_id     BIGINT  NOT NULL REFERENCES policies (id) ON DELETE CASCADE,
    target_id     BIGINT  NOT NULL REFERENCES targets (id),
    PRIMARY KEY (policy_id, target_id)
);
ALTER TABLE snapshots ADD COLUMN copy_of BIGINT;
CREATE INDEX snapshots_copy_of ON snapshots (copy_of);
