//! Who besides the server's user may change a path. The policy directory decides who gets
//! access and the data dir holds the keys and the database, so anyone else able to write
//! them, to own them (an owner may make a file writable at will), or to replace a directory
//! above them, could grant themselves access.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Why someone other than the server's user or root could change `path` (followed through
/// links to where it is), or `None`: it, or a directory above it, is writable by group or
/// others or owned by another user. A directory with the sticky bit, like `/tmp`, lets
/// others add names to it but not replace ours, and so is no way in. The walk up stops at
/// `checked`, a directory already found safe, in canonical form. A path that does not
/// resolve is left to whatever reads it to report.
pub fn others_may_change(path: &Path, checked: Option<&Path>) -> Option<String> {
    let real = std::fs::canonicalize(path).ok()?;
    let linked = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    let me = rustix::process::geteuid().as_raw();
    let problem = |p: &Path, above: bool| -> Option<String> {
        let meta = std::fs::metadata(p).ok()?;
        let (named, fix_on) = match (above, linked) {
            (true, _) => (
                format!("the directory {} above it", p.display()),
                p.display().to_string(),
            ),
            (false, true) => (
                format!("{}, where it leads,", p.display()),
                p.display().to_string(),
            ),
            (false, false) => ("it".to_owned(), "it".to_owned()),
        };
        let mode = meta.mode();
        if meta.uid() != me && meta.uid() != 0 {
            Some(format!(
                "{named} is owned by uid {}, not by the server's user (uid {me}) or root, and its owner can change it at will: whoever can change the policy or the data dir decides who gets access; chown {fix_on} to the server's user",
                meta.uid()
            ))
        } else if mode & 0o022 != 0 && !(above && mode & 0o1000 != 0) {
            Some(format!(
                "{named} is writable by group or others (mode {:o}): whoever can write the policy or the data dir decides who gets access; run chmod go-w on {fix_on}",
                mode & 0o777
            ))
        } else {
            None
        }
    };
    problem(&real, false).or_else(|| {
        real.ancestors()
            .skip(1)
            .take_while(|dir| Some(*dir) != checked)
            .find_map(|dir| problem(dir, true))
    })
}
