//! Notifications and break-glass, end to end against the real binary: a local webhook
//! receiver (also behind TLS) and real SMTP servers (Python's smtpd, and aiosmtpd demanding
//! STARTTLS or TLS and a login) receive what approvers, requesters and security are told; break-glass grants at once after MFA, notifies security, and opens a
//! postmortem that stays open until closed; drills are flagged and reported; and the outbox
//! delivers everything after the receiver was down and after the server was killed with
//! SIGKILL, each notification id exactly once. A break-glass certificate logs into a real sshd.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    BIN, LOCAL_USER, TARGETS, audit_events, audit_records, enroll_mfa, error_code, fails, id,
    login, ok, set_credential, token, totp, write_policy,
};
use serde_json::Value;
use warden_testkit::{
    Cli, Server, SmtpSink, SmtpTls, Sshd, TestCa, TlsFront, WebhookReceiver, ensure_local_user,
    ssh_login,
};

/// How long any one awaited condition may take.
const WAIT: Duration = Duration::from_secs(20);

const RULES: &str = r#"
@id("view-auto")
@approval("auto")
@max_ttl("1h")
permit (principal, action == Action::"request", resource == Role::"web/view");

@id("deploy-peer")
@approval("peer(sre)")
@max_ttl("4h")
permit (principal in Group::"dev", action == Action::"request", resource == Role::"web/deploy");

@id("admin-quick")
@approval("peer(sre)")
@max_ttl("1h")
@pending_timeout("2s")
permit (principal in Group::"dev", action == Action::"request", resource == Role::"web/admin");

@id("bg-root")
@max_ttl("1h")
@ticket("INC-[0-9]+")
permit (principal in Group::"sre", action == Action::"breakglass", resource == Role::"web/root");

@id("bg-admin")
@max_ttl("30m")
permit (principal in Group::"sre", action == Action::"breakglass", resource == Role::"web/admin");
"#;

/// Starts `warden serve --dev --config` with the test policy and `config` as the config file.
fn start(dir: &Path, config: &str) -> Server {
    start_with(dir, TARGETS, RULES, config)
}

/// Starts `warden serve --dev --config` with `targets` and `rules` as its policy.
fn start_with(dir: &Path, targets: &str, rules: &str, config: &str) -> Server {
    let data = dir.join("data");
    write_policy(
        &data.join("policy"),
        &[("targets.toml", targets), ("access.cedar", rules)],
    );
    let path = dir.join("warden.toml");
    std::fs::write(&path, config).unwrap();
    Server::start_in(
        Path::new(BIN),
        &data,
        &["serve", "--dev", "--config", path.to_str().unwrap()],
        &[],
    )
}

/// Breaking the glass for web/admin, but for the TOTP code.
const BREAK_GLASS_FOR_ADMIN: [&str; 8] = [
    "breakglass",
    "web",
    "--role",
    "admin",
    "--reason",
    "db down",
    "--ttl",
    "10m",
];

/// `cli`'s user enrols a second factor and breaks the glass for web/admin; the grant's id.
fn break_glass_for_admin(cli: &Cli) -> String {
    let uri = enroll_mfa(cli);
    let code = totp(&uri, 1);
    let mut args = BREAK_GLASS_FOR_ADMIN.to_vec();
    args.extend(["--totp", &code]);
    id(&ok(cli, &args))
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// The accepted webhook notifications of `kind` about request `rid`.
fn notices(r: &WebhookReceiver, kind: &str, rid: &str) -> Vec<Value> {
    r.accepted()
        .into_iter()
        .filter(|n| n["kind"] == kind && n["request"]["id"] == rid)
        .collect()
}

/// The first mail whose subject contains `subject`, once it arrived.
fn mail(smtp: &SmtpSink, subject: &str) -> String {
    let mut found = None;
    wait_for(&format!("a mail about {subject:?}"), || {
        found = smtp.messages().into_iter().find(|m| m.contains(subject));
        found.is_some()
    });
    found.unwrap()
}

fn header<'a>(mail: &'a str, name: &str) -> &'a str {
    mail.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} header in {mail}"))
}

#[test]
fn approvers_and_requesters_are_notified_by_webhook_and_mail() {
    let hook = WebhookReceiver::start();
    let chat = WebhookReceiver::start();
    let smtp = SmtpSink::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &format!(
            "public_url = \"https://warden.example.com\"\nexpiry_warning = \"58s\"\n\n\
             [[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n\n\
             [[notify]]\nname = \"chat\"\nkind = \"webhook\"\nurl = \"{}\"\nformat = \"slack\"\naudiences = [\"approvers\"]\n\n\
             [[notify]]\nname = \"mail\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\n\
             from = \"Warden <warden@example.com>\"\nuser_domain = \"example.com\"\n\
             to = {{ approvers = [\"oncall@example.com\"] }}\n\n\
             [users.carol]\ngroups = [\"sre\"]\n",
            hook.url(),
            chat.url(),
            smtp.port()
        ),
    );
    let alice = login(&server, "alice");
    let bob = login(&server, "bob");

    // A pending request: its approvers hear of it, with links that carry only the id.
    let r = common::create(&alice, "web", "deploy", &[]);
    let rid = id(&r);
    let created = Instant::now();
    wait_for("the approvers' notification", || {
        !notices(&hook, "approval_needed", &rid).is_empty()
    });
    eprintln!(
        "approval notice at the webhook {:?} after the request was created",
        created.elapsed()
    );
    let n = &notices(&hook, "approval_needed", &rid)[0];
    assert_eq!(n["audience"], "approvers");
    assert_eq!(n["recipients"], serde_json::json!(["bob", "carol"]));
    assert_eq!(n["request"]["requester"], "alice");
    assert_eq!(n["request"]["reason"], "integration test");
    assert_eq!(
        n["links"]["request"],
        format!("https://warden.example.com/v1/requests/{rid}")
    );
    assert_eq!(
        n["links"]["commands"][0],
        format!("warden request approve {rid}")
    );
    let notice_id = n["id"].as_str().unwrap().to_owned();
    assert!(!n.to_string().contains(&token(&alice)));
    assert!(!n.to_string().contains("wdn_"), "{n}");

    // The Slack-shaped sink gets text carrying the notification id.
    wait_for("the chat message", || {
        chat.accepted()
            .iter()
            .any(|m| m["text"].as_str().is_some_and(|t| t.contains(&notice_id)))
    });
    let text = chat.accepted()[0]["text"].as_str().unwrap().to_owned();
    assert!(
        text.starts_with("[Warden] alice asks for web/deploy"),
        "{text}"
    );
    assert!(
        text.contains(&format!("warden request approve {rid}")),
        "{text}"
    );

    // The mail goes to the approvers' list and to bob himself, with the id as Message-ID.
    let m = mail(&smtp, "alice asks for web/deploy");
    assert_eq!(
        header(&m, "Subject"),
        "[Warden] alice asks for web/deploy: your approval is needed"
    );
    assert_eq!(header(&m, "Message-ID"), format!("<{notice_id}@warden>"));
    assert_eq!(header(&m, "From"), "Warden <warden@example.com>");
    let to = header(&m, "To");
    assert!(
        to.contains("bob@example.com") && to.contains("oncall@example.com"),
        "{to}"
    );
    assert!(
        m.contains(&format!("https://warden.example.com/v1/requests/{rid}")),
        "{m}"
    );
    assert!(m.contains("needs your own login"), "{m}");
    // Both carry when the notice was made, the mail as its date too: after an outage, mail
    // sorts by what happened, not by when a retry got it through.
    let made = n["time"].as_str().unwrap();
    assert!(text.contains(&format!("made at: {made}")), "{text}");
    assert!(m.contains(&format!("made at: {made}")), "{m}");
    let made =
        time::OffsetDateTime::parse(made, &time::format_description::well_known::Rfc3339).unwrap();
    let date = time::OffsetDateTime::parse(
        header(&m, "Date"),
        &time::format_description::well_known::Rfc2822,
    )
    .unwrap();
    assert_eq!(date.unix_timestamp(), made.unix_timestamp(), "{m}");

    // The decision goes back to the requester.
    ok(&bob, &["request", "approve", &rid, "--comment", "go"]);
    wait_for("the requester's notification", || {
        !notices(&hook, "approved", &rid).is_empty()
    });
    let n = &notices(&hook, "approved", &rid)[0];
    assert_eq!(
        (n["audience"].as_str(), n["recipients"][0].as_str()),
        (Some("requester"), Some("alice"))
    );
    let m = mail(&smtp, "your request for web/deploy was approved");
    assert_eq!(header(&m, "To"), "alice@example.com");

    let denied = common::create(&alice, "web", "deploy", &[]);
    let did = id(&denied);
    ok(&bob, &["request", "deny", &did, "--comment", "not today"]);
    wait_for("the denial", || !notices(&hook, "denied", &did).is_empty());
    assert_eq!(
        notices(&hook, "denied", &did)[0]["detail"],
        "bob: not today"
    );
    // The chat sink wants approvers only.
    assert!(
        chat.accepted()
            .iter()
            .all(|m| !m["text"].as_str().unwrap().contains("denied"))
    );

    // Nobody decides in time: the requester hears of that too.
    let late = common::create(&alice, "web", "admin", &[]);
    let lid = id(&late);
    wait_for("the time-out notice", || {
        !notices(&hook, "timed_out", &lid).is_empty()
    });
    mail(
        &smtp,
        "your request for web/admin timed out waiting for approval",
    );

    // A one-minute grant is 58 s from its end two seconds after it starts: expiry soon.
    let view = common::create(&alice, "web", "view", &["--ttl", "1m"]);
    let vid = id(&view);
    wait_for("the expiry warning", || {
        !notices(&hook, "expiry_soon", &vid).is_empty()
    });
    let n = &notices(&hook, "expiry_soon", &vid)[0];
    assert_eq!(n["request"]["expires_at"], view["expires_at"]);
    assert_eq!(
        n["links"]["commands"][0],
        format!("warden request extend {vid} --ttl TTL")
    );
    thread::sleep(Duration::from_millis(500));
    assert_eq!(notices(&hook, "expiry_soon", &vid).len(), 1, "warned once");
    // Auto-approved by herself: alice is not told what she just saw.
    assert!(notices(&hook, "approved", &vid).is_empty());
    let admin = login(&server, "admin");
    let warned = audit_records(&admin, "notification.expiry_warned");
    assert_eq!(warned.len(), 1);
    assert_eq!(warned[0]["event"]["request_id"], vid);
    // A grant extended at once does not end soon: its access goes on, and nobody is told.
    let base = id(&common::create(&alice, "web", "view", &["--ttl", "1m"]));
    let more = ok(&alice, &["request", "extend", &base, "--ttl", "2m"]);
    assert_eq!(more["state"], "active", "{more}");
    thread::sleep(Duration::from_secs(4));
    assert!(notices(&hook, "expiry_soon", &base).is_empty());

    // An approver offboarded hears of no more requests.
    ok(&admin, &["revoke", "--user", "carol", "--all"]);
    let after = id(&common::create(&alice, "web", "deploy", &[]));
    wait_for("the next approvers' notification", || {
        !notices(&hook, "approval_needed", &after).is_empty()
    });
    assert_eq!(
        notices(&hook, "approval_needed", &after)[0]["recipients"],
        serde_json::json!(["bob"])
    );

    // A reason that Slack's escapes make five times as long still fits a section block, which
    // Slack refuses past 3000 characters: shortened and marked, the facts and links whole.
    let amp = "&".repeat(1000);
    let long = id(&ok(
        &alice,
        &[
            "request", "create", "web", "--role", "deploy", "--reason", &amp, "--ttl", "30m",
        ],
    ));
    let mut block = String::new();
    wait_for("the long reason's chat message", || {
        let found = chat.accepted().into_iter().find(|m| {
            m["text"]
                .as_str()
                .is_some_and(|t| t.contains(&format!("request: {long}")))
        });
        if let Some(m) = found {
            block = m["blocks"][0]["text"]["text"].as_str().unwrap().to_owned();
        }
        !block.is_empty()
    });
    assert!(block.encode_utf16().count() <= 3000, "{}", block.len());
    assert!(
        block.contains("&amp;&amp;… (shortened)")
            && block.contains(&format!("warden request approve {long}")),
        "{block}"
    );
}

/// Opens `port` on 127.0.0.1 and passes each connection made to it (up to 16) on to `to`: a
/// relay that was down, and is back.
fn forward(port: u16, to: u16) {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    thread::spawn(move || {
        for client in listener.incoming().take(16) {
            let Ok(client) = client else { continue };
            let Ok(relay) = std::net::TcpStream::connect(("127.0.0.1", to)) else {
                continue;
            };
            let ways = [
                (client.try_clone().unwrap(), relay.try_clone().unwrap()),
                (relay, client),
            ];
            for (mut from, mut into) in ways {
                thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut into);
                    let _ = into.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
}

/// A notice waiting for its sinks to come back is told to no one who has left since it was
/// queued: neither an approver removed from the config before a restart, nor one offboarded.
/// The team's own address still gets it.
#[test]
fn a_notice_retried_after_an_outage_is_not_told_to_those_who_left_meanwhile() {
    let hook = WebhookReceiver::start();
    let smtp = SmtpSink::start();
    // Nothing listens here until the relay is "back".
    let relay_port = warden_testkit::free_port();
    let dir = tempfile::tempdir().unwrap();
    let sinks = format!(
        "[[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n\n\
         [[notify]]\nname = \"mail\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {relay_port}\n\
         from = \"warden@example.com\"\nuser_domain = \"example.com\"\n\
         to = {{ approvers = [\"oncall@example.com\"] }}\n",
        hook.url()
    );
    let everyone =
        format!("[users.carol]\ngroups = [\"sre\"]\n\n[users.dave]\ngroups = [\"sre\"]\n\n{sinks}");
    let mut server = start(dir.path(), &everyone);
    let (alice, admin) = (login(&server, "alice"), login(&server, "admin"));

    hook.answer(500);
    let rid = id(&common::create(&alice, "web", "deploy", &[]));
    wait_for("both sinks' first failures", || {
        audit_records(&admin, "notification.failed").len() >= 2
    });
    // carol leaves the config (read at the next start); dave is offboarded.
    server.terminate();
    let refused = hook.refused();
    let without_carol = format!("[users.dave]\ngroups = [\"sre\"]\n\n{sinks}");
    std::fs::write(dir.path().join("warden.toml"), without_carol).unwrap();
    server.restart();
    // The start tries the webhook again at once, addressed to dave still: it has to be
    // refused before he leaves, or it may be answered by the sink come back.
    wait_for("the webhook's try at the start", || {
        hook.refused() > refused
    });
    ok(&admin, &["revoke", "--user", "dave", "--all"]);

    hook.answer(200);
    forward(relay_port, smtp.port());
    let m = mail(&smtp, "alice asks for web/deploy");
    assert!(m.contains(&rid), "{m}");
    let to = header(&m, "To");
    assert!(
        to.contains("bob@example.com") && to.contains("oncall@example.com"),
        "{to}"
    );
    assert!(!to.contains("carol") && !to.contains("dave"), "{to}");
    wait_for("the webhook's notice", || {
        !notices(&hook, "approval_needed", &rid).is_empty()
    });
    assert_eq!(
        notices(&hook, "approval_needed", &rid)[0]["recipients"],
        serde_json::json!(["bob"])
    );
}

/// The sinks of the tests of notices held back by an outage: a webhook and a mail relay at
/// `relay_port`, mailing each person at example.com.
fn held_back_sinks(hook: &WebhookReceiver, relay_port: u16) -> String {
    format!(
        "[[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n\n\
         [[notify]]\nname = \"mail\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {relay_port}\n\
         from = \"warden@example.com\"\nuser_domain = \"example.com\"\n",
        hook.url()
    )
}

/// A notice held back by an outage is told only to those who may still be told of it when it
/// goes: an approver moved out of the request's group before a restart is not mailed its reason
/// and ticket (a request they can no longer see), nor is one moved out of security told of a
/// break-glass.
#[test]
fn a_notice_held_back_is_not_told_to_those_moved_out_of_its_group_meanwhile() {
    let hook = WebhookReceiver::start();
    let smtp = SmtpSink::start();
    let relay_port = warden_testkit::free_port();
    let dir = tempfile::tempdir().unwrap();
    let sinks = held_back_sinks(&hook, relay_port);
    let users = |carol: &str, dave: &str| {
        format!(
            "[users.carol]\ngroups = [\"{carol}\"]\n\n[users.dave]\ngroups = [\"{dave}\"]\n\n{sinks}"
        )
    };
    let mut server = start(dir.path(), &users("sre", "security"));
    let (alice, bob, admin) = (
        login(&server, "alice"),
        login(&server, "bob"),
        login(&server, "admin"),
    );

    hook.answer(500);
    let rid = id(&common::create(
        &alice,
        "web",
        "deploy",
        &["--ticket", "OPS-4711"],
    ));
    let bg = break_glass_for_admin(&bob);
    wait_for("every first failure", || {
        audit_records(&admin, "notification.failed").len() >= 4
    });
    // carol leaves the sre group, dave security, both staying in the directory.
    server.terminate();
    let refused = hook.refused();
    std::fs::write(dir.path().join("warden.toml"), users("dev", "dev")).unwrap();
    server.restart();
    wait_for("the webhook's tries at the start", || {
        hook.refused() >= refused + 2
    });
    let carol = login(&server, "carol");
    let shown = carol.run(&["request", "show", &rid], None);
    assert!(!shown.success(), "{shown:?}");

    hook.answer(200);
    forward(relay_port, smtp.port());
    let m = mail(&smtp, "alice asks for web/deploy");
    assert!(m.contains("OPS-4711"), "{m}");
    let to = header(&m, "To");
    assert!(
        to.contains("bob@example.com") && !to.contains("carol"),
        "{to}"
    );
    let m = mail(&smtp, "BREAK-GLASS: bob took web/admin");
    let to = header(&m, "To");
    assert!(
        to.contains("sam@example.com") && !to.contains("dave"),
        "{to}"
    );
    wait_for("the webhook's notices", || {
        !notices(&hook, "approval_needed", &rid).is_empty()
            && !notices(&hook, "breakglass", &bg).is_empty()
    });
    let n = &notices(&hook, "approval_needed", &rid)[0];
    assert_eq!(n["recipients"], serde_json::json!(["bob"]), "{n}");
    let n = &notices(&hook, "breakglass", &bg)[0];
    assert_eq!(n["recipients"], serde_json::json!(["sam"]), "{n}");
    assert!(
        smtp.messages()
            .iter()
            .all(|m| !m.contains("carol@example.com") && !m.contains("dave@example.com")),
        "{:?}",
        smtp.messages()
    );
}

/// A prompt held back by an outage goes only to the reviewers the request's tier names when it
/// goes: one a reload took out of the tier is not asked, nor told its reason.
#[test]
fn a_prompt_held_back_is_not_told_to_reviewers_a_reload_took_out_of_its_tier() {
    let hook = WebhookReceiver::start();
    let smtp = SmtpSink::start();
    let relay_port = warden_testkit::free_port();
    let dir = tempfile::tempdir().unwrap();
    let either = RULES.replace(
        "@approval(\"peer(sre)\")\n@max_ttl(\"4h\")",
        "@approval(\"peer(sre|security)\")\n@max_ttl(\"4h\")",
    );
    assert_ne!(either, RULES);
    let server = start_with(
        dir.path(),
        TARGETS,
        &either,
        &held_back_sinks(&hook, relay_port),
    );
    let (alice, admin) = (login(&server, "alice"), login(&server, "admin"));

    hook.answer(500);
    let rid = id(&common::create(&alice, "web", "deploy", &[]));
    wait_for("both sinks' first failures", || {
        audit_records(&admin, "notification.failed").len() >= 2
    });
    let security_only = RULES.replace(
        "@approval(\"peer(sre)\")\n@max_ttl(\"4h\")",
        "@approval(\"peer(security)\")\n@max_ttl(\"4h\")",
    );
    write_policy(
        &dir.path().join("data/policy"),
        &[("access.cedar", &security_only)],
    );
    ok(&admin, &["policy", "reload"]);
    wait_for("the tier's change", || {
        ok(&alice, &["request", "show", &rid])["tier"] == "peer(security)"
    });

    hook.answer(200);
    forward(relay_port, smtp.port());
    let m = mail(&smtp, "alice asks for web/deploy");
    let to = header(&m, "To");
    assert!(
        to.contains("sam@example.com") && !to.contains("bob"),
        "{to}"
    );
    wait_for("the webhook's notice", || {
        !notices(&hook, "approval_needed", &rid).is_empty()
    });
    for n in notices(&hook, "approval_needed", &rid) {
        assert_eq!(n["recipients"], serde_json::json!(["sam"]), "{n}");
    }
    assert!(
        smtp.messages()
            .iter()
            .all(|m| !m.contains("bob@example.com")),
        "{:?}",
        smtp.messages()
    );
}

/// The requester hears who approved their request and what they said; that a reviewer
/// withdrew it while it waited, or an administrator revoked the grant, by whom and why; and
/// nothing of a request they withdrew themselves.
#[test]
fn a_requester_hears_who_approved_withdrew_or_revoked_their_request() {
    let hook = WebhookReceiver::start();
    let smtp = SmtpSink::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &format!(
            "[[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n\n\
             [[notify]]\nname = \"mail\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\n\
             from = \"warden@example.com\"\nuser_domain = \"example.com\"\n",
            hook.url(),
            smtp.port()
        ),
    );
    let (alice, bob, admin) = (
        login(&server, "alice"),
        login(&server, "bob"),
        login(&server, "admin"),
    );

    // A reviewer withdraws a pending request.
    let pending = id(&common::create(&alice, "web", "deploy", &[]));
    ok(
        &bob,
        &[
            "request",
            "revoke",
            &pending,
            "--comment",
            "not during the freeze",
        ],
    );
    wait_for("the withdrawal's notice", || {
        !notices(&hook, "revoked", &pending).is_empty()
    });
    let n = &notices(&hook, "revoked", &pending)[0];
    assert_eq!(n["audience"], "requester", "{n}");
    assert_eq!(n["recipients"], serde_json::json!(["alice"]), "{n}");
    assert_eq!(n["by"], serde_json::json!(["bob"]), "{n}");
    assert_eq!(n["detail"], "not during the freeze", "{n}");
    assert_eq!(
        n["subject"], "[Warden] your request for web/deploy was withdrawn by bob",
        "{n}"
    );
    let m = mail(&smtp, "your request for web/deploy was withdrawn by bob");
    assert_eq!(header(&m, "To"), "alice@example.com");
    assert!(m.contains("not during the freeze"), "{m}");

    // Approved: the notice names the approver and their comment.
    let granted = id(&common::create(&alice, "web", "deploy", &[]));
    ok(
        &bob,
        &["request", "approve", &granted, "--comment", "ship it"],
    );
    wait_for("the approval's notice", || {
        !notices(&hook, "approved", &granted).is_empty()
    });
    let n = &notices(&hook, "approved", &granted)[0];
    assert_eq!(n["by"], serde_json::json!(["bob"]), "{n}");
    assert_eq!(n["detail"], "bob: ship it", "{n}");
    mail(&smtp, "your request for web/deploy was approved by bob");

    // An administrator revokes the active grant.
    ok(
        &admin,
        &["request", "revoke", &granted, "--comment", "incident over"],
    );
    wait_for("the revocation's notice", || {
        !notices(&hook, "revoked", &granted).is_empty()
    });
    let n = &notices(&hook, "revoked", &granted)[0];
    assert_eq!(n["by"], serde_json::json!(["admin"]), "{n}");
    assert_eq!(n["detail"], "incident over", "{n}");
    let m = mail(&smtp, "your access to web/deploy was revoked by admin");
    assert_eq!(header(&m, "To"), "alice@example.com");
    assert!(m.contains("incident over"), "{m}");

    // Her own withdrawal is news to no one.
    let own = id(&common::create(&alice, "web", "deploy", &[]));
    ok(
        &alice,
        &["request", "revoke", &own, "--comment", "not needed"],
    );
    wait_for("the prompt of her last request", || {
        !notices(&hook, "approval_needed", &own).is_empty()
    });
    thread::sleep(Duration::from_millis(500));
    assert!(notices(&hook, "revoked", &own).is_empty());
}

/// A webhook taking security's notices reaches no one when the security group holds no one
/// but whoever broke the glass: the CLI says so, and so does the record.
#[test]
fn a_break_glass_told_to_no_one_but_the_breaker_is_said_to_be_told_to_no_one() {
    let hook = WebhookReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &format!(
            "security_group = \"sec-oncall\"\n\n[users.dave]\ngroups = [\"sre\", \"sec-oncall\"]\n\n\
             [[notify]]\nname = \"sechook\"\nkind = \"webhook\"\nurl = \"{}\"\naudiences = [\"security\"]\n",
            hook.url()
        ),
    );
    let (dave, admin) = (login(&server, "dave"), login(&server, "admin"));
    let code = totp(&enroll_mfa(&dave), 1);
    let mut args = BREAK_GLASS_FOR_ADMIN.to_vec();
    args.extend(["--totp", &code]);
    let out = dave.run(&args, None);
    assert!(out.success(), "{out:?}");
    assert!(
        out.stdout.contains("no one in security was notified"),
        "{out:?}"
    );
    let activated = audit_records(&admin, "breakglass.activated");
    assert_eq!(
        activated[0]["event"]["details"]["security_notified"], false,
        "{activated:?}"
    );
}

/// Whoever broke the glass does not close its postmortem, even as a member of security:
/// someone else reviews what they did. A look at a postmortem one may not see is audited.
#[test]
fn a_postmortem_is_closed_by_someone_other_than_who_broke_the_glass() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        "[users.carol]\ngroups = [\"sre\", \"security\"]\n",
    );
    let (alice, carol, sam, admin) = (
        login(&server, "alice"),
        login(&server, "carol"),
        login(&server, "sam"),
        login(&server, "admin"),
    );
    let code = totp(&enroll_mfa(&carol), 1);
    let rid = id(&ok(
        &carol,
        &[
            "breakglass",
            "web",
            "--role",
            "root",
            "--reason",
            "db down",
            "--ticket",
            "INC-8",
            "--ttl",
            "30m",
            "--totp",
            &code,
        ],
    ));
    // No sink reaches security here: on the record with the grant.
    let activated = audit_records(&admin, "breakglass.activated");
    assert_eq!(
        activated[0]["event"]["details"]["security_notified"], false,
        "{activated:?}"
    );
    let close = [
        "postmortem",
        "close",
        &rid,
        "--link",
        "https://wiki/pm/8",
        "--note",
        "done",
    ];
    let out = fails(&carol, &close, 3);
    assert!(out.stderr.contains("another member of security"), "{out:?}");
    assert_eq!(audit_records(&admin, "postmortem.close_refused").len(), 1);
    ok(&carol, &["request", "revoke", &rid]);
    assert_eq!(ok(&sam, &close)["closed_by"], "sam");

    fails(&alice, &["postmortem", "show", &rid], 4);
    let refused = audit_records(&admin, "request.action_refused");
    assert!(
        refused
            .iter()
            .any(|r| r["event"]["request_id"] == rid.as_str()
                && r["event"]["details"]["action"] == "postmortem.show"
                && r["event"]["actor"]["user"] == "alice"),
        "{refused:?}"
    );
}

/// A reload that changes who approves a pending request tells those who may approve it now
/// and could not before (and no one twice), and the audit log says what changed.
#[test]
fn a_reload_that_changes_the_approvers_tells_the_new_ones() {
    let hook = WebhookReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &format!(
            "[users.carol]\ngroups = [\"sre\", \"security\"]\n\n\
             [[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n",
            hook.url()
        ),
    );
    let (alice, admin) = (login(&server, "alice"), login(&server, "admin"));
    let rid = id(&common::create(&alice, "web", "deploy", &[]));
    wait_for("the first approval notice", || {
        !notices(&hook, "approval_needed", &rid).is_empty()
    });
    assert_eq!(
        notices(&hook, "approval_needed", &rid)[0]["recipients"],
        serde_json::json!(["bob", "carol"])
    );

    // Now it takes the security group as well: sam is new, carol was asked already.
    let stricter = RULES.replace(
        "@approval(\"peer(sre)\")\n@max_ttl(\"4h\")",
        "@approval(\"peer(sre) & peer(security)\")\n@max_ttl(\"4h\")",
    );
    assert_ne!(stricter, RULES);
    write_policy(
        &dir.path().join("data/policy"),
        &[("access.cedar", &stricter)],
    );
    ok(&admin, &["policy", "reload"]);
    wait_for("the new approvers' notice", || {
        notices(&hook, "approval_needed", &rid).len() == 2
    });
    let n = &notices(&hook, "approval_needed", &rid)[1];
    assert_eq!(n["recipients"], serde_json::json!(["sam"]), "{n}");
    assert!(
        n["detail"]
            .as_str()
            .unwrap()
            .contains("needs peer(security) & peer(sre) now, where it needed peer(sre)"),
        "{n}"
    );
    let changed = audit_events(&admin, "request.requirement_changed");
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0]["request_id"], rid);
    assert_eq!(changed[0]["details"]["told"], serde_json::json!(["sam"]));
    assert_eq!(
        ok(&alice, &["request", "show", &rid])["tier"],
        "peer(security) & peer(sre)"
    );

    // The same policy again changes nothing and tells no one.
    ok(&admin, &["policy", "reload"]);
    thread::sleep(Duration::from_millis(500));
    assert_eq!(notices(&hook, "approval_needed", &rid).len(), 2);
    assert_eq!(audit_events(&admin, "request.requirement_changed").len(), 1);

    // bob fills the sre place; then the manager is asked for instead of security. Only
    // mallory is told: bob approved already, and carol's approval as sre would not count.
    let bob = login(&server, "bob");
    ok(&bob, &["request", "approve", &rid]);
    let tier = |rules: &str| {
        write_policy(&dir.path().join("data/policy"), &[("access.cedar", rules)]);
        ok(&admin, &["policy", "reload"]);
    };
    let waiting_for = |user: &str| -> bool {
        ok(&login(&server, user), &["request", "list", "--reviewable"])["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == rid.as_str())
    };
    // A tier the request no longer fits (its 30 minutes above a 10-minute maximum) changes
    // nothing: it can only be denied or cancelled, so it waits for a deny from a reviewer its
    // tier named (sam, not bob, who reviewed it) and for no one the new tier names.
    tier(&RULES.replace(
        "@approval(\"peer(sre)\")\n@max_ttl(\"4h\")",
        "@approval(\"peer(sre) & manager\")\n@max_ttl(\"10m\")",
    ));
    assert!(!waiting_for("mallory"));
    assert!(waiting_for("sam"));
    assert!(!waiting_for("bob"));
    tier(&RULES.replace(
        "@approval(\"peer(sre)\")\n@max_ttl(\"4h\")",
        "@approval(\"peer(sre) & manager\")\n@max_ttl(\"4h\")",
    ));
    wait_for("the manager's notice", || {
        notices(&hook, "approval_needed", &rid).len() == 3
    });
    let n = &notices(&hook, "approval_needed", &rid)[2];
    assert_eq!(n["recipients"], serde_json::json!(["mallory"]), "{n}");
    assert_eq!(audit_events(&admin, "request.requirement_changed").len(), 2);
    assert!(waiting_for("mallory"));
    assert!(!waiting_for("carol"));
    assert!(!waiting_for("bob"));
    assert_eq!(
        ok(&login(&server, "mallory"), &["request", "approve", &rid])["state"],
        "active"
    );
}

/// Security sees and may end every break-glass grant, also where another group reads the audit
/// log.
#[test]
fn security_sees_break_glass_when_others_read_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "audit_readers = \"auditors\"\n");
    let (bob, sam, alice) = (
        login(&server, "bob"),
        login(&server, "sam"),
        login(&server, "alice"),
    );
    let rid = break_glass_for_admin(&bob);
    let listed = ok(&sam, &["request", "list"]);
    assert!(
        listed["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == rid.as_str()),
        "{listed}"
    );
    fails(&alice, &["request", "show", &rid], 4);
    assert_eq!(ok(&sam, &["request", "revoke", &rid])["state"], "revoked");
}

/// A mailbox the relay refuses for good (an address `user_domain` guessed for someone without
/// one) keeps the notice from no one else: each of the others gets it alone, once.
#[test]
fn a_mailbox_refused_for_good_does_not_hold_up_the_others() {
    let smtp = SmtpSink::start_refusing(&["bob@example.com"]);
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &format!(
            "[[notify]]\nname = \"mail\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\n\
             from = \"warden@example.com\"\nuser_domain = \"example.com\"\n\
             to = {{ approvers = [\"oncall@example.com\"] }}\n",
            smtp.port()
        ),
    );
    let alice = login(&server, "alice");
    let rid = id(&common::create(&alice, "web", "deploy", &[]));
    wait_for("the mail to the approvers", || {
        smtp.messages().iter().any(|m| m.contains(&rid))
    });
    let admin = login(&server, "admin");
    wait_for("the notice counted delivered", || {
        ok(&admin, &["notify", "status"])["pending"].as_u64() == Some(0)
    });
    let sent: Vec<String> = smtp
        .messages()
        .into_iter()
        .filter(|m| m.contains(&rid))
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].starts_with("X-Sink-To: oncall@example.com\n"),
        "{sent:?}"
    );
    // The mailbox left out is on the record, so someone can reach its owner another way.
    let failed = audit_records(&admin, "notification.failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    let refused = failed[0]["event"]["details"]["refused"].to_string();
    assert!(refused.contains("bob@example.com"), "{refused}");
}

/// A break-glass alert to security, one of whose mailboxes the relay refuses for good and
/// another for now: the others get it once, at once; only the mailbox refused for now is
/// tried again, also after a restart, until it takes it; and the alert then counts delivered.
#[test]
fn a_mailbox_refused_for_now_is_retried_alone_and_no_one_is_mailed_twice() {
    let smtp = SmtpSink::start_refusing_some(&["erin@example.com"], &["sam@example.com"]);
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(
        dir.path(),
        &format!(
            "[users.dana]\ngroups = [\"security\"]\n\n\
             [users.erin]\ngroups = [\"security\"]\n\n\
             [users.tom]\ngroups = [\"security\"]\n\n\
             [[notify]]\nname = \"mail\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\n\
             from = \"warden@example.com\"\nuser_domain = \"example.com\"\n",
            smtp.port()
        ),
    );
    let bob = login(&server, "bob");
    let rid = break_glass_for_admin(&bob);
    // Each mailbox's copies of the alert.
    let copies = |address: &str| {
        smtp.messages()
            .iter()
            .filter(|m| m.contains(&rid))
            .filter(|m| {
                m.lines().next().is_some_and(|to| {
                    to.strip_prefix("X-Sink-To: ")
                        .is_some_and(|to| to.split(',').any(|a| a == address))
                })
            })
            .count()
    };

    // The retries go on while sam's mailbox is busy, to it alone, and across a restart.
    wait_for("sam's mailbox refused again", || {
        smtp.refused_for_now() >= 3
    });
    assert!(server.terminate().success());
    let before = smtp.refused_for_now();
    server.restart();
    wait_for("a retry after the restart", || {
        smtp.refused_for_now() > before
    });
    for address in ["dana@example.com", "tom@example.com"] {
        assert_eq!(copies(address), 1, "{address}: {:?}", smtp.messages());
    }
    assert_eq!(copies("sam@example.com"), 0);

    smtp.take_busy();
    wait_for("the mail to sam", || copies("sam@example.com") == 1);
    let admin = login(&server, "admin");
    wait_for("the alert counted delivered", || {
        ok(&admin, &["notify", "status"])["pending"].as_u64() == Some(0)
    });
    // Give a duplicate time to show.
    thread::sleep(Duration::from_secs(1));
    for address in ["dana@example.com", "sam@example.com", "tom@example.com"] {
        assert_eq!(copies(address), 1, "{address}: {:?}", smtp.messages());
    }
    assert_eq!(copies("erin@example.com"), 0);
    // Its first failure is on the record, and the mailbox refused for good by name once it
    // was delivered to the rest.
    let failed = audit_records(&admin, "notification.failed");
    assert_eq!(failed.len(), 2, "{failed:?}");
    let refused = failed
        .iter()
        .find(|f| f["event"]["outcome"]["code"] == "recipients_refused")
        .unwrap_or_else(|| panic!("no recipients_refused event: {failed:?}"));
    let named = refused["event"]["details"]["refused"].as_array().unwrap();
    assert_eq!(named.len(), 1, "{refused}");
    assert!(
        named[0].as_str().unwrap().starts_with("erin@example.com: "),
        "{refused}"
    );
}

#[test]
fn breakglass_grants_at_once_notifies_security_and_opens_a_postmortem() {
    let hook = WebhookReceiver::start();
    let smtp = SmtpSink::start();
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(
        dir.path(),
        &format!(
            "[users.carol]\ngroups = [\"sre\"]\n\n\
             [[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\naudiences = [\"security\"]\n\n\
             [[notify]]\nname = \"mail\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\n\
             from = \"warden@example.com\"\nto = {{ security = [\"security@example.com\"] }}\n",
            hook.url(),
            smtp.port()
        ),
    );
    let (alice, bob, carol, sam, admin) = (
        login(&server, "alice"),
        login(&server, "bob"),
        login(&server, "carol"),
        login(&server, "sam"),
        login(&server, "admin"),
    );
    let bg = [
        "breakglass",
        "web",
        "--role",
        "root",
        "--reason",
        "db down",
        "--ticket",
        "INC-7",
        "--ttl",
        "30m",
    ];

    // `warden targets` lists the break-glass roles of those who may use them.
    let t = ok(&bob, &["targets"]);
    let roles: Vec<&str> = t["breakglass"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, vec!["admin", "root"], "{t}");
    assert!(
        ok(&alice, &["targets"])["breakglass"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let table = bob.run(&["targets"], None);
    assert!(table.stdout.contains("Break-glass"), "{table:?}");

    // No second factor, no break-glass; developers have no break-glass rule at all.
    let out = fails(&bob, &bg, 3);
    assert!(out.stderr.contains("warden mfa enroll"), "{out:?}");
    let out = fails(&alice, &bg, 3);
    assert!(
        out.stderr.contains("no break-glass rule lets you"),
        "{out:?}"
    );
    let uri = enroll_mfa(&bob);
    let out = fails(&bob, &bg, 3);
    assert!(out.stderr.contains("TOTP"), "{out:?}");
    let mut no_ticket: Vec<&str> = bg.to_vec();
    no_ticket.retain(|a| *a != "--ticket" && *a != "INC-7");
    let out = fails(&bob, &no_ticket, 3);
    assert!(out.stderr.contains("INC-[0-9]+"), "{out:?}");
    // Bad input is a break-glass refusal too, naming what it was for.
    let mut zero_ttl: Vec<&str> = bg.to_vec();
    *zero_ttl.last_mut().unwrap() = "0s";
    fails(&bob, &zero_ttl, 2);
    let refused = audit_records(&admin, "breakglass.refused");
    assert!(refused.len() >= 5, "{refused:?}");
    let bad_ttl = refused
        .iter()
        .find(|r| r["event"]["outcome"]["code"] == "bad_ttl")
        .expect("the zero TTL's refusal");
    assert_eq!(
        (&bad_ttl["event"]["target"], &bad_ttl["event"]["role"]),
        (&serde_json::json!("web"), &serde_json::json!("root")),
        "{bad_ttl}"
    );

    // With a fresh code: active at once, recorded in full, flagged as break-glass.
    let code = totp(&uri, 1);
    let mut args = bg.to_vec();
    args.extend(["--totp", &code]);
    let v = ok(&bob, &args);
    let rid = id(&v);
    assert_eq!(v["state"], "active");
    assert_eq!(
        (v["breakglass"].as_bool(), v["drill"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(v["recording"], "full");
    assert_eq!(v["tier"], "breakglass");
    assert_eq!(v["rules"], serde_json::json!(["bg-root"]));
    // Counted under a tier of its own, not with the automatic grants.
    let metrics = warden_testkit::http_get(server.port(), "/metrics")
        .unwrap()
        .body;
    for line in [
        r#"warden_requests{state="active",tier="breakglass"} 1"#,
        r#"warden_requests_created_total{tier="breakglass"} 1"#,
        r#"warden_time_to_grant_seconds_count{tier="breakglass"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing:\n{metrics}"
        );
    }
    assert_eq!(v["security_notified"], true, "{v}");
    assert!(v["credential"]["certificate"].is_string(), "{v}");
    // Recorded in full, so its certificate logs in through Warden's SSH proxy only: a real
    // sshd that trusts the CA refuses it, whatever account it is asked for.
    assert_eq!(v["credential"]["proxy_only"], true, "{v}");
    ensure_local_user(LOCAL_USER);
    let sshd = Sshd::start(bob.run(&["ssh-ca"], None).stdout.trim(), "web");
    let login = ssh_login(
        sshd.port(),
        LOCAL_USER,
        Path::new(v["private_key_file"].as_str().unwrap()),
        Path::new(v["certificate_file"].as_str().unwrap()),
        "echo breakglass-$(whoami)",
    );
    assert_eq!(login.status.code(), Some(255), "{login:?}\n{}", sshd.log());
    assert!(login.stdout.is_empty(), "{login:?}");
    let shown = bob.run(&["request", "show", &rid], None);
    assert!(
        shown
            .stdout
            .lines()
            .any(|l| l.starts_with("break-glass") && l.ends_with(" yes")),
        "{shown:?}"
    );

    // Security hears of it on every sink.
    wait_for("security's webhook", || {
        !notices(&hook, "breakglass", &rid).is_empty()
    });
    let n = &notices(&hook, "breakglass", &rid)[0];
    assert_eq!(n["audience"], "security");
    assert_eq!(n["recipients"], serde_json::json!(["sam"]));
    assert_eq!(n["request"]["drill"], false);
    assert_eq!(
        n["links"]["commands"][1],
        format!("warden postmortem show {rid}")
    );
    let m = mail(&smtp, "BREAK-GLASS: bob took web/root");
    assert_eq!(header(&m, "To"), "security@example.com");
    assert!(
        m.contains("ticket: INC-7") && m.contains("reason: db down"),
        "{m}"
    );

    let activated = audit_records(&admin, "breakglass.activated");
    assert_eq!(activated.len(), 1);
    assert_eq!(activated[0]["event"]["code"], "W2100");
    assert_eq!(activated[0]["event"]["details"]["drill"], false);
    assert_eq!(activated[0]["event"]["details"]["security_notified"], true);
    assert_eq!(activated[0]["event"]["request_id"], rid);
    assert_eq!(audit_records(&admin, "postmortem.opened").len(), 1);
    // Its tier is break-glass on every event that names one.
    let created = audit_records(&admin, "request.created");
    let created = created
        .iter()
        .find(|c| c["event"]["request_id"] == rid.as_str())
        .unwrap();
    assert_eq!(
        created["event"]["details"]["tier"], "breakglass",
        "{created}"
    );

    // The postmortem is open; security sees it, the requester sees his own.
    let open = ok(&sam, &["postmortem", "list"]);
    assert_eq!(open["postmortems"][0]["id"], rid);
    assert_eq!(open["postmortems"][0]["state"], "open");
    assert_eq!(
        ok(&bob, &["postmortem", "list"])["postmortems"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        ok(&alice, &["postmortem", "list"])["postmortems"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let out = fails(&alice, &["postmortem", "show", &rid], 4);
    assert!(
        out.stderr.contains("only break-glass grants open one"),
        "{out:?}"
    );

    // Only security or administrators close it, with a link and a note.
    let close = |who: &Cli, link: &str, note: &str, code: i32| {
        fails(
            who,
            &["postmortem", "close", &rid, "--link", link, "--note", note],
            code,
        )
    };
    close(&bob, "https://wiki/pm/7", "fixed", 3);
    let out = close(&sam, "https://wiki/pm/7", "", 2);
    assert!(out.stderr.contains("--note"), "{out:?}");
    let out = close(&sam, "wiki/pm/7", "fixed", 2);
    assert!(out.stderr.contains("--link"), "{out:?}");
    // Not while the grant lasts: the review would miss what is still to be done with it.
    let out = close(&sam, "https://wiki/pm/7", "fixed", 6);
    assert!(
        out.stderr.contains("still active")
            && out.stderr.contains(&format!("warden request revoke {rid}")),
        "{out:?}"
    );
    assert_eq!(audit_records(&admin, "postmortem.close_refused").len(), 4);
    // Bad calls are close refusals too, naming the postmortem where the path does, and so
    // is a break-glass call with a query it does not take.
    let bearer = format!("Bearer {}", token(&sam));
    let auth = [("Authorization", bearer.as_str())];
    let path = format!("/v1/postmortems/{rid}/close");
    for (path, body, code) in [
        (path.clone(), r#"{"link":"https://wiki/pm/7"}"#, "bad_json"),
        (
            format!("{path}?force=1"),
            r#"{"link":"https://wiki/pm/7","note":"n"}"#,
            "bad_query",
        ),
        ("/v1/postmortems/nope/close".into(), "{}", "bad_id"),
        ("/v1/breakglass?drill=true".into(), "{}", "bad_query"),
    ] {
        let r = warden_testkit::http_post_with(server.port(), &path, &auth, body).unwrap();
        assert_eq!(error_code(&r.body), code, "{path}: {}", r.body);
    }
    let refused = audit_records(&admin, "postmortem.close_refused");
    let codes: Vec<(&str, &str)> = refused
        .iter()
        .map(|e| {
            (
                e["event"]["outcome"]["code"].as_str().unwrap(),
                e["event"]["request_id"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        codes[4..],
        [
            ("bad_json", rid.as_str()),
            ("bad_query", rid.as_str()),
            ("bad_id", "-")
        ],
        "{refused:?}"
    );
    let bg_refused = audit_records(&admin, "breakglass.refused");
    assert_eq!(
        bg_refused.last().unwrap()["event"]["outcome"]["code"],
        "bad_query",
        "{bg_refused:?}"
    );
    assert_eq!(ok(&sam, &["postmortem", "show", &rid])["state"], "open");
    ok(&bob, &["request", "revoke", &rid]);
    let closed = ok(
        &sam,
        &[
            "postmortem",
            "close",
            &rid,
            "--link",
            "https://wiki/pm/7",
            "--note",
            "replica promoted",
        ],
    );
    assert_eq!(closed["state"], "closed");
    assert_eq!(closed["closed_by"], "sam");
    assert_eq!(closed["link"], "https://wiki/pm/7");
    close(&sam, "https://wiki/pm/8", "again", 6);
    assert!(
        ok(&sam, &["postmortem", "list"])["postmortems"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ok(&sam, &["postmortem", "list", "--all"])["postmortems"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let done = audit_records(&admin, "postmortem.closed");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["event"]["actor"]["user"], "sam");
    assert_eq!(done[0]["event"]["details"]["link"], "https://wiki/pm/7");

    // Before any drill every break-glass role is overdue.
    let report = ok(&sam, &["report", "drills"]);
    assert_eq!(report["roles"].as_array().unwrap().len(), 2, "{report}");
    assert!(
        report["roles"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["overdue"] == true)
    );

    // A drill: the same path, flagged everywhere.
    let carol_uri = enroll_mfa(&carol);
    let code = totp(&carol_uri, 1);
    let drill = ok(
        &carol,
        &[
            "breakglass",
            "web",
            "--role",
            "root",
            "--reason",
            "annual drill",
            "--ticket",
            "INC-1",
            "--ttl",
            "5m",
            "--drill",
            "--totp",
            &code,
        ],
    );
    let did = id(&drill);
    assert_eq!(
        (drill["state"].as_str(), drill["drill"].as_bool()),
        (Some("active"), Some(true))
    );
    wait_for("the drill's notification", || {
        !notices(&hook, "breakglass", &did).is_empty()
    });
    assert_eq!(
        notices(&hook, "breakglass", &did)[0]["request"]["drill"],
        true
    );
    mail(&smtp, "BREAK-GLASS (DRILL): carol took web/root");
    let activated = audit_records(&admin, "breakglass.activated");
    assert_eq!(activated.len(), 2);
    assert_eq!(activated[1]["event"]["details"]["drill"], true);
    let pm = ok(&sam, &["postmortem", "show", &did]);
    assert_eq!(
        (pm["drill"].as_bool(), pm["state"].as_str()),
        (Some(true), Some("open"))
    );
    // Listed a page at a time, newest first: the drill, then the grant before it.
    let page = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["postmortem", "list", "--all", "--limit", "1"];
        args.extend(extra);
        ok(&sam, &args)["postmortems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(page(&[]), [did.as_str()]);
    assert_eq!(page(&["--before", &did]), [rid.as_str()]);
    assert!(page(&["--before", &rid]).is_empty());
    let table = sam.run(&["postmortem", "list", "--all", "--limit", "1"], None);
    assert!(
        table
            .stderr
            .contains(&format!("more may follow: add --before {did}")),
        "{table:?}"
    );

    let report = ok(&sam, &["report", "drills"]);
    let roles: BTreeMap<String, Value> = report["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                format!(
                    "{}/{}",
                    r["target"].as_str().unwrap(),
                    r["role"].as_str().unwrap()
                ),
                r.clone(),
            )
        })
        .collect();
    assert_eq!(roles["web/root"]["overdue"], false);
    assert_eq!(roles["web/root"]["request"], did);
    assert!(roles["web/root"]["last_drill"].is_string());
    assert_eq!(roles["web/admin"]["overdue"], true);
    assert!(roles["web/admin"]["last_drill"].is_null());
    let table = sam.run(&["report", "drills"], None);
    assert!(
        table.stdout.contains("OVERDUE") && table.stdout.contains("never"),
        "{table:?}"
    );
    fails(&alice, &["report", "drills"], 3);

    // The metrics count break-glass from the postmortems, kept for good: archiving the audit
    // log (up to the checkpoint of a restart) takes nothing away.
    let figures = |server: &warden_testkit::Server| {
        let m = warden_testkit::http_get(server.port(), "/metrics")
            .unwrap()
            .body;
        [
            r#"warden_breakglass_uses_total{drill="false"} 1"#,
            r#"warden_breakglass_uses_total{drill="true"} 1"#,
            "warden_postmortems_open 1",
        ]
        .map(|line| m.lines().any(|l| l == line))
    };
    assert_eq!(figures(&server), [true; 3]);
    // So does the report, from the postmortems too.
    let scorecard = || {
        let card = admin.json(&["report"]);
        let figure = |name: &str| card[name]["value"].as_f64();
        (
            figure("breakglass_uses"),
            card["breakglass_drills"].as_u64(),
            figure("postmortems_open"),
        )
    };
    assert_eq!(scorecard(), (Some(1.0), Some(1), Some(1.0)));
    server.terminate();
    server.restart();
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let archived = admin.json(&["audit", "archive", "--before", &now]);
    assert!(archived["to"].as_u64().unwrap() > 0, "{archived}");
    assert!(audit_records(&admin, "breakglass.activated").is_empty());
    assert_eq!(figures(&server), [true; 3]);
    assert_eq!(scorecard(), (Some(1.0), Some(1), Some(1.0)));

    // `policy check` lists the break-glass roles, and refuses a break-glass rule that tries to
    // set a fixed term, naming file and line.
    let policy_dir = server.data_dir().join("policy");
    let checked = ok(&bob, &["policy", "check", policy_dir.to_str().unwrap()]);
    assert_eq!(
        checked["breakglass_roles"],
        serde_json::json!(["web/admin", "web/root"])
    );
    let bad = dir.path().join("bad-policy");
    write_policy(
        &bad,
        &[
            ("targets.toml", TARGETS),
            (
                "access.cedar",
                "@id(\"bg\")\n@max_ttl(\"1h\")\n@recording(\"metadata\")\n\
                 permit (principal, action == Action::\"breakglass\", resource);\n",
            ),
        ],
    );
    let out = fails(&bob, &["policy", "check", bad.to_str().unwrap()], 1);
    assert!(
        out.stderr.contains("access.cedar:3") && out.stderr.contains("recorded in full"),
        "{out:?}"
    );

    // `policy explain --breakglass` names the rule and its fixed terms.
    let e = ok(
        &bob,
        &[
            "policy",
            "explain",
            "web",
            "--role",
            "admin",
            "--breakglass",
            "--ttl",
            "30m",
        ],
    );
    assert_eq!(e["action"], "breakglass");
    assert_eq!(e["decision"]["rules"], serde_json::json!(["bg-admin"]));
    assert_eq!(e["decision"]["tier"], "breakglass");
    assert_eq!(
        (
            e["decision"]["mfa"].as_bool(),
            e["decision"]["recording"].as_str()
        ),
        (Some(true), Some("full"))
    );
    // Security, told of every break-glass grant, may end one; to bob (another SRE) carol's
    // drill is not even there.
    fails(&bob, &["request", "revoke", &did], 4);
    assert_eq!(ok(&sam, &["request", "revoke", &did])["state"], "revoked");
}

#[test]
fn the_outbox_delivers_after_an_outage_and_a_kill_9_each_notification_once() {
    let mut hook = WebhookReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(
        dir.path(),
        &format!(
            "[[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n",
            hook.url()
        ),
    );
    let alice = login(&server, "alice");
    let admin = login(&server, "admin");
    let status = |admin: &Cli| ok(admin, &["notify", "status"]);

    // The receiver fails: notifications wait and are retried, the failure is audited.
    hook.answer(500);
    let first: Vec<String> = (0..3)
        .map(|_| id(&common::create(&alice, "web", "deploy", &[])))
        .collect();
    wait_for("retries", || hook.refused() >= 6);
    let s = status(&admin);
    assert_eq!(
        (s["pending"].as_u64(), s["delivered"].as_u64()),
        (Some(3), Some(0)),
        "{s}"
    );
    assert!(s["retrying"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["oldest_pending"].is_string(), "{s}");
    // Per sink: what waits, and why.
    let hook_backlog = &s["backlog"][0];
    assert_eq!(
        (
            hook_backlog["sink"].as_str(),
            hook_backlog["configured"].as_bool()
        ),
        (Some("hook"), Some(true)),
        "{s}"
    );
    assert_eq!(hook_backlog["pending"], 3, "{s}");
    assert!(
        hook_backlog["last_error"].as_str().unwrap().contains("500"),
        "{s}"
    );
    let table = admin.run(&["notify", "status"], None);
    assert!(
        table.stdout.contains("PENDING") && table.stdout.contains("500"),
        "{table:?}"
    );
    let failed = audit_records(&admin, "notification.failed");
    assert_eq!(
        failed.len(),
        3,
        "one event per notification's first failure: {failed:?}"
    );
    assert!(
        failed[0]["event"]["outcome"]["reason"]
            .as_str()
            .unwrap()
            .contains("500")
    );
    assert!(hook.accepted().is_empty());
    // One of them is withdrawn meanwhile: its prompt, retried, no longer applies and is not
    // sent (but counts as done).
    ok(&alice, &["request", "cancel", &first[0]]);

    hook.answer(200);
    wait_for("delivery after the outage", || hook.accepted().len() >= 2);

    // Down altogether, then killed: what was queued is delivered after the restart.
    hook.stop();
    let second: Vec<String> = (0..3)
        .map(|_| id(&common::create(&alice, "web", "deploy", &[])))
        .collect();
    wait_for("the second batch to wait", || {
        status(&admin)["pending"].as_u64() == Some(3)
    });
    thread::sleep(Duration::from_millis(700));
    server.kill_hard();
    server.restart();
    hook.resume();
    let all: Vec<&String> = first[1..].iter().chain(&second).collect();
    wait_for("delivery after the kill", || {
        let got = hook.accepted();
        all.iter()
            .all(|r| got.iter().any(|n| n["request"]["id"] == r.as_str()))
    });
    // Give a duplicate time to show, then count per notification id.
    thread::sleep(Duration::from_secs(1));
    let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
    for n in hook.accepted() {
        *per_id
            .entry(n["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_id.len(), 5, "{per_id:?}");
    assert!(per_id.values().all(|&n| n == 1), "{per_id:?}");
    assert!(
        notices(&hook, "approval_needed", &first[0]).is_empty(),
        "a prompt for a withdrawn request was sent"
    );
    let admin = login(&server, "admin");
    let s = status(&admin);
    // The withdrawn request's prompt is counted as skipped, not delivered.
    assert_eq!(
        (
            s["pending"].as_u64(),
            s["delivered"].as_u64(),
            s["skipped"].as_u64()
        ),
        (Some(0), Some(5), Some(1)),
        "{s}"
    );
    assert_eq!(s["sinks"][0]["name"], "hook");
    assert_eq!(s["sinks"][0]["kind"], "webhook");
    assert_eq!(s["backlog"], serde_json::json!([]), "{s}");
}

/// A webhook receiver on 127.0.0.1 that answers each POST with 200 only `delay` after it came
/// in; returns its port and the bodies it was sent, kept as they come in.
fn slow_receiver(delay: Duration) -> (u16, Arc<Mutex<Vec<Value>>>) {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    thread::spawn(move || {
        for conn in listener.incoming().take(16).flatten() {
            let kept = kept.clone();
            thread::spawn(move || answer_slowly(conn, delay, &kept));
        }
    });
    (port, bodies)
}

/// Reads the POSTs of `conn`, keeping their bodies in `bodies`, and answers each after `delay`.
fn answer_slowly(
    conn: std::net::TcpStream,
    delay: Duration,
    bodies: &Mutex<Vec<Value>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            match line.trim_end().split_once(':') {
                Some((name, value)) if name.eq_ignore_ascii_case("content-length") => {
                    length = value.trim().parse().unwrap_or(0);
                }
                Some(_) => {}
                None => break,
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        bodies
            .lock()
            .unwrap()
            .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
        thread::sleep(delay);
        writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")?;
    }
}

/// A clean stop (SIGTERM) while a receiver takes its time waits for its answer and records
/// the delivery, so the notification is not sent again after the restart.
#[test]
fn a_delivery_under_way_at_a_clean_stop_is_not_sent_again_after_the_restart() {
    let (port, bodies) = slow_receiver(Duration::from_millis(1500));
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(
        dir.path(),
        &format!(
            "[[notify]]\nname = \"slow\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/hook\"\n\
             audiences = [\"approvers\"]\n"
        ),
    );
    let (alice, admin) = (login(&server, "alice"), login(&server, "admin"));
    let rid = id(&common::create(&alice, "web", "deploy", &[]));
    let sent = || {
        bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|n| n["request"]["id"] == rid.as_str())
            .count()
    };
    wait_for("the POST to come in", || sent() == 1);
    // Stopped while the receiver has the notification and has not answered yet.
    assert!(server.terminate().success());
    server.restart();
    wait_for("an empty queue", || {
        ok(&admin, &["notify", "status"])["pending"].as_u64() == Some(0)
    });
    thread::sleep(Duration::from_millis(500));
    assert_eq!(sent(), 1, "{:?}", bodies.lock().unwrap());
    assert_eq!(ok(&admin, &["notify", "status"])["delivered"], 1);
}

/// A sink that takes connections and never answers holds back its own deliveries only: the
/// other sink's go out at once, however many of the first are stuck.
#[test]
fn a_sink_that_hangs_delays_no_other() {
    let hole = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let hole_port = hole.local_addr().unwrap().port();
    let held = thread::spawn(move || {
        // Connections are taken and kept open, unanswered, until the test ends.
        let mut kept = Vec::new();
        for stream in hole.incoming().take(64) {
            kept.push(stream);
        }
        kept
    });
    let hook = WebhookReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &format!(
            "[[notify]]\nname = \"hole\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{hole_port}/hook\"\n\n\
             [[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n",
            hook.url()
        ),
    );
    let alice = login(&server, "alice");
    let asked: Vec<String> = (0..12)
        .map(|_| id(&common::create(&alice, "web", "deploy", &[])))
        .collect();
    // Well inside the 30 s a hung delivery is given.
    let deadline = Instant::now() + Duration::from_secs(8);
    while !asked
        .iter()
        .all(|rid| !notices(&hook, "approval_needed", rid).is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "the healthy sink waited for the hung one: {} of {} delivered",
            hook.accepted().len(),
            asked.len()
        );
        thread::sleep(Duration::from_millis(50));
    }
    drop(server);
    drop(held);
}

/// A mail relay that takes the connection and never answers fails the delivery once its 30 s
/// are up, on the record, rather than hold the mail sink for ever.
#[test]
fn a_mail_relay_that_never_answers_fails_the_delivery_in_time() {
    let hole = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let hole_port = hole.local_addr().unwrap().port();
    let held = thread::spawn(move || hole.incoming().take(8).collect::<Vec<_>>());
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &format!(
            "[[notify]]\nname = \"mute\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {hole_port}\n\
             from = \"warden@example.com\"\nuser_domain = \"example.com\"\n"
        ),
    );
    let (alice, admin) = (login(&server, "alice"), login(&server, "admin"));
    common::create(&alice, "web", "deploy", &[]);
    let deadline = Instant::now() + Duration::from_secs(50);
    let failed = loop {
        let failed = audit_records(&admin, "notification.failed");
        if let Some(f) = failed.into_iter().next() {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "the delivery to a mute relay never failed"
        );
        thread::sleep(Duration::from_millis(500));
    };
    let reason = failed["event"]["outcome"]["reason"].as_str().unwrap();
    assert!(reason.contains("no answer within 30 s"), "{reason}");
    drop(server);
    drop(held);
}

#[test]
fn bad_notify_sinks_stop_start_up_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("warden.toml");
    for (sink, said) in [
        (
            "[[notify]]\nname = \"mail\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nfrom = \"warden\"\n\
             to = { security = [\"s@example.com\"] }\n",
            "`from` \"warden\" is not an e-mail address",
        ),
        (
            "[[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http:///hook\"\n",
            "`url` has no host",
        ),
        // A port in `host` would fail every delivery on a lookup, for ever.
        (
            "[[notify]]\nname = \"mail\"\nkind = \"smtp\"\nhost = \"127.0.0.1:21111\"\n\
             from = \"warden@example.com\"\nto = { security = [\"s@example.com\"] }\n",
            "notify sink 1 (\"mail\"): `host` \"127.0.0.1:21111\" cannot be used: \
             host must be a host name or IP address; give the port as port = 21111",
        ),
        (
            "[[notify]]\nname = \"mail\"\nkind = \"smtp\"\nhost = \"smtp://relay.example.com\"\n\
             from = \"warden@example.com\"\nto = { security = [\"s@example.com\"] }\n",
            "without a scheme: `tls` says how the connection is protected",
        ),
        // An error in the second sink is placed there, naming it and the field.
        (
            "[[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\n\n\
             [[notify]]\nname = \"mail\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\ntls = \"tls\"\n\
             from = \"warden@example.com\"\nuser_domain = \"example.com\"\n\
             username = \"warden\"\npassword = \"\"\n",
            "line 6, column 1: notify sink 2 (\"mail\"): `password`: the secret is empty",
        ),
    ] {
        std::fs::write(&config, sink).unwrap();
        let out = common::serve_refusing(&config, &dir.path().join("data"));
        assert_ne!(out.code, 0, "{out:?}");
        assert!(out.stderr.contains(said), "{out:?}");
    }
}

#[test]
fn security_hears_when_a_credential_cannot_be_revoked() {
    let pg = warden_testkit::Postgres::start();
    let hook = WebhookReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    let targets = format!(
        "[targets.pg]\nkind = \"postgres\"\nenvironment = \"test\"\n\
         [targets.pg.connection]\nhost = \"127.0.0.1\"\nport = {}\ndatabase = \"app\"\n\
         [targets.pg.roles.read]\ngrants = [\"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {{{{name}}}}\"]\n",
        pg.port()
    );
    let rules = "@id(\"pg-read\")\n@approval(\"auto\")\n@max_ttl(\"1h\")\n\
                 permit (principal, action == Action::\"request\", resource == Role::\"pg/read\");\n";
    let server = start_with(
        dir.path(),
        &targets,
        rules,
        &format!(
            "[[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\naudiences = [\"security\"]\n",
            hook.url()
        ),
    );
    let admin = login(&server, "admin");
    set_credential(&admin, "pg", pg.admin_user(), pg.admin_password());
    let alice = login(&server, "alice");
    let v = common::create(&alice, "pg", "read", &[]);
    assert_eq!(v["state"], "active", "{v}");
    let rid = id(&v);
    let account = v["credential"]["username"].as_str().unwrap().to_owned();

    // The database goes away; the early revoke cannot reach it.
    let admin_password = pg.admin_password().to_owned();
    drop(pg);
    ok(&alice, &["request", "revoke", &rid, "--comment", "done"]);
    wait_for("security's notification", || {
        !notices(&hook, "revoke_failed", &rid).is_empty()
    });
    let n = &notices(&hook, "revoke_failed", &rid)[0];
    assert_eq!(n["audience"], "security");
    let detail = n["detail"].as_str().unwrap();
    assert!(
        detail.contains(&account) && detail.contains("retrying"),
        "{detail}"
    );
    assert!(!n.to_string().contains(&admin_password), "{n}");
    // Only the first failure notifies until Warden gives up; every one is audited.
    thread::sleep(Duration::from_secs(3));
    assert_eq!(notices(&hook, "revoke_failed", &rid).len(), 1);
    let failures = audit_records(&admin, "credential.revoke_failed");
    assert!(failures.len() >= 2, "{failures:?}");
    assert_eq!(failures[0]["event"]["request_id"], rid.as_str());
    assert_eq!(failures[0]["event"]["details"]["attempts"], 1);
    assert_eq!(failures[1]["event"]["details"]["attempts"], 2);
}

#[test]
fn https_webhooks_are_delivered_only_to_a_receiver_whose_certificate_verifies() {
    let trusted = WebhookReceiver::start();
    let trusted_tls = TlsFront::start(trusted.port());
    let unknown = WebhookReceiver::start();
    let unknown_tls = TlsFront::start(unknown.port());
    let dir = tempfile::tempdir().unwrap();

    // A `ca_file` that holds no certificate stops start-up, naming the sink and the file.
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        format!(
            "[[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\nca_file = \"{}\"\n",
            trusted_tls.url(),
            config.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new("timeout")
        .args(["20", BIN, "serve", "--dev", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_ne!(out.status.code(), Some(124), "it must refuse, not serve");
    assert!(
        stderr.contains("\"hook\"") && stderr.contains("holds no PEM certificate"),
        "{stderr}"
    );

    // One sink trusts the private CA that issued its receiver's certificate; the other
    // trusts only the system's roots, which do not include it.
    let server = start(
        dir.path(),
        &format!(
            "[[notify]]\nname = \"private-ca\"\nkind = \"webhook\"\nurl = \"{}\"\nca_file = \"{}\"\n\n\
             [[notify]]\nname = \"system-roots\"\nkind = \"webhook\"\nurl = \"{}\"\n",
            trusted_tls.url(),
            trusted_tls.ca_file().display(),
            unknown_tls.url(),
        ),
    );
    let alice = login(&server, "alice");
    let admin = login(&server, "admin");
    let rid = id(&common::create(&alice, "web", "deploy", &[]));
    wait_for("the notification over HTTPS", || {
        !notices(&trusted, "approval_needed", &rid).is_empty()
    });
    wait_for("the failed delivery's audit event", || {
        !audit_records(&admin, "notification.failed").is_empty()
    });
    let failed = audit_records(&admin, "notification.failed");
    let reason = failed[0]["event"]["outcome"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("127.0.0.1") && reason.to_lowercase().contains("certificate"),
        "{reason}"
    );
    assert!(failed[0].to_string().contains("system-roots"), "{failed:?}");
    // Nothing was sent over a connection whose certificate did not verify.
    thread::sleep(Duration::from_secs(1));
    assert!(unknown.accepted().is_empty(), "{:?}", unknown.accepted());
    assert_eq!(notices(&trusted, "approval_needed", &rid).len(), 1);
}

#[test]
fn mail_goes_to_a_relay_over_starttls_or_tls_with_a_login() {
    let ca = TestCa::new();
    let starttls = SmtpSink::start_secure(SmtpTls::Starttls, &ca, "warden", "relay-pw-1");
    let smtps = SmtpSink::start_secure(SmtpTls::Tls, &ca, "warden", "relay-pw-1");
    let dir = tempfile::tempdir().unwrap();
    let sink = |name: &str, port: u16, extra: &str| {
        format!(
            "[[notify]]\nname = \"{name}\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             from = \"warden@example.com\"\nto = {{ approvers = [\"{name}@example.com\"] }}\n{extra}\n"
        )
    };
    let login = |password: &str| {
        format!(
            "username = \"warden\"\npassword = {password}\nca_file = \"{}\"\n",
            ca.ca_file().display()
        )
    };
    // One sink reads its password from a file, so the configuration holds no secret.
    let password_file = dir.path().join("relay-password");
    std::fs::write(&password_file, "relay-pw-1\n").unwrap();
    let server = start(
        dir.path(),
        &[
            sink(
                "submission",
                starttls.port(),
                &format!(
                    "tls = \"starttls\"\n{}",
                    login(&format!("{{ file = {:?} }}", password_file))
                ),
            ),
            sink(
                "smtps",
                smtps.port(),
                &format!("tls = \"tls\"\n{}", login("\"relay-pw-1\"")),
            ),
            // The relay's CA is not among the system's roots.
            sink(
                "system-roots",
                starttls.port(),
                "tls = \"starttls\"\nusername = \"warden\"\npassword = \"relay-pw-1\"",
            ),
            sink(
                "wrong-password",
                smtps.port(),
                &format!("tls = \"tls\"\n{}", login("\"not-it\"")),
            ),
        ]
        .concat(),
    );
    let alice = self::login(&server, "alice");
    let admin = self::login(&server, "admin");
    common::create(&alice, "web", "deploy", &[]);

    for (relay, name) in [(&starttls, "submission"), (&smtps, "smtps")] {
        let m = mail(relay, "alice asks for web/deploy");
        assert_eq!(header(&m, "To"), format!("{name}@example.com"), "{m}");
        assert_eq!(header(&m, "X-Sink-TLS"), "yes", "{m}");
        assert_eq!(header(&m, "X-Sink-Login"), "warden", "{m}");
    }
    wait_for("both failed deliveries' audit events", || {
        audit_records(&admin, "notification.failed").len() >= 2
    });
    let failed = audit_records(&admin, "notification.failed");
    let reason = |sink: &str| {
        failed
            .iter()
            .find(|e| e.to_string().contains(&format!("\"{sink}\"")))
            .and_then(|e| e["event"]["outcome"]["reason"].as_str())
            .unwrap_or_else(|| panic!("no failure of {sink}: {failed:?}"))
            .to_lowercase()
    };
    assert!(reason("system-roots").contains("certificate"), "{failed:?}");
    assert!(reason("wrong-password").contains("535"), "{failed:?}");
    assert!(
        !format!("{failed:?}").contains("relay-pw-1") && !format!("{failed:?}").contains("not-it")
    );
    // Each relay kept exactly the one mail of the sink that could reach it.
    thread::sleep(Duration::from_secs(1));
    assert_eq!(starttls.messages().len(), 1);
    assert_eq!(smtps.messages().len(), 1);
}

#[test]
fn a_credential_that_cannot_be_issued_is_told_to_security_and_the_requester() {
    let hook = WebhookReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens at the target's port: every issue fails.
    let targets = format!(
        "[targets.pg]\nkind = \"postgres\"\nenvironment = \"test\"\n\
         [targets.pg.connection]\nhost = \"127.0.0.1\"\nport = {}\ndatabase = \"app\"\n\
         [targets.pg.roles.read]\ngrants = [\"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {{{{name}}}}\"]\n\
         [targets.pg.roles.root]\ngrants = [\"GRANT ALL ON ALL TABLES IN SCHEMA public TO {{{{name}}}}\"]\n",
        warden_testkit::free_port()
    );
    let rules = "@id(\"pg-peer\")\n@approval(\"peer(sre)\")\n@max_ttl(\"1h\")\n\
                 permit (principal in Group::\"dev\", action == Action::\"request\", resource == Role::\"pg/read\");\n\
                 @id(\"pg-bg\")\n@max_ttl(\"1h\")\n\
                 permit (principal in Group::\"sre\", action == Action::\"breakglass\", resource == Role::\"pg/root\");\n";
    let server = start_with(
        dir.path(),
        &targets,
        rules,
        &format!(
            "[[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n",
            hook.url()
        ),
    );
    let admin = login(&server, "admin");
    // Stored without a login, as nothing answers there.
    let stored = admin.run(
        &[
            "target",
            "set-credential",
            "pg",
            "--username",
            "warden_admin",
            "--password-stdin",
            "--no-verify",
        ],
        Some("unused-password"),
    );
    assert!(stored.success(), "{stored:?}");
    let (alice, bob) = (login(&server, "alice"), login(&server, "bob"));

    // A break-glass grant that fails: the emergency is not over, and security must know.
    let code = totp(&enroll_mfa(&bob), 1);
    let out = bob.run(
        &[
            "breakglass",
            "pg",
            "--role",
            "root",
            "--reason",
            "db down",
            "--ttl",
            "30m",
            "--totp",
            &code,
        ],
        None,
    );
    // Shown as it ended, its generated key removed, and a failure as approving it would be
    // (the target failed, not the policy).
    assert_eq!(out.code, 1, "{out:?}");
    let bg = ok(&bob, &["request", "list"]);
    let bg_id = bg["requests"][0]["id"].as_str().unwrap().to_owned();
    assert!(
        out.stdout.contains(&bg_id) && out.stdout.contains("revoked"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("BREAK-GLASS"), "{out:?}");
    assert!(
        out.stderr.contains("could not be issued")
            && out.stderr.contains("warden target set-credential pg"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read_dir(bob.home().join("ssh")).unwrap().count(),
        0
    );
    wait_for("security's notification", || {
        !notices(&hook, "issue_failed", &bg_id).is_empty()
    });
    let n = &notices(&hook, "issue_failed", &bg_id)[0];
    assert_eq!(
        (n["audience"].as_str(), n["request"]["breakglass"].as_bool()),
        (Some("security"), Some(true)),
        "{n}"
    );
    assert!(
        n["detail"]
            .as_str()
            .unwrap()
            .contains("could not be issued"),
        "{n}"
    );

    // An approved request that fails: its requester did not make the call that failed.
    let rid = id(&common::create(&alice, "pg", "read", &[]));
    let out = bob.run(
        &["--json", "request", "approve", &rid, "--comment", "go"],
        None,
    );
    assert!(!out.success(), "{out:?}");
    let refusal: serde_json::Value = serde_json::from_str(&out.stderr).unwrap();
    assert_eq!(refusal["error"]["code"], "issuer_failed", "{refusal}");
    assert_eq!(refusal["error"]["request_id"], rid.as_str(), "{refusal}");
    // The server's log has the cause, under the correlation id the client names.
    let message = refusal["error"]["message"].as_str().unwrap();
    let correlation = message
        .split("[x-request-id ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{message}"));
    let logged = server.stderr();
    assert!(
        logged
            .lines()
            .any(|l| l.contains("a credential could not be issued")
                && l.contains(correlation)
                && l.contains(&rid)),
        "{logged}"
    );
    wait_for("the requester's notification", || {
        !notices(&hook, "issue_failed", &rid).is_empty()
    });
    let n = &notices(&hook, "issue_failed", &rid)[0];
    assert_eq!(n["audience"], "requester", "{n}");
    assert_eq!(n["recipients"], serde_json::json!(["alice"]), "{n}");
    assert!(!n.to_string().contains("unused-password"), "{n}");
    assert_eq!(notices(&hook, "issue_failed", &rid).len(), 1);

    // Nothing reached the target, so there is nothing to revoke: no retries that could only
    // fail, no alarms about them.
    let failed = audit_events(&admin, "credential.issue_failed");
    assert_eq!(failed.len(), 2, "{failed:?}");
    for e in &failed {
        assert_eq!(e["details"]["cleanup"], "none needed", "{e}");
    }
    thread::sleep(Duration::from_secs(2));
    assert!(audit_events(&admin, "credential.revoke_failed").is_empty());
    assert!(notices(&hook, "revoke_failed", &rid).is_empty());
}

/// A member of security who breaks the glass is not who security's notice goes to: the others
/// are told, and with no one else to tell, no sink reaching people counts as security told.
#[test]
fn a_member_of_security_breaking_the_glass_is_not_security_told() {
    let hook = WebhookReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &format!(
            "[users.dora]\ngroups = [\"sre\", \"security\"]\n\n\
             [[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\naudiences = [\"security\"]\n",
            hook.url()
        ),
    );
    let dora = login(&server, "dora");
    let uri = enroll_mfa(&dora);
    let code = totp(&uri, 1);
    let v = ok(
        &dora,
        &[
            "breakglass",
            "web",
            "--role",
            "root",
            "--reason",
            "db down",
            "--ticket",
            "INC-8",
            "--ttl",
            "10m",
            "--totp",
            &code,
        ],
    );
    let rid = id(&v);
    wait_for("security's webhook", || {
        !notices(&hook, "breakglass", &rid).is_empty()
    });
    let n = &notices(&hook, "breakglass", &rid)[0];
    assert_eq!(n["recipients"], serde_json::json!(["sam"]), "{n}");
}

/// More notifications waiting for a sink that hangs than the dispatcher reads at once hold back
/// no other sink's: a break-glass queued behind them reaches the healthy sink at once, well
/// before the hung deliveries' 30 s are up.
#[test]
fn a_hung_sink_with_a_long_queue_holds_back_no_other_sinks_notices() {
    let hole = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let hole_port = hole.local_addr().unwrap().port();
    // Connections are taken and kept open, unanswered, until the test ends.
    let held = thread::spawn(move || hole.incoming().take(64).collect::<Vec<_>>());
    let hook = WebhookReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &format!(
            "[[notify]]\nname = \"hole\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{hole_port}/hook\"\n\
             audiences = [\"approvers\"]\n\n\
             [[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n",
            hook.url()
        ),
    );
    let (alice, bob) = (login(&server, "alice"), login(&server, "bob"));
    let uri = enroll_mfa(&bob);
    // Beyond the 64 read at once, each waiting for the hung sink.
    let asked: Vec<String> = (0..90)
        .map(|_| id(&common::create(&alice, "web", "deploy", &[])))
        .collect();
    let mut args = BREAK_GLASS_FOR_ADMIN.to_vec();
    let code = totp(&uri, 1);
    args.extend(["--totp", &code]);
    let broken = id(&ok(&bob, &args));
    let deadline = Instant::now() + Duration::from_secs(10);
    while notices(&hook, "breakglass", &broken).is_empty()
        || !asked
            .iter()
            .all(|rid| !notices(&hook, "approval_needed", rid).is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "the healthy sink waited for the hung one: break-glass told: {}, {} of {} approvals told",
            !notices(&hook, "breakglass", &broken).is_empty(),
            asked
                .iter()
                .filter(|rid| !notices(&hook, "approval_needed", rid).is_empty())
                .count(),
            asked.len()
        );
        thread::sleep(Duration::from_millis(50));
    }
    drop(server);
    drop(held);
}
