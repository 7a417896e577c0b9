//! `mysql_native_password` hashes for new accounts, in the form MariaDB stores in
//! `mysql.user.authentication_string`: `*` and the upper-case hex of SHA-1(SHA-1(password)).
//!
//! The hash is computed here rather than by the server so an account's password never reaches
//! MariaDB, or its general and binary logs, in the clear (`IDENTIFIED BY 'password'` is logged
//! as sent). Logging in needs SHA-1(password), which the hash does not give away; and Warden's
//! passwords are 144 random bits, so the unsalted hash cannot be guessed back either.

use aws_lc_rs::digest::{SHA1_FOR_LEGACY_USE_ONLY, digest};

/// `*` followed by 40 upper-case hex digits: safe inside a SQL literal.
pub(super) fn hash(password: &str) -> String {
    let once = digest(&SHA1_FOR_LEGACY_USE_ONLY, password.as_bytes());
    let twice = digest(&SHA1_FOR_LEGACY_USE_ONLY, once.as_ref());
    let mut out = String::with_capacity(41);
    out.push('*');
    for byte in twice.as_ref() {
        out.push_str(&format!("{byte:02X}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_servers_own_password_function() {
        // `SELECT PASSWORD('secretpw')` on MariaDB 10.11.
        assert_eq!(
            hash("secretpw"),
            "*7648E52EC79D4BB879B7B913F0B8BBF8DC4AB6CC"
        );
    }
}
