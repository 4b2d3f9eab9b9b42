-- The dashboard asks, per source, for the last successful backup and the failures of the
-- last week; without these indexes each question scans every job.
CREATE INDEX jobs_source_last ON jobs (source_id, kind, status, finished_at);
CREATE INDEX jobs_source_failed ON jobs (source_id, status, created_at);
