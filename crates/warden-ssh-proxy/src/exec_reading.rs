//! How an exec command reads as a shell would read it, for the controls that depend on what it
//! runs: whether it names a file-transfer tool, runs `sftp-server`, or starts a shell that reads
//! commands from its input; and the commands deny rules are matched against (a typed line's
//! too). Quotes, escapes, `$'…'`, comments, here-documents, redirections, separators, keywords
//! (`coproc NAME { …; }` too), `VAR=value` prefixes and wrappers (`env`, `env -`, `exec`,
//! `sudo`, `timeout`…) are followed, and so are nested commands (`sh -c`, `eval`, `trap`,
//! `su -c`, `$(…)`, backticks).
//! Names built from variables, globs or brace expansion, and commands run by other programs
//! (`python -c`, `xargs`, `find -exec`), are out of reach: a guard rail, not a sandbox.

/// The programs that copy files over an SSH session.
const TRANSFER_TOOLS: [&str; 4] = ["scp", "sftp-server", "rsync", "sftp"];

/// Shells, which read commands from their input when given no command or script.
const SHELLS: [&str; 18] = [
    "sh", "bash", "rbash", "dash", "ash", "hush", "zsh", "ksh", "ksh93", "mksh", "lksh", "oksh",
    "pdksh", "yash", "posh", "fish", "csh", "tcsh",
];

/// Words that open or close a compound command, before the program of a simple command.
const KEYWORDS: [&str; 13] = [
    "!", "{", "}", "if", "then", "elif", "else", "fi", "do", "done", "while", "until", "coproc",
];

/// Words that open a compound command: after `coproc NAME`, they tell `NAME` from a program.
const COMPOUND_OPENERS: [&str; 8] = ["{", "if", "while", "until", "for", "select", "case", "[["];

/// Characters that end a word outside quotes: the shell's operators.
const OPERATORS: &str = ";&|()<>`";

/// Characters at which a word is cut into the names it may mention (`--rsync-path=rsync`,
/// `cd /x&&scp`), after its quoting is taken out.
const MENTION_SEPARATORS: &str = ";|&()<>`'\"\\$={}";

/// How deeply commands nested in commands are followed (`sh -c "sh -c '…'"`, `eval`, `$(…)`).
const MAX_NESTING: usize = 8;

/// What an exec command runs, as far as reading it as a POSIX shell would (quoting, escapes,
/// comments, here-documents, and the commands nested in it) tells without running it. Names the
/// shell builds as it runs the command (from variables, command substitution, patterns, brace
/// expansion, aliases or functions) are beyond it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecReading {
    /// Whether all of it could be read: every quote closes, and commands nest no deeper than
    /// [`MAX_NESTING`]. What could not be read might run anything.
    pub whole: bool,
    /// Whether any word of it names a file-transfer program, wherever it stands: a word that
    /// only mentions one (`grep rsync log`) counts too, for a role without file transfer is
    /// better refused once too often than let a copy through.
    pub names_a_transfer_tool: bool,
    /// Whether it runs `sftp-server` (`sftp -s PATH`), so that its channel speaks SFTP.
    pub runs_sftp_server: bool,
    /// Whether it starts a shell that reads its commands from its input: one given neither a
    /// command (`-c`) nor a script, or told to read its input (`-s`, `/dev/stdin`), `su` without
    /// `-c`, `sudo -s` or `-i` without a command.
    pub starts_a_shell: bool,
}

/// Reads an exec command as the target's shell would read it.
pub fn read_exec(command: &str) -> ExecReading {
    let script = parse(command);
    let mut found = Found::default();
    let nesting_followed = collect_runs(&script, 0, &mut found);
    let runs = found.runs;
    ExecReading {
        whole: script.whole && nesting_followed,
        names_a_transfer_tool: names_a_transfer_tool(command, 0),
        runs_sftp_server: runs.iter().any(|r| r.name == "sftp-server"),
        starts_a_shell: runs.iter().any(Run::reads_commands_from_input),
    }
}

/// The commands a shell would run from `text`, for deny rules to match, each as its words
/// joined by single spaces once quotes and escapes are taken out: every simple command, those
/// nested in it too (`sh -c '…'`, `eval`, `su -c`, `$(…)`), and each again past every keyword,
/// variable assignment and wrapper before its program (`env FOO=1 rm -rf x` is also `FOO=1 rm
/// -rf x` and `rm -rf x`) and with its program named by the last part of its path (`/bin/rm` as
/// `rm`). A rule anchored at the start (`^rm -rf`) so finds the command wherever it stands
/// (`true; r''m -rf x`). What the reading cannot see stays unseen here: names the shell builds
/// as it runs, quotes left open, nesting deeper than [`MAX_NESTING`].
pub fn command_lines(text: &str) -> Vec<String> {
    let mut found = Found::default();
    collect_runs(&parse(text), 0, &mut found);
    found.lines
}

/// Whether a shell reading `text` from a terminal, as lines typed so far, would wait for another
/// line before running any of it, and then read them as one text: a line ending in a
/// backslash, which joins the next to it, a quote left open, or a here-document whose
/// delimiter has not come yet.
pub fn continues_on_next_line(text: &str) -> bool {
    parse(text).continued
}

/// A command line as a shell's parser leaves it, before anything is expanded: the words of its
/// simple commands, quotes and escapes taken out.
#[derive(Debug, Default)]
struct Script {
    /// The words of each simple command, redirections left out.
    commands: Vec<Vec<String>>,
    /// The other words it holds: redirection targets and here-documents.
    other: Vec<String>,
    /// Whether every quote closed.
    whole: bool,
    /// Whether a shell reading it from a terminal would read another line before running it:
    /// it ends in a backslash, a quote left open, or a here-document still awaiting its
    /// delimiter.
    continued: bool,
}

impl Script {
    fn words(&self) -> impl Iterator<Item = &String> {
        self.commands.iter().flatten().chain(&self.other)
    }
}

/// Reads `text` as a POSIX shell's parser does.
fn parse(text: &str) -> Script {
    Parser {
        chars: text.chars().peekable(),
        script: Script {
            whole: true,
            ..Script::default()
        },
        command: Vec::new(),
        here_documents: Vec::new(),
    }
    .run()
}

struct Parser<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    script: Script,
    /// The words of the simple command being read.
    command: Vec<String>,
    /// Here-documents whose bodies begin at the next line: each delimiter, and whether leading
    /// tabs are stripped from the lines (`<<-`).
    here_documents: Vec<(String, bool)>,
}

impl Parser<'_> {
    fn run(mut self) -> Script {
        while let Some(&c) = self.chars.peek() {
            match c {
                ' ' | '\t' => {
                    self.chars.next();
                }
                '\n' => {
                    self.chars.next();
                    self.end_command();
                    self.read_here_documents();
                }
                '#' => self.skip_comment(),
                '<' | '>' => self.redirection(),
                c if OPERATORS.contains(c) => self.control_operator(),
                _ => self.word(),
            }
        }
        self.end_command();
        self.read_here_documents();
        self.script
    }

    fn end_command(&mut self) {
        if !self.command.is_empty() {
            self.script.commands.push(std::mem::take(&mut self.command));
        }
    }

    fn skip_comment(&mut self) {
        while self.chars.next_if(|&c| c != '\n').is_some() {}
    }

    /// `;`, `&`, `|`, parentheses and backquotes end a simple command (`&>` redirects).
    fn control_operator(&mut self) {
        let c = self.chars.next();
        if c == Some('&') && self.chars.peek() == Some(&'>') {
            self.redirection();
        } else {
            self.end_command();
        }
    }

    /// A redirection and its target; a here-document's target is its delimiter.
    fn redirection(&mut self) {
        let first = self.chars.next();
        let here_document = first == Some('<')
            && self.chars.next_if_eq(&'<').is_some()
            && self.chars.next_if_eq(&'<').is_none();
        let strip_tabs = here_document && self.chars.next_if_eq(&'-').is_some();
        self.chars.next_if(|&c| matches!(c, '>' | '|' | '&'));
        while self.chars.next_if(|&c| c == ' ' || c == '\t').is_some() {}
        match self.read_word() {
            Some(delimiter) if here_document => self.here_documents.push((delimiter, strip_tabs)),
            Some(target) => self.script.other.push(target),
            None => {}
        }
    }

    /// A word of the command; digits right before a redirection name its file descriptor.
    fn word(&mut self) {
        if let Some(word) = self.read_word() {
            let descriptor = !word.is_empty() && word.chars().all(|c| c.is_ascii_digit());
            if !(descriptor && matches!(self.chars.peek(), Some('<' | '>'))) {
                self.command.push(word);
            }
        }
    }

    /// The word starting here, with its quotes and escapes taken out, if one does.
    fn read_word(&mut self) -> Option<String> {
        let mut word = String::new();
        let mut started = false;
        while let Some(c) = self.chars.next_if(|&c| !ends_a_word(c)) {
            match c {
                '\\' => match self.chars.next() {
                    Some('\n') => continue,
                    Some(c) => word.push(c),
                    None => {
                        word.push('\\');
                        self.script.continued = true;
                    }
                },
                '\'' => self.single_quoted(&mut word),
                '"' => self.double_quoted(&mut word),
                '$' if self.chars.next_if_eq(&'\'').is_some() => self.dollar_quoted(&mut word),
                '$' if self.chars.next_if_eq(&'"').is_some() => self.double_quoted(&mut word),
                c => word.push(c),
            }
            started = true;
        }
        started.then_some(word)
    }

    /// A quote left open, which holds the rest of the text: a shell would run none of it, and
    /// what comes before it was read as the shell reads it, yet the command is not read whole.
    fn unclosed(&mut self) {
        self.script.whole = false;
        self.script.continued = true;
    }

    fn single_quoted(&mut self, word: &mut String) {
        loop {
            match self.chars.next() {
                Some('\'') => return,
                Some(c) => word.push(c),
                None => return self.unclosed(),
            }
        }
    }

    /// Inside double quotes a backslash escapes only `$`, `` ` ``, `"`, `\` and a newline.
    fn double_quoted(&mut self, word: &mut String) {
        loop {
            match self.chars.next() {
                Some('"') => return,
                Some('\\') => match self.chars.next() {
                    Some('\n') => {}
                    Some(c @ ('$' | '`' | '"' | '\\')) => word.push(c),
                    Some(c) => word.extend(['\\', c]),
                    None => return self.unclosed(),
                },
                Some(c) => word.push(c),
                None => return self.unclosed(),
            }
        }
    }

    /// `$'…'`, with C-like escapes (`$'\x72sync'`): bash's, zsh's and ksh's, and POSIX's since
    /// 2024.
    fn dollar_quoted(&mut self, word: &mut String) {
        loop {
            match self.chars.next() {
                Some('\'') => return,
                Some('\\') => match self.chars.next() {
                    Some(c) => self.dollar_escape(c, word),
                    None => return self.unclosed(),
                },
                Some(c) => word.push(c),
                None => return self.unclosed(),
            }
        }
    }

    /// What `\c` stands for inside `$'…'`.
    fn dollar_escape(&mut self, c: char, word: &mut String) {
        let plain = match c {
            'a' => '\x07',
            'b' => '\x08',
            'e' | 'E' => '\x1b',
            'f' => '\x0c',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\x0b',
            '\\' | '\'' | '"' | '?' => c,
            'c' => match self.chars.next() {
                Some(k) => char::from(k as u8 & 0x1f),
                None => return self.unclosed(),
            },
            'x' => return self.code_point(16, 2, None, word, "\\x"),
            'u' => return self.code_point(16, 4, None, word, "\\u"),
            'U' => return self.code_point(16, 8, None, word, "\\U"),
            '0'..='7' => return self.code_point(8, 2, c.to_digit(8), word, ""),
            _ => return word.extend(['\\', c]),
        };
        word.push(plain);
    }

    /// A character given by up to `digits` more digits in `radix` after `first`; without any,
    /// the escape stands for itself (`unknown`).
    fn code_point(
        &mut self,
        radix: u32,
        digits: usize,
        first: Option<u32>,
        word: &mut String,
        unknown: &str,
    ) {
        let mut value = first;
        for _ in 0..digits {
            let Some(d) = self.chars.peek().and_then(|c| c.to_digit(radix)) else {
                break;
            };
            self.chars.next();
            value = Some(value.unwrap_or(0) * radix + d);
        }
        match value {
            Some(v) => word.push(char::from_u32(v).unwrap_or(char::REPLACEMENT_CHARACTER)),
            None => word.push_str(unknown),
        }
    }

    /// The bodies of the here-documents of the line just ended, each up to its delimiter.
    fn read_here_documents(&mut self) {
        for (delimiter, strip_tabs) in std::mem::take(&mut self.here_documents) {
            let mut body = String::new();
            let mut delimited = false;
            while let Some(line) = self.line() {
                let line = if strip_tabs {
                    line.trim_start_matches('\t')
                } else {
                    &line
                };
                if line == delimiter {
                    delimited = true;
                    break;
                }
                body.push_str(line);
                body.push('\n');
            }
            self.script.continued |= !delimited;
            self.script.other.push(body);
        }
    }

    fn line(&mut self) -> Option<String> {
        self.chars.peek()?;
        Some(self.chars.by_ref().take_while(|&c| c != '\n').collect())
    }
}

fn ends_a_word(c: char) -> bool {
    c == ' ' || c == '\t' || c == '\n' || OPERATORS.contains(c)
}

/// The last part of a path: the name of the program it runs.
fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Whether `text`, read as a command line, names a file-transfer program in any word, or in any
/// word read as a command line again (`sh -c "r''sync"`, `echo "sc\p" | sh`).
fn names_a_transfer_tool(text: &str, depth: usize) -> bool {
    if depth > MAX_NESTING {
        return true;
    }
    parse(text).words().any(|word| {
        mentions_a_transfer_tool(word) || (word != text && names_a_transfer_tool(word, depth + 1))
    })
}

fn mentions_a_transfer_tool(word: &str) -> bool {
    word.split(|c: char| c.is_whitespace() || MENTION_SEPARATORS.contains(c))
        .map(base_name)
        .any(|name| TRANSFER_TOOLS.contains(&name))
}

/// A program a command line runs: its name (the last part of its path), and its arguments.
#[derive(Debug)]
struct Run {
    name: String,
    args: Vec<String>,
}

/// What reading a command line, and the commands nested in it, finds.
#[derive(Debug, Default)]
struct Found {
    /// The programs it runs.
    runs: Vec<Run>,
    /// Its commands as deny rules read them: see [`command_lines`].
    lines: Vec<String>,
}

/// Adds what `script` runs to `found`, with what the commands nested in it run (a shell's
/// `-c`, `eval`, `trap`, `su -c`, `env -S`, and command substitutions); false if some nest deeper than
/// [`MAX_NESTING`].
fn collect_runs(script: &Script, depth: usize, found: &mut Found) -> bool {
    if depth > MAX_NESTING {
        return false;
    }
    let mut followed = true;
    for words in &script.commands {
        let Some(run) = program(words, &mut found.lines) else {
            continue;
        };
        if let Some(nested) = run.command_string() {
            followed &= collect_runs(&parse(&nested), depth + 1, found);
        }
        found.runs.push(run);
    }
    for word in script
        .words()
        .filter(|w| w.contains("$(") || w.contains('`'))
    {
        followed &= collect_runs(&parse(word), depth + 1, found);
    }
    followed
}

/// The program a simple command runs: past keywords, variable assignments and wrappers. Each
/// command it reads as on the way there is added to `lines`: the whole, each rest past one more
/// keyword, assignment or wrapper, and each with its program named by its base name.
fn program(mut words: &[String], lines: &mut Vec<String>) -> Option<Run> {
    loop {
        let (first, args) = words.split_first()?;
        let line = words.join(" ");
        if let Some(rest) = past_keyword_or_assignment(words) {
            lines.push(line);
            words = rest;
            continue;
        }
        let name = base_name(first);
        if name.len() < first.len() {
            // `line` starts with `first`, which ends with `name`.
            lines.push(line[first.len() - name.len()..].to_owned());
        }
        lines.push(line);
        match wrapped_command(name, args) {
            Some(command) => words = command,
            None => {
                return Some(Run {
                    name: name.to_owned(),
                    args: args.to_vec(),
                });
            }
        }
    }
}

/// The words after a leading keyword (`if`, `!`, `function NAME`, `coproc NAME` before a
/// compound command) or variable assignment, if they start with one.
fn past_keyword_or_assignment(words: &[String]) -> Option<&[String]> {
    match words {
        [first, _name, rest @ ..] if first == "function" => Some(rest),
        // `coproc NAME { …; }` names its compound command; `coproc cmd args` names none.
        [first, _name, next, ..]
            if first == "coproc" && COMPOUND_OPENERS.contains(&next.as_str()) =>
        {
            Some(&words[2..])
        }
        [first, rest @ ..] if KEYWORDS.contains(&first.as_str()) || is_assignment(first) => {
            Some(rest)
        }
        _ => None,
    }
}

/// `NAME=value` (or bash's `NAME+=value`): a variable set for the command.
fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        let name = name.strip_suffix('+').unwrap_or(name);
        name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// A program that runs the command given after its own options and operands.
struct Wrapper {
    name: &'static str,
    /// Its short options that take a value, by letter (`-u root`, `-uroot`, `-Eu root`).
    short: &'static str,
    /// Its long options that take the next word as their value (`--user root`).
    long: &'static [&'static str],
    /// Operands of its own before the command (`timeout`'s duration, `chroot`'s directory).
    operands: usize,
    /// Options with which the words after its options are not a command it runs: `command -v`
    /// describes one, `env -S` takes one from a string, `sudo -l` lists what may be run.
    not_running: &'static [&'static str],
    /// Whether a lone `-` is one of its options (`env -`, which is `env -i`), not its command.
    dash_option: bool,
}

impl Wrapper {
    const fn new(name: &'static str) -> Self {
        Self {
            name,
            short: "",
            long: &[],
            operands: 0,
            not_running: &[],
            dash_option: false,
        }
    }
}

const WRAPPERS: [Wrapper; 17] = [
    Wrapper {
        short: "uC",
        long: &["--unset", "--chdir"],
        not_running: &["-S", "--split-string"],
        dash_option: true,
        ..Wrapper::new("env")
    },
    Wrapper {
        short: "a",
        ..Wrapper::new("exec")
    },
    Wrapper {
        not_running: &["-v", "-V"],
        ..Wrapper::new("command")
    },
    Wrapper::new("builtin"),
    Wrapper::new("nohup"),
    Wrapper::new("setsid"),
    Wrapper {
        short: "n",
        long: &["--adjustment"],
        ..Wrapper::new("nice")
    },
    Wrapper {
        short: "ioe",
        long: &["--input", "--output", "--error"],
        ..Wrapper::new("stdbuf")
    },
    Wrapper {
        short: "sk",
        long: &["--signal", "--kill-after"],
        operands: 1,
        ..Wrapper::new("timeout")
    },
    Wrapper {
        short: "fo",
        long: &["--format", "--output"],
        ..Wrapper::new("time")
    },
    Wrapper {
        short: "cn",
        long: &["--class", "--classdata"],
        ..Wrapper::new("ionice")
    },
    Wrapper {
        operands: 1,
        ..Wrapper::new("chrt")
    },
    Wrapper {
        operands: 1,
        ..Wrapper::new("taskset")
    },
    Wrapper {
        long: &["--userspec", "--groups"],
        operands: 1,
        ..Wrapper::new("chroot")
    },
    Wrapper {
        short: "uUgCDhprtT",
        long: &[
            "--user",
            "--other-user",
            "--group",
            "--close-from",
            "--chdir",
            "--host",
            "--prompt",
            "--role",
            "--type",
            "--command-timeout",
        ],
        not_running: &["-l", "--list", "-e", "--edit", "-v", "--validate"],
        ..Wrapper::new("sudo")
    },
    Wrapper {
        short: "u",
        not_running: &["-C"],
        ..Wrapper::new("doas")
    },
    Wrapper::new("busybox"),
];

/// The command a wrapper (`env`, `nice`, `timeout 10`, `sudo -u root`, `busybox`…) runs: the
/// words after its options and operands. None for any other program, or a wrapper given no
/// command.
fn wrapped_command<'a>(name: &str, args: &'a [String]) -> Option<&'a [String]> {
    let wrapper = WRAPPERS.iter().find(|w| w.name == name)?;
    let command = after_options(args, wrapper);
    let options = &args[..args.len() - command.len()];
    let not_running = options
        .iter()
        .any(|o| wrapper.not_running.iter().any(|n| o.starts_with(n)));
    if not_running {
        return None;
    }
    command.get(wrapper.operands..).filter(|c| !c.is_empty())
}

/// The words after a wrapper's options, and their values.
fn after_options<'a>(mut args: &'a [String], wrapper: &Wrapper) -> &'a [String] {
    while let [first, rest @ ..] = args {
        if first == "--" {
            return rest;
        }
        if !first.starts_with('-') || (first.len() == 1 && !wrapper.dash_option) {
            break;
        }
        args = if takes_the_next_word(first, wrapper) {
            rest.get(1..).unwrap_or_default()
        } else {
            rest
        };
    }
    args
}

/// Whether option word `option` leaves its value to the next word: a long option that takes
/// one, or short options whose first taking one is last (`-Eu`, not `-uroot`).
fn takes_the_next_word(option: &str, wrapper: &Wrapper) -> bool {
    if option.starts_with("--") {
        return wrapper.long.contains(&option);
    }
    let letters = &option[1..];
    letters
        .find(|c| wrapper.short.contains(c))
        .is_some_and(|at| at + 1 == letters.len())
}

/// What a shell given `args` runs.
#[derive(Debug, PartialEq, Eq)]
enum ShellRuns {
    /// The command string given with `-c`.
    Command(String),
    /// A script file.
    Script,
    /// The commands it reads from its input.
    Input,
}

/// What shell `name` runs when given `args`: options first (`-o X`, `+O X`, `--rcfile X` take a
/// value), then its command string with `-c`, else its script, if any and not its input.
fn shell_runs(name: &str, args: &[String]) -> ShellRuns {
    let valued = if name == "fish" { "C" } else { "oO" };
    let (mut command, mut input) = (false, false);
    let mut at = 0;
    while let Some(word) = args.get(at).filter(|w| is_shell_option(w)) {
        at += 1;
        match word.as_str() {
            "--" => break,
            "--rcfile" | "--init-file" | "--init-command" => at += 1,
            "--command" => command = true,
            w if w.starts_with("--command=") => {
                return ShellRuns::Command(w["--command=".len()..].to_owned());
            }
            w if w.starts_with("--") => {}
            w => {
                let letters = &w[1..];
                command |= w.starts_with('-') && letters.contains('c');
                input |= w.starts_with('-') && letters.contains('s');
                at += letters.matches(|c| valued.contains(c)).count();
            }
        }
    }
    let operand = args.get(at).filter(|w| *w != "-").or(args.get(at + 1));
    match operand {
        Some(command_string) if command => ShellRuns::Command(command_string.clone()),
        None if command => ShellRuns::Command(String::new()),
        Some(script) if !input && !is_input(script) => ShellRuns::Script,
        _ => ShellRuns::Input,
    }
}

fn is_shell_option(word: &str) -> bool {
    word.len() > 1 && (word.starts_with('-') || word.starts_with('+'))
}

/// The command a trap runs, its first operand past its options: none if it prints traps (`-p`,
/// `-l`), resets them (`-`, or a first operand that is a signal number) or ignores them (`''`).
fn trap_action(args: &[String]) -> Option<String> {
    let mut operands = args;
    while let [first, rest @ ..] = operands {
        if first == "--" {
            operands = rest;
            break;
        }
        if !first.starts_with('-') || first.len() == 1 {
            break;
        }
        if first.contains(['p', 'l', 'P']) {
            return None;
        }
        operands = rest;
    }
    let action = operands.first()?;
    let resets = action == "-" || action.chars().all(|c| c.is_ascii_digit());
    (!resets).then(|| action.clone())
}

/// Whether a file name is the reader's own input.
fn is_input(path: &str) -> bool {
    path == "/dev/stdin" || path.ends_with("/fd/0")
}

/// The value of the option `letter` (`-c X`, `-cX`, `-lc X`) or of one of `long` (`--command X`,
/// `--command=X`), wherever it stands among `args`, and the words after it.
fn option_value<'a>(
    args: &'a [String],
    letter: char,
    long: &[&str],
) -> Option<(String, &'a [String])> {
    args.iter().enumerate().find_map(|(i, arg)| {
        Some(match given_option(arg, letter, long)? {
            Some(value) => (value.to_owned(), &args[i + 1..]),
            None => (
                args.get(i + 1)?.clone(),
                args.get(i + 2..).unwrap_or_default(),
            ),
        })
    })
}

/// Whether `arg` gives the option `letter` or one of `long`: with its value (`-cX`,
/// `--command=X`), or with none, which is then the next word.
fn given_option<'a>(arg: &'a str, letter: char, long: &[&str]) -> Option<Option<&'a str>> {
    if arg.starts_with("--") {
        let rest = long.iter().find_map(|l| arg.strip_prefix(l))?;
        return match rest.strip_prefix('=') {
            Some(value) => Some(Some(value)),
            None => rest.is_empty().then_some(None),
        };
    }
    let letters = arg.strip_prefix('-')?;
    let value = &letters[letters.find(letter)? + letter.len_utf8()..];
    Some((!value.is_empty()).then_some(value))
}

impl Run {
    /// The command line it runs in turn, read as one of its own: a shell's `-c`, `eval`'s
    /// words, a trap's action, `su -c`, `env -S`.
    fn command_string(&self) -> Option<String> {
        let args = &self.args;
        match self.name.as_str() {
            name if SHELLS.contains(&name) => match shell_runs(name, args) {
                ShellRuns::Command(command) => Some(command),
                ShellRuns::Script | ShellRuns::Input => None,
            },
            "eval" => Some(args.join(" ")),
            "trap" => trap_action(args),
            "su" | "runuser" => {
                option_value(args, 'c', &["--command", "--session-command"]).map(|(c, _)| c)
            }
            "env" => option_value(args, 'S', &["--split-string"]).map(|(split, rest)| {
                [split]
                    .iter()
                    .chain(rest)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            }),
            _ => None,
        }
    }

    /// Whether it reads commands from its input.
    fn reads_commands_from_input(&self) -> bool {
        let args = &self.args;
        match self.name.as_str() {
            name if SHELLS.contains(&name) => shell_runs(name, args) == ShellRuns::Input,
            "." | "source" => args.first().is_some_and(|a| is_input(a)),
            "su" | "runuser" => self.command_string().is_none(),
            // Given no command (else the command is the program): a shell of its own.
            "sudo" | "doas" => args.iter().any(|a| {
                matches!(a.as_str(), "--shell" | "--login")
                    || a.strip_prefix('-')
                        .is_some_and(|l| !l.starts_with('-') && l.contains(['s', 'i']))
            }),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_tools_are_found_however_wrapped_or_quoted() {
        for c in [
            "scp -t /tmp",
            "/usr/bin/rsync --server .",
            "env rsync --server -e.LsfxCIvu . /tmp/x",
            "exec /usr/lib/openssh/sftp-server",
            "cd /tmp && scp -t .",
            "sudo -u root sftp-server",
            // Quotes and escapes the shell takes out, joining what they split.
            "r''sync --server -vlogDtpre.iLsfxCIvu . /tmp/x",
            "/usr/lib/openssh/sftp-serv''er",
            "\"r\"sync --server . /tmp/x",
            "sc\\p -t /tmp",
            "rs\\\nync --server . /tmp/x",
            "$'\\x72sync' --server . /tmp/x",
            "$'\\162sync' --server . /tmp/x",
            // Read again by a shell: a command string, or words piped into one.
            "sh -c \"r''sync --server . /tmp/x\"",
            "echo \"sc\\p -t /tmp\" | sh",
            "bash <<'EOF'\nrsync --server . /tmp/x\nEOF",
        ] {
            assert!(read_exec(c).names_a_transfer_tool, "{c}");
        }
        for c in ["ls -l", "rsyncd-status", "cat scp.txt", "echo \"it's\""] {
            assert!(!read_exec(c).names_a_transfer_tool, "{c}");
        }
    }

    #[test]
    fn commands_are_written_as_the_shell_reads_them() {
        let lines = command_lines;
        assert_eq!(
            lines("true; r''m -rf  \"/tmp/x\""),
            ["true", "rm -rf /tmp/x"]
        );
        assert_eq!(
            lines("a && b | c & d || e\nf"),
            ["a", "b", "c", "d", "e", "f"]
        );
        // Past each keyword, assignment and wrapper, and the program by its base name.
        assert_eq!(
            lines("! FOO=1 nice -n 5 /usr/bin/sudo -u root rm -rf x"),
            [
                "! FOO=1 nice -n 5 /usr/bin/sudo -u root rm -rf x",
                "FOO=1 nice -n 5 /usr/bin/sudo -u root rm -rf x",
                "nice -n 5 /usr/bin/sudo -u root rm -rf x",
                "sudo -u root rm -rf x",
                "/usr/bin/sudo -u root rm -rf x",
                "rm -rf x",
            ]
        );
        // Commands nested in commands, read the same way.
        for (command, nested) in [
            ("sh -c \"sudo id\"", "sudo id"),
            ("bash -lc 'true; rm -rf x'", "rm -rf x"),
            ("eval 'rm' -rf x", "rm -rf x"),
            ("su - root -c 'rm -rf x'", "rm -rf x"),
            ("env -S 'rm -rf' x", "rm -rf x"),
            ("echo \"$(r\\m -rf x)\"", "rm -rf x"),
            ("echo `rm -rf x`", "rm -rf x"),
            ("if true; then rm -rf x; fi", "rm -rf x"),
            ("sh -c \"sh -c 'rm -rf x'\"", "rm -rf x"),
        ] {
            assert!(lines(command).iter().any(|l| l == nested), "{command}");
        }
        // Not commands: arguments, redirection targets, comments, here-documents.
        for command in [
            "echo 'rm -rf x'",
            "cat >'rm -rf x'",
            "true # rm -rf x",
            "cat <<EOF\nrm -rf x\nEOF",
        ] {
            assert!(
                !lines(command).iter().any(|l| l.starts_with("rm")),
                "{command}"
            );
        }
    }

    #[test]
    fn commands_are_read_past_every_form_of_their_wrapper_or_keyword() {
        let lines = command_lines;
        for command in [
            // `env -` is `env -i`, after other options too; and env's long options.
            "env - rm -rf x",
            "env -u HOME - rm -rf x",
            "env -i - rm -rf x",
            "env --ignore-environment rm -rf x",
            "env --unset=HOME --chdir /tmp rm -rf x",
            "env -S'rm -rf x'",
            "env --split-string='rm -rf' x",
            // A coprocess: named, its command compound; or a simple command, unnamed.
            "coproc NAME { rm -rf x; }",
            "coproc NAME while rm -rf x; do :; done",
            "coproc { rm -rf x; }",
            "coproc rm -rf x",
            // A trap's action, read as `eval` reads its words.
            "trap 'rm -rf x' EXIT",
            "trap -- 'rm -rf x' INT TERM",
            "trap 'true; rm -rf x' 0",
            // Wrappers' options.
            "command -p rm -rf x",
            "command -- rm -rf x",
            "exec -a NAME rm -rf x",
            "exec -cl rm -rf x",
            "nohup rm -rf x",
            "time -p rm -rf x",
            "builtin eval 'rm -rf x'",
            "builtin command rm -rf x",
        ] {
            assert!(lines(command).iter().any(|l| l == "rm -rf x"), "{command}");
        }
        // Traps printed, reset or ignored run nothing.
        for command in [
            "trap -p 'rm -rf x'",
            "trap -l",
            "trap - EXIT",
            "trap -- - EXIT",
            "trap '' INT",
            "trap 1 'rm -rf x'",
        ] {
            assert!(!lines(command).iter().any(|l| l == "rm -rf x"), "{command}");
        }
    }

    #[test]
    fn a_command_whose_quotes_do_not_close_is_not_read_whole() {
        for c in [
            "echo 'it",
            "echo \"it",
            "echo $'it",
            "r'sync",
            "eval eval eval eval eval eval eval eval eval eval bash",
        ] {
            assert!(!read_exec(c).whole, "{c}");
        }
        for c in [
            "echo it\\'s",
            "echo \"it's\"",
            "echo $'it\\'s'",
            "cat <<EOF\nit's\nEOF",
            "true # it's",
        ] {
            assert!(read_exec(c).whole, "{c}");
        }
    }

    #[test]
    fn lines_a_shell_reads_on_from_are_told_apart() {
        for text in [
            "r\\",
            "echo 'it",
            "echo \"it",
            "echo $'it",
            "echo 'a\nb",
            "cat <<EOF",
            "cat <<EOF\nrm -rf x",
            "cat <<-EOF\n\tbody",
        ] {
            assert!(continues_on_next_line(text), "{text:?}");
        }
        for text in [
            "ls",
            "r\\\nm -rf x",
            "echo 'a\nb'",
            "cat <<EOF\nbody\nEOF",
            "cat <<-EOF\n\tbody\n\tEOF",
            "true # it's \\",
            "echo it\\'s",
        ] {
            assert!(!continues_on_next_line(text), "{text:?}");
        }
    }

    #[test]
    fn sftp_server_run_as_a_command_is_found() {
        for c in [
            "/usr/lib/openssh/sftp-server",
            "exec /usr/lib/openssh/sftp-server -l INFO",
            "/usr/lib/openssh/sftp-serv''er",
            "env -i sftp-server",
            "env - sftp-server",
            "trap /usr/lib/openssh/sftp-server EXIT",
            "sh -c /usr/lib/openssh/sftp-server",
        ] {
            assert!(read_exec(c).runs_sftp_server, "{c}");
        }
        for c in ["ls /usr/lib/openssh/sftp-server", "scp -t /tmp", "sftp"] {
            assert!(!read_exec(c).runs_sftp_server, "{c}");
        }
    }

    #[test]
    fn shells_reading_their_input_are_told_apart() {
        for c in [
            "bash",
            "/bin/sh -i",
            "bash -s",
            "sh -s arg",
            "zsh --login",
            "bash --norc",
            "busybox sh",
            // Options, some taking a value, and what ends them.
            "bash -o posix",
            "bash -l -o pipefail",
            "bash +O extglob",
            "bash --rcfile f",
            "bash -",
            "bash /dev/stdin",
            // Wrapped, quoted, or not the first command.
            "env bash",
            "env -i FOO=1 bash",
            "exec sh",
            "exec -a login bash",
            "nice -n 5 bash",
            "timeout -s KILL 10 bash",
            "stdbuf -oL bash -i",
            "setsid -w dash",
            "sudo -u root bash",
            "sudo -Eu root bash",
            "FOO=1 bash",
            "2>/dev/null bash",
            "\"ba\"sh",
            "b\\ash",
            "bash;",
            "cd /tmp && bash",
            "echo hi | sh",
            "{ bash; }",
            "(bash)",
            "if true; then bash; fi",
            // Nested in another command.
            "sh -c bash",
            "bash -c 'ls; sh'",
            "eval bash",
            "env -S 'bash -i'",
            "echo \"$(bash)\"",
            "echo `sh`",
            // Other readers of commands from their input.
            ". /dev/stdin",
            "source /dev/fd/0",
            "su",
            "su - root",
            "sudo -s",
            "sudo -i",
            // Past every form of a wrapper or keyword, or run by a trap.
            "env - bash",
            "env -u HOME - bash",
            "env --ignore-environment bash",
            "coproc NAME { bash; }",
            "trap bash EXIT",
            "trap -- 'sh -i' EXIT",
            "command -p bash",
            "builtin eval bash",
        ] {
            assert!(read_exec(c).starts_a_shell, "{c}");
        }
        for c in [
            "bash -c 'ls'",
            "sh -lc ls",
            "bash script.sh",
            "bash -o posix script.sh",
            "bash --rcfile f script.sh",
            "nice -n 10 bash script.sh",
            "ls",
            "bashful",
            "echo bash",
            "which sh",
            "command -v bash",
            "exec -a bash ls",
            "sudo -u bash ls",
            "sudo -l",
            "su -c ls",
            "su - root -c id",
            "ls # bash",
            "cat <<'EOF'\nbash\nEOF",
            "trap -p bash",
            "trap - bash",
            "trap '' bash",
        ] {
            assert!(!read_exec(c).starts_a_shell, "{c}");
        }
    }
}
