//! What a start, or an offline command, checks of its data dir before it serves or writes: the
//! links in it, the audit key against the log, `--dev` against a config's data dir, a missing
//! master key, and a disk too full for the database to open.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use warden_testkit::{Cli, CliOutput, Server};

/// Starts a real server on `data` and stops it cleanly: a data dir that has served.
fn served(data: &Path) {
    let mut server = Server::start_in(Path::new(BIN), data, &["serve"], &[]);
    assert!(server.terminate().success(), "{}", server.stderr());
}

/// `warden ARGS`, with none of the test's own `WARDEN_*` variables.
fn warden(args: &[&str]) -> CliOutput {
    Cli::new(Path::new(BIN), "http://127.0.0.1:9").run(args, None)
}

/// `warden serve ARGS` on any free ports, expected to refuse before it serves with exit code
/// `code`: its stderr. Cut off after 20 s, should it serve after all.
fn serve_refused(args: &[&str], code: i32) -> String {
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["20", BIN, "serve"]).args(args).args([
        "--listen",
        "127.0.0.1:0",
        "--ssh-listen",
        "127.0.0.1:0",
    ]);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WARDEN_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    stderr
}

#[test]
fn a_data_dir_entry_that_is_a_link_is_judged_by_where_it_leads() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    served(&data);
    // The keys and the database moved to a directory anyone may write, and linked back: anyone
    // could rename them there and put their own in place.
    let public = dir.path().join("pub");
    std::fs::create_dir(&public).unwrap();
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o777)).unwrap();
    for name in [
        "warden.db",
        "master.key",
        "audit_signing.key",
        "ssh_user_ca",
    ] {
        std::fs::rename(data.join(name), public.join(name)).unwrap();
        std::os::unix::fs::symlink(public.join(name), data.join(name)).unwrap();
    }
    let _ = std::fs::remove_file(data.join("warden.db-wal"));
    let _ = std::fs::remove_file(data.join("warden.db-shm"));
    let said = serve_refused(&["--data-dir", data.to_str().unwrap()], 1);
    // As a link to the policy is judged, in the same words.
    let why = format!(
        "the directory {} above it is writable by group or others (mode 777)",
        public.display()
    );
    assert!(
        said.contains(&format!("data dir {}", data.display())),
        "{said}"
    );
    assert!(said.contains(&why), "{said}");
    assert!(
        said.contains(&format!("run chmod go-w on {}", public.display())),
        "{said}"
    );
    // So does an offline command that writes into the data dir.
    let out = warden(&["vault", "rewrap", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains(&why), "{out:?}");
    assert!(!data.join("master.key.new").exists());
    // The same links into a directory only the server's user may write are the operator's
    // choice, and served.
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o755)).unwrap();
    served(&data);
}

#[test]
fn a_log_is_not_signed_on_by_another_data_dirs_key_when_its_verifier_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = (dir.path().join("ours"), dir.path().join("theirs"));
    served(&ours);
    served(&theirs);
    let key = ours.join("audit_signing.key");
    let verifier = ours.join("audit_verifier.pub");
    let note = ours.join("audit_checkpoint.note");
    let (own_key, own_verifier) = (
        std::fs::read(&key).unwrap(),
        std::fs::read_to_string(&verifier).unwrap(),
    );
    std::fs::copy(theirs.join("audit_signing.key"), &key).unwrap();
    // Neither file that names the log's key is left to compare it with: the stored
    // checkpoints still are.
    std::fs::remove_file(&verifier).unwrap();
    std::fs::remove_file(&note).unwrap();
    let said = serve_refused(&["--data-dir", ours.to_str().unwrap()], 1);
    assert!(
        said.contains(&format!(
            "Not started: {} is not the key that signed this log",
            key.display()
        )),
        "{said}"
    );
    assert!(said.contains("signed by another key"), "{said}");
    assert!(said.contains("Restore the key from your backup"), "{said}");
    // Refused before anything was written: the verifier does not name the wrong key.
    assert!(!verifier.exists(), "the refused start wrote {verifier:?}");
    assert!(!note.exists());
    // The right key put back, the data dir serves again, its verifier as it was.
    std::fs::write(&key, own_key).unwrap();
    served(&ours);
    assert_eq!(std::fs::read_to_string(&verifier).unwrap(), own_verifier);
}

#[test]
fn dev_refuses_a_config_that_sets_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let configured = dir.path().join("configured");
    let config = dir.path().join("warden.toml");
    std::fs::write(
        &config,
        format!("data_dir = {:?}\n", configured.to_str().unwrap()),
    )
    .unwrap();
    // A usage error: served from a temporary dir instead, its data would be deleted at exit.
    let said = serve_refused(&["--dev", "--config", config.to_str().unwrap()], 1);
    assert!(
        said.contains(&format!("the config {} sets `data_dir`", config.display())),
        "{said}"
    );
    assert!(
        said.contains("`--dev` serves from a temporary data dir"),
        "{said}"
    );
    assert!(said.contains("remove `data_dir` from the config"), "{said}");
    assert!(said.contains("start without --dev"), "{said}");
    assert!(!configured.exists());
}

#[test]
fn a_rotation_without_the_master_key_says_where_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    served(&data);
    std::fs::remove_file(data.join("master.key")).unwrap();
    let out = warden(&["vault", "rewrap", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "{} does not exist: restore the master key from your backup",
            data.join("master.key").display()
        )),
        "{out:?}"
    );
    assert!(out.stderr.contains("or set WARDEN_MASTER_KEY"), "{out:?}");
    assert!(!data.join("master.key").exists());
    assert!(!data.join("master.key.new").exists());
}

/// A small tmpfs, unmounted when dropped.
struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0)
            .status();
    }
}

#[test]
fn a_start_on_a_full_disk_says_the_disk_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    served(&data);
    let disk = dir.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&disk)
        .output()
        .unwrap();
    if !mounted.status.success() {
        // Mounting needs privileges a test run may lack; the wording itself is checked by
        // the server's unit tests.
        eprintln!(
            "skipped: cannot mount a tmpfs here: {}",
            String::from_utf8_lossy(&mounted.stderr)
        );
        return;
    }
    let _unmount = Mounted(&disk);
    let copied = disk.join("data");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&data)
        .arg(&copied)
        .status()
        .unwrap();
    assert!(cp.success());
    let _ = std::fs::remove_file(copied.join("warden.db-wal"));
    let _ = std::fs::remove_file(copied.join("warden.db-shm"));
    // Fill the disk but for 16 KiB: too little for SQLite's shared-memory file.
    let free = free_on(&disk);
    let fill = vec![0u8; usize::try_from(free - 16 * 1024).unwrap()];
    std::fs::write(disk.join("fill"), fill).unwrap();
    let said = serve_refused(&["--data-dir", copied.to_str().unwrap()], 1);
    assert!(said.contains("disk I/O error"), "{said}");
    assert!(
        said.contains("most likely the disk is (nearly) full: the data dir's disk has"),
        "{said}"
    );
    assert!(said.contains("KiB free"), "{said}");
    assert!(said.contains("free space or grow the disk"), "{said}");
}

/// Bytes free on the disk holding `dir`, as `df` says.
fn free_on(dir: &Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
