//! A private OpenSSH server for certificate-login tests, plus the local-user
//! and `ssh` client helpers that go with it.
//!
//! The server is set up as the README tells a host's administrator: it trusts one user CA
//! given by the caller and, as the host of one Warden target, takes a certificate for local
//! user `U` only when it carries the principal `TARGET:U` (`AuthorizedPrincipalsCommand`).

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::free_port;
use crate::process::{POLL, read_lossy, run_bounded};

const SSHD: &str = "/usr/sbin/sshd";
const READY_LIMIT: Duration = Duration::from_secs(10);
const PORT_ATTEMPTS: usize = 3;

/// A running `sshd` on 127.0.0.1, killed when dropped.
#[derive(Debug)]
pub struct Sshd {
    dir: TempDir,
    port: u16,
    child: Child,
    host_public_key: String,
}

impl Sshd {
    /// Starts sshd on a free port as the host of Warden target `target`, trusting
    /// `ca_public_key` (one OpenSSH public key line) as the user CA, and waits until the port
    /// accepts connections. Panics with sshd's log if it does not within 10 s.
    pub fn start(ca_public_key: &str, target: &str) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} not found: install openssh-server (scripts/test does)"
        );
        fs::create_dir_all("/run/sshd")
            .expect("creating /run/sshd (sshd's privilege-separation directory)");

        let dir = tempfile::Builder::new()
            .prefix("warden-sshd-")
            .tempdir()
            .expect("creating a temp dir for sshd");
        set_mode(dir.path(), 0o755);

        let host_key = dir.path().join("ssh_host_ed25519_key");
        let (_, host_public_key) = ssh_keypair_at(&host_key, "warden-testkit-host");
        let ca_file = dir.path().join("user_ca.pub");
        fs::write(&ca_file, format!("{}\n", ca_public_key.trim()))
            .expect("writing the user CA public key");
        set_mode(&ca_file, 0o644);
        // sshd reads the revoked keys list at every login; it starts empty.
        let revoked = dir.path().join("revoked_keys");
        fs::write(&revoked, "").expect("writing the revoked keys file");
        set_mode(&revoked, 0o644);

        let log = dir.path().join("sshd.log");
        for attempt in 1..=PORT_ATTEMPTS {
            let port = free_port();
            let config = dir.path().join("sshd_config");
            fs::write(
                &config,
                sshd_config(dir.path(), port, &host_key, &ca_file, target),
            )
            .expect("writing sshd_config");
            let mut child = Command::new(SSHD)
                .arg("-D")
                .arg("-f")
                .arg(&config)
                .arg("-E")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {SSHD}: {e}"));

            let deadline = Instant::now() + READY_LIMIT;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    let text = read_lossy(&log);
                    if text.contains("Address already in use") && attempt < PORT_ATTEMPTS {
                        break; // someone took the port in between: try another
                    }
                    panic!(
                        "sshd exited before accepting connections ({status})\n--- sshd log ---\n{text}"
                    );
                }
                if TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), POLL)
                    .is_ok()
                {
                    return Sshd {
                        dir,
                        port,
                        child,
                        host_public_key,
                    };
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "sshd did not accept connections on 127.0.0.1:{port} within {} s\n--- sshd log ---\n{}",
                        READY_LIMIT.as_secs(),
                        read_lossy(&log)
                    );
                }
                thread::sleep(POLL);
            }
        }
        unreachable!("every attempt either returns, retries or panics")
    }

    /// The port sshd listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory holding sshd's config, keys and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file sshd's `RevokedKeys` names: a key revocation list or public keys, one per line.
    pub fn revoked_keys_path(&self) -> PathBuf {
        self.dir.path().join("revoked_keys")
    }

    /// Everything sshd has logged so far (it logs at VERBOSE).
    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("sshd.log"))
    }

    /// The server's host public key, `ssh-ed25519 AAAA...`.
    pub fn host_public_key(&self) -> &str {
        &self.host_public_key
    }

    /// A `known_hosts` line for this server: `[127.0.0.1]:PORT ssh-ed25519 AAAA...`.
    pub fn host_key_line(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.port, self.host_public_key)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sshd_config(dir: &Path, port: u16, host_key: &Path, ca_file: &Path, target: &str) -> String {
    format!(
        "ListenAddress 127.0.0.1\n\
         Port {port}\n\
         HostKey {host_key}\n\
         PidFile {pid}\n\
         UsePAM no\n\
         StrictModes no\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PubkeyAuthentication yes\n\
         AuthorizedKeysFile none\n\
         TrustedUserCAKeys {ca}\n\
         AuthorizedPrincipalsCommand /bin/echo {target}:%u\n\
         AuthorizedPrincipalsCommandUser nobody\n\
         RevokedKeys {revoked}\n\
         Subsystem sftp internal-sftp\n\
         LogLevel VERBOSE\n",
        host_key = host_key.display(),
        pid = dir.join("sshd.pid").display(),
        ca = ca_file.display(),
        revoked = dir.join("revoked_keys").display(),
    )
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Generates an Ed25519 key pair without a passphrase as `dir/name` and
/// `dir/name.pub`; returns the private key's path (mode 600, as `ssh`
/// requires) and the public key line without its comment.
pub fn ssh_keypair(dir: &Path, name: &str) -> (PathBuf, String) {
    ssh_keypair_at(&dir.join(name), name)
}

fn ssh_keypair_at(path: &Path, comment: &str) -> (PathBuf, String) {
    let out = run_bounded(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path),
        None,
        Duration::from_secs(20),
        "ssh-keygen",
    );
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    set_mode(path, 0o600);
    let public = fs::read_to_string(format!("{}.pub", path.display()))
        .unwrap_or_else(|e| panic!("reading {}.pub: {e}", path.display()));
    let public = public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    (path.to_path_buf(), public)
}

/// Makes sure a local Unix user `name` exists and can log in with a key.
///
/// Creates it with `useradd -m -s /bin/sh` if absent, then sets its password
/// field to `*`: a locked account (`!`) is refused even for key logins when
/// sshd runs without PAM. Needs root. Safe to call from tests running in
/// parallel: contention on the user database is retried for up to 10 s.
pub fn ensure_local_user(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last_error = String::new();
    while Instant::now() < deadline {
        if !user_exists(name) {
            let out = run_bounded(
                Command::new("useradd").args(["-m", "-s", "/bin/sh", name]),
                None,
                Duration::from_secs(20),
                "useradd",
            );
            if !out.status.success() {
                last_error = String::from_utf8_lossy(&out.stderr).into_owned();
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        if password_field(name).as_deref() == Some("*") {
            return;
        }
        let out = run_bounded(
            Command::new("usermod").args(["-p", "*", name]),
            None,
            Duration::from_secs(20),
            "usermod",
        );
        if out.status.success() {
            return;
        }
        last_error = String::from_utf8_lossy(&out.stderr).into_owned();
        thread::sleep(Duration::from_millis(100));
    }
    panic!("could not create or unlock local user {name:?} (tests must run as root): {last_error}");
}

fn user_exists(name: &str) -> bool {
    Command::new("id")
        .args(["-u", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn password_field(name: &str) -> Option<String> {
    let out = Command::new("getent")
        .args(["shadow", name])
        .output()
        .ok()?;
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    line.split(':').nth(1).map(str::to_owned)
}

/// Logs in to `127.0.0.1:port` as `user` with the real `ssh` client, using
/// the private key at `key_path` and the certificate at `cert_path`, and runs
/// `command`. Bounded to 20 s by `timeout` (exit status 124 then).
///
/// Host keys are not checked and no user config is read. `ssh` refuses a
/// private key readable by group or others, so keep it at mode 600.
pub fn ssh_login(
    port: u16,
    user: &str,
    key_path: &Path,
    cert_path: &Path,
    command: &str,
) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.args(["20", "ssh", "-F", "/dev/null"])
        .args(["-o", "BatchMode=yes"])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "LogLevel=ERROR"])
        .args(["-o", "ConnectTimeout=10"])
        .args(["-o", "IdentitiesOnly=yes"])
        .arg("-o")
        .arg(format!("CertificateFile={}", cert_path.display()))
        .arg("-i")
        .arg(key_path)
        .args(["-p", &port.to_string()])
        .arg(format!("{user}@127.0.0.1"))
        .arg(command);
    run_bounded(&mut cmd, None, Duration::from_secs(30), "ssh")
}

/// The `ssh` options every test connection uses: no user config, no prompts, no host key
/// checks (the tests check Warden's pinning, not the client's), bounded connect time.
pub fn ssh_base_args(port: u16, key_path: &Path) -> Vec<String> {
    [
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "IdentitiesOnly=yes",
        "-i",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([
        key_path.display().to_string(),
        "-p".to_owned(),
        port.to_string(),
    ])
    .collect()
}

/// [`ssh_base_args`] as a person runs ssh, not a script: no batch mode and the client's
/// default log level, which show what the server says at sign-in.
pub fn ssh_person_args(port: u16, key_path: &Path) -> Vec<String> {
    ssh_base_args(port, key_path)
        .into_iter()
        .map(|a| match a.as_str() {
            "BatchMode=yes" => "BatchMode=no".to_owned(),
            "LogLevel=ERROR" => "LogLevel=INFO".to_owned(),
            _ => a,
        })
        .collect()
}

/// Runs `ssh -p port LOGIN@127.0.0.1 command` with the private key at `key_path`, bounded
/// to 30 s (exit status 124 then).
pub fn ssh_run(port: u16, login: &str, key_path: &Path, command: &str) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.arg("30")
        .arg("ssh")
        .args(ssh_base_args(port, key_path))
        .arg(format!("{login}@127.0.0.1"))
        .arg(command);
    run_bounded(&mut cmd, None, Duration::from_secs(40), "ssh")
}
