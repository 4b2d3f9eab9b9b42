//! Notifications: channels, the durable outbox and delivery
//! (migrations/*/0011_notifications.sql).
//!
//! An event is written to the outbox, one row per channel that wants it, when it
//! happens ([`emit`]). Delivery is separate ([`claim_next`], [`deliver`], [`settle`]):
//! the server's notifier claims due rows with a lease, sends them, and records the
//! outcome; a failed attempt is retried with exponential backoff and after
//! [`MAX_ATTEMPTS`] the row is `failed` (shown in the console, retryable by hand). A
//! channel that is down or slow therefore delays nothing but its own rows.

use super::db::{Db, now_ms};
use super::secrets::{Kind, SecretBox};
use crate::model::{ChannelKind, DeliveryStatus, Security};
use anyhow::{Context, Result, anyhow, bail};
use engine::secret::Secret;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Attempts before a delivery is given up (`failed`).
pub const MAX_ATTEMPTS: i64 = 8;
/// How long a claimed delivery is this worker's; after that another worker may retry it.
pub const LEASE_MS: i64 = 60_000;
/// One attempt's limit (connect + send + answer).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between two attempts.
pub const MAX_BACKOFF_MS: i64 = 3_600_000;

/// What a channel needs to send, sealed in the history database: every field here may be
/// a secret (a Slack URL is one; so is a webhook's signing key or an SMTP password).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ChannelConfig {
    Webhook {
        url: String,
        secret: String,
    },
    Slack {
        url: String,
    },
    Email {
        host: String,
        port: u16,
        security: Security,
        #[serde(default)]
        username: String,
        #[serde(default)]
        password: String,
        from: String,
        to: Vec<String>,
    },
}

impl ChannelConfig {
    pub fn kind(&self) -> ChannelKind {
        match self {
            ChannelConfig::Webhook { .. } => ChannelKind::Webhook,
            ChannelConfig::Slack { .. } => ChannelKind::Slack,
            ChannelConfig::Email { .. } => ChannelKind::Email,
        }
    }

    /// What a person may see of it: where it goes, without anything secret.
    pub fn summary(&self) -> String {
        match self {
            ChannelConfig::Webhook { url, .. } => format!("POST {}", url_origin(url)),
            ChannelConfig::Slack { url } => format!("Slack webhook at {}", url_origin(url)),
            ChannelConfig::Email { host, port, to, .. } => {
                format!("to {} via {host}:{port}", to.join(", "))
            }
        }
    }

    pub fn seal(&self, secrets: &SecretBox) -> Result<String> {
        secrets.seal(
            Kind::NotifyChannel,
            &Secret::new(serde_json::to_string(self)?),
        )
    }

    pub fn open(secrets: &SecretBox, sealed: &str) -> Result<Self> {
        let plain = secrets.open(Kind::NotifyChannel, sealed)?;
        serde_json::from_str(plain.expose()).context("a channel's stored settings are damaged")
    }
}

/// `scheme://host[:port]` of a URL: never its path or query, which carry tokens (Slack).
pub fn url_origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{}://{h}:{p}", u.scheme()),
            (Some(h), None) => format!("{}://{h}", u.scheme()),
            _ => u.scheme().to_string(),
        },
        Err(_) => "(invalid URL)".into(),
    }
}

/// The JSON an event carries: the webhook body, and what the other channels render.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payload {
    /// One of `api::notify::EVENTS`, or `test`.
    pub event: String,
    /// When it happened, RFC 3339 UTC.
    pub at: String,
    /// One line for people.
    pub summary: String,
    /// The console page about it: absolute when the server knows its public URL
    /// (`--public-url`), else a path.
    pub link: Option<String>,
    /// Event-specific fields (policy, job, request, error, …).
    pub details: serde_json::Value,
}

impl Payload {
    pub fn new(
        event: &str,
        summary: String,
        link: Option<String>,
        details: serde_json::Value,
    ) -> Self {
        Payload {
            event: event.to_string(),
            at: rfc3339(now_ms()),
            summary,
            link,
            details,
        }
    }
}

pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Writes `payload` to the outbox once for every enabled channel that wants its event;
/// returns how many deliveries were queued. Never fails the caller's action: an error is
/// logged and counted as 0.
pub async fn emit(db: &Db, payload: &Payload) -> u64 {
    match emit_inner(db, payload).await {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), event = %payload.event, "could not queue a notification");
            0
        }
    }
}

async fn emit_inner(db: &Db, payload: &Payload) -> Result<u64> {
    let now = now_ms();
    let r = sqlx::query(
        "INSERT INTO notify_outbox (channel_id, event, payload, status, attempts, next_attempt_at, created_at) \
         SELECT id, $1, $2, 'pending', 0, $3, $3 FROM notify_channels \
         WHERE enabled = 1 AND (',' || events || ',') LIKE ('%,' || $1 || ',%')",
    )
    .bind(&payload.event)
    .bind(serde_json::to_string(payload)?)
    .bind(now)
    .execute(&db.pool)
    .await?;
    Ok(r.rows_affected())
}

/// Queues `payload` for one channel only, whatever its events (the *Send test* button).
pub async fn enqueue_for(db: &Db, channel_id: i64, payload: &Payload) -> Result<i64> {
    let now = now_ms();
    Ok(sqlx::query_scalar(
        "INSERT INTO notify_outbox (channel_id, event, payload, status, attempts, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, 'pending', 0, $4, $4) RETURNING id",
    )
    .bind(channel_id)
    .bind(&payload.event)
    .bind(serde_json::to_string(payload)?)
    .bind(now)
    .fetch_one(&db.pool)
    .await?)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChannelRow {
    pub id: i64,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub kind: ChannelKind,
    pub summary: String,
    pub sealed_config: String,
    pub events: String,
    pub enabled: i64,
    pub created_at: i64,
}

const CHANNEL_COLUMNS: &str = "id, name, kind, summary, sealed_config, events, enabled, created_at";

pub async fn channels(db: &Db) -> Result<Vec<ChannelRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {CHANNEL_COLUMNS} FROM notify_channels ORDER BY name"
    ))
    .fetch_all(&db.pool)
    .await?)
}

pub async fn channel(db: &Db, id: i64) -> Result<Option<ChannelRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {CHANNEL_COLUMNS} FROM notify_channels WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&db.pool)
    .await?)
}

pub struct ChannelChange<'a> {
    pub name: &'a str,
    pub kind: ChannelKind,
    pub summary: &'a str,
    pub sealed_config: &'a str,
    pub events: &'a str,
    pub enabled: bool,
}

/// Adds a channel (`id` None) or changes one; returns its id. A taken name is
/// `Ok(None)`.
pub async fn save_channel(
    db: &Db,
    id: Option<i64>,
    c: ChannelChange<'_>,
    by: i64,
) -> Result<Option<i64>> {
    let taken: Option<i64> = sqlx::query_scalar("SELECT id FROM notify_channels WHERE name = $1")
        .bind(c.name)
        .fetch_optional(&db.pool)
        .await?;
    if taken.is_some_and(|t| Some(t) != id) {
        return Ok(None);
    }
    match id {
        None => Ok(Some(
            sqlx::query_scalar(
                "INSERT INTO notify_channels (name, kind, summary, sealed_config, events, enabled, created_by, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            )
            .bind(c.name)
            .bind(c.kind.as_str())
            .bind(c.summary)
            .bind(c.sealed_config)
            .bind(c.events)
            .bind(c.enabled as i64)
            .bind(by)
            .bind(now_ms())
            .fetch_one(&db.pool)
            .await?,
        )),
        Some(id) => {
            let r = sqlx::query(
                "UPDATE notify_channels SET name = $2, kind = $3, summary = $4, sealed_config = $5, \
                 events = $6, enabled = $7 WHERE id = $1",
            )
            .bind(id)
            .bind(c.name)
            .bind(c.kind.as_str())
            .bind(c.summary)
            .bind(c.sealed_config)
            .bind(c.events)
            .bind(c.enabled as i64)
            .execute(&db.pool)
            .await?;
            if r.rows_affected() == 0 {
                bail!("the channel no longer exists");
            }
            Ok(Some(id))
        }
    }
}

/// Pauses or resumes a channel (a paused one gets no new deliveries); whether it existed.
pub async fn set_channel_enabled(db: &Db, id: i64, enabled: bool) -> Result<bool> {
    let r = sqlx::query("UPDATE notify_channels SET enabled = $2 WHERE id = $1")
        .bind(id)
        .bind(enabled as i64)
        .execute(&db.pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Deletes a channel and its deliveries; whether it existed.
pub async fn delete_channel(db: &Db, id: i64) -> Result<bool> {
    let mut tx = db.pool.begin().await?;
    sqlx::query("DELETE FROM notify_outbox WHERE channel_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let r = sqlx::query("DELETE FROM notify_channels WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(r.rows_affected() == 1)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub channel_id: i64,
    pub channel: String,
    pub event: String,
    pub payload: String,
    #[sqlx(try_from = "String")]
    pub status: crate::model::DeliveryStatus,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
    pub last_error: Option<String>,
}

const DELIVERY_SELECT: &str = "SELECT o.id, o.channel_id, c.name AS channel, o.event, o.payload, o.status, \
    o.attempts, o.next_attempt_at, o.created_at, o.delivered_at, o.last_error \
    FROM notify_outbox o JOIN notify_channels c ON c.id = o.channel_id";

/// Deliveries newest first; `status` empty for all; `channel` None for all.
pub async fn deliveries(
    db: &Db,
    status: &str,
    channel: Option<i64>,
    limit: i64,
) -> Result<Vec<DeliveryRow>> {
    Ok(sqlx::query_as(&format!(
        "{DELIVERY_SELECT} WHERE ($1 = '' OR o.status = $1) AND ($2 = 0 OR o.channel_id = $2) \
         ORDER BY o.id DESC LIMIT $3"
    ))
    .bind(status)
    .bind(channel.unwrap_or(0))
    .bind(limit)
    .fetch_all(&db.pool)
    .await?)
}

pub async fn delivery(db: &Db, id: i64) -> Result<Option<DeliveryRow>> {
    Ok(
        sqlx::query_as(&format!("{DELIVERY_SELECT} WHERE o.id = $1"))
            .bind(id)
            .fetch_optional(&db.pool)
            .await?,
    )
}

/// Per channel: deliveries waiting and given up, for the channel list.
pub async fn counts(db: &Db) -> Result<Vec<(i64, String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT channel_id, status, COUNT(*) FROM notify_outbox \
         WHERE status IN ('pending', 'sending', 'failed') GROUP BY channel_id, status",
    )
    .fetch_all(&db.pool)
    .await?)
}

/// Puts a given-up delivery back in the queue, due now; whether it was `failed`.
pub async fn retry(db: &Db, id: i64) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE notify_outbox SET status = 'pending', attempts = 0, next_attempt_at = $2, \
         claimed_by = NULL, claimed_until = NULL WHERE id = $1 AND status = 'failed'",
    )
    .bind(id)
    .bind(now_ms())
    .execute(&db.pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Channels that have a delivery due now (pending and due, or claimed by a worker whose
/// lease ran out).
pub async fn due_channels(db: &Db) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT channel_id FROM notify_outbox \
         WHERE (status = 'pending' AND next_attempt_at <= $1) OR (status = 'sending' AND claimed_until < $1)",
    )
    .bind(now_ms())
    .fetch_all(&db.pool)
    .await?)
}

/// A claimed delivery.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: i64,
    pub event: String,
    pub payload: String,
    pub attempts: i64,
}

/// Claims the oldest due delivery of `channel` for `worker`, counting the attempt.
pub async fn claim_next(db: &Db, channel: i64, worker: &str) -> Result<Option<Claimed>> {
    loop {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM notify_outbox WHERE channel_id = $1 AND \
             ((status = 'pending' AND next_attempt_at <= $2) OR (status = 'sending' AND claimed_until < $2)) \
             ORDER BY id LIMIT 1",
        )
        .bind(channel)
        .bind(now_ms())
        .fetch_optional(&db.pool)
        .await?;
        let Some(id) = next else { return Ok(None) };
        if let Some(claimed) = claim(db, id, worker).await? {
            return Ok(Some(claimed));
        }
    }
}

/// Claims delivery `id` for `worker` if it is due and nobody holds it; counts the attempt.
pub async fn claim(db: &Db, id: i64, worker: &str) -> Result<Option<Claimed>> {
    let now = now_ms();
    let won = sqlx::query(
        "UPDATE notify_outbox SET status = 'sending', claimed_by = $2, claimed_until = $3, attempts = attempts + 1 \
         WHERE id = $1 AND ((status = 'pending' AND next_attempt_at <= $4) OR (status = 'sending' AND claimed_until < $4))",
    )
    .bind(id)
    .bind(worker)
    .bind(now + LEASE_MS)
    .bind(now)
    .execute(&db.pool)
    .await?;
    if won.rows_affected() == 0 {
        return Ok(None);
    }
    Ok(
        sqlx::query_as("SELECT id, event, payload, attempts FROM notify_outbox WHERE id = $1")
            .bind(id)
            .fetch_optional(&db.pool)
            .await?,
    )
}

/// The wait before attempt `attempts + 1`: `base_ms`, doubling per attempt, at most an hour.
pub fn backoff_ms(base_ms: i64, attempts: i64) -> i64 {
    let shift = (attempts - 1).clamp(0, 20) as u32;
    base_ms.saturating_mul(1 << shift).min(MAX_BACKOFF_MS)
}

/// Records the outcome of an attempt this worker claimed. On failure the delivery is
/// due again after the backoff, or `failed` after the last attempt. Returns when it is
/// due again, if it is.
pub async fn settle(
    db: &Db,
    claimed: &Claimed,
    worker: &str,
    outcome: &Result<()>,
    base_backoff_ms: i64,
) -> Result<Option<i64>> {
    let now = now_ms();
    match outcome {
        Ok(()) => {
            sqlx::query(
                "UPDATE notify_outbox SET status = 'delivered', delivered_at = $3, last_error = NULL, \
                 claimed_until = NULL WHERE id = $1 AND claimed_by = $2 AND status = 'sending'",
            )
            .bind(claimed.id)
            .bind(worker)
            .bind(now)
            .execute(&db.pool)
            .await?;
            Ok(None)
        }
        Err(e) => {
            let error: String = format!("{e:#}").chars().take(500).collect();
            let (status, next) = if claimed.attempts >= MAX_ATTEMPTS {
                (DeliveryStatus::Failed, None)
            } else {
                (
                    DeliveryStatus::Pending,
                    Some(now + backoff_ms(base_backoff_ms, claimed.attempts)),
                )
            };
            sqlx::query(
                "UPDATE notify_outbox SET status = $3, next_attempt_at = $4, last_error = $5, claimed_until = NULL \
                 WHERE id = $1 AND claimed_by = $2 AND status = 'sending'",
            )
            .bind(claimed.id)
            .bind(worker)
            .bind(status.as_str())
            .bind(next.unwrap_or(now))
            .bind(error)
            .execute(&db.pool)
            .await?;
            Ok(next)
        }
    }
}

/// Sends one delivery over its channel, within [`SEND_TIMEOUT`].
/// Sends one delivery, if `rules` let the server reach its receiver now (see
/// `ssr::outbound`: the address is checked and the connection pinned to it).
pub async fn deliver(
    config: &ChannelConfig,
    delivery_id: i64,
    payload: &str,
    rules: &super::outbound::Outbound,
) -> Result<()> {
    match tokio::time::timeout(SEND_TIMEOUT, send(config, delivery_id, payload, rules)).await {
        Ok(r) => r,
        Err(_) => bail!("no answer within {} s", SEND_TIMEOUT.as_secs()),
    }
}

async fn send(
    config: &ChannelConfig,
    delivery_id: i64,
    payload: &str,
    rules: &super::outbound::Outbound,
) -> Result<()> {
    match config {
        ChannelConfig::Webhook { url, secret } => {
            let p: Payload = serde_json::from_str(payload)?;
            let timestamp = now_ms() / 1000;
            let signature = sign(secret, timestamp, payload.as_bytes());
            let req = http_client(rules, "the webhook", url)
                .await?
                .post(url)
                .header("content-type", "application/json")
                .header("user-agent", "tablesafe")
                .header("x-tablesafe-event", &p.event)
                .header("x-tablesafe-delivery", delivery_id.to_string())
                .header(
                    "x-tablesafe-signature",
                    format!("t={timestamp},v1={signature}"),
                )
                .body(payload.to_string());
            answered(req).await
        }
        ChannelConfig::Slack { url } => {
            let p: Payload = serde_json::from_str(payload)?;
            let req = http_client(rules, "the Slack webhook", url)
                .await?
                .post(url)
                .json(&slack_body(&p));
            answered(req).await
        }
        ChannelConfig::Email {
            host,
            port,
            security,
            username,
            password,
            from,
            to,
        } => {
            let p: Payload = serde_json::from_str(payload)?;
            // lettre resolves the name itself: checked here, just before.
            rules
                .resolve_for_connect("the SMTP server", host, *port)
                .await
                .map_err(|e| anyhow!(e))?;
            send_mail(host, *port, *security, username, password, from, to, &p).await
        }
    }
}

/// The message a Slack channel receives. The summary carries text users chose (source,
/// policy and request names, reasons, error messages from a database server), so all
/// of it goes through [`slack_escape`]: it can neither ping a channel nor forge a link.
pub fn slack_body(p: &Payload) -> serde_json::Value {
    let mut text = format!("*tablesafe*: {}", slack_escape(&p.summary));
    if let Some(link) = &p.link {
        text.push_str(&format!(" (<{}|open>)", slack_escape(link)));
    }
    // `link_names` off: Slack must not turn a plain `@name` into a mention either.
    serde_json::json!({ "text": text, "link_names": false })
}

/// Text made inert for Slack: `&`, `<` and `>` escaped as Slack asks (`&amp;` `&lt;`
/// `&gt;`), which disarms its markup (`<!channel>`, `<!here>`, `<@U…>`, `<!subteam^…>`,
/// `<url|label>`); and `@channel`, `@here`, `@everyone` in any case broken with a
/// zero-width space after the `@`, so they read the same but notify no one.
pub fn slack_escape(s: &str) -> String {
    const BROADCASTS: [&str; 3] = ["channel", "here", "everyone"];
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.char_indices() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '@' => {
                out.push('@');
                let rest = &s[i + 1..];
                if BROADCASTS.iter().any(|b| {
                    rest.get(..b.len())
                        .is_some_and(|w| w.eq_ignore_ascii_case(b))
                }) {
                    out.push('\u{200B}');
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// A client for one request to `url`: its host resolved and checked against `rules`
/// now, and the connection pinned to those addresses (a name cannot answer the check
/// with one address and the connection with another); no redirects.
async fn http_client(
    rules: &super::outbound::Outbound,
    what: &str,
    url: &str,
) -> Result<reqwest::Client> {
    let parsed = reqwest::Url::parse(url).context("not a URL")?;
    let host = parsed.host_str().unwrap_or_default().to_string();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addrs = rules
        .resolve_for_connect(what, &host, port)
        .await
        .map_err(|e| anyhow!(e))?;
    let mut builder = reqwest::Client::builder()
        .timeout(SEND_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none());
    if host.parse::<std::net::IpAddr>().is_err() && !host.starts_with('[') {
        builder = builder.resolve_to_addrs(&host, &addrs);
    }
    Ok(builder.build()?)
}

/// Sends and checks for a 2xx answer. Errors never carry the URL (a Slack URL is a
/// secret), only what went wrong.
async fn answered(req: reqwest::RequestBuilder) -> Result<()> {
    let resp = req.send().await.map_err(|e| anyhow!(describe(&e)))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    // Only the status: the body is whatever the receiver chose to say, and this message
    // reaches the browser (an SSRF read-back channel otherwise).
    bail!("the receiver answered {status}")
}

fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    // The source chain says why (refused, DNS, TLS) without the URL.
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {cause}")
    }
}

/// `hex(HMAC-SHA256(secret, "<timestamp>.<body>"))`: what `x-tablesafe-signature`'s
/// `v1` carries. The timestamp is signed too, so a receiver can refuse replays.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    engine::repo::crypto::hex(&mac.finalize().into_bytes())
}

#[allow(clippy::too_many_arguments)]
async fn send_mail(
    host: &str,
    port: u16,
    security: Security,
    username: &str,
    password: &str,
    from: &str,
    to: &[String],
    p: &Payload,
) -> Result<()> {
    use lettre::message::header::ContentType;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let mut message = Message::builder()
        .from(from.parse().context("the sender address is not valid")?)
        .subject(format!("[tablesafe] {}", p.summary))
        .header(ContentType::TEXT_PLAIN);
    for rcpt in to {
        message = message.to(rcpt
            .parse()
            .with_context(|| format!("the recipient {rcpt} is not valid"))?);
    }
    let mut body = format!("{}\n\nEvent: {}\nAt: {}\n", p.summary, p.event, p.at);
    if let Some(link) = &p.link {
        body.push_str(&format!("Console: {link}\n"));
    }
    body.push_str(&format!(
        "\nDetails:\n{}\n",
        serde_json::to_string_pretty(&p.details)?
    ));
    let message = message.body(body)?;
    let builder = match security {
        Security::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
        Security::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)?,
        Security::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)?,
    };
    let mut builder = builder.port(port).timeout(Some(SEND_TIMEOUT));
    if !username.is_empty() && security == Security::None && !is_loopback(host) {
        bail!(
            "refusing to send the SMTP password to {host} without TLS (it would cross the network in the clear): change the channel to STARTTLS or TLS"
        );
    }
    if !username.is_empty() {
        builder = builder.credentials(Credentials::new(username.into(), password.into()));
    }
    builder
        .build()
        .send(message)
        .await
        .map_err(|e| anyhow!("the mail server refused or failed: {e}"))?;
    Ok(())
}

/// `localhost` or a loopback address: the only places a password may go without TLS
/// (a local relay). A name that merely resolves to loopback does not count.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_may_get_a_password_without_tls() {
        for host in ["localhost", "127.0.0.1", "127.9.9.9", "::1", "[::1]"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "smtp.example.com",
            "10.0.0.1",
            "localhost.evil.com",
            "169.254.169.254",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn backoff_doubles_from_the_base_and_stops_at_an_hour() {
        assert_eq!(backoff_ms(30_000, 1), 30_000);
        assert_eq!(backoff_ms(30_000, 2), 60_000);
        assert_eq!(backoff_ms(30_000, 4), 240_000);
        assert_eq!(backoff_ms(30_000, 12), MAX_BACKOFF_MS);
    }

    #[test]
    fn summaries_never_show_a_url_path_or_query() {
        let slack = ChannelConfig::Slack {
            url: "https://hooks.slack.com/services/T000/B000/XXXXSECRET?x=1".into(),
        };
        assert_eq!(slack.summary(), "Slack webhook at https://hooks.slack.com");
        let hook = ChannelConfig::Webhook {
            url: "http://127.0.0.1:8080/hook?token=abc".into(),
            secret: "s".into(),
        };
        assert_eq!(hook.summary(), "POST http://127.0.0.1:8080");
    }

    /// A source or policy named to ping everyone and plant a link, and an error message
    /// from a hostile database server: the Slack message escapes and defuses all of it,
    /// and keeps the console's own link working.
    #[test]
    fn slack_text_cannot_mention_anyone_or_forge_a_link() {
        let name = "<!channel> pay <@U024BE7LH|boss> & <https://evil.example|reset your password> @here @Everyone";
        let error = "ERROR: <!here> relation \"x\" does not exist @channel";
        let p = Payload::new(
            "backup.failed",
            format!("Backup failed: {name}: {error}"),
            Some("https://console.example/jobs/7?a=1&b=2".into()),
            serde_json::json!({}),
        );
        let body = slack_body(&p);
        assert_eq!(body["link_names"], false);
        let text = body["text"].as_str().unwrap();
        // The only markup left is the console's own link.
        assert_eq!(text.matches('<').count(), 1, "{text}");
        assert!(
            text.ends_with(" (<https://console.example/jobs/7?a=1&amp;b=2|open>)"),
            "{text}"
        );
        assert!(text.contains("&lt;!channel&gt; pay &lt;@U024BE7LH|boss&gt; &amp; &lt;https://evil.example|reset your password&gt;"), "{text}");
        assert!(text.contains("&lt;!here&gt;"), "{text}");
        for word in ["@here", "@Everyone", "@channel"] {
            assert!(!text.contains(word), "{word} in {text}");
        }
        assert!(text.contains("@\u{200B}here @\u{200B}Everyone"), "{text}");
        assert!(text.contains("exist @\u{200B}channel"), "{text}");
        // Ordinary text is untouched.
        assert_eq!(
            slack_escape("ops@example.com: 3 > 2"),
            "ops@example.com: 3 &gt; 2"
        );
        assert_eq!(slack_escape("@her"), "@her");
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // As a receiver computes it, e.g. Python:
        // hmac.new(b"Jefe", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        assert_eq!(
            sign("Jefe", 1_700_000_000, br#"{"a":1}"#),
            "fa5f6481efc59da48b19c9dc10196c9953e5651f8304b3a318b6b87d70272e0a"
        );
        assert_ne!(sign("Jefe", 1, b"x"), sign("Jefe", 2, b"x"));
    }
}

/// The events, built from what happened; each is written to the outbox (see [`emit`]).
pub mod events {
    use super::{Payload, emit};
    use crate::model::{JobKind, JobStatus};
    use crate::ssr::requests::RequestRow;
    use crate::ssr::{AppState, store};
    use serde_json::json;

    fn first_line(s: &str) -> &str {
        s.lines().next().unwrap_or("")
    }

    /// A job ended: a failed backup, a finished restore (any outcome) and damage found by
    /// a verify are events; `damage` tells a verify's damage from its other failures.
    pub async fn job_finished(
        state: &AppState,
        job: &store::JobRow,
        status: JobStatus,
        error: Option<&str>,
        result: Option<&str>,
        damage: bool,
    ) {
        let link = state.link(&format!("/jobs/{}", job.id));
        let policy = match job.policy_id {
            Some(id) => store::policy(&state.db, id)
                .await
                .ok()
                .flatten()
                .map(|p| p.name),
            None => None,
        };
        let result: serde_json::Value = result
            .and_then(|r| serde_json::from_str(r).ok())
            .unwrap_or(serde_json::Value::Null);
        let payload = match (job.kind, status) {
            (JobKind::Backup, JobStatus::Failed) => Payload::new(
                "backup.failed",
                format!(
                    "Backup failed: {}: {}",
                    policy.as_deref().unwrap_or(&job.title),
                    first_line(error.unwrap_or("unknown error"))
                ),
                link,
                json!({ "job": job.id, "policy": policy, "title": job.title,
                        "error": error, "worker": job.worker }),
            ),
            (JobKind::Restore, _) => {
                let request = crate::ssr::requests::of_job(&state.db, job.id)
                    .await
                    .ok()
                    .flatten();
                let link = match request {
                    Some(r) => state.link(&format!("/requests/{r}")),
                    None => link,
                };
                let mut summary = format!("{}: {status}", job.title);
                if let Some(e) = error {
                    summary.push_str(&format!(": {}", first_line(e)));
                }
                Payload::new(
                    "restore.finished",
                    summary,
                    link,
                    json!({ "job": job.id, "status": status, "request": request,
                            "title": job.title, "error": error, "result": result }),
                )
            }
            (JobKind::Verify, JobStatus::Failed) if damage => Payload::new(
                "verify.damage",
                format!(
                    "Verify found damage: {}: {}",
                    job.title,
                    first_line(error.unwrap_or(""))
                ),
                link,
                json!({ "job": job.id, "title": job.title, "target": job.target_id,
                        "problems": error }),
            ),
            _ => return,
        };
        emit(&state.db, &payload).await;
    }

    /// A restore request was filed, fully approved (its restore is queued) or rejected.
    pub async fn request(state: &AppState, event: &str, row: &RequestRow, by: &str) {
        let (verb, extra) = match event {
            "restore.requested" => ("requested", format!(" (reason: {})", row.reason.trim())),
            "restore.approved" => ("approved", String::new()),
            _ => (
                "rejected",
                row.reject_reason
                    .as_deref()
                    .map(|r| format!(" (reason: {r})"))
                    .unwrap_or_default(),
            ),
        };
        let payload = Payload::new(
            event,
            format!(
                "Restore request #{} {verb} by {by}: {}{extra}",
                row.id, row.title
            ),
            state.link(&format!("/requests/{}", row.id)),
            json!({
                "request": row.id, "title": row.title, "reason": row.reason,
                "requested_by": row.requester, "by": by,
                "approvals": row.approvals, "approvals_required": row.approvals_required,
                "reject_reason": row.reject_reason, "job": row.job_id,
            }),
        );
        emit(&state.db, &payload).await;
    }

    /// A policy's continuous capture failed after working (or from its first round):
    /// the restorable range stops growing until it recovers. Said once per failure,
    /// not every retry.
    pub async fn capture_failed(state: &AppState, policy: &store::PolicyRow, error: &str) {
        let payload = Payload::new(
            "capture.failed",
            format!(
                "Continuous capture failed: policy {}: {}",
                policy.name,
                first_line(error)
            ),
            state.link("/policies"),
            json!({ "policy": policy.name, "policy_id": policy.id, "error": error }),
        );
        emit(&state.db, &payload).await;
    }

    /// A policy has had no successful backup for longer than it should (RPO breach).
    pub async fn backup_late(
        state: &AppState,
        policy: &store::PolicyRow,
        last_success: Option<i64>,
        limit_ms: i64,
    ) {
        let since = match last_success {
            Some(ms) => format!("since {}", super::rfc3339(ms)),
            None => "ever".to_string(),
        };
        let payload = Payload::new(
            "backup.late",
            format!(
                "Backup late: policy {} has had no successful backup {since} (expected within {} min)",
                policy.name,
                limit_ms / 60_000
            ),
            state.link("/policies"),
            json!({ "policy": policy.name, "last_success": last_success.map(super::rfc3339),
                    "expected_within_minutes": limit_ms / 60_000 }),
        );
        emit(&state.db, &payload).await;
    }
}
