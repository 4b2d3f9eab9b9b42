-- A policy's trigger token, as BLAKE3 of the token (the token itself is shown once and
-- never stored). NULL: no trigger URL.
ALTER TABLE policies ADD COLUMN trigger_hash TEXT;
