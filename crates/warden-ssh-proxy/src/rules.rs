//! A role's live controls: command deny rules and the file-transfer switch, and the line
//! tracker that applies deny rules to interactive shells.
//!
//! Exec requests are checked exactly: the command string the client sent is what the target
//! would run. Interactive shells are checked line by line, from a reconstruction of what the
//! user typed: printable characters, backspace, Ctrl-U and Ctrl-W are followed; on Enter the
//! line is matched and, if denied, the Enter is not sent and Ctrl-C is sent instead, so the
//! shell discards the line. What a line rule cannot catch — it is a guard rail, not a
//! sandbox: text the shell itself produces (tab completion, history recall with arrows or
//! `!!`, aliases, functions, variables, command substitution), commands inside scripts or
//! programs the user starts (`sh -c`, `python`, an editor's `:!`), input that full-screen
//! programs interpret themselves, and pasted text containing cursor movements. Lines with
//! escape sequences are still matched on their visible characters.

use regex::Regex;

/// A role's controls.
#[derive(Debug, Clone)]
pub struct Rules {
    deny: Vec<Regex>,
    /// Whether scp/sftp (the `sftp` subsystem, `scp` exec) is allowed.
    pub file_transfer: bool,
    /// Whether keystrokes are recorded (`"i"` events).
    pub record_input: bool,
}

impl Rules {
    /// Rules from deny patterns (regular expressions, unanchored).
    pub fn new(
        deny: &[String],
        file_transfer: bool,
        record_input: bool,
    ) -> Result<Self, regex::Error> {
        Ok(Self {
            deny: deny
                .iter()
                .map(|p| Regex::new(p))
                .collect::<Result<_, _>>()?,
            file_transfer,
            record_input,
        })
    }

    /// The deny pattern `command` matches, if any.
    pub fn denies(&self, command: &str) -> Option<&str> {
        let trimmed = command.trim();
        self.deny
            .iter()
            .find(|r| r.is_match(trimmed))
            .map(Regex::as_str)
    }

    /// Whether any command is denied (so interactive input must be tracked).
    pub fn has_deny(&self) -> bool {
        !self.deny.is_empty()
    }
}

/// What to do with a chunk of interactive input.
#[derive(Debug, PartialEq, Eq)]
pub struct Filtered {
    /// Bytes to send to the target.
    pub forward: Vec<u8>,
    /// Lines that were blocked, with the pattern that blocked them.
    pub blocked: Vec<(String, String)>,
}

/// Follows the line being typed in an interactive shell.
#[derive(Debug, Default)]
pub struct LineTracker {
    line: String,
    escape: Escape,
}

/// Where in an escape sequence the keystrokes are.
#[derive(Debug, Default, PartialEq, Eq)]
enum Escape {
    #[default]
    None,
    /// Just after ESC: `[` or `O` start a sequence (cursor keys and the like); any other key
    /// makes a two-key meta command (readline's `ESC 1` numeric argument, say) and ends it.
    Started,
    /// Inside a sequence: skip until its final byte.
    Sequence,
}

impl LineTracker {
    /// Feeds keystrokes; a submitted line that `rules` deny is replaced by Ctrl-C.
    pub fn feed(&mut self, rules: &Rules, input: &[u8]) -> Filtered {
        let mut out = Filtered {
            forward: Vec::with_capacity(input.len()),
            blocked: Vec::new(),
        };
        let text = String::from_utf8_lossy(input);
        let mut buf = [0u8; 4];
        for c in text.chars() {
            match self.escape {
                Escape::Started => {
                    out.forward
                        .extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    self.escape = if c == '[' || c == 'O' {
                        Escape::Sequence
                    } else {
                        Escape::None
                    };
                    continue;
                }
                Escape::Sequence => {
                    out.forward
                        .extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    if c.is_ascii_alphabetic() || c == '~' {
                        self.escape = Escape::None;
                    }
                    continue;
                }
                Escape::None => {}
            }
            match c {
                // Enter, and Ctrl-O (readline runs the line, then fetches the next one).
                '\r' | '\n' | '\u{f}' => {
                    let line = std::mem::take(&mut self.line);
                    if let Some(pattern) = rules.denies(&line) {
                        out.forward.push(0x03);
                        out.blocked.push((line, pattern.to_owned()));
                        continue;
                    }
                }
                '\u{7f}' | '\u{8}' => {
                    self.line.pop();
                }
                '\u{15}' | '\u{3}' => self.line.clear(),
                '\u{17}' => {
                    let kept = self.line.trim_end().len();
                    self.line.truncate(kept);
                    let cut = self.line.rfind(' ').map_or(0, |i| i + 1);
                    self.line.truncate(cut);
                }
                '\u{1b}' => self.escape = Escape::Started,
                c if !c.is_control() => self.line.push(c),
                _ => {}
            }
            out.forward
                .extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::new(&["^rm -rf".into(), "shutdown".into()], true, false).unwrap()
    }

    #[test]
    fn exec_commands_are_matched() {
        let r = rules();
        assert_eq!(r.denies("rm -rf /"), Some("^rm -rf"));
        assert_eq!(r.denies("  sudo shutdown -h now"), Some("shutdown"));
        assert_eq!(r.denies("ls -l"), None);
    }

    #[test]
    fn interactive_lines_are_tracked() {
        let r = rules();
        let cases: &[(&[u8], &[u8], usize)] = &[
            (b"ls\r", b"ls\r", 0),
            (b"rm -rf /tmp/x\r", b"rm -rf /tmp/x\x03", 1),
            // Backspace turns "rm -rx" into "rm -r" + "f": still denied.
            (b"rm -rx\x7ff /\r", b"rm -rx\x7ff /\x03", 1),
            // Ctrl-U discards what was typed before it.
            (b"shutdown\x15echo hi\r", b"shutdown\x15echo hi\r", 0),
            // Arrow keys are passed on and do not end up in the line.
            (b"\x1b[Ashutdown\r", b"\x1b[Ashutdown\x03", 1),
            // A meta key (readline's numeric argument) takes one key, not the next letter.
            (b"\x1b1rm -rf /\r", b"\x1b1rm -rf /\x03", 1),
            // Ctrl-O runs the line too.
            (b"rm -rf /\x0f", b"rm -rf /\x03", 1),
        ];
        for (input, forward, blocked) in cases {
            let mut t = LineTracker::default();
            let f = t.feed(&r, input);
            assert_eq!(&f.forward, forward, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(
                f.blocked.len(),
                *blocked,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn a_line_may_arrive_in_pieces() {
        let r = rules();
        let mut t = LineTracker::default();
        assert!(t.feed(&r, b"shut").blocked.is_empty());
        let f = t.feed(&r, b"down\r");
        assert_eq!(f.blocked, vec![("shutdown".into(), "shutdown".into())]);
    }
}
