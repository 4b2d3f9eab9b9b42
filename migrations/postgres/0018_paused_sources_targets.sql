-- Pausing a source or a target (issue 26, point 1). Kept in step with the other
-- engine's 0018_paused_sources_targets.sql.
--
-- A paused source is not backed up (no scheduled run, no Run now, no trigger, not
-- late); a paused target receives no backups or copies. Restores, browsing and
-- downloads from their snapshots keep working: pausing is for maintenance, never a
-- way to lose access to backups.
ALTER TABLE sources ADD COLUMN paused_at BIGINT;
ALTER TABLE targets ADD COLUMN paused_at BIGINT;
