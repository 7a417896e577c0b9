//! Free-text fields people type: reasons, tickets and comments.
//!
//! They are shown to approvers and written to the audit log, so they are bounded in length and
//! may not carry control characters that could forge log lines or terminal output.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a text field was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("{0} is required and may not be blank")]
    Blank(&'static str),
    #[error("{field} is {len} characters long; the limit is {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{0} contains control characters; use plain printable text")]
    Control(&'static str),
}

fn check(field: &'static str, s: &str, max: usize, allow_blank: bool) -> Result<String, TextError> {
    let t = s.trim();
    if t.is_empty() && !allow_blank {
        return Err(TextError::Blank(field));
    }
    let len = t.chars().count();
    if len > max {
        return Err(TextError::TooLong { field, len, max });
    }
    if t.chars().any(char::is_control) {
        return Err(TextError::Control(field));
    }
    Ok(t.to_owned())
}

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:literal, $blank:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Longest accepted value, in characters.
            pub const MAX: usize = $max;

            /// Checks and trims `s`.
            pub fn parse(s: &str) -> Result<Self, TextError> {
                check($field, s, $max, $blank).map(Self)
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = TextError;
            fn try_from(s: String) -> Result<Self, TextError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(t: $name) -> String {
                t.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_type!(
    /// Why access is needed; required on every request.
    Reason,
    "reason",
    1000,
    false
);
text_type!(
    /// A ticket or incident id such as `INC-1234`; policies can demand a pattern.
    Ticket,
    "ticket",
    128,
    false
);
text_type!(
    /// An approver's or revoker's comment; may be empty.
    Comment,
    "comment",
    1000,
    true
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert_eq!(Reason::parse("  fix it ").unwrap().as_str(), "fix it");
        assert_eq!(Reason::parse(" "), Err(TextError::Blank("reason")));
        assert!(matches!(
            Ticket::parse(&"x".repeat(129)),
            Err(TextError::TooLong { max: 128, .. })
        ));
        assert_eq!(
            Reason::parse("a\u{1b}[2J"),
            Err(TextError::Control("reason"))
        );
        assert_eq!(Comment::parse("").unwrap().as_str(), "");
    }
}
