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

/// A role whose certificates carry critical options, at a target of its own: `web`'s host.
fn with_options(role: &str, options: &str) -> String {
    format!(
        "[targets.web]\nkind = \"ssh\"\nenvironment = \"test\"\n[targets.web.roles.{role}]\nprincipals = [\"{LOCAL_USER}\"]\n{options}\n"
    )
}

/// Auto-approved grants of `web`'s `roles`.
fn auto_rules(roles: &[&str]) -> String {
    roles
        .iter()
        .map(|r| {
            format!(
                "@id(\"{r}-auto\")\n@approval(\"auto\")\n@max_ttl(\"1h\")\npermit (principal, action == Action::\"request\", resource == Role::\"web/{r}\");\n"
            )
        })
        .collect()
}

/// `source_address` and `force_command` are written as the certificate's critical options,
/// and the host's sshd holds a session to them: a sign-in from an address the role does not
/// list is refused, and a session runs the forced command whatever it asks for.
#[test]
fn critical_options_of_a_role_hold_at_the_host() {
    let targets = [
        with_options("near", "source_address = [\"127.0.0.1/32\"]"),
        with_options(
            "far",
            "source_address = [\"10.9.9.9/32\", \"192.0.2.0/24\"]",
        )
        .replace(
            "[targets.web]\nkind = \"ssh\"\nenvironment = \"test\"\n",
            "",
        ),
        with_options("forced", "force_command = \"echo forced\"").replace(
            "[targets.web]\nkind = \"ssh\"\nenvironment = \"test\"\n",
            "",
        ),
    ]
    .concat();
    let env = Env::start_with(
        &[
            ("targets.toml", &targets),
            ("access.cedar", &auto_rules(&["near", "far", "forced"])),
        ],
        &[],
    );
    let alice = env.login("alice");
    ensure_local_user(LOCAL_USER);
    let ca = alice.run(&["ssh-ca"], None);
    let sshd = Sshd::start(ca.stdout.trim(), "web");
    let login = |v: &serde_json::Value, command: &str| {
        let key = Path::new(v["private_key_file"].as_str().unwrap()).to_owned();
        let cert = Path::new(v["certificate_file"].as_str().unwrap()).to_owned();
        ssh_login(sshd.port(), LOCAL_USER, &key, &cert, command)
    };

    let near = create(&alice, "web", "near", &[]);
    assert_eq!(
        near["credential"]["critical_options"],
        serde_json::json!({"source-address": "127.0.0.1/32"}),
        "{near}"
    );
    let out = login(&near, "echo near-$(whoami)");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("near-{LOCAL_USER}"),
        "{out:?}\n{}",
        sshd.log()
    );

    // From 127.0.0.1, which the role does not list: sshd refuses the certificate.
    let far = create(&alice, "web", "far", &[]);
    let out = login(&far, "echo far");
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "{out:?}"
    );
    assert!(
        sshd.log()
            .contains("with valid certificate but not from a permitted source address (127.0.0.1)"),
        "{}",
        sshd.log()
    );

    let forced = create(&alice, "web", "forced", &[]);
    let out = login(&forced, "whoami");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "forced",
        "{out:?}\n{}",
        sshd.log()
    );
    // The grant's audit event says what the certificate holds to.
    let admin = env.login("admin");
    let issued = audit_events(&admin, "credential.issued");
    let forced_issued = issued
        .iter()
        .find(|e| e["request_id"] == forced["id"])
        .unwrap();
    assert_eq!(
        forced_issued["details"]["critical_options"]["force-command"], "echo forced",
        "{forced_issued}"
    );
}

/// Critical option settings a host could not hold to are refused where they are written.
#[test]
fn bad_critical_option_settings_are_refused_at_their_line() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(
        dir.path(),
        &[
            (
                "targets.toml",
                "[targets.web]\nkind = \"ssh\"\nenvironment = \"t\"\n[targets.web.roles.view]\nprincipals = [\"root\"]\nsource_address = [\"10.0.0.0/8\", \"10.1.2.3/16\", \"web01\"]\nforce_command = \"echo a\\nrm -rf /\"\n[targets.web.roles.edit]\nprincipals = [\"root\"]\nsource_address = []\nforce_command = \"\"\n",
            ),
            ("access.cedar", &auto_rules(&["view", "edit"])),
        ],
    );
    let cli = warden_testkit::Cli::new(Path::new(BIN), "http://127.0.0.1:9");
    let out = cli.run(&["policy", "check", dir.path().to_str().unwrap()], None);
    assert_eq!(out.code, 1, "{out:?}");
    for (line, what) in [
        (
            6,
            "source_address entry \"10.1.2.3/16\" has address bits set past its /16 prefix, which OpenSSH refuses: write the network as 10.1.0.0/16",
        ),
        (
            6,
            "source_address entry \"web01\" is not an IPv4 or IPv6 address",
        ),
        (7, "`force_command` holds a control character (U+000A)"),
        (10, "`source_address` is empty"),
        (11, "`force_command` is empty"),
    ] {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.starts_with(&format!("targets.toml:{line}:")) && l.contains(what)),
            "line {line}, {what}: {}",
            out.stderr
        );
    }
}

/// A pending request whose stored key a check added since would refuse is judged again as it
/// is approved: no certificate is issued, and the request ends saying why, on the record.
#[test]
fn a_stored_key_refused_since_is_judged_again_at_approval() {
    let rules = "@id(\"deploy-peer\")\n@approval(\"peer(sre)\")\n@max_ttl(\"1h\")\n@pending_timeout(\"1h\")\npermit (principal in Group::\"dev\", action == Action::\"request\", resource == Role::\"web/deploy\");\n";
    let mut env = Env::start_with(&[("targets.toml", TARGETS), ("access.cedar", rules)], &[]);
    let alice = env.login("alice");
    let pending = create(&alice, "web", "deploy", &[]);
    assert_eq!(pending["state"], "pending", "{pending}");
    let rid = id(&pending);
    // As a Warden before the 2048-bit floor stored it: a 1024-bit RSA key.
    let weak = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDNm0SALAjUA6Hc+hTSCls69q2hZSznWSoX+pzlQ0nsJRy7JDmLlqNFmDtm36bdDPVmJTqVCoPhBDTz87yhuMTwz/yNfwx143DwhmJq9BigqhyxehiwE371QV4xW6KkEqn0WJqa9VciBji2TYtFeKHDlSUOl4oHJS8SQeqzwohegQ==";
    assert!(env.server.terminate().success());
    {
        let db = rusqlite::Connection::open(env.server.data_dir().join("warden.db")).unwrap();
        let body: String = db
            .query_row("SELECT body FROM requests WHERE id = ?1", [&rid], |r| {
                r.get(0)
            })
            .unwrap();
        let mut r: serde_json::Value = serde_json::from_str(&body).unwrap();
        r["public_key"] = weak.into();
        db.execute(
            "UPDATE requests SET body = ?1 WHERE id = ?2",
            [r.to_string(), rid.clone()],
        )
        .unwrap();
    }
    env.server.restart();
    let bob = env.login("bob");
    let out = bob.run(&["request", "approve", &rid, "--json"], None);
    assert!(!out.success(), "{out:?}");
    assert!(
        out.stderr
            .contains("the RSA key has 1024 bits; at least 2048 are needed"),
        "{out:?}"
    );
    let alice = env.login("alice");
    let shown = ok(&alice, &["request", "show", &rid]);
    assert_eq!(shown["state"], "revoked", "{shown}");
    assert!(shown["credential"].is_null(), "{shown}");
    let comment = shown["end_comment"].as_str().unwrap_or_default();
    assert!(
        comment.starts_with("the credential could not be issued: what the request was made with is refused now: the RSA key has 1024 bits")
            && comment.contains("make a new request"),
        "{shown}"
    );
    let admin = env.login("admin");
    let failed = audit_events(&admin, "credential.issue_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["request_id"], rid.as_str(), "{failed:?}");
    assert!(
        failed[0]["outcome"]["reason"]
            .as_str()
            .unwrap()
            .contains("1024 bits"),
        "{failed:?}"
    );
    assert!(audit_events(&admin, "credential.issued").is_empty());
    // Nothing of the key but its size is said.
    assert!(!failed[0].to_string().contains("AAAAB3Nza"), "{failed:?}");
}
