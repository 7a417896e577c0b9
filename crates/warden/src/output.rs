//! Human tables or JSON, chosen once per invocation.

use serde::Serialize;

/// How to print results.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

/// `word` as one word for a POSIX shell: as it is when it holds nothing the shell reads, else
/// in single quotes. Printed commands are pasted into shells (a path with a space, say).
pub fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./,:@%+=".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// `n` and `noun`, plural unless `n` is one: "1 rule", "3 rules".
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

impl Output {
    /// Prints `value` as pretty JSON.
    pub fn json<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        use std::io::Write;
        let text = serde_json::to_string_pretty(value)?;
        // A closed pipe (`| head`) is the reader's choice, not an error.
        let _ = writeln!(std::io::stdout().lock(), "{text}");
        Ok(())
    }

    /// Prints a text document the server keeps (a key, a signed note, a key list) as it is,
    /// or with `--json` as `{"NAME": TEXT}`.
    pub fn document(&self, name: &str, text: &str) -> anyhow::Result<()> {
        if self.json {
            self.json(&serde_json::json!({ name: text }))
        } else {
            print!("{text}");
            Ok(())
        }
    }
}

/// Prints rows as a left-aligned table with a header; under it, `(none)` for no rows, so an
/// empty answer does not read as a cut one.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    for line in table_lines(header, rows) {
        println!("{line}");
    }
    if rows.is_empty() {
        println!("(none)");
    }
}

/// The lines of [`table`]: columns as wide as their widest cell on a terminal.
fn table_lines(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    use unicode_width::UnicodeWidthStr;
    let mut widths: Vec<usize> = header.iter().map(|h| h.width()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.width());
            }
        }
    }
    let line = |cells: &[String]| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = widths.get(i).map_or(0, |w| w.saturating_sub(c.width()));
                format!("{c}{}", " ".repeat(pad))
            })
            .collect();
        s.join("  ").trim_end().to_owned()
    };
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    std::iter::once(line(&header))
        .chain(rows.iter().map(|r| line(r)))
        .collect()
}

/// Prints `key: value` lines, skipping empty values.
pub fn fields(pairs: &[(&str, String)]) {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in pairs {
        if !v.is_empty() {
            println!("{k:<w$}  {v}");
        }
    }
}

/// The strings of the JSON array `v` (nothing if it is not one), joined by `sep`: one cell.
pub fn joined(v: &serde_json::Value, sep: &str) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .collect::<Vec<_>>()
        .join(sep)
}

/// The RFC 3339 time in field `k` of `v` to the second ([`to_the_second`]); other values as
/// they are, nothing for none.
pub fn instant(v: &serde_json::Value, k: &str) -> String {
    match &v[k] {
        serde_json::Value::String(text) => to_the_second(text),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// An RFC 3339 time to the second, as people read and type it (`2026-12-04T19:41:20Z`),
/// whatever fraction of a second the server sent; text that is not such a time as it is.
pub fn to_the_second(text: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .and_then(|t| t.replace_nanosecond(0).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shell_word_survives_being_pasted() {
        assert_eq!(
            shell_word("/home/a/.config/warden/ssh/x"),
            "/home/a/.config/warden/ssh/x"
        );
        assert_eq!(shell_word("/tmp/h alice/ssh/x"), "'/tmp/h alice/ssh/x'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn columns_line_up_on_a_terminal_whatever_the_characters() {
        let rows = vec![
            vec!["web".to_owned(), "変更-123".to_owned(), "a".to_owned()],
            vec!["db".to_owned(), "CHG-1".to_owned(), "b".to_owned()],
        ];
        let lines = table_lines(&["TARGET", "TICKET", "X"], &rows);
        assert_eq!(
            lines,
            [
                "TARGET  TICKET    X",
                "web     変更-123  a",
                "db      CHG-1     b"
            ]
        );
    }

    use super::instant;

    #[test]
    fn instants_are_shown_to_the_second() {
        let v = serde_json::json!({
            "ns": "2026-12-04T18:41:20.281902057Z",
            "ms": "2026-12-04T18:41:17.931Z",
            "whole": "2026-12-04T18:41:17Z",
            "odd": "soon",
            "none": null,
        });
        assert_eq!(instant(&v, "ns"), "2026-12-04T18:41:20Z");
        assert_eq!(instant(&v, "ms"), "2026-12-04T18:41:17Z");
        assert_eq!(instant(&v, "whole"), "2026-12-04T18:41:17Z");
        assert_eq!(instant(&v, "odd"), "soon");
        assert_eq!(instant(&v, "none"), "");
        assert_eq!(instant(&v, "missing"), "");
    }
}
