//! Secrets at rest in the history database: database URLs that carry passwords and
//! repository passwords are sealed with XChaCha20-Poly1305 under a key derived from
//! `server.key` (which never enters the history database). A sealed value is
//! `hex(nonce ‖ ciphertext ‖ tag)`; the kind of secret is authenticated too, so a sealed
//! repository password cannot be passed off as a source URL.

use super::keys;
use anyhow::{Result, anyhow};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use engine::secret::Secret;
use rand::RngCore;

/// What a sealed value is; part of the authenticated data.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    SourceUrl,
    RepositoryPassword,
    /// A target's S3 keys / SSH private key, as JSON.
    TargetCredentials,
    /// A notification channel's settings (URLs, signing secret, SMTP password), as JSON.
    NotifyChannel,
}

impl Kind {
    fn aad(self) -> &'static [u8] {
        match self {
            Kind::SourceUrl => b"tablesafe source url",
            Kind::RepositoryPassword => b"tablesafe repository password",
            Kind::TargetCredentials => b"tablesafe target credentials",
            Kind::NotifyChannel => b"tablesafe notification channel",
        }
    }
}

pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl SecretBox {
    pub fn new(server_key: &Secret<[u8; keys::KEY_LEN]>) -> Self {
        let key = keys::derive(server_key, "tablesafe 2026-11 secrets at rest key");
        SecretBox {
            cipher: XChaCha20Poly1305::new(key.expose().into()),
        }
    }

    pub fn seal(&self, kind: Kind, plain: &Secret<String>) -> Result<String> {
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain.expose().as_bytes(),
                    aad: kind.aad(),
                },
            )
            .map_err(|_| anyhow!("sealing a secret failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(engine::repo::crypto::hex(&out))
    }

    pub fn open(&self, kind: Kind, sealed: &str) -> Result<Secret<String>> {
        let bytes = engine::repo::crypto::unhex(sealed)
            .filter(|b| b.len() > 24)
            .ok_or_else(|| anyhow!("a stored secret is damaged"))?;
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(&bytes[..24]),
                Payload {
                    msg: &bytes[24..],
                    aad: kind.aad(),
                },
            )
            .map_err(|_| {
                anyhow!("a stored secret cannot be opened: was server.key replaced or the database edited?")
            })?;
        Ok(Secret::new(
            String::from_utf8(plain).map_err(|_| anyhow!("a stored secret is not text"))?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_the_same_key_and_kind() {
        let b = SecretBox::new(&Secret::new([1; 32]));
        let s = b
            .seal(
                Kind::SourceUrl,
                &Secret::new("postgres://u:hunter2@h/db".into()),
            )
            .unwrap();
        assert!(!s.contains("hunter2"));
        assert_eq!(
            b.open(Kind::SourceUrl, &s).unwrap().expose(),
            "postgres://u:hunter2@h/db"
        );
        assert!(b.open(Kind::RepositoryPassword, &s).is_err());
        assert!(
            SecretBox::new(&Secret::new([2; 32]))
                .open(Kind::SourceUrl, &s)
                .is_err()
        );
        let mut damaged = s.clone().into_bytes();
        damaged[60] = if damaged[60] == b'0' { b'1' } else { b'0' };
        assert!(
            b.open(Kind::SourceUrl, std::str::from_utf8(&damaged).unwrap())
                .is_err()
        );
    }
}
