//! Shared set-up for the integration tests: a real `warden` server on a free loopback port with
//! a temporary data dir, the demo directory (`--dev`), and a test policy written before start.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use warden_testkit::{Cli, CliOutput, Server};

pub const BIN: &str = env!("CARGO_BIN_EXE_warden");
pub const PASSWORD: &str = "warden-dev";

/// The Unix account the test policy's certificates log in as.
pub const LOCAL_USER: &str = "warden-it";

pub const TARGETS: &str = r#"
[targets.web]
kind = "ssh"
environment = "test"
description = "integration test host"

[targets.web.roles.view]
principals = ["warden-it"]

[targets.web.roles.deploy]
principals = ["warden-it"]

[targets.web.roles.admin]
principals = ["warden-it"]

[targets.web.roles.root]
principals = ["warden-it"]
"#;

pub const RULES: &str = r#"
@id("view-auto")
@approval("auto")
@max_ttl("1h")
permit (principal, action == Action::"request", resource == Role::"web/view");

@id("deploy-peer")
@approval("peer(sre)")
@max_ttl("4h")
@ticket("CHG-[0-9]+")
@pending_timeout("3s")
permit (principal in Group::"dev", action == Action::"request", resource == Role::"web/deploy");

@id("admin-peer-manager")
@approval("peer(sre) & manager")
@max_ttl("2h")
@mfa("required")
permit (principal in Group::"dev", action == Action::"request", resource == Role::"web/admin");

@id("root-two-person")
@approval("two-person(security)")
@max_ttl("1h")
permit (principal in Group::"dev", action == Action::"request", resource == Role::"web/root");
"#;

/// A running server and the temporary directory holding its data.
pub struct Env {
    pub server: Server,
    pub dir: tempfile::TempDir,
}

impl Env {
    /// Starts `warden serve --dev` with the test policy in its data dir.
    pub fn start() -> Env {
        Env::start_with(&[("targets.toml", TARGETS), ("access.cedar", RULES)], &[])
    }

    /// Starts `warden serve --dev` with `files` as its policy (none: the demo policy).
    pub fn start_with(files: &[(&str, &str)], extra_args: &[&str]) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        if !files.is_empty() {
            write_policy(&data.join("policy"), files);
        }
        let mut args = vec!["serve", "--dev"];
        args.extend_from_slice(extra_args);
        let server = Server::start_in(Path::new(BIN), &data, &args, &[]);
        Env { server, dir }
    }

    /// Starts `warden serve --dev` with the test policy and `config` as its config file.
    pub fn start_configured(config: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        write_policy(
            &data.join("policy"),
            &[("targets.toml", TARGETS), ("access.cedar", RULES)],
        );
        let path = dir.path().join("warden.toml");
        std::fs::write(&path, config).unwrap();
        let args = ["serve", "--dev", "--config", path.to_str().unwrap()];
        let server = Server::start_in(Path::new(BIN), &data, &args, &[]);
        Env { server, dir }
    }

    pub fn policy_dir(&self) -> PathBuf {
        self.server.data_dir().join("policy")
    }

    /// A CLI logged in as `user`.
    pub fn login(&self, user: &str) -> Cli {
        let cli = self.server.cli();
        let out = cli.run(
            &["login", "--user", user, "--password-stdin"],
            Some(PASSWORD),
        );
        assert!(out.success(), "login {user}: {out:?}");
        cli
    }
}

pub fn write_policy(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

/// Stores `target`'s administrator credential (`warden target set-credential`).
pub fn set_credential(admin: &Cli, target: &str, user: &str, password: &str) {
    let out = admin.run(
        &[
            "target",
            "set-credential",
            target,
            "--username",
            user,
            "--password-stdin",
        ],
        Some(password),
    );
    assert!(out.success(), "{out:?}");
}

/// `warden serve --dev --config CONFIG --data-dir DATA` (the tests' data dirs are `--dev`'s)
/// on any free port, expected to refuse at start: its output.
pub fn serve_refusing(config: &Path, data: &Path) -> CliOutput {
    Cli::new(Path::new(BIN), "http://127.0.0.1:9").run(
        &[
            "serve",
            "--dev",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            // Tests run side by side, beside whatever else runs here.
            "--ssh-listen",
            "127.0.0.1:0",
        ],
        None,
    )
}

/// Runs a CLI command with `--json` expecting success.
pub fn ok(cli: &Cli, args: &[&str]) -> Value {
    cli.json(args)
}

/// Runs a CLI command expecting exit code `code`; returns the output.
pub fn fails(cli: &Cli, args: &[&str], code: i32) -> CliOutput {
    let out = cli.run(args, None);
    assert_eq!(
        out.code,
        code,
        "`warden {}` should exit {code}: {out:?}",
        args.join(" ")
    );
    out
}

/// Creates a request and returns its JSON.
pub fn create(cli: &Cli, target: &str, role: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "request",
        "create",
        target,
        "--role",
        role,
        "--reason",
        "integration test",
    ];
    if !extra.contains(&"--ttl") {
        args.extend_from_slice(&["--ttl", "30m"]);
    }
    args.extend_from_slice(extra);
    ok(cli, &args)
}

pub fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

pub fn state(cli: &Cli, id: &str) -> String {
    ok(cli, &["request", "show", id])["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Audit events for a request, as (action, outcome) pairs, oldest first.
pub fn audit_actions(admin: &Cli, request: &str) -> Vec<(String, String)> {
    let v = ok(
        admin,
        &["audit", "search", "--request", request, "--limit", "1000"],
    );
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"]["action"].as_str().unwrap().to_owned(),
                e["event"]["outcome"]["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A TOTP code for the authenticator behind `uri`, `steps_ahead` 30-second steps from now.
/// Codes for the next step are accepted (one step of clock skew), which lets a test use a
/// second, distinct code without waiting.
pub fn totp(uri: &str, steps_ahead: u64) -> String {
    let t = totp_rs::Totp::from_url(uri).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    t.generate(now + 30 * steps_ahead).to_string()
}

/// Enrols MFA for the CLI's user and returns the otpauth URI.
pub fn enroll_mfa(cli: &Cli) -> String {
    let v = ok(cli, &["mfa", "enroll"]);
    let uri = v["otpauth_uri"].as_str().unwrap().to_owned();
    ok(cli, &["mfa", "confirm", &totp(&uri, 0)]);
    uri
}

/// Runs `warden login` as `user` with `password` on stdin and, if given, a TOTP code.
pub fn sign_in(cli: &Cli, user: &str, password: &str, totp: Option<&str>) -> CliOutput {
    let mut args = vec!["login", "--user", user, "--password-stdin"];
    args.extend(totp.iter().flat_map(|code| ["--totp", code]));
    cli.run(&args, Some(password))
}

/// Every stored audit record (`seq`, `leaf_hash`, `event`) with `code`, up to a thousand,
/// oldest first.
pub fn audit_records(admin: &Cli, code: &str) -> Vec<Value> {
    ok(
        admin,
        &["audit", "search", "--code", code, "--limit", "1000"],
    )["events"]
        .as_array()
        .unwrap()
        .clone()
}

/// Every audit event with `code` (up to a thousand), oldest first.
pub fn audit_events(admin: &Cli, code: &str) -> Vec<Value> {
    audit_records(admin, code)
        .into_iter()
        .map(|r| r["event"].clone())
        .collect()
}

/// The string at `pointer` in every audit event with `code`, oldest first.
pub fn audit_values(admin: &Cli, code: &str, pointer: &str) -> Vec<String> {
    audit_events(admin, code)
        .iter()
        .filter_map(|e| e.pointer(pointer)?.as_str().map(str::to_owned))
        .collect()
}

/// The bearer token `warden login` saved for `cli`.
pub fn token(cli: &Cli) -> String {
    let saved = std::fs::read_to_string(cli.home().join("credentials.json")).unwrap();
    let v: Value = serde_json::from_str(&saved).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

/// One HTTP/1.1 call with a JSON body: the status and the body.
pub fn call(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The `error.code` of an API error body, or "" for any other body.
pub fn error_code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_default();
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}

/// Makes `n` audit events cheaply: each request for access with an empty body is refused and
/// audited (an authenticated caller's refusals are not throttled, as failed sign-ins and
/// invalid tokens are). Stops early (returning how many were made) once the server stops
/// answering.
pub fn refused_requests(port: u16, bearer: &str, n: usize) -> usize {
    let request = format!(
        "POST /v1/requests HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {bearer}\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    for i in 0..n {
        let answered = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(request.as_bytes())?;
            let mut answer = String::new();
            s.read_to_string(&mut answer)?;
            Ok(answer)
        })();
        match answered {
            Ok(a) if a.starts_with("HTTP/1.1 400") => {}
            _ => return i,
        }
    }
    n
}

/// A client of `server`, logged in as `user` (the demo directory's password).
pub fn login(server: &Server, user: &str) -> Cli {
    let cli = server.cli();
    let out = cli.run(
        &["login", "--user", user, "--password-stdin"],
        Some(PASSWORD),
    );
    assert!(out.success(), "login {user}: {out:?}");
    cli
}

/// `password`'s hash for a config's `password_hash`, from `warden hash-password`.
pub fn password_hash(password: &str) -> String {
    let cli = Cli::new(Path::new(BIN), "http://127.0.0.1:9");
    let out = cli.run(&["hash-password"], Some(password));
    assert!(out.success(), "{out:?}");
    out.stdout.trim().to_owned()
}

/// Waits, polling every 100 ms for at most `limit`, until `f` holds; fails naming `what`.
pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
