//! What a password someone chooses must be: long enough, made of characters that show, and not
//! a few characters repeated. No composition rules (a passphrase is fine); the length and the
//! lockout do the rest. A password is normalised ([`normalized`]) before it is checked, hashed
//! or verified, so that one typed on another keyboard or system is the same password.

/// Fewest characters that show (spaces, joiners and combining marks aside).
pub const MIN_CHARS: usize = 12;
/// Most bytes: argon2 hashes whatever it is given, and a sign-in must not cost more.
pub const MAX_BYTES: usize = 1024;
/// Fewest different characters: `aaaaaaaaaaaa` and twelve spaces are not passwords.
const MIN_DISTINCT: usize = 5;

/// Why a chosen password was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error(
        "passwords need at least {MIN_CHARS} characters that show (spaces and invisible ones aside) and at most {MAX_BYTES} bytes"
    )]
    Length,
    #[error("passwords may hold no control or invisible characters")]
    Hidden,
    #[error(
        "the password has too few different characters ({0}; at least {MIN_DISTINCT}): use a passphrase, or one a password manager makes"
    )]
    Repetitive(usize),
}

/// `password` in Unicode normalisation form NFKC (NIST SP 800-63B, 5.1.1.2), as it is
/// hashed and verified: an accented letter typed as one character (`é`, as most keyboards
/// send it) or as a letter and a combining mark (`e` and U+0301, as some systems send it), or a
/// letter in its full-width form (`ｐ`, as input methods of East Asian scripts may send it),
/// is one password whichever way it comes.
pub fn normalized(password: &str) -> std::borrow::Cow<'_, str> {
    use unicode_normalization::UnicodeNormalization;
    match unicode_normalization::is_nfkc_quick(password.chars()) {
        unicode_normalization::IsNormalized::Yes => std::borrow::Cow::Borrowed(password),
        _ => std::borrow::Cow::Owned(password.nfkc().collect()),
    }
}

/// Checks a password being set (not one being tried at sign-in), in the form it is hashed in
/// ([`normalized`]).
pub fn check(password: &str) -> Result<(), PasswordError> {
    let password = &*normalized(password);
    if password.chars().any(crate::text::hidden) {
        return Err(PasswordError::Hidden);
    }
    let shown = || password.chars().filter(|c| crate::text::visible(*c));
    if shown().count() < MIN_CHARS || password.len() > MAX_BYTES {
        return Err(PasswordError::Length);
    }
    let distinct = shown().collect::<std::collections::BTreeSet<_>>().len();
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
        assert_eq!(check("            "), Err(PasswordError::Length));
        assert_eq!(check("abababababab"), Err(PasswordError::Repetitive(2)));
        assert_eq!(check(&"\0".repeat(12)), Err(PasswordError::Hidden));
        // Padding that does not show does not count.
        assert_eq!(
            check("abcde\u{200D}\u{200D}\u{200D}\u{200D}\u{200D}\u{200D}\u{200D}"),
            Err(PasswordError::Length)
        );
        assert_eq!(
            check(
                "\u{2000}\u{2001}\u{2002}\u{2003}\u{2004}\u{2005}\u{2006}\u{2007}\u{2008}\u{2009}\u{200A}\u{3000}"
            ),
            Err(PasswordError::Length)
        );
        // A long passphrase in any script, counted in characters.
        assert_eq!(
            check(&"密码短语".repeat(50)),
            Err(PasswordError::Repetitive(4))
        );
        assert_eq!(check("長い合言葉は安全です"), Err(PasswordError::Length));
        assert_eq!(check("長い合言葉はとても安全です"), Ok(()));
        assert_eq!(check("pass\u{202E}word-long"), Err(PasswordError::Hidden));
    }

    #[test]
    fn composed_and_decomposed_forms_are_one_password() {
        let composed = "caf\u{E9} cr\u{E8}me br\u{FB}l\u{E9}e";
        let decomposed = "cafe\u{301} cre\u{300}me bru\u{302}le\u{301}e";
        assert_ne!(composed, decomposed);
        assert_eq!(normalized(composed), normalized(decomposed));
        assert_eq!(normalized(decomposed), composed);
        // Already normal: not copied.
        assert!(matches!(
            normalized(composed),
            std::borrow::Cow::Borrowed(_)
        ));
        // Full-width letters and digits are the ASCII ones.
        assert_eq!(
            normalized("\u{FF50}\u{FF41}\u{FF53}\u{FF53}\u{FF11}"),
            "pass1"
        );
        // The check counts the characters the hash is made of.
        assert_eq!(check(decomposed), Ok(()));
        assert_eq!(
            check("\u{FB01}\u{FB01}\u{FB01}\u{FB01}\u{FB01}\u{FB01}"),
            Err(PasswordError::Repetitive(2))
        );
    }
}
