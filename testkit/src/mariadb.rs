//! A MariaDB server for tests: `mariadb-install-db` into a temporary directory and
//! `mariadbd` on a free loopback port, stopped (by its PID) and deleted on drop.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Mariadb {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
    /// TCP connections must use TLS (`require_secure_transport`).
    tls: bool,
}

/// The account tests connect as (all privileges, from 127.0.0.1 only).
pub const USER: &str = "tablesafe";
pub const PASSWORD: &str = "maria test password";

impl Mariadb {
    /// Installs and starts a server; takes a few seconds.
    pub fn start() -> Result<Self> {
        Self::start_with(None)
    }

    /// A server with `ca`'s certificate for `localhost` that refuses unencrypted TCP
    /// connections (`require_secure_transport=ON`). The user `certuser` (created here,
    /// no password) must present a client certificate of `ca` with subject `CN=certuser`.
    pub fn start_tls(ca: &crate::tls::TestCa) -> Result<Self> {
        Self::start_with(Some(ca))
    }

    fn start_with(ca: Option<&crate::tls::TestCa>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tablesafe-mariadb-")
            .tempdir()?;
        let data = dir.path().join("data");
        // Its own temporary directory: with the shared /tmp, one server's bootstrap
        // failed once in the full suite ("Could not remove temporary table
        // '/tmp/#sql-temptable-…'") while other MariaDB tests started theirs.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp)?;
        let out = Command::new("mariadb-install-db")
            .env("TMPDIR", &tmp)
            .args([
                "--no-defaults",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .arg(format!("--datadir={}", data.display()))
            .args(root_user())
            .stdin(Stdio::null())
            .output()
            .context("mariadb-install-db is not installed (apt-get install mariadb-server)")?;
        if !out.status.success() {
            bail!(
                "mariadb-install-db failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let port = crate::free_port();
        let socket = dir.path().join("sock");
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let tls_args = match ca {
            Some(ca) => vec![
                format!("--ssl-ca={}", ca.ca_cert().display()),
                format!("--ssl-cert={}", ca.server_cert().display()),
                format!("--ssl-key={}", ca.server_key().display()),
                "--require-secure-transport=ON".to_string(),
            ],
            None => Vec::new(),
        };
        let child = Command::new("mariadbd")
            .env("TMPDIR", &tmp)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--port={port}"))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-log-bin",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
                "--innodb-flush-log-at-trx-commit=0",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci",
            ])
            .args(root_user())
            .args(&tls_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting mariadbd")?;
        let mut db = Mariadb {
            dir,
            child,
            port,
            tls: ca.is_some(),
        };
        let cert_user = if ca.is_some() {
            "CREATE USER IF NOT EXISTS 'certuser'@'127.0.0.1' REQUIRE SUBJECT '/CN=certuser'; \
             GRANT ALL ON *.* TO 'certuser'@'127.0.0.1';"
        } else {
            ""
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = db.root_sql(&format!(
                "CREATE USER IF NOT EXISTS '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; \
                 GRANT ALL ON *.* TO '{USER}'@'127.0.0.1' WITH GRANT OPTION; {cert_user}"
            ));
            if ok.is_ok() {
                break;
            }
            if let Ok(Some(status)) = db.child.try_wait() {
                bail!("mariadbd exited ({status}): {}", db.log());
            }
            if Instant::now() > deadline {
                bail!("mariadbd did not start: {}", db.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(db)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Runs SQL as root over the socket.
    fn root_sql(&self, sql: &str) -> Result<String> {
        let out = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!(
                "--socket={}",
                self.dir.path().join("sock").display()
            ))
            .args(["-uroot", "--batch", "--skip-column-names", "-e", sql])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mysql://tablesafe:…@127.0.0.1:PORT/DB`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "mysql://{USER}:{}@127.0.0.1:{}/{database}",
            PASSWORD.replace(' ', "%20"),
            self.port
        )
    }

    /// Creates a database (utf8mb4) and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String> {
        self.root_sql(&format!(
            "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
        ))?;
        Ok(self.url(name))
    }

    /// Runs SQL in `database` with the `mariadb` client; returns its tab-separated output.
    pub fn sql(&self, database: &str, sql: &str) -> Result<String> {
        let out = Command::new("mariadb")
            .arg("--no-defaults")
            .args(["-h127.0.0.1", "-u", USER])
            .arg(format!("-P{}", self.port))
            .arg(format!("-p{PASSWORD}"))
            .args(self.client_tls())
            .args([
                "--batch",
                "--skip-column-names",
                "--binary-mode",
                database,
                "-e",
                sql,
            ])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `database` as `mysqldump` writes it (without comments and dates, rows in key
    /// order, bytes in hex, times in UTC), leaving out the tables and views `ignore`s.
    pub fn dump(&self, database: &str, ignore: &[&str]) -> Result<String> {
        let mut args: Vec<String> = [
            "--hex-blob",
            "--order-by-primary",
            "--skip-extended-insert",
            "--tz-utc",
            "--single-transaction",
            database,
        ]
        .map(String::from)
        .into();
        args.extend(
            ignore
                .iter()
                .map(|t| format!("--ignore-table={database}.{t}")),
        );
        self.mysqldump(&args)
    }

    /// `database`'s schema as `mysqldump --no-data --routines --triggers --events`
    /// writes it (without comments and dates).
    pub fn dump_schema(&self, database: &str) -> Result<String> {
        self.mysqldump(
            &[
                "--no-data",
                "--routines",
                "--triggers",
                "--events",
                database,
            ]
            .map(String::from),
        )
    }

    /// `mysqldump` as the test account, without comments and dump dates.
    fn mysqldump(&self, args: &[String]) -> Result<String> {
        let out = Command::new("mysqldump")
            .arg("--no-defaults")
            .args(["-h127.0.0.1", "-u", USER])
            .arg(format!("-P{}", self.port))
            .arg(format!("-p{PASSWORD}"))
            .args(self.client_tls())
            .args(["--skip-comments", "--skip-dump-date"])
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("mysqldump: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// What the `mariadb` and `mysqldump` clients need to connect over TCP.
    fn client_tls(&self) -> &'static [&'static str] {
        if self.tls { &["--ssl"] } else { &[] }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// mariadbd refuses to run as root unless told to.
fn root_user() -> Vec<&'static str> {
    if crate::is_root() {
        vec!["--user=root"]
    } else {
        Vec::new()
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
