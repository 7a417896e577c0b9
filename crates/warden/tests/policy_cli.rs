//! Policy as code from the command line: check, test, explain, and reload on the live server
//! (API and SIGHUP), where an invalid policy is rejected and the old one stays live.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use warden_testkit::Cli;

fn local_cli() -> Cli {
    // check and test need no server.
    Cli::new(Path::new(BIN), "http://127.0.0.1:9")
}

#[test]
fn check_reports_every_problem_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(
        dir.path(),
        &[("targets.toml", TARGETS), ("access.cedar", RULES)],
    );
    let cli = local_cli();
    let good = cli.json(&["policy", "check", dir.path().to_str().unwrap()]);
    assert_eq!(good["valid"], true);
    assert_eq!(good["rules"], 4);

    let bad_rules = "@id(\"a\")\n@approval(\"auto\")\n@max_ttl(\"1h\")\npermit (principal, action == Action::\"request\", resource == Role::\"web/view\")\nwhen { principal.nosuch == 1 };\n\n@id(\"b\")\n@approval(\"boss\")\n@max_ttl(\"1h\")\npermit (principal, action, resource);\n";
    write_policy(
        dir.path(),
        &[
            ("access.cedar", bad_rules),
            ("more.cedar", "permit (principal, action,\n"),
        ],
    );
    let out = cli.run(&["policy", "check", dir.path().to_str().unwrap()], None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("access.cedar:5"),
        "validation error not located: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("access.cedar:8"),
        "bad tier not located: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("more.cedar:"),
        "parse error not reported: {}",
        out.stderr
    );

    std::fs::remove_file(dir.path().join("more.cedar")).unwrap();
    let view_only = "@id(\"a\")\n@approval(\"auto\")\n@max_ttl(\"1h\")\npermit (principal, action == Action::\"request\", resource == Role::\"web/view\");\n";
    write_policy(
        dir.path(),
        &[
            ("access.cedar", view_only),
            (
                "targets.toml",
                "[targets.web]\nkind = \"ssh\"\nenvironment = \"t\"\n[targets.web.roles.view]\nprincipals = []\n",
            ),
        ],
    );
    let out = cli.run(&["policy", "check", dir.path().to_str().unwrap()], None);
    assert_eq!(out.code, 1, "{out:?}");
    // What only the issuer can check is located too: at the setting, or once at the kind.
    assert!(
        out.stderr.contains("targets.toml:5:") && out.stderr.contains("principals"),
        "{}",
        out.stderr
    );
    // Every problem of a role's settings, each at its own line; one it lacks, at the role.
    write_policy(
        dir.path(),
        &[(
            "targets.toml",
            "[targets.web]\nkind = \"ssh\"\nenvironment = \"t\"\n[targets.web.roles.view]\nprincipals = [\"root\", \"bad name\"]\nextensions = [\"permit-everything\"]\ndeny_commands = \"rm\"\nfile_transfer = \"yes\"\nrecord_input = 1\ncolour = \"red\"\n[targets.web.roles.edit]\n",
        )],
    );
    let out = cli.run(&["policy", "check", dir.path().to_str().unwrap()], None);
    assert_eq!(out.code, 1, "{out:?}");
    for (line, what) in [
        (5, "principal \"bad name\""),
        (6, "permit-everything"),
        (7, "`deny_commands` must be a list"),
        (8, "`file_transfer` must be true or false"),
        (9, "`record_input` must be true or false"),
        (10, "unknown setting `colour`"),
        (11, "role edit: an ssh role needs `principals"),
    ] {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.starts_with(&format!("targets.toml:{line}:")) && l.contains(what)),
            "line {line}, {what}: {}",
            out.stderr
        );
    }
    write_policy(
        dir.path(),
        &[(
            "targets.toml",
            "[targets.web]\nkind = \"ftp\"\nenvironment = \"t\"\n[targets.web.roles.view]\n[targets.web.roles.edit]\n",
        )],
    );
    let out = cli.run(&["policy", "check", dir.path().to_str().unwrap()], None);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.stderr.matches("unknown kind").count(),
        1,
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("targets.toml:2:8"), "{}", out.stderr);

    // One run reports everything: a rule that does not parse, a blank environment, a bad
    // connection (once, at its setting) and every bad setting of each role.
    write_policy(
        dir.path(),
        &[
            ("access.cedar", "permit (principal, action,\n"),
            (
                "targets.toml",
                "[targets.web]\nkind = \"postgres\"\nenvironment = \"\"\n\n[targets.web.connection]\nhost = \"db\"\nport = 99999\ndatabase = \"app\"\n\n[targets.web.roles.view]\ngrants = [\"GRANT SELECT ON t TO x\"]\n\n[targets.web.roles.edit]\ncolour = \"red\"\n",
            ),
        ],
    );
    let out = cli.run(
        &["--json", "policy", "check", dir.path().to_str().unwrap()],
        None,
    );
    assert_eq!(out.code, 1, "{out:?}");
    let out: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let places: Vec<String> = out["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{}:{}", d["file"].as_str().unwrap(), d["line"]))
        .collect();
    assert_eq!(
        places,
        [
            "access.cedar:1",
            "targets.toml:3",
            "targets.toml:7",
            "targets.toml:11",
            "targets.toml:13",
            "targets.toml:14"
        ],
        "{out}"
    );

    // The fixtures are read too (not run): a CI job that only checks is not told OK beside
    // a file `policy test` cannot read.
    let demo = tempfile::tempdir().unwrap();
    write_policy(demo.path(), &[]);
    let tests = demo.path().join("tests");
    std::fs::create_dir_all(&tests).unwrap();
    std::fs::write(tests.join("y.toml"), "garbage [\n").unwrap();
    let out = cli.run(&["policy", "check", demo.path().to_str().unwrap()], None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("tests/y.toml:1"), "{out:?}");
}

/// Every problem of a target's connection table is reported in one run, each at the line of
/// its own setting, and one with the table as a whole (a missing `host`) at the table.
#[test]
fn check_reports_every_problem_of_a_connection_at_its_setting() {
    let dir = tempfile::tempdir().unwrap();
    let targets = "[targets.db]\nkind = \"postgres\"\nenvironment = \"t\"\n\
                   [targets.db.connection]\nhots = \"db.internal\"\nport = 99999\n\
                   database = \"app\"\ntls = \"prefer\"\n\
                   [targets.db.roles.view]\ngrants = [\"GRANT SELECT ON t TO {{name}}\"]\n";
    let rule = "@id(\"a\") @approval(\"auto\") @max_ttl(\"1h\")\n\
                permit (principal, action == Action::\"request\", resource == Role::\"db/view\");\n";
    write_policy(
        dir.path(),
        &[("targets.toml", targets), ("access.cedar", rule)],
    );
    let out = local_cli().run(&["policy", "check", dir.path().to_str().unwrap()], None);
    assert_eq!(out.code, 1, "{out:?}");
    let reported: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("targets.toml:"))
        .collect();
    assert_eq!(reported.len(), 4, "{}", out.stderr);
    for (line, what) in [
        (
            4,
            "target db: invalid settings: a postgres target needs `host = \"...\"`",
        ),
        (
            5,
            "target db: invalid settings: unknown connection setting `hots` for a postgres target",
        ),
        (
            6,
            "target db: invalid settings: connection setting `port` of a postgres target must be an integer from 1 to 65535",
        ),
        (
            8,
            "target db: invalid settings: connection setting `tls` of a postgres target must be \"verify-full\", \"require\" or \"disable\", not \"prefer\" (Warden never falls back",
        ),
    ] {
        assert!(
            reported
                .iter()
                .any(|l| l.starts_with(&format!("targets.toml:{line}:")) && l.contains(what)),
            "line {line}, {what}:\n{}",
            out.stderr
        );
    }
}

/// A role naming more principals than OpenSSH reads in a certificate is reported at its
/// `principals` line, as it would fail every grant.
#[test]
fn check_refuses_a_role_with_more_principals_than_a_certificate_holds() {
    let dir = tempfile::tempdir().unwrap();
    let view_only = "@id(\"a\")\n@approval(\"auto\")\n@max_ttl(\"1h\")\npermit (principal, action == Action::\"request\", resource == Role::\"web/view\");\n";
    let targets = |n: usize| {
        let accounts: Vec<String> = (0..n).map(|i| format!("\"u{i}\"")).collect();
        format!(
            "[targets.web]\nkind = \"ssh\"\nenvironment = \"t\"\n[targets.web.roles.view]\nprincipals = [{}]\n",
            accounts.join(", ")
        )
    };
    let cli = local_cli();
    write_policy(
        dir.path(),
        &[("access.cedar", view_only), ("targets.toml", &targets(256))],
    );
    let good = cli.json(&["policy", "check", dir.path().to_str().unwrap()]);
    assert_eq!(good["valid"], true, "{good}");
    write_policy(dir.path(), &[("targets.toml", &targets(257))]);
    let out = cli.run(&["policy", "check", dir.path().to_str().unwrap()], None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.lines().any(|l| l.starts_with("targets.toml:5:")
            && l.contains("role view: the role lists 257 principals")
            && l.contains("more than 256")),
        "{}",
        out.stderr
    );
}

/// One run of `policy check` reports every problem, however they mix: a TOML problem in
/// targets.toml hides no rule's reference problem, a rule too deep for Cedar or one Cedar
/// cannot parse hides no other rule of its file, and text shown to people that holds control
/// or invisible characters is refused where it is written, without reaching the terminal.
#[test]
fn check_reports_problems_that_used_to_hide_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let targets = "[targets.web]\nkind = \"ssh\"\nenvironment = \"test\"\nlables = [\"pci\"]\ndescription = \"x\\u001b[31my\"\n\n[targets.web.roles.admin]\nprincipals = [\"warden-it\"]\n";
    let chain = (0..300)
        .map(|i| format!("principal == User::\"u{i}\""))
        .collect::<Vec<_>>()
        .join(" || ");
    let access = format!(
        "@id(\"long\") @approval(\"auto\") @max_ttl(\"1h\")\npermit (principal, action, resource) when {{ {chain} }};\n\n@id(\"second\")\n@approval(\"peer:\")\n@max_ttl(\"abc\")\npermit (principal, action, resource == Role::\"web/admn\");\n\n@id(\"frozen\")\n@reason(\"frozen\\u{{1b}}[2J\\nline2\u{202e}\")\nforbid (principal, action, resource in Target::\"db\");\n"
    );
    let more = "@id(\"broken\") permit (principal, action, resource) when { principal == };\n\n@id(\"after\") @approval(\"boss\") @max_ttl(\"1h\")\npermit (principal, action, resource);\n";
    write_policy(
        dir.path(),
        &[
            ("targets.toml", targets),
            ("access.cedar", &access),
            ("more.cedar", more),
        ],
    );
    let cli = local_cli();
    let out = cli.run(&["policy", "check", dir.path().to_str().unwrap()], None);
    assert_eq!(out.code, 1, "{out:?}");
    for (place, what) in [
        ("access.cedar:2:", "more than 256 operators"),
        ("access.cedar:5:1:", "invalid approval tier \"peer:\""),
        ("access.cedar:6:1:", "@max_ttl \"abc\" is not a duration"),
        (
            "access.cedar:7:",
            "Role::\"web/admn\", but target `web` has no role `admn`",
        ),
        (
            "access.cedar:10:16:",
            "@reason contains a control character (U+001B), a line break (U+000A) and an invisible or text-reordering character (U+202E)",
        ),
        ("access.cedar:11:", "targets.toml defines no target `db`"),
        ("more.cedar:1:", "unexpected token `}`"),
        ("more.cedar:3:", "invalid approval tier \"boss\""),
        ("targets.toml:4:1:", "unknown key `lables` in target `web`"),
        (
            "targets.toml:5:17:",
            "`description` of target `web` contains a control character (U+001B)",
        ),
    ] {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.starts_with(place) && l.contains(what)),
            "{place} {what}:\n{}",
            out.stderr
        );
    }
    let problems = out
        .stderr
        .lines()
        .filter(|l| l.contains(".cedar:") || l.starts_with("targets.toml:"))
        .count();
    assert_eq!(problems, 10, "{}", out.stderr);
    // The terminal gets none of the characters it would act on.
    assert!(
        !out.stderr.contains(['\u{1b}', '\u{202e}']),
        "{:?}",
        out.stderr
    );

    // With --json too, each with its place.
    let out = cli.run(
        &["--json", "policy", "check", dir.path().to_str().unwrap()],
        None,
    );
    assert_eq!(out.code, 1, "{out:?}");
    let out: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let places: Vec<String> = out["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{}:{}", d["file"].as_str().unwrap(), d["line"]))
        .collect();
    assert_eq!(
        places,
        [
            "access.cedar:2",
            "access.cedar:5",
            "access.cedar:6",
            "access.cedar:7",
            "access.cedar:10",
            "access.cedar:11",
            "more.cedar:1",
            "more.cedar:3",
            "targets.toml:4",
            "targets.toml:5",
        ],
        "{out}"
    );
}

/// A rule file whose name is not UTF-8 is named by a check, not passed over as if it were not
/// there: its rules would never apply.
#[test]
fn check_names_a_rule_file_whose_name_is_not_utf8() {
    use std::os::unix::ffi::OsStrExt as _;

    let dir = tempfile::tempdir().unwrap();
    write_policy(
        dir.path(),
        &[("targets.toml", TARGETS), ("access.cedar", RULES)],
    );
    let cli = local_cli();
    let shown = dir.path().to_str().unwrap();
    assert_eq!(cli.json(&["policy", "check", shown])["valid"], true);
    std::fs::write(
        dir.path()
            .join(std::ffi::OsStr::from_bytes(b"deny-caf\xe9.cedar")),
        "@id(\"no-one\")\nforbid (principal, action, resource);\n",
    )
    .unwrap();
    let out = cli.run(&["policy", "check", shown], None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.lines().any(|l| l
            .starts_with("deny-caf\u{fffd}.cedar: this name is not valid UTF-8")
            && l.contains("rename it in UTF-8")),
        "{}",
        out.stderr
    );
}

/// A fixture case naming a target or role the policy has not is a problem a check reports at
/// its line, as `policy test` does, not an OK for a CI job that only checks.
#[test]
fn check_finds_fixture_cases_naming_unknown_targets_and_roles() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = "[users.alice]\ngroups = [\"dev\"]\n\n[[case]]\nname = \"typo in target\"\nuser = \"alice\"\ntarget = \"nope\"\nrole = \"view\"\nexpect = \"deny\"\n\n[[case]]\nname = \"typo in role\"\nuser = \"alice\"\ntarget = \"web\"\nrole = \"nope\"\nexpect = \"deny\"\n";
    write_policy(
        dir.path(),
        &[
            ("targets.toml", TARGETS),
            ("access.cedar", RULES),
            ("tests/cases.toml", fixture),
        ],
    );
    let cli = local_cli();
    let shown = dir.path().to_str().unwrap();
    for command in ["check", "test"] {
        let out = cli.run(&["policy", command, shown], None);
        assert_eq!(out.code, 1, "{out:?}");
        for (place, what) in [
            (
                "tests/cases.toml:7:10:",
                "unknown target `nope`; known targets: web",
            ),
            (
                "tests/cases.toml:15:8:",
                "target `web` has no role `nope`; its roles: admin, deploy, root, view",
            ),
        ] {
            assert!(
                out.stderr
                    .lines()
                    .any(|l| l.starts_with(place) && l.contains(what)),
                "{command}: {place} {what}:\n{}",
                out.stderr
            );
        }
    }
}

/// A fixture file with users but no case would pass having tested nothing, and a rule expected
/// twice would read as checked twice: both are refused by `check` and `test`, in the file.
#[test]
fn fixture_files_that_test_nothing_or_repeat_a_rule_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = "[users.alice]\ngroups = [\"dev\"]\n\n[[case]]\nname = \"view is automatic\"\nuser = \"alice\"\ntarget = \"web\"\nrole = \"view\"\nexpect = \"allow\"\nrules = [\"view-auto\"]\n";
    write_policy(
        dir.path(),
        &[
            ("targets.toml", TARGETS),
            ("access.cedar", RULES),
            ("tests/good.toml", good),
            ("tests/users-only.toml", "[users.bob]\ngroups = [\"sre\"]\n"),
        ],
    );
    let cli = local_cli();
    let shown = dir.path().to_str().unwrap();
    for command in ["check", "test"] {
        let out = cli.run(&["policy", command, shown], None);
        assert_eq!(out.code, 1, "{command}: {out:?}");
        assert!(
            out.stderr.lines().any(|l| l.starts_with(
                "tests/users-only.toml: no [[case]] in this fixture file, so it tests nothing: add at least one [[case]]"
            )),
            "{command}: {}",
            out.stderr
        );
        assert!(!out.stdout.contains("passed"), "{command}: {out:?}");
    }

    std::fs::remove_file(dir.path().join("tests/users-only.toml")).unwrap();
    let repeated = good.replace(
        "rules = [\"view-auto\"]",
        "rules = [\"view-auto\",\n  \"view-auto\"]",
    );
    assert_ne!(repeated, good);
    write_policy(dir.path(), &[("tests/good.toml", &repeated)]);
    for command in ["check", "test"] {
        let out = cli.run(&["--json", "policy", command, shown], None);
        assert_eq!(out.code, 1, "{command}: {out:?}");
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let d = &v["diagnostics"][0];
        assert_eq!(
            (
                d["file"].as_str(),
                d["line"].as_u64(),
                d["message"].as_str()
            ),
            (
                Some("tests/good.toml"),
                Some(11),
                Some(
                    "`rules` of case \"view is automatic\": rule \"view-auto\" is listed twice; list each rule id once"
                )
            ),
            "{command}: {v}"
        );
    }

    write_policy(dir.path(), &[("tests/good.toml", good)]);
    let out = cli.run(&["policy", "test", shown], None);
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains("1 passed, 0 failed"), "{}", out.stdout);
}

#[test]
fn test_runs_fixture_cases() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = r#"
[users.alice]
groups = ["dev"]
manager = "mallory"
[users.mallory]
groups = ["managers"]

[[case]]
name = "view is automatic"
user = "alice"
target = "web"
role = "view"
expect = "allow"
tier = "auto"
max_ttl = "1h"
rules = ["view-auto"]

[[case]]
name = "deploy needs a ticket"
user = "alice"
target = "web"
role = "deploy"
expect = "allow"
tier = "peer(sre)"
refusal = "ticket_required"
"#;
    write_policy(
        dir.path(),
        &[
            ("targets.toml", TARGETS),
            ("access.cedar", RULES),
            ("tests/cases.toml", fixture),
        ],
    );
    let cli = local_cli();
    let out = cli.run(&["policy", "test", dir.path().to_str().unwrap()], None);
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains("2 passed, 0 failed"), "{}", out.stdout);

    let failing = fixture.replace("tier = \"auto\"", "tier = \"manager\"");
    write_policy(dir.path(), &[("tests/cases.toml", &failing)]);
    let out = cli.run(&["policy", "test", dir.path().to_str().unwrap()], None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .contains("FAIL  tests/cases.toml:8: view is automatic"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("1 passed, 1 failed"), "{}", out.stdout);
    // Scripts get each missed expectation apart, and the counts.
    let out = cli.run(
        &["--json", "policy", "test", dir.path().to_str().unwrap()],
        None,
    );
    assert_eq!(out.code, 1, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (v["passed"].as_u64(), v["failed"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    let failed = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["passed"] == false)
        .unwrap();
    assert_eq!(
        failed["mismatches"],
        serde_json::json!([{"field": "tier", "expected": "manager", "got": "auto"}]),
        "{v}"
    );

    // A fixture that does not read is located, as policy check locates its problems.
    let broken = fixture.replace(
        "expect = \"allow\"\ntier = \"auto\"",
        "expect = \"maybe\"\ntier = \"auto\"",
    );
    assert_ne!(broken, fixture);
    write_policy(dir.path(), &[("tests/cases.toml", &broken)]);
    let out = cli.run(
        &["--json", "policy", "test", dir.path().to_str().unwrap()],
        None,
    );
    assert_eq!(out.code, 1, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["diagnostics"][0]["file"], "tests/cases.toml", "{v}");
    assert_eq!(v["diagnostics"][0]["line"], 13, "{v}");
    // With the policy broken too, in Cedar and in what only the issuer checks, one run
    // reports every problem: a CI fix loop needs no second round to learn of the fixture's.
    let no_principals = TARGETS.replacen(
        "[targets.web.roles.view]\nprincipals = [\"warden-it\"]",
        "[targets.web.roles.view]\nprincipals = []",
        1,
    );
    assert_ne!(no_principals, TARGETS);
    write_policy(
        dir.path(),
        &[
            ("targets.toml", &no_principals),
            ("more.cedar", "permit (principal, action,\n"),
        ],
    );
    let out = cli.run(
        &["--json", "policy", "test", dir.path().to_str().unwrap()],
        None,
    );
    assert_eq!(out.code, 1, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let files: Vec<&str> = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["file"].as_str().unwrap())
        .collect();
    for file in ["more.cedar", "targets.toml", "tests/cases.toml"] {
        assert!(files.contains(&file), "{file} not reported: {v}");
    }
    std::fs::remove_file(dir.path().join("more.cedar")).unwrap();
    write_policy(dir.path(), &[("targets.toml", TARGETS)]);

    // Nothing to test is a failure too: a CI job must not pass having checked nothing.
    std::fs::remove_file(dir.path().join("tests/cases.toml")).unwrap();
    let out = cli.run(&["policy", "test", dir.path().to_str().unwrap()], None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("no test cases"), "{out:?}");

    // The demo policy a fresh server writes passes its own fixtures.
    let env = Env::start_with(&[], &[]);
    let out = cli.run(
        &["policy", "test", env.policy_dir().to_str().unwrap()],
        None,
    );
    assert!(out.success(), "demo policy fixtures: {out:?}");
}

#[test]
fn explain_names_the_deciding_rules() {
    let env = Env::start();
    let alice = env.login("alice");
    let v = ok(
        &alice,
        &[
            "policy", "explain", "web", "--role", "deploy", "--ttl", "1h",
        ],
    );
    assert_eq!(v["decision"]["allowed"], true);
    assert_eq!(v["decision"]["rules"], serde_json::json!(["deploy-peer"]));
    assert_eq!(v["decision"]["tier"], "peer(sre)");
    assert_eq!(v["decision"]["pending_timeout"], "3s", "{v}");
    assert!(v["refusals"][0].as_str().unwrap().contains("CHG-[0-9]+"));
    // Nothing waits for an automatic grant.
    let auto = ok(&alice, &["policy", "explain", "web", "--role", "view"]);
    // The time a window would be judged against, as the rules read it (here in UTC).
    let seen = auto["rules_time"].as_str().unwrap_or_default();
    assert!(
        seen.contains("(context.now: hour ") && seen.ends_with("; UTC)"),
        "{auto}"
    );
    assert!(auto["decision"]["pending_timeout"].is_null(), "{auto}");
    // As a table: how long it may wait for approval too, and the ticket as it would be sent.
    let table = alice.run(
        &[
            "policy", "explain", "web", "--role", "deploy", "--ticket", " CHG-1 ",
        ],
        None,
    );
    assert!(table.success(), "{table:?}");
    assert!(
        table.stdout.contains("--ticket CHG-1\n"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("unless approved"), "{}", table.stdout);
    // Every reason is named, not only the first.
    let v = ok(
        &alice,
        &[
            "policy", "explain", "web", "--role", "deploy", "--ttl", "9h", "--ticket", "FOO-1",
        ],
    );
    let refusals = v["refusals"].as_array().unwrap();
    assert_eq!(refusals.len(), 2, "{v}");
    assert!(refusals[0].as_str().unwrap().contains("4h"), "{v}");
    assert!(refusals[1].as_str().unwrap().contains("FOO-1"), "{v}");
    // The table says at once that the request as asked would not pass, though the rules allow.
    let table = alice.run(
        &[
            "policy", "explain", "web", "--role", "deploy", "--ttl", "9h", "--ticket", "FOO-1",
        ],
        None,
    );
    assert!(
        table
            .stdout
            .contains("decision      allow for the role, but this request would be refused"),
        "{}",
        table.stdout
    );
    // MFA step-up is asked at the request; that alice has no second factor is said now.
    let admin_role = ["policy", "explain", "web", "--role", "admin", "--ttl", "1h"];
    let v = ok(&alice, &admin_role);
    assert_eq!(v["decision"]["mfa"], true, "{v}");
    assert!(
        v["refusals"][0]
            .as_str()
            .unwrap()
            .contains("has no second factor: enrol one first"),
        "{v}"
    );
    enroll_mfa(&alice);
    let v = ok(&alice, &admin_role);
    assert_eq!(v["refusals"], serde_json::json!([]), "{v}");
    let bob = env.login("bob");
    let v = ok(&bob, &["policy", "explain", "web", "--role", "deploy"]);
    assert_eq!(v["decision"]["allowed"], false);
    fails(
        &alice,
        &[
            "policy", "explain", "web", "--role", "view", "--user", "bob",
        ],
        3,
    );
    let admin = env.login("admin");
    let v = ok(
        &admin,
        &[
            "policy", "explain", "web", "--role", "view", "--user", "bob",
        ],
    );
    assert_eq!(v["user"], "bob");
    // A target or role the policy does not define is refused as a request for it would be,
    // and audited like every other refusal of an explanation.
    fails(
        &alice,
        &["policy", "explain", "nosuch", "--role", "view"],
        4,
    );
    fails(&alice, &["policy", "explain", "web", "--role", "nosuch"], 4);
    let refused: Vec<String> = audit_events(&admin, "request.action_refused")
        .into_iter()
        .filter(|e| e["details"]["action"] == "policy.explain")
        .map(|e| e["outcome"]["code"].to_string())
        .collect();
    assert!(
        refused.contains(&"\"unknown_target\"".to_owned())
            && refused.contains(&"\"unknown_role\"".to_owned()),
        "{refused:?}"
    );
}

/// A typo that would grant more than meant is told, and keeps nothing from loading: `check`
/// warns (exit 0) about a value no target has and a time out of range, each where it is
/// written; the server, which knows the directory, warns about a group no one is in, in its
/// log at start and in a reload's notice, which `policy reload` prints.
#[test]
fn doubtful_rules_are_warned_about() {
    let rules = format!(
        "{RULES}\n@id(\"no-contractors-in-prod\")\nforbid (principal in Group::\"contractor\", action, resource)\nwhen {{ resource.target.environment == \"prod\" || context.now.weekday == 7 }};\n"
    );
    let when = rules.lines().position(|l| l.starts_with("when {")).unwrap() + 1;
    let dir = tempfile::tempdir().unwrap();
    write_policy(
        dir.path(),
        &[("targets.toml", TARGETS), ("access.cedar", &rules)],
    );
    let cli = local_cli();
    let out = cli.run(&["policy", "check", dir.path().to_str().unwrap()], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.starts_with("OK: 5 rules, 1 target, 2 warnings"),
        "{out:?}"
    );
    let warned: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(warned.len(), 2, "{out:?}");
    assert!(
        warned[0].starts_with(&format!("access.cedar:{when}:39: warning: policy no-contractors-in-prod: no target in targets.toml has environment \"prod\" (environments: test)")),
        "{}",
        warned[0]
    );
    assert!(
        warned[1].starts_with(&format!("access.cedar:{when}:72: warning: policy no-contractors-in-prod: context.now.weekday runs from 0 to 6")),
        "{}",
        warned[1]
    );
    let json = cli.json(&["policy", "check", dir.path().to_str().unwrap()]);
    assert_eq!(json["valid"], true);
    let diagnostics = json["diagnostics"].as_array().unwrap();
    assert_eq!(diagnostics.len(), 2, "{json}");
    assert!(
        diagnostics
            .iter()
            .all(|d| d["severity"] == "warning" && d["line"] == when),
        "{json}"
    );
    // Beside an error, they are listed too, and the error alone fails the check.
    write_policy(
        dir.path(),
        &[("more.cedar", "permit (principal, action,\n")],
    );
    let out = cli.run(&["policy", "check", dir.path().to_str().unwrap()], None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains(": warning: policy no-contractors-in-prod")
            && out.stderr.contains("1 problem (and 2 warnings) in"),
        "{out:?}"
    );

    // The group no user of the directory is in: a forbid that refuses no one.
    let env = Env::start_with(&[("targets.toml", TARGETS), ("access.cedar", &rules)], &[]);
    let forbid_line = when - 1;
    let group = format!(
        "access.cedar:{forbid_line}:29: warning: forbid no-contractors-in-prod names Group::\"contractor\", but no user in the directory is in group `contractor` (its groups: admins, dev, managers, security, sre): this rule can never apply to anyone until such a group exists, so it refuses no one"
    );
    assert!(
        env.server.stderr().contains(&group),
        "{}",
        env.server.stderr()
    );
    let admin = env.login("admin");
    let out = admin.run(&["policy", "reload"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.starts_with("Note: ") && out.stderr.contains(&group),
        "{out:?}"
    );
    let reloaded = ok(&admin, &["policy", "reload"]);
    let notice = reloaded["notice"].as_str().unwrap();
    assert_eq!(notice.lines().count(), 3, "{notice}");
    assert!(notice.contains(&group), "{notice}");
    // Fixed, the notice is gone.
    write_policy(&env.policy_dir(), &[("access.cedar", RULES)]);
    assert!(ok(&admin, &["policy", "reload"]).get("notice").is_none());
}

#[test]
fn reload_keeps_the_old_policy_when_the_new_one_is_invalid() {
    let env = Env::start();
    // A rule as large as a check lets through is evaluated on the live server, not refused as
    // one that cannot be read.
    let long: Vec<String> = (0..127)
        .map(|i| format!("principal == User::\"gone{i}\""))
        .chain(["principal == User::\"alice\"".to_owned()])
        .collect();
    let forbid = format!(
        "{RULES}\n@id(\"leavers\")\nforbid (principal, action, resource) when {{ {} }};\n",
        long.join(" || ")
    );
    write_policy(&env.policy_dir(), &[("access.cedar", &forbid)]);
    let admin = env.login("admin");
    ok(&admin, &["policy", "reload"]);
    let bob = env.login("bob");
    let out = fails(
        &env.login("alice"),
        &[
            "request", "create", "web", "--role", "view", "--reason", "x", "--ttl", "1h",
        ],
        3,
    );
    assert!(
        out.stderr.contains("leavers") && !out.stderr.contains("could not be evaluated"),
        "{out:?}"
    );
    assert_eq!(create(&bob, "web", "view", &[])["state"], "active");
    write_policy(&env.policy_dir(), &[("access.cedar", RULES)]);
    // A policy others may write is no policy to serve: refused until it is the owner's alone.
    use std::os::unix::fs::PermissionsExt;
    let file = env.policy_dir().join("access.cedar");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let open = fails(&admin, &["policy", "reload"], 1);
    assert!(
        open.stderr.contains("writable by group or others"),
        "{open:?}"
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    ok(&admin, &["policy", "reload"]);
    // Nor one another user owns, who may make it say anything: a file of theirs is refused,
    // however private its mode.
    std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
    let owned = fails(&admin, &["policy", "reload"], 1);
    assert!(
        owned.stderr.contains("access.cedar") && owned.stderr.contains("owned by uid 65534"),
        "{owned:?}"
    );
    std::os::unix::fs::chown(&file, Some(0), None).unwrap();
    // Nor a link to a file in a directory others may write, who could replace it there.
    let shared = env.policy_dir().with_file_name("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(shared.join("more.cedar"), "").unwrap();
    std::os::unix::fs::symlink(
        shared.join("more.cedar"),
        env.policy_dir().join("more.cedar"),
    )
    .unwrap();
    let linked = fails(&admin, &["policy", "reload"], 1);
    assert!(
        linked.stderr.contains("more.cedar")
            && linked
                .stderr
                .contains("above it is writable by group or others"),
        "{linked:?}"
    );
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    ok(&admin, &["policy", "reload"]);
    std::fs::remove_file(env.policy_dir().join("more.cedar")).unwrap();
    // What the server does not read (a repository's notes, the fixtures) is no one's to judge.
    let notes = env.policy_dir().join("README.md");
    std::fs::write(&notes, "notes").unwrap();
    std::os::unix::fs::chown(&notes, Some(65534), None).unwrap();
    ok(&admin, &["policy", "reload"]);
    // A rule file whose name is not UTF-8 (a Latin-1 `deny-café.cedar`) is refused, naming it,
    // not passed over with its forbid never applying.
    let latin1 = env
        .policy_dir()
        .join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"deny-caf\xe9.cedar"));
    std::fs::write(
        &latin1,
        "@id(\"no-one\")\nforbid (principal, action, resource);\n",
    )
    .unwrap();
    let misnamed = fails(&admin, &["policy", "reload"], 1);
    assert!(
        misnamed.stderr.contains("deny-caf\u{fffd}.cedar")
            && misnamed.stderr.contains("not valid UTF-8")
            && misnamed.stderr.contains("rename it"),
        "{misnamed:?}"
    );
    std::fs::remove_file(&latin1).unwrap();
    let alice = env.login("alice");
    let admin = env.login("admin");
    fails(&alice, &["policy", "reload"], 3);

    // A valid change takes effect: view now needs a peer.
    let stricter = RULES.replace("@approval(\"auto\")\n@max_ttl(\"1h\")\npermit (principal, action == Action::\"request\", resource == Role::\"web/view\");", "@approval(\"peer(sre)\")\n@max_ttl(\"1h\")\npermit (principal, action == Action::\"request\", resource == Role::\"web/view\");");
    assert_ne!(stricter, RULES);
    write_policy(&env.policy_dir(), &[("access.cedar", &stricter)]);
    let before = ok(&admin, &["policy", "reload"]);
    assert_eq!(create(&alice, "web", "view", &[])["state"], "pending");

    // A pending request is then decided by the rules of the reload: it names them, and so does
    // its grant, with the recording they ask for.
    let root = id(&create(&alice, "web", "root", &[]));
    let renamed = stricter.replace(
        "@id(\"root-two-person\")\n@approval(\"two-person(security)\")",
        "@id(\"root-by-manager\")\n@approval(\"manager\")\n@recording(\"full\")",
    );
    assert_ne!(renamed, stricter);
    write_policy(&env.policy_dir(), &[("access.cedar", &renamed)]);
    ok(&admin, &["policy", "reload"]);
    let v = ok(&alice, &["request", "show", &root]);
    assert_eq!(v["rules"], serde_json::json!(["root-by-manager"]), "{v}");
    assert_eq!(
        (v["tier"].as_str(), v["recording"].as_str()),
        (Some("manager"), Some("full"))
    );
    let v = ok(&env.login("mallory"), &["request", "approve", &root]);
    assert_eq!(v["state"], "active", "{v}");
    assert_eq!(v["rules"], serde_json::json!(["root-by-manager"]), "{v}");
    let changed = audit_values(&admin, "request.requirement_changed", "/details/rules/0");
    assert!(
        changed.iter().any(|r| r == "root-by-manager"),
        "{changed:?}"
    );
    write_policy(&env.policy_dir(), &[("access.cedar", &stricter)]);
    ok(&admin, &["policy", "reload"]);

    // An invalid change is rejected with its problems, and the live policy stays.
    write_policy(
        &env.policy_dir(),
        &[("access.cedar", "permit (principal, action, resource")],
    );
    let out = fails(&admin, &["policy", "reload"], 1);
    assert!(out.stderr.contains("access.cedar"), "{out:?}");
    // Scripts get each problem apart, as `policy check --json` lists them.
    let out = fails(&admin, &["--json", "policy", "reload"], 1);
    let v: serde_json::Value = serde_json::from_str(out.stderr.trim()).unwrap();
    assert_eq!(v["error"]["code"], "invalid_policy", "{v}");
    let problems = v["error"]["diagnostics"].as_array().unwrap();
    assert!(!problems.is_empty(), "{v}");
    assert!(
        problems
            .iter()
            .all(|p| p["file"] == "access.cedar" && p["line"] == 1),
        "{v}"
    );
    assert_eq!(create(&alice, "web", "view", &[])["state"], "pending");

    // SIGHUP reloads too; an invalid file on SIGHUP also leaves the live policy.
    unsafe_kill(env.server.pid(), "HUP");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(create(&alice, "web", "view", &[])["state"], "pending");
    write_policy(&env.policy_dir(), &[("access.cedar", RULES)]);
    unsafe_kill(env.server.pid(), "HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if create(&alice, "web", "view", &[])["state"] == "active" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP reload never took effect"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let log = ok(
        &admin,
        &["audit", "search", "--code", "policy.reload_rejected"],
    );
    // Six by the CLI (three for a policy others could change, one for a file misnamed), one by
    // SIGHUP.
    assert_eq!(log["events"].as_array().unwrap().len(), 7, "{log}");
    assert!(before["digest"].as_str().unwrap().len() == 64);
    // A code that does not exist is told the codes of its family.
    let out = fails(&admin, &["audit", "search", "--code", "policy.reloaded"], 2);
    assert!(
        out.stderr.contains("policy.loaded") && out.stderr.contains("policy.reload_rejected"),
        "{out:?}"
    );
}

fn unsafe_kill(pid: u32, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn output_cut_short_by_its_reader_ends_quietly() {
    // `warden policy schema | head -0`: the reader is gone before anything is written.
    let mut child = std::process::Command::new(BIN)
        .args(["policy", "schema"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A SIGHUP that comes while the server starts (a `systemctl reload` at the wrong moment) does
/// not kill it: it reloads once the server is up.
#[test]
fn a_sighup_during_the_start_reloads_once_the_server_is_up() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--dev", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--ssh-listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    unsafe_kill(child.id(), "HUP");
    let mut log = String::new();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let _ = stderr.read_to_string(&mut log);
        log
    });
    let mut alive_for = std::time::Duration::ZERO;
    while alive_for < std::time::Duration::from_secs(3) {
        assert!(child.try_wait().unwrap().is_none(), "killed by the SIGHUP");
        std::thread::sleep(std::time::Duration::from_millis(100));
        alive_for += std::time::Duration::from_millis(100);
    }
    unsafe_kill(child.id(), "TERM");
    let stopped = (0..100).find_map(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        child.try_wait().unwrap()
    });
    assert!(stopped.is_some_and(|s| s.success()), "{stopped:?}");
    let log = reader.join().unwrap();
    assert!(log.contains("policy reloaded on SIGHUP"), "{log}");
}

/// What a server refuses to load a policy for whatever it says (a file others may write) is a
/// warning of `policy check`, in the server's words: a policy checked out in CI is often
/// writable by its group, and no server loads that copy.
#[test]
fn check_warns_of_what_a_server_would_refuse_to_load() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    write_policy(
        dir.path(),
        &[("targets.toml", TARGETS), ("access.cedar", RULES)],
    );
    let rules = dir.path().join("access.cedar");
    std::fs::set_permissions(&rules, std::fs::Permissions::from_mode(0o664)).unwrap();
    let refused = warden_server::state::load_served_policy(dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        refused.starts_with("access.cedar: it is writable by group or others (mode 664):")
            && refused.ends_with("run chmod go-w on it"),
        "{refused}"
    );
    let cli = local_cli();
    let out = cli.run(&["policy", "check", dir.path().to_str().unwrap()], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.starts_with("OK: 4 rules, 1 target, 1 warning"),
        "{out:?}"
    );
    let uid = rustix::process::geteuid().as_raw();
    assert_eq!(
        out.stderr.trim_end(),
        refused.replacen(
            "access.cedar: ",
            &format!("access.cedar: warning: a server running as uid {uid}, as this check does, would refuse to load this policy: "),
            1
        ),
        "{out:?}"
    );
    let json = cli.json(&["policy", "check", dir.path().to_str().unwrap()]);
    assert_eq!(json["valid"], true);
    assert_eq!(json["diagnostics"][0]["severity"], "warning", "{json}");
    assert_eq!(json["diagnostics"][0]["file"], "access.cedar", "{json}");
    // Beside an error, it is listed too, and the error alone fails the check.
    write_policy(
        dir.path(),
        &[("more.cedar", "permit (principal, action,\n")],
    );
    let out = cli.run(&["policy", "check", dir.path().to_str().unwrap()], None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("access.cedar: warning: a server running as uid")
            && out.stderr.contains("1 problem (and 1 warning) in"),
        "{out:?}"
    );
    // Put right, nothing is said.
    std::fs::remove_file(dir.path().join("more.cedar")).unwrap();
    std::fs::set_permissions(&rules, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = cli.run(&["policy", "check", dir.path().to_str().unwrap()], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
}

/// Durations are judged by value however they are written, and annotations may hold nothing
/// Unicode says to draw as nothing.
#[test]
fn check_judges_durations_by_value_and_refuses_blank_fillers() {
    let dir = tempfile::tempdir().unwrap();
    let padded = format!("{}1h", "0".repeat(63));
    let rules = |max_ttl: &str| {
        format!(
            "@id(\"a\")\n@approval(\"auto\")\n@max_ttl(\"{max_ttl}\")\npermit (principal, action == Action::\"request\", resource == Role::\"web/view\");\n"
        )
    };
    write_policy(
        dir.path(),
        &[("targets.toml", TARGETS), ("access.cedar", &rules(&padded))],
    );
    let cli = local_cli();
    let out = cli.run(&["policy", "check", dir.path().to_str().unwrap()], None);
    assert_eq!(out.code, 0, "{out:?}");
    // Malformed however long: not a duration, not one above the ceiling.
    write_policy(dir.path(), &[("access.cedar", &rules(&"1h".repeat(33)))]);
    let out = cli.run(&["policy", "check", dir.path().to_str().unwrap()], None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "\"{}\"… (the first 40 of its 66 characters) is not a duration",
            "1h".repeat(20)
        )) && !out.stderr.contains("ceiling"),
        "{out:?}"
    );
    // A Hangul filler in a forbid's reason reads as nothing.
    write_policy(
        dir.path(),
        &[(
            "access.cedar",
            &format!(
                "{}\n@id(\"f\")\n@reason(\"x\u{3164}y\")\nforbid (principal, action, resource);\n",
                rules("1h")
            ),
        )],
    );
    let out = cli.run(&["policy", "check", dir.path().to_str().unwrap()], None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("(U+3164)"), "{out:?}");
}

/// Links to folders in a policy directory (to `/`, or `..` making loops) are named once each
/// and not followed: a check ends at once, and so does a reload, whose refusal the server's
/// log records, as it does a reload that goes live. A reload refused for many problems lists
/// the first hundred, in its answer, its audit event and the log, and counts the rest.
#[test]
fn links_to_folders_are_named_once_and_a_refused_reload_is_logged_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(
        dir.path(),
        &[("targets.toml", TARGETS), ("access.cedar", RULES)],
    );
    let add_links = |dir: &Path| {
        std::fs::create_dir_all(dir.join("docs")).unwrap();
        std::os::unix::fs::symlink("/", dir.join("docs/rootfs")).unwrap();
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for n in 1..=6 {
            std::os::unix::fs::symlink("..", dir.join(format!("sub/l{n}"))).unwrap();
        }
    };
    add_links(dir.path());
    let started = std::time::Instant::now();
    let out = local_cli().run(&["policy", "check", dir.path().to_str().unwrap()], None);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.code, 1, "{out:?}");
    let named: Vec<&str> = out
        .stderr
        .lines()
        .filter_map(|l| l.split_once(": this is a link to a folder, which is not followed"))
        .map(|(file, _)| file)
        .collect();
    assert_eq!(
        named,
        [
            "docs/rootfs",
            "sub/l1",
            "sub/l2",
            "sub/l3",
            "sub/l4",
            "sub/l5",
            "sub/l6"
        ],
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 8, "{}", out.stderr);

    let env = Env::start();
    let admin = env.login("admin");
    add_links(&env.policy_dir());
    let out = fails(&admin, &["policy", "reload"], 1);
    assert!(
        out.stderr
            .contains("docs/rootfs: this is a link to a folder")
            && !out.stderr.contains("rootfs/"),
        "{out:?}"
    );
    // The problems follow the line that says so, one a line, as a SIGHUP's do.
    let log = env.server.stderr();
    let refused = log
        .rfind("policy reload over the API refused; the previous policy stays live")
        .map(|at| &log[at..])
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        refused.contains("sub/l6: this is a link to a folder") && refused.contains("by=admin"),
        "{refused}"
    );
    std::fs::remove_dir_all(env.policy_dir().join("docs")).unwrap();
    std::fs::remove_dir_all(env.policy_dir().join("sub")).unwrap();

    // 150 rule files out of place: the first hundred are listed, and the rest counted.
    let old = env.policy_dir().join("old");
    std::fs::create_dir(&old).unwrap();
    for n in 0..150 {
        std::fs::write(old.join(format!("r{n:03}.cedar")), "").unwrap();
    }
    let out = fails(&admin, &["--json", "policy", "reload"], 1);
    let v: serde_json::Value = serde_json::from_str(out.stderr.trim()).unwrap();
    let problems = v["error"]["diagnostics"].as_array().unwrap();
    assert_eq!(problems.len(), 101, "{v}");
    assert_eq!(problems[99]["file"], "old/r099.cedar", "{v}");
    let more = format!(
        "and 50 more problem(s), not listed here: `warden policy check {}` lists them all",
        env.policy_dir().display()
    );
    assert_eq!(problems[100]["message"], more.as_str(), "{v}");
    let audited = audit_events(&admin, "policy.reload_rejected");
    let last = audited.last().unwrap();
    let listed = last["details"]["problems"].as_array().unwrap();
    assert_eq!(listed.len(), 101, "{last}");
    assert!(
        listed[100].as_str().unwrap().ends_with(&more)
            && last.to_string().contains("150 problem(s)"),
        "{last}"
    );
    let log = env.server.stderr();
    let refused = log
        .rfind("policy reload over the API refused; the previous policy stays live")
        .map(|at| &log[at..])
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        refused.contains("old/r099.cedar")
            && !refused.contains("old/r100.cedar")
            && refused.contains("and 50 more problem(s)"),
        "{refused}"
    );

    // A reload that goes live is logged too.
    std::fs::remove_dir_all(&old).unwrap();
    let reloaded = ok(&admin, &["policy", "reload"]);
    let digest = reloaded["digest"].as_str().unwrap();
    let log = env.server.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("policy reloaded over the API") && l.contains(digest)),
        "{log}"
    );
}
