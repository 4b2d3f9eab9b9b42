//! The capture slot read over PostgreSQL's streaming replication protocol
//! (`START_REPLICATION … LOGICAL`, through the `pgwire-replication` crate): the
//! walsender decodes each WAL record once and keeps its place between rounds, where
//! peeking through SQL decoded the slot's WAL again from its restart point every round
//! and advancing it decoded it once more (the benchmark's +40 % source CPU).
//!
//! Durability is unchanged: the position reported back to the server (the slot's
//! `confirmed_flush_lsn`) is only ever one whose changes are stored in the repository.
//! After a crash the server sends again every transaction that commits after it.
//!
//! Completeness: the stream is in WAL order, and the walsender reports how far it has
//! decoded (keepalives carry it, commits end at it). Once that passes a flush position
//! read from the source, every transaction committed before that position has been
//! received: that is what lets a round say "every commit up to T is stored".

use super::change::Txn;
use super::pgoutput::PgOutputDecoder;
use crate::secret::Secret;
use crate::{Error, Result};
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent, TlsConfig};
use std::time::{Duration, Instant};

/// Session settings for the walsender, so values come out in the forms a replay
/// parses the same whatever the server's defaults (what the backup's COPY uses too).
const SESSION_OPTIONS: &str =
    "-c datestyle=ISO,MDY -c intervalstyle=postgres -c extra_float_digits=3 -c bytea_output=hex";

pub struct ChangeStream {
    client: ReplicationClient,
    decoder: PgOutputDecoder,
    /// Every transaction that committed before this WAL position has been received.
    received: u64,
    /// Operations in transactions received and not yet taken.
    pending_ops: usize,
    /// The highest position confirmed to the server.
    confirmed: u64,
}

fn stream_err(context: &str, e: impl std::fmt::Display) -> Error {
    Error::Other(crate::source::link::with_advice(format!("{context}: {e}")))
}

/// The replication connection's settings from a `postgres://` URL (password from the
/// URL, `PGPASSWORD` or `~/.pgpass`, like the SQL connection's).
fn config(url: &Secret<String>, slot: &str, publication: &str) -> Result<ReplicationConfig> {
    let parsed = url::Url::parse(url.expose())
        .map_err(|_| Error::invalid("the source URL is not a valid postgres:// URL"))?;
    let query: std::collections::HashMap<String, String> =
        parsed.query_pairs().into_owned().collect();
    let decode = |s: &str| {
        crate::repo::storage::percent_decode(s)
            .map_err(|_| Error::invalid("the source URL has a badly percent-encoded part"))
    };
    let host = match query.get("host") {
        Some(h) => h.clone(),
        None => parsed.host_str().unwrap_or("localhost").to_string(),
    };
    let port = query
        .get("port")
        .and_then(|p| p.parse().ok())
        .or(parsed.port())
        .unwrap_or(5432);
    let user = match query.get("user") {
        Some(u) => u.clone(),
        None if !parsed.username().is_empty() => decode(parsed.username())?,
        None => std::env::var("PGUSER").unwrap_or_else(|_| "postgres".into()),
    };
    let database = match query.get("dbname") {
        Some(d) => d.clone(),
        None => decode(parsed.path().trim_start_matches('/'))?,
    };
    let database = if database.is_empty() {
        user.clone()
    } else {
        database
    };
    let password = match (parsed.password(), query.get("password")) {
        (_, Some(p)) => p.clone(),
        (Some(p), None) => decode(p)?,
        (None, None) => std::env::var("PGPASSWORD")
            .ok()
            .or_else(|| pgpass(&host, port, &database, &user))
            .unwrap_or_default(),
    };
    let tls = tls_config(&query)?;
    let cfg = if host.starts_with('/') {
        ReplicationConfig::unix(host, port, user, password, database, slot, publication)
    } else {
        ReplicationConfig::new(host, user, password, database, slot, publication)
            .with_port(port)
            .with_tls(tls)
    };
    Ok(cfg
        .with_options(SESSION_OPTIONS)
        .with_application_name("tablesafe capture")
        // Positions reach the server within a second of being stored, so the slot
        // lets go of WAL promptly.
        .with_status_interval(Duration::from_secs(1))
        .with_wakeup_interval(Duration::from_secs(1)))
}

/// The replication connection's TLS settings, read as libpq and the SQL connection
/// (sqlx) read them: `sslmode` (default `prefer`), `sslrootcert`, `sslcert`, `sslkey`
/// from the URL, else the `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`
/// environment variables.
fn tls_config(query: &std::collections::HashMap<String, String>) -> Result<TlsConfig> {
    use pgwire_replication::SslMode;
    let setting = |names: &[&str], env: &str| {
        names
            .iter()
            .find_map(|n| query.get(*n).cloned())
            .or_else(|| std::env::var(env).ok())
    };
    let mode = setting(&["sslmode", "ssl-mode"], "PGSSLMODE");
    let mode = match mode.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("disable") => SslMode::Disable,
        // `allow` tries without TLS first; a server that insists gets TLS from
        // `prefer` as well, so it is read as that.
        None | Some("allow") | Some("prefer") => SslMode::Prefer,
        Some("require") => SslMode::Require,
        Some("verify-ca") => SslMode::VerifyCa,
        Some("verify-full") => SslMode::VerifyFull,
        Some(other) => {
            return Err(Error::invalid(format!(
                "sslmode={other} is not known: use disable, prefer, require, verify-ca or verify-full"
            )));
        }
    };
    let root = setting(&["sslrootcert", "ssl-root-cert", "ssl-ca"], "PGSSLROOTCERT");
    let cert = setting(&["sslcert", "ssl-cert"], "PGSSLCERT");
    let key = setting(&["sslkey", "ssl-key"], "PGSSLKEY");
    Ok(TlsConfig {
        mode,
        ca_pem_path: root.map(Into::into),
        sni_hostname: None,
        client_cert_pem_path: cert.map(Into::into),
        client_key_pem_path: key.map(Into::into),
    })
}

/// The password for a connection from `~/.pgpass` (or `PGPASSFILE`), as libpq finds it.
fn pgpass(host: &str, port: u16, database: &str, user: &str) -> Option<String> {
    let path = std::env::var_os("PGPASSFILE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".pgpass")))?;
    pgpass_lookup(
        &std::fs::read_to_string(path).ok()?,
        host,
        port,
        database,
        user,
    )
}

/// The password a pgpass file's text gives for a connection (first matching line).
fn pgpass_lookup(text: &str, host: &str, port: u16, database: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        // Fields separated by unescaped colons; `\:` and `\\` escape.
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => cur.extend(chars.next()),
                ':' => fields.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        fields.push(cur);
        if fields.len() != 5 {
            continue;
        }
        let host_ok = fields[0] == "*"
            || fields[0] == host
            || (fields[0] == "localhost" && host.starts_with('/'));
        if host_ok
            && (fields[1] == "*" || fields[1] == port)
            && (fields[2] == "*" || fields[2] == database)
            && (fields[3] == "*" || fields[3] == user)
        {
            return Some(fields[4].clone());
        }
    }
    None
}

impl ChangeStream {
    /// Starts streaming the slot's changes after `from` (its confirmed position).
    /// Waits up to `wait` for the slot to be free: a capture killed a moment ago leaves
    /// its walsender holding it until the server notices.
    pub async fn start(
        url: &Secret<String>,
        slot: &str,
        publication: &str,
        from: u64,
        wait: Duration,
    ) -> Result<Self> {
        let deadline = Instant::now() + wait;
        loop {
            let cfg = config(url, slot, publication)?
                .with_start_lsn(Lsn(from))
                .with_ack_lsn(Lsn(from));
            let mut client = ReplicationClient::connect(cfg)
                .await
                .map_err(|e| stream_err("connecting for replication", e))?;
            match tokio::time::timeout(Duration::from_secs(30), client.wait_started()).await {
                Ok(Ok(())) => {
                    return Ok(ChangeStream {
                        client,
                        decoder: PgOutputDecoder::default(),
                        received: from,
                        pending_ops: 0,
                        confirmed: from,
                    });
                }
                Ok(Err(e)) if e.to_string().contains("is active") && Instant::now() < deadline => {
                    client.abort();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(Err(e)) => {
                    client.abort();
                    return Err(stream_err("starting the replication stream", e));
                }
                Err(_) => {
                    client.abort();
                    return Err(Error::Other(
                        "starting the replication stream: no answer within 30 s".into(),
                    ));
                }
            }
        }
    }

    /// Receives until every commit before `lsn` is in, `max_ops` operations of
    /// complete transactions are waiting, or `wait` has passed. True when `lsn` was
    /// reached.
    pub async fn receive_until(
        &mut self,
        lsn: u64,
        max_ops: usize,
        wait: Duration,
    ) -> Result<bool> {
        let deadline = Instant::now() + wait;
        while self.received < lsn && self.pending_ops < max_ops {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let event = match tokio::time::timeout(left, self.client.recv()).await {
                Err(_) => return Ok(false),
                Ok(Ok(Some(e))) => e,
                Ok(Ok(None)) => {
                    return Err(Error::Other("the replication stream ended".into()));
                }
                Ok(Err(e)) => return Err(stream_err("the replication stream", e)),
            };
            self.handle(event)?;
        }
        Ok(self.received >= lsn)
    }

    fn handle(&mut self, event: ReplicationEvent) -> Result<()> {
        match event {
            ReplicationEvent::KeepAlive { wal_end, .. } => {
                self.received = self.received.max(wal_end.0);
            }
            ReplicationEvent::Begin {
                final_lsn,
                xid,
                commit_time_micros,
            } => {
                // The decoder reads pgoutput's own messages: rebuilt from the fields the
                // client parsed out.
                let mut msg = vec![b'B'];
                msg.extend_from_slice(&final_lsn.0.to_be_bytes());
                msg.extend_from_slice(&commit_time_micros.to_be_bytes());
                msg.extend_from_slice(&xid.to_be_bytes());
                self.decoder.feed(&msg)?;
            }
            ReplicationEvent::XLogData { data, .. } => {
                self.decoder.feed(&data)?;
            }
            ReplicationEvent::Commit {
                lsn,
                end_lsn,
                commit_time_micros,
            } => {
                let mut msg = vec![b'C', 0];
                msg.extend_from_slice(&lsn.0.to_be_bytes());
                msg.extend_from_slice(&end_lsn.0.to_be_bytes());
                msg.extend_from_slice(&commit_time_micros.to_be_bytes());
                self.decoder.feed(&msg)?;
                self.pending_ops = self.decoder.done_ops();
                self.received = self.received.max(end_lsn.0);
            }
            ReplicationEvent::Message { .. } => {}
            ReplicationEvent::StoppedAt { .. } => {
                return Err(Error::Other("the replication stream stopped".into()));
            }
        }
        Ok(())
    }

    /// The complete transactions received so far, in commit order.
    pub fn take_done(&mut self) -> Vec<Txn> {
        self.pending_ops = 0;
        self.decoder.take_done()
    }

    /// Tells the server that everything up to `lsn` is stored: the slot may let go of
    /// it. Only ever called after the segment holding those changes was written.
    pub fn confirm(&mut self, lsn: u64) {
        if lsn > self.confirmed {
            self.confirmed = lsn;
            self.client.update_applied_lsn(Lsn(lsn));
        }
    }

    /// Ends the stream, reporting the confirmed position first.
    pub async fn shutdown(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.client.shutdown()).await;
        self.client.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replication_connection_takes_the_urls_parts() {
        let url = Secret::new(
            "postgres://backup:p%40ss@db.internal:6543/shop?sslmode=require".to_string(),
        );
        let cfg = config(&url, "slot", "pub").unwrap();
        assert_eq!(
            (
                cfg.host.as_str(),
                cfg.port,
                cfg.user.as_str(),
                cfg.password.as_str(),
                cfg.database.as_str()
            ),
            ("db.internal", 6543, "backup", "p@ss", "shop")
        );
        assert_eq!(cfg.tls.mode, pgwire_replication::SslMode::Require);
        let bogus = Secret::new("postgres://h/db?sslmode=bogus".to_string());
        assert!(config(&bogus, "s", "p").is_err());
    }

    #[test]
    fn a_password_comes_from_pgpass_lines_as_libpq_reads_them() {
        let text = "# comment\nother:5432:*:*:nope\ndb.internal:6543:shop:backup:from\\:file\n";
        assert_eq!(
            pgpass_lookup(text, "db.internal", 6543, "shop", "backup").as_deref(),
            Some("from:file")
        );
        assert_eq!(
            pgpass_lookup(text, "db.internal", 6543, "shop", "eve"),
            None
        );
        assert_eq!(
            pgpass_lookup("*:*:*:*:any\n", "h", 1, "d", "u").as_deref(),
            Some("any")
        );
    }
}
