//! What a request's record keeps of its reviews through the real binary: approvals withdrawn
//! (an offboarding, a new password) stay on it marked void, and their giver, let back in,
//! approves afresh; the decision events name their rules as data, those it was asked under
//! included; and what an API call starts in the background logs under its correlation id.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Env, RULES, TARGETS, audit_events, create, fails, id, ok, state, wait_until};
use serde_json::{Value, json};
use warden_testkit::http_post_with;

/// The reviews of request `rid` as `request show` gives them: (reviewer, verdict, void).
fn reviews(cli: &warden_testkit::Cli, rid: &str) -> Vec<(String, String, bool)> {
    ok(cli, &["request", "show", rid])["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["reviewer"].as_str().unwrap().to_owned(),
                r["verdict"].as_str().unwrap().to_owned(),
                r["void"] == true,
            )
        })
        .collect()
}

/// Why each review of request `rid` was withdrawn, as `request show` gives it.
fn withdrawn(cli: &warden_testkit::Cli, rid: &str) -> Vec<Option<String>> {
    ok(cli, &["request", "show", rid])["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["withdrawn"].as_str().map(str::to_owned))
        .collect()
}

/// `user` signs in with `password`.
fn signed_in(env: &Env, user: &str, password: &str) -> warden_testkit::Cli {
    let cli = env.server.cli();
    let out = cli.run(
        &["login", "--user", user, "--password-stdin"],
        Some(password),
    );
    assert!(out.success(), "login {user}: {out:?}");
    cli
}

/// The events with `code` of request `rid`.
fn events_of(admin: &warden_testkit::Cli, code: &str, rid: &str) -> Vec<Value> {
    audit_events(admin, code)
        .into_iter()
        .filter(|e| e["request_id"] == rid)
        .collect()
}

/// An approval withdrawn by a password reset stays on the request marked void, and its giver's
/// fresh approval takes its place and counts, once; one withdrawn by an offboarding stays on
/// it marked void too, and the table says it no longer counts. Each says why it was withdrawn.
#[test]
fn withdrawn_approvals_stay_on_record_void_and_their_giver_approves_afresh() {
    let env = Env::start();
    let (alice, bob, sam, admin) = (
        env.login("alice"),
        env.login("bob"),
        env.login("sam"),
        env.login("admin"),
    );
    let reset = id(&create(&alice, "web", "root", &[]));
    let left = id(&create(&alice, "web", "root", &[]));
    ok(&bob, &["request", "approve", &reset]);
    ok(&bob, &["request", "approve", &left]);

    // A new password from an administrator: bob's approval stays, void.
    let out = admin.run(
        &["user", "set-password", "bob", "--password-stdin"],
        Some("bob's new password 12"),
    );
    assert!(out.success(), "{out:?}");
    let voided = events_of(&admin, "request.approvals_voided", &reset);
    assert_eq!(voided.len(), 1, "{voided:?}");
    assert_eq!(
        reviews(&admin, &reset),
        [("bob".into(), "approve".into(), true)]
    );
    assert_eq!(
        withdrawn(&admin, &reset),
        [Some("their password was reset".into())]
    );
    let table = admin.run(&["request", "show", &reset], None);
    assert!(
        table
            .stdout
            .contains("bob approve (withdrawn: their password was reset; no longer counts)"),
        "{table:?}"
    );
    let shown = ok(&admin, &["request", "show", &reset]);
    assert_eq!(
        shown["still_needed"].as_array().unwrap().len(),
        2,
        "{shown}"
    );
    // He approves afresh: the new approval takes the old one's place and counts.
    let bob = signed_in(&env, "bob", "bob's new password 12");
    let again = ok(&bob, &["request", "approve", &reset]);
    assert_eq!(again["state"], "pending", "{again}");
    assert_eq!(
        again["still_needed"].as_array().unwrap().len(),
        1,
        "{again}"
    );
    assert_eq!(
        reviews(&admin, &reset),
        [("bob".into(), "approve".into(), false)]
    );
    assert_eq!(withdrawn(&admin, &reset), [None]);
    let twice = fails(&bob, &["request", "approve", &reset], 6);
    assert!(twice.stderr.contains("already reviewed"), "{twice:?}");
    assert_eq!(ok(&sam, &["request", "approve", &reset])["state"], "active");
    let approved = events_of(&admin, "request.approved", &reset);
    assert_eq!(
        approved[0]["details"]["approvers"],
        json!(["bob", "sam"]),
        "{approved:?}"
    );

    // The other's was withdrawn too; he approves it afresh, and is then offboarded: his
    // approval stays on it, void, as the table says.
    assert_eq!(
        reviews(&admin, &left),
        [("bob".into(), "approve".into(), true)]
    );
    assert_eq!(ok(&bob, &["request", "approve", &left])["state"], "pending");
    assert_eq!(
        reviews(&admin, &left),
        [("bob".into(), "approve".into(), false)]
    );
    ok(&admin, &["revoke", "--user", "bob", "--all"]);
    let voided = events_of(&admin, "request.approvals_voided", &left);
    assert_eq!(voided.len(), 2, "{voided:?}");
    assert_eq!(voided[1]["details"]["why"], "offboarded", "{voided:?}");
    assert_eq!(
        reviews(&admin, &left),
        [("bob".into(), "approve".into(), true)]
    );
    assert_eq!(withdrawn(&admin, &left), [Some("offboarded".into())]);
    let table = admin.run(&["request", "show", &left], None);
    assert!(table.success(), "{table:?}");
    assert!(
        table
            .stdout
            .contains("bob approve (withdrawn: offboarded; no longer counts)"),
        "{table:?}"
    );
    // The API's view says it as the CLI's JSON does.
    let bearer = format!("Bearer {}", common::token(&admin));
    let answer = warden_testkit::http_get_with(
        env.server.port(),
        &format!("/v1/requests/{left}"),
        &[("Authorization", bearer.as_str())],
    )
    .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    let view: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(
        view["reviews"][0],
        json!({"reviewer": "bob", "verdict": "approve", "comment": "", "at": view["reviews"][0]["at"],
               "void": true, "withdrawn": "offboarded"}),
        "{view}"
    );
    // sam's approval alone does not grant it: bob's counts for nothing.
    assert_eq!(ok(&sam, &["request", "approve", &left])["state"], "pending");
    assert_eq!(state(&admin, &left), "pending");
}

/// An approval refused by a forbid names the forbid's id as data, as a refused request does;
/// and a person's approval names the rules the request was asked under when a reload renamed
/// them, as Warden's own grant does. The grant a reload's background pass makes logs under the
/// reload call's correlation id.
#[test]
fn decision_records_name_their_rules_and_background_work_its_call() {
    let rules = RULES.replace("@pending_timeout(\"3s\")", "@pending_timeout(\"1h\")");
    let env = Env::start_with(&[("targets.toml", TARGETS), ("access.cedar", &rules)], &[]);
    let (alice, bob, sam, admin) = (
        env.login("alice"),
        env.login("bob"),
        env.login("sam"),
        env.login("admin"),
    );
    let met = id(&create(&alice, "web", "root", &[]));
    assert_eq!(ok(&sam, &["request", "approve", &met])["state"], "pending");
    let deploy = id(&create(&alice, "web", "deploy", &["--ticket", "CHG-1"]));
    let frozen = id(&create(&alice, "web", "deploy", &["--ticket", "CHG-2"]));

    // Renamed rules, root relaxed to what sam's approval meets, and a freeze on one ticket.
    let renamed = rules
        .replace("@id(\"deploy-peer\")", "@id(\"deploy-peer-v2\")")
        .replace("@id(\"root-two-person\")", "@id(\"root-peer-v2\")")
        .replace("two-person(security)", "peer(security)")
        + "\n@id(\"freeze-chg-2\")\nforbid (principal, action, resource == Role::\"web/deploy\") when { context.now.hour >= 0 && context.ticket == \"CHG-2\" };\n";
    common::write_policy(&env.policy_dir(), &[("access.cedar", &renamed)]);
    let auth = format!("Bearer {}", common::token(&admin));
    let reload = http_post_with(
        env.server.port(),
        "/v1/policy/reload",
        &[
            ("Authorization", auth.as_str()),
            ("X-Request-Id", "reload-cid-1"),
        ],
        "{}",
    )
    .unwrap();
    assert_eq!(reload.status, 200, "{}", reload.body);

    // Warden grants the one met in the background, logging under the reload's id.
    wait_until("the met request's grant", Duration::from_secs(10), || {
        state(&admin, &met) == "active"
    });
    wait_until(
        "the background pass's log line",
        Duration::from_secs(10),
        || {
            env.server
                .stderr()
                .contains("pending requests whose approvals now suffice were granted")
        },
    );
    let logs = env.server.stderr();
    let line = logs
        .lines()
        .find(|l| l.contains("pending requests whose approvals now suffice were granted"))
        .unwrap();
    assert!(line.contains("request_id=reload-cid-1"), "{line}");
    let by_warden = &events_of(&admin, "request.approved", &met)[0]["details"];
    assert_eq!(by_warden["rules"], json!(["root-peer-v2"]), "{by_warden}");
    assert_eq!(
        by_warden["rules_before"],
        json!(["root-two-person"]),
        "{by_warden}"
    );

    // A person's approval names the rules it was asked under too, however the reload's
    // pass stored the renamed ones before it.
    assert_eq!(
        ok(&bob, &["request", "approve", &deploy])["state"],
        "active"
    );
    let by_bob = &events_of(&admin, "request.approved", &deploy)[0];
    assert_eq!(by_bob["actor"]["user"], "bob", "{by_bob}");
    let details = &by_bob["details"];
    assert_eq!(details["rules"], json!(["deploy-peer-v2"]), "{by_bob}");
    assert_eq!(details["rules_before"], json!(["deploy-peer"]), "{by_bob}");

    // The forbid refuses bob's approval, and its id is in the record as data.
    let out = fails(&bob, &["request", "approve", &frozen], 3);
    assert!(out.stderr.contains("freeze-chg-2"), "{out:?}");
    let refused = events_of(&admin, "request.review_refused", &frozen);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(
        refused[0]["details"],
        json!({"verdict": "approve", "rules": ["freeze-chg-2"]}),
        "{refused:?}"
    );
}
