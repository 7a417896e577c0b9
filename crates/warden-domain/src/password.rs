//! What a password someone chooses must be: long enough, made of characters that show, and not
//! a few characters repeated. No composition rules (a passphrase is fine); the length and the
//! lockout do the rest.

/// Fewest characters.
pub const MIN_CHARS: usize = 12;
/// Most bytes: argon2 hashes whatever it is given, and a sign-in must not cost more.
pub const MAX_BYTES: usize = 1024;
/// Fewest different characters: `aaaaaaaaaaaa` and twelve spaces are not passwords.
const MIN_DISTINCT: usize = 5;

/// Why a chosen password was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("passwords must be {MIN_CHARS} to {MAX_BYTES} characters long")]
    Length,
    #[error("passwords may hold no control or invisible characters")]
    Hidden,
    #[error(
        "the password has only {0} different characters; use a passphrase, or one a password manager makes"
    )]
    Repetitive(usize),
}

/// Checks a password being set (not one being tried at sign-in).
pub fn check(password: &str) -> Result<(), PasswordError> {
    if password.chars().count() < MIN_CHARS || password.len() > MAX_BYTES {
        return Err(PasswordError::Length);
    }
    if password.chars().any(crate::text::hidden) {
        return Err(PasswordError::Hidden);
    }
    let distinct = password
        .chars()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if distinct < MIN_DISTINCT {
        return Err(PasswordError::Repetitive(distinct));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_visible_and_varied() {
        assert_eq!(check("correct horse battery"), Ok(()));
        assert_eq!(check("short-one"), Err(PasswordError::Length));
        assert_eq!(check(&"x".repeat(1025)), Err(PasswordError::Length));
        assert_eq!(check("            "), Err(PasswordError::Repetitive(1)));
        assert_eq!(check("abababababab"), Err(PasswordError::Repetitive(2)));
        assert_eq!(check(&"\0".repeat(12)), Err(PasswordError::Hidden));
        assert_eq!(check("pass\u{202E}word-long"), Err(PasswordError::Hidden));
    }
}
