//! Text a policy shows to people: a forbid's `@reason` (in refusals), the other annotations (a
//! ticket pattern and an approval tier are quoted back in refusals too), a target's or role's
//! `description`, `environment`, `kind` and `labels` (in `warden targets` and the UI), and a
//! fixture case's name (in `policy test` output). It reaches terminals, web pages and the audit
//! log as written, so it may hold nothing that does not show as itself: no control character
//! (a line break included), which could rewrite a terminal or forge a line, and no invisible or
//! text-reordering character ([`warden_domain::text::hidden`]), which could make it read
//! differently from what it holds.

use std::borrow::Cow;
use std::fmt::Write as _;

use warden_domain::text::hidden;

/// How many different characters a problem names before it says there are more.
const NAMED: usize = 4;

/// The problem with `what` (as a message names it, e.g. "`description` of target `web`") when
/// `value` holds characters that do not show as themselves: each is named by its code point,
/// so that the author can find and remove it.
pub(crate) fn problem(what: &str, value: &str) -> Option<String> {
    let mut found: Vec<char> = Vec::new();
    let mut more = false;
    for c in value.chars().filter(|c| hidden(*c)) {
        if found.contains(&c) {
            continue;
        }
        if found.len() == NAMED {
            more = true;
            break;
        }
        found.push(c);
    }
    if found.is_empty() {
        return None;
    }
    let mut named = String::new();
    for (i, c) in found.iter().enumerate() {
        let sep = match i {
            0 => "",
            _ if i + 1 == found.len() && !more => " and ",
            _ => ", ",
        };
        let _ = write!(named, "{sep}{} (U+{:04X})", kind(*c), u32::from(*c));
    }
    if more {
        named.push_str(" and more");
    }
    let them = if found.len() > 1 || more {
        "them"
    } else {
        "it"
    };
    Some(format!(
        "{what} contains {named}: remove {them}, since text shown to people may hold no control or invisible characters"
    ))
}

/// What `c` is, as a problem names it: line breaks and tabs by name, since a multi-line or
/// tabbed value is the common slip.
fn kind(c: char) -> &'static str {
    match c {
        '\n' | '\r' => "a line break",
        '\t' => "a tab",
        c => warden_domain::text::hidden_kind(c),
    }
}

/// `text` with every character that does not show as itself written as `\u{…}`, for a
/// problem's message: a message that quotes a key or value from a policy file shows as one
/// line of plain text, whatever the file holds.
pub(crate) fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if hidden(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Byte offset, in the source text `raw` of a TOML string value (its quotes included), of the
/// first character of the value that does not show as itself, whether written as it is or as
/// an escape (`\e`, `\n`, `\u202E`): where a problem with it points.
pub(crate) fn toml_offset(raw: &str) -> Option<usize> {
    let (open, escapes) = if raw.starts_with("\"\"\"") {
        (3, true)
    } else if raw.starts_with("'''") {
        (3, false)
    } else if raw.starts_with('"') {
        (1, true)
    } else if raw.starts_with('\'') {
        (1, false)
    } else {
        return None;
    };
    // A line break right after a multi-line string's opening quotes is no part of it.
    let body = &raw[open..];
    let skip = if open == 3 {
        if body.starts_with("\r\n") {
            2
        } else {
            usize::from(body.starts_with('\n'))
        }
    } else {
        0
    };
    first_hidden(&body[skip..], escapes).map(|i| open + skip + i)
}

/// Byte offset, in `raw` (Cedar source text from a string literal's opening quote on), of the
/// first character of the string that does not show as itself, written as it is or as an
/// escape (`\n`, `\u{1b}`).
pub(crate) fn cedar_offset(raw: &str) -> Option<usize> {
    let body = raw.strip_prefix('"')?;
    // To the closing quote: the string's own text only.
    let mut end = body.len();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '"' => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    first_hidden(&body[..end], true).map(|i| 1 + i)
}

/// Where in a string literal's body the first hidden character is, reading backslash escapes
/// (TOML's and Cedar's: `\n`, `\t`, `\e`, `\0`, `\xHH`, `\uHHHH`, `\UHHHHHHHH`, `\u{H…}`) when
/// `escapes`. A backslash before white space (TOML's line continuation) makes no character.
fn first_hidden(body: &str, escapes: bool) -> Option<usize> {
    let mut chars = body.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if !(escapes && c == '\\') {
            if hidden(c) {
                return Some(at);
            }
            continue;
        }
        let (_, e) = chars.next()?;
        let decoded = match e {
            'b' => Some('\u{8}'),
            't' => Some('\t'),
            'n' => Some('\n'),
            'f' => Some('\u{c}'),
            'r' => Some('\r'),
            'e' => Some('\u{1b}'),
            '0' => Some('\0'),
            'x' | 'u' | 'U' => {
                let braced = chars.peek().is_some_and(|(_, c)| *c == '{');
                if braced {
                    chars.next();
                }
                let most = match (e, braced) {
                    (_, true) => 8,
                    ('x', _) => 2,
                    ('u', _) => 4,
                    _ => 8,
                };
                let mut digits = String::new();
                while digits.len() < most
                    && let Some((_, d)) = chars.peek().copied()
                    && d.is_ascii_hexdigit()
                {
                    digits.push(d);
                    chars.next();
                }
                if braced && chars.peek().is_some_and(|(_, c)| *c == '}') {
                    chars.next();
                }
                u32::from_str_radix(&digits, 16)
                    .ok()
                    .and_then(char::from_u32)
            }
            e if e.is_whitespace() => {
                while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
                    chars.next();
                }
                None
            }
            _ => None,
        };
        if decoded.is_some_and(hidden) {
            return Some(at);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_each_character_once() {
        assert_eq!(problem("@reason", "frozen for the release"), None);
        assert_eq!(problem("@reason", "déploiement 🔥 修复"), None);
        assert_eq!(
            problem("@reason", "a\u{1b}[2J\u{1b}b").as_deref(),
            Some(
                "@reason contains a control character (U+001B): remove it, since text shown to people may hold no control or invisible characters"
            )
        );
        let got = problem(
            "`description` of role `x`",
            "a\nb\u{202e}c\td\u{200b}e\u{7}",
        )
        .unwrap();
        assert!(
            got.starts_with("`description` of role `x` contains a line break (U+000A), an invisible or text-reordering character (U+202E), a tab (U+0009), an invisible or text-reordering character (U+200B) and more: remove them"),
            "{got}"
        );
    }

    #[test]
    fn escapes_what_does_not_show() {
        assert_eq!(escaped("plain"), "plain");
        assert_eq!(escaped("a\u{1b}b\nc\u{202e}"), "a\\u{1b}b\\u{a}c\\u{202e}");
    }

    #[test]
    fn finds_the_character_in_the_source() {
        assert_eq!(toml_offset("\"x\\u001b[31my\""), Some(2));
        assert_eq!(toml_offset("\"x\\e\""), Some(2));
        assert_eq!(toml_offset("\"a\\\\nb\""), None);
        assert_eq!(toml_offset("'C:\\new'"), None);
        assert_eq!(toml_offset("'a\u{202e}b'"), Some(2));
        assert_eq!(toml_offset("\"\"\"\nline one\nline two\"\"\""), Some(12));
        assert_eq!(toml_offset("\"\"\"\none \\\n   two\"\"\""), None);
        assert_eq!(toml_offset("7"), None);
        assert_eq!(cedar_offset("\"frozen\\u{1b}[2J\")"), Some(7));
        assert_eq!(cedar_offset("\"a\\\"b\\n\") @id(\"\\n\")"), Some(5));
        assert_eq!(cedar_offset("\"ok\") @x(\"\\n\")"), None);
        assert_eq!(cedar_offset("\"a\u{202e}\""), Some(2));
    }
}
