//! Starting and stopping `tablesafe serve` for a test.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_PASSWORD: &str = "correct horse battery staple";
/// The password of the users tests add with [`add_user`].
pub const USER_PASSWORD: &str = "a long enough password";

/// A running `tablesafe serve`, killed (by PID) when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    log: PathBuf,
}

pub struct Options<'a> {
    pub data_dir: &'a Path,
    pub database_url: Option<&'a str>,
    pub admin_password: Option<&'a str>,
}

impl Server {
    pub fn start(opts: Options<'_>) -> Server {
        Server::start_with_env(opts, &[])
    }

    /// [`Server::start`] with more environment variables for the server.
    pub fn start_with_env(opts: Options<'_>, env: &[(&str, &str)]) -> Server {
        let port = testkit::free_port();
        let log = opts.data_dir.with_extension(format!("{port}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tablesafe"));
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(opts.data_dir)
            .env_remove("TABLESAFE_DATABASE_URL")
            .env_remove("TABLESAFE_ADMIN_PASSWORD")
            .env_remove("TABLESAFE_LISTEN")
            .env_remove("TABLESAFE_DATA_DIR")
            .env("TABLESAFE_LOG", "info")
            // Keys for the S3 test server (moto accepts any).
            .env("AWS_ACCESS_KEY_ID", "test-key-id")
            .env("AWS_SECRET_ACCESS_KEY", "test-secret")
            .env("NO_COLOR", "1")
            // Every test server is on loopback, and operators set things up too.
            .env("TABLESAFE_OUTBOUND_ALLOW", "127.0.0.0/8")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        cmd.envs(env.iter().copied());
        if let Some(url) = opts.database_url {
            cmd.env("TABLESAFE_DATABASE_URL", url);
        }
        if let Some(pw) = opts.admin_password {
            cmd.env("TABLESAFE_ADMIN_PASSWORD", pw);
        }
        let child = cmd.spawn().expect("spawn tablesafe");
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = self.base.trim_start_matches("http://").to_string();
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("tablesafe did not start; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the server with SIGTERM and waits: a clean shutdown.
    pub fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client that does not follow redirects and keeps no cookies of its own.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Logs in through the login server function the way the hydrated form does, and
/// returns the response.
pub async fn login(server: &Server, user: &str, password: &str) -> reqwest::Response {
    client()
        .post(server.url("/api/login"))
        .header("Origin", &server.base)
        .form(&[("username", user), ("password", password)])
        .send()
        .await
        .unwrap()
}

/// The `name=value` part of the session cookie a response sets, if any.
pub fn session_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("tablesafe_session="))
        .map(|v| v.split(';').next().unwrap().to_string())
}

/// The generated admin password printed in a server log, if any.
pub fn generated_password(log: &str) -> Option<String> {
    let marker = "generated password: ";
    let start = log.find(marker)? + marker.len();
    Some(log[start..].split_whitespace().next()?.to_string())
}

/// A page's HTML without the hydration markers Leptos leaves between nodes (`<!>` and
/// `<!--…-->`, which differ between build settings), so tests can look for markup.
pub fn page_html(raw: &str) -> String {
    let mut out = raw.replace("<!>", "");
    while let Some(start) = out.find("<!--") {
        match out[start..].find("-->") {
            Some(len) => out.replace_range(start..start + len + 3, ""),
            None => break,
        }
    }
    out
}

/// Calls server functions the way the pages do.
pub struct Api<'a> {
    pub server: &'a Server,
}

/// What a call came back with.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn ok(&self) -> bool {
        self.status == 200
    }
    /// Refused for the role: 403 with `"code": "forbidden"` (`app::error`).
    pub fn forbidden(&self) -> bool {
        self.status == 403 && self.json()["code"] == "forbidden"
    }
    /// Refused for want of a session or token: 401.
    pub fn unauthenticated(&self) -> bool {
        self.status == 401 && self.json()["code"] == "unauthenticated"
    }
    /// Not found (or not visible to the caller): 404.
    pub fn not_found(&self) -> bool {
        self.status == 404 && self.json()["code"] == "not_found"
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

impl Api<'_> {
    pub async fn form(
        &self,
        cookie: Option<&str>,
        endpoint: &str,
        args: &[(&str, String)],
    ) -> Reply {
        let mut req = client()
            .post(self.server.url(&format!("/api/{endpoint}")))
            .header("Origin", &self.server.base)
            .form(args);
        if let Some(c) = cookie {
            req = req.header("Cookie", c);
        }
        let resp = req.send().await.unwrap();
        Reply {
            status: resp.status().as_u16(),
            body: resp.text().await.unwrap(),
        }
    }

    pub async fn json(&self, cookie: Option<&str>, endpoint: &str, body: Value) -> Reply {
        let mut req = client()
            .post(self.server.url(&format!("/api/{endpoint}")))
            .header("Origin", &self.server.base)
            .json(&body);
        if let Some(c) = cookie {
            req = req.header("Cookie", c);
        }
        let resp = req.send().await.unwrap();
        Reply {
            status: resp.status().as_u16(),
            body: resp.text().await.unwrap(),
        }
    }

    /// Runs a policy now and waits for the job, which must succeed; returns
    /// `[job, log]` as `jobs/get` does.
    pub async fn run_policy(&self, cookie: &str, policy: i64) -> Value {
        let r = self
            .form(Some(cookie), "policies/run", &[("id", policy.to_string())])
            .await;
        let job = r.json().as_i64().unwrap_or_else(|| panic!("{r:?}"));
        let done = self.wait_job(cookie, job).await;
        assert_eq!(done[0]["status"], "succeeded", "{done}");
        done
    }

    pub async fn wait_job(&self, cookie: &str, id: i64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self
                .form(
                    Some(cookie),
                    "jobs/get",
                    &[("id", id.to_string()), ("after_log", "0".into())],
                )
                .await;
            assert!(r.ok(), "{r:?}");
            let job = r.json()[0].clone();
            if ["succeeded", "failed", "cancelled"].contains(&job["status"].as_str().unwrap()) {
                return r.json();
            }
            assert!(Instant::now() < deadline, "job {id} did not finish: {job}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub async fn cookie(server: &Server, user: &str, password: &str) -> String {
    let resp = login(server, user, password).await;
    session_cookie(&resp).unwrap_or_else(|| panic!("{user} could not log in"))
}

pub fn sqlite(path: &Path, sql: &str) {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()"])
        .arg(path)
        .arg(sql)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A source for `db`, a target at `repo` and a policy over them, all named `name`
/// (`s-NAME`, `t-NAME`, `NAME`), through the server functions the pages use. Returns
/// (source, target, and the policy call's reply).
pub async fn add_policy(
    api: &Api<'_>,
    admin: &str,
    name: &str,
    db: &Path,
    repo: &Path,
    schedule: &str,
    timezone: &str,
) -> (i64, i64, Reply) {
    let url = format!("sqlite://{}", db.display());
    add_policy_for(api, admin, name, &url, repo, schedule, timezone).await
}

/// [`add_policy`] for a source given by its URL.
pub async fn add_policy_for(
    api: &Api<'_>,
    admin: &str,
    name: &str,
    source_url: &str,
    repo: &Path,
    schedule: &str,
    timezone: &str,
) -> (i64, i64, Reply) {
    let source = api
        .form(
            Some(admin),
            "sources/add",
            &[
                ("name", format!("s-{name}")),
                ("url", source_url.to_string()),
            ],
        )
        .await;
    assert!(source.ok(), "{source:?}");
    let target = api
        .form(
            Some(admin),
            "targets/add",
            &[
                ("name", format!("t-{name}")),
                ("location", repo.display().to_string()),
                ("password", "repository password".into()),
            ],
        )
        .await;
    assert!(target.ok(), "{target:?}");
    let (source, target) = (
        source.json().as_i64().unwrap(),
        target.json().as_i64().unwrap(),
    );
    let policy = api
        .form(
            Some(admin),
            "policies/create",
            &[
                ("name", name.to_string()),
                ("source_id", source.to_string()),
                ("target_id", target.to_string()),
                ("include", String::new()),
                ("exclude", String::new()),
                ("columns", String::new()),
                ("schedule", schedule.into()),
                ("timezone", timezone.into()),
                ("enabled", "on".into()),
            ],
        )
        .await;
    (source, target, policy)
}

/// Adds a user with [`USER_PASSWORD`] through the console's server function; their id.
pub async fn add_user(api: &Api<'_>, admin: &str, name: &str, role: &str) -> i64 {
    let r = api
        .form(
            Some(admin),
            "users/create",
            &[
                ("username", name.into()),
                ("role", role.into()),
                ("password", USER_PASSWORD.into()),
            ],
        )
        .await;
    r.json().as_i64().unwrap_or_else(|| panic!("{r:?}"))
}

/// The id of the newest snapshot in the history.
pub async fn newest_snapshot(api: &Api<'_>, admin: &str) -> i64 {
    let r = api
        .json(
            Some(admin),
            "snapshots/list",
            serde_json::json!({"policy_id": 0, "source_id": 0, "before": null}),
        )
        .await;
    r.json()[0]["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no snapshot: {r:?}"))
}

/// A server with a SQLite history in `dir`/data (made if missing), the admin password
/// set, and `env` on top.
pub fn start_in(dir: &Path, env: &[(&str, &str)]) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    Server::start_with_env(
        Options {
            data_dir: &dir.join("data"),
            database_url: None,
            admin_password: Some(ADMIN_PASSWORD),
        },
        env,
    )
}

/// A response header's value, empty when absent.
pub fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// `tablesafe audit verify` for the server in `data` (stopped or running); (succeeded,
/// what it printed). The S3 test server's credentials are set for heads kept in S3
/// targets.
pub fn audit_verify(data: &Path, database_url: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tablesafe"));
    cmd.args(["audit", "verify", "--data-dir"])
        .arg(data)
        .env_remove("TABLESAFE_DATABASE_URL")
        .env("AWS_ACCESS_KEY_ID", "test-key-id")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret");
    if let Some(url) = database_url {
        cmd.env("TABLESAFE_DATABASE_URL", url);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs `cmd` (a `tablesafe serve` expected to refuse to start) to its end, at most 60 s:
/// fails if it exits successfully or is still running then. What it printed.
pub fn refused(mut cmd: Command) -> String {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(out.reopen().unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "still running after 60 s: it did not refuse to start\n{}",
                std::fs::read_to_string(out.path()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(out.path()).unwrap();
    assert!(!status.success(), "it exited successfully:\n{text}");
    text
}
