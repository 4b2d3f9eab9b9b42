-- Credentials a target needs besides the repository password (S3 keys, an SSH private
-- key), as one JSON object sealed like the other secrets; '' when the server's
-- environment or SSH keys are used.
ALTER TABLE targets ADD COLUMN sealed_credentials TEXT NOT NULL DEFAULT '';
