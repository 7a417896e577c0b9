//! `warden serve`: start-up, the listener, signals and shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::sync::watch;
use warden_domain::UserName;
use warden_domain::audit::{Actor, Code, Event};
use warden_issuers::Registry;
use warden_issuers::ssh_cert::{SshCertIssuer, UserCa};
use warden_store::{SqliteStore, Store};

use crate::auth::{hash_password, random_password};
use crate::config::{Config, UserConfig};
use crate::keys::{Sealer, audit_signing_key};
use crate::owner_only::{entry_owned_by_others, others_may_change};
use crate::state::{App, Shared, load_served_policy, now};

/// Environment variable that sets the bootstrap admin's password instead of a random one.
pub const BOOTSTRAP_PASSWORD_ENV: &str = "WARDEN_BOOTSTRAP_PASSWORD";

/// The password every demo user has under `--dev`.
pub const DEV_PASSWORD: &str = "warden-dev";

/// Longest a shutdown waits for live SSH sessions to record their end.
const SESSIONS_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// How `warden serve` was invoked.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    /// The SSH proxy's listen address (port 0: any free port).
    pub ssh_listen: Option<SocketAddr>,
    /// Development mode: a throwaway data dir, demo users and the demo policy.
    pub dev: bool,
}

fn demo_users() -> anyhow::Result<Vec<(&'static str, UserConfig)>> {
    let user = |groups: &[&str], manager: Option<&str>| -> anyhow::Result<UserConfig> {
        Ok(UserConfig {
            groups: groups.iter().map(|g| g.parse()).collect::<Result<_, _>>()?,
            manager: manager.map(str::parse).transpose()?,
            password_hash: None,
        })
    };
    Ok(vec![
        ("alice", user(&["dev"], Some("mallory"))?),
        ("bob", user(&["sre"], None)?),
        ("mallory", user(&["managers"], None)?),
        ("sam", user(&["security"], None)?),
        ("admin", user(&["admins"], None)?),
    ])
}

/// Refuses a `--dev` start on a config that defines what `--dev` brings its own of: the demo
/// users and the policy. Replaced without a word, they would decide differently from what the
/// config says, and its author would not know why. A [`BadInvocation`]: the options contradict
/// the config.
fn dev_may_take(config: &Config, file: Option<&std::path::Path>) -> anyhow::Result<()> {
    let demo = demo_users()?;
    let taken: Vec<&str> = demo
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| config.users.keys().any(|u| u.as_str() == *name))
        .collect();
    let file = file.map_or_else(String::new, |f| format!(" {}", f.display()));
    if !taken.is_empty() {
        return Err(BadInvocation(format!(
            "the config{file} defines {}, which `--dev` defines as a demo user: rename them there, or start without --dev",
            taken.join(", ")
        ))
        .into());
    }
    if config.policy_dir.is_some() {
        return Err(BadInvocation(format!(
            "the config{file} sets `policy_dir`, and `--dev` serves its demo policy: remove the setting, or start without --dev to serve that policy"
        ))
        .into());
    }
    Ok(())
}

/// Refuses a `--dev` start without `--data-dir` on a config `file` that sets `data_dir`:
/// `--dev` would serve from a temporary directory instead and delete it at exit, and whoever
/// set the data dir would find nothing of that run in it. Refused as [`dev_may_take`] refuses
/// the config's other settings `--dev` brings its own of.
fn refuse_configured_data_dir(file: &Path) -> anyhow::Result<()> {
    // Read again as a plain table: the parsed config cannot tell the default from a setting.
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading config file {}", file.display()))?;
    let sets = toml::from_str::<toml::Table>(&text).is_ok_and(|t| t.contains_key("data_dir"));
    if sets {
        return Err(BadInvocation(format!(
            "the config {} sets `data_dir`, but `--dev` serves from a temporary data dir, deleted at exit: remove `data_dir` from the config, or start without --dev to serve from it (or give --data-dir to keep a --dev server's data there)",
            file.display()
        ))
        .into());
    }
    Ok(())
}

/// The config's own users that `--dev` gives the demo password (those without a
/// `password_hash`), each with their groups, administrators' included: the banner names them
/// beside the demo users, since anyone who knows the published password can sign in as them.
fn configured_dev_users(config: &Config) -> anyhow::Result<Vec<String>> {
    let demo = demo_users()?;
    Ok(config
        .users
        .iter()
        .filter(|(name, u)| {
            u.password_hash.is_none() && !demo.iter().any(|(d, _)| *d == name.as_str())
        })
        .map(|(name, u)| {
            let groups: Vec<&str> = u.groups.iter().map(|g| g.as_str()).collect();
            if groups.is_empty() {
                name.to_string()
            } else {
                format!("{name} ({})", groups.join(", "))
            }
        })
        .collect())
}

/// Writes the example policy to `dir` whole or not at all: a first start cut short while
/// writing it leaves no policy, and the next one writes it again, where an empty or partial one
/// would be served (or refused) by every start after.
fn write_demo_policy(dir: &Path) -> anyhow::Result<()> {
    // Writable by its owner alone whatever the umask: a served policy must be.
    crate::durable_file::create_dir(dir, &warden_policy::demo_files(), 0o755, 0o644)
}

/// Why an address cannot be listened on, and what to do about it: `setting` names the flag
/// and config key that choose it.
pub(crate) fn listen_refused(
    addr: std::net::SocketAddr,
    setting: &str,
    e: &std::io::Error,
) -> anyhow::Error {
    let fix = match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "another process listens there (`ss -ltnp` names it): stop it, or choose another address with {setting} in the config"
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "ports below 1024 need privileges: choose a port from 1024 up with {setting} in the config"
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            "no interface of this machine has that address: choose one it has (e.g. 127.0.0.1) with {setting} in the config"
        ),
        _ => format!("choose another address with {setting} in the config"),
    };
    anyhow::anyhow!("cannot listen on {addr}: {e}; {fix}")
}

/// Creates the data dir private to the server's user, or checks that no one else may change
/// an existing one ([`others_may_change`]) nor owns anything in it ([`entry_owned_by_others`]):
/// whoever can write it can put a policy of their own in place for the next reload, or swap
/// the database or the keys. Returns what it made, for a refused start to take away.
fn create_private_dir(dir: &Path) -> anyhow::Result<MadeDirs> {
    let made = make_dirs(dir).with_context(|| {
        format!(
            "cannot create data dir {}: give a path under a directory this user may write (--data-dir or `data_dir` in the config)",
            dir.display()
        )
    })?;
    let made = MadeDirs {
        data: dir.to_owned(),
        dirs: made,
        lock_was_there: dir.join("warden.lock").exists(),
    };
    let meta =
        std::fs::metadata(dir).with_context(|| format!("reading data dir {}", dir.display()))?;
    if !meta.is_dir() {
        bail!(
            "data dir {} is a file, not a directory: set `data_dir` (or --data-dir) to a directory, or move the file away",
            dir.display()
        );
    }
    check_private_dir(dir)?;
    Ok(made)
}

/// Makes `dir` and the parents it lacks, private to the server's user, one at a time, and
/// returns those it made, deepest first, as the paths they really are: a path through `..` or
/// a symbolic link names directories that were there before as well.
fn make_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    use std::os::unix::fs::DirBuilderExt;
    use std::path::Component;
    // Always a directory's real path: a `..` then goes where the system would take it.
    let mut at = PathBuf::new();
    let mut made = Vec::new();
    for part in std::path::absolute(dir)?.components() {
        match part {
            Component::Prefix(_) | Component::RootDir => at.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                at.pop();
            }
            Component::Normal(name) => {
                let next = at.join(name);
                match std::fs::DirBuilder::new().mode(0o700).create(&next) {
                    Ok(()) => {
                        made.push(next.clone());
                        at = next;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        at = std::fs::canonicalize(&next)?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    made.reverse();
    Ok(made)
}

/// What a start made: the data dir's lock file, if it was not there before, and the
/// directories (the data dir and the parents made for it, deepest first). Taken away again when
/// the start is refused while the data dir holds nothing but its lock, so that a refused start
/// leaves nothing behind. Never a directory that was there before, nor one holding anything
/// else; dropped while the lock is still held, so never another server's.
struct MadeDirs {
    data: PathBuf,
    dirs: Vec<PathBuf>,
    lock_was_there: bool,
}

impl MadeDirs {
    /// Keeps what was made: the start went through.
    fn keep(&mut self) {
        self.dirs.clear();
        self.lock_was_there = true;
    }
}

impl Drop for MadeDirs {
    fn drop(&mut self) {
        if self.lock_was_there {
            return;
        }
        let only_lock = std::fs::read_dir(&self.data)
            .and_then(|entries| entries.map(|e| e.map(|e| e.file_name())).collect())
            .is_ok_and(|names: Vec<_>| names == ["warden.lock"]);
        if only_lock && std::fs::remove_file(self.data.join("warden.lock")).is_ok() {
            // `remove_dir` takes away only an empty directory: a parent something else was
            // put in since stays, with those above it.
            for dir in &self.dirs {
                if std::fs::remove_dir(dir).is_err() {
                    break;
                }
            }
        }
    }
}

/// Refuses a data dir that anyone but the server's user (and root) may change, or in which
/// another user owns something: for whatever writes into one, the server or an offline
/// command such as a master key rotation.
pub fn check_private_dir(dir: &Path) -> anyhow::Result<()> {
    if let Some(why) = others_may_change(dir, None).or_else(|| entry_owned_by_others(dir)) {
        bail!(
            "data dir {}: {why} (and check what changed in it)",
            dir.display()
        );
    }
    Ok(())
}

/// Marks a data dir that `warden serve --dev` made: its users may have the published demo
/// password, so no real server starts on it; nor does `--dev` start on a real one, where it
/// would give every user without a `password_hash` that password.
const DEV_MARKER: &str = "DEV-SERVER";

/// Refuses `--dev` on a real server's data dir, and a real server on one `--dev` made: one
/// with its marker, or whose log says `--dev` gave someone the demo password
/// (`demo_passwords`), so that a marker deleted or left out of a copy lets no real server
/// start with the published password.
fn check_dev_marker(data: &Path, dev: bool, demo_passwords: bool) -> anyhow::Result<()> {
    match (dev, demo_passwords || data.join(DEV_MARKER).exists()) {
        (true, false) if data.join("warden.db").exists() => bail!(
            "data dir {} was made by a real server: `--dev` gives every user without a `password_hash` the demo password {DEV_PASSWORD:?}, so it runs only on a new data dir or one `--dev` made (leave out --data-dir for a temporary one)",
            data.display()
        ),
        (false, true) => bail!(
            "data dir {} was made by `warden serve --dev`: its users may have the published demo password {DEV_PASSWORD:?}. Start a real server on a new data dir, or run this one with --dev, as the development server it is",
            data.display()
        ),
        _ => Ok(()),
    }
}

/// Marks data dir `data` as `--dev`'s ([`DEV_MARKER`]), once every check at start passed.
fn mark_dev(data: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let marker = data.join(DEV_MARKER);
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&marker)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("creating {}", marker.display())),
    };
    std::io::Write::write_all(
        &mut f,
        b"Made by `warden serve --dev`: users here may have the demo password. No real server starts on this data dir.\n",
    )?;
    Ok(())
}

/// A start refused for the options it was given (contradicting one another or the config
/// file) or for what its config file says, not for anything found on this machine: the command
/// line ends it as a usage error (exit code 2), as it ends a config file that cannot be read
/// or does not parse ([`crate::config::ConfigError::is_invalid_input`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInvocation(pub String);

/// Refuses the API and the SSH proxy on one port of one address (or of every address): the
/// second to listen would fail with "Address already in use", and send the operator looking
/// for another process. Port 0 asks for any free port, a different one for each. Refused as a
/// [`BadInvocation`], whether `--listen`, `--ssh-listen` or the config file gave them.
fn check_listeners(config: &Config, opts: &ServeOptions) -> anyhow::Result<()> {
    let (api, ssh) = (config.listen, config.ssh_listen);
    let same_ip = api.ip() == ssh.ip() || api.ip().is_unspecified() || ssh.ip().is_unspecified();
    if api.port() == 0 || api.port() != ssh.port() || !same_ip {
        return Ok(());
    }
    let name = |flag: bool, key: &str| {
        if flag {
            format!("--{}", key.replace('_', "-"))
        } else {
            format!("`{key}`")
        }
    };
    let file = match &opts.config {
        Some(f) if opts.listen.is_none() || opts.ssh_listen.is_none() => {
            format!(" in config file {}", f.display())
        }
        _ => String::new(),
    };
    let message = format!(
        "{} ({api}) and {} ({ssh}){file} are on the same port: the API and the SSH proxy each need their own, so give them different ports (e.g. listen = \"127.0.0.1:8443\" and ssh_listen = \"127.0.0.1:2222\")",
        name(opts.listen.is_some(), "listen"),
        name(opts.ssh_listen.is_some(), "ssh_listen"),
    );
    Err(BadInvocation(message).into())
}

/// What to say of an API address beyond loopback: Warden speaks plain HTTP, so whatever
/// reaches it there reaches it in clear.
fn in_clear(addr: std::net::SocketAddr) -> Option<String> {
    (!addr.ip().is_loopback()).then(|| format!(
        "the API listens on {addr} in plain HTTP: passwords, TOTP codes and tokens cross the network in clear. Listen on 127.0.0.1 behind a TLS-terminating proxy on this host, or keep this address reachable only through one"
    ))
}

/// The key of an OpenSSH public key line (its type and base64), without its comment.
fn key_of(line: &str) -> Vec<&str> {
    line.split_whitespace().take(2).collect()
}

/// Refuses an SSH user CA other than the one this data dir signs certificates with: hosts
/// trust that one, and the revocation list names the CA it revokes for, so with another CA the
/// certificates the right one signed (revoked ones among them) would no longer be revoked
/// anywhere. The store says which CA that is: the one it records (`recorded`), or, before it
/// records one (a new data dir, or one from before the record), the ones that signed the
/// certificates it issued (`issued_by`). The public half kept beside the key
/// (`ssh_user_ca.pub`, for whoever sets up hosts) must be the key's too. Reads only: the
/// public half is written, and the CA recorded, once every check of the start passed.
fn check_trusted_ca(
    data: &Path,
    ca: &UserCa,
    recorded: Option<&str>,
    issued_by: &[String],
) -> anyhow::Result<()> {
    let key = data.join("ssh_user_ca");
    let fingerprint = ca.fingerprint();
    let why = "hosts trust that CA (TrustedUserCAKeys), and `warden ssh-revoked-keys` names the CA it revokes for: with another one, certificates it signed, revoked ones among them, would no longer be revoked on any host. A new CA is made only for a new data dir";
    if let Some(recorded) = recorded
        && recorded != fingerprint
    {
        bail!(
            "Not started: the SSH user CA key {} ({fingerprint}) is not the CA this data dir signs with: its store records {recorded}. Restore the key with that fingerprint from your backup (`ssh-keygen -lf FILE` shows a key's); {why}",
            key.display()
        );
    }
    let others: Vec<&str> = issued_by
        .iter()
        .map(String::as_str)
        .filter(|f| *f != fingerprint)
        .collect();
    if recorded.is_none() && !others.is_empty() {
        bail!(
            "Not started: the SSH user CA key {} ({fingerprint}) is not the CA this data dir signed its SSH certificates with: its store holds certificates signed by {}. Restore the key with that fingerprint from your backup (`ssh-keygen -lf FILE` shows a key's); {why}",
            key.display(),
            others.join(", ")
        );
    }
    let kept = data.join("ssh_user_ca.pub");
    let public = ca.public_key();
    match std::fs::read_to_string(&kept) {
        Ok(held) if key_of(&held) == key_of(public) => Ok(()),
        // The store vouches for the key: the public half beside it is the odd one.
        Ok(_) if recorded.is_some() || !issued_by.is_empty() => bail!(
            "Not started: {} does not hold the public half of the SSH user CA key {} ({fingerprint}), which this data dir's store names as its CA: restore {} from your backup, or remove it to have it written anew from the key. Hosts that were given the key it holds do not trust this data dir's certificates",
            kept.display(),
            key.display(),
            kept.display()
        ),
        Ok(_) => bail!(
            "Not started: the SSH user CA key {} ({fingerprint}) is not the one this data dir's hosts trust ({} holds that one's public half): restore the key it belongs to from your backup; {why}",
            key.display(),
            kept.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("reading {}", kept.display())),
    }
}

/// Writes the public half of the SSH user CA beside its key (`ssh_user_ca.pub`) when it is
/// missing: only once [`check_trusted_ca`] found the key to be this data dir's.
fn keep_ca_public_half(data: &Path, ca: &UserCa) -> anyhow::Result<()> {
    let kept = data.join("ssh_user_ca.pub");
    if kept.exists() {
        return Ok(());
    }
    crate::durable_file::replace(
        &kept,
        format!("{}\n", ca.public_key().trim()).as_bytes(),
        0o644,
    )
}

/// The refusal of [`lock_data_dir`] when another process holds the data dir: a conflict with
/// what runs now, which an offline command reports apart from a failure to read the dir.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DataDirInUse(String);

/// Takes the data dir for this process alone. Two servers on one data dir would both revoke
/// and reconcile the same leases and sign checkpoints over each other's log: the second one
/// refuses to start instead, as do offline commands that rewrite the store (`vault rewrap`).
/// The lock is held on the directory itself, which no one can remove while it holds the data
/// (a lock file could be deleted as stale, and the next server would lock a new one); the file
/// `warden.lock` only names the holder's pid for the message.
pub fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    let held = std::fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    let path = dir.join("warden.lock");
    match held.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            let who = if holder.is_empty() {
                "another process".to_owned()
            } else {
                format!("another warden (pid {holder})")
            };
            return Err(DataDirInUse(format!(
                "data dir {} is in use by {who}: stop it first (a data dir serves one server at a time, and offline commands run on a stopped one)",
                dir.display()
            ))
            .into());
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", dir.display()));
        }
    }
    let pid = format!("{}\n", std::process::id());
    crate::durable_file::replace(&path, pid.as_bytes(), 0o600)?;
    Ok(held)
}

/// The master key of data dir `data` (`master.key`, or `WARDEN_MASTER_KEY`), made only for a
/// data dir that holds no sealed secret yet. A key missing or other than the one the stored
/// secrets were sealed under is refused: a server started with it would take sign-ins whose
/// second factor it cannot read, and hold target credentials it cannot open.
fn master_key(data: &Path) -> anyhow::Result<Sealer> {
    let path = data.join("master.key");
    let from_env = std::env::var_os(crate::keys::MASTER_KEY_ENV).is_some();
    let sealed = warden_store::a_sealed_value(&data.join("warden.db"))?;
    let finish = "after an interrupted `warden vault rewrap`, run it again to finish the rotation";
    if sealed.is_some() && !from_env && !path.exists() {
        bail!(
            "the master key {} is missing, but this data dir holds secrets sealed under one: restore it from your backup, or set {} ({finish}). A new key is made only for a data dir with no secrets",
            path.display(),
            crate::keys::MASTER_KEY_ENV
        );
    }
    let sealer = Sealer::load_or_create(&path)?;
    if let Some(s) = &sealed
        && !sealer.opens(s)
    {
        let env = crate::keys::MASTER_KEY_ENV;
        // A rotation from the variable's key leaves the new key in master.key for the
        // variable to take: a variable not yet set to it is the likely reason.
        let rotated = from_env && Sealer::load(&path).is_ok_and(|file| file.opens(s));
        if rotated {
            bail!(
                "{env} does not open the secrets sealed in this data dir, but {} does (a finished `warden vault rewrap` left the new key there): set {env} to its base64 (`base64 -w0 {}`), then remove the file",
                path.display(),
                path.display()
            );
        }
        // A database put back from before a finished rotation was sealed under the key the
        // rotation kept aside.
        let old = data.join("master.key.old");
        if Sealer::load(&old).is_ok_and(|k| k.opens(s)) {
            bail!(
                "the master key does not open the secrets sealed in this data dir, but {} (the key before a rotation) does: this database is from before that rotation. Put back the database from after it, or, to serve this one, move {} to master.key",
                old.display(),
                old.display()
            );
        }
        let which = if from_env {
            env.to_owned()
        } else {
            path.display().to_string()
        };
        bail!(
            "the master key ({which}) does not open the secrets sealed in this data dir: start with the key they were sealed under ({finish})"
        );
    }
    // A rotation from the variable's key left the new key in the data dir too: every backup of
    // it would carry the key kept out of it.
    if from_env
        && Sealer::load(&path).is_ok_and(|file| sealed.as_deref().is_some_and(|s| file.opens(s)))
    {
        let said = format!(
            "the master key is also in {} (a `warden vault rewrap` from {} left it there): remove the file now that {} holds it, so that backups of the data dir do not carry it",
            path.display(),
            crate::keys::MASTER_KEY_ENV,
            crate::keys::MASTER_KEY_ENV
        );
        tracing::warn!("{said}");
        say!("Warning: {said}");
    }
    Ok(sealer)
}

/// `e`, the database of data dir `data` failing to open, with the free space of its disk when
/// SQLite said no more than "disk I/O error" and the disk is nearly full: short of room for
/// its shared-memory file (32 KiB) SQLite says only that, which sends an operator looking for
/// a failing disk.
fn with_free_space(e: anyhow::Error, data: &Path) -> anyhow::Error {
    disk_full_said(e, crate::disk_space::free_bytes(data).ok())
}

/// [`with_free_space`] for a disk with `free` bytes left (`None`: unknown).
fn disk_full_said(e: anyhow::Error, free: Option<u64>) -> anyhow::Error {
    let io_error = e.chain().any(|c| c.to_string().contains("disk I/O error"));
    match free.and_then(crate::disk_space::shortage) {
        Some(short) if io_error => {
            anyhow::anyhow!("{e:#}: most likely the disk is (nearly) full: {short}")
        }
        _ => e,
    }
}

/// Raises this process's soft limit on open files to its hard limit, and returns the limit in
/// force. Every API and SSH connection holds a descriptor (a proxied session two), and the
/// soft limit a shell or service manager starts a process with (often 1024, kept low for
/// programs that use `select`, which Warden does not) runs out long before memory or CPU; the
/// caps on connections ([`crate::http::Caps`]) are set from what this returns. A limit that
/// cannot be raised is kept, and said.
fn raise_open_files_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // `None` is no limit.
    let soft = limit.current.unwrap_or(u64::MAX);
    let Some(hard) = limit.maximum.filter(|hard| *hard > soft) else {
        return soft;
    };
    let raised = Rlimit {
        current: Some(hard),
        maximum: Some(hard),
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => hard,
        Err(e) => {
            tracing::warn!(
                error = %e,
                soft,
                hard,
                "cannot raise the open file limit to its hard limit; connections are capped by the soft one"
            );
            soft
        }
    }
}

/// Runs the server until SIGTERM or SIGINT.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    // Registered as early, for the same reason: a `systemctl reload` during a start would
    // otherwise kill it. One that comes before the server is up reloads once it is.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP")?;
    let mut config = match &opts.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    // Kept alive for the server's lifetime: dropping it deletes the dev data dir.
    let mut _dev_dir = None;
    if opts.dev {
        dev_may_take(&config, opts.config.as_deref())?;
        // A throwaway data dir, unless the caller chose one.
        if opts.data_dir.is_none() {
            if let Some(file) = &opts.config {
                refuse_configured_data_dir(file)?;
            }
            // Private like any data dir: it holds the audit log and the CA.
            let dir = tempfile::Builder::new()
                .prefix("warden-dev-")
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .tempdir()?;
            config.data_dir = dir.path().to_owned();
            _dev_dir = Some(dir);
        }
        for (name, u) in demo_users()? {
            config.users.insert(name.parse()?, u);
        }
    }
    if !opts.dev {
        config.file.clone_from(&opts.config);
    }
    if let Some(d) = &opts.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(l) = opts.listen {
        config.listen = l;
    }
    if let Some(l) = opts.ssh_listen {
        config.ssh_listen = l;
    }
    check_listeners(&config, &opts)?;
    // Its users have a published password: nothing but this machine may reach them.
    if opts.dev && !(config.listen.ip().is_loopback() && config.ssh_listen.ip().is_loopback()) {
        let message = format!(
            "a --dev server listens on loopback addresses only (127.0.0.1, ::1): its users have the published password {DEV_PASSWORD:?}"
        );
        // Given on the command line or in the config, the address is a usage error, as a
        // clash of ports is.
        return Err(BadInvocation(message).into());
    }
    let made = create_private_dir(&config.data_dir)?;
    let data = config.data_dir.clone();
    // Held until the server stops: the OS releases it even after a kill -9.
    let _lock = lock_data_dir(&data)?;
    // Declared after the lock, so dropped before it is released.
    let mut made = made;

    let db = data.join("warden.db");
    // Read, not migrated: the database is brought up to this version's schema only once every
    // check below passed, so a refused start leaves it as the Warden before could open it.
    let history = SqliteStore::history(&db)
        .with_context(|| format!("reading {}", db.display()))
        .map_err(|e| with_free_space(e, &data))?;
    check_dev_marker(
        &data,
        opts.dev,
        history.as_ref().is_some_and(|h| h.demo_passwords),
    )?;
    // Who administers depends on who can sign in: an administrator the config names but who
    // was offboarded is none (the bootstrap admin then still is).
    let offboarded = history
        .as_ref()
        .map(|h| h.offboarded.clone())
        .unwrap_or_default();
    // What the config's users say (with `--dev`'s demo users beside them), as at reading it.
    let directory = config.directory(&offboarded).map_err(|e| {
        let file = opts
            .config
            .as_ref()
            .map_or_else(String::new, |f| format!("config file {}: ", f.display()));
        BadInvocation(format!("{file}{e}"))
    })?;
    let anchor = data.join(crate::checkpoints::ANCHOR_FILE);
    // A data dir that has served before (its log, or the checkpoint kept beside it, says so):
    // its keys and policy are never replaced by new ones. Every refusal of what was given (an
    // address, a password, a key, a policy) comes before any key is made, so it leaves nothing
    // new behind; only a failure to write the keys or the example policy leaves the keys.
    let has_history = history.as_ref().is_some_and(|h| h.last_seq > 0) || anchor.exists();
    // Nor may one whose log is gone (or begun again from 1) pass for a new one: a data dir whose
    // archive holds segments past its log's end, or whose empty log sits beside requests and
    // tokens, has served. Refused before anything is made or written, and before the start's
    // removal of segments an archive cut short (`remove_unsealed_segments`) reads the archive.
    crate::checkpoints::check_served(
        &data,
        history.as_ref().map_or(0, |h| h.last_seq),
        history.as_ref().map_or(&[][..], |h| &h.served_rows[..]),
    )?;
    let open_files = raise_open_files_limit();
    let api_caps = crate::http::Caps::for_descriptors(open_files);
    tracing::info!(
        open_files,
        api_connections = api_caps.total,
        api_connections_per_address = api_caps.per_address,
        "open file limit in force, and the API's connection caps taken from it"
    );
    // Both addresses are taken before anything is said or written: one in use, or a host key
    // others can read, stops the server before a key is made, an initial password printed, or
    // a `server.started` is in the log.
    let listener = crate::http::listen(config.listen)
        .await
        .map_err(|e| listen_refused(config.listen, "--listen or `listen`", &e))?;
    let addr = listener.local_addr()?;
    let ssh_tcp = crate::ssh::listen(&config).await?;
    crate::ssh::check_host_key(&config)?;
    // A bootstrap password that would be refused is refused now, before anything is made.
    if !has_history
        && let Ok(given) = std::env::var(BOOTSTRAP_PASSWORD_ENV)
        && !given.is_empty()
    {
        warden_domain::password::check(&given)
            .map_err(|e| anyhow::anyhow!("{BOOTSTRAP_PASSWORD_ENV}: {e}"))?;
    }
    let policy_dir = config.policy_dir();
    let in_config = opts
        .config
        .as_ref()
        .map_or_else(String::new, |f| format!(" in config file {}", f.display()));
    if policy_dir.exists() && !policy_dir.is_dir() {
        return Err(BadInvocation(format!(
            "policy dir {}{in_config} is not a directory: point `policy_dir` at the directory holding your policy (targets.toml and .cedar files)",
            policy_dir.display()
        ))
        .into());
    }
    let new_policy = !policy_dir.exists();
    if new_policy {
        if config.policy_dir.is_some() {
            let file = &in_config;
            // The config names nothing there, as a `--config` naming no file would.
            return Err(BadInvocation(format!(
                "`policy_dir` {}{file} does not exist: create it with your policy (targets.toml and .cedar files), or fix the path",
                policy_dir.display()
            ))
            .into());
        }
        // The example policy grants at once; written over a lost policy, it would hand out
        // access the real one never allowed.
        if has_history {
            bail!(
                "policy dir {} is missing, but this data dir has served before: restore the policy (or set `policy_dir` in the config). The example policy is written only for a new data dir",
                policy_dir.display()
            );
        }
    }
    let invalid =
        |report| anyhow::anyhow!("policy in {} is invalid:\n{report}", policy_dir.display());
    let policy = if new_policy {
        None
    } else {
        Some(load_served_policy(&policy_dir).map_err(invalid)?)
    };
    let ca_path = data.join("ssh_user_ca");
    // Hosts trust the CA's public half, and the revoked-keys list names the CA it revokes for:
    // with a new CA, revocations would no longer reach certificates the old one signed.
    let recorded_ca = history.as_ref().and_then(|h| h.ssh_user_ca.clone());
    let issued_by = history
        .as_ref()
        .map(|h| h.issued_by.clone())
        .unwrap_or_default();
    let ca_public = data.join("ssh_user_ca.pub");
    if !ca_path.exists() {
        let known = if has_history || recorded_ca.is_some() || !issued_by.is_empty() {
            Some("this data dir has issued access before".to_owned())
        } else {
            ca_public
                .exists()
                .then(|| format!("{} keeps its public half", ca_public.display()))
        };
        if let Some(known) = known {
            bail!(
                "the SSH user CA key {} is missing, but {known}: restore the key from your backup (hosts trust its public half in TrustedUserCAKeys, and revoking certificates it signed needs it). A new CA is made only for a new data dir",
                ca_path.display()
            );
        }
    }
    // The CA there is checked now, before any key or file is made: a refused start leaves the
    // data dir as it was.
    let found_ca = if ca_path.exists() {
        let (ca, _) = UserCa::load_or_create(&ca_path)?;
        check_trusted_ca(&data, &ca, recorded_ca.as_deref(), &issued_by)?;
        Some(ca)
    } else {
        None
    };
    let audit_key_path = data.join("audit_signing.key");
    // A log signed before, and no key: a new one would vouch for a history it never saw, and
    // no checkpoint anyone kept would verify with it. Refused, never replaced quietly.
    if has_history && !audit_key_path.exists() {
        bail!(
            "the audit signing key {} is missing, but this data dir has a log it signed: restore the key from your backup (its public half is audit_verifier.pub, and the one auditors hold). A new key is made only for a new log: a new data dir",
            audit_key_path.display()
        );
    }
    // Before any key is made: a master key that cannot be used stops a first start with
    // nothing made.
    let sealer = master_key(&data)?;
    let audit_key = audit_signing_key(&audit_key_path)?;
    let note_signer = crate::checkpoints::signer(&config.audit_origin, &audit_key)?;
    // A key swapped for another (another data dir's, one made anew) did not sign this log:
    // it must not continue it, nor replace the verifier auditors hold. (A verifier names the
    // log too: a renamed `audit_origin` is `check_anchor`'s to explain; an empty or damaged
    // file names no key and is written anew.)
    let verifier_path = data.join("audit_verifier.pub");
    let verifier = note_signer.verifier();
    if let Ok(held) = std::fs::read_to_string(&verifier_path)
        && let Ok(held) = held.trim().parse::<warden_audit::NoteVerifier>()
        && held.public_key() != verifier.public_key()
    {
        bail!(
            "Not started: {} is not the key that signed this log: its public half is not the one in {} (which auditors hold). Restore the key from your backup; a new key is made only for a new log, in a new data dir",
            audit_key_path.display(),
            verifier_path.display()
        );
    }
    // Nor, with that file missing, may a key that did not sign the log's newest checkpoint: it
    // would write itself into the verifier, and never sign the log on. (With the checkpoint
    // kept beside the log, `check_start` below tells a replaced key from a forged note; a
    // stored checkpoint altered or signed under another name is the checkpointer's to refuse,
    // and `warden audit verify`'s to explain.)
    if !anchor.exists()
        && let Some(c) = history.as_ref().and_then(|h| h.latest_checkpoint.as_ref())
        && let Err(e @ warden_audit::CheckpointError::SignedByAnotherKey { .. }) =
            warden_audit::Checkpoint::open(&c.note, &verifier)
    {
        bail!(
            "Not started: {} is not the key that signed this log: the log's newest checkpoint (of {} events) was signed by another key ({e}). Restore the key from your backup (its public half is the one auditors hold); a new key is made only for a new log, in a new data dir",
            audit_key_path.display(),
            c.size
        );
    }
    // A database older than the newest checkpoint this server signed was restored from an older
    // copy or lost its write-ahead log: grants revoked and tokens ended since would work again.
    let events = history.as_ref().map_or(0, |h| h.last_seq);
    let held = history.as_ref().is_none_or(|h| h.latest_covered_held);
    let start_only = history
        .as_ref()
        .and_then(|h| h.unsigned_codes.as_deref())
        .is_some_and(crate::checkpoints::only_start_events);
    let latest = history.and_then(|h| h.latest_checkpoint);
    let unanchored = crate::checkpoints::check_start(
        &anchor,
        &verifier,
        latest.as_ref(),
        events,
        held,
        start_only,
    )
    .map_err(|e| anyhow::anyhow!("Not started: {e}"))?;
    if start_only && events > 0 {
        tracing::warn!(
            events,
            "this data dir's first start stopped before its first checkpoint; the events of that start are signed with this one's"
        );
    }
    // A clean stop signs its last event; events past the newest checkpoint were written after
    // it (a crash cut the server short, or someone wrote into the stopped log), and the next
    // checkpoint signs them: said, so that whoever reads the log can compare.
    let unsigned = events.saturating_sub(latest.as_ref().map_or(0, |c| c.size));
    if unsigned > 0 {
        tracing::warn!(
            unsigned,
            first = events - unsigned + 1,
            "audit events no checkpoint covers yet (a stop cut short, or events written into the stopped log) are signed with the next checkpoint; `warden audit verify --data-dir` before this start would have listed them"
        );
    }
    // The verifier key is public: auditors verify checkpoints and exports with it, offline.
    // Written whole or not at all: a stop mid-write must not leave an empty one behind.
    crate::durable_file::replace(&verifier_path, format!("{verifier}\n").as_bytes(), 0o644)?;

    let policy = match policy {
        Some(policy) => policy,
        None => {
            write_demo_policy(&policy_dir)?;
            say!(
                "Wrote the example policy to {} — edit it, then `warden policy reload`.",
                policy_dir.display()
            );
            load_served_policy(&policy_dir).map_err(invalid)?
        }
    };
    if opts.dev {
        mark_dev(&data)?;
    }
    let (ca, ca_created) = match found_ca {
        Some(ca) => (ca, false),
        // A new data dir's: nothing knew a CA, nor kept a public half.
        None => UserCa::load_or_create(&ca_path)?,
    };
    keep_ca_public_half(&data, &ca)?;
    let store = SqliteStore::open(&db)
        .with_context(|| format!("opening {}", db.display()))
        .map_err(|e| with_free_space(e, &data))?;
    let schema = store.schema();
    // From now on the store itself names the CA, whatever becomes of the public half beside it.
    let recorded = store
        .record_ssh_user_ca(ca.public_key(), ca.fingerprint())
        .await
        .with_context(|| format!("recording the SSH user CA in {}", db.display()))?;
    if recorded != ca.fingerprint() {
        bail!(
            "Not started: the SSH user CA key {} ({}) is not the CA this data dir signs with: its store records {recorded}. Restore the key with that fingerprint from your backup",
            ca_path.display(),
            ca.fingerprint()
        );
    }

    let issuers = Registry::new([
        Arc::new(SshCertIssuer::new(ca.clone())) as Arc<dyn warden_issuers::Issuer>,
        Arc::new(warden_issuers::postgres::PostgresIssuer::new()),
        Arc::new(warden_issuers::mariadb::MariadbIssuer::new()),
    ]);
    let store: Arc<dyn Store> = Arc::new(store);
    let app: Shared = Arc::new(App::new(
        store.clone(),
        policy,
        policy_dir.clone(),
        directory,
        &offboarded,
        issuers,
        ca,
        note_signer,
        sealer,
        config.clone(),
        crate::metrics::Metrics::new().map_err(anyhow::Error::msg)?,
    ));

    let ssh = crate::ssh::bind(&config, ssh_tcp, has_history)?;
    // Before any event of this run: a sink's cursor past the log's end means a rollback.
    let rolled_back = crate::export::rolled_back(&app).await?;
    // A new log begins with its note, before its first event, so that a log with events but
    // no checkpoint and no note is known to have lost them.
    if !has_history {
        crate::checkpoints::anchor_empty_log(&anchor, &app.audit_signer, &config.audit_origin)?;
    }
    let given_dev_password = bootstrap_passwords(&app, &config, opts.dev).await?;
    let locked = app.restore_lockouts().await?;
    if locked > 0 {
        tracing::info!(
            locked,
            "users still locked after wrong passwords or TOTP codes (`warden user locked` lists them, `warden user unlock` lifts a lock)"
        );
    }
    // A segment an archive cut short left beside the live events it holds goes before anyone
    // reads the archive directory.
    app.remove_unsealed_segments().await?;
    store
        .append(vec![
            Event::new(Code::ServerStarted, Actor::system(), now()).details(serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                // The store's schema, and the one it had before this start upgraded it.
                "schema": schema.version,
                "schema_upgraded_from": schema.migrated_from,
                "listen": addr.to_string(),
                "ssh_ca_created": ca_created,
                "dev": opts.dev,
                // The log had events, but no copy of its newest checkpoint to tell a rollback.
                "checkpoint_file_missing": unanchored,
            })),
            Event::new(Code::PolicyLoaded, Actor::system(), now()).details(serde_json::json!({
                "digest": app.policy.load().digest(),
                "rules": app.policy.load().rule_count(),
                "dir": policy_dir.display().to_string(),
            })),
        ])
        .await?;
    made.keep();

    if opts.dev {
        let data = if _dev_dir.is_some() {
            "data in a temporary directory, deleted at exit".to_owned()
        } else {
            format!("data in {}, kept at exit", config.data_dir.display())
        };
        say!("==> DEVELOPMENT SERVER: {data}. Never use in production.");
        say!(
            "    Demo users alice (dev, manager mallory), bob (sre), mallory (managers), sam (security), admin (admins)"
        );
        let configured = configured_dev_users(&config)?;
        if !configured.is_empty() {
            say!(
                "    and the config's users without a password_hash: {}",
                configured.join(", ")
            );
        }
        let note = dev_password_note(&app, &config, &given_dev_password).await?;
        say!("    {note}");
    }
    say!(
        "Warden listening on http://{addr} (data dir {})",
        data.display()
    );
    say!("SSH user CA: {}", app.ca.public_key());
    tracing::info!(%addr, "listening");
    if let Some(said) = in_clear(addr) {
        tracing::warn!("{said}");
        say!("Warning: {said}");
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let departed = app.end_departed().await?;
    if departed > 0 {
        tracing::warn!(
            departed,
            "requests of users no longer in the directory, or offboarded, were revoked"
        );
    }
    let stranded = app.end_stranded_extensions().await?;
    if stranded > 0 {
        tracing::warn!(
            stranded,
            "extensions of grants revoked or expired just before a stop were ended"
        );
    }
    let cut = app.close_cut_sessions().await?;
    if cut > 0 {
        tracing::warn!(
            cut,
            "SSH sessions a stop cut short had their end recorded, with their recordings' digests"
        );
    }
    let interrupted = app.recover_intents().await?;
    if interrupted > 0 {
        tracing::warn!(
            interrupted,
            "credentials whose issue was interrupted by a crash are being removed"
        );
    }
    let ssh_addr = ssh.start(&app, stop_rx.clone())?;
    say!(
        "Warden SSH proxy listening on {ssh_addr} (ssh -p {} USER:TARGET@HOST)",
        ssh_addr.port()
    );
    let worker = tokio::spawn(crate::worker::run(app.clone(), stop_rx.clone()));
    tokio::spawn(crate::worker::reconcile(app.clone(), stop_rx.clone()));
    tokio::spawn(crate::worker::redecide(app.clone(), stop_rx.clone()));
    tokio::spawn(crate::worker::retention(app.clone(), stop_rx.clone()));
    let exporter = crate::export::Exporter::start(&app, &rolled_back)?;
    crate::notify::outbox::check(&app)?;
    let dispatcher = tokio::spawn(crate::notify::outbox::run(app.clone(), stop_rx.clone()));
    let checkpointer = tokio::spawn(crate::checkpoints::run(app.clone(), stop_rx.clone()));
    tokio::spawn(reload_on_sighup(app.clone(), hup, stop_rx.clone()));

    let router = crate::api::router(app.clone());
    crate::http::serve(
        listener,
        router,
        app.clone(),
        api_caps,
        config.http_read_timeout.as_duration(),
        shutdown,
    )
    .await;
    let _ = stop_tx.send(true);
    // Live SSH sessions end as a kill ends them, each with its `session.ended` (and its
    // recording's digest) on record before the last checkpoint.
    if app.sessions.end_all("Warden is shutting down") > 0 {
        let deadline = tokio::time::Instant::now() + SESSIONS_DRAIN;
        while app.sessions.active() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let _ = worker.await;
    // The dispatcher waits a little for the deliveries under way, so that what they sent is
    // recorded rather than sent again at the next start.
    let _ = dispatcher.await;
    let _ = checkpointer.await;
    store
        .append(vec![Event::new(
            Code::ServerStopped,
            Actor::system(),
            now(),
        )])
        .await?;
    {
        // After a retention pass still cutting the log, as the checkpointer waits for one.
        let _no_archive = app.archiving.lock().await;
        crate::checkpoints::checkpoint(
            store.as_ref(),
            &app.audit_signer,
            &config.audit_origin,
            &config.data_dir.join(crate::checkpoints::ANCHOR_FILE),
            &app.log_checked,
        )
        .await?;
    }
    // Export the last events, the stop included; at most 5 s, the rest goes at the next start.
    exporter.flush().await;
    // The database file alone holds everything once stopped: a copy of it is a whole backup.
    if let Err(e) = store.flush_log().await {
        tracing::warn!(error = %e, "the write-ahead log was not emptied; copy warden.db-wal with warden.db");
    }
    say!("Warden stopped.");
    Ok(())
}

/// Sets initial passwords: config hashes, demo passwords, and the bootstrap admin's. Returns
/// the users given the demo password by this start.
async fn bootstrap_passwords(
    app: &App,
    config: &Config,
    dev: bool,
) -> anyhow::Result<Vec<UserName>> {
    let mut given_dev_password = Vec::new();
    for (name, u) in &config.users {
        let hash = match (&u.password_hash, dev) {
            (Some(h), _) => h.clone(),
            (None, true) => hash_password(DEV_PASSWORD)?,
            (None, false) => continue,
        };
        let event = Event::new(Code::PasswordSet, Actor::system(), now()).details(
            serde_json::json!({ "user": name, "source": if dev { "dev" } else { "config" } }),
        );
        let set = app.store.init_password(name, hash, vec![event]).await?;
        if set && u.password_hash.is_none() {
            given_dev_password.push(name.clone());
        }
    }
    if let Some(note) = app.changed_password_hashes(config).await {
        tracing::warn!("{note}");
    }
    let admin = &config.bootstrap_admin;
    let given = std::env::var(BOOTSTRAP_PASSWORD_ENV)
        .ok()
        .filter(|p| !p.is_empty());
    let ignored = if app.user(admin).is_none() {
        Some("the config names administrators of its own, so it is not one")
    } else if app.store.secrets(admin).await?.password_hash.is_some() {
        Some("it has a password already (change it with `warden user set-password`)")
    } else {
        None
    };
    if let Some(why) = ignored {
        if given.is_some() {
            tracing::warn!(user = %admin, "{BOOTSTRAP_PASSWORD_ENV} is ignored: {why}");
        }
        return Ok(given_dev_password);
    }
    let from_env = given.is_some();
    let password = match given {
        Some(p) => {
            warden_domain::password::check(&p)
                .map_err(|e| anyhow::anyhow!("{BOOTSTRAP_PASSWORD_ENV}: {e}"))?;
            p
        }
        None => random_password(),
    };
    let event = Event::new(Code::PasswordSet, Actor::system(), now())
        .details(serde_json::json!({ "user": admin, "source": "bootstrap" }));
    let set = app
        .store
        .init_password(admin, hash_password(&password)?, vec![event])
        .await?;
    if set && !from_env {
        say!(
            "Bootstrap admin '{admin}' created. Initial password (shown only now; change it with `warden user set-password {admin}`): {password}"
        );
    }
    Ok(given_dev_password)
}

/// What the `--dev` banner says of the demo password: which of the users `--dev` gives it to
/// (the demo users and the config's without a `password_hash`) have it now. Those this start
/// gave it to have it; on a kept data dir, the others' stored hashes are checked against it,
/// since an administrator may have changed their password since, or offboarding disabled it.
async fn dev_password_note(
    app: &App,
    config: &Config,
    given_now: &[UserName],
) -> anyhow::Result<String> {
    let (mut have, mut lost) = (Vec::new(), Vec::new());
    for (name, u) in &config.users {
        if u.password_hash.is_some() {
            continue;
        }
        let has = if given_now.contains(name) {
            true
        } else {
            let hash = app.store.secrets(name).await?.password_hash;
            // An argon2 check takes tens of milliseconds: not on the runtime's threads.
            tokio::task::spawn_blocking(move || hash.is_some_and(|h| is_dev_password(&h))).await?
        };
        if has {
            have.push(name.to_string());
        } else {
            lost.push(name.to_string());
        }
    }
    let verb = |names: &[String], one: &'static str, more: &'static str| {
        if names.len() == 1 { one } else { more }
    };
    Ok(if lost.is_empty() {
        format!("all have the password {DEV_PASSWORD:?}.")
    } else if have.is_empty() {
        format!(
            "none of them has the password {DEV_PASSWORD:?} any more: each one's was changed, or disabled by offboarding, since a --dev server on this data dir gave it."
        )
    } else {
        format!(
            "of them, {} {} the password {DEV_PASSWORD:?}; {} no longer {} (changed, or disabled by offboarding, since a --dev server on this data dir gave it).",
            have.join(", "),
            verb(&have, "has", "have"),
            lost.join(", "),
            verb(&lost, "does", "do"),
        )
    })
}

/// Whether `phc`, a stored password hash, is that of [`DEV_PASSWORD`].
fn is_dev_password(phc: &str) -> bool {
    use argon2::{Argon2, PasswordHash, PasswordVerifier};
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(DEV_PASSWORD.as_bytes(), &h)
            .is_ok()
    })
}

/// Listens for SIGTERM and SIGINT from now on, and completes at the first. Registered at the
/// very start, before anything is made or served: a signal that came before the accept loop
/// first looked for one would otherwise take the default action and kill the server mid-way
/// (a first start cut short, or a clean stop lost).
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down");
    })
}

/// Reloads the policy at each SIGHUP `hup` hears, until `stop` changes.
async fn reload_on_sighup(
    app: Shared,
    mut hup: tokio::signal::unix::Signal,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = hup.recv() => match app.reload_policy(Actor::system()).await {
                Ok((digest, _logged)) => {
                    tracing::info!(%digest, "policy reloaded on SIGHUP");
                    if let Some(drift) = app.directory_drift().await {
                        tracing::warn!("{drift}");
                    }
                    crate::broker::grant_met_requests_later(&app);
                }
                Err(e) => tracing::error!(error = %e, "policy reload on SIGHUP refused; the previous policy stays live"),
            },
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_on_a_nearly_full_disk_says_so() {
        let failed = || {
            anyhow::Error::from(warden_store::Error::Backend("disk I/O error".into()))
                .context("reading d/warden.db")
        };
        let said = format!("{:#}", disk_full_said(failed(), Some(16 * 1024)));
        assert!(
            said.starts_with(
                "reading d/warden.db: storage failure: disk I/O error: most likely the disk is (nearly) full: the data dir's disk has 16 KiB free"
            ),
            "{said}"
        );
        // Room enough, or no telling: the error as it was.
        let roomy = format!("{:#}", disk_full_said(failed(), Some(1 << 40)));
        assert_eq!(
            roomy,
            "reading d/warden.db: storage failure: disk I/O error"
        );
        assert!(!format!("{:#}", disk_full_said(failed(), None)).contains("full"));
        // Nor is any other failure blamed on the disk.
        let other = anyhow::anyhow!("file is not a database");
        assert_eq!(
            format!("{:#}", disk_full_said(other, Some(0))),
            "file is not a database"
        );
    }

    #[test]
    fn the_open_file_limit_is_raised_to_its_hard_limit() {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        // No hard limit: nothing to raise the soft one to.
        let Some(hard) = getrlimit(Resource::Nofile).maximum else {
            return;
        };
        let lowered = Rlimit {
            current: Some((hard / 2).max(256).min(hard)),
            maximum: Some(hard),
        };
        setrlimit(Resource::Nofile, lowered).unwrap();
        assert_eq!(raise_open_files_limit(), hard);
        assert_eq!(getrlimit(Resource::Nofile).current, Some(hard));
        // Already there: left as it is.
        assert_eq!(raise_open_files_limit(), hard);
    }

    #[test]
    fn an_api_address_beyond_loopback_is_said_to_carry_secrets_in_clear() {
        assert_eq!(in_clear("127.0.0.1:8443".parse().unwrap()), None);
        assert_eq!(in_clear("[::1]:8443".parse().unwrap()), None);
        let said = in_clear("0.0.0.0:8443".parse().unwrap()).unwrap();
        assert!(said.contains("0.0.0.0:8443 in plain HTTP"), "{said}");
        assert!(in_clear("10.0.0.7:8443".parse().unwrap()).is_some());
    }
}
