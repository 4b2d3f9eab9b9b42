-- When the scheduler next runs each policy (unix ms; NULL: on demand only). A slot missed
-- while no worker ran is taken once, then the next one after "now" is set.
ALTER TABLE policies ADD COLUMN next_run_at BIGINT;
CREATE INDEX policies_due ON policies (enabled, next_run_at);
