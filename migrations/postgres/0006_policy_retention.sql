-- Retention rules per policy; prune and copy jobs; S3 and SFTP targets.

-- Retention rules of a policy, as JSON (engine::retention::KeepRules); '' keeps everything.
ALTER TABLE policies ADD COLUMN retention TEXT NOT NULL DEFAULT '';

ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN ('backup', 'restore', 'verify', 'prune', 'copy'));
ALTER TABLE targets DROP CONSTRAINT targets_kind_check;
ALTER TABLE targets ADD CONSTRAINT targets_kind_check CHECK (kind IN ('local', 's3', 'sftp'));
