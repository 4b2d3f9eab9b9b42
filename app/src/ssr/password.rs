//! Argon2id password hashing. Hashing takes tens of milliseconds of CPU by design, so
//! callers on the async runtime go through [`hash`] / [`verify`], which run it on the
//! blocking pool.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use engine::secret::Secret;

fn argon2() -> Argon2<'static> {
    // OWASP's first recommended Argon2id setting: 19 MiB, 2 passes, 1 lane.
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

/// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
pub fn hash_blocking(password: &Secret<String>) -> anyhow::Result<String> {
    use rand::RngCore;
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let phc = argon2()
        .hash_password(password.expose().as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    Ok(phc.to_string())
}

/// False for a wrong password and for a hash that cannot be parsed.
pub fn verify_blocking(password: &Secret<String>, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => argon2()
            .verify_password(password.expose().as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

pub async fn hash(password: Secret<String>) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || hash_blocking(&password)).await?
}

pub async fn verify(password: Secret<String>, phc: String) -> bool {
    tokio::task::spawn_blocking(move || verify_blocking(&password, &phc))
        .await
        .unwrap_or(false)
}

/// A random password for a generated account: 20 characters from an alphabet without
/// look-alikes (about 115 bits).
pub fn generate() -> Secret<String> {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    let s: String = (0..20)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    Secret::new(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_hash_accepts_the_password_and_rejects_others() {
        let pw = Secret::new("correct horse".to_string());
        let phc = hash_blocking(&pw).unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        assert!(verify_blocking(&pw, &phc));
        assert!(!verify_blocking(&Secret::new("correct horsf".into()), &phc));
        assert!(!verify_blocking(&pw, "not a hash"));
    }

    #[test]
    fn generated_passwords_are_long_and_distinct() {
        let a = generate();
        let b = generate();
        assert_eq!(a.expose().len(), 20);
        assert_ne!(a.expose(), b.expose());
    }
}
