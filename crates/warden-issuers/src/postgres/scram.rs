//! SCRAM-SHA-256 verifiers for new roles (RFC 5802, RFC 7677), in the form PostgreSQL stores
//! in `pg_authid.rolpassword`.
//!
//! The verifier is computed here rather than by the server so a role's password never reaches
//! PostgreSQL, or its statement log, in the clear.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use sha2::{Digest, Sha256};

/// Rounds of PBKDF2 in Warden's verifiers: 16, not PostgreSQL's default of 4096.
///
/// Rounds exist to slow down guessing a human's password from a stolen verifier. Warden's
/// passwords are 144 random bits: no number of rounds changes whether they can be guessed
/// (they cannot). Rounds do cost time wherever the verifier is used: PostgreSQL runs all of
/// them once more in every `CREATE ROLE ... PASSWORD` (to refuse a verifier of the empty
/// password), about 3.5 ms at 4096 and the larger part of issuing a role; and every login
/// runs them again at the client.
const ITERATIONS: u32 = 16;

/// Bytes of random salt, as PostgreSQL makes them.
const SALT_LEN: usize = 16;

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` for `password`, with a fresh
/// random salt. The result holds only base64 and `$:` characters, safe inside a SQL literal.
pub(super) fn verifier(password: &str) -> String {
    let mut salt = [0u8; SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    verifier_with_salt(password, &salt)
}

fn verifier_with_salt(password: &str, salt: &[u8]) -> String {
    // PostgreSQL prepares passwords with SASLprep when it can, and uses the raw bytes when
    // the password has characters SASLprep prohibits.
    let prepared = stringprep::saslprep(password).unwrap_or(std::borrow::Cow::Borrowed(password));
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(prepared.as_bytes(), salt, ITERATIONS, &mut salted);
    let key = |label: &[u8]| {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&salted)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(label);
        mac.finalize().into_bytes()
    };
    let stored_key = Sha256::digest(key(b"Client Key"));
    let server_key = key(b"Server Key");
    format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed independently, with Python's `hashlib.pbkdf2_hmac` and `hmac`, for the
    /// password `pencil` and the salt of RFC 7677's example.
    #[test]
    fn the_verifier_matches_an_independent_computation() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        assert_eq!(
            verifier_with_salt("pencil", &salt),
            "SCRAM-SHA-256$16:W22ZaJ0SNY7soEsUEjb6gQ==$E31herPhjIOTVCX7LjVuiaoFyFvb0RROPq3YM3VVrD8=:vtOdW3IRp9Qxq7MV3joF+UQqwGm6/yuYYDB6xnA/BZE="
        );
    }

    #[test]
    fn every_verifier_has_its_own_salt() {
        let (a, b) = (verifier("pencil"), verifier("pencil"));
        assert_ne!(a, b);
        assert!(a.starts_with("SCRAM-SHA-256$16:"));
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+/=$:-".contains(c))
        );
    }
}
