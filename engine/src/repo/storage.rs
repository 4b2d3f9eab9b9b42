//! Where repository objects live, through Apache OpenDAL: a local directory, an
//! S3-compatible bucket (AWS S3, Alibaba Cloud OSS, MinIO…) or an SFTP server.
//!
//! Locations:
//!
//! ```text
//! /var/backups/repo  or  file:///var/backups/repo
//! s3://BUCKET/PREFIX?endpoint=https://oss-cn-hangzhou.aliyuncs.com&region=cn-hangzhou&style=virtual
//! sftp://USER@HOST:PORT/ABSOLUTE/PATH?known_hosts=strict|add|accept&key=/path/to/id_ed25519
//! ```
//!
//! Credentials never appear in a location: S3 keys come from [`Credentials`] (the
//! console's stored secret) or the environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`); SFTP authenticates with an SSH key (a file named by
//! `key=`, the ssh agent, the user's default keys, or a key stored in the console, which
//! lives in a mode-0600 temp file only while the storage is open). Host keys are checked
//! strictly against `~/.ssh/known_hosts` unless `known_hosts=` says otherwise.
//!
//! Contract: `put` is atomic (readers see the whole object or none): the local backend
//! and SFTP write a temp file under `.tmp/` and rename it, S3 PUTs are atomic; `get` of a
//! missing object is [`crate::Error::Damaged`] ("missing"); `list` returns the object
//! paths under a prefix in no particular order. Objects are never overwritten with other
//! content (their names are content hashes or unique ids), so a repeated `put` is
//! harmless.
//!
//! Every remote call has a timeout (60 s per call, 30 s without progress; S3 locations
//! take `timeout=SECONDS` for the latter) and is retried
//! with exponential backoff and jitter (5 attempts, 0.5 s → 8 s) when the error is
//! temporary (connection refused or reset, timeouts, HTTP 5xx/429); after that the
//! error names the object and the target.

use crate::error::Context;
use crate::secret::Secret;
use crate::{Error, Result};
use opendal::Operator;
use opendal::layers::{RetryLayer, TimeoutLayer};
use std::sync::Arc;
use std::time::Duration;

/// Secrets a target may need, from the console's store or the environment.
#[derive(Clone, Default, Debug)]
pub struct Credentials {
    pub s3_access_key_id: Option<Secret<String>>,
    pub s3_secret_access_key: Option<Secret<String>>,
    /// An SSH private key (OpenSSH text format) for SFTP.
    pub ssh_private_key: Option<Secret<String>>,
    /// Only these: never the server's own identity (AWS configuration files and
    /// environment, an SSH key file named in the location, the user's SSH keys and
    /// agent). The console sets it for targets an admin did not allow that identity.
    pub only_these: bool,
}

impl Credentials {
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (empty counts as unset).
    pub fn from_env() -> Self {
        let var = |n: &str| {
            std::env::var(n)
                .ok()
                .filter(|v| !v.is_empty())
                .map(Secret::new)
        };
        Credentials {
            s3_access_key_id: var("AWS_ACCESS_KEY_ID"),
            s3_secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
            ssh_private_key: None,
            only_these: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Local,
    S3,
    Sftp,
}

/// A key file that exists only while a storage using it is open.
#[derive(Debug)]
struct TempKey(std::path::PathBuf);

impl Drop for TempKey {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[derive(Clone, Debug)]
pub struct Storage {
    op: Operator,
    kind: Kind,
    /// The local directory where atomic writes stage their temp files (local backend).
    tmp_dir: Option<std::path::PathBuf>,
    _key: Option<Arc<TempKey>>,
    /// Set when a call failed for a reason other than a missing object: best-effort
    /// clean-up after a failure then gives up at once instead of waiting out the
    /// retries of a target that is gone.
    broken: Arc<std::sync::atomic::AtomicBool>,
    /// Calls made to the target (reads, lists, writes, deletes): what an operation costs
    /// on a remote target, counted for tests and benchmarks.
    requests: Arc<std::sync::atomic::AtomicU64>,
    /// How to name this repository in messages (no secrets).
    pub display: String,
}

/// `key=value` pairs of a location's query, percent-decoded.
fn query_pairs(query: &str) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k)?;
        // One value per key: a check that reads the first and a connection that uses
        // the last must never disagree.
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(Error::invalid(format!("{k}= is given twice")));
        }
        out.push((k, percent_decode(v)?));
    }
    Ok(out)
}

/// The server a remote location connects to, as [`Storage::open_with`] reads it:
/// ("S3 endpoint", host, port) for `s3://…?endpoint=…` (`None` without an endpoint:
/// AWS itself), ("SFTP server", host, port) for `sftp://…`, `None` for a directory.
pub fn remote_server(location: &str) -> Result<Option<(&'static str, String, u16)>> {
    let host_port = |url: &str, default: u16| -> Result<(String, u16)> {
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::invalid(format!("{url:?} is not a valid address: {e}")))?;
        let host = parsed.host_str().unwrap_or_default();
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok((host, parsed.port_or_known_default().unwrap_or(default)))
    };
    if let Some(rest) = location.strip_prefix("s3://") {
        let query = rest.split_once('?').map_or("", |(_, q)| q);
        let Some((_, endpoint)) = query_pairs(query)?
            .into_iter()
            .find(|(k, _)| k == "endpoint")
        else {
            return Ok(None);
        };
        let (host, port) = host_port(&endpoint, 443)?;
        return Ok(Some(("The S3 endpoint", host, port)));
    }
    if let Some(rest) = location.strip_prefix("sftp://") {
        let main = rest.split_once('?').map_or(rest, |(m, _)| m);
        let authority = main.split('/').next().unwrap_or_default();
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = host_port(&format!("ssh://{hostport}"), 22)?;
        return Ok(Some(("The SFTP server", host, port)));
    }
    Ok(None)
}

/// `%XX` escapes decoded (URL parts); a bad escape or non-UTF-8 result is an error.
pub(crate) fn percent_decode(s: &str) -> Result<String> {
    // The crate passes a `%` without two hex digits through; such a URL is a mistake.
    let bytes = s.as_bytes();
    for (i, _) in s.match_indices('%') {
        if !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return Err(Error::invalid(format!("bad percent-encoding in {s:?}")));
        }
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| Error::invalid(format!("{s:?} is not UTF-8")))
}

fn unknown_param(scheme: &str, k: &str, allowed: &str) -> Error {
    Error::invalid(format!(
        "unknown parameter {k:?} in the {scheme} location (allowed: {allowed})"
    ))
}

/// How long a remote call may go without progress (a whole call: twice that).
const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);

/// `timeout=SECONDS` of a location: 1 to 600.
fn parse_timeout(v: &str) -> Result<Duration> {
    match v.parse::<u64>() {
        Ok(n) if (1..=600).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(Error::invalid(format!(
            "timeout={v:?}: give the seconds a call may go without progress, 1 to 600"
        ))),
    }
}

/// The retry and timeout policy of every remote call. SFTP connections come from a
/// pool that itself keeps trying to connect for 30 s before it gives up, so SFTP calls
/// are retried once rather than four times.
fn remote(op: Operator, retries: usize, io_timeout: Duration) -> Operator {
    op.layer(
        TimeoutLayer::new()
            .with_timeout(io_timeout * 2)
            .with_io_timeout(io_timeout),
    )
    .layer(
        RetryLayer::new()
            .with_max_times(retries)
            .with_factor(2.0)
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(8))
            .with_jitter(),
    )
}

impl Storage {
    /// Opens a location with credentials from the environment.
    pub fn open(location: &str) -> Result<Self> {
        Self::open_with(location, &Credentials::from_env())
    }

    /// Opens a location: a path, `file:///path`, `s3://…` or `sftp://…` (see the module
    /// docs).
    pub fn open_with(location: &str, creds: &Credentials) -> Result<Self> {
        let location = location.trim();
        if let Some(rest) = location.strip_prefix("s3://") {
            return Self::open_s3(rest, creds);
        }
        if let Some(rest) = location.strip_prefix("sftp://") {
            return Self::open_sftp(rest, creds);
        }
        let path = if let Some(rest) = location.strip_prefix("file://") {
            rest.to_string()
        } else if let Some((scheme, _)) = location.split_once("://") {
            return Err(Error::invalid(format!(
                "unsupported repository location scheme {scheme:?}: use a path, file:///path, s3://bucket/prefix or sftp://user@host/path"
            )));
        } else {
            location.to_string()
        };
        if path.is_empty() {
            return Err(Error::invalid("empty repository path"));
        }
        let abs = std::path::absolute(&path).map_err(|e| Error::invalid(format!("{path}: {e}")))?;
        let root = abs
            .to_str()
            .ok_or_else(|| Error::invalid("repository path is not UTF-8"))?;
        let tmp = format!("{}/.tmp", root.trim_end_matches('/'));
        let builder = opendal::services::Fs::default()
            .root(root)
            .atomic_write_dir(&tmp);
        let op = Operator::new(builder)
            .context(|| format!("opening {root}"))?
            .finish();
        Ok(Storage {
            op,
            kind: Kind::Local,
            tmp_dir: Some(tmp.into()),
            _key: None,
            broken: Arc::default(),
            requests: Arc::default(),
            display: root.to_string(),
        })
    }

    fn open_s3(rest: &str, creds: &Credentials) -> Result<Self> {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return Err(Error::invalid(
                "the S3 location has no bucket: use s3://BUCKET/PREFIX?endpoint=…&region=…",
            ));
        }
        let prefix = prefix.trim_matches('/');
        let mut builder = opendal::services::S3::default()
            .bucket(bucket)
            .root(&format!("/{prefix}"))
            // Not on EC2: asking the metadata service for keys would only add a timeout.
            .disable_ec2_metadata();
        let mut region = None;
        let mut style = None;
        let mut endpoint = None;
        let mut io_timeout = DEFAULT_IO_TIMEOUT;
        for (k, v) in query_pairs(query)? {
            match k.as_str() {
                "endpoint" => endpoint = Some(v),
                "region" => region = Some(v),
                "style" => style = Some(v),
                "timeout" => io_timeout = parse_timeout(&v)?,
                _ => return Err(unknown_param("s3", &k, "endpoint, region, style, timeout")),
            }
        }
        if let Some(e) = &endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(Error::invalid(format!(
                    "the S3 endpoint {e:?} must start with http:// or https://"
                )));
            }
            builder = builder.endpoint(e);
        }
        // Alibaba Cloud OSS only accepts virtual-hosted-style requests.
        let virtual_host = match style.as_deref() {
            None => endpoint
                .as_deref()
                .is_some_and(|e| e.contains("aliyuncs.com")),
            Some("virtual") => true,
            Some("path") => false,
            Some(other) => {
                return Err(Error::invalid(format!(
                    "style={other:?}: use style=path or style=virtual"
                )));
            }
        };
        if virtual_host {
            builder = builder.enable_virtual_host_style();
        }
        builder = builder.region(region.as_deref().unwrap_or("us-east-1"));
        match (&creds.s3_access_key_id, &creds.s3_secret_access_key) {
            (Some(id), Some(key)) => {
                builder = builder
                    .access_key_id(id.expose())
                    .secret_access_key(key.expose());
            }
            // Without keys of its own, a target either uses the server's AWS
            // configuration (opendal's default: environment, ~/.aws) or, when it may
            // not, nothing: anonymous requests, which a private bucket refuses.
            (None, None) if creds.only_these => {
                builder = builder.disable_config_load().allow_anonymous();
            }
            (None, None) => {}
            _ => {
                return Err(Error::invalid(
                    "give both the S3 access key id and the secret access key, or neither",
                ));
            }
        }
        let op = Operator::new(builder)
            .context(|| format!("opening s3://{bucket}/{prefix}"))?
            .finish();
        Ok(Storage {
            op: remote(op, 4, io_timeout),
            kind: Kind::S3,
            tmp_dir: None,
            _key: None,
            broken: Arc::default(),
            requests: Arc::default(),
            display: match &endpoint {
                Some(e) => format!("s3://{bucket}/{prefix} at {e}"),
                None => format!("s3://{bucket}/{prefix}"),
            },
        })
    }

    fn open_sftp(rest: &str, creds: &Credentials) -> Result<Self> {
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = match main.find('/') {
            Some(i) => main.split_at(i),
            None => (main, ""),
        };
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(percent_decode(u)?), h),
            None => (None, authority),
        };
        if user.as_deref().is_some_and(|u| u.contains(':')) {
            return Err(Error::invalid(
                "an SFTP location takes no password: authenticate with an SSH key",
            ));
        }
        if hostport.is_empty() {
            return Err(Error::invalid(
                "the SFTP location has no host: use sftp://USER@HOST:PORT/PATH",
            ));
        }
        let path = percent_decode(path)?;
        if path.trim_matches('/').is_empty() {
            return Err(Error::invalid(
                "the SFTP location needs a directory: sftp://USER@HOST:PORT/ABSOLUTE/PATH",
            ));
        }
        let mut builder = opendal::services::Sftp::default()
            .endpoint(&format!("ssh://{hostport}"))
            .root(&path);
        if let Some(u) = &user {
            builder = builder.user(u);
        }
        let mut key_file = None;
        for (k, v) in query_pairs(query)? {
            match k.as_str() {
                "known_hosts" => match v.as_str() {
                    "strict" | "add" | "accept" => builder = builder.known_hosts_strategy(&v),
                    _ => {
                        return Err(Error::invalid(format!(
                            "known_hosts={v:?}: use strict (the default), add or accept"
                        )));
                    }
                },
                "key" => key_file = Some(v),
                _ => return Err(unknown_param("sftp", &k, "known_hosts, key")),
            }
        }
        if creds.only_these && key_file.is_some() {
            return Err(Error::invalid(
                "key= names a key file on the tablesafe server: only a target an admin lets use the server's own identity may; store the private key with the target instead",
            ));
        }
        if creds.only_these && creds.ssh_private_key.is_none() {
            return Err(Error::invalid(
                "this SFTP target has no SSH key of its own, and may not use the server's: store its private key with the target (or an admin lets it use the server's own SSH identity)",
            ));
        }
        let mut temp_key = None;
        if let Some(pem) = &creds.ssh_private_key {
            let t = write_temp_key(pem)?;
            builder = builder.key(t.0.to_str().unwrap_or_default());
            temp_key = Some(Arc::new(t));
        } else if let Some(k) = &key_file {
            builder = builder.key(k);
        }
        let display = match &user {
            Some(u) => format!("sftp://{u}@{hostport}{path}"),
            None => format!("sftp://{hostport}{path}"),
        };
        let op = Operator::new(builder)
            .context(|| format!("opening {display}"))?
            .finish();
        Ok(Storage {
            op: remote(op, 1, DEFAULT_IO_TIMEOUT),
            kind: Kind::Sftp,
            tmp_dir: None,
            _key: temp_key,
            broken: Arc::default(),
            requests: Arc::default(),
            display,
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// How many calls this storage (and its clones) made to the target so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a call has failed for a reason other than a missing object (see
    /// `broken`).
    pub fn is_broken(&self) -> bool {
        self.broken.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn note<T>(
        &self,
        r: std::result::Result<T, opendal::Error>,
    ) -> std::result::Result<T, opendal::Error> {
        if let Err(e) = &r
            && !matches!(
                e.kind(),
                opendal::ErrorKind::NotFound | opendal::ErrorKind::RangeNotSatisfied
            )
        {
            self.broken
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }

    /// Runs a call unless an earlier one already failed for good (after its retries):
    /// once a target is gone, the rest of the operation fails at once.
    async fn call<T>(
        &self,
        call: impl std::future::IntoFuture<Output = opendal::Result<T>>,
    ) -> opendal::Result<T> {
        if self.is_broken() {
            return Err(opendal::Error::new(
                opendal::ErrorKind::Unexpected,
                "the target stopped answering earlier in this operation",
            ));
        }
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.note(call.await)
    }

    /// Deletes an object if the target still answers; for clean-up after a failure.
    pub async fn delete_best_effort(&self, path: &str) {
        if !self.is_broken() {
            let _ = self.delete(path).await;
        }
    }

    pub async fn put(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        let result = match self.kind {
            // SFTP writes in place: stage under .tmp/ and rename, so that a broken
            // connection never leaves a partial object under its real name.
            Kind::Sftp => {
                let tmp = format!(
                    ".tmp/{}.{}",
                    path.replace('/', "_"),
                    crate::repo::crypto::hex(&rand::random::<[u8; 8]>())
                );
                match self.call(self.op.write(&tmp, bytes)).await {
                    Ok(_) => match self.call(self.op.rename(&tmp, path)).await {
                        Ok(()) => Ok(()),
                        Err(e) => {
                            self.delete_best_effort(&tmp).await;
                            // Renaming onto an existing object fails in SFTP v3; objects
                            // never change content, so the existing one is as good.
                            if self.op.exists(path).await.unwrap_or(false) {
                                Ok(())
                            } else {
                                Err(e)
                            }
                        }
                    },
                    Err(e) => {
                        self.delete_best_effort(&tmp).await;
                        Err(e)
                    }
                }
            }
            _ => self.call(self.op.write(path, bytes)).await.map(|_| ()),
        };
        if result.is_err()
            && let Some(tmp_dir) = &self.tmp_dir
        {
            // A failed write (disk full) leaves its staged temp file behind: remove it so
            // the space comes back. Temp files are named `<object name>.<random>`.
            let base = format!("{}.", path.rsplit('/').next().unwrap_or(path));
            if let Ok(entries) = std::fs::read_dir(tmp_dir) {
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().starts_with(&base) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        result.context(|| format!("writing {path} in {}", self.display))
    }

    pub async fn get(&self, path: &str) -> Result<Vec<u8>> {
        match self.call(self.op.read(path)).await {
            Ok(buf) => Ok(buf.to_vec()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Err(Error::damaged(format!(
                "{path} is missing from {}",
                self.display
            ))),
            Err(e) => Err(e).context(|| format!("reading {path} in {}", self.display)),
        }
    }

    pub async fn get_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        match self
            .call(self.op.read_with(path).range(offset..offset + len))
            .await
        {
            Ok(buf) if buf.len() as u64 == len => Ok(buf.to_vec()),
            Ok(buf) => Err(Error::damaged(format!(
                "{path} in {} is truncated ({} of {len} bytes at offset {offset})",
                self.display,
                buf.len()
            ))),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Err(Error::damaged(format!(
                "{path} is missing from {}",
                self.display
            ))),
            Err(e) if e.kind() == opendal::ErrorKind::RangeNotSatisfied => {
                Err(Error::damaged(format!(
                    "{path} in {} is truncated (wanted {len} bytes at offset {offset})",
                    self.display
                )))
            }
            Err(e) => Err(e).context(|| format!("reading {path} in {}", self.display)),
        }
    }

    pub async fn exists(&self, path: &str) -> Result<bool> {
        self.call(self.op.exists(path))
            .await
            .context(|| format!("checking {path} in {}", self.display))
    }

    /// Object paths (relative to the root) under `dir/`, recursively.
    pub async fn list(&self, dir: &str) -> Result<Vec<String>> {
        let dir = format!("{}/", dir.trim_end_matches('/'));
        match self.call(self.op.list_with(&dir).recursive(true)).await {
            Ok(entries) => Ok(entries
                .into_iter()
                .filter(|e| e.metadata().is_file())
                .map(|e| e.path().to_string())
                .collect()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).context(|| format!("listing {dir} in {}", self.display)),
        }
    }

    /// Deletes an object; a missing object is not an error.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.call(self.op.delete(path))
            .await
            .context(|| format!("deleting {path} in {}", self.display))
    }

    pub async fn size(&self, path: &str) -> Result<u64> {
        match self.call(self.op.stat(path)).await {
            Ok(m) => Ok(m.content_length()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Err(Error::damaged(format!(
                "{path} is missing from {}",
                self.display
            ))),
            Err(e) => Err(e).context(|| format!("checking {path} in {}", self.display)),
        }
    }
}

/// Writes an SSH private key to a file only this user can read.
fn write_temp_key(pem: &Secret<String>) -> Result<TempKey> {
    use std::io::Write;
    let path = std::env::temp_dir().join(format!(
        "tablesafe-key-{}",
        crate::repo::crypto::hex(&rand::random::<[u8; 12]>())
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&path)
        .map_err(|e| Error::Other(format!("writing a temporary key file: {e}")))?;
    let mut text = pem.expose().trim().to_string();
    text.push('\n');
    f.write_all(text.as_bytes())
        .map_err(|e| Error::Other(format!("writing a temporary key file: {e}")))?;
    Ok(TempKey(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_checked_before_any_connection() {
        let c = Credentials::default();
        let err = |l: &str| Storage::open_with(l, &c).unwrap_err().to_string();
        assert!(err("s3://").contains("no bucket"));
        assert!(err("s3://b/p?endpoint=127.0.0.1:9000").contains("http://"));
        assert!(err("s3://b/p?bogus=1").contains("unknown parameter \"bogus\""));
        assert!(err("s3://b/p?style=weird").contains("style=path"));
        assert!(err("sftp://u:pw@h/x").contains("takes no password"));
        assert!(err("sftp://u@h").contains("needs a directory"));
        assert!(err("sftp://u@h/x?known_hosts=yes").contains("strict"));
        assert!(err("ftp://h/x").contains("unsupported"));
        let half = Credentials {
            s3_access_key_id: Some(Secret::new("id".into())),
            ..Default::default()
        };
        assert!(
            Storage::open_with("s3://b/p", &half)
                .unwrap_err()
                .to_string()
                .contains("both")
        );
    }

    #[test]
    fn percent_escapes_decode_and_bad_ones_are_errors() {
        assert_eq!(percent_decode("a%20b%2Fc%C3%A9").unwrap(), "a b/cé");
        for bad in ["%", "%2", "%zz", "50%", "%ff"] {
            assert!(percent_decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn locations_display_without_secrets() {
        let c = Credentials {
            s3_access_key_id: Some(Secret::new("AKIDSECRETID".into())),
            s3_secret_access_key: Some(Secret::new("sekrit".into())),
            ssh_private_key: None,
            only_these: false,
        };
        let s =
            Storage::open_with("s3://bkt/a/b?endpoint=http://127.0.0.1:9/&region=x", &c).unwrap();
        assert_eq!(s.kind(), Kind::S3);
        assert_eq!(s.display, "s3://bkt/a/b at http://127.0.0.1:9/");
        assert!(!format!("{s:?}").contains("sekrit"));
        let s = Storage::open_with("sftp://backup@host:2222/srv/repo%20one", &c).unwrap();
        assert_eq!(s.display, "sftp://backup@host:2222/srv/repo one");
    }
}
