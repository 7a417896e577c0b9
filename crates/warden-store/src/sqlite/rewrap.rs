//! Master key rotation's storage side: every sealed value rewritten in one transaction.

use std::path::Path;

use rusqlite::{Connection, params};
use warden_domain::audit::Event;

use super::{append_events, backend, configure, make_private, prepare};
use crate::{Error, Result};

/// Where sealed values are kept: (table, key column, sealed column).
const SEALED: [(&str, &str, &str); 4] = [
    ("user_secrets", "user", "totp"),
    ("user_secrets", "user", "totp_pending"),
    ("target_credentials", "target", "sealed"),
    ("pickups", "grant_id", "sealed"),
];

/// One sealed value of the database at `path`, if it holds any (none for a database yet to be
/// made): what tells whether a master key is the one the data was sealed under.
pub fn a_sealed_value(path: &Path) -> Result<Option<String>> {
    if !path.exists() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(backend)?;
    for (table, _, column) in SEALED {
        let found = conn.query_row(
            &format!("SELECT {column} FROM {table} WHERE {column} IS NOT NULL LIMIT 1"),
            [],
            |r| r.get::<_, String>(0),
        );
        match found {
            Ok(v) => return Ok(Some(v)),
            Err(rusqlite::Error::QueryReturnedNoRows) => {}
            // A database from before the table's migration holds nothing sealed there.
            Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("no such table") => {}
            Err(e) => return Err(backend(e)),
        }
    }
    Ok(None)
}

/// Replaces every sealed value in the database at `path` with `f(value)`, in one transaction:
/// TOTP seeds, target credentials and pending pickups, and appends the audit event `event(n)`
/// in the same transaction. For master key rotation, with the server stopped. Returns how many
/// values were rewritten. The database's files are made private first, as a start makes them
/// (with the same warning when others could read them).
pub fn rewrap_sealed(
    path: &Path,
    f: impl Fn(&str) -> std::result::Result<String, String>,
    event: impl FnOnce(usize) -> Event,
) -> Result<usize> {
    make_private(path)?;
    let mut conn = Connection::open(path).map_err(backend)?;
    configure(&conn).map_err(backend)?;
    let tx = conn.transaction().map_err(backend)?;
    let mut n = 0;
    for (table, key, column) in SEALED {
        let rows: Vec<(String, String)> = {
            let mut stmt = tx
                .prepare(&format!(
                    "SELECT {key}, {column} FROM {table} WHERE {column} IS NOT NULL"
                ))
                .map_err(backend)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(backend)?;
            rows.collect::<rusqlite::Result<_>>().map_err(backend)?
        };
        for (k, sealed) in rows {
            let new =
                f(&sealed).map_err(|e| Error::Backend(format!("{table}.{column} of {k}: {e}")))?;
            tx.execute(
                &format!("UPDATE {table} SET {column} = ?1 WHERE {key} = ?2"),
                params![new, k],
            )
            .map_err(backend)?;
            n += 1;
        }
    }
    append_events(&tx, &prepare(&[event(n)])?)?;
    tx.commit().map_err(backend)?;
    Ok(n)
}

/// Rewrites the database at `path` from its live rows alone and empties its log: after a
/// master key rotation, the values deleted or overwritten before it (a picked-up password, an
/// earlier admin credential) linger in free pages and old log frames, sealed under the old
/// key, which is most often rotated because it leaked.
pub fn compact(path: &Path) -> Result<()> {
    let conn = Connection::open(path).map_err(backend)?;
    configure(&conn).map_err(backend)?;
    conn.execute_batch("VACUUM").map_err(backend)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(backend)
}
