//! Separation of duties through the real binary: an administrator cannot approve their own
//! request, nor close their own break-glass postmortem, through users whose passwords they set;
//! a new password or second factor set by an administrator withdraws what the old ones
//! approved, even as other approvals race the change; and the manager's place is filled only
//! by one who was the requester's manager when they approved.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{
    BIN, TARGETS, audit_events, audit_records, create, enroll_mfa, fails, id, login, ok, state,
    token, totp,
};
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

/// The public key the requests made straight through the API certify.
const PUBLIC_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM/1grFR8R7u1dMuDKhv3Zf699ElHEkRib9iffsL+qvK race";

/// Sends an API call, `method path` with `body`, as the holder of `bearer`: its answer is read
/// with [`answer`], so that what should follow its sending can.
fn send(port: u16, method: &str, path: &str, bearer: &str, body: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // Bounded: a call that never answers fails the test rather than hang it.
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let call = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {bearer}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(call.as_bytes()).unwrap();
    s
}

/// The status and JSON body of the answer to a call [`send`] sent.
fn answer(mut s: TcpStream) -> (u16, Value) {
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// An API call and its answer.
fn call(port: u16, method: &str, path: &str, bearer: &str, body: &str) -> (u16, Value) {
    answer(send(port, method, path, bearer, body))
}

/// A two-person request for web/root by the holder of `bearer`, approved by the holder of
/// `approver`'s: pending, waiting for one more. Its id.
fn approved_once(port: u16, bearer: &str, approver: &str) -> String {
    let create = serde_json::json!({
        "target": "web", "role": "root", "reason": "racing a reset", "ttl": "30m",
        "public_key": PUBLIC_KEY,
    });
    let (status, v) = call(port, "POST", "/v1/requests", bearer, &create.to_string());
    assert_eq!(status, 201, "{v}");
    let rid = v["id"].as_str().unwrap().to_owned();
    let (status, v) = call(
        port,
        "POST",
        &format!("/v1/requests/{rid}/approve"),
        approver,
        "{}",
    );
    assert_eq!((status, v["state"].as_str()), (200, Some("pending")), "{v}");
    rid
}

/// How an administrator resets bob's credentials in [`a_reset_racing_other_approvals`].
struct Reset {
    method: &'static str,
    path: &'static str,
    body: &'static str,
    /// The audit event that stores it.
    code: &'static str,
    /// Why the approvals it withdraws were withdrawn.
    why: &'static str,
}

/// Requests per requester that bob approved before his reset.
const RACED: usize = 80;
/// Requests per requester that sam approved, which bob approves as his reset goes on.
const IN_FLIGHT: usize = 10;
/// Threads approving as sam.
const APPROVERS: usize = 4;

/// An administrator resets bob's credentials (`reset`) while sam approves, as fast as four
/// clients can, hundreds of pending requests bob approved before, oldest first (the withdrawal
/// of bob's approvals walks them newest first), and while bob, with his old token, approves
/// others that sam approved. Once the reset is on the record, no request is granted counting
/// an approval of bob's: every request granted counting him was granted before it, and every
/// one still pending holds his approval void, withdrawn for the reset's reason.
fn a_reset_racing_other_approvals(reset: &Reset) {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = start(dir.path(), "mona");
    let port = server.port();
    let admin = login(&server, "admin");
    let [alice, rita, ada, bob, sam] =
        ["alice", "rita", "ada", "bob", "sam"].map(|u| token(&login(&server, u)));
    let requesters = [&alice, &rita, &ada];
    let raced: Vec<String> = (0..RACED)
        .flat_map(|_| requesters.map(|r| approved_once(port, r, &bob)))
        .collect();
    let in_flight: Vec<String> = (0..IN_FLIGHT)
        .flat_map(|_| requesters.map(|r| approved_once(port, r, &sam)))
        .collect();

    let start = Arc::new(Barrier::new(APPROVERS + 2));
    let admin_token = token(&admin);
    let resetter = {
        let start = Arc::clone(&start);
        let (method, path, body, bearer) =
            (reset.method, reset.path, reset.body, admin_token.clone());
        std::thread::spawn(move || {
            let sent = send(port, method, path, &bearer, body);
            start.wait();
            answer(sent)
        })
    };
    let approving = |who: String, rids: Vec<String>| {
        let start = Arc::clone(&start);
        std::thread::spawn(move || {
            start.wait();
            rids.iter()
                .map(|rid| {
                    let path = format!("/v1/requests/{rid}/approve");
                    call(port, "POST", &path, &who, "{}")
                })
                .collect::<Vec<_>>()
        })
    };
    let by_sam: Vec<_> = (0..APPROVERS)
        .map(|i| {
            let theirs = raced.iter().skip(i).step_by(APPROVERS).cloned().collect();
            approving(sam.clone(), theirs)
        })
        .collect();
    let by_bob = approving(bob.clone(), in_flight.clone());
    let (status, v) = resetter.join().unwrap();
    assert_eq!(status, 200, "{v}");
    for a in by_sam {
        a.join().unwrap();
    }
    // bob's approvals as his credentials changed: stored before, or refused saying why.
    for (status, v) in by_bob.join().unwrap() {
        match status {
            200 => assert_eq!(v["state"], "active", "{v}"),
            401 => assert_eq!(v["error"]["code"], "unauthenticated", "{v}"),
            403 => assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("an administrator is resetting bob's password or second factor"),
                "{v}"
            ),
            _ => panic!("{status}: {v}"),
        }
    }

    let resets: Vec<Value> = audit_records(&admin, reset.code)
        .into_iter()
        .filter(|r| {
            r["event"]["details"]["user"] == "bob" && r["event"]["actor"]["user"] == "admin"
        })
        .collect();
    assert_eq!(resets.len(), 1, "{resets:?}");
    let reset_seq = resets[0]["seq"].as_u64().unwrap();
    let approved = audit_records(&admin, "request.approved");
    let counted_bob = |r: &&Value| {
        r["event"]["details"]["approvers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "bob")
    };
    // sam's approvals went on past the reset: the race was run.
    let reviewed = audit_records(&admin, "request.reviewed");
    assert!(
        reviewed
            .iter()
            .any(|r| r["seq"].as_u64().unwrap() > reset_seq && r["event"]["actor"]["user"] == "sam"),
        "no approval of sam's came after the reset: nothing raced it"
    );
    let late: Vec<String> = approved
        .iter()
        .filter(|r| r["seq"].as_u64().unwrap() > reset_seq)
        .filter(counted_bob)
        .map(|r| r["event"]["request_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        late.is_empty(),
        "{} request(s) granted after bob's reset (seq {reset_seq}) counting his approval, {:?} among them",
        late.len(),
        &late[..late.len().min(3)]
    );
    let voided = audit_events(&admin, "request.approvals_voided");
    for rid in raced.iter().chain(&in_flight) {
        let (status, v) = call(
            port,
            "GET",
            &format!("/v1/requests/{rid}"),
            &admin_token,
            "",
        );
        assert_eq!(status, 200, "{v}");
        let bobs: Vec<&Value> = v["reviews"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["reviewer"] == "bob")
            .collect();
        match v["state"].as_str().unwrap() {
            // Granted before the reset, counting him then.
            "active" => assert!(
                approved
                    .iter()
                    .any(|r| r["event"]["request_id"] == rid.as_str()
                        && r["seq"].as_u64().unwrap() < reset_seq),
                "{v}"
            ),
            "pending" => {
                // Withdrawn for the reset, if he approved it before; none stands.
                assert!(
                    bobs.iter()
                        .all(|r| r["void"] == true && r["withdrawn"] == reset.why),
                    "{v}"
                );
                if raced.contains(rid) {
                    assert_eq!(bobs.len(), 1, "{v}");
                    let why: Vec<&Value> = voided
                        .iter()
                        .filter(|e| e["request_id"] == rid.as_str())
                        .map(|e| &e["details"]["why"])
                        .collect();
                    assert_eq!(why, [reset.why], "{v}");
                }
            }
            other => panic!("request {rid} is {other}: {v}"),
        }
    }
}

/// [`a_reset_racing_other_approvals`] for an administrator's reset of bob's second factor.
#[test]
fn a_second_factor_reset_lets_no_old_approval_count_however_many_are_pending() {
    a_reset_racing_other_approvals(&Reset {
        method: "POST",
        path: "/v1/users/bob/mfa/reset",
        body: "{}",
        code: "auth.mfa_reset",
        why: "their second factor was reset",
    });
}

/// [`a_reset_racing_other_approvals`] for a new password an administrator sets bob.
#[test]
fn a_new_password_lets_no_old_approval_count_however_many_are_pending() {
    a_reset_racing_other_approvals(&Reset {
        method: "PUT",
        path: "/v1/users/bob/password",
        body: r#"{"password": "bob's new password, raced"}"#,
        code: "auth.password_set",
        why: "their password was reset",
    });
}

/// An approval under way with bob's old credentials as an administrator resets his second
/// factor does not count: it passed authentication before the reset (its body still to come),
/// and reaches its decision once the reset is stored. It is refused, saying why and what to do,
/// and the request sam approved waits for another approver.
#[test]
fn an_approval_under_way_as_the_credentials_change_does_not_count() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = start(dir.path(), "mona");
    let port = server.port();
    let admin = login(&server, "admin");
    let [alice, bob, sam, admin_token] =
        ["alice", "bob", "sam", "admin"].map(|u| token(&login(&server, u)));
    let rid = approved_once(port, &alice, &sam);

    // bob's approval: authenticated as its headers arrive, decided once its body does.
    let mut approval = TcpStream::connect(("127.0.0.1", port)).unwrap();
    approval
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let head = format!(
        "POST /v1/requests/{rid}/approve HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {bob}\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
    );
    approval.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let reset = send(port, "POST", "/v1/users/bob/mfa/reset", &admin_token, "{}");
    common::wait_until("bob's reset on the record", Duration::from_secs(20), || {
        audit_events(&admin, "auth.mfa_reset")
            .iter()
            .any(|e| e["details"]["user"] == "bob")
    });
    approval.write_all(b"{}").unwrap();
    let (status, v) = answer(approval);
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"]["code"], "not_permitted", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains(
            "an administrator is resetting bob's password or second factor: an approval made as that goes on does not count"
        ),
        "{v}"
    );
    let (status, v) = answer(reset);
    assert_eq!(status, 200, "{v}");

    let (_, v) = call(
        port,
        "GET",
        &format!("/v1/requests/{rid}"),
        &admin_token,
        "",
    );
    assert_eq!(v["state"], "pending", "{v}");
    assert_eq!(reviewers(&admin, &rid), ["sam"]);
    assert!(audit_events(&admin, "request.approved").is_empty());
    let refused: Vec<Value> = audit_events(&admin, "request.review_refused")
        .into_iter()
        .filter(|e| e["request_id"] == rid.as_str())
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["actor"]["user"], "bob");
    assert_eq!(refused[0]["outcome"]["code"], "not_permitted");
}
