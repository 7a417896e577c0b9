//! Fixture tests for a policy directory (`tests/*.toml`), so a policy repository can run its own
//! CI: each case asks for a decision and states what it must be.
//!
//! A fixture file declares the users it needs (`[users.NAME]`) and its cases (`[[case]]`); see
//! the demo policy's `tests/access.toml` for every key. Problems in a fixture file are load
//! errors with positions, like problems in the policy; a case whose decision differs from its
//! expectation fails with the difference spelled out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use toml::de::{DeTable, DeValue};
use warden_domain::directory::DirectoryError;
use warden_domain::{
    Decision, Directory, GroupName, Recording, Requirement, RoleName, TargetName, Ticket, Ttl,
    User, UserName,
};

use crate::diagnostics::{Diagnostic, Report, Source};
use crate::load::{self, TargetCheck};
use crate::targets::{self, Lookup, Named};
use crate::toml_doc::{self, Item};
use crate::{Action, Context, Policy};

/// The outcome of every case in every fixture file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TestReport {
    pub cases: Vec<CaseResult>,
}

impl TestReport {
    /// Number of cases that passed.
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.passed).count()
    }

    /// Number of cases that failed.
    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed()
    }
}

/// The outcome of one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseResult {
    /// Fixture file, relative to the policy directory.
    pub file: String,
    /// The line of the case's `[[case]]` table in it.
    pub line: usize,
    pub name: String,
    pub passed: bool,
    /// What differed, for a failed case, said in one line.
    pub message: Option<String>,
    /// The same, one entry per expectation missed, for scripts.
    pub mismatches: Vec<Mismatch>,
}

/// One expectation of a case the policy did not meet: the field (`decision`, `tier`,
/// `max_ttl`, `mfa`, `recording`, `rules`, `refusal`; `error` when the case could not be run),
/// what the case expected, and what the policy gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub field: &'static str,
    pub expected: Option<String>,
    pub got: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.field, &self.expected) {
            (_, None) => f.write_str(&self.got),
            ("decision", Some(e)) => write!(f, "expected {e}, got {}", self.got),
            (field, Some(e)) => write!(f, "{field}: expected {e}, got {}", self.got),
        }
    }
}

/// Runs all fixture files under `dir/tests` against the policy in `dir`, loaded with `check`'s
/// problems with the targets as [`Policy::load_dir`] loads it. Fails with a [`Report`] of
/// every problem of the policy and of the fixture files together when either does not load.
pub fn run_tests(dir: &Path, check: TargetCheck<'_>) -> Result<TestReport, Report> {
    let (files, problems) = load::read_dir(dir, true);
    if problems.is_empty() {
        return run_files(&files, check);
    }
    Err(load::with_unread(&files, problems, |files| {
        run_files(files, check)
    }))
}

/// Runs the fixtures among `files` against the policy among them.
pub(crate) fn run_files(
    files: &[(String, String)],
    check: TargetCheck<'_>,
) -> Result<TestReport, Report> {
    let (policy, suites) = load_with_suites(files, check)?;
    let cases = suites
        .iter()
        .flat_map(|suite| {
            suite.cases.iter().map(|case| {
                let mismatches = run_case(&policy, suite, case);
                let message = (!mismatches.is_empty()).then(|| {
                    mismatches
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                });
                CaseResult {
                    file: suite.file.clone(),
                    line: case.line,
                    name: case.name.clone(),
                    passed: mismatches.is_empty(),
                    message,
                    mismatches,
                }
            })
        })
        .collect();
    Ok(TestReport { cases })
}

/// Checks the policy among `files` and reads the fixtures among them, without running their
/// cases: what `policy check` reports of the fixtures.
pub(crate) fn check_files(
    files: &[(String, String)],
    check: TargetCheck<'_>,
) -> Result<Policy, Report> {
    load_with_suites(files, check).map(|(policy, _)| policy)
}

/// The policy among `files` and the fixture files among them (`tests/*.toml`), read; else
/// every problem of either, with the policy's warnings.
fn load_with_suites(
    files: &[(String, String)],
    check: TargetCheck<'_>,
) -> Result<(Policy, Vec<Suite>), Report> {
    let mut out = Vec::new();
    // The targets and roles cases may name, as the policy has them; its problems are the
    // policy's, reported when it is loaded below.
    let named = files
        .iter()
        .find(|(n, _)| n == targets::FILE)
        .and_then(|(_, text)| targets::parse(text, &mut Vec::new()));
    let known = named.as_ref().map(|(targets, named)| KnownTargets {
        named,
        listed: targets.iter().map(|(name, _)| name.to_string()).collect(),
    });
    let suites: Vec<Suite> = files
        .iter()
        .filter(|(n, _)| {
            n.strip_prefix(load::TESTS_DIR)
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|rest| rest.ends_with(".toml") && !rest.contains('/'))
        })
        .filter_map(|(name, text)| parse_suite(Source::new(name, text), known.as_ref(), &mut out))
        .collect();
    let policy = match load::load(files, check) {
        Ok(p) => p,
        Err(report) => {
            out.extend(report.diagnostics);
            return Err(Report::from_diagnostics(out).unwrap_or_default());
        }
    };
    if !out.is_empty() {
        // A policy that loads keeps its warnings, which a report of the fixtures' problems
        // would otherwise leave unshown.
        out.extend(policy.warnings().iter().cloned());
        return Err(Report::from_diagnostics(out).unwrap_or_default());
    }
    Ok((policy, suites))
}

/// The targets `targets.toml` names, and those among them that read whole (listed when a case
/// names none of them).
struct KnownTargets<'a> {
    named: &'a Named,
    listed: Vec<String>,
}

/// One fixture file.
#[derive(Debug)]
struct Suite {
    file: String,
    users: BTreeMap<UserName, User>,
    cases: Vec<Case>,
}

/// One case, with its optional expectations.
#[derive(Debug)]
struct Case {
    name: String,
    /// Where its `[[case]]` table starts.
    line: usize,
    user: UserName,
    target: TargetName,
    role: RoleName,
    action: Action,
    ttl: Ttl,
    ticket: Option<Ticket>,
    at: OffsetDateTime,
    allow: bool,
    tier: Option<ExpectedTier>,
    max_ttl: Option<Ttl>,
    mfa: Option<bool>,
    recording: Option<Recording>,
    rules: Option<BTreeSet<String>>,
    refusal: Option<String>,
    mfa_verified: bool,
}

/// When a case does not say: a Monday at noon UTC, inside any office-hours window.
const DEFAULT_AT: OffsetDateTime = time::macros::datetime!(2026-01-05 12:00 UTC);

/// Codes a case may expect, in the order the server checks a request: `Decision::check` but for
/// MFA, whether anyone among the suite's users could give the approval (`no_approvers`), then
/// MFA step-up (`mfa_required`); `none` means the request passes.
const REFUSALS: [&str; 7] = [
    "none",
    "not_permitted",
    "ttl_above_max",
    "ticket_required",
    "ticket_mismatch",
    "mfa_required",
    "no_approvers",
];

const TOP_KEYS: [&str; 2] = ["users", "case"];
const USER_KEYS: [&str; 2] = ["groups", "manager"];
const CASE_KEYS: [&str; 16] = [
    "name",
    "user",
    "target",
    "role",
    "action",
    "ttl",
    "ticket",
    "at",
    "expect",
    "tier",
    "max_ttl",
    "mfa",
    "recording",
    "rules",
    "refusal",
    "mfa_verified",
];
/// Expectations about the terms of a grant, which only an allowed decision has.
const ALLOW_ONLY_KEYS: [&str; 4] = ["tier", "max_ttl", "mfa", "recording"];

/// Why a fixture file with no case is refused, and what to do.
const NO_CASES: &str = "no [[case]] in this fixture file, so it tests nothing: add at least one [[case]] (with name, user, target, role and expect; see the demo policy's tests/access.toml), or remove the file";

/// Reads a fixture file, appending every problem to `out`; a case naming a target or role that
/// `known` (the policy's targets, when its targets.toml reads) has not is one.
fn parse_suite(
    src: Source<'_>,
    known: Option<&KnownTargets<'_>>,
    out: &mut Vec<Diagnostic>,
) -> Option<Suite> {
    let before = out.len();
    let doc = toml_doc::parse(src, out)?;
    for key in doc.keys() {
        if !TOP_KEYS.contains(&key.get_ref().as_ref()) {
            out.push(toml_doc::unknown_key(
                src,
                key,
                "at the top level",
                &TOP_KEYS,
            ));
        }
    }
    let users = match doc.get("users") {
        Some(item) => parse_users(src, item, out),
        None => BTreeMap::new(),
    };
    let mut cases = Vec::new();
    let case_item = doc.get("case");
    if let Some(item) = case_item
        && let Some(items) = toml_doc::array(src, "`case`", item, out)
    {
        if items.is_empty() {
            out.push(toml_doc::at(src, item.span(), NO_CASES));
        }
        let mut names = BTreeSet::new();
        for (i, item) in items.iter().enumerate() {
            let Some(table) = toml_doc::table(src, "each [[case]]", item, out) else {
                continue;
            };
            if let Some(case) = parse_case(src, i + 1, item, table, &users, known, out) {
                if !names.insert(case.name.clone()) {
                    out.push(toml_doc::at(
                        src,
                        item.span(),
                        format!("duplicate case name {:?}", case.name),
                    ));
                }
                cases.push(case);
            }
        }
    }
    if case_item.is_none() {
        // Users alone (or nothing) would pass `policy test` having checked nothing.
        out.push(src.whole(NO_CASES));
    }
    (out.len() == before).then(|| Suite {
        file: src.name.to_owned(),
        users,
        cases,
    })
}

fn parse_users(
    src: Source<'_>,
    item: &Item<'_>,
    out: &mut Vec<Diagnostic>,
) -> BTreeMap<UserName, User> {
    let mut users = BTreeMap::new();
    let mut managers = Vec::new();
    let Some(table) = toml_doc::table(src, "`users`", item, out) else {
        return users;
    };
    for (key, item) in table {
        let name = key
            .get_ref()
            .parse::<UserName>()
            .map_err(|e| out.push(toml_doc::at(src, key.span(), e.to_string())))
            .ok();
        let what = format!("user `{}`", key.get_ref());
        let Some(body) = toml_doc::table(src, &what, item, out) else {
            continue;
        };
        let mut groups = BTreeSet::new();
        let mut manager = None;
        for (k, v) in body {
            let field = format!("`{}` of {what}", k.get_ref());
            match k.get_ref().as_ref() {
                "groups" => {
                    for (g, span) in toml_doc::strings(src, &field, v, out).unwrap_or_default() {
                        match g.parse::<GroupName>() {
                            Ok(g) => {
                                groups.insert(g);
                            }
                            Err(e) => out.push(toml_doc::at(src, span, e.to_string())),
                        }
                    }
                }
                "manager" => {
                    manager = toml_doc::parsed::<UserName>(src, &field, v, out);
                    if let Some(m) = &manager {
                        managers.push((name.clone(), m.clone(), v.span()));
                    }
                }
                _ => out.push(toml_doc::unknown_key(
                    src,
                    k,
                    &format!("in {what}"),
                    &USER_KEYS,
                )),
            }
        }
        if let Some(name) = name {
            if manager.as_ref() == Some(&name) {
                out.push(toml_doc::at(
                    src,
                    key.span(),
                    format!("user {name} names themself as manager"),
                ));
            }
            users.insert(
                name.clone(),
                User {
                    name,
                    groups,
                    manager,
                },
            );
        }
    }
    for (_, m, span) in &managers {
        if !users.contains_key(m) {
            out.push(toml_doc::at(
                src,
                span.clone(),
                format!(
                    "manager {m} is not declared: add a [users.{}] table",
                    targets::toml_key(m.as_str())
                ),
            ));
        }
    }
    // Judged as the server judges its config's users: the managers named (but for those
    // reported above) may not lead round to where they started.
    let named = users.values().cloned().map(|mut u| {
        if u.manager.as_ref() == Some(&u.name)
            || u.manager.as_ref().is_some_and(|m| !users.contains_key(m))
        {
            u.manager = None;
        }
        u
    });
    // Named where the first of them names the next.
    if let Err(e) = Directory::new(named)
        && let DirectoryError::ManagerCycle(cycle) = &e
        && let Some((_, _, span)) = managers
            .iter()
            .find(|(user, _, _)| user.as_ref() == cycle.first())
    {
        out.push(toml_doc::at(src, span.clone(), e.to_string()));
    }
    users
}

fn parse_case(
    src: Source<'_>,
    number: usize,
    item: &Item<'_>,
    table: &DeTable<'_>,
    users: &BTreeMap<UserName, User>,
    known: Option<&KnownTargets<'_>>,
    out: &mut Vec<Diagnostic>,
) -> Option<Case> {
    let before = out.len();
    let shown = match table.get("name").map(|n| n.get_ref()) {
        Some(DeValue::String(s)) if !s.trim().is_empty() => format!("case {s:?}"),
        _ => format!("case #{number}"),
    };
    for key in table.keys() {
        if !CASE_KEYS.contains(&key.get_ref().as_ref()) {
            out.push(toml_doc::unknown_key(
                src,
                key,
                &format!("in {shown}"),
                &CASE_KEYS,
            ));
        }
    }
    let field = |key: &str| table.get(key);
    let what = |key: &str| format!("`{key}` of {shown}");
    let required = |key: &str, out: &mut Vec<Diagnostic>| {
        let found = field(key);
        if found.is_none() {
            out.push(toml_doc::at(
                src,
                item.span(),
                format!("{shown} has no `{key}`"),
            ));
        }
        found
    };

    // Shown in `policy test` output, where a blank one would leave a result unnamed.
    let name = required("name", out).and_then(|v| {
        let name = toml_doc::text(src, &what("name"), v, out)?;
        if name.trim().is_empty() {
            out.push(toml_doc::at(
                src,
                v.span(),
                format!("{shown} has an empty `name`: give it one that says what it checks"),
            ));
            return None;
        }
        Some(name)
    });
    let user = required("user", out)
        .and_then(|v| toml_doc::parsed::<UserName>(src, &what("user"), v, out).map(|u| (u, v)));
    if let Some((u, v)) = &user
        && !users.contains_key(u)
    {
        out.push(toml_doc::at(
            src,
            v.span(),
            format!(
                "user {u} is not declared: add a [users.{}] table",
                targets::toml_key(u.as_str())
            ),
        ));
    }
    let target = required("target", out)
        .and_then(|v| toml_doc::parsed::<TargetName>(src, &what("target"), v, out).map(|t| (t, v)));
    let role = required("role", out)
        .and_then(|v| toml_doc::parsed::<RoleName>(src, &what("role"), v, out).map(|r| (r, v)));
    // As `policy test` would find running the case, so that a check finds it too.
    if let (Some(known), Some((t, v))) = (known, &target) {
        match known.named.target(t.as_str()) {
            Lookup::Unnamed => out.push(toml_doc::at(
                src,
                v.span(),
                format!(
                    "unknown target `{t}`; known targets: {}: name one of them, or define it in targets.toml",
                    crate::policy::list(&known.listed)
                ),
            )),
            Lookup::Named(Some(roles)) => {
                if let Some((r, v)) = &role
                    && !roles.contains(r.as_str())
                {
                    let roles: Vec<String> = roles.iter().cloned().collect();
                    out.push(toml_doc::at(
                        src,
                        v.span(),
                        format!(
                            "target `{t}` has no role `{r}`; its roles: {}: name one of them, or define it in targets.toml as [targets.{}.roles.{}]",
                            crate::policy::list(&roles),
                            targets::toml_key(t.as_str()),
                            targets::toml_key(r.as_str())
                        ),
                    ));
                }
            }
            // Which roles it has, or whether it is named at all, cannot be told: targets.toml's
            // own problems say why.
            Lookup::Named(None) | Lookup::Unknown => {}
        }
    }
    let allow = required("expect", out).and_then(|v| {
        match toml_doc::string(src, &what("expect"), v, out)? {
            "allow" => Some(true),
            "deny" => Some(false),
            other => {
                out.push(toml_doc::at(
                    src,
                    v.span(),
                    format!(
                        "{}: {other:?} is neither \"allow\" nor \"deny\"",
                        what("expect")
                    ),
                ));
                None
            }
        }
    });
    if allow == Some(false) {
        for key in ALLOW_ONLY_KEYS {
            if let Some(v) = field(key) {
                out.push(toml_doc::at(
                    src,
                    v.span(),
                    format!("{}: only an allowed decision has terms to check; remove it or expect \"allow\"", what(key)),
                ));
            }
        }
    }
    let action = match field("action") {
        None => Some(Action::Request),
        Some(v) => match toml_doc::string(src, &what("action"), v, out)? {
            "request" => Some(Action::Request),
            "breakglass" => Some(Action::Breakglass),
            other => {
                out.push(toml_doc::at(
                    src,
                    v.span(),
                    format!(
                        "{}: {other:?} is neither \"request\" nor \"breakglass\"",
                        what("action")
                    ),
                ));
                None
            }
        },
    };
    let ttl = match field("ttl") {
        None => Ttl::from_secs(3600).ok(),
        Some(v) => toml_doc::parsed::<Ttl>(src, &what("ttl"), v, out),
    };
    let ticket = optional(field("ticket"), |v| {
        let s = toml_doc::string(src, &what("ticket"), v, out)?;
        Ticket::parse(s)
            .map_err(|e| {
                out.push(toml_doc::at(
                    src,
                    v.span(),
                    format!("{}: {e}", what("ticket")),
                ))
            })
            .ok()
    });
    let at = match field("at") {
        None => Some(DEFAULT_AT),
        Some(v) => parse_time(src, &what("at"), v, out),
    };
    let tier = optional(field("tier"), |v| {
        toml_doc::parsed(src, &what("tier"), v, out)
    });
    let max_ttl = optional(field("max_ttl"), |v| {
        toml_doc::parsed(src, &what("max_ttl"), v, out)
    });
    let recording = optional(field("recording"), |v| {
        toml_doc::parsed(src, &what("recording"), v, out)
    });
    let mfa = optional(field("mfa"), |v| {
        toml_doc::boolean(src, &what("mfa"), v, out)
    });
    let mfa_verified = match field("mfa_verified") {
        None => Some(false),
        Some(v) => toml_doc::boolean(src, &what("mfa_verified"), v, out),
    };
    let rules = optional(field("rules"), |v| {
        let listed = toml_doc::strings(src, &what("rules"), v, out)?;
        let mut rules = BTreeSet::new();
        for (s, span) in listed {
            // Quoted in a failed case's message.
            toml_doc::check_shown(
                src,
                &format!("each entry of {}", what("rules")),
                s,
                &span,
                out,
            );
            // A set is compared: a rule listed twice would read as expected twice.
            if !rules.insert(s.to_owned()) {
                out.push(toml_doc::at(
                    src,
                    span,
                    format!(
                        "{}: rule {s:?} is listed twice; list each rule id once",
                        what("rules")
                    ),
                ));
            }
        }
        Some(rules)
    });
    let refusal = optional(field("refusal"), |v| {
        let code = toml_doc::string(src, &what("refusal"), v, out)?;
        if REFUSALS.contains(&code) {
            return Some(code.to_owned());
        }
        out.push(toml_doc::at(
            src,
            v.span(),
            format!(
                "{}: unknown refusal code {code:?}; use one of {}",
                what("refusal"),
                REFUSALS.join(", ")
            ),
        ));
        None
    });
    if out.len() != before {
        return None;
    }
    Some(Case {
        name: name?.to_owned(),
        line: src.place(item.span().start).line,
        user: user?.0,
        target: target?.0,
        role: role?.0,
        action: action?,
        ttl: ttl?,
        ticket: ticket?,
        at: at?,
        allow: allow?,
        tier: tier?,
        max_ttl: max_ttl?,
        mfa: mfa?,
        recording: recording?,
        rules: rules?,
        refusal: refusal?,
        mfa_verified: mfa_verified?,
    })
}

/// An optional value: `Some(None)` when absent, `Some(Some(v))` when present and valid, `None`
/// when present but invalid (already reported by `read`).
fn optional<T>(
    item: Option<&Item<'_>>,
    read: impl FnOnce(&Item<'_>) -> Option<T>,
) -> Option<Option<T>> {
    match item {
        None => Some(None),
        Some(v) => read(v).map(Some),
    }
}

/// An RFC 3339 time, written either as a string or as a bare TOML datetime.
fn parse_time(
    src: Source<'_>,
    what: &str,
    item: &Item<'_>,
    out: &mut Vec<Diagnostic>,
) -> Option<OffsetDateTime> {
    let text = match item.get_ref() {
        DeValue::Datetime(d) => d.to_string(),
        _ => toml_doc::string(src, what, item, out)?.to_owned(),
    };
    let problem = match OffsetDateTime::parse(&text, &Rfc3339) {
        // Within the years every target's time zone can be read in: a time outside them
        // would be decided with no `context.now` at all, so as no rule permitting it.
        Ok(t) if AT_YEARS.contains(&t.year()) => return Some(t),
        Ok(_) => format!(
            "{what}: {text:?} is outside the years a case may be set in ({} to {})",
            AT_YEARS.start(),
            AT_YEARS.end()
        ),
        Err(e) => {
            format!("{what}: {text:?} is not an RFC 3339 time such as 2026-01-05T10:00:00Z ({e})")
        }
    };
    out.push(toml_doc::at(src, item.span(), problem));
    None
}

/// The years a case's `at` may fall in.
const AT_YEARS: std::ops::RangeInclusive<i32> = 1000..=9000;

/// Runs one case: what differed from its expectations (none when it passes).
fn run_case(policy: &Policy, suite: &Suite, case: &Case) -> Vec<Mismatch> {
    let error = |got: String| {
        vec![Mismatch {
            field: "error",
            expected: None,
            got,
        }]
    };
    let Some(user) = suite.users.get(&case.user) else {
        // Parsing already reports undeclared users; never let such a case pass.
        return error(format!("user {} is not declared", case.user));
    };
    let ctx = Context {
        now: case.at,
        ttl: case.ttl,
        ticket: case.ticket.clone(),
    };
    let d = match policy.decide(case.action, user, &case.target, &case.role, &ctx) {
        Ok(d) => d,
        Err(e) => return error(e.to_string()),
    };
    if d.allowed != case.allow {
        let expected = if case.allow { "allow" } else { "deny" };
        return vec![Mismatch {
            field: "decision",
            expected: Some(expected.to_owned()),
            got: describe(&d),
        }];
    }
    let mut wrong = Vec::new();
    let mut compare = |field: &'static str, expected: Option<String>, got: String| {
        if let Some(expected) = expected
            && expected != got
        {
            wrong.push(Mismatch {
                field,
                expected: Some(expected),
                got,
            });
        }
    };
    let tier = match case.action {
        Action::Breakglass => warden_domain::request::BREAKGLASS_TIER.to_owned(),
        Action::Request => d.requirement.to_string(),
    };
    compare("tier", case.tier.as_ref().map(ToString::to_string), tier);
    compare(
        "max_ttl",
        case.max_ttl.map(|t| t.to_string()),
        d.max_ttl.to_string(),
    );
    compare("mfa", case.mfa.map(|m| m.to_string()), d.mfa.to_string());
    compare(
        "recording",
        case.recording.map(|r| r.to_string()),
        d.recording.to_string(),
    );
    compare(
        "rules",
        case.rules.as_ref().map(|r| list(r.iter())),
        list(d.rules.iter().collect::<BTreeSet<_>>().into_iter()),
    );
    let approvable = || {
        if d.requirement.is_auto() {
            Ok(())
        } else {
            d.approvable(user, suite.users.values())
        }
    };
    // In the server's order: what no second factor can fix, then who could approve, then the
    // step-up (it spends the requester's code only on a request that could be granted).
    let refusal = match d
        .check(case.ttl, case.ticket.as_ref(), true)
        .and_then(|()| approvable())
        .and_then(|()| d.check(case.ttl, case.ticket.as_ref(), case.mfa_verified))
    {
        Ok(()) => "none".to_owned(),
        Err(r) => format!("{} ({r})", r.code()),
    };
    if let Some(expected) = &case.refusal {
        let code = refusal.split(' ').next().unwrap_or_default();
        if code != expected {
            wrong.push(Mismatch {
                field: "refusal",
                expected: Some(expected.clone()),
                got: refusal,
            });
        }
    }
    wrong
}

fn list<'a>(items: impl Iterator<Item = &'a String>) -> String {
    format!(
        "[{}]",
        items.map(String::as_str).collect::<Vec<_>>().join(", ")
    )
}

fn describe(d: &Decision) -> String {
    if d.allowed {
        format!(
            "allow (rules {}; tier {}; max_ttl {})",
            list(d.rules.iter()),
            d.requirement,
            d.max_ttl
        )
    } else if d.rules.is_empty() {
        "deny (no permit matched)".to_owned()
    } else {
        // A forbid's `@reason`, or why a rule could not be evaluated, says more than its id.
        let why: String = d
            .forbid_reasons
            .iter()
            .map(|(rule, reason)| format!("; {rule}: {reason}"))
            .collect();
        format!("deny (by {}{why})", list(d.rules.iter()))
    }
}

/// The tier a case expects: a requirement as policy writes it, or `breakglass`, as `policy
/// explain` and `request show` name a break-glass grant's (granted at once, by no one).
#[derive(Debug, Clone, PartialEq)]
enum ExpectedTier {
    Requirement(Requirement),
    Breakglass,
}

impl std::str::FromStr for ExpectedTier {
    type Err = String;

    /// Any tier a decision can have, as it shows it (a combination of several rules' tiers
    /// included), its clauses in any order; but not one holding a clause that combining leaves
    /// out (`peer(sre) & peer(sre)` reads as `peer(sre)`), which no decision shows as written:
    /// refused as `@approval` refuses it, so that the case says what it checks.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == warden_domain::request::BREAKGLASS_TIER {
            return Ok(Self::Breakglass);
        }
        let requirement: Requirement = s.parse().map_err(|e| format!("{e}"))?;
        // A tier that parses is `auto` or clauses joined by `&`.
        let written = if s.trim() == "auto" {
            0
        } else {
            s.split('&').count()
        };
        if requirement.clauses().len() == written {
            return Ok(Self::Requirement(requirement));
        }
        Err(match Requirement::written(s) {
            Err(e) => e.to_string(),
            // A clause others fill anyway, as `peer(sec)` beside `two-person(sec)`.
            Ok(_) => format!(
                "{s:?} asks for no more approvers than \"{requirement}\", which is how a decision shows it: expect that"
            ),
        })
    }
}

impl std::fmt::Display for ExpectedTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Requirement(r) => r.fmt(f),
            Self::Breakglass => f.write_str(warden_domain::request::BREAKGLASS_TIER),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The problems of fixture file `tests/t.toml` holding `text`, as `policy test` shows them.
    fn problems(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        parse_suite(Source::new("tests/t.toml", text), None, &mut out);
        out.iter().map(ToString::to_string).collect()
    }

    const USERS: &str = "[users.alice]\ngroups = [\"dev\"]\n";

    fn case(extra: &str) -> String {
        format!(
            "{USERS}\n[[case]]\nuser = \"alice\"\ntarget = \"web\"\nrole = \"admin\"\nexpect = \"allow\"\n{extra}"
        )
    }

    #[test]
    fn a_tier_is_refused_where_a_rule_would_be() {
        let repeated = "peer(sre) & peer(sre)";
        let Err(annotation) = Requirement::written(repeated) else {
            panic!("{repeated} is written");
        };
        assert_eq!(
            problems(&case(&format!("name = \"n\"\ntier = \"{repeated}\"\n"))),
            [format!(
                "tests/t.toml:10:8: `tier` of case \"n\": {annotation}"
            )]
        );
        assert!(
            annotation.to_string().contains("repeats a clause"),
            "{annotation}"
        );
        // As a decision shows it, whatever the order: a combination of several rules' tiers.
        for combined in [
            "peer(sre) & peer(dba) & peer(sre|dba, 3)",
            "peer(dba|sre, 3) & peer(sre) & peer(dba)",
            "manager & peer(sre)",
            "auto",
            "breakglass",
        ] {
            assert!(combined.parse::<ExpectedTier>().is_ok(), "{combined}");
        }
        // What a decision shows another way is refused, saying how it shows it.
        assert_eq!(
            "two-person(sec) & peer(sec)".parse::<ExpectedTier>(),
            Err("\"two-person(sec) & peer(sec)\" asks for no more approvers than \"two-person(sec)\", which is how a decision shows it: expect that".to_owned())
        );
        assert!(
            "peer(sre) & peer(sre|dba)"
                .parse::<ExpectedTier>()
                .is_err_and(|e| e.contains("include another clause's"))
        );
    }

    #[test]
    fn a_file_without_cases_is_refused() {
        let refused = format!("tests/t.toml: {NO_CASES}");
        // Users alone, or nothing at all, would pass having tested nothing.
        for text in [USERS, ""] {
            assert_eq!(problems(text), [refused.as_str()]);
        }
        assert_eq!(
            problems(&format!("case = []\n{USERS}")),
            [format!("tests/t.toml:1:8: {NO_CASES}")]
        );
        assert!(NO_CASES.contains("add at least one [[case]]"), "{NO_CASES}");
        assert!(problems(&case("name = \"n\"\n")).is_empty());
    }

    #[test]
    fn a_rule_expected_twice_is_refused_where_it_repeats() {
        assert_eq!(
            problems(&case("name = \"n\"\nrules = [\"a\", \"b\",\n  \"a\"]\n")),
            [
                "tests/t.toml:11:3: `rules` of case \"n\": rule \"a\" is listed twice; list each rule id once"
            ]
        );
        assert!(problems(&case("name = \"n\"\nrules = [\"a\", \"b\"]\n")).is_empty());
    }

    #[test]
    fn a_case_needs_a_name_that_shows() {
        assert!(problems(&case("name = \"shown\"\n")).is_empty());
        assert_eq!(
            problems(&case("name = \"\"\n")),
            ["tests/t.toml:9:8: case #1 has an empty `name`: give it one that says what it checks"]
        );
        assert_eq!(
            problems(&case("name = \"   \"\nttl = 5\n")),
            [
                "tests/t.toml:9:8: case #1 has an empty `name`: give it one that says what it checks",
                "tests/t.toml:10:7: `ttl` of case #1 must be a string, not integer",
            ]
        );
        assert_eq!(
            problems(&case("")),
            ["tests/t.toml:4:1: case #1 has no `name`"]
        );
    }
}
