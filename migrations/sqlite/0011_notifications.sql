-- Notifications (issue 11). Kept in step with migrations/postgres/0011_notifications.sql.

-- A place events are sent: a webhook (JSON, HMAC-SHA256 signed), a Slack-compatible
-- incoming webhook, or e-mail over SMTP. Everything that can carry a secret (URLs,
-- signing secrets, SMTP passwords) is in sealed_config; summary is what a person may
-- see (the host, the recipients).
CREATE TABLE notify_channels (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE,
    kind          TEXT    NOT NULL CHECK (kind IN ('webhook', 'slack', 'email')),
    summary       TEXT    NOT NULL,
    sealed_config TEXT    NOT NULL,
    -- The events this channel receives, comma-separated (api::notify::EVENTS).
    events        TEXT    NOT NULL,
    enabled       BIGINT  NOT NULL DEFAULT 1,
    created_by    BIGINT,
    created_at    BIGINT  NOT NULL
);

-- The durable outbox: one row per event and channel, written when the event happens.
-- Workers claim due rows with a conditional UPDATE and a lease (claimed_until), so
-- several workers deliver each row once, and a worker that dies mid-delivery leaves
-- the row to be retried after the lease. A failed attempt moves next_attempt_at out
-- by an exponential backoff; after the last attempt the row is 'failed'.
CREATE TABLE notify_outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_id    BIGINT  NOT NULL REFERENCES notify_channels (id) ON DELETE CASCADE,
    event         TEXT    NOT NULL,
    -- The event as JSON: what the webhook body carries and the other channels render.
    payload       TEXT    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('pending', 'sending', 'delivered', 'failed')),
    attempts      BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    claimed_by    TEXT,
    claimed_until BIGINT,
    created_at    BIGINT  NOT NULL,
    delivered_at  BIGINT,
    last_error    TEXT
);
CREATE INDEX notify_outbox_due ON notify_outbox (status, next_attempt_at);
CREATE INDEX notify_outbox_channel ON notify_outbox (channel_id, id DESC);

-- Backup late (RPO breach): a policy is late when it has had no successful backup for
-- rpo_minutes (NULL: the interval of its schedule plus a grace; 0: never alert).
-- late_alerted_at remembers that this breach was announced, until the next success.
ALTER TABLE policies ADD COLUMN rpo_minutes BIGINT;
ALTER TABLE policies ADD COLUMN late_alerted_at BIGINT;
