//! Where the client keeps its login and keys: only where no one else could have put theirs. A
//! `WARDEN_HOME`, its `ssh/` folder or the saved login that another user owns, or that group or
//! others may write, is refused (exit code 2), and a login saved there is never used: its
//! server could be anyone's, and `warden login` would send it the password.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

/// A listener standing for a server someone else runs, where a planted login sends the client.
struct Decoy(TcpListener);

impl Decoy {
    fn new() -> Decoy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Decoy(listener)
    }

    fn url(&self) -> String {
        format!("http://{}", self.0.local_addr().unwrap())
    }

    /// Whether anything connected to it so far.
    fn reached(&self) -> bool {
        self.0.accept().is_ok()
    }
}

/// `warden ARGS` with `WARDEN_HOME=home`, `stdin` fed, and no other `WARDEN_*` setting.
fn run(home: &Path, args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.arg("30").arg(BIN).args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WARDEN_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .env("WARDEN_HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn login(home: &Path) -> Output {
    run(
        home,
        &["login", "--user", "alice", "--password-stdin"],
        PASSWORD,
    )
}

/// `request create`, which makes its key in `WARDEN_HOME/ssh` before it asks `server`.
fn request(home: &Path, server: &str) -> Output {
    let args = [
        "request", "create", "web", "--role", "view", "--reason", "r", "--ttl", "5m", "--server",
        server,
    ];
    run(home, &args, "")
}

/// Asserts `out` refused `path` (exit code 2) for `why`, saying to do `fix`.
fn refused(out: &Output, path: &Path, why: &str, fix: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let named = [":", " of "].map(|after| format!(" {}{after}", path.display()));
    let named = named.iter().find(|n| stderr.contains(n.as_str()));
    assert!(named.is_some(), "{}: {stderr}", path.display());
    for said in [why, fix] {
        assert!(stderr.contains(said), "{said:?}: {stderr}");
    }
}

/// A saved login naming `server`, as `warden login` writes it (mode 0600).
fn plant(home: &Path, server: &str) -> PathBuf {
    let saved = home.join("credentials.json");
    let login = serde_json::json!({
        "server": server,
        "user": "alice",
        "token": format!("wdn_{}", "A".repeat(43)),
        "expires_at": "2999-01-01T00:00:00Z",
    });
    std::fs::write(&saved, login.to_string()).unwrap();
    chmod(&saved, 0o600);
    saved
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A new home is made private, and a home, folder or saved login group or others may write is
/// refused, its login never sent anywhere; a directory others share (like `/tmp`) is no home.
#[test]
fn a_home_others_may_write_is_refused_and_its_login_never_used() {
    let env = Env::start();
    let dir = tempfile::tempdir().unwrap();
    let url = env.server.url();
    let fresh = dir.path().join("new").join("alice");
    // A home the client makes is the user's alone, and so is its ssh folder.
    let out = run(
        &fresh,
        &[
            "login",
            "--user",
            "alice",
            "--password-stdin",
            "--server",
            &url,
        ],
        PASSWORD,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o7777, 0o700);
    let out = request(&fresh, &url);
    assert!(out.status.success(), "{out:?}");
    let ssh = fresh.join("ssh");
    assert_eq!(std::fs::metadata(&ssh).unwrap().mode() & 0o7777, 0o700);

    let decoy = Decoy::new();
    let home = dir.path().join("open");
    std::fs::create_dir(&home).unwrap();
    let saved = plant(&home, &decoy.url());
    for (mode, fix) in [
        (0o777, format!("chmod 700 {}", home.display())),
        (0o770, format!("chmod 700 {}", home.display())),
        // Shared like /tmp: no chmod of it is the user's to make.
        (0o1777, "directory of your own".to_owned()),
    ] {
        chmod(&home, mode);
        let out = login(&home);
        refused(&out, &home, &format!("(mode {mode:o})"), &fix);
        assert!(
            mode != 0o1777 || !String::from_utf8_lossy(&out.stderr).contains("chmod"),
            "{out:?}"
        );
        refused(&run(&home, &["whoami"], ""), &home, "may write to it", "");
    }
    assert!(
        !decoy.reached(),
        "the password went to the planted login's server"
    );
    // The saved login itself, written by others, is not read.
    chmod(&home, 0o700);
    chmod(&saved, 0o666);
    refused(
        &login(&home),
        &saved,
        "(mode 666)",
        &format!("rm {}", saved.display()),
    );
    assert!(
        !decoy.reached(),
        "the password went to the planted login's server"
    );
    // Nor a folder of keys others may write.
    chmod(&saved, 0o600);
    std::fs::create_dir(home.join("ssh")).unwrap();
    chmod(&home.join("ssh"), 0o777);
    refused(
        &request(&home, &decoy.url()),
        &home.join("ssh"),
        "(mode 777)",
        &format!("chmod 700 {}", home.join("ssh").display()),
    );
    assert!(
        !decoy.reached(),
        "the token went to the planted login's server"
    );
    // One only others may read is made private again, and used.
    chmod(&fresh.join("credentials.json"), 0o644);
    let out = run(&fresh, &["whoami"], "");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("it is 600 now"),
        "{out:?}"
    );
    // A logout refused for a folder others may write leaves the login as it was: not revoked
    // behind the error.
    chmod(&ssh, 0o777);
    refused(
        &run(&fresh, &["logout"], ""),
        &ssh,
        "(mode 777)",
        &format!("chmod 700 {}", ssh.display()),
    );
    chmod(&ssh, 0o700);
    let out = run(&fresh, &["whoami"], "");
    assert!(out.status.success(), "{out:?}");
    let out = run(&fresh, &["logout"], "");
    assert!(out.status.success(), "{out:?}");
}

/// A home below a folder others may write (without the sticky bit) is refused, as sshd refuses
/// `authorized_keys` there: whoever may write that folder could swap the home between the
/// client's look at it and its use. The home is judged where it leads, `home/` as `home`.
#[test]
fn a_home_below_a_folder_others_may_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let home = shared.join("home");
    std::fs::create_dir_all(&home).unwrap();
    chmod(&home, 0o700);
    let decoy = Decoy::new();
    plant(&home, &decoy.url());
    chmod(&shared, 0o777);
    for given in [home.clone(), PathBuf::from(format!("{}/", home.display()))] {
        let out = run(&given, &["whoami"], "");
        refused(
            &out,
            &home,
            &format!("{} may be written", shared.display()),
            "mktemp -d",
        );
    }
    // Through a link from a private folder, the same home is still where it is.
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    chmod(&private, 0o700);
    let link = private.join("home");
    std::os::unix::fs::symlink(&home, &link).unwrap();
    let stderr = String::from_utf8_lossy(&run(&link, &["whoami"], "").stderr).into_owned();
    assert!(
        stderr.contains(&format!("{} may be written", shared.display())),
        "{stderr}"
    );
    assert!(
        !decoy.reached(),
        "the token went to the planted login's server"
    );
    // Shared with the sticky bit (like /tmp), a folder of one's own below it is fine: its
    // login is read (past its expiry, it is not sent, and `logout` just removes it).
    chmod(&shared, 0o1777);
    let saved = home.join("credentials.json");
    let text = std::fs::read_to_string(&saved).unwrap();
    std::fs::write(&saved, text.replace("2999-01-01", "2001-01-01")).unwrap();
    let out = run(&home, &["logout"], "");
    assert!(out.status.success(), "{out:?}");
    assert!(!saved.exists());
}

/// Whether these tests run as root, who alone can give a file to another user: the owner of a
/// file they make.
fn as_root() -> bool {
    let probe = tempfile::tempdir().unwrap();
    std::fs::metadata(probe.path()).unwrap().uid() == 0
}

/// A home, a folder of keys or a saved login another user owns is refused, however private its
/// mode: its owner may put there what they like.
#[test]
fn a_home_another_user_owns_is_refused_and_its_login_never_used() {
    if !as_root() {
        eprintln!("skipped: only root can give a home to another user");
        return;
    }
    const NOBODY: u32 = 65534;
    let decoy = Decoy::new();
    let dir = tempfile::tempdir().unwrap();
    // Another user made the home the caller names, shared like /tmp, and left a login there.
    let home = dir.path().join("h");
    std::fs::create_dir(&home).unwrap();
    let saved = plant(&home, &decoy.url());
    std::os::unix::fs::chown(&home, Some(NOBODY), None).unwrap();
    std::os::unix::fs::chown(&saved, Some(NOBODY), None).unwrap();
    chmod(&home, 0o1777);
    refused(
        &login(&home),
        &home,
        "owned by uid 65534",
        "directory of your own",
    );
    // However private it is.
    chmod(&home, 0o700);
    refused(
        &login(&home),
        &home,
        "owned by uid 65534",
        "directory of your own",
    );
    // The home is the caller's, the login in it another user's.
    std::os::unix::fs::chown(&home, Some(0), None).unwrap();
    refused(
        &login(&home),
        &saved,
        "owned by uid 65534",
        &format!("rm {}", saved.display()),
    );
    assert!(
        !decoy.reached(),
        "the password went to the planted login's server"
    );
    // A folder of keys another user owns.
    std::os::unix::fs::chown(&saved, Some(0), None).unwrap();
    let ssh = home.join("ssh");
    std::fs::create_dir(&ssh).unwrap();
    chmod(&ssh, 0o700);
    std::os::unix::fs::chown(&ssh, Some(NOBODY), None).unwrap();
    refused(
        &request(&home, &decoy.url()),
        &ssh,
        "owned by uid 65534",
        "mv",
    );
    assert!(
        !decoy.reached(),
        "the token went to the planted login's server"
    );
}
