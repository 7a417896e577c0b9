//! The request lifecycle through the real binary: every approval tier, the refusals around
//! them, cancel, revoke, extend and pending timeouts. Every refusal must change nothing and be
//! audited.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[test]
fn auto_tier_is_active_at_once_with_a_certificate() {
    let env = Env::start();
    let alice = env.login("alice");
    // Commands that print a document print it whole, or as one JSON field (a key line without
    // its line break).
    let ca = alice.run(&["ssh-ca"], None).stdout;
    assert_eq!(ok(&alice, &["ssh-ca"])["ca_public_key"], ca.trim_end());
    assert!(ca.starts_with("ssh-ed25519 "), "{ca}");
    let v = create(&alice, "web", "view", &["--ttl", "10m"]);
    assert_eq!(v["state"], "active");
    // Granted at once, it never waited for approval: no deadline to meet, then or later.
    assert!(v["pending_deadline"].is_null(), "{v}");
    let shown = ok(&alice, &["request", "show", &id(&v)]);
    assert!(shown["pending_deadline"].is_null(), "{shown}");
    assert_eq!(v["rules"], serde_json::json!(["view-auto"]));
    assert!(v["expires_at"].as_str().unwrap().ends_with('Z'));
    let cert = v["credential"]["certificate"].as_str().unwrap();
    assert!(
        cert.starts_with("ssh-ed25519-cert-v01@openssh.com "),
        "{cert}"
    );
    assert_eq!(v["credential"]["key_id"], v["id"]);
    // The certificate file the CLI wrote is a certificate ssh-keygen can read.
    let file = v["certificate_file"].as_str().unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .args(["-L", "-f", file])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("Key ID: \"{}\"", id(&v))), "{text}");
    assert!(text.contains(LOCAL_USER), "{text}");
    // A key whose private half is elsewhere (an agent's, a hardware key's) gets its
    // certificate kept all the same.
    let keys = tempfile::tempdir().unwrap();
    let public = public_key_alone(keys.path());
    let v = create(
        &alice,
        "web",
        "view",
        &["--ttl", "10m", "--public-key", &public],
    );
    assert!(
        std::path::Path::new(v["certificate_file"].as_str().unwrap()).exists(),
        "{v}"
    );
    assert!(v.get("private_key_file").is_none(), "{v}");
    // Your own key, used again once its last certificate expired: the new grant keeps it.
    let (_, _) = warden_testkit::ssh_keypair(keys.path(), "mine");
    let mine = format!("{}/mine.pub", keys.path().display());
    let first = create(
        &alice,
        "web",
        "view",
        &["--ttl", "1s", "--public-key", &mine],
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let again = create(
        &alice,
        "web",
        "view",
        &["--ttl", "10m", "--public-key", &mine],
    );
    assert_ne!(first["id"], again["id"]);
    let kept = alice.home().join("ssh").join(id(&again));
    assert!(kept.exists(), "{again}");
    assert_eq!(
        again["private_key_file"],
        format!("{}/mine", keys.path().display())
    );

    let admin = env.login("admin");
    let actions: Vec<String> = audit_actions(&admin, &id(&v))
        .into_iter()
        .map(|a| a.0)
        .collect();
    assert_eq!(
        actions,
        [
            "request.created",
            "request.approved",
            "credential.issued",
            "grant.activated"
        ]
    );
    // A certificate is no secret to pick up: it is in the grant.
    let none = fails(&alice, &["request", "credential", &id(&v)], 6);
    assert!(none.stderr.contains("no secret to hand over"), "{none:?}");
}

#[test]
fn peer_tier_refuses_the_requester_and_the_ineligible() {
    let env = Env::start();
    let alice = env.login("alice");
    let sam = env.login("sam");
    let bob = env.login("bob");
    let v = create(&alice, "web", "deploy", &["--ticket", "CHG-7"]);
    assert_eq!(v["state"], "pending");
    assert_eq!(
        v["still_needed"],
        serde_json::json!(["an approver from sre"])
    );
    assert!(
        v["pending_deadline"].as_str().unwrap().ends_with('Z'),
        "{v}"
    );
    let rid = id(&v);

    let own = fails(&alice, &["request", "approve", &rid], 3);
    assert!(own.stderr.contains("your own request"), "{own:?}");
    let wrong_group = fails(&sam, &["request", "approve", &rid], 3);
    assert!(
        wrong_group.stderr.contains("would not count"),
        "{wrong_group:?}"
    );
    let wrong_group_deny = fails(&sam, &["request", "deny", &rid, "--comment", "no"], 3);
    assert!(
        wrong_group_deny
            .stderr
            .contains("only a reviewer its tier names may"),
        "{wrong_group_deny:?}"
    );
    assert_eq!(state(&alice, &rid), "pending");
    // Not permitted to bob: the record says what refused, and no terms policy never gave.
    fails(
        &bob,
        &[
            "request", "create", "web", "--role", "deploy", "--reason", "x", "--ttl", "1h",
            "--ticket", "CHG-7",
        ],
        3,
    );
    let refusal = audit_events(&env.login("admin"), "request.refused")
        .into_iter()
        .find(|e| e["actor"]["user"] == "bob")
        .unwrap();
    assert_eq!(refusal["outcome"]["code"], "not_permitted", "{refusal}");
    assert!(refusal["details"].get("tier").is_none(), "{refusal}");

    // bob sees it in his review queue, approves, and the grant is active.
    let queue = ok(&bob, &["request", "list", "--reviewable"]);
    assert_eq!(queue["requests"][0]["id"], rid.as_str());
    let queue = ok(
        &bob,
        &["request", "list", "--reviewable", "--state", "pending"],
    );
    assert_eq!(queue["requests"][0]["id"], rid.as_str());
    let out = fails(
        &bob,
        &["request", "list", "--reviewable", "--state", "active"],
        2,
    );
    assert!(
        out.stderr.contains("reviewable requests are pending"),
        "{out:?}"
    );
    let approved = ok(
        &bob,
        &["request", "approve", &rid, "--comment", "looks fine"],
    );
    assert_eq!(approved["state"], "active");
    assert_eq!(approved["reviews"][0]["reviewer"], "bob");
    // It waited for approval: the deadline it met stays on record.
    assert_eq!(approved["pending_deadline"], v["pending_deadline"]);
    // Approving twice is a conflict and changes nothing.
    fails(&bob, &["request", "approve", &rid], 6);

    let admin = env.login("admin");
    let actions = audit_actions(&admin, &rid);
    let refused = actions
        .iter()
        .filter(|(a, o)| a == "request.review_refused" && o == "denied")
        .count();
    assert_eq!(refused, 4, "{actions:?}");
}

/// Wrong codes for a secret being confirmed guess at nothing (whoever confirms it was just shown
/// it): however many, they lock no one out.
#[test]
fn wrong_codes_at_confirmation_lock_no_one_out() {
    let env = Env::start();
    let bob = env.login("bob");
    let v = ok(&bob, &["mfa", "enroll"]);
    let pending = v["otpauth_uri"].as_str().unwrap().to_owned();
    for _ in 0..6 {
        let wrong = bob.run(&["mfa", "confirm", "000000"], None);
        assert_ne!(wrong.code, 0, "{wrong:?}");
        assert!(!wrong.stderr.contains("too many"), "{wrong:?}");
    }
    ok(&bob, &["mfa", "confirm", &totp(&pending, 0)]);
    let out = sign_in(&bob, "bob", PASSWORD, Some(&totp(&pending, 1)));
    assert!(out.success(), "{out:?}");
}

#[test]
fn manager_and_peer_with_mfa_step_up() {
    let env = Env::start();
    let alice = env.login("alice");
    let bob = env.login("bob");
    let mallory = env.login("mallory");

    // Without MFA the role is refused up front.
    let no_mfa = fails(
        &alice,
        &[
            "request", "create", "web", "--role", "admin", "--reason", "fix", "--ttl", "1h",
        ],
        3,
    );
    // Each failure says what to do: enrol first, then pass a right, fresh, well-formed code.
    assert!(no_mfa.stderr.contains("warden mfa enroll"), "{no_mfa:?}");
    // Confirming what was never begun is a conflict, whatever the code.
    let nothing = fails(&alice, &["mfa", "confirm", "123456"], 6);
    assert!(
        nothing.stderr.contains("no MFA enrolment in progress"),
        "{nothing:?}"
    );
    let uri = enroll_mfa(&alice);
    // Replacing the factor takes a current code: none, or a wrong one, is refused, saying
    // which, and on the record (wrong codes count towards the lockout).
    let none = fails(&alice, &["mfa", "enroll"], 3);
    assert!(none.stderr.contains("already have MFA"), "{none:?}");
    let none = fails(&alice, &["--json", "mfa", "enroll"], 3);
    assert!(none.stderr.contains("\"mfa_required\""), "{none:?}");
    let wrong = fails(&alice, &["mfa", "enroll", "--totp", "000000"], 3);
    assert!(wrong.stderr.contains("TOTP code is wrong"), "{wrong:?}");
    let admin = env.login("admin");
    let refused = audit_values(&admin, "request.action_refused", "/details/action");
    assert_eq!(
        refused.iter().filter(|a| *a == "mfa.enroll").count(),
        3,
        "{refused:?}"
    );
    // A malformed code is the client's usage error: it never reaches the server's count.
    let malformed = fails(
        &alice,
        &[
            "request", "create", "web", "--role", "admin", "--reason", "fix", "--ttl", "1h",
            "--totp", "12ab",
        ],
        2,
    );
    assert!(malformed.stderr.contains("6 digits"), "{malformed:?}");
    let without = fails(
        &alice,
        &[
            "request", "create", "web", "--role", "admin", "--reason", "fix", "--ttl", "1h",
        ],
        3,
    );
    assert!(without.stderr.contains("--totp"), "{without:?}");
    let bad = fails(
        &alice,
        &[
            "request", "create", "web", "--role", "admin", "--reason", "fix", "--ttl", "1h",
            "--totp", "000000",
        ],
        3,
    );
    assert!(bad.stderr.contains("TOTP code is wrong"), "{bad:?}");
    // A wrong code is on the record apart from a missing one.
    let codes = audit_values(&admin, "request.refused", "/outcome/code");
    assert!(
        codes.iter().any(|c| c == "mfa_failed") && codes.iter().any(|c| c == "mfa_required"),
        "{codes:?}"
    );
    let code = totp(&uri, 1);
    // A refusal no second factor could fix leaves the code unspent.
    let too_long = fails(
        &alice,
        &[
            "request", "create", "web", "--role", "admin", "--reason", "fix", "--ttl", "9h",
            "--totp", &code,
        ],
        3,
    );
    assert!(too_long.stderr.contains("2h"), "{too_long:?}");
    let v = create(&alice, "web", "admin", &["--ttl", "1h", "--totp", &code]);
    let rid = id(&v);
    assert_eq!(v["tier"], "peer(sre) & manager");
    // The same code cannot be replayed.
    let replayed = fails(
        &alice,
        &[
            "request", "create", "web", "--role", "admin", "--reason", "again", "--ttl", "1h",
            "--totp", &code,
        ],
        3,
    );
    assert!(replayed.stderr.contains("used already"), "{replayed:?}");

    // Someone whose approval would not count is told so, before any code is asked of them.
    let sam = env.login("sam");
    let ineligible = fails(&sam, &["request", "approve", &rid], 3);
    assert!(!ineligible.stderr.contains("TOTP"), "{ineligible:?}");
    assert!(!ineligible.stderr.contains("mfa"), "{ineligible:?}");
    // Approvers of an MFA role step up too.
    let unenrolled = fails(&bob, &["request", "approve", &rid], 3);
    assert!(
        unenrolled.stderr.contains("warden mfa enroll"),
        "{unenrolled:?}"
    );
    let bob_uri = enroll_mfa(&bob);
    fails(&bob, &["request", "approve", &rid], 3);
    let after_bob = ok(
        &bob,
        &["request", "approve", &rid, "--totp", &totp(&bob_uri, 1)],
    );
    assert_eq!(after_bob["state"], "pending");
    assert_eq!(
        after_bob["still_needed"],
        serde_json::json!(["the requester's manager"])
    );
    let mallory_uri = enroll_mfa(&mallory);
    let done = ok(
        &mallory,
        &["request", "approve", &rid, "--totp", &totp(&mallory_uri, 1)],
    );
    assert_eq!(done["state"], "active");

    // A factor replaced at once is confirmed by the new authenticator's code of the same
    // moment as the old one's that allowed the replacement; that code is spent all the same.
    let sam_uri = enroll_mfa(&sam);
    let v = ok(&sam, &["mfa", "enroll", "--totp", &totp(&sam_uri, 1)]);
    let new_uri = v["otpauth_uri"].as_str().unwrap().to_owned();
    let first = totp(&new_uri, 1);
    ok(&sam, &["mfa", "confirm", &first]);
    let replay = fails(&sam, &["mfa", "enroll", "--totp", &first], 3);
    assert!(replay.stderr.contains("used already"), "{replay:?}");
}

#[test]
fn two_person_needs_a_security_approver_and_a_deny_ends_it() {
    let env = Env::start();
    let alice = env.login("alice");
    let bob = env.login("bob");
    let mallory = env.login("mallory");
    let sam = env.login("sam");

    let rid = id(&create(&alice, "web", "root", &[]));
    // Security is named by the tier and sees it waiting; the second approver may be anyone,
    // who is not shown everyone's two-person requests but approves by id when asked.
    let waiting = |who: &warden_testkit::Cli| -> Vec<serde_json::Value> {
        ok(who, &["request", "list", "--reviewable"])["requests"]
            .as_array()
            .unwrap()
            .clone()
    };
    assert!(waiting(&sam).iter().any(|r| r["id"] == rid.as_str()));
    assert!(waiting(&bob).is_empty());
    // Nor is it in their plain list, and they may not deny it: anyone could block it then.
    let listed = |who: &warden_testkit::Cli| {
        ok(who, &["request", "list"])["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == rid.as_str())
    };
    assert!(!listed(&mallory));
    ok(&mallory, &["request", "show", &rid]);
    let out = fails(&mallory, &["request", "deny", &rid, "--comment", "no"], 3);
    assert!(
        out.stderr.contains("only a reviewer its tier names"),
        "{out:?}"
    );
    ok(&bob, &["request", "approve", &rid]);
    assert!(listed(&bob));
    // An approval makes no one a withdrawer of a pending request: anyone could block every
    // two-person request by approving and withdrawing it.
    let out = fails(&bob, &["request", "revoke", &rid], 3);
    assert!(out.stderr.contains("once granted"), "{out:?}");
    // A second non-security approver would not count.
    let out = fails(&mallory, &["request", "approve", &rid], 3);
    assert!(out.stderr.contains("an approver from security"), "{out:?}");
    assert_eq!(ok(&sam, &["request", "approve", &rid])["state"], "active");
    // Anyone may be the tier's second approver, but that makes no one a revoker: granted, the
    // request is none of mallory's business, who neither approved it nor is named by the tier.
    // bob approved it, so he may end it.
    fails(&mallory, &["request", "show", &rid], 4);
    fails(&mallory, &["request", "revoke", &rid], 4);
    assert_eq!(ok(&bob, &["request", "revoke", &rid])["state"], "revoked");

    let rid2 = id(&create(&alice, "web", "root", &[]));
    let denied = ok(
        &sam,
        &[
            "request",
            "deny",
            &rid2,
            "--comment",
            "not during the freeze",
        ],
    );
    assert_eq!(denied["state"], "denied");
    assert_eq!(denied["end_comment"], "not during the freeze");
    // The requester's client forgets the denied request's key when it next sees the request.
    let denied_key = alice.home().join("ssh").join(&rid2);
    assert!(denied_key.exists());
    ok(&alice, &["request", "list"]);
    assert!(!denied_key.exists());
    let out = fails(&alice, &["request", "credential", &rid2], 6);
    assert!(
        out.stderr.contains("denied and was never granted"),
        "{out:?}"
    );
    // Ended, it is out of reach of those the tier does not name; sam, named, is told why.
    fails(&bob, &["request", "approve", &rid2], 4);
    let again = fails(&sam, &["request", "approve", &rid2], 6);
    assert!(again.stderr.contains("denied"), "{again:?}");
}

#[test]
fn cancel_revoke_and_extend() {
    let env = Env::start();
    let alice = env.login("alice");
    let bob = env.login("bob");
    let admin = env.login("admin");

    let pending = id(&create(&alice, "web", "deploy", &["--ticket", "CHG-1"]));
    let pending_key = alice.home().join("ssh").join(&pending);
    assert!(pending_key.exists());
    let theirs = fails(&bob, &["request", "cancel", &pending], 3);
    assert!(
        theirs.stderr.contains("warden request revoke"),
        "{theirs:?}"
    );
    assert_eq!(
        ok(&alice, &["request", "cancel", &pending])["state"],
        "cancelled"
    );
    // The key generated for a request that was never granted is not kept.
    assert!(!pending_key.exists());
    let out = fails(&bob, &["request", "approve", &pending], 6);
    assert!(out.stderr.contains("cancelled"), "{out:?}");

    let active = id(&create(&alice, "web", "view", &[]));
    // Active, it is no longer cancelled but revoked, and its requester is told so.
    let out = fails(&alice, &["request", "cancel", &active], 6);
    assert!(
        out.stderr.contains(&format!(
            "request {active} is active; only pending (or approved and not yet active) requests can be cancelled; end it with `warden request revoke {active}`"
        )),
        "{out:?}"
    );
    // An extension runs from when it is granted: one shorter than the 30 minutes left is
    // refused as adding nothing.
    let out = fails(&alice, &["request", "extend", &active, "--ttl", "20m"], 2);
    assert!(out.stderr.contains("ask for more than 30m"), "{out:?}");
    // `db connect` names what is wrong: no such target, or not a database.
    let out = fails(&alice, &["db", "connect", "nosuch"], 4);
    assert!(out.stderr.contains("no target nosuch"), "{out:?}");
    let out = fails(&alice, &["db", "connect", "web"], 2);
    assert!(out.stderr.contains("not a database target"), "{out:?}");
    // Holding grants of two roles there, she is told so before being asked which role.
    let deploy = id(&create(&alice, "web", "deploy", &["--ticket", "CHG-2"]));
    assert_eq!(
        ok(&bob, &["request", "approve", &deploy])["state"],
        "active"
    );
    let out = fails(&alice, &["db", "connect", "web"], 2);
    assert!(out.stderr.contains("not a database target"), "{out:?}");
    // A deny may go without a comment, as in the API.
    let unwanted = id(&create(&alice, "web", "deploy", &["--ticket", "CHG-3"]));
    assert_eq!(ok(&bob, &["request", "deny", &unwanted])["state"], "denied");
    // Extending makes a new request linked to the original, decided afresh.
    let ext = ok(&alice, &["request", "extend", &active, "--ttl", "45m"]);
    assert_eq!(ext["extends"], active.as_str());
    assert_eq!(ext["state"], "active");
    // bob may not see alice's auto-approved grant: to him it does not exist, whatever he tries.
    for verb in [
        &["extend", &active, "--ttl", "20m"][..],
        &["cancel", &active],
        &["approve", &active],
        &["revoke", &active],
    ] {
        let out = fails(&bob, &[&["request"][..], verb].concat(), 4);
        assert!(out.stderr.contains("not found"), "{verb:?}: {out:?}");
    }
    // sam reads the audit log (and every request) but ends no one's grant by that alone.
    let out = fails(&env.login("sam"), &["request", "revoke", &active], 3);
    assert!(out.stderr.contains("can revoke"), "{out:?}");

    // An administrator sees alice's grant, but keeps no copy of its certificate.
    ok(&admin, &["request", "show", &active]);
    let copy = admin.home().join("ssh").join(format!("{active}-cert.pub"));
    assert!(!copy.exists(), "{}", copy.display());
    assert!(
        alice
            .home()
            .join("ssh")
            .join(format!("{active}-cert.pub"))
            .exists()
    );
    let revoked = ok(
        &admin,
        &["request", "revoke", &active, "--comment", "offboarding"],
    );
    assert_eq!(revoked["state"], "revoked");
    assert_eq!(revoked["ended_by"], "admin");
    // Its extension continued that access: it ends with it.
    let ext = ok(&alice, &["request", "show", ext["id"].as_str().unwrap()]);
    assert_eq!(ext["state"], "revoked", "{ext}");
    assert!(
        ext["end_comment"].as_str().unwrap().contains(&active),
        "{ext}"
    );

    // A pending extension of a revoked grant is ended too, so no approver can revive it; so is
    // one of an extension, each told of the grant it extends itself.
    let deploy = id(&create(&alice, "web", "deploy", &["--ticket", "CHG-3"]));
    ok(&bob, &["request", "approve", &deploy]);
    let first = id(&ok(&alice, &["request", "extend", &deploy, "--ttl", "1h"]));
    ok(&bob, &["request", "approve", &first]);
    let more = id(&ok(&alice, &["request", "extend", &first, "--ttl", "2h"]));
    assert_eq!(state(&alice, &more), "pending");
    // One extension at a time, of any grant of the same chain.
    let twice = fails(&alice, &["request", "extend", &deploy, "--ttl", "2h"], 6);
    assert!(
        twice.stderr.contains(&format!("extension {more}")),
        "{twice:?}"
    );
    let beside = fails(&alice, &["request", "extend", &first, "--ttl", "3h"], 6);
    assert!(
        beside.stderr.contains(&format!("extension {more}")),
        "{beside:?}"
    );
    ok(&admin, &["request", "revoke", &deploy]);
    let ended = ok(&alice, &["request", "show", &first]);
    assert_eq!(
        (&ended["state"], &ended["end_comment"]),
        (
            &serde_json::json!("revoked"),
            &serde_json::json!(format!("the grant it extends ({deploy}) was revoked"))
        ),
        "{ended}"
    );
    let ended = ok(&alice, &["request", "show", &more]);
    assert_eq!(
        (&ended["state"], &ended["end_comment"]),
        (
            &serde_json::json!("revoked"),
            &serde_json::json!(format!(
                "the grant it extends ({first}) continued grant {deploy}, which was revoked, and ended with it"
            ))
        ),
        "{ended}"
    );
    fails(&bob, &["request", "approve", &more], 6);
    fails(&alice, &["request", "revoke", &active], 6);
    let ended = fails(&alice, &["request", "extend", &active, "--ttl", "20m"], 6);
    assert!(
        ended
            .stderr
            .contains("is revoked: there is no access left to extend"),
        "{ended:?}"
    );
}

/// Extensions asked for at once: one waits, the others are refused; an extension asked for as
/// its grant is revoked is refused or ended with it, never left running.
#[test]
fn extensions_and_revocations_at_once_keep_their_rules() {
    let rules = RULES.replace("@pending_timeout(\"3s\")", "@pending_timeout(\"1h\")");
    let env = Env::start_with(&[("targets.toml", TARGETS), ("access.cedar", &rules)], &[]);
    let (alice, bob, admin) = (env.login("alice"), env.login("bob"), env.login("admin"));
    let deploy = id(&create(&alice, "web", "deploy", &["--ticket", "CHG-9"]));
    ok(&bob, &["request", "approve", &deploy]);
    let outs: Vec<_> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    alice.run(
                        &["--json", "request", "extend", &deploy, "--ttl", "2h"],
                        None,
                    )
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let made = outs.iter().filter(|o| o.success()).count();
    assert_eq!(made, 1, "{outs:?}");
    for o in outs.iter().filter(|o| !o.success()) {
        assert!(o.stderr.contains("extension_pending"), "{o:?}");
    }

    for _ in 0..5 {
        let view = id(&create(&alice, "web", "view", &[]));
        let (extended, revoked) = std::thread::scope(|s| {
            let e = s.spawn(|| {
                alice.run(
                    &["--json", "request", "extend", &view, "--ttl", "50m"],
                    None,
                )
            });
            let r = s.spawn(|| admin.run(&["--json", "request", "revoke", &view], None));
            (e.join().unwrap(), r.join().unwrap())
        });
        assert!(revoked.success(), "{revoked:?}");
        if extended.success() {
            let ext: serde_json::Value = serde_json::from_str(&extended.stdout).unwrap();
            let ext_id = ext["id"].as_str().unwrap();
            assert_eq!(state(&alice, ext_id), "revoked", "{ext}");
        }
    }
}

/// With `WARDEN_HOME` given as a relative path, an extension finds the key its grant's
/// certificate was made for, and shows without error however often it is shown.
#[test]
fn an_extension_keeps_its_key_under_a_relative_home() {
    let env = Env::start();
    let alice = env.login("alice");
    let home = alice.home();
    let (parent, name) = (home.parent().unwrap(), home.file_name().unwrap());
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(args)
            .current_dir(parent)
            .env("WARDEN_HOME", name)
            .env("WARDEN_SERVER", env.server.url())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let granted = run(&[
        "--json", "request", "create", "web", "--role", "view", "--reason", "r", "--ttl", "10m",
    ]);
    let original = granted["id"].as_str().unwrap().to_owned();
    let ext = run(&["--json", "request", "extend", &original, "--ttl", "45m"]);
    let ext = ext["id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let shown = run(&["--json", "request", "show", &ext]);
        let key = shown["private_key_file"].as_str().unwrap();
        assert!(
            parent.join(key).exists() || std::path::Path::new(key).exists(),
            "{shown}"
        );
    }
}

#[test]
fn a_listing_finds_what_others_newer_requests_would_hide() {
    let env = Env::start();
    let alice = env.login("alice");
    let bob = env.login("bob");
    let pending = id(&create(&alice, "web", "deploy", &["--ticket", "CHG-7"]));
    // Newer requests bob may not see.
    for _ in 0..6 {
        create(&alice, "web", "view", &[]);
    }
    for args in [
        &["request", "list", "--limit", "1"][..],
        &["request", "list", "--reviewable", "--limit", "1"],
    ] {
        let listed = ok(&bob, args);
        assert_eq!(
            listed["requests"][0]["id"],
            pending.as_str(),
            "{args:?}: {listed}"
        );
    }
}

#[test]
fn an_approval_meets_the_policy_of_its_time() {
    let rules = RULES.replace("@pending_timeout(\"3s\")", "@pending_timeout(\"1h\")");
    let env = Env::start_with(&[("targets.toml", TARGETS), ("access.cedar", &rules)], &[]);
    let alice = env.login("alice");
    let bob = env.login("bob");
    let admin = env.login("admin");
    let ask = |ttl: &str| {
        id(&create(
            &alice,
            "web",
            "deploy",
            &["--ticket", "CHG-5", "--ttl", ttl],
        ))
    };
    let long = ask("2h");
    let recorded = ask("30m");
    assert_eq!(state(&alice, &recorded), "pending");
    // Meanwhile policy shortens the role's TTL and records its sessions.
    let stricter = rules.replace(
        "@max_ttl(\"4h\")\n@ticket",
        "@max_ttl(\"1h\")\n@recording(\"full\")\n@ticket",
    );
    assert_ne!(stricter, rules);
    write_policy(&env.policy_dir(), &[("access.cedar", &stricter)]);
    ok(&admin, &["policy", "reload"]);
    let out = fails(&bob, &["request", "approve", &long], 3);
    assert!(out.stderr.contains("above the maximum of 1h"), "{out:?}");
    assert_eq!(state(&alice, &long), "pending");
    let granted = ok(&bob, &["request", "approve", &recorded]);
    assert_eq!(granted["state"], "active");
    assert_eq!(granted["recording"], "full", "{granted}");
    assert_eq!(granted["credential"]["proxy_only"], true, "{granted}");
}

/// A reload that hands a pending request to other approvers hands it over whole: they see it,
/// list it as theirs to review and approve it; the approvers of before no longer see it.
#[test]
fn a_reload_hands_pending_requests_to_their_new_approvers() {
    let rules = RULES.replace("@pending_timeout(\"3s\")", "@pending_timeout(\"1h\")");
    let env = Env::start_with(&[("targets.toml", TARGETS), ("access.cedar", &rules)], &[]);
    let (alice, bob, mallory) = (env.login("alice"), env.login("bob"), env.login("mallory"));
    let admin = env.login("admin");
    let rid = id(&create(&alice, "web", "deploy", &["--ticket", "CHG-7"]));
    ok(&bob, &["request", "show", &rid]);
    fails(&mallory, &["request", "show", &rid], 4);

    let by_manager = rules.replace(
        "@id(\"deploy-peer\")\n@approval(\"peer(sre)\")\n@max_ttl(\"4h\")",
        "@id(\"deploy-manager\")\n@approval(\"manager\")\n@max_ttl(\"4h\")",
    );
    assert_ne!(by_manager, rules);
    write_policy(&env.policy_dir(), &[("access.cedar", &by_manager)]);
    ok(&admin, &["policy", "reload"]);

    // Shown with the tier policy demands now, and the rule that demands it.
    let shown = ok(&mallory, &["request", "show", &rid]);
    assert_eq!(shown["tier"], "manager", "{shown}");
    assert_eq!(
        shown["rules"],
        serde_json::json!(["deploy-manager"]),
        "{shown}"
    );
    assert_eq!(
        shown["still_needed"],
        serde_json::json!(["the requester's manager"])
    );
    let listed = ok(&mallory, &["request", "list", "--reviewable"]);
    assert_eq!(listed["requests"][0]["id"], rid.as_str(), "{listed}");
    fails(&bob, &["request", "show", &rid], 4);
    fails(&bob, &["request", "approve", &rid], 4);
    let granted = ok(&mallory, &["request", "approve", &rid]);
    assert_eq!(granted["state"], "active", "{granted}");
}

/// An approval a reload left counting for nothing (its giver is no one the new tier names) is
/// shown as such, and its giver is told why approving again would not help.
#[test]
fn an_approval_a_reload_made_void_is_shown_and_said_so() {
    let rules = RULES.replace("@pending_timeout(\"3s\")", "@pending_timeout(\"1h\")");
    let env = Env::start_with(&[("targets.toml", TARGETS), ("access.cedar", &rules)], &[]);
    let (alice, sam, mallory) = (env.login("alice"), env.login("sam"), env.login("mallory"));
    let root = id(&create(&alice, "web", "root", &[]));
    let half = ok(&sam, &["request", "approve", &root]);
    assert_eq!(half["reviews"][0]["reviewer"], "sam", "{half}");
    assert!(half["reviews"][0].get("void").is_none(), "{half}");

    let by_manager = rules.replace("two-person(security)", "manager");
    assert_ne!(by_manager, rules);
    write_policy(&env.policy_dir(), &[("access.cedar", &by_manager)]);
    ok(&env.login("admin"), &["policy", "reload"]);
    let shown = ok(&alice, &["request", "show", &root]);
    assert_eq!(shown["reviews"][0]["void"], true, "{shown}");
    let table = alice.run(&["request", "show", &root], None);
    assert!(
        table.stdout.contains("sam approve (no longer counts)"),
        "{table:?}"
    );
    let out = fails(&sam, &["request", "approve", &root], 3);
    assert!(
        out.stderr.contains("on record but no longer counts")
            && out.stderr.contains("the requester's manager"),
        "{out:?}"
    );
    let granted = ok(&mallory, &["request", "approve", &root]);
    assert_eq!(granted["state"], "active", "{granted}");
    // Granted, sam's approval stays void: it did not count toward the grant.
    assert_eq!(granted["reviews"][0]["void"], true, "{granted}");
    assert!(granted["reviews"][1].get("void").is_none(), "{granted}");
}

/// An approval void when the request is granted stays void: the grant's `request.approved`
/// does not list it, the grant shows it void, and its giver may not revoke the grant as one who
/// approved it.
#[test]
fn an_approval_void_at_the_grant_stays_void_after_it() {
    let env = Env::start_configured(
        "[users.carol]\ngroups = [\"sre\", \"dba\"]\n[users.dave]\ngroups = [\"dba\"]\n",
    );
    let targets = format!(
        "{TARGETS}\n[targets.t1]\nkind = \"ssh\"\nenvironment = \"test\"\n\n[targets.t1.roles.peer2]\nprincipals = [\"warden-it\"]\n"
    );
    let policy = |tier: &str| {
        format!(
            "{RULES}\n@id(\"r-peer2\")\n@approval(\"{tier}\")\n@max_ttl(\"4h\")\npermit (principal, action == Action::\"request\", resource == Role::\"t1/peer2\");\n"
        )
    };
    let admin = env.login("admin");
    let reload = |tier: &str| {
        write_policy(
            &env.policy_dir(),
            &[("targets.toml", &targets), ("access.cedar", &policy(tier))],
        );
        ok(&admin, &["policy", "reload"]);
    };
    reload("peer(sre|dba, 2)");
    let (alice, bob) = (env.login("alice"), env.login("bob"));
    let rid = id(&create(&alice, "t1", "peer2", &[]));
    ok(&bob, &["request", "approve", &rid]);
    reload("peer(dba, 2)");
    let shown = ok(&alice, &["request", "show", &rid]);
    assert_eq!(shown["reviews"][0]["void"], true, "{shown}");
    fails(&bob, &["request", "revoke", &rid], 3);
    ok(&env.login("dave"), &["request", "approve", &rid]);
    let granted = ok(&env.login("carol"), &["request", "approve", &rid]);
    assert_eq!(granted["state"], "active", "{granted}");

    let approved = audit_events(&admin, "request.approved")
        .into_iter()
        .find(|e| e["request_id"] == rid.as_str())
        .unwrap();
    assert_eq!(
        approved["details"]["approvers"],
        serde_json::json!(["dave", "carol"]),
        "{approved}"
    );
    let shown = ok(&alice, &["request", "show", &rid]);
    let void: Vec<_> = shown["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["reviewer"].as_str().unwrap(), v["void"] == true))
        .collect();
    assert_eq!(
        void,
        [("bob", true), ("dave", false), ("carol", false)],
        "{shown}"
    );
    let table = alice.run(&["request", "show", &rid], None);
    assert!(
        table.stdout.contains("bob approve (no longer counts)"),
        "{table:?}"
    );
    let out = fails(&bob, &["request", "revoke", &rid], 3);
    assert!(
        out.stderr
            .contains("whose approval counted toward it once granted"),
        "{out:?}"
    );
    assert_eq!(state(&alice, &rid), "active");
    let refused: Vec<_> = audit_events(&admin, "request.action_refused")
        .into_iter()
        .filter(|e| e["request_id"] == rid.as_str() && e["actor"]["user"] == "bob")
        .map(|e| e["details"]["action"].clone())
        .collect();
    assert_eq!(refused, ["revoke", "revoke"]);
}

/// A reload that relaxes a pending request's approval to what its approvals already meet (or to
/// `auto`) grants it: no one could approve it further.
#[test]
fn a_reload_grants_what_the_approvals_given_now_meet() {
    let rules = RULES.replace("@pending_timeout(\"3s\")", "@pending_timeout(\"1h\")");
    let env = Env::start_with(&[("targets.toml", TARGETS), ("access.cedar", &rules)], &[]);
    let (alice, sam, admin) = (env.login("alice"), env.login("sam"), env.login("admin"));
    let root = id(&create(&alice, "web", "root", &[]));
    let half = ok(&sam, &["request", "approve", &root]);
    assert_eq!(half["state"], "pending", "{half}");
    let deploy = id(&create(&alice, "web", "deploy", &["--ticket", "CHG-8"]));

    let relaxed = rules
        .replace("two-person(security)", "peer(security)")
        .replace(
            "@approval(\"peer(sre)\")\n@max_ttl(\"4h\")",
            "@approval(\"auto\")\n@max_ttl(\"4h\")",
        );
    assert_ne!(relaxed, rules);
    write_policy(&env.policy_dir(), &[("access.cedar", &relaxed)]);
    ok(&admin, &["policy", "reload"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while state(&alice, &root) != "active" || state(&alice, &deploy) != "active" {
        assert!(
            std::time::Instant::now() < deadline,
            "still pending after the reload"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let approved = audit_events(&admin, "request.approved");
    let by_policy = approved
        .iter()
        .find(|e| e["request_id"] == root.as_str())
        .unwrap();
    assert!(by_policy["actor"]["user"].is_null(), "{by_policy}");
    let shown = ok(&alice, &["request", "show", &root]);
    assert_eq!(shown["tier"], "peer(security)", "{shown}");
    // The event names the rules that granted it, those it was asked under, and who approved.
    let details = &by_policy["details"];
    assert_eq!(details["rules"], shown["rules"], "{by_policy}");
    assert!(details["rules_before"].is_array(), "{by_policy}");
    assert_eq!(
        details["approvers"],
        serde_json::json!(["sam"]),
        "{by_policy}"
    );
    // Each change of tier is on the record before the grant it brings, by Warden, `auto`
    // included; and one relaxed to `auto` waited for approval all the same.
    for (rid, before, after) in [
        (&root, "two-person(security)", "peer(security)"),
        (&deploy, "peer(sre)", "auto"),
    ] {
        let actions: Vec<String> = audit_actions(&admin, rid)
            .into_iter()
            .map(|(action, _)| action)
            .filter(|a| a == "request.requirement_changed" || a == "request.approved")
            .collect();
        assert_eq!(
            actions,
            ["request.requirement_changed", "request.approved"],
            "{rid}"
        );
        let changed = audit_events(&admin, "request.requirement_changed")
            .into_iter()
            .find(|e| e["request_id"] == rid.as_str())
            .unwrap();
        assert!(changed["actor"]["user"].is_null(), "{changed}");
        assert_eq!(
            (&changed["details"]["previous"], &changed["details"]["tier"]),
            (&serde_json::json!(before), &serde_json::json!(after)),
            "{changed}"
        );
    }
    let shown = ok(&alice, &["request", "show", &deploy]);
    assert!(shown["pending_deadline"].is_string(), "{shown}");
}

/// A reload takes over from the one before at once: the grants the earlier reload's pass would
/// still make are decided by the policy live now, and none is stored after it.
#[test]
fn a_reload_stops_what_the_reload_before_it_would_still_grant() {
    let rules = RULES.replace("@pending_timeout(\"3s\")", "@pending_timeout(\"1h\")");
    let env = Env::start_with(&[("targets.toml", TARGETS), ("access.cedar", &rules)], &[]);
    let (alice, sam, admin) = (env.login("alice"), env.login("sam"), env.login("admin"));
    let port = env.server.port();
    let (alice_token, sam_token, admin_token) = (token(&alice), token(&sam), token(&admin));
    let keys = tempfile::tempdir().unwrap();
    let body = request_body(keys.path(), "web", "root", "many");
    // Many requests, each with the one security approval of the two its tier needs.
    for _ in 0..60 {
        let (status, made) = post(port, "/v1/requests", Some(&alice_token), &body);
        assert_eq!(status, 201, "{made}");
        let rid = serde_json::from_str::<serde_json::Value>(&made).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let path = format!("/v1/requests/{rid}/approve");
        let (status, half) = post(port, &path, Some(&sam_token), r#"{"comment":"half"}"#);
        assert_eq!(status, 200, "{half}");
    }
    // Relaxed to what one approval meets, and at once strict again.
    let relaxed = rules.replace("two-person(security)", "peer(security)");
    assert_ne!(relaxed, rules);
    write_policy(&env.policy_dir(), &[("access.cedar", &relaxed)]);
    assert_eq!(
        post(port, "/v1/policy/reload", Some(&admin_token), "{}").0,
        200
    );
    write_policy(&env.policy_dir(), &[("access.cedar", &rules)]);
    assert_eq!(
        post(port, "/v1/policy/reload", Some(&admin_token), "{}").0,
        200
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let strict_since = audit_records(&admin, "policy.loaded").last().unwrap()["seq"]
        .as_u64()
        .unwrap();
    let late: Vec<serde_json::Value> = audit_records(&admin, "request.approved")
        .into_iter()
        .filter(|r| r["seq"].as_u64().unwrap() > strict_since)
        .collect();
    assert!(
        late.is_empty(),
        "granted under the replaced policy: {late:?}"
    );
}

#[test]
fn a_right_code_sent_again_is_refused_but_locks_no_one() {
    let env = Env::start();
    let sam = env.login("sam");
    let uri = enroll_mfa(&sam);
    // The code that confirmed the factor, sent again and again (a double submit, a retried
    // script): refused each time, but no guess, so it counts nothing towards a lockout.
    let used = totp(&uri, 0);
    for _ in 0..6 {
        let again = fails(&sam, &["mfa", "enroll", "--totp", &used], 3);
        assert!(again.stderr.contains("used already"), "{again:?}");
    }
    ok(&sam, &["mfa", "enroll", "--totp", &totp(&uri, 1)]);
}

/// A request made without MFA step-up, under a policy that demands it since, is granted by no
/// one: not by Warden when the role becomes `auto`, nor by an approver's own code.
#[test]
fn a_reload_that_demands_mfa_grants_nothing_made_without_it() {
    let rules = RULES.replace("@pending_timeout(\"3s\")", "@pending_timeout(\"1h\")");
    let env = Env::start_with(&[("targets.toml", TARGETS), ("access.cedar", &rules)], &[]);
    let (alice, bob, admin) = (env.login("alice"), env.login("bob"), env.login("admin"));
    let rid = id(&create(&alice, "web", "deploy", &["--ticket", "CHG-9"]));
    let demand = |tier: &str| {
        let with_mfa = rules.replace(
            "@approval(\"peer(sre)\")\n@max_ttl(\"4h\")",
            &format!("@approval(\"{tier}\")\n@mfa(\"required\")\n@max_ttl(\"4h\")"),
        );
        assert_ne!(with_mfa, rules);
        write_policy(&env.policy_dir(), &[("access.cedar", &with_mfa)]);
        ok(&admin, &["policy", "reload"]);
    };
    demand("auto");
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(state(&alice, &rid), "pending");
    demand("peer(sre)");
    let out = fails(&bob, &["request", "approve", &rid], 3);
    assert!(
        out.stderr
            .contains("no longer permits this request as made")
            && out.stderr.contains("made without it")
            && out.stderr.contains("its requester may make a new one")
            && !out.stderr.contains("--totp"),
        "{out:?}"
    );
    // Listed for a reviewer who may deny it, saying why no one may approve it, rather than
    // left to wait out its time unseen.
    let listed = ok(&bob, &["request", "list", "--reviewable"]);
    let listed = listed["requests"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], rid.as_str());
    assert!(listed[0]["unapprovable"].is_string(), "{listed:?}");
    assert_eq!(state(&alice, &rid), "pending");
    // Shown, it says why no one may approve it, beside the place its tier leaves open.
    let shown = ok(&alice, &["request", "show", &rid]);
    assert!(
        shown["unapprovable"]
            .as_str()
            .is_some_and(|w| w.contains("no longer permits") && w.contains("MFA")),
        "{shown}"
    );
    assert_eq!(
        shown["still_needed"],
        serde_json::json!(["an approver from sre"]),
        "{shown}"
    );
    // A request made with step-up under that policy is approved as ever.
    let alice_uri = enroll_mfa(&alice);
    let stepped = id(&create(
        &alice,
        "web",
        "deploy",
        &["--ticket", "CHG-10", "--totp", &totp(&alice_uri, 1)],
    ));
    let bob_uri = enroll_mfa(&bob);
    let granted = ok(
        &bob,
        &["request", "approve", &stepped, "--totp", &totp(&bob_uri, 1)],
    );
    assert_eq!(granted["state"], "active", "{granted}");
}

/// A pending request whose role a reload removed is approved by no one, and denied by the
/// reviewers its tier named when it was made, rather than left to wait out its time.
#[test]
fn a_request_for_a_role_a_reload_removed_can_still_be_denied() {
    let rules = RULES.replace("@pending_timeout(\"3s\")", "@pending_timeout(\"1h\")");
    let env = Env::start_with(&[("targets.toml", TARGETS), ("access.cedar", &rules)], &[]);
    let (alice, bob, admin) = (env.login("alice"), env.login("bob"), env.login("admin"));
    let rid = id(&create(&alice, "web", "deploy", &["--ticket", "CHG-9"]));
    let targets = TARGETS.replace(
        "[targets.web.roles.deploy]\nprincipals = [\"warden-it\"]\n",
        "",
    );
    let start = rules.find("@id(\"deploy-peer\")").unwrap();
    let end = rules.find("@id(\"admin-peer-manager\")").unwrap();
    let without = format!("{}{}", &rules[..start], &rules[end..]);
    assert!(targets != TARGETS && !without.contains("web/deploy"));
    write_policy(
        &env.policy_dir(),
        &[("targets.toml", &targets), ("access.cedar", &without)],
    );
    ok(&admin, &["policy", "reload"]);
    let out = fails(&bob, &["request", "approve", &rid], 3);
    assert!(
        out.stderr.contains(
            "policy no longer permits this request as made (target `web` no longer has role `deploy`)"
        ) && out.stderr.contains("can only be denied or cancelled")
            && !out.stderr.contains("warden targets"),
        "{out:?}"
    );
    let shown = ok(&alice, &["request", "show", &rid]);
    assert!(
        shown["unapprovable"]
            .as_str()
            .is_some_and(|w| w.contains("no longer has role `deploy`")),
        "{shown}"
    );
    // Alice asked; she cannot deny her own request, and Bob, the reviewer it named, can.
    fails(&alice, &["request", "deny", &rid, "--comment", "mine"], 3);
    let denied = ok(
        &bob,
        &["request", "deny", &rid, "--comment", "role retired"],
    );
    assert_eq!(denied["state"], "denied", "{denied}");
    assert_eq!(audit_records(&admin, "request.denied").len(), 1);
}

/// A reload that changes a role's tier and lowers its maximum TTL under a pending request
/// leaves it to the reviewers its tier named, who may deny it; and an approval that could never
/// complete a request (no one left to fill its places) is refused, not stored.
#[test]
fn a_request_no_one_may_grant_now_is_denied_by_its_reviewers_and_approved_by_none() {
    let rules = RULES.replace("@pending_timeout(\"3s\")", "@pending_timeout(\"1h\")");
    let env = Env::start_with(&[("targets.toml", TARGETS), ("access.cedar", &rules)], &[]);
    let (alice, bob, admin) = (env.login("alice"), env.login("bob"), env.login("admin"));
    let rid = id(&create(
        &alice,
        "web",
        "deploy",
        &["--ticket", "CHG-9", "--ttl", "3h"],
    ));
    let stricter = rules.replace(
        "@approval(\"peer(sre)\")\n@max_ttl(\"4h\")",
        "@approval(\"manager\")\n@max_ttl(\"1h\")",
    );
    assert_ne!(stricter, rules);
    write_policy(&env.policy_dir(), &[("access.cedar", &stricter)]);
    ok(&admin, &["policy", "reload"]);
    let listed = ok(&bob, &["request", "list", "--reviewable"]);
    assert_eq!(listed["requests"][0]["id"], rid.as_str(), "{listed}");
    let denied = ok(&bob, &["request", "deny", &rid, "--comment", "too long"]);
    assert_eq!(denied["state"], "denied", "{denied}");

    // sam is the only security approver: offboarded, a two-person request waits for no one.
    let root = id(&create(&alice, "web", "root", &[]));
    ok(&admin, &["revoke", "--user", "sam", "--all"]);
    // `targets` marks the role whose requests would be refused for it, and only that one.
    let listed = ok(&alice, &["targets"]);
    for option in listed["targets"].as_array().unwrap() {
        let why = option["unapprovable"].as_str().unwrap_or_default();
        match option["role"].as_str() {
            Some("root") => assert!(why.contains("no one in the directory"), "{listed}"),
            _ => assert_eq!(option["unapprovable"], serde_json::Value::Null, "{listed}"),
        }
    }
    let table = alice.run(&["targets"], None);
    assert!(
        table.stdout.contains("(no approver)")
            && table
                .stdout
                .contains("web as root: no one in the directory"),
        "{table:?}"
    );
    let out = fails(&bob, &["request", "approve", &root], 3);
    assert!(
        out.stderr.contains("no one in the directory")
            && out.stderr.contains("can only be denied or cancelled"),
        "{out:?}"
    );
    let shown = ok(&alice, &["request", "show", &root]);
    assert_eq!(shown["state"], "pending", "{shown}");
    assert_eq!(shown["reviews"], serde_json::json!([]), "{shown}");
    let refused = audit_values(&admin, "request.review_refused", "/outcome/code");
    assert_eq!(refused, ["not_permitted"], "{refused:?}");
}

/// One person's requests waiting for approval are bounded: past the bound a new one is
/// refused, and audited, until one of theirs is cancelled, even when many arrive at once; one
/// granted at once never waits, so it is never counted.
#[test]
fn one_persons_waiting_requests_are_bounded() {
    let env = Env::start();
    let (alice, admin) = (env.login("alice"), env.login("admin"));
    let port = env.server.port();
    let alice_token = token(&alice);
    let keys = tempfile::tempdir().unwrap();
    let body = request_body(keys.path(), "web", "root", "many");
    let mut made = Vec::new();
    for _ in 0..92 {
        let (status, out) = post(port, "/v1/requests", Some(&alice_token), &body);
        assert_eq!(status, 201, "{out}");
        made.push(serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"].clone());
    }
    // Sixteen at once for the last eight places.
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let all: Vec<_> = (0..16)
            .map(|_| s.spawn(|| post(port, "/v1/requests", Some(&alice_token), &body).0))
            .collect();
        all.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let granted = statuses.iter().filter(|s| **s == 201).count();
    assert_eq!(granted, 8, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 8);
    let (status, out) = post(port, "/v1/requests", Some(&alice_token), &body);
    assert_eq!(status, 409, "{out}");
    assert!(
        out.contains("too_many_pending") && out.contains("warden request cancel"),
        "{out}"
    );
    let refused = audit_values(&admin, "request.refused", "/outcome/code");
    assert_eq!(refused, ["too_many_pending"; 9], "{refused:?}");
    let view = create(&alice, "web", "view", &[]);
    assert_eq!(view["state"], "active", "{view}");
    ok(&alice, &["request", "cancel", made[0].as_str().unwrap()]);
    let (status, out) = post(port, "/v1/requests", Some(&alice_token), &body);
    assert_eq!(status, 201, "{out}");
}

/// A request whose deadline passed while the server was down timed out then: approvals a
/// new tier finds enough at the restart do not grant it.
#[test]
fn a_request_past_its_deadline_is_not_granted_at_restart() {
    let two_person = RULES.replace(
        "@approval(\"two-person(security)\")",
        "@approval(\"two-person(security)\")\n@pending_timeout(\"3s\")",
    );
    assert_ne!(two_person, RULES);
    let mut env = Env::start_with(
        &[("targets.toml", TARGETS), ("access.cedar", &two_person)],
        &[],
    );
    let (alice, sam) = (env.login("alice"), env.login("sam"));
    let rid = id(&create(&alice, "web", "root", &[]));
    let partial = ok(&sam, &["request", "approve", &rid]);
    assert_eq!(partial["state"], "pending", "{partial}");
    assert!(env.server.terminate().success());
    // sam's approval alone is enough under the new tier, but the deadline has passed.
    write_policy(
        &env.policy_dir(),
        &[(
            "access.cedar",
            &two_person.replace("two-person(security)", "peer(security)"),
        )],
    );
    std::thread::sleep(std::time::Duration::from_secs(4));
    env.server.restart();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while state(&alice, &rid) == "pending" {
        assert!(std::time::Instant::now() < deadline, "never timed out");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(state(&alice, &rid), "timed-out");
    let admin = env.login("admin");
    let actions: Vec<String> = audit_actions(&admin, &rid)
        .into_iter()
        .map(|a| a.0)
        .collect();
    assert!(
        !actions.iter().any(|a| a == "grant.activated"),
        "{actions:?}"
    );
    // The timeout names its deadline and the rules that set it.
    let timed_out = audit_events(&admin, "request.timed_out");
    let shown = ok(&alice, &["request", "show", &rid]);
    assert_eq!(
        timed_out[0]["details"]["rules"], shown["rules"],
        "{timed_out:?}"
    );
    assert!(
        timed_out[0]["details"]["deadline"].is_string(),
        "{timed_out:?}"
    );
}

/// `request create --json` of a deploy with `ticket`, waiting up to `timeout` seconds for its
/// decision.
fn create_and_wait<'a>(ticket: &'a str, timeout: &'a str) -> [&'a str; 15] {
    [
        "--json",
        "request",
        "create",
        "web",
        "--role",
        "deploy",
        "--reason",
        "r",
        "--ttl",
        "1h",
        "--ticket",
        ticket,
        "--wait",
        "--wait-timeout",
        timeout,
    ]
}

/// `--wait` rides out a restart of the server: the request waits on, and so does the client.
#[test]
fn waiting_for_approval_rides_out_a_server_restart() {
    let rules = RULES.replace("@pending_timeout(\"3s\")", "@pending_timeout(\"1h\")");
    let mut env = Env::start_with(&[("targets.toml", TARGETS), ("access.cedar", &rules)], &[]);
    let (alice, bob) = (env.login("alice"), env.login("bob"));
    let waiting = std::thread::spawn(move || alice.run(&create_and_wait("CHG-11", "60"), None));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let rid = loop {
        let listed = ok(&bob, &["request", "list", "--reviewable"]);
        if let Some(r) = listed["requests"].as_array().unwrap().first() {
            break r["id"].as_str().unwrap().to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no request to wait on"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(env.server.terminate().success());
    std::thread::sleep(std::time::Duration::from_millis(1500));
    env.server.restart();
    ok(&bob, &["request", "approve", &rid]);
    let out = waiting.join().unwrap();
    assert!(out.success(), "{out:?}");
    // With --json the wait says nothing on its way: stdout is the request, stderr is empty.
    assert!(out.stderr.is_empty(), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (v["id"].as_str(), v["state"].as_str()),
        (Some(rid.as_str()), Some("active"))
    );

    // Given up, the wait still hands a script the request as it stands, then fails.
    let alice = env.login("alice");
    let out = fails(&alice, &create_and_wait("CHG-13", "1"), 1);
    let pending: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(pending["state"], "pending", "{out:?}");
    let error: serde_json::Value = serde_json::from_str(out.stderr.trim()).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains(pending["id"].as_str().unwrap()),
        "{out:?}"
    );

    // Stopped with Ctrl-C, likewise: the request as it stands, and what to do with it.
    let waiting = spawn_wait(&alice, "CHG-14");
    reviewable(&bob, "CHG-14");
    let out = interrupted(waiting);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let pending: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pending["state"], "pending", "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stopped waiting") && stderr.contains("request cancel"),
        "{stderr}"
    );

    // A request withdrawn while waited on ends the wait as a refusal: no access came of it.
    let waiter = env.login("alice");
    let waiting = std::thread::spawn(move || waiter.run(&create_and_wait("CHG-15", "60"), None));
    let rid = reviewable(&bob, "CHG-15");
    ok(&bob, &["request", "revoke", &rid, "--comment", "withdrawn"]);
    let out = waiting.join().unwrap();
    assert_eq!(out.code, 3, "{out:?}");
    let ended: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(ended["state"], "revoked", "{out:?}");

    // A server that hangs does not hold the wait past its deadline.
    let mut waiting = std::process::Command::new(BIN)
        .args(create_and_wait("CHG-17", "2"))
        .env("WARDEN_SERVER", alice.server_url())
        .env("WARDEN_HOME", alice.home())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    reviewable(&bob, "CHG-17");
    let pid = env.server.pid().to_string();
    let signal = |which: &str| {
        let sent = std::process::Command::new("kill")
            .args([which, &pid])
            .status();
        assert!(sent.unwrap().success());
    };
    signal("-STOP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while waiting.try_wait().unwrap().is_none() {
        if std::time::Instant::now() >= deadline {
            signal("-CONT");
            panic!("the wait outlived its deadline by far");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    signal("-CONT");
    let out = waiting.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stopped waiting after 2s"),
        "{out:?}"
    );

    // Stopped while the server is down: at once, with the request as last seen.
    let waiting = spawn_wait(&alice, "CHG-16");
    let rid = reviewable(&bob, "CHG-16");
    env.server.kill_hard();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let out = interrupted(waiting);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (seen["id"].as_str(), seen["state"].as_str()),
        (Some(rid.as_str()), Some("pending")),
        "{out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did not answer"),
        "{out:?}"
    );
}

/// `request create --wait --json` for a request with `ticket`, made by `cli` and running.
fn spawn_wait(cli: &warden_testkit::Cli, ticket: &str) -> std::process::Child {
    std::process::Command::new(BIN)
        .args(create_and_wait(ticket, "60"))
        .env("WARDEN_SERVER", cli.server_url())
        .env("WARDEN_HOME", cli.home())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The id of the request with `ticket` once `reviewer` can review it (within 20 s).
fn reviewable(reviewer: &warden_testkit::Cli, ticket: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let found = ok(reviewer, &["request", "list", "--reviewable"])["requests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["ticket"] == ticket)
            .map(|r| r["id"].as_str().unwrap().to_owned());
        if let Some(id) = found {
            return id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no request to wait on"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Sends Ctrl-C to `waiting` and collects its output; it must end within 10 s.
fn interrupted(mut waiting: std::process::Child) -> std::process::Output {
    let signalled = std::process::Command::new("kill")
        .args(["-INT", &waiting.id().to_string()])
        .status();
    assert!(signalled.unwrap().success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while waiting.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the wait went on after Ctrl-C"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    waiting.wait_with_output().unwrap()
}

/// An extension continues an active grant: once the grant has ended by its time, its pending
/// extension can no longer be approved, and Warden withdraws it from the approvers' queues.
#[test]
fn an_extension_of_an_expired_grant_is_not_approved() {
    let rules = RULES.replace("@pending_timeout(\"3s\")", "@pending_timeout(\"1h\")");
    let env = Env::start_with(&[("targets.toml", TARGETS), ("access.cedar", &rules)], &[]);
    let (alice, bob) = (env.login("alice"), env.login("bob"));
    let short = id(&create(
        &alice,
        "web",
        "deploy",
        &["--ticket", "CHG-12", "--ttl", "6s"],
    ));
    ok(&bob, &["request", "approve", &short]);
    let more = id(&ok(&alice, &["request", "extend", &short, "--ttl", "1h"]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while state(&alice, &short) != "expired" {
        assert!(std::time::Instant::now() < deadline, "never expired");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = fails(&bob, &["request", "approve", &more], 6);
    // Refused as extending an expired grant, or, once the worker has been by, as withdrawn.
    assert!(
        out.stderr.contains("which is expired") || out.stderr.contains("is revoked"),
        "{out:?}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while state(&alice, &more) == "pending" {
        assert!(std::time::Instant::now() < deadline, "never withdrawn");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let withdrawn = ok(&alice, &["request", "show", &more]);
    assert_eq!(withdrawn["state"], "revoked", "{withdrawn}");
    assert!(
        withdrawn["end_comment"]
            .as_str()
            .unwrap()
            .contains("expired before it was approved"),
        "{withdrawn}"
    );
    let queue = ok(&bob, &["request", "list", "--reviewable"]);
    assert_eq!(queue["requests"], serde_json::json!([]), "{queue}");
}

#[test]
fn pending_requests_time_out() {
    let env = Env::start();
    let alice = env.login("alice");
    let bob = env.login("bob");
    let rid = id(&create(&alice, "web", "deploy", &["--ticket", "CHG-2"]));
    // The test policy gives deploy requests 3 s to be approved.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while state(&alice, &rid) == "pending" {
        assert!(
            std::time::Instant::now() < deadline,
            "request never timed out"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(state(&alice, &rid), "timed-out");
    // Refused as one past its deadline is before its time-out is recorded: one code.
    let late = fails(&bob, &["--json", "request", "approve", &rid], 6);
    let late: serde_json::Value = serde_json::from_str(&late.stderr).unwrap();
    assert_eq!(late["error"]["code"], "timed_out", "{late}");
}

#[test]
fn bad_input_is_refused_clearly_and_audited() {
    let env = Env::start();
    let alice = env.login("alice");
    let admin = env.login("admin");
    let admin_token = token(&admin);
    // A private key given for a public one never leaves the machine, break-glass included.
    let keys = tempfile::tempdir().unwrap();
    let (private, _) = warden_testkit::ssh_keypair(keys.path(), "mine");
    let private = private.to_str().unwrap();
    for command in [
        &[
            "request", "create", "web", "--role", "view", "--reason", "x", "--ttl", "1h",
        ][..],
        &["breakglass", "web", "--role", "root", "--reason", "x"][..],
    ] {
        let out = fails(&alice, &[command, &["--public-key", private]].concat(), 2);
        assert!(out.stderr.contains("never leaves your machine"), "{out:?}");
    }
    let out = fails(
        &alice,
        &[
            "request",
            "create",
            "web",
            "--role",
            "view",
            "--reason",
            "x",
            "--ttl",
            "1h",
            "--wait",
            "--wait-timeout",
            "18446744073709551615",
        ],
        2,
    );
    assert!(out.stderr.contains("ceiling of 30d"), "{out:?}");
    // A WARDEN_SERVER set but empty (a CI variable) is unset: the saved login's server is used.
    let empty = std::process::Command::new(BIN)
        .args(["--json", "whoami"])
        .env("WARDEN_SERVER", "")
        .env("WARDEN_HOME", alice.home())
        .output()
        .unwrap();
    assert!(empty.status.success(), "{empty:?}");
    // Set, it is the server, and no usage line shows `--server` as if it were required.
    let set = std::process::Command::new(BIN)
        .args(["request", "approve"])
        .env("WARDEN_SERVER", alice.server_url())
        .env("WARDEN_HOME", alice.home())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&set.stderr);
    assert!(
        said.contains("Usage: warden request approve <ID>"),
        "{said}"
    );
    // Arguments that do not parse get the same error envelope as any failure under --json.
    let out = alice.run(&["--json", "request", "create", "web"], None);
    assert_eq!(out.code, 2, "{out:?}");
    let e: serde_json::Value = serde_json::from_str(out.stderr.trim()).unwrap();
    assert_eq!(e["error"]["code"], "usage", "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("--role"),
        "{e}"
    );
    // A group called without its subcommand says so, and names them.
    let out = alice.run(&["--json", "request"], None);
    assert_eq!(out.code, 2, "{out:?}");
    let e: serde_json::Value = serde_json::from_str(out.stderr.trim()).unwrap();
    let said = e["error"]["message"].as_str().unwrap();
    assert!(
        said.contains("warden request") && said.contains("subcommand") && said.contains("approve"),
        "{e}"
    );
    let out = std::process::Command::new(BIN)
        .args(["--json", "request"])
        .env_remove("WARDEN_SERVER")
        .env("WARDEN_HOME", alice.home())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("`warden request` needs a subcommand") && said.contains("approve"),
        "{said}"
    );
    // A wait of zero is no wait: refused before anything is made.
    let out = fails(
        &alice,
        &[
            "request",
            "create",
            "web",
            "--role",
            "view",
            "--reason",
            "x",
            "--ttl",
            "1h",
            "--wait",
            "--wait-timeout",
            "0",
        ],
        2,
    );
    assert!(out.stderr.contains("longer than zero"), "{out:?}");
    // Free text may begin with a hyphen, given with `=` (the request is then judged, here for
    // its role), as the refusal of it given otherwise says; a negative TTL so given reaches the
    // TTL's own check. A forgotten value never takes the next option as its text.
    let out = fails(
        &alice,
        &[
            "request",
            "create",
            "web",
            "--role",
            "view",
            "--reason",
            "-1 node down",
            "--ttl",
            "1h",
        ],
        2,
    );
    assert!(out.stderr.contains("--reason='-1"), "{out:?}");
    let out = fails(
        &alice,
        &[
            "request",
            "create",
            "web",
            "--role",
            "nope",
            "--reason=-1 node down",
            "--ttl",
            "1h",
        ],
        4,
    );
    assert!(out.stderr.contains("has no role"), "{out:?}");
    let out = fails(
        &alice,
        &[
            "request",
            "create",
            "web",
            "--role",
            "view",
            "--reason",
            "x",
            "--ttl=-1h",
        ],
        2,
    );
    assert!(out.stderr.contains("is not a duration"), "{out:?}");
    fails(
        &alice,
        &[
            "request", "create", "web", "--role", "view", "--ttl", "1h", "--reason", "--wait",
        ],
        2,
    );
    let base = ["request", "create", "web"];
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec![
                "request", "create", "nope", "--role", "view", "--reason", "x", "--ttl", "1h",
            ],
            4,
            "unknown target",
        ),
        (
            vec![
                "request", "create", "web", "--role", "nope", "--reason", "x", "--ttl", "1h",
            ],
            4,
            "has no role `nope`: `warden targets` lists what you may request",
        ),
        (
            vec![
                "request", "create", "web", "--role", "view", "--reason", "x", "--ttl", "2h",
            ],
            3,
            "maximum of 1h",
        ),
        (
            vec![
                "request", "create", "web", "--role", "view", "--reason", "x", "--ttl", "0s",
            ],
            2,
            "longer than zero",
        ),
        (
            vec![
                "request", "create", "web", "--role", "view", "--reason", "x", "--ttl", "soon",
            ],
            2,
            "not a duration",
        ),
        (
            vec![
                "request", "create", "web", "--role", "view", "--reason", "  ", "--ttl", "1h",
            ],
            2,
            "reason is required",
        ),
        (
            vec![
                "request", "create", "web", "--role", "deploy", "--reason", "x", "--ttl", "1h",
            ],
            3,
            "CHG-[0-9]+",
        ),
        (
            vec![
                "request", "create", "web", "--role", "deploy", "--reason", "x", "--ttl", "1h",
                "--ticket", "INC-1",
            ],
            3,
            "CHG-[0-9]+",
        ),
        (
            vec![
                "request", "create", "web", "--role", "Bad Role", "--reason", "x", "--ttl", "1h",
            ],
            2,
            "invalid role name",
        ),
        (vec!["request", "show", "not-a-uuid"], 2, "not a request id"),
        (vec!["request", "cancel", ""], 2, "not a request id"),
        (
            vec!["request", "show", "01a20188-1453-76f0-a513-ced885409e28"],
            4,
            "not found",
        ),
    ];
    for (args, code, needle) in &cases {
        let out = fails(&alice, args, *code);
        assert!(out.stderr.contains(needle), "`{}`: {out:?}", args.join(" "));
    }
    // An unknown role is told apart from an unknown target.
    let out = alice.run(
        &[
            "--json", "request", "create", "web", "--role", "nope", "--reason", "x", "--ttl", "1h",
        ],
        None,
    );
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stderr.contains("\"unknown_role\""), "{out:?}");
    let long_reason = "r".repeat(5000);
    let mut args = base.to_vec();
    args.extend_from_slice(&["--role", "view", "--ttl", "1h", "--reason", &long_reason]);
    assert!(fails(&alice, &args, 2).stderr.contains("limit is 1000"));
    let mut args = base.to_vec();
    args.extend_from_slice(&["--role", "view", "--ttl", "1h", "--reason", "a\u{7}b"]);
    assert!(
        fails(&alice, &args, 2)
            .stderr
            .contains("a control character (U+0007)")
    );

    // Nothing was created, and every refusal is in the audit log.
    assert_eq!(
        ok(&alice, &["request", "list"])["requests"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let log = ok(
        &admin,
        &["audit", "search", "--user", "alice", "--limit", "1000"],
    );
    let refusals = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"]["outcome"]["result"] == "denied")
        .count();
    assert!(refusals >= 12, "only {refusals} refusals audited: {log}");

    // Raw API: malformed JSON, unknown fields, oversize bodies, bad tokens.
    let token = &token(&alice);
    let port = env.server.port();
    // A server address that is not a URL, and one the saved login is not for.
    let out = alice.run(&["whoami", "--server", &format!("127.0.0.1:{port}")], None);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("http://HOST:PORT"), "{out:?}");
    let out = alice.run(
        &["whoami", "--server", &format!("http://localhost:{port}")],
        None,
    );
    assert_eq!(out.code, 5, "{out:?}");
    assert!(out.stderr.contains("saved login is for"), "{out:?}");
    // The saved login's URL with `/v1` pasted after it: the path is what is wrong.
    let out = alice.run(
        &["whoami", "--server", &format!("{}/v1", env.server.url())],
        None,
    );
    assert_eq!(out.code, 5, "{out:?}");
    assert!(
        out.stderr
            .contains("has a path, /v1: the client adds /v1/… itself"),
        "{out:?}"
    );
    let (status, body) = post(port, "/v1/requests", Some(token), "{not json");
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "bad_json");
    let (status, body) = post(
        port,
        "/v1/requests",
        Some(token),
        r#"{"target":"web","role":"view","reason":"x","ttl":"1h","admin":true}"#,
    );
    assert_eq!(
        (status, error_code(&body).as_str()),
        (400, "bad_json"),
        "{body}"
    );
    // A value in the wrong shape is refused by its kind, never echoed into the audited
    // refusal: here a password sent as a bare string.
    let r = request(
        port,
        "PUT",
        "/v1/users/alice/password",
        Some(&admin_token),
        r#""Leak-Me-Password-1""#,
    );
    assert_eq!(
        (r.0, error_code(&r.1).as_str()),
        (400, "bad_json"),
        "{}",
        r.1
    );
    assert!(!r.1.contains("Leak-Me"), "{}", r.1);
    let refusals = ok(
        &admin,
        &["audit", "search", "--code", "request.action_refused"],
    );
    assert!(!refusals.to_string().contains("Leak-Me"), "{refusals}");
    let refusals = refusals.to_string();
    assert!(
        refusals.contains("must be a JSON object") && refusals.contains("not a string"),
        "{refusals}"
    );
    // A key line whose comment would rewrite a terminal, for proxy login or a grant.
    let keys = tempfile::tempdir().unwrap();
    let (_, line) = warden_testkit::ssh_keypair(keys.path(), "comment");
    let forged = format!("{} evil\u{1b}[2J\u{202e}gnp", line.trim());
    let body = serde_json::json!({ "public_key": forged, "proof": "-" }).to_string();
    let (status, body) = post(port, "/v1/ssh/keys", Some(token), &body);
    assert_eq!(
        (status, error_code(&body).as_str()),
        (400, "bad_public_key"),
        "{body}"
    );
    let grant = serde_json::json!({
        "target": "web", "role": "view", "reason": "x", "ttl": "10m", "public_key": forged,
    })
    .to_string();
    let (status, body) = post(port, "/v1/requests", Some(token), &grant);
    assert_eq!(status, 400, "{body}");
    // A body that is not sent as JSON.
    let r = request_with_type(port, "/v1/requests", token, "text/plain", "{}");
    assert_eq!(
        (r.0, error_code(&r.1).as_str()),
        (415, "unsupported_media_type"),
        "{}",
        r.1
    );
    let big = format!(
        r#"{{"target":"web","role":"view","reason":"{}","ttl":"1h"}}"#,
        "x".repeat(100_000)
    );
    let (status, _) = post(port, "/v1/requests", Some(token), &big);
    assert_eq!(status, 413);
    let (status, body) = post(port, "/v1/requests", Some("wdn_forged"), "{}");
    assert_eq!(
        (status, error_code(&body).as_str()),
        (401, "unauthenticated")
    );
    let (status, _) = post(port, "/v1/requests", None, "{}");
    assert_eq!(status, 401);
    // A path or query that does not parse, or a method the path lacks: JSON errors too.
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    // The scheme's name is case-insensitive.
    let lower = format!("bearer {token}");
    let r = warden_testkit::http_get_with(port, "/v1/auth/whoami", &[("Authorization", &lower)]);
    assert_eq!(r.unwrap().status, 200);
    let admin_bearer = format!("Bearer {admin_token}");
    let admin_auth = [("Authorization", admin_bearer.as_str())];
    for (path, by, status, code) in [
        ("/v1/requests/not-a-uuid", &auth, 400, "bad_id"),
        (
            "/v1/audit/proof/99999999999999999999",
            &admin_auth,
            400,
            "bad_path",
        ),
        ("/v1/audit/proof/abc", &admin_auth, 400, "bad_path"),
        ("/v1/audit/proof/1", &auth, 403, "not_permitted"),
        ("/v1/audit/consistency?from=1", &auth, 403, "not_permitted"),
        ("/v1/requests?limit=-1", &auth, 400, "bad_query"),
        ("/v1/requests?sate=active", &auth, 400, "bad_query"),
        // An endpoint that takes no parameters ignores none either.
        ("/v1/targets?environment=prod", &auth, 400, "bad_query"),
        ("/v1/audit?limit=0", &auth, 400, "bad_limit"),
    ] {
        let r = warden_testkit::http_get_with(port, path, by).unwrap();
        assert_eq!(
            (r.status, error_code(&r.body).as_str()),
            (status, code),
            "{path}: {}",
            r.body
        );
        if code == "bad_path" {
            assert!(r.body.contains("a whole number from 1"), "{}", r.body);
        }
    }
    // Reads change nothing, but their refusals are audited like those of writes.
    let refused = audit_values(&admin, "request.action_refused", "/details/action");
    for action in [
        "request.show",
        "audit.prove",
        "audit.prove_consistency",
        "request.list",
        "audit.search",
    ] {
        assert!(refused.iter().any(|a| a == action), "{action}: {refused:?}");
    }
    let (status, body) = post(port, "/v1/requests/not-a-uuid", Some(token), "{}");
    assert_eq!(
        (status, error_code(&body).as_str()),
        (405, "method_not_allowed"),
        "{body}"
    );
    // The server keeps serving.
    assert_eq!(
        warden_testkit::http_get(port, "/healthz").unwrap().status,
        200
    );
    let rejected = ok(
        &admin,
        &["audit", "search", "--code", "auth.token_rejected"],
    );
    assert!(!rejected["events"].as_array().unwrap().is_empty());
    // A call with no bearer token (a password tried as Basic, say) is on the record too.
    let basic = warden_testkit::http_get_with(
        port,
        "/v1/auth/whoami",
        &[("Authorization", "Basic YWRtaW46d2FyZGVuLWRldg==")],
    )
    .unwrap();
    assert_eq!(basic.status, 401, "{}", basic.body);
    assert!(
        basic
            .headers
            .iter()
            .any(|(k, v)| k == "www-authenticate" && v.starts_with("Bearer")),
        "{:?}",
        basic.headers
    );
    let codes = audit_values(&admin, "auth.token_rejected", "/outcome/code");
    assert!(codes.iter().any(|c| c == "no_token"), "{codes:?}");
    // Two Authorization headers are refused, even with a good token among them.
    let two = warden_testkit::http_get_with(
        port,
        "/v1/auth/whoami",
        &[
            ("Authorization", bearer.as_str()),
            ("Authorization", "Bearer wdn_not_a_token"),
        ],
    )
    .unwrap();
    assert_eq!(two.status, 401, "{}", two.body);
}

#[test]
fn an_interactive_login_asks_for_the_totp_code() {
    use std::time::Duration;
    let env = Env::start();
    let uri = enroll_mfa(&env.login("alice"));
    let fresh = env.server.cli();
    let tty = warden_testkit::Tmux::start(&format!(
        "WARDEN_HOME={} WARDEN_SERVER={} {BIN} login --user alice",
        fresh.home().display(),
        fresh.server_url()
    ));
    tty.wait_for("Password:", 1, Duration::from_secs(10));
    tty.send_line(PASSWORD);
    tty.wait_for("TOTP code:", 1, Duration::from_secs(10));
    tty.send_line(&totp(&uri, 1));
    tty.wait_for("Logged in", 1, Duration::from_secs(10));
    let me = ok(&fresh, &["whoami"]);
    assert_eq!(me["user"], "alice");
    let until = time::OffsetDateTime::parse(
        me["token_expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(until > time::OffsetDateTime::now_utc(), "{me}");
    // The first try, without the code, is audited apart from wrong answers.
    let admin = env.login("admin");
    let codes = audit_values(&admin, "auth.login_failed", "/outcome/code");
    assert_eq!(codes, ["totp_required"]);
    // Scripts that pipe the password get the error at once, not a prompt.
    let piped = sign_in(&env.server.cli(), "alice", PASSWORD, None);
    assert_eq!(piped.code, 5, "{piped:?}");
    assert!(piped.stderr.contains("--totp"), "{piped:?}");
    // Without the code, a wrong password is answered as any wrong password is: the code is
    // asked for only once the password is right, so the answer tells no one who has a factor.
    let guessed = sign_in(&env.server.cli(), "alice", "not her password 123", None);
    assert_eq!(guessed.code, 5, "{guessed:?}");
    assert!(!guessed.stderr.contains("--totp"), "{guessed:?}");
    let unknown = sign_in(&env.server.cli(), "nobody", "not her password 123", None);
    assert_eq!(
        (guessed.code, &guessed.stderr),
        (unknown.code, &unknown.stderr)
    );
}

/// A new password from an administrator ends the sessions of the old one.
#[test]
fn a_new_password_ends_the_old_sessions() {
    let env = Env::start();
    let alice = env.login("alice");
    let old = token(&alice);
    let admin = env.login("admin");
    let reset = admin.run(
        &["user", "set-password", "alice", "--password-stdin"],
        Some("alice's fresh password 1"),
    );
    assert!(reset.success(), "{reset:?}");
    let (status, _) = get(env.server.port(), "/v1/auth/whoami", Some(&old));
    assert_eq!(status, 401);
    let again = alice.run(
        &["login", "--user", "alice", "--password-stdin"],
        Some("alice's fresh password 1"),
    );
    assert!(again.success(), "{again:?}");
    assert_eq!(ok(&alice, &["whoami"])["user"], "alice");
    let why = audit_values(&admin, "auth.tokens_revoked", "/details/why");
    assert_eq!(why, ["a new password was set"]);
    // The audit table names whom such an event is about, not only who acted.
    let table = admin.run(&["audit", "search", "--code", "auth.password_set"], None);
    assert!(table.stdout.contains("admin → alice"), "{table:?}");
    assert!(!reset.stdout.contains("sign in again"), "{reset:?}");

    // One's own new password ends this session too, and the client says so and forgets it.
    let own = admin.run(
        &["user", "set-password", "admin", "--password-stdin"],
        Some(&format!("{PASSWORD}\nadmin's fresh password 1")),
    );
    assert!(own.success(), "{own:?}");
    assert!(own.stdout.contains("sign in again"), "{own:?}");
    assert!(!admin.home().join("credentials.json").exists());
}

/// A saved login past its expiry is not sent: the client says it expired, a new login
/// replaces it without a refused call, and logout only removes it. Nothing is counted against
/// the address.
#[test]
fn an_expired_login_is_not_sent() {
    let env = Env::start();
    let alice = env.login("alice");
    let admin = env.login("admin");
    let saved = alice.home().join("credentials.json");
    let expire = || {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
        v["expires_at"] = "2020-01-01T00:00:00Z".into();
        std::fs::write(&saved, v.to_string()).unwrap();
    };
    expire();
    let out = fails(&alice, &["whoami"], 5);
    assert!(out.stderr.contains("expired at 2020-01-01"), "{out:?}");
    let again = alice.run(
        &["login", "--user", "alice", "--password-stdin"],
        Some(PASSWORD),
    );
    assert!(again.success(), "{again:?}");
    ok(&alice, &["whoami"]);
    expire();
    let out = alice.run(&["logout"], None);
    assert!(out.success(), "{out:?}");
    assert!(
        out.stdout.contains("Removed the expired saved login"),
        "{out:?}"
    );
    assert!(!saved.exists());
    assert!(audit_events(&admin, "auth.token_rejected").is_empty());
}

/// Logins run at once into one home (a CI job's parallel steps) take turns: each revokes the
/// one it replaced, so only the saved one is left working.
#[test]
fn logins_at_once_into_one_home_leave_one_token() {
    let env = Env::start();
    let bob = env.login("bob");
    let admin = env.login("admin");
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    bob.run(
                        &["login", "--user", "bob", "--password-stdin"],
                        Some(PASSWORD),
                    )
                })
            })
            .collect();
        for run in runs {
            let out = run.join().unwrap();
            assert!(out.success(), "{out:?}");
        }
    });
    ok(&bob, &["whoami"]);
    // Seven logins in all (the first, then six at once): six revoked, each once.
    let revoked = audit_events(&admin, "auth.logout")
        .iter()
        .filter(|e| e["actor"]["user"] == "bob")
        .count();
    assert_eq!(revoked, 6);
    assert!(audit_events(&admin, "auth.token_rejected").is_empty());
}

#[test]
fn logout_revokes_the_token() {
    let mut env = Env::start();
    let alice = env.login("alice");
    let first = token(&alice);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(alice.home().join("credentials.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Widened by someone, it is made private again at the next use, saying so.
    let saved = alice.home().join("credentials.json");
    std::fs::set_permissions(&saved, std::fs::Permissions::from_mode(0o644)).unwrap();
    let used = alice.run(&["whoami"], None);
    assert!(used.success(), "{used:?}");
    assert!(used.stderr.contains("was readable by others"), "{used:?}");
    let mode = std::fs::metadata(&saved).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Signing in again revokes the login it replaces, not left working in no one's hands.
    let again = alice.run(
        &["login", "--user", "alice", "--password-stdin"],
        Some(PASSWORD),
    );
    assert!(again.success(), "{again:?}");
    let (status, _) = get(env.server.port(), "/v1/auth/whoami", Some(&first));
    assert_eq!(status, 401);
    // So does one for a server named otherwise: the login replaced is revoked where it was for.
    let second = token(&alice);
    let elsewhere_url = format!("http://localhost:{}", env.server.port());
    let other = alice.run(
        &[
            "login",
            "--server",
            &elsewhere_url,
            "--user",
            "alice",
            "--password-stdin",
        ],
        Some(PASSWORD),
    );
    assert!(other.success(), "{other:?}");
    let (status, _) = get(env.server.port(), "/v1/auth/whoami", Some(&second));
    assert_eq!(status, 401);
    let back = alice.run(
        &[
            "login",
            "--server",
            &env.server.url(),
            "--user",
            "alice",
            "--password-stdin",
        ],
        Some(PASSWORD),
    );
    assert!(back.success(), "{back:?}");
    // A login is written to a file of its own: never through a link left where its temporary
    // file goes (into a file others can read), nor through a link at the saved login itself.
    let elsewhere = env.dir.path().join("elsewhere.txt");
    std::fs::write(&elsewhere, "x").unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(&elsewhere, alice.home().join("credentials.tmp")).unwrap();
    std::fs::remove_file(&saved).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &saved).unwrap();
    let used = alice.run(&["whoami"], None);
    assert!(
        used.stderr.contains("is a link to another file"),
        "{used:?}"
    );
    let again = alice.run(
        &["login", "--user", "alice", "--password-stdin"],
        Some(PASSWORD),
    );
    assert!(again.success(), "{again:?}");
    assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "x");
    let meta = std::fs::symlink_metadata(&saved).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let token = token(&alice);
    // A logout the server does not hear revokes nothing: said so, and the token kept to try
    // again.
    assert!(env.server.terminate().success());
    let out = fails(&alice, &["logout"], 7);
    assert!(out.stderr.contains("was not revoked"), "{out:?}");
    assert!(alice.home().join("credentials.json").exists());
    env.server.restart();
    ok(&alice, &["logout"]);
    let (status, _) = get(env.server.port(), "/v1/auth/whoami", Some(&token));
    assert_eq!(status, 401);
    fails(&alice, &["whoami"], 5);
    // Logging out again has nothing to do, and says so.
    let again = ok(&alice, &["logout"]);
    assert_eq!(again["logged_out"], false, "{again}");
    let wrong = alice.run(
        &["login", "--user", "alice", "--password-stdin"],
        Some("wrong password"),
    );
    assert_eq!(wrong.code, 5, "{wrong:?}");

    // A saved login edited by hand or cut short is called damaged, and a new login replaces it.
    let saved = alice.home().join("credentials.json");
    let good = env.login("alice");
    let text = std::fs::read_to_string(good.home().join("credentials.json")).unwrap();
    let broken_token = text.replacen("\"wdn_", "\"wdn_\\n", 1);
    for damaged in [broken_token.as_str(), "{\"server\":"] {
        std::fs::write(&saved, damaged).unwrap();
        let out = fails(&alice, &["whoami"], 5);
        assert!(out.stderr.contains("is damaged"), "{out:?}");
    }
    let again = alice.run(
        &["login", "--user", "alice", "--password-stdin"],
        Some(PASSWORD),
    );
    assert!(again.success(), "{again:?}");
    ok(&alice, &["whoami"]);
}

#[test]
fn offboarding_ends_the_requests_made_while_it_runs() {
    let env = Env::start();
    let port = env.server.port();
    let admin = env.login("admin");
    let alice = env.login("alice");
    let bearer = token(&alice);
    // Enough open grants that offboarding takes a while to end them all.
    for _ in 0..30 {
        create(&alice, "web", "view", &[]);
    }
    let keys = tempfile::tempdir().unwrap();
    let body = request_body(keys.path(), "web", "view", "busy");
    let body = body.as_str();
    let made = std::thread::scope(|s| {
        let busy = s.spawn(|| {
            // Alice's automation keeps asking until her token stops working (bounded).
            let mut made = 0;
            for _ in 0..5000 {
                match post(port, "/v1/requests", Some(&bearer), body).0 {
                    201 => made += 1,
                    401 => return made,
                    other => panic!("unexpected status {other}"),
                }
            }
            panic!("the token still worked after 5000 requests");
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        let out = ok(&admin, &["revoke", "--user", "alice", "--all"]);
        assert!(out["requests_ended"].as_u64().unwrap() >= 30, "{out}");
        busy.join().unwrap()
    });
    assert!(made > 0, "no request was made while offboarding ran");
    // Nor can she sign in again for a new token: her password went with the old ones. Her
    // tries are on the record as such, and lock nothing, however many.
    for _ in 0..6 {
        let again = env.server.cli().run(
            &["login", "--user", "alice", "--password-stdin"],
            Some(PASSWORD),
        );
        assert_eq!(again.code, 5, "{again:?}");
    }
    let codes = audit_values(&admin, "auth.login_failed", "/outcome/code");
    assert_eq!(
        codes.iter().filter(|c| *c == "offboarded").count(),
        6,
        "{codes:?}"
    );
    assert!(audit_values(&admin, "auth.user_locked", "/details/user").is_empty());
    // A name nobody has, nor any open request: a typo, refused with nothing done.
    let typo = fails(&admin, &["revoke", "--user", "alcie", "--all"], 4);
    assert!(typo.stderr.contains("not in the directory"), "{typo:?}");
    // Nor may an administrator offboard themselves: one always remains to undo it.
    let own = fails(&admin, &["revoke", "--user", "admin", "--all"], 3);
    assert!(own.stderr.contains("another administrator"), "{own:?}");
    ok(&admin, &["whoami"]);
    assert_eq!(
        audit_values(&admin, "request.action_refused", "/outcome/code")
            .iter()
            .filter(|c| ["unknown_user", "not_permitted"].contains(&c.as_str()))
            .count(),
        2
    );
    assert_nothing_open(&admin, "alice");
}

#[test]
fn an_offboarded_approvers_approval_no_longer_counts() {
    let rules = RULES.replace("@pending_timeout(\"3s\")", "@pending_timeout(\"1h\")");
    let env = Env::start_with(&[("targets.toml", TARGETS), ("access.cedar", &rules)], &[]);
    let alice = env.login("alice");
    let bob = env.login("bob");
    let mallory = env.login("mallory");
    let sam = env.login("sam");
    let admin = env.login("admin");
    let rid = id(&create(&alice, "web", "root", &[]));
    ok(&bob, &["request", "approve", &rid]);
    // (A role without a short pending timeout, so that it waits out the restart below.)
    let rid2 = id(&create(&alice, "web", "root", &[]));
    let deploy = id(&create(&alice, "web", "deploy", &["--ticket", "CHG-5"]));
    let rid3 = id(&create(&alice, "web", "root", &[]));
    ok(&bob, &["request", "approve", &rid3]);
    // Offboarded (a leaver, a stolen account), bob's approval fills no place any more: the
    // security approval alone does not grant the request.
    ok(&admin, &["revoke", "--user", "bob", "--all"]);
    let voided = audit_events(&admin, "request.approvals_voided");
    assert_eq!(voided.len(), 2, "{voided:?}");
    assert!(
        voided
            .iter()
            .all(|e| e["details"]["approvers"] == serde_json::json!(["bob"])
                && e["details"]["why"] == "offboarded"),
        "{voided:?}"
    );
    // bob was the only SRE: the deploy waiting for one says no one can approve it now.
    let v = ok(&alice, &["request", "show", &deploy]);
    assert!(
        v["unapprovable"]
            .as_str()
            .is_some_and(|w| w.contains("no one in the directory")),
        "{v}"
    );
    let v = ok(&alice, &["request", "show", &rid]);
    assert_eq!(v["still_needed"].as_array().unwrap().len(), 2, "{v}");
    let v = ok(&sam, &["request", "approve", &rid]);
    assert_eq!(v["state"], "pending", "{v}");
    assert_eq!(
        ok(&mallory, &["request", "approve", &rid])["state"],
        "active"
    );
    // The approval on record names those who granted it, not the leaver.
    let approved = audit_events(&admin, "request.approved");
    assert_eq!(
        approved[0]["details"]["approvers"],
        serde_json::json!(["sam", "mallory"]),
        "{approved:?}"
    );
    // bob was the only SRE: a request only an SRE may approve is now refused at once.
    let none = fails(
        &alice,
        &[
            "request", "create", "web", "--role", "deploy", "--reason", "x", "--ttl", "1h",
            "--ticket", "CHG-9",
        ],
        3,
    );
    assert!(none.stderr.contains("no one in the directory"), "{none:?}");
    // Nor after a restart, which reads who was offboarded from the store.
    let mut env = env;
    assert!(env.server.terminate().success());
    env.server.restart();
    let alice = env.login("alice");
    let v = ok(&alice, &["request", "show", &rid2]);
    assert_eq!(v["state"], "pending", "{v}");
    // A new password from an administrator brings bob back; the approvals he gave before were
    // withdrawn, and he approves afresh.
    let admin = env.login("admin");
    let reset = admin.run(
        &["user", "set-password", "bob", "--password-stdin"],
        Some("bob's fresh password 12"),
    );
    assert!(reset.success(), "{reset:?}");
    let bob = env.server.cli();
    let back = bob.run(
        &["login", "--user", "bob", "--password-stdin"],
        Some("bob's fresh password 12"),
    );
    assert!(back.success(), "{back:?}");
    let v = ok(&bob, &["request", "show", &rid3]);
    // Withdrawn, his approval of before stays on record, void.
    assert_eq!(v["reviews"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["reviews"][0]["reviewer"], "bob", "{v}");
    assert_eq!(v["reviews"][0]["void"], true, "{v}");
    assert_eq!(v["still_needed"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(ok(&bob, &["request", "approve", &rid2])["state"], "pending");
    let sam = env.login("sam");
    assert_eq!(ok(&sam, &["request", "approve", &rid2])["state"], "active");
    // An offboarded manager can approve nothing: a request that needs them is refused at once.
    ok(&admin, &["revoke", "--user", "mallory", "--all"]);
    let e = ok(
        &admin,
        &[
            "policy", "explain", "web", "--role", "admin", "--user", "alice",
        ],
    );
    assert!(e["refusals"].to_string().contains("manager"), "{e}");
}

/// Approvals a version that left them in place kept through an offboarding, the user let back
/// in since, are withdrawn at the start: they were given before the offboarding on the record.
#[test]
fn approvals_kept_through_an_offboarding_are_withdrawn_at_start() {
    let rules = RULES.replace("@pending_timeout(\"3s\")", "@pending_timeout(\"1h\")");
    let mut env = Env::start_with(&[("targets.toml", TARGETS), ("access.cedar", &rules)], &[]);
    let (alice, bob, admin) = (env.login("alice"), env.login("bob"), env.login("admin"));
    let rid = id(&create(&alice, "web", "root", &[]));
    let approved = ok(&bob, &["request", "approve", &rid]);
    let review = approved["reviews"][0].clone();
    ok(&admin, &["revoke", "--user", "bob", "--all"]);
    let reset = admin.run(
        &["user", "set-password", "bob", "--password-stdin"],
        Some("bob's fresh password 12"),
    );
    assert!(reset.success(), "{reset:?}");
    assert!(env.server.terminate().success());
    // The request as such a version left it: bob's approval of before still on it.
    let db = rusqlite::Connection::open(env.server.data_dir().join("warden.db")).unwrap();
    let body: String = db
        .query_row("SELECT body FROM requests WHERE id = ?1", [&rid], |r| {
            r.get(0)
        })
        .unwrap();
    let mut r: serde_json::Value = serde_json::from_str(&body).unwrap();
    r["reviews"] = serde_json::json!([{
        "reviewer": {"name": "bob", "groups": ["sre"], "manager": null},
        "verdict": "approve",
        "comment": "",
        "at": review["at"],
    }]);
    db.execute(
        "UPDATE requests SET body = ?1 WHERE id = ?2",
        [r.to_string(), rid.clone()],
    )
    .unwrap();
    drop(db);
    env.server.restart();
    let admin = env.login("admin");
    let voided = audit_events(&admin, "request.approvals_voided");
    assert_eq!(voided.len(), 2, "{voided:?}");
    assert_eq!(voided[1]["request_id"], rid.as_str(), "{voided:?}");
    assert_eq!(voided[1]["details"]["why"], "offboarded", "{voided:?}");
    let shown = ok(&admin, &["request", "show", &rid]);
    assert_eq!(shown["reviews"].as_array().unwrap().len(), 1, "{shown}");
    assert_eq!(shown["reviews"][0]["void"], true, "{shown}");
    assert_eq!(
        shown["still_needed"].as_array().unwrap().len(),
        2,
        "{shown}"
    );
}

/// An approval racing its giver's offboarding is stored before the offboarding, and counts, or
/// counts for nothing: never a grant on a leaver's word recorded after they left.
#[test]
fn an_approval_racing_its_givers_offboarding_counts_only_if_stored_first() {
    const TRIALS: usize = 10;
    let config: String = (0..TRIALS)
        .map(|i| format!("[users.sre{i}]\ngroups = [\"sre\"]\n"))
        .collect();
    let env = Env::start_configured(&config);
    let port = env.server.port();
    let admin = env.login("admin");
    let alice = env.login("alice");
    let admin_token = token(&admin);
    let seq_of = |trail: &serde_json::Value, action: &str| {
        trail["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event"]["action"] == action)
            .map(|e| e["seq"].as_u64().unwrap())
    };
    for i in 0..TRIALS {
        let approver = format!("sre{i}");
        let bearer = token(&env.login(&approver));
        let rid = id(&create(&alice, "web", "deploy", &["--ticket", "CHG-1"]));
        let approve = format!("/v1/requests/{rid}/approve");
        let offboard = format!("/v1/users/{approver}/revoke-all");
        std::thread::scope(|s| {
            s.spawn(|| post(port, &approve, Some(&bearer), "{}"));
            s.spawn(|| post(port, &offboard, Some(&admin_token), "{}"));
        });
        let trail = ok(
            &admin,
            &["audit", "search", "--request", &rid, "--limit", "1000"],
        );
        let left = ok(
            &admin,
            &[
                "audit",
                "search",
                "--code",
                "auth.user_offboarded",
                "--limit",
                "1000",
            ],
        );
        let left_at = left["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event"]["details"]["user"] == approver.as_str())
            .map(|e| e["seq"].as_u64().unwrap())
            .expect("the offboarding is on record");
        match seq_of(&trail, "request.approved") {
            Some(approved) => {
                assert!(
                    approved < left_at,
                    "approved after {approver} left: {trail}"
                );
                let event = trail["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e["event"]["action"] == "request.approved")
                    .unwrap();
                assert_eq!(
                    event["event"]["details"]["approvers"],
                    serde_json::json!([approver]),
                    "{trail}"
                );
            }
            None => assert_eq!(state(&alice, &rid), "pending", "{trail}"),
        }
    }
}

/// An approval made after a reload changed its request's tier, before the reload's own pass
/// over pending requests reached it, records the change itself: once, whichever comes first.
#[test]
fn an_approval_after_a_change_of_tier_records_the_change_once() {
    let env = Env::start_configured(
        "[users.dev1]\ngroups = [\"dev\"]\n[users.dev2]\ngroups = [\"dev\"]\n",
    );
    let port = env.server.port();
    let admin = env.login("admin");
    let alice = env.login("alice");
    let sam = env.login("sam");
    let rid = id(&create(&alice, "web", "root", &[]));
    // Newer pending requests, which the pass takes first, hold it back from this one: as many
    // as three people may have waiting.
    let keys = tempfile::tempdir().unwrap();
    let body = request_body(keys.path(), "web", "root", "many");
    for (who, n) in [
        (&alice, 99),
        (&env.login("dev1"), 100),
        (&env.login("dev2"), 100),
    ] {
        let t = token(who);
        for _ in 0..n {
            assert_eq!(post(port, "/v1/requests", Some(&t), &body).0, 201);
        }
    }
    let stricter = RULES.replace(
        "@approval(\"two-person(security)\")",
        "@approval(\"two-person(security) & manager\")",
    );
    assert_ne!(stricter, RULES);
    write_policy(
        &env.policy_dir(),
        &[("targets.toml", TARGETS), ("access.cedar", &stricter)],
    );
    ok(&admin, &["policy", "reload"]);
    let v = ok(&sam, &["request", "approve", &rid]);
    assert_eq!(
        (v["state"].as_str(), v["tier"].as_str()),
        (Some("pending"), Some("manager & two-person(security)")),
        "{v}"
    );
    let changes = || {
        audit_actions(&admin, &rid)
            .iter()
            .filter(|(action, _)| action == "request.requirement_changed")
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while audit_events(&admin, "request.requirement_changed").len() < 301
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(changes(), 1, "{:?}", audit_actions(&admin, &rid));
    // The manager the new tier names is told, whichever recorded the change.
    let trail = ok(
        &admin,
        &["audit", "search", "--request", &rid, "--limit", "1000"],
    );
    let told = trail["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"]["action"] == "request.requirement_changed")
        .map(|e| e["event"]["details"]["told"].clone());
    assert_eq!(told, Some(serde_json::json!(["mallory"])), "{trail}");
}

#[test]
fn offboarding_waits_for_a_request_already_past_authentication() {
    use std::io::{Read, Write};
    let env = Env::start();
    let port = env.server.port();
    let admin = env.login("admin");
    let alice = env.login("alice");
    let keys = tempfile::tempdir().unwrap();
    let body = request_body(keys.path(), "web", "view", "slow client");
    // Alice's request is authenticated from its head; its body comes only once offboarding
    // has begun, so the request is stored after offboarding looked for her open ones.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(40)))
        .unwrap();
    write!(
        s,
        "POST /v1/requests HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        token(&alice),
        body.len()
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let ended = std::thread::scope(|scope| {
        let offboarding = scope.spawn(|| ok(&admin, &["revoke", "--user", "alice", "--all"]));
        std::thread::sleep(std::time::Duration::from_millis(700));
        s.write_all(body.as_bytes()).unwrap();
        let mut response = String::new();
        let _ = s.read_to_string(&mut response);
        assert!(response.starts_with("HTTP/1.1 201"), "{response}");
        offboarding.join().unwrap()
    });
    assert_eq!(ended["requests_ended"], 1, "{ended}");
    assert_nothing_open(&admin, "alice");
}

#[test]
fn an_offboarding_cut_short_by_a_crash_is_finished_at_start() {
    use std::io::Write;
    let mut env = Env::start();
    let port = env.server.port();
    let admin = env.login("admin");
    let alice = env.login("alice");
    let bob = env.login("bob");
    let active = id(&create(&alice, "web", "view", &[]));
    let pending = id(&create(&alice, "web", "root", &[]));
    let keys = tempfile::tempdir().unwrap();
    let body = request_body(keys.path(), "web", "view", "held");
    // A call of alice's past authentication holds the offboarding after it is stored and
    // before it ends her requests; the server dies there.
    let mut held = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        held,
        "POST /v1/requests HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        token(&alice),
        body.len()
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::thread::scope(|scope| {
        let offboarding = scope.spawn(|| admin.run(&["revoke", "--user", "alice", "--all"], None));
        let stored = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            !audit_values(&admin, "auth.user_offboarded", "/details/user").is_empty()
        });
        assert!(stored, "the offboarding was never stored");
        env.server.kill_hard();
        assert!(!offboarding.join().unwrap().success());
    });
    drop(held);
    env.server.restart();
    let admin = env.login("admin");
    for rid in [&active, &pending] {
        let v = ok(&admin, &["request", "show", rid]);
        assert_eq!(v["state"], "revoked", "{v}");
    }
    assert_nothing_open(&admin, "alice");
    let late = bob.run(&["request", "approve", &pending], None);
    assert!(!late.success(), "{late:?}");
}

/// Asserts that `user` has no pending, approved or active request, as `admin` sees it.
fn assert_nothing_open(admin: &warden_testkit::Cli, user: &str) {
    for state in ["pending", "approved", "active"] {
        let open = ok(
            admin,
            &["request", "list", "--requester", user, "--state", state],
        );
        assert_eq!(open["requests"], serde_json::json!([]), "{state}: {open}");
    }
}

fn request(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    request_raw(port, method, path, token, "application/json", body)
}

fn request_with_type(
    port: u16,
    path: &str,
    token: &str,
    content_type: &str,
    body: &str,
) -> (u16, String) {
    request_raw(port, "POST", path, Some(token), content_type, body)
}

fn request_raw(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // The server may answer (413) before reading everything; ignore a reset while writing.
    let _ = s.write_all(req.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The JSON body of a 30-minute request for `target`'s `role`, sent over HTTP, with the public
/// key of a key pair made in `keys`.
fn request_body(keys: &std::path::Path, target: &str, role: &str, reason: &str) -> String {
    let (_, public_key) = warden_testkit::ssh_keypair(keys, "request");
    serde_json::json!({
        "target": target, "role": role, "reason": reason, "ttl": "30m",
        "public_key": public_key.trim(),
    })
    .to_string()
}

fn post(port: u16, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    request(port, "POST", path, token, body)
}

fn get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    request(port, "GET", path, token, "")
}

#[test]
fn a_request_no_one_could_approve_is_refused_at_once() {
    let rules = r#"
@id("view-manager")
@approval("manager")
@max_ttl("1h")
permit (principal, action == Action::"request", resource == Role::"web/view");
"#;
    let env = Env::start_with(&[("targets.toml", TARGETS), ("access.cedar", rules)], &[]);
    // bob has no manager: his request could only time out.
    let bob = env.login("bob");
    let out = fails(
        &bob,
        &[
            "request", "create", "web", "--role", "view", "--reason", "x", "--ttl", "1h",
        ],
        3,
    );
    assert!(out.stderr.contains("no one in the directory"), "{out:?}");
    assert!(
        out.stderr.contains("it lacks the requester's manager"),
        "{out:?}"
    );
    assert!(
        ok(&bob, &["request", "list"])["requests"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let explained = ok(
        &env.login("admin"),
        &[
            "policy", "explain", "web", "--role", "view", "--user", "bob",
        ],
    );
    assert!(
        explained["refusals"][0]
            .as_str()
            .unwrap()
            .contains("no one in the directory"),
        "{explained}"
    );
    // alice's manager can approve hers.
    let alice = env.login("alice");
    assert_eq!(create(&alice, "web", "view", &[])["state"], "pending");
}

/// A grant whose time is up has ended, whether or not the worker has recorded its expiry yet:
/// an extension asked for a moment later is refused, and a revocation records it as expired.
#[test]
fn a_grant_just_past_its_expiry_is_neither_extended_nor_revoked() {
    use time::format_description::well_known::Rfc3339;
    let env = Env::start();
    let alice = env.login("alice");
    let bearer = format!("Bearer {}", token(&alice));
    let headers = [("Authorization", bearer.as_str())];
    let port = env.server.port();
    // Sent a few milliseconds after the expiry, through the API, where the worker records it
    // about as soon: each round may find it recorded or not, and both must hold.
    let just_after = |v: &serde_json::Value| {
        let ends =
            time::OffsetDateTime::parse(v["expires_at"].as_str().unwrap(), &Rfc3339).unwrap();
        let wait = ends - time::OffsetDateTime::now_utc() + time::Duration::milliseconds(2);
        std::thread::sleep(wait.try_into().unwrap_or_default());
    };
    for _ in 0..3 {
        let v = create(&alice, "web", "view", &["--ttl", "1s"]);
        just_after(&v);
        let path = format!("/v1/requests/{}/extend", id(&v));
        let extended =
            warden_testkit::http_post_with(port, &path, &headers, r#"{"ttl":"10m"}"#).unwrap();
        assert_eq!(extended.status, 409, "{}", extended.body);

        let v = create(&alice, "web", "view", &["--ttl", "1s"]);
        just_after(&v);
        let path = format!("/v1/requests/{}/revoke", id(&v));
        warden_testkit::http_post_with(port, &path, &headers, r#"{"comment":"late"}"#).unwrap();
        let ended = ok(&alice, &["request", "show", &id(&v)]);
        assert_eq!(ended["state"], "expired", "{ended}");
        assert_eq!(ended["ended_at"], v["expires_at"], "{ended}");
    }
}

/// A listing cut at its limit says so and how to go on; `--before` goes on where it ended.
#[test]
fn request_lists_page_on_with_before() {
    let env = Env::start();
    let alice = env.login("alice");
    let made: Vec<String> = (0..3)
        .map(|_| id(&create(&alice, "web", "view", &["--ttl", "10m"])))
        .collect();
    let first = alice.run(&["request", "list", "--limit", "2"], None);
    assert!(first.success(), "{first:?}");
    let hint = format!("more may follow: add --before {}", made[1]);
    assert!(first.stderr.contains(&hint), "{first:?}");
    let next = ok(
        &alice,
        &["request", "list", "--limit", "2", "--before", &made[1]],
    );
    let ids: Vec<&str> = next["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [made[0].as_str()], "{next}");
    fails(&alice, &["request", "list", "--before", "not-an-id"], 2);
}

/// Something that answers HTTP at `--server` but is not Warden (a portal's empty page, a health
/// check's `200 {"status":"ok"}` to every path, a proxy's 403): whatever it answers fails with
/// exit 1, never read as an approval or revocation done, nor as a policy's refusal (3) or a
/// missing request (4); the documents meant for sshd are not written over good ones. A Warden
/// error on those endpoints is given as the server said it.
#[test]
fn answers_from_something_that_is_not_warden_are_refused() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let answers = std::thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let mut stream = stream.unwrap();
            let mut head = [0u8; 4096];
            let n = stream.read(&mut head).unwrap_or(0);
            let asked = String::from_utf8_lossy(&head[..n]).into_owned();
            let (status, mark, body) = if asked.starts_with("GET /v1/audit/verifier-key") {
                (
                    "503 Service Unavailable",
                    "warden-api: v1\r\n",
                    r#"{"error":{"code":"storage_unavailable","message":"the store is down"}}"#,
                )
            } else if asked.starts_with("GET /v1/requests/") {
                ("403 Forbidden", "", "<html>forbidden</html>")
            } else if asked.starts_with("POST") {
                ("200 OK", "", r#"{"status":"ok"}"#)
            } else {
                ("200 OK", "", "<html>")
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\n{mark}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(reply.as_bytes()).unwrap();
        }
    });
    let cli = warden_testkit::Cli::new(std::path::Path::new(BIN), &url);
    let not_warden = |out: &warden_testkit::CliOutput| {
        assert!(
            out.stderr
                .contains("but not as a Warden server does: is it one (check --server"),
            "{out:?}"
        );
    };
    let kept = cli.home().join("revoked.krl");
    std::fs::write(&kept, b"SSHKRL\n\0a list kept from before").unwrap();
    not_warden(&fails(
        &cli,
        &["ssh-revoked-keys", "--out", kept.to_str().unwrap()],
        1,
    ));
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        b"SSHKRL\n\0a list kept from before"
    );
    let out = fails(&cli, &["ssh-ca"], 1);
    not_warden(&out);
    assert!(out.stdout.is_empty(), "{out:?}");
    let out = fails(&cli, &["audit", "verifier-key"], 1);
    assert!(out.stderr.contains("the store is down"), "{out:?}");
    let out = fails(&cli, &["audit", "verifier-key", "--json"], 1);
    assert_eq!(error_code(&out.stderr), "storage_unavailable", "{out:?}");

    // Signed in (a login saved for that address), every write is refused, and so is a 403.
    let saved = cli.home().join("credentials.json");
    std::fs::write(
        &saved,
        format!(
            r#"{{"server":"{url}","user":"alice","token":"wdn_x","expires_at":"2099-01-01T00:00:00Z"}}"#
        ),
    )
    .unwrap();
    std::fs::set_permissions(&saved, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let id = "01a24cf6-3cba-7238-bad0-36d11d052aae";
    not_warden(&fails(&cli, &["request", "approve", id], 1));
    let out = fails(&cli, &["revoke", "--user", "bob", "--all", "--json"], 1);
    assert_eq!(error_code(&out.stderr), "failure", "{out:?}");
    not_warden(&fails(&cli, &["policy", "reload"], 1));
    not_warden(&fails(&cli, &["request", "show", id], 1));
    answers.join().unwrap();
}

/// A key the SSH proxy cannot take, or a file that holds none, is said so before ssh-keygen is
/// asked to sign with it (which would have blamed a missing private half).
#[test]
fn keys_add_names_a_key_the_proxy_cannot_take() {
    let cli = warden_testkit::Cli::new(std::path::Path::new(BIN), "http://127.0.0.1:9");
    let rsa = cli.home().join("rsa");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
        .arg(&rsa)
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::remove_file(&rsa).unwrap();
    let out = fails(&cli, &["keys", "add", &format!("{}.pub", rsa.display())], 2);
    assert!(
        out.stderr.contains("Ed25519 and ECDSA keys, not RSA"),
        "{out:?}"
    );
    let garbage = cli.home().join("g.pub");
    std::fs::write(&garbage, "garbage\n").unwrap();
    let out = fails(
        &cli,
        &["--json", "keys", "add", garbage.to_str().unwrap()],
        2,
    );
    let said: serde_json::Value = serde_json::from_str(&out.stderr).unwrap();
    assert_eq!(said["error"]["code"], "usage", "{out:?}");
}

/// A logout whose saved login has already expired still forgets what ended grants left behind:
/// the usual case, with logins lasting hours and grants minutes.
#[test]
fn a_logout_after_the_login_expired_forgets_ended_grants_keys() {
    let env = Env::start();
    let alice = env.login("alice");
    // Two seconds: a certificate ends on the whole second at or before its grant's end, so one
    // of a 1 s grant made late in a second could be over, and gone, before it is counted.
    let v = create(&alice, "web", "view", &["--ttl", "2s"]);
    let ssh = alice.home().join("ssh");
    let kept = || std::fs::read_dir(&ssh).unwrap().count();
    assert!(kept() >= 2, "{v}");
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let saved = alice.home().join("credentials.json");
    let mut login: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    login["expires_at"] = "2020-01-01T00:00:00Z".into();
    std::fs::write(&saved, login.to_string()).unwrap();
    let out = alice.run(&["logout"], None);
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains("expired saved login"), "{out:?}");
    assert_eq!(kept(), 0, "{v}");
}

/// A grant approved later for a key this client does not hold (one in ssh-agent or on a
/// token) still has its certificate saved when its requester shows it.
#[test]
fn the_requester_showing_a_grant_approved_later_keeps_its_certificate() {
    let env = Env::start();
    let (alice, bob) = (env.login("alice"), env.login("bob"));
    let keys = tempfile::tempdir().unwrap();
    let public = public_key_alone(keys.path());
    let v = create(
        &alice,
        "web",
        "deploy",
        &["--ticket", "CHG-7", "--public-key", &public],
    );
    let rid = id(&v);
    ok(&bob, &["request", "approve", &rid]);
    let shown = ok(&alice, &["request", "show", &rid]);
    assert_eq!(shown["state"], "active", "{shown}");
    let cert = shown["certificate_file"].as_str().unwrap();
    assert!(std::path::Path::new(cert).exists(), "{shown}");
    // Not for the approver, who holds no key of it.
    assert!(ok(&bob, &["request", "show", &rid])["certificate_file"].is_null());
}

/// The public key file of a key pair whose private half is not beside it (held by ssh-agent or
/// on a token, as far as this client can tell).
fn public_key_alone(dir: &std::path::Path) -> String {
    let (private, _) = warden_testkit::ssh_keypair(dir, "agent");
    std::fs::remove_file(&private).unwrap();
    format!("{}.pub", private.display())
}

/// The stored state of request `rid` in the database of data dir `data`, read beside the
/// server (or while it is stopped).
fn stored_state(data: &std::path::Path, rid: &str) -> String {
    let db = rusqlite::Connection::open(data.join("warden.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    db.query_row("SELECT state FROM requests WHERE id = ?1", [rid], |r| {
        r.get(0)
    })
    .unwrap()
}

/// The ids `warden request list ARGS --json` lists, newest first.
fn listed(cli: &warden_testkit::Cli, args: &[&str]) -> Vec<String> {
    let mut all = vec!["request", "list"];
    all.extend_from_slice(args);
    ok(cli, &all)["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A grant whose expiry passed while the server was stopped has expired at once when it is
/// back, before the worker records it (here it cannot: the row refuses its update, as a full
/// disk would refuse any): `request list --state expired` lists it, once, beside one expired on
/// record, paging through both; the active ones leave it out; the report counts it expired.
#[test]
fn a_grant_that_expired_while_the_server_was_down_is_listed_expired_before_it_is_recorded() {
    use time::format_description::well_known::Rfc3339;
    let mut env = Env::start();
    let alice = env.login("alice");
    let data = env.server.data_dir().to_path_buf();
    let recorded = id(&create(&alice, "web", "view", &["--ttl", "1s"]));
    wait_until(
        "the first grant's expiry on record",
        std::time::Duration::from_secs(20),
        || stored_state(&data, &recorded) == "expired",
    );
    let v = create(&alice, "web", "view", &["--ttl", "4s"]);
    let unrecorded = id(&v);
    assert!(env.server.terminate().success());
    assert_eq!(
        stored_state(&data, &unrecorded),
        "active",
        "the grant expired before the server stopped: the test needs it to expire while down"
    );
    let db = rusqlite::Connection::open(data.join("warden.db")).unwrap();
    db.execute_batch(&format!(
        "CREATE TRIGGER hold_expiry BEFORE UPDATE ON requests WHEN old.id = '{unrecorded}'
         BEGIN SELECT RAISE(ABORT, 'held by the test'); END;"
    ))
    .unwrap();
    drop(db);
    let ends = time::OffsetDateTime::parse(v["expires_at"].as_str().unwrap(), &Rfc3339).unwrap();
    let wait = ends - time::OffsetDateTime::now_utc() + time::Duration::milliseconds(200);
    std::thread::sleep(wait.try_into().unwrap_or_default());
    env.server.restart_unready();
    let alice = env.login("alice");

    let both = [unrecorded.clone(), recorded.clone()];
    assert_eq!(listed(&alice, &["--state", "expired"]), both);
    assert_eq!(
        listed(&alice, &["--state", "expired", "--limit", "1"]),
        std::slice::from_ref(&unrecorded)
    );
    assert_eq!(
        listed(
            &alice,
            &[
                "--state",
                "expired",
                "--limit",
                "1",
                "--before",
                &unrecorded
            ]
        ),
        std::slice::from_ref(&recorded)
    );
    assert!(listed(&alice, &["--state", "active"]).is_empty());
    let all = ok(&alice, &["request", "list"]);
    let states: Vec<(&str, &str)> = all["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            (unrecorded.as_str(), "expired"),
            (recorded.as_str(), "expired")
        ]
    );
    let table = alice.run(&["request", "list", "--state", "expired"], None);
    assert!(table.success(), "{table:?}");
    assert_eq!(
        table.stdout.matches(&unrecorded).count(),
        1,
        "{}",
        table.stdout
    );
    let admin = env.login("admin");
    let card = ok(&admin, &["report"]);
    assert_eq!(
        card["requests"],
        serde_json::json!({"expired": 2}),
        "{card}"
    );
    // All of it while the expiry was still unrecorded.
    assert_eq!(stored_state(&data, &unrecorded), "active");

    // Once the worker may record it, it does, and the list is the same.
    let db = rusqlite::Connection::open(data.join("warden.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    db.execute_batch("DROP TRIGGER hold_expiry").unwrap();
    drop(db);
    wait_until(
        "the second grant's expiry on record",
        std::time::Duration::from_secs(40),
        || stored_state(&data, &unrecorded) == "expired",
    );
    assert_eq!(listed(&alice, &["--state", "expired"]), both);
}
