//! Real remote targets on loopback: an S3-compatible server (moto's standalone server,
//! from PyPI) and OpenSSH's sshd serving SFTP, plus [`Cut`], a TCP relay whose link can
//! be cut and restored to make a target go away mid-operation.

use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Waits until `port` answers, and makes sure it is `child` answering: the port was
/// chosen free and bound later, so another test's server may have taken it meanwhile
/// (then `child` fails to bind and exits, and the caller starts again on another port).
pub(crate) fn wait_for_port(port: u16, child: &mut Child, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            std::thread::sleep(Duration::from_millis(300));
            if let Some(status) = child.try_wait()? {
                bail!("{what} exited with {status}: port {port} was taken by another process");
            }
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited with {status} before listening");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{what} did not listen on port {port} within 30 s")
}

/// moto's S3 server on a free loopback port; killed on drop. It accepts any keys.
pub struct S3Server {
    child: Child,
    port: u16,
}

/// Starts a server up to three times: a chosen port can be taken before it binds.
pub(crate) fn retry_start<T>(mut start: impl FnMut() -> Result<T>) -> Result<T> {
    let mut last = None;
    for _ in 0..3 {
        match start() {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("tried"))
}

impl S3Server {
    pub fn start() -> Result<Self> {
        retry_start(Self::start_once)
    }

    fn start_once() -> Result<Self> {
        let port = crate::free_port();
        let mut child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting moto's S3 server (pip install 'moto[server]')")?;
        if let Err(e) = wait_for_port(port, &mut child, "moto_server") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(S3Server { child, port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (moto takes an unsigned PUT).
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        write!(
            s,
            "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        if !reply.starts_with("HTTP/1.1 200") {
            bail!(
                "creating bucket {name}: {}",
                reply.lines().next().unwrap_or("")
            );
        }
        Ok(())
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// OpenSSH's sshd on a free loopback port, allowing only the current user with a fresh
/// key pair, serving SFTP; killed on drop with its temp dir.
pub struct SftpServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    user: String,
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl SftpServer {
    pub fn start() -> Result<Self> {
        retry_start(Self::start_once)
    }

    fn start_once() -> Result<Self> {
        let sshd = ["/usr/sbin/sshd", "/usr/local/sbin/sshd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .context("sshd is not installed (apt-get install openssh-server)")?;
        let dir = tempfile::Builder::new()
            .prefix("tablesafe-sshd-")
            .tempdir()?;
        let d = dir.path();
        for key in ["host", "client"] {
            run(Command::new("ssh-keygen")
                .args([
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "tablesafe-test",
                    "-f",
                ])
                .arg(d.join(key)))?;
        }
        std::fs::copy(d.join("client.pub"), d.join("authorized_keys"))?;
        let user = String::from_utf8(Command::new("id").arg("-un").output()?.stdout)?
            .trim()
            .to_string();
        if crate::is_root() {
            // sshd's privilege-separation directory.
            std::fs::create_dir_all("/run/sshd")?;
        }
        let port = crate::free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nPidFile {pid}\n\
             AuthorizedKeysFile {auth}\nStrictModes no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nUsePAM no\nAllowUsers {user}\n\
             Subsystem sftp internal-sftp\nMaxStartups 100\nMaxSessions 100\n",
            host = d.join("host").display(),
            pid = d.join("sshd.pid").display(),
            auth = d.join("authorized_keys").display(),
        );
        std::fs::write(d.join("sshd_config"), config)?;
        let log = std::fs::File::create(d.join("sshd.log"))?;
        let mut child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting sshd")?;
        if let Err(e) = wait_for_port(port, &mut child, "sshd") {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default();
            bail!("{e}: {log}");
        }
        Ok(SftpServer {
            child,
            port,
            dir,
            user,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// The client's private key file (OpenSSH format).
    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("client")
    }

    /// A directory the tests may use as an SFTP root.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for SftpServer {
    fn drop(&mut self) {
        // sshd's per-connection processes outlive the listener: end them too, which
        // also ends the clients' ssh master processes connected to them.
        let doomed = descendants(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in doomed {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// Every process below `root`, from /proc.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            // /proc/PID/stat: "pid (comm) state ppid …"; comm may contain spaces.
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, ppid) in &parent_of {
            if ppid == p && !out.contains(&pid) {
                out.push(pid);
                frontier.push(pid);
            }
        }
    }
    out
}

/// A TCP relay from a free loopback port to `127.0.0.1:target`, whose link can be cut
/// (open connections reset, new ones refused) and restored: a target that goes away
/// mid-backup.
pub struct Cut {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Cut {
    pub fn start(target: u16) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let up = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        {
            let (up, stop, conns) = (up.clone(), stop.clone(), conns.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            if !up.load(Ordering::SeqCst) {
                                drop(client);
                                continue;
                            }
                            let _ = client.set_nonblocking(false);
                            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                                continue;
                            };
                            let mut list = conns.lock().unwrap();
                            for (a, b) in [(&client, &server), (&server, &client)] {
                                let (Ok(mut from), Ok(mut to)) = (a.try_clone(), b.try_clone())
                                else {
                                    continue;
                                };
                                std::thread::spawn(move || {
                                    let _ = std::io::copy(&mut from, &mut to);
                                    let _ = to.shutdown(std::net::Shutdown::Both);
                                });
                            }
                            list.push(client);
                            list.push(server);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            });
        }
        Ok(Cut {
            port,
            up,
            conns,
            stop,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Resets every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}

/// An HTTP relay in front of an S3 server that fails a share of requests: half of the
/// failures answer 503 SlowDown, the other half stall for `stall` and then drop the
/// connection without an answer (a target that times out). Seeded, so a run can be
/// repeated; killed on drop.
pub struct Flaky {
    child: Child,
    port: u16,
    stats: tempfile::NamedTempFile,
}

const FLAKY_PY: &str = r#"
import http.client, http.server, os, random, sys, time, threading
target, share, stall, seed, stats = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
rng = random.Random(seed)
lock = threading.Lock()
counts = {"forwarded": 0, "503": 0, "stalled": 0}
def note(kind):
    # Replaced whole, never truncated in place: a reader (the test, possibly while the
    # last forwarded request is still being counted) sees the old counts or the new.
    with lock:
        counts[kind] += 1
        with open(stats + ".tmp", "w") as f:
            f.write(" ".join(f"{k}={v}" for k, v in counts.items()))
        os.replace(stats + ".tmp", stats)
class Relay(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def handle_one(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        with lock:
            r = rng.random()
        if r < share / 2:
            note("503")
            msg = b"<?xml version='1.0'?><Error><Code>SlowDown</Code><Message>injected</Message></Error>"
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)
            return
        if r < share:
            note("stalled")
            time.sleep(stall)
            self.close_connection = True
            return
        conn = http.client.HTTPConnection("127.0.0.1", target, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
        conn.request(self.command, self.path, body=body if n or self.command in ("PUT", "POST") else None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        head = self.command == "HEAD"
        for k, v in resp.getheaders():
            if k.lower() in ("transfer-encoding", "connection", "server", "date"):
                continue
            if k.lower() == "content-length" and not head:
                continue
            self.send_header(k, v)
        if not head:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()
        note("forwarded")
    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_one
# Port 0: the kernel picks a free port, told to the caller on stdout (choosing one
# first and binding it later could race with another test's server).
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Relay)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

impl Flaky {
    pub fn start(target: u16, share: f64, stall: Duration, seed: u64) -> Result<Self> {
        let stats = tempfile::NamedTempFile::new()?;
        let mut child = Command::new("python3")
            .args([
                "-c",
                FLAKY_PY,
                &target.to_string(),
                &share.to_string(),
                &stall.as_secs_f64().to_string(),
                &seed.to_string(),
                &stats.path().display().to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the flaky relay")?;
        let mut line = String::new();
        let read = std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("piped")),
            &mut line,
        );
        let port = match read.ok().and_then(|_| line.trim().parse::<u16>().ok()) {
            Some(p) => p,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the flaky relay did not start (python3 with http.server is needed)");
            }
        };
        Ok(Flaky { child, port, stats })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Requests forwarded, answered 503, and stalled so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        let text = std::fs::read_to_string(self.stats.path()).unwrap_or_default();
        let get = |k: &str| {
            text.split_whitespace()
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse().ok())
                .unwrap_or(0)
        };
        (get("forwarded"), get("503"), get("stalled"))
    }
}

impl Drop for Flaky {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
