//! The audit log read straight from a data directory's database file, for offline
//! verification (`warden audit verify`).

use std::path::Path;

use rusqlite::{Connection, OpenFlags, params};
use warden_audit::merkle::BLOCK_HEIGHT;

use super::{Columns, audit_search, backend, decode_checkpoint};

/// Most altered events one check names.
pub const MAX_NAMED: usize = 1000;
use crate::{Checkpoint, Error, Result};

/// Read-only access to a data directory's audit log, for offline verification: it opens the
/// database file directly, so it works without (and regardless of) a running server.
#[derive(Debug)]
pub struct AuditReader {
    conn: Connection,
}

impl AuditReader {
    /// Opens `path` read-only, writing nothing anywhere, so that a user who may only read a
    /// copy (a backup in a directory they cannot write) can verify it.
    ///
    /// SQLite reads a database in WAL mode, as Warden's is, through its `-shm` index and its
    /// `-wal` log, creating them beside it even for a read-only connection: that needs write
    /// access to the directory, and leaves them behind. With no `-wal` file beside the
    /// database, no server has it open and nothing committed lies outside the main file (a
    /// clean stop folds the log into it and removes it; a copy made with `.backup` has none),
    /// so it is opened `immutable`: read as it is, without locks, `-shm` or `-wal`. Otherwise
    /// it is opened as a server's reader would be, and the `-wal` read; where that fails for
    /// want of write access, the error says so and how to verify all the same.
    pub fn open(path: &Path) -> Result<Self> {
        let wal = sibling(path, "-wal");
        let immutable = (!wal.exists())
            .then(|| std::fs::canonicalize(path).ok())
            .flatten()
            .map(|full| format!("file:{}?immutable=1", uri_path(&full)));
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = match &immutable {
            Some(uri) => Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI),
            None => Connection::open_with_flags(path, flags),
        }
        .map_err(|e| Error::Backend(format!("cannot open {}: {e}", path.display())))?;
        // The first read is where SQLite opens (or fails to create) the -shm and -wal files.
        let read = conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        });
        match read {
            Ok(_) => Ok(Self { conn }),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if immutable.is_none()
                    && matches!(
                        e.code,
                        rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen
                    ) =>
            {
                let dir = path.parent().unwrap_or(Path::new("."));
                Err(Error::Backend(format!(
                    "cannot read {} without write access ({e}): beside it lies {}, so a server has it open or stopped without folding its last writes in, and SQLite reads that through files it must create or write in {}. Verify a stopped copy instead (`sqlite3 {} \".backup COPY/warden.db\"`, then `--data-dir COPY`), or verify as a user who may write to {}",
                    path.display(),
                    wal.display(),
                    dir.display(),
                    path.display(),
                    dir.display()
                )))
            }
            Err(e) => Err(Error::Backend(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// Up to `limit` stored leaves (seq, data, stored hash) after `after_seq`, in seq order.
    /// A damaged hash column still yields a record (all zeros), so verification can name it.
    pub fn leaves(&self, after_seq: u64, limit: usize) -> Result<Vec<(u64, String, [u8; 32])>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, body, leaf_hash FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(backend)?;
        let after = i64::try_from(after_seq).map_err(backend)?;
        let rows = stmt
            .query_map(
                params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    let hash: Vec<u8> = r.get(2)?;
                    Ok((
                        u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                        r.get::<_, String>(1)?,
                        hash.try_into().unwrap_or([0; 32]),
                    ))
                },
            )
            .map_err(backend)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
    }

    /// Whether the database has `table` at all: `warden audit verify` may read a data dir an
    /// older server last wrote (block roots and filters came with migration 0010, the kept
    /// leaves of archived events with 0013).
    fn has_table(&self, table: &str) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
                [table],
                |r| r.get(0),
            )
            .map_err(backend)
    }

    fn has_blocks(&self) -> Result<bool> {
        self.has_table("audit_blocks")
    }

    /// The rows of `sql`, a number and a 32-byte hash each, if `table` exists.
    fn numbered_hashes(&self, table: &str, sql: &str) -> Result<Vec<(u64, [u8; 32])>> {
        if !self.has_table(table)? {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare(sql).map_err(backend)?;
        let rows = stmt
            .query_map([], |r| {
                let hash: Vec<u8> = r.get(1)?;
                Ok((
                    u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    hash.try_into().unwrap_or([0; 32]),
                ))
            })
            .map_err(backend)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
    }

    /// Whether the database has the table of the kept leaf hashes of archived events
    /// (migration 0013): one an older server last wrote has none, nor any to miss.
    pub fn keeps_archived_leaves(&self) -> Result<bool> {
        self.has_table("archived_leaves")
    }

    /// The kept leaf hashes of archived events (seq, hash), in order: those of the block an
    /// archive cut into; none in a database older than them.
    pub fn archived_leaves(&self) -> Result<Vec<(u64, [u8; 32])>> {
        self.numbered_hashes(
            "archived_leaves",
            "SELECT seq, leaf_hash FROM archived_leaves ORDER BY seq",
        )
    }

    /// Every stored block root (block number, root); none in a database older than them.
    pub fn block_roots(&self) -> Result<Vec<(u64, [u8; 32])>> {
        self.numbered_hashes(
            "audit_blocks",
            "SELECT block, root FROM audit_blocks ORDER BY block",
        )
    }

    /// Rebuilds the search filter of every block whose events are all in the live log and
    /// compares it with the stored one: how many were compared, and the blocks whose stored
    /// filter differs (altered, so that a search could miss their events).
    pub fn check_block_keys(&self) -> Result<(u64, Vec<u64>)> {
        if !self.has_blocks()? {
            return Ok((0, Vec::new()));
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT block, keys FROM audit_blocks
                 WHERE keys IS NOT NULL
                   AND (block << ?1) >= (SELECT COALESCE(MIN(seq), 1) - 1 FROM audit)
                 ORDER BY block",
            )
            .map_err(backend)?;
        let stored = stmt
            .query_map([BLOCK_HEIGHT], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(backend)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(backend)?;
        let mut altered = Vec::new();
        for (block, keys) in &stored {
            let rebuilt = audit_search::block_keys(&self.conn, &[*block]).map_err(backend)?;
            if rebuilt.first() != Some(keys) {
                altered.push(u64::try_from(*block).unwrap_or(0));
            }
        }
        Ok((stored.len() as u64, altered))
    }

    /// Checks that each event's searchable columns (time, code, actor, target, request) are
    /// what its text says: they are not hashed, so one altered would hide the event from a
    /// search, or show it to the wrong user, while the log still verified. Returns how many
    /// events were checked and the sequence numbers of the altered ones (at most
    /// [`MAX_NAMED`]). An event whose text does not parse is left to the hash check.
    pub fn check_columns(&self) -> Result<(u64, Vec<u64>)> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, time, code, user, target, request_id, body FROM audit ORDER BY seq",
            )
            .map_err(backend)?;
        let mut rows = stmt.query([]).map_err(backend)?;
        let (mut checked, mut altered) = (0, Vec::new());
        while let Some(r) = rows.next().map_err(backend)? {
            checked += 1;
            let body: String = r.get(6).map_err(backend)?;
            let Ok(event) = serde_json::from_str::<warden_domain::audit::Event>(&body) else {
                continue;
            };
            let stored = Columns {
                time: r.get(1).map_err(backend)?,
                code: r.get(2).map_err(backend)?,
                user: r.get(3).map_err(backend)?,
                target: r.get(4).map_err(backend)?,
                request: r.get(5).map_err(backend)?,
            };
            if stored != Columns::of(&event) && altered.len() < MAX_NAMED {
                altered.push(u64::try_from(r.get::<_, i64>(0).map_err(backend)?).unwrap_or(0));
            }
        }
        Ok((checked, altered))
    }

    /// Every stored checkpoint, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        let mut stmt = self
            .conn
            .prepare("SELECT size, root, time, frontier, note FROM checkpoints ORDER BY size")
            .map_err(backend)?;
        let rows = stmt.query_map([], decode_checkpoint).map_err(backend)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
    }
}

/// `path` with `suffix` added to its file name: `warden.db-wal` beside `warden.db`.
fn sibling(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// `path` as the path of a `file:` URI: every byte but letters, digits, `/`, `-`, `.`, `_` and
/// `~` percent-encoded (a `?`, `#` or `%` in a file name would otherwise end or change it).
fn uri_path(path: &Path) -> String {
    use std::fmt::Write;
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(char::from(b));
        } else {
            let _ = write!(uri, "%{b:02X}");
        }
    }
    uri
}
