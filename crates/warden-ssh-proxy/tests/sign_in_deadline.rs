//! The proxy's sign-in deadline holds at every stage a client may stall in: connections that
//! sent their identification string and nothing more are closed at the deadline too, and the
//! places they held among the connections not yet signed in go to others (a real `ssh` from
//! the same address then gets as far as signing in).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use russh::keys::ssh_key::{Certificate, PublicKey};
use warden_domain::audit::Event;
use warden_domain::{RequestId, UserName};
use warden_ssh_proxy::{
    Backend, BackendError, Certified, Denied, FsRecordings, Grant, Listener, ProxyConfig,
    SessionRegistry, load_or_create_host_key,
};

/// Takes any key as alice's and grants nothing: the sign-in is refused, saying so.
#[derive(Debug)]
struct SignsInOnly;

const REFUSAL: &str = "key taken; no grant here";

#[async_trait]
impl Backend for SignsInOnly {
    async fn authenticate(
        &self,
        _key: &PublicKey,
        _source: std::net::IpAddr,
    ) -> Result<Option<UserName>, BackendError> {
        Ok(Some("alice".parse().unwrap()))
    }

    async fn authenticate_certificate(
        &self,
        _cert: &Certificate,
    ) -> Result<Certified, BackendError> {
        Ok(Certified::Foreign)
    }

    async fn authorize(
        &self,
        _user: &UserName,
        _target: &str,
        _login: Option<&str>,
        _grant: Option<RequestId>,
        _source: std::net::IpAddr,
    ) -> Result<Result<Grant, Denied>, BackendError> {
        Ok(Err(Denied {
            code: "no_active_grant",
            message: REFUSAL.into(),
        }))
    }

    async fn still_active(&self, _grant: RequestId) -> Result<bool, BackendError> {
        Ok(false)
    }

    async fn sign(&self, _grant: &Grant, _key: &PublicKey) -> Result<Certificate, BackendError> {
        Err(BackendError("nothing is signed here".into()))
    }

    async fn audit(&self, _events: Vec<Event>) -> Result<(), BackendError> {
        Ok(())
    }
}

/// As many connections as one address may have waiting to sign in.
const WAITING: usize = 32;
const DEADLINE: Duration = Duration::from_secs(1);

/// Starts the proxy on a free loopback port with a one-second sign-in deadline.
async fn proxy(dir: &Path) -> u16 {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let (key, _) = load_or_create_host_key(&dir.join("host_key")).unwrap();
    let config = ProxyConfig {
        backend: Arc::new(SignsInOnly),
        registry: Arc::new(SessionRegistry::default()),
        recordings: Arc::new(FsRecordings::new(dir.join("recordings"))),
        sign_in_deadline: DEADLINE,
        limits: warden_ssh_proxy::Limits::default(),
    };
    tokio::spawn(Listener::new(tcp, key).run(config, std::future::pending()));
    port
}

/// A connection that sends its identification string and then nothing.
fn stalled(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"SSH-2.0-x\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads until the proxy closes `s`; panics if it is still open after the read timeout.
fn closed(mut s: TcpStream) {
    let mut sink = Vec::new();
    if let Err(e) = s.read_to_end(&mut sink) {
        // A reset is as closed as an end of file; only a read that timed out is not.
        assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the connection stayed open past the deadline: {e}"
        );
    }
}

fn keypair(dir: &Path) -> std::path::PathBuf {
    let key = dir.join("id_ed25519");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_stalled_after_their_identification_are_closed_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let port = proxy(dir.path()).await;
    let key = keypair(dir.path());
    let started = Instant::now();
    let connections: Vec<TcpStream> = (0..WAITING).map(|_| stalled(port)).collect();
    tokio::task::spawn_blocking(move || connections.into_iter().for_each(closed))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= DEADLINE,
        "closed before the deadline: {:?}",
        started.elapsed()
    );

    // Their places are free again: a client from the same address gets its key taken, and
    // hears that it holds no grant (which a client in batch mode would not show).
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["30", "ssh", "-F", "/dev/null", "-o", "BatchMode=no"])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-o", "IdentitiesOnly=yes", "-i"])
            .arg(&key)
            .args(["-p", &port.to_string(), "alice:web@127.0.0.1", "true"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("warden: {REFUSAL}")),
        "{out:?}"
    );
}
