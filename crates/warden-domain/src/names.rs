//! Names of users, groups, targets and roles.
//!
//! Names end up in SSH certificate key ids, database account names, Cedar entity ids and URLs,
//! so they are restricted once, here, to a conservative alphabet.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The scope of the one principal of a certificate that logs in to Warden's SSH proxy only
/// (`warden-proxy:USER`, no Unix account: a user name cannot hold `:`). Target principals are
/// scoped the same way (`TARGET:ACCOUNT`), so no target may bear this name: its hosts would let
/// in every proxy-only certificate, recording and approvals bypassed.
pub const PROXY_SCOPE: &str = "warden-proxy";

/// Why a string is not a valid name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {kind} name {shown:?}: use 1-64 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
)]
pub struct NameError {
    kind: &'static str,
    shown: String,
}

fn check(kind: &'static str, s: &str) -> Result<(), NameError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || (i > 0 && matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(NameError {
            kind,
            shown: s.chars().take(80).collect(),
        })
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                check($kind, s)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                check($kind, &s)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A user known to Warden's directory.
    UserName,
    "user"
);
name_type!(
    /// A group of users; approval tiers name groups.
    GroupName,
    "group"
);
name_type!(
    /// A system Warden grants access to (a host, a database, an account).
    TargetName,
    "target"
);
name_type!(
    /// A named level of access at a target, defined in the targets file.
    RoleName,
    "role"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        for ok in ["alice", "prod-web-1", "a", "db.main_2"] {
            assert!(ok.parse::<TargetName>().is_ok(), "{ok}");
        }
        for bad in ["", "Alice", "-x", "a b", "x/y", "é", &"a".repeat(65)] {
            let err = bad.parse::<UserName>().unwrap_err().to_string();
            assert!(err.contains("invalid user name"), "{err}");
        }
    }
}
