//! File-transfer metadata from the SFTP subsystem: which files, which direction, how many
//! bytes. Modern `scp` speaks SFTP too, so this covers both.
//!
//! A small bounded parser of the packets that transfer or change files (OPEN, READ, WRITE,
//! CLOSE, REMOVE, RENAME, MKDIR, RMDIR, SETSTAT, FSETSTAT, SYMLINK, OpenSSH's `posix-rename`,
//! `hardlink` and `lsetstat` extensions, and the HANDLE/DATA replies); every other packet (reads
//! of directories and attributes) passes untouched. A packet longer
//! than [`MAX_PACKET`] is refused as an error, which ends the session: unparsed transfers are
//! never let through unrecorded. So is a request whose id another request still awaiting its
//! reply holds ([`Unfollowable::ReusedId`]): a reply names its request by id alone.

use std::collections::{HashMap, HashSet};

/// Largest SFTP packet accepted (OpenSSH sends at most 256 KiB).
pub const MAX_PACKET: usize = 1024 * 1024;

/// Most requests that may await their replies at once: far more than a client keeps in flight
/// (OpenSSH's keeps 64), and a bound on the ids Warden holds for them.
pub const MAX_PENDING: usize = 65_536;

const INIT: u8 = 1;
const VERSION: u8 = 2;
const OPEN: u8 = 3;
const CLOSE: u8 = 4;
const READ: u8 = 5;
const WRITE: u8 = 6;
const SETSTAT: u8 = 9;
const FSETSTAT: u8 = 10;
const REMOVE: u8 = 13;
const MKDIR: u8 = 14;
const RMDIR: u8 = 15;
const RENAME: u8 = 18;
const SYMLINK: u8 = 20;
const EXTENDED: u8 = 200;
/// The attributes' flag saying their permissions follow (after size and owner, when given).
const ATTR_SIZE: u32 = 0x1;
const ATTR_UIDGID: u32 = 0x2;
const ATTR_PERMISSIONS: u32 = 0x4;
const HANDLE: u8 = 102;
const DATA: u8 = 103;
const FLAG_WRITE: u32 = 0x2;

/// Which way a file went, seen from the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Upload,
    Download,
}

/// Something done to a file on the target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum FileOp {
    Transfer {
        path: String,
        direction: Direction,
        bytes: u64,
    },
    Remove {
        path: String,
    },
    Rename {
        from: String,
        to: String,
    },
    Mkdir {
        path: String,
    },
    Rmdir {
        path: String,
    },
    /// Attributes changed: the new mode, in octal, when they set one (a setuid bit shows).
    Setstat {
        path: String,
        mode: Option<String>,
    },
    /// A symbolic link made at `link`, pointing to `target` (in the order OpenSSH's server
    /// takes them).
    Symlink {
        target: String,
        link: String,
    },
    /// A hard link `to` made to `from`.
    Link {
        from: String,
        to: String,
    },
}

/// The mode an SFTP attributes block sets, if it sets one.
fn mode(r: &mut Reader<'_>) -> Result<Option<String>, Unfollowable> {
    let flags = r.u32()?;
    if flags & ATTR_SIZE != 0 {
        let _size = (r.u32()?, r.u32()?);
    }
    if flags & ATTR_UIDGID != 0 {
        let _owner = (r.u32()?, r.u32()?);
    }
    Ok(if flags & ATTR_PERMISSIONS != 0 {
        Some(format!("{:o}", r.u32()? & 0o7777))
    } else {
        None
    })
}

/// Why Warden cannot follow an SFTP channel, which then ends: what it cannot follow, it
/// cannot audit.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unfollowable {
    /// A packet was too long or malformed.
    #[error("unparseable SFTP packet: {0}")]
    Malformed(&'static str),
    /// A request reused the id of one still awaiting its reply. Replies name their request by
    /// id alone, so either reply could be taken for the other's: a file read under the name of
    /// another.
    #[error("SFTP request id {0} was used again while a request with that id awaited its reply")]
    ReusedId(u32),
    /// More than [`MAX_PENDING`] requests awaited their replies.
    #[error("more than {MAX_PENDING} SFTP requests awaited their replies")]
    TooManyPending,
}

#[derive(Debug)]
struct Open {
    path: String,
    direction: Direction,
    bytes: u64,
}

/// Follows one SFTP channel in both directions.
#[derive(Debug, Default)]
pub struct Tracker {
    from_client: Vec<u8>,
    from_server: Vec<u8>,
    /// Ids of the requests sent and not yet answered, whatever their kind.
    pending: HashSet<u32>,
    opening: HashMap<u32, (String, Direction)>,
    reading: HashMap<u32, Vec<u8>>,
    open: HashMap<Vec<u8>, Open>,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Result<u32, Unfollowable> {
        let (head, rest) = self
            .0
            .split_at_checked(4)
            .ok_or(Unfollowable::Malformed("truncated"))?;
        self.0 = rest;
        Ok(u32::from_be_bytes([head[0], head[1], head[2], head[3]]))
    }
    fn bytes(&mut self) -> Result<&'a [u8], Unfollowable> {
        let n = self.u32()? as usize;
        let (head, rest) = self
            .0
            .split_at_checked(n)
            .ok_or(Unfollowable::Malformed("truncated"))?;
        self.0 = rest;
        Ok(head)
    }
    fn string(&mut self) -> Result<String, Unfollowable> {
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }
}

/// The operation an extended request (the rest of its packet in `r`) asks for, of those that
/// change files: OpenSSH's `posix-rename`, `hardlink` and `lsetstat`.
fn extended(r: &mut Reader<'_>) -> Result<Option<FileOp>, Unfollowable> {
    Ok(match r.bytes()? {
        b"posix-rename@openssh.com" => Some(FileOp::Rename {
            from: r.string()?,
            to: r.string()?,
        }),
        b"hardlink@openssh.com" => Some(FileOp::Link {
            from: r.string()?,
            to: r.string()?,
        }),
        b"lsetstat@openssh.com" => Some(FileOp::Setstat {
            path: r.string()?,
            mode: mode(r)?,
        }),
        _ => None,
    })
}

/// Splits whole packets off `buf`, calling `f(type, body)` for each.
fn packets(
    buf: &mut Vec<u8>,
    data: &[u8],
    mut f: impl FnMut(u8, &[u8]) -> Result<(), Unfollowable>,
) -> Result<(), Unfollowable> {
    buf.extend_from_slice(data);
    let mut at = 0;
    while buf.len() - at >= 4 {
        let len = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        if len == 0 || len > MAX_PACKET {
            return Err(Unfollowable::Malformed("bad length"));
        }
        if buf.len() - at - 4 < len {
            break;
        }
        let packet = &buf[at + 4..at + 4 + len];
        f(packet[0], &packet[1..])?;
        at += 4 + len;
    }
    buf.drain(..at);
    Ok(())
}

impl Tracker {
    /// Feeds bytes the client sent; returns completed operations.
    pub fn client(&mut self, data: &[u8]) -> Result<Vec<FileOp>, Unfollowable> {
        let mut done = Vec::new();
        let mut buf = std::mem::take(&mut self.from_client);
        let r = packets(&mut buf, data, |kind, body| {
            if kind == INIT {
                return Ok(());
            }
            let mut r = Reader(body);
            let id = r.u32()?;
            self.await_reply(id)?;
            done.extend(self.request(kind, id, &mut r)?);
            Ok(())
        });
        self.from_client = buf;
        r.map(|()| done)
    }

    /// Notes that request `id` awaits its reply, unless another with that id still does.
    fn await_reply(&mut self, id: u32) -> Result<(), Unfollowable> {
        if self.pending.len() >= MAX_PENDING {
            return Err(Unfollowable::TooManyPending);
        }
        if !self.pending.insert(id) {
            return Err(Unfollowable::ReusedId(id));
        }
        Ok(())
    }

    /// Follows request `id` of `kind` (the rest of its packet in `r`): the operation it
    /// completes, if any.
    fn request(
        &mut self,
        kind: u8,
        id: u32,
        r: &mut Reader<'_>,
    ) -> Result<Option<FileOp>, Unfollowable> {
        Ok(match kind {
            OPEN => {
                let path = r.string()?;
                let flags = r.u32()?;
                let direction = if flags & FLAG_WRITE != 0 {
                    Direction::Upload
                } else {
                    Direction::Download
                };
                self.opening.insert(id, (path, direction));
                None
            }
            READ => {
                let handle = r.bytes()?.to_vec();
                self.reading.insert(id, handle);
                None
            }
            WRITE => {
                let handle = r.bytes()?;
                let _offset = (r.u32()?, r.u32()?);
                let data = r.bytes()?;
                if let Some(f) = self.open.get_mut(handle) {
                    f.bytes += data.len() as u64;
                }
                None
            }
            CLOSE => self.open.remove(r.bytes()?).map(|f| FileOp::Transfer {
                path: f.path,
                direction: f.direction,
                bytes: f.bytes,
            }),
            REMOVE => Some(FileOp::Remove { path: r.string()? }),
            RENAME => Some(FileOp::Rename {
                from: r.string()?,
                to: r.string()?,
            }),
            MKDIR => Some(FileOp::Mkdir { path: r.string()? }),
            RMDIR => Some(FileOp::Rmdir { path: r.string()? }),
            SETSTAT => Some(FileOp::Setstat {
                path: r.string()?,
                mode: mode(r)?,
            }),
            FSETSTAT => {
                let path = self
                    .open
                    .get(r.bytes()?)
                    .map_or_else(|| "(an open directory)".to_owned(), |f| f.path.clone());
                Some(FileOp::Setstat {
                    path,
                    mode: mode(r)?,
                })
            }
            SYMLINK => Some(FileOp::Symlink {
                target: r.string()?,
                link: r.string()?,
            }),
            EXTENDED => extended(r)?,
            _ => None,
        })
    }

    /// Feeds bytes the server sent. Each reply ends the wait of the request it names, a
    /// STATUS that of a pending OPEN or READ too.
    pub fn server(&mut self, data: &[u8]) -> Result<(), Unfollowable> {
        let mut buf = std::mem::take(&mut self.from_server);
        let r = packets(&mut buf, data, |kind, body| {
            if kind == VERSION {
                return Ok(());
            }
            let mut r = Reader(body);
            let id = r.u32()?;
            self.pending.remove(&id);
            let opening = self.opening.remove(&id);
            let reading = self.reading.remove(&id);
            match (kind, opening, reading) {
                (HANDLE, Some((path, direction)), _) => {
                    let handle = r.bytes()?.to_vec();
                    self.open.insert(
                        handle,
                        Open {
                            path,
                            direction,
                            bytes: 0,
                        },
                    );
                }
                (DATA, _, Some(handle)) => {
                    let data = r.bytes()?;
                    if let Some(f) = self.open.get_mut(&handle) {
                        f.bytes += data.len() as u64;
                    }
                }
                _ => {}
            }
            Ok(())
        });
        self.from_server = buf;
        r
    }

    /// Files still open when the channel ended.
    pub fn finish(self) -> Vec<FileOp> {
        self.open
            .into_values()
            .map(|f| FileOp::Transfer {
                path: f.path,
                direction: f.direction,
                bytes: f.bytes,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(kind: u8, fields: &[&[u8]]) -> Vec<u8> {
        let mut body = vec![kind];
        for f in fields {
            body.extend_from_slice(f);
        }
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend(body);
        out
    }
    fn s(b: &[u8]) -> Vec<u8> {
        let mut v = (b.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(b);
        v
    }
    fn u(n: u32) -> Vec<u8> {
        n.to_be_bytes().to_vec()
    }

    #[test]
    fn follows_an_upload_and_a_download() {
        let mut t = Tracker::default();
        // Upload: OPEN(write) → HANDLE → two WRITEs (split across chunks) → CLOSE.
        let open = packet(OPEN, &[&u(1), &s(b"/tmp/up"), &u(0x1a), &u(0)]);
        assert!(t.client(&open).unwrap().is_empty());
        t.server(&packet(HANDLE, &[&u(1), &s(b"h1")])).unwrap();
        let write = packet(WRITE, &[&u(2), &s(b"h1"), &u(0), &u(0), &s(&[7; 1000])]);
        let (a, b) = write.split_at(10);
        assert!(t.client(a).unwrap().is_empty());
        t.client(b).unwrap();
        t.client(&packet(
            WRITE,
            &[&u(3), &s(b"h1"), &u(0), &u(1000), &s(&[7; 24])],
        ))
        .unwrap();
        let done = t.client(&packet(CLOSE, &[&u(4), &s(b"h1")])).unwrap();
        assert_eq!(
            done,
            vec![FileOp::Transfer {
                path: "/tmp/up".into(),
                direction: Direction::Upload,
                bytes: 1024
            }]
        );
        // Download: OPEN(read) → HANDLE → READ → DATA, left open at the end.
        t.client(&packet(OPEN, &[&u(5), &s(b"/etc/hosts"), &u(1), &u(0)]))
            .unwrap();
        t.server(&packet(HANDLE, &[&u(5), &s(b"h2")])).unwrap();
        t.client(&packet(READ, &[&u(6), &s(b"h2"), &u(0), &u(0), &u(4096)]))
            .unwrap();
        t.server(&packet(DATA, &[&u(6), &s(b"127.0.0.1 localhost\n")]))
            .unwrap();
        assert_eq!(
            t.finish(),
            vec![FileOp::Transfer {
                path: "/etc/hosts".into(),
                direction: Direction::Download,
                bytes: 20
            }]
        );
    }

    #[test]
    fn follows_what_changes_files_without_transferring_them() {
        let mut t = Tracker::default();
        let mut ops = Vec::new();
        for p in [
            packet(MKDIR, &[&u(1), &s(b"/tmp/d"), &u(0)]),
            packet(
                EXTENDED,
                &[
                    &u(2),
                    &s(b"posix-rename@openssh.com"),
                    &s(b"/tmp/a"),
                    &s(b"/tmp/d/b"),
                ],
            ),
            // Permissions after size and owner: 04777, a setuid file.
            packet(
                SETSTAT,
                &[
                    &u(3),
                    &s(b"/tmp/d/b"),
                    &u(ATTR_SIZE | ATTR_UIDGID | ATTR_PERMISSIONS),
                    &u(0),
                    &u(5),
                    &u(0),
                    &u(0),
                    &u(0o104_777),
                ],
            ),
            packet(SYMLINK, &[&u(4), &s(b"/etc/passwd"), &s(b"/tmp/d/l")]),
            packet(
                EXTENDED,
                &[
                    &u(5),
                    &s(b"hardlink@openssh.com"),
                    &s(b"/tmp/d/b"),
                    &s(b"/tmp/d/h"),
                ],
            ),
            packet(RMDIR, &[&u(6), &s(b"/tmp/e")]),
            packet(EXTENDED, &[&u(7), &s(b"statvfs@openssh.com"), &s(b"/")]),
        ] {
            ops.extend(t.client(&p).unwrap());
        }
        assert_eq!(
            ops,
            vec![
                FileOp::Mkdir {
                    path: "/tmp/d".into()
                },
                FileOp::Rename {
                    from: "/tmp/a".into(),
                    to: "/tmp/d/b".into()
                },
                FileOp::Setstat {
                    path: "/tmp/d/b".into(),
                    mode: Some("4777".into())
                },
                FileOp::Symlink {
                    target: "/etc/passwd".into(),
                    link: "/tmp/d/l".into()
                },
                FileOp::Link {
                    from: "/tmp/d/b".into(),
                    to: "/tmp/d/h".into()
                },
                FileOp::Rmdir {
                    path: "/tmp/e".into()
                },
            ]
        );
    }

    #[test]
    fn a_request_id_awaiting_its_reply_is_not_used_again() {
        let secret = packet(OPEN, &[&u(5), &s(b"/home/u/secret.txt"), &u(1), &u(0)]);
        let harmless = packet(OPEN, &[&u(5), &s(b"/tmp/harmless.txt"), &u(1), &u(0)]);
        let mut t = Tracker::default();
        t.client(&secret).unwrap();
        assert_eq!(t.client(&harmless), Err(Unfollowable::ReusedId(5)));
        // In one chunk too, and behind a request Warden does not follow otherwise (OPENDIR,
        // whose HANDLE reply would be taken for the OPEN's).
        let opendir = packet(11, &[&u(5), &s(b"/tmp")]);
        let mut t = Tracker::default();
        assert_eq!(
            t.client(&[opendir, secret.clone()].concat()),
            Err(Unfollowable::ReusedId(5))
        );
        // A READ's id likewise.
        let read = packet(READ, &[&u(6), &s(b"h"), &u(0), &u(0), &u(4096)]);
        let mut t = Tracker::default();
        t.client(&read).unwrap();
        assert_eq!(t.client(&read), Err(Unfollowable::ReusedId(6)));
        // Once answered, an id is free again: the next OPEN is followed under its own path.
        t.server(&packet(DATA, &[&u(6), &s(b"x")])).unwrap();
        t.client(&secret).unwrap();
        t.server(&packet(HANDLE, &[&u(5), &s(b"h1")])).unwrap();
        t.client(&harmless).unwrap();
        t.server(&packet(HANDLE, &[&u(5), &s(b"h2")])).unwrap();
        let done = t.client(&packet(CLOSE, &[&u(7), &s(b"h1")])).unwrap();
        assert_eq!(
            done,
            vec![FileOp::Transfer {
                path: "/home/u/secret.txt".into(),
                direction: Direction::Download,
                bytes: 0
            }]
        );
    }

    #[test]
    fn requests_awaiting_their_replies_are_bounded() {
        let mut t = Tracker::default();
        let stat = |id: u32| packet(17, &[&u(id), &s(b"/")]);
        for id in 0..MAX_PENDING as u32 {
            t.client(&stat(id)).unwrap();
        }
        assert_eq!(
            t.client(&stat(MAX_PENDING as u32)),
            Err(Unfollowable::TooManyPending)
        );
    }

    #[test]
    fn refuses_oversized_and_truncated_packets() {
        let mut t = Tracker::default();
        assert!(t.client(&u(MAX_PACKET as u32 + 1)).is_err());
        let mut t = Tracker::default();
        assert!(t.client(&packet(OPEN, &[&u(1)])).is_err());
    }
}
