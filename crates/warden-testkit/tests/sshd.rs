//! Proves the sshd harness on this machine: a real OpenSSH login with a
//! certificate from a throwaway CA, and refusals for what must be refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use warden_testkit::{Sshd, ensure_local_user, ssh_keypair, ssh_login};

const USER: &str = "warden-kit";
/// What a Warden certificate for USER at target `kit` carries.
const PRINCIPAL: &str = "kit:warden-kit";

/// Signs `key.pub` with the CA at `ca` for `principal`, valid for 5 minutes;
/// returns the certificate's path.
fn sign(ca: &Path, key: &Path, principal: &str) -> PathBuf {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(ca)
        .args(["-I", "test", "-n", principal, "-V", "+5m"])
        .arg(format!("{}.pub", key.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen -s failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(format!("{}-cert.pub", key.display()))
}

struct Setup {
    _dir: tempfile::TempDir,
    sshd: Sshd,
    ca: PathBuf,
    user_key: PathBuf,
    dir: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (ca, ca_public) = ssh_keypair(dir.path(), "ca");
    let (user_key, _) = ssh_keypair(dir.path(), "user");
    let sshd = Sshd::start(&ca_public, "kit");
    ensure_local_user(USER);
    Setup {
        dir: dir.path().to_path_buf(),
        _dir: dir,
        sshd,
        ca,
        user_key,
    }
}

#[test]
fn certificate_with_allowed_principal_logs_in() {
    let s = setup();
    let cert = sign(&s.ca, &s.user_key, PRINCIPAL);
    let out = ssh_login(s.sshd.port(), USER, &s.user_key, &cert, "echo ok");
    assert!(
        out.status.success(),
        "ssh failed ({}): {}\n--- sshd log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        s.sshd.log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    assert!(
        s.sshd.log().contains("Accepted publickey for warden-kit"),
        "{}",
        s.sshd.log()
    );
    assert!(
        s.sshd
            .host_key_line()
            .starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 AAAA", s.sshd.port()))
    );
}

#[test]
fn certificate_with_other_principal_is_refused() {
    let s = setup();
    // The same account at another target.
    let cert = sign(&s.ca, &s.user_key, &format!("other:{USER}"));
    let out = ssh_login(s.sshd.port(), USER, &s.user_key, &cert, "echo ok");
    assert_eq!(
        out.status.code(),
        Some(255),
        "login must be refused: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());
    assert!(
        s.sshd
            .log()
            .contains("Certificate does not contain an authorized principal"),
        "{}",
        s.sshd.log()
    );
}

#[test]
fn certificate_from_another_ca_is_refused() {
    let s = setup();
    let (other_ca, _) = ssh_keypair(&s.dir, "other-ca");
    let cert = sign(&other_ca, &s.user_key, PRINCIPAL);
    let out = ssh_login(s.sshd.port(), USER, &s.user_key, &cert, "echo ok");
    assert_eq!(
        out.status.code(),
        Some(255),
        "login must be refused: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
}
