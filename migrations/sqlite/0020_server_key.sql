-- The fingerprint of the server key this history database was set up with (issue 29).
-- Its sealed secrets, session signatures and audit chain are made with that key; a
-- worker started with another key, or none, refuses to start (naming the fingerprint
-- it needs) instead of failing every job. One row; the fingerprint is a one-way
-- derivation, not the key.
CREATE TABLE server_key (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    fingerprint TEXT    NOT NULL,
    recorded_at BIGINT  NOT NULL
);
