//! Operating figures through the real binary: a scripted history of requests (automatic
//! grants, peer and two-person approvals, a denial, a cancel, early revokes, a database grant)
//! must show up exactly in `warden report --json` and in `/metrics`, which `promtool check
//! metrics` must accept; plus the metrics token, correlation ids and JSON logs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use warden_testkit::{Postgres, http_get, http_get_with};

/// The value of the sample named exactly `series` (name and labels as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes `/metrics` and checks it with `promtool check metrics`.
fn scrape(port: u16) -> String {
    let r = http_get(port, "/metrics").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(r.body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool rejected /metrics:\n{}{}\n--- metrics ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        r.body
    );
    r.body
}

fn figure(card: &Value, name: &str) -> Value {
    card[name].clone()
}

#[test]
fn scorecard_and_metrics_follow_a_scripted_history() {
    let mut env = Env::start();
    let started = Instant::now();
    let alice = env.login("alice");
    let bob = env.login("bob");
    let sam = env.login("sam");
    let admin = env.login("admin");

    // Two automatic grants; one is revoked early.
    create(&alice, "web", "view", &["--ttl", "10m"]);
    let early = id(&create(&alice, "web", "view", &["--ttl", "10m"]));
    ok(&alice, &["request", "revoke", &early, "--comment", "done"]);
    // A peer approval with a ticket, a denial and a cancel.
    let deploy = id(&create(&alice, "web", "deploy", &["--ticket", "CHG-1"]));
    assert_eq!(
        ok(&bob, &["request", "approve", &deploy])["state"],
        "active"
    );
    let denied = id(&create(&alice, "web", "deploy", &["--ticket", "CHG-2"]));
    ok(&bob, &["request", "deny", &denied, "--comment", "not now"]);
    let cancelled = id(&create(&alice, "web", "deploy", &["--ticket", "CHG-3"]));
    ok(&alice, &["request", "cancel", &cancelled]);
    // Two people, one from security.
    let root = id(&create(&alice, "web", "root", &[]));
    ok(&sam, &["request", "approve", &root]);
    assert_eq!(ok(&bob, &["request", "approve", &root])["state"], "active");
    let elapsed = started.elapsed().as_secs_f64();

    // The report, exactly where the history decides it, within bounds where it is a time.
    let card = ok(&admin, &["report"]);
    let until_report = started.elapsed().as_secs_f64();
    assert_eq!(
        card["requests"],
        serde_json::json!({"active": 3, "revoked": 1, "denied": 1, "cancelled": 1})
    );
    assert_eq!(card["grants"], 4);
    let jit = figure(&card, "jit_share");
    assert_eq!(
        (
            jit["value"].as_f64(),
            jit["count"].as_u64(),
            jit["of"].as_u64()
        ),
        (Some(1.0), Some(4), Some(4))
    );
    assert_eq!(jit["standing"], "within");
    assert!(card["standing_accounts"].is_null());
    let ticket = figure(&card, "ticket_share");
    assert_eq!(
        (ticket["value"].as_f64(), ticket["count"].as_u64()),
        (Some(0.25), Some(1))
    );
    assert_eq!(ticket["standing"], "untargeted");
    for name in ["approval_median_seconds", "approval_p90_seconds"] {
        let f = figure(&card, name);
        assert_eq!(f["count"], 2, "{name}: {f}");
        let v = f["value"].as_f64().unwrap();
        assert!(
            v > 0.0 && v <= elapsed,
            "{name} = {v}, history took {elapsed}"
        );
        // Approved within seconds: quicker than the healthy band.
        assert_eq!(f["standing"], "below", "{name}");
        assert_eq!(f["band"], serde_json::json!({"min": 300.0, "max": 900.0}));
    }
    let held = figure(&card, "privilege_seconds");
    assert_eq!(held["count"], 4);
    assert!(held["value"].as_f64().unwrap() <= until_report, "{held}");
    for name in ["breakglass_uses", "postmortems_open", "revocation_failures"] {
        assert_eq!(figure(&card, name)["value"], 0.0, "{name}");
    }
    assert_eq!(
        figure(&card, "revocation_max_seconds")["standing"],
        "no-data"
    );

    // A period before the history holds nothing.
    let empty = ok(
        &admin,
        &[
            "report",
            "--from",
            "2020-01-01T00:00:00Z",
            "--to",
            "2020-02-01T00:00:00Z",
        ],
    );
    assert_eq!(empty["grants"], 0);
    assert_eq!(empty["jit_share"]["standing"], "no-data");
    // Bad input and callers without the right are refused with a reason.
    let bad = fails(&admin, &["report", "--from", "yesterday"], 2);
    assert!(bad.stderr.contains("is not an RFC 3339 time"), "{bad:?}");
    let backwards = fails(
        &admin,
        &[
            "report",
            "--from",
            "2026-02-01T00:00:00Z",
            "--to",
            "2026-01-01T00:00:00Z",
        ],
        2,
    );
    assert!(
        backwards.stderr.contains("from must be before to"),
        "{backwards:?}"
    );
    let refused = fails(&alice, &["report"], 3);
    assert!(refused.stderr.contains("security"), "{refused:?}");
    // The security group may read it, and the human table says where figures stand.
    let table = sam.run(&["report"], None);
    assert!(table.success(), "{table:?}");
    assert!(
        table
            .stdout
            .contains("just-in-time share       100.0% (4 of 4)"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("BELOW"), "{}", table.stdout);
    assert!(table.stdout.contains("not measured"), "{}", table.stdout);
    // A period under a second is shown as one, not as an empty one.
    let short = sam.run(
        &[
            "report",
            "--from",
            "2026-01-01T00:00:00Z",
            "--to",
            "2026-01-01T00:00:00.250Z",
        ],
        None,
    );
    assert!(
        short
            .stdout
            .contains("2026-01-01T00:00:00.000Z to 2026-01-01T00:00:00.250Z"),
        "{}",
        short.stdout
    );

    // Metrics: accepted by promtool, and the series moved as the history says.
    let m = scrape(env.server.port());
    for (series, want) in [
        (r#"warden_requests{state="active",tier="auto"}"#, 1.0),
        (r#"warden_requests{state="revoked",tier="auto"}"#, 1.0),
        (r#"warden_requests{state="active",tier="peer"}"#, 1.0),
        (r#"warden_requests{state="denied",tier="peer"}"#, 1.0),
        (r#"warden_requests{state="cancelled",tier="peer"}"#, 1.0),
        (r#"warden_requests{state="pending",tier="peer"}"#, 0.0),
        (r#"warden_requests{state="active",tier="two-person"}"#, 1.0),
        ("warden_grants_active", 3.0),
        (r#"warden_requests_created_total{tier="auto"}"#, 2.0),
        (r#"warden_requests_created_total{tier="peer"}"#, 3.0),
        (r#"warden_requests_created_total{tier="two-person"}"#, 1.0),
        (r#"warden_credentials_issued_total{kind="ssh"}"#, 4.0),
        (r#"warden_approval_latency_seconds_count{tier="peer"}"#, 1.0),
        (
            r#"warden_approval_latency_seconds_count{tier="two-person"}"#,
            1.0,
        ),
        (r#"warden_time_to_grant_seconds_count{tier="auto"}"#, 2.0),
        (r#"warden_breakglass_uses_total{drill="false"}"#, 0.0),
        ("warden_postmortems_open", 0.0),
        ("warden_leases_failed", 0.0),
    ] {
        assert_eq!(sample(&m, series), Some(want), "{series}\n{m}");
    }
    // Approvals took seconds: all in the buckets below the 5-minute mark.
    assert_eq!(
        sample(
            &m,
            r#"warden_approval_latency_seconds_bucket{tier="peer",le="300"}"#
        ),
        Some(1.0)
    );
    assert!(
        !m.contains("alice") && !m.contains(&deploy),
        "labels must be bounded:\n{m}"
    );

    // After a restart the store-backed series are the same; event counters start again.
    env.server.terminate();
    env.server.restart();
    let m = scrape(env.server.port());
    assert_eq!(
        sample(&m, r#"warden_requests{state="active",tier="peer"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&m, "warden_grants_active"), Some(3.0));
    assert_eq!(
        sample(&m, r#"warden_requests_created_total{tier="peer"}"#),
        None
    );
}

/// Milliseconds from RFC 3339 time `a` to `b`, as the API writes them.
fn ms_between(a: &Value, b: &Value) -> i128 {
    use time::format_description::well_known::Rfc3339;
    let at = |v: &Value| time::OffsetDateTime::parse(v.as_str().unwrap(), &Rfc3339).unwrap();
    (at(b) - at(a)).whole_milliseconds()
}

/// The report times a request's approval by the approvals that counted toward its grant: one
/// withdrawn while it waited (its giver's password reset by an administrator) counts for
/// nothing, however late it was given. Here the tier is then relaxed to what the earlier
/// approval meets, and Warden grants it.
#[test]
fn a_withdrawn_approval_does_not_time_the_approval() {
    let deploy = "@approval(\"peer(sre)\")\n@max_ttl(\"4h\")";
    let three = RULES
        .replace(
            deploy,
            "@approval(\"peer(sre) & peer(security) & manager\")\n@max_ttl(\"4h\")",
        )
        .replace("@pending_timeout(\"3s\")", "@pending_timeout(\"1h\")");
    assert_ne!(three, RULES);
    let env = Env::start_with(&[("targets.toml", TARGETS), ("access.cedar", &three)], &[]);
    let (alice, bob, sam, admin) = (
        env.login("alice"),
        env.login("bob"),
        env.login("sam"),
        env.login("admin"),
    );
    let rid = id(&create(&alice, "web", "deploy", &["--ticket", "CHG-1"]));
    assert_eq!(ok(&bob, &["request", "approve", &rid])["state"], "pending");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(ok(&sam, &["request", "approve", &rid])["state"], "pending");
    // An administrator's new password for sam withdraws his approval.
    let out = admin.run(
        &["user", "set-password", "sam", "--password-stdin"],
        Some("sam's new password 12"),
    );
    assert!(out.success(), "{out:?}");
    let shown = ok(&admin, &["request", "show", &rid]);
    assert_eq!(shown["reviews"][1]["withdrawn"], "their password was reset");
    // Relaxed to what bob's approval meets, the request is granted by Warden.
    let relaxed = three.replace("peer(sre) & peer(security) & manager", "peer(sre)");
    write_policy(&env.policy_dir(), &[("access.cedar", &relaxed)]);
    ok(&admin, &["policy", "reload"]);
    wait_until(
        "the relaxed request's grant",
        Duration::from_secs(10),
        || state(&admin, &rid) == "active",
    );
    let shown = ok(&admin, &["request", "show", &rid]);
    let reviews = shown["reviews"].as_array().unwrap();
    assert_eq!(reviews[0]["reviewer"], "bob", "{shown}");
    assert_eq!(reviews[1]["reviewer"], "sam", "{shown}");
    let bobs = ms_between(&shown["created_at"], &reviews[0]["at"]);
    let sams = ms_between(&shown["created_at"], &reviews[1]["at"]);
    assert!(sams - bobs >= 1000, "{shown}");

    let card = ok(&admin, &["report"]);
    let median = figure(&card, "approval_median_seconds");
    assert_eq!(median["count"], 1, "{card}");
    let seconds = median["value"].as_f64().unwrap();
    assert!(
        (seconds * 1000.0 - bobs as f64).abs() < 1.0,
        "approval timed at {seconds} s, bob's approval came after {bobs} ms and sam's withdrawn one after {sams} ms: {card}"
    );
}

#[test]
fn database_revocation_is_timed_in_report_and_metrics() {
    let pg = Postgres::start();
    let targets = format!(
        r#"
[targets.pg]
kind = "postgres"
environment = "test"
[targets.pg.connection]
host = "127.0.0.1"
port = {}
database = "app"
[targets.pg.roles.read]
grants = ["GRANT SELECT ON ALL TABLES IN SCHEMA public TO {{{{name}}}}"]
"#,
        pg.port()
    );
    let rules = r#"
@id("pg-read")
@approval("auto")
@max_ttl("1h")
permit (principal, action == Action::"request", resource == Role::"pg/read");
"#;
    let mut env = Env::start_with(&[("targets.toml", &targets), ("access.cedar", rules)], &[]);
    let admin = env.login("admin");
    set_credential(&admin, "pg", pg.admin_user(), pg.admin_password());
    let alice = env.login("alice");
    let grant = id(&create(&alice, "pg", "read", &["--ttl", "10m"]));
    ok(&alice, &["request", "revoke", &grant]);
    wait_until("the account's removal", Duration::from_secs(20), || {
        audit_actions(&admin, &grant)
            .iter()
            .any(|(a, _)| a == "credential.revoked")
    });

    let card = ok(&admin, &["report"]);
    let max = figure(&card, "revocation_max_seconds");
    assert_eq!(max["count"], 1, "{card}");
    let lag = max["value"].as_f64().unwrap();
    // Revoked through the API, removed by the worker at once: well under the 20 s waited.
    assert!((0.0..20.0).contains(&lag), "{lag}");
    assert_eq!(
        figure(&card, "revocation_mean_seconds")["value"],
        max["value"]
    );

    let m = scrape(env.server.port());
    assert_eq!(
        sample(&m, r#"warden_credentials_issued_total{kind="postgres"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, r#"warden_credentials_revoked_total{kind="postgres"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            r#"warden_revocation_lag_seconds_count{kind="postgres"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, r#"warden_requests{state="revoked",tier="auto"}"#),
        Some(1.0)
    );

    // The report times the revocation from the lease, so archiving its events (up to the
    // checkpoint of a restart) leaves the figure as it was.
    env.server.terminate();
    env.server.restart();
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let archived = ok(&admin, &["audit", "archive", "--before", &now]);
    assert!(archived["to"].as_u64().unwrap() > 0, "{archived}");
    assert!(audit_actions(&admin, &grant).is_empty());
    let after = ok(&admin, &["report"]);
    assert_eq!(figure(&after, "revocation_max_seconds"), max, "{after}");
    assert_eq!(figure(&after, "revocation_failures")["value"], 0.0);
}

#[test]
fn metrics_token_correlation_ids_and_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("warden.toml");
    let token = "a-metrics-token-for-tests-0123456789";
    std::fs::write(&config, format!("metrics_token = \"{token}\"\n")).unwrap();
    let env = Env::start_with(
        &[("targets.toml", TARGETS), ("access.cedar", RULES)],
        &["--config", config.to_str().unwrap(), "--log-format", "json"],
    );
    let port = env.server.port();

    let none = http_get(port, "/metrics").unwrap();
    assert_eq!(none.status, 401);
    let body: Value = serde_json::from_str(&none.body).unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("metrics_token")
    );
    let wrong = http_get_with(
        port,
        "/metrics",
        &[
            ("Authorization", "Bearer not-the-token-at-all"),
            ("X-Request-Id", "it-corr-41"),
        ],
    );
    assert_eq!(wrong.unwrap().status, 401);
    let auth = format!("Bearer {token}");
    let right = http_get_with(
        port,
        "/metrics",
        &[("Authorization", &auth), ("X-Request-Id", "it-corr-42")],
    )
    .unwrap();
    assert_eq!(right.status, 200);
    assert!(right.body.contains("warden_requests{"), "{}", right.body);
    // The caller's correlation id is echoed and carried by the request's log lines: the
    // refused scrape has an access-log line, the successful one none at the default level.
    assert_eq!(right.header("x-request-id"), Some("it-corr-42"));
    // Refused scrapes are audited, and the token is in no event.
    let admin = env.login("admin");
    let events = ok(
        &admin,
        &["audit", "search", "--code", "auth.token_rejected"],
    );
    let rejected: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"]["details"]["endpoint"] == "/metrics")
        .collect();
    assert_eq!(rejected.len(), 2, "{events}");
    assert!(!events.to_string().contains(token));

    // A malformed id, or one holding a token (pasted into the wrong header), is replaced by a
    // generated one; none given, one is generated.
    let long = "x".repeat(200);
    let pasted = common::token(&admin);
    for given in [
        Some(long.as_str()),
        Some("bad id\twith tab"),
        Some(pasted.as_str()),
        None,
    ] {
        let headers: Vec<(&str, &str)> = given.map(|g| ("X-Request-Id", g)).into_iter().collect();
        let r = http_get_with(port, "/healthz", &headers).unwrap();
        let id = r.header("x-request-id").unwrap().to_owned();
        assert_eq!(id.len(), 36, "{id}");
        assert!(uuid_like(&id), "{id}");
    }

    wait_until(
        "the refused request's log line",
        Duration::from_secs(5),
        || env.server.stderr().contains("it-corr-41"),
    );
    let logs = env.server.stderr();
    let line = logs.lines().find(|l| l.contains("it-corr-41")).unwrap();
    let json: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(json["span"]["request_id"], "it-corr-41", "{line}");
    assert_eq!(json["span"]["path"], "/metrics", "{line}");
    assert_eq!(json["fields"]["status"], 401, "{line}");
    assert!(
        !logs.contains("it-corr-42"),
        "a successful request was logged: {logs}"
    );
    assert!(!logs.contains(token), "the metrics token reached the log");
}

fn uuid_like(s: &str) -> bool {
    s.split('-').map(str::len).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// A log filter that does not parse stops the start, saying what to write instead: logging at
/// the default level would leave whoever asked for debug lines believing they had them.
#[test]
fn a_log_filter_that_does_not_parse_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .arg("20")
        .arg(BIN)
        .args(["serve", "--dev", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--ssh-listen", "127.0.0.1:0"])
        .env("WARDEN_LOG", "warden_server=verbose")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("WARDEN_LOG=\"warden_server=verbose\" is no log filter")
            && said.contains("warn,warden_server=debug"),
        "{said}"
    );
    assert!(!dir.path().join("data").exists(), "nothing is started");
}
