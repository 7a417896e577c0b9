//! The command line as a person meets it: what it asks at a terminal, what it says of an
//! argument it does not take or cannot read, and which exit code it ends with.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use warden_testkit::Cli;

/// A client of no server: what is tested here is refused before one is asked.
fn offline() -> Cli {
    Cli::new(Path::new(BIN), "http://127.0.0.1:9")
}

#[test]
fn hash_password_at_a_terminal_asks_without_echo() {
    const SECRET: &str = "correct horse battery staple";
    // `script` runs it on a pseudo-terminal of its own, echoing what is typed as a terminal
    // does, and passes on what is written to its standard input as typing.
    let mut child = Command::new("script")
        .args(["--quiet", "--return", "--echo", "always", "--command"])
        .arg(format!("exec {} hash-password", sh_word(BIN)))
        .arg("/dev/null")
        .env_remove("WARDEN_HOME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running script (util-linux)");
    let screen = Arc::new(Mutex::new(String::new()));
    let mut stdout = child.stdout.take().unwrap();
    let shown = Arc::clone(&screen);
    let reader = std::thread::spawn(move || {
        let mut chunk = [0u8; 1024];
        while let Ok(n) = stdout.read(&mut chunk) {
            if n == 0 {
                break;
            }
            shown
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    let prompted = Instant::now() + Duration::from_secs(30);
    while !screen.lock().unwrap().contains("Password: ") {
        if Instant::now() > prompted || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "hash-password at a terminal asked for no password: {:?}",
                screen.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The prompt is written just before echo is turned off.
    std::thread::sleep(Duration::from_secs(1));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{SECRET}\r").as_bytes()).unwrap();
    let ended = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > ended {
            let _ = child.kill();
            panic!("hash-password did not end: {:?}", screen.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(stdin);
    reader.join().unwrap();
    let screen = screen.lock().unwrap().clone();
    assert!(status.success(), "{status:?}: {screen:?}");
    assert!(screen.contains("$argon2id$"), "{screen:?}");
    assert!(
        !screen.contains(SECRET),
        "the password was echoed: {screen:?}"
    );

    // Not at a terminal, it reads standard input as before, prompting nothing.
    let out = offline().run(&["hash-password"], Some(SECRET));
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.trim().starts_with("$argon2id$"), "{out:?}");
    assert!(!out.stderr.contains("Password"), "{out:?}");
}

/// `path` as one word for `sh -c`.
fn sh_word(path: &str) -> String {
    format!("'{}'", path.replace('\'', "'\\''"))
}

/// Runs `warden ARGS` expecting a usage error (exit code 2): its standard error.
fn usage(args: &[&str]) -> String {
    let out = offline().run(args, None);
    assert_eq!(out.code, 2, "`warden {}`: {out:?}", args.join(" "));
    out.stderr
}

/// The `tip:` line of a usage error.
fn tip(stderr: &str) -> &str {
    stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("tip: "))
        .unwrap_or_else(|| panic!("no tip in {stderr}"))
}

const A_REQUEST: &str = "0190c8a2-7c1e-7def-8b1a-2f6c3d4e5f60";
#[test]
fn an_unknown_option_is_named_with_the_options_the_command_takes() {
    let cases: [(&[&str], &[&str]); 4] = [
        (
            &["request", "show", A_REQUEST, "--verbose"],
            &["`warden request show` takes no option --verbose", "--json"],
        ),
        (
            &["keys", "add", "--force", "x.pub"],
            &["`warden keys add` takes no option --force", "--proof"],
        ),
        (
            &["sessions", "kill", "--force", A_REQUEST],
            &["`warden sessions kill` takes no option --force"],
        ),
        (
            &[
                "request", "extend", A_REQUEST, "--ttl", "2h", "--ticket", "CHG-9",
            ],
            &[
                "`warden request extend` takes no option --ticket",
                "--ttl, --reason, --totp",
            ],
        ),
    ];
    for (args, said) in cases {
        let stderr = usage(args);
        let tip = tip(&stderr);
        for s in said {
            assert!(tip.contains(s), "{args:?}: {s:?} in {stderr}");
        }
        assert!(!tip.contains("'='"), "{args:?}: {stderr}");
    }

    // What approving, denying and revoking record is a --comment, not a --reason.
    for verb in ["approve", "deny", "revoke"] {
        let stderr = usage(&["request", verb, A_REQUEST, "--reason", "ok"]);
        let tip = tip(&stderr);
        assert!(
            tip.contains(&format!(
                "`warden request {verb}` takes no --reason: use --comment instead"
            )),
            "{stderr}"
        );
        assert!(!stderr.contains("--json"), "{stderr}");
    }
    let stderr = usage(&[
        "request",
        "create",
        "web",
        "--role",
        "view",
        "--comment",
        "x",
    ]);
    assert!(tip(&stderr).contains("use --reason instead"), "{stderr}");

    // An option given before the subcommand is the group's.
    let stderr = usage(&["request", "--verbose", "list"]);
    assert!(
        tip(&stderr).starts_with("`warden request` takes no option --verbose"),
        "{stderr}"
    );

    // A value that begins with '-' after an option that takes one goes with '='.
    let stderr = usage(&[
        "request", "create", "web", "--role", "view", "--reason", "x", "--ttl", "-5m",
    ]);
    assert_eq!(
        tip(&stderr),
        "a value that begins with '-' is given to its option with '=': --ttl=-5m"
    );
    let stderr = usage(&[
        "request",
        "create",
        "web",
        "--role",
        "view",
        "--reason",
        "-1 node down",
        "--ttl",
        "5m",
    ]);
    assert_eq!(
        tip(&stderr),
        "a value that begins with '-' is given to its option with '=': --reason='-1 node down'"
    );

    // With --json, the tip is in the error's message.
    let out = offline().run(
        &["--json", "request", "approve", A_REQUEST, "--reason", "ok"],
        None,
    );
    assert_eq!(out.code, 2, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(out.stderr.trim()).unwrap();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("use --comment instead"), "{message}");
}

#[test]
fn serve_on_one_port_for_both_listeners_is_a_usage_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let at = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = offline().run(
        &[
            "serve",
            "--dev",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &at,
            "--ssh-listen",
            &at,
        ],
        None,
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("--listen") && out.stderr.contains("are on the same port"),
        "{out:?}"
    );
}

#[test]
fn revoked_keys_out_to_a_directory_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = offline().run(
        &["ssh-revoked-keys", "--out", dir.path().to_str().unwrap()],
        None,
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("--out names the file") && out.stderr.contains("is a directory"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("os error"), "{out:?}");
}

/// Signs the proof that `key`'s holder registers it to `user`, as `warden keys add` does.
fn key_proof(key: &Path, user: &str, file: &Path) {
    let mut child = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "warden-ssh-key", "-f"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let message = format!("register this SSH key to Warden user {user}\n");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(message.as_bytes())
        .unwrap();
    let signed = child.wait_with_output().unwrap();
    assert!(signed.status.success(), "{signed:?}");
    std::fs::write(file, signed.stdout).unwrap();
}

#[test]
fn a_key_registered_to_another_account_is_said_to_be_so() {
    let env = Env::start();
    let alice = env.login("alice");
    let bob = env.login("bob");
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("id_ed25519");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "shared", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let public = format!("{}.pub", key.display());
    ok(&alice, &["keys", "add", &public]);

    // Bob holds the private half too, and proves it: the key is taken, by whom is not said.
    let proof = keys.path().join("bob.sig");
    key_proof(&key, "bob", &proof);
    let out = fails(
        &bob,
        &["keys", "add", &public, "--proof", proof.to_str().unwrap()],
        6,
    );
    assert!(
        out.stderr.contains("is registered to another account")
            && out.stderr.contains("a key pair of your own"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("alice"), "{out:?}");

    // Its owner is told it is theirs.
    let out = fails(&alice, &["keys", "add", &public], 6);
    assert!(
        out.stderr.contains("is registered to you already"),
        "{out:?}"
    );
}

#[test]
fn the_ca_key_in_json_has_no_line_break() {
    let env = Env::start();
    let alice = env.login("alice");
    // The CA key as one JSON string, without the line break that ends it as a file.
    let line = alice.run(&["ssh-ca"], None);
    assert!(line.success() && line.stdout.ends_with('\n'), "{line:?}");
    let json = ok(&alice, &["ssh-ca"]);
    assert_eq!(json["ca_public_key"], line.stdout.trim_end(), "{json}");
}

#[test]
fn numbers_that_do_not_parse_say_what_is_expected() {
    for (args, said) in [
        (
            &["request", "list", "--limit=-1"][..],
            "--limit takes a whole number from 1 to 1000",
        ),
        (
            &["request", "list", "--limit", "5000"],
            "--limit takes a whole number from 1 to 1000",
        ),
        (
            &["audit", "search", "--limit", "ten"],
            "--limit takes a whole number from 1 to 10000",
        ),
        (
            &["audit", "prove", "abc"],
            "an event's sequence number is a whole number, as `warden audit search` shows it",
        ),
        (
            &["audit", "search", "--after", "x"],
            "an event's sequence number is a whole number",
        ),
        (
            &["audit", "prove-consistency", "--from", "1k"],
            "a checkpoint's size is a whole number of events",
        ),
    ] {
        let stderr = usage(args);
        assert!(stderr.contains(said), "{args:?}: {stderr}");
        assert!(!stderr.contains("invalid digit"), "{args:?}: {stderr}");
    }
}

#[test]
fn serve_takes_no_client_options_and_says_so() {
    let help = offline().run(&["serve", "--help"], None);
    assert!(help.success(), "{help:?}");
    assert!(help.stdout.contains("--log-format"), "{help:?}");
    for client_only in ["--server", "--json"] {
        assert!(!help.stdout.contains(client_only), "{help:?}");
    }
    for (args, said) in [
        (
            &["serve", "--dev", "--server", "http://127.0.0.1:1"][..],
            "`warden serve` takes no --server",
        ),
        (
            &["--server", "http://127.0.0.1:1", "serve", "--dev"],
            "`warden serve` takes no --server",
        ),
        (&["serve", "--dev", "--json"], "pass --log-format json"),
        (&["--json", "serve", "--dev"], "pass --log-format json"),
    ] {
        let stderr = usage(args);
        assert!(stderr.contains(said), "{args:?}: {stderr}");
    }

    // `sessions watch` refuses --json, and its help does not offer it.
    let help = offline().run(&["sessions", "watch", "--help"], None);
    assert!(
        help.success() && !help.stdout.contains("--json"),
        "{help:?}"
    );
    let stderr = usage(&["sessions", "watch", "--json", A_REQUEST]);
    assert!(stderr.contains("has no --json form"), "{stderr}");
    // `ssh` and `db connect` print only their own failures as JSON, and say so.
    for args in [&["ssh", "--help"][..], &["db", "connect", "--help"]] {
        let help = offline().run(args, None);
        assert!(
            help.stdout.contains("as JSON; the session itself is"),
            "{help:?}"
        );
    }
}
