//! A Cedar file's text as read before Cedar reads it: its pieces (each rule, up to the `;` that
//! ends it), and which rules nest too deep for Cedar to be given.
//!
//! Cedar parses, validates and evaluates nested expressions by recursion, and a server thread's
//! stack has a bound: a rule nested deeper than the limits below would end the process where it
//! should refuse the policy. Such a rule is refused here, before Cedar sees it, and Cedar is
//! given the file with that rule blanked out ([`blanked`]), so that the file's other rules are
//! still checked. The same split lets a rule Cedar cannot read be set aside while the others are
//! read.
//!
//! The split follows Cedar's own tokens: strings (`"…"`, minding escapes) and `//` comments
//! (to the end of the line) are passed over, so a `;` in one ends nothing.

use std::borrow::Cow;
use std::ops::Range;

/// Deepest nesting of brackets (`(`, `[`, `{`) a rule may have: deeper nesting (a few hundred
/// levels) would exhaust the stack Cedar reads, validates and evaluates it with.
const MAX_NESTING: usize = 32;
/// Most `if` expressions one rule may hold, for the same reason: they nest without brackets.
const MAX_IFS: usize = 32;
/// Most operators (`&&`, `||`, comparisons, arithmetic) one rule's conditions may hold, for
/// the same reason: a chain `a || b || c …` is an expression nested as deep as it is long. A few
/// thousand already exhaust the stack Cedar leaves itself when it evaluates a rule (and then
/// the rule decides nothing: a forbid so written would refuse every request), a hundred
/// thousand the server's while it reads the policy.
const MAX_OPERATORS: usize = 256;
/// Most attribute accesses and method calls (`.name`, `["name"]`, `.contains(…)`) one rule's
/// conditions may hold, for the same reason: `a.b.c …` is an expression nested as deep as it
/// is long.
const MAX_ACCESSES: usize = 256;

/// A piece of a Cedar file: the text after the previous `;` (outside strings and comments) to
/// the next one, or to the end of the file. A rule and its comments and annotations make one
/// piece; a rule with a `;` in brackets (a mistake, as is a bracket left open) makes several,
/// where Cedar too starts reading afresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    /// Byte range in the file; the pieces of a file cover it whole, in order.
    pub range: Range<usize>,
    /// Byte offset of what may have taken in the rules after it, if anything: the opening
    /// quote of a string that holds a `;` or a line break (a string left open runs on over
    /// what follows), or a bracket still open where another rule begins in the piece (at an
    /// annotation's `@`, or at `permit (` or `forbid (`: a rule left unfinished runs on over
    /// the next up to its `;`).
    pub runs_on: Option<usize>,
    /// Byte offset of the opening quote of the first string in the piece that holds a line
    /// break: most likely a string left open, which runs on over what follows (a Cedar string
    /// may hold line breaks, but an annotation's may not, and a condition's seldom does).
    pub multiline: Option<usize>,
}

impl Piece {
    /// Whether setting the piece aside may set other rules aside too.
    pub fn may_hold_more(&self) -> bool {
        self.runs_on.is_some()
    }
}

/// A statement (a rule, up to a `;` outside brackets; one or more [`Piece`]s) that may not be
/// given to Cedar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TooDeep {
    /// Which pieces it is made of.
    pub pieces: Range<usize>,
    /// Byte offset in the file of the first place it nests deeper than [`MAX_NESTING`], or
    /// holds more than [`MAX_IFS`] `if`s, [`MAX_OPERATORS`] operators or [`MAX_ACCESSES`]
    /// accesses in its conditions (its `when` and `unless` blocks; a minus sign before a number
    /// is no operator), and what the problem is.
    pub at: usize,
    pub message: String,
}

/// Splits `text` into its pieces, and finds the statements too deep to be given to Cedar.
///
/// The limits hold for a statement, not a piece: Cedar may read on past a `;` in brackets as
/// part of the same expression, so a piece ends the count only where a statement does.
pub(crate) fn split(text: &str) -> (Vec<Piece>, Vec<TooDeep>) {
    let mut pieces = Vec::new();
    let mut too_deep = Vec::new();
    // Where the current piece and statement start (a piece index for the statement), and the
    // statement's first problem: only that is reported, and the statement set aside.
    let (mut start, mut first_piece) = (0, 0);
    let mut problem: Option<(usize, String)> = None;
    // The piece's [`Piece::runs_on`], and where its brackets still open were opened.
    let (mut runs_on, mut open) = (None, Vec::new());
    let mut multiline = None;
    let (mut depth, mut ifs, mut operators, mut accesses) = (0usize, 0usize, 0usize, 0usize);
    // Open `{` blocks (conditions, and records in them), and whether what came last ended an
    // operand, so that a `-` after it subtracts rather than negates.
    let (mut braces, mut operand) = (0usize, false);
    let flag = |found: &mut Option<(usize, String)>, at: usize, message: String| {
        if found.is_none() {
            *found = Some((at, message));
        }
    };
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let after_operand = operand;
        if !c.is_whitespace() {
            operand = c.is_alphanumeric() || matches!(c, '_' | ')' | ']' | '"');
        }
        // `.name` or `x["name"]`: Cedar has no decimal point outside strings, and a `[` after an
        // operand indexes where one elsewhere opens a set.
        if braces > 0 && (c == '.' || (c == '[' && after_operand)) {
            accesses += 1;
            if accesses > MAX_ACCESSES {
                flag(
                    &mut problem,
                    at,
                    format!(
                        "this rule's conditions hold more than {MAX_ACCESSES} attribute accesses and method calls (`.name`, `[\"name\"]`, `.contains(…)`), which Cedar evaluates by recursion: split the rule"
                    ),
                );
            }
        }
        match c {
            '"' => {
                // To the closing quote, minding escapes.
                let quote = at;
                while let Some((_, c)) = chars.next() {
                    let c = if c == '\\' {
                        match chars.next() {
                            Some((_, escaped)) => escaped,
                            None => break,
                        }
                    } else if c == '"' {
                        break;
                    } else {
                        c
                    };
                    if matches!(c, ';' | '\n' | '\r') {
                        runs_on = runs_on.or(Some(quote));
                    }
                    if matches!(c, '\n' | '\r') {
                        multiline = multiline.or(Some(quote));
                    }
                }
            }
            // Cedar's comments end at either line break.
            '/' if chars.peek().is_some_and(|(_, n)| *n == '/') => {
                for (_, c) in chars.by_ref() {
                    if c == '\n' || c == '\r' {
                        break;
                    }
                }
            }
            '(' | '[' | '{' => {
                open.push(at);
                depth += 1;
                braces += usize::from(c == '{');
                if depth > MAX_NESTING {
                    flag(
                        &mut problem,
                        at,
                        format!(
                            "brackets nest deeper than {MAX_NESTING} levels here: write the condition flatter, or split it into several rules"
                        ),
                    );
                }
            }
            ')' | ']' | '}' => {
                open.pop();
                depth = depth.saturating_sub(1);
                braces = braces.saturating_sub(usize::from(c == '}'));
            }
            ';' => {
                pieces.push(Piece {
                    range: start..at + 1,
                    runs_on,
                    multiline,
                });
                (start, runs_on, multiline) = (at + 1, None, None);
                open.clear();
                if depth == 0 {
                    if let Some((at, message)) = problem.take() {
                        too_deep.push(TooDeep {
                            pieces: first_piece..pieces.len(),
                            at,
                            message,
                        });
                    }
                    first_piece = pieces.len();
                    (ifs, operators, accesses, braces) = (0, 0, 0, 0);
                }
            }
            '|' | '&' | '=' | '!' | '<' | '>' | '+' | '-' | '*' if braces > 0 => {
                // Two-character operators (`||`, `<=`, `!=`) count once.
                if chars
                    .peek()
                    .is_some_and(|(_, n)| matches!((c, *n), ('|', '|') | ('&', '&') | (_, '=')))
                {
                    chars.next();
                } else if c == '!' || (c == '-' && !after_operand) {
                    // Negation makes no chain.
                    continue;
                }
                operators += 1;
                if operators > MAX_OPERATORS {
                    flag(
                        &mut problem,
                        at,
                        format!(
                            "this rule holds more than {MAX_OPERATORS} operators (`||`, `&&`, comparisons, arithmetic), which Cedar evaluates by recursion: name many users as a set (`[User::\"a\", User::\"b\"].contains(principal)`) or a group, or split the rule"
                        ),
                    );
                }
            }
            'i' if text[at..].starts_with("if")
                && !text[..at].ends_with(|p: char| p.is_alphanumeric() || p == '_')
                && !text[at + 2..].starts_with(|n: char| n.is_alphanumeric() || n == '_') =>
            {
                ifs += 1;
                if ifs > MAX_IFS {
                    flag(
                        &mut problem,
                        at,
                        format!(
                            "this rule holds more than {MAX_IFS} `if` expressions: split it into several rules"
                        ),
                    );
                }
            }
            '@' | 'p' | 'f' if !open.is_empty() && begins_rule(text, at) => {
                runs_on = runs_on.or(Some(open[0]));
            }
            _ => {}
        }
    }
    if start < text.len() || pieces.is_empty() {
        pieces.push(Piece {
            range: start..text.len(),
            runs_on,
            multiline,
        });
    }
    if let Some((at, message)) = problem {
        too_deep.push(TooDeep {
            pieces: first_piece..pieces.len(),
            at,
            message,
        });
    }
    (pieces, too_deep)
}

/// Whether a rule begins at byte `at` (outside strings and comments): at an annotation's `@`,
/// or at `permit (` or `forbid (`.
pub(crate) fn begins_rule(text: &str, at: usize) -> bool {
    let rest = &text[at..];
    if rest.starts_with('@') {
        return true;
    }
    let word_before = text[..at].ends_with(|p: char| p.is_alphanumeric() || matches!(p, '_' | '.'));
    !word_before
        && ["permit", "forbid"].into_iter().any(|effect| {
            rest.strip_prefix(effect)
                .is_some_and(|after| after.trim_start().starts_with('('))
        })
}

/// The index of the piece that byte `offset` falls in; an offset at or past the end of the
/// file (where Cedar reports an unfinished rule) falls in the last.
pub(crate) fn containing(pieces: &[Piece], offset: usize) -> Option<usize> {
    pieces
        .iter()
        .position(|p| p.range.contains(&offset))
        .or_else(|| {
            let last = pieces.len().checked_sub(1)?;
            (offset >= pieces[last].range.end).then_some(last)
        })
}

/// `text` with the pieces `blank` marks replaced by spaces, line breaks kept and each
/// character by as many spaces as it has bytes: what remains is at the same byte offsets, on
/// the same lines, so that what Cedar says of it points into the file as it is.
pub(crate) fn blanked<'t>(text: &'t str, pieces: &[Piece], blank: &[bool]) -> Cow<'t, str> {
    if !blank.iter().any(|b| *b) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for (piece, blank) in pieces.iter().zip(blank) {
        let part = &text[piece.range.clone()];
        if !blank {
            out.push_str(part);
            continue;
        }
        for c in part.chars() {
            if c == '\n' || c == '\r' {
                out.push(c);
            } else {
                out.extend(std::iter::repeat_n(' ', c.len_utf8()));
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str) -> Vec<&str> {
        split(text)
            .0
            .iter()
            .map(|p| &text[p.range.clone()])
            .collect()
    }

    #[test]
    fn pieces_end_at_a_semicolon_outside_strings_and_comments() {
        let text = "@reason(\"a; b\") forbid (principal, action, resource);\n// c; d\npermit (principal, action, resource) when { x; y };\n  ";
        assert_eq!(
            texts(text),
            [
                "@reason(\"a; b\") forbid (principal, action, resource);",
                "\n// c; d\npermit (principal, action, resource) when { x;",
                " y };",
                "\n  ",
            ]
        );
        let (pieces, too_deep) = split(text);
        // A `;` in a string may end a rule that an open string made part of this one.
        let more: Vec<bool> = pieces.iter().map(Piece::may_hold_more).collect();
        assert_eq!(more, [true, false, false, false]);
        assert!(too_deep.is_empty());
        assert_eq!(texts(""), [""]);
        assert_eq!(texts("permit (principal,"), ["permit (principal,"]);
        // A comment ends at either line break, as Cedar's do.
        assert_eq!(texts("// x\r;y;"), ["// x\r;", "y;"]);
        // An escaped quote does not end a string.
        assert_eq!(texts("\"a\\\";b\";c;"), ["\"a\\\";b\";", "c;"]);
    }

    #[test]
    fn a_bracket_left_open_runs_on_over_the_next_rule() {
        let text = "permit (principal, action, resource) when { x\n@id(\"b\") permit (principal, action, resource);\npermit (a) when { (x };\nforbid (a) when { [x, forbid (b) };";
        let (pieces, _) = split(text);
        let runs_on: Vec<Option<usize>> = pieces.iter().map(|p| p.runs_on).collect();
        // The outermost bracket open where the rule begins; one left open that takes in no
        // rule before its `;` runs on over nothing, whoever reads on.
        assert_eq!(
            runs_on,
            [
                Some(text.find('{').unwrap()),
                None,
                Some(text.rfind('{').unwrap())
            ]
        );
    }

    #[test]
    fn rules_are_judged_each_on_their_own() {
        let chain = vec!["x == 1"; 300].join(" || ");
        let rule = "permit (principal, action, resource) when { x == 1 };\n";
        let text =
            format!("{rule}permit (principal, action, resource) when {{ {chain} }};\n{rule}");
        let (pieces, too_deep) = split(&text);
        assert_eq!(pieces.len(), 4);
        assert_eq!(too_deep.len(), 1, "{too_deep:?}");
        assert_eq!(too_deep[0].pieces, 1..2);
        assert!(too_deep[0].message.contains("more than 256 operators"));
        assert!(pieces[1].range.contains(&too_deep[0].at));
        // A `;` in brackets does not end the count: Cedar may read on past it.
        let split_chain = format!(
            "permit (principal, action, resource) when {{ {} ; {} }};\n{rule}",
            vec!["x == 1"; 150].join(" || "),
            vec!["x == 1"; 150].join(" || ")
        );
        let (pieces, too_deep) = split(&split_chain);
        assert_eq!(pieces.len(), 4);
        assert_eq!(too_deep.len(), 1, "{too_deep:?}");
        assert_eq!(too_deep[0].pieces, 0..2);
    }

    #[test]
    fn blanking_keeps_offsets_and_lines() {
        let text = "permit (é);\n@id(\"x\")\npermit (a);\nforbid (b);";
        let (pieces, _) = split(text);
        let blanked = blanked(text, &pieces, &[false, true, false]);
        assert_eq!(blanked.len(), text.len());
        assert_eq!(
            blanked,
            format!("permit (é);{}\nforbid (b);", "\n        \n           ")
        );
        assert_eq!(containing(&pieces, 0), Some(0));
        assert_eq!(containing(&pieces, 12), Some(1));
        assert_eq!(containing(&pieces, text.len()), Some(2));
        assert_eq!(containing(&pieces, text.len() + 5), Some(2));
        assert!(matches!(
            super::blanked(text, &pieces, &[false; 3]),
            Cow::Borrowed(_)
        ));
    }
}
