//! Auth tokens: `Authenticate` answers one, clients send it with every
//! request (gRPC metadata `token`, or the HTTP header `Authorization`).
//!
//! A token is signed (HMAC-SHA-256) with a key from the replicated auth
//! state, so every member accepts a token whichever member issued it, and
//! none has to remember tokens. It names the user, the auth revision it was
//! issued at and when it expires (etcd's simple tokens live 300 s):
//! `v1.<hex user>.<auth revision>.<expiry, unix seconds>.<hex mac>`.
//! [`super::AuthState::check_token`] also refuses a token older than the
//! user's last password change, and the key is drawn anew at every
//! `AuthEnable` (and dropped at `AuthDisable`), so disabling auth ends
//! every token.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::AuthError;

/// etcd's default token TTL (`--auth-token-ttl`).
pub const DEFAULT_TTL_SECS: u64 = 300;

/// Bytes of a token signing key.
pub const KEY_BYTES: usize = 32;

const PREFIX: &str = "v1";

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user it was issued to.
    pub user: String,
    /// The auth revision when it was issued.
    pub revision: u64,
    /// When it expires, in seconds since the Unix epoch.
    pub expires: u64,
}

/// A fresh random signing key (drawn by the member proposing `AuthEnable`).
pub fn new_key() -> Vec<u8> {
    use rand::RngCore;
    let mut key = vec![0u8; KEY_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

fn mac(key: &[u8], body: &str) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(body.as_bytes());
    m
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A token for `claims`, signed with `key`.
pub fn issue(key: &[u8], claims: &Claims) -> String {
    let body = format!(
        "{PREFIX}.{}.{}.{}",
        hex(claims.user.as_bytes()),
        claims.revision,
        claims.expires
    );
    let sig = mac(key, &body).finalize().into_bytes();
    format!("{body}.{}", hex(&sig))
}

/// The claims of `token` if `key` signed it and it has not expired at
/// `now` (seconds since the Unix epoch).
pub fn verify(key: &[u8], token: &str, now: u64) -> Result<Claims, AuthError> {
    let bad = AuthError::InvalidToken;
    if key.is_empty() {
        return Err(bad);
    }
    let (body, sig) = token.rsplit_once('.').ok_or(bad)?;
    let sig = unhex(sig).ok_or(bad)?;
    mac(key, body).verify_slice(&sig).map_err(|_| bad)?;
    let mut parts = body.split('.');
    let (Some(PREFIX), Some(user), Some(rev), Some(exp), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad);
    };
    let claims = Claims {
        user: String::from_utf8(unhex(user).ok_or(bad)?).map_err(|_| bad)?,
        revision: rev.parse().map_err(|_| bad)?,
        expires: exp.parse().map_err(|_| bad)?,
    };
    if claims.expires <= now {
        return Err(bad);
    }
    Ok(claims)
}

/// Seconds since the Unix epoch now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(user: &str, expires: u64) -> Claims {
        Claims {
            user: user.into(),
            revision: 7,
            expires,
        }
    }

    #[test]
    fn round_trip_and_expiry() {
        let key = new_key();
        let c = claims("al.ice", 1000);
        let t = issue(&key, &c);
        assert_eq!(verify(&key, &t, 999), Ok(c));
        assert_eq!(verify(&key, &t, 1000), Err(AuthError::InvalidToken));
    }

    #[test]
    fn forged_or_foreign_tokens_are_refused() {
        let key = new_key();
        let t = issue(&key, &claims("bob", 1000));
        assert!(verify(&new_key(), &t, 0).is_err(), "another key");
        assert!(verify(&[], &t, 0).is_err(), "auth disabled: no key");
        // Changing the user, revision or expiry breaks the signature.
        let forged = t.replacen(&hex(b"bob"), &hex(b"root"), 1);
        assert!(verify(&key, &forged, 0).is_err());
        let later = t.replacen(".1000.", ".9999.", 1);
        assert!(verify(&key, &later, 0).is_err());
        for junk in ["", ".", "v1", "v1.zz.1.2.00", "a.b.c.d.e.f", "v1...."] {
            assert!(verify(&key, junk, 0).is_err(), "{junk:?}");
        }
    }
}
