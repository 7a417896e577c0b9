//! Free-text fields people type: reasons, tickets and comments.
//!
//! They are shown to approvers and written to the audit log, so they are bounded in length and
//! may not carry characters that could forge log lines or terminal output, or make the text
//! read differently from what it holds (see [`hidden`]).

use std::fmt;

use serde::{Deserialize, Serialize};
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Whether `c` would not show as itself: control characters (Cc), format characters (Cf: the
/// bidirectional overrides that reorder what follows, the zero-width space, the byte order
/// mark), line and paragraph separators, private-use, surrogate and unassigned code points,
/// and whatever else Unicode says to draw as nothing (Default_Ignorable_Code_Point: the
/// Hangul fillers, the variation selectors, the grapheme joiner). Text people read in a review, a
/// terminal or the audit log may hold none of them. Four are the exception, as everyday text
/// needs them and they move nothing: the zero-width (non-)joiner, which Persian and Indic
/// scripts and joined emoji use (`👩\u{200D}💻`), and the two presentation selectors
/// (U+FE0E, U+FE0F) that most emoji typed on a phone carry (`❤\u{FE0F}`). The other variation
/// selectors, 254 of them, are refused: a run of them can carry text no one sees, as the tag
/// characters (Cf) that spell flags of regions could.
pub fn hidden(c: char) -> bool {
    // Every ASCII character but the controls shows as itself; most text is ASCII, and the
    // category table's search costs a grant's public key line a few microseconds.
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    !shown_as_is(c)
        && (matches!(
            c.general_category(),
            GeneralCategory::Control
                | GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
                | GeneralCategory::PrivateUse
                | GeneralCategory::Surrogate
                | GeneralCategory::Unassigned
        ) || DEFAULT_IGNORABLE
            .binary_search_by(|&(lo, hi)| {
                if hi < c {
                    std::cmp::Ordering::Less
                } else if lo > c {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .is_ok())
}

/// The [`hidden`] code points text may hold all the same: the zero-width (non-)joiner and the
/// text and emoji presentation selectors.
fn shown_as_is(c: char) -> bool {
    matches!(c, '\u{200C}' | '\u{200D}' | '\u{FE0E}' | '\u{FE0F}')
}

/// The code points with the Unicode property Default_Ignorable_Code_Point (Unicode 16.0,
/// DerivedCoreProperties.txt), in order: drawn as nothing, whatever their category. Most are
/// Cf or unassigned, which [`hidden`] refuses anyway; the table holds them all, so that it
/// reads against the property line by line.
const DEFAULT_IGNORABLE: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),   // soft hyphen
    ('\u{034F}', '\u{034F}'),   // combining grapheme joiner
    ('\u{061C}', '\u{061C}'),   // Arabic letter mark
    ('\u{115F}', '\u{1160}'),   // Hangul choseong and jungseong fillers
    ('\u{17B4}', '\u{17B5}'),   // Khmer inherent vowels
    ('\u{180B}', '\u{180F}'),   // Mongolian free variation selectors, vowel separator
    ('\u{200B}', '\u{200F}'),   // zero-width space, (non-)joiner, directional marks
    ('\u{202A}', '\u{202E}'),   // directional embeddings and overrides
    ('\u{2060}', '\u{206F}'),   // word joiner, invisible operators, isolates, deprecated
    ('\u{3164}', '\u{3164}'),   // Hangul filler
    ('\u{FE00}', '\u{FE0F}'),   // variation selectors 1-16
    ('\u{FEFF}', '\u{FEFF}'),   // zero-width no-break space (byte order mark)
    ('\u{FFA0}', '\u{FFA0}'),   // halfwidth Hangul filler
    ('\u{FFF0}', '\u{FFF8}'),   // unassigned
    ('\u{1BCA0}', '\u{1BCA3}'), // shorthand format controls
    ('\u{1D173}', '\u{1D17A}'), // musical symbol format controls
    ('\u{E0000}', '\u{E0FFF}'), // tags, variation selectors 17-256, unassigned
];

/// Whether `c` shows on its own: not white space, not a mark that only changes the character
/// before it (combining accents), not a zero-width joiner, not the blank Braille pattern, and
/// not [`hidden`] (which the Hangul fillers, the variation selectors and the grapheme joiner
/// are). Text made of none of these looks empty.
pub fn visible(c: char) -> bool {
    !c.is_whitespace()
        && !matches!(c, '\u{2800}' | '\u{200C}' | '\u{200D}')
        && !matches!(
            c.general_category(),
            GeneralCategory::NonspacingMark | GeneralCategory::EnclosingMark
        )
        && !hidden(c)
}

/// What a [`hidden`] character is, as a message names it.
pub fn hidden_kind(c: char) -> &'static str {
    if c.is_control() {
        "a control character"
    } else {
        "an invisible or text-reordering character"
    }
}

/// Text a client sent that is not what was asked for, as an error message or an audit event may
/// quote it: its first `max` characters, in quotes, every [`hidden`] character escaped as
/// `\u{…}`, and `…` after it when it went on. However long or strange the text, the line
/// quoting it stays short and reads as what it holds.
pub fn shown(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(max.min(text.len()) + 8);
    out.push('"');
    let mut chars = text.chars();
    for c in chars.by_ref().take(max) {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if hidden(c) => {
                let _ = fmt::Write::write_fmt(&mut out, format_args!("\\u{{{:x}}}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// `message`, the refusal of a value that does not parse or validate, with every quoted text in
/// it (as [`shown`] and Rust's `{:?}` quote what a client sent) replaced by its length: the
/// audit record says what was wrong, never the value that was, since a password or token pasted
/// into the wrong field would stay in the signed log for good. The caller's own answer still
/// quotes it.
pub fn unquoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            out.push(c);
            continue;
        }
        let mut count = 0usize;
        let mut closed = false;
        while let Some(q) = chars.next() {
            match q {
                '"' => {
                    closed = true;
                    break;
                }
                // One escaped character: `\"`, `\\`, `\n` or `\u{…}`, whose escape is skipped
                // whole (a guard that finds no `u` has skipped the one escaped character).
                '\\' if chars.next() == Some('u') => {
                    chars.by_ref().find(|h| *h == '}');
                }
                _ => {}
            }
            count += 1;
        }
        let more = if closed && chars.as_str().starts_with('…') {
            chars.next();
            " or more"
        } else {
            ""
        };
        let _ = fmt::Write::write_fmt(
            &mut out,
            format_args!("(a value of {count}{more} characters, not kept)"),
        );
    }
    out
}

/// An OpenSSH public key line without its surrounding white space, or why it may not be
/// stored: its comment is the one free text in it, shown and stored with a grant or a proxy
/// key, so it may hold nothing [`hidden`], and neither may the rest, which is copied from a
/// `.pub` file that has none. Whether the rest is a key is the SSH parser's call.
pub fn key_line(text: &str) -> Result<&str, String> {
    let line = text.trim();
    if line.contains(['\n', '\r']) {
        return Err(
            "the public key is more than one line: give one key, as its .pub file holds it".into(),
        );
    }
    match line.chars().enumerate().find(|(_, c)| hidden(*c)) {
        Some((at, c)) => Err(hidden_in_key_line(line, at, c)),
        None => Ok(line),
    }
}

/// The fields of a public key line, in order; any after the second are its comment.
const KEY_FIELDS: [&str; 3] = ["key type", "key data", "comment"];

/// Why `line` is refused for the [`hidden`] character `c`, its `at`-th (from 0): the code point,
/// where it is, and the way out, since an invisible character cannot be found by looking.
fn hidden_in_key_line(line: &str, at: usize, c: char) -> String {
    let (place, fix) = if at == 0 && c == '\u{FEFF}' {
        (
            "at its start (a byte-order mark)".to_owned(),
            "save the file without a byte-order mark (as plain UTF-8)",
        )
    } else {
        let field = key_field(line, at);
        let place = format!("at character {}", at + 1);
        if field + 1 >= KEY_FIELDS.len() {
            (
                format!("{place}, in its comment"),
                "remove it from the comment, or leave the comment out",
            )
        } else if c.is_whitespace() {
            (
                format!(
                    "{place}, between its {} and {}",
                    KEY_FIELDS[field],
                    KEY_FIELDS[field + 1]
                ),
                "separate the fields with single spaces",
            )
        } else {
            (
                format!("{place}, in its {}", KEY_FIELDS[field]),
                "copy the line again from the .pub file ssh-keygen wrote (e.g. `cat ~/.ssh/id_ed25519.pub`)",
            )
        }
    };
    format!(
        "the public key line holds {} (U+{:04X}) {place}: {fix}",
        hidden_kind(c),
        u32::from(c)
    )
}

/// Which field of `line` (from 0) its `at`-th character is in, fields being separated by white
/// space: for white space itself, the field before it.
fn key_field(line: &str, at: usize) -> usize {
    let mut field = 0;
    let mut after_space = false;
    for c in line.chars().take(at) {
        if c.is_whitespace() {
            after_space = true;
        } else if after_space {
            field += 1;
            after_space = false;
        }
    }
    field
}

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
    #[error("{field} contains {what} (U+{code:04X}); use plain printable text")]
    Hidden {
        field: &'static str,
        what: &'static str,
        code: u32,
    },
}

impl TextError {
    /// The same refusal, naming the field as the caller knows it (a postmortem's note is a
    /// comment by type).
    pub fn named(self, name: &'static str) -> Self {
        match self {
            Self::Blank(_) => Self::Blank(name),
            Self::TooLong { len, max, .. } => Self::TooLong {
                field: name,
                len,
                max,
            },
            Self::Hidden { what, code, .. } => Self::Hidden {
                field: name,
                what,
                code,
            },
        }
    }
}

fn check(field: &'static str, s: &str, max: usize, allow_blank: bool) -> Result<String, TextError> {
    let t = s.trim();
    if let Some(c) = t.chars().find(|c| hidden(*c)) {
        let what = hidden_kind(c);
        return Err(TextError::Hidden {
            field,
            what,
            code: u32::from(c),
        });
    }
    if !allow_blank && !t.chars().any(visible) {
        return Err(TextError::Blank(field));
    }
    let len = t.chars().count();
    if len > max {
        return Err(TextError::TooLong { field, len, max });
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
    fn refusals_keep_no_quoted_value() {
        let token = "wdn_Sfr6u6nq2p1b0MHoF7K1SInvNFeOabc";
        assert_eq!(
            unquoted(&format!("invalid user name {token:?}: use 1-64 characters")),
            "invalid user name (a value of 35 characters, not kept): use 1-64 characters"
        );
        assert_eq!(
            unquoted(&format!(
                "unknown event code {}; codes are",
                shown(token, 10)
            )),
            "unknown event code (a value of 10 or more characters, not kept); codes are"
        );
        assert_eq!(
            unquoted(&format!("x {:?} y", "a\"b\u{202e}\n")),
            "x (a value of 5 characters, not kept) y"
        );
        assert_eq!(
            unquoted("no quotes, 'single' and `ticks`"),
            "no quotes, 'single' and `ticks`"
        );
        assert_eq!(
            unquoted("cut \"short"),
            "cut (a value of 5 characters, not kept)"
        );
    }

    #[test]
    fn shown_text_is_short_quoted_and_escaped() {
        assert_eq!(shown("2026-01-01", 40), "\"2026-01-01\"");
        assert_eq!(shown("a\"b\\c", 40), "\"a\\\"b\\\\c\"");
        assert_eq!(shown("\u{202e}x\0y\n", 40), "\"\\u{202e}x\\u{0}y\\u{a}\"");
        assert_eq!(shown(&"é".repeat(100), 3), "\"ééé\"…");
        assert_eq!(shown("", 3), "\"\"");
    }

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
            Err(TextError::Hidden {
                field: "reason",
                what: "a control character",
                code: 0x1b
            })
        );
        assert_eq!(Comment::parse("").unwrap().as_str(), "");
    }

    #[test]
    fn ascii_is_hidden_exactly_where_its_category_says() {
        for c in (0u8..=0x7F).map(char::from) {
            let by_category = matches!(c.general_category(), GeneralCategory::Control);
            assert_eq!(hidden(c), by_category, "{c:?}");
        }
    }

    #[test]
    fn what_reads_differently_from_what_it_holds_is_refused() {
        // Bidirectional override, zero-width space, byte order mark, line separator, NUL,
        // private use; and what Unicode says to draw as nothing whatever its category: Hangul
        // fillers, the grapheme joiner, Khmer inherent vowels, Mongolian and other variation
        // selectors, the unassigned U+2065.
        for c in [
            '\u{202E}',
            '\u{200B}',
            '\u{FEFF}',
            '\u{2028}',
            '\0',
            '\u{E000}',
            '\u{3164}',
            '\u{115F}',
            '\u{1160}',
            '\u{FFA0}',
            '\u{034F}',
            '\u{17B4}',
            '\u{17B5}',
            '\u{180B}',
            '\u{180F}',
            '\u{FE00}',
            '\u{FE0D}',
            '\u{E0100}',
            '\u{E01EF}',
            '\u{2065}',
        ] {
            let text = format!("rm{c}fr");
            assert!(
                matches!(Reason::parse(&text), Err(TextError::Hidden { .. })),
                "U+{:04X}",
                u32::from(c)
            );
        }
        // Made only of blank Braille, joiners or marks: as good as empty.
        for blank in [
            "\u{2800} ",
            "\u{200D}",
            "\u{0301}",
            "\u{2800}\u{200C}\u{0301}",
        ] {
            assert_eq!(
                Reason::parse(blank),
                Err(TextError::Blank("reason")),
                "{blank:?}"
            );
        }
        // Any script, accents and emoji are fine.
        for ok in [
            "déploiement",
            "修复 INC-7",
            "עדכון",
            "fix 🔥",
            "می\u{200C}خواهم",
            "👩\u{200D}💻",
        ] {
            assert_eq!(Reason::parse(ok).unwrap().as_str(), ok);
        }
        // An emoji's presentation selector passes, as phones type it; any other selector does not.
        assert_eq!(
            Reason::parse("fix \u{2764}\u{FE0F}").unwrap().as_str(),
            "fix \u{2764}\u{FE0F}"
        );
        assert_eq!(
            Reason::parse("fix \u{2764}\u{FE01}"),
            Err(TextError::Hidden {
                field: "reason",
                what: "an invisible or text-reordering character",
                code: 0xFE01
            })
        );
        assert_eq!(Reason::parse("\u{FE0F}"), Err(TextError::Blank("reason")));
    }

    #[test]
    fn every_default_ignorable_code_point_is_hidden_but_joiners_and_presentation_selectors() {
        // Ordered and apart, as the binary search needs.
        for pair in DEFAULT_IGNORABLE.windows(2) {
            assert!(pair[0].1 < pair[1].0, "{pair:?}");
        }
        for &(lo, hi) in DEFAULT_IGNORABLE {
            assert!(lo <= hi);
            for c in lo..=hi {
                assert_eq!(hidden(c), !shown_as_is(c), "U+{:04X}", u32::from(c));
            }
        }
        // Just outside them, letters and marks that show.
        for c in [
            '\u{00AC}', '\u{00AE}', '\u{1161}', '\u{3165}', '\u{FE10}', '\u{17B6}',
        ] {
            assert!(!hidden(c), "U+{:04X}", u32::from(c));
        }
    }

    #[test]
    fn key_lines_are_trimmed_and_hold_nothing_hidden() {
        assert_eq!(
            key_line("ssh-ed25519 AAAA alice@laptop\r\n"),
            Ok("ssh-ed25519 AAAA alice@laptop")
        );
        assert!(key_line("ssh-ed25519 AAAA alice\u{202E}pot").is_err());
        assert!(key_line("ssh-ed25519 AAAA a\u{1b}[2Jb").is_err());
    }

    #[test]
    fn a_hidden_character_in_a_key_line_is_named_where_it_is() {
        for (line, said) in [
            (
                "ssh-ed25519\tAAAA alice@laptop",
                "a control character (U+0009) at character 12, between its key type and key data: separate the fields with single spaces",
            ),
            (
                "ssh-ed25519 AAAA\talice@laptop",
                "a control character (U+0009) at character 17, between its key data and comment: separate the fields with single spaces",
            ),
            (
                "ssh-ed25519 AAAA alice\tlaptop",
                "a control character (U+0009) at character 23, in its comment: remove it from the comment, or leave the comment out",
            ),
            (
                "\u{FEFF}ssh-ed25519 AAAA alice@laptop",
                "an invisible or text-reordering character (U+FEFF) at its start (a byte-order mark): save the file without a byte-order mark (as plain UTF-8)",
            ),
            (
                "ssh-ed25519 AA\u{200B}AA alice@laptop",
                "an invisible or text-reordering character (U+200B) at character 15, in its key data: copy the line again from the .pub file ssh-keygen wrote (e.g. `cat ~/.ssh/id_ed25519.pub`)",
            ),
            (
                "ssh-ed25519 AAAA alice at \u{200B}laptop",
                "an invisible or text-reordering character (U+200B) at character 27, in its comment: remove it from the comment, or leave the comment out",
            ),
        ] {
            assert_eq!(
                key_line(line),
                Err(format!("the public key line holds {said}")),
                "{line:?}"
            );
        }
    }
}
