//! The SQLite store: one file in WAL mode, written by a group-commit thread, read through a
//! small pool of read-only connections.
//!
//! `synchronous=FULL` makes every commit durable before callers hear back; group commit keeps
//! that affordable under load.

mod audit_reader;
mod audit_search;
mod block_keys;
mod breakglass;
mod figures;
mod rewrap;
mod ssh;
mod writer;

pub use audit_reader::AuditReader;
pub use rewrap::{a_sealed_value, compact, rewrap_sealed};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use time::OffsetDateTime;
use warden_audit::merkle::BLOCK_HEIGHT;
use warden_domain::audit::{Code, Event};
use warden_domain::{Lease, Request, RequestId, State, TargetName, UserName};

use crate::{
    AuditFilter, Change, Checked, Checkpoint, Delivery, Drill, Error, Leaf, OutboxStatus, Outgoing,
    RequestFilter, Reset, Result, SshKey, StoredEvent, Token, UserSecrets,
};
use breakglass::{NoticeRow, PostmortemRow};
use writer::Writer;

/// The schema as numbered migrations, oldest first; `PRAGMA user_version` counts how many
/// are applied. Add a file and a line here; never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_core.sql"),
    include_str!("migrations/0002_ssh_sessions.sql"),
    include_str!("migrations/0003_breakglass_outbox.sql"),
    include_str!("migrations/0004_figures.sql"),
    include_str!("migrations/0005_unused_audit_indexes.sql"),
    include_str!("migrations/0006_counted_audit_codes.sql"),
    include_str!("migrations/0007_stored_requirement.sql"),
    include_str!("migrations/0008_requests_in_id_order.sql"),
    include_str!("migrations/0009_archive_by_checkpoint_time.sql"),
    include_str!("migrations/0010_audit_block_roots.sql"),
    include_str!("migrations/0011_metrics_from_postmortems.sql"),
    include_str!("migrations/0012_lease_revoked_at.sql"),
    include_str!("migrations/0013_archived_leaves.sql"),
    include_str!("migrations/0014_breakglass_tier.sql"),
    include_str!("migrations/0015_revoked_until.sql"),
    include_str!("migrations/0016_ended_pickups.sql"),
    include_str!("migrations/0017_live_sessions.sql"),
    include_str!("migrations/0018_skipped_notices.sql"),
    include_str!("migrations/0019_config_hashes.sql"),
    include_str!("migrations/0020_settled_notices.sql"),
    include_str!("migrations/0021_write_probe.sql"),
    include_str!("migrations/0022_ssh_user_ca.sql"),
    include_str!("migrations/0023_password_set_by.sql"),
    include_str!("migrations/0024_certified_keys.sql"),
];
const READERS: usize = 8;

/// How long a token's row is kept past its expiry ([`SqliteStore::insert_token`] removes it
/// after that).
const TOKENS_KEPT_AFTER_EXPIRY: time::Duration = time::Duration::days(7);

/// The newest checkpoint made before a time, found through `checkpoints_time` (migration 0009).
const CHECKPOINT_BEFORE: &str = "SELECT size, root, time, frontier, note FROM checkpoints
     WHERE time < ?1 ORDER BY time DESC, size DESC LIMIT 1";

/// The page size of a new database (an existing one keeps its own). A commit writes every page
/// it touched to the log and syncs them, and a grant's commit touches one leaf of each of some
/// ten B-trees to add a few dozen bytes to each: on the disks measured, a sync takes about
/// 6 µs longer per 4 KiB page it writes, so halving SQLite's default page makes each commit's
/// sync shorter (grants/s +5 % under load). 2 KiB is the smallest page that still holds a
/// whole request row (about 1.5 KB) without an overflow page.
const PAGE_SIZE: i64 = 2048;

/// What an offboarded user's password hash is replaced with: no PHC string, so it matches no
/// password.
const DISABLED_PASSWORD: &str = "!offboarded";

/// SQLite-backed [`crate::Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: Writer,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
    schema: Schema,
}

/// The database's schema version (how many migrations it has), and the one it had before
/// this opening applied the rest, if it applied any: an upgrade, for the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schema {
    pub version: i64,
    pub migrated_from: Option<i64>,
}

fn backend(e: impl std::fmt::Display) -> Error {
    Error::backend(e.to_string())
}

fn ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn from_ms(v: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(v) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Every read-write connection's settings. `temp_store=MEMORY` matters for speed: each change
/// runs in a savepoint (see `writer`), whose undo journal would otherwise be a temporary file
/// created, written and deleted in every transaction. Nothing durable lives there; the
/// write-ahead log is what survives a crash.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch("PRAGMA foreign_keys=ON; PRAGMA synchronous=FULL; PRAGMA temp_store=MEMORY;")
}

/// Applies the migrations `conn` does not have yet, each in its own transaction.
fn migrate(conn: &Connection, path: &Path) -> Result<Schema> {
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(backend)?;
    if version > known {
        return Err(Error::Backend(format!(
            "{} has schema version {version}, newer than this Warden understands ({known}): a newer Warden wrote it; run that one, or restore the backup taken before the upgrade",
            path.display()
        )));
    }
    for (applied, sql) in (1..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(version).unwrap_or(0))
    {
        conn.execute_batch(&format!(
            "BEGIN; {sql} PRAGMA user_version={applied}; COMMIT;"
        ))
        .map_err(backend)?;
    }
    // A new database (version 0) is made, not upgraded.
    let migrated_from = (version != known && version != 0).then_some(version);
    if let Some(from) = migrated_from {
        tracing::info!(from, to = known, path = %path.display(), "store schema upgraded");
    }
    Ok(Schema {
        version: known,
        migrated_from,
    })
}

/// Makes the database file (created empty if missing) and its log and index readable by this
/// user alone: it holds password and token hashes and the audit log.
fn keep_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if !path.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| backend(format!("creating {}: {e}", path.display())))?;
    }
    make_private(path)
}

/// Makes the database file and its log and index, those there are, readable by this user
/// alone, warning of each found readable by others. Called before a connection opens the
/// database: SQLite creates the log and the index with the database file's permissions, so
/// those it made afresh from a file found readable by others (a clean stop removes them) held
/// nothing anyone could have read, and are not warned about.
fn make_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let private = std::fs::Permissions::from_mode(0o600);
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        match std::fs::metadata(file) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                tracing::warn!(
                    file = %file.display(),
                    mode = format!("{:o}", m.permissions().mode() & 0o777),
                    "the database was readable by group or others, and is made private now: its password and token hashes may have been read (consider new passwords, `warden user set-password`, and new sign-ins)"
                );
                std::fs::set_permissions(file, private.clone())
                    .map_err(|e| backend(format!("making {} private: {e}", file.display())))?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// The tables of [`SERVED_TABLES`] that hold rows, with their counts (a table an older schema
/// does not have yet holds none).
fn served_rows(conn: &Connection) -> rusqlite::Result<Vec<(&'static str, u64)>> {
    let mut found = Vec::new();
    for table in SERVED_TABLES {
        let exists: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
            [table],
            |r| r.get(0),
        )?;
        if !exists {
            continue;
        }
        let rows: i64 =
            conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
        if rows > 0 {
            found.push((table, u64::try_from(rows).unwrap_or(0)));
        }
    }
    Ok(found)
}

/// What a start checks of a database before it changes anything in it (see
/// [`SqliteStore::history`]).
#[derive(Debug, Clone)]
pub struct History {
    /// The audit log's last sequence number (0: no event).
    pub last_seq: u64,
    /// The newest signed checkpoint stored.
    pub latest_checkpoint: Option<Checkpoint>,
    /// Whether the last event that checkpoint covers is still held ([`HOLDS_LEAF`]).
    pub latest_covered_held: bool,
    /// The users offboarded whose password no administrator has set since.
    pub offboarded: Vec<UserName>,
    /// The codes of the log's events, in order, when no checkpoint is stored and there are at
    /// most [`FEW_EVENTS`] (64) of them: what a first start cut short before its first checkpoint
    /// left, to be told from a log that lost its checkpoints.
    pub unsigned_codes: Option<Vec<u16>>,
    /// Whether a user's password was ever set here from the source `dev`: the demo password
    /// `warden serve --dev` gives, so a data dir it made whatever became of its marker file.
    pub demo_passwords: bool,
    /// The fingerprint of the SSH user CA this store records (migration 0022,
    /// [`SqliteStore::record_ssh_user_ca`]): `None` until a start records one, in a new data
    /// dir or one from before that migration.
    pub ssh_user_ca: Option<String>,
    /// When no CA is recorded: the CA fingerprints (`ca_fingerprint`) of the SSH certificates
    /// issued here, as requests' credentials and `credential.issued` events name them, at most
    /// [`FEW_CAS`] of them; empty when a CA is recorded, which is then what counts.
    pub issued_by: Vec<String>,
    /// When the log holds no event: the tables of [`SERVED_TABLES`] that hold rows, and how
    /// many (empty otherwise). Only a server that served writes them, so with an empty log they
    /// show that its history was lost, not that the data dir is new.
    pub served_rows: Vec<(&'static str, u64)>,
}

/// The tables only a server that has served writes: requests and their leases, sign-in tokens,
/// and what checkpoints and archives keep of the log (block roots, archived leaf hashes). None
/// is written by a start before its log begins (the SSH user CA's record, the bootstrap
/// passwords are, or may be), so a first start cut short leaves them empty.
pub const SERVED_TABLES: [&str; 5] = [
    "requests",
    "tokens",
    "leases",
    "audit_blocks",
    "archived_leaves",
];

/// The most CA fingerprints [`History::issued_by`] lists.
const FEW_CAS: u32 = 8;

/// The most events [`History::unsigned_codes`] lists.
const FEW_EVENTS: u64 = 64;

const LAST_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) FROM audit";
const FIRST_CODES: &str = "SELECT code FROM audit ORDER BY seq";
/// Whether a `password.set` event (`?1`) has the source `dev`, read through the index of codes.
/// A body that is no JSON (a damaged row, for the audit checks to name) says nothing.
const DEMO_PASSWORD_SET: &str = "SELECT EXISTS (SELECT 1 FROM audit WHERE code = ?1
    AND CASE WHEN json_valid(body) THEN json_extract(body, '$.details.source') END = 'dev')";
/// Whether event `?1` is held: in the live log, among the archived leaves kept for proofs, or
/// archived with a whole block of 1024 (an archive cuts at a checkpoint, and keeps the leaves of
/// the block it cuts into).
const HOLDS_LEAF: &str = "SELECT EXISTS (SELECT 1 FROM audit WHERE seq = ?1)
    OR EXISTS (SELECT 1 FROM archived_leaves WHERE seq = ?1)
    OR (?1 % 1024 = 0 AND ?1 < COALESCE((SELECT MIN(seq) FROM audit), ?1 + 1))";
/// The first event whose leaf hash the store holds (among the archived leaves kept for proofs,
/// or in the live log), 0 for none: those before it were archived without their hashes.
const FIRST_LEAF_HASH: &str =
    "SELECT COALESCE((SELECT MIN(seq) FROM archived_leaves), (SELECT MIN(seq) FROM audit), 0)";
const LATEST_CHECKPOINT: &str =
    "SELECT size, root, time, frontier, note FROM checkpoints ORDER BY size DESC LIMIT 1";
/// Whether the database has the table of migration 0022 (a start reads a database before it
/// migrates it).
const HAS_CA_RECORD: &str =
    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ssh_user_ca')";
const RECORDED_CA: &str = "SELECT fingerprint FROM ssh_user_ca WHERE id = 1";
/// The distinct CA fingerprints of the SSH certificates issued (`?1`: the code of
/// `credential.issued`), at most `?2`. A body that is no JSON (a damaged row, for the audit
/// checks to name) says nothing.
const ISSUED_BY: &str = "SELECT DISTINCT fp FROM (
        SELECT CASE WHEN json_valid(body) THEN json_extract(body, '$.credential.ca_fingerprint') END
            AS fp FROM requests
        UNION ALL
        SELECT CASE WHEN json_valid(body) THEN json_extract(body, '$.details.ca_fingerprint') END
            FROM audit WHERE code = ?1
    ) WHERE typeof(fp) = 'text' LIMIT ?2";

/// The users offboarded whose password no administrator has set since. A name the directory
/// could not hold is no one's to count.
fn offboarded(c: &Connection) -> rusqlite::Result<Vec<UserName>> {
    let mut stmt = c.prepare_cached("SELECT user FROM user_secrets WHERE password_hash = ?1")?;
    let names = stmt.query_map([DISABLED_PASSWORD], |r| r.get::<_, String>(0))?;
    Ok(names
        .filter_map(|n| n.ok().and_then(|n| n.parse().ok()))
        .collect())
}

impl SqliteStore {
    /// The history of the database at `path`, read without migrating it, so that a start
    /// refused for what it finds leaves the database as an older Warden can still open it;
    /// `None` when there is no database yet, or one no schema was ever written to. Its files
    /// are made private first, as [`SqliteStore::open`] makes them.
    pub fn history(path: &Path) -> Result<Option<History>> {
        if !path.exists() {
            return Ok(None);
        }
        // Before this first connection makes its log and index like the database file.
        make_private(path)?;
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(backend)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(backend)?;
        if version == 0 {
            return Ok(None);
        }
        let last_seq: i64 = conn
            .query_row(LAST_SEQ, [], |r| r.get(0))
            .map_err(backend)?;
        let latest_checkpoint = conn
            .query_row(LATEST_CHECKPOINT, [], decode_checkpoint)
            .optional()
            .map_err(backend)?;
        let latest_covered_held = match &latest_checkpoint {
            Some(c) => conn
                .query_row(HOLDS_LEAF, [i64::try_from(c.size).map_err(backend)?], |r| {
                    r.get(0)
                })
                .map_err(backend)?,
            None => true,
        };
        let offboarded = offboarded(&conn).map_err(backend)?;
        let last_seq = u64::try_from(last_seq).unwrap_or(0);
        let unsigned_codes = if latest_checkpoint.is_none() && last_seq <= FEW_EVENTS {
            let mut codes = conn.prepare(FIRST_CODES).map_err(backend)?;
            let codes = codes
                .query_map([], |r| r.get(0))
                .and_then(Iterator::collect)
                .map_err(backend)?;
            Some(codes)
        } else {
            None
        };
        let demo_passwords = conn
            .query_row(DEMO_PASSWORD_SET, [Code::PasswordSet.number()], |r| {
                r.get(0)
            })
            .map_err(backend)?;
        let has_record: bool = conn
            .query_row(HAS_CA_RECORD, [], |r| r.get(0))
            .map_err(backend)?;
        let ssh_user_ca = if has_record {
            conn.query_row(RECORDED_CA, [], |r| r.get(0))
                .optional()
                .map_err(backend)?
        } else {
            None
        };
        let issued_by = if ssh_user_ca.is_none() {
            let mut cas = conn.prepare(ISSUED_BY).map_err(backend)?;
            cas.query_map(params![Code::CredentialIssued.number(), FEW_CAS], |r| {
                r.get(0)
            })
            .and_then(Iterator::collect)
            .map_err(backend)?
        } else {
            Vec::new()
        };
        let served_rows = if last_seq == 0 {
            served_rows(&conn).map_err(backend)?
        } else {
            Vec::new()
        };
        Ok(Some(History {
            last_seq,
            latest_checkpoint,
            latest_covered_held,
            offboarded,
            unsigned_codes,
            demo_passwords,
            ssh_user_ca,
            issued_by,
            served_rows,
        }))
    }

    /// Records the SSH user CA (its OpenSSH public key and its fingerprint, as
    /// [`History::ssh_user_ca`] reads it) when the store records none yet, and returns the
    /// fingerprint of the one it records: another than `fingerprint` when it recorded one
    /// before. A record is never replaced: the CA signed certificates that only it revokes.
    pub async fn record_ssh_user_ca(&self, public_key: &str, fingerprint: &str) -> Result<String> {
        let (public_key, fingerprint) = (public_key.to_owned(), fingerprint.to_owned());
        self.writer
            .write(move |c| {
                c.execute(
                    "INSERT INTO ssh_user_ca (id, public_key, fingerprint) VALUES (1, ?1, ?2)
                     ON CONFLICT (id) DO NOTHING",
                    params![public_key, fingerprint],
                )
                .map_err(backend)?;
                c.query_row(RECORDED_CA, [], |r| r.get(0)).map_err(backend)
            })
            .await
    }

    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        keep_private(path)?;
        let conn = Connection::open(path).map_err(backend)?;
        // Before anything is written: the page size is fixed when the file is created.
        conn.pragma_update(None, "page_size", PAGE_SIZE)
            .map_err(backend)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        configure(&conn).map_err(backend)?;
        let schema = migrate(&conn, path)?;
        let checkpoints = Connection::open(path).map_err(backend)?;
        configure(&checkpoints).map_err(backend)?;
        Ok(Self {
            writer: Writer::start(conn, checkpoints)?,
            readers: Arc::new(Mutex::new(Vec::new())),
            path: path.to_owned(),
            schema,
        })
    }

    /// The schema this opening found and left ([`Schema`]).
    pub fn schema(&self) -> Schema {
        self.schema
    }

    /// Runs one two-parameter upsert with its events, in one transaction.
    async fn upsert(
        &self,
        sql: &'static str,
        key: String,
        value: String,
        events: Vec<Event>,
    ) -> Result<()> {
        let events = prepare(&events)?;
        self.writer
            .write(move |c| {
                c.prepare_cached(sql)
                    .and_then(|mut s| s.execute(params![key, value]))
                    .map_err(backend)?;
                append_events(c, &events)
            })
            .await
    }

    async fn read<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().map_err(backend)?.pop();
            let conn = match pooled {
                Some(c) => c,
                None => {
                    let c = Connection::open_with_flags(
                        &path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )
                    .map_err(backend)?;
                    c.busy_timeout(std::time::Duration::from_secs(5))
                        .map_err(backend)?;
                    c
                }
            };
            let out = f(&conn).map_err(backend);
            let mut pool = readers.lock().map_err(backend)?;
            if pool.len() < READERS {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(backend)?
    }

    /// Blocks' roots as rows with their search filters, read apart from the writer, which
    /// only stores them.
    async fn with_filters(&self, blocks: Vec<(u64, [u8; 32])>) -> Result<Vec<BlockRow>> {
        let numbered = blocks
            .into_iter()
            .map(|(b, root)| Ok((i64::try_from(b).map_err(backend)?, root)))
            .collect::<Result<Vec<_>>>()?;
        let numbers: Vec<i64> = numbered.iter().map(|(b, _)| *b).collect();
        let filters = self
            .read(move |c| audit_search::block_keys(c, &numbers))
            .await?;
        Ok(numbered
            .into_iter()
            .zip(filters)
            .map(|((block, root), keys)| BlockRow { block, root, keys })
            .collect())
    }
}

/// A block of events' stored root and search filter.
struct BlockRow {
    block: i64,
    root: [u8; 32],
    keys: Vec<u8>,
}

/// Stores blocks' rows. Derived from the log, so a block already stored keeps its own.
fn insert_blocks(c: &Connection, blocks: &[BlockRow]) -> Result<()> {
    let mut insert = c
        .prepare_cached(
            "INSERT INTO audit_blocks (block, root, keys) VALUES (?1, ?2, ?3)
             ON CONFLICT (block) DO NOTHING",
        )
        .map_err(backend)?;
    for b in blocks {
        insert
            .execute(params![b.block, &b.root[..], b.keys])
            .map_err(backend)?;
    }
    Ok(())
}

/// An event serialised before it reaches the writer thread, so the thread that holds the
/// write lock only splices in the sequence number and hashes.
struct Prepared {
    /// The event as a JSON object.
    json: String,
    columns: Columns,
}

/// What the audit table stores beside an event's text for searching it: its time (ms), code
/// number, actor, target and request.
#[derive(Debug, PartialEq, Eq)]
struct Columns {
    time: i64,
    code: u16,
    user: Option<String>,
    target: Option<String>,
    request: Option<String>,
}

impl Columns {
    fn of(e: &Event) -> Self {
        Self {
            time: ms(e.time),
            code: e.code.number(),
            user: e.actor.user.as_ref().map(ToString::to_string),
            target: e.target.as_ref().map(ToString::to_string),
            request: e.request_id.map(|r| r.to_string()),
        }
    }
}

fn prepare(events: &[Event]) -> Result<Vec<Prepared>> {
    events
        .iter()
        .map(|e| {
            Ok(Prepared {
                json: serde_json::to_string(e).map_err(backend)?,
                columns: Columns::of(e),
            })
        })
        .collect()
}

/// The bytes a leaf commits to: the event with its sequence number first, as JSON.
fn leaf(seq: u64, event_json: &str) -> (String, [u8; 32]) {
    let rest = event_json.strip_prefix('{').unwrap_or(event_json);
    let body = format!("{{\"seq\":{seq},{rest}");
    let hash = warden_audit::merkle::leaf_hash(body.as_bytes());
    (body, hash)
}

/// Revokes every live token of `user`; returns how many there were.
fn revoke_user_tokens(c: &Connection, user: &str) -> Result<usize> {
    c.execute(
        "UPDATE tokens SET revoked = 1 WHERE user = ?1 AND revoked = 0",
        [user],
    )
    .map_err(backend)
}

/// Writes `reset` into `user`'s secrets.
fn apply_reset(c: &Connection, user: &str, reset: Reset) -> Result<()> {
    let set_password = |hash: &str, by: Option<&str>| {
        c.execute(
            "INSERT INTO user_secrets (user, password_hash, password_set_by) VALUES (?1, ?2, ?3)
             ON CONFLICT (user) DO UPDATE SET password_hash = excluded.password_hash,
                 password_set_by = excluded.password_set_by",
            params![user, hash, by],
        )
    };
    match reset {
        Reset::Password { hash, set_by } => {
            set_password(&hash, set_by.as_ref().map(UserName::as_str))
        }
        Reset::SecondFactor => c.execute(
            "UPDATE user_secrets SET totp = NULL, totp_pending = NULL WHERE user = ?1",
            [user],
        ),
        // Not a hash at all, so no password matches it, and not NULL, so a start does not set
        // it again from the config.
        Reset::Offboarded => set_password(DISABLED_PASSWORD, None),
        Reset::Departed => c.execute("DELETE FROM user_secrets WHERE user = ?1", [user]),
    }
    .map_err(backend)?;
    Ok(())
}

fn append_events(conn: &Connection, events: &[Prepared]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    // Numbering goes on from the last event, or past every event a checkpoint counts (an
    // archive may have removed every event of the live log, and a log cut short must not
    // number new events as ones already signed): no number is used twice.
    let mut seq: u64 = conn
        .prepare_cached(
            "SELECT MAX(COALESCE((SELECT MAX(seq) FROM audit), 0), COALESCE((SELECT MAX(size) FROM checkpoints), 0))",
        )
        .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
        .map_err(backend)?
        .try_into()
        .map_err(backend)?;
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO audit (seq, time, code, user, target, request_id, body, leaf_hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(backend)?;
    for e in events {
        seq += 1;
        let (body, hash) = leaf(seq, &e.json);
        let c = &e.columns;
        stmt.execute(params![
            i64::try_from(seq).map_err(backend)?,
            c.time,
            c.code,
            c.user,
            c.target,
            c.request,
            body,
            &hash[..],
        ])
        .map_err(backend)?;
    }
    Ok(())
}

/// What a change writes besides the request and its events, as columns prepared before the
/// writer thread.
#[derive(Default)]
struct Extras {
    lease: Option<LeaseRow>,
    pickup: Option<String>,
    postmortem: Option<PostmortemRow>,
    notices: Vec<NoticeRow>,
}

impl Extras {
    fn of(change: &Change) -> Result<Self> {
        Ok(Self {
            lease: change.lease.as_ref().map(lease_row).transpose()?,
            pickup: change.pickup.clone(),
            postmortem: change
                .postmortem
                .as_ref()
                .map(breakglass::postmortem_row)
                .transpose()?,
            notices: breakglass::notice_rows(&change.notices)?,
        })
    }
}

/// A lease as its columns: user, target, state, due, body.
type LeaseRow = (String, String, String, Option<i64>, String);

/// Writes a change's lease, pickup, postmortem and notices; the caller writes its events.
fn write_extras(c: &Connection, grant: &str, extras: Extras) -> Result<()> {
    if let Some(lease) = extras.lease {
        write_lease(c, grant, lease)?;
    }
    if let Some(sealed) = extras.pickup {
        c.prepare_cached("INSERT OR REPLACE INTO pickups (grant_id, sealed) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute(params![grant, sealed]))
            .map_err(backend)?;
    }
    if let Some(pm) = &extras.postmortem {
        breakglass::write_postmortem(c, pm)?;
    }
    breakglass::write_notices(c, &extras.notices)
}

/// Inserts or replaces `grant`'s lease.
fn write_lease(
    c: &Connection,
    grant: &str,
    (user, target, state, due, body): LeaseRow,
) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO leases (grant_id, user, target, state, due_at, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (grant_id) DO UPDATE SET state = excluded.state, due_at = excluded.due_at, body = excluded.body",
    )
    .and_then(|mut s| s.execute(params![grant, user, target, state, due, body]))
    .map_err(backend)?;
    Ok(())
}

/// A lease as the columns it is stored in.
fn lease_row(l: &Lease) -> Result<LeaseRow> {
    Ok((
        l.user.to_string(),
        l.target.to_string(),
        l.state.as_str().to_owned(),
        l.due_at.map(ms),
        serde_json::to_string(l).map_err(backend)?,
    ))
}

/// A JSON column's value (a lease, a postmortem, a notice), decoded.
fn json<T: serde::de::DeserializeOwned>(body: String) -> rusqlite::Result<T> {
    serde_json::from_str(&body).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// When the background worker must next look at a request.
fn due_at(r: &Request) -> Option<i64> {
    r.due_at().map(ceil_ms)
}

/// Until when a revoked request's credential would have been valid (migration 0015).
fn revoked_until(r: &Request) -> Option<i64> {
    match r.state {
        State::Revoked => r.expires_at.map(ceil_ms),
        _ => None,
    }
}

/// Milliseconds rounded up, so a deadline stored in milliseconds is never due before it
/// actually passed, and a bound on times stored in milliseconds takes in none before it.
fn ceil_ms(t: OffsetDateTime) -> i64 {
    i64::try_from((t.unix_timestamp_nanos() + 999_999).div_euclid(1_000_000)).unwrap_or(i64::MAX)
}

fn decode_request(body: String, version: i64) -> rusqlite::Result<Request> {
    let mut r: Request = serde_json::from_str(&body).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })?;
    r.version = u64::try_from(version).unwrap_or(0);
    Ok(r)
}

fn decode_event(seq: i64, body: String, hash: Vec<u8>) -> rusqlite::Result<StoredEvent> {
    let event: Event = serde_json::from_str(&body).map_err(|e| {
        // Column `usize::MAX`: rusqlite then shows the message alone.
        rusqlite::Error::FromSqlConversionFailure(
            usize::MAX,
            rusqlite::types::Type::Text,
            format!(
                "audit event {seq} cannot be read ({e}): the log was damaged or altered; `warden audit verify --data-dir DIR` shows what changed"
            )
            .into(),
        )
    })?;
    Ok(StoredEvent {
        seq: u64::try_from(seq).unwrap_or(0),
        leaf_hash: hash.try_into().unwrap_or([0; 32]),
        event,
    })
}

fn hash32(v: Vec<u8>) -> rusqlite::Result<[u8; 32]> {
    v.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Blob,
            "not a 32-byte hash".into(),
        )
    })
}

/// The leaf hashes of events `after + 1 ..= upto` from the rows read (sequence number, hash, in
/// order), `first` being the first event whose hash the store holds: a proof built from fewer
/// hashes, or others, than those of its events would not verify, so each must be there once,
/// or the read fails naming the event whose hash is not. A range wholly before `first` was
/// archived without its hashes, and has none.
fn contiguous_hashes(
    after: u64,
    upto: u64,
    first: u64,
    rows: Vec<(u64, [u8; 32])>,
) -> Result<Vec<[u8; 32]>> {
    if upto <= after || (first > 0 && upto < first) {
        return Ok(Vec::new());
    }
    let fault = |what: String| {
        Err(Error::Backend(format!(
            "{what}: proofs through it would not verify, so none is given (a row of the audit log or of its archived leaves was deleted or added; check the log with `warden audit verify --data-dir`)"
        )))
    };
    if first == 0 {
        return fault(format!(
            "the audit log holds no leaf hash of event {}, nor of any other",
            after + 1
        ));
    }
    if after + 1 < first {
        return fault(format!(
            "the audit log holds no leaf hash of events {}..{}, which a read of events up to {upto} needs (those before {first} were archived without them)",
            after + 1,
            first - 1
        ));
    }
    let mut next = after + 1;
    let mut hashes = Vec::with_capacity(rows.len());
    for (seq, hash) in rows {
        if seq < next {
            return fault(format!(
                "the audit log holds two leaf hashes of event {seq}"
            ));
        }
        if seq > next {
            break;
        }
        hashes.push(hash);
        next += 1;
    }
    if next <= upto {
        return fault(format!(
            "the audit log holds no leaf hash of event {next}, though it holds those from event {first} on"
        ));
    }
    Ok(hashes)
}

fn decode_checkpoint(row: &rusqlite::Row<'_>) -> rusqlite::Result<Checkpoint> {
    let frontier: Vec<u8> = row.get(3)?;
    Ok(Checkpoint {
        size: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
        root: hash32(row.get(1)?)?,
        time: from_ms(row.get(2)?),
        frontier: frontier
            .chunks(32)
            .map(|c| hash32(c.to_vec()))
            .collect::<rusqlite::Result<_>>()?,
        note: row.get(4)?,
    })
}

fn limit(n: usize) -> i64 {
    i64::try_from(n.clamp(1, crate::READ_MAX)).unwrap_or(i64::MAX)
}

/// Requests in given live states (`?3`, a JSON list), newest first: through the state index.
const LIST_LIVE: &str = "SELECT body, version FROM requests
     WHERE (?1 IS NULL OR requester = ?1)
       AND (?2 IS NULL OR target = ?2)
       AND state IN (SELECT value FROM json_each(?3))
       AND (?5 IS NULL OR id < ?5)
     ORDER BY id DESC LIMIT ?4";

/// Requests in any states (`?3`; `[]` for all), newest first: walking the history from its end.
/// With `?6`, active grants due by then too: those whose expiry may have passed unrecorded.
const LIST_ANY: &str = "SELECT body, version FROM requests
     WHERE (?1 IS NULL OR requester = ?1)
       AND (?2 IS NULL OR target = ?2)
       AND (?3 = '[]' OR state IN (SELECT value FROM json_each(?3))
            OR (?6 IS NOT NULL AND state = 'active' AND due_at <= ?6))
       AND (?5 IS NULL OR id < ?5)
     ORDER BY id DESC LIMIT ?4";

/// How far past the store's clock [`LIST_ANY`] looks for active grants whose expiry may have
/// passed: the caller judges them by its own clock, read after the store's.
const RAN_OUT_MARGIN: time::Duration = time::Duration::minutes(1);

#[async_trait]
impl crate::Store for SqliteStore {
    async fn check_writes(&self) -> std::result::Result<(), String> {
        match self.writer.writes() {
            writer::Writes::Taken => return Ok(()),
            writer::Writes::Failing(why) => return Err(why),
            writer::Writes::Unknown => {}
        }
        let at = ms(OffsetDateTime::now_utc());
        let probe = self.writer.write(move |c| {
            c.prepare_cached("INSERT OR REPLACE INTO write_probe (id, at) VALUES (1, ?1)")
                .and_then(|mut s| s.execute([at]))
                .map(|_| ())
                .map_err(backend)
        });
        // A write that hangs (a frozen filesystem) is answered for, not waited on.
        match tokio::time::timeout(writer::STALLED_AFTER, probe).await {
            Ok(written) => written.map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "storage writes are stalled: a one-row write did not end within {} s (the data dir's filesystem frozen or hung, or the database locked by another process)",
                writer::STALLED_AFTER.as_secs()
            )),
        }
    }

    async fn flush_log(&self) -> Result<()> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            // Its own connection: a checkpoint cannot run inside the writer's transactions.
            let conn = Connection::open(&path)?;
            configure(&conn)?;
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .await
        .map_err(backend)?
        .map_err(backend)
        .and_then(|busy| match busy {
            0 => Ok(()),
            _ => Err(Error::Backend(
                "the write-ahead log could not be emptied: a reader or writer held it".into(),
            )),
        })
    }

    async fn insert_request(&self, r: &Request, change: Change) -> Result<()> {
        let body = serde_json::to_string(r).map_err(backend)?;
        let (id, requester, target, state, requirement) = (
            r.id.to_string(),
            r.requester.to_string(),
            r.target.to_string(),
            r.state.as_str(),
            r.approval(),
        );
        let (created, due, until) = (ms(r.created_at), due_at(r), revoked_until(r));
        let certified = ssh::CertifiedKey::of(r);
        let extras = Extras::of(&change)?;
        let events = prepare(&change.events)?;
        let bound = change
            .waiting_bound
            .map(|b| i64::try_from(b).map_err(backend))
            .transpose()?;
        self.writer
            .write(move |c| {
                if let Some(bound) = bound {
                    let waiting: i64 = c
                        .prepare_cached(
                            "SELECT COUNT(*) FROM requests WHERE state = 'pending' AND requester = ?1",
                        )
                        .and_then(|mut s| s.query_row([&requester], |row| row.get(0)))
                        .map_err(backend)?;
                    if waiting >= bound {
                        return Err(Error::Bound);
                    }
                }
                c.prepare_cached(
                    "INSERT INTO requests (id, requester, target, state, requirement, created_at, due_at, revoked_until, version, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9)",
                )
                .and_then(|mut s| {
                    s.execute(params![id, requester, target, state, requirement, created, due, until, body])
                })
                .map_err(backend)?;
                if let Some(k) = &certified {
                    k.write(c)?;
                }
                write_extras(c, &id, extras)?;
                append_events(c, &events)
            })
            .await
    }

    async fn update_request(&self, r: &Request, change: Change) -> Result<u64> {
        let body = serde_json::to_string(r).map_err(backend)?;
        let (id, state, due, until) = (
            r.id.to_string(),
            r.state.as_str(),
            due_at(r),
            revoked_until(r),
        );
        // An approval re-reads the requirement from the policy of the moment it is given.
        let requirement = r.approval();
        let version = i64::try_from(r.version).map_err(backend)?;
        // A credential left for its requester's pickup goes with the grant: an ended grant's is
        // never handed over, and no sealed secret is kept longer than it can be of use.
        let ended = r.state.is_final();
        let certified = ssh::CertifiedKey::of(r);
        let extras = Extras::of(&change)?;
        let events = prepare(&change.events)?;
        self.writer
            .write(move |c| {
                let n = c
                    .prepare_cached(
                        "UPDATE requests SET state = ?2, requirement = ?3, due_at = ?4, body = ?5,
                         revoked_until = ?7, version = version + 1 WHERE id = ?1 AND version = ?6",
                    )
                    .and_then(|mut s| {
                        s.execute(params![id, state, requirement, due, body, version, until])
                    })
                    .map_err(backend)?;
                if n == 0 {
                    return Err(Error::Conflict);
                }
                if let Some(k) = &certified {
                    k.write(c)?;
                }
                write_extras(c, &id, extras)?;
                if ended {
                    c.prepare_cached("DELETE FROM pickups WHERE grant_id = ?1")
                        .and_then(|mut s| s.execute([&id]))
                        .map_err(backend)?;
                }
                append_events(c, &events)?;
                u64::try_from(version + 1).map_err(backend)
            })
            .await
    }

    async fn lease(&self, grant: RequestId) -> Result<Option<Lease>> {
        let id = grant.to_string();
        self.read(move |c| {
            c.prepare_cached("SELECT body FROM leases WHERE grant_id = ?1")?
                .query_row([id], |r| json(r.get(0)?))
                .optional()
        })
        .await
    }

    async fn update_lease(
        &self,
        lease: &Lease,
        events: Vec<Event>,
        notices: Vec<Outgoing>,
    ) -> Result<()> {
        let events = prepare(&events)?;
        let extras = Extras {
            lease: Some(lease_row(lease)?),
            notices: breakglass::notice_rows(&notices)?,
            ..Extras::default()
        };
        let id = lease.grant.to_string();
        self.writer
            .write(move |c| {
                write_extras(c, &id, extras)?;
                append_events(c, &events)
            })
            .await
    }

    async fn due_leases(&self, now: OffsetDateTime, per_target: usize) -> Result<Vec<Lease>> {
        let now = ms(now);
        // Ranked on the due index's rows alone; only the bodies of those kept are read.
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT leases.body FROM leases JOIN (
                     SELECT grant_id, due_at,
                            row_number() OVER (PARTITION BY target ORDER BY due_at, grant_id) AS place
                     FROM leases WHERE due_at IS NOT NULL AND due_at <= ?1
                 ) AS due USING (grant_id)
                 WHERE due.place <= ?2 ORDER BY due.due_at, due.grant_id",
            )?;
            let rows = stmt.query_map(params![now, limit(per_target)], |r| json(r.get(0)?))?;
            rows.collect()
        })
        .await
    }

    async fn waiting_for_targets(&self, now: OffsetDateTime) -> Result<Vec<Lease>> {
        let now = ms(now);
        // SQLite takes a bare column from the row that holds the MIN.
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT body, MIN(due_at) FROM leases
                 WHERE state IN ('revoking', 'failed') AND due_at > ?1
                   AND json_extract(body, '$.unreached')
                 GROUP BY target, json_extract(body, '$.made_at.connection')",
            )?;
            let rows = stmt.query_map([now], |r| json(r.get(0)?))?;
            rows.collect()
        })
        .await
    }

    async fn target_answers(&self, answered: &Lease, now: OffsetDateTime) -> Result<usize> {
        let answered = answered.clone();
        self.writer
            .write(move |c| {
                let waiting: Vec<Lease> = c
                    .prepare_cached(
                        "SELECT body FROM leases
                         WHERE target = ?1 AND state IN ('revoking', 'failed') AND due_at > ?2",
                    )
                    .and_then(|mut s| {
                        s.query_map(params![answered.target.as_str(), ms(now)], |r| {
                            json(r.get(0)?)
                        })?
                        .collect()
                    })
                    .map_err(backend)?;
                let mut due = 0;
                for mut lease in waiting {
                    if lease.target_answers(&answered, now) {
                        write_lease(c, &lease.grant.to_string(), lease_row(&lease)?)?;
                        due += 1;
                    }
                }
                Ok(due)
            })
            .await
    }

    async fn live_accounts(&self) -> Result<Vec<String>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT json_extract(body, '$.account') FROM leases
                 WHERE state IN ('intent', 'active', 'revoking', 'failed')",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    async fn take_pickup(&self, grant: RequestId, events: Vec<Event>) -> Result<Option<String>> {
        let events = prepare(&events)?;
        let id = grant.to_string();
        self.writer
            .write(move |c| {
                let sealed: Option<String> = c
                    .query_row(
                        "DELETE FROM pickups WHERE grant_id = ?1 RETURNING sealed",
                        [id],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(backend)?;
                if sealed.is_some() {
                    append_events(c, &events)?;
                }
                Ok(sealed)
            })
            .await
    }

    async fn target_credential(&self, target: &TargetName) -> Result<Option<String>> {
        let target = target.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT sealed FROM target_credentials WHERE target = ?1",
                [target],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }

    async fn set_target_credential(
        &self,
        target: &TargetName,
        sealed: String,
        events: Vec<Event>,
    ) -> Result<()> {
        self.upsert(
            "INSERT INTO target_credentials (target, sealed) VALUES (?1, ?2)
             ON CONFLICT (target) DO UPDATE SET sealed = excluded.sealed",
            target.to_string(),
            sealed,
            events,
        )
        .await
    }

    async fn users_with_credentials(&self) -> Result<Vec<UserName>> {
        let names: Vec<String> = self
            .read(|c| {
                c.prepare_cached(
                    "SELECT user FROM user_secrets UNION SELECT user FROM ssh_keys
                     UNION SELECT user FROM tokens WHERE revoked = 0",
                )?
                .query_map([], |r| r.get(0))?
                .collect()
            })
            .await?;
        names.iter().map(|n| n.parse().map_err(backend)).collect()
    }

    async fn reset_user(
        &self,
        user: &UserName,
        reset: Reset,
        keys: &[String],
        events: Vec<Event>,
    ) -> Result<usize> {
        let events = prepare(&events)?;
        let user = user.to_string();
        let mut expected = keys.to_vec();
        expected.sort();
        self.writer
            .write(move |c| {
                let mut removed: Vec<String> = c
                    .prepare_cached("DELETE FROM ssh_keys WHERE user = ?1 RETURNING fingerprint")
                    .and_then(|mut s| s.query_map([&user], |r| r.get(0))?.collect())
                    .map_err(backend)?;
                removed.sort();
                if removed != expected {
                    return Err(Error::Conflict);
                }
                let n = revoke_user_tokens(c, &user)?;
                apply_reset(c, &user, reset)?;
                append_events(c, &events)?;
                Ok(n)
            })
            .await
    }

    async fn offboarded_users(&self) -> Result<Vec<UserName>> {
        self.read(offboarded).await
    }

    async fn request(&self, id: RequestId) -> Result<Option<Request>> {
        let id = id.to_string();
        self.read(move |c| {
            c.prepare_cached("SELECT body, version FROM requests WHERE id = ?1")?
                .query_row([id], |row| decode_request(row.get(0)?, row.get(1)?))
                .optional()
        })
        .await
    }

    async fn requests(&self, f: RequestFilter) -> Result<Vec<Request>> {
        self.read(move |c| {
            let states: Vec<&str> = f.states.iter().map(|s| s.as_str()).collect();
            let states_json = serde_json::to_string(&states).unwrap_or_else(|_| "[]".into());
            // Requests still in play (pending, approved, active) are few whatever the history's
            // size: find them by the state index and sort them. Any other listing walks the
            // newest first and stops at the limit, which the history's size does not slow.
            let live = !f.states.is_empty() && f.states.iter().all(|s| !s.is_final());
            // A grant whose expiry has passed has expired, recorded or not (after a restart the
            // worker has many to record, on a full disk it cannot): asked for expired ones, the
            // active grants due by now come too, for the caller to tell apart by their expiry.
            let ran_out = (f.states.contains(&State::Expired)
                && !f.states.contains(&State::Active))
            .then(|| ms(OffsetDateTime::now_utc() + RAN_OUT_MARGIN));
            let (requester, target, before) = (
                f.requester.as_ref().map(UserName::as_str),
                f.target.as_ref().map(|t| t.as_str().to_owned()),
                f.before.map(|id| id.to_string()),
            );
            let n = limit(f.limit);
            let decode = |row: &rusqlite::Row<'_>| decode_request(row.get(0)?, row.get(1)?);
            if live {
                let mut stmt = c.prepare_cached(LIST_LIVE)?;
                let rows =
                    stmt.query_map(params![requester, target, states_json, n, before], decode)?;
                rows.collect()
            } else {
                let mut stmt = c.prepare_cached(LIST_ANY)?;
                let rows = stmt.query_map(
                    params![requester, target, states_json, n, before, ran_out],
                    decode,
                )?;
                rows.collect()
            }
        })
        .await
    }

    async fn due(&self, now: OffsetDateTime, n: usize) -> Result<Vec<Request>> {
        let now = ms(now);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT body, version FROM requests WHERE due_at IS NOT NULL AND due_at <= ?1
                 ORDER BY due_at LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now, limit(n)], |row| {
                decode_request(row.get(0)?, row.get(1)?)
            })?;
            rows.collect()
        })
        .await
    }

    async fn revoked_unexpired(&self, now: OffsetDateTime) -> Result<Vec<Request>> {
        let now = ms(now);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT body, version FROM requests WHERE revoked_until > ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([now], |row| decode_request(row.get(0)?, row.get(1)?))?;
            rows.collect()
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<OffsetDateTime>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT MIN(d) FROM (SELECT MIN(due_at) AS d FROM requests WHERE due_at IS NOT NULL
                                     UNION ALL SELECT MIN(due_at) FROM leases WHERE due_at IS NOT NULL)",
            )?
            .query_row([], |r| r.get::<_, Option<i64>>(0))
        })
        .await
        .map(|v| v.map(from_ms))
    }

    async fn next_due_after(&self, leases_read: OffsetDateTime) -> Result<Option<OffsetDateTime>> {
        let read = ms(leases_read);
        self.read(move |c| {
            c.prepare_cached(
                "SELECT MIN(d) FROM (SELECT MIN(due_at) AS d FROM requests WHERE due_at IS NOT NULL
                                     UNION ALL SELECT MIN(due_at) FROM leases WHERE due_at > ?1)",
            )?
            .query_row([read], |r| r.get::<_, Option<i64>>(0))
        })
        .await
        .map(|v| v.map(from_ms))
    }

    async fn append(&self, events: Vec<Event>) -> Result<()> {
        let events = prepare(&events)?;
        self.writer.write(move |c| append_events(c, &events)).await
    }

    async fn audit(&self, f: AuditFilter) -> Result<Vec<StoredEvent>> {
        self.read(move |c| audit_search::search(c, &f)).await
    }

    async fn audit_leaves(&self, after_seq: u64, n: usize) -> Result<Vec<Leaf>> {
        let after = i64::try_from(after_seq).map_err(backend)?;
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, body, leaf_hash FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit(n)], |r| {
                Ok(Leaf {
                    seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    data: r.get(1)?,
                    hash: hash32(r.get(2)?)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn leaf_hashes(&self, after_seq: u64, upto_seq: u64) -> Result<Vec<[u8; 32]>> {
        let after = i64::try_from(after_seq).map_err(backend)?;
        let upto = i64::try_from(upto_seq).map_err(backend)?;
        let read = self
            .read(move |c| {
                // One snapshot for both reads: an archive between them would move the first.
                let tx = c.unchecked_transaction()?;
                let first: i64 = tx.query_row(FIRST_LEAF_HASH, [], |r| r.get(0))?;
                let mut stmt = tx.prepare_cached(
                    "SELECT seq, leaf_hash FROM (
                       SELECT seq, leaf_hash FROM archived_leaves WHERE seq > ?1 AND seq <= ?2
                       UNION ALL
                       SELECT seq, leaf_hash FROM audit WHERE seq > ?1 AND seq <= ?2
                     ) ORDER BY seq",
                )?;
                let rows = stmt.query_map([after, upto], |r| {
                    Ok((
                        u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                        hash32(r.get(1)?)?,
                    ))
                })?;
                let rows = rows.collect::<rusqlite::Result<Vec<_>>>()?;
                Ok((u64::try_from(first).unwrap_or(0), rows))
            })
            .await?;
        let (first, rows) = read;
        contiguous_hashes(after_seq, upto_seq, first, rows)
    }

    async fn block_roots(&self, count: u64) -> Result<Vec<[u8; 32]>> {
        let count = i64::try_from(count).map_err(backend)?;
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT block, root FROM audit_blocks WHERE block < ?1 ORDER BY block",
            )?;
            let mut roots = Vec::new();
            let mut rows = stmt.query([count])?;
            while let Some(row) = rows.next()? {
                if row.get::<_, i64>(0)? != i64::try_from(roots.len()).unwrap_or(i64::MAX) {
                    break;
                }
                roots.push(hash32(row.get(1)?)?);
            }
            Ok(roots)
        })
        .await
    }

    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>> {
        self.read(|c| {
            c.query_row(LATEST_CHECKPOINT, [], decode_checkpoint)
                .optional()
        })
        .await
    }

    async fn checkpoint(&self, size: u64) -> Result<Option<Checkpoint>> {
        // No log is that long.
        let Ok(size) = i64::try_from(size) else {
            return Ok(None);
        };
        self.read(move |c| {
            c.query_row(
                "SELECT size, root, time, frontier, note FROM checkpoints WHERE size = ?1",
                [size],
                decode_checkpoint,
            )
            .optional()
        })
        .await
    }

    async fn insert_checkpoint(&self, cp: Checkpoint, blocks: Vec<(u64, [u8; 32])>) -> Result<()> {
        let size = i64::try_from(cp.size).map_err(backend)?;
        let frontier: Vec<u8> = cp.frontier.concat();
        let blocks = self.with_filters(blocks).await?;
        self.writer
            .write(move |c| {
                let newest: i64 = c
                    .query_row("SELECT COALESCE(MAX(size), 0) FROM checkpoints", [], |r| r.get(0))
                    .map_err(backend)?;
                if size <= newest {
                    return Err(Error::Conflict);
                }
                c.execute(
                    "INSERT INTO checkpoints (size, root, time, frontier, note) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![size, &cp.root[..], ms(cp.time), frontier, cp.note],
                )
                .map_err(backend)?;
                insert_blocks(c, &blocks)
            })
            .await
    }

    async fn blocks_without_roots(&self, count: u64, limit: usize) -> Result<Vec<u64>> {
        let first_seq = self.first_seq().await?;
        if first_seq == 0 {
            return Ok(Vec::new());
        }
        // The first block whose events were not archived, even in part.
        let live = warden_audit::merkle::first_whole_block(first_seq);
        let (from, upto) = (
            i64::try_from(live).map_err(backend)?,
            i64::try_from(count).map_err(backend)?,
        );
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT block FROM audit_blocks WHERE block >= ?1 AND block < ?2 ORDER BY block",
            )?;
            let mut stored = stmt.query_map([from, upto], |r| r.get::<_, i64>(0))?;
            let mut missing = Vec::new();
            let mut next_stored = stored.next().transpose()?;
            let mut block = from;
            while block < upto && missing.len() < limit {
                if next_stored == Some(block) {
                    next_stored = stored.next().transpose()?;
                } else {
                    missing.push(block.unsigned_abs());
                }
                block += 1;
            }
            Ok(missing)
        })
        .await
    }

    async fn insert_block_roots(&self, blocks: Vec<(u64, [u8; 32])>) -> Result<()> {
        if blocks.is_empty() {
            return Ok(());
        }
        let blocks = self.with_filters(blocks).await?;
        self.writer.write(move |c| insert_blocks(c, &blocks)).await
    }

    async fn checkpoint_at_most(&self, size: u64) -> Result<Option<Checkpoint>> {
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        self.read(move |c| {
            c.query_row(
                "SELECT size, root, time, frontier, note FROM checkpoints WHERE size <= ?1
                 ORDER BY size DESC LIMIT 1",
                [size],
                decode_checkpoint,
            )
            .optional()
        })
        .await
    }

    async fn checkpoint_before(&self, time: OffsetDateTime) -> Result<Option<Checkpoint>> {
        let t = ms(time);
        self.read(move |c| {
            c.query_row(CHECKPOINT_BEFORE, [t], decode_checkpoint)
                .optional()
        })
        .await
    }

    async fn first_seq(&self) -> Result<u64> {
        self.read(|c| {
            c.query_row("SELECT COALESCE(MIN(seq), 0) FROM audit", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .await
        .map(|v| u64::try_from(v).unwrap_or(0))
    }

    async fn holds_leaf(&self, seq: u64) -> Result<bool> {
        let seq = i64::try_from(seq).map_err(backend)?;
        self.read(move |c| c.query_row(HOLDS_LEAF, [seq], |r| r.get(0)))
            .await
    }

    async fn last_seq(&self) -> Result<u64> {
        self.read(|c| c.query_row(LAST_SEQ, [], |r| r.get::<_, i64>(0)))
            .await
            .map(|v| u64::try_from(v).unwrap_or(0))
    }

    async fn first_leaf_hash(&self) -> Result<u64> {
        self.read(|c| c.query_row(FIRST_LEAF_HASH, [], |r| r.get::<_, i64>(0)))
            .await
            .map(|v| u64::try_from(v).unwrap_or(0))
    }

    async fn archive_audit(&self, upto: u64, events: Vec<Event>) -> Result<usize> {
        let events = prepare(&events)?;
        // The last event of the last block archived whole.
        let whole = (upto >> BLOCK_HEIGHT) << BLOCK_HEIGHT;
        let (upto, whole) = (
            i64::try_from(upto).map_err(backend)?,
            i64::try_from(whole).map_err(backend)?,
        );
        self.writer
            .write(move |c| {
                c.execute("DELETE FROM archived_leaves WHERE seq <= ?1", [whole])
                    .map_err(backend)?;
                c.execute(
                    "INSERT INTO archived_leaves (seq, leaf_hash)
                     SELECT seq, leaf_hash FROM audit WHERE seq > ?1 AND seq <= ?2",
                    [whole, upto],
                )
                .map_err(backend)?;
                let n = c
                    .execute("DELETE FROM audit WHERE seq <= ?1", [upto])
                    .map_err(backend)?;
                append_events(c, &events)?;
                Ok(n)
            })
            .await
    }

    async fn sink_cursor(&self, sink: &str) -> Result<u64> {
        let sink = sink.to_owned();
        self.read(move |c| {
            c.query_row(
                "SELECT seq FROM sink_cursors WHERE sink = ?1",
                [sink],
                |r| r.get::<_, i64>(0),
            )
            .optional()
        })
        .await
        .map(|v| v.map_or(0, |s| u64::try_from(s).unwrap_or(0)))
    }

    async fn set_sink_cursor(&self, sink: &str, seq: u64) -> Result<()> {
        let sink = sink.to_owned();
        let seq = i64::try_from(seq).map_err(backend)?;
        self.writer
            .write(move |c| {
                c.execute(
                    "INSERT INTO sink_cursors (sink, seq) VALUES (?1, ?2)
                     ON CONFLICT (sink) DO UPDATE SET seq = MAX(seq, excluded.seq)",
                    params![sink, seq],
                )
                .map_err(backend)?;
                Ok(())
            })
            .await
    }

    async fn insert_token(
        &self,
        hash: [u8; 32],
        t: Token,
        checked: Checked,
        events: Vec<Event>,
    ) -> Result<()> {
        let events = prepare(&events)?;
        self.writer
            .write(move |c| {
                let n = c
                    .execute(
                        "INSERT INTO tokens (hash, user, created_at, expires_at)
                         SELECT ?1, ?2, ?3, ?4 FROM user_secrets
                         WHERE user = ?2 AND password_hash = ?5 AND totp IS ?6",
                        params![
                            &hash[..],
                            t.user.as_str(),
                            ms(t.created_at),
                            ms(t.expires_at),
                            checked.password_hash,
                            checked.totp
                        ],
                    )
                    .map_err(backend)?;
                if n == 0 {
                    return Err(Error::Conflict);
                }
                // Each sign-in clears the tokens that ended long enough ago that no one still
                // shows one: the table stays the size of the logins in use, however many
                // sign-ins the years bring. Until then an expired token is told as such.
                c.prepare_cached("DELETE FROM tokens WHERE expires_at < ?1")
                    .and_then(|mut s| s.execute([ms(t.created_at - TOKENS_KEPT_AFTER_EXPIRY)]))
                    .map_err(backend)?;
                append_events(c, &events)
            })
            .await
    }

    async fn token(&self, hash: [u8; 32]) -> Result<Option<Token>> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT user, created_at, expires_at, revoked FROM tokens WHERE hash = ?1",
            )?
            .query_row([&hash[..]], |r| {
                let user: String = r.get(0)?;
                Ok((
                    user,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .optional()
        })
        .await?
        .map(|(user, created, expires, revoked)| {
            Ok(Token {
                user: user.parse().map_err(backend)?,
                created_at: from_ms(created),
                expires_at: from_ms(expires),
                revoked: revoked != 0,
            })
        })
        .transpose()
    }

    async fn revoke_token(&self, hash: [u8; 32], events: Vec<Event>) -> Result<bool> {
        let events = prepare(&events)?;
        self.writer
            .write(move |c| {
                let n = c
                    .execute(
                        "UPDATE tokens SET revoked = 1 WHERE hash = ?1 AND revoked = 0",
                        [&hash[..]],
                    )
                    .map_err(backend)?;
                append_events(c, &events)?;
                Ok(n > 0)
            })
            .await
    }

    async fn secrets(&self, user: &UserName) -> Result<UserSecrets> {
        let user = user.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT password_hash, totp, totp_pending, config_hash, password_set_by
                 FROM user_secrets WHERE user = ?1",
                [user],
                |r| {
                    Ok((
                        UserSecrets {
                            password_hash: r.get(0)?,
                            totp: r.get(1)?,
                            totp_pending: r.get(2)?,
                            config_hash: r.get(3)?,
                            password_set_by: None,
                        },
                        r.get::<_, Option<String>>(4)?,
                    ))
                },
            )
            .optional()
        })
        .await?
        .map(|(mut secrets, set_by)| {
            secrets.password_set_by = set_by.map(|n| n.parse()).transpose().map_err(backend)?;
            Ok(secrets)
        })
        .transpose()
        .map(Option::unwrap_or_default)
    }

    async fn init_password(
        &self,
        user: &UserName,
        hash: String,
        events: Vec<Event>,
    ) -> Result<bool> {
        let events = prepare(&events)?;
        let user = user.to_string();
        self.writer
            .write(move |c| {
                let n = c
                    .execute(
                        "INSERT INTO user_secrets (user, password_hash) VALUES (?1, ?2)
                         ON CONFLICT (user) DO UPDATE SET password_hash = excluded.password_hash,
                             password_set_by = NULL
                         WHERE password_hash IS NULL",
                        params![user, hash],
                    )
                    .map_err(backend)?;
                if n > 0 {
                    append_events(c, &events)?;
                }
                Ok(n > 0)
            })
            .await
    }

    async fn set_totp_pending(
        &self,
        user: &UserName,
        sealed: String,
        events: Vec<Event>,
    ) -> Result<()> {
        self.upsert(
            "INSERT INTO user_secrets (user, totp_pending) VALUES (?1, ?2)
             ON CONFLICT (user) DO UPDATE SET totp_pending = excluded.totp_pending",
            user.to_string(),
            sealed,
            events,
        )
        .await
    }

    async fn confirm_totp(&self, user: &UserName, events: Vec<Event>) -> Result<()> {
        let events = prepare(&events)?;
        let user = user.to_string();
        self.writer
            .write(move |c| {
                let n = c
                    .execute(
                        "UPDATE user_secrets SET totp = totp_pending, totp_pending = NULL
                         WHERE user = ?1 AND totp_pending IS NOT NULL",
                        [user],
                    )
                    .map_err(backend)?;
                if n == 0 {
                    return Err(Error::NotFound);
                }
                append_events(c, &events)
            })
            .await
    }

    async fn set_config_hash(&self, user: &UserName, hash: String) -> Result<()> {
        self.upsert(
            "INSERT INTO user_secrets (user, config_hash) VALUES (?1, ?2)
             ON CONFLICT (user) DO UPDATE SET config_hash = excluded.config_hash",
            user.to_string(),
            hash,
            Vec::new(),
        )
        .await
    }

    async fn use_totp_step(&self, user: &UserName, step: u64) -> Result<bool> {
        let user = user.to_string();
        let step = i64::try_from(step).map_err(backend)?;
        self.writer
            .write(move |c| {
                c.execute(
                    "UPDATE user_secrets SET totp_last_step = ?2 WHERE user = ?1 AND totp_last_step < ?2",
                    params![user, step],
                )
                .map(|n| n > 0)
                .map_err(backend)
            })
            .await
    }

    // Figures: see `figures.rs`.

    async fn count_requests(&self, now: OffsetDateTime) -> Result<Vec<(State, String, u64)>> {
        SqliteStore::count_requests(self, now).await
    }

    async fn count_failed_leases(&self) -> Result<u64> {
        SqliteStore::count_failed_leases(self).await
    }

    async fn breakglass_uses(&self) -> Result<crate::BreakGlassUses> {
        SqliteStore::breakglass_uses(self).await
    }

    async fn period(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: usize,
    ) -> Result<crate::Period> {
        self.read_period(from, to, limit).await
    }

    // --- Notification outbox and break-glass postmortems (see `breakglass.rs`) ------------

    async fn due_notices(
        &self,
        now: OffsetDateTime,
        n: usize,
        busy: &[String],
    ) -> Result<Vec<Delivery>> {
        self.due_notices_at(now, n, busy).await
    }

    async fn next_notice_due(&self) -> Result<Option<OffsetDateTime>> {
        self.next_notice().await
    }

    async fn notices_due_by(&self, sinks: &[String], now: OffsetDateTime) -> Result<usize> {
        self.notices_due_by(sinks, now).await
    }

    async fn notice_delivered(
        &self,
        id: uuid::Uuid,
        sink: &str,
        now: OffsetDateTime,
        skipped: bool,
        events: Vec<Event>,
    ) -> Result<()> {
        self.mark_delivered(id, sink, now, skipped, events).await
    }

    async fn notice_failed(
        &self,
        id: uuid::Uuid,
        sink: &str,
        attempts: u32,
        retry_at: OffsetDateTime,
        error: &str,
        reached: &crate::Reached,
        events: Vec<Event>,
    ) -> Result<()> {
        self.mark_failed(id, sink, attempts, retry_at, error, reached, events)
            .await
    }

    async fn outbox_status(&self) -> Result<OutboxStatus> {
        self.outbox_figures().await
    }

    async fn postmortem(&self, request: RequestId) -> Result<Option<warden_domain::Postmortem>> {
        self.read_postmortem(request).await
    }

    async fn postmortems(
        &self,
        open_only: bool,
        requester: Option<&UserName>,
        before: Option<RequestId>,
        n: usize,
    ) -> Result<Vec<warden_domain::Postmortem>> {
        self.read_postmortems(
            open_only,
            requester.map(ToString::to_string),
            before.map(|id| id.to_string()),
            n,
        )
        .await
    }

    async fn close_postmortem(
        &self,
        pm: &warden_domain::Postmortem,
        events: Vec<Event>,
    ) -> Result<()> {
        self.save_closed(pm, events).await
    }

    async fn open_postmortems(&self) -> Result<u64> {
        self.count_open().await
    }

    async fn last_drills(&self) -> Result<Vec<Drill>> {
        self.drills().await
    }

    // --- The SSH proxy: see `ssh.rs`. ---

    async fn add_ssh_key(&self, key: &SshKey, events: Vec<Event>) -> Result<()> {
        self.insert_ssh_key(key, events).await
    }
    async fn remove_ssh_key(
        &self,
        user: &UserName,
        fingerprint: &str,
        events: Vec<Event>,
    ) -> Result<bool> {
        self.delete_ssh_key(user, fingerprint, events).await
    }
    async fn ssh_keys(&self, user: &UserName) -> Result<Vec<SshKey>> {
        self.select_ssh_keys(user).await
    }
    async fn ssh_key(&self, fingerprint: &str) -> Result<Option<SshKey>> {
        self.select_ssh_key(fingerprint).await
    }
    async fn key_certified_last(
        &self,
        requester: &UserName,
        fingerprint: &str,
    ) -> Result<Option<(RequestId, OffsetDateTime)>> {
        self.select_key_certified_last(requester, fingerprint).await
    }
    async fn set_host_key(
        &self,
        target: &TargetName,
        key: String,
        events: Vec<Event>,
    ) -> Result<()> {
        self.upsert_host_key(target, key, events).await
    }
    async fn host_key(&self, target: &TargetName) -> Result<Option<String>> {
        self.select_host_key(target).await
    }
    async fn session_started(&self, started: &Event, events: Vec<Event>) -> Result<()> {
        self.insert_live_session(started, events).await
    }
    async fn session_ended(&self, id: &str, events: Vec<Event>) -> Result<()> {
        self.delete_live_session(id, events).await
    }
    async fn live_sessions(&self) -> Result<Vec<Event>> {
        self.select_live_sessions().await
    }
    async fn session_end(&self, id: &str) -> Result<Option<StoredEvent>> {
        self.select_session_end(id).await
    }
}

#[cfg(test)]
mod tests;
