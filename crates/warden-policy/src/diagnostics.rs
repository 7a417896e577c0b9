//! Problems found while loading a policy directory, each pinned to a file, line and column.
//!
//! `warden policy check` exists so that a policy change is caught in review rather than at the
//! first request, so every problem carries a position an editor can jump to, and loading keeps
//! going after the first problem so one run shows them all.
//!
//! Some findings are warnings rather than errors: a rule that is valid but most likely does
//! not say what its author meant (a comparison with an environment no target has). A warning
//! does not keep a policy from loading, since what it doubts may be meant (a target yet to
//! come), but it is shown wherever errors are, so that a typo does not go live unseen.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;

use crate::free_text;

/// Whether a finding keeps the policy from loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The policy is refused.
    Error,
    /// The policy loads, but probably does not say what was meant.
    Warning,
}

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// File name relative to the policy directory, e.g. `targets.toml` or `tests/access.toml`.
    pub file: String,
    /// 1-based line, when the problem has a position.
    pub line: Option<usize>,
    /// 1-based column in characters, when the problem has a position.
    pub column: Option<usize>,
    pub message: String,
    pub severity: Severity,
}

impl Diagnostic {
    /// Whether this keeps the policy from loading.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A file's name is as the directory holds it, which may be anything.
        f.write_str(&free_text::escaped(&self.file))?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        let mark = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        write!(f, ": {mark}{}", self.message)
    }
}

/// Every problem that kept a policy directory (or its fixtures) from loading, with the
/// warnings found beside them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Ordered by file, then position.
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    /// Sorts `diagnostics` into reading order; `None` when there are none, so callers can write
    /// `if let Some(report) = Report::from_diagnostics(found)`. A message that quotes something
    /// from a policy file holding characters that do not show as themselves (a key with an
    /// escape sequence in it) has them written as `\u{…}`: each problem shows as one line of
    /// plain text.
    pub(crate) fn from_diagnostics(mut diagnostics: Vec<Diagnostic>) -> Option<Self> {
        if diagnostics.is_empty() {
            return None;
        }
        for d in &mut diagnostics {
            if let Cow::Owned(escaped) = free_text::escaped(&d.message) {
                d.message = escaped;
            }
        }
        diagnostics.sort_by(|a, b| {
            (&a.file, a.line, a.column, a.severity).cmp(&(&b.file, b.line, b.column, b.severity))
        });
        diagnostics.dedup();
        Some(Self { diagnostics })
    }

    /// Whether any finding keeps the policy from loading (the others are warnings).
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// The errors alone: what a refusal to load names as its reasons.
    pub fn errors(&self) -> Self {
        Self {
            diagnostics: self
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .cloned()
                .collect(),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Report {}

/// Where something is written in a policy file, kept with what was loaded from there so that
/// problems found later (an issuer's check of a role's settings) can name it too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Place {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl Place {
    /// A problem found here.
    pub fn problem(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.file.clone(),
            line: Some(self.line),
            column: Some(self.column),
            message: message.into(),
            severity: Severity::Error,
        }
    }

    /// A warning about what is written here.
    pub fn warning(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..self.problem(message)
        }
    }
}

/// A file being loaded: its name for messages and its text for turning byte offsets (which the
/// TOML and Cedar parsers report) into lines and columns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source<'a> {
    pub name: &'a str,
    pub text: &'a str,
}

impl<'a> Source<'a> {
    pub fn new(name: &'a str, text: &'a str) -> Self {
        Self { name, text }
    }

    /// A problem at byte `offset` of the file.
    pub fn at(&self, offset: usize, message: impl Into<String>) -> Diagnostic {
        self.place(offset).problem(message)
    }

    /// Byte `offset` of the file as a place.
    pub fn place(&self, offset: usize) -> Place {
        let (line, column) = position(self.text, offset);
        Place {
            file: self.name.to_owned(),
            line,
            column,
        }
    }

    /// A problem with the file as a whole.
    pub fn whole(&self, message: impl Into<String>) -> Diagnostic {
        file_diagnostic(self.name, message)
    }
}

/// A problem with a file as a whole, e.g. one that is missing or unreadable.
pub(crate) fn file_diagnostic(file: &str, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        file: file.to_owned(),
        line: None,
        column: None,
        message: message.into(),
        severity: Severity::Error,
    }
}

/// 1-based line and character column of byte `offset` in `text`. Offsets past the end or inside
/// a multi-byte character are moved back to the nearest character start, so a slightly-off
/// offset from a parser still yields a usable position.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut at = offset.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_characters() {
        let text = "ab\nçd\n";
        assert_eq!(position(text, 0), (1, 1));
        assert_eq!(position(text, 1), (1, 2));
        assert_eq!(position(text, 3), (2, 1));
        // 'ç' is two bytes: the 'd' after it is column 2.
        assert_eq!(position(text, 5), (2, 2));
        assert_eq!(position(text, 4), (2, 1));
        assert_eq!(position(text, 99), (3, 1));
    }

    #[test]
    fn displays_one_problem_per_line() {
        let src = Source::new("a.cedar", "x\ny");
        let report = Report::from_diagnostics(vec![
            src.at(2, "second"),
            file_diagnostic("targets.toml", "missing"),
            src.at(0, "first"),
        ])
        .unwrap();
        assert_eq!(
            report.to_string(),
            "a.cedar:1:1: first\na.cedar:2:1: second\ntargets.toml: missing"
        );
        assert!(Report::from_diagnostics(vec![]).is_none());
    }

    #[test]
    fn problems_show_as_one_line_of_plain_text() {
        let src = Source::new("a\u{1b}.toml", "x");
        let report =
            Report::from_diagnostics(vec![src.at(0, "unknown key `a\nb.cedar:1:1: \u{202e}`")])
                .unwrap();
        assert_eq!(
            report.to_string(),
            "a\\u{1b}.toml:1:1: unknown key `a\\u{a}b.cedar:1:1: \\u{202e}`"
        );
    }
}
