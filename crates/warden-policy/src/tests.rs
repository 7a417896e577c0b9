//! Tests of the crate as its callers use it: loading, deciding, reporting problems and running
//! fixtures.

use time::macros::datetime;
use warden_domain::{Recording, Ticket, User};

use super::*;

/// No problems of the targets beyond this crate's own checks (the server adds its issuers').
const NO_CHECK: TargetCheck<'static> = TargetCheck {
    problems: &|_| Vec::new(),
    records_sessions: &|_| true,
};

const TARGETS: &str = r#"
[targets.prod-web-1]
kind = "ssh"
environment = "production"
labels = ["web"]

[targets.prod-web-1.roles.admin]
principals = ["root"]

[targets.prod-web-1.roles.viewer]
principals = ["viewer"]

[targets.stage-web-1]
kind = "ssh"
environment = "staging"

[targets.stage-web-1.roles.admin]
principals = ["root"]
"#;

fn files(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut files = vec![("targets.toml".to_owned(), TARGETS.to_owned())];
    files.extend(
        extra
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned())),
    );
    files
}

fn load(extra: &[(&str, &str)]) -> Policy {
    Policy::from_files(&files(extra)).unwrap_or_else(|r| panic!("{r}"))
}

fn problems(files: &[(String, String)]) -> Vec<String> {
    match Policy::from_files(files) {
        Ok(_) => panic!("loaded"),
        Err(r) => r.diagnostics.iter().map(ToString::to_string).collect(),
    }
}

fn user(name: &str, groups: &[&str]) -> User {
    User {
        name: name.parse().unwrap(),
        groups: groups.iter().map(|g| g.parse().unwrap()).collect(),
        manager: None,
    }
}

fn ctx() -> Context {
    Context {
        now: datetime!(2026-01-05 12:00 UTC),
        ttl: "1h".parse().unwrap(),
        ticket: None,
    }
}

fn decide(
    p: &Policy,
    who: &User,
    target: &str,
    role: &str,
    ctx: &Context,
) -> warden_domain::Decision {
    p.decide(
        Action::Request,
        who,
        &target.parse().unwrap(),
        &role.parse().unwrap(),
        ctx,
    )
    .unwrap()
}

#[test]
fn demo_policy_loads_and_its_fixtures_pass() {
    let policy = Policy::from_files(&demo_files()).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(policy.rule_count(), 6);
    assert_eq!(
        policy.breakglass_roles(),
        vec![("demo-ssh".parse().unwrap(), "root".parse().unwrap())]
    );
    assert_eq!(policy.targets().len(), 1);
    let report = fixtures::run_files(&demo_files(), NO_CHECK).unwrap_or_else(|r| panic!("{r}"));
    let failures: Vec<_> = report.cases.iter().filter(|c| !c.passed).collect();
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(report.passed(), 18);
    assert_eq!(report.failed(), 0);
    // A break-glass case's tier is `breakglass`, as `policy explain` names it.
    let mut files = demo_files();
    for (name, text) in &mut files {
        if name.starts_with("tests/") {
            *text = text.replace("tier = \"breakglass\"", "tier = \"auto\"");
        }
    }
    let report = fixtures::run_files(&files, NO_CHECK).unwrap_or_else(|r| panic!("{r}"));
    let failed: Vec<_> = report.cases.iter().filter(|c| !c.passed).collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert!(
        failed[0]
            .message
            .as_deref()
            .is_some_and(|m| m.contains("tier: expected auto, got breakglass")),
        "{failed:#?}"
    );
}

#[test]
fn loads_a_directory_like_in_memory_files() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in demo_files() {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    std::fs::write(dir.path().join("README.md"), "not policy").unwrap();
    // A byte-order mark before a file's text is no text.
    let targets = dir.path().join("targets.toml");
    let text = std::fs::read_to_string(&targets).unwrap();
    std::fs::write(&targets, format!("\u{feff}{text}")).unwrap();
    // An editor's lock files, dangling links, are passed over, in tests/ too.
    for lock in [".#access.cedar", "tests/.#cases.toml"] {
        std::os::unix::fs::symlink("user@host.1234:1700000000", dir.path().join(lock)).unwrap();
    }
    std::os::unix::fs::symlink("nowhere", dir.path().join("README.cedar.bak")).unwrap();
    let from_dir = Policy::load_dir(dir.path(), NO_CHECK).unwrap();
    let in_memory = Policy::from_files(&demo_files()).unwrap();
    assert_eq!(from_dir.digest(), in_memory.digest());
    let report = run_tests(dir.path(), NO_CHECK).unwrap();
    assert_eq!((report.passed(), report.failed()), (18, 0));

    std::fs::write(dir.path().join("extra.cedar"), "@id(\"x\")").unwrap();
    let err = Policy::load_dir(dir.path(), NO_CHECK).unwrap_err();
    assert_eq!(err.diagnostics[0].file, "extra.cedar");
    // A policy file that is a dangling link is named.
    std::fs::remove_file(dir.path().join("extra.cedar")).unwrap();
    std::os::unix::fs::symlink("nowhere", dir.path().join("extra.cedar")).unwrap();
    let err = Policy::load_dir(dir.path(), NO_CHECK).unwrap_err();
    assert_eq!(err.diagnostics[0].file, "extra.cedar");
    assert!(err.to_string().contains("cannot read"), "{err}");

    std::fs::remove_file(dir.path().join("extra.cedar")).unwrap();
    // A file that cannot be read hides no other file's problem: a check shows them all.
    std::fs::write(dir.path().join("latin1.cedar"), b"// caf\xe9\n").unwrap();
    std::fs::write(
        dir.path().join("typo.cedar"),
        "@id(\"typo\") @approval(\"manger\") @max_ttl(\"1h\")\npermit (principal, action, resource);\n",
    )
    .unwrap();
    let err = Policy::load_dir(dir.path(), NO_CHECK).unwrap_err();
    let files: Vec<&str> = err.diagnostics.iter().map(|d| d.file.as_str()).collect();
    assert_eq!(files, ["latin1.cedar", "typo.cedar"], "{err}");
    // `policy test` too, with the fixtures' own problems.
    std::fs::write(
        dir.path().join("tests/maybe.toml"),
        "[users.alice]\ngroups = [\"dev\"]\n\n[[case]]\nname = \"m\"\nuser = \"alice\"\ntarget = \"demo-ssh\"\nrole = \"viewer\"\nexpect = \"maybe\"\n",
    )
    .unwrap();
    let err = run_tests(dir.path(), NO_CHECK).unwrap_err();
    let files: Vec<&str> = err.diagnostics.iter().map(|d| d.file.as_str()).collect();
    assert_eq!(
        files,
        ["latin1.cedar", "tests/maybe.toml", "typo.cedar"],
        "{err}"
    );
    std::fs::remove_file(dir.path().join("tests/maybe.toml")).unwrap();
    std::fs::remove_file(dir.path().join("latin1.cedar")).unwrap();
    std::fs::remove_file(dir.path().join("typo.cedar")).unwrap();

    // Rules that would be passed over in silence are named: a file whose name differs only in
    // case, and a rule file in a folder (a folder whose name starts with a dot is kept aside).
    std::fs::write(dir.path().join("Forbid.CEDAR"), "").unwrap();
    std::fs::create_dir_all(dir.path().join("more/deeper/still")).unwrap();
    std::fs::write(dir.path().join("more/forbid.cedar"), "").unwrap();
    std::fs::write(dir.path().join("more/deeper/still/Deny.Cedar"), "").unwrap();
    std::fs::create_dir_all(dir.path().join("more/.aside")).unwrap();
    std::fs::write(dir.path().join("more/.aside/old.cedar"), "").unwrap();
    std::fs::create_dir(dir.path().join(".aside")).unwrap();
    std::fs::write(dir.path().join(".aside/old.cedar"), "").unwrap();
    let err = Policy::load_dir(dir.path(), NO_CHECK).unwrap_err();
    let files: Vec<&str> = err.diagnostics.iter().map(|d| d.file.as_str()).collect();
    assert_eq!(
        files,
        [
            "Forbid.CEDAR",
            "more/deeper/still/Deny.Cedar",
            "more/forbid.cedar"
        ],
        "{err}"
    );
    std::fs::remove_file(dir.path().join("Forbid.CEDAR")).unwrap();
    std::fs::remove_dir_all(dir.path().join("more")).unwrap();
    Policy::load_dir(dir.path(), NO_CHECK).unwrap();

    // Fixtures `policy test` would pass over are named too, but only where fixtures are read:
    // a server loads the policy whatever its tests/ holds.
    std::fs::write(dir.path().join("tests/More.TOML"), "").unwrap();
    std::fs::create_dir_all(dir.path().join("tests/sub/deeper")).unwrap();
    std::fs::write(dir.path().join("tests/sub/deeper/cases.toml"), "").unwrap();
    std::fs::write(dir.path().join("tests/README.md"), "about the cases").unwrap();
    let err = run_tests(dir.path(), NO_CHECK).unwrap_err();
    let files: Vec<&str> = err.diagnostics.iter().map(|d| d.file.as_str()).collect();
    assert_eq!(
        files,
        ["tests/More.TOML", "tests/sub/deeper/cases.toml"],
        "{err}"
    );
    Policy::load_dir(dir.path(), NO_CHECK).unwrap();
    std::fs::remove_file(dir.path().join("tests/More.TOML")).unwrap();
    std::fs::remove_dir_all(dir.path().join("tests/sub")).unwrap();

    let missing = Policy::load_dir(&dir.path().join("nope"), NO_CHECK).unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("cannot read the policy directory"),
        "{missing}"
    );
}

#[test]
fn the_strictest_terms_of_overlapping_permits_apply() {
    let p = load(&[
        (
            "sre.cedar",
            r#"
@id("sre-prod")
@approval("peer(sre)")
@max_ttl("4h")
@ticket("INC-[0-9]+")
@recording("sampled")
@pending_timeout("2h")
permit (principal in Group::"sre", action == Action::"request", resource in Target::"prod-web-1");
"#,
        ),
        (
            "prod.cedar",
            r#"
@id("prod-guard")
@approval("manager & peer(sre, 2)")
@max_ttl("1h")
@ticket("(INC|CHG)-[0-9]+")
@mfa("required")
@recording("full")
permit (principal, action, resource)
when { resource.target.environment == "production" && resource.name == "admin" };

@id("prod-same-ticket")
@approval("auto")
@max_ttl("8h")
@ticket("INC-[0-9]+")
permit (principal in Group::"sre", action, resource == Role::"prod-web-1/admin");
"#,
        ),
    ]);
    let bob = user("bob", &["sre"]);
    let d = decide(&p, &bob, "prod-web-1", "admin", &ctx());
    assert!(d.allowed);
    assert_eq!(d.rules, vec!["prod-guard", "prod-same-ticket", "sre-prod"]);
    assert_eq!(d.requirement.to_string(), "peer(sre, 2) & manager");
    assert_eq!(d.max_ttl.to_string(), "1h");
    assert_eq!(d.pending_timeout.to_string(), "2h");
    assert!(d.mfa);
    assert_eq!(d.recording, Recording::Full);
    let patterns: Vec<_> = d.ticket_patterns.iter().map(|t| t.as_str()).collect();
    assert_eq!(patterns, vec!["(INC|CHG)-[0-9]+", "INC-[0-9]+"]);

    // Only one permit matches the viewer role: its own terms, and the defaults.
    let d = decide(&p, &bob, "prod-web-1", "viewer", &ctx());
    assert_eq!(d.rules, vec!["sre-prod"]);
    assert_eq!(d.requirement.to_string(), "peer(sre)");
    assert!(!d.mfa);
    // Nothing permits a non-SRE on staging.
    let d = decide(&p, &user("alice", &["dev"]), "stage-web-1", "admin", &ctx());
    assert!(!d.allowed);
    assert!(d.rules.is_empty());
}

#[test]
fn a_matching_forbid_wins() {
    let p = load(&[(
        "a.cedar",
        r#"
@id("everyone")
@approval("auto")
@max_ttl("1h")
permit (principal, action, resource);

@id("no-web-for-contractors")
@reason("contractors work on staging only")
forbid (principal in Group::"contractors", action, resource)
when { resource.target.labels.contains("web") && resource.target.environment == "production" };

@id("no-admin-for-contractors")
forbid (principal in Group::"contractors", action, resource)
when { resource.name == "admin" };
"#,
    )]);
    let carol = user("carol", &["contractors"]);
    let d = decide(&p, &carol, "prod-web-1", "admin", &ctx());
    assert!(!d.allowed);
    assert_eq!(
        d.rules,
        vec!["no-admin-for-contractors", "no-web-for-contractors"]
    );
    assert_eq!(
        d.check(ctx().ttl, None, true).unwrap_err().to_string(),
        "refused by policy rules no-admin-for-contractors; no-web-for-contractors: contractors work on staging only"
    );
    assert_eq!(
        decide(&p, &carol, "prod-web-1", "viewer", &ctx()).rules,
        vec!["no-web-for-contractors"]
    );
    assert!(decide(&p, &user("dave", &["dev"]), "prod-web-1", "admin", &ctx()).allowed);
}

/// Decisions reuse the entity set of an earlier one with the same inputs; one whose user's
/// groups changed, or for another role, is decided afresh.
#[test]
fn repeated_decisions_follow_the_users_groups() {
    let p = load(&[(
        "a.cedar",
        r#"
@id("ops-admin")
@approval("auto")
@max_ttl("1h")
permit (principal in Group::"ops", action, resource == Role::"prod-web-1/admin");
"#,
    )]);
    let ops = user("erin", &["ops"]);
    let left = user("erin", &["dev"]);
    for _ in 0..3 {
        assert!(decide(&p, &ops, "prod-web-1", "admin", &ctx()).allowed);
        assert!(!decide(&p, &left, "prod-web-1", "admin", &ctx()).allowed);
        assert!(!decide(&p, &ops, "prod-web-1", "viewer", &ctx()).allowed);
        assert!(!decide(&p, &user("ops", &[]), "prod-web-1", "admin", &ctx()).allowed);
    }
}

#[test]
fn evaluation_errors_fail_closed() {
    let p = load(&[(
        "a.cedar",
        r#"
@id("fine")
@approval("auto")
@max_ttl("1h")
permit (principal, action, resource);

@id("overflows")
@approval("auto")
@max_ttl("1h")
permit (principal, action, resource == Role::"prod-web-1/admin")
when { context.ttl_seconds * 9223372036854775807 > 0 };

@id("forbid-overflows")
forbid (principal, action, resource == Role::"stage-web-1/admin")
when { context.ttl_seconds * 9223372036854775807 > 0 };
"#,
    )]);
    let alice = user("alice", &["dev"]);
    // A permit that cannot be evaluated denies, even though another permit matches.
    let d = decide(&p, &alice, "prod-web-1", "admin", &ctx());
    assert!(!d.allowed);
    assert_eq!(d.rules, vec!["overflows"]);
    // The refusal says the rule failed, not that it forbids.
    let said = d.not_permitted().to_string();
    assert!(
        said.contains("overflows: it could not be evaluated (") && said.contains("overflow"),
        "{said}"
    );
    // A forbid that cannot be evaluated denies too, where Cedar alone would have allowed.
    let d = decide(&p, &alice, "stage-web-1", "admin", &ctx());
    assert!(!d.allowed);
    assert_eq!(d.rules, vec!["forbid-overflows"]);
    assert!(decide(&p, &alice, "prod-web-1", "viewer", &ctx()).allowed);
}

/// The demo targets with `rules` as their only Cedar file: the policy directory of the
/// reproduction below.
fn demo_targets_with(rules: &str, cases: &str) -> Vec<(String, String)> {
    let targets = demo_files()
        .into_iter()
        .find(|(name, _)| name == "targets.toml")
        .unwrap();
    let mut files = vec![targets, ("access.cedar".to_owned(), rules.to_owned())];
    if !cases.is_empty() {
        files.push(("tests/t.toml".to_owned(), cases.to_owned()));
    }
    files
}

/// A 30-minute request makes this condition overflow: 1800 * 10^16 is past a Cedar Long.
const OVERFLOWS: &str = "context.ttl_seconds * 10000000000000000 > 0";

#[test]
fn a_failing_rule_refuses_only_the_decisions_it_could_take_part_in() {
    let bg = "@id(\"bg\") @max_ttl(\"1h\")\npermit (principal, action == Action::\"breakglass\", resource == Role::\"demo-ssh/root\");\n";
    let long = format!(
        "@id(\"long-requests\") @approval(\"peer(sre)\") @max_ttl(\"8h\")\npermit (principal, action, resource)\nwhen {{ {OVERFLOWS} }};\n"
    );
    let bob = user("bob", &["sre"]);
    let half_hour = Context {
        ttl: "30m".parse().unwrap(),
        ..ctx()
    };
    let decide_as = |p: &Policy, action: Action| {
        p.decide(
            action,
            &bob,
            &"demo-ssh".parse().unwrap(),
            &"root".parse().unwrap(),
            &half_hour,
        )
        .unwrap()
    };
    let p = Policy::from_files(&demo_targets_with(&format!("{bg}\n{long}"), ""))
        .unwrap_or_else(|r| panic!("{r}"));

    // An ordinary permit that cannot be evaluated could never grant break-glass access, nor set
    // its terms: the break-glass permit decides.
    let d = decide_as(&p, Action::Breakglass);
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.rules, ["bg"]);
    assert!(d.check("30m".parse().unwrap(), None, true).is_ok());

    // The same permit still refuses the ordinary request it might have set stricter terms for,
    // and the refusal says it was refused, not forbidden: no forbid exists.
    let d = decide_as(&p, Action::Request);
    assert!(!d.allowed);
    assert_eq!(d.rules, ["long-requests"]);
    let said = d.not_permitted().to_string();
    assert!(
        said.starts_with("refused by policy rule long-requests: it could not be evaluated (")
            && said.contains("overflow"),
        "{said}"
    );

    // A forbid that cannot be evaluated still refuses break-glass.
    let forbid = format!(
        "@id(\"broken-forbid\")\nforbid (principal, action, resource)\nwhen {{ {OVERFLOWS} }};\n"
    );
    let p = Policy::from_files(&demo_targets_with(&format!("{bg}\n{long}\n{forbid}"), ""))
        .unwrap_or_else(|r| panic!("{r}"));
    let d = decide_as(&p, Action::Breakglass);
    assert!(!d.allowed);
    assert_eq!(d.rules, ["broken-forbid"]);
    let said = d.not_permitted().to_string();
    assert!(
        said.starts_with("refused by policy rule broken-forbid: it could not be evaluated ("),
        "{said}"
    );

    // So does a break-glass permit that cannot be evaluated: it might have been the one whose
    // shorter TTL or ticket applies.
    let broken_bg = format!(
        "@id(\"bg-broken\") @max_ttl(\"15m\")\npermit (principal, action == Action::\"breakglass\", resource)\nwhen {{ {OVERFLOWS} }};\n"
    );
    let p = Policy::from_files(&demo_targets_with(
        &format!("{bg}\n{long}\n{broken_bg}"),
        "",
    ))
    .unwrap_or_else(|r| panic!("{r}"));
    let d = decide_as(&p, Action::Breakglass);
    assert!(!d.allowed);
    assert_eq!(d.rules, ["bg-broken"]);

    // `policy test` decides alike: the break-glass case passes, and the ordinary one still
    // shows the rule that cannot be evaluated.
    let cases = "[users.bob]\ngroups = [\"sre\"]\n\n[[case]]\nname = \"break-glass\"\nuser = \"bob\"\ntarget = \"demo-ssh\"\nrole = \"root\"\naction = \"breakglass\"\nttl = \"30m\"\nexpect = \"allow\"\nrules = [\"bg\"]\n\n[[case]]\nname = \"request\"\nuser = \"bob\"\ntarget = \"demo-ssh\"\nrole = \"root\"\nttl = \"30m\"\nexpect = \"allow\"\n";
    let report = fixtures::run_files(
        &demo_targets_with(&format!("{bg}\n{long}"), cases),
        NO_CHECK,
    )
    .unwrap_or_else(|r| panic!("{r}"));
    assert!(report.cases[0].passed, "{:#?}", report.cases[0]);
    assert!(!report.cases[1].passed);
    let message = report.cases[1].message.as_deref().unwrap_or_default();
    assert!(
        message.starts_with(
            "expected allow, got deny (by [long-requests]; long-requests: it could not be evaluated ("
        ),
        "{message}"
    );
}

#[test]
fn time_windows_and_actions_are_visible_to_rules() {
    let p = load(&[(
        "a.cedar",
        r#"
@id("office-hours")
@approval("auto")
@max_ttl("1h")
permit (principal, action == Action::"request", resource)
when { context.now.weekday < 5 && context.now.hour >= 8 && context.now.hour < 18 };

@id("breakglass-with-ticket")
@max_ttl("30m")
permit (principal in Group::"sre", action == Action::"breakglass", resource)
when { context.has_ticket && context.ticket like "INC-*" && context.ttl_seconds <= 1800 };
"#,
    )]);
    let bob = user("bob", &["sre"]);
    let at = |now| Context { now, ..ctx() };
    assert!(
        decide(
            &p,
            &bob,
            "prod-web-1",
            "admin",
            &at(datetime!(2026-01-05 09:00 UTC))
        )
        .allowed
    );
    // 19:00 in UTC+2 is 17:00 UTC: inside the window.
    assert!(
        decide(
            &p,
            &bob,
            "prod-web-1",
            "admin",
            &at(datetime!(2026-01-05 19:00 +2))
        )
        .allowed
    );
    assert!(
        !decide(
            &p,
            &bob,
            "prod-web-1",
            "admin",
            &at(datetime!(2026-01-05 18:00 UTC))
        )
        .allowed
    );
    assert!(
        !decide(
            &p,
            &bob,
            "prod-web-1",
            "admin",
            &at(datetime!(2026-01-11 10:00 UTC))
        )
        .allowed
    );

    let breakglass = |ttl: &str, ticket: Option<&str>| {
        let c = Context {
            ttl: ttl.parse().unwrap(),
            ticket: ticket.map(|t| Ticket::parse(t).unwrap()),
            now: datetime!(2026-01-11 03:00 UTC),
        };
        p.decide(
            Action::Breakglass,
            &bob,
            &"prod-web-1".parse().unwrap(),
            &"admin".parse().unwrap(),
            &c,
        )
        .unwrap()
    };
    assert_eq!(
        breakglass("30m", Some("INC-9")).rules,
        vec!["breakglass-with-ticket"]
    );
    assert!(!breakglass("30m", None).allowed);
    assert!(!breakglass("30m", Some("CHG-9")).allowed);
    assert!(!breakglass("31m", Some("INC-9")).allowed);
}

#[test]
fn breakglass_permits_have_their_own_terms() {
    let report = Policy::from_files(&[
        ("targets.toml".into(), TARGETS.into()),
        (
            "a.cedar".into(),
            r#"
@id("both")
@approval("auto")
@max_ttl("1h")
permit (principal, action in [Action::"request", Action::"breakglass"], resource);

@id("bg-approval")
@approval("auto")
@max_ttl("1h")
permit (principal, action == Action::"breakglass", resource);
"#
            .into(),
        ),
    ])
    .unwrap_err()
    .to_string();
    assert!(report.contains("permit both names both"), "{report}");
    assert!(report.contains("remove @approval"), "{report}");

    let p = load(&[(
        "a.cedar",
        r#"
@id("anything")
@approval("auto")
@max_ttl("8h")
permit (principal, action, resource);

@id("bg-target")
@max_ttl("1h")
permit (principal in Group::"sre", action == Action::"breakglass", resource in Target::"prod-web-1");
"#,
    )]);
    let bob = user("bob", &["sre"]);
    let bg = |target: &str| {
        p.decide(
            Action::Breakglass,
            &bob,
            &target.parse().unwrap(),
            &"admin".parse().unwrap(),
            &ctx(),
        )
        .unwrap()
    };
    // The unconstrained permit is about the normal flow: it grants no break-glass access.
    let d = bg("prod-web-1");
    assert_eq!(d.rules, vec!["bg-target"]);
    assert!(d.mfa && d.requirement.is_auto());
    assert_eq!(d.recording, Recording::Full);
    assert!(!bg("stage-web-1").allowed);
    let roles: Vec<String> = p
        .breakglass_roles()
        .into_iter()
        .map(|(t, r)| format!("{t}/{r}"))
        .collect();
    assert!(
        !roles.is_empty() && roles.iter().all(|r| r.starts_with("prod-web-1/")),
        "{roles:?}"
    );
}

#[test]
fn unknown_targets_and_roles_are_named_clearly() {
    let p = load(&[(
        "a.cedar",
        "@id(\"x\") @approval(\"auto\") @max_ttl(\"1h\") permit(principal, action, resource);",
    )]);
    let alice = user("alice", &[]);
    let err = p
        .decide(
            Action::Request,
            &alice,
            &"prod-web-2".parse().unwrap(),
            &"admin".parse().unwrap(),
            &ctx(),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown target `prod-web-2`; known targets: prod-web-1, stage-web-1"
    );
    let err = p
        .decide(
            Action::Request,
            &alice,
            &"prod-web-1".parse().unwrap(),
            &"root".parse().unwrap(),
            &ctx(),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "target `prod-web-1` has no role `root`; its roles: admin, viewer"
    );

    let mut many = String::new();
    for i in 0..25 {
        many.push_str(&format!(
            "[targets.t{i:02}]\nkind = \"ssh\"\nenvironment = \"x\"\n[targets.t{i:02}.roles.r]\n"
        ));
    }
    let files = vec![
        ("targets.toml".to_owned(), many),
        (
            "a.cedar".to_owned(),
            "@id(\"x\") @approval(\"auto\") @max_ttl(\"1h\") permit(principal, action, resource);"
                .to_owned(),
        ),
    ];
    let p = Policy::from_files(&files).unwrap();
    let err = p
        .decide(
            Action::Request,
            &alice,
            &"zz".parse().unwrap(),
            &"r".parse().unwrap(),
            &ctx(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.ends_with("t18, t19 and 5 more"), "{err}");
}

#[test]
fn every_problem_is_reported_with_its_position() {
    let mut f = files(&[
        (
            "a.cedar",
            r#"// rules for prod
@id("prod-admin")
@approval("peer(sre)")
@max_ttl("forever")
permit (principal, action, resource == Role::"prod-web-1/admin");

@approval("auto")
@max_ttl("1h")
permit (principal, action, resource);

@id("typo")
@approval("auto")
@max_tll("1h")
permit (principal, action, resource)
when { resource.nam == "admin" };
"#,
        ),
        (
            "b.cedar",
            r#"@id("prod-admin")
@approval("auto")
@max_ttl("1h")
permit (principal, action, resource == Role::"prod-web-1/root");

@id("no-ttl")
permit (principal, action, resource in Target::"prod-web-9");

@id("bad-forbid")
@mfa("required")
forbid (principal, action, resource == Role::"nowhere");

@id("template")
permit (principal == ?principal, action, resource);

@id("no-contractors")
forbid (principal in Group::"Contractors", action, resource) unless { principal == User::"Eve" };
"#,
        ),
        (
            "c.cedar",
            "@id(\"x\")\npermit (principal, action, resource)\n  when { principal.name == };\n",
        ),
    ]);
    f.push(("README.md".to_owned(), "ignored".to_owned()));
    let got = problems(&f);
    let expected = [
        "a.cedar:4:1: @max_ttl \"forever\" is not a duration: write it like 90s, 15m, 1h30m or 2d",
        "a.cedar:7:1: permit has no @id; give every policy a unique @id(\"...\") so decisions can name it",
        "a.cedar:11:1: permit typo has no @max_ttl; say how long a grant may last, e.g. @max_ttl(\"1h\")",
        "a.cedar:13:1: unknown annotation @max_tll on a permit; allowed: @id, @approval, @max_ttl, @ticket, @mfa, @recording, @pending_timeout",
        "a.cedar:15:8: for policy `typo`, attribute `nam` on entity type `Role` not found (did you mean `name`?)",
        "b.cedar:1:1: duplicate @id(\"prod-admin\"): already used at a.cedar:2",
        "b.cedar:4:46: policy prod-admin refers to Role::\"prod-web-1/root\", but target `prod-web-1` has no role `root` (its roles: admin, viewer)",
        "b.cedar:6:1: permit no-ttl has no @approval; write @approval(\"auto\") to grant without approval",
        "b.cedar:6:1: permit no-ttl has no @max_ttl; say how long a grant may last, e.g. @max_ttl(\"1h\")",
        "b.cedar:7:48: policy no-ttl refers to Target::\"prod-web-9\", but targets.toml defines no target `prod-web-9`",
        "b.cedar:10:1: unknown annotation @mfa on a forbid (a forbid only denies, so it has no terms); allowed: @id, @reason",
        "b.cedar:11:46: policy bad-forbid refers to Role::\"nowhere\", but role ids are written \"<target>/<role>\", e.g. Role::\"prod-web-1/admin\"",
        "b.cedar:13:1: templates (policies with ?principal or ?resource) are not supported; name the principal and resource in the policy",
        "b.cedar:17:29: policy no-contractors refers to Group::\"Contractors\", which no group can be: invalid group name \"Contractors\": use 1-64 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
        "b.cedar:17:90: policy no-contractors refers to User::\"Eve\", which no user can be: invalid user name \"Eve\": use 1-64 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
    ];
    for e in expected {
        assert!(
            got.contains(&e.to_owned()),
            "missing {e}\n got:\n{}",
            got.join("\n")
        );
    }
    let c: Vec<_> = got.iter().filter(|g| g.starts_with("c.cedar:")).collect();
    assert_eq!(c.len(), 1, "{c:?}");
    assert!(
        c[0].starts_with("c.cedar:3:28: unexpected token `}`"),
        "{c:?}"
    );
    assert_eq!(got.len(), expected.len() + 1, "{}", got.join("\n"));
}

#[test]
fn validation_problems_point_into_the_right_file() {
    let got = problems(&files(&[
        (
            "a.cedar",
            "@id(\"a\") @approval(\"auto\") @max_ttl(\"1h\")\npermit (principal, action, resource);\n",
        ),
        (
            "b.cedar",
            "\n\n@id(\"b\") @approval(\"auto\") @max_ttl(\"1h\")\npermit (principal, action, resource)\nwhen { context.now.weekday == \"monday\" };\n\n@id(\"c\") forbid (principal, action, resource == Target::\"prod-web-1\");\n",
        ),
    ]));
    assert_eq!(got.len(), 2, "{}", got.join("\n"));
    assert!(
        got[0].starts_with(
            "b.cedar:5:8: the types Long and String are not compatible (for policy `b`"
        ),
        "{}",
        got[0]
    );
    // A rule that can never apply is a mistake: Target is never the resource, roles are.
    assert_eq!(
        got[1],
        "b.cedar:7:1: for policy `c`, unable to find an applicable action given the policy scope constraints (try replacing `==` with `in` in the resource clause)"
    );
}

/// A commented-out copy of a policy above it does not take its problems.
#[test]
fn problems_never_point_into_a_comment() {
    let rule =
        "@id(\"x\") @approval(\"peer()\") @max_ttl(\"1h\") permit (principal, action, resource);";
    let got = problems(&files(&[(
        "a.cedar",
        &format!("// old:\n// {rule}\n{rule}\n"),
    )]));
    assert_eq!(got.len(), 1, "{}", got.join("\n"));
    assert!(got[0].starts_with("a.cedar:3:"), "{}", got[0]);
}

#[test]
fn file_level_problems_are_reported_together() {
    let got = problems(&[("notes.txt".to_owned(), String::new())]);
    assert_eq!(
        got,
        vec![
            "*.cedar: no policy files: without rules every request is denied; add a .cedar file",
            "targets.toml: missing: a policy directory needs a targets.toml defining the targets and their roles",
        ]
    );
    // Files of comments alone are no rules either.
    let got = problems(&files(&[(
        "a.cedar",
        "// permit (principal, action, resource);\n",
    )]));
    assert_eq!(
        got,
        [
            "*.cedar: the policy files hold no rule: without rules every request is denied; write a permit"
        ]
    );
    // A broken targets.toml is reported alongside the Cedar problems, without follow-on
    // complaints about the roles the rules refer to.
    let got = problems(&[
        (
            "targets.toml".to_owned(),
            "[targets.x]\nkind = \n".to_owned(),
        ),
        (
            "a.cedar".to_owned(),
            "@id(\"a\") permit (principal, action, resource == Role::\"x/y\");".to_owned(),
        ),
    ]);
    assert_eq!(got.len(), 3, "{}", got.join("\n"));
    assert!(got[2].starts_with("targets.toml:2:"), "{}", got[2]);
}

#[test]
fn fixture_problems_and_failures_are_precise() {
    let policy = "@id(\"viewers\")\n@approval(\"peer(sre)\")\n@max_ttl(\"1h\")\npermit (principal, action, resource)\nwhen { resource.name == \"viewer\" };\n";
    let bad = r#"[users.alice]
groups = ["dev"]
manager = "mallory"
email = "a@example.com"

[[case]]
name = "x"
user = "bob"
target = "prod-web-1"
role = "viewer"
expect = "maybe"
refusal = "nope"

[[case]]
name = "y"
user = "alice"
target = "prod-web-1"
expect = "deny"

[[case]]
name = "z"
user = "alice"
target = "prod-web-1"
role = "viewer"
at = 9999-12-30T22:00:01Z
expect = "allow"

[[case]]
name = "w"
user = "alice"
target = "prod-web-2"
role = "viewer"
expect = "deny"

[[case]]
name = "v"
user = "alice"
target = "prod-web-1"
role = "root"
expect = "deny"
"#;
    let got = match fixtures::run_files(
        &files(&[("a.cedar", policy), ("tests/bad.toml", bad)]),
        NO_CHECK,
    ) {
        Ok(_) => panic!("ran"),
        Err(r) => r.to_string(),
    };
    assert_eq!(
        got,
        [
            "tests/bad.toml:3:11: manager mallory is not declared: add a [users.mallory] table",
            "tests/bad.toml:4:1: unknown key `email` in user `alice`; allowed keys: groups, manager",
            "tests/bad.toml:8:8: user bob is not declared: add a [users.bob] table",
            "tests/bad.toml:11:10: `expect` of case \"x\": \"maybe\" is neither \"allow\" nor \"deny\"",
            "tests/bad.toml:12:11: `refusal` of case \"x\": unknown refusal code \"nope\"; use one of none, not_permitted, ttl_above_max, ticket_required, ticket_mismatch, mfa_required, no_approvers",
            "tests/bad.toml:14:1: case \"y\" has no `role`",
            "tests/bad.toml:25:6: `at` of case \"z\": \"9999-12-30T22:00:01Z\" is outside the years a case may be set in (1000 to 9000)",
            "tests/bad.toml:31:10: unknown target `prod-web-2`; known targets: prod-web-1, stage-web-1: name one of them, or define it in targets.toml",
            "tests/bad.toml:39:8: target `prod-web-1` has no role `root`; its roles: admin, viewer: name one of them, or define it in targets.toml as [targets.prod-web-1.roles.root]",
        ]
        .join("\n")
    );

    let cases = r#"[users.alice]
groups = ["dev"]

[users.bob]
groups = ["sre"]

[[case]]
name = "no one else to approve"
user = "bob"
target = "prod-web-1"
role = "viewer"
at = 2026-01-06T08:00:00Z
expect = "allow"
refusal = "no_approvers"

[[case]]
name = "no one else to approve, asked without MFA: the server says no_approvers first"
user = "bob"
target = "stage-web-1"
role = "admin"
expect = "allow"
mfa = true
refusal = "no_approvers"

[[case]]
name = "passes"
user = "alice"
target = "prod-web-1"
role = "viewer"
at = 2026-01-06T08:00:00Z
expect = "allow"
tier = "peer(sre)"
rules = ["viewers"]
refusal = "none"

[[case]]
name = "wrong terms"
user = "alice"
target = "prod-web-1"
role = "viewer"
ttl = "2h"
expect = "allow"
tier = "manager"
max_ttl = "1h"
mfa = true
rules = ["other"]
refusal = "ticket_required"

[[case]]
name = "wrong verdict"
user = "alice"
target = "prod-web-1"
role = "admin"
expect = "allow"
"#;
    let stage_admin = "@id(\"stage-admins\")\n@approval(\"peer(sre)\")\n@max_ttl(\"1h\")\n@mfa(\"required\")\npermit (principal, action, resource == Role::\"stage-web-1/admin\");\n";
    let report = fixtures::run_files(
        &files(&[
            ("a.cedar", policy),
            ("b.cedar", stage_admin),
            ("tests/t.toml", cases),
        ]),
        NO_CHECK,
    )
    .unwrap();
    let messages: Vec<_> = report
        .cases
        .iter()
        .map(|c| (c.name.as_str(), c.message.as_deref()))
        .collect();
    assert_eq!(
        messages,
        vec![
            ("no one else to approve", None),
            (
                "no one else to approve, asked without MFA: the server says no_approvers first",
                None,
            ),
            ("passes", None),
            (
                "wrong terms",
                Some(
                    "tier: expected manager, got peer(sre); mfa: expected true, got false; rules: expected [other], got [viewers]; refusal: expected ticket_required, got ttl_above_max (requested TTL 2h is above the maximum of 1h for this role)"
                )
            ),
            (
                "wrong verdict",
                Some("expected allow, got deny (no permit matched)")
            ),
        ]
    );
    assert_eq!((report.passed(), report.failed()), (3, 2));
    assert_eq!(report.cases[0].file, "tests/t.toml");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["cases"][0]["passed"], true);
}

#[test]
fn policies_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Policy>();
    let p = load(&[(
        "a.cedar",
        "@id(\"x\") @approval(\"auto\") @max_ttl(\"1h\") permit(principal, action, resource);",
    )]);
    assert_eq!(p.digest().len(), 64);
    assert!(format!("{p:?}").contains("rules: 1"));
    assert!(SCHEMA.contains("entity Role in [Target]"));
}

#[test]
fn time_windows_read_the_clock_in_the_targets_time_zone() {
    let targets = r#"
[targets.nyc-db]
kind = "ssh"
environment = "production"
timezone = "America/New_York"

[targets.nyc-db.roles.admin]
principals = ["root"]

[targets.utc-db]
kind = "ssh"
environment = "production"

[targets.utc-db.roles.admin]
principals = ["root"]
"#;
    let rules = r#"
@id("office-hours")
@approval("auto")
@max_ttl("1h")
permit (principal, action == Action::"request", resource)
when { context.now.weekday < 5 && context.now.hour >= 8 && context.now.hour < 18 };
"#;
    let p = Policy::from_files(&[
        ("targets.toml".to_owned(), targets.to_owned()),
        ("a.cedar".to_owned(), rules.to_owned()),
    ])
    .unwrap_or_else(|r| panic!("{r}"));
    let bob = user("bob", &["sre"]);
    let allowed =
        |target: &str, now| decide(&p, &bob, target, "admin", &Context { now, ..ctx() }).allowed;
    // Winter: New York is UTC-5.
    assert!(allowed("nyc-db", datetime!(2026-01-05 13:30 UTC)));
    assert!(!allowed("nyc-db", datetime!(2026-01-05 12:30 UTC)));
    assert!(allowed("utc-db", datetime!(2026-01-05 12:30 UTC)));
    // Summer: UTC-4, so the same window opens an hour earlier in UTC.
    assert!(allowed("nyc-db", datetime!(2026-07-06 12:30 UTC)));
    assert!(!allowed("nyc-db", datetime!(2026-07-06 11:30 UTC)));
    // Monday 02:00 UTC is still Sunday evening in New York: a weekend.
    assert!(!allowed("nyc-db", datetime!(2026-01-05 02:00 UTC)));
    assert!(!allowed("utc-db", datetime!(2026-01-05 02:00 UTC)));
    assert!(allowed("utc-db", datetime!(2026-01-05 09:00 UTC)));

    let bad = targets.replace("America/New_York", "Mars/Olympus_Mons");
    let found = problems(&[
        ("targets.toml".to_owned(), bad),
        ("a.cedar".to_owned(), rules.to_owned()),
    ]);
    assert!(
        found.iter().any(|d| d.contains("targets.toml:5")
            && d.contains("unknown time zone \"Mars/Olympus_Mons\"")),
        "{found:?}"
    );
}

#[test]
fn rules_nested_too_deep_are_refused_before_cedar_reads_them() {
    let rule = |cond: &str| {
        format!(
            "@id(\"deep\") @approval(\"auto\") @max_ttl(\"1h\")\npermit (principal, action == Action::\"request\", resource == Role::\"prod-web-1/viewer\") when {{ {cond} }};\n"
        )
    };
    let parens = |n| format!("{}true{}", "(".repeat(n), ")".repeat(n));
    // Within the limit it loads; brackets in strings and comments are not counted.
    let fine = rule(&format!(
        "{} && context.ticket != \"{}\" // {}\n",
        parens(30),
        "(".repeat(100),
        "[".repeat(100)
    ));
    load(&[("deep.cedar", &fine)]);
    // Deeper, a problem at the bracket past the limit, however the server's stack would fare.
    let got = problems(&files(&[("deep.cedar", &rule(&parens(300)))]));
    assert_eq!(got.len(), 1, "{}", got.join("\n"));
    assert!(
        got[0].starts_with("deep.cedar:2:") && got[0].contains("nest deeper than 32"),
        "{}",
        got[0]
    );
    let ifs = vec!["if true then true else false"; 40].join(" && ");
    let got = problems(&files(&[("deep.cedar", &rule(&ifs))]));
    assert!(got[0].contains("more than 32 `if`"), "{}", got[0]);
    // The count is per rule: many rules with a few `if`s each load.
    let few = vec![rule("if true then true else false").replace("deep", "d"); 40];
    let many: Vec<String> = few
        .iter()
        .enumerate()
        .map(|(i, r)| r.replace("@id(\"d\")", &format!("@id(\"d{i}\")")))
        .collect();
    load(&[("deep.cedar", &many.concat())]);
    // A long chain nests without brackets: refused at the operator past the limit, where
    // evaluating it would have failed (a forbid would then refuse everything) or reading it
    // ended the process.
    let chain = |n: usize, op: &str| {
        (0..n)
            .map(|i| format!("principal == User::\"u{i}\""))
            .collect::<Vec<_>>()
            .join(op)
    };
    load(&[("deep.cedar", &rule(&chain(100, " || ")))]);
    for op in [" || ", " && "] {
        let got = problems(&files(&[("deep.cedar", &rule(&chain(3000, op)))]));
        assert_eq!(got.len(), 1, "{}", got.join("\n"));
        assert!(got[0].contains("more than 256 operators"), "{}", got[0]);
    }
    // The limit is the conditions': the scope's `==` are not counted, nor a number's sign.
    let terms = |n: usize, term: &str| vec![term; n].join(" && ");
    load(&[("deep.cedar", &rule(&terms(128, "context.ttl_seconds > 0")))]);
    let got = problems(&files(&[(
        "deep.cedar",
        &rule(&terms(129, "context.ttl_seconds > 0")),
    )]));
    assert!(got[0].contains("more than 256 operators"), "{}", got[0]);
    load(&[(
        "deep.cedar",
        &rule(&terms(128, "context.ttl_seconds != -1")),
    )]);
    // Many users as a set is one operator, however many they are.
    let users: Vec<String> = (0..5000).map(|i| format!("User::\"u{i}\"")).collect();
    let set = format!("[{}].contains(principal)", users.join(", "));
    load(&[("deep.cedar", &rule(&set))]);
    // Attribute accesses chain as operators do: refused past the limit, where a long chain
    // passed the check unevaluated, or ended the process that read it.
    for access in [".x", "[\"x\"]"] {
        let chain = format!("context{} == 1", access.repeat(200_000));
        let got = problems(&files(&[("deep.cedar", &rule(&chain))]));
        assert_eq!(got.len(), 1, "{}", got.join("\n"));
        assert!(
            got[0].starts_with("deep.cedar:2:")
                && got[0].contains("more than 256 attribute accesses"),
            "{}",
            got[0]
        );
    }
}

#[test]
fn a_fixture_denied_by_a_rule_that_cannot_be_evaluated_says_so() {
    let policy = "@id(\"overflows\")\n@approval(\"auto\")\n@max_ttl(\"1h\")\npermit (principal, action, resource == Role::\"prod-web-1/viewer\")\nwhen { context.ttl_seconds * 9223372036854775807 > 0 };\n";
    let cases = "[users.alice]\ngroups = [\"dev\"]\n\n[[case]]\nname = \"overflow\"\nuser = \"alice\"\ntarget = \"prod-web-1\"\nrole = \"viewer\"\nexpect = \"allow\"\n";
    let report = fixtures::run_files(
        &files(&[("a.cedar", policy), ("tests/t.toml", cases)]),
        NO_CHECK,
    )
    .unwrap();
    let message = report.cases[0].message.as_deref().unwrap_or_default();
    assert!(
        message.starts_with(
            "expected allow, got deny (by [overflows]; overflows: it could not be evaluated ("
        ),
        "{message}"
    );
}

#[test]
fn a_file_that_is_no_utf8_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files(&[]) {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    std::fs::write(dir.path().join("a.cedar"), b"// one\n// two\n// caf\xe9\n").unwrap();
    let err = Policy::load_dir(dir.path(), NO_CHECK).unwrap_err();
    assert_eq!(
        err.diagnostics[0].to_string(),
        "a.cedar:3: not valid UTF-8 here: save the file as UTF-8 text"
    );
}

/// Free text that is shown to people (annotations, descriptions, names in output) may hold no
/// control or invisible character: each is named by its code point, where it is written.
#[test]
fn shown_text_holds_nothing_that_does_not_show() {
    let targets = "[targets.web]\nkind = \"ssh\"\nenvironment = \"prod\u{202e}uction\"\ndescription = \"x\\u001b[31my\"\nlabels = [\"pci\", \"eu\\tw\"]\n\n[targets.web.roles.admin]\ndescription = \"\"\"\nroot shell\nwith sudo\"\"\"\nprincipals = [\"root\"]\n";
    let rules = "@id(\"frozen\")\n@reason(\"frozen\\u{1b}[2J\\nline2\u{202e}\")\nforbid (principal, action, resource);\n\n@id(\"tickets\") @approval(\"auto\") @max_ttl(\"1h\")\n@ticket(\"INC-[0-9]+\\u{7}\")\npermit (principal, action, resource == Role::\"web/admin\");\n";
    let got = problems(&[
        ("targets.toml".to_owned(), targets.to_owned()),
        ("a.cedar".to_owned(), rules.to_owned()),
    ]);
    let tail = "since text shown to people may hold no control or invisible characters";
    assert_eq!(
        got,
        [
            format!(
                "a.cedar:2:16: @reason contains a control character (U+001B), a line break (U+000A) and an invisible or text-reordering character (U+202E): remove them, {tail}"
            ),
            format!(
                "a.cedar:6:20: @ticket contains a control character (U+0007): remove it, {tail}"
            ),
            format!(
                "targets.toml:3:20: `environment` of target `web` contains an invisible or text-reordering character (U+202E): remove it, {tail}"
            ),
            format!(
                "targets.toml:4:17: `description` of target `web` contains a control character (U+001B): remove it, {tail}"
            ),
            format!(
                "targets.toml:5:21: each entry of `labels` of target `web` contains a tab (U+0009): remove it, {tail}"
            ),
            format!(
                "targets.toml:9:11: `description` of role `admin` of target `web` contains a line break (U+000A): remove it, {tail}"
            ),
        ],
        "{}",
        got.join("\n")
    );

    // Any script, accents, emoji and joiners are text like any other.
    let fine_targets = TARGETS.replace(
        "labels = [\"web\"]",
        "labels = [\"web\"]\ndescription = \"Serveur web — accès 🔒, می\u{200C}خواهم\"",
    );
    Policy::from_files(&[
        ("targets.toml".to_owned(), fine_targets),
        (
            "a.cedar".to_owned(),
            "@id(\"x\") @reason(\"gelé pour la mise en production 👩\u{200D}💻\")\nforbid (principal, action, resource);\n@id(\"y\") @approval(\"auto\") @max_ttl(\"1h\") permit (principal, action, resource);\n".to_owned(),
        ),
    ])
    .unwrap_or_else(|r| panic!("{r}"));

    // A fixture case's name is printed by `policy test`.
    let cases = "[users.alice]\ngroups = [\"dev\"]\n\n[[case]]\nname = \"view\\u001b]0;owned\\u0007\"\nuser = \"alice\"\ntarget = \"prod-web-1\"\nrole = \"viewer\"\nexpect = \"deny\"\nrules = [\"a\\nb\"]\n";
    let err = fixtures::run_files(&files(&[
        (
            "a.cedar",
            "@id(\"x\") @approval(\"auto\") @max_ttl(\"1h\") permit (principal, action, resource);",
        ),
        ("tests/t.toml", cases),
    ]), NO_CHECK)
    .unwrap_err();
    let got: Vec<String> = err.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            format!(
                "tests/t.toml:5:13: `name` of case \"view\\u{{1b}}]0;owned\\u{{7}}\" contains a control character (U+001B) and a control character (U+0007): remove them, {tail}"
            ),
            format!(
                "tests/t.toml:10:12: each entry of `rules` of case \"view\\u{{1b}}]0;owned\\u{{7}}\" contains a line break (U+000A): remove it, {tail}"
            ),
        ],
        "{}",
        got.join("\n")
    );
}

/// A problem in targets.toml hides no problem of the rules' references: they are checked
/// against the names the file gives, and a name whose definition has a problem is not also
/// said to be unknown.
#[test]
fn a_targets_problem_hides_no_reference_problem() {
    let targets = "[targets.web]\nkind = \"ssh\"\nenvironment = \"prod\"\nlables = [\"pci\"]\n[targets.web.roles.admin]\nprincipals = [\"root\"]\n";
    let rules = "@id(\"a\") forbid (principal, action, resource in Target::\"db\");\n@id(\"b\") forbid (principal, action, resource == Role::\"web/admn\");\n@id(\"c\") forbid (principal, action, resource == Role::\"web/admin\");\n";
    let got = problems(&[
        ("targets.toml".to_owned(), targets.to_owned()),
        ("a.cedar".to_owned(), rules.to_owned()),
    ]);
    assert_eq!(
        got,
        [
            "a.cedar:1:57: policy a refers to Target::\"db\", but targets.toml defines no target `db`",
            "a.cedar:2:55: policy b refers to Role::\"web/admn\", but target `web` has no role `admn` (its roles: admin)",
            "targets.toml:4:1: unknown key `lables` in target `web`; allowed keys: kind, environment, description, labels, connection, timezone, roles",
        ],
        "{}",
        got.join("\n")
    );

    // Names whose definitions have problems are still names: a bad target name, a target
    // whose body is no table, roles that are no table, roles under a misspelt key, a target
    // under a misspelt top-level table, a target with a bad kind.
    let targets = "[targets]\ncache = \"redis\"\n\n[targets.Bad_Name]\nkind = \"ssh\"\nenvironment = \"x\"\n[targets.Bad_Name.roles.r]\n\n[targets.q]\nkind = \"ssh\"\nenvironment = \"x\"\nroles = [\"admin\"]\n\n[targets.w2]\nkind = \"ssh\"\nenvironment = \"x\"\n[targets.w2.rols.admin]\n\n[target.old]\nkind = \"ssh\"\n\n[targets.api]\nkind = 7\nenvironment = \"x\"\n[targets.api.roles.admin]\n";
    let rule = |id: &str, resource: &str| {
        format!("@id(\"{id}\") forbid (principal, action, resource {resource});\n")
    };
    let rules = [
        rule("r1", "in Target::\"Bad_Name\""),
        rule("r2", "== Role::\"Bad_Name/r\""),
        rule("r3", "== Role::\"cache/any\""),
        rule("r4", "== Role::\"q/admin\""),
        rule("r5", "== Role::\"w2/admin\""),
        rule("r6", "in Target::\"old\""),
        rule("r7", "== Role::\"api/admin\""),
        // What the file names nowhere is still reported.
        rule("r8", "== Role::\"api/nope\""),
        rule("r9", "in Target::\"gone\""),
    ]
    .concat();
    let got = problems(&[
        ("targets.toml".to_owned(), targets.to_owned()),
        ("a.cedar".to_owned(), rules),
    ]);
    let cedar: Vec<&String> = got.iter().filter(|g| g.starts_with("a.cedar")).collect();
    assert_eq!(
        cedar,
        [
            "a.cedar:8:56: policy r8 refers to Role::\"api/nope\", but target `api` has no role `nope` (its roles: admin)",
            "a.cedar:9:58: policy r9 refers to Target::\"gone\", but targets.toml defines no target `gone`",
        ],
        "{}",
        got.join("\n")
    );
    // Each definition's own problem is reported in targets.toml.
    for line in [2, 4, 12, 14, 19, 23] {
        assert!(
            got.iter()
                .any(|g| g.starts_with(&format!("targets.toml:{line}:"))),
            "line {line}: {}",
            got.join("\n")
        );
    }

    // A targets.toml that is no TOML names nothing for sure: targets and roles are not
    // checked, but what needs no targets.toml still is.
    let got = problems(&[
        ("targets.toml".to_owned(), "[targets.web\n".to_owned()),
        (
            "a.cedar".to_owned(),
            "@id(\"a\") forbid (principal in Group::\"Dev\", action, resource == Role::\"web/x\");\n".to_owned(),
        ),
    ]);
    assert_eq!(got.len(), 2, "{}", got.join("\n"));
    assert!(
        got[0].starts_with("a.cedar:1:38: policy a refers to Group::\"Dev\""),
        "{}",
        got[0]
    );
    assert!(got[1].starts_with("targets.toml:1:"), "{}", got[1]);
}

/// A rule too deep to give Cedar, or one Cedar cannot parse, is reported and set aside; the
/// file's other rules are still checked in the same run.
#[test]
fn a_rule_that_cannot_be_read_hides_no_other_rule() {
    let chain = (0..300)
        .map(|i| format!("principal == User::\"u{i}\""))
        .collect::<Vec<_>>()
        .join(" || ");
    let second = "@id(\"second\")\n@approval(\"peer:\")\n@max_ttl(\"abc\")\npermit (principal, action, resource == Role::\"prod-web-1/admn\");\n";
    let deep = format!(
        "@id(\"deep\") @approval(\"auto\") @max_ttl(\"1h\")\npermit (principal, action, resource) when {{ {chain} }};\n\n{second}\n@id(\"nested\") forbid (principal, action, resource) when {{ {}true{} }};\n",
        "(".repeat(40),
        ")".repeat(40)
    );
    let got = problems(&files(&[("deep.cedar", &deep)]));
    assert_eq!(got.len(), 5, "{}", got.join("\n"));
    assert!(
        got[0].starts_with("deep.cedar:2:") && got[0].contains("more than 256 operators"),
        "{}",
        got[0]
    );
    assert!(got[1].starts_with("deep.cedar:5:1: @approval: invalid approval tier \"peer:\""));
    assert!(got[2].starts_with("deep.cedar:6:1: @max_ttl \"abc\" is not a duration"));
    assert_eq!(
        got[3],
        "deep.cedar:7:46: policy second refers to Role::\"prod-web-1/admn\", but target `prod-web-1` has no role `admn` (its roles: admin, viewer)"
    );
    assert!(
        got[4].starts_with("deep.cedar:9:")
            && got[4].contains("nest deeper than 32")
            && !got[4].contains("was checked"),
        "{}",
        got[4]
    );

    // Cedar reports every rule it cannot parse; the rules it can are checked, in a second
    // reading (an unknown effect, say), and so are their annotations, even after a character
    // Cedar stops reading at, or a bracket left open.
    let bad = "@id(\"s\") permit (principal, action, resource) when { principal.name == };\n@id(\"t\") permit (principal, action, resource) when { x x };\n@id(\"u\") permitt (principal, action, resource);\n@id(\"v\") @approval(\"boss\") @max_ttl(\"1h\") permit (principal, action, resource);\n@id(\"w\") permit (principal, action, resource) when { # };\n@id(\"x\") permit (principal, action, resource) when { (principal == User::\"a\" };\n@id(\"y\") @approval(\"auto\") @max_ttl(\"forever\") permit (principal, action, resource);\n";
    let got = problems(&files(&[("bad.cedar", bad)]));
    let lines: Vec<&str> = got
        .iter()
        .map(|g| g.split(": ").next().unwrap_or_default())
        .collect();
    assert_eq!(
        lines,
        [
            "bad.cedar:1:72",
            "bad.cedar:2:56",
            "bad.cedar:3:10",
            "bad.cedar:4:10",
            "bad.cedar:5:54",
            "bad.cedar:6:78",
            "bad.cedar:7:28",
        ],
        "{}",
        got.join("\n")
    );
    assert!(got[0].contains("unexpected token `}`"), "{}", got[0]);
    assert!(
        got[2].contains("invalid policy effect: permitt"),
        "{}",
        got[2]
    );
    assert!(
        got[3].contains("invalid approval tier \"boss\""),
        "{}",
        got[3]
    );
    assert!(got[4].contains("invalid token"), "{}", got[4]);
    assert!(
        got[6].contains("\"forever\" is not a duration"),
        "{}",
        got[6]
    );
    assert!(!got.iter().any(|g| g.contains("was checked")), "{got:?}");

    // A string left open runs on over the rules after it: the problem says they were not
    // checked, so that the author knows to check again, and where the string opens.
    let open = "@id(\"a\") @approval(\"auto\") @max_ttl(\"1h\") permit (principal, action, resource) when { context.ticket == \"INC };\n@id(\"b\") @approval(\"boss\") @max_ttl(\"1h\") permit (principal, action, resource);\n";
    let got = problems(&files(&[("open.cedar", open)]));
    assert_eq!(got.len(), 1, "{}", got.join("\n"));
    // Where it opens, as a bracket left open is.
    assert_eq!(
        got[0],
        "open.cedar:1:105: this string is not closed: it runs on over the line break after it, so Cedar cannot read the rest of the file (at line 2, column 40: invalid token); no rule after this point in the file was checked (policy b): close the string, then check again"
    );
    // So does a rule too deep whose brackets, left open, take in the rules after it.
    let open = format!(
        "@id(\"a\") forbid (principal, action, resource) when {{ {} }};\n@id(\"b\") @approval(\"boss\") @max_ttl(\"1h\") permit (principal, action, resource);\n\n@id(\"c\") forbid (principal, action, resource);\n",
        "(".repeat(40)
    );
    let got = problems(&files(&[("open.cedar", &open)]));
    assert_eq!(got.len(), 1, "{}", got.join("\n"));
    assert!(
        got[0].contains("nest deeper than 32")
            && got[0].ends_with(
                "no rule after this point in the file was checked (policies b, c): fix this, then check again"
            ),
        "{}",
        got[0]
    );
    // So does a rule left unfinished, its bracket open: the note says which bracket, and names
    // the rules it took in, up to the `;` that ends the last.
    let open = "@id(\"a\") @approval(\"auto\") @max_ttl(\"1h\")\npermit (principal, action, resource) when { context.ttl_seconds < 3600\n\n@id(\"b\") @approval(\"boss\") @max_ttl(\"1h\")\npermit (principal, action, resource);\n\n@id(\"c\") @approval(\"auto\") @max_ttl(\"1h\") permit (principal, action, resource);\n";
    let got = problems(&files(&[("open.cedar", open)]));
    assert_eq!(got.len(), 1, "{}", got.join("\n"));
    assert!(
        got[0].starts_with("open.cedar:4:1: unexpected token `@`")
            && got[0].ends_with(
                "; the `{` at line 2, column 43 is still open where the next rule begins, so no rule from here to line 5 was checked (policy b): close it, then check again"
            ),
        "{}",
        got[0]
    );
    // Closed, the rule after it is checked, and its problem shown.
    let closed = open.replace("< 3600", "< 3600 };");
    let got = problems(&files(&[("open.cedar", &closed)]));
    assert_eq!(got.len(), 1, "{}", got.join("\n"));
    assert!(
        got[0].starts_with("open.cedar:4:10: @approval: invalid approval tier \"boss\""),
        "{}",
        got[0]
    );
    // Without an annotation, `permit (` begins the next rule too; the bracket named is the
    // outermost still open.
    let bare = "@id(\"a\") @approval(\"auto\") @max_ttl(\"1h\")\npermit (principal, action, resource) when { [1, 2\npermit (principal, action, resource);\n";
    let got = problems(&files(&[("bare.cedar", bare)]));
    assert!(
        got[0].ends_with("; the `{` at line 2, column 43 is still open where the next rule begins, so no rule from here to line 3 was checked: close it, then check again"),
        "{}",
        got.join("\n")
    );
}

/// A group an `@approval` takes approvers from that no one in the directory is in makes its
/// permit's requests impossible to approve: the directory's check names it, at the annotation.
#[test]
fn approval_groups_no_one_is_in_are_warned_about() {
    let rules = "@id(\"deploy\")\n@approval(\"peer(sres|sre) & two-person(securty)\")\n@max_ttl(\"1h\")\npermit (principal, action, resource);\n";
    let policy = load(&[("a.cedar", rules)]);
    let directory =
        warden_domain::Directory::new([user("bob", &["sre"]), user("sam", &["security"])]).unwrap();
    let got: Vec<String> = policy
        .directory_warnings(&directory)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        got,
        [
            "a.cedar:2:1: warning: permit deploy takes approvers from group `securty` in its @approval, but no user in the directory is in that group (its groups: security, sre): none of its approvers can come from there; correct the name, or put the approvers it is meant for in that group",
            "a.cedar:2:1: warning: permit deploy takes approvers from group `sres` in its @approval, but no user in the directory is in that group (its groups: security, sre): none of its approvers can come from there; correct the name, or put the approvers it is meant for in that group",
        ]
    );
}

/// The time rules read for a target is its own zone's: what `policy explain` shows.
#[test]
fn the_time_rules_see_is_the_targets_own() {
    let targets = TARGETS.replacen(
        "[targets.prod-web-1]\n",
        "[targets.prod-web-1]\ntimezone = \"Europe/Paris\"\n",
        1,
    );
    assert_ne!(targets, TARGETS);
    let rule =
        "@id(\"a\") @approval(\"auto\") @max_ttl(\"1h\")\npermit (principal, action, resource);\n";
    let policy = Policy::from_files(&[
        ("targets.toml".to_owned(), targets),
        ("a.cedar".to_owned(), rule.to_owned()),
    ])
    .unwrap_or_else(|r| panic!("{r}"));
    let target: warden_domain::TargetName = "prod-web-1".parse().unwrap();
    // A Sunday evening in UTC is Sunday 20:30 in Paris in winter: weekday 6, Monday being 0.
    assert_eq!(
        policy
            .now_seen_by_rules(&target, datetime!(2026-01-04 19:30 UTC))
            .as_deref(),
        Some("Sunday 20:30 (context.now: hour 20, minute 30, weekday 6; Europe/Paris)")
    );
    assert_eq!(
        policy.now_seen_by_rules(&"nosuch".parse().unwrap(), datetime!(2026-01-04 19:30 UTC)),
        None
    );
}

/// Values no target has and times out of range are warnings: the policy loads, and each is
/// named where it is written, beside any errors.
#[test]
fn doubtful_comparisons_are_warnings_with_their_place() {
    let rules = "@id(\"no-contractors-in-prod\")\nforbid (principal in Group::\"contractor\", action, resource)\nwhen { resource.target.environment == \"prod\" };\n\n@id(\"pci\") @approval(\"auto\") @max_ttl(\"1h\")\npermit (principal, action, resource)\nwhen { resource.target.labels.contains(\"PCI\") && resource.name != \"rooot\" && context.now.weekday == 7 };\n";
    let policy = load(&[("a.cedar", rules)]);
    let got: Vec<String> = policy.warnings().iter().map(ToString::to_string).collect();
    assert_eq!(got.len(), 4, "{}", got.join("\n"));
    assert!(
        got[0].starts_with("a.cedar:3:39: warning: policy no-contractors-in-prod: no target in targets.toml has environment \"prod\" (environments: production, staging)"),
        "{}",
        got[0]
    );
    assert!(got[1].starts_with("a.cedar:7:40: warning: policy pci: no target in targets.toml has label \"PCI\" (labels: web)"), "{}", got[1]);
    assert!(
        got[2].starts_with(
            "a.cedar:7:67: warning: policy pci: no role in targets.toml is named \"rooot\""
        ),
        "{}",
        got[2]
    );
    assert!(
        got[3].starts_with(
            "a.cedar:7:101: warning: policy pci: context.now.weekday runs from 0 to 6"
        ),
        "{}",
        got[3]
    );
    assert!(
        policy
            .warnings()
            .iter()
            .all(|w| w.severity == Severity::Warning)
    );
    // The directory's check names the group no one is in, in the forbid's scope.
    let directory = warden_domain::Directory::new([user("carol", &["contractors"])]).unwrap();
    let got: Vec<String> = policy
        .directory_warnings(&directory)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        got,
        [
            "a.cedar:2:29: warning: forbid no-contractors-in-prod names Group::\"contractor\", but no user in the directory is in group `contractor` (its groups: contractors): this rule can never apply to anyone until such a group exists, so it refuses no one; correct the name, or put the users it is meant for in that group"
        ]
    );
    // Beside an error, warnings are listed too, marked as such, and keep nothing from loading
    // on their own.
    let broken = format!("{rules}@id(\"b\") permit (principal, action, resource);\n");
    let report = Policy::from_files(&files(&[("a.cedar", &broken)])).unwrap_err();
    let severities: Vec<Severity> = report.diagnostics.iter().map(|d| d.severity).collect();
    assert_eq!(
        severities,
        [
            Severity::Warning,
            Severity::Warning,
            Severity::Warning,
            Severity::Warning,
            Severity::Error,
            Severity::Error
        ],
        "{report}"
    );
    assert_eq!(report.errors().diagnostics.len(), 2);
    let json = serde_json::to_value(&report.diagnostics[0]).unwrap();
    assert_eq!(json["severity"], "warning");
    // The demo policy raises none.
    let demo = Policy::from_files(&demo_files()).unwrap();
    assert!(demo.warnings().is_empty(), "{:?}", demo.warnings());
}

/// The break-glass roles are those some break-glass permit can grant: a condition on the role
/// narrows its scope; one on who asks, or when, may hold, so it narrows nothing; a forbid that
/// refuses a role to everyone, always, takes it out.
#[test]
fn breakglass_roles_are_those_a_permit_can_grant() {
    let roles = |rules: &str| -> Vec<String> {
        load(&[("a.cedar", rules)])
            .breakglass_roles()
            .into_iter()
            .map(|(t, r)| format!("{t}/{r}"))
            .collect()
    };
    let admin_only = "@id(\"bg-root\") @max_ttl(\"1h\")\npermit (principal in Group::\"sre\", action == Action::\"breakglass\", resource in Target::\"prod-web-1\") when { resource.name == \"admin\" };\n";
    assert_eq!(roles(admin_only), ["prod-web-1/admin"]);
    // Conditions on the role are told apart from the others, in `when` and `unless` alike.
    let mixed = "@id(\"bg\") @max_ttl(\"1h\")\npermit (principal, action == Action::\"breakglass\", resource) when { context.ttl_seconds <= 3600 && resource.target.environment == \"production\" && principal in Group::\"sre\" } unless { resource.name == \"viewer\" };\n";
    assert_eq!(roles(mixed), ["prod-web-1/admin"]);
    // A condition mixing the role with who asks cannot be told: its roles may be granted.
    let unknowable = "@id(\"bg\") @max_ttl(\"1h\")\npermit (principal, action == Action::\"breakglass\", resource) when { resource.name == \"admin\" || principal in Group::\"sre\" };\n";
    assert_eq!(
        roles(unknowable),
        ["prod-web-1/admin", "prod-web-1/viewer", "stage-web-1/admin"]
    );
    // A forbid of the role for everyone, always, leaves it out; one for some people does not.
    let forbidden = format!(
        "{unknowable}@id(\"no-bg-viewer\") forbid (principal, action, resource == Role::\"prod-web-1/viewer\");\n@id(\"no-bg-stage\") forbid (principal, action == Action::\"breakglass\", resource) when {{ resource.target.environment == \"staging\" && context.ttl_seconds > 60 }};\n"
    );
    assert_eq!(roles(&forbidden), ["prod-web-1/admin", "stage-web-1/admin"]);
    // A forbid of the normal flow only leaves break-glass alone.
    let request_only = format!(
        "{admin_only}@id(\"no-admin\") forbid (principal, action == Action::\"request\", resource == Role::\"prod-web-1/admin\");\n"
    );
    assert_eq!(roles(&request_only), ["prod-web-1/admin"]);
}

/// A role that asks for keystrokes is warned about when no rule that can grant it records its
/// sessions: the keystrokes would be kept nowhere.
#[test]
fn record_input_without_a_recording_rule_is_warned_about() {
    let targets = TARGETS.replace(
        "[targets.prod-web-1.roles.viewer]\nprincipals = [\"viewer\"]",
        "[targets.prod-web-1.roles.viewer]\nprincipals = [\"viewer\"]\nrecord_input = true",
    );
    let warned = |rules: &str| -> Vec<String> {
        let files = vec![
            ("targets.toml".to_owned(), targets.clone()),
            ("a.cedar".to_owned(), rules.to_owned()),
        ];
        Policy::from_files(&files)
            .unwrap_or_else(|r| panic!("{r}"))
            .warnings()
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let permit = |recording: &str| {
        format!(
            "@id(\"v\") @approval(\"auto\") @max_ttl(\"1h\") {recording}\n\
             permit (principal, action == Action::\"request\", resource == Role::\"prod-web-1/viewer\");\n"
        )
    };
    let got = warned(&permit(""));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("targets.toml:12:1: warning: target prod-web-1 role viewer: record_input = true keeps no keystrokes"),
        "{}",
        got[0]
    );
    assert!(warned(&permit("@recording(\"full\")")).is_empty());
    assert!(warned(&permit("@recording(\"sampled\")")).is_empty());
}

#[test]
fn the_proxy_scope_is_no_target_name() {
    let reserved = "[targets.warden-proxy]\nkind = \"ssh\"\nenvironment = \"staging\"\n\
                    [targets.warden-proxy.roles.ops]\nprincipals = [\"ops\"]\n";
    let said = problems(&[
        ("targets.toml".to_owned(), format!("{TARGETS}\n{reserved}")),
        (
            "access.cedar".to_owned(),
            "@id(\"all\") @approval(\"auto\") @max_ttl(\"1h\")\npermit (principal, action, resource);\n".to_owned(),
        ),
    ]);
    assert!(
        said.iter()
            .any(|p| p.contains("the target name `warden-proxy` is reserved")),
        "{said:?}"
    );
}

/// Stands in for the server's issuers, in their words: kinds other than `ssh` and `postgres`
/// are unknown; a postgres connection's first problem (its `tls`, its `tls_ca_file`, a
/// missing `host`) is placed at its setting, or at its table for one with the table as a
/// whole, as the server places it; an ssh role's `principals` must be a list and its
/// `extensions` known ones, each at its setting.
fn issuers(targets: &Targets) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (name, t) in targets.iter() {
        if !["ssh", "postgres"].contains(&t.kind.as_str()) {
            out.push(
                t.kind_at
                    .problem(format!("target {name}: unknown kind {:?}", t.kind)),
            );
            continue;
        }
        let setting = |key: &str| t.connection.get(key).and_then(|v| v.as_str());
        let connection = if t.kind != "postgres" {
            None
        } else if setting("tls").is_some_and(|tls| tls != "verify-full") {
            Some((
                Some("tls"),
                "connection setting `tls` of a postgres target must be \"verify-full\"",
            ))
        } else if setting("tls_ca_file").is_some_and(|f| !f.starts_with('/')) {
            Some((
                Some("tls_ca_file"),
                "connection setting `tls_ca_file` of a postgres target must be an absolute path, used only with `tls = \"verify-full\"`",
            ))
        } else if setting("host").is_none() {
            Some((
                None,
                "a postgres target needs `host = \"...\"` in its connection table",
            ))
        } else {
            None
        };
        if let Some((key, message)) = connection {
            let at = key
                .and_then(|k| t.connection_settings_at.get(k))
                .unwrap_or(&t.connection_at);
            out.push(at.problem(format!("target {name}: {message}")));
        }
        for role in t.roles.values() {
            let at = |key: &str| role.settings_at.get(key).unwrap_or(&role.at);
            if role
                .settings
                .get("principals")
                .is_some_and(|p| !p.is_array())
            {
                out.push(at("principals").problem("`principals` must be a list of strings"));
            }
            if role.settings.contains_key("extensions") {
                out.push(at("extensions").problem("unknown certificate extension"));
            }
        }
    }
    out
}

/// The problems of a policy of `targets` and one rule for `web/a`, checked with [`issuers`].
fn issuer_problems(targets: &str) -> Vec<String> {
    let rule = "@id(\"x\") @approval(\"auto\") @max_ttl(\"1h\")\npermit (principal, action == Action::\"request\", resource == Role::\"web/a\");\n";
    let files = [
        ("targets.toml".to_owned(), targets.to_owned()),
        ("r.cedar".to_owned(), rule.to_owned()),
    ];
    let check = TargetCheck {
        problems: &issuers,
        ..NO_CHECK
    };
    match load::load(&files, check) {
        Ok(_) => panic!("loaded"),
        Err(r) => r.diagnostics.iter().map(ToString::to_string).collect(),
    }
}

/// One role's problem hides neither another role's, nor its target's: the issuer still checks
/// what read whole.
#[test]
fn a_problem_of_one_role_hides_no_other_of_its_target() {
    let targets = "[targets.web]\nkind = \"ssh\"\nenvironment = \"production\"\n\
                   [targets.web.roles.a]\nprincipals = \"root\"\nextensions = [\"permit-everything\"]\n\
                   [targets.web.roles.Ops]\nprincipals = [\"ops\"]\n";
    assert_eq!(
        issuer_problems(targets),
        [
            "targets.toml:5:1: `principals` must be a list of strings",
            "targets.toml:6:1: unknown certificate extension",
            "targets.toml:7:20: invalid role name \"Ops\": use 1-64 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
        ]
    );
    let targets = "[targets.web]\nkind = \"ssh\"\nenvironment = \"production\"\n\
                   [targets.web.roles.a]\nprincipals = [\"root\"]\n\
                   [targets.k]\nkind = \"kubernetes\"\nenvironment = \"production\"\n";
    assert_eq!(
        issuer_problems(targets),
        [
            "targets.toml:6:10: target `k` has no roles: add at least one [targets.k.roles.NAME] table",
            "targets.toml:7:8: target k: unknown kind \"kubernetes\"",
        ]
    );
}

/// A connection setting's problem is shown at its own line, one with the table as a whole at
/// the table's.
#[test]
fn connection_problems_are_placed_at_their_setting() {
    let db = |settings: &str| {
        format!(
            "[targets.web]\nkind = \"ssh\"\nenvironment = \"prod\"\n[targets.web.roles.a]\nprincipals = [\"root\"]\n\
             [targets.db]\nkind = \"postgres\"\nenvironment = \"prod\"\n[targets.db.connection]\n{settings}\
             [targets.db.roles.r]\ngrants = [\"GRANT SELECT ON x TO {{{{name}}}}\"]\n"
        )
    };
    let first = |settings: &str| issuer_problems(&db(settings)).remove(0);
    assert_eq!(
        first("host = \"10.0.0.1\"\ndatabase = \"app\"\ntls = \"prefer\"\n"),
        "targets.toml:12:1: target db: connection setting `tls` of a postgres target must be \"verify-full\""
    );
    assert!(
        first("host = \"10.0.0.1\"\ntls_ca_file = \"ca.pem\"\ntls = \"verify-full\"\n")
            .starts_with("targets.toml:11:1: target db: connection setting `tls_ca_file`")
    );
    assert!(
        first("database = \"app\"\n")
            .starts_with("targets.toml:9:13: target db: a postgres target needs `host")
    );
    // In an inline table too.
    let inline = db("").replace(
        "[targets.db.connection]\n",
        "connection = { host = \"h\", tls = \"prefer\" }\n",
    );
    assert!(
        issuer_problems(&inline)[0]
            .starts_with("targets.toml:9:28: target db: connection setting `tls`")
    );
}

/// `check_dir` reads the fixtures, as `policy test` does, but runs none of their cases; a
/// server's `load_dir` reads none.
#[test]
fn a_check_reads_the_fixtures_without_running_them() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in demo_files() {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let checked = Policy::check_dir(dir.path(), NO_CHECK).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(
        checked.digest(),
        Policy::from_files(&demo_files()).unwrap().digest()
    );

    let tests = dir.path().join("tests");
    std::fs::write(tests.join("y.toml"), "garbage [\n").unwrap();
    // A case that fails is no problem of the check's.
    std::fs::write(
        tests.join("z.toml"),
        "[users.alice]\ngroups = [\"dev\"]\n[[case]]\nname = \"fails\"\nuser = \"alice\"\ntarget = \"demo-ssh\"\nrole = \"root\"\nexpect = \"allow\"\ntier = \"peer(sre) & peer(sre)\"\n",
    )
    .unwrap();
    std::fs::create_dir(tests.join("sub")).unwrap();
    std::fs::write(tests.join("sub/deeper.toml"), "").unwrap();
    let err = Policy::check_dir(dir.path(), NO_CHECK).unwrap_err();
    let got: Vec<String> = err.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(got.len(), 3, "{err}");
    assert_eq!(
        got[0],
        "tests/sub/deeper.toml: fixtures are read from tests/ itself only: move this file there, or its cases never run"
    );
    assert_eq!(got[1], "tests/y.toml:1:9: key with no value, expected `=`");
    assert!(
        got[2].starts_with("tests/z.toml:9:8: `tier` of case \"fails\": invalid approval tier"),
        "{err}"
    );
    Policy::load_dir(dir.path(), NO_CHECK).unwrap();

    std::fs::remove_dir_all(tests.join("sub")).unwrap();
    std::fs::remove_file(tests.join("y.toml")).unwrap();
    std::fs::write(
        tests.join("z.toml"),
        "[users.alice]\ngroups = [\"dev\"]\n[[case]]\nname = \"fails\"\nuser = \"alice\"\ntarget = \"demo-ssh\"\nrole = \"root\"\nexpect = \"allow\"\ntier = \"manager\"\n",
    )
    .unwrap();
    Policy::check_dir(dir.path(), NO_CHECK).unwrap_or_else(|r| panic!("{r}"));
    assert!(run_tests(dir.path(), NO_CHECK).unwrap().failed() > 0);
}

/// A name that is not UTF-8 cannot be told to be a rule file or not, so a rule file named in
/// Latin-1 would never be read: every such name in the policy directory, and in `tests/`
/// where fixtures are read, is an error naming it, not a `forbid` that never applies.
#[test]
fn a_name_that_is_not_utf8_is_an_error_not_a_file_passed_over() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt as _;

    let dir = tempfile::tempdir().unwrap();
    for (name, text) in demo_files() {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let digest = Policy::load_dir(dir.path(), NO_CHECK)
        .unwrap()
        .digest()
        .to_owned();
    let at = |bytes: &[u8]| dir.path().join(OsStr::from_bytes(bytes));
    let forbid = "@id(\"no-one\")\nforbid (principal, action, resource);\n";
    std::fs::write(at(b"deny-caf\xe9.cedar"), forbid).unwrap();
    let not_utf8 = "deny-caf\u{fffd}.cedar: this name is not valid UTF-8, so it is never read (a rule in it would never apply): rename it in UTF-8; every name in a policy directory must be, so that no rule file is passed over (files kept aside on purpose go in a folder whose name starts with a dot)";
    for err in [
        Policy::load_dir(dir.path(), NO_CHECK).unwrap_err(),
        Policy::check_dir(dir.path(), NO_CHECK).unwrap_err(),
        run_tests(dir.path(), NO_CHECK).unwrap_err(),
    ] {
        let got: Vec<String> = err.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(got, [not_utf8], "{err}");
        assert!(err.has_errors());
    }
    // Renamed, its rule applies: the digest changes.
    std::fs::rename(at(b"deny-caf\xe9.cedar"), at(b"deny-cafe.cedar")).unwrap();
    assert_ne!(
        Policy::load_dir(dir.path(), NO_CHECK).unwrap().digest(),
        digest
    );
    std::fs::remove_file(at(b"deny-cafe.cedar")).unwrap();

    // Any other such name at the top level too, a folder's, and the rule files in it, which
    // are misplaced as well; hidden ones are kept aside on purpose.
    std::fs::write(at(b"notes-\xff.md"), "").unwrap();
    std::fs::create_dir(at(b"r\xe8gles")).unwrap();
    std::fs::write(at(b"r\xe8gles/deny.cedar"), forbid).unwrap();
    std::fs::create_dir(at(b"old")).unwrap();
    std::fs::write(at(b"old/d\xe9ny.CEDAR"), forbid).unwrap();
    std::fs::write(at(b".caf\xe9.cedar.swp"), "").unwrap();
    std::fs::create_dir(at(b".\xe9")).unwrap();
    std::fs::write(at(b".\xe9/d\xe9ny.cedar"), forbid).unwrap();
    let err = Policy::load_dir(dir.path(), NO_CHECK).unwrap_err();
    let got: Vec<(&str, &str)> = err
        .diagnostics
        .iter()
        .map(|d| (d.file.as_str(), d.message.as_str()))
        .collect();
    assert_eq!(got.len(), 4, "{err}");
    assert_eq!(got[0].0, "notes-\u{fffd}.md", "{err}");
    assert!(
        got[0].1.starts_with("this name is not valid UTF-8"),
        "{err}"
    );
    assert_eq!(
        got[1],
        (
            "old/d\u{fffd}ny.CEDAR",
            "rules are read from the policy directory's top level only: move this file there, or its rules never apply (rules kept aside on purpose go in a folder whose name starts with a dot); its path is not valid UTF-8 either: rename it in UTF-8"
        ),
        "{err}"
    );
    assert_eq!(got[2].0, "r\u{fffd}gles", "{err}");
    assert!(
        got[2].1.starts_with("this name is not valid UTF-8"),
        "{err}"
    );
    assert_eq!(got[3].0, "r\u{fffd}gles/deny.cedar", "{err}");
    assert!(
        got[3]
            .1
            .ends_with("its path is not valid UTF-8 either: rename it in UTF-8")
    );
    for bytes in [
        &b"notes-\xff.md"[..],
        b"r\xe8gles/deny.cedar",
        b"old/d\xe9ny.CEDAR",
    ] {
        std::fs::remove_file(at(bytes)).unwrap();
    }
    std::fs::remove_dir(at(b"r\xe8gles")).unwrap();
    assert_eq!(
        Policy::load_dir(dir.path(), NO_CHECK).unwrap().digest(),
        digest
    );

    // In tests/, where a check and `policy test` read fixtures; a server reads none.
    std::fs::write(at(b"tests/caf\xe9.toml"), "").unwrap();
    std::fs::create_dir(at(b"tests/\xe9")).unwrap();
    std::fs::write(at(b"tests/\xe9/more.toml"), "").unwrap();
    for err in [
        Policy::check_dir(dir.path(), NO_CHECK).unwrap_err(),
        run_tests(dir.path(), NO_CHECK).unwrap_err(),
    ] {
        let got: Vec<String> = err.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "tests/caf\u{fffd}.toml: this name is not valid UTF-8, so it is never read (cases in it would never run): rename it in UTF-8; every name in tests/ must be, so that no fixture file is passed over",
                "tests/\u{fffd}: this name is not valid UTF-8, so it is never read (cases in it would never run): rename it in UTF-8; every name in tests/ must be, so that no fixture file is passed over",
                "tests/\u{fffd}/more.toml: fixtures are read from tests/ itself only: move this file there, or its cases never run; its path is not valid UTF-8 either: rename it in UTF-8",
            ],
            "{err}"
        );
    }
    assert_eq!(
        Policy::load_dir(dir.path(), NO_CHECK).unwrap().digest(),
        digest
    );
}

/// A case naming a target or role the policy has not cannot run: a check finds it at its line,
/// as `policy test` does, with the policy's own problems in the same run.
#[test]
fn a_check_finds_cases_naming_targets_or_roles_the_policy_has_not() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in demo_files() {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let tests = dir.path().join("tests");
    std::fs::write(
        tests.join("names.toml"),
        "[users.alice]\ngroups = [\"dev\"]\n\n[[case]]\nname = \"no such target\"\nuser = \"alice\"\ntarget = \"nope\"\nrole = \"admin\"\nexpect = \"deny\"\n\n[[case]]\nname = \"no such role\"\nuser = \"alice\"\ntarget = \"demo-ssh\"\nrole = \"nope\"\nexpect = \"deny\"\n",
    )
    .unwrap();
    let expected = [
        "tests/names.toml:7:10: unknown target `nope`; known targets: demo-ssh: name one of them, or define it in targets.toml",
        "tests/names.toml:15:8: target `demo-ssh` has no role `nope`; its roles: admin, deploy, root, viewer: name one of them, or define it in targets.toml as [targets.demo-ssh.roles.nope]",
    ];
    for err in [
        Policy::check_dir(dir.path(), NO_CHECK).unwrap_err(),
        run_tests(dir.path(), NO_CHECK).unwrap_err(),
    ] {
        let got: Vec<String> = err.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(got, expected, "{err}");
    }
    // Fixtures decide nothing: a server loads the policy.
    Policy::load_dir(dir.path(), NO_CHECK).unwrap();

    // With the policy broken too, one check reports both.
    std::fs::write(
        dir.path().join("more.cedar"),
        "permit (principal, action,\n",
    )
    .unwrap();
    let err = Policy::check_dir(dir.path(), NO_CHECK).unwrap_err();
    let files: Vec<&str> = err.diagnostics.iter().map(|d| d.file.as_str()).collect();
    assert_eq!(
        files,
        ["more.cedar", "tests/names.toml", "tests/names.toml"],
        "{err}"
    );
    std::fs::remove_file(dir.path().join("more.cedar")).unwrap();

    // A target whose definition has a problem is reported in targets.toml only: the case
    // names it.
    let targets = dir.path().join("targets.toml");
    let text = std::fs::read_to_string(&targets).unwrap();
    let broken = text.replacen(
        "[targets.demo-ssh]\n",
        "[targets.demo-ssh]\ncolour = 1\n",
        1,
    );
    assert_ne!(broken, text);
    std::fs::write(&targets, broken).unwrap();
    std::fs::write(
        tests.join("names.toml"),
        "[users.alice]\ngroups = [\"dev\"]\n\n[[case]]\nname = \"fine\"\nuser = \"alice\"\ntarget = \"demo-ssh\"\nrole = \"admin\"\nexpect = \"deny\"\n",
    )
    .unwrap();
    let err = Policy::check_dir(dir.path(), NO_CHECK).unwrap_err();
    assert!(
        err.diagnostics.iter().all(|d| d.file == "targets.toml"),
        "{err}"
    );
    std::fs::write(&targets, text).unwrap();
    Policy::check_dir(dir.path(), NO_CHECK).unwrap_or_else(|r| panic!("{r}"));
}

#[test]
fn a_backslash_written_once_in_a_ticket_pattern_is_told_how_to_write_it() {
    let found = problems(&files(&[(
        "a.cedar",
        r#"@id("v") @approval("auto") @max_ttl("1h") @ticket("INC-\d+")
permit (principal, action == Action::"request", resource == Role::"prod-web-1/viewer");
"#,
    )]));
    assert!(
        found
            .iter()
            .any(|p| p.contains("not a valid escape") && p.contains(r"`\\d` for the pattern `\d`")),
        "{found:?}"
    );
}

/// At a target whose sessions Warden does not record (its kind's issuer says so), a request
/// whose rules demand a recording is refused by the decision itself, naming those rules and
/// why, and `policy check` warns at each one's @recording for each role it can grant there; a
/// rule demanding none still grants, and break-glass is still granted there, as what it is:
/// `metadata`.
#[test]
fn a_recording_is_never_granted_where_warden_records_no_sessions() {
    let targets = format!(
        "{TARGETS}\n[targets.db]\nkind = \"postgres\"\nenvironment = \"production\"\n\n\
         [targets.db.roles.ro]\ngrants = [\"x\"]\n\n[targets.db.roles.rw]\ngrants = [\"y\"]\n"
    );
    let rules = r#"@id("any-full") @approval("auto") @max_ttl("1h") @recording("full")
permit (principal, action == Action::"request", resource) when { resource.name == "ro" || resource.name == "admin" };
@id("db-sampled") @approval("auto") @max_ttl("1h") @recording("sampled")
permit (principal, action == Action::"request", resource == Role::"db/ro");
@id("db-plain") @approval("auto") @max_ttl("2h")
permit (principal, action == Action::"request", resource in Target::"db");
@id("bg") @max_ttl("1h")
permit (principal, action == Action::"breakglass", resource);
"#;
    let files = vec![
        ("targets.toml".to_owned(), targets),
        ("a.cedar".to_owned(), rules.to_owned()),
    ];
    let check = TargetCheck {
        records_sessions: &|kind| kind != "postgres",
        ..NO_CHECK
    };
    let p = load::load(&files, check).unwrap_or_else(|r| panic!("{r}"));
    let alice = user("alice", &[]);
    let d = decide(&p, &alice, "db", "ro", &ctx());
    assert!(!d.allowed);
    assert_eq!(d.rules, ["any-full", "db-sampled"]);
    let said = d.not_permitted().to_string();
    assert_eq!(d.not_permitted().code(), "not_permitted");
    for part in [
        "any-full: it demands @recording(\"full\") for role ro of target db, whose sessions Warden does not record",
        "db-sampled: it demands @recording(\"sampled\")",
        "database sessions are not recorded by Warden",
        "scope the rule to SSH targets",
        "or drop its @recording",
    ] {
        assert!(said.contains(part), "{part:?} not in {said}");
    }
    // A request no rule demands a recording of is decided as ever.
    let rw = decide(&p, &alice, "db", "rw", &ctx());
    assert!(rw.allowed);
    assert_eq!(rw.rules, ["db-plain"]);
    assert_eq!(rw.recording, Recording::Metadata);
    // Where Warden records, the rule's recording is granted.
    let ssh = decide(&p, &alice, "prod-web-1", "admin", &ctx());
    assert!(ssh.allowed);
    assert_eq!(ssh.recording, Recording::Full);
    // Break-glass stays the way in, reported as unrecorded at the database only.
    let breakglass = |target: &str, role: &str| {
        p.decide(
            Action::Breakglass,
            &alice,
            &target.parse().unwrap(),
            &role.parse().unwrap(),
            &ctx(),
        )
        .unwrap()
    };
    let at_db = breakglass("db", "rw");
    assert!(at_db.allowed && at_db.mfa);
    assert_eq!(at_db.recording, Recording::Metadata);
    assert_eq!(breakglass("prod-web-1", "admin").recording, Recording::Full);
    // Warned at each rule's @recording, once for each role it can grant at the database.
    let warnings: Vec<String> = p.warnings().iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].starts_with("a.cedar:1:50: warning: permit any-full: it demands @recording(\"full\") for role ro of target db,"),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[1].starts_with("a.cedar:3:52: warning: permit db-sampled: it demands @recording(\"sampled\") for role ro of target db,"),
        "{}",
        warnings[1]
    );
    // Which kinds are recorded is the issuers' to say: told every kind is, the policy grants.
    let told_recorded = load::load(&files, NO_CHECK).unwrap_or_else(|r| panic!("{r}"));
    assert!(told_recorded.warnings().is_empty());
    let d = decide(&told_recorded, &alice, "db", "ro", &ctx());
    assert!(d.allowed);
    assert_eq!(d.recording, Recording::Full);
}

/// Fixture users are judged as the server judges its config's: managers naming each other in
/// a cycle are refused, where the first of them names the next; and a hint naming a table
/// quotes a name with a dot, which TOML would read as two keys.
#[test]
fn fixture_manager_cycles_are_refused_and_hints_quote_dotted_names() {
    let policy = "@id(\"viewers\")\n@approval(\"auto\")\n@max_ttl(\"1h\")\npermit (principal, action, resource);\n";
    let targets = "[targets.\"b.c\"]\nkind = \"ssh\"\nenvironment = \"production\"\n[targets.\"b.c\".roles.admin]\nprincipals = [\"root\"]\n";
    let cases = r#"[users.a]
manager = "b"

[users.b]
manager = "c"

[users.c]
manager = "b"

[users.d]
manager = "d"

[users.e]
manager = "f.g"

[[case]]
name = "x"
user = "h.i"
target = "b.c"
role = "viewer"
expect = "deny"
"#;
    let files = vec![
        ("targets.toml".to_owned(), targets.to_owned()),
        ("a.cedar".to_owned(), policy.to_owned()),
        ("tests/t.toml".to_owned(), cases.to_owned()),
    ];
    for got in [
        fixtures::run_files(&files, NO_CHECK).map(|_| ()),
        fixtures::check_files(&files, NO_CHECK).map(|_| ()),
    ] {
        assert_eq!(
            got.unwrap_err().to_string(),
            [
                "tests/t.toml:5:11: users b \u{2192} c \u{2192} b name each other as manager in a cycle: a chain of managers must end with someone who has none; remove `manager` from one of them, or name someone outside the cycle",
                "tests/t.toml:10:8: user d names themself as manager",
                "tests/t.toml:14:11: manager f.g is not declared: add a [users.\"f.g\"] table",
                "tests/t.toml:18:8: user h.i is not declared: add a [users.\"h.i\"] table",
                "tests/t.toml:20:8: target `b.c` has no role `viewer`; its roles: admin: name one of them, or define it in targets.toml as [targets.\"b.c\".roles.viewer]",
            ]
            .join("\n")
        );
    }
}

/// The search for misplaced rule and fixture files follows no link to a folder: a link to `/`
/// would have it read the whole host (and every file system mounted there), links to `..` make
/// loops whose paths grow with every level. Each such link is one problem, named, and the
/// search ends at once.
#[test]
fn links_to_folders_are_named_once_and_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in demo_files() {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let at = |name: &str| dir.path().join(name);
    let digest = Policy::load_dir(dir.path(), NO_CHECK)
        .unwrap()
        .digest()
        .to_owned();
    std::fs::create_dir_all(at("docs")).unwrap();
    std::os::unix::fs::symlink("/", at("docs/rootfs")).unwrap();
    std::fs::create_dir_all(at("sub")).unwrap();
    for n in 1..=6 {
        std::os::unix::fs::symlink("..", at(&format!("sub/l{n}"))).unwrap();
    }
    std::fs::create_dir_all(at("tests/more")).unwrap();
    std::os::unix::fs::symlink("../..", at("tests/more/up")).unwrap();
    // A rule file in a real folder is still found, and a link to a file is no folder.
    std::fs::create_dir_all(at("old")).unwrap();
    std::fs::write(at("old/deny.cedar"), "").unwrap();
    std::os::unix::fs::symlink("../targets.toml", at("old/targets.toml")).unwrap();
    let links = [
        "docs/rootfs",
        "sub/l1",
        "sub/l2",
        "sub/l3",
        "sub/l4",
        "sub/l5",
        "sub/l6",
        "tests/more/up",
    ];
    let started = std::time::Instant::now();
    for (with_tests, err) in [
        (false, Policy::load_dir(dir.path(), NO_CHECK).unwrap_err()),
        (true, Policy::check_dir(dir.path(), NO_CHECK).unwrap_err()),
        (true, run_tests(dir.path(), NO_CHECK).unwrap_err()),
    ] {
        let mut want: Vec<&str> = links.to_vec();
        want.push("old/deny.cedar");
        // A server reads no fixtures, but a rule file in tests/ would be misplaced too.
        if !with_tests {
            assert!(err.diagnostics.iter().any(|d| d.file == "tests/more/up"));
        }
        want.sort_unstable();
        let files: Vec<&str> = err.diagnostics.iter().map(|d| d.file.as_str()).collect();
        assert_eq!(files, want, "{err}");
        for d in &err.diagnostics {
            assert!(d.is_error(), "{d}");
            if d.file != "old/deny.cedar" {
                assert!(
                    d.message
                        .starts_with("this is a link to a folder, which is not followed")
                        && d.message.contains("remove the link"),
                    "{d}"
                );
            }
        }
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // `tests` itself, a link, is not followed either: its fixtures are not read.
    for name in links {
        std::fs::remove_file(at(name)).unwrap();
    }
    std::fs::remove_dir_all(at("old")).unwrap();
    let fixtures = dir.path().with_file_name(format!(
        "{}-fixtures",
        dir.path().file_name().unwrap().to_str().unwrap()
    ));
    std::fs::rename(at("tests"), &fixtures).unwrap();
    std::os::unix::fs::symlink(&fixtures, at("tests")).unwrap();
    let err = run_tests(dir.path(), NO_CHECK).unwrap_err();
    let got: Vec<(&str, bool)> = err
        .diagnostics
        .iter()
        .map(|d| {
            (
                d.file.as_str(),
                d.message.starts_with("this is a link to a folder"),
            )
        })
        .collect();
    assert_eq!(got, [("tests", true)], "{err}");
    std::fs::remove_file(at("tests")).unwrap();
    std::fs::rename(&fixtures, at("tests")).unwrap();
    // Kept aside on purpose, in a folder whose name starts with a dot, a link is no problem.
    std::fs::create_dir_all(at(".aside")).unwrap();
    std::os::unix::fs::symlink("/", at(".aside/rootfs")).unwrap();
    assert_eq!(
        Policy::load_dir(dir.path(), NO_CHECK).unwrap().digest(),
        digest
    );
    assert_eq!(run_tests(dir.path(), NO_CHECK).unwrap().failed(), 0);
}

/// A problem Cedar finds before a rule begins (a line commented as other languages do) sets
/// the rule aside with it: the problem names that rule, so that no rule goes unchecked
/// unsaid, and tells how Cedar comments are written.
#[test]
fn a_problem_before_a_rule_names_the_rule_it_sets_aside() {
    let rule = |id: &str, tier: &str| {
        format!(
            "@id(\"{id}\") @approval(\"{tier}\") @max_ttl(\"1h\")\npermit (principal, action == Action::\"request\", resource == Role::\"prod-web-1/viewer\");\n"
        )
    };
    for (comment, at) in [
        ("# no tier yet", "a.cedar:4:1: "),
        ("/* no tier yet */", "a.cedar:4:1: "),
    ] {
        let text = format!("{}\n{comment}\n{}", rule("t1", "auto"), rule("t2", "boss"));
        let got = problems(&files(&[("a.cedar", &text)]));
        assert_eq!(got.len(), 1, "{}", got.join("\n"));
        assert!(
            got[0].starts_with(at)
                && got[0].contains("a Cedar comment starts with `//`")
                && got[0].ends_with(
                    "; no rule from here to line 6 was checked (policy t2): fix this, then check again"
                ),
            "{}",
            got[0]
        );
        // Written as Cedar has it, the rule is checked, and its own problem shown.
        let fixed = text.replace(comment, "// no tier yet");
        let got = problems(&files(&[("a.cedar", &fixed)]));
        assert_eq!(got.len(), 1, "{}", got.join("\n"));
        assert!(
            got[0].starts_with("a.cedar:5:11: @approval: invalid approval tier \"boss\""),
            "{}",
            got[0]
        );
    }
    // A rule with no @id is named by its line.
    let text = format!(
        "{}\n# x\n@approval(\"auto\") @max_ttl(\"1h\")\npermit (principal, action, resource);\n",
        rule("t1", "auto")
    );
    let got = problems(&files(&[("a.cedar", &text)]));
    assert!(
        got[0].ends_with("no rule from here to line 6 was checked (the rule at line 5): fix this, then check again"),
        "{}",
        got.join("\n")
    );
}

/// A string left open is reported where it opens, as a bracket left open is, not where Cedar,
/// having read every quote after it the wrong way round, stops; and the rules it took in are
/// named.
#[test]
fn a_string_left_open_is_reported_where_it_opens() {
    let text = r#"@id("t1") @approval("auto") @max_ttl("1h")
permit (principal, action == Action::"request", resource == Role::"prod-web-1/viewer");

@id("t2")
@reason("no root at night)
forbid (principal, action, resource == Role::"prod-web-1/admin")
when { context.now.hour < 6 };

@id("t3") @approval("auto") @max_ttl("1h")
permit (principal, action == Action::"request", resource == Role::"stage-web-1/admin");

@id("t4") @approval("auto") @max_ttl("1h")
permit (principal, action == Action::"request", resource) when { context.ticket == "x" };
"#;
    let got = problems(&files(&[("b.cedar", text)]));
    assert_eq!(got.len(), 1, "{}", got.join("\n"));
    assert!(
        got[0].starts_with("b.cedar:5:9: this string is not closed: it runs on over the line break after it, so Cedar cannot read the rest of the file (at line 13, column ")
            && got[0].ends_with(
                "; no rule after this point in the file was checked (policies t3, t4): close the string, then check again"
            ),
        "{}",
        got[0]
    );
    // Closed, every rule is checked.
    let closed = text.replace("night)", "night\")");
    load(&[("b.cedar", &closed)]);
    // A string that is closed, beside another problem, is not said to be open.
    let other = closed
        .replace("night\")", "night;\nnot before 6\")")
        .replace("hour < 6", "hour < < 6");
    let got = problems(&files(&[("b.cedar", &other)]));
    assert_eq!(got.len(), 1, "{}", got.join("\n"));
    assert!(
        got[0].starts_with("b.cedar:8:27: unexpected token `<`")
            && !got[0].contains("string is not closed"),
        "{}",
        got[0]
    );

    // The last string of a file left open is said where it opens too, once.
    let last = format!(
        "{}@id(\"t5\") @approval(\"auto\") @max_ttl(\"1h\")\npermit (principal, action == Action::\"request\", resource) when {{ context.ticket == \"y }};\n",
        closed
    );
    let got = problems(&files(&[("b.cedar", &last)]));
    assert_eq!(
        got,
        [
            "b.cedar:15:84: this string is not closed: it runs on over the line break after it, so Cedar cannot read the rest of the file; no rule after this point in the file was checked: close the string, then check again"
        ],
        "{}",
        got.join("\n")
    );
}

/// A permit whose scope leaves the action open is taken for a request permit, whatever its
/// conditions say of the action: one that asks for `Action::"breakglass"` there would apply to
/// nothing, so it is refused, and told to name the action in its scope.
#[test]
fn a_permit_that_tests_the_action_only_in_its_conditions_is_refused() {
    let text = "@id(\"bg\") @max_ttl(\"1h\")\npermit (principal in Group::\"sre\", action, resource == Role::\"prod-web-1/admin\") when { action == Action::\"breakglass\" };\n";
    let got = problems(&files(&[("a.cedar", text)]));
    assert_eq!(got.len(), 1, "{}", got.join("\n"));
    assert!(
        got[0].starts_with("a.cedar:1:1: permit bg tests `action` in its conditions, but its scope leaves the action open")
            && got[0].contains("name the action in the scope instead"),
        "{}",
        got[0]
    );
    // In `unless` too, and whatever action it asks for.
    let unless = "@id(\"req\") @approval(\"auto\") @max_ttl(\"1h\")\npermit (principal, action, resource) unless { action == Action::\"breakglass\" };\n";
    let got = problems(&files(&[("a.cedar", unless)]));
    assert!(
        got[0].contains("permit req tests `action`"),
        "{}",
        got.join("\n")
    );
    // With the action in the scope, it applies: to break-glass access.
    let scoped = text
        .replace(", action,", ", action == Action::\"breakglass\",")
        .replace(" when { action == Action::\"breakglass\" }", "");
    let p = load(&[("a.cedar", &scoped)]);
    let d = p
        .decide(
            Action::Breakglass,
            &user("bob", &["sre"]),
            &"prod-web-1".parse().unwrap(),
            &"admin".parse().unwrap(),
            &ctx(),
        )
        .unwrap();
    assert_eq!(d.rules, ["bg"]);
    // A forbid may test the action in its conditions: it applies to both.
    load(&[(
        "a.cedar",
        "@id(\"ok\") @approval(\"auto\") @max_ttl(\"1h\")\npermit (principal, action == Action::\"request\", resource);\n@id(\"no-bg\") forbid (principal, action, resource) when { action == Action::\"breakglass\" };\n",
    )]);
}
