//! Separation of duties through the real binary: an administrator cannot approve their own
//! request, nor close their own break-glass postmortem, through users whose passwords they set;
//! a new password or second factor set by an administrator withdraws what the old ones
//! approved; and the manager's place is filled only by one who was the requester's manager
//! when they approved.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{BIN, TARGETS, audit_events, create, enroll_mfa, fails, id, login, ok, state, totp};
use serde_json::Value;
use warden_testkit::{Cli, Server};

const RULES: &str = r#"
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

@id("admin-peer-manager")
@approval("peer(sre) & manager")
@max_ttl("1h")
@pending_timeout("1h")
permit (principal in Group::"dev", action == Action::"request", resource == Role::"web/admin");

@id("bg-root")
@max_ttl("30m")
permit (principal in Group::"admins", action == Action::"breakglass", resource == Role::"web/root");
"#;

/// Beside the demo users (alice in dev, managed by mallory; bob in sre; sam in security; admin):
/// a second administrator, someone in no group, and rita, in dev, whose manager is `manager`,
/// with the SREs otto and dave.
fn config(manager: &str) -> String {
    format!(
        "[users.ada]\ngroups = [\"admins\"]\n\n[users.oscar]\ngroups = []\n\n\
         [users.rita]\ngroups = [\"dev\"]\nmanager = \"{manager}\"\n\n\
         [users.mona]\ngroups = [\"managers\"]\n\n[users.otto]\ngroups = [\"sre\"]\n\n\
         [users.dave]\ngroups = [\"sre\"]\n"
    )
}

/// `warden serve --dev --config` with the rules above, and the config file's path.
fn start(dir: &Path, manager: &str) -> (Server, PathBuf) {
    let data = dir.join("data");
    common::write_policy(
        &data.join("policy"),
        &[("targets.toml", TARGETS), ("access.cedar", RULES)],
    );
    let path = dir.join("warden.toml");
    std::fs::write(&path, config(manager)).unwrap();
    let server = Server::start_in(
        Path::new(BIN),
        &data,
        &["serve", "--dev", "--config", path.to_str().unwrap()],
        &[],
    );
    (server, path)
}

/// `admin` sets `user`'s password to `password`.
fn set_password(admin: &Cli, user: &str, password: &str) {
    let out = admin.run(
        &["user", "set-password", user, "--password-stdin"],
        Some(password),
    );
    assert!(out.success(), "{out:?}");
}

/// A client of `server` signed in as `user` with `password`.
fn signed_in(server: &Server, user: &str, password: &str) -> Cli {
    let cli = server.cli();
    let out = cli.run(
        &["login", "--user", user, "--password-stdin"],
        Some(password),
    );
    assert!(out.success(), "login {user}: {out:?}");
    cli
}

/// The refusal an approval gets from one whose password `admin`, who made the request, set.
fn set_by_requester(admin: &str) -> String {
    format!(
        "your password was last set by {admin}, who made this request, so your approval cannot count on it: another administrator can set you a new password"
    )
}

/// The reviewers on record of request `rid`.
fn reviewers(cli: &Cli, rid: &str) -> Vec<String> {
    ok(cli, &["request", "show", rid])["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reviewer"].as_str().unwrap().to_owned())
        .collect()
}

/// The reviewers on record of request `rid` whose approvals are void.
fn void_reviewers(cli: &Cli, rid: &str) -> Vec<String> {
    ok(cli, &["request", "show", rid])["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["void"] == true)
        .map(|r| r["reviewer"].as_str().unwrap().to_owned())
        .collect()
}

/// The `request.approvals_voided` events of request `rid`.
fn voided(admin: &Cli, rid: &str) -> Vec<Value> {
    audit_events(admin, "request.approvals_voided")
        .into_iter()
        .filter(|e| e["request_id"] == rid)
        .collect()
}

/// An administrator who sets two users' passwords cannot approve their own two-person request
/// through them: each approval is refused, saying why and what to do, and on the record. Once
/// another administrator gives them new passwords, they approve it. A deny is no such danger.
#[test]
fn an_administrator_cannot_approve_their_own_request_through_passwords_they_set() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = start(dir.path(), "mona");
    let (admin, ada) = (login(&server, "admin"), login(&server, "ada"));
    let rid = id(&create(&admin, "web", "root", &[]));
    assert_eq!(state(&admin, &rid), "pending");
    set_password(&admin, "sam", "sam's password, by admin");
    set_password(&admin, "oscar", "oscar's password, by admin");
    let sam = signed_in(&server, "sam", "sam's password, by admin");
    let oscar = signed_in(&server, "oscar", "oscar's password, by admin");
    for who in [&sam, &oscar] {
        let out = fails(who, &["request", "approve", &rid], 3);
        assert!(out.stderr.contains(&set_by_requester("admin")), "{out:?}");
    }
    assert_eq!(state(&admin, &rid), "pending");
    assert!(reviewers(&admin, &rid).is_empty());
    let refused: Vec<Value> = audit_events(&admin, "request.review_refused")
        .into_iter()
        .filter(|e| e["request_id"] == rid.as_str())
        .collect();
    let by: Vec<&str> = refused
        .iter()
        .map(|e| e["actor"]["user"].as_str().unwrap())
        .collect();
    assert_eq!(by, ["sam", "oscar"], "{refused:?}");
    assert!(
        refused.iter().all(|e| e["outcome"]["result"] == "denied"
            && e["outcome"]["code"] == "not_permitted"
            && e["outcome"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("who made this request"))),
        "{refused:?}"
    );

    // Passwords set by another administrator are no longer admin's to know.
    set_password(&ada, "sam", "sam's password, by ada");
    let sam = signed_in(&server, "sam", "sam's password, by ada");
    assert_eq!(ok(&sam, &["request", "approve", &rid])["state"], "pending");
    let out = fails(&oscar, &["request", "approve", &rid], 3);
    assert!(out.stderr.contains(&set_by_requester("admin")), "{out:?}");
    set_password(&ada, "oscar", "oscar's password, by ada");
    let oscar = signed_in(&server, "oscar", "oscar's password, by ada");
    assert_eq!(ok(&oscar, &["request", "approve", &rid])["state"], "active");
    let approved = audit_events(&admin, "request.approved");
    assert_eq!(
        approved[0]["details"]["approvers"],
        serde_json::json!(["sam", "oscar"]),
        "{approved:?}"
    );

    // A deny does admin no good: one whose password admin set may deny admin's request.
    let other = id(&create(&admin, "web", "root", &[]));
    set_password(&admin, "sam", "sam's password, by admin again");
    let sam = signed_in(&server, "sam", "sam's password, by admin again");
    let denied = ok(&sam, &["request", "deny", &other, "--comment", "no"]);
    assert_eq!(denied["state"], "denied");
}

/// A new password, or a reset of the second factor, given by an administrator withdraws the
/// approvals the user gave to requests still pending, saying why, as an offboarding does; a
/// request already granted keeps its record, and one's own new password withdraws nothing.
#[test]
fn new_credentials_from_an_administrator_withdraw_the_approvals_the_old_ones_gave() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = start(dir.path(), "mona");
    let (alice, bob, sam) = (
        login(&server, "alice"),
        login(&server, "bob"),
        login(&server, "sam"),
    );
    let admin = login(&server, "admin");
    let by_bob = id(&create(&alice, "web", "root", &[]));
    let by_sam = id(&create(&alice, "web", "root", &[]));
    let by_admin = id(&create(&alice, "web", "root", &[]));
    let granted = id(&create(&alice, "web", "root", &[]));
    ok(&bob, &["request", "approve", &by_bob]);
    ok(&sam, &["request", "approve", &by_sam]);
    ok(&admin, &["request", "approve", &by_admin]);
    ok(&bob, &["request", "approve", &granted]);
    assert_eq!(
        ok(&sam, &["request", "approve", &granted])["state"],
        "active"
    );

    set_password(&admin, "bob", "bob's new password 1");
    let v = voided(&admin, &by_bob);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0]["details"]["approvers"], serde_json::json!(["bob"]));
    assert_eq!(v[0]["details"]["why"], "their password was reset");
    assert_eq!(void_reviewers(&admin, &by_bob), ["bob"]);
    assert_eq!(reviewers(&admin, &granted), ["bob", "sam"]);

    let reset = ok(&admin, &["user", "reset-mfa", "sam"]);
    assert_eq!(reset["user"], "sam", "{reset}");
    let v = voided(&admin, &by_sam);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0]["details"]["approvers"], serde_json::json!(["sam"]));
    assert_eq!(v[0]["details"]["why"], "their second factor was reset");
    assert_eq!(void_reviewers(&admin, &by_sam), ["sam"]);
    assert_eq!(state(&admin, &by_sam), "pending");

    // They approve afresh, with the new credentials: the new approval takes the old one's place.
    let bob = signed_in(&server, "bob", "bob's new password 1");
    ok(&bob, &["request", "approve", &by_bob]);
    assert_eq!(reviewers(&admin, &by_bob), ["bob"]);
    assert!(void_reviewers(&admin, &by_bob).is_empty());

    // An administrator's own new password withdraws nothing of theirs.
    set_password(
        &admin,
        "admin",
        &format!("{}\nadmin's own password 1", common::PASSWORD),
    );
    let admin = signed_in(&server, "admin", "admin's own password 1");
    assert_eq!(reviewers(&admin, &by_admin), ["admin"]);
    assert!(voided(&admin, &by_admin).is_empty());
    assert_eq!(audit_events(&admin, "request.approvals_voided").len(), 2);
}

/// Whoever broke the glass cannot close its postmortem through a user whose password they
/// set; once another administrator sets it, that user closes it.
#[test]
fn a_postmortem_is_not_closed_through_a_password_its_breaker_set() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = start(dir.path(), "mona");
    let (admin, ada) = (login(&server, "admin"), login(&server, "ada"));
    set_password(&admin, "sam", "sam's password, by admin");
    let sam = signed_in(&server, "sam", "sam's password, by admin");
    let code = totp(&enroll_mfa(&admin), 1);
    let rid = id(&ok(
        &admin,
        &[
            "breakglass",
            "web",
            "--role",
            "root",
            "--reason",
            "db down",
            "--ttl",
            "10m",
            "--totp",
            &code,
        ],
    ));
    ok(&admin, &["request", "revoke", &rid]);
    let close = [
        "postmortem",
        "close",
        &rid,
        "--link",
        "https://wiki/pm/1",
        "--note",
        "done",
    ];
    let out = fails(&sam, &close, 3);
    assert!(
        out.stderr.contains(&format!(
            "your password was last set by admin, who broke the glass of {rid}, so your close of its postmortem cannot count on it: another administrator can set you a new password"
        )),
        "{out:?}"
    );
    let refused = audit_events(&admin, "postmortem.close_refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["actor"]["user"], "sam");
    assert_eq!(refused[0]["outcome"]["code"], "not_permitted");
    set_password(&ada, "sam", "sam's password, by ada");
    let sam = signed_in(&server, "sam", "sam's password, by ada");
    assert_eq!(ok(&sam, &close)["closed_by"], "sam");
}

/// An approval given before its giver became the requester's manager fills no manager's place:
/// otto approves rita's request as an SRE, becomes her manager at a restart, and dave's approval
/// as the other SRE would count for nothing. A manager when they approve fills it.
#[test]
fn the_managers_place_is_not_filled_by_an_approval_given_before() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, path) = start(dir.path(), "mona");
    let (rita, otto) = (login(&server, "rita"), login(&server, "otto"));
    let rid = id(&create(&rita, "web", "admin", &[]));
    let v = ok(&otto, &["request", "approve", &rid]);
    assert_eq!(v["state"], "pending");
    assert_eq!(
        v["still_needed"],
        serde_json::json!(["the requester's manager"])
    );
    assert!(server.terminate().success());
    std::fs::write(&path, config("otto")).unwrap();
    server.restart();
    let (rita, otto, dave) = (
        login(&server, "rita"),
        login(&server, "otto"),
        login(&server, "dave"),
    );
    let out = fails(&dave, &["request", "approve", &rid], 3);
    assert!(
        out.stderr
            .contains("would not count: still needed is the requester's manager"),
        "{out:?}"
    );
    let v = ok(&rita, &["request", "show", &rid]);
    assert_eq!(v["state"], "pending", "{v}");
    assert_eq!(
        v["still_needed"],
        serde_json::json!(["the requester's manager"]),
        "{v}"
    );
    // Her manager as he approves, otto fills the manager's place.
    let fresh = id(&create(&rita, "web", "admin", &[]));
    assert_eq!(
        ok(&otto, &["request", "approve", &fresh])["state"],
        "pending"
    );
    assert_eq!(
        ok(&dave, &["request", "approve", &fresh])["state"],
        "active"
    );
}

/// A stop that cuts an administrator's new password, or reset of a second factor, short
/// between storing it and withdrawing the user's approvals leaves none of them standing: the
/// next start withdraws what the old credentials approved, saying why, and keeps what the new
/// ones approved since.
#[test]
fn approvals_a_stop_left_standing_after_new_credentials_are_withdrawn_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, _) = start(dir.path(), "mona");
    let (alice, bob, sam) = (
        login(&server, "alice"),
        login(&server, "bob"),
        login(&server, "sam"),
    );
    let admin = login(&server, "admin");
    let by_bob = id(&create(&alice, "web", "root", &[]));
    let by_sam = id(&create(&alice, "web", "root", &[]));
    let later = id(&create(&alice, "web", "root", &[]));
    ok(&bob, &["request", "approve", &by_bob]);
    ok(&sam, &["request", "approve", &by_sam]);
    set_password(&admin, "bob", "bob's new password 1");
    ok(&admin, &["user", "reset-mfa", "sam"]);
    let bob = signed_in(&server, "bob", "bob's new password 1");
    ok(&bob, &["request", "approve", &later]);
    assert!(server.terminate().success());

    // What a stop right after the new credentials were stored leaves: the approvals standing.
    let db = rusqlite::Connection::open(server.data_dir().join("warden.db")).unwrap();
    for rid in [&by_bob, &by_sam] {
        let n = db
            .execute(
                "UPDATE requests SET body = json_remove(body, '$.reviews[0].withdrawn') WHERE id = ?1",
                [rid.as_str()],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    drop(db);
    server.restart();
    let admin = login(&server, "admin");
    assert_eq!(void_reviewers(&admin, &by_bob), ["bob"]);
    assert_eq!(void_reviewers(&admin, &by_sam), ["sam"]);
    assert_eq!(reviewers(&admin, &later), ["bob"]);
    assert!(void_reviewers(&admin, &later).is_empty());
    for (rid, who, why) in [
        (&by_bob, "bob", "their password was reset"),
        (&by_sam, "sam", "their second factor was reset"),
    ] {
        let v = voided(&admin, rid);
        // Once as the change was made, and again at the start after the stop.
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(v[1]["details"]["approvers"], serde_json::json!([who]));
        assert_eq!(v[1]["details"]["why"], why);
    }
    assert!(voided(&admin, &later).is_empty());
}
