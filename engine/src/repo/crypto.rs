//! Keys and authenticated encryption.
//!
//! A repository has one random 32-byte master secret. From it (BLAKE3 derive_key) come
//! the data key (XChaCha20-Poly1305 for every blob, index and snapshot) and the id key
//! (keyed BLAKE3 for chunk ids). The master secret is stored only wrapped: encrypted
//! under a key derived from a password with Argon2id, in `keys/<id>`.

use crate::secret::Secret;
use crate::{Error, Result};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};

pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;

/// The keys of an open repository. `None` data key = unencrypted repository.
#[derive(Clone)]
pub struct Keys {
    cipher: Option<XChaCha20Poly1305>,
    id_key: [u8; 32],
}

impl Keys {
    pub fn from_master(master: &Secret<[u8; 32]>, encrypted: bool) -> Self {
        let data = blake3::derive_key("tablesafe repository v1 data key", master.expose());
        let id_key = blake3::derive_key("tablesafe repository v1 chunk id key", master.expose());
        Keys {
            cipher: encrypted.then(|| XChaCha20Poly1305::new(&data.into())),
            id_key,
        }
    }

    /// The id of a chunk: keyed BLAKE3 of its plaintext.
    pub fn chunk_id(&self, plaintext: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.id_key, plaintext).as_bytes()
    }

    pub fn is_encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    /// `nonce ‖ ciphertext+tag`, or the input unchanged without encryption.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        let Some(cipher) = &self.cipher else {
            return Ok(plaintext.to_vec());
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext)
            .map_err(|_| Error::Other("encryption failed".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Reverses [`Keys::seal`]; any change to the bytes is an error.
    pub fn open(&self, sealed: &[u8], what: &dyn std::fmt::Display) -> Result<Vec<u8>> {
        let Some(cipher) = &self.cipher else {
            return Ok(sealed.to_vec());
        };
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(Error::damaged(format!("{what} is truncated")));
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        cipher.decrypt(XNonce::from_slice(nonce), ct).map_err(|_| {
            Error::damaged(format!("{what} fails authentication (modified or damaged)"))
        })
    }
}

/// Argon2id parameters, stored with each key file so they can be raised later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        // 64 MiB, 3 passes: ~0.2 s here; a repository is opened once per job.
        Self {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

/// `keys/<id>`: the master secret wrapped by a password.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    pub kdf: String,
    pub params: KdfParams,
    pub salt: String,
    /// hex(nonce ‖ XChaCha20-Poly1305(master secret)).
    pub wrapped: String,
    pub created_ms: i64,
}

fn password_key(password: &Secret<String>, salt: &[u8], p: KdfParams) -> Result<[u8; 32]> {
    let params = argon2::Params::new(p.m_cost_kib, p.t_cost, p.p_cost, Some(32))
        .map_err(|e| Error::Other(format!("argon2 parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = [0u8; 32];
    argon
        .hash_password_into(password.expose().as_bytes(), salt, &mut key)
        .map_err(|e| Error::Other(format!("argon2: {e}")))?;
    Ok(key)
}

impl KeyFile {
    pub fn wrap(
        master: &Secret<[u8; 32]>,
        password: &Secret<String>,
        params: KdfParams,
        now_ms: i64,
    ) -> Result<Self> {
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let key = password_key(password, &salt, params)?;
        let cipher = XChaCha20Poly1305::new(&key.into());
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(XNonce::from_slice(&nonce), master.expose().as_slice())
            .map_err(|_| Error::Other("key wrapping failed".into()))?;
        Ok(KeyFile {
            kdf: "argon2id".into(),
            params,
            salt: hex(&salt),
            wrapped: hex(&[nonce.as_slice(), &ct].concat()),
            created_ms: now_ms,
        })
    }

    /// The master secret, or `None` when the password is wrong.
    pub fn unwrap_with(&self, password: &Secret<String>) -> Result<Option<Secret<[u8; 32]>>> {
        let salt = unhex(&self.salt).ok_or_else(|| Error::damaged("key file salt"))?;
        let wrapped = unhex(&self.wrapped).ok_or_else(|| Error::damaged("key file"))?;
        if wrapped.len() != NONCE_LEN + 32 + TAG_LEN {
            return Err(Error::damaged("key file has the wrong length"));
        }
        let key = password_key(password, &salt, self.params)?;
        let cipher = XChaCha20Poly1305::new(&key.into());
        let (nonce, ct) = wrapped.split_at(NONCE_LEN);
        Ok(cipher
            .decrypt(XNonce::from_slice(nonce), ct)
            .ok()
            .and_then(|m| <[u8; 32]>::try_from(m.as_slice()).ok())
            .map(Secret::new))
    }
}

pub fn random_master() -> Secret<[u8; 32]> {
    let mut m = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut m);
    Secret::new(m)
}

/// Lowercase hex, as ids are written.
pub fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}

/// Hex back to bytes; `None` for anything that is not (whole bytes of) hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    ::hex::decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> KdfParams {
        KdfParams {
            m_cost_kib: 256,
            t_cost: 1,
            p_cost: 1,
        }
    }

    #[test]
    fn a_wrapped_key_opens_only_with_its_password() {
        let master = random_master();
        let kf = KeyFile::wrap(&master, &Secret::new("pw".into()), fast(), 0).unwrap();
        let back = kf.unwrap_with(&Secret::new("pw".into())).unwrap().unwrap();
        assert_eq!(back.expose(), master.expose());
        assert!(kf.unwrap_with(&Secret::new("pW".into())).unwrap().is_none());
    }

    #[test]
    fn sealed_data_detects_any_flipped_bit() {
        let keys = Keys::from_master(&random_master(), true);
        let sealed = keys.seal(b"hello rows").unwrap();
        assert_eq!(keys.open(&sealed, &"blob").unwrap(), b"hello rows");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(
                matches!(keys.open(&bad, &"blob"), Err(Error::Damaged(_))),
                "bit in byte {i}"
            );
        }
        let other = Keys::from_master(&random_master(), true);
        assert!(other.open(&sealed, &"blob").is_err());
    }

    #[test]
    fn chunk_ids_depend_on_the_repository_key() {
        let a = Keys::from_master(&random_master(), true);
        let b = Keys::from_master(&random_master(), true);
        assert_eq!(a.chunk_id(b"x"), a.chunk_id(b"x"));
        assert_ne!(a.chunk_id(b"x"), b.chunk_id(b"x"));
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(
            unhex(&hex(&[0, 1, 254, 255])).unwrap(),
            vec![0, 1, 254, 255]
        );
        assert!(unhex("zz").is_none());
    }
}
