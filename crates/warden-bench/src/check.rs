//! What counts as a successful response: the expected HTTP status and,
//! optionally, expected values of fields in the JSON body.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use anyhow::{Context, bail};
use serde_json::Value;
use serde_json::value::RawValue;

/// How much of a failing response body an error message keeps.
const BODY_EXCERPT: usize = 600;

/// A rule on one JSON field, written `PATH=VALUE` (equal) or `PATH^=PREFIX`
/// (starts with). `PATH` is dot-separated: `data.signed_key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRule {
    path: Vec<String>,
    want: Want,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Equals(String),
    Prefix(String),
}

impl FromStr for FieldRule {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (path, want) = if let Some((path, prefix)) = s.split_once("^=") {
            (path, Want::Prefix(prefix.to_owned()))
        } else if let Some((path, value)) = s.split_once('=') {
            (path, Want::Equals(value.to_owned()))
        } else {
            bail!("expected PATH=VALUE or PATH^=PREFIX, got {s:?}");
        };
        if path.is_empty() || path.split('.').any(str::is_empty) {
            bail!("empty field name in {s:?}");
        }
        Ok(FieldRule {
            path: path.split('.').map(str::to_owned).collect(),
            want,
        })
    }
}

impl fmt::Display for FieldRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.want {
            Want::Equals(v) => write!(f, "{}={v}", self.path.join(".")),
            Want::Prefix(p) => write!(f, "{}^={p}", self.path.join(".")),
        }
    }
}

impl FieldRule {
    /// Finds the field without building the whole document: each object on the path is read
    /// as its members' unparsed text, and only the field itself is parsed.
    fn check(&self, body: &RawValue) -> Result<(), String> {
        let missing = || format!("no field {}", self.path.join("."));
        let mut at = body;
        for key in &self.path {
            let members: HashMap<Cow<'_, str>, &RawValue> =
                serde_json::from_str(at.get()).map_err(|_| missing())?;
            at = members.get(key.as_str()).copied().ok_or_else(missing)?;
        }
        let at: Value = serde_json::from_str(at.get()).map_err(|e| e.to_string())?;
        // Strings compare by their content, anything else by its JSON text.
        let text = at.as_str().map_or_else(|| at.to_string(), str::to_owned);
        let ok = match &self.want {
            Want::Equals(v) => text == *v,
            Want::Prefix(p) => text.starts_with(p.as_str()),
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "field {} is {text:?}, expected {self}",
                self.path.join(".")
            ))
        }
    }
}

/// The status and field rules every response must meet.
#[derive(Debug, Clone)]
pub struct Expectation {
    pub status: u16,
    pub fields: Vec<FieldRule>,
}

impl Expectation {
    /// `Ok` if the response meets every rule, else a one-line reason with an
    /// excerpt of the body.
    pub fn check(&self, status: u16, body: &[u8]) -> Result<(), String> {
        let fail = |why: String| Err(format!("{why}; body: {}", excerpt(body)));
        if status != self.status {
            return fail(format!("HTTP {status}, expected {}", self.status));
        }
        if self.fields.is_empty() {
            return Ok(());
        }
        let json: &RawValue = match std::str::from_utf8(body)
            .context("response is not UTF-8")
            .and_then(|text| serde_json::from_str(text).context("response is not JSON"))
        {
            Ok(v) => v,
            Err(e) => return fail(format!("{e:#}")),
        };
        for rule in &self.fields {
            if let Err(why) = rule.check(json) {
                return fail(why);
            }
        }
        Ok(())
    }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(BODY_EXCERPT) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn expect(status: u16, rules: &[&str]) -> Expectation {
        Expectation {
            status,
            fields: rules.iter().map(|r| r.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn parses_rules() {
        let rule: FieldRule = "data.signed_key^=ssh-ed25519-cert".parse().unwrap();
        assert_eq!(rule.to_string(), "data.signed_key^=ssh-ed25519-cert");
        let rule: FieldRule = "state=active".parse().unwrap();
        assert_eq!(rule.to_string(), "state=active");
        assert!("state".parse::<FieldRule>().is_err());
        assert!("a..b=c".parse::<FieldRule>().is_err());
    }

    #[test]
    fn checks_status_and_fields() {
        let e = expect(201, &["state=active", "grant.ttl_secs=3600"]);
        assert!(
            e.check(201, br#"{"state":"active","grant":{"ttl_secs":3600}}"#)
                .is_ok()
        );
        let err = e
            .check(201, br#"{"state":"pending","grant":{"ttl_secs":3600}}"#)
            .unwrap_err();
        assert!(
            err.contains(r#"field state is "pending", expected state=active"#),
            "{err}"
        );
        let err = e.check(403, b"denied").unwrap_err();
        assert_eq!(err, "HTTP 403, expected 201; body: denied");
        assert!(e.check(201, b"not json").unwrap_err().contains("not JSON"));
        assert!(expect(200, &[]).check(200, b"anything").is_ok());
        let prefix = expect(200, &["data.signed_key^=ssh-ed25519-cert-v01@openssh.com "]);
        assert!(
            prefix
                .check(
                    200,
                    br#"{"data":{"signed_key":"ssh-ed25519-cert-v01@openssh.com AAAA"}}"#
                )
                .is_ok()
        );
        assert!(
            prefix
                .check(200, br#"{"data":{}}"#)
                .unwrap_err()
                .contains("no field data.signed_key")
        );
    }
}
