//! Real services for tests: no mocks where the real thing runs on this machine.
//!
//! * [`Postgres`] starts a private PostgreSQL server (initdb on a temp dir, a free
//!   loopback port, `fsync=off`, `wal_level=logical`) and stops it when dropped.
//! * [`free_port`] finds a free loopback port.
//! * [`remote`]: an S3-compatible server, an SFTP server and a cuttable TCP relay.
//! * [`workload`]: writers that keep cross-table invariants, with an exact model of
//!   every committed state, to check that a restore is a state that existed.
//!
//! When the tests run as root (CI containers), initdb and the server run as the
//! `postgres` user through `runuser`, because PostgreSQL refuses to run as root.

pub mod mariadb;
pub mod notify;
pub mod remote;
pub mod tls;
pub mod workload;

use anyhow::{Context, Result, bail};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released, so another process could take it
/// first; good enough for tests, which retry nothing on this).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Directory holding `initdb` and `pg_ctl`: `$PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin`, else whatever is on `PATH`.
pub fn pg_bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

pub(crate) fn is_root() -> bool {
    // `id -u` rather than libc, to keep `unsafe_code = "forbid"`.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A running PostgreSQL server owned by the test; stopped and deleted on drop.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres_user: bool,
    /// The server options it was started with ([`Postgres::start_again`]).
    opts: String,
}

impl Postgres {
    /// initdb + start. Takes about a second.
    pub fn start() -> Result<Self> {
        Self::start_with(None)
    }

    /// A server that accepts TCP connections only over TLS (`hostssl` lines alone in
    /// `pg_hba.conf`), with `ca`'s server certificate for `localhost`. The user
    /// `certuser` (created here) logs in with a client certificate of `ca` alone
    /// (`cert` authentication); `postgres` is trusted once the connection is encrypted.
    pub fn start_tls(ca: &tls::TestCa) -> Result<Self> {
        Self::start_with(Some(ca))
    }

    fn start_with(ca: Option<&tls::TestCa>) -> Result<Self> {
        let bin =
            pg_bin_dir().context("PostgreSQL is not installed (no initdb found); set PG_BIN")?;
        let as_postgres_user = is_root();
        let dir = tempfile::Builder::new().prefix("tablesafe-pg-").tempdir()?;
        if as_postgres_user {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()?;
            if !status.success() {
                bail!("chown of {} to postgres failed", dir.path().display());
            }
        }
        let data = dir.path().join("data");
        let mut pg = Self {
            dir,
            bin,
            port: free_port(),
            as_postgres_user,
            opts: String::new(),
        };
        pg.run(
            "initdb",
            &[
                "-D",
                path_str(&data)?,
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
        )
        .context("initdb failed")?;
        let mut opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
             -c wal_level=logical -c max_connections=100",
            pg.port,
            path_str(pg.dir.path())?
        );
        if let Some(ca) = ca {
            opts.push_str(&pg.install_tls(ca, &data)?);
        }
        pg.opts = opts;
        pg.pg_ctl_start()?;
        if ca.is_some() {
            pg.psql("postgres", "CREATE ROLE certuser LOGIN SUPERUSER")?;
        }
        Ok(pg)
    }

    fn pg_ctl_start(&self) -> Result<()> {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&data)?,
                "-l",
                path_str(&log)?,
                "-o",
                &self.opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .with_context(|| {
            format!(
                "pg_ctl start failed; server log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
    }

    /// Stops the server as a restart or a switchover looks to its clients: every
    /// connection is cut (`-m fast`; not `immediate`, which with this server's
    /// `synchronous_commit=off` may lose the last commits), and nothing answers on its
    /// port until [`Postgres::start_again`].
    pub fn stop(&self) -> Result<()> {
        let data = self.dir.path().join("data");
        self.run(
            "pg_ctl",
            &["-D", path_str(&data)?, "-m", "fast", "-w", "stop"],
        )
        .context("pg_ctl stop failed")
    }

    /// Starts a server stopped by [`Postgres::stop`] again, on the same port with the
    /// same data (after crash recovery).
    pub fn start_again(&self) -> Result<()> {
        self.pg_ctl_start()
    }

    /// Copies `ca`'s files into the data directory (owned by the server's user, the key
    /// private to it, as PostgreSQL demands), writes a hostssl-only `pg_hba.conf`, and
    /// returns the server options that turn TLS on.
    fn install_tls(&self, ca: &tls::TestCa, data: &Path) -> Result<String> {
        for (from, to) in [
            (ca.server_cert(), "server.crt"),
            (ca.server_key(), "server.key"),
            (ca.ca_cert(), "root.crt"),
        ] {
            let dest = data.join(to);
            std::fs::copy(&from, &dest)?;
            std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            if self.as_postgres_user {
                let ok = Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&dest)
                    .status()?
                    .success();
                if !ok {
                    bail!("chown of {} to postgres failed", dest.display());
                }
            }
        }
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             local replication all trust\n\
             hostssl all certuser 127.0.0.1/32 cert\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostssl replication all 127.0.0.1/32 trust\n",
        )?;
        Ok(
            " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key \
             -c ssl_ca_file=root.crt"
                .to_string(),
        )
    }

    /// Runs SQL as `postgres` over the server's Unix socket (which needs no TLS).
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                path_str(self.dir.path())?,
                "-p",
                &self.port.to_string(),
            ])
            .args([
                "-U",
                "postgres",
                "-d",
                database,
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(["-c", sql])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<()> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd.args(args).stdin(Stdio::null()).output()?;
        if !out.status.success() {
            bail!(
                "{tool} exited with {}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a database and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args([
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                &format!("CREATE DATABASE \"{name}\""),
            ])
            .output()?;
        if !out.status.success() {
            bail!(
                "CREATE DATABASE {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(self.url(name))
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        if let Some(data) = data.to_str() {
            let _ = self.run("pg_ctl", &["-D", data, "-m", "immediate", "-w", "stop"]);
        }
        // Give the postmaster a moment to release the directory before TempDir removes it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while data.join("postmaster.pid").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("non-UTF-8 temp path")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_a_server_that_accepts_connections_and_stops_it() {
        let pg = Postgres::start().expect("start postgres");
        let url = pg.create_database("probe").unwrap();
        assert!(url.ends_with("/probe"));
        let port = pg.port();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        drop(pg);
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "server still listening after drop"
        );
    }
}
