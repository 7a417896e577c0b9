//! Grant statements with placeholders, as written in a role's `grants` setting.
//!
//! The statements come from the policy repository and are trusted; the values put into them
//! are not text to paste. Each placeholder is replaced by a value the issuer has already quoted
//! for its SQL dialect, so no account name, password or timestamp can change what a statement
//! means:
//!
//! - `{{name}}`: the new account, as the dialect names a grantee;
//! - `{{password}}`: its password, as a string literal;
//! - `{{expires}}`: when the grant ends (UTC), as a string literal.
//!
//! Anything else between `{{` and `}}` is refused when the settings are checked, so a typo
//! fails `warden policy check` rather than a request.

use crate::Error;
use crate::settings::{Problems, string_list};

const KNOWN: &str = "{{name}}, {{password}}, {{expires}}";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Name,
    Password,
    Expires,
}

/// One grant statement, split at its placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    source: String,
    parts: Vec<Part>,
}

/// The already-quoted SQL that replaces each placeholder.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Values<'a> {
    pub name: &'a str,
    pub password: &'a str,
    pub expires: &'a str,
}

impl Template {
    /// Splits `source` at its placeholders; unknown or unclosed ones are settings errors.
    pub(crate) fn parse(source: &str) -> Result<Self, Error> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| {
                Error::Settings(format!(
                    "grant statement {source:?} has a `{{{{` without a closing `}}}}`"
                ))
            })?;
            parts.push(match after[..close].trim() {
                "name" => Part::Name,
                "password" => Part::Password,
                "expires" => Part::Expires,
                other => {
                    return Err(Error::Settings(format!(
                        "grant statement {source:?} uses the unknown placeholder `{{{{{other}}}}}`; known: {KNOWN}"
                    )));
                }
            });
            let before = rest[..open].chars().last();
            rest = &after[close + 2..];
            if let Some(q @ ('\'' | '"' | '`')) = before
                && rest.starts_with(q)
            {
                return Err(Error::Settings(format!(
                    "grant statement {source:?} quotes a placeholder; each is quoted already, so write `{{{{{}}}}}` without the {q}s",
                    after[..close].trim()
                )));
            }
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// The statement as written, placeholders and all: safe to show in messages.
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// Whether the statement holds the password once rendered.
    pub(crate) fn uses_password(&self) -> bool {
        self.parts.contains(&Part::Password)
    }

    /// The statement to run.
    pub(crate) fn render(&self, values: Values<'_>) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.as_str(),
                Part::Name => values.name,
                Part::Password => values.password,
                Part::Expires => values.expires,
            })
            .collect()
    }
}

/// Reads the required, non-empty `grants` list of a role of `kind`, noting every problem in
/// `problems` (the statements that could be read are returned meanwhile).
pub(crate) fn read_grants(
    kind: &str,
    settings: &crate::Settings,
    problems: &mut Problems,
) -> Vec<Template> {
    let named = format!("`grants` of a {kind} role");
    let grants = match problems.check("grants", string_list(settings, "grants", &named)) {
        Some(Some(g)) if !g.is_empty() => g,
        Some(_) => {
            problems.add(
                settings.contains_key("grants").then_some("grants"),
                format!("a {kind} role needs `grants = [\"GRANT ... TO {{{{name}}}}\", ...]`"),
            );
            return Vec::new();
        }
        None => return Vec::new(),
    };
    let mut templates = Vec::new();
    for g in &grants {
        if g.trim().is_empty() {
            problems.add(
                Some("grants"),
                format!("`grants` of a {kind} role holds an empty statement"),
            );
        } else if let Some(t) = problems.check("grants", Template::parse(g)) {
            templates.push(t);
        }
    }
    if templates.len() == grants.len() && !templates.iter().any(|t| t.parts.contains(&Part::Name)) {
        problems.add(
            Some("grants"),
            format!(
                "no statement in `grants` of a {kind} role names the account with {{{{name}}}}: it would get none of them, e.g. \"GRANT ... TO {{{{name}}}}\""
            ),
        );
    }
    templates
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The grants read, or the first problem, as an issue would read them.
    fn parse_grants(kind: &str, settings: &crate::Settings) -> Result<Vec<Template>, Error> {
        let mut problems = Problems::default();
        let read = read_grants(kind, settings, &mut problems);
        problems.or_first(read)
    }

    const VALUES: Values<'static> = Values {
        name: "\"w_a_000000000001\"",
        password: "'pw'",
        expires: "'2026-01-01 11:00:00+00'",
    };

    #[test]
    fn quoted_placeholders_and_statements_without_the_account_are_refused() {
        for quoted in [
            "GRANT x TO '{{name}}'",
            "GRANT x TO \"{{ name }}\"",
            "SET PASSWORD = `{{password}}`",
        ] {
            let e = Template::parse(quoted).unwrap_err().to_string();
            assert!(e.contains("quotes a placeholder"), "{e}");
        }
        assert!(Template::parse("GRANT x TO {{name}}; SELECT '{{expires}}x'").is_ok());
        let settings = |g: &[&str]| {
            serde_json::json!({ "grants": g })
                .as_object()
                .cloned()
                .unwrap()
        };
        let e = parse_grants("postgres", &settings(&["GRANT SELECT ON t TO me"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("names the account"), "{e}");
        assert!(parse_grants("postgres", &settings(&["SELECT 1", "GRANT r TO {{name}}"])).is_ok());
    }

    #[test]
    fn placeholders_are_replaced_by_quoted_values() {
        let t =
            Template::parse("GRANT SELECT ON t TO {{name}}; -- {{ password }} until {{expires}}")
                .unwrap();
        assert_eq!(
            t.render(VALUES),
            "GRANT SELECT ON t TO \"w_a_000000000001\"; -- 'pw' until '2026-01-01 11:00:00+00'"
        );
        assert_eq!(
            t.source(),
            "GRANT SELECT ON t TO {{name}}; -- {{ password }} until {{expires}}"
        );
        assert!(t.uses_password());
        let plain = Template::parse("SELECT 1").unwrap();
        assert_eq!(plain.render(VALUES), "SELECT 1");
        assert!(!plain.uses_password());
    }

    #[test]
    fn unknown_and_unclosed_placeholders_are_refused() {
        let err = |s: &str| Template::parse(s).unwrap_err().to_string();
        assert!(err("GRANT x TO {{user}}").contains("unknown placeholder `{{user}}`"));
        assert!(err("GRANT x TO {{name}").contains("without a closing"));
        assert!(err("GRANT x TO {{{name}}}").contains("unknown placeholder"));
    }

    #[test]
    fn grants_are_required() {
        let s = |v: serde_json::Value| v.as_object().cloned().unwrap();
        let err = |v: serde_json::Value| parse_grants("postgres", &s(v)).unwrap_err().to_string();
        assert!(err(serde_json::json!({})).contains("needs `grants"));
        assert!(err(serde_json::json!({"grants": []})).contains("needs `grants"));
        assert!(err(serde_json::json!({"grants": [" "]})).contains("empty statement"));
        assert!(err(serde_json::json!({"grants": "GRANT"})).contains("list of strings"));
        assert_eq!(
            parse_grants(
                "postgres",
                &s(serde_json::json!({"grants": ["A {{name}}", "B"]}))
            )
            .unwrap()
            .len(),
            2
        );
    }
}
