//! A certificate authority of the test's own, made with the `openssl` command: a CA, a
//! server certificate for `localhost` signed by it, and client certificates on request,
//! for PostgreSQL and MariaDB servers that only accept encrypted connections.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The name the server certificate is valid for (and the only one).
pub const SERVER_NAME: &str = "localhost";

pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    /// A new CA (EC P-256) with a server certificate for [`SERVER_NAME`]; `name` tells
    /// two CAs apart in their subjects.
    pub fn new(name: &str) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("tablesafe-ca-").tempdir()?;
        let ca = TestCa { dir };
        ca.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "3650",
            "-subj",
            &format!("/CN=tablesafe test CA {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])?;
        ca.issue(
            "server",
            SERVER_NAME,
            &format!("subjectAltName=DNS:{SERVER_NAME}\nextendedKeyUsage=serverAuth\n"),
        )?;
        Ok(ca)
    }

    /// Issues `<stem>.crt`/`<stem>.key` for subject `CN=cn` with the extensions given.
    fn issue(&self, stem: &str, cn: &str, extensions: &str) -> Result<()> {
        let ext = self.dir.path().join(format!("{stem}.ext"));
        std::fs::write(
            &ext,
            format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{extensions}"),
        )?;
        let (key, csr, crt) = (
            format!("{stem}.key"),
            format!("{stem}.csr"),
            format!("{stem}.crt"),
        );
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={cn}"),
        ])?;
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "3650",
            "-extfile",
            path_str(&ext)?,
        ])
    }

    /// A client certificate and key for the database user `user` (subject `CN=user`).
    pub fn client(&self, user: &str) -> Result<(PathBuf, PathBuf)> {
        let stem = format!("client-{user}");
        self.issue(&stem, user, "extendedKeyUsage=clientAuth\n")?;
        Ok((
            self.dir.path().join(format!("{stem}.crt")),
            self.dir.path().join(format!("{stem}.key")),
        ))
    }

    /// The CA's certificate (what clients trust with `sslrootcert` / `ssl-ca`).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    fn openssl(&self, args: &[&str]) -> Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .context("the openssl command is not installed (apt-get install openssl)")?;
        if !out.status.success() {
            bail!(
                "openssl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

/// `path` as a URL query value (percent-encoded where a URL needs it).
pub fn url_path(path: &Path) -> String {
    let mut out = String::new();
    for b in path.to_str().expect("UTF-8 temp path").bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("non-UTF-8 temp path")
}
