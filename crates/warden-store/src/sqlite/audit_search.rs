//! The audit search, and the block filters that let a search by user, target or request skip
//! the blocks of events that cannot hold it (see `block_keys`).

use rusqlite::{Connection, params};
use warden_audit::merkle::BLOCK_HEIGHT;

use super::block_keys::{BlockKeys, Key};
use super::{ceil_ms, decode_event, limit};
use crate::{AuditFilter, StoredEvent};

const SEARCH: &str = "SELECT seq, body, leaf_hash FROM audit
     WHERE (?1 IS NULL OR user = ?1)
       AND (?2 IS NULL OR target = ?2)
       AND (?3 IS NULL OR request_id = ?3)
       AND (?4 = '[]' OR code IN (SELECT value FROM json_each(?4)))
       AND (?5 IS NULL OR time >= ?5)
       AND (?6 IS NULL OR time < ?6)
       AND seq > ?7 AND seq <= ?8
     ORDER BY seq LIMIT ?9";

/// The events `f` asks for, oldest first.
pub(super) fn search(c: &Connection, f: &AuditFilter) -> rusqlite::Result<Vec<StoredEvent>> {
    search_by_chunks(c, f, FILTER_CHUNK)
}

/// [`search`], reading `chunk` block filters at a time.
pub(super) fn search_by_chunks(
    c: &Connection,
    f: &AuditFilter,
    chunk: i64,
) -> rusqlite::Result<Vec<StoredEvent>> {
    let user = f.user.as_ref().map(|u| u.as_str().to_owned());
    let target = f.target.as_ref().map(|t| t.as_str().to_owned());
    let request = f.request.map(|r| r.to_string());
    let codes = serde_json::to_string(&f.codes.iter().map(|c| c.number()).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into());
    let keys: Vec<Key<'_>> = [
        user.as_deref().map(Key::User),
        target.as_deref().map(Key::Target),
        request.as_deref().map(Key::Request),
    ]
    .into_iter()
    .flatten()
    .collect();
    let after = i64::try_from(f.after_seq.unwrap_or(0)).unwrap_or(i64::MAX);
    let mut stmt = c.prepare_cached(SEARCH)?;
    let mut found = Vec::new();
    // Filters are read a chunk at a time, so a search that finds its fill early reads only
    // the filters of the blocks before it, not those of the whole log.
    let mut from_block = Some(after >> BLOCK_HEIGHT);
    while let Some(block) = from_block {
        if found.len() >= f.limit {
            break;
        }
        let ranges = if keys.is_empty() {
            from_block = None;
            vec![(after, i64::MAX)]
        } else {
            let candidates = candidate_ranges(c, &keys, after, block, chunk)?;
            from_block = candidates.resume;
            candidates.ranges
        };
        for (lo, hi) in ranges {
            let wanted = f.limit.saturating_sub(found.len());
            if wanted == 0 {
                break;
            }
            let rows = stmt.query_map(
                params![
                    user,
                    target,
                    request,
                    codes,
                    // Event times are whole milliseconds: one at or after a bound with a
                    // fraction of one is at or after the next, and one before it (`to` is
                    // exclusive) is before the next too.
                    f.from.map(ceil_ms),
                    f.to.map(ceil_ms),
                    lo,
                    hi,
                    limit(wanted)
                ],
                |row| decode_event(row.get(0)?, row.get(1)?, row.get(2)?),
            )?;
            for row in rows {
                found.push(row?);
            }
        }
    }
    Ok(found)
}

/// Block filters a search reads at a time: 1 MiB of them, for a quarter of a million events.
const FILTER_CHUNK: i64 = 256;

/// Where in the log a search by name reads, one chunk of block filters at a time.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Candidates {
    /// Ranges of sequence numbers (after, up to and including), in order.
    pub(super) ranges: Vec<(i64, i64)>,
    /// The block the next chunk starts at; `None` once the ranges reach the log's end.
    pub(super) resume: Option<i64>,
}

/// The ranges of sequence numbers after `after`, from block `from_block` on, that may hold
/// events naming every one of `keys`: every block whose filter may hold them all, that has no
/// filter, or that an archive cut into (its filter also names archived events, so `warden audit
/// verify` cannot rebuild it from the live ones, and it is not trusted), up to `chunk` filters;
/// after the last filter of all, everything newer.
pub(super) fn candidate_ranges(
    c: &Connection,
    keys: &[Key<'_>],
    after: i64,
    from_block: i64,
    chunk: i64,
) -> rusqlite::Result<Candidates> {
    let first_live: i64 =
        c.query_row("SELECT coalesce(min(seq), 0) FROM audit", [], |r| r.get(0))?;
    let mut stmt = c.prepare_cached(
        "SELECT block, keys FROM audit_blocks WHERE block >= ?1 ORDER BY block LIMIT ?2",
    )?;
    let mut rows = stmt.query([from_block, chunk])?;
    let mut ranges: Vec<(i64, i64)> = Vec::new();
    let mut include = |lo: i64, hi: i64| {
        let lo = lo.max(after);
        if lo >= hi {
            return;
        }
        match ranges.last_mut() {
            Some(last) if last.1 == lo => last.1 = hi,
            _ => ranges.push((lo, hi)),
        }
    };
    let (mut next, mut read) = (from_block, 0);
    while let Some(row) = rows.next()? {
        let block: i64 = row.get(0)?;
        let filter = row
            .get::<_, Option<Vec<u8>>>(1)?
            .and_then(|b| BlockKeys::from_bytes(&b));
        // Blocks without a row were completed before filters were stored: read them.
        include(next << BLOCK_HEIGHT, block << BLOCK_HEIGHT);
        let cut = (block << BLOCK_HEIGHT) + 1 < first_live;
        let maybe = cut || filter.is_none_or(|f| keys.iter().all(|k| f.may_contain(*k)));
        if maybe {
            include(block << BLOCK_HEIGHT, (block + 1) << BLOCK_HEIGHT);
        }
        next = block + 1;
        read += 1;
    }
    if read == chunk {
        return Ok(Candidates {
            ranges,
            resume: Some(next),
        });
    }
    include(next << BLOCK_HEIGHT, i64::MAX);
    Ok(Candidates {
        ranges,
        resume: None,
    })
}

/// The filter of each of `blocks`, built from its stored events.
pub(super) fn block_keys(c: &Connection, blocks: &[i64]) -> rusqlite::Result<Vec<Vec<u8>>> {
    let mut stmt = c.prepare_cached(
        "SELECT user, target, request_id FROM audit WHERE seq > ?1 AND seq <= ?2",
    )?;
    blocks
        .iter()
        .map(|&block| {
            let mut keys = BlockKeys::new();
            let mut rows = stmt.query([block << BLOCK_HEIGHT, (block + 1) << BLOCK_HEIGHT])?;
            while let Some(row) = rows.next()? {
                if let Some(user) = row.get_ref(0)?.as_str_or_null()? {
                    keys.insert(Key::User(user));
                }
                if let Some(target) = row.get_ref(1)?.as_str_or_null()? {
                    keys.insert(Key::Target(target));
                }
                if let Some(request) = row.get_ref(2)?.as_str_or_null()? {
                    keys.insert(Key::Request(request));
                }
            }
            Ok(keys.to_bytes())
        })
        .collect()
}
