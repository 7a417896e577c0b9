//! The API under abuse, through the real binary: slow and idle connections, late and
//! oversized bodies, guessed passwords and TOTP codes, sprayed passwords and forged tokens from
//! one address (directly and behind a proxy), bursts of sign-ins, and a request that stalls
//! through shutdown. The server must keep serving everyone else, refuse each abuser
//! clearly, and stop on time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use warden_testkit::{Cli, HttpResponse, http_get_with, http_post_with};

#[test]
fn slow_and_idle_connections_are_closed() {
    use std::io::{Read, Write};
    use std::time::Duration;
    let env = Env::start_configured("http_read_timeout = \"1s\"\n");
    let port = env.server.port();
    let connect = || {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    // Whatever the server still says once it gives up on a connection, then its end.
    let rest = |s: &mut std::net::TcpStream| {
        let mut out = Vec::new();
        match s.read_to_end(&mut out) {
            Ok(_) => String::from_utf8_lossy(&out).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => String::new(),
            Err(e) => panic!("the server kept the connection open: {e}"),
        }
    };

    // Headers that never end.
    let mut half = connect();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    let said = rest(&mut half);
    assert!(
        said.is_empty() || said.starts_with("HTTP/1.1 408"),
        "{said}"
    );

    // Headers sent a byte at a time, each well within the timeout: cut all the same, and
    // writing to a connection the server closed fails.
    let mut trickle = connect();
    let header = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ";
    let cut = header
        .iter()
        .chain(std::iter::repeat(&b'x'))
        .take(40)
        .any(|b| {
            std::thread::sleep(Duration::from_millis(200));
            trickle.write_all(&[*b]).is_err()
        });
    assert!(
        cut,
        "a client sending its headers a byte at a time kept its connection for 8 s"
    );

    // A keep-alive connection answered once, then left idle.
    let mut idle = connect();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    rest(&mut idle);

    // A client that asks for many answers and reads none: cut once the server has waited the
    // timeout for it to read, so it gets only what the socket buffers held by then.
    let mut deaf = connect();
    let asks = 1000;
    deaf.write_all(&b"GET /v1/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(asks))
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let mut got = Vec::new();
    let mut piece = vec![0u8; 1 << 16];
    loop {
        match deaf.read(&mut piece) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&piece[..n]),
        }
    }
    let answered = got.windows(12).filter(|w| w == b"HTTP/1.1 200").count();
    assert!(
        answered < asks,
        "all {asks} answers waited for a client that never read"
    );
    // One that reads slowly but steadily (here 8 KiB every 50 ms) gets every answer.
    let size = warden_testkit::http_get(port, "/v1/openapi.json")
        .unwrap()
        .body
        .len();
    let asks = (800_000 / size).max(2);
    let mut slow = connect();
    slow.write_all(&b"GET /v1/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(asks))
        .unwrap();
    let mut got = Vec::new();
    let mut piece = vec![0u8; 8 * 1024];
    let answered = |got: &[u8]| got.windows(12).filter(|w| w == b"HTTP/1.1 200").count();
    while answered(&got) < asks || !got.ends_with(b"}") {
        std::thread::sleep(Duration::from_millis(50));
        match slow.read(&mut piece) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&piece[..n]),
        }
    }
    assert_eq!(answered(&got), asks, "a slow but steady reader was cut");

    // A body that stops short of its length: refused as late, audited, and the connection
    // closed; then a chunked body over the limit, which no Content-Length announced.
    let bearer = token(&env.login("alice"));
    let head = |extra: &str| {
        format!(
            "POST /v1/requests HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {bearer}\r\n\
             Content-Type: application/json\r\n{extra}\r\n"
        )
    };
    let mut slow = connect();
    write!(slow, "{}{{\"target\":", head("Content-Length: 100\r\n")).unwrap();
    let said = rest(&mut slow);
    assert!(said.starts_with("HTTP/1.1 408"), "{said}");
    assert_eq!(
        error_code(said.split_once("\r\n\r\n").unwrap().1),
        "request_timeout"
    );
    let mut big = connect();
    let chunk = vec![b'x'; 70 * 1024];
    let _ = write!(
        big,
        "{}{:x}\r\n",
        head("Transfer-Encoding: chunked\r\n"),
        chunk.len()
    )
    .and_then(|()| big.write_all(&chunk))
    .and_then(|()| big.write_all(b"\r\n0\r\n\r\n"));
    let mut answer = [0u8; 512];
    let n = big.read(&mut answer).unwrap();
    let said = String::from_utf8_lossy(&answer[..n]);
    assert!(said.starts_with("HTTP/1.1 413"), "{said}");
    assert!(said.contains("body_too_large"), "{said}");
    // One declared too large is refused before it is sent.
    let mut declared = connect();
    write!(declared, "{}", head("Content-Length: 70000\r\n")).unwrap();
    let said = rest(&mut declared);
    assert!(said.starts_with("HTTP/1.1 413"), "{said}");
    assert_eq!(
        audit_values(
            &env.login("admin"),
            "request.action_refused",
            "/outcome/code"
        ),
        ["request_timeout", "body_too_large", "body_too_large"]
    );

    // The server keeps serving.
    assert_eq!(
        warden_testkit::http_get(port, "/healthz").unwrap().status,
        200
    );
}

#[test]
fn oversized_heads_get_json_errors_and_optional_bodies_may_be_left_out() {
    use std::io::{Read, Write};
    let env = Env::start();
    let port = env.server.port();
    let alice = env.login("alice");
    let bearer = token(&alice);
    let auth = format!("Bearer {bearer}");

    let long_query = format!("/v1/audit?actor={}", "a".repeat(9 * 1024));
    let said = http_get_with(port, &long_query, &[("Authorization", &auth)]).unwrap();
    assert_eq!(said.status, 414, "{}", said.body);
    assert_eq!(error_code(&said.body), "uri_too_long");
    // Refused before it is routed, and still not to be kept by a cache, as every answer.
    assert_eq!(said.header("cache-control"), Some("no-store"));

    let padding = "p".repeat(4000);
    let many: Vec<(String, &str)> = (0..5)
        .map(|i| (format!("X-Pad-{i}"), padding.as_str()))
        .collect();
    let headers: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let said = http_get_with(port, "/v1/auth/whoami", &headers).unwrap();
    assert_eq!(said.status, 431, "{}", said.body);
    assert_eq!(error_code(&said.body), "headers_too_large");
    assert_eq!(said.header("cache-control"), Some("no-store"));
    let fine = http_get_with(port, "/v1/auth/whoami", &[("Authorization", &auth)]).unwrap();
    assert_eq!(fine.status, 200, "{}", fine.body);
    assert_eq!(fine.header("cache-control"), Some("no-store"));

    // Framing read one way only: a transfer coding other than chunked once, a body encoding,
    // an expectation it cannot meet, or an HTTP/1.1 request without exactly one Host is refused
    // before it is handled (a sign-in here, which would otherwise succeed).
    let login = r#"{"user":"alice","password":"warden-dev"}"#;
    let chunked = format!("{:x}\r\n{login}\r\n0\r\n\r\n", login.len());
    let raw = |head: &str, body: &str| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "POST /v1/auth/login HTTP/1.1\r\n{head}Content-Type: application/json\r\nConnection: close\r\n\r\n{body}"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    };
    let host = "Host: 127.0.0.1\r\n";
    let sized = format!("Content-Length: {}\r\n", login.len());
    for (head, body, status, code) in [
        (
            format!("{host}Transfer-Encoding: gzip, chunked\r\n"),
            chunked.as_str(),
            "501",
            "unsupported_transfer_coding",
        ),
        (
            format!("{host}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
            chunked.as_str(),
            "400",
            "bad_framing",
        ),
        (
            format!("{host}Content-Encoding: gzip\r\n{sized}"),
            login,
            "415",
            "unsupported_content_encoding",
        ),
        (
            format!("{host}Expect: something-else\r\n{sized}"),
            login,
            "417",
            "expectation_failed",
        ),
        (sized.clone(), login, "400", "bad_host"),
        (
            format!("{host}Host: elsewhere\r\n{sized}"),
            login,
            "400",
            "bad_host",
        ),
    ] {
        let answer = raw(&head, body);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{head}: {answer}"
        );
        assert!(
            answer.contains(&format!("\"code\":\"{code}\"")),
            "{head}: {answer}"
        );
        assert!(
            answer.contains("\r\ncache-control: no-store\r\n"),
            "{head}: {answer}"
        );
    }
    let answer = raw(&format!("{host}{sized}"), login);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("\r\ncache-control: no-store\r\n"),
        "{answer}"
    );

    // A peer approves with a bare POST: no body, no Content-Type.
    let pending = create(&alice, "web", "deploy", &["--ticket", "CHG-1"]);
    assert_eq!(pending["state"], "pending");
    let bob = token(&env.login("bob"));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /v1/requests/{}/approve HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {bob}\r\nConnection: close\r\n\r\n",
        id(&pending)
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(state(&alice, &id(&pending)), "active");

    // `null`, as the OpenAPI document allows for an optional body, is no body; a body in
    // another encoding than UTF-8 is not read as one.
    let pending = create(&alice, "web", "deploy", &["--ticket", "CHG-3"]);
    let path = format!("/v1/requests/{}/approve", id(&pending));
    let bearer = format!("Bearer {bob}");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {bearer}\r\nContent-Type: application/json; charset=latin1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}",
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 415"), "{answer}");
    assert!(answer.contains("JSON in UTF-8"), "{answer}");
    let said = http_post_with(port, &path, &[("Authorization", bearer.as_str())], "null").unwrap();
    assert_eq!(said.status, 200, "{}", said.body);
    assert_eq!(state(&alice, &id(&pending)), "active");

    // So is a body of white space alone: alice cancels with a line break.
    let pending = create(&alice, "web", "deploy", &["--ticket", "CHG-4"]);
    let said = http_post_with(
        port,
        &format!("/v1/requests/{}/cancel", id(&pending)),
        &[("Authorization", &auth)],
        "\r\n",
    )
    .unwrap();
    assert_eq!(said.status, 200, "{}", said.body);
    assert_eq!(state(&alice, &id(&pending)), "cancelled");

    // A body that is sent must still be JSON.
    let said = http_post_with(
        port,
        "/v1/auth/mfa/enroll",
        &[("Authorization", &auth)],
        "totp",
    )
    .unwrap();
    assert_eq!(said.status, 400, "{}", said.body);
    assert_eq!(error_code(&said.body), "bad_json");

    // An empty body sent in chunks is left out too: bob denies with one.
    let pending = create(&alice, "web", "deploy", &["--ticket", "CHG-2"]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /v1/requests/{}/deny HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {bob}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
        id(&pending)
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(state(&alice, &id(&pending)), "denied");

    // A body is an object: JSON's other values are refused by their kind, an array too (which
    // would otherwise fill the fields by position).
    // (The client sends every body as application/json.)
    let json = [("Authorization", auth.as_str())];
    for (sent, kind) in [
        (r#"["web", "view", "reason", null, "1h"]"#, "an array"),
        ("42", "a number"),
    ] {
        let said = http_post_with(port, "/v1/requests", &json, sent).unwrap();
        assert_eq!(said.status, 400, "{}", said.body);
        assert_eq!(error_code(&said.body), "bad_json");
        assert!(
            said.body.contains("must be a JSON object") && said.body.contains(kind),
            "{}",
            said.body
        );
    }

    // An action without fields takes none: a field sent to it is refused, not dropped, the
    // request stays as it was, and the refusal is in the request's history.
    let pending = id(&create(&alice, "web", "deploy", &["--ticket", "CHG-3"]));
    let said = http_post_with(
        port,
        &format!("/v1/requests/{pending}/cancel"),
        &json,
        r#"{"comment": "no longer needed"}"#,
    )
    .unwrap();
    assert_eq!(said.status, 400, "{}", said.body);
    assert_eq!(error_code(&said.body), "bad_json");
    assert!(
        said.body.contains(
            "unknown field `comment`: this action takes no fields (send `{}` or no body)"
        ),
        "{}",
        said.body
    );
    assert_eq!(state(&alice, &pending), "pending");
    let history = ok(
        &env.login("admin"),
        &["audit", "search", "--request", &pending],
    );
    let refused: Vec<&serde_json::Value> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"]["action"] == "request.action_refused")
        .collect();
    assert_eq!(refused.len(), 1, "{history}");
    assert_eq!(refused[0]["event"]["details"]["action"], "request.cancel");
}

#[test]
fn ambiguous_durations_limits_and_periods_are_refused() {
    let env = Env::start();
    let port = env.server.port();
    let alice = env.login("alice");
    let out = fails(
        &alice,
        &[
            "request", "create", "web", "--role", "view", "--reason", "x", "--ttl", "1h1h",
        ],
        2,
    );
    assert!(out.stderr.contains("not a duration"), "{out:?}");
    let admin = env.login("admin");
    let auth = format!("Bearer {}", token(&admin));
    let long_time = format!("/v1/audit?from={}", "A".repeat(4000));
    let long_session = format!("/v1/sessions/{}/recording", "A".repeat(4000));
    let long_code = format!("/v1/audit?code={}", "B".repeat(6000));
    let long_state = format!("/v1/requests?state={}", "S".repeat(6000));
    for (path, code) in [
        ("/v1/requests?limit=0", "bad_limit"),
        ("/v1/audit?limit=0", "bad_limit"),
        (
            "/v1/audit/export?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            "bad_period",
        ),
        (
            "/v1/audit?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            "bad_period",
        ),
        ("/v1/report?to=0000-01-15T00:00:00Z", "bad_period"),
        ("/v1/report?form=2026-01-01T00:00:00Z", "bad_query"),
        (long_time.as_str(), "bad_time"),
        (long_code.as_str(), "bad_code"),
        (long_state.as_str(), "bad_state"),
        (long_session.as_str(), "bad_id"),
        ("/v1/sessions/abc/watch", "bad_id"),
    ] {
        let said = http_get_with(port, path, &[("Authorization", &auth)]).unwrap();
        assert_eq!(said.status, 400, "{path}: {}", said.body);
        assert_eq!(error_code(&said.body), code, "{path}");
        // Whatever was sent, the message (and the audit event of the refusal) stays short: at
        // most the list of what may be asked for.
        assert!(said.body.len() < 3000, "{path}: {}", said.body);
    }
    let refused = audit_values(&admin, "request.action_refused", "/outcome/code");
    for code in ["bad_query", "bad_time", "bad_id"] {
        assert!(refused.iter().any(|c| c == code), "{code}: {refused:?}");
    }
    // A fingerprint is checked before it is looked up, and quoted escaped and short.
    let forged = format!("SHA256:\u{202e}{}", "B".repeat(3000));
    let out = fails(&alice, &["keys", "remove", &forged], 2);
    assert!(
        out.stderr.contains("\\u{202e}") && out.stderr.len() < 400,
        "{out:?}"
    );
    // A name typed is audited as typed when it is a user's, in any letter case; else only its
    // length: a password typed into the wrong field (lower-case ones that read like a name
    // too), or control characters, never reach the log.
    for user in [
        r"alice\u0000\u001b[2J",
        "Tr0ub4dor&3-sekret",
        "Alice",
        "CorrectHorse2024Battery",
        "mallory",
        "correct-horse-battery-staple",
    ] {
        let body = format!(r#"{{"user":"{user}","password":"wrong password here"}}"#);
        let said = http_post_with(port, "/v1/auth/login", &[], &body).unwrap();
        assert_eq!(said.status, 401, "{}", said.body);
    }
    let claimed = audit_values(&admin, "auth.login_failed", "/actor/claimed");
    assert_eq!(
        claimed,
        [
            "(no such user, 10 characters)",
            "(no such user, 18 characters)",
            "Alice",
            "(no such user, 23 characters)",
            "mallory",
            "(no such user, 28 characters)"
        ]
    );
    // A sign-in refused for its form, before any password check, is on the record too,
    // without what it sent.
    for (sent, code) in [
        (
            r#"{"user":"ghost","user":"alice","password":"sekret-dup-1"}"#,
            "bad_json",
        ),
        (
            r#"{"user":"alice","password":"sekret-extra-1","admin":true}"#,
            "bad_json",
        ),
        // A secret sent as a key: the field it did not expect is not named.
        (
            r#"{"user":"alice","sekret-as-a-key\u202e":"x"}"#,
            "bad_json",
        ),
    ] {
        let said = http_post_with(port, "/v1/auth/login", &[], sent).unwrap();
        assert_eq!(said.status, 400, "{}", said.body);
        assert_eq!(error_code(&said.body), code, "{}", said.body);
    }
    let long = format!(r#"{{"user":"alice","password":"{}"}}"#, "p".repeat(5000));
    let said = http_post_with(port, "/v1/auth/login", &[], &long).unwrap();
    assert_eq!(error_code(&said.body), "field_too_long", "{}", said.body);
    assert!(
        said.body.contains("password is longer than 1024 bytes"),
        "{}",
        said.body
    );
    // Each field too long is named, with its limit.
    let code = r#"{"user":"alice","password":"sekret-extra-1","totp":"12345678901234567"}"#;
    let said = http_post_with(port, "/v1/auth/login", &[], code).unwrap();
    assert!(
        said.body.contains("totp is longer than 16 bytes") && said.body.contains("6-digit"),
        "{}",
        said.body
    );
    let codes = audit_values(&admin, "auth.login_failed", "/outcome/code");
    assert_eq!(
        codes.iter().filter(|c| *c == "bad_json").count(),
        3,
        "{codes:?}"
    );
    assert!(codes.iter().any(|c| c == "field_too_long"), "{codes:?}");
    let log = ok(&admin, &["audit", "search", "--code", "auth.login_failed"]).to_string();
    assert!(!log.contains("sekret") && !log.contains("ppppp"), "{log}");
    // The table shows the name typed, marked so, and why it was refused.
    let table = admin.run(&["audit", "search", "--code", "auth.login_failed"], None);
    assert!(table.success(), "{table:?}");
    assert!(
        table.stdout.contains("Alice (claimed)")
            && table.stdout.contains("denied: bad_credentials"),
        "{}",
        table.stdout
    );
    // A failure the client finds is named in --json output by its exit code's meaning.
    let out = env.server.cli().run(&["whoami", "--json"], None);
    assert_eq!(out.code, 5, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stderr).unwrap();
    assert_eq!(v["error"]["code"], "unauthenticated", "{v}");
    // A token is never for a cache to keep; a call with two tokens is told to send one.
    let body = format!(r#"{{"user":"alice","password":"{PASSWORD}"}}"#);
    let signed_in = http_post_with(port, "/v1/auth/login", &[], &body).unwrap();
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    assert_eq!(signed_in.header("cache-control"), Some("no-store"));
    let twice = http_get_with(
        port,
        "/v1/auth/whoami",
        &[("Authorization", &auth), ("Authorization", &auth)],
    )
    .unwrap();
    assert_eq!(twice.status, 401, "{}", twice.body);
    assert!(twice.body.contains("repeated"), "{}", twice.body);
    // With no export sink, the status still tells the log's size.
    let status = ok(&admin, &["audit", "status"]);
    assert!(status["log_size"].as_u64().unwrap() >= 5, "{status}");
}

/// A lost authenticator, or one someone holding a stolen token bound to the account, is no
/// dead end: an administrator removes it, the user's sessions end with it, and the user signs
/// in with their password and enrols again.
#[test]
fn an_administrator_resets_a_lost_or_planted_second_factor() {
    let mut env = Env::start();
    let admin = env.login("admin");
    let alice = env.login("alice");
    let old = enroll_mfa(&alice);
    assert_eq!(sign_in(&env.server.cli(), "alice", PASSWORD, None).code, 5);
    // Codes tried from memory, the authenticator lost, lock her out.
    let valid: Vec<String> = (0..3).map(|k| totp(&old, k)).collect();
    let guesses = (0..10u32)
        .map(|k| format!("{:06}", (k * 99_991) % 1_000_000))
        .filter(|c| !valid.contains(c))
        .take(5);
    for code in guesses {
        assert_eq!(
            sign_in(&env.server.cli(), "alice", PASSWORD, Some(&code)).code,
            5
        );
    }
    // Wrong codes at sign-in lock her sign-in alone, and the list says so.
    let locked = &ok(&admin, &["user", "locked"])["locked"][0];
    assert_eq!(locked["user"], "alice");
    assert_eq!(locked["kind"], "sign_in");
    assert_eq!(locked["refuses"], "sign-ins");
    let table = admin.run(&["user", "locked"], None);
    assert!(table.stdout.contains("REFUSES"), "{table:?}");
    // Only an administrator, and not of their own factor.
    fails(&alice, &["user", "reset-mfa", "alice"], 3);
    let own = fails(&admin, &["user", "reset-mfa", "admin"], 3);
    assert!(own.stderr.contains("another administrator"), "{own:?}");
    let typo = fails(&admin, &["user", "reset-mfa", "alcie"], 4);
    assert!(typo.stderr.contains("not in the directory"), "{typo:?}");
    let v = ok(&admin, &["user", "reset-mfa", "alice"]);
    assert_eq!(
        (v["user"].as_str(), v["had_factor"].as_bool()),
        (Some("alice"), Some(true)),
        "{v}"
    );
    assert!(v["was_locked_until"].is_string(), "{v}");
    // The lock goes with the factor, and stays gone after a restart.
    assert_eq!(
        ok(&admin, &["user", "locked"])["locked"],
        serde_json::json!([])
    );
    assert!(env.server.terminate().success());
    env.server.restart();
    let admin = env.login("admin");
    assert_eq!(
        ok(&admin, &["user", "locked"])["locked"],
        serde_json::json!([])
    );
    // Whoever bound it may hold a session: every one of hers ended.
    assert_eq!(alice.run(&["whoami"], None).code, 5);
    let alice = env.server.cli();
    let back = sign_in(&alice, "alice", PASSWORD, None);
    assert!(back.success(), "{back:?}");
    let new = enroll_mfa(&alice);
    assert_ne!(old, new);
    let reset = audit_events(&admin, "auth.mfa_reset");
    assert_eq!(reset.len(), 1, "{reset:?}");
    assert_eq!(reset[0]["actor"]["user"], "admin");
    assert_eq!(reset[0]["details"]["had_factor"], true);
    let refused = audit_values(&admin, "request.action_refused", "/details/action");
    assert_eq!(
        refused.iter().filter(|a| *a == "user.mfa_reset").count(),
        3,
        "{refused:?}"
    );
}

#[test]
fn wrong_codes_and_passwords_in_a_row_lock_the_user_across_restarts() {
    let mut env = Env::start();
    let alice = env.login("alice");
    let uri = enroll_mfa(&alice);
    let step_up = |code: &str| {
        fails(
            &alice,
            &[
                "request", "create", "web", "--role", "admin", "--reason", "fix", "--ttl", "1h",
                "--totp", code,
            ],
            3,
        )
    };
    // Codes that are surely wrong: neither this step's nor a neighbour's.
    let valid: Vec<String> = (0..3).map(|k| totp(&uri, k)).collect();
    let wrong: Vec<String> = (0..10u32)
        .map(|k| format!("{:06}", (k * 99_991) % 1_000_000))
        .filter(|c| !valid.contains(c))
        .take(5)
        .collect();
    assert_eq!(wrong.len(), 5);
    for code in &wrong {
        let out = step_up(code);
        assert!(out.stderr.contains("TOTP code is wrong"), "{out:?}");
    }
    // The right code no longer helps, and says until when, and who can lift the lock.
    let locked = step_up(&totp(&uri, 1));
    assert!(
        locked.stderr.contains("refused until") && locked.stderr.contains("warden user unlock"),
        "{locked:?}"
    );
    let refused = audit_records(&env.login("admin"), "request.refused");
    assert_eq!(
        refused.last().unwrap()["event"]["outcome"]["code"],
        "locked",
        "{refused:?}"
    );
    // Nor does signing in with both right factors; the answer does not say why.
    let login = sign_in(&env.server.cli(), "alice", PASSWORD, Some(&totp(&uri, 1)));
    assert_eq!(login.code, 5, "{login:?}");
    assert!(!login.stderr.contains("refused until"), "{login:?}");

    // Wrong passwords lock too; other users are not affected.
    let bob = env.server.cli();
    for _ in 0..5 {
        let out = sign_in(&bob, "bob", "not bob's password", None);
        assert_eq!(out.code, 5, "{out:?}");
    }
    let right = sign_in(&bob, "bob", PASSWORD, None);
    assert_eq!(right.code, 5, "{right:?}");
    // A restart is no way around a lockout.
    assert!(env.server.terminate().success());
    env.server.restart();
    let right = sign_in(&bob, "bob", PASSWORD, None);
    assert_eq!(right.code, 5, "{right:?}");
    let locked = step_up(&totp(&uri, 2));
    assert!(locked.stderr.contains("refused until"), "{locked:?}");
    let admin = env.login("admin");
    let listed: Vec<String> = ok(&admin, &["user", "locked"])["locked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["user"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, ["alice", "bob"]);
    // Nor is archiving the events that locked them, then restarting.
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert_eq!(
        audit_values(&admin, "auth.user_locked", "/details/user"),
        ["alice", "bob"]
    );
    // bob's lock follows the fifth wrong password it came of, and says where that came from.
    let bob_locked = audit_records(&admin, "auth.user_locked").pop().unwrap();
    assert_eq!(
        bob_locked["event"]["details"]["last_failure_from"], "127.0.0.1",
        "{bob_locked}"
    );
    let bob_failed: Vec<u64> = audit_records(&admin, "auth.login_failed")
        .iter()
        .filter(|r| r["event"]["actor"]["claimed"] == "bob")
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    let locked_at = bob_locked["seq"].as_u64().unwrap();
    // alice's, from wrong TOTP codes at a step-up, says where the last one came from too.
    let alice_locked = &audit_records(&admin, "auth.user_locked")[0];
    assert_eq!(
        alice_locked["event"]["details"]["last_failure_from"], "127.0.0.1",
        "{alice_locked}"
    );
    assert_eq!(
        bob_failed.iter().filter(|&&seq| seq < locked_at).count(),
        5,
        "{bob_failed:?} {locked_at}"
    );
    let archived = ok(&admin, &["audit", "archive", "--before", &now]);
    assert!(archived["to"].as_u64().unwrap() > 0, "{archived}");
    assert!(audit_events(&admin, "auth.user_locked").is_empty());
    assert!(env.server.terminate().success());
    env.server.restart();
    let listed = ok(&admin, &["user", "locked"])["locked"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(listed, 2);
    let metrics = warden_testkit::http_get(env.server.port(), "/metrics").unwrap();
    assert!(
        metrics.body.contains("\nwarden_users_locked 2\n"),
        "{}",
        metrics.body
    );
    // Unlocked by an administrator, alice keeps her factors and steps up again; only an
    // administrator may unlock.
    fails(&alice, &["user", "unlock", "alice"], 3);
    let unlocked = ok(&admin, &["user", "unlock", "alice"]);
    assert!(unlocked["was_locked_until"].is_string(), "{unlocked}");
    // The audit event says it the same way, as a time like every other.
    let audited = audit_values(&admin, "auth.user_unlocked", "/details/was_locked_until");
    assert_eq!(audited, [unlocked["was_locked_until"].as_str().unwrap()]);
    let stepped_up = alice.run(
        &[
            "request",
            "create",
            "web",
            "--role",
            "admin",
            "--reason",
            "fix",
            "--ttl",
            "1h",
            "--totp",
            &totp(&uri, 1),
        ],
        None,
    );
    assert!(stepped_up.success(), "{stepped_up:?}");
    assert!(ok(&admin, &["user", "unlock", "alice"])["was_locked_until"].is_null());
    // Never their own lock: it stops a stolen token from trying codes without end.
    let out = fails(&admin, &["user", "unlock", "admin"], 3);
    assert!(out.stderr.contains("another administrator"), "{out:?}");
    // A name no one has is quoted to the caller, and kept only by its length in the log.
    for args in [
        &["user", "unlock", "hunter2secret"][..],
        &["revoke", "--user", "hunter2secret", "--all"],
    ] {
        let out = fails(&admin, args, 4);
        assert!(out.stderr.contains("\"hunter2secret\""), "{out:?}");
    }
    let refusals = audit_records(&admin, "request.action_refused");
    let last_two = &refusals[refusals.len() - 2..];
    for r in last_two {
        assert!(!r.to_string().contains("hunter2secret"), "{r}");
        assert!(r.to_string().contains("13 characters"), "{r}");
    }
    // A new password must be one: long, visible and varied.
    for weak in [
        "short",
        "            ",
        "\0\0\0\0\0\0\0\0\0\0\0\0",
        "abababababab",
    ] {
        let refused = admin.run(
            &["user", "set-password", "bob", "--password-stdin"],
            Some(weak),
        );
        assert_eq!(refused.code, 2, "{weak:?}: {refused:?}");
    }
    // An administrator's new password lifts the lock too, and both outlast a restart.
    let reset = admin.run(
        &["user", "set-password", "bob", "--password-stdin"],
        Some("bob's new password"),
    );
    assert!(reset.success(), "{reset:?}");
    assert!(env.server.terminate().success());
    env.server.restart();
    assert!(sign_in(&bob, "bob", "bob's new password", None).success());
    assert_eq!(
        ok(&admin, &["user", "locked"])["locked"],
        serde_json::json!([])
    );
    let none = admin.run(&["user", "locked"], None);
    assert_eq!(none.stdout.trim(), "No user is locked.", "{none:?}");
}

#[test]
fn a_burst_of_sign_ins_holds_bounded_memory() {
    use std::io::{Read, Write};
    // The burst comes through a proxy from as many addresses, so that no address's throttle
    // cuts it short.
    let env = Env::start_configured("trusted_proxies = [\"127.0.0.1\"]\n");
    let port = env.server.port();
    // The most memory the server has held, in KiB.
    let peak = || {
        std::fs::read_to_string(format!("/proc/{}/status", env.server.pid()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
    };
    let before = peak();
    // Unknown users, so that no lockout cuts the work short: each still costs a full hash.
    let burst: u64 = 48;
    let answers: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..burst)
            .map(|i| {
                s.spawn(move || {
                    let body = format!(r#"{{"user":"nobody{i}","password":"guess"}}"#);
                    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                    c.set_read_timeout(Some(std::time::Duration::from_secs(60)))
                        .unwrap();
                    write!(
                        c,
                        "POST /v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                         X-Forwarded-For: 198.51.100.{i}\r\n\
                         Content-Type: application/json\r\nContent-Length: {}\r\n\
                         Connection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .unwrap();
                    let mut answer = String::new();
                    c.read_to_string(&mut answer).unwrap();
                    answer
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert!(
        answers.iter().all(|a| a.starts_with("HTTP/1.1 401")),
        "{answers:?}"
    );
    // An argon2id hash holds 19 MiB: all of them at once would add most of 900 MiB.
    let grown_mib = (peak() - before) / 1024;
    assert!(
        grown_mib < 19 * burst / 4,
        "the burst grew the server by {grown_mib} MiB"
    );
}

#[test]
fn guesses_sent_all_at_once_get_no_more_answers_than_the_lockout_allows() {
    let env = Env::start();
    let port = env.server.port();
    let admin = env.login("admin");
    let burst = 30;
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let guesses: Vec<_> = (0..burst)
            .map(|i| s.spawn(move || login_as(port, "bob", &format!("guess-{i}"), &[]).status))
            .collect();
        guesses.into_iter().map(|g| g.join().unwrap()).collect()
    });
    assert!(
        statuses.iter().all(|s| [401, 429].contains(s)),
        "{statuses:?}"
    );
    // Every guess arrived before any had failed. Checked one hashing slot (one per core) at
    // a time, only those that finished before bob's lockout began learnt they were wrong;
    // the rest were answered as locked, or refused unchecked once the address had spent its
    // failures.
    let reasons = audit_values(&admin, "auth.login_failed", "/outcome/reason");
    let answered = reasons.iter().filter(|r| *r == "wrong password").count();
    let slots = std::thread::available_parallelism().map_or(2, usize::from);
    assert!(
        answered <= 5 + slots,
        "{answered} of {burst} guesses were checked and answered: {reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("sign-in locked until")),
        "{reasons:?}"
    );
}

/// Failed authentications (`BURST` in the domain) an address may make before it waits.
const BURST: usize = 20;

/// Signs in as `user` through the API with `headers`; the response.
fn login_as(port: u16, user: &str, password: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let body = format!(r#"{{"user":"{user}","password":"{password}"}}"#);
    http_post_with(port, "/v1/auth/login", headers, &body).unwrap()
}

/// `auth.source_throttled` events' sources.
fn throttled_sources(admin: &Cli) -> Vec<String> {
    audit_values(admin, "auth.source_throttled", "/actor/source")
}

#[test]
fn failed_sign_ins_and_forged_tokens_from_one_address_are_throttled() {
    let env = Env::start();
    let port = env.server.port();
    let alice = env.login("alice");
    // One guess at each of many names (password spraying), then forged tokens: the
    // failure that spends the address's budget is the last one checked and audited.
    for i in 0..BURST - 5 {
        let r = login_as(port, &format!("user{i}"), "Winter2026!", &[]);
        assert_eq!(r.status, 401, "{r:?}");
    }
    let forged = || {
        http_get_with(
            port,
            "/v1/auth/whoami",
            &[("Authorization", "Bearer wdn_forged")],
        )
        .unwrap()
    };
    for _ in 0..5 {
        let r = forged();
        assert_eq!(r.status, 401, "{r:?}");
    }
    // Now even the right password waits, unchecked, told until when and for how long; a
    // header naming another client is not believed from an unlisted proxy.
    let r = login_as(
        port,
        "bob",
        PASSWORD,
        &[("X-Forwarded-For", "198.51.100.7")],
    );
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(error_code(&r.body), "too_many_failures");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=4).contains(&wait), "Retry-After: {wait}");
    let r = forged();
    assert_eq!(r.status, 429, "{r:?}");
    let cli = sign_in(&env.server.cli(), "bob", PASSWORD, None);
    assert_eq!(cli.code, 3, "{cli:?}");
    assert!(cli.stderr.contains("too many failed sign-ins"), "{cli:?}");
    // A valid token is honoured whatever its address has done.
    assert_eq!(alice.json(&["whoami"])["user"], "alice");

    let r = login_as(port, "admin", PASSWORD, &[]);
    assert_eq!(r.status, 429, "{r:?}");
    // The budget grows back by one failure per 3 s.
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let r = login_as(port, "admin", PASSWORD, &[]);
    assert_eq!(r.status, 200, "{r:?}");

    // Each failure was audited, the throttle's start once, and the four refusals while
    // throttled only counted.
    let admin = env.login("admin");
    assert_eq!(audit_records(&admin, "auth.login_failed").len(), BURST - 5);
    assert_eq!(audit_records(&admin, "auth.token_rejected").len(), 5);
    assert_eq!(throttled_sources(&admin), ["127.0.0.1"]);
    let metrics = warden_testkit::http_get(port, "/metrics").unwrap();
    assert!(
        metrics.body.contains("warden_auth_throttled_total 4"),
        "{}",
        metrics.body
    );
}

/// A token the server issued and ended since (a stale login, one replaced and being revoked)
/// is no guess: refused each time, never throttling its address, and audited at most once a
/// minute, so a client left sending it does not fill the log.
#[test]
fn an_ended_token_is_refused_but_throttles_no_one() {
    let env = Env::start();
    let port = env.server.port();
    let alice = env.login("alice");
    let ended = token(&alice);
    ok(&alice, &["logout"]);
    let bearer = format!("Bearer {ended}");
    for _ in 0..BURST + 5 {
        let r = http_get_with(port, "/v1/auth/whoami", &[("Authorization", &bearer)]).unwrap();
        assert_eq!(r.status, 401, "{r:?}");
    }
    let r = login_as(port, "bob", PASSWORD, &[]);
    assert_eq!(r.status, 200, "{r:?}");
    let admin = env.login("admin");
    assert_eq!(
        audit_values(&admin, "auth.token_rejected", "/outcome/reason"),
        ["revoked token"]
    );
    assert!(throttled_sources(&admin).is_empty());
}

#[test]
fn behind_a_trusted_proxy_each_forwarded_client_is_audited_and_throttled_apart() {
    let env = Env::start_configured("trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n");
    let port = env.server.port();
    let via = |client: &str| vec![("X-Forwarded-For", client.to_owned())];
    let login = |user: &str, password: &str, xff: &[(&str, String)]| {
        let headers: Vec<(&str, &str)> = xff.iter().map(|(k, v)| (*k, v.as_str())).collect();
        login_as(port, user, password, &headers)
    };
    // The guesser behind the proxy spends its own address's budget...
    for i in 0..BURST {
        let r = login(&format!("user{i}"), "guess", &via("203.0.113.9"));
        assert_eq!(r.status, 401, "{r:?}");
    }
    let r = login("bob", PASSWORD, &via("203.0.113.9"));
    assert_eq!(r.status, 429, "{r:?}");
    // ...and cannot step around it by writing another address in front of the one the
    // proxy appended, nor behind a second proxy of ours.
    let r = login("bob", PASSWORD, &via("198.51.100.99, 203.0.113.9"));
    assert_eq!(r.status, 429, "{r:?}");
    let r = login("bob", PASSWORD, &via("203.0.113.9, 10.1.2.3"));
    assert_eq!(r.status, 429, "{r:?}");
    // Everyone else behind the same proxy signs in, and the proxy's own connections too.
    let r = login("bob", PASSWORD, &via("198.51.100.7"));
    assert_eq!(r.status, 200, "{r:?}");
    let r = login("sam", PASSWORD, &[]);
    assert_eq!(r.status, 200, "{r:?}");
    // A header the proxy mangled is refused, not guessed at.
    let r = login("bob", PASSWORD, &via("198.51.100.7, unknown"));
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(error_code(&r.body), "bad_forwarded_for");
    assert!(r.body.contains("\\\"unknown\\\""), "{}", r.body);

    let admin = env.login("admin");
    assert_eq!(throttled_sources(&admin), ["203.0.113.9"]);
    let signed_in = audit_values(&admin, "auth.login", "/actor/source");
    assert!(
        signed_in.starts_with(&["198.51.100.7".to_owned(), "127.0.0.1".to_owned()]),
        "{signed_in:?}"
    );
    assert_eq!(
        audit_values(&admin, "auth.forwarded_for_refused", "/actor/source"),
        ["127.0.0.1"]
    );
}

#[test]
fn shutdown_does_not_wait_for_a_stalled_request() {
    use std::io::Write;
    let mut env = Env::start_configured("http_read_timeout = \"60s\"\n");
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", env.server.port())).unwrap();
    stalled
        .write_all(
            b"POST /v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user\":",
        )
        .unwrap();
    // The body would have a minute to arrive; SIGTERM must not wait for it (terminate gives
    // the server 10 s).
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(env.server.terminate().success());
    drop(stalled);
}

/// Sends `METHOD path` with `headers` and no body; the status and the body.
fn bare(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    sent(port, method, path, headers, None)
}

/// Sends `METHOD path` with `headers` and a JSON `body`, if any; the status and the body.
fn sent(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    if let Some(body) = body {
        extra += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n{}",
        body.unwrap_or_default()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_default();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn a_query_or_path_an_endpoint_does_not_take_is_refused_once_the_caller_is_known() {
    let env = Env::start();
    let port = env.server.port();
    let alice = env.login("alice");
    let admin = env.login("admin");
    let pending = id(&create(&alice, "web", "deploy", &["--ticket", "CHG-1"]));
    let long = "x".repeat(100);
    let approve =
        format!("/v1/requests/{pending}/approve?comment=hunter2-secret&totp=123456&{long}=1");

    // Without a valid token the query changes nothing: 401, on the record and counted against
    // the address as any call without one.
    let rejected = audit_events(&admin, "auth.token_rejected").len();
    for headers in [vec![], vec![("Authorization", "Bearer wdn_forged")]] {
        let (status, body) = bare(port, "POST", &approve, &headers);
        assert_eq!(status, 401, "{body}");
        assert_eq!(error_code(&body), "unauthenticated");
    }
    let (status, body) = bare(port, "POST", "/v1/requests/%FF/approve", &[]);
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        audit_events(&admin, "auth.token_rejected").len(),
        rejected + 3
    );

    // A signed-in caller's query is refused and audited as other bad input is, with the
    // parameters' names (cut short) and never their values.
    let bob = format!("Bearer {}", token(&env.login("bob")));
    let (status, body) = bare(port, "POST", &approve, &[("Authorization", &bob)]);
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "bad_query");
    assert!(
        body.contains("comment") && !body.contains("hunter2") && !body.contains("123456"),
        "{body}"
    );
    assert_eq!(state(&alice, &pending), "pending");
    let refused: Vec<serde_json::Value> = audit_events(&admin, "request.action_refused")
        .into_iter()
        .filter(|e| e["outcome"]["code"] == "bad_query")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    let e = &refused[0];
    assert_eq!(e["actor"]["user"], "bob", "{e}");
    assert_eq!(e["request_id"], pending.as_str(), "{e}");
    assert_eq!(e["details"]["action"], "POST /v1/requests/{id}/approve");
    let names = e["details"]["query_parameters"].as_array().unwrap();
    assert_eq!(names[..2], [serde_json::json!("comment"), "totp".into()]);
    assert!(names[2].as_str().unwrap().chars().count() < 40, "{names:?}");
    let recorded = e.to_string();
    assert!(
        !recorded.contains("hunter2") && !recorded.contains("123456") && !recorded.contains("=1"),
        "{recorded}"
    );
    // A query of only separators names no parameter, here as on the endpoints that take some.
    for path in ["/v1/auth/whoami?&", "/v1/auth/whoami?&&", "/v1/requests?&&"] {
        let (status, body) = bare(port, "GET", path, &[("Authorization", &bob)]);
        assert_eq!(status, 200, "{path}: {body}");
    }
    // An endpoint open to all refuses a query it does not take without asking for a token.
    let (status, body) = bare(port, "GET", "/v1/ssh/ca?format=pem", &[]);
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "bad_query");
    // A method the route does not take is refused as such, whatever the query; a token pasted
    // as a query is not kept.
    let (status, body) = bare(
        port,
        "GET",
        "/v1/targets/web/credential?password=hunter2",
        &[("Authorization", &bob)],
    );
    assert_eq!(status, 405, "{body}");
    let pasted = token(&alice);
    let (status, body) = bare(
        port,
        "GET",
        &format!("/v1/auth/whoami?{pasted}"),
        &[("Authorization", &bob)],
    );
    assert_eq!(status, 400, "{body}");
    assert!(!body.contains(&pasted[..12]), "{body}");
    assert!(
        audit_events(&admin, "request.action_refused")
            .iter()
            .all(|e| !e.to_string().contains(&pasted[..12])),
        "a pasted token reached the audit log"
    );

    // A request id that is not UTF-8 is a bad id like any other, said so and audited.
    for (method, path, action) in [
        ("POST", "/v1/requests/%FF/approve", "request.approve"),
        ("GET", "/v1/requests/%FF%FE", "request.show"),
    ] {
        let (status, body) = bare(port, method, path, &[("Authorization", &bob)]);
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(error_code(&body), "bad_id", "{path}: {body}");
        assert!(body.contains("warden request list"), "{path}: {body}");
        assert!(
            audit_events(&admin, "request.action_refused")
                .iter()
                .any(|e| e["outcome"]["code"] == "bad_id"
                    && e["details"]["action"] == action
                    && e["actor"]["user"] == "bob"),
            "{path}"
        );
    }
    // So is a session id, and a user's name.
    let admin_auth = format!("Bearer {}", token(&admin));
    for (method, path, code) in [
        ("GET", "/v1/sessions/%C3%28/watch", "bad_id"),
        ("POST", "/v1/users/%FF/unlock", "bad_user"),
    ] {
        let (status, body) = bare(port, method, path, &[("Authorization", &admin_auth)]);
        assert_eq!(
            (status, error_code(&body).as_str()),
            (400, code),
            "{path}: {body}"
        );
    }
}

/// The test policy, with break-glass rules for SREs and a rule that keeps bob from `web/view`.
fn breakglass_rules() -> String {
    format!(
        r#"{RULES}
@id("bg-root")
@max_ttl("1h")
@ticket("INC-[0-9]+")
permit (principal in Group::"sre", action == Action::"breakglass", resource == Role::"web/root");

@id("no-view-for-bob")
forbid (principal == User::"bob", action == Action::"request", resource == Role::"web/view");
"#
    )
}

#[test]
fn break_glass_and_denied_decisions_say_what_they_are() {
    let rules = breakglass_rules();
    let env = Env::start_with(&[("targets.toml", TARGETS), ("access.cedar", &rules)], &[]);
    let bob = env.login("bob");
    let alice = env.login("alice");

    // `warden targets` names a break-glass role's tier as everything else does.
    let t = ok(&bob, &["targets"]);
    let emergency = t["breakglass"].as_array().unwrap();
    assert_eq!(emergency.len(), 1, "{t}");
    let d = &emergency[0]["decision"];
    assert_eq!(d["tier"], "breakglass", "{t}");
    assert!(d["pending_timeout"].is_null(), "{t}");
    assert_eq!(d["max_ttl"], "1h", "{t}");
    let view = ok(&alice, &["targets"])["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["role"] == "view")
        .cloned()
        .unwrap();
    assert_eq!(view["decision"]["tier"], "auto", "{view}");

    // A denial shows none of the settings of a grant it does not make: forbidden, not
    // permitted, and not permitted under the break-glass rules.
    let unset = ["tier", "max_ttl", "mfa", "recording", "pending_timeout"];
    for (who, args, rules) in [
        (
            &bob,
            vec!["web", "--role", "view"],
            serde_json::json!(["no-view-for-bob"]),
        ),
        (&bob, vec!["web", "--role", "deploy"], serde_json::json!([])),
        (
            &alice,
            vec!["web", "--role", "root", "--breakglass"],
            serde_json::json!([]),
        ),
    ] {
        let mut explain = vec!["policy", "explain"];
        explain.extend(&args);
        let v = ok(who, &explain);
        let d = &v["decision"];
        assert_eq!(d["allowed"], false, "{v}");
        assert_eq!(d["rules"], rules, "{v}");
        for field in unset {
            assert!(d[field].is_null(), "{field}: {v}");
        }
        // And the table reads as a denial, with nothing made up.
        let table = who.run(&explain, None);
        assert!(table.success(), "{table:?}");
        assert!(table.stdout.contains("deny"), "{}", table.stdout);
        for placeholder in ["auto", "1s", "metadata"] {
            assert!(!table.stdout.contains(placeholder), "{}", table.stdout);
        }
    }
    // Allowed break-glass access explained reads as `targets` lists it.
    let v = ok(
        &bob,
        &["policy", "explain", "web", "--role", "root", "--breakglass"],
    );
    assert_eq!(v["decision"]["tier"], "breakglass", "{v}");
    assert_eq!(v["decision"]["mfa"], true, "{v}");
    assert_eq!(v["decision"]["recording"], "full", "{v}");

    // Every refused attempt to break the glass is a `breakglass.refused`, a body that is not
    // one included: an alert on that code sees them all.
    let admin = env.login("admin");
    let auth = format!("Bearer {}", token(&bob));
    for body in [
        r#"{"target":"web","role":"root","reason":"x","ttl":"10m","drill":"yes"}"#,
        r#"{"target":"web","role":"root","reason":"x"}"#,
        "not json",
    ] {
        let said = warden_testkit::http_post_with(
            env.server.port(),
            "/v1/breakglass",
            &[("Authorization", &auth)],
            body,
        )
        .unwrap();
        assert_eq!(said.status, 400, "{body}: {}", said.body);
    }
    let refused = audit_events(&admin, "breakglass.refused");
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(
        audit_events(&admin, "request.action_refused")
            .iter()
            .all(|e| e["details"]["action"] != "breakglass.create")
    );
}

#[test]
fn a_key_is_removed_by_its_fingerprint_with_or_without_its_slashes_encoded() {
    let env = Env::start();
    let port = env.server.port();
    let alice = env.login("alice");
    let auth = format!("Bearer {}", token(&alice));
    let keys = tempfile::tempdir().unwrap();
    // About half of all fingerprints hold a `/`: two of those.
    let mut slashed = Vec::new();
    for i in 0..64 {
        let (key, _) = warden_testkit::ssh_keypair(keys.path(), &format!("key{i}"));
        let added = ok(&alice, &["keys", "add", &format!("{}.pub", key.display())]);
        let fingerprint = added["fingerprint"].as_str().unwrap().to_owned();
        if fingerprint.contains('/') {
            slashed.push(fingerprint);
        }
        if slashed.len() == 2 {
            break;
        }
    }
    assert_eq!(slashed.len(), 2, "no fingerprint with a slash in 64 keys");
    let listed = || -> Vec<String> {
        ok(&alice, &["keys", "list"])["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["fingerprint"].as_str().unwrap().to_owned())
            .collect()
    };
    for (fingerprint, sent) in [
        (&slashed[0], slashed[0].clone()),
        (&slashed[1], slashed[1].replace('/', "%2F")),
    ] {
        assert!(listed().contains(fingerprint));
        let path = format!("/v1/ssh/keys/{sent}");
        let (status, body) = bare(port, "DELETE", &path, &[("Authorization", &auth)]);
        assert_eq!(status, 204, "{path}: {body}");
        assert!(!listed().contains(fingerprint), "{path}");
        // Gone: the key is not found, rather than the endpoint.
        let (status, body) = bare(port, "DELETE", &path, &[("Authorization", &auth)]);
        assert_eq!(status, 404, "{path}: {body}");
        assert_ne!(error_code(&body), "no_route", "{path}: {body}");
    }
}

#[test]
fn a_token_typed_as_a_fingerprint_is_audited_only_by_its_length() {
    let env = Env::start();
    let port = env.server.port();
    let alice = env.login("alice");
    let admin = env.login("admin");
    let pasted = token(&alice);
    let kept = format!(
        "(a value of {} characters, not kept)",
        pasted.chars().count()
    );

    // `warden keys remove` with a token pasted in place of the key's fingerprint: the caller
    // reads what they sent, the audit log only its length.
    let auth = format!("Bearer {}", token(&alice));
    let path = format!("/v1/ssh/keys/{pasted}");
    let (status, body) = bare(port, "DELETE", &path, &[("Authorization", &auth)]);
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "bad_fingerprint", "{body}");
    assert!(body.contains(&pasted), "{body}");

    // A host key pinned with a token in place of the fingerprint the administrator confirmed.
    let auth = format!("Bearer {}", token(&admin));
    let pin = serde_json::json!({
        "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIsSiZgSWy4fFHwmSHb8tTcN8kYa/0yJ0bvbXoQ8cmiN",
        "fingerprint": pasted,
    })
    .to_string();
    let (status, body) = sent(
        port,
        "PUT",
        "/v1/targets/web/host-key",
        &[("Authorization", &auth)],
        Some(&pin),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "fingerprint_mismatch", "{body}");
    assert!(body.contains(&pasted), "{body}");

    let refused = audit_events(&admin, "request.action_refused");
    for (action, code) in [
        ("ssh.key_remove", "bad_fingerprint"),
        ("target.pin_host_key", "fingerprint_mismatch"),
    ] {
        let e = refused
            .iter()
            .find(|e| e["details"]["action"] == action)
            .unwrap_or_else(|| panic!("no refusal of {action}: {refused:?}"));
        assert_eq!(e["outcome"]["code"], code, "{e}");
        let reason = e["outcome"]["reason"].as_str().unwrap();
        assert!(reason.contains(&kept), "{action}: {reason}");
        assert!(!e.to_string().contains(&pasted[..12]), "{action}: {e}");
    }
}

#[test]
fn a_public_key_sent_with_a_request_is_shown_with_it_whatever_the_role() {
    let targets = format!(
        "{TARGETS}\n[targets.app-db]\nkind = \"postgres\"\nenvironment = \"test\"\n\
         [targets.app-db.connection]\nhost = \"127.0.0.1\"\nport = 1\ndatabase = \"app\"\n\
         [targets.app-db.roles.read]\ngrants = [\"GRANT SELECT ON items TO {{{{name}}}}\"]\n"
    );
    let rules = format!(
        "{RULES}\n@id(\"db-read-peer\")\n@approval(\"peer(sre)\")\n@max_ttl(\"1h\")\n\
         permit (principal, action == Action::\"request\", resource == Role::\"app-db/read\");\n"
    );
    let env = Env::start_with(&[("targets.toml", &targets), ("access.cedar", &rules)], &[]);
    let alice = env.login("alice");
    let auth = format!("Bearer {}", token(&alice));
    let keys = tempfile::tempdir().unwrap();
    let (_, key) = warden_testkit::ssh_keypair(keys.path(), "laptop");
    let key = key.as_str();
    for (target, role) in [("app-db", "read"), ("web", "deploy")] {
        let ask = serde_json::json!({
            "target": target, "role": role, "reason": "check the orders",
            "ticket": "CHG-7", "ttl": "30m", "public_key": key,
        });
        let said = http_post_with(
            env.server.port(),
            "/v1/requests",
            &[("Authorization", &auth)],
            &ask.to_string(),
        )
        .unwrap();
        assert_eq!(said.status, 201, "{target}: {}", said.body);
        let made: serde_json::Value = serde_json::from_str(&said.body).unwrap();
        assert_eq!(made["public_key"], key, "{target}: {made}");
        let shown = ok(&alice, &["request", "show", made["id"].as_str().unwrap()]);
        assert_eq!(shown["public_key"], key, "{target}: {shown}");
    }
}

/// A sign-in refused for its form before its handler reads it (a query, or framing refused
/// before routing) is a failed sign-in: on the record, and counted against its address.
#[test]
fn a_sign_in_refused_before_its_handler_is_a_failed_one() {
    let env = Env::start_configured("trusted_proxies = [\"127.0.0.1\"]\n");
    let port = env.server.port();
    let body = format!(r#"{{"user":"alice","password":"{PASSWORD}"}}"#);
    let client = ("X-Forwarded-For", "203.0.113.5");
    for _ in 0..BURST - 1 {
        let r = http_post_with(port, "/v1/auth/login?user=alice", &[client], &body).unwrap();
        assert_eq!((r.status, error_code(&r.body).as_str()), (400, "bad_query"));
    }
    let (status, said) = sent(
        port,
        "POST",
        "/v1/auth/login",
        &[client, ("Content-Encoding", "gzip")],
        Some(&body),
    );
    assert_eq!(status, 415, "{said}");
    assert_eq!(error_code(&said), "unsupported_content_encoding");
    // The address has spent its failures: even the right password waits.
    let r = http_post_with(port, "/v1/auth/login", &[client], &body).unwrap();
    assert_eq!(r.status, 429, "{r:?}");
    let admin = env.login("admin");
    let failed = audit_events(&admin, "auth.login_failed");
    let codes: Vec<&str> = failed
        .iter()
        .map(|e| e["outcome"]["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes.len(), BURST, "{codes:?}");
    assert!(
        codes[..BURST - 1].iter().all(|c| *c == "bad_query"),
        "{codes:?}"
    );
    assert_eq!(codes[BURST - 1], "unsupported_content_encoding");
    assert!(
        failed.iter().all(|e| e["actor"]["source"] == "203.0.113.5"),
        "{failed:?}"
    );
    assert_eq!(throttled_sources(&admin), ["203.0.113.5"]);
}

/// A signed-in caller's request refused before it is routed, for its size or its framing, is
/// audited as other bad input is, naming the operation (and the request it is about); the same
/// request without a live token gets the same answer, and puts nothing on the record.
#[test]
fn a_signed_in_callers_request_refused_before_routing_is_audited() {
    let env = Env::start();
    let port = env.server.port();
    let alice = env.login("alice");
    let admin = env.login("admin");
    let pending = id(&create(&alice, "web", "deploy", &["--ticket", "CHG-1"]));
    let cancel = format!("/v1/requests/{pending}/cancel");
    let long_query = format!("/v1/audit?actor={}", "a".repeat(9 * 1024));
    let padding = "p".repeat(17 * 1024);
    let refusals = |auth: &[(&str, &str)]| -> Vec<(u16, String)> {
        let with = |extra: (&'static str, &'static str)| {
            let mut headers = auth.to_vec();
            headers.push(extra);
            headers
        };
        let mut padded = auth.to_vec();
        padded.push(("X-Pad", padding.as_str()));
        [
            sent(
                port,
                "POST",
                "/v1/requests",
                &with(("Content-Encoding", "gzip")),
                Some("{}"),
            ),
            sent(port, "POST", &cancel, &with(("Expect", "nope")), Some("{}")),
            bare(port, "GET", &long_query, auth),
            bare(port, "GET", "/v1/auth/whoami", &padded),
        ]
        .into_iter()
        .map(|(status, body)| (status, error_code(&body)))
        .collect()
    };
    let expected: Vec<(u16, String)> = [
        (415, "unsupported_content_encoding"),
        (417, "expectation_failed"),
        (414, "uri_too_long"),
        (431, "headers_too_large"),
    ]
    .into_iter()
    .map(|(status, code)| (status, code.to_owned()))
    .collect();
    let refused = || audit_events(&admin, "request.action_refused");
    let rejected = || audit_events(&admin, "auth.token_rejected").len();

    // Without a token, or with one that is none, the answer is the same and nothing is
    // recorded or counted.
    let (before, rejected_before) = (refused().len(), rejected());
    assert_eq!(refusals(&[]), expected);
    assert_eq!(
        refusals(&[("Authorization", "Bearer wdn_forged")]),
        expected
    );
    assert_eq!(refused().len(), before);
    assert_eq!(rejected(), rejected_before);

    let bearer = format!("Bearer {}", token(&alice));
    assert_eq!(refusals(&[("Authorization", bearer.as_str())]), expected);
    let events = refused();
    let new = &events[before..];
    let seen: Vec<(&str, &str, &str)> = new
        .iter()
        .map(|e| {
            (
                e["actor"]["user"].as_str().unwrap(),
                e["details"]["action"].as_str().unwrap(),
                e["outcome"]["code"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("alice", "POST /v1/requests", "unsupported_content_encoding"),
            (
                "alice",
                "POST /v1/requests/{id}/cancel",
                "expectation_failed"
            ),
            ("alice", "GET /v1/audit", "uri_too_long"),
            ("alice", "GET /v1/auth/whoami", "headers_too_large"),
        ]
    );
    assert_eq!(new[1]["request_id"], pending.as_str(), "{}", new[1]);
    // Nothing was done: the request is still pending, and the query's value is not kept.
    assert_eq!(state(&alice, &pending), "pending");
    assert!(
        new.iter().all(|e| !e.to_string().contains("aaaaaaaa")),
        "{new:?}"
    );
}

#[test]
fn a_token_typed_as_a_ticket_is_audited_only_by_its_length() {
    let rules = breakglass_rules();
    let env = Env::start_with(&[("targets.toml", TARGETS), ("access.cedar", &rules)], &[]);
    let port = env.server.port();
    let alice = env.login("alice");
    let bob = env.login("bob");
    let sam = env.login("sam");
    let pasted = token(&alice);
    let kept = format!(
        "(a value of {} characters, not kept)",
        pasted.chars().count()
    );
    let secret = &pasted["wdn_".len()..];

    // A request (`CHG-[0-9]+`) and a break-glass attempt (`INC-[0-9]+`, with a code so that
    // the ticket is what is refused) with alice's token as the ticket: the caller reads it.
    let ask = |ask: serde_json::Value| {
        let mut b = serde_json::json!({ "reason": "outage", "ttl": "1h", "ticket": pasted });
        b.as_object_mut()
            .unwrap()
            .extend(ask.as_object().unwrap().clone());
        b.to_string()
    };
    for (who, path, body) in [
        (
            &alice,
            "/v1/requests",
            ask(serde_json::json!({ "target": "web", "role": "deploy" })),
        ),
        (
            &bob,
            "/v1/breakglass",
            ask(serde_json::json!({ "target": "web", "role": "root", "totp": "000000" })),
        ),
    ] {
        let auth = format!("Bearer {}", token(who));
        let (status, answer) = sent(port, "POST", path, &[("Authorization", &auth)], Some(&body));
        assert_eq!(status, 403, "{path}: {answer}");
        assert_eq!(error_code(&answer), "ticket_mismatch", "{path}: {answer}");
        assert!(answer.contains(&pasted), "{path}: {answer}");
    }
    // So does an explanation's.
    let auth = format!("Bearer {}", token(&alice));
    let body =
        serde_json::json!({ "target": "web", "role": "deploy", "ticket": pasted }).to_string();
    let (status, answer) = sent(
        port,
        "POST",
        "/v1/policy/explain",
        &[("Authorization", &auth)],
        Some(&body),
    );
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(&pasted), "{answer}");

    // The audit log, as its reader searches it, has its length alone.
    for code in ["request.refused", "breakglass.refused"] {
        let events = audit_events(&sam, code);
        let e = events
            .iter()
            .find(|e| e["outcome"]["code"] == "ticket_mismatch")
            .unwrap_or_else(|| panic!("no ticket_mismatch among {code}: {events:?}"));
        let reason = e["outcome"]["reason"].as_str().unwrap();
        assert!(
            reason.starts_with(&format!("ticket {kept} does not match: it must match")),
            "{code}: {reason}"
        );
    }
    let everything = ok(&sam, &["audit", "search", "--limit", "1000"]).to_string();
    assert!(!everything.contains(secret), "{everything}");
}

/// Sends `request`, raw, and reads the answer to the end (the server closes the connection).
fn raw_answer(port: u16, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn a_request_with_both_a_length_and_a_transfer_coding_is_refused() {
    let env = Env::start();
    let port = env.server.port();
    let alice = env.login("alice");
    let bearer = token(&alice);
    let body = r#"{"target":"web","role":"view"}"#;
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let head = |framing: &str| {
        format!(
            "POST /v1/policy/explain HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {bearer}\r\nContent-Type: application/json\r\n{framing}\r\n"
        )
    };
    // Either order of the two, and whatever length is named.
    for framing in [
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n".to_owned(),
        format!(
            "Transfer-Encoding: chunked\r\ncontent-length: {}\r\n",
            chunked.len()
        ),
    ] {
        let answer = raw_answer(port, format!("{}{chunked}", head(&framing)).as_bytes());
        assert!(answer.starts_with("HTTP/1.1 400 "), "{framing}: {answer}");
        assert!(answer.contains(r#""code":"bad_framing""#), "{answer}");
        assert!(
            answer.contains("Content-Length and Transfer-Encoding"),
            "{answer}"
        );
    }
    // Requests before and after one framed one way on the same connection are served, bodies
    // of either framing followed between them.
    let one_way = format!(
        "{}{chunked}{}{body}{}",
        head("Transfer-Encoding: chunked\r\n"),
        head(&format!("Content-Length: {}\r\n", body.len())),
        head("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n"),
    );
    let answer = raw_answer(port, format!("{one_way}{chunked}").as_bytes());
    let statuses: Vec<&str> = answer
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &answer[at + 9..at + 12])
        .collect();
    assert_eq!(statuses, ["200", "200", "400"], "{answer}");
    // Refused before it was carried out, and on the record as the caller's.
    let admin = env.login("admin");
    let refused = audit_events(&admin, "request.action_refused");
    assert!(
        refused
            .iter()
            .any(|e| e["outcome"]["code"] == "bad_framing" && e["actor"]["user"] == "alice"),
        "{refused:?}"
    );
}

#[test]
fn only_the_headers_the_client_sent_count_towards_their_limit() {
    let env = Env::start();
    let port = env.server.port();
    let alice = env.login("alice");
    let auth = format!("Bearer {}", token(&alice));
    // Headers of exactly the limit, as the server counts them (name, value and 4), the
    // request's own Host and Connection lines included; with one more byte, refused.
    let fixed = [
        ("host", "127.0.0.1"),
        ("authorization", auth.as_str()),
        ("connection", "close"),
    ];
    let used: usize = fixed.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
    let pad = |extra: usize| "p".repeat(16 * 1024 - used - "x-pad".len() - 4 + extra);
    let exact = pad(0);
    let (status, body) = bare(
        port,
        "GET",
        "/v1/auth/whoami",
        &[("Authorization", &auth), ("X-Pad", &exact)],
    );
    assert_eq!(status, 200, "{body}");
    let over = pad(1);
    let (status, body) = bare(
        port,
        "GET",
        "/v1/auth/whoami",
        &[("Authorization", &auth), ("X-Pad", &over)],
    );
    assert_eq!(status, 431, "{body}");
    assert_eq!(error_code(&body), "headers_too_large");
}

#[test]
fn the_document_says_which_fields_are_bounded_in_bytes_and_every_code_explain_answers() {
    let env = Env::start();
    let port = env.server.port();
    let doc = warden_testkit::http_get(port, "/v1/openapi.json").unwrap();
    let v: serde_json::Value = serde_json::from_str(&doc.body).unwrap();
    let link = &v["components"]["schemas"]["CloseBody"]["properties"]["link"];
    assert!(
        link["description"]
            .as_str()
            .is_some_and(|d| d.contains("At most 2048 bytes")),
        "{link}"
    );
    let explain = &v["paths"]["/v1/policy/explain"]["post"]["responses"]["400"]["description"];
    assert!(
        explain.as_str().is_some_and(|d| d.contains("`bad_ticket`")),
        "{explain}"
    );
}
