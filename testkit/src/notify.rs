//! Real receivers of notifications on loopback: an SMTP server (aiosmtpd from PyPI,
//! storing what it receives as a Maildir) and an HTTP receiver for webhooks that records
//! every request and can be told to fail or to stall.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// aiosmtpd on a free loopback port, delivering into a Maildir; killed on drop.
pub struct SmtpSink {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    pub fn start() -> Result<Self> {
        crate::remote::retry_start(Self::start_once)
    }

    fn start_once() -> Result<Self> {
        let port = crate::free_port();
        let dir = tempfile::tempdir()?;
        let maildir = dir.path().join("mail");
        let mut child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting aiosmtpd (pip install aiosmtpd)")?;
        if let Err(e) = crate::remote::wait_for_port(port, &mut child, "aiosmtpd") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(SmtpSink { child, port, dir })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every message received so far, as its raw text (headers and body), oldest first.
    pub fn messages(&self) -> Vec<String> {
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(self.dir.path().join("mail").join(sub)) {
                for e in rd.flatten() {
                    let modified = e.metadata().and_then(|m| m.modified()).ok();
                    files.push((modified, e.path()));
                }
            }
        }
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, p)| std::fs::read_to_string(p).ok())
            .collect()
    }

    /// Waits until a message containing `needle` has arrived; returns it.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.messages().into_iter().find(|m| m.contains(needle)) {
                return Ok(m);
            }
            if Instant::now() > deadline {
                bail!(
                    "no mail containing {needle:?} within {timeout:?}; received: {:?}",
                    self.messages()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request the webhook receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: String,
    /// The status it answered.
    pub status: u16,
}

/// An HTTP/1.1 receiver on a free loopback port that records every request. It answers
/// `status()` (200 by default; set 503 to play a receiver that is down) after
/// `stall()` (none by default; set it longer than the sender's timeout to play a
/// receiver that hangs). Stops on drop.
pub struct WebhookReceiver {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    stall_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl WebhookReceiver {
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let stall_ms = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (received, status, stall_ms, stop) = (
                received.clone(),
                status.clone(),
                stall_ms.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (received, status, stall_ms) =
                                (received.clone(), status.clone(), stall_ms.clone());
                            std::thread::spawn(move || {
                                let _ = serve(stream, &received, &status, &stall_ms);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            });
        }
        Ok(WebhookReceiver {
            port,
            received,
            status,
            stall_ms,
            stop,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    pub fn set_stall(&self, stall: Duration) {
        self.stall_ms
            .store(stall.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until a request with header `x-tablesafe-event: event` was answered 2xx.
    pub fn wait_for_event(&self, event: &str, timeout: Duration) -> Result<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.received().into_iter().find(|r| {
                r.headers.get("x-tablesafe-event").map(String::as_str) == Some(event)
                    && (200..300).contains(&r.status)
            }) {
                return Ok(r);
            }
            if Instant::now() > deadline {
                let got: Vec<_> = self
                    .received()
                    .iter()
                    .map(|r| (r.headers.get("x-tablesafe-event").cloned(), r.status))
                    .collect();
                bail!("no {event} within {timeout:?}; received {got:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    stream: std::net::TcpStream,
    received: &Mutex<Vec<Received>>,
    status: &AtomicU16,
    stall_ms: &AtomicU64,
) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let stall = stall_ms.load(Ordering::Relaxed);
    if stall > 0 {
        std::thread::sleep(Duration::from_millis(stall));
    }
    let code = status.load(Ordering::Relaxed);
    received
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Received {
            method,
            path,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            status: code,
        });
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    out.flush()?;
    Ok(())
}
