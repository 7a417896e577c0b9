//! Warden's SSH proxy end to end, with the real OpenSSH client and a real sshd on loopback:
//! key login to Warden, authorization by an active grant, the upstream certificate and pinned
//! host key, recordings checked with `asciinema cat`, command rules, file transfers, live
//! control, and failing closed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use warden_testkit::{
    Cli, Sshd, Tmux, ensure_local_user, ssh_base_args, ssh_keypair, ssh_person_args, ssh_run,
};

/// A Warden server whose `web` target is a private sshd, and alice with a registered key.
struct Setup {
    env: Env,
    sshd: Sshd,
    alice: Cli,
    admin: Cli,
    key: PathBuf,
    port: u16,
    _keys: tempfile::TempDir,
}

fn role_settings(extra: &str) -> String {
    format!("principals = [\"{LOCAL_USER}\"]\n{extra}")
}

fn rules(recording: &str) -> String {
    format!(
        "@id(\"view-auto\")\n@approval(\"auto\")\n@max_ttl(\"1h\")\n@recording(\"{recording}\")\npermit (principal, action == Action::\"request\", resource == Role::\"web/view\");\n"
    )
}

fn targets(connection: &str, role: &str) -> String {
    format!(
        "[targets.web]\nkind = \"ssh\"\nenvironment = \"test\"\n[targets.web.connection]\n{connection}\n[targets.web.roles.view]\n{role}\n"
    )
}

impl Setup {
    /// Reloads the policy with the target's host key pinned to `host_key` and the role's
    /// extra `settings`.
    fn repin(&self, host_key: &str, settings: &str) {
        self.reach(self.sshd.port(), host_key, settings);
    }

    /// Reloads the policy with the target at `port` on loopback, its host key pinned to
    /// `host_key`, and the role's extra `settings`.
    fn reach(&self, port: u16, host_key: &str, settings: &str) {
        let connection = format!("host = \"127.0.0.1\"\nport = {port}\nhost_key = \"{host_key}\"");
        write_policy(
            &self.env.policy_dir(),
            &[(
                "targets.toml",
                &targets(&connection, &role_settings(settings)),
            )],
        );
        ok(&self.admin, &["policy", "reload"]);
    }

    /// `role` is the view role's extra settings; `pin` puts the sshd's host key in the policy.
    fn start(recording: &str, role: &str, pin: bool) -> Setup {
        Setup::start_configured(recording, role, pin, "")
    }

    /// Like [`Setup::start`], with `config` as the server's config file.
    fn start_configured(recording: &str, role: &str, pin: bool, config: &str) -> Setup {
        let keys = tempfile::tempdir().unwrap();
        let config_file = keys.path().join("warden.toml");
        std::fs::write(&config_file, config).unwrap();
        let env = Env::start_with(
            &[
                (
                    "targets.toml",
                    &targets("host = \"127.0.0.1\"\nport = 1", &role_settings(role)),
                ),
                ("access.cedar", &rules(recording)),
            ],
            &["--config", config_file.to_str().unwrap()],
        );
        let alice = env.login("alice");
        let admin = env.login("admin");
        ensure_local_user(LOCAL_USER);
        let ca = alice.run(&["ssh-ca"], None);
        assert!(ca.success(), "{ca:?}");
        let sshd = Sshd::start(ca.stdout.trim(), "web");
        let mut connection = format!("host = \"127.0.0.1\"\nport = {}", sshd.port());
        if pin {
            connection.push_str(&format!("\nhost_key = \"{}\"", sshd.host_public_key()));
        }
        write_policy(
            &env.policy_dir(),
            &[("targets.toml", &targets(&connection, &role_settings(role)))],
        );
        ok(&admin, &["policy", "reload"]);
        let (key, _) = ssh_keypair(keys.path(), "alice_key");
        let added = ok(&alice, &["keys", "add", &format!("{}.pub", key.display())]);
        assert!(
            added["fingerprint"]
                .as_str()
                .unwrap()
                .starts_with("SHA256:")
        );
        let port = env.server.ssh_port();
        Setup {
            env,
            sshd,
            alice,
            admin,
            key,
            port,
            _keys: keys,
        }
    }

    fn ssh(&self, command: &str) -> Output {
        ssh_run(self.port, "alice:web", &self.key, command)
    }

    /// `sftp -b BATCH` with `options` (`-s PATH`), killed after 30 s.
    fn sftp(&self, batch: &Path, options: &[&str]) -> Output {
        let mut sftp = std::process::Command::new("timeout");
        sftp.args(["30", "sftp", "-b"]).arg(batch).args(options);
        for a in ssh_base_args(self.port, &self.key) {
            // sftp takes -P for the port.
            sftp.arg(if a == "-p" { "-P".to_owned() } else { a });
        }
        // A user name with a colon would be read as host:path, so it goes in an option.
        sftp.args(["-o", "User=alice:web", "127.0.0.1"])
            .output()
            .unwrap()
    }

    /// `ssh ARGS` with `input` piped in, killed after 30 s.
    fn ssh_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        let mut ssh = std::process::Command::new("timeout")
            .args(["-s", "KILL", "30", "ssh"])
            .args(ssh_base_args(self.port, &self.key))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = ssh.stdin.take().unwrap();
            let _ = stdin.write_all(input);
        }
        ssh.wait_with_output().unwrap()
    }

    /// `ssh ... COMMAND` with `stdin` as its input and `stdout` taking its output, killed
    /// after `limit_secs`.
    fn ssh_files(&self, command: &str, stdin: &Path, stdout: &Path, limit_secs: u32) -> Output {
        std::process::Command::new("timeout")
            .args(["-s", "KILL", &limit_secs.to_string(), "ssh"])
            .args(ssh_base_args(self.port, &self.key))
            .arg("alice:web@127.0.0.1")
            .arg(command)
            .stdin(std::fs::File::open(stdin).unwrap())
            .stdout(std::fs::File::create(stdout).unwrap())
            .output()
            .unwrap()
    }

    /// A client connection sessions are multiplexed over (`ControlMaster`, its socket in
    /// `dir`), once it listens, and the `ControlPath=` option that reaches it.
    fn control_master(&self, dir: &Path) -> (KilledOnDrop, String) {
        let socket = dir.join("cm");
        let control = format!("ControlPath={}", socket.display());
        let master = KilledOnDrop(
            std::process::Command::new("timeout")
                .args(["-s", "KILL", "120", "ssh"])
                .args(ssh_base_args(self.port, &self.key))
                .args(["-o", "ControlMaster=yes", "-o", &control, "-N"])
                .arg("alice:web@127.0.0.1")
                .stdin(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "the control master never listened"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        (master, control)
    }

    fn grant(&self, ttl: &str) -> Value {
        let v = create(&self.alice, "web", "view", &["--ttl", ttl]);
        assert_eq!(v["state"], "active", "{v}");
        v
    }

    /// Audit events with `action`, newest last.
    fn events(&self, action: &str) -> Vec<Value> {
        audit_events(&self.admin, action)
    }

    /// Waits (bounded) for `count` audit events with `action`, and returns them, newest last.
    fn wait_events(&self, action: &str, count: usize, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let events = self.events(action);
            if events.len() >= count {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} {action} events within {limit:?}",
                events.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (bounded) for an audit event with `action`, and returns the newest.
    fn wait_event(&self, action: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(e) = self.events(action).pop() {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no {action} event within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn recording(&self, session: &str) -> PathBuf {
        self.env
            .server
            .data_dir()
            .join("recordings")
            .join(format!("{session}.cast"))
    }

    fn interactive(&self) -> Tmux {
        self.on_terminal("")
    }

    /// The id of the one live session, once it shows.
    fn live_session(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let list = ok(&self.admin, &["sessions", "list"]);
            if let Some(id) = list["sessions"][0]["id"].as_str() {
                return id.to_owned();
            }
            assert!(Instant::now() < deadline, "no live session showed up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Events with `code` a search also filtered by `filter` (`--target web`) finds.
    fn search(&self, code: &str, filter: &[&str]) -> Vec<Value> {
        let mut args = vec!["audit", "search", "--code", code];
        args.extend_from_slice(filter);
        ok(&self.admin, &args)["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["event"].clone())
            .collect()
    }

    /// `ssh -tt` on a terminal, running `command` (a shell when empty).
    fn on_terminal(&self, command: &str) -> Tmux {
        let args: Vec<String> = ssh_base_args(self.port, &self.key)
            .into_iter()
            .map(|a| format!("'{a}'"))
            .collect();
        Tmux::start(&format!(
            "ssh -tt {} alice:web@127.0.0.1 {command}",
            args.join(" ")
        ))
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `asciinema cat FILE` (it needs a terminal, so under `script`).
fn asciinema_cat(path: &Path) -> String {
    let out = std::process::Command::new("timeout")
        .args(["20", "script", "-qec"])
        .arg(format!("asciinema cat {}", path.display()))
        .arg("/dev/null")
        .output()
        .unwrap();
    assert!(out.status.success(), "asciinema cat failed: {out:?}");
    text(&out.stdout)
}

/// `ssh -p PORT LOGIN@127.0.0.1 COMMAND` signing in with the key and certificate request
/// `grant` saved, killed after 30 s.
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

/// [`ssh_with_certificate`] as a person runs ssh, not a script: with the client's default log
/// level and no batch mode, which show what the server says at sign-in.
fn ssh_as_a_person(port: u16, key: &Path, certificate: Option<&str>, login: &str) -> Output {
    let args = ssh_person_args(port, key);
    let mut ssh = std::process::Command::new("timeout");
    ssh.args(["30", "ssh"]).args(args);
    if let Some(certificate) = certificate {
        ssh.arg("-o").arg(format!("CertificateFile={certificate}"));
    }
    ssh.arg(format!("{login}@127.0.0.1"))
        .arg("echo signed-in")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn sha256_hex(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// A grant of a role a reload removed stays active but signs no one in at the proxy, and the
/// refusal says why rather than that there is no grant.
#[test]
fn a_grant_of_a_removed_role_is_refused_naming_the_role() {
    let s = Setup::start("metadata", "", true);
    let g = s.grant("30m");
    let connection = format!(
        "host = \"127.0.0.1\"\nport = {}\nhost_key = \"{}\"",
        s.sshd.port(),
        s.sshd.host_public_key()
    );
    write_policy(
        &s.env.policy_dir(),
        &[
            (
                "targets.toml",
                &targets(&connection, &role_settings("")).replace("roles.view]", "roles.other]"),
            ),
            (
                "access.cedar",
                &rules("metadata").replace("web/view", "web/other"),
            ),
        ],
    );
    ok(&s.admin, &["policy", "reload"]);
    let out = ssh_as_a_person(s.port, &s.key, None, "alice:web");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "your grant {} is for role view",
            g["id"].as_str().unwrap()
        )) && err.contains("no longer defines"),
        "{err}"
    );
    let refused = s.wait_event("auth.login_failed", Duration::from_secs(5));
    assert_eq!(refused["outcome"]["code"], "role_not_in_policy");
}

#[test]
fn exec_needs_a_grant_and_is_relayed_recorded_and_audited() {
    let s = Setup::start("full", "", true);

    // No grant: the sign-in is refused, and told what to request.
    let out = ssh_as_a_person(s.port, &s.key, None, "alice:web");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("no active grant for web"), "{err}");
    // (ssh escapes what is not ASCII outside a UTF-8 locale: the "…" after --reason.)
    assert!(
        err.contains("warden request create web --role ROLE --reason \"")
            && err.contains("\" --ttl TTL")
            && err.contains("`warden targets` lists the roles you may request"),
        "{err}"
    );
    let refused = s.wait_event("auth.login_failed", Duration::from_secs(5));
    assert_eq!(refused["outcome"]["code"], "no_active_grant");
    // Found by the target it was aimed at, as every refusal is.
    assert_eq!(refused["target"], "web", "{refused}");
    // `warden ssh` says so itself, with the documented exit codes, before ssh runs.
    let out = fails(&s.alice, &["ssh", "web", "--", "true"], 3);
    assert!(
        out.stderr.contains("no active grant for web") && out.stderr.contains("--ttl TTL"),
        "{out:?}"
    );
    fails(&s.alice, &["ssh", "nosuch"], 4);
    fails(&s.alice, &["ssh", "web", "-i", "/nonexistent/key"], 2);
    // A password typed where the target goes is kept by its length alone.
    let out = ssh_as_a_person(s.port, &s.key, None, "alice:S3cretPassw0rd");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(text(&out.stderr).contains("is no target's name"), "{out:?}");
    let refused = s.wait_events("auth.login_failed", 2, Duration::from_secs(5));
    let refused = refused.last().unwrap().to_string();
    assert!(
        !refused.contains("S3cret") && refused.contains("14 characters"),
        "{refused}"
    );

    // An unregistered key does not get in at all.
    let other = tempfile::tempdir().unwrap();
    let (stranger, _) = ssh_keypair(other.path(), "stranger");
    let out = ssh_run(s.port, "alice:web", &stranger, "echo hi");
    assert_eq!(out.status.code(), Some(255), "{out:?}");

    // Nobody registers another's public key: a key's registration carries its signature over
    // the user it is registered to, in Warden's namespace, made by its private half.
    let bob = s.env.login("bob");
    let alice_public = format!("{}.pub", s.key.display());
    let proof = |key: &Path, namespace: &str, user: &str| {
        let file = other.path().join(format!("proof-{namespace}-{user}"));
        let mut child = std::process::Command::new("ssh-keygen")
            .args(["-q", "-Y", "sign", "-n", namespace, "-f"])
            .arg(key)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let message = format!("register this SSH key to Warden user {user}\n");
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), message.as_bytes()).unwrap();
        let signed = child.wait_with_output().unwrap();
        assert!(signed.status.success(), "{signed:?}");
        std::fs::write(&file, signed.stdout).unwrap();
        file.to_str().unwrap().to_owned()
    };
    for (key, namespace, user, refusal) in [
        (
            &s.key,
            "warden-ssh-key",
            "alice",
            "does not verify for this key and user bob",
        ),
        (&stranger, "warden-ssh-key", "bob", "signed by another key"),
        (&s.key, "git", "bob", "signed for another purpose"),
    ] {
        let forged = proof(key, namespace, user);
        let out = fails(&bob, &["keys", "add", &alice_public, "--proof", &forged], 2);
        assert!(out.stderr.contains(refusal), "{refusal}: {out:?}");
        assert!(out.stderr.contains("ending in a newline"), "{out:?}");
    }
    let lone = other.path().join("copied.pub");
    std::fs::copy(&alice_public, &lone).unwrap();
    let out = fails(&bob, &["keys", "add", lone.to_str().unwrap()], 2);
    assert!(
        out.stderr
            .contains("registering a key needs its private half"),
        "{out:?}"
    );
    assert!(
        ok(&bob, &["keys", "list"])["keys"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let grant = s.grant("30m");
    let out = s.ssh("echo relayed-$(whoami); echo to-stderr >&2; exit 3");
    assert_eq!(out.status.code(), Some(3), "{out:?}\n{}", s.sshd.log());
    assert_eq!(text(&out.stdout).trim(), format!("relayed-{LOCAL_USER}"));
    assert_eq!(text(&out.stderr).trim(), "to-stderr");
    // The target saw Warden's certificate for this grant, not anything of alice's.
    assert!(
        s.sshd.log().contains(&format!("ID {}", id(&grant))),
        "{}",
        s.sshd.log()
    );

    let ended = s.wait_event("session.ended", Duration::from_secs(5));
    let session = ended["session_id"].as_str().unwrap().to_owned();
    assert_eq!(ended["request_id"], grant["id"]);
    assert_eq!(ended["details"]["exit_status"], 3);
    let exec = s.events("session.exec").pop().unwrap();
    assert_eq!(exec["session_id"], session.as_str());
    assert!(
        exec["details"]["command"]
            .as_str()
            .unwrap()
            .starts_with("echo relayed")
    );
    // The recording is on disk, its digest is in the end event, and asciinema reads it.
    let path = s.recording(&session);
    assert_eq!(ended["details"]["recording"]["sha256"], sha256_hex(&path));
    let shown = asciinema_cat(&path);
    assert!(shown.contains(&format!("relayed-{LOCAL_USER}")), "{shown}");
    assert!(shown.contains("to-stderr"), "{shown}");

    // `warden replay` fetches the same recording (auditors only) and plays it.
    let saved = s.env.dir.path().join("saved.cast");
    let out = s.admin.run(
        &["replay", &session, "--out", saved.to_str().unwrap()],
        None,
    );
    assert!(out.success(), "{out:?}");
    assert!(
        out.stdout
            .contains("it matches the SHA-256 its session's end recorded"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read(&saved).unwrap(),
        std::fs::read(&path).unwrap()
    );
    // Only its owner may read it, as the server keeps it; and it is written over no file.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&saved).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let kept = s.env.dir.path().join("kept.txt");
    std::fs::write(&kept, "important").unwrap();
    let out = fails(
        &s.admin,
        &["replay", &session, "--out", kept.to_str().unwrap()],
        2,
    );
    assert!(out.stderr.contains("saved only to a new file"), "{out:?}");
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "important");
    let played = s.admin.run(&["replay", &session, "--speed", "100"], None);
    assert!(
        played.stdout.contains(&format!("relayed-{LOCAL_USER}")),
        "{played:?}"
    );
    // With --json, the recording itself: JSON lines (the id in any case).
    let printed = s
        .admin
        .run(&["--json", "replay", &session.to_uppercase()], None);
    assert!(printed.success(), "{printed:?}");
    assert_eq!(printed.stdout.as_bytes(), std::fs::read(&path).unwrap());
    fails(&s.alice, &["replay", &session], 3);
    let reads = s.events("session.recording_read");
    assert_eq!(reads.len(), 3);
    assert_eq!(reads[0]["details"]["recording"]["check"], "intact");

    // A recording changed since its session ended is refused, the read audited as altered;
    // `--even-if-altered` plays it with a warning.
    let original = std::fs::read(&path).unwrap();
    let altered = String::from_utf8(original.clone())
        .unwrap()
        .replace(&format!("relayed-{LOCAL_USER}"), "relayed-nobody");
    std::fs::write(&path, &altered).unwrap();
    let out = fails(&s.admin, &["replay", &session, "--speed", "100"], 1);
    assert!(
        out.stderr.contains("does not match the SHA-256")
            && out.stderr.contains("--even-if-altered"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("relayed-nobody"), "{out:?}");
    let read = s.events("session.recording_read").pop().unwrap();
    assert_eq!(read["details"]["recording"]["check"], "altered", "{read}");
    let out = s.admin.run(
        &["replay", &session, "--speed", "100", "--even-if-altered"],
        None,
    );
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains("relayed-nobody"), "{out:?}");
    assert!(out.stderr.contains("does NOT match"), "{out:?}");
    let out = s
        .admin
        .run(&["--json", "replay", &session, "--even-if-altered"], None);
    assert!(out.success(), "{out:?}");
    assert!(out.stderr.contains("does NOT match"), "{out:?}");
    std::fs::write(&path, &original).unwrap();

    // The grant's own certificate (made by `request create`) logs in to the proxy too, and
    // nowhere else: the role is recorded, so it names no account sshd would let it log in as.
    let with_certificate =
        |port: u16, login: &str, command: &str| ssh_with_certificate(port, &grant, login, command);
    let out = with_certificate(s.port, "alice:web", "echo by-certificate");
    assert_eq!(text(&out.stdout).trim(), "by-certificate", "{out:?}");
    // Aimed at a target the policy lacks it signs no one in, and the refusal is found by its
    // grant; the target is kept by its length alone, as any name that names nothing is.
    let out = with_certificate(s.port, "alice:elsewhere", "echo elsewhere");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let refused = s.events("auth.login_failed").pop().unwrap();
    assert_eq!(refused["outcome"]["code"], "unknown_target", "{refused}");
    assert_eq!(
        (
            refused["details"]["target"].as_str(),
            refused["request_id"].as_str()
        ),
        (Some("(no such target, 9 characters)"), grant["id"].as_str()),
        "{refused}"
    );
    // With a longer grant beside it, the certificate's session still runs under its own grant;
    // a login no grant allows is refused, naming it.
    let longer = s.grant("50m");
    let out = with_certificate(s.port, "alice:web", "echo still-by-certificate");
    assert_eq!(text(&out.stdout).trim(), "still-by-certificate", "{out:?}");
    let started = s.events("session.started").pop().unwrap();
    assert_eq!(started["request_id"], grant["id"], "{started}");
    assert_ne!(started["request_id"], longer["id"]);
    let out = ssh_as_a_person(s.port, &s.key, None, "alice:web:nobody");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        text(&out.stderr).contains("none of your active grants for web logs in as"),
        "{out:?}"
    );
    // `warden ssh --login` says so before ssh runs, and takes the certificate of a grant that
    // logs in as the login asked for.
    let refused = fails(
        &s.alice,
        &["ssh", "web", "--login", "nobody", "--", "true"],
        3,
    );
    assert!(
        refused.stderr.contains(&format!(
            "none of your grants for web logs in as \"nobody\" (role view logs in as {LOCAL_USER})"
        )),
        "{refused:?}"
    );
    let out = s.alice.run(
        &[
            "ssh", "web", "--login", LOCAL_USER, "--", "echo", "as-login",
        ],
        None,
    );
    assert_eq!(out.stdout.trim(), "as-login", "{out:?}");
    assert_eq!(grant["credential"]["proxy_only"], true, "{grant}");
    assert_eq!(
        grant["credential"]["principals"],
        serde_json::json!(["warden-proxy:alice"])
    );
    let direct = with_certificate(s.sshd.port(), LOCAL_USER, "echo went-around");
    assert_eq!(direct.status.code(), Some(255), "{direct:?}");
    assert!(!text(&direct.stdout).contains("went-around"), "{direct:?}");

    // `warden ssh` without a key uses that certificate.
    let out = s
        .alice
        .run(&["ssh", "web", "--", "echo", "by-grant-certificate"], None);
    assert_eq!(out.stdout.trim(), "by-grant-certificate", "{out:?}");
    // Holding several, `--request` names the grant to log in under (as `request create` prints
    // it); an id that is none of them is not found, a malformed one a usage error.
    let id = grant["id"].as_str().unwrap();
    let out = s.alice.run(
        &["ssh", "web", "--request", id, "--", "echo", "by-id"],
        None,
    );
    assert_eq!(out.stdout.trim(), "by-id", "{out:?}");
    let started = s.events("session.started").pop().unwrap();
    assert_eq!(started["request_id"], id, "{started}");
    let other = longer["id"]
        .as_str()
        .unwrap()
        .replace(&longer["id"].as_str().unwrap()[..8], "00000000");
    fails(
        &s.alice,
        &["ssh", "web", "--request", &other, "--", "true"],
        4,
    );
    fails(&s.alice, &["ssh", "web", "--request", "1", "--", "true"], 2);

    // `warden ssh` finds the proxy, pins its host key for the client, and names the target.
    let out = s.alice.run(
        &[
            "ssh",
            "web",
            "-i",
            s.key.to_str().unwrap(),
            "--",
            "echo",
            "via-warden-ssh",
        ],
        None,
    );
    assert_eq!(out.stdout.trim(), "via-warden-ssh", "{out:?}");

    // A private key named by mistake never leaves the client.
    let slip = fails(&s.alice, &["keys", "add", stranger.to_str().unwrap()], 2);
    assert!(slip.stderr.contains("is a private key"), "{slip:?}");
    // A grant for the user's own key, which is not registered: `warden ssh` logs in with it
    // and its certificate, whether the key is named or not.
    let own = create(
        &s.alice,
        "web",
        "view",
        &[
            "--ttl",
            "45m",
            "--public-key",
            &format!("{}.pub", stranger.display()),
        ],
    );
    assert_eq!(own["state"], "active", "{own}");
    let out = s.alice.run(&["ssh", "web", "--", "echo", "own-key"], None);
    assert_eq!(out.stdout.trim(), "own-key", "{out:?}");
    let named = [
        "ssh",
        "web",
        "-i",
        stranger.to_str().unwrap(),
        "--",
        "echo",
        "named",
    ];
    let out = s.alice.run(&named, None);
    assert_eq!(out.stdout.trim(), "named", "{out:?}");
}

#[test]
fn an_interactive_shell_is_recorded_and_a_denied_line_is_blocked() {
    let s = Setup::start(
        "full",
        "deny_commands = [\"^rm -rf\", \"shutdown\", \"^sudo \"]\nrecord_input = true",
        true,
    );
    s.grant("30m");

    // A denied exec never reaches the target.
    let out = s.ssh("rm -rf /tmp/warden-never");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("command blocked"), "{out:?}");
    let blocked = s.wait_event("session.command_blocked", Duration::from_secs(5));
    assert_eq!(blocked["details"]["rule"], "^rm -rf");
    // So does one on a later line of the command, which the shell runs as a command of its own.
    let (_markers, marker) = removable_marker();
    let out = s.ssh(&format!("true\nrm -rf {}", marker.display()));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("command blocked"), "{out:?}");
    assert!(marker.exists(), "the second line ran");
    // And so does any command the shell would run from it: after a separator, with its quotes
    // taken out, or nested in a shell's command string.
    let marked = marker.display();
    for (command, rule) in [
        (format!("true; rm -rf {marked}"), "^rm -rf"),
        (format!("r''m -rf {marked}"), "^rm -rf"),
        (format!("sh -c \"rm -rf {marked}\""), "^rm -rf"),
        (format!("sh -c \"sudo id; rm -f {marked}\""), "^sudo "),
    ] {
        let before = s.events("session.command_blocked").len();
        let out = s.ssh(&command);
        assert_eq!(out.status.code(), Some(1), "{command}: {out:?}");
        assert!(text(&out.stderr).contains("command blocked"), "{out:?}");
        assert!(marker.exists(), "{command} ran");
        let blocked = s.wait_events(
            "session.command_blocked",
            before + 1,
            Duration::from_secs(5),
        );
        let blocked = &blocked[before];
        assert_eq!(blocked["details"]["command"], command.as_str(), "{blocked}");
        assert_eq!(blocked["details"]["rule"], rule, "{blocked}");
    }

    // A shell without a terminal would read its lines unchecked: refused.
    let unchecked = b"echo unchecked-ran\n";
    let out = s.ssh_with_input(&["-T", "alice:web@127.0.0.1"], unchecked);
    assert!(!text(&out.stdout).contains("unchecked-ran"), "{out:?}");
    assert!(text(&out.stderr).contains("needs a terminal"), "{out:?}");
    // So would a shell a command starts, wherever it stands in the command and however it is
    // wrapped or quoted.
    for command in [
        "bash -s",
        "env bash",
        "exec sh",
        "bash -o posix",
        "bash;",
        "true && b''ash --rcfile /dev/null",
        "sh -c bash",
    ] {
        let out = s.ssh_with_input(&["alice:web@127.0.0.1", command], unchecked);
        assert_eq!(out.status.code(), Some(1), "{command}: {out:?}");
        assert!(!text(&out.stdout).contains("unchecked-ran"), "{out:?}");
        assert!(
            text(&out.stderr).contains("needs a terminal"),
            "{command}: {out:?}"
        );
    }

    let term = s.interactive();
    term.wait_for("$ ", 1, Duration::from_secs(15));
    term.send_line("echo first-$((40+2))");
    term.wait_for("first-42", 1, Duration::from_secs(10));
    term.send_line("shutdown -h now");
    term.wait_for("warden: blocked", 1, Duration::from_secs(10));
    term.send_line("echo after-$((1+1))");
    let screen = term.wait_for("after-2", 1, Duration::from_secs(10));
    assert!(
        !screen.contains("shutdown: "),
        "the line reached the shell:\n{screen}"
    );
    term.send_line("exit");
    let ended = s.wait_event("session.ended", Duration::from_secs(10));
    let blocked = s.events("session.command_blocked").pop().unwrap();
    assert_eq!(blocked["details"]["line"], "shutdown -h now");
    assert_eq!(blocked["session_id"], ended["session_id"]);

    let path = s.recording(ended["session_id"].as_str().unwrap());
    let cast = std::fs::read_to_string(&path).unwrap();
    let header: Value = serde_json::from_str(cast.lines().next().unwrap()).unwrap();
    assert_eq!(
        (header["version"].as_u64(), header["width"].as_u64()),
        (Some(2), Some(120))
    );
    assert!(
        cast.contains(", \"i\", "),
        "input is recorded when the role says so"
    );
    let shown = asciinema_cat(&path);
    assert!(shown.contains("first-42"), "{shown}");
    assert!(shown.contains("warden: blocked"), "{shown}");
    assert!(shown.contains("after-2"), "{shown}");

    // A shell asked for as a command on a terminal has its lines checked the same way.
    let term = s.on_terminal("bash --norc");
    term.send_line("echo started-$((2+3))");
    term.wait_for("started-5", 1, Duration::from_secs(15));
    term.send_line("shutdown -h now");
    term.wait_for("warden: blocked", 1, Duration::from_secs(10));
    // With the shell's interrupt key off, a denied line is discarded all the same, and the
    // next Enter runs nothing.
    term.send_line("stty intr undef");
    term.send_line(&format!("rm -rf {}", marker.display()));
    term.wait_for("warden: blocked", 2, Duration::from_secs(10));
    term.send_line("");
    term.send_line("echo then-$((3+4))");
    term.wait_for("then-7", 1, Duration::from_secs(10));
    assert!(marker.exists(), "the denied line ran at the next Enter");
    // A typed line is read command by command as well; the line typed next reaches the shell
    // whole, its first key included, as the proxy read it.
    term.send_line(&format!("true; r''m -rf {marked}"));
    term.wait_for("warden: blocked", 3, Duration::from_secs(10));
    term.send_line("echo last-$((4+5))");
    term.wait_for("last-9", 1, Duration::from_secs(10));
    assert!(marker.exists(), "the typed command ran");
    term.send_line("exit");
}

/// Lines the shell joins, and lines edited with keys Warden cannot follow, are checked as
/// typed lines are: the marker a joined `rm -rf` would remove survives, and each block is on
/// record with why.
#[test]
fn an_interactive_line_joined_or_edited_out_of_reach_is_blocked() {
    let s = Setup::start("metadata", "deny_commands = [\"^rm -rf\"]", true);
    s.grant("30m");
    let (_markers, marker) = removable_marker();
    let marked = marker.display();
    let term = s.interactive();
    term.wait_for("$ ", 1, Duration::from_secs(15));
    // A backslash at the end joins the next line to it: `rm -rf MARKER`.
    term.send_line("r\\");
    term.send_line(&format!("m -rf {marked}"));
    term.wait_for("warden: blocked", 1, Duration::from_secs(10));
    // The terminal's own word erase (Ctrl-W), which the login shell reads through, stops at
    // the quotes: `r''m -rf MARKER`.
    term.send_line(&format!("r''x\u{17}m -rf {marked}"));
    term.wait_for("warden: blocked", 2, Duration::from_secs(10));
    // Ctrl-T, which readline would use to turn "mr" into "rm".
    term.send_line(&format!("mr\u{14} -rf {marked}"));
    term.wait_for(
        "cannot follow this line past Ctrl-T",
        1,
        Duration::from_secs(10),
    );
    term.send_line("echo after-$((1+1))");
    term.wait_for("after-2", 1, Duration::from_secs(10));
    assert!(marker.exists(), "a blocked line ran");
    let blocked = s.wait_events("session.command_blocked", 3, Duration::from_secs(5));
    assert_eq!(
        blocked[0]["details"]["line"],
        format!("r\\\nm -rf {marked}"),
        "{blocked:?}"
    );
    assert_eq!(blocked[0]["details"]["rule"], "^rm -rf", "{blocked:?}");
    assert_eq!(
        blocked[1]["details"]["line"],
        format!("r''m -rf {marked}"),
        "{blocked:?}"
    );
    assert_eq!(
        blocked[2]["outcome"]["code"], "line_not_followed",
        "{blocked:?}"
    );
    assert_eq!(
        blocked[2]["details"]["not_followed_past"], "Ctrl-T",
        "{blocked:?}"
    );
}

/// A file the target's login could remove, in a directory of its own: what a command that must
/// not run would remove.
fn removable_marker() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let marker = dir.path().join("marker");
    std::fs::write(&marker, "").unwrap();
    (dir, marker)
}

/// With `record_input = true`, what is piped into a shell a command starts is recorded as its
/// keystrokes, as a shell's input is; another command's input is its data, and is not.
#[test]
fn a_shell_started_by_a_command_has_its_input_recorded() {
    let s = Setup::start("full", "record_input = true", true);
    s.grant("30m");
    let recorded_input = |command: &str, input: &[u8], sessions: usize| {
        let out = s.ssh_with_input(&["alice:web@127.0.0.1", command], input);
        assert_eq!(out.status.code(), Some(0), "{command}: {out:?}");
        let ended = s.wait_events("session.ended", sessions, Duration::from_secs(10));
        let session = ended[sessions - 1]["session_id"].as_str().unwrap();
        let cast = std::fs::read_to_string(s.recording(session)).unwrap();
        let typed: String = cast
            .lines()
            .skip(1)
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e[1] == "i")
            .map(|e| e[2].as_str().unwrap().to_owned())
            .collect();
        (text(&out.stdout), typed)
    };
    let (copied, typed) = recorded_input("cat", b"data, not keystrokes\n", 1);
    assert_eq!(
        (copied.as_str(), typed.as_str()),
        ("data, not keystrokes\n", "")
    );
    let (shown, typed) = recorded_input("env sh", b"echo typed-$((6*7))\n", 2);
    assert_eq!(
        (shown.as_str(), typed.as_str()),
        ("typed-42\n", "echo typed-$((6*7))\n")
    );
}

/// A grant an extension continues is still warned of while SSH proxy sessions opened under it
/// are live: they end with it, and go on under the extension only once opened anew.
#[test]
fn sessions_under_a_continued_grant_are_warned_of_and_end_with_it() {
    let s = Setup::start_configured("full", "", true, "expiry_warning = \"10s\"\n");
    let grant = s.grant("20s");
    let gid = grant["id"].as_str().unwrap().to_owned();
    let term = s.interactive();
    term.wait_for("$ ", 1, Duration::from_secs(15));
    let more = ok(&s.alice, &["request", "extend", &gid, "--ttl", "2m"]);
    assert_eq!(more["state"], "active", "{more}");
    let warned = s.wait_event("notification.expiry_warned", Duration::from_secs(20));
    assert_eq!(warned["request_id"], gid.as_str(), "{warned}");
    assert_eq!(
        (
            &warned["details"]["continued"],
            &warned["details"]["proxy_sessions"]
        ),
        (&Value::from(true), &Value::from(1)),
        "{warned}"
    );
    let screen = term.wait_for("session ended", 1, Duration::from_secs(20));
    assert!(screen.contains("has expired"), "{screen}");
}

#[test]
fn grant_expiry_ends_an_open_session_and_watch_and_kill_work() {
    let s = Setup::start("full", "", true);
    s.grant("8s");
    let started = Instant::now();
    let term = s.interactive();
    term.wait_for("$ ", 1, Duration::from_secs(15));
    let list = ok(&s.admin, &["sessions", "list"]);
    let session = list["sessions"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list["sessions"][0]["user"], "alice");
    // alice sees her own session; bob sees none of hers.
    assert_eq!(
        ok(&s.alice, &["sessions", "list"])["sessions"][0]["id"],
        session.as_str()
    );
    let bob = s.env.login("bob");
    assert_eq!(
        ok(&bob, &["sessions", "list"])["sessions"],
        serde_json::json!([])
    );
    fails(&bob, &["sessions", "kill", &session], 3);
    // Whether a session of that id is live is nobody else's business either.
    fails(
        &bob,
        &["sessions", "kill", "00000000-0000-0000-0000-000000000000"],
        3,
    );
    // A malformed id is the caller's slip, told before anything is sent.
    let slip = fails(&bob, &["sessions", "kill", "notanid"], 2);
    assert!(slip.stderr.contains("not a session id"), "{slip:?}");

    // The administrator watches the live terminal.
    let watch_out = s.env.dir.path().join("watch.out");
    let mut watcher = std::process::Command::new(BIN)
        .args(["sessions", "watch", &session])
        .env("WARDEN_SERVER", s.admin.server_url())
        .env("WARDEN_HOME", s.admin.home())
        .stdout(std::fs::File::create(&watch_out).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    term.send_line("echo watched-$((6*7))");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&watch_out)
        .unwrap()
        .contains("watched-42")
    {
        assert!(Instant::now() < deadline, "the watcher saw no live output");
        std::thread::sleep(Duration::from_millis(50));
    }

    // At expiry the session ends, with a message to the user, and the watch stream closes.
    let screen = term.wait_for("session ended", 1, Duration::from_secs(15));
    assert!(screen.contains("has expired"), "{screen}");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(12), "ended after {elapsed:?}");
    let ended = s.wait_event("session.ended", Duration::from_secs(5));
    assert_eq!(ended["details"]["ended_by"], "warden");
    assert!(watcher.wait().unwrap().success());

    // Kill: a new grant, a long command, ended by the administrator.
    s.grant("30m");
    let port = s.port;
    let key = s.key.clone();
    let long =
        std::thread::spawn(move || ssh_run(port, "alice:web", &key, "sleep 60; echo finished"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let id = loop {
        let list = ok(&s.admin, &["sessions", "list"]);
        if let Some(id) = list["sessions"][0]["id"].as_str() {
            break id.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the exec session never showed up"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    ok(&s.admin, &["sessions", "kill", &id]);
    let out = long.join().unwrap();
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(!text(&out.stdout).contains("finished"));
    assert!(text(&out.stderr).contains("terminated by admin"), "{out:?}");
    let killed = s.events("session.killed").pop().unwrap();
    assert_eq!(killed["session_id"], id.as_str());
    assert_eq!(killed["actor"]["user"], "admin");
}

#[test]
fn audit_readers_replay_recordings_without_being_session_viewers() {
    let s = Setup::start_configured("full", "", true, "audit_readers = \"managers\"\n");
    s.grant("30m");
    let out = s.ssh("echo replay-me");
    assert!(out.status.success(), "{out:?}");
    let ended = s.wait_event("session.ended", Duration::from_secs(5));
    let session = ended["session_id"].as_str().unwrap();
    // mallory (managers) replays; bob, neither viewer nor reader, may not.
    let mallory = s.env.login("mallory");
    let played = mallory.run(&["replay", session, "--speed", "100"], None);
    assert!(played.stdout.contains("replay-me"), "{played:?}");
    fails(&s.env.login("bob"), &["replay", session], 3);
    let read = s.events("session.recording_read");
    assert_eq!(read.len(), 1, "{read:?}");
    assert_eq!(read[0]["actor"]["user"], "mallory");
}

#[test]
fn an_early_revoke_ends_the_session() {
    let s = Setup::start("metadata", "", true);
    let grant = s.grant("30m");
    let port = s.port;
    let key = s.key.clone();
    // A command without a terminal, which a closed connection alone would leave running.
    let after = std::env::temp_dir().join(format!("warden-after-revoke-{}", std::process::id()));
    let _ = std::fs::remove_file(&after);
    let command = format!("sleep 3; echo ran > {}", after.display());
    let long = std::thread::spawn(move || ssh_run(port, "alice:web", &key, &command));
    s.wait_event("session.started", Duration::from_secs(10));
    let revoked_at = Instant::now();
    ok(&s.alice, &["request", "revoke", &id(&grant)]);
    let out = long.join().unwrap();
    assert!(
        revoked_at.elapsed() < Duration::from_secs(3),
        "{:?}",
        revoked_at.elapsed()
    );
    assert!(
        text(&out.stderr).contains("your grant was revoked"),
        "{out:?}"
    );
    // What it ran at the target was stopped with it.
    std::thread::sleep(Duration::from_secs(4));
    assert!(!after.exists(), "the command ran on after the revoke");
    // Metadata tier: audited, nothing recorded.
    let ended = s.wait_event("session.ended", Duration::from_secs(5));
    assert!(ended["details"]["recording"].is_null(), "{ended}");
    assert!(!s.recording(ended["session_id"].as_str().unwrap()).exists());
}

/// A graceful shutdown ends live sessions as a kill would: the user is told, and the end and
/// the recording's digest are on record.
#[test]
fn a_shutdown_ends_live_sessions_on_the_record() {
    let mut s = Setup::start("full", "", true);
    s.grant("30m");
    let (port, key) = (s.port, s.key.clone());
    let long = std::thread::spawn(move || ssh_run(port, "alice:web", &key, "echo begun; sleep 60"));
    let started = s.wait_event("session.started", Duration::from_secs(10));
    assert!(s.env.server.terminate().success());
    let out = long.join().unwrap();
    assert!(
        text(&out.stderr).contains("Warden is shutting down"),
        "{out:?}"
    );
    s.env.server.restart();
    let ended = s.wait_event("session.ended", Duration::from_secs(5));
    assert_eq!(ended["session_id"], started["session_id"], "{ended}");
    let path = s.recording(ended["session_id"].as_str().unwrap());
    assert_eq!(ended["details"]["recording"]["sha256"], sha256_hex(&path));
}

/// A session a crash cut short gets its end on record at the next start, once, with the digest
/// of what its recording holds.
#[test]
fn a_session_a_crash_cut_short_is_closed_at_the_next_start() {
    let mut s = Setup::start("full", "", true);
    s.grant("30m");
    let (port, key) = (s.port, s.key.clone());
    let long = std::thread::spawn(move || ssh_run(port, "alice:web", &key, "echo begun; sleep 60"));
    let started = s.wait_event("session.started", Duration::from_secs(10));
    let session = started["session_id"].as_str().unwrap().to_owned();
    let path = s.recording(&session);
    // Until the output is in the recording (written at least once a second).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&path).is_ok_and(|r| r.contains("\"o\"")) {
        assert!(Instant::now() < deadline, "begun was never recorded");
        std::thread::sleep(Duration::from_millis(100));
    }
    s.env.server.kill_hard();
    long.join().unwrap();
    // What a crash amid output leaves: the last line cut in half, and (should the host go
    // down too) zeros where a block never reached the disk.
    let torn = b"[1.250000, \"o\", \"half a li";
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(torn).unwrap();
        file.write_all(&[0; 3000]).unwrap();
    }
    s.env.server.restart();
    let ended = s.wait_event("session.ended", Duration::from_secs(5));
    assert_eq!(ended["session_id"], session.as_str(), "{ended}");
    assert_eq!(ended["details"]["ended_by"], "warden", "{ended}");
    assert_eq!(ended["details"]["recording"]["sha256"], sha256_hex(&path));
    // Cut back to its last whole line, durably, and the event says by how much.
    let dropped = (torn.len() + 3000) as u64;
    assert_eq!(
        ended["details"]["recording"]["dropped_bytes"], dropped,
        "{ended}"
    );
    assert!(!ended.to_string().contains("half a li"), "{ended}");
    let kept = std::fs::read(&path).unwrap();
    assert_eq!(
        ended["details"]["recording"]["bytes"],
        kept.len() as u64,
        "{ended}"
    );
    assert_every_line_is_json(&kept);
    assert!(String::from_utf8_lossy(&kept).contains("begun"));
    // `warden replay` certifies and gives the closed recording whole.
    let saved = s.env.dir.path().join("cut.cast");
    let out = s.admin.run(
        &["replay", &session, "--out", saved.to_str().unwrap()],
        None,
    );
    assert!(out.success(), "{out:?}");
    assert_eq!(std::fs::read(&saved).unwrap(), kept);
    let printed = s.admin.run(&["--json", "replay", &session], None);
    assert!(printed.success(), "{printed:?}");
    assert_every_line_is_json(printed.stdout.as_bytes());
    let played = asciinema_cat(&path);
    assert!(
        played.contains("begun"),
        "{played:?} {:?}",
        std::fs::read_to_string(&path)
    );
    assert!(s.env.server.terminate().success());
    s.env.server.restart();
    assert_eq!(s.events("session.ended").len(), 1);
}

/// Every line of `recording` is whole and parses as JSON, as asciicast players read it.
fn assert_every_line_is_json(recording: &[u8]) {
    assert!(!recording.is_empty());
    for (n, line) in recording.split_inclusive(|&b| b == b'\n').enumerate() {
        assert!(line.ends_with(b"\n"), "line {n} is not whole");
        if let Err(e) = serde_json::from_slice::<Value>(line) {
            panic!("line {n} of the recording is not JSON: {e}");
        }
    }
}

/// A crash amid heavy output cuts the recording's last line in half (whole blocks reach the
/// disk as they fill, the rest once a second): the next start cuts the recording back to its
/// last whole line before it certifies it, so that players read every line of it.
#[test]
fn a_recording_a_crash_cut_mid_line_is_closed_at_its_last_whole_line() {
    let mut s = Setup::start("full", "", true);
    s.grant("30m");
    let mut ssh = std::process::Command::new("timeout");
    ssh.args(["30", "ssh"])
        .args(ssh_base_args(s.port, &s.key))
        .arg("alice:web@127.0.0.1")
        .arg("timeout 20 sh -c 'while true; do seq 1 30000; done'")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut bulk = KilledOnDrop(ssh.spawn().unwrap());
    let started = s.wait_event("session.started", Duration::from_secs(10));
    let session = started["session_id"].as_str().unwrap().to_owned();
    let path = s.recording(&session);
    // Until several megabytes of output are in the recording.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&path).map_or(0, |m| m.len()) < 4 << 20 {
        assert!(Instant::now() < deadline, "the output was never recorded");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.env.server.kill_hard();
    let _ = bulk.0.wait();
    let left = std::fs::metadata(&path).unwrap().len();
    s.env.server.restart();
    let ended = s.wait_event("session.ended", Duration::from_secs(10));
    assert_eq!(ended["session_id"], session.as_str(), "{ended}");
    let recorded = &ended["details"]["recording"];
    let kept = std::fs::read(&path).unwrap();
    assert_eq!(recorded["sha256"], sha256_hex(&path), "{ended}");
    assert_eq!(recorded["bytes"], kept.len() as u64, "{ended}");
    assert_eq!(
        recorded["dropped_bytes"],
        left - kept.len() as u64,
        "{ended}"
    );
    assert_every_line_is_json(&kept);
    let saved = s.env.dir.path().join("bulk.cast");
    let out = s.admin.run(
        &["replay", &session, "--out", saved.to_str().unwrap()],
        None,
    );
    assert!(out.success(), "{out:?}");
    assert_every_line_is_json(&std::fs::read(&saved).unwrap());
}

/// A TCP relay to loopback port `to` that holds each connection for `delay` before
/// forwarding it, and tells `arrived` when one comes in.
fn slow_relay(to: u16, delay: Duration) -> (u16, std::sync::mpsc::Receiver<()>) {
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (arrived, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for down in listener.incoming().map_while(Result::ok) {
            let _ = arrived.send(());
            std::thread::sleep(delay);
            let Ok(up) = TcpStream::connect(("127.0.0.1", to)) else {
                return;
            };
            for (from, to) in [
                (down.try_clone().unwrap(), up.try_clone().unwrap()),
                (up, down),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut &from, &mut &to);
                    let _ = to.shutdown(Shutdown::Write);
                });
            }
        }
    });
    (port, rx)
}

#[test]
fn a_revoke_while_a_session_is_being_set_up_still_ends_it() {
    let s = Setup::start("metadata", "", true);
    // The proxy's way to the target takes two seconds, after the grant was checked.
    let (relay, arrived) = slow_relay(s.sshd.port(), Duration::from_secs(2));
    s.reach(relay, s.sshd.host_public_key(), "");
    let grant = s.grant("30m");
    let (port, key) = (s.port, s.key.clone());
    let session = std::thread::spawn(move || ssh_run(port, "alice:web", &key, "sleep 20"));
    arrived.recv_timeout(Duration::from_secs(10)).unwrap();
    ok(&s.alice, &["request", "revoke", &id(&grant)]);
    let revoked_at = Instant::now();
    // The revocation's sweep found no session yet; the session, once registered, finds the
    // grant ended.
    let out = session.join().unwrap();
    assert!(
        revoked_at.elapsed() < Duration::from_secs(10),
        "the session outlived its grant by {:?}",
        revoked_at.elapsed()
    );
    assert!(text(&out.stderr).contains("has ended"), "{out:?}");
    let ended = s.wait_event("session.ended", Duration::from_secs(5));
    assert_eq!(ended["request_id"], id(&grant).as_str(), "{ended}");
}

#[test]
fn an_unwritable_recording_store_refuses_recorded_sessions() {
    let s = Setup::start("full", "", true);
    s.grant("30m");
    // Tests run as root, which ignores permission bits: a file where the directory should be
    // makes the store unwritable for anyone.
    let dir = s.env.server.data_dir().join("recordings");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::write(&dir, "").unwrap();
    let out = s.ssh("echo must-not-run > /tmp/warden-unrecorded");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("recording store cannot be written"),
        "{out:?}"
    );
    assert!(!text(&out.stdout).contains("must-not-run"));
    let failed = s.wait_event("session.recording_failed", Duration::from_secs(5));
    assert_eq!(failed["outcome"]["result"], "failed");
    // Where the operator looks, with the path to fix.
    let path = dir.display().to_string();
    assert!(failed.to_string().contains(&path), "{failed}");
    let logged = s.env.server.stderr();
    assert!(
        logged
            .lines()
            .any(|l| l.contains("its recording cannot be written") && l.contains(&path)),
        "{logged}"
    );
    assert!(
        s.events("session.started").is_empty(),
        "the session must not start"
    );
}

#[test]
fn scp_and_sftp_transfers_are_audited_and_can_be_denied() {
    let s = Setup::start("full", "", true);
    s.grant("30m");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("upload.bin");
    std::fs::write(&local, vec![7u8; 100_000]).unwrap();
    let remote = format!("/tmp/warden-scp-{}", std::process::id());
    let scp = |args: &[String]| {
        let mut cmd = std::process::Command::new("timeout");
        cmd.arg("30").arg("scp");
        let base = ssh_base_args(s.port, &s.key);
        // scp takes -P for the port.
        for a in &base {
            cmd.arg(if a == "-p" { "-P" } else { a.as_str() });
        }
        // A user name with a colon would be read as host:path, so it goes in an option.
        cmd.args(["-o", "User=alice:web"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = scp(&[local.display().to_string(), format!("127.0.0.1:{remote}")]);
    assert!(out.status.success(), "{out:?}");
    let back = dir.path().join("back.bin");
    let batch = dir.path().join("batch");
    // What changes files without moving their bytes is on record too: OpenSSH's client
    // renames with its `posix-rename` extension.
    std::fs::write(
        &batch,
        format!(
            "get {remote} {}\nmkdir {remote}.d\nrename {remote} {remote}.d/moved\nchmod 4755 {remote}.d/moved\nrm {remote}.d/moved\nrmdir {remote}.d\n",
            back.display()
        ),
    )
    .unwrap();
    let out = s.sftp(&batch, &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read(&back).unwrap().len(), 100_000);

    let deadline = Instant::now() + Duration::from_secs(5);
    let ops = loop {
        let ops: Vec<Value> = s
            .events("session.file_transfer")
            .into_iter()
            .map(|e| e["details"].clone())
            .collect();
        if ops.len() >= 7 || Instant::now() > deadline {
            break ops;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let expect = |op: Value| assert!(ops.contains(&op), "{op} not in {ops:?}");
    expect(
        serde_json::json!({"op": "transfer", "path": remote, "direction": "upload", "bytes": 100_000}),
    );
    expect(
        serde_json::json!({"op": "transfer", "path": remote, "direction": "download", "bytes": 100_000}),
    );
    let moved = format!("{remote}.d/moved");
    expect(serde_json::json!({"op": "mkdir", "path": format!("{remote}.d")}));
    expect(serde_json::json!({"op": "rename", "from": remote, "to": moved}));
    expect(serde_json::json!({"op": "setstat", "path": moved, "mode": "4755"}));
    expect(serde_json::json!({"op": "remove", "path": moved}));
    expect(serde_json::json!({"op": "rmdir", "path": format!("{remote}.d")}));

    // A role without file transfer: scp is refused before it reaches the target.
    s.repin(s.sshd.host_public_key(), "file_transfer = false");
    let out = scp(&[
        local.display().to_string(),
        format!("127.0.0.1:{remote}-denied"),
    ]);
    assert!(!out.status.success(), "{out:?}");
    let blocked = s.wait_event("session.command_blocked", Duration::from_secs(5));
    assert_eq!(blocked["outcome"]["code"], "file_transfer_denied");
    // However the transfer program is wrapped or quoted.
    let out = s.ssh("env rsync --server -e.LsfxCIvu . /tmp/warden-never");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("file transfer is not allowed"),
        "{out:?}"
    );
    let rsync_ssh = format!(
        "ssh {} -l alice:web",
        ssh_base_args(s.port, &s.key).join(" ")
    );
    let out = std::process::Command::new("timeout")
        .args(["30", "rsync", "-e", &rsync_ssh, "--rsync-path=r''sync"])
        .arg(&local)
        .arg(format!("127.0.0.1:{remote}-denied"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(
        text(&out.stderr).contains("file transfer is not allowed"),
        "{out:?}"
    );
    let get = dir.path().join("get");
    std::fs::write(&get, "get /etc/hostname\n").unwrap();
    let out = s.sftp(&get, &["-s", "/usr/lib/openssh/sftp-serv''er"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        text(&out.stderr).contains("file transfer is not allowed"),
        "{out:?}"
    );
    // A command whose quoting does not close cannot be told apart: refused too.
    let out = s.ssh("echo 'r''sync");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("cannot read this command"),
        "{out:?}"
    );
    let blocked = s.wait_event("session.command_blocked", Duration::from_secs(5));
    assert_eq!(blocked["outcome"]["code"], "command_unreadable");
    assert!(!Path::new(&format!("{remote}-denied")).exists());
}

/// `sftp -s PATH` runs the SFTP server as a command: its files are on record one by one, as
/// the subsystem's are.
#[test]
fn sftp_run_as_a_command_is_audited_file_by_file() {
    let s = Setup::start("full", "", true);
    s.grant("30m");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("upload.bin");
    std::fs::write(&local, vec![7u8; 50_000]).unwrap();
    let remote = format!("/tmp/warden-sftp-exec-{}", std::process::id());
    let batch = dir.path().join("batch");
    std::fs::write(
        &batch,
        format!("put {} {remote}\nrm {remote}\n", local.display()),
    )
    .unwrap();
    let out = s.sftp(&batch, &["-s", "exec /usr/lib/openssh/sftp-server"]);
    assert!(out.status.success(), "{out:?}");
    let ended = s.wait_event("session.ended", Duration::from_secs(10));
    let ops: Vec<Value> = s
        .events("session.file_transfer")
        .into_iter()
        .filter(|e| e["session_id"] == ended["session_id"])
        .map(|e| e["details"].clone())
        .collect();
    assert_eq!(
        ops,
        [
            serde_json::json!({"op": "transfer", "path": remote, "direction": "upload", "bytes": 50_000}),
            serde_json::json!({"op": "remove", "path": remote}),
        ],
        "{ops:?}"
    );
    let exec = s.events("session.exec").pop().unwrap();
    assert_eq!(
        exec["details"]["command"],
        "exec /usr/lib/openssh/sftp-server"
    );
}

/// An SFTP packet of `kind` holding `fields`, as a client sends it.
fn sftp_packet(kind: u8, fields: &[&[u8]]) -> Vec<u8> {
    let body = [&[kind][..], &fields.concat()].concat();
    [&(body.len() as u32).to_be_bytes()[..], &body].concat()
}

/// An SFTP string: its length, then its bytes.
fn sftp_string(text: &str) -> Vec<u8> {
    [&(text.len() as u32).to_be_bytes()[..], text.as_bytes()].concat()
}

/// A client that opens a file and, before the reply, another under the same request id would
/// have the first file read under the second's name: the session ends there, on the record,
/// and nothing of it reaches the target.
#[test]
fn an_sftp_request_id_used_again_before_its_reply_ends_the_session() {
    let s = Setup::start("metadata", "", true);
    s.grant("30m");
    let dir = tempfile::tempdir().unwrap();
    let open = |path: &str| {
        let id = 5u32.to_be_bytes();
        let read = 1u32.to_be_bytes();
        let no_attributes = 0u32.to_be_bytes();
        sftp_packet(3, &[&id, &sftp_string(path), &read, &no_attributes])
    };
    let requests = dir.path().join("requests");
    let init = sftp_packet(1, &[&3u32.to_be_bytes()]);
    std::fs::write(
        &requests,
        [init, open("/etc/hostname"), open("/tmp/harmless.txt")].concat(),
    )
    .unwrap();
    let out = std::process::Command::new("timeout")
        .args(["-s", "KILL", "30", "ssh"])
        .args(ssh_base_args(s.port, &s.key))
        .args(["-s", "alice:web@127.0.0.1", "sftp"])
        .stdin(std::fs::File::open(&requests).unwrap())
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("request id 5 was used again"),
        "{out:?}"
    );
    let ended = s.wait_event("session.ended", Duration::from_secs(10));
    assert_eq!(ended["details"]["ended_by"], "warden", "{ended}");
    assert!(
        ended["details"]["reason"].as_str().unwrap().contains(
            "SFTP request id 5 was used again while a request with that id awaited its reply"
        ),
        "{ended}"
    );
    assert!(s.events("session.file_transfer").is_empty());
}

/// A Unix socket on the target forwarded back to the client (`ssh -R /path:host:port`) is
/// refused and on record, as a port forwarded back is.
#[test]
fn remote_socket_forwarding_is_refused_and_audited() {
    let s = Setup::start("metadata", "", true);
    s.grant("30m");
    let out = std::process::Command::new("timeout")
        .arg("30")
        .arg("ssh")
        .args(ssh_base_args(s.port, &s.key))
        .args(["-o", "ExitOnForwardFailure=yes", "-N", "-R"])
        .arg(format!(
            "/tmp/warden-forwarded.sock:127.0.0.1:{}",
            s.sshd.port()
        ))
        .arg("alice:web@127.0.0.1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let refused = s
        .wait_events("session.refused", 1, Duration::from_secs(5))
        .pop()
        .unwrap();
    assert_eq!(
        refused["outcome"]["code"], "forwarding_refused",
        "{refused}"
    );
    assert_eq!(
        refused["details"]["kind"], "remote socket forwarding",
        "{refused}"
    );
    assert_eq!(
        refused["details"]["to"], "/tmp/warden-forwarded.sock",
        "{refused}"
    );
    assert_eq!(refused["actor"]["user"], "alice", "{refused}");
    assert_eq!(refused["target"], "web", "{refused}");
}

/// The proxy relays sessions only: a port forwarded either way, the client's agent or its X11
/// display is refused, and each refusal is on record with what was asked for. A terminal the
/// role does not give is refused as clearly.
#[test]
fn forwarding_and_a_terminal_the_role_lacks_are_refused_and_audited() {
    let s = Setup::start("metadata", "", true);
    s.grant("30m");
    let forward = |args: &[String]| {
        let mut cmd = std::process::Command::new("timeout");
        cmd.arg("30")
            .arg("ssh")
            .args(ssh_base_args(s.port, &s.key))
            .args(["-o", "ExitOnForwardFailure=yes"])
            .args(args)
            .arg("alice:web@127.0.0.1");
        cmd.output().unwrap()
    };
    let to = format!("127.0.0.1:{}", s.sshd.port());
    let out = forward(&["-W".to_owned(), to.clone()]);
    assert!(!out.status.success(), "{out:?}");
    let out = forward(&["-R".to_owned(), format!("0:{to}"), "-N".to_owned()]);
    assert!(!out.status.success(), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let refused = loop {
        let refused: Vec<Value> = s
            .events("session.refused")
            .into_iter()
            .filter(|e| e["outcome"]["code"] == "forwarding_refused")
            .collect();
        if refused.len() >= 2 || Instant::now() > deadline {
            break refused;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let kinds: Vec<&str> = refused
        .iter()
        .map(|e| e["details"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["port forwarding", "remote port forwarding"],
        "{refused:?}"
    );
    assert_eq!(refused[0]["details"]["to"], to.as_str());
    assert_eq!(refused[0]["actor"]["user"], "alice");
    assert_eq!(refused[0]["target"], "web");
    // X11 forwarding likewise (with a display for the client to forward).
    let mut x11 = std::process::Command::new("timeout");
    x11.arg("30")
        .arg("ssh")
        .args(ssh_base_args(s.port, &s.key))
        .arg("-Y")
        .arg("alice:web@127.0.0.1")
        .arg("echo x11-ok")
        .env("DISPLAY", "127.0.0.1:0");
    let out = x11.output().unwrap();
    assert_eq!(text(&out.stdout).trim(), "x11-ok", "{out:?}");
    let x11 = s.wait_event("session.refused", Duration::from_secs(5));
    assert_eq!(x11["outcome"]["code"], "forwarding_refused", "{x11}");
    assert_eq!(x11["details"]["kind"], "X11 forwarding", "{x11}");
    assert_eq!(x11["actor"]["user"], "alice", "{x11}");

    // A role without a terminal: a session asking for one is refused, saying why; commands
    // without one run.
    s.repin(s.sshd.host_public_key(), "extensions = []");
    let mut cmd = std::process::Command::new("timeout");
    cmd.arg("30")
        .arg("ssh")
        .args(ssh_base_args(s.port, &s.key))
        .arg("-tt")
        .arg("alice:web@127.0.0.1")
        .arg("true");
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains("gives no terminal"), "{out:?}");
    let out = s.ssh("echo no-terminal-ok");
    assert_eq!(text(&out.stdout).trim(), "no-terminal-ok", "{out:?}");
}

#[test]
fn host_keys_are_pinned_only_after_confirmation() {
    let s = Setup::start("full", "", false);
    // How the target is reached is no business of a user without a grant for it. With one, a
    // target the proxy cannot reach yet signs no one in either, saying what is missing.
    let out = ssh_as_a_person(s.port, &s.key, None, "alice:web");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("no active grant for web"), "{err}");
    assert!(!err.contains("host key"), "{err}");
    s.grant("30m");
    let out = ssh_as_a_person(s.port, &s.key, None, "alice:web");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        text(&out.stderr).contains("warden target pin-host-key web"),
        "{out:?}"
    );
    let refused = s.events("auth.login_failed").pop().unwrap();
    assert_eq!(refused["outcome"]["code"], "host_key_not_pinned");

    let fp = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(s.sshd.dir().join("ssh_host_ed25519_key.pub"))
        .output()
        .unwrap();
    let fingerprint = text(&fp.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    // Not a fingerprint at all: a usage error. Another key's: refused, nothing pinned.
    let pin = |fingerprint: &str, code: i32| {
        fails(
            &s.admin,
            &[
                "target",
                "pin-host-key",
                "web",
                "--fingerprint",
                fingerprint,
            ],
            code,
        );
    };
    pin("SHA256:wrong", 2);
    pin(&format!("SHA256:{}", "A".repeat(43)), 3);
    // Without a terminal, nothing confirms the key by eye: a piped "y" pins nothing.
    let piped = s.admin.run(&["target", "pin-host-key", "web"], Some("y\n"));
    assert_eq!(piped.code, 2, "{piped:?}");
    assert!(piped.stderr.contains("no terminal"), "{piped:?}");
    fails(
        &s.alice,
        &[
            "target",
            "pin-host-key",
            "web",
            "--fingerprint",
            &fingerprint,
        ],
        3,
    );
    let v = ok(
        &s.admin,
        &[
            "target",
            "pin-host-key",
            "web",
            "--fingerprint",
            &fingerprint,
        ],
    );
    assert_eq!(v["fingerprint"], fingerprint.as_str());
    assert_eq!(s.events("target.host_key_pinned").len(), 1);
    let out = s.ssh("echo pinned-ok");
    assert_eq!(text(&out.stdout).trim(), "pinned-ok", "{out:?}");

    // A host presenting another key is refused.
    s.repin(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIsSiZgSWy4fFHwmSHb8tTcN8kYa/0yJ0bvbXoQ8cmiN",
        "",
    );
    let out = s.ssh("echo hi");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = text(&out.stderr);
    assert!(
        said.contains("other than the one pinned") && said.contains(&fingerprint),
        "the refusal names the key presented: {out:?}"
    );
    // A key pinned here would never be checked while the policy names one.
    let out = fails(
        &s.admin,
        &[
            "target",
            "pin-host-key",
            "web",
            "--fingerprint",
            &fingerprint,
        ],
        6,
    );
    assert!(out.stderr.contains("connection.host_key"), "{out:?}");
    // Refused after its recording was created, that session left no recording behind: the
    // one recording is the session that ran.
    let recordings = std::fs::read_dir(s.env.server.data_dir().join("recordings"))
        .unwrap()
        .count();
    assert_eq!(recordings, 1);

    // A target of another kind has no host key, and the refusal says which kind it is; a
    // target the policy does not define is not found.
    let postgres = "[targets.db]\nkind = \"postgres\"\nenvironment = \"test\"\n[targets.db.connection]\nhost = \"127.0.0.1\"\nport = 5432\ndatabase = \"app\"\n[targets.db.roles.read]\ngrants = [\"GRANT SELECT ON items TO {{name}}\"]\n";
    let web = targets("host = \"127.0.0.1\"\nport = 1", &role_settings(""));
    write_policy(
        &s.env.policy_dir(),
        &[("targets.toml", &format!("{web}\n{postgres}"))],
    );
    ok(&s.admin, &["policy", "reload"]);
    let pin_on = |target: &str, code: i32| {
        let args = [
            "target",
            "pin-host-key",
            target,
            "--fingerprint",
            &fingerprint,
        ];
        fails(&s.admin, &args, code).stderr
    };
    let said = pin_on("db", 2);
    assert!(said.contains("db is a postgres target"), "{said}");
    let said = pin_on("nowhere", 4);
    assert!(
        said.contains("unknown target nowhere: targets.toml in the policy directory defines them"),
        "{said}"
    );
}

/// `bytes` random bytes in a new file at `path`.
fn random_file(path: &Path, bytes: usize) {
    let out = std::process::Command::new("head")
        .arg("-c")
        .arg(bytes.to_string())
        .arg("/dev/urandom")
        .stdout(std::fs::File::create(path).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Bulk data going both ways at once (`cat` at the target echoing 20 MB back) never stalls the
/// relay, whether the session is recorded or not: each direction waits for its own peer only.
#[test]
fn bulk_data_both_ways_is_relayed_whole() {
    let s = Setup::start("metadata", "", true);
    s.grant("30m");
    let dir = tempfile::tempdir().unwrap();
    let sent = dir.path().join("sent");
    random_file(&sent, 20_000_000);
    let back = dir.path().join("back");
    for run in 0..5 {
        if run == 3 {
            // The last runs recorded: a longer grant of a recorded role is the one they use.
            write_policy(&s.env.policy_dir(), &[("access.cedar", &rules("full"))]);
            ok(&s.admin, &["policy", "reload"]);
            s.grant("50m");
        }
        let out = s.ssh_files("cat", &sent, &back, 60);
        assert_eq!(out.status.code(), Some(0), "run {run}: {out:?}");
        assert_eq!(
            sha256_hex(&back),
            sha256_hex(&sent),
            "run {run}: {} of 20000000 bytes came back",
            std::fs::metadata(&back).unwrap().len()
        );
    }
    // The client may be gone before its session's end is on record.
    let ended = s.wait_events("session.ended", 5, Duration::from_secs(10));
    assert_eq!(ended.len(), 5, "{ended:?}");
    for (run, e) in ended.iter().enumerate() {
        assert_eq!(e["details"]["ended_by"], "target", "run {run}: {e}");
        assert_eq!(e["details"]["exit_status"], 0, "run {run}: {e}");
        assert_eq!(
            e["details"]["recording"].is_null(),
            run < 3,
            "run {run}: {e}"
        );
    }
}

/// A child process killed when the test is done with it, whatever happened.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A client killed in the middle of a transfer both ways ends its session: the proxy reads on
/// what the client sent whatever the target does, so it sees the client go, stops the command
/// at the target, and audits the end as the client's.
#[test]
fn a_client_killed_mid_transfer_ends_its_session() {
    let s = Setup::start("metadata", "", true);
    s.grant("30m");
    let marker = std::env::temp_dir().join(format!("warden-killed-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    // `ssh` itself, not under `timeout`, so that killing it kills the client.
    let mut client = KilledOnDrop(
        std::process::Command::new("ssh")
            .args(ssh_base_args(s.port, &s.key))
            .arg("alice:web@127.0.0.1")
            .arg(format!("cat; echo ran-on > {}", marker.display()))
            .stdin(std::fs::File::open("/dev/zero").unwrap())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = s.wait_event("session.started", Duration::from_secs(10));
    // Data flows both ways for a while before the client goes.
    std::thread::sleep(Duration::from_secs(2));
    client.0.kill().unwrap();
    client.0.wait().unwrap();
    let ended = s.wait_event("session.ended", Duration::from_secs(15));
    assert_eq!(ended["session_id"], started["session_id"], "{ended}");
    assert_eq!(ended["details"]["ended_by"], "client", "{ended}");
    assert_eq!(
        ok(&s.admin, &["sessions", "list"])["sessions"],
        serde_json::json!([])
    );
    // What it ran at the target was stopped, not let finish once its input closed.
    std::thread::sleep(Duration::from_secs(2));
    assert!(!marker.exists(), "the command ran on after its client went");
}

/// A session whose target takes none of its input slows down its own channel only: another
/// session multiplexed over the same client connection sends its input at full speed.
#[test]
fn a_stalled_session_does_not_slow_its_neighbours() {
    let s = Setup::start("metadata", "", true);
    s.grant("30m");
    let dir = tempfile::tempdir().unwrap();
    let (master, control) = s.control_master(dir.path());
    let muxed = |command: &str, input: &Path, limit: &str| {
        let mut ssh = std::process::Command::new("timeout");
        ssh.args(["-s", "KILL", limit, "ssh"])
            .args(ssh_base_args(s.port, &s.key))
            .args(["-o", "ControlMaster=no", "-o", &control])
            .arg("alice:web@127.0.0.1")
            .arg(command)
            .stdin(std::fs::File::open(input).unwrap())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        ssh
    };
    let (big, small) = (dir.path().join("big"), dir.path().join("small"));
    random_file(&big, 50_000_000);
    random_file(&small, 5_000_000);
    let stalled = muxed("sleep 12; echo slept", &big, "60").spawn().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let counted = muxed("wc -c", &small, "20").output().unwrap();
    assert_eq!(counted.status.code(), Some(0), "{counted:?}");
    assert_eq!(text(&counted.stdout).trim(), "5000000", "{counted:?}");
    let slept = stalled.wait_with_output().unwrap();
    assert_eq!(text(&slept.stdout), "slept\n", "{slept:?}");
    drop(master);
}

/// Sessions multiplexed over one client connection (ControlMaster, as Ansible uses) each get
/// their command's exit status, one after another and side by side: the client closes a
/// channel as soon as both ends of file are through, so the target's end of file reaches it
/// after the exit status, and the end is audited as the target's.
#[test]
fn multiplexed_sessions_get_their_exit_status() {
    let s = Setup::start("metadata", "record_input = true", true);
    s.grant("30m");
    let dir = tempfile::tempdir().unwrap();
    let (master, control) = s.control_master(dir.path());
    let (port, key) = (s.port, s.key.clone());
    let muxed = move || {
        std::process::Command::new("timeout")
            .args(["-s", "KILL", "30", "ssh"])
            .args(ssh_base_args(port, &key))
            .args(["-o", "ControlMaster=no", "-o", &control])
            .arg("alice:web@127.0.0.1")
            .arg("echo s; exit 7")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let check = |out: Output| {
        assert_eq!(out.status.code(), Some(7), "{out:?}");
        assert_eq!(text(&out.stdout), "s\n", "{out:?}");
    };
    for _ in 0..10 {
        check(muxed());
    }
    let side_by_side: Vec<_> = (0..4).map(|_| std::thread::spawn(muxed.clone())).collect();
    for run in side_by_side {
        check(run.join().unwrap());
    }
    drop(master);
    let deadline = Instant::now() + Duration::from_secs(10);
    let ended = loop {
        let ended = s.events("session.ended");
        if ended.len() >= 14 || Instant::now() > deadline {
            break ended;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(ended.len(), 14, "{ended:?}");
    for e in &ended {
        assert_eq!(e["details"]["ended_by"], "target", "{e}");
        assert_eq!(e["details"]["exit_status"], 7, "{e}");
    }
    // The role asks for keystrokes to be recorded, which its metadata sessions never are: the
    // start of each says so.
    let started = s.events("session.started").pop().unwrap();
    assert!(
        started["details"]["record_input"]
            .as_str()
            .unwrap()
            .starts_with("ignored: "),
        "{started}"
    );
}

/// A sign-in refused to a certificate Warden issued is audited: the certificate of a revoked
/// grant, and a live one presented as another user, each with what was claimed, the grant
/// the certificate names and why, and nothing of the key.
#[test]
fn refused_certificate_sign_ins_are_audited() {
    let s = Setup::start("metadata", "", true);
    let grant = s.grant("30m");
    let id = id(&grant);
    let with_certificate = |login: &str| ssh_with_certificate(s.port, &grant, login, "id");
    let refusals = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let failed: Vec<Value> = s
                .events("auth.login_failed")
                .into_iter()
                .filter(|e| e["details"]["via"] == "ssh")
                .collect();
            if failed.len() >= n || Instant::now() > deadline {
                return failed;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    let out = with_certificate("bob:web");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let failed = refusals(1);
    assert_eq!(failed.len(), 1, "{failed:?}");
    let e = &failed[0];
    assert_eq!(e["outcome"]["code"], "certificate_of_another_user", "{e}");
    assert_eq!(e["actor"]["claimed"], "bob", "{e}");
    assert_eq!(e["actor"]["source"], "127.0.0.1", "{e}");
    assert_eq!(e["details"]["claimed_user"], "bob", "{e}");
    assert_eq!(e["details"]["target"], "web", "{e}");
    assert_eq!(e["details"]["grant"], id.as_str(), "{e}");
    assert_eq!(e["request_id"], id.as_str(), "{e}");
    // Found by the target it was aimed at, as every refusal is.
    assert_eq!(e["target"], "web", "{e}");

    // A name shaped like one that no user has is kept by its length alone, as a sign-in
    // through the API keeps it: it may be a password typed where the name goes.
    let out = with_certificate("sshtypedsecret-88:web");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let failed = refusals(2);
    assert_eq!(failed.len(), 2, "{failed:?}");
    let e = &failed[1];
    assert!(!e.to_string().contains("sshtypedsecret"), "{e}");
    assert_eq!(e["outcome"]["code"], "certificate_of_another_user", "{e}");
    assert_eq!(
        e["actor"]["claimed"], "(no such user, 17 characters)",
        "{e}"
    );
    assert_eq!(
        e["details"]["claimed_user"], "(no such user, 17 characters)",
        "{e}"
    );
    assert!(
        e["outcome"]["reason"]
            .as_str()
            .unwrap()
            .ends_with("not (no such user, 17 characters): sign in as alice:TARGET"),
        "{e}"
    );
    assert_eq!(e["details"]["target"], "web", "{e}");

    ok(&s.alice, &["request", "revoke", &id]);
    let out = with_certificate("alice:web");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let failed = refusals(3);
    assert_eq!(failed.len(), 3, "{failed:?}");
    let e = &failed[2];
    assert_eq!(e["outcome"]["code"], "grant_revoked", "{e}");
    assert!(
        e["outcome"]["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("grant {id} is revoked")),
        "{e}"
    );
    assert_eq!(e["details"]["claimed_user"], "alice", "{e}");
    assert_eq!(e["details"]["grant"], id.as_str(), "{e}");
    // A password typed where the user name or the target goes is kept by its length alone.
    for (user, n) in [("S3cretPassw0rd:web", 4), ("alice:S3cretPassw0rd", 5)] {
        let out = with_certificate(user);
        assert_eq!(out.status.code(), Some(255), "{out:?}");
        let failed = refusals(n);
        assert_eq!(failed.len(), n, "{failed:?}");
        let e = failed[n - 1].to_string();
        assert!(!e.contains("S3cret"), "{e}");
        assert!(e.contains("characters)"), "{e}");
    }
    // A target's name no target has is kept by its length alone too: a lower-case passphrase
    // is shaped like a name as well as any.
    let out = with_certificate("bob:hunter2passphrase");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let failed = refusals(6);
    let e = &failed[5];
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert_eq!(e["actor"]["claimed"], "bob", "{e}");
    assert_eq!(
        e["details"]["target"], "(no such target, 17 characters)",
        "{e}"
    );
    assert!(e["target"].is_null(), "{e}");
    let failed = refusals(6);
    let certificate = std::fs::read_to_string(grant["certificate_file"].as_str().unwrap()).unwrap();
    let blob = certificate.split_whitespace().nth(1).unwrap();
    for e in &failed {
        assert!(!e.to_string().contains(&blob[..40]), "{e}");
    }
}

/// `warden ssh --request ID` signs in with that grant's certificate, or not at all: a key
/// signing in without it would run under whichever grant the proxy picks (the one that lasts
/// longest), whatever the grant named allows or records.
#[test]
fn a_named_grant_signs_in_with_its_own_certificate_or_not_at_all() {
    let s = Setup::start("metadata", "", true);
    let named = s.grant("20m");
    let longer = s.grant("50m");
    let id = id(&named);
    let key = s.key.to_str().unwrap();
    let ran_under = |args: &[&str]| {
        let before = s.events("session.started").len();
        let out = s.alice.run(args, None);
        assert_eq!(out.stdout.trim(), "ran", "{out:?}");
        let started = s.wait_events("session.started", before + 1, Duration::from_secs(5));
        started.last().unwrap()["request_id"].clone()
    };

    // A registered key is not the grant's: refused, saying why and what to do, before ssh runs.
    let with_key = [
        "ssh",
        "web",
        "--request",
        &id,
        "-i",
        key,
        "--",
        "echo",
        "ran",
    ];
    let out = fails(&s.alice, &with_key, 2);
    assert!(
        out.stderr.contains(&format!(
            "-i {key} does not hold the certificate of grant {id}, which certifies the key SHA256:"
        )) && out.stderr.contains("leave out -i"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("ran"), "{out:?}");
    // Without -i, the key saved for the grant signs in under it, the longer grant aside.
    let under = ran_under(&["ssh", "web", "--request", &id, "--", "echo", "ran"]);
    assert_eq!(under, id.as_str());
    // The key alone, without --request, still signs in under the grant the proxy picks.
    let under = ran_under(&["ssh", "web", "-i", key, "--", "echo", "ran"]);
    assert_eq!(under, longer["id"]);

    // A certificate not saved on this client (the grant was asked for from another one) is
    // saved from the server's answer, and signs in under its grant.
    let certificate = named["certificate_file"].as_str().unwrap();
    let saved = std::fs::read_to_string(certificate).unwrap();
    std::fs::remove_file(certificate).unwrap();
    let under = ran_under(&["ssh", "web", "--request", &id, "--", "echo", "ran"]);
    assert_eq!(under, id.as_str());
    assert_eq!(std::fs::read_to_string(certificate).unwrap(), saved);

    // The grant's key not on this client either: -i must name it, not be left out.
    let own = named["private_key_file"].as_str().unwrap();
    let aside = s.key.with_file_name("moved-away");
    std::fs::rename(own, &aside).unwrap();
    let out = fails(&s.alice, &with_key, 2);
    assert!(
        out.stderr
            .contains("name that key's private half with -i (it is not saved on this client at")
            && !out.stderr.contains("leave out -i"),
        "{out:?}"
    );
}

/// A sign-in with a certificate past its end is audited, as other refused certificates are,
/// though the SSH library refuses it before the proxy sees it: the client offers its key next,
/// and that key is the grant's. Keys Warden never certified are not audited: clients offer
/// every key they hold.
#[test]
fn a_sign_in_with_an_expired_certificate_is_audited() {
    let s = Setup::start("metadata", "", true);
    let grant = s.grant("3s");
    let id = id(&grant);
    let ended = Instant::now() + Duration::from_secs(5);
    let other = tempfile::tempdir().unwrap();
    let (stranger, _) = ssh_keypair(other.path(), "stranger");
    let out = ssh_run(s.port, "alice:web", &stranger, "id");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    std::thread::sleep(ended.saturating_duration_since(Instant::now()));

    // Refused, and told why.
    let key = Path::new(grant["private_key_file"].as_str().unwrap());
    let certificate = grant["certificate_file"].as_str();
    let out = ssh_as_a_person(s.port, key, certificate, "alice:web");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        text(&out.stderr).contains(&format!(
            "warden: the certificate of grant {id} is not valid now: request new access with `warden request create`"
        )),
        "{out:?}"
    );
    let e = s.wait_event("auth.login_failed", Duration::from_secs(5));
    assert_eq!(e["outcome"]["code"], "certificate_expired", "{e}");
    assert!(
        e["outcome"]["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("the certificate of grant {id} is not valid now")),
        "{e}"
    );
    assert_eq!(e["actor"]["claimed"], "alice", "{e}");
    assert_eq!(e["details"]["via"], "ssh", "{e}");
    assert_eq!(e["details"]["grant"], id.as_str(), "{e}");
    assert_eq!(e["request_id"], id.as_str(), "{e}");
    assert_eq!(e["target"], "web", "{e}");
    // Once per sign-in, and none for the stranger's key.
    assert_eq!(s.events("auth.login_failed").len(), 1);
}

/// A Warden certificate refused at sign-in is refused with the reason the audit log holds,
/// shown to the user as a banner would be; a key that is nothing of Warden's hears nothing.
#[test]
fn a_refused_certificate_is_told_why() {
    let s = Setup::start("metadata", "", true);
    let grant = s.grant("30m");
    let id = id(&grant);
    let key = Path::new(grant["private_key_file"].as_str().unwrap());
    let certificate = grant["certificate_file"].as_str();
    let told = |login: &str, why: &str| {
        let out = ssh_as_a_person(s.port, key, certificate, login);
        assert_eq!(out.status.code(), Some(255), "{out:?}");
        assert!(!text(&out.stdout).contains("signed-in"), "{out:?}");
        let err = text(&out.stderr);
        assert!(err.contains(&format!("warden: {why}")), "{err}");
        assert!(err.contains("Permission denied (publickey)"), "{err}");
    };

    told(
        "bob:web",
        &format!(
            "the certificate of grant {id} was issued to alice, not bob: sign in as alice:TARGET"
        ),
    );
    ok(&s.alice, &["request", "revoke", &id]);
    told(
        "alice:web",
        &format!("grant {id} is revoked: request new access with `warden request create`"),
    );
    assert_eq!(
        s.wait_events("auth.login_failed", 2, Duration::from_secs(5))
            .len(),
        2
    );

    let other = tempfile::tempdir().unwrap();
    let (stranger, _) = ssh_keypair(other.path(), "stranger");
    let out = ssh_as_a_person(s.port, &stranger, None, "alice:web");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        !err.contains("warden:") && err.contains("Permission denied (publickey)"),
        "{err}"
    );
}

/// A registered key signing in under another Warden user's name is refused on the record, and
/// its holder told whose it is, as a certificate of another user's is.
#[test]
fn a_registered_key_of_another_user_is_refused_on_the_record() {
    let s = Setup::start("metadata", "", true);
    let out = ssh_as_a_person(s.port, &s.key, None, "bob:web");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(!text(&out.stdout).contains("signed-in"), "{out:?}");
    let fingerprint = ok(&s.alice, &["keys", "list"])["keys"][0]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let why =
        format!("the key {fingerprint} is registered to alice, not bob: sign in as alice:TARGET");
    assert!(
        text(&out.stderr).contains(&format!("warden: {why}")),
        "{out:?}"
    );
    let e = s.wait_event("auth.login_failed", Duration::from_secs(5));
    assert_eq!(e["outcome"]["code"], "key_of_another_user", "{e}");
    assert_eq!(e["outcome"]["reason"], why.as_str(), "{e}");
    assert_eq!(e["actor"]["claimed"], "bob", "{e}");
    assert_eq!(e["actor"]["source"], "127.0.0.1", "{e}");
    assert_eq!(e["details"]["via"], "ssh", "{e}");
    assert_eq!(e["details"]["claimed_user"], "bob", "{e}");
    assert_eq!(e["target"], "web", "{e}");
    assert!(e["request_id"].is_null(), "{e}");
    assert_eq!(s.events("auth.login_failed").len(), 1);
}

/// A refused kill, watch or replay names the session it was aimed at, so that a search of the
/// log by session finds who tried what on it.
#[test]
fn refused_session_actions_name_the_session() {
    let s = Setup::start("full", "", true);
    s.grant("30m");
    let out = s.ssh("echo replay-me");
    assert!(out.status.success(), "{out:?}");
    let ended = s.wait_event("session.ended", Duration::from_secs(5));
    let session = ended["session_id"].as_str().unwrap().to_owned();
    let bob = s.env.login("bob");
    fails(&bob, &["sessions", "kill", &session], 3);
    fails(&bob, &["sessions", "watch", &session], 3);
    fails(&bob, &["replay", &session], 3);
    fails(&s.admin, &["sessions", "kill", &session], 4);
    let refused = s.events("request.action_refused");
    let seen: Vec<(&str, &str, &str)> = refused
        .iter()
        .map(|e| {
            (
                e["details"]["action"].as_str().unwrap(),
                e["outcome"]["code"].as_str().unwrap(),
                e["session_id"].as_str().unwrap_or("(none)"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("session.kill", "not_permitted", session.as_str()),
            ("session.watch", "not_permitted", session.as_str()),
            ("session.replay", "not_permitted", session.as_str()),
            ("session.kill", "no_such_session", session.as_str()),
        ],
        "{refused:?}"
    );
}

/// `warden ssh -t` asks for a terminal for its command, as `ssh -t` does: what a role that
/// checks each command line needs for a command that starts a shell, and what its refusal
/// says to do, with either client.
#[test]
fn warden_ssh_asks_for_a_terminal_with_t() {
    let s = Setup::start("metadata", "deny_commands = [\"^rm -rf\"]", true);
    s.grant("30m");
    let out = s.alice.run(&["ssh", "web", "--", "bash"], None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(
            "checks each command line, which needs a terminal: ask for one with -t (`ssh -t …` or `warden ssh -t TARGET …`)"
        ),
        "{out:?}"
    );
    let term = Tmux::start(&format!(
        "WARDEN_SERVER='{}' WARDEN_HOME='{}' '{BIN}' ssh -t web -- bash",
        s.alice.server_url(),
        s.alice.home().display()
    ));
    term.wait_for("$ ", 1, Duration::from_secs(15));
    term.send_line("echo on-a-terminal-$((6*7)) $(tty)");
    let screen = term.wait_for("on-a-terminal-42 /dev/pts/", 1, Duration::from_secs(10));
    assert!(!screen.contains("needs a terminal"), "{screen}");
    term.send_line("exit");
}

/// The error `--json` printed to standard error.
fn error(stderr: &str) -> Value {
    let v: Value = serde_json::from_str(stderr.trim()).unwrap();
    v["error"].clone()
}

/// A recording whose `session.ended` event holds its digest but whose file is gone was made
/// and then lost or removed: it is refused as a missing recording (exit 1, as an altered one
/// is), telling the administrator to restore it, and the read is audited as an altered one's
/// is, not as a replay of a session never recorded.
#[test]
fn a_deleted_recording_is_told_as_missing_not_as_never_recorded() {
    let s = Setup::start("full", "", true);
    let grant = id(&s.grant("30m"));
    let out = s.ssh("echo recorded-once");
    assert!(out.status.success(), "{out:?}");
    let ended = s
        .wait_events("session.ended", 1, Duration::from_secs(10))
        .pop()
        .unwrap();
    let session = ended["session_id"].as_str().unwrap().to_owned();
    let sha256 = ended["details"]["recording"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = s.recording(&session);
    let original = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();

    let out = fails(&s.admin, &["replay", &session, "--speed", "100"], 1);
    assert!(
        out.stderr.contains("missing")
            && out.stderr.contains("shows it was recorded")
            && out.stderr.contains(&sha256)
            && out.stderr.contains("from a backup"),
        "{out:?}"
    );
    assert!(
        !out.stderr.contains("no such session was recorded"),
        "{out:?}"
    );
    let out = fails(&s.admin, &["--json", "replay", &session], 1);
    assert_eq!(error(&out.stderr)["code"], "recording_missing", "{out:?}");

    // Audited as a read of the recording, its check `missing`, with the digest to restore
    // against, and found by the session's target and grant; not as a refused action.
    let reads = s.events("session.recording_read");
    assert_eq!(reads.len(), 2, "{reads:?}");
    let read = reads.last().unwrap();
    assert_eq!(read["session_id"], session.as_str(), "{read}");
    assert_eq!(read["details"]["recording"]["check"], "missing", "{read}");
    assert_eq!(
        read["details"]["recording"]["recorded"]["sha256"],
        sha256.as_str(),
        "{read}"
    );
    assert_eq!(read["outcome"]["code"], "recording_missing", "{read}");
    assert_eq!(read["target"], "web", "{read}");
    assert_eq!(read["request_id"], grant.as_str(), "{read}");
    let refused: Vec<Value> = s
        .events("request.action_refused")
        .into_iter()
        .filter(|e| e["details"]["action"] == "session.replay")
        .collect();
    assert!(refused.is_empty(), "{refused:?}");

    // Restored from a backup, it plays and checks as intact.
    std::fs::write(&path, &original).unwrap();
    let out = s.admin.run(&["replay", &session, "--speed", "100"], None);
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains("recorded-once"), "{out:?}");
    let read = s.events("session.recording_read").pop().unwrap();
    assert_eq!(read["details"]["recording"]["check"], "intact", "{read}");

    // A session no one recorded is still told so (exit 4).
    let out = fails(
        &s.admin,
        &["replay", "00000000-0000-0000-0000-000000000000"],
        4,
    );
    assert!(
        out.stderr.contains("no such session was recorded"),
        "{out:?}"
    );
}

/// A running session has no end, and so no digest, yet: its recording file missing is not
/// called tampering; once it ends with the digest of what it recorded, it is.
#[test]
fn a_running_session_without_its_file_is_not_called_altered() {
    let s = Setup::start("full", "", true);
    let grant = id(&s.grant("30m"));
    let term = s.interactive();
    term.wait_for("$ ", 1, Duration::from_secs(15));
    let session = s.live_session();
    std::fs::remove_file(s.recording(&session)).unwrap();

    let out = fails(&s.admin, &["--json", "replay", &session], 4);
    let said = error(&out.stderr);
    assert_eq!(said["code"], "no_recording", "{out:?}");
    assert!(
        said["message"]
            .as_str()
            .unwrap()
            .contains("the session has not ended"),
        "{out:?}"
    );
    assert!(s.events("session.recording_read").is_empty());
    // The refusal names the session's target and grant.
    let refused = s.events("request.action_refused").pop().unwrap();
    assert_eq!(refused["details"]["action"], "session.replay", "{refused}");
    assert_eq!(refused["session_id"], session.as_str(), "{refused}");
    assert_eq!(refused["target"], "web", "{refused}");
    assert_eq!(refused["request_id"], grant.as_str(), "{refused}");

    term.send_line("exit");
    let ended = s
        .wait_events("session.ended", 1, Duration::from_secs(10))
        .pop()
        .unwrap();
    assert!(
        ended["details"]["recording"]["sha256"].is_string(),
        "{ended}"
    );
    let out = fails(&s.admin, &["--json", "replay", &session], 1);
    assert_eq!(error(&out.stderr)["code"], "recording_missing", "{out:?}");
}

/// A watch shows the terminal only while its watcher may see it: once the watcher's token is
/// revoked (here signed out; offboarding and a new password revoke it too), the stream ends
/// and nothing typed afterwards reaches it, though the session runs on.
#[test]
fn a_watch_ends_when_its_watchers_token_does() {
    let s = Setup::start("full", "", true);
    s.grant("30m");
    let term = s.interactive();
    term.wait_for("$ ", 1, Duration::from_secs(15));
    let session = s.live_session();
    let admin = s.env.login("admin");
    let watch_out = s.env.dir.path().join("watch.out");
    let mut watcher = std::process::Command::new(BIN)
        .args(["sessions", "watch", &session])
        .env("WARDEN_SERVER", admin.server_url())
        .env("WARDEN_HOME", admin.home())
        .stdout(std::fs::File::create(&watch_out).unwrap())
        .spawn()
        .unwrap();
    s.wait_events("session.watched", 1, Duration::from_secs(10));
    let seen = |text: &str| std::fs::read_to_string(&watch_out).unwrap().contains(text);
    term.send_line("echo before-$((6*7))");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !seen("before-42") {
        assert!(Instant::now() < deadline, "the watcher saw no live output");
        std::thread::sleep(Duration::from_millis(50));
    }

    let out = admin.run(&["logout"], None);
    assert!(out.success(), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while watcher.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the watch went on after its token was revoked"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    term.send_line("echo after-$((6*7))");
    term.wait_for("after-42", 1, Duration::from_secs(10));
    assert!(!seen("after-42"), "a revoked watcher saw the terminal");
    assert!(
        ok(&s.admin, &["sessions", "list"])["sessions"][0]["id"] == session.as_str(),
        "the session itself ended"
    );
}

/// Who watched or replayed a session is found by the session's target and grant, as who
/// killed one is.
#[test]
fn watches_and_replays_are_found_by_target_and_grant() {
    let s = Setup::start("full", "", true);
    let grant = id(&s.grant("30m"));
    let term = s.interactive();
    term.wait_for("$ ", 1, Duration::from_secs(15));
    let session = s.live_session();

    let watch_out = s.env.dir.path().join("watch.out");
    let mut watcher = std::process::Command::new(BIN)
        .args(["sessions", "watch", &session])
        .env("WARDEN_SERVER", s.admin.server_url())
        .env("WARDEN_HOME", s.admin.home())
        .stdout(std::fs::File::create(&watch_out).unwrap())
        .spawn()
        .unwrap();
    let watched = s
        .wait_events("session.watched", 1, Duration::from_secs(10))
        .pop()
        .unwrap();
    assert_eq!(watched["session_id"], session.as_str(), "{watched}");
    // A replay while it runs, and one once it ended.
    let out = s.admin.run(&["replay", &session, "--speed", "100"], None);
    assert!(out.success(), "{out:?}");
    term.send_line("exit");
    s.wait_events("session.ended", 1, Duration::from_secs(10));
    assert!(watcher.wait().unwrap().success());
    let out = s.admin.run(&["replay", &session, "--speed", "100"], None);
    assert!(out.success(), "{out:?}");

    for (code, count) in [("session.watched", 1), ("session.recording_read", 2)] {
        for filter in [["--target", "web"], ["--request", grant.as_str()]] {
            let found = s.search(code, &filter);
            assert_eq!(found.len(), count, "{code} {filter:?}: {found:?}");
            for e in &found {
                assert_eq!(
                    (e["target"].as_str(), e["request_id"].as_str()),
                    (Some("web"), Some(grant.as_str())),
                    "{e}"
                );
            }
        }
        assert!(s.search(code, &["--target", "elsewhere"]).is_empty());
    }
    let checks: Vec<Value> = s
        .events("session.recording_read")
        .iter()
        .map(|e| e["details"]["recording"]["check"].clone())
        .collect();
    assert_eq!(checks, ["live", "intact"]);
}

/// Keys that come right behind a blocked line's Enter do not run it: the line stays
/// discarded, what came behind it is dropped (the user told so), and the directory the line
/// would remove survives bash's readline.
#[test]
fn keys_right_behind_a_blocked_line_do_not_run_it() {
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::start("full", "deny_commands = [\"^rm -rf\"]", true);
    s.grant("30m");
    let parent = tempfile::tempdir().unwrap();
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let dir = parent.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let shown = dir.display();

    // `ssh -tt` whose keys are written here, each burst in one write.
    let mut ssh = KilledOnDrop(
        std::process::Command::new("timeout")
            .args(["-s", "KILL", "90", "ssh", "-tt"])
            .args(ssh_base_args(s.port, &s.key))
            .args(["alice:web@127.0.0.1", "bash --norc"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut keys = ssh.0.stdin.take().unwrap();
    let mut out = ssh.0.stdout.take().unwrap();
    let screen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    std::thread::spawn({
        let screen = screen.clone();
        move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = out.read(&mut buf) {
                screen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        }
    });
    let wait_for = |wanted: &str, times: usize| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let seen = text(&screen.lock().unwrap());
            if seen.matches(wanted).count() >= times {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "the terminal did not show {wanted:?} {times}x:\n{seen}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    };
    let count = |wanted: &str| text(&screen.lock().unwrap()).matches(wanted).count();
    let mut type_keys = |burst: &[u8]| {
        keys.write_all(burst).unwrap();
        keys.flush().unwrap();
    };

    type_keys(b"echo ready-$((1+2))\r");
    wait_for("ready-3", 1);
    // The line and two Enters in one write.
    type_keys(format!("rm -rf {shown}\r\r").as_bytes());
    wait_for("warden: blocked", 1);
    type_keys(b"echo one-$((1+1))\r");
    let seen = wait_for("one-2", 1);
    assert!(
        dir.exists(),
        "the blocked line ran at the Enter behind it:\n{seen}"
    );
    // `line` typed and shown first, then `behind` in one write, blocked as the `nth` block;
    // `then` typed after it, and what the shell shows once it has run `check` returned.
    let mut blocked_behind =
        |line: &str, behind: &[u8], nth: usize, then: &[&[u8]], check: &str| {
            let before = count(line);
            type_keys(line.as_bytes());
            wait_for(line, before + 1);
            type_keys(behind);
            wait_for("warden: blocked", nth);
            for keys in then {
                type_keys(keys);
            }
            wait_for(check, 1)
        };
    // The line typed first, then two Enters in one write.
    let line = format!("rm -rf {shown}");
    let seen = blocked_behind(&line, b"\r\r", 2, &[b"echo two-$((2+2))\r"], "two-4");
    assert!(
        dir.exists(),
        "the blocked line ran at the Enters behind it:\n{seen}"
    );
    // Two characters deleted at the start, the second Ctrl-D (which a terminal's own line
    // editing takes as the end of the line) blocking it, and Enter right behind, in one write.
    let line = format!("echo x; rm -rf {shown}");
    let seen = blocked_behind(
        &line,
        b"\x01\x04\x04\r",
        3,
        &[b"echo three-$((3+3))\r"],
        "three-6",
    );
    assert!(
        dir.exists(),
        "the blocked line ran after Ctrl-A Ctrl-D Ctrl-D Enter:\n{seen}"
    );
    // A key right behind the Enter does not stay in a line the proxy believes empty, for a
    // later Enter to run.
    let line = format!("rm -rf {}", parent.path().join("").display());
    let seen = blocked_behind(
        &line,
        b"\rd",
        4,
        &[b"\r", b"echo four-$((4+4))\r"],
        "four-8",
    );
    assert!(
        dir.exists(),
        "a key behind a blocked line completed it:\n{seen}"
    );
    assert!(seen.contains("was dropped"), "the user is told:\n{seen}");
    type_keys(b"exit\r");

    let blocked = s.wait_events("session.command_blocked", 4, Duration::from_secs(5));
    assert_eq!(blocked.len(), 4, "{blocked:?}");
    for b in &blocked {
        assert_eq!(b["outcome"]["code"], "command_denied", "{b}");
        assert_eq!(b["details"]["rule"], "^rm -rf", "{b}");
    }
}

/// `ssh` to the proxy as alice at web from the loopback address `from`, with her registered
/// key, running `command`; killed after 30 s.
fn ssh_from(s: &Setup, from: &str, command: &str) -> Output {
    std::process::Command::new("timeout")
        .arg("30")
        .arg("ssh")
        .args(ssh_base_args(s.port, &s.key))
        .args(["-o", &format!("BindAddress={from}")])
        .arg("alice:web@127.0.0.1")
        .arg(command)
        .output()
        .unwrap()
}

/// A role's `source_address` holds through the proxy: the proxy checks where the user comes
/// from, and its own certificate for the host, which comes from the proxy's address, carries
/// no source address (the host would refuse it) but does carry `force_command`. sshd's log tells
/// the proxy's certificate from the user's by its key id and serial.
#[test]
fn a_roles_critical_options_hold_through_the_proxy() {
    let s = Setup::start(
        "metadata",
        "source_address = [\"127.0.0.2/32\"]\nforce_command = \"echo forced\"",
        true,
    );
    let grant = s.grant("30m");
    let id = id(&grant);

    // From an address the role does not list: refused before the host is reached.
    let out = ssh_from(&s, "127.0.0.1", "whoami");
    assert!(!out.status.success(), "{out:?}");
    assert!(!text(&out.stdout).contains("forced"), "{out:?}");
    assert!(
        text(&out.stderr).contains(
            "role view on web is used only from 127.0.0.2/32; your connection comes from 127.0.0.1"
        ),
        "{out:?}"
    );
    let e = s.wait_event("session.refused", Duration::from_secs(5));
    assert_eq!(e["outcome"]["code"], "source_address_not_allowed", "{e}");
    assert_eq!(e["request_id"], id.as_str(), "{e}");
    assert!(
        !s.sshd.log().contains(&format!("ID {id}")),
        "{}",
        s.sshd.log()
    );

    // From the listed address: the proxy connects from 127.0.0.1, and the host takes its
    // certificate and runs the forced command, whatever was asked.
    let out = ssh_from(&s, "127.0.0.2", "whoami");
    assert_eq!(
        text(&out.stdout).trim(),
        "forced",
        "{out:?}\n{}",
        s.sshd.log()
    );
    let serial: u64 = grant["credential"]["serial"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let log = s.sshd.log();
    assert!(
        log.contains(&format!("ID {id}:proxy (serial {})", serial ^ (1 << 63))),
        "{log}"
    );
    assert!(!log.contains(&format!("ID {id} (serial")), "{log}");
    // The user's own certificate names the grant alone, and its own serial.
    let shown = std::process::Command::new("ssh-keygen")
        .arg("-L")
        .arg("-f")
        .arg(grant["certificate_file"].as_str().unwrap())
        .output()
        .unwrap();
    let shown = text(&shown.stdout);
    assert!(
        shown.contains(&format!("Key ID: \"{id}\""))
            && shown.contains(&format!("Serial: {serial}")),
        "{shown}"
    );
}

/// Makes `n` auto-granted requests of web's view role through the API, each certifying
/// `public_key`, over one connection.
fn many_grants(port: u16, bearer: &str, public_key: &str, n: usize) {
    use std::io::{Read, Write};
    let body = serde_json::json!({
        "target": "web",
        "role": "view",
        "reason": "many grants",
        "ttl": "30m",
        "public_key": public_key,
    })
    .to_string();
    let request = format!(
        "POST /v1/requests HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {bearer}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for i in 0..n {
        s.write_all(request.as_bytes()).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).unwrap(), 1, "the connection closed");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 201"), "grant {i}: {head}");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap();
        let mut rest = vec![0u8; length];
        s.read_exact(&mut rest).unwrap();
    }
}

/// The grant whose certificate a sign-in offers past its end is named however many requests
/// its holder made since: not only when it is among their latest hundred.
#[test]
fn an_expired_certificate_is_named_past_a_hundred_newer_requests() {
    let s = Setup::start("metadata", "", true);
    let grant = s.grant("3s");
    let id = id(&grant);
    let ended = Instant::now() + Duration::from_secs(4);
    let other = tempfile::tempdir().unwrap();
    let (_, public) = ssh_keypair(other.path(), "other");
    many_grants(s.env.server.port(), &token(&s.alice), &public, 105);
    std::thread::sleep(ended.saturating_duration_since(Instant::now()));

    let key = Path::new(grant["private_key_file"].as_str().unwrap());
    let out = ssh_as_a_person(s.port, key, grant["certificate_file"].as_str(), "alice:web");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        text(&out.stderr).contains(&format!(
            "warden: the certificate of grant {id} is not valid now"
        )),
        "{out:?}"
    );
    let e = s.wait_event("auth.login_failed", Duration::from_secs(5));
    assert_eq!(e["outcome"]["code"], "certificate_expired", "{e}");
    assert_eq!(e["request_id"], id.as_str(), "{e}");
}

/// A sign-in with a registered key runs under a grant the client may use from its address:
/// one of a role whose `source_address` leaves it out is passed over, however much longer it
/// lasts, and only when every grant is such one is the session refused, naming why.
#[test]
fn a_registered_key_signs_in_under_a_grant_usable_from_its_address() {
    let s = Setup::start("metadata", "", true);
    let connection = format!(
        "host = \"127.0.0.1\"\nport = {}\nhost_key = \"{}\"",
        s.sshd.port(),
        s.sshd.host_public_key()
    );
    let roles = format!(
        "[targets.web]\nkind = \"ssh\"\nenvironment = \"test\"\n[targets.web.connection]\n{connection}\n[targets.web.roles.srcok]\n{}\n[targets.web.roles.srcbad]\n{}\n",
        role_settings("source_address = [\"127.0.0.0/8\", \"::1\"]"),
        role_settings("source_address = [\"10.0.0.0/8\"]"),
    );
    let access: String = ["srcok", "srcbad"]
        .iter()
        .map(|role| {
            format!(
                "@id(\"{role}-auto\")\n@approval(\"auto\")\n@max_ttl(\"1h\")\n@recording(\"metadata\")\npermit (principal, action == Action::\"request\", resource == Role::\"web/{role}\");\n"
            )
        })
        .collect();
    write_policy(
        &s.env.policy_dir(),
        &[("targets.toml", &roles), ("access.cedar", &access)],
    );
    ok(&s.admin, &["policy", "reload"]);
    let usable = create(&s.alice, "web", "srcok", &["--ttl", "10m"]);
    assert_eq!(usable["state"], "active", "{usable}");
    let elsewhere = create(&s.alice, "web", "srcbad", &["--ttl", "20m"]);
    assert_eq!(elsewhere["state"], "active", "{elsewhere}");

    let out = s.ssh("echo in");
    assert_eq!(text(&out.stdout).trim(), "in", "{out:?}");
    let started = s.wait_event("session.started", Duration::from_secs(5));
    assert_eq!(started["request_id"], id(&usable).as_str(), "{started}");
    assert_eq!(started["role"], "srcok", "{started}");

    // With the usable one gone, the other is refused, naming its addresses and the client's.
    ok(&s.alice, &["request", "revoke", &id(&usable)]);
    let out = s.ssh("echo in");
    assert!(!out.status.success(), "{out:?}");
    assert!(
        text(&out.stderr).contains(
            "role srcbad on web is used only from 10.0.0.0/8; your connection comes from 127.0.0.1"
        ),
        "{out:?}"
    );
    let refused = s.wait_event("session.refused", Duration::from_secs(5));
    assert_eq!(
        refused["outcome"]["code"], "source_address_not_allowed",
        "{refused}"
    );
    assert_eq!(refused["request_id"], id(&elsewhere).as_str(), "{refused}");
}

/// A role's `force_command` runs whatever is asked: the session's events and its recording's
/// header name it beside the command asked for, so that no one reads the recording as the
/// asked command's. The deny rules judge both: an asked command they refuse is refused though
/// it would not have run, and a forced command they match opens no session of the role.
#[test]
fn a_forced_command_is_named_in_events_and_recordings_and_judged_by_the_deny_rules() {
    let forced = "echo FORCED-REC";
    let s = Setup::start(
        "full",
        &format!("force_command = \"{forced}\"\ndeny_commands = [\"^rm \"]"),
        true,
    );
    s.grant("30m");
    let asked = "echo via-proxy-$(id -un)";
    let out = s.ssh(asked);
    assert_eq!(text(&out.stdout).trim(), "FORCED-REC", "{out:?}");

    let ended = s.wait_event("session.ended", Duration::from_secs(5));
    let session = ended["session_id"].as_str().unwrap().to_owned();
    let started = s.events("session.started").pop().unwrap();
    assert_eq!(started["session_id"], session.as_str(), "{started}");
    assert_eq!(started["details"]["command"], asked, "{started}");
    assert_eq!(started["details"]["forced_command"], forced, "{started}");
    let exec = s.events("session.exec").pop().unwrap();
    assert_eq!(exec["details"]["command"], asked, "{exec}");
    assert_eq!(exec["details"]["forced_command"], forced, "{exec}");
    let path = s.recording(&session);
    let cast = std::fs::read_to_string(&path).unwrap();
    let header: Value = serde_json::from_str(cast.lines().next().unwrap()).unwrap();
    assert_eq!(header["command"], asked, "{header}");
    assert_eq!(header["forced_command"], forced, "{header}");
    assert!(asciinema_cat(&path).contains("FORCED-REC"));

    // An asked command the rules refuse is refused, forced command or not.
    let out = s.ssh("rm -f /tmp/warden-never");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(!text(&out.stdout).contains("FORCED-REC"), "{out:?}");
    assert!(text(&out.stderr).contains("command blocked"), "{out:?}");
    let blocked = s.wait_event("session.command_blocked", Duration::from_secs(5));
    assert_eq!(blocked["details"]["rule"], "^rm ", "{blocked}");

    // A forced command the rules match runs for no one, whatever is asked. (A grant active
    // before the reload keeps the command it was issued with.)
    s.repin(
        s.sshd.host_public_key(),
        "force_command = \"rm -f /tmp/warden-never\"\ndeny_commands = [\"^rm \"]",
    );
    let out = s.ssh("echo harmless");
    assert_eq!(text(&out.stdout).trim(), "FORCED-REC", "{out:?}");
    s.grant("40m");
    let out = s.ssh("echo harmless");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("runs the forced command")
            && text(&out.stderr).contains("change the role's force_command or deny_commands"),
        "{out:?}"
    );
    let blocked = s.wait_events("session.command_blocked", 2, Duration::from_secs(5));
    let blocked = blocked.last().unwrap();
    assert_eq!(
        blocked["details"]["forced_command"], "rm -f /tmp/warden-never",
        "{blocked}"
    );
}
