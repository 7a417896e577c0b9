//! Master key rotation's storage side: every sealed value rewritten in one transaction.

use std::path::Path;

use rusqlite::{Connection, params};
use warden_domain::audit::Event;

use super::{append_events, backend, configure, prepare};
use crate::{Error, Result};

/// Replaces every sealed value in the database at `path` with `f(value)`, in one transaction:
/// TOTP seeds, target credentials and pending pickups, and appends the audit event `event(n)`
/// in the same transaction. For master key rotation, with the server stopped. Returns how many
/// values were rewritten.
pub fn rewrap_sealed(
    path: &Path,
    f: impl Fn(&str) -> std::result::Result<String, String>,
    event: impl FnOnce(usize) -> Event,
) -> Result<usize> {
    let mut conn = Connection::open(path).map_err(backend)?;
    configure(&conn).map_err(backend)?;
    let tx = conn.transaction().map_err(backend)?;
    let mut n = 0;
    for (table, key, column) in [
        ("user_secrets", "user", "totp"),
        ("user_secrets", "user", "totp_pending"),
        ("target_credentials", "target", "sealed"),
        ("pickups", "grant_id", "sealed"),
    ] {
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
