//! The spine end to end: a certificate Warden issues logs into a real OpenSSH sshd that trusts
//! Warden's CA, and is refused once the grant has expired.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use warden_testkit::{Sshd, ensure_local_user, ssh_login};

#[test]
fn certificate_logs_in_until_the_grant_expires() {
    let env = Env::start();
    let alice = env.login("alice");
    ensure_local_user(LOCAL_USER);

    // sshd trusts exactly what `warden ssh-ca` prints.
    let ca = alice.run(&["ssh-ca"], None);
    assert!(ca.success(), "{ca:?}");
    let sshd = Sshd::start(ca.stdout.trim(), "web");

    // No grant, no login: the client's own key alone is not trusted.
    let v = create(&alice, "web", "view", &["--ttl", "6s"]);
    assert_eq!(v["state"], "active");
    let key = Path::new(v["private_key_file"].as_str().unwrap()).to_owned();
    let cert = Path::new(v["certificate_file"].as_str().unwrap()).to_owned();
    let expires = Instant::now() + Duration::from_secs(6);

    let out = ssh_login(
        sshd.port(),
        LOCAL_USER,
        &key,
        &cert,
        "echo granted-$(whoami)",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("granted-{LOCAL_USER}"),
        "{out:?}\n{}",
        sshd.log()
    );
    assert!(
        sshd.log().contains(&format!("ID {}", id(&v))),
        "sshd did not log the key id:\n{}",
        sshd.log()
    );
    // The certified key's fingerprint, as the grant and its audit event record it.
    let fingerprint = v["credential"]["key_fingerprint"].as_str().unwrap();
    assert!(
        sshd.log()
            .contains(&format!("CERT {fingerprint} ID {}", id(&v))),
        "sshd logged another key:\n{}",
        sshd.log()
    );
    // The host of another target, with the same account, takes no certificate of web's: a
    // grant reaches its own target only.
    let elsewhere = Sshd::start(ca.stdout.trim(), "db");
    let out = ssh_login(elsewhere.port(), LOCAL_USER, &key, &cert, "echo granted");
    assert!(!out.status.success(), "{out:?}");
    assert!(
        elsewhere
            .log()
            .contains("Certificate does not contain an authorized principal"),
        "{}",
        elsewhere.log()
    );

    // After expiry the same certificate is refused, and Warden marked the grant expired.
    let wait = expires.saturating_duration_since(Instant::now()) + Duration::from_secs(2);
    std::thread::sleep(wait);
    let out = ssh_login(sshd.port(), LOCAL_USER, &key, &cert, "echo granted");
    assert!(
        !out.status.success(),
        "login after expiry must fail: {out:?}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty());
    assert_eq!(state(&alice, &id(&v)), "expired");
    let admin = env.login("admin");
    let actions: Vec<String> = audit_actions(&admin, &id(&v))
        .into_iter()
        .map(|a| a.0)
        .collect();
    // A certificate dies on its own at valid_before: nothing to revoke at the target.
    assert_eq!(
        actions.last().map(String::as_str),
        Some("grant.expired"),
        "{actions:?}"
    );
    // The client forgets an ended grant's key and certificate once it saves the next one.
    assert!(key.exists() && cert.exists());
    let next = create(&alice, "web", "view", &["--ttl", "10m"]);
    assert!(!key.exists() && !cert.exists(), "{next}");
    assert!(Path::new(next["certificate_file"].as_str().unwrap()).exists());
}

#[test]
fn the_printed_ssh_command_logs_in_where_the_target_names_its_host() {
    let env = Env::start();
    let (alice, admin) = (env.login("alice"), env.login("admin"));
    ensure_local_user(LOCAL_USER);
    let ca = alice.run(&["ssh-ca"], None);
    let sshd = Sshd::start(ca.stdout.trim(), "web");
    let connection = format!(
        "[targets.web.connection]\nhost = \"127.0.0.1\"\nport = {}\n",
        sshd.port()
    );
    write_policy(
        &env.policy_dir(),
        &[("targets.toml", &format!("{TARGETS}{connection}"))],
    );
    ok(&admin, &["policy", "reload"]);
    let out = alice.run(
        &[
            "request", "create", "web", "--role", "view", "--reason", "printed", "--ttl", "10m",
        ],
        None,
    );
    assert!(out.success(), "{out:?}");
    let connect = |stdout: &str| -> Vec<String> {
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("Connect: "))
            .unwrap_or_else(|| panic!("no Connect line: {stdout}"));
        let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        assert_eq!(words[0], "ssh", "{line}");
        assert_eq!(
            words.last().cloned(),
            Some(format!("{LOCAL_USER}@127.0.0.1")),
            "{line}"
        );
        words
    };
    // The command as printed, with only the test's own client settings before it.
    let logs_in = |words: &[String]| {
        let mut ssh = std::process::Command::new("timeout");
        ssh.args(["20", "ssh", "-F", "/dev/null", "-o", "BatchMode=yes"])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(&words[1..])
            .arg("echo printed-$(whoami)");
        let run = ssh.output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&run.stdout).trim(),
            format!("printed-{LOCAL_USER}"),
            "{words:?}: {run:?}\n{}",
            sshd.log()
        );
    };
    logs_in(&connect(&out.stdout));

    // Shown on another client, which has the certificate but not the key: the command names
    // the key it takes, and says which, instead of one that cannot log in.
    let rid = ok(&alice, &["request", "list"])["requests"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let grant = ok(&alice, &["request", "show", &rid]);
    let elsewhere = env.login("alice");
    let shown = elsewhere.run(&["request", "show", &rid], None);
    assert!(shown.success(), "{shown:?}");
    let mut words = connect(&shown.stdout);
    let at = words.iter().position(|w| w == "-i");
    assert_eq!(at.map(|i| words[i + 1].as_str()), Some("KEY"), "{shown:?}");
    assert!(
        shown.stdout.contains(
            "Replace KEY with the private key whose public half was sent with the request"
        ) && shown
            .stdout
            .contains(&format!("`warden ssh web --request {rid} -i KEY`")),
        "{shown:?}"
    );
    // With KEY replaced by that key, it logs in.
    words[at.unwrap() + 1] = grant["private_key_file"].as_str().unwrap().to_owned();
    logs_in(&words);
}

#[test]
fn a_certificate_for_another_principal_is_refused() {
    let env = Env::start_with(
        &[
            (
                "targets.toml",
                "[targets.web]\nkind = \"ssh\"\nenvironment = \"test\"\n[targets.web.roles.view]\nprincipals = [\"someone-else\"]\n",
            ),
            (
                "access.cedar",
                "@id(\"v\")\n@approval(\"auto\")\n@max_ttl(\"1h\")\npermit (principal, action == Action::\"request\", resource == Role::\"web/view\");\n",
            ),
        ],
        &[],
    );
    let alice = env.login("alice");
    ensure_local_user(LOCAL_USER);
    let ca = alice.run(&["ssh-ca"], None);
    let sshd = Sshd::start(ca.stdout.trim(), "web");
    let v = create(&alice, "web", "view", &[]);
    let key = Path::new(v["private_key_file"].as_str().unwrap()).to_owned();
    let cert = Path::new(v["certificate_file"].as_str().unwrap()).to_owned();
    let out = ssh_login(sshd.port(), LOCAL_USER, &key, &cert, "echo granted");
    assert!(!out.status.success(), "{out:?}");

    // Warden's own CA key is nobody's: neither certified nor registered for the proxy.
    let ca_file = alice.home().join("ca.pub");
    std::fs::write(&ca_file, ca.stdout.trim()).unwrap();
    let ca_path = ca_file.to_str().unwrap();
    let out = fails(
        &alice,
        &[
            "request",
            "create",
            "web",
            "--role",
            "view",
            "--reason",
            "r",
            "--ttl",
            "1h",
            "--public-key",
            ca_path,
        ],
        2,
    );
    assert!(out.stderr.contains("Warden's own user CA key"), "{out:?}");
    let out = fails(&alice, &["keys", "add", ca_path, "--proof", ca_path], 2);
    assert!(out.stderr.contains("Warden's own user CA key"), "{out:?}");
}

#[test]
fn early_revoke_reaches_sshd_through_revoked_keys() {
    let env = Env::start();
    let alice = env.login("alice");
    ensure_local_user(LOCAL_USER);
    let ca = alice.run(&["ssh-ca"], None);
    let sshd = Sshd::start(ca.stdout.trim(), "web");
    let login = |key: &Path, v: &serde_json::Value| {
        let cert = Path::new(v["certificate_file"].as_str().unwrap()).to_owned();
        ssh_login(sshd.port(), LOCAL_USER, key, &cert, "echo in")
    };
    let own_key =
        |v: &serde_json::Value| Path::new(v["private_key_file"].as_str().unwrap()).to_owned();

    let first = create(&alice, "web", "view", &["--ttl", "30m"]);
    let second = create(&alice, "web", "view", &["--ttl", "30m"]);
    assert!(login(&own_key(&first), &first).status.success());
    assert_ne!(
        first["private_key_file"], second["private_key_file"],
        "each grant gets its own key"
    );
    // Two grants certifying one key: the user's own, passed to both requests.
    let keys = tempfile::tempdir().unwrap();
    let (mine, _) = warden_testkit::ssh_keypair(keys.path(), "mine");
    let mine_pub = format!("{}.pub", mine.display());
    let third = create(
        &alice,
        "web",
        "view",
        &["--ttl", "30m", "--public-key", &mine_pub],
    );
    let fourth = create(
        &alice,
        "web",
        "view",
        &["--ttl", "30m", "--public-key", &mine_pub],
    );
    assert!(login(&mine, &fourth).status.success());

    ok(&alice, &["request", "revoke", &id(&first)]);
    ok(&alice, &["request", "revoke", &id(&third)]);
    let path = sshd.revoked_keys_path();
    let written = ok(
        &alice,
        &["ssh-revoked-keys", "--out", path.to_str().unwrap()],
    );
    assert_eq!(written["file"], path.to_str().unwrap());
    assert!(std::fs::read(&path).unwrap().starts_with(b"SSHKRL\n\0"));

    // The revoked grants' certificates are refused at once; the others still log in, the one
    // certifying the same key as a revoked grant included: the list names grants, not keys.
    assert!(
        !login(&own_key(&first), &first).status.success(),
        "a revoked certificate still logs in"
    );
    assert!(
        !login(&mine, &third).status.success(),
        "a revoked certificate still logs in"
    );
    assert!(
        login(&own_key(&second), &second).status.success(),
        "revoking one grant cut off another"
    );
    assert!(
        login(&mine, &fourth).status.success(),
        "revoking a grant cut off another grant of the same key"
    );
    // A terminal gets no binary: without --out it must be redirected.
    let json = alice.run(&["ssh-revoked-keys", "--json"], None);
    assert_eq!(json.code, 2, "{json:?}");
}
