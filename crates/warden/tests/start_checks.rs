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
    let mut args = args.to_vec();
    for flag in ["--listen", "--ssh-listen"] {
        if !args.contains(&flag) {
            args.extend([flag, "127.0.0.1:0"]);
        }
    }
    serve_exits(&args, code)
}

/// `warden serve ARGS` as given, expected to end with exit code `code`: its stderr.
fn serve_exits(args: &[&str], code: i32) -> String {
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["20", BIN, "serve"]).args(args);
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
    let said = serve_refused(&["--dev", "--config", config.to_str().unwrap()], 2);
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

/// A config file that cannot be read, does not parse or says something invalid is invalid
/// input (exit code 2, as the README's table gives it), refused before the data dir is made;
/// what the start finds on this machine (an address in use, a data dir it cannot make, a
/// config file others may change) is a failure (1).
#[test]
fn invalid_configuration_is_invalid_input_and_what_the_machine_refuses_is_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let config = dir.path().join("warden.toml");
    let config_arg = config.to_str().unwrap();
    let port = warden_testkit::free_port();
    let nowhere = dir.path().join("no-policy");
    let a_file = dir.path().join("policy-file");
    std::fs::write(&a_file, "").unwrap();
    let invalid = [
        ("", "cannot read config file"),
        (
            "listen = \"127.0.0.1:8443\"\nlisten = ",
            "line 2, column 10",
        ),
        (
            "listen = \"localhost:8443\"\n",
            "\"localhost:8443\" is not an IP address and port",
        ),
        ("token_tl = \"8h\"\n", "unknown field `token_tl`"),
        (
            "[users.ann]\nmanager = \"ben\"\n[users.ben]\nmanager = \"ann\"\n",
            "users ann \u{2192} ben \u{2192} ann name each other as manager in a cycle",
        ),
        (
            &format!("listen = \"127.0.0.1:{port}\"\nssh_listen = \"127.0.0.1:{port}\"\n"),
            "are on the same port",
        ),
        (
            &format!("policy_dir = {:?}\n", nowhere.to_str().unwrap()),
            "does not exist: create it with your policy",
        ),
        (
            &format!("policy_dir = {:?}\n", a_file.to_str().unwrap()),
            "is not a directory: point `policy_dir` at the directory holding your policy",
        ),
    ];
    for (text, said) in invalid {
        // An empty text stands for no file at all.
        let _ = std::fs::remove_file(&config);
        if !text.is_empty() {
            std::fs::write(&config, text).unwrap();
        }
        let args = ["--config", config_arg, "--data-dir", data_arg];
        // The clash is the config's own: no flag may override its addresses.
        let stderr = if said.contains("same port") {
            serve_exits(&args, 2)
        } else {
            serve_refused(&args, 2)
        };
        assert!(stderr.contains(said), "{text}: {stderr}");
        assert!(
            stderr.contains(&format!("config file {config_arg}")),
            "{text}: {stderr}"
        );
        assert!(!data.exists(), "{text}: the refused start left {data:?}");
    }
    // With --dev, the options contradicting the config are invalid input too.
    std::fs::write(&config, "[users.bob]\ngroups = [\"sre\"]\n").unwrap();
    let stderr = serve_refused(&["--dev", "--config", config_arg], 2);
    assert!(
        stderr.contains("defines bob, which `--dev` defines"),
        "{stderr}"
    );

    // A valid config on an address in use: the machine's doing.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let in_use = taken.local_addr().unwrap().to_string();
    std::fs::write(&config, format!("listen = {in_use:?}\n")).unwrap();
    // The config's address, which no `--listen` overrides.
    let stderr = serve_exits(
        &[
            "--config",
            config_arg,
            "--data-dir",
            data_arg,
            "--ssh-listen",
            "127.0.0.1:0",
        ],
        1,
    );
    assert!(
        stderr.contains(&format!("cannot listen on {in_use}"))
            && stderr.contains("another process listens there")
            && stderr.contains("--listen or `listen` in the config"),
        "{stderr}"
    );
    // The SSH proxy's address in use: the same message, naming its own setting.
    let stderr = serve_exits(
        &[
            "--config",
            config_arg,
            "--data-dir",
            data_arg,
            "--listen",
            "127.0.0.1:0",
            "--ssh-listen",
            &in_use,
        ],
        1,
    );
    assert!(
        stderr.contains(&format!("cannot listen on {in_use}"))
            && stderr.contains("another process listens there")
            && stderr.contains("--ssh-listen or `ssh_listen` in the config"),
        "{stderr}"
    );
    drop(taken);
    // A data dir that cannot be made: below a file, not a directory.
    std::fs::write(&config, "").unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let below = file.join("data");
    let stderr = serve_refused(
        &[
            "--config",
            config_arg,
            "--data-dir",
            below.to_str().unwrap(),
        ],
        1,
    );
    assert!(
        stderr.contains(&format!("cannot create data dir {}", below.display()))
            && stderr.contains("--data-dir or `data_dir` in the config"),
        "{stderr}"
    );
    // A config file others may change is refused as a data dir others may change is.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o666)).unwrap();
    let stderr = serve_refused(&["--config", config_arg, "--data-dir", data_arg], 1);
    assert!(stderr.contains("writable by group or others"), "{stderr}");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(!data.exists());
    // On a read-only disk, where even root cannot write, when one can be mounted here.
    let disk = dir.path().join("ro");
    std::fs::create_dir(&disk).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
        .arg(&disk)
        .output()
        .unwrap();
    if !mounted.status.success() {
        eprintln!(
            "read-only disk skipped: cannot mount a tmpfs here: {}",
            String::from_utf8_lossy(&mounted.stderr)
        );
        return;
    }
    let _unmount = Mounted(&disk);
    let stderr = serve_refused(
        &[
            "--config",
            config_arg,
            "--data-dir",
            disk.join("data").to_str().unwrap(),
        ],
        1,
    );
    assert!(stderr.contains("Read-only file system"), "{stderr}");
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
