//! Reading TOML files (targets and test fixtures) by hand, with positions.
//!
//! The files are walked as a spanned tree rather than deserialized into structs so that one run
//! reports every unknown key, wrong type and bad value with its own line, instead of stopping at
//! the first one as serde would.

use std::fmt::Display;
use std::ops::Range;
use std::str::FromStr;

use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

use crate::diagnostics::{Diagnostic, Source};
use crate::free_text;

/// A key of a table, with its position.
pub(crate) type Key<'i> = Spanned<DeString<'i>>;
/// A value, with its position.
pub(crate) type Item<'i> = Spanned<DeValue<'i>>;

/// Parses a whole file, reporting every syntax error; `None` if there was any, since the tree
/// recovered around a syntax error is not trustworthy enough to check further.
pub(crate) fn parse<'i>(src: Source<'i>, out: &mut Vec<Diagnostic>) -> Option<DeTable<'i>> {
    let (doc, errors) = DeTable::parse_recoverable(src.text);
    if errors.is_empty() {
        return Some(doc.into_inner());
    }
    for e in errors {
        let mut message = e.message().trim().to_owned();
        let d = match e.span() {
            Some(span) => {
                // "duplicate key" alone does not say which.
                let named = src.text.get(span.clone()).map(str::trim);
                if let Some(key) =
                    named.filter(|k| !k.is_empty() && k.len() <= 100 && !k.contains('\n'))
                    && !message.contains(key)
                {
                    message = format!("{message}: `{key}`");
                }
                src.at(span.start, message)
            }
            None => src.whole(message),
        };
        // The parser may report one mistake twice, as it recovers.
        if !out.contains(&d) {
            out.push(d);
        }
    }
    None
}

/// A problem at the position of `span`.
pub(crate) fn at(src: Source<'_>, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
    src.at(span.start, message)
}

/// A key the file format does not define; typos must not be silently ignored.
pub(crate) fn unknown_key(
    src: Source<'_>,
    key: &Key<'_>,
    place: &str,
    allowed: &[&str],
) -> Diagnostic {
    at(
        src,
        key.span(),
        format!(
            "unknown key `{}` {place}; allowed keys: {}",
            key.get_ref(),
            allowed.join(", ")
        ),
    )
}

/// The value as a string, or a problem saying `what` must be one.
pub(crate) fn string<'a>(
    src: Source<'_>,
    what: &str,
    item: &'a Item<'_>,
    out: &mut Vec<Diagnostic>,
) -> Option<&'a str> {
    match item.get_ref() {
        DeValue::String(s) => Some(s.as_ref()),
        other => {
            out.push(wrong_type(src, what, "a string", item.span(), other));
            None
        }
    }
}

/// The value as a string that is shown to people (a description, a name in output), or a
/// problem saying `what` must be one; a problem too, at the character, when it holds one that
/// does not show as itself (see [`crate::free_text`]). The string is returned either way, so
/// that nothing else is reported missing.
pub(crate) fn text<'a>(
    src: Source<'_>,
    what: &str,
    item: &'a Item<'_>,
    out: &mut Vec<Diagnostic>,
) -> Option<&'a str> {
    let s = string(src, what, item, out)?;
    check_shown(src, what, s, &item.span(), out);
    Some(s)
}

/// Reports `what`, the string `value` written at `span`, when it holds a character that does
/// not show as itself, at that character.
pub(crate) fn check_shown(
    src: Source<'_>,
    what: &str,
    value: &str,
    span: &Range<usize>,
    out: &mut Vec<Diagnostic>,
) {
    if let Some(message) = free_text::problem(what, value) {
        let within = src
            .text
            .get(span.clone())
            .and_then(free_text::toml_offset)
            .unwrap_or(0);
        out.push(src.at(span.start + within, message));
    }
}

/// The value parsed with `FromStr` from a string, reporting the parser's message on failure.
pub(crate) fn parsed<T>(
    src: Source<'_>,
    what: &str,
    item: &Item<'_>,
    out: &mut Vec<Diagnostic>,
) -> Option<T>
where
    T: FromStr,
    T::Err: Display,
{
    let s = string(src, what, item, out)?;
    match s.parse() {
        Ok(v) => Some(v),
        Err(e) => {
            out.push(at(src, item.span(), format!("{what}: {e}")));
            None
        }
    }
}

/// The value as a boolean.
pub(crate) fn boolean(
    src: Source<'_>,
    what: &str,
    item: &Item<'_>,
    out: &mut Vec<Diagnostic>,
) -> Option<bool> {
    match item.get_ref() {
        DeValue::Boolean(b) => Some(*b),
        other => {
            out.push(wrong_type(src, what, "true or false", item.span(), other));
            None
        }
    }
}

/// The value as a table.
pub(crate) fn table<'a, 'i>(
    src: Source<'_>,
    what: &str,
    item: &'a Item<'i>,
    out: &mut Vec<Diagnostic>,
) -> Option<&'a DeTable<'i>> {
    match item.get_ref() {
        DeValue::Table(t) => Some(t),
        other => {
            out.push(wrong_type(src, what, "a table", item.span(), other));
            None
        }
    }
}

/// The value as an array of values, each with its position.
pub(crate) fn array<'a, 'i>(
    src: Source<'_>,
    what: &str,
    item: &'a Item<'i>,
    out: &mut Vec<Diagnostic>,
) -> Option<&'a [Item<'i>]> {
    match item.get_ref() {
        DeValue::Array(a) => Some(a),
        other => {
            out.push(wrong_type(src, what, "an array", item.span(), other));
            None
        }
    }
}

/// The value as an array of strings; every element that is not a string is reported.
pub(crate) fn strings<'a>(
    src: Source<'_>,
    what: &str,
    item: &'a Item<'_>,
    out: &mut Vec<Diagnostic>,
) -> Option<Vec<(&'a str, Range<usize>)>> {
    let items = array(src, what, item, out)?;
    let before = out.len();
    let found: Vec<_> = items
        .iter()
        .filter_map(|i| {
            string(src, &format!("each entry of {what}"), i, out).map(|s| (s, i.span()))
        })
        .collect();
    (out.len() == before).then_some(found)
}

fn wrong_type(
    src: Source<'_>,
    what: &str,
    expected: &str,
    span: Range<usize>,
    got: &DeValue<'_>,
) -> Diagnostic {
    at(
        src,
        span,
        format!("{what} must be {expected}, not {}", got.type_str()),
    )
}

/// Converts a TOML value into JSON, for issuer settings that this crate passes through without
/// interpreting. Fails only for numbers JSON cannot carry (out-of-range integers, NaN, infinity).
pub(crate) fn to_json(value: &DeValue<'_>) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    Ok(match value {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => Value::from(
            i64::from_str_radix(i.as_str(), i.radix())
                .map_err(|_| format!("integer {i} is out of range"))?,
        ),
        DeValue::Float(f) => f
            .as_str()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("number {f} cannot be represented"))?,
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::String(d.to_string()),
        DeValue::Array(a) => Value::Array(
            a.iter()
                .map(|v| to_json(v.get_ref()))
                .collect::<Result<_, _>>()?,
        ),
        DeValue::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| Ok((k.get_ref().to_string(), to_json(v.get_ref())?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_settings_to_json() {
        let text = "a = 0x1f\nb = 1.5\nc = [true, \"x\"]\nd = { e = 1979-05-27 }\n";
        let mut out = Vec::new();
        let doc = parse(Source::new("f.toml", text), &mut out).unwrap();
        let json: serde_json::Map<_, _> = doc
            .iter()
            .map(|(k, v)| (k.get_ref().to_string(), to_json(v.get_ref()).unwrap()))
            .collect();
        assert_eq!(
            serde_json::Value::Object(json),
            serde_json::json!({"a": 31, "b": 1.5, "c": [true, "x"], "d": {"e": "1979-05-27"}})
        );
        let huge = parse(Source::new("f.toml", "n = inf\n"), &mut out).unwrap();
        assert!(to_json(huge["n"].get_ref()).is_err());
    }

    #[test]
    fn reports_every_syntax_error() {
        let mut out = Vec::new();
        assert!(parse(Source::new("f.toml", "a = \nb = 1\nc = ]\n"), &mut out).is_none());
        let lines: Vec<_> = out.iter().map(|d| d.line).collect();
        assert!(
            lines.contains(&Some(1)) && lines.contains(&Some(3)),
            "{out:?}"
        );
    }
}
