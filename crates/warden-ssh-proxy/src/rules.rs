//! A role's live controls: command deny rules and the file-transfer switch, and the line
//! tracker that applies deny rules to interactive shells.
//!
//! A deny rule is matched against a command as sent, whole and line by line, and against each
//! command the target's shell would run from it, read as that shell reads it
//! (`exec_reading.rs`): quotes taken out, past separators, keywords and wrappers, into `sh -c`
//! and `eval`. Exec requests are checked so; interactive shells line by line, from a
//! reconstruction of what the user typed, and the keys go on as they were sent, byte for
//! byte; on Enter the line is matched and, if denied, the Enter is not sent, nor anything typed
//! after it, and the session discards the line at the shell: Ctrl-E and Ctrl-U, then, once the
//! shell has taken them, Ctrl-C (see [`ERASE_LINE`]); what the user types until the shell
//! has dealt with it all is dropped. The reconstruction
//! follows bash's readline with its default keys (printable characters, the cursor moved
//! with Ctrl-A/B/E/F, arrows, Home and End, Backspace, Ctrl-D, Ctrl-K, Ctrl-U, Ctrl-W,
//! quoted inserts, bracketed pastes, a history search's own keys) and, at once, a terminal's
//! own line editing, through which a shell without a line editor (dash) reads; lines the
//! shell joins (a trailing backslash, a quote left open, a here-document) are checked
//! together. A key whose effect it cannot follow (Ctrl-T, Ctrl-Y, undo, Meta keys, function
//! keys, bytes beyond ASCII…) makes the line unknown, and a line that is unknown is refused
//! as a denied one is. What a line rule cannot catch — it is a guard rail, not a sandbox:
//! text the shell itself produces (tab completion, history, aliases, functions, variables,
//! command substitution), commands inside scripts, editors or programs the user starts,
//! input that full-screen programs interpret themselves, and a shell whose keys or terminal
//! settings differ from the defaults (`set -o vi`, `bind`, `stty erase z`, `stty intr
//! undef kill undef`). What else an exec command runs (a transfer tool, a shell reading its
//! input) is read in `exec_reading.rs` too.

use regex::Regex;

use crate::exec_reading::{command_lines, continues_on_next_line};

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

/// What replaces the Enter of a denied line, the first step of discarding it. Ctrl-E puts
/// readline's cursor at the end of the line and Ctrl-U, readline's unix-line-discard and the
/// terminal's line-kill key, empties it (of a shell whose interrupt key is off, `stty intr
/// undef`, or that ignores interrupts, too, which would otherwise keep it for the next Enter;
/// a terminal's own line editing takes Ctrl-E as a character of the line, which Ctrl-U
/// empties with the rest). Once the shell has taken them, [`INTERRUPT`] follows.
///
/// Nothing typed goes on between these keys and until the shell has dealt with the interrupt:
/// the interrupt has the terminal discard input the shell has not read yet (the erasing keys,
/// were they sent with it), and readline acts on it only at its next read, so an Enter right
/// behind it would run what the line still holds (bash even drops its first character). And in
/// this order: after a Ctrl-U that follows the interrupt, bash drops the next key typed, which
/// this proxy would still count, so a line it read as `Xrm -rf /` would run as `rm -rf /`.
pub const ERASE_LINE: [u8; 2] = [0x05, 0x15];

/// The second step of discarding a denied line: Ctrl-C interrupts what is left (the lines it
/// continues), and the shell starts afresh at a new prompt.
pub const INTERRUPT: [u8; 1] = [0x03];

/// How much of a command continued over several lines is held to be checked as a whole; a
/// longer one is refused.
const HELD_LIMIT: usize = 64 * 1024;

/// How many ways the keys typed may have acted are followed at once; past it, the line is
/// refused.
const READINGS_LIMIT: usize = 32;

/// Why a line could not be followed: what it was edited with, as the user is told.
const META_KEY: &str = "a Meta key (Alt, or Esc and a key)";
const UNKNOWN_KEY: &str = "a key it does not know (a function key, Insert, Delete, Page Up or Down, or an arrow with Ctrl or Alt)";
const BEYOND_ASCII: &str = "a character beyond ASCII, which a shell may take for a Meta key";
const PLACED_BY_SEARCH: &str =
    "an edit where a Ctrl-R search left the cursor (press Home or End first)";
const TOO_LONG: &str = "more than 64 KiB of continued lines";
const TOO_MANY: &str = "keys that may have acted in more ways than it follows";

/// The name of a control key that takes the line out of the tracker's reach.
fn control_key(byte: u8) -> &'static str {
    match byte {
        0x11 => "Ctrl-Q",
        0x13 => "Ctrl-S",
        0x14 => "Ctrl-T",
        0x18 => "Ctrl-X",
        0x19 => "Ctrl-Y",
        0x1a => "Ctrl-Z",
        0x1c => "Ctrl-\\",
        0x1d => "Ctrl-]",
        0x1e => "Ctrl-^",
        0x1f => "Ctrl-_",
        _ => UNKNOWN_KEY,
    }
}

/// What to do with a chunk of interactive input.
#[derive(Debug, PartialEq, Eq)]
pub struct Filtered {
    /// Bytes to send to the target: what came before a blocked line's Enter, and
    /// [`ERASE_LINE`] in its place.
    pub forward: Vec<u8>,
    /// The line that was kept from running, if one was: nothing more of the chunk goes on, and
    /// nothing typed after it should until the shell has discarded it ([`INTERRUPT`] too).
    pub blocked: Option<Blocked>,
    /// How many bytes of the chunk came after the blocked line's Enter, and are not sent.
    pub dropped: usize,
}

/// A line kept from running: what it held, as far as it was followed (the lines it continues
/// too), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub line: String,
    pub why: Why,
}

/// Why a line was kept from running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// It matches this deny rule.
    Rule(String),
    /// It was edited in a way the tracker cannot follow, so what it holds is unknown: past
    /// this key.
    Unfollowed(&'static str),
}

/// Follows the line being typed in an interactive shell. It only watches: every byte the user
/// sends goes on as sent, apart from the Enter of a line that is denied or that it could not
/// follow, and what comes after that Enter.
///
/// What a key does depends on what reads it: bash's readline edits the line itself (moving the
/// cursor, killing words up to a blank), a shell without a line editor (`dash`, `sh`) reads
/// through the terminal's own line editing (characters appended, an erase key, words killed up
/// to a non-alphanumeric, Ctrl-D handing over what was typed), and some keys act either way
/// depending on timing or settings the proxy cannot see (the key read right after an
/// interrupt may be dropped; Ctrl-Q and Ctrl-S are flow control, or readline's). So the tracker
/// follows every way at once, as readings, and a line is refused if any reading of it is
/// denied or lost.
#[derive(Debug)]
pub struct LineTracker {
    readings: Vec<Reading>,
}

impl Default for LineTracker {
    fn default() -> Self {
        Self {
            readings: EDITORS.into_iter().map(Reading::fresh).collect(),
        }
    }
}

impl LineTracker {
    /// Feeds keystrokes; the Enter of a submitted line that `rules` deny, or that could not be
    /// followed, is replaced by [`ERASE_LINE`], and what follows it is left out. The tracker
    /// then reads a new line after an interrupt: the caller sends [`INTERRUPT`] once the shell
    /// has taken the erasing keys, and feeds nothing typed before the shell has dealt with it.
    pub fn feed(&mut self, rules: &Rules, input: &[u8]) -> Filtered {
        let mut out = Filtered {
            forward: Vec::with_capacity(input.len()),
            blocked: None,
            dropped: 0,
        };
        for (at, &byte) in input.iter().enumerate() {
            let mut next: Vec<Reading> = Vec::with_capacity(self.readings.len());
            let mut blocked = None;
            let mut after = Vec::new();
            for reading in std::mem::take(&mut self.readings) {
                if let Some(b) = reading.byte(rules, byte, &mut after) {
                    blocked.get_or_insert(b);
                }
                for r in after.drain(..) {
                    if !next.contains(&r) {
                        next.push(r);
                    }
                }
            }
            if let Some(b) = blocked {
                out.forward.extend_from_slice(&ERASE_LINE);
                out.blocked = Some(b);
                out.dropped = input.len() - at - 1;
                self.readings = Reading::afresh();
                break;
            }
            if next.len() > READINGS_LIMIT {
                next = vec![Reading {
                    adrift: true,
                    ..Reading::fresh(Editor::Readline)
                }];
            }
            self.readings = next;
            out.forward.push(byte);
        }
        out
    }
}

/// What edits the line as it is typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Editor {
    /// bash's readline with its default (emacs) keys, the terminal in raw mode.
    Readline,
    /// The terminal's own line editing (canonical mode), which a shell without a line editor
    /// reads through: `erase` is its erase key, DEL or, as some clients set it, Ctrl-H.
    Terminal { erase: u8 },
}

const EDITORS: [Editor; 3] = [
    Editor::Readline,
    Editor::Terminal { erase: 0x7f },
    Editor::Terminal { erase: 0x08 },
];

/// Where in readline's keys a reading is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Mode {
    #[default]
    Keys,
    /// After ESC, with the bytes since: `[` or `O` start a sequence (cursor keys and the like),
    /// any other key makes a Meta key.
    Escape(Vec<u8>),
    /// In an incremental history search (Ctrl-R): keys typed make what is searched for.
    Search,
    /// In a bracketed paste (`ESC [200~` … `ESC [201~`), which readline puts in the line as it
    /// comes; with how many bytes of the closing sequence have come.
    Paste(usize),
}

/// One way the keys typed so far may have acted: what the line holds then.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reading {
    editor: Editor,
    /// After an interrupt: the shell may drop the next byte it reads, and this reading drops it.
    drops_next: bool,
    /// Past too many readings: every key that may submit a line refuses it (and discards the
    /// line, which starts the readings afresh), whatever came before.
    adrift: bool,
    /// After the line-quoting key (readline's quoted insert, the terminal's literal-next): the
    /// next key goes in as itself.
    quoted: bool,
    mode: Mode,
    /// Why the line can no longer be followed, if it cannot.
    lost: Option<&'static str>,
    /// Where readline's cursor stands in `line`, if known: a finished history search may leave
    /// it anywhere. A terminal's is at the end.
    cursor: Option<usize>,
    /// How much of `line` the terminal has handed to the shell already (Ctrl-D), beyond erasing.
    handed: usize,
    /// The line, as far as followed: printable ASCII, and what quoted keys and pastes put in.
    line: String,
    /// Earlier lines of the same command, which the shell holds until it is complete (see
    /// [`continues_on_next_line`]): checked again with each line added.
    held: Option<String>,
}

impl Reading {
    fn fresh(editor: Editor) -> Self {
        Self {
            editor,
            drops_next: false,
            adrift: false,
            quoted: false,
            mode: Mode::Keys,
            lost: None,
            cursor: Some(0),
            handed: 0,
            line: String::new(),
            held: None,
        }
    }

    /// After an interrupt: an empty line, and the next byte read perhaps dropped (bash drops
    /// the key it read as the interrupt came).
    fn interrupted(editor: Editor) -> [Self; 2] {
        [
            Self::fresh(editor),
            Self {
                drops_next: true,
                ..Self::fresh(editor)
            },
        ]
    }

    /// Every reading of a new line after an interrupt.
    fn afresh() -> Vec<Self> {
        EDITORS.into_iter().flat_map(Self::interrupted).collect()
    }

    fn lose(&mut self, why: &'static str) {
        self.lost.get_or_insert(why);
    }

    /// One byte from the client: what follows from it (one way or more) into `out`, or the
    /// line it submits, if that must not run.
    fn byte(mut self, rules: &Rules, byte: u8, out: &mut Vec<Self>) -> Option<Blocked> {
        if self.adrift {
            if matches!(byte, b'\r' | b'\n' | 0x0f | 0x04) {
                return Some(Blocked {
                    line: self.line,
                    why: Why::Unfollowed(TOO_MANY),
                });
            }
            out.push(self);
            return None;
        }
        match byte {
            // The terminal interrupts the shell, which drops the line; quoted, the terminal's
            // literal-next passes it on as itself, and readline's quoted insert does if it
            // turned the terminal's signals off before the key came.
            0x03 => {
                match (self.editor, self.quoted) {
                    (Editor::Terminal { .. }, true) => return self.read(rules, byte, out),
                    (Editor::Readline, true) => {
                        out.extend(Self::interrupted(self.editor));
                        return self.read(rules, byte, out);
                    }
                    _ => out.extend(Self::interrupted(self.editor)),
                }
                None
            }
            // Flow control, which the terminal keeps from the shell unless told not to
            // (`stty -ixon`); or a signal the shell ignores, with which the terminal discards
            // what the shell has not read yet. Either way, or passed on.
            0x11 | 0x13 | 0x1a | 0x1c => {
                self.lose(control_key(byte));
                out.push(self.clone());
                self.read(rules, byte, out)
            }
            _ => self.read(rules, byte, out),
        }
    }

    /// A byte the shell reads.
    fn read(mut self, rules: &Rules, byte: u8, out: &mut Vec<Self>) -> Option<Blocked> {
        if std::mem::take(&mut self.drops_next) {
            out.push(self);
            return None;
        }
        if !byte.is_ascii() {
            self.lose(BEYOND_ASCII);
            self.quoted = false;
            if matches!(self.mode, Mode::Escape(_)) {
                self.mode = Mode::Keys;
            }
            out.push(self);
            return None;
        }
        let blocked = match self.editor {
            Editor::Terminal { erase } => self.terminal_key(rules, byte, erase),
            Editor::Readline => match std::mem::take(&mut self.mode) {
                Mode::Keys => self.readline_key(rules, byte),
                Mode::Escape(sequence) => return self.escape(rules, sequence, byte, out),
                Mode::Search => self.search_key(rules, byte),
                Mode::Paste(closing) => self.paste(rules, closing, byte),
            },
        };
        if blocked.is_none() {
            out.push(self);
        }
        blocked
    }

    /// A key to the terminal's own line editing (Linux's, with its default keys).
    fn terminal_key(&mut self, rules: &Rules, byte: u8, erase: u8) -> Option<Blocked> {
        if std::mem::take(&mut self.quoted) {
            self.line.push(char::from(byte));
            return None;
        }
        match byte {
            b'\r' | b'\n' => return self.submit(rules),
            // End of file: what was typed goes to the shell, beyond erasing; with nothing new,
            // the shell reads the end of its input, and runs what it holds.
            0x04 if self.line.len() == self.handed => return self.submit(rules),
            0x04 => self.handed = self.line.len(),
            b if b == erase => {
                if self.line.len() > self.handed {
                    self.line.pop();
                }
            }
            0x15 => self.line.truncate(self.handed),
            // Erases back to the last alphanumeric (or `_`) word, and what follows it.
            0x17 => {
                let mut word = false;
                while self.line.len() > self.handed {
                    let c = self.line.as_bytes()[self.line.len() - 1];
                    if c.is_ascii_alphanumeric() || c == b'_' {
                        word = true;
                    } else if word {
                        break;
                    }
                    self.line.pop();
                }
            }
            0x16 => self.quoted = true,
            // Reprints the line.
            0x12 => {}
            _ => self.line.push(char::from(byte)),
        }
        None
    }

    /// A key to readline, outside sequences, searches and pastes.
    fn readline_key(&mut self, rules: &Rules, byte: u8) -> Option<Blocked> {
        if std::mem::take(&mut self.quoted) {
            self.insert(char::from(byte));
            return None;
        }
        match byte {
            // Enter, and Ctrl-O (readline runs the line, then fetches the next one).
            b'\r' | b'\n' | 0x0f => return self.submit(rules),
            0x20..=0x7e => self.insert(char::from(byte)),
            0x7f | 0x08 => self.edit(|line, at| match at.checked_sub(1) {
                Some(before) => {
                    line.remove(before);
                    before
                }
                None => at,
            }),
            0x01 => self.cursor = Some(0),
            0x05 => self.cursor = Some(self.line.len()),
            0x02 => self.cursor = self.cursor.map(|at| at.saturating_sub(1)),
            0x06 => self.cursor = self.cursor.map(|at| (at + 1).min(self.line.len())),
            // End of file on an empty line: the shell ends, or runs the here-document it
            // holds; else the character at the cursor goes.
            0x04 if self.line.is_empty() => return self.submit(rules),
            0x04 => self.edit(|line, at| {
                if at < line.len() {
                    line.remove(at);
                }
                at
            }),
            0x0b => self.edit(|line, at| {
                line.truncate(at);
                at
            }),
            0x15 => self.edit(|line, at| {
                line.replace_range(..at, "");
                0
            }),
            // unix-word-rubout: back over blanks, then to the blank before the word.
            0x17 => self.edit(|line, at| {
                let blank = |i: usize| matches!(line.as_bytes()[i - 1], b' ' | b'\t');
                let mut start = at;
                while start > 0 && blank(start) {
                    start -= 1;
                }
                while start > 0 && !blank(start) {
                    start -= 1;
                }
                line.replace_range(start..at, "");
                start
            }),
            0x16 => self.quoted = true,
            0x12 => self.mode = Mode::Search,
            // History: the line recalled, with the cursor at its end.
            0x10 | 0x0e => self.cursor = Some(self.line.len()),
            0x1b => self.mode = Mode::Escape(Vec::new()),
            // readline's own quoted insert and forward search, if the terminal passes them on.
            0x11 => {
                self.lose(control_key(byte));
                self.quoted = true;
            }
            0x13 => {
                self.lose(control_key(byte));
                self.mode = Mode::Search;
            }
            // Transpose, yank, undo, Ctrl-X's commands (undo, an editor, macros…), character
            // search.
            0x14 | 0x18 | 0x19 | 0x1d | 0x1e | 0x1f => self.lose(control_key(byte)),
            // Set mark, abort, completion, clear screen, and signals ignored at the prompt.
            _ => {}
        }
        None
    }

    /// Types `c` at the cursor.
    fn insert(&mut self, c: char) {
        self.edit(|line, at| {
            line.insert(at, c);
            at + 1
        });
    }

    /// Changes the line at the cursor, which `change` then puts where it says; a cursor whose
    /// place is not known makes the line lost.
    fn edit(&mut self, change: impl FnOnce(&mut String, usize) -> usize) {
        match self.cursor {
            Some(at) => self.cursor = Some(change(&mut self.line, at)),
            None => self.lose(PLACED_BY_SEARCH),
        }
    }

    /// A byte after ESC: the sequence goes on, ends in a key followed, or is lost. A Meta key
    /// or a sequence that breaks off (with a byte other than a sequence's) is read two ways:
    /// readline took the byte as part of it, or as a key of its own.
    fn escape(
        mut self,
        rules: &Rules,
        mut sequence: Vec<u8>,
        byte: u8,
        out: &mut Vec<Self>,
    ) -> Option<Blocked> {
        sequence.push(byte);
        match sequence.as_slice() {
            [b'[' | b'O'] => self.mode = Mode::Escape(sequence),
            [b'O', _] => self.sequence(&sequence),
            [b'[', .., last] if (0x40..=0x7e).contains(last) => self.sequence(&sequence),
            [b'[', .., last] if (0x20..=0x3f).contains(last) && sequence.len() < 16 => {
                self.mode = Mode::Escape(sequence);
            }
            [_] => return self.broken(rules, META_KEY, byte, out),
            _ => return self.broken(rules, UNKNOWN_KEY, byte, out),
        }
        out.push(self);
        None
    }

    /// The key an escape sequence stands for.
    fn sequence(&mut self, sequence: &[u8]) {
        match sequence {
            b"[A" | b"[B" | b"OA" | b"OB" => self.cursor = Some(self.line.len()),
            b"[C" | b"OC" => self.cursor = self.cursor.map(|at| (at + 1).min(self.line.len())),
            b"[D" | b"OD" => self.cursor = self.cursor.map(|at| at.saturating_sub(1)),
            b"[H" | b"OH" => self.cursor = Some(0),
            b"[F" | b"OF" => self.cursor = Some(self.line.len()),
            b"[200~" => self.mode = Mode::Paste(0),
            // The end of a paste whose start was not read as one (dropped after an
            // interrupt): readline puts its last character in the line.
            b"[201~" => self.insert('~'),
            _ => self.lose(UNKNOWN_KEY),
        }
    }

    /// An escape sequence that ends in `byte` as no key followed here.
    fn broken(
        mut self,
        rules: &Rules,
        why: &'static str,
        byte: u8,
        out: &mut Vec<Self>,
    ) -> Option<Blocked> {
        self.lose(why);
        out.push(self.clone());
        let blocked = self.readline_key(rules, byte);
        if blocked.is_none() {
            out.push(self);
        }
        blocked
    }

    /// A key in an incremental search: printable keys, erasing and Ctrl-R, Ctrl-W and Ctrl-Y
    /// make what is searched for; Ctrl-G puts the line and cursor back; any other key ends
    /// the search, on a line from history or where a match left the cursor, and then acts
    /// (but ESC and Ctrl-J only end it).
    fn search_key(&mut self, rules: &Rules, byte: u8) -> Option<Blocked> {
        match byte {
            0x20..=0x7e | 0x7f | 0x08 | 0x12 | 0x17 | 0x19 => self.mode = Mode::Search,
            0x07 => {}
            0x1b => {
                self.cursor = None;
                self.mode = Mode::Escape(Vec::new());
            }
            b'\n' => self.cursor = None,
            _ => {
                self.cursor = None;
                return self.readline_key(rules, byte);
            }
        }
        None
    }

    /// A byte of a bracketed paste, `closing` bytes of its closing sequence come before it.
    fn paste(&mut self, rules: &Rules, closing: usize, byte: u8) -> Option<Blocked> {
        const CLOSE: &[u8] = b"\x1b[201~";
        if byte == CLOSE[closing] {
            if closing + 1 < CLOSE.len() {
                self.mode = Mode::Paste(closing + 1);
            }
            return None;
        }
        // What looked like the closing sequence was pasted.
        for &b in &CLOSE[..closing] {
            self.insert(char::from(b));
        }
        if byte == CLOSE[0] {
            self.mode = Mode::Paste(1);
            return None;
        }
        self.mode = Mode::Paste(0);
        if !matches!(byte, b'\r' | b'\n') {
            self.insert(char::from(byte));
            return None;
        }
        // A line break pasted ends the line there, in the shell's eyes: what comes before the
        // cursor is checked now, what comes after it goes on as the next line.
        let Some(at) = self.cursor else {
            self.lose(PLACED_BY_SEARCH);
            return self.submit(rules);
        };
        let rest = self.line.split_off(at);
        let blocked = self.submit(rules);
        self.line = rest;
        blocked
    }

    /// The line is submitted: refused if lost or denied (with the lines it continues, and on
    /// its own), else held if the shell reads on to complete it.
    fn submit(&mut self, rules: &Rules) -> Option<Blocked> {
        let line = std::mem::take(&mut self.line);
        self.cursor = Some(0);
        self.handed = 0;
        let text = match self.held.take() {
            Some(held) => format!("{held}\n{line}"),
            None => line.clone(),
        };
        if let Some(why) = self.lost.take() {
            return Some(Blocked {
                line: text,
                why: Why::Unfollowed(why),
            });
        }
        let denied = rules.denies(&text).or_else(|| {
            if text.len() == line.len() {
                None
            } else {
                rules.denies(&line)
            }
        });
        if let Some(pattern) = denied {
            return Some(Blocked {
                line: text,
                why: Why::Rule(pattern.to_owned()),
            });
        }
        if continues_on_next_line(&text) {
            if text.len() > HELD_LIMIT {
                self.lose(TOO_LONG);
            } else {
                self.held = Some(text);
            }
        }
        None
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
            (b"rm -rf /tmp/x\r", b"rm -rf /tmp/x\x05\x15", 1),
            // Backspace turns "rm -rx" into "rm -r" + "f": still denied.
            (b"rm -rx\x7ff /\r", b"rm -rx\x7ff /\x05\x15", 1),
            // Ctrl-U discards what was typed before it.
            (b"shutdown\x15echo hi\r", b"shutdown\x15echo hi\r", 0),
            // Arrow keys are passed on and do not end up in the line.
            (b"\x1b[Ashutdown\r", b"\x1b[Ashutdown\x05\x15", 1),
            // A Meta key (readline's numeric argument, which repeats the next key) leaves the
            // line unknown.
            (b"\x1b1rm -rf /\r", b"\x1b1rm -rf /\x05\x15", 1),
            // Ctrl-O runs the line too.
            (b"rm -rf /\x0f", b"rm -rf /\x05\x15", 1),
            // Each command of the line, read as the shell reads it.
            (b"true; r''m -rf /\r", b"true; r''m -rf /\x05\x15", 1),
            (b"echo 'rm -rf /'\r", b"echo 'rm -rf /'\r", 0),
            // A quoted Ctrl-U (Ctrl-V first) is a character of the line, not its erasure: once
            // backspaced away, the line is what it was. After Ctrl-Q, which the terminal may
            // keep from the shell, the line is unknown.
            (
                b"rm -rf /tmp/vic\x16\x15\x7ftim\r",
                b"rm -rf /tmp/vic\x16\x15\x7ftim\x05\x15",
                1,
            ),
            (
                b"shut\x11\x15\x08down\r",
                b"shut\x11\x15\x08down\x05\x15",
                1,
            ),
        ];
        for (input, forward, blocked) in cases {
            let mut t = LineTracker::default();
            let f = t.feed(&r, input);
            assert_eq!(&f.forward, forward, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(
                usize::from(f.blocked.is_some()),
                *blocked,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    /// What `input`, typed into a fresh tracker, has kept from running: the line and why.
    fn blocked(input: &[u8]) -> Vec<Blocked> {
        LineTracker::default()
            .feed(&rules(), input)
            .blocked
            .into_iter()
            .collect()
    }

    fn denied(line: &str) -> Blocked {
        Blocked {
            line: line.into(),
            why: Why::Rule("^rm -rf".into()),
        }
    }

    fn unfollowed(line: &str, past: &'static str) -> Blocked {
        Blocked {
            line: line.into(),
            why: Why::Unfollowed(past),
        }
    }

    #[test]
    fn readline_edits_it_cannot_follow_lose_the_line() {
        for (input, why) in [
            // Transpose "mr" into "rm".
            (&b"mr\x14 -rf /tmp/x\r"[..], "Ctrl-T"),
            // Kill the line, then yank it back.
            (b"rm -rf /tmp/x\x15\x19\r", "Ctrl-Y"),
            // Kill the line, then undo.
            (b"rm -rf /tmp/x\x15\x1f\r", "Ctrl-_"),
            (b"rm -rf /tmp/x\x15\x18\x15\r", "Ctrl-X"),
            // Meta keys: Esc Backspace deletes the word before the cursor, Esc d the one after.
            (b"zzz\x1b\x7frm -rf /tmp/x\r", META_KEY),
            (b"echo rm -rf /tmp/x\x01\x1bd\r", META_KEY),
            (b"\x1b3r\r", META_KEY),
            // Keys it does not know, some of which put characters in the line.
            (b"rm -rf /tmp/x\x01\x1b[3~\r", UNKNOWN_KEY),
            (b"ls\x1b[15~\r", UNKNOWN_KEY),
            (b"ls\x1b[1;5D\r", UNKNOWN_KEY),
            // Flow control, or readline's quoted insert: Ctrl-U acts, or goes in the line.
            (b"abc\x11\x15rm -rf /tmp/x\r", "Ctrl-Q"),
            (b"ls\x13\r", "Ctrl-S"),
            // A signal that has the terminal discard what the shell has not read yet.
            (b"r\x1aXXXm -rf /tmp/x\r", "Ctrl-Z"),
            // Bytes beyond ASCII, which readline takes for Meta keys in the C locale.
            (b"echo rm -rf /tmp/x\x01\xe4\x80\x80\r", BEYOND_ASCII),
            // An edit where a search left the cursor, unknown to the tracker.
            (b"echo m\x12e\x1b[Dr\r", PLACED_BY_SEARCH),
        ] {
            let shown = String::from_utf8_lossy(input);
            let b = blocked(input);
            assert_eq!(b.len(), 1, "{shown:?}");
            assert_eq!(b[0].why, Why::Unfollowed(why), "{shown:?}");
        }
    }

    #[test]
    fn the_cursor_is_followed_through_the_line() {
        for (input, line) in [
            // Ctrl-A, Home (either sequence): typed at the start.
            (&b"m -rf /tmp/x\x01r\r"[..], "rm -rf /tmp/x"),
            (b"m -rf /tmp/x\x1b[Hr\r", "rm -rf /tmp/x"),
            (b"m -rf /tmp/x\x1bOHr\r", "rm -rf /tmp/x"),
            // Left, then Backspace and Ctrl-D around the cursor.
            (b"rxm -rf /tmp/x\x01\x06\x06\x08\r", "rm -rf /tmp/x"),
            (b"rxm -rf /tmp/x\x01\x06\x04\r", "rm -rf /tmp/x"),
            (b"rm -rf /tmp/xy\x1b[D\x1b[D\x1b[C\x0b\r", "rm -rf /tmp/x"),
            // Ctrl-U kills what comes before the cursor only; Ctrl-W the word before it.
            (
                b"echo rm -rf /tmp/x\x01\x06\x06\x06\x06\x06\x15\r",
                "rm -rf /tmp/x",
            ),
            (
                b"echo rm -rf /tmp/x\x01\x06\x06\x06\x06\x06\x17\r",
                "rm -rf /tmp/x",
            ),
            // Ctrl-C in a search, or Ctrl-G, puts the line back; its keys are not the line's.
            (b"rm -rf /tmp/x\x12zz\x07\r", "rm -rf /tmp/x"),
            (b"\x12xyz\x07rm -rf /tmp/x\r", "rm -rf /tmp/x"),
            // Home or End places a cursor a search left.
            (b"m -rf /tmp/x\x12e\x01r\r", "rm -rf /tmp/x"),
        ] {
            let shown = String::from_utf8_lossy(input);
            assert_eq!(blocked(input), [denied(line)], "{shown:?}");
        }
        // What is followed and allowed goes on as typed.
        let r = rules();
        for input in [
            &b"echo hi\x1b[D\x1b[DX\r"[..],
            b"ls -l\x01\x05 /tmp\r",
            b"ls /et\tc\r",
            b"\x1b[A\r",
            b"\x12ls\r",
            b"echo rm -rf /tmp/x\x01\x1b[C\x1b[C\x1b[C\x1b[C\x1b[CX\r",
        ] {
            let f = LineTracker::default().feed(&r, input);
            assert_eq!(f.forward, input, "{:?}", String::from_utf8_lossy(input));
            assert!(f.blocked.is_none(), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn lines_the_shell_joins_are_checked_together() {
        let r = rules();
        // A backslash at the end joins the next line to it.
        let mut t = LineTracker::default();
        assert_eq!(t.feed(&r, b"r\\\r").forward, b"r\\\r");
        assert_eq!(
            t.feed(&r, b"m -rf /tmp/x\r").blocked,
            Some(denied("r\\\nm -rf /tmp/x"))
        );
        // As does a quote left open.
        let mut t = LineTracker::default();
        assert!(t.feed(&r, b"echo \"\r").blocked.is_none());
        assert_eq!(
            t.feed(&r, b"\"; rm -rf /tmp/x\r").blocked,
            Some(denied("echo \"\n\"; rm -rf /tmp/x"))
        );
        // A here-document's quote is not one: once it ends, lines are checked on their own.
        let mut t = LineTracker::default();
        assert!(t.feed(&r, b"cat <<EOF\rit's\rEOF\r").blocked.is_none());
        assert_eq!(
            t.feed(&r, b"rm -rf /tmp/x\r").blocked,
            Some(denied("rm -rf /tmp/x"))
        );
        // Still, a line is checked on its own as well, should the quote be misread.
        let mut t = LineTracker::default();
        assert!(t.feed(&r, b"echo '\r").blocked.is_none());
        assert_eq!(
            t.feed(&r, b"true; rm -rf /tmp/x\r").blocked,
            Some(denied("echo '\ntrue; rm -rf /tmp/x"))
        );
        // A blocked line discards the lines it continued.
        let mut t = LineTracker::default();
        t.feed(&r, b"echo \\\r");
        t.feed(&r, b"rm -rf /tmp/x\r");
        assert!(t.feed(&r, b"ls\r").blocked.is_none());
    }

    #[test]
    fn the_key_read_as_an_interrupt_comes_may_be_dropped() {
        // bash drops the key it read as Ctrl-C came: the line may be "rm -rf /tmp/x".
        assert_eq!(
            blocked(b"ls\x03Xrm -rf /tmp/x\r")
                .iter()
                .map(|b| b.line.as_str())
                .collect::<Vec<_>>(),
            ["rm -rf /tmp/x"]
        );
        // So may the key after a blocked line's discarding, once keys go on again: what came
        // right behind its Enter is left out.
        let r = rules();
        let mut t = LineTracker::default();
        let f = t.feed(&r, b"shutdown\rXrm -rf /tmp/x\r");
        assert!(f.blocked.is_some(), "{f:?}");
        assert_eq!((&f.forward[..], f.dropped), (&b"shutdown\x05\x15"[..], 15));
        assert!(t.feed(&r, b"Xrm -rf /tmp/x\r").blocked.is_some());
        // A quoted Ctrl-C interrupts, or goes in the line: either way is checked.
        assert_eq!(blocked(b"ls\x16\x03Xrm -rf /tmp/x\r").len(), 1);
        assert_eq!(
            blocked(b"rm -rf /tmp/x\x16\x03\r"),
            [denied("rm -rf /tmp/x\u{3}")]
        );
    }

    #[test]
    fn a_terminal_s_own_line_editing_is_followed_too() {
        // A shell without a line editor (dash) reads through the terminal's: Ctrl-W erases
        // back to a non-alphanumeric, Ctrl-D hands what was typed over beyond erasing, and a
        // second one ends the input, which runs it.
        for (input, line) in [
            (&b"r''x\x17m -rf /tmp/x\r"[..], "r''m -rf /tmp/x"),
            (b"rm -rf /tmp/x\x04\x15\r", "rm -rf /tmp/x"),
            (b"rm -rf /tmp/x\x04\x04", "rm -rf /tmp/x"),
        ] {
            let shown = String::from_utf8_lossy(input);
            assert_eq!(blocked(input), [denied(line)], "{shown:?}");
        }
        // Ctrl-H erases where the client's erase key is Ctrl-H, and the arrow's bytes are
        // characters of the line.
        let r = Rules::new(&["^shutdown$".into()], true, false).unwrap();
        let f = LineTracker::default().feed(&r, b"shutdown\x1b[D\x08\x08\x08\r");
        assert!(f.blocked.is_some(), "{f:?}");
    }

    #[test]
    fn a_bracketed_paste_goes_in_the_line_as_it_came() {
        // Control keys pasted are characters of the line, not edits.
        assert_eq!(
            blocked(b"\x1b[200~rm -rf /tmp/x \x15\x1b[201~\r")[0].why,
            Why::Rule("^rm -rf".into())
        );
        // A line break pasted ends the line at the cursor.
        assert_eq!(
            blocked(b"ls\x01\x1b[200~rm -rf /tmp/x\n\x1b[201~\r")[0],
            denied("rm -rf /tmp/x")
        );
        // A paste right after a blocked line, whose first byte the shell may drop, too.
        let r = rules();
        let mut t = LineTracker::default();
        assert!(t.feed(&r, b"shutdown\r").blocked.is_some());
        let f = t.feed(&r, b"\x1b[200~echo hi\x1b[201~\r");
        assert!(f.blocked.is_none(), "{f:?}");
        // What only looked like the paste's end is pasted.
        let input = b"\x1b[200~echo \x1b[20x\x1b[201~\r";
        let f = LineTracker::default().feed(&r, input);
        assert_eq!(f.forward, input);
    }

    #[test]
    fn keys_read_too_many_ways_refuse_the_line() {
        let r = rules();
        let mut t = LineTracker::default();
        for _ in 0..64 {
            t.feed(&r, b"a\x16\x03");
            assert!(t.readings.len() <= READINGS_LIMIT);
        }
        let f = t.feed(&r, b"ls\r");
        assert!(f.blocked.is_some(), "{f:?}");
    }

    #[test]
    fn input_goes_on_as_it_came() {
        let r = rules();
        let mut t = LineTracker::default();
        // A character split across packets, and a byte that is no UTF-8, go on; the line they
        // are in is not followed.
        assert_eq!(t.feed(&r, b"echo \xc3").forward, b"echo \xc3");
        let f = t.feed(&r, b"\xa9\xff\r");
        assert_eq!(f.forward, b"\xa9\xff\x05\x15");
        assert_eq!(f.blocked, Some(unfollowed("echo ", BEYOND_ASCII)));
    }

    #[test]
    fn a_line_may_arrive_in_pieces() {
        let r = rules();
        let mut t = LineTracker::default();
        assert!(t.feed(&r, b"shut").blocked.is_none());
        let f = t.feed(&r, b"down\r");
        assert_eq!(
            f.blocked,
            Some(Blocked {
                line: "shutdown".into(),
                why: Why::Rule("shutdown".into())
            })
        );
    }
}
