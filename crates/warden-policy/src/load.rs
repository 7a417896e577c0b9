//! Loading a policy directory: reading its files, parsing and strictly validating the Cedar
//! policies, reading their annotations, and cross-checking them against `targets.toml`.
//!
//! Each `.cedar` file is parsed on its own so that the byte offsets Cedar reports are relative
//! to that file; every policy's position in its file is remembered so that later checks
//! (annotations, validation, entity references) can point at the right line too. A rule that
//! is too deep to give Cedar, or that Cedar cannot parse, is reported and blanked out of the
//! text Cedar reads (at the same offsets), so that the file's other rules are still checked in
//! the same run.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr;

use cedar_policy::{Authorizer, Effect, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use sha2::{Digest as _, Sha256};

use crate::cedar_text::{self, Piece};
use crate::diagnostics::{Diagnostic, Place, Report, Source, file_diagnostic};
use crate::entities::{self, EntitySets, Vocabulary};
use crate::free_text;
use crate::literals::{self, Known, Locator};
use crate::policy::Policy;
use crate::principals::{self, Mention};
use crate::rules;
use crate::targets::{self, Lookup, Named, Targets};

/// Where the Cedar files' problems are filed when there are no Cedar files at all.
pub(crate) const CEDAR_FILES: &str = "*.cedar";
/// The fixture folder, relative to the policy directory.
pub(crate) const TESTS_DIR: &str = "tests";

/// Every problem of a directory some of whose files could not be read (`problems`): those, and
/// what `check` finds in the files that could; unless the targets could not be read, when every
/// rule would only be said to name unknown targets (nor is a rule file that could not be read
/// said to be missing).
pub(crate) fn with_unread<T>(
    files: &[(String, String)],
    mut problems: Vec<Diagnostic>,
    check: impl FnOnce(&[(String, String)]) -> Result<T, Report>,
) -> Report {
    let unread_rules = problems.iter().any(|d| d.file.ends_with(".cedar"));
    if files.iter().any(|(name, _)| name == targets::FILE)
        && let Err(report) = check(files)
    {
        problems.extend(
            report
                .diagnostics
                .into_iter()
                .filter(|d| !(unread_rules && d.file == CEDAR_FILES)),
        );
    }
    Report::from_diagnostics(problems).unwrap_or_default()
}

/// Whether a name at a policy directory's top level is one of the files a policy is made of:
/// `targets.toml` and the `*.cedar` files (`tests/` holds fixtures, which decide nothing: run by
/// `policy test`, read by `policy check`).
pub fn is_policy_file(name: &str) -> bool {
    name == targets::FILE || name.ends_with(".cedar")
}

/// Reads the files a policy directory is made of: `targets.toml`, the top-level `*.cedar`
/// files and, with `with_tests`, `tests/*.toml`. Names are relative to `dir`, with `/`. Returns
/// the files that could be read beside the problems of the others (and of misplaced files), so
/// that a check can report those files' problems too ([`with_unread`]).
pub(crate) fn read_dir(dir: &Path, with_tests: bool) -> (Vec<(String, String)>, Vec<Diagnostic>) {
    let mut out = Vec::new();
    let mut files = Vec::new();
    let shown = dir.display().to_string();
    let mut wanted: Vec<(String, std::path::PathBuf)> = Vec::new();
    match list(dir, is_policy_file) {
        Ok(names) => {
            for name in names {
                wanted.push((name.clone(), dir.join(&name)));
            }
        }
        Err(e) => out.push(file_diagnostic(
            &shown,
            format!("cannot read the policy directory: {e}"),
        )),
    }
    out.extend(misplaced(dir));
    let tests = dir.join(TESTS_DIR);
    // A `tests` that links to a folder is not followed ([`misplaced`] says so).
    if with_tests && std::fs::symlink_metadata(&tests).is_ok_and(|m| m.is_dir()) {
        out.extend(misplaced_fixtures(&tests));
        match list(&tests, |name| name.ends_with(".toml")) {
            Ok(names) => {
                for name in names {
                    wanted.push((format!("{TESTS_DIR}/{name}"), tests.join(&name)));
                }
            }
            Err(e) => out.push(file_diagnostic(TESTS_DIR, format!("cannot read: {e}"))),
        }
    }
    for (name, path) in wanted {
        match std::fs::read(&path).map(String::from_utf8) {
            // Some editors on Windows start UTF-8 files with a byte-order mark; it is no text.
            Ok(Ok(text)) => files.push((
                name,
                text.strip_prefix('\u{feff}')
                    .map(str::to_owned)
                    .unwrap_or(text),
            )),
            Ok(Err(e)) => {
                // Where the first byte that is no UTF-8 is: the text before it is valid.
                let bytes = e.as_bytes();
                let valid = &bytes[..e.utf8_error().valid_up_to()];
                let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
                out.push(Diagnostic {
                    line: Some(line),
                    ..file_diagnostic(&name, "not valid UTF-8 here: save the file as UTF-8 text")
                });
            }
            Err(e) => out.push(file_diagnostic(&name, format!("cannot read: {e}"))),
        }
    }
    (files, out)
}

/// Files that look meant as policy but would be passed over in silence, so that a `forbid`
/// in one would never apply: a rule or targets file whose name differs only in case
/// (`Access.CEDAR`), `.cedar` files in a folder below `dir`, however deep (rules are read
/// from the top level only), and any name at the top level that is not UTF-8 (a rule file
/// named in Latin-1 would never be read). Folders whose names start with a dot keep files
/// aside on purpose. A link to a folder is not followed, and named once ([`linked_folder`]).
fn misplaced(dir: &Path) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for entry in entries(dir) {
        let name = &entry.name;
        if !entry.utf8 {
            out.push(file_diagnostic(
                name,
                "this name is not valid UTF-8, so it is never read (a rule in it would never apply): rename it in UTF-8; every name in a policy directory must be, so that no rule file is passed over (files kept aside on purpose go in a folder whose name starts with a dot)",
            ));
        }
        let lower = name.to_lowercase();
        if entry.kind == Kind::FolderLink {
            out.push(linked_folder(name));
        } else if entry.kind == Kind::Folder {
            let (files, links) = below(&entry.path, name, entry.utf8, ".cedar");
            out.extend(files.into_iter().map(|(n, utf8)| {
                file_diagnostic(
                    &n,
                    format!(
                        "rules are read from the policy directory's top level only: move this file there, or its rules never apply (rules kept aside on purpose go in a folder whose name starts with a dot){}",
                        not_utf8_either(utf8)
                    ),
                )
            }));
            out.extend(links.iter().map(|n| linked_folder(n)));
        } else if entry.utf8
            && ((lower.ends_with(".cedar") && !name.ends_with(".cedar"))
                || (lower == targets::FILE && name != targets::FILE))
        {
            out.push(file_diagnostic(
                name,
                "policy files are named in lower case (`*.cedar`, `targets.toml`): rename it, or it is never read",
            ));
        }
    }
    out
}

/// Fixture files `policy test` would pass over in silence, so that a policy repo's CI would
/// pass without their cases: `*.toml` named in other case (`Cases.TOML`), `.toml` files in a
/// folder below `tests/`, however deep, and any name in `tests/` that is not UTF-8.
fn misplaced_fixtures(tests: &Path) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for entry in entries(tests) {
        let here = format!("{TESTS_DIR}/{}", entry.name);
        if !entry.utf8 {
            out.push(file_diagnostic(
                &here,
                "this name is not valid UTF-8, so it is never read (cases in it would never run): rename it in UTF-8; every name in tests/ must be, so that no fixture file is passed over",
            ));
        }
        if entry.kind == Kind::FolderLink {
            out.push(linked_folder(&here));
        } else if entry.kind == Kind::Folder {
            let (files, links) = below(&entry.path, &here, entry.utf8, ".toml");
            out.extend(files.into_iter().map(|(n, utf8)| {
                file_diagnostic(
                    &n,
                    format!(
                        "fixtures are read from tests/ itself only: move this file there, or its cases never run{}",
                        not_utf8_either(utf8)
                    ),
                )
            }));
            out.extend(links.iter().map(|n| linked_folder(n)));
        } else if entry.utf8
            && entry.name.to_lowercase().ends_with(".toml")
            && !entry.name.ends_with(".toml")
        {
            out.push(file_diagnostic(
                &here,
                "fixture files are named `*.toml` in lower case: rename it, or its cases never run",
            ));
        }
    }
    out
}

/// What a misplaced file's problem adds when its path is not all UTF-8.
fn not_utf8_either(utf8: bool) -> &'static str {
    if utf8 {
        ""
    } else {
        "; its path is not valid UTF-8 either: rename it in UTF-8"
    }
}

/// The problem of `name`, a link to a folder, which the search for misplaced files does not
/// follow: a link may lead out of the policy directory (to `/`, and on through every file
/// system mounted there) or back into it (`..`, a loop), and a check must neither read
/// another host's files nor run without end. A file it leads to could hold rules or cases
/// that would never apply or run, so the link is refused, as such a file would be (the same
/// words wherever the search finds it, so that it is named once).
fn linked_folder(name: &str) -> Diagnostic {
    file_diagnostic(
        name,
        "this is a link to a folder, which is not followed (it may lead out of the policy directory, or round in a loop), so a rule or fixture file in that folder would never be read nor be said to be misplaced: remove the link or put the folder itself here; links kept aside on purpose go in a folder whose name starts with a dot",
    )
}

/// What a name in a folder is, links to folders apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A folder itself, not a link to one.
    Folder,
    /// A link to a folder (the folder it leads to is not searched).
    FolderLink,
    /// A file, a link to one, or a link that leads nowhere.
    Other,
}

/// A name in a folder, as [`entries`] lists it.
struct Entry {
    /// As shown: the name, with what is not UTF-8 in it replaced (`U+FFFD`).
    name: String,
    /// Whether the name is valid UTF-8.
    utf8: bool,
    path: std::path::PathBuf,
    kind: Kind,
}

/// The names in `dir`, sorted, those that are not UTF-8 included (shown lossily); hidden ones
/// left out.
fn entries(dir: &Path) -> Vec<Entry> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<Entry> = read
        .filter_map(Result::ok)
        .filter_map(|e| {
            let os = e.file_name();
            if os.as_encoded_bytes().starts_with(b".") {
                return None;
            }
            let path = e.path();
            // What the name is itself (`file_type` does not follow links), then where a link
            // leads.
            let kind = match e.file_type() {
                Ok(t) if t.is_dir() => Kind::Folder,
                Ok(t) if t.is_symlink() && path.is_dir() => Kind::FolderLink,
                Ok(_) => Kind::Other,
                // Not known: taken for what it leads to, so that a folder is never passed over;
                // a link is never taken for a folder to search.
                Err(_) => match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => Kind::Folder,
                    Ok(m) if m.file_type().is_symlink() && path.is_dir() => Kind::FolderLink,
                    _ => Kind::Other,
                },
            };
            Some(Entry {
                name: os.to_string_lossy().into_owned(),
                utf8: os.to_str().is_some(),
                path,
                kind,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The files below `dir` (shown as `shown/…`), however deep, whose names end in `suffix` in any
/// case, each with whether its path is all UTF-8 (`dir`'s is when `utf8`); and the links to
/// folders found on the way, which are not followed, so that the search never leaves the
/// policy directory nor goes round a loop. Hidden files and folders left out. Bounded in depth
/// too, for a folder mounted inside itself.
fn below(dir: &Path, shown: &str, utf8: bool, suffix: &str) -> (Vec<(String, bool)>, Vec<String>) {
    struct Found {
        files: Vec<(String, bool)>,
        links: Vec<String>,
    }
    fn walk(dir: &Path, shown: &str, utf8: bool, suffix: &str, depth: usize, out: &mut Found) {
        if depth > 16 {
            return;
        }
        for entry in entries(dir) {
            let here = format!("{shown}/{}", entry.name);
            let utf8 = utf8 && entry.utf8;
            match entry.kind {
                Kind::Folder => walk(&entry.path, &here, utf8, suffix, depth + 1, out),
                Kind::FolderLink => out.links.push(here),
                Kind::Other if entry.name.to_lowercase().ends_with(suffix) => {
                    out.files.push((here, utf8));
                }
                Kind::Other => {}
            }
        }
    }
    let mut out = Found {
        files: Vec::new(),
        links: Vec::new(),
    };
    walk(dir, shown, utf8, suffix, 0, &mut out);
    (out.files, out.links)
}

/// Names directly in `dir` that `wanted` picks, sorted: regular files and links to them. Hidden
/// names (an editor's lock file `.#access.cedar`) and directories are passed over; a wanted
/// link that leads nowhere is kept, so that reading it names it. Names that are not UTF-8 are
/// passed over here: [`misplaced`] and [`misplaced_fixtures`] report them.
fn list(dir: &Path, wanted: impl Fn(&str) -> bool) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with('.')
            || !wanted(&name)
            || std::fs::metadata(entry.path()).is_ok_and(|m| !m.is_file())
        {
            continue;
        }
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// A Cedar policy's home: which file, and where in it.
#[derive(Debug, Clone, Copy)]
struct Home<'a> {
    src: Source<'a>,
    offset: usize,
}

impl Home<'_> {
    fn at(&self, extra: usize, message: impl Into<String>) -> Diagnostic {
        self.src.at(self.offset + extra, message)
    }

    fn warning(&self, extra: usize, message: impl Into<String>) -> Diagnostic {
        self.src.place(self.offset + extra).warning(message)
    }
}

/// What the caller knows of the targets that this crate cannot, from each target kind's issuer.
#[derive(Clone, Copy)]
pub struct TargetCheck<'a> {
    /// Problems with the targets (each target kind's own settings), reported with every other
    /// problem.
    pub problems: &'a dyn Fn(&Targets) -> Vec<Diagnostic>,
    /// Whether Warden records the sessions of targets of a kind: a request whose rules demand a
    /// recording at a target whose sessions it does not record is refused, and a break-glass
    /// grant there is recorded as `metadata`, what it is.
    pub records_sessions: &'a dyn Fn(&str) -> bool,
}

impl std::fmt::Debug for TargetCheck<'_> {
    // Functions have nothing to show.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetCheck").finish_non_exhaustive()
    }
}

/// Builds a [`Policy`] from in-memory files; see [`Policy::from_files`].
pub(crate) fn load(files: &[(String, String)], check: TargetCheck<'_>) -> Result<Policy, Report> {
    let mut out = Vec::new();
    let (targets, named) = match files.iter().find(|(n, _)| n == targets::FILE) {
        Some((_, text)) => {
            let before = out.len();
            match targets::parse(text, &mut out) {
                Some((parsed, named)) => {
                    let whole = out.len() == before;
                    out.extend((check.problems)(&parsed));
                    // A policy is built only from a targets.toml that read whole; the rules'
                    // references are checked either way, against the names it gives (those of
                    // targets whose definitions have problems too, so that a rule naming one
                    // is not said to name an unknown target).
                    (whole.then_some(parsed), Some(named))
                }
                // No TOML at all: which targets it means cannot be told, so the rules'
                // references to targets and roles are not checked (each would be reported).
                None => (None, None),
            }
        }
        None => {
            out.push(file_diagnostic(
                targets::FILE,
                "missing: a policy directory needs a targets.toml defining the targets and their roles",
            ));
            (None, None)
        }
    };
    let mut cedar_files: Vec<&(String, String)> = files
        .iter()
        .filter(|(n, _)| n.ends_with(".cedar") && !n.contains('/'))
        .collect();
    cedar_files.sort_by(|a, b| a.0.cmp(&b.0));
    if cedar_files.is_empty() {
        out.push(file_diagnostic(
            CEDAR_FILES,
            "no policy files: without rules every request is denied; add a .cedar file",
        ));
    }

    let (schema, _) = Schema::from_cedarschema_str(crate::SCHEMA).map_err(|e| Report {
        diagnostics: vec![file_diagnostic("schema.cedarschema", e.to_string())],
    })?;
    let vocab = Vocabulary::new().map_err(|e| Report {
        diagnostics: vec![file_diagnostic("schema.cedarschema", e)],
    })?;

    // What rules compare with is looked up only among targets that read whole: with a
    // problem in targets.toml, a value of a target it could not read would be said unknown.
    let known = targets.as_ref().map(Known::of);
    let mut rules = Rules::new(named.as_ref(), known.as_ref(), &vocab);
    let before = out.len();
    for (name, text) in &cedar_files {
        rules.add_file(Source::new(name, text), &mut out);
    }
    // Files that hold only comments (every rule commented out) deny as no files would.
    if !cedar_files.is_empty() && rules.set.is_empty() && out.len() == before {
        out.push(file_diagnostic(
            CEDAR_FILES,
            "the policy files hold no rule: without rules every request is denied; write a permit",
        ));
    }
    rules.validate(schema.clone(), &mut out);
    let Rules {
        set,
        terms,
        mentions,
        recording_at,
        ..
    } = rules;

    let entities = match &targets {
        Some(t) => match entities::build(&vocab, t, &schema) {
            Ok(e) => Some(e),
            Err(e) => {
                out.push(file_diagnostic(targets::FILE, e));
                None
            }
        },
        None => None,
    };
    let found = Report::from_diagnostics(out).unwrap_or_default();
    if found.has_errors() {
        return Err(found);
    }
    let (Some(targets), Some(entities)) = (targets, entities) else {
        // Both are only missing after a problem was reported above.
        return Err(Report::default());
    };
    let unrecorded = targets
        .iter()
        .filter(|(_, t)| !(check.records_sessions)(&t.kind))
        .map(|(name, _)| name.clone())
        .collect();
    let mut policy = Policy {
        digest: digest(files),
        unrecorded,
        targets,
        set,
        terms,
        entities,
        vocab,
        authorizer: Authorizer::new(),
        entity_sets: EntitySets::default(),
        warnings: found.diagnostics,
        mentions,
    };
    let unrecorded = policy.unrecorded_input();
    policy.warnings.extend(unrecorded);
    let undone = policy.unrecordable_warnings(&recording_at);
    policy.warnings.extend(undone);
    Ok(policy)
}

/// Hex SHA-256 over `targets.toml` and the top-level `*.cedar` files in name order, each as
/// length-prefixed name and contents so that no two different sets of files hash alike.
fn digest(files: &[(String, String)]) -> String {
    let mut parts: Vec<&(String, String)> = files
        .iter()
        .filter(|(n, _)| n == targets::FILE || (n.ends_with(".cedar") && !n.contains('/')))
        .collect();
    parts.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hasher = Sha256::new();
    for (name, text) in parts {
        for part in [name.as_bytes(), text.as_bytes()] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
    }
    hex::encode(hasher.finalize())
}

/// The Cedar policies of all files, as they are being collected.
struct Rules<'a> {
    /// The names targets.toml gives, for checking the rules' references to targets and roles;
    /// `None` when it is missing or no TOML, to avoid a cascade of follow-on problems.
    named: Option<&'a Named>,
    /// What targets.toml gives the attributes rules compare, for warning about values no
    /// target has; `None` when it did not read whole.
    known: Option<&'a Known>,
    vocab: &'a Vocabulary,
    set: PolicySet,
    homes: HashMap<PolicyId, Home<'a>>,
    terms: HashMap<PolicyId, rules::Terms>,
    /// The rules' `User::` and `Group::` literals and the groups their `@approval` takes
    /// approvers from, for the server to check against the directory.
    mentions: Vec<Mention>,
    /// Where each request permit that demands a recording writes its `@recording`, for warning
    /// there about the targets whose sessions Warden does not record.
    recording_at: HashMap<PolicyId, Place>,
}

impl<'a> Rules<'a> {
    fn new(named: Option<&'a Named>, known: Option<&'a Known>, vocab: &'a Vocabulary) -> Self {
        Self {
            named,
            known,
            vocab,
            set: PolicySet::new(),
            homes: HashMap::new(),
            terms: HashMap::new(),
            mentions: Vec::new(),
            recording_at: HashMap::new(),
        }
    }

    /// Parses one file's rules and checks each. A rule too deep for Cedar to be given, or one
    /// Cedar cannot read, is reported and set aside (blanked out of the text Cedar is given,
    /// see [`cedar_text`]), and the file's other rules are still read and checked.
    fn add_file(&mut self, src: Source<'a>, out: &mut Vec<Diagnostic>) {
        let (pieces, too_deep) = cedar_text::split(src.text);
        let mut blank = vec![false; pieces.len()];
        for rule in too_deep {
            blank[rule.pieces.clone()].fill(true);
            let pieces = &pieces[rule.pieces];
            let more = pieces.len() > 1 || pieces.iter().any(Piece::may_hold_more);
            let runs_on = pieces.iter().find_map(|p| p.runs_on);
            let end = pieces.last().map_or(src.text.len(), |p| p.range.end);
            let note = set_aside(src, more, runs_on, end, rule.at);
            out.push(src.at(rule.at, format!("{}{note}", rule.message)));
        }
        let Some((parsed, parsed_text)) = parse_rest(src, &pieces, &mut blank, out) else {
            return;
        };
        // Cedar numbers a file's policies and templates `policy0`, `policy1`, ... in source
        // order; finding each one's text after the previous one gives its position. (Anything
        // numbered otherwise sorts last and is searched for from the start of the file.)
        let mut items: Vec<(usize, Item)> = parsed
            .policies()
            .map(|p| (p.id(), Item::Policy(Box::new(p.clone()))))
            .chain(
                parsed
                    .templates()
                    .map(|t| (t.id(), Item::Template(t.to_cedar()))),
            )
            .map(|(id, item)| {
                let n = id
                    .to_string()
                    .strip_prefix("policy")
                    .and_then(|n| n.parse::<usize>().ok());
                (n.unwrap_or(usize::MAX), item)
            })
            .collect();
        items.sort_by_key(|(n, _)| *n);
        let mut cursor = 0;
        for (ordinal, (_, item)) in items.into_iter().enumerate() {
            let text = match &item {
                Item::Policy(p) => p.to_cedar().unwrap_or_default(),
                Item::Template(t) => t.clone(),
            };
            // Searched for in the text Cedar read, where what was set aside is blank.
            let offset = find_code(&parsed_text, &text, cursor)
                .or_else(|| find_code(&parsed_text, &text, 0))
                .unwrap_or(cursor);
            cursor = offset + text.len();
            let home = Home { src, offset };
            match item {
                Item::Template(_) => out.push(home.at(
                    0,
                    "templates (policies with ?principal or ?resource) are not supported; name the principal and resource in the policy",
                )),
                Item::Policy(p) => self.add_policy(home, &text, ordinal + 1, *p, out),
            }
        }
    }

    fn add_policy(
        &mut self,
        home: Home<'a>,
        text: &str,
        ordinal: usize,
        policy: cedar_policy::Policy,
        out: &mut Vec<Diagnostic>,
    ) {
        let effect = match policy.effect() {
            Effect::Permit => "permit",
            Effect::Forbid => "forbid",
        };
        // A policy without a usable id still gets validated, under a stand-in id that no real
        // id can collide with ('#' is not allowed in ids).
        let stand_in = format!("{}#{ordinal}", home.src.name);
        // Messages name the policy as its author did, even when that id is unusable.
        let shown = policy.annotation("id").unwrap_or(&stand_in).to_owned();
        let id = match policy.annotation("id") {
            None => {
                out.push(home.at(
                    0,
                    format!("{effect} has no @id; give every policy a unique @id(\"...\") so decisions can name it"),
                ));
                stand_in
            }
            Some(id) => {
                let at = annotation_offset(text, "id").unwrap_or(0);
                if let Err(e) = rules::check_id(id) {
                    out.push(home.at(at, e));
                    stand_in
                } else if let Some(first) = self.homes.get(&PolicyId::new(id)) {
                    let first = first.src.at(first.offset, "");
                    out.push(home.at(
                        at,
                        format!(
                            "duplicate @id(\"{id}\"): already used at {}:{}",
                            first.file,
                            first.line.unwrap_or(1)
                        ),
                    ));
                    stand_in
                } else {
                    id.to_owned()
                }
            }
        };
        let pid = PolicyId::new(&id);

        let checked = match (policy.effect(), self.scope(&policy)) {
            (Effect::Permit, Ok(breakglass)) => if breakglass {
                rules::breakglass_terms(&shown, policy.annotations())
            } else {
                rules::permit_terms(&shown, policy.annotations())
            }
            .map(|t| {
                let at = annotation_offset(text, "approval").unwrap_or(0);
                for group in t.requirement.groups() {
                    self.mentions.push(Mention {
                        kind: principals::Kind::Approvers,
                        name: group.to_string(),
                        rule: shown.clone(),
                        forbid: false,
                        scope: false,
                        place: home.src.place(home.offset + at),
                    });
                }
                if !t.breakglass && t.recording != warden_domain::Recording::Metadata {
                    let at = annotation_offset(text, "recording").unwrap_or(0);
                    self.recording_at
                        .insert(pid.clone(), home.src.place(home.offset + at));
                }
                self.terms.insert(pid.clone(), t);
            }),
            (Effect::Permit, Err(message)) => Err(vec![rules::AnnotationError {
                key: None,
                message: format!("permit {shown} {message}"),
            }]),
            (Effect::Forbid, _) => rules::check_forbid(policy.annotations()),
        };
        if let Err(errors) = checked {
            for e in errors {
                let at = e
                    .key
                    .as_deref()
                    .and_then(|k| annotation_offset(text, k))
                    .unwrap_or(0);
                out.push(home.at(at, e.message));
            }
        }
        check_shown_annotations(home, text, &policy, out);

        self.check_references(home, text, &shown, &policy, out);
        if let Some(known) = self.known {
            check_literals(home, text, &shown, &policy, known, out);
        }

        self.homes.insert(pid.clone(), home);
        if let Err(e) = self.set.add(policy.new_id(pid)) {
            out.push(home.at(0, e.to_string()));
        }
    }

    /// Whether a permit is a break-glass permit: one whose scope names only
    /// `Action::"breakglass"`. A permit naming both actions is refused, since the two have
    /// different terms; one with no action constraint is about the normal flow, and refused
    /// when its conditions test the action: it is taken for a request permit whatever they
    /// say, so one meant for break-glass access would never apply (nor, as written, to
    /// requests).
    fn scope(&self, policy: &cedar_policy::Policy) -> Result<bool, String> {
        let breakglass = self.vocab.action(crate::Action::Breakglass);
        match policy.action_constraint() {
            cedar_policy::ActionConstraint::Any if conditions_read_action(policy) => Err(
                "tests `action` in its conditions, but its scope leaves the action open, so Warden takes it for a request permit whatever the conditions say (a condition that asks for Action::\"breakglass\" makes it apply to nothing): name the action in the scope instead, `permit (principal, action == Action::\"request\", resource)` or `action == Action::\"breakglass\"`, with one permit for each".into(),
            ),
            cedar_policy::ActionConstraint::Any => Ok(false),
            cedar_policy::ActionConstraint::Eq(a) => Ok(&a == breakglass),
            cedar_policy::ActionConstraint::In(actions) => {
                let n = actions.iter().filter(|a| *a == breakglass).count();
                if n == 0 {
                    Ok(false)
                } else if n == actions.len() {
                    Ok(true)
                } else {
                    Err("names both Action::\"request\" and Action::\"breakglass\": their terms differ, so write one permit for each".into())
                }
            }
        }
    }

    /// Strict validation against the schema. Validator warnings (a policy that can never
    /// apply, confusable characters) are reported as problems too: in an access policy they
    /// are almost always a mistake, and a silently dead rule is how access quietly breaks.
    fn validate(&self, schema: Schema, out: &mut Vec<Diagnostic>) {
        if self.set.is_empty() {
            return;
        }
        let result = Validator::new(schema).validate(&self.set, ValidationMode::Strict);
        let mut reported = BTreeSet::new();
        for e in result.validation_errors() {
            reported.insert(e.policy_id());
            out.push(self.validation_diagnostic(e.policy_id(), e));
        }
        // One mistake often draws several warnings ("no applicable action" and "impossible");
        // the first says enough.
        for w in result.validation_warnings() {
            if reported.insert(w.policy_id()) {
                out.push(self.validation_diagnostic(w.policy_id(), w));
            }
        }
    }

    /// Reports `Role::"t/r"` and `Target::"t"` literals that `targets.toml` does not name,
    /// and `User::` and `Group::` literals that are no name a directory can hold
    /// (`Group::"Dev"`: names are lower case): such a rule would silently never match (a
    /// forbid never refuse), or match something other than intended after a rename. Targets
    /// and roles are not checked without `named` (targets.toml missing, or no TOML). The
    /// users and groups that could be are kept in `mentions`, for the directory's check.
    fn check_references(
        &mut self,
        home: Home<'a>,
        text: &str,
        id: &str,
        policy: &cedar_policy::Policy,
        out: &mut Vec<Diagnostic>,
    ) {
        let mut seen = BTreeSet::new();
        for uid in policy.entity_literals() {
            if !seen.insert(uid.to_string()) {
                continue;
            }
            let raw = uid.id().unescaped();
            let quoted = format!("\"{}\"", uid.id().escaped());
            let at = text.find(&quoted).unwrap_or(0);
            let vocab = self.vocab;
            let problem = if vocab.is_target(&uid) {
                self.named
                    .filter(|n| n.target(raw) == Lookup::Unnamed)
                    .map(|_| {
                        format!(
                            "policy {id} refers to {uid}, but targets.toml defines no target `{raw}`"
                        )
                    })
            } else if vocab.is_role(&uid) {
                self.named
                    .and_then(|n| role_problem(raw, n))
                    .map(|why| format!("policy {id} refers to {uid}, but {why}"))
            } else if vocab.is_user(&uid) {
                match raw.parse::<warden_domain::UserName>() {
                    Ok(_) => {
                        self.mention(principals::Kind::User, raw, home, at, id, policy);
                        None
                    }
                    Err(e) => Some(format!(
                        "policy {id} refers to {uid}, which no user can be: {e}"
                    )),
                }
            } else if vocab.is_group(&uid) {
                match raw.parse::<warden_domain::GroupName>() {
                    Ok(_) => {
                        self.mention(principals::Kind::Group, raw, home, at, id, policy);
                        None
                    }
                    Err(e) => Some(format!(
                        "policy {id} refers to {uid}, which no group can be: {e}"
                    )),
                }
            } else {
                None
            };
            if let Some(message) = problem {
                out.push(home.at(at, message));
            }
        }
    }

    /// Keeps principal literal `name` of rule `id`, written at `at`, for the directory's
    /// check.
    fn mention(
        &mut self,
        kind: principals::Kind,
        name: &str,
        home: Home<'_>,
        at: usize,
        id: &str,
        policy: &cedar_policy::Policy,
    ) {
        use cedar_policy::PrincipalConstraint as P;
        let scope = match policy.principal_constraint() {
            P::Eq(uid) | P::In(uid) | P::IsIn(_, uid) => uid.id().unescaped() == name,
            P::Any | P::Is(_) => false,
        };
        self.mentions.push(Mention {
            kind,
            name: name.to_owned(),
            rule: id.to_owned(),
            forbid: policy.effect() == Effect::Forbid,
            scope,
            place: home.src.place(home.offset + at),
        });
    }

    fn validation_diagnostic(&self, id: &PolicyId, e: &dyn miette::Diagnostic) -> Diagnostic {
        match self.homes.get(id) {
            // Validation spans are offsets into the file the policy was parsed from.
            Some(home) => miette_diagnostic(home.src, e, home.offset),
            None => file_diagnostic(CEDAR_FILES, e.to_string()),
        }
    }
}

/// What a file's parsed set holds, in source order.
enum Item {
    Policy(Box<cedar_policy::Policy>),
    Template(String),
}

/// Whether a rule's `when` or `unless` conditions read the `action` variable.
fn conditions_read_action(policy: &cedar_policy::Policy) -> bool {
    // Every policy Cedar parsed has a JSON form; without one the conditions cannot be read,
    // and the rule is taken to test the action, so that it is refused rather than let through.
    let Ok(json) = policy.to_json() else {
        return true;
    };
    json["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| crate::est::reads(&c["body"], "action"))
}

/// Reports annotations whose text holds a character that does not show as itself (a
/// forbid's `@reason` is shown in refusals, a ticket pattern or an approval tier is quoted
/// back to people too), at that character. `@id` is checked with the ids.
fn check_shown_annotations(
    home: Home<'_>,
    text: &str,
    policy: &cedar_policy::Policy,
    out: &mut Vec<Diagnostic>,
) {
    for (key, value) in policy.annotations() {
        if key == "id" {
            continue;
        }
        let Some(message) = free_text::problem(&format!("@{key}"), value) else {
            continue;
        };
        let at = annotation_offset(text, key).map(|at| {
            // At the character, in the annotation's string.
            text[at..]
                .find('"')
                .map(|q| at + q)
                .and_then(|q| free_text::cedar_offset(&text[q..]).map(|i| q + i))
                .unwrap_or(at)
        });
        out.push(home.at(at.unwrap_or(0), message));
    }
}

/// Warns about the values rule `id` compares that no target has, and about times out of
/// their range ([`literals`]), each where it is written.
fn check_literals(
    home: Home<'_>,
    text: &str,
    id: &str,
    policy: &cedar_policy::Policy,
    known: &Known,
    out: &mut Vec<Diagnostic>,
) {
    // Every policy Cedar parsed has a JSON form; without one there is nothing to read.
    let Ok(json) = policy.to_json() else {
        return;
    };
    for finding in literals::check(id, &json, known) {
        out.push(home.warning(locate(text, &finding.at), finding.message));
    }
}

/// Where in a rule's text a finding is: at the literal as written, or at the number an
/// attribute is compared with (`.weekday == 7`: at the `7`), else at the attribute, else at
/// the rule.
fn locate(text: &str, at: &Locator) -> usize {
    match at {
        Locator::Text(written) => find_code(text, written, 0).unwrap_or(0),
        Locator::Number { attr, value } => {
            let access = format!(".{attr}");
            let mut from = 0;
            while let Some(i) = find_code(text, &access, from) {
                from = i + access.len();
                let rest = text[from..].trim_start();
                let after_op = rest.trim_start_matches(['=', '!', '<', '>']);
                let number = after_op.trim_start();
                let digits = value.to_string();
                if after_op.len() < rest.len()
                    && number.starts_with(&digits)
                    && !number[digits.len()..].starts_with(|c: char| c.is_ascii_digit())
                {
                    return text.len() - number.len();
                }
            }
            find_code(text, &access, 0).map_or(0, |i| i + 1)
        }
    }
}

/// Why `Role::"<raw>"` names no role targets.toml gives; `None` when it does, or when that
/// cannot be told (its target's definition could not be read).
fn role_problem(raw: &str, named: &Named) -> Option<String> {
    let Some((t, r)) = raw.split_once('/') else {
        return Some(
            "role ids are written \"<target>/<role>\", e.g. Role::\"prod-web-1/admin\"".to_owned(),
        );
    };
    let roles = match named.target(t) {
        Lookup::Unknown | Lookup::Named(None) => return None,
        Lookup::Unnamed => return Some(format!("targets.toml defines no target `{t}`")),
        Lookup::Named(Some(roles)) => roles,
    };
    if roles.contains(r) {
        return None;
    }
    if roles.is_empty() {
        return Some(format!("target `{t}` has no role `{r}` (it has no roles)"));
    }
    let mut known = String::new();
    for (i, name) in roles.iter().enumerate() {
        let _ = write!(known, "{}{name}", if i > 0 { ", " } else { "" });
    }
    Some(format!(
        "target `{t}` has no role `{r}` (its roles: {known})"
    ))
}

/// Parses the pieces of a file not set aside in `blank`, reporting everything Cedar finds.
/// Cedar reads on past a rule it cannot parse (at the next `;`), so one run reports every such
/// rule; but it checks a file's rules further only once all parse, and stops at a character it
/// cannot read at all. So each piece Cedar reports a problem in is set aside in turn, and the
/// rest read again, until the rest parse: the policies and the text they were parsed from (at
/// the file's offsets). `None` when Cedar reports a problem it places nowhere, or keeps finding
/// some: the file's other rules are then not checked, and the problem says so.
fn parse_rest<'t>(
    src: Source<'t>,
    pieces: &[Piece],
    blank: &mut [bool],
    out: &mut Vec<Diagnostic>,
) -> Option<(PolicySet, std::borrow::Cow<'t, str>)> {
    // Each round sets aside at least one more statement; a few rounds read any file (Cedar's
    // syntax errors come in one, the rest of its errors in the next).
    const ROUNDS: usize = 16;
    let mut reported = BTreeSet::new();
    for round in 1..=ROUNDS {
        let text = cedar_text::blanked(src.text, pieces, blank);
        let errors = match PolicySet::from_str(&text) {
            Ok(set) => return Some((set, text)),
            Err(errors) => errors,
        };
        let mut set_aside_now: Vec<usize> = Vec::new();
        let mut found = Vec::new();
        let mut placed = true;
        for e in errors.iter() {
            let offset = miette::Diagnostic::labels(e)
                .and_then(|mut l| l.next())
                .map(|l| l.offset());
            let mut d = miette_diagnostic(src, e, 0);
            match offset.and_then(|o| cedar_text::containing(pieces, o).map(|i| (o, i))) {
                Some((o, i)) if !blank[i] || set_aside_now.contains(&i) => {
                    d.message
                        .push_str(no_comment(&src.text[o.min(src.text.len())..]));
                    if !set_aside_now.contains(&i) {
                        set_aside_now.push(i);
                        // The first problem of a piece says if other rules were set aside.
                        let piece = &pieces[i];
                        match piece.multiline.filter(|_| unclosed_string(src.text, o, e)) {
                            // Said where the string opens, not where Cedar gave up reading.
                            Some(quote) => {
                                d = unclosed_at(src, quote, o, e, piece.range.end);
                            }
                            None => d.message.push_str(&set_aside(
                                src,
                                piece.may_hold_more(),
                                piece.runs_on,
                                piece.range.end,
                                o,
                            )),
                        }
                    }
                }
                _ => placed = false,
            }
            if reported.insert((d.line, d.column, e.to_string())) {
                found.push(d);
            }
        }
        for &i in &set_aside_now {
            blank[i] = true;
        }
        if !placed || set_aside_now.is_empty() || round == ROUNDS {
            let note = " (the rest of this file could not be read past this problem, so its other rules were not checked: fix it, then check again)";
            match found.first_mut() {
                Some(first) => first.message.push_str(note),
                None => found.push(src.whole(format!("Cedar could not read this file{note}"))),
            }
            out.extend(found);
            return None;
        }
        out.extend(found);
    }
    None
}

/// Whether Cedar's problem `e`, at byte `at` of `text`, is a string it finds no end to: then
/// an earlier string most likely was left open, and Cedar read on with every quote after it
/// taken the wrong way round.
fn unclosed_string(text: &str, at: usize, e: &dyn miette::Diagnostic) -> bool {
    text.get(at..).is_some_and(|rest| rest.starts_with('"'))
        && e.to_string().contains("invalid token")
}

/// Cedar's problem `e` at byte `at`, found to follow from the string that opens at byte
/// `quote` holding a line break: said there, as a bracket left open is, with the rules it
/// took in, up to byte `end`.
fn unclosed_at(
    src: Source<'_>,
    quote: usize,
    at: usize,
    e: &dyn miette::Diagnostic,
    end: usize,
) -> Diagnostic {
    let gave_up = if src.place(at) == src.place(quote) {
        String::new()
    } else {
        let place = src.place(at);
        format!(" (at line {}, column {}: {e})", place.line, place.column)
    };
    // What a string left open takes in always runs on past it.
    let (span, named) = unchecked(src, true, Some(quote), end, quote).unwrap_or_default();
    src.at(
        quote,
        format!(
            "this string is not closed: it runs on over the line break after it, so Cedar cannot read the rest of the file{gave_up}; no rule {span} was checked{named}: close the string, then check again"
        ),
    )
}

/// What a problem at byte `text`'s start adds when it is a comment as other languages write
/// them (`#`, `/* … */`), which Cedar does not read as one.
fn no_comment(text: &str) -> &'static str {
    if text.starts_with('#') || text.starts_with("/*") {
        " (a Cedar comment starts with `//` and ends with its line: `#` and `/* … */` are no comments in Cedar)"
    } else {
        ""
    }
}

/// What a problem at byte `at` that sets the text up to byte `end` aside says when that text
/// holds rules other than the one the problem is in ([`unchecked`]): that none of them was
/// checked, naming them, and, when what took them in is a bracket left open, where it is.
fn set_aside(src: Source<'_>, more: bool, runs_on: Option<usize>, end: usize, at: usize) -> String {
    let Some((span, named)) = unchecked(src, more, runs_on, end, at) else {
        return String::new();
    };
    let bracket = runs_on
        .and_then(|o| src.text[o..].chars().next().map(|c| (o, c)))
        .filter(|(_, c)| matches!(c, '(' | '[' | '{'));
    match bracket {
        Some((o, c)) => {
            let open = src.place(o);
            format!(
                "; the `{c}` at line {}, column {} is still open where the next rule begins, so no rule {span} was checked{named}: close it, then check again",
                open.line, open.column
            )
        }
        None => format!("; no rule {span} was checked{named}: fix this, then check again"),
    }
}

/// Which text a problem at byte `at` that sets the text up to byte `end` aside kept from being
/// checked (`after this point in the file`, or `from here to line N`) and the rules it holds
/// (` (policies a, b)`), when it holds any other than the one the problem is in: when it may
/// hold `more` (what opens at `runs_on` takes in the rules after it), or when a rule begins
/// after `at` (a problem before a rule, such as a stray line above it). The rules are named by
/// their `@id`s after where what took them in opens (`runs_on`, else `at`); one with none, by
/// its line.
fn unchecked(
    src: Source<'_>,
    more: bool,
    runs_on: Option<usize>,
    end: usize,
    at: usize,
) -> Option<(String, String)> {
    let from = runs_on.unwrap_or(at).min(end);
    let after = if more {
        None
    } else {
        Some(rule_after(src.text, from, end)?)
    };
    let span = if end >= src.text.len() {
        "after this point in the file".to_owned()
    } else {
        let line = src.place(end.saturating_sub(1).max(at)).line;
        format!("from here to line {line}")
    };
    let skipped = ids_in(&src.text[from..end]);
    let named = match (skipped.as_slice(), after) {
        ([], None) => String::new(),
        ([], Some(rule)) => format!(" (the rule at line {})", src.place(rule).line),
        ([one], _) => format!(" (policy {one})"),
        (many, _) => format!(" (policies {})", crate::policy::list(many)),
    };
    Some((span, named))
}

/// Byte offset of the first rule that begins in `text[from..end]` (at an annotation's `@`, or
/// at `permit (` or `forbid (`), outside strings and `//` comments.
fn rule_after(text: &str, from: usize, end: usize) -> Option<usize> {
    let mut chars = text.get(from..end)?.char_indices();
    while let Some((i, c)) = chars.next() {
        let at = from + i;
        match c {
            '"' => {
                // To the closing quote, minding escapes.
                while let Some((_, c)) = chars.next() {
                    if c == '\\' {
                        chars.next();
                    } else if c == '"' {
                        break;
                    }
                }
            }
            '/' if text[at..].starts_with("//") => {
                for (_, c) in chars.by_ref() {
                    if c == '\n' || c == '\r' {
                        break;
                    }
                }
            }
            '@' | 'p' | 'f' if cedar_text::begins_rule(text, at) => return Some(at),
            _ => {}
        }
    }
    None
}

/// The ids of the `@id("…")` annotations in `text`, in order.
fn ids_in(text: &str) -> Vec<String> {
    text.match_indices("@id")
        .filter_map(|(i, needle)| {
            let rest = text[i + needle.len()..].trim_start().strip_prefix('(')?;
            let quoted = rest.trim_start().strip_prefix('"')?;
            quoted.split_once('"').map(|(id, _)| id.to_owned())
        })
        .collect()
}

/// Byte offset of the first `needle` in `text` at or after `from` that is not in a `//` comment
/// (a commented-out copy of a policy above it would otherwise take its problems).
fn find_code(text: &str, needle: &str, from: usize) -> Option<usize> {
    text.get(from..)?
        .match_indices(needle)
        .map(|(i, _)| from + i)
        .find(|&i| {
            let line_start = text[..i].rfind('\n').map_or(0, |n| n + 1);
            !text[line_start..i].contains("//")
        })
}

/// Byte offset of annotation `@key` in a policy's text, so its problems point at it.
fn annotation_offset(text: &str, key: &str) -> Option<usize> {
    let needle = format!("@{key}");
    text.match_indices(&needle).map(|(i, _)| i).find(|&i| {
        !text[i + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// A Cedar error (which carries byte spans into the file through miette) as a positioned
/// problem; one without a span points at `base`.
fn miette_diagnostic(src: Source<'_>, e: &dyn miette::Diagnostic, base: usize) -> Diagnostic {
    let label = e.labels().and_then(|mut l| l.next());
    let mut message = e.to_string();
    if let Some(text) = label.as_ref().and_then(|l| l.label()) {
        let _ = write!(message, ": {text}");
    }
    if let Some(help) = e.help() {
        let _ = write!(message, " ({help})");
    }
    // Most often a regular expression's escape written once, as regex syntax has it.
    if message.contains("is not a valid escape") {
        message.push_str(
            " (a backslash in a Cedar string is written twice: `\\\\d` for the pattern `\\d`, or write [0-9])",
        );
    }
    let offset = label.map_or(base, |l| l.offset());
    src.at(offset, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_annotations() {
        let text = "@idx(\"a\") @id(\"b\")\npermit(principal, action, resource);";
        assert_eq!(annotation_offset(text, "id"), Some(10));
        assert_eq!(annotation_offset(text, "mfa"), None);
    }

    #[test]
    fn digest_covers_policy_files_only() {
        let files = |targets: &str, test: &str| {
            vec![
                ("targets.toml".to_owned(), targets.to_owned()),
                ("a.cedar".to_owned(), String::new()),
                ("tests/a.toml".to_owned(), test.to_owned()),
            ]
        };
        assert_eq!(digest(&files("x", "1")), digest(&files("x", "2")));
        assert_ne!(digest(&files("x", "1")), digest(&files("y", "1")));
        assert_eq!(digest(&files("x", "1")).len(), 64);
    }
}
