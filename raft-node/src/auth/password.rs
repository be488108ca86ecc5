//! Password hashing: Argon2id with a random per-password salt.
//!
//! The member that takes `UserAdd` or `UserChangePassword` draws the salt
//! and computes the hash before proposing, so applying the entry computes
//! nothing and every member stores the same bytes. Verifying
//! (`Authenticate`) recomputes the hash on the member asked and compares in
//! constant time.

use argon2::{Algorithm, Argon2, Params, Version};

/// Bytes of salt drawn per password.
pub const SALT_BYTES: usize = 16;
/// Bytes of hash stored.
pub const HASH_BYTES: usize = 32;

/// Argon2id's memory cost in KiB, iterations and lanes: modest (a few tens
/// of milliseconds per hash, optimized) but a real memory-hard slow hash.
const MEMORY_KIB: u32 = 8 * 1024;
const ITERATIONS: u32 = 2;
const LANES: u32 = 1;

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, LANES, Some(HASH_BYTES))
        .expect("the fixed Argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A stored password: its salt and Argon2id hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hashed {
    /// The salt the hash was computed with.
    #[serde(with = "serde_bytes")]
    pub salt: Vec<u8>,
    /// The hash.
    #[serde(with = "serde_bytes")]
    pub hash: Vec<u8>,
}

impl Hashed {
    /// Hashes `password` with a fresh random salt.
    pub fn new(password: &str) -> Hashed {
        use rand::RngCore;
        let mut salt = vec![0u8; SALT_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let hash = compute(password, &salt).unwrap_or_default();
        Hashed { salt, hash }
    }

    /// Whether `password` is the one hashed (constant-time comparison).
    pub fn matches(&self, password: &str) -> bool {
        match compute(password, &self.salt) {
            Some(h) if h.len() == self.hash.len() && !h.is_empty() => {
                h.iter()
                    .zip(&self.hash)
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
            }
            _ => false,
        }
    }
}

fn compute(password: &str, salt: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0u8; HASH_BYTES];
    match argon2().hash_password_into(password.as_bytes(), salt, &mut out) {
        Ok(()) => Some(out),
        Err(e) => {
            // Only a salt of a bad length gets here (one from a damaged
            // entry): such a password never matches.
            tracing::warn!(error = %e, "cannot hash a password");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salted_and_verifiable() {
        let a = Hashed::new("secret");
        let b = Hashed::new("secret");
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.hash, b.hash, "equal passwords hash apart");
        assert_eq!(a.hash.len(), HASH_BYTES);
        assert!(a.matches("secret"));
        assert!(!a.matches("Secret"));
        assert!(!a.matches(""));
        let broken = Hashed {
            salt: vec![],
            hash: a.hash.clone(),
        };
        assert!(!broken.matches("secret"));
    }
}
