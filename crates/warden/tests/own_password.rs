//! A user's change of their own password through the real binary: it takes the current
//! password (and a fresh code once the user has a second factor), ends the user's sessions,
//! counts wrong current passwords towards the lockout as wrong step-up codes, and clears the
//! record of the administrator who set the password before, lifting the separation of duties
//! tied to it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value, json};
use warden_testkit::Cli;

/// `warden user set-password` with no name (one's own), the current and the new password
/// on stdin, and `extra` arguments.
fn change_own(cli: &Cli, current: &str, new: &str, extra: &[&str]) -> warden_testkit::CliOutput {
    let mut args = vec!["user", "set-password", "--password-stdin"];
    args.extend_from_slice(extra);
    cli.run(&args, Some(&format!("{current}\n{new}\n")))
}

/// The `request.action_refused` events of `user.set_password`, as (actor, code).
fn set_password_refusals(admin: &Cli) -> Vec<(String, String)> {
    audit_events(admin, "request.action_refused")
        .into_iter()
        .filter(|e| e["details"]["action"] == "user.set_password")
        .map(|e| {
            (
                e["actor"]["user"].as_str().unwrap_or_default().to_owned(),
                e["outcome"]["code"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// A user with no administrator's rights changes their own password with the current one:
/// every session of theirs ends (the client says so and forgets its login), the new password
/// signs in and the old one no longer does. The change is on the record, with no password in
/// it. Another user's password stays out of their reach.
#[test]
fn a_user_changes_their_own_password_with_the_current_one() {
    let env = Env::start();
    let alice = env.login("alice");
    let other_session = env.login("alice");
    let old = token(&alice);
    let new = "alice's very own password 1";

    let refused = alice.run(
        &["user", "set-password", "bob", "--password-stdin"],
        Some("bob's password by alice"),
    );
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("only administrators can set another user's password"),
        "{refused:?}"
    );

    let out = change_own(&alice, PASSWORD, new, &[]);
    assert!(out.success(), "{out:?}");
    assert!(
        out.stdout.contains("Password set for alice") && out.stdout.contains("sign in again"),
        "{out:?}"
    );
    assert!(!alice.home().join("credentials.json").exists());
    let port = env.server.port();
    for token in [old, token(&other_session)] {
        let (status, body) = call(port, "GET", "/v1/auth/whoami", Some(&token), "");
        assert_eq!(status, 401, "a token of before the change works: {body}");
    }
    assert_eq!(sign_in(&env.server.cli(), "alice", PASSWORD, None).code, 5);
    let back = sign_in(&alice, "alice", new, None);
    assert!(back.success(), "{back:?}");
    assert_eq!(ok(&alice, &["whoami"])["user"], "alice");

    let admin = env.login("admin");
    let by_alice = |code: &str| -> Vec<Value> {
        audit_events(&admin, code)
            .into_iter()
            .filter(|e| e["actor"]["user"] == "alice")
            .collect()
    };
    let set = by_alice("auth.password_set");
    assert_eq!(set.len(), 1, "{set:?}");
    assert_eq!(set[0]["details"], json!({ "user": "alice" }));
    let revoked = by_alice("auth.tokens_revoked");
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0]["details"]["user"], "alice");
    let everything = ok(&admin, &["audit", "search", "--limit", "1000"]).to_string();
    assert!(!everything.contains("very own password"), "{everything}");
    assert!(!everything.contains("bob's password"), "{everything}");
}

/// A wrong current password is refused, on the record, and counted as a wrong step-up code
/// is: five in a row lock the user's step-ups and sign-ins, and the right password is then
/// refused as locked. Standard input that does not hold both passwords is a usage error.
#[test]
fn a_wrong_current_password_is_refused_and_counts_towards_the_lockout() {
    let env = Env::start();
    let alice = env.login("alice");
    let new = "alice's very own password 1";

    let one_line = alice.run(
        &["user", "set-password", "--password-stdin"],
        Some("only the new password"),
    );
    assert_eq!(one_line.code, 2, "{one_line:?}");
    assert!(one_line.stderr.contains("two lines"), "{one_line:?}");

    for _ in 0..warden_domain::lockout::MAX_FAILURES {
        let out = change_own(&alice, "not alice's password", new, &[]);
        assert_eq!(out.code, 3, "{out:?}");
        assert!(
            out.stderr.contains("your current password is wrong"),
            "{out:?}"
        );
    }
    let locked = change_own(&alice, PASSWORD, new, &["--json"]);
    assert_eq!(locked.code, 3, "{locked:?}");
    let error: Value = serde_json::from_str(locked.stderr.trim()).unwrap();
    assert_eq!(error["error"]["code"], "locked", "{locked:?}");
    assert!(
        locked
            .stderr
            .contains("step-ups and sign-ins are refused until"),
        "{locked:?}"
    );
    // Nothing was changed, and the lock refuses sign-ins too.
    assert_eq!(sign_in(&env.server.cli(), "alice", PASSWORD, None).code, 5);
    assert_eq!(sign_in(&env.server.cli(), "alice", new, None).code, 5);

    let admin = env.login("admin");
    let codes = set_password_refusals(&admin);
    let alices: Vec<&str> = codes
        .iter()
        .filter(|(who, _)| who == "alice")
        .map(|(_, code)| code.as_str())
        .collect();
    assert_eq!(
        alices,
        [
            "current_password_wrong",
            "current_password_wrong",
            "current_password_wrong",
            "current_password_wrong",
            "current_password_wrong",
            "locked"
        ]
    );
    let locks = audit_events(&admin, "auth.user_locked");
    assert_eq!(locks.len(), 1, "{locks:?}");
    assert_eq!(locks[0]["details"]["user"], "alice");
    assert_eq!(locks[0]["details"]["kind"], "step_up");
    let listed = ok(&admin, &["user", "locked"]);
    assert_eq!(listed["locked"][0]["user"], "alice", "{listed}");
    assert_eq!(listed["locked"][0]["kind"], "step_up", "{listed}");
}

/// Once a user has a second factor, changing their own password takes a fresh code of it
/// too: without one it is asked for, a wrong one is refused, and with it the change is made.
#[test]
fn with_a_second_factor_ones_own_change_takes_a_fresh_code() {
    let env = Env::start();
    let bob = env.login("bob");
    let uri = enroll_mfa(&bob);
    let new = "bob's very own password 1";

    let missing = change_own(&bob, PASSWORD, new, &["--json"]);
    assert_eq!(missing.code, 3, "{missing:?}");
    let error: Value = serde_json::from_str(missing.stderr.trim()).unwrap();
    assert_eq!(error["error"]["code"], "mfa_required", "{missing:?}");
    assert!(missing.stderr.contains("--totp CODE"), "{missing:?}");
    let valid = [totp(&uri, 0), totp(&uri, 1)];
    let wrong = ["000000", "000001"]
        .into_iter()
        .find(|c| !valid.iter().any(|v| v == c))
        .unwrap();
    let refused = change_own(&bob, PASSWORD, new, &["--totp", wrong]);
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(refused.stderr.contains("TOTP code is wrong"), "{refused:?}");
    // A wrong current password is refused before the code is looked at.
    let wrong_password = change_own(&bob, "not bob's password", new, &["--totp", &valid[1]]);
    assert_eq!(wrong_password.code, 3, "{wrong_password:?}");
    assert!(
        wrong_password
            .stderr
            .contains("your current password is wrong"),
        "{wrong_password:?}"
    );
    let done = change_own(&bob, PASSWORD, new, &["--totp", &valid[1]]);
    assert!(done.success(), "{done:?}");
    // The old password no longer signs in; the new one does, once the code is given: the
    // factor stays.
    let cli = env.server.cli();
    let old = sign_in(&cli, "bob", PASSWORD, None);
    assert_eq!(old.code, 5, "{old:?}");
    assert!(!old.stderr.contains("the password is right"), "{old:?}");
    let fresh = sign_in(&cli, "bob", new, None);
    assert_eq!(fresh.code, 5, "{fresh:?}");
    assert!(fresh.stderr.contains("the password is right"), "{fresh:?}");
}

/// An administrator's own new password takes their current one too: a stolen administrator's
/// token alone cannot take the account over by setting one. Setting another user's password
/// takes no password of theirs.
#[test]
fn an_administrators_own_change_takes_the_current_password() {
    let env = Env::start();
    let admin = env.login("admin");
    let port = env.server.port();
    let new = "admin's very own password 1";
    let (status, body) = call(
        port,
        "PUT",
        "/v1/users/admin/password",
        Some(&token(&admin)),
        &json!({ "password": new }).to_string(),
    );
    assert_eq!(
        (status, error_code(&body).as_str()),
        (403, "current_password_required"),
        "{body}"
    );
    let named = admin.run(
        &["user", "set-password", "admin", "--password-stdin"],
        Some(new),
    );
    assert_eq!(named.code, 2, "{named:?}");
    let wrong = change_own(&admin, "not admin's password", new, &[]);
    assert_eq!(wrong.code, 3, "{wrong:?}");
    assert_eq!(
        set_password_refusals(&admin),
        [
            ("admin".to_owned(), "current_password_required".to_owned()),
            ("admin".to_owned(), "current_password_wrong".to_owned())
        ]
    );
    let other = admin.run(
        &["user", "set-password", "bob", "--password-stdin"],
        Some("bob's password, by admin"),
    );
    assert!(other.success(), "{other:?}");
    let mut args = vec!["user", "set-password", "admin", "--password-stdin"];
    args.push("--json");
    let own = admin.run(&args, Some(&format!("{PASSWORD}\n{new}")));
    assert!(own.success(), "{own:?}");
    let v: Value = serde_json::from_str(&own.stdout).unwrap();
    assert_eq!(v["signed_out"], true, "{v}");
    assert!(!admin.home().join("credentials.json").exists());
    assert_eq!(sign_in(&admin, "admin", PASSWORD, None).code, 5);
    assert!(sign_in(&admin, "admin", new, None).success());
}

/// The policy: administrators' and developers' requests for web/root take two of security.
const TWO_PERSON: &str = r#"
@id("root-two-person")
@approval("two-person(security)")
@max_ttl("1h")
@pending_timeout("1h")
permit (principal in Group::"dev", action == Action::"request", resource == Role::"web/root");

@id("root-two-person-admins")
@approval("two-person(security)")
@max_ttl("1h")
@pending_timeout("1h")
permit (principal in Group::"admins", action == Action::"request", resource == Role::"web/root");
"#;

/// A password an administrator set is known to them, so its user's approval of their request
/// is refused; a change "of one's own" does not lift that, since the administrator, who knew
/// the old password, could make it signed in as the user. One's own new password withdraws
/// none of one's approvals.
#[test]
fn ones_own_new_password_keeps_the_refusals_tied_to_an_administrator_setting_it() {
    let env = Env::start_with(
        &[("targets.toml", TARGETS), ("access.cedar", TWO_PERSON)],
        &[],
    );
    let (admin, alice) = (env.login("admin"), env.login("alice"));
    let set_by_admin = "sam's password, by admin";
    let set = admin.run(
        &["user", "set-password", "sam", "--password-stdin"],
        Some(set_by_admin),
    );
    assert!(set.success(), "{set:?}");
    let sam = env.server.cli();
    assert!(sign_in(&sam, "sam", set_by_admin, None).success());
    let admins = id(&create(&admin, "web", "root", &[]));
    let alices = id(&create(&alice, "web", "root", &[]));
    assert_eq!(
        ok(&sam, &["request", "approve", &alices])["state"],
        "pending"
    );
    let refused = fails(&sam, &["request", "approve", &admins], 3);
    assert!(
        refused
            .stderr
            .contains("your password was last set by admin"),
        "{refused:?}"
    );

    let own = "sam's very own password 1";
    let out = change_own(&sam, set_by_admin, own, &[]);
    assert!(out.success(), "{out:?}");
    assert!(sign_in(&sam, "sam", own, None).success());
    let refused = fails(&sam, &["request", "approve", &admins], 3);
    assert!(
        refused
            .stderr
            .contains("your password was last set by admin"),
        "{refused:?}"
    );
    let shown = ok(&admin, &["request", "show", &admins]);
    assert!(shown["reviews"].as_array().unwrap().is_empty(), "{shown}");
    // sam's approval of alice's request, given before, stands.
    let shown = ok(&admin, &["request", "show", &alices]);
    assert_eq!(shown["reviews"][0]["reviewer"], "sam", "{shown}");
    assert_ne!(shown["reviews"][0]["void"], true, "{shown}");
    assert!(audit_events(&admin, "request.approvals_voided").is_empty());
}
