//! A user holding many active grants at once (past a listing's default page of 100) still
//! signs in under each of them: through the SSH proxy with a grant's certificate or a
//! registered key, and with `warden ssh`, by `--request` or without it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::*;
use serde_json::Value;
use warden_testkit::{Sshd, ensure_local_user, ssh_base_args, ssh_keypair, ssh_run};

/// More than the 100 a listing returns by default.
const MANY: usize = 105;

fn targets(web: &str) -> String {
    format!(
        "[targets.web]\nkind = \"ssh\"\nenvironment = \"test\"\n[targets.web.connection]\n{web}\n[targets.web.roles.view]\nprincipals = [\"{LOCAL_USER}\"]\n\n[targets.files]\nkind = \"ssh\"\nenvironment = \"test\"\n[targets.files.connection]\nhost = \"127.0.0.1\"\nport = 1\n[targets.files.roles.view]\nprincipals = [\"{LOCAL_USER}\"]\n"
    )
}

const RULES: &str = r#"
@id("view-auto")
@approval("auto")
@max_ttl("1h")
permit (principal, action == Action::"request", resource == Role::"web/view");

@id("files-auto")
@approval("auto")
@max_ttl("1h")
permit (principal, action == Action::"request", resource == Role::"files/view");
"#;

/// Makes `n` auto-granted requests of `target`'s view role lasting `ttl` through the API,
/// each certifying `public_key`, over one connection.
fn grants(port: u16, bearer: &str, target: &str, ttl: &str, public_key: &str, n: usize) {
    let body = serde_json::json!({
        "target": target,
        "role": "view",
        "reason": "many grants at once",
        "ttl": ttl,
        "public_key": public_key,
    })
    .to_string();
    let request = format!(
        "POST /v1/requests HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {bearer}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for i in 0..n {
        s.write_all(request.as_bytes()).unwrap();
        let answer = read_answer(&mut s);
        assert!(
            answer.starts_with("HTTP/1.1 201") && answer.contains("\"state\":\"active\""),
            "grant {i} of {n} at {target}: {answer}"
        );
    }
}

/// One HTTP answer on a kept-alive connection: its head and its `Content-Length` body.
fn read_answer(s: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "the connection closed");
        answer.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .expect("an answer with a Content-Length");
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).unwrap();
    answer.extend_from_slice(&body);
    String::from_utf8_lossy(&answer).into_owned()
}

/// `ssh` to the proxy as `login`, signing in with the key and certificate `grant` saved.
fn ssh_with_certificate(port: u16, grant: &Value, login: &str, command: &str) -> Output {
    std::process::Command::new("timeout")
        .arg("30")
        .arg("ssh")
        .args(ssh_base_args(
            port,
            Path::new(grant["private_key_file"].as_str().unwrap()),
        ))
        .arg("-o")
        .arg(format!(
            "CertificateFile={}",
            grant["certificate_file"].as_str().unwrap()
        ))
        .arg(format!("{login}@127.0.0.1"))
        .arg(command)
        .output()
        .unwrap()
}

#[test]
fn an_old_grant_signs_in_behind_many_newer_ones() {
    let keys = tempfile::tempdir().unwrap();
    let env = Env::start_with(
        &[
            ("targets.toml", &targets("host = \"127.0.0.1\"\nport = 1")),
            ("access.cedar", RULES),
        ],
        &[],
    );
    let alice = env.login("alice");
    let admin = env.login("admin");
    ensure_local_user(LOCAL_USER);
    let ca = alice.run(&["ssh-ca"], None);
    assert!(ca.success(), "{ca:?}");
    let sshd = Sshd::start(ca.stdout.trim(), "web");
    write_policy(
        &env.policy_dir(),
        &[(
            "targets.toml",
            &targets(&format!(
                "host = \"127.0.0.1\"\nport = {}\nhost_key = \"{}\"",
                sshd.port(),
                sshd.host_public_key()
            )),
        )],
    );
    ok(&admin, &["policy", "reload"]);
    let (key, public) = ssh_keypair(keys.path(), "alice_key");
    ok(&alice, &["keys", "add", &format!("{}.pub", key.display())]);
    let proxy = env.server.ssh_port();
    let started = || audit_events(&admin, "session.started").pop().unwrap();

    // The grant that lasts longest is the oldest; more than a page of newer ones follow it at
    // the same target.
    let old = create(&alice, "web", "view", &["--ttl", "1h"]);
    let old_id = id(&old);
    let bearer = token(&alice);
    grants(env.server.port(), &bearer, "web", "30m", &public, MANY);
    assert_eq!(state(&alice, &old_id), "active");

    // Its certificate signs in through the proxy, under it.
    let out = ssh_with_certificate(proxy, &old, "alice:web", "echo by-certificate");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "by-certificate",
        "{out:?}"
    );
    assert_eq!(started()["request_id"], old_id.as_str());
    assert!(
        audit_events(&admin, "session.refused").is_empty(),
        "{:?}",
        audit_events(&admin, "session.refused")
    );
    // A registered key signs in under the grant that lasts longest, however many are newer.
    let out = ssh_run(proxy, "alice:web", &key, "echo by-key");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "by-key",
        "{out:?}"
    );
    assert_eq!(started()["request_id"], old_id.as_str());
    // `warden ssh --request` names it.
    let out = alice.run(
        &["ssh", "web", "--request", &old_id, "--", "echo", "by-id"],
        None,
    );
    assert_eq!(out.stdout.trim(), "by-id", "{out:?}");
    assert_eq!(started()["request_id"], old_id.as_str());

    // More than a page of grants at another target, newer still, hide none of those at this
    // one from `warden ssh`, which picks the one that lasts longest.
    grants(env.server.port(), &bearer, "files", "30m", &public, MANY);
    let out = alice.run(&["ssh", "web", "--", "echo", "picked"], None);
    assert_eq!(out.stdout.trim(), "picked", "{out:?}");
    assert_eq!(started()["request_id"], old_id.as_str());
    let out = alice.run(
        &[
            "ssh",
            "web",
            "--request",
            &old_id,
            "--",
            "echo",
            "by-id-again",
        ],
        None,
    );
    assert_eq!(out.stdout.trim(), "by-id-again", "{out:?}");

    // A grant for another target, named for this one, is refused, saying which it is for.
    let files = create(&alice, "files", "view", &[]);
    let refused = fails(
        &alice,
        &["ssh", "web", "--request", &id(&files), "--", "true"],
        4,
    );
    assert!(
        refused
            .stderr
            .contains(&format!("{} is your grant for files, not web", id(&files))),
        "{refused:?}"
    );
    // Its certificate at the proxy is refused, at sign-in, as one for another target.
    let out = ssh_with_certificate(proxy, &files, "alice:web", "echo no");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let refusal = audit_events(&admin, "auth.login_failed").pop().unwrap();
    assert_eq!(refusal["outcome"]["code"], "certificate_not_for_target");
    assert!(
        refusal["outcome"]["reason"]
            .as_str()
            .unwrap()
            .contains("which is for files, not web"),
        "{refusal}"
    );
    // An ended grant named by its id is refused, saying it ended.
    ok(&alice, &["request", "revoke", &id(&files)]);
    let refused = fails(
        &alice,
        &["ssh", "files", "--request", &id(&files), "--", "true"],
        4,
    );
    assert!(
        refused.stderr.contains("is revoked, not active"),
        "{refused:?}"
    );
    drop(sshd);
}
