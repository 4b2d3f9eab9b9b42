//! The view types both sides of the console share: the words stored in the history
//! database and shown on pages (a job's kind, status and parameters, an audited
//! outcome, a notification channel's kind and delivery status, a restore request's
//! state). Pages and server functions ([`crate::api`], which re-exports them where
//! they belong) and the server-only code ([`crate::ssr`]) both import them from here,
//! so data flows one way: pages → api → ssr → engine, and `ssr` never imports `api`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

// ---- jobs ----

tablesafe_types::words! {
    /// Where a job is in its life, stored as these words in `jobs.status`.
    pub enum JobStatus {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

impl JobStatus {
    /// Succeeded, failed or cancelled: nothing more will happen to it.
    pub fn finished(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

tablesafe_types::words! {
    /// What a job does, as `jobs.kind` stores it: always [`JobParams::kind`] of its
    /// parameters.
    pub enum JobKind {
        Backup = "backup",
        Verify = "verify",
        Prune = "prune",
        Drill = "drill",
        Restore = "restore",
    }
}

impl JobParams {
    pub fn kind(&self) -> JobKind {
        match self {
            JobParams::Backup { .. } => JobKind::Backup,
            JobParams::Verify { .. } => JobKind::Verify,
            JobParams::Prune { .. } => JobKind::Prune,
            JobParams::Drill { .. } => JobKind::Drill,
            JobParams::Restore { .. } => JobKind::Restore,
        }
    }
}

/// What a job does, stored as JSON in `jobs.params`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum JobParams {
    Backup {
        policy_id: i64,
    },
    Verify {
        target_id: i64,
        snapshot_id: String,
    },
    /// Apply the policy's retention rules now (also done after each of its backups).
    Prune {
        policy_id: i64,
    },
    /// Prove the policy's latest (or a random) snapshot restorable (`api::drills`).
    Drill {
        policy_id: i64,
    },
    Restore {
        /// Row id in the history's `snapshots` table.
        snapshot: i64,
        dest_source_id: i64,
        tables: Vec<String>,
        columns: BTreeMap<String, Vec<String>>,
        rename: BTreeMap<String, String>,
        mode: String,
        /// Back up the tables a `replace` drops, from the destination, first.
        #[serde(default)]
        safety_backup: bool,
        /// A point-in-time restore: the instant (unix ms).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at_ms: Option<i64>,
        /// Only rows matching these conditions (`engine::filter`, `--where` syntax).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        conditions: Vec<String>,
    },
}

// ---- the audit log ----

tablesafe_types::words! {
    /// How an audited action ended (`audit_log.outcome`).
    pub enum Outcome {
        Ok = "ok",
        /// The caller's role or grants did not allow it.
        Denied = "denied",
        Failed = "failed",
    }
}

// ---- notifications ----

tablesafe_types::words! {
    /// Where a notification's delivery is (`notify_outbox.status`).
    pub enum DeliveryStatus {
        Pending = "pending",
        Sending = "sending",
        Delivered = "delivered",
        Failed = "failed",
    }
}

tablesafe_types::words! {
    pub enum ChannelKind {
        Webhook = "webhook",
        Slack = "slack",
        Email = "email",
    }
}

impl ChannelKind {
    pub fn label(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "Webhook (signed JSON)",
            ChannelKind::Slack => "Slack-compatible webhook",
            ChannelKind::Email => "E-mail (SMTP)",
        }
    }
}

tablesafe_types::words! {
    /// How the SMTP connection is protected.
    #[derive(Default)]
    pub enum Security {
        /// Plain SMTP (a relay on the same host or network).
        None = "none",
        /// STARTTLS on the submission port (587).
        #[default]
        Starttls = "starttls",
        /// TLS from the first byte (465).
        Tls = "tls",
    }
}

// ---- restore requests ----

tablesafe_types::words! {
    /// Where a restore request is. `requested`, `rejected` and `cancelled` are stored;
    /// `expired` is a `requested` one past its expiry, and an approved one takes its
    /// job's state (`crate::ssr::requests` derives them).
    pub enum RequestState {
        Requested = "requested",
        Approved = "approved",
        Running = "running",
        Done = "done",
        Failed = "failed",
        Rejected = "rejected",
        Expired = "expired",
        Cancelled = "cancelled",
    }
}
