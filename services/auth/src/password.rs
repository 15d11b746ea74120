//! argon2id password hashing, run off the async runtime.

use anyhow::Context;
use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use secrecy::{ExposeSecret, SecretString};

/// Hashes a password into a PHC string (argon2id, the crate's default parameters).
pub async fn hash(password: SecretString) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.expose_secret().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))
    })
    .await
    .context("hashing task panicked")?
}

/// Verifies `password` against a PHC string. An unparsable stored hash counts as a mismatch
/// (and is logged), never as a match.
pub async fn verify(password: SecretString, phc: String) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || match PasswordHash::new(&phc) {
        Ok(parsed) => Argon2::default().verify_password(password.expose_secret().as_bytes(), &parsed).is_ok(),
        Err(e) => {
            tracing::error!(error = %e, "stored password hash is not a valid PHC string");
            false
        }
    })
    .await
    .context("verification task panicked")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_mismatch() {
        let phc = hash(SecretString::from("Admin123")).await.unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify(SecretString::from("Admin123"), phc.clone()).await.unwrap());
        assert!(!verify(SecretString::from("admin123"), phc).await.unwrap());
        assert!(!verify(SecretString::from("Admin123"), "Admin123".into()).await.unwrap(), "plaintext is never a match");
    }
}
