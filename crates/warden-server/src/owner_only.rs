//! Who besides the server's user may change a path. The policy directory and the config file
//! decide who gets access and the data dir holds the keys and the database, so anyone else able to write
//! them, to own them (an owner may make a file writable at will), to replace a directory
//! above them, or to point a link on the way to them elsewhere, could grant themselves access.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why someone other than the server's user or root could change `path`, or `None`: it (where
/// links lead), a directory above it, or a link on the way to it (or the directory holding
/// that link) is writable by group or others or owned by another user. A directory with the
/// sticky bit, like `/tmp`, lets others add names to it but not replace ours, and so is no way
/// in. The walk up from where `path` leads stops at `checked`, a directory already found safe,
/// in canonical form. A path that does not resolve is left to whatever reads it to report.
pub fn others_may_change(path: &Path, checked: Option<&Path>) -> Option<String> {
    let real = std::fs::canonicalize(path).ok()?;
    let me = rustix::process::geteuid().as_raw();
    let linked = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    let (named, fix_on) = if linked {
        let shown = real.display().to_string();
        (format!("{shown}, where it leads,"), shown)
    } else {
        ("it".to_owned(), "it".to_owned())
    };
    open(&real, &named, &fix_on, false, me)
        .or_else(|| above(&real, checked, me))
        .or_else(|| links_on_the_way(path, me))
}

/// The first entry of `dir` that another user owns (or, for a link, where it leads), named,
/// with why that is refused: they could read or replace it (a key, the database). A link is
/// judged by where it leads as a policy file's is ([`others_may_change`]): a key or database
/// moved to a directory others may write, and linked from here, could be renamed or swapped
/// there. Modes are otherwise left to what reads each file (the keys must be 0600, the database
/// is made private).
pub fn entry_owned_by_others(dir: &Path) -> Option<String> {
    let me = rustix::process::geteuid().as_raw();
    let foreign = |uid: u32| uid != me && uid != 0;
    let checked = std::fs::canonicalize(dir).ok();
    std::fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let link = std::fs::symlink_metadata(&path).ok()?;
        if link.file_type().is_symlink()
            && let Some(why) = others_may_change(&path, checked.as_deref())
        {
            return Some(format!("{name}: {why}"));
        }
        let target = std::fs::metadata(&path).map_or(link.uid(), |m| m.uid());
        let uid = [link.uid(), target].into_iter().find(|u| foreign(*u))?;
        Some(format!(
            "{name} is owned by uid {uid}, not by the server's user (uid {me}) or root, who could read or replace it: chown it to the server's user"
        ))
    })
}

/// The first directory above `real` (up to `checked`) that others could change.
fn above(real: &Path, checked: Option<&Path>, me: u32) -> Option<String> {
    real.ancestors()
        .skip(1)
        .take_while(|dir| Some(*dir) != checked)
        .find_map(|dir| {
            let shown = dir.display().to_string();
            open(
                dir,
                &format!("the directory {shown} above it"),
                &shown,
                true,
                me,
            )
        })
}

/// Most links followed from one another, as Linux follows at most 40 before it refuses.
const MAX_LINKS: usize = 40;

/// Why someone else could point a link on the way to `path` (`path` itself included, and the
/// links on the way to where each leads) elsewhere: the link is another user's, or the
/// directory holding it is open to others.
fn links_on_the_way(path: &Path, me: u32) -> Option<String> {
    links_within(path, me, 0)
}

fn links_within(path: &Path, me: u32, depth: usize) -> Option<String> {
    if depth > MAX_LINKS {
        return None;
    }
    let absolute = std::path::absolute(path).ok()?;
    let mut prefix = PathBuf::new();
    for part in absolute.components() {
        prefix.push(part);
        let meta = std::fs::symlink_metadata(&prefix).ok()?;
        if !meta.file_type().is_symlink() {
            continue;
        }
        let link = prefix.display();
        if meta.uid() != me && meta.uid() != 0 {
            return Some(format!(
                "the link {link} on the way to it is owned by uid {}, not by the server's user (uid {me}) or root, and its owner can point it elsewhere at will: replace it with a link of the server's user, or use the path it leads to",
                meta.uid()
            ));
        }
        let holder = std::fs::canonicalize(prefix.parent()?).ok()?;
        let shown = holder.display().to_string();
        let why = open(
            &holder,
            &format!("the directory {shown} holding the link {link} on the way to it"),
            &shown,
            true,
            me,
        )
        .or_else(|| above(&holder, None, me));
        if why.is_some() {
            return why;
        }
        // Where it leads may pass through links of its own (a relative one leads from the
        // link's directory).
        let leads = prefix.parent()?.join(std::fs::read_link(&prefix).ok()?);
        if let Some(why) = links_within(&leads, me, depth + 1) {
            return Some(why);
        }
    }
    None
}

/// Why others could change `p` (`named` so in the message, the fix given for `fix_on`): owned
/// by another user, or writable by group or others (a directory `above` with the sticky bit
/// aside).
fn open(p: &Path, named: &str, fix_on: &str, above: bool, me: u32) -> Option<String> {
    let meta = std::fs::metadata(p).ok()?;
    let mode = meta.mode();
    if meta.uid() != me && meta.uid() != 0 {
        Some(format!(
            "{named} is owned by uid {}, not by the server's user (uid {me}) or root, and its owner can change it at will: whoever can change the policy, the config or the data dir decides who gets access; chown {fix_on} to the server's user",
            meta.uid()
        ))
    } else if mode & 0o022 != 0 && !(above && mode & 0o1000 != 0) {
        Some(format!(
            "{named} is writable by group or others (mode {:o}): whoever can write the policy, the config or the data dir decides who gets access; run chmod go-w on {fix_on}",
            mode & 0o777
        ))
    } else {
        None
    }
}
