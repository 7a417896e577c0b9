//! A role's live controls: command deny rules and the file-transfer switch, and the line
//! tracker that applies deny rules to interactive shells.
//!
//! A deny rule is matched against a command as sent, whole and line by line, and against each
//! command the target's shell would run from it, read as that shell reads it
//! (`exec_reading.rs`): quotes taken out, past separators, keywords and wrappers, into `sh -c`
//! and `eval`. Exec requests are checked so; interactive shells line by line, from a
//! reconstruction of what the user typed: printable characters, backspace, Ctrl-U, Ctrl-W and
//! quoted inserts (Ctrl-V, which puts the next key in the line as itself) are followed, and the
//! keys go on as they were sent, byte for byte; on Enter the line is matched and, if denied,
//! the Enter is not sent and Ctrl-C and Ctrl-U are sent instead, so the shell discards the
//! line. What a line rule cannot catch — it is a guard rail, not a sandbox: text the shell
//! itself produces (tab completion, history recall with arrows or `!!`, aliases, functions,
//! variables, command substitution), commands inside scripts or programs the user starts
//! (a script, `python`, an editor's `:!`), input that full-screen programs interpret
//! themselves, pasted text containing cursor movements, and a line kept by a shell whose
//! interrupt and line-kill keys are both off. Lines with escape sequences are still matched on
//! their visible characters. What else an exec command runs (a transfer tool, a shell reading
//! its input) is read in `exec_reading.rs` too.

use regex::Regex;

use crate::exec_reading::command_lines;

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

    /// The deny pattern `command` matches, if any: the whole of it, any of its lines, since a
    /// shell runs each line as a command of its own (`true<newline>rm -rf /`), or any command
    /// the shell would run from it, written as its words ([`command_lines`]: `true; rm -rf /`,
    /// `r''m -rf /`, `sh -c 'rm -rf /'`, `env FOO=1 rm -rf /`).
    pub fn denies(&self, command: &str) -> Option<&str> {
        std::iter::once(command)
            .chain(command.split(['\n', '\r']))
            .find_map(|text| self.pattern_matching(text.trim()))
            .or_else(|| {
                command_lines(command)
                    .iter()
                    .find_map(|line| self.pattern_matching(line))
            })
    }

    fn pattern_matching(&self, text: &str) -> Option<&str> {
        self.deny
            .iter()
            .find(|r| r.is_match(text))
            .map(Regex::as_str)
    }

    /// Whether any command is denied (so interactive input must be tracked).
    pub fn has_deny(&self) -> bool {
        !self.deny.is_empty()
    }

    /// Whether the controls depend on what a command runs: commands are denied, files may not
    /// be copied, or keystrokes are recorded (a shell's input, which a command may start).
    pub fn depend_on_what_runs(&self) -> bool {
        self.has_deny() || !self.file_transfer || self.record_input
    }
}

/// What replaces the Enter of a denied line. Ctrl-U, the terminal's line-kill key and
/// readline's unix-line-discard, empties the line, also of a shell whose interrupt key is off
/// (`stty intr undef`), which would otherwise keep it for the next Enter; Ctrl-C then
/// interrupts what is left, and the shell starts afresh at a new prompt. In this order: after
/// a Ctrl-U that follows the interrupt, bash drops the next key typed, which this proxy would
/// still count, so a line it read as `Xrm -rf /` would run as `rm -rf /`.
const DISCARD_LINE: [u8; 2] = [0x15, 0x03];

/// What to do with a chunk of interactive input.
#[derive(Debug, PartialEq, Eq)]
pub struct Filtered {
    /// Bytes to send to the target.
    pub forward: Vec<u8>,
    /// Lines that were blocked, with the pattern that blocked them.
    pub blocked: Vec<(String, String)>,
}

/// Follows the line being typed in an interactive shell. It only watches: every byte the user
/// sends goes on as sent (a character split across packets, or bytes that are no UTF-8 at all,
/// too), apart from the Enter of a denied line.
#[derive(Debug, Default)]
pub struct LineTracker {
    line: String,
    escape: Escape,
    /// The first bytes of a character whose rest is still to come.
    partial: Vec<u8>,
    /// After Ctrl-V (or Ctrl-Q, readline's quoted insert): the next key goes into the line as
    /// itself, a control character too, and does not act.
    quoted: bool,
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
    /// Feeds keystrokes; the Enter of a submitted line that `rules` deny is replaced by
    /// [`DISCARD_LINE`].
    pub fn feed(&mut self, rules: &Rules, input: &[u8]) -> Filtered {
        let mut out = Filtered {
            forward: Vec::with_capacity(input.len()),
            blocked: Vec::new(),
        };
        for &byte in input {
            if byte.is_ascii() && self.partial.is_empty() {
                self.key(rules, char::from(byte), byte, &mut out);
                continue;
            }
            // A byte of a multi-byte character: on as it came, into the line once whole. One
            // that starts no character, or breaks one, shows as a replacement character.
            out.forward.push(byte);
            self.escape = Escape::None;
            self.partial.push(byte);
            match std::str::from_utf8(&self.partial) {
                Ok(text) => {
                    let c = text.chars().next().unwrap_or(char::REPLACEMENT_CHARACTER);
                    self.partial.clear();
                    self.insert(c);
                }
                Err(e) if e.error_len().is_some() => {
                    self.partial.clear();
                    self.insert(char::REPLACEMENT_CHARACTER);
                }
                Err(_) => {}
            }
        }
        out
    }

    /// A character typed into the line, acting as nothing.
    fn insert(&mut self, c: char) {
        if std::mem::take(&mut self.quoted) || !c.is_control() {
            self.line.push(c);
        }
    }

    /// One ASCII key.
    fn key(&mut self, rules: &Rules, c: char, byte: u8, out: &mut Filtered) {
        if std::mem::take(&mut self.quoted) {
            self.line.push(c);
            out.forward.push(byte);
            return;
        }
        match self.escape {
            Escape::Started => {
                self.escape = if c == '[' || c == 'O' {
                    Escape::Sequence
                } else {
                    Escape::None
                };
                out.forward.push(byte);
                return;
            }
            Escape::Sequence => {
                if c.is_ascii_alphabetic() || c == '~' {
                    self.escape = Escape::None;
                }
                out.forward.push(byte);
                return;
            }
            Escape::None => {}
        }
        match c {
            // Enter, and Ctrl-O (readline runs the line, then fetches the next one).
            '\r' | '\n' | '\u{f}' => {
                let line = std::mem::take(&mut self.line);
                if let Some(pattern) = rules.denies(&line) {
                    out.forward.extend_from_slice(&DISCARD_LINE);
                    out.blocked.push((line, pattern.to_owned()));
                    return;
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
            '\u{16}' | '\u{11}' => self.quoted = true,
            '\u{1b}' => self.escape = Escape::Started,
            c if !c.is_control() => self.line.push(c),
            _ => {}
        }
        out.forward.push(byte);
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
    fn each_line_of_an_exec_command_is_matched() {
        let r = rules();
        assert_eq!(r.denies("true\nrm -rf /tmp/x"), Some("^rm -rf"));
        assert_eq!(r.denies("true\r  rm -rf /tmp/x"), Some("^rm -rf"));
        assert_eq!(r.denies("true\necho rm -rf"), None);
    }

    #[test]
    fn each_command_the_shell_would_run_is_matched() {
        let r = Rules::new(&["^rm -rf".into(), "^sudo ".into()], true, false).unwrap();
        for c in [
            "true; rm -rf /tmp/x",
            "r''m -rf /tmp/x",
            "\\rm -rf /tmp/x",
            "/bin/rm -rf /tmp/x",
            "sh -c \"rm -rf /tmp/x\"",
            "env FOO=1 rm -rf /tmp/x",
            "ls && rm -rf /tmp/x",
            "echo \"$(rm -rf /tmp/x)\"",
            "env - rm -rf /tmp/x",
            "env -u HOME - rm -rf /tmp/x",
            "coproc NAME { rm -rf /tmp/x; }",
            "trap 'rm -rf /tmp/x' EXIT",
        ] {
            assert_eq!(r.denies(c), Some("^rm -rf"), "{c}");
        }
        for c in ["ls | sudo tee x", "sh -c \"sudo id\"", "nice s''udo id"] {
            assert_eq!(r.denies(c), Some("^sudo "), "{c}");
        }
        for c in [
            "echo 'rm -rf x'",
            "grep sudo log",
            "rm -r x; true # rm -rf x",
        ] {
            assert_eq!(r.denies(c), None, "{c}");
        }
    }

    #[test]
    fn interactive_lines_are_tracked() {
        let r = rules();
        let cases: &[(&[u8], &[u8], usize)] = &[
            (b"ls\r", b"ls\r", 0),
            (b"rm -rf /tmp/x\r", b"rm -rf /tmp/x\x15\x03", 1),
            // Backspace turns "rm -rx" into "rm -r" + "f": still denied.
            (b"rm -rx\x7ff /\r", b"rm -rx\x7ff /\x15\x03", 1),
            // Ctrl-U discards what was typed before it.
            (b"shutdown\x15echo hi\r", b"shutdown\x15echo hi\r", 0),
            // Arrow keys are passed on and do not end up in the line.
            (b"\x1b[Ashutdown\r", b"\x1b[Ashutdown\x15\x03", 1),
            // A meta key (readline's numeric argument) takes one key, not the next letter.
            (b"\x1b1rm -rf /\r", b"\x1b1rm -rf /\x15\x03", 1),
            // Ctrl-O runs the line too.
            (b"rm -rf /\x0f", b"rm -rf /\x15\x03", 1),
            // Each command of the line, read as the shell reads it.
            (b"true; r''m -rf /\r", b"true; r''m -rf /\x15\x03", 1),
            (b"echo 'rm -rf /'\r", b"echo 'rm -rf /'\r", 0),
            // A quoted Ctrl-U (Ctrl-V first) is a character of the line, not its erasure: once
            // backspaced away, the line is what it was.
            (
                b"rm -rf /tmp/vic\x16\x15\x7ftim\r",
                b"rm -rf /tmp/vic\x16\x15\x7ftim\x15\x03",
                1,
            ),
            (
                b"shut\x11\x15\x08down\r",
                b"shut\x11\x15\x08down\x15\x03",
                1,
            ),
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
    fn input_goes_on_as_it_came() {
        let r = rules();
        let mut t = LineTracker::default();
        // A character split across packets, and a byte that is no UTF-8.
        assert_eq!(t.feed(&r, b"echo \xc3").forward, b"echo \xc3");
        assert_eq!(t.feed(&r, b"\xa9\xff\r").forward, b"\xa9\xff\r");
        // The line held them as characters: a rule sees what was typed after them.
        assert_eq!(t.feed(&r, b"caf\xc3\xa9; shutdown\r").blocked.len(), 1);
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
