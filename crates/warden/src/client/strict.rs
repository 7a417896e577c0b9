//! Whether the places the client keeps secrets in are the caller's alone, judged as sshd's
//! `StrictModes` judges `authorized_keys`: `WARDEN_HOME`, its `ssh/` and `grants/` folders and
//! the files of secrets in them must be owned by the caller (or root) and writable by no one
//! else. Whoever else could write there could put a login of their own there, naming a server
//! of theirs, to which `warden login` would send the password; or keys and certificates of
//! their own, or a grant's connection details leading elsewhere. A directory with the sticky
//! bit that others may write, like `/tmp`, is no place for them either: anyone may add to it.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Context;

use crate::exit::{self, Failure};

/// A place to keep secrets in, as a refusal names it and says what to do.
#[derive(Debug, Clone, Copy)]
pub enum Place<'a> {
    /// `WARDEN_HOME` itself.
    Home,
    /// A folder in it (`ssh/`, `grants/`), which the client makes afresh when missing.
    Folder,
    /// A file of secrets, with what to do to have it afresh once removed.
    File { again: &'a str },
}

/// Refuses (exit code 2, usage) directory `dir` as a place for secrets when someone other
/// than the caller or root owns it (or the link to it), or group or others may write to it. A
/// directory not there is no refusal: the client makes it, private.
pub fn check_dir(dir: &Path, place: Place<'_>) -> anyhow::Result<()> {
    // `home/` names `home` (and a link `home/` is where it leads, not the link).
    let dir = dir.components().collect::<std::path::PathBuf>();
    let meta = match std::fs::metadata(&dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    if let Place::Home = place {
        check_above(&dir)?;
        let real = std::fs::canonicalize(&dir)
            .with_context(|| format!("finding where {} leads", dir.display()))?;
        check_above(&real)?;
    }
    check(&dir, &meta, place)
}

/// Refuses (exit code 2, usage) the folders above `home` and the links on the way to it, as
/// sshd judges the directories above `authorized_keys`: whoever may change one of them could
/// swap the home for a folder of their own between the client's look at it and its use. Each
/// must be owned by the caller or root, and writable by no one else, unless it is a shared
/// folder with the sticky bit (like `/tmp`), where only the owner of the entry below it, here
/// the caller or root, may move or remove that entry.
fn check_above(home: &Path) -> anyhow::Result<()> {
    let me = caller();
    let trusted = |uid: u32| uid == me || uid == 0;
    let refuse = |path: &Path, why: String| -> anyhow::Result<()> {
        Err(Failure::new(
            exit::USAGE,
            format!(
                "refusing WARDEN_HOME {}: {} {why}, who could swap WARDEN_HOME for a folder of theirs holding a login that names their server (`warden login` would send it your password); set WARDEN_HOME to a directory under one only you and root may change (like one `mktemp -d` makes)",
                home.display(),
                path.display()
            ),
        )
        .into())
    };
    let mut prefixes: Vec<&Path> = home.ancestors().collect();
    prefixes.reverse();
    for pair in prefixes.windows(2) {
        let (above, below) = (pair[0], pair[1]);
        let meta = std::fs::symlink_metadata(above)
            .with_context(|| format!("reading {}", above.display()))?;
        if meta.file_type().is_symlink() {
            if !trusted(meta.uid()) {
                return refuse(above, format!("is a link owned by uid {}", meta.uid()));
            }
            continue;
        }
        if !trusted(meta.uid()) {
            return refuse(above, format!("is owned by uid {}", meta.uid()));
        }
        if meta.mode() & 0o022 != 0 {
            let sticky = meta.mode() & 0o1000 != 0;
            let entry = std::fs::symlink_metadata(below)
                .with_context(|| format!("reading {}", below.display()))?;
            if !(sticky && trusted(entry.uid())) {
                return refuse(
                    above,
                    format!(
                        "may be written by group or others (mode {:o})",
                        meta.mode() & 0o7777
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Refuses (exit code 2, usage) file `path`, whose metadata (where links lead) is `meta`, as
/// a file of secrets when someone other than the caller or root owns it (or the link to it),
/// or group or others may write to it.
pub fn check_file(path: &Path, meta: &Metadata, again: &str) -> anyhow::Result<()> {
    check(path, meta, Place::File { again })
}

fn check(path: &Path, meta: &Metadata, place: Place<'_>) -> anyhow::Result<()> {
    let me = caller();
    let foreign = |uid: u32| uid != me && uid != 0;
    let shown = path.display();
    let link = std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_symlink());
    let what = match place {
        Place::Home => format!("WARDEN_HOME {shown}"),
        Place::Folder => format!("the folder {shown} of WARDEN_HOME"),
        Place::File { .. } => format!("the file {shown}"),
    };
    let danger = match place {
        Place::Home => {
            "could put a login there naming a server of theirs (`warden login` would send it your password), or keys of their own"
        }
        Place::Folder => {
            "could put keys, certificates or a grant's connection details of their own there"
        }
        Place::File { .. } => {
            "could have changed it to name a server of theirs, which your password or token would go to"
        }
    };
    let own_home =
        "set WARDEN_HOME to a directory of your own (mode 700, like one `mktemp -d` makes)";
    let refuse = |why: String, fix: String| -> anyhow::Result<()> {
        Err(Failure::new(
            exit::USAGE,
            format!("refusing {what}: {why}, who {danger}; {fix}"),
        )
        .into())
    };
    if let Some(link) = link.as_ref().filter(|l| foreign(l.uid())) {
        return refuse(
            format!(
                "it is a link owned by uid {}, not by you (uid {me}) or root",
                link.uid()
            ),
            format!("remove the link (`rm {shown}`), or {own_home}"),
        );
    }
    let mode = meta.mode();
    let remove = |again: &str| format!("remove it (`rm {shown}`) and {again}");
    if foreign(meta.uid()) {
        let fix = match place {
            Place::Home => own_home.to_owned(),
            Place::Folder => format!(
                "move it away (`mv {shown} {shown}.untrusted`) and the client makes it afresh, or {own_home}"
            ),
            Place::File { again } => remove(again),
        };
        return refuse(
            format!(
                "it is owned by uid {}, not by you (uid {me}) or root",
                meta.uid()
            ),
            fix,
        );
    }
    if mode & 0o022 == 0 {
        return Ok(());
    }
    let why = format!("group or others may write to it (mode {:o})", mode & 0o7777);
    let fix = match place {
        // Shared by design (like /tmp): no chmod of it is the user's to make.
        _ if meta.is_dir() && mode & 0o1000 != 0 => own_home.to_owned(),
        // Only its owner may change its mode.
        _ if meta.uid() != me => own_home.to_owned(),
        Place::Home | Place::Folder => format!("run `chmod 700 {shown}`, or {own_home}"),
        Place::File { again } => format!(
            "if no one else could have written it, run `chmod 600 {shown}`; else {}",
            remove(again)
        ),
    };
    refuse(why, fix)
}

/// The caller's effective user id.
fn caller() -> u32 {
    rustix::process::geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caller_owns_what_it_makes() {
        let dir = std::env::temp_dir().join(format!(
            "warden-strict-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        let owner = std::fs::metadata(&dir).map(|m| m.uid());
        let _ = std::fs::remove_dir(&dir);
        assert_eq!(Some(caller()), owner.ok());
    }
}
