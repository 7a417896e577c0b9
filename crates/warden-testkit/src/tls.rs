//! TLS for test servers on 127.0.0.1: [`TestCa`], a throwaway CA and a server certificate for
//! `127.0.0.1` made with `openssl`, and [`TlsFront`], `socat` terminating TLS with it and
//! forwarding each connection in clear to a local port. A front turns a plain receiver (a
//! [`crate::WebhookReceiver`]) into an `https://` one whose CA only the test trusts, to prove a
//! client verifies the certificate it is shown.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

use crate::free_port;
use crate::process::wait_listening;

/// A new P-256 key, unencrypted, for `openssl req`.
const NEW_KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";

/// A CA and the certificate it issued to `127.0.0.1`, in a temporary directory.
#[derive(Debug)]
pub struct TestCa {
    dir: TempDir,
}

impl TestCa {
    /// Makes both with `openssl` (P-256 keys, valid for two days).
    pub fn new() -> TestCa {
        let dir = tempfile::Builder::new()
            .prefix("warden-tls-")
            .tempdir()
            .expect("a temp dir for the test CA");
        let d = dir.path();
        openssl(
            d,
            &format!(
                "req -x509 {NEW_KEY} -keyout ca.key -out ca.pem -days 2 -subj /CN=warden-test-CA \
                 -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign"
            ),
        );
        openssl(
            d,
            &format!("req {NEW_KEY} -keyout server.key -out server.csr -subj /CN=127.0.0.1"),
        );
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .expect("writing the certificate's extensions");
        openssl(
            d,
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
             -days 2 -extfile server.ext",
        );
        TestCa { dir }
    }

    /// The CA's certificate (PEM): what a client must trust.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server's certificate (PEM), for 127.0.0.1.
    pub fn cert_file(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server's private key (PEM).
    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// A running front; stopped when dropped.
#[derive(Debug)]
pub struct TlsFront {
    port: u16,
    child: Child,
    ca: TestCa,
}

impl TlsFront {
    /// Starts `socat` on a free port with a new [`TestCa`]'s certificate, forwarding to
    /// `backend` on 127.0.0.1.
    pub fn start(backend: u16) -> TlsFront {
        let ca = TestCa::new();
        let port = free_port();
        let child = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={},key={}",
                ca.cert_file().display(),
                ca.key_file().display()
            ))
            .arg(format!("TCP:127.0.0.1:{backend}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting socat (Debian's socat)");
        let mut front = TlsFront { port, child, ca };
        wait_listening(&mut front.child, port, "socat, the TLS front");
        front
    }

    /// `https://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/hook", self.port)
    }

    /// The PEM file of the CA that issued the front's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.ca.ca_file()
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `openssl` in `dir` with `args`, split at whitespace.
fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
