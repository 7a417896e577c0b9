//! The SSH proxy is not made to exhaust the server by one user or address, with the real
//! OpenSSH client and a real sshd on loopback: a sign-in for a target the user may open no
//! session on is refused; one user holds at most 64 signed-in connections while others still
//! get in; a signed-in connection with no session is closed after 30 s while a longer session
//! runs on; refused sign-ins from one address spend its budget of failed sign-ins, so that
//! their audit events are bounded; and refused connections are counted, not logged one each.
//!
//! Loopback is all of 127.0.0.0/8, so `ssh -b 127.0.0.N` comes from an address of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use warden_testkit::{
    Cli, Sshd, ensure_local_user, http_get, ssh_base_args, ssh_keypair, ssh_person_args,
};

/// As many connections as one user may hold signed in (`Limits::default`).
const PER_USER: usize = 64;
/// How long a signed-in connection may go without a session.
const IDLE: Duration = Duration::from_secs(30);
/// Failed sign-ins one address may make at once (`warden_domain::throttle::BURST`), and how
/// long each further one waits.
const BURST: usize = 20;
const REFILL: Duration = Duration::from_secs(3);

/// A server whose `web` target is a private sshd, with alice's and bob's keys registered.
struct Setup {
    env: Env,
    _sshd: Sshd,
    alice: Cli,
    bob: Cli,
    admin: Cli,
    alice_key: PathBuf,
    bob_key: PathBuf,
    port: u16,
    _keys: tempfile::TempDir,
}

impl Setup {
    fn start() -> Setup {
        let env = Env::start();
        let alice = env.login("alice");
        let bob = env.login("bob");
        let admin = env.login("admin");
        ensure_local_user(LOCAL_USER);
        let ca = alice.run(&["ssh-ca"], None);
        assert!(ca.success(), "{ca:?}");
        let sshd = Sshd::start(ca.stdout.trim(), "web");
        let connection = format!(
            "\n[targets.web.connection]\nhost = \"127.0.0.1\"\nport = {}\nhost_key = \"{}\"\n",
            sshd.port(),
            sshd.host_public_key()
        );
        write_policy(
            &env.policy_dir(),
            &[("targets.toml", &format!("{TARGETS}{connection}"))],
        );
        ok(&admin, &["policy", "reload"]);
        let keys = tempfile::tempdir().unwrap();
        let (alice_key, _) = ssh_keypair(keys.path(), "alice_key");
        let (bob_key, _) = ssh_keypair(keys.path(), "bob_key");
        ok(
            &alice,
            &["keys", "add", &format!("{}.pub", alice_key.display())],
        );
        ok(
            &bob,
            &["keys", "add", &format!("{}.pub", bob_key.display())],
        );
        let port = env.server.ssh_port();
        Setup {
            env,
            _sshd: sshd,
            alice,
            bob,
            admin,
            alice_key,
            bob_key,
            port,
            _keys: keys,
        }
    }

    /// `ssh` as `login` with `key` from `from`, running `command` (none: `-N`), killed after
    /// `limit_secs`; as a person runs it when `person` (no batch mode, the client's default log
    /// level, which show what the server says at sign-in and as it closes the connection).
    fn ssh(
        &self,
        key: &Path,
        from: &str,
        login: &str,
        person: bool,
        command: Option<&str>,
        limit_secs: u32,
    ) -> Command {
        // The first value ssh reads for an option is the one it keeps.
        let args = if person {
            ssh_person_args(self.port, key)
        } else {
            ssh_base_args(self.port, key)
        };
        let mut ssh = Command::new("timeout");
        ssh.args(["-s", "KILL", &limit_secs.to_string(), "ssh"])
            .args(args)
            .args(["-b", from]);
        match command {
            Some(c) => ssh.arg(format!("{login}@127.0.0.1")).arg(c),
            None => ssh.arg("-N").arg(format!("{login}@127.0.0.1")),
        };
        ssh.stdin(Stdio::null());
        ssh
    }

    /// Runs `command` as a person would (see [`Setup::ssh`]).
    fn as_a_person(&self, key: &Path, from: &str, login: &str, command: &str) -> Output {
        self.ssh(key, from, login, true, Some(command), 30)
            .output()
            .unwrap()
    }

    /// The value of the `series` line of `/metrics` (`name{labels}`), 0 if absent.
    fn metric(&self, series: &str) -> f64 {
        let body = http_get(self.env.server.port(), "/metrics").unwrap().body;
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A sign-in for a target that does not exist, or without an active grant for it, is refused
/// at once and audited as a refused sign-in, saying why; with a grant it signs in.
#[test]
fn a_sign_in_needs_a_target_and_an_active_grant() {
    let s = Setup::start();

    let out = s.as_a_person(&s.alice_key, "127.0.0.1", "alice:web", "echo in");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains("warden: alice has no active grant for web")
            && err.contains("warden request create web"),
        "{err}"
    );
    let out = s.as_a_person(&s.alice_key, "127.0.0.1", "alice:nowhere", "echo in");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        text(&out.stderr).contains("warden: unknown target nowhere"),
        "{out:?}"
    );

    let refused = audit_events(&s.admin, "auth.login_failed");
    let codes: Vec<_> = refused
        .iter()
        .map(|e| e["outcome"]["code"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(codes, ["no_active_grant", "unknown_target"], "{refused:?}");
    assert_eq!(refused[0]["target"], "web", "{refused:?}");
    assert_eq!(refused[0]["actor"]["source"], "127.0.0.1", "{refused:?}");
    // A target no policy has is kept by its length alone, as a name no user has is.
    assert_eq!(
        refused[1]["details"]["target"], "(no such target, 7 characters)",
        "{refused:?}"
    );
    assert!(
        !refused[1].to_string().contains("nowhere"),
        "{:?}",
        refused[1]
    );
    assert!(audit_events(&s.admin, "session.refused").is_empty());

    let grant = create(&s.alice, "web", "view", &[]);
    assert_eq!(grant["state"], "active", "{grant}");
    let out = s.as_a_person(&s.alice_key, "127.0.0.1", "alice:web", "echo in");
    assert_eq!(text(&out.stdout).trim(), "in", "{out:?}");
    // A grant for web lets no one in at another target.
    let out = s.as_a_person(&s.alice_key, "127.0.0.1", "alice:nowhere", "echo in");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
}

/// One user holds at most 64 signed-in connections, from however many addresses; another
/// user still gets in. A signed-in connection that opens no session is closed after 30 s,
/// telling why, while a session that runs longer is not cut; their places are then free.
#[test]
fn signed_in_connections_are_capped_per_user_and_idle_ones_are_closed() {
    let s = Setup::start();
    for cli in [&s.alice, &s.bob] {
        let grant = create(cli, "web", "view", &[]);
        assert_eq!(grant["state"], "active", "{grant}");
    }
    let started = Instant::now();
    // A session longer than the idle limit, and a connection with none, watched to its end.
    let long = {
        let mut ssh = s.ssh(
            &s.alice_key,
            "127.0.0.2",
            "alice:web",
            false,
            Some("sleep 40; echo ran-on"),
            90,
        );
        std::thread::spawn(move || ssh.output().unwrap())
    };
    let idle = {
        let mut ssh = s.ssh(&s.alice_key, "127.0.0.3", "alice:web", true, None, 90);
        std::thread::spawn(move || {
            let out = ssh.output().unwrap();
            (out, Instant::now())
        })
    };
    // The rest of alice's share, each from an address of its own, left in the background once
    // signed in (`-f`), a few at a time.
    let port = s.port;
    let key = s.alice_key.clone();
    let background = move |n: usize| {
        let key = key.clone();
        std::thread::spawn(move || {
            let status = Command::new("timeout")
                .args(["-s", "KILL", "60", "ssh", "-f", "-N"])
                .args(ssh_base_args(port, &key))
                .args(["-b", &format!("127.0.1.{n}"), "alice:web@127.0.0.1"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "background connection {n}: {status:?}");
        })
    };
    let others: Vec<usize> = (1..=PER_USER - 2).collect();
    for batch in others.chunks(8) {
        let threads: Vec<_> = batch.iter().map(|&n| background(n)).collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
    }
    let held = started.elapsed();
    assert!(
        held < IDLE - Duration::from_secs(5),
        "signing in {PER_USER} connections took {held:?}, too long to see them all held"
    );

    // One more of alice's, from yet another address, is refused, saying why.
    let out = s.as_a_person(&s.alice_key, "127.0.0.4", "alice:web", "echo over");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        text(&out.stderr).contains(&format!(
            "warden: alice has {PER_USER} connections signed in to Warden's SSH proxy"
        )),
        "{out:?}"
    );
    // Bob, from one of alice's addresses too, is not.
    let out = s.as_a_person(&s.bob_key, "127.0.0.2", "bob:web", "echo bob-in");
    assert_eq!(text(&out.stdout).trim(), "bob-in", "{out:?}");
    assert!(s.metric("warden_ssh_connections_refused_total{reason=\"signed_in_per_user\"}") >= 1.0);
    // A refusal for the limit is not one for the user's credentials: nothing audited for it.
    assert!(audit_events(&s.admin, "auth.login_failed").is_empty());

    // The connection without a session is closed once 30 s pass, and told why.
    let (out, closed_at) = idle.join().unwrap();
    let lasted = closed_at - started;
    assert!(
        lasted >= IDLE && lasted < IDLE + Duration::from_secs(20),
        "closed after {lasted:?}: {out:?}"
    );
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        text(&out.stderr).contains("no session was opened for 30 s"),
        "{out:?}"
    );
    // The longer session ran to its end.
    let out = long.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout).trim(), "ran-on", "{out:?}");

    // The background connections, all idle, were closed too: alice gets in again.
    wait_until(
        "alice's idle connections to close",
        Duration::from_secs(20),
        || {
            s.metric("warden_ssh_connections_refused_total{reason=\"idle\"}")
                >= (PER_USER - 1) as f64
        },
    );
    let out = s.as_a_person(&s.alice_key, "127.0.0.4", "alice:web", "echo again");
    assert_eq!(text(&out.stdout).trim(), "again", "{out:?}");
}

/// Offering one user's key under another's name, over and over from one address, is audited
/// until the address has spent its budget of failed sign-ins (the API's), then refused unchecked
/// and unaudited, counted in the throttle's metric; the address's good sign-ins wait too, and
/// another address's do not.
#[test]
fn refused_sign_ins_from_one_address_are_audited_within_its_budget() {
    let s = Setup::start();
    let grant = create(&s.alice, "web", "view", &[]);
    assert_eq!(grant["state"], "active", "{grant}");
    const TRIES: usize = 50;
    let started = Instant::now();
    for _ in 0..TRIES {
        let out = s
            .ssh(
                &s.alice_key,
                "127.0.0.5",
                "bob:web",
                false,
                Some("true"),
                30,
            )
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(255), "{out:?}");
    }
    let took = started.elapsed();
    let refused = audit_events(&s.admin, "auth.login_failed");
    assert!(
        refused
            .iter()
            .all(|e| e["outcome"]["code"] == "key_of_another_user"
                && e["actor"]["source"] == "127.0.0.5"),
        "{refused:?}"
    );
    // The burst, and one more for each refill the loop lasted.
    let bound = BURST + (took.as_secs_f64() / REFILL.as_secs_f64()).ceil() as usize + 1;
    assert!(
        refused.len() >= BURST && refused.len() <= bound,
        "{} refusals audited of {TRIES} in {took:?} (at most {bound})",
        refused.len()
    );
    // Each throttle's start is on the record, once the burst and then once per refill.
    let throttled = audit_events(&s.admin, "auth.source_throttled");
    assert!(
        !throttled.is_empty() && throttled.len() <= bound - BURST,
        "{throttled:?}"
    );
    assert!(
        throttled
            .iter()
            .all(|e| e["actor"]["source"] == "127.0.0.5"),
        "{throttled:?}"
    );
    assert!(s.metric("warden_auth_throttled_total") >= (TRIES - bound) as f64);

    // While it lasts, the address's own good sign-in is refused too, saying until when: right
    // after a refusal, which spends the budget again if it grew back meanwhile.
    let refused_too = (0..5).any(|_| {
        let bad = s
            .ssh(
                &s.alice_key,
                "127.0.0.5",
                "bob:web",
                false,
                Some("true"),
                30,
            )
            .output()
            .unwrap();
        assert_eq!(bad.status.code(), Some(255), "{bad:?}");
        let out = s.as_a_person(&s.alice_key, "127.0.0.5", "alice:web", "echo in");
        out.status.code() == Some(255)
            && text(&out.stderr).contains("warden: too many failed sign-ins")
    });
    assert!(refused_too, "a throttled address signed in");
    let out = s.as_a_person(&s.alice_key, "127.0.0.6", "alice:web", "echo in");
    assert_eq!(text(&out.stdout).trim(), "in", "{out:?}");
}

/// Connections past the limit on those waiting to sign in are closed at once and counted;
/// the server's log sums them up in one line rather than a line each.
#[test]
fn refused_connections_are_counted_not_logged_each() {
    let s = Setup::start();
    const WAITING: usize = 32;
    const OVER: usize = 200;
    let connect = || {
        let socket = connect_from(s.port, "127.0.0.7");
        socket
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        socket
    };
    let held: Vec<TcpStream> = (0..WAITING).map(|_| connect()).collect();
    for _ in 0..OVER {
        let mut refused = connect();
        let mut sink = Vec::new();
        // Closed at once: an end of file (or a reset), not the proxy's greeting.
        match refused.read_to_end(&mut sink) {
            Ok(_) => assert!(sink.is_empty(), "{}", text(&sink)),
            Err(e) => assert!(
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "a refused connection was left open: {e}"
            ),
        }
    }
    let counted = s.metric("warden_ssh_connections_refused_total{reason=\"waiting_per_address\"}");
    assert!(counted >= OVER as f64, "{counted}");
    let log = s.env.server.stderr();
    let lines = log
        .lines()
        .filter(|l| l.contains("ssh connection") && l.contains("refused"))
        .count();
    assert_eq!(lines, 1, "{log}");
    assert!(
        !log.contains("127.0.0.7"),
        "a refusal's line names its peer: {log}"
    );
    // Another address still gets in.
    let grant = create(&s.alice, "web", "view", &[]);
    assert_eq!(grant["state"], "active", "{grant}");
    let out = s.as_a_person(&s.alice_key, "127.0.0.8", "alice:web", "echo in");
    assert_eq!(text(&out.stdout).trim(), "in", "{out:?}");
    drop(held);
}

/// A TCP connection to the proxy on `port` from `from` (a loopback address).
fn connect_from(port: u16, from: &str) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::new(from.parse().unwrap(), 0))
            .unwrap();
        socket
            .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap()
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}
