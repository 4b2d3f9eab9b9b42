//! Notification channels and their deliveries (issue 11).
//!
//! Admins and operators add channels (a signed JSON webhook, a Slack-compatible incoming
//! webhook, e-mail over SMTP) and choose per channel which events it receives; everyone
//! who sees everything (auditors included) sees the channels, without their secrets,
//! and every delivery with its attempts and last error. Sending happens in the server's
//! notifier from a durable outbox (`ssr::notify`), never inside the action that caused
//! the event.

#[cfg(feature = "ssr")]
use crate::api::history::Outcome;
use crate::error::AppError;
#[cfg(feature = "ssr")]
use crate::ssr::OrInternal;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// Every event a channel can receive: (name, what a person reads).
pub const EVENTS: [(&str, &str); 8] = [
    ("backup.failed", "Backup failed"),
    (
        "capture.failed",
        "Continuous capture stopped working (incl. a slot dropped for lagging)",
    ),
    (
        "backup.late",
        "Backup late (no success within the policy's expected interval)",
    ),
    ("restore.requested", "Restore requested"),
    ("restore.approved", "Restore approved"),
    ("restore.rejected", "Restore rejected"),
    ("restore.finished", "Restore finished"),
    ("verify.damage", "Verify found damage"),
];

pub use crate::model::{ChannelKind, DeliveryStatus, Security};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelView {
    pub id: i64,
    pub name: String,
    pub kind: ChannelKind,
    /// Where it sends, without secrets (the URL's origin, the mail recipients).
    pub summary: String,
    pub events: Vec<String>,
    pub enabled: bool,
    /// Deliveries waiting (pending or being sent) and given up.
    pub waiting: i64,
    pub failed: i64,
    /// The most recent delivery, if any.
    pub last: Option<DeliveryView>,
    /// The e-mail settings that are not secret (empty for other kinds), so the form
    /// can show them when changing the channel.
    pub email: Option<EmailSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: String,
    pub from: String,
    pub to: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryView {
    pub id: i64,
    pub channel_id: i64,
    pub channel: String,
    pub event: String,
    pub summary: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    /// When the next attempt is due (pending ones).
    pub next_attempt_at: i64,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
    pub last_error: Option<String>,
}

/// A channel as the form sends it. On a change, an empty secret field (webhook URL and
/// signing secret, Slack URL, SMTP password) keeps the stored value: secrets are never
/// sent back to the browser, so the form cannot show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ChannelInput {
    pub id: Option<i64>,
    pub name: String,
    /// `webhook`, `slack` or `email`.
    pub kind: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub secret: String,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub port: String,
    /// `none`, `starttls` or `tls`.
    #[serde(default)]
    pub security: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub from: String,
    /// Recipients, separated by commas or spaces.
    #[serde(default)]
    pub to: String,
    pub events: Vec<String>,
    pub enabled: bool,
}

/// What *Send test* found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestOutcome {
    pub delivery_id: i64,
    pub delivered: bool,
    pub error: Option<String>,
}

#[cfg(feature = "ssr")]
mod server {
    use super::*;

    use crate::ssr::ctx::Ctx;
    use crate::ssr::notify::{self as nt, ChannelConfig};

    pub fn delivery_view(r: nt::DeliveryRow) -> DeliveryView {
        let summary = serde_json::from_str::<nt::Payload>(&r.payload)
            .map(|p| p.summary)
            .unwrap_or_default();
        DeliveryView {
            id: r.id,
            channel_id: r.channel_id,
            channel: r.channel,
            event: r.event,
            summary,
            status: r.status,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            created_at: r.created_at,
            delivered_at: r.delivered_at,
            last_error: r.last_error,
        }
    }

    fn field(name: &str, msg: impl Into<String>) -> AppError {
        AppError::Field(name.into(), msg.into())
    }

    fn http_url(name: &str, url: &str) -> Result<String, AppError> {
        let url = url.trim();
        match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                Ok(url.to_string())
            }
            _ => Err(field(name, "Enter an http:// or https:// URL.")),
        }
    }

    fn mailbox(name: &str, addr: &str) -> Result<String, AppError> {
        let addr = addr.trim();
        addr.parse::<lettre::message::Mailbox>()
            .map(|_| addr.to_string())
            .map_err(|_| field(name, format!("{addr:?} is not an e-mail address.")))
    }

    /// Validates the form against the stored channel (for kept secrets); returns the
    /// settings to seal and the event list.
    pub fn config(
        input: &ChannelInput,
        stored: Option<ChannelConfig>,
    ) -> Result<(ChannelConfig, String), AppError> {
        let kind = ChannelKind::parse(input.kind.trim())
            .ok_or_else(|| field("kind", "Choose webhook, Slack or e-mail."))?;
        let mut events = Vec::new();
        for e in &input.events {
            if !EVENTS.iter().any(|(n, _)| n == e) {
                return Err(field("events", format!("{e:?} is not an event.")));
            }
            if !events.contains(e) {
                events.push(e.clone());
            }
        }
        if events.is_empty() {
            return Err(field("events", "Choose at least one event."));
        }
        // A stored value of the same kind is what an empty secret field keeps.
        let stored = stored.filter(|s| s.kind() == kind);
        let config = match kind {
            ChannelKind::Webhook => {
                let (old_url, old_secret) = match &stored {
                    Some(ChannelConfig::Webhook { url, secret }) => (url.clone(), secret.clone()),
                    _ => Default::default(),
                };
                let url = if input.url.trim().is_empty() && !old_url.is_empty() {
                    old_url.clone()
                } else {
                    http_url("url", &input.url)?
                };
                // The signing secret stays with the address it was given for: a changed
                // URL needs it entered again (else an edit could send signed events,
                // under the old secret, to a host of the editor's choosing).
                let secret = if input.secret.is_empty() && !old_secret.is_empty() && url == old_url
                {
                    old_secret
                } else if input.secret.is_empty() && !old_secret.is_empty() {
                    return Err(field(
                        "secret",
                        "The address changed: enter the signing secret again (the stored one stays with the old address).",
                    ));
                } else if input.secret.trim().len() < 16 {
                    return Err(field(
                        "secret",
                        "The signing secret needs at least 16 characters (the receiver checks the signature with it).",
                    ));
                } else {
                    input.secret.trim().to_string()
                };
                ChannelConfig::Webhook { url, secret }
            }
            ChannelKind::Slack => {
                let url = match &stored {
                    Some(ChannelConfig::Slack { url }) if input.url.trim().is_empty() => {
                        url.clone()
                    }
                    _ => http_url("url", &input.url)?,
                };
                ChannelConfig::Slack { url }
            }
            ChannelKind::Email => {
                let host = input.host.trim();
                if host.is_empty() || host.contains(char::is_whitespace) {
                    return Err(field("host", "Enter the SMTP server's host name."));
                }
                let port: u16 = input
                    .port
                    .trim()
                    .parse()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| field("port", "Enter a port between 1 and 65535."))?;
                let security = Security::parse(input.security.trim())
                    .ok_or_else(|| field("security", "Choose none, STARTTLS or TLS."))?;
                let from = mailbox("from", &input.from)?;
                let to = input
                    .to
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|s| !s.is_empty())
                    .map(|a| mailbox("to", a))
                    .collect::<Result<Vec<_>, _>>()?;
                if to.is_empty() {
                    return Err(field("to", "Enter at least one recipient."));
                }
                let username = input.username.trim().to_string();
                // The stored password goes only where it went before: same server, port,
                // security and user. Anything else needs it entered again.
                let old_password = match &stored {
                    Some(ChannelConfig::Email {
                        host: h,
                        port: p,
                        security: s,
                        username: u,
                        password,
                        ..
                    }) if h == host && *p == port && *s == security && *u == username => {
                        password.clone()
                    }
                    _ => String::new(),
                };
                if !username.is_empty()
                    && security == Security::None
                    && !crate::ssr::notify::is_loopback(host)
                {
                    return Err(field(
                        "security",
                        "Without TLS the password would cross the network in the clear: choose STARTTLS or TLS, or leave user and password empty (only a relay on this machine may get a password without TLS).",
                    ));
                }
                let had_password = matches!(&stored, Some(ChannelConfig::Email { password, .. }) if !password.is_empty());
                let password = if input.password.is_empty() || username.is_empty() {
                    if username.is_empty() {
                        String::new()
                    } else if old_password.is_empty() && had_password {
                        return Err(field(
                            "password",
                            "The mail server, port, security or user changed: enter the password again (the stored one stays with the old settings).",
                        ));
                    } else {
                        old_password
                    }
                } else {
                    input.password.clone()
                };
                ChannelConfig::Email {
                    host: host.to_string(),
                    port,
                    security,
                    username,
                    password,
                    from,
                    to,
                }
            }
        };
        Ok((config, events.join(",")))
    }

    pub async fn stored(c: &Ctx, id: i64) -> Result<nt::ChannelRow, AppError> {
        nt::channel(&c.state.db, id)
            .await
            .or_internal("loading a channel")?
            .ok_or_else(|| AppError::NotFound("Channel".into()))
    }

    pub fn target(name: &str) -> String {
        format!("channel {name}")
    }
}

/// Every channel, without secrets, with its delivery counts.
#[server(endpoint = "notify/channels")]
pub async fn list_channels() -> Result<Vec<ChannelView>, AppError> {
    use crate::auth::Perm;
    use crate::ssr::notify::ChannelConfig;
    use crate::ssr::{ctx, notify as nt};
    let c = ctx::authorize(Perm::SeeAll, "channel.list").await?;
    let rows = nt::channels(&c.state.db)
        .await
        .or_internal("listing channels")?;
    let counts = nt::counts(&c.state.db)
        .await
        .or_internal("counting deliveries")?;
    let mut out = Vec::new();
    for r in rows {
        let count = |statuses: &[&str]| {
            counts
                .iter()
                .filter(|(ch, st, _)| *ch == r.id && statuses.contains(&st.as_str()))
                .map(|(_, _, n)| n)
                .sum::<i64>()
        };
        let last = nt::deliveries(&c.state.db, "", Some(r.id), 1)
            .await
            .or_internal("loading a delivery")?
            .into_iter()
            .next()
            .map(server::delivery_view);
        let email = match ChannelConfig::open(&c.state.secrets, &r.sealed_config) {
            Ok(ChannelConfig::Email {
                host,
                port,
                security,
                username,
                from,
                to,
                ..
            }) => Some(EmailSettings {
                host,
                port,
                security,
                username,
                from,
                to,
            }),
            _ => None,
        };
        out.push(ChannelView {
            email,
            id: r.id,
            kind: r.kind,
            summary: r.summary.clone(),
            events: r
                .events
                .split(',')
                .filter(|e| !e.is_empty())
                .map(String::from)
                .collect(),
            enabled: r.enabled != 0,
            waiting: count(&["pending", "sending"]),
            failed: count(&["failed"]),
            last,
            name: r.name,
        });
    }
    Ok(out)
}

/// Adds a channel or changes one (`input.id`); returns its id.
#[server(endpoint = "notify/save", input = server_fn::codec::Json)]
pub async fn save_channel(input: ChannelInput) -> Result<i64, AppError> {
    use crate::auth::Perm;
    use crate::forms;
    use crate::ssr::ctx;
    use crate::ssr::notify::{self as nt, ChannelConfig};
    let action = if input.id.is_some() {
        "channel.change"
    } else {
        "channel.add"
    };
    let c = ctx::authorize(Perm::Configure, action).await?;
    let name = input.name.trim().to_string();
    let result = async {
        let name = forms::name("name", &input.name)?;
        let stored = match input.id {
            Some(id) => {
                let row = server::stored(&c, id).await?;
                Some(
                    ChannelConfig::open(&c.state.secrets, &row.sealed_config)
                        .or_internal("opening a channel")?,
                )
            }
            None => None,
        };
        let (config, events) = server::config(&input, stored)?;
        // Where the server will connect (`ssr::outbound`).
        let admin = c.can(Perm::ManageUsers);
        let rules = &c.state.outbound;
        let reach = match &config {
            ChannelConfig::Webhook { url, .. } => {
                ("url", rules.check_url("The webhook", url, admin).await)
            }
            ChannelConfig::Slack { url } => (
                "url",
                rules.check_url("The Slack webhook", url, admin).await,
            ),
            ChannelConfig::Email { host, port, .. } => (
                "host",
                rules.check("The SMTP server", host, *port, admin).await,
            ),
        };
        if let (field, Err(why)) = reach {
            return Err(AppError::Field(field.into(), why));
        }
        let sealed = config
            .seal(&c.state.secrets)
            .or_internal("sealing a channel")?;
        nt::save_channel(
            &c.state.db,
            input.id,
            nt::ChannelChange {
                name: &name,
                kind: config.kind(),
                summary: &config.summary(),
                sealed_config: &sealed,
                events: &events,
                enabled: input.enabled,
            },
            c.user.id,
        )
        .await
        .or_internal("saving a channel")?
        .ok_or_else(|| AppError::Field("name".into(), format!("A channel named {name} exists.")))
    }
    .await;
    c.audited(action, &server::target(&name), result).await
}

/// Pauses (no new deliveries; what waits is kept) or resumes a channel.
#[server(endpoint = "notify/enabled")]
pub async fn set_channel_enabled(id: i64, enabled: bool) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, notify as nt};
    let action = if enabled {
        "channel.enable"
    } else {
        "channel.disable"
    };
    let c = ctx::authorize(Perm::Configure, action).await?;
    let row = server::stored(&c, id).await?;
    let result = nt::set_channel_enabled(&c.state.db, id, enabled)
        .await
        .or_internal("pausing or resuming a channel")
        .map(|_| ());
    c.audited(action, &server::target(&row.name), result).await
}

#[server(endpoint = "notify/delete")]
pub async fn delete_channel(id: i64) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, notify as nt};
    let c = ctx::authorize(Perm::Configure, "channel.delete").await?;
    let row = server::stored(&c, id).await?;
    let result = nt::delete_channel(&c.state.db, id)
        .await
        .or_internal("deleting a channel")
        .map(|_| ());
    c.audited("channel.delete", &server::target(&row.name), result)
        .await
}

/// Sends a test event to one channel now and says whether it arrived. The attempt is a
/// delivery like any other (in the list, with its error); a failed test is not retried.
#[server(endpoint = "notify/test")]
pub async fn test_channel(id: i64) -> Result<TestOutcome, AppError> {
    use crate::auth::Perm;
    use crate::ssr::ctx;
    use crate::ssr::notify::{self as nt, ChannelConfig};
    let c = ctx::authorize(Perm::Configure, "channel.test").await?;
    let row = server::stored(&c, id).await?;
    let result: Result<TestOutcome, AppError> = async {
        let config = ChannelConfig::open(&c.state.secrets, &row.sealed_config)
            .or_internal("opening a channel")?;
        let payload = nt::Payload::new(
            "test",
            format!(
                "Test message for channel {} from {}",
                row.name, c.user.username
            ),
            c.state.link("/notifications"),
            serde_json::json!({ "channel": row.name, "sent_by": c.user.username }),
        );
        let delivery = nt::enqueue_for(&c.state.db, id, &payload)
            .await
            .or_internal("queueing a test")?;
        let worker = format!("test by {}", c.user.username);
        let claimed = nt::claim(&c.state.db, delivery, &worker)
            .await
            .or_internal("claiming a test")?
            .ok_or(AppError::Internal)?;
        let outcome = nt::deliver(&config, delivery, &claimed.payload, &c.state.outbound).await;
        let claimed = nt::Claimed {
            attempts: nt::MAX_ATTEMPTS,
            ..claimed
        };
        nt::settle(&c.state.db, &claimed, &worker, &outcome, 0)
            .await
            .or_internal("recording a test")?;
        Ok(TestOutcome {
            delivery_id: delivery,
            delivered: outcome.is_ok(),
            error: outcome.err().map(|e| format!("{e:#}")),
        })
    }
    .await;
    let (outcome, detail) = match &result {
        Ok(t) if t.delivered => (Outcome::Ok, String::new()),
        Ok(t) => (Outcome::Failed, t.error.clone().unwrap_or_default()),
        Err(e) => (Outcome::Failed, e.to_string()),
    };
    c.audit("channel.test", &server::target(&row.name), outcome, &detail)
        .await;
    result
}

/// Deliveries newest first; `status` one of [`DeliveryStatus`]'s words or empty;
/// `channel` 0 for all.
#[server(endpoint = "notify/deliveries")]
pub async fn list_deliveries(status: String, channel: i64) -> Result<Vec<DeliveryView>, AppError> {
    use crate::api::PAGE;
    use crate::auth::Perm;
    use crate::ssr::{ctx, notify as nt};
    let c = ctx::authorize(Perm::SeeAll, "delivery.list").await?;
    let status = status.trim();
    if !status.is_empty() && DeliveryStatus::parse(status).is_none() {
        return Err(AppError::Invalid(format!(
            "{status:?} is not a delivery status."
        )));
    }
    let rows = nt::deliveries(&c.state.db, status, (channel > 0).then_some(channel), PAGE)
        .await
        .or_internal("listing deliveries")?;
    Ok(rows.into_iter().map(server::delivery_view).collect())
}

/// Queues a given-up delivery again, due now.
#[server(endpoint = "notify/retry")]
pub async fn retry_delivery(id: i64) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, notify as nt};
    let c = ctx::authorize(Perm::Configure, "delivery.retry").await?;
    let result = async {
        if !nt::retry(&c.state.db, id)
            .await
            .or_internal("retrying a delivery")?
        {
            return Err(AppError::Invalid(
                "Only a delivery that was given up can be retried.".into(),
            ));
        }
        Ok(())
    }
    .await;
    c.audited("delivery.retry", &format!("delivery #{id}"), result)
        .await
}
