//! The server key: 32 random bytes in `<data dir>/server.key` (mode 0600), created on
//! first start. Session tokens are signed with a key derived from it; secrets stored in
//! the history database (database passwords, repository passwords) will be encrypted
//! under another key derived from it. It never lives in the history database, so a copy
//! of that database alone reveals no secret. Workers sharing one PostgreSQL history
//! database must share this file (`--key-file` / `TABLESAFE_KEY_FILE`).

use anyhow::{Context, Result, bail};
use engine::secret::Secret;
use std::io::Write;
use std::path::Path;

pub const KEY_LEN: usize = 32;

/// Reads the key at `path`, or creates it (atomically, never overwriting) if absent.
pub fn load_or_create(path: &Path) -> Result<Secret<[u8; KEY_LEN]>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(text.trim())
            .with_context(|| format!("server key file {} is damaged", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path),
        Err(e) => Err(e).with_context(|| format!("cannot read server key file {}", path.display())),
    }
}

fn parse(hex: &str) -> Result<Secret<[u8; KEY_LEN]>> {
    if hex.len() != KEY_LEN * 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("expected {} hex digits", KEY_LEN * 2);
    }
    let mut key = [0u8; KEY_LEN];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
    }
    Ok(Secret::new(key))
}

fn create(path: &Path) -> Result<Secret<[u8; KEY_LEN]>> {
    use rand::RngCore;
    let mut key = [0u8; KEY_LEN];
    rand::rngs::OsRng.fill_bytes(&mut key);
    let hex = engine::repo::crypto::hex(&key);

    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir)?;
    tmp.1.write_all(hex.as_bytes())?;
    tmp.1.write_all(b"\n")?;
    tmp.1.sync_all()?;
    // hard_link fails if the target exists: two processes starting at once cannot both
    // win, and the loser reads the winner's key.
    match std::fs::hard_link(&tmp.0, path) {
        Ok(()) => {
            let _ = std::fs::remove_file(&tmp.0);
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            tracing::info!(path = %path.display(), "created a new server key");
            Ok(Secret::new(key))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(&tmp.0);
            load_or_create(path)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp.0);
            Err(e).with_context(|| format!("cannot create server key file {}", path.display()))
        }
    }
}

fn tempfile_in(dir: &Path) -> Result<(std::path::PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = dir.join(format!(".server.key.{}.tmp", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&name)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    Ok((name, file))
}

/// A 32-byte key for one purpose, derived from the server key (BLAKE3 derive_key), so
/// that no two uses share a key.
pub fn derive(server_key: &Secret<[u8; KEY_LEN]>, purpose: &str) -> Secret<[u8; 32]> {
    Secret::new(blake3::derive_key(purpose, server_key.expose()))
}

/// A public name for a server key: 16 hex digits derived one way from it, recorded in
/// the history database (`ssr::key_guard`) and shown to operators so they can tell two
/// keys apart. It reveals nothing of the key.
pub fn fingerprint(server_key: &Secret<[u8; KEY_LEN]>) -> String {
    let d = derive(server_key, "tablesafe 2026-12 server key fingerprint");
    engine::repo::crypto::hex(&d.expose()[..8])
}

/// The keys of the audit log (see `ssr::audit`): one makes each entry's chain hash a
/// MAC (BLAKE3 in keyed mode), the other signs the chain's head when it is written
/// outside the history database. Whoever can write the history database but does not
/// hold the server key can neither re-hash the chain nor forge a head.
pub struct AuditKeys {
    pub entry: Secret<[u8; 32]>,
    pub head: Secret<[u8; 32]>,
}

impl AuditKeys {
    pub fn new(server_key: &Secret<[u8; KEY_LEN]>) -> Self {
        Self {
            entry: derive(server_key, "tablesafe 2026-12 audit chain entry MAC key"),
            head: derive(server_key, "tablesafe 2026-12 audit chain head signing key"),
        }
    }
}

/// Reads an existing server key; unlike [`load_or_create`], never makes one (a command
/// run beside the server must use the server's key, not a new one).
pub fn load_existing(path: &Path) -> Result<Secret<[u8; KEY_LEN]>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(text.trim())
            .with_context(|| format!("server key file {} is damaged", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no server key at {}: pass the server's --key-file (TABLESAFE_KEY_FILE), or \
             --data-dir, as the server is started with",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot read server key file {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_once_then_reads_the_same_key_with_private_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.key");
        let first = load_or_create(&path).unwrap();
        let second = load_or_create(&path).unwrap();
        assert_eq!(first.expose(), second.expose());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let other = tempfile::tempdir().unwrap();
        let third = load_or_create(&other.path().join("server.key")).unwrap();
        assert_ne!(first.expose(), third.expose(), "keys must be random");
    }

    #[test]
    fn a_damaged_key_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.key");
        std::fs::write(&path, "not hex").unwrap();
        let err = load_or_create(&path).unwrap_err();
        assert!(format!("{err:#}").contains("damaged"), "{err:#}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "not hex",
            "must not overwrite"
        );
    }
}
