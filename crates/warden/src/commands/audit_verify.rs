//! Offline verification of the audit log: the whole store, an export bundle, or one proof.
//! Nothing here talks to a server; trust comes only from the verifier key.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use warden_audit::merkle::{leaf_hash, verify_consistency, verify_inclusion};
use warden_audit::{
    BlockCheck, Checkpoint, CheckpointError, Hash, NoteVerifier, Problem, Record, Tree,
    verify_log_from,
};
use warden_store::AuditReader;

use crate::exit::{self, Failure};
use crate::output::Output;

/// Leaves read per batch while streaming the store.
const BATCH: usize = 10_000;

/// The text of a file the user named: one that cannot be read is a usage error, saying which.
fn read_input(file: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(file).map_err(|e| {
        Failure::new(exit::USAGE, format!("cannot read {}: {e}", file.display())).into()
    })
}

/// A key given inline, or the path of a file holding one. An argument not shaped like a key
/// that names no file it can read is said to be neither, with why the file could not be read.
fn verifier(arg: &str) -> anyhow::Result<NoteVerifier> {
    let path = Path::new(arg);
    let text = if path.is_file() || !key_shaped(arg) {
        std::fs::read_to_string(path).map_err(|e| {
            Failure::new(
                exit::USAGE,
                format!(
                    "--verifier-key {arg}: neither a verifier key (NAME+KEYID+BASE64) nor a file that can be read ({e})"
                ),
            )
        })?
    } else {
        arg.to_owned()
    };
    text.trim().parse().map_err(|e| {
        Failure::new(
            exit::USAGE,
            format!("not a verifier key ({e}): expected NAME+KEYID+BASE64 or a file holding one"),
        )
        .into()
    })
}

/// Whether `arg` has the form of a verifier key, NAME+KEYID+BASE64 (eight hex digits of key
/// ID), whatever its parts hold. A key's name may hold `/`, so that alone makes no path.
fn key_shaped(arg: &str) -> bool {
    let mut parts = arg.trim().splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let base64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
    !name.is_empty()
        && id.len() == 8
        && id.chars().all(|c| c.is_ascii_hexdigit())
        && !key.is_empty()
        && key.chars().all(base64)
}

fn unhex(items: &Value) -> anyhow::Result<Vec<[u8; 32]>> {
    items
        .as_array()
        .context("proof must be a list of hex hashes")?
        .iter()
        .map(|h| {
            let bytes = hex::decode(h.as_str().unwrap_or_default()).context("bad hex in proof")?;
            bytes
                .try_into()
                .map_err(|_| anyhow::anyhow!("proof hash is not 32 bytes"))
        })
        .collect()
}

/// The sequence number the event's own bytes claim.
fn claimed_seq(data: &str) -> Option<u64> {
    serde_json::from_str::<Value>(data)
        .ok()?
        .get("seq")?
        .as_u64()
}

/// Prints what was checked and any problem; `what` names it in the closing line ("the
/// proof", "the bundle").
fn report(out: Output, what: &str, summary: Value, problems: &[String]) -> anyhow::Result<()> {
    // Several checkpoints (stored, kept, the server's file) may find the same fault: it is
    // said once.
    let mut seen = std::collections::HashSet::new();
    let problems: Vec<&String> = problems.iter().filter(|p| seen.insert(*p)).collect();
    if out.json {
        let mut v = summary;
        v["problems"] = json!(problems);
        v["valid"] = json!(problems.is_empty());
        out.json(&v)?;
    } else {
        for (k, v) in summary.as_object().into_iter().flatten() {
            match v {
                _ if k == "archived_before" => println!(
                    "archived_before: event {} ({}): the events before it are in archive segments",
                    v["seq"],
                    v["time"].as_str().unwrap_or("?")
                ),
                _ if k == "held_back" => println!(
                    "held_back: {v} later events of the period were not in the bundle: no checkpoint covered them yet at export"
                ),
                Value::String(s) => println!("{k}: {s}"),
                // A list reads as its items, or as `none`, not as JSON.
                Value::Array(items) if items.is_empty() => println!("{k}: none"),
                Value::Array(items) => println!(
                    "{k}: {}",
                    items
                        .iter()
                        .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                v => println!("{k}: {v}"),
            }
        }
        for p in &problems {
            println!("PROBLEM: {p}");
        }
        if problems.is_empty() {
            println!("OK: {what} verifies");
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::new(
            exit::FAILURE,
            format!(
                "audit verification failed: {}",
                crate::output::count(problems.len(), "problem")
            ),
        )
        .into())
    }
}

fn describe(p: &Problem) -> String {
    match p {
        Problem::Modified { seq } => format!("event {seq} was modified"),
        Problem::Missing { seq, count } => {
            format!("event {seq} is missing ({count} event(s) deleted from there)")
        }
        Problem::OutOfOrder { seq, expected } => {
            format!("event {seq} is out of order or inserted (expected {expected})")
        }
        Problem::RootMismatch { size } => format!(
            "the log's first {size} events do not match the signed checkpoint at size {size}"
        ),
        Problem::Truncated {
            checkpoint_size,
            log_size,
        } => {
            format!(
                "a checkpoint covers {checkpoint_size} events but the log holds {log_size}: events were deleted (from its end, or where the lines above say)"
            )
        }
    }
}

/// Verifies everything in a data directory: every event, every stored checkpoint, and any
/// checkpoints kept elsewhere.
pub fn store(
    data_dir: &Path,
    key: Option<&str>,
    external: &[std::path::PathBuf],
    out: Output,
) -> anyhow::Result<()> {
    let db = super::database_in(data_dir)?;
    let default_key = data_dir.join("audit_verifier.pub");
    if key.is_none() && !default_key.is_file() {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "no verifier key at {}: pass one with --verifier-key",
                default_key.display()
            ),
        )
        .into());
    }
    let key = verifier(key.unwrap_or(&default_key.display().to_string()))?;
    let reader = AuditReader::open(&db)?;
    let mut problems = Vec::new();

    // The newest checkpoint the server signed, kept beside the database: a log rolled back
    // together with its stored checkpoints still falls short of it. Read before the rows, so
    // that a server running meanwhile has stored the row of the one it holds.
    let anchor = data_dir.join(warden_server::checkpoints::ANCHOR_FILE);
    let anchored = anchor.exists() && !external.contains(&anchor);
    let server_file = if anchored {
        open_outside(&anchor, &key, &mut problems)?
    } else {
        None
    };
    let mut checkpoints = Vec::new();
    let stored_checkpoints = reader.checkpoints()?;
    let newest = stored_checkpoints.iter().map(|c| c.size).max();
    for stored in &stored_checkpoints {
        // The frontier is what the server extends the tree from, unsigned: the newest one
        // altered stops its signing (and would have a resumed log start from a wrong tree).
        if !Tree::from_frontier(stored.size, stored.frontier.clone())
            .is_ok_and(|t| t.root() == stored.root)
        {
            let consequence = if Some(stored.size) == newest {
                "the server signs nothing past it"
            } else {
                "an archive cut there would not verify: restore the row from a backup"
            };
            problems.push(format!(
                "checkpoint at size {}: its stored frontier does not make its root (altered; {consequence})",
                stored.size
            ));
        }
        // The time column picks where an archive cuts: it must say what the note signed.
        let signed_time = |cp: &Checkpoint| {
            cp.time()
                .is_some_and(|t| i128::from(t) == i128::from(stored.time.unix_timestamp()))
        };
        match Checkpoint::open(&stored.note, &key) {
            Ok(cp) if cp.size == stored.size && cp.root == stored.root && signed_time(&cp) => {
                checkpoints.push(cp)
            }
            Ok(cp) if cp.size == stored.size && cp.root == stored.root => problems.push(format!(
                "checkpoint at size {}: the stored time differs from its signed note's (altered; archives cut by it)",
                stored.size
            )),
            Ok(_) => problems.push(format!(
                "checkpoint at size {}: the stored size or root differs from its signed note",
                stored.size
            )),
            Err(e) => problems.push(format!(
                "checkpoint at size {}: not validly signed by {} ({e}): forged or altered",
                stored.size,
                key.name()
            )),
        }
    }
    // Those kept outside the data dir, by file: signed before any rewrite since, they alone
    // still say what the log was once its key signed another history.
    let mut kept = Vec::new();
    for file in external {
        match open_kept(file, &key)? {
            Ok(cp) => kept.push((file.as_path(), cp)),
            Err(e) => problems.push(format!(
                "external checkpoint {}: not validly signed ({e})",
                file.display()
            )),
        }
    }
    // The server writes that file after the row of the checkpoint it holds: a row it names
    // that is missing was deleted (and the server refuses to start on the database).
    if let Some(cp) = &server_file
        && cp.size > 0
        && !stored_checkpoints
            .iter()
            .any(|c| c.size == cp.size && c.root == cp.root)
    {
        problems.push(format!(
            "{} holds the checkpoint at size {}, which the database no longer has: checkpoint rows were deleted or rolled back (the server does not start on it)",
            warden_server::checkpoints::ANCHOR_FILE,
            cp.size
        ));
    }
    let outside: Vec<Checkpoint> = kept
        .iter()
        .map(|(_, cp)| cp.clone())
        .chain(server_file.clone())
        .collect();

    // What is in the archive directory, listed before the log is read: a segment an archive
    // puts in place meanwhile is not listed, or its seal record is read.
    let listed = archive_listing(&data_dir.join("archive"));
    // Events before the first stored one were archived: resume from the checkpoint there, or,
    // its row gone, from the end of the segment that holds them; failing both, from the last
    // point before them that can be trusted, for what is missing since to be named.
    let first_live = reader.leaves(0, 1)?.into_iter().next();
    let live_from = first_live
        .as_ref()
        .map_or(0, |(seq, _, _)| seq.saturating_sub(1));
    let (tree, resumed_from_segment) = resume_point(
        live_from,
        &stored_checkpoints,
        &data_dir.join("archive"),
        &key,
    );
    let base = tree.size();
    if let Some(file) = &resumed_from_segment
        && !stored_checkpoints.iter().any(|c| c.size == base)
    {
        problems.push(format!(
            "the checkpoint at size {base}, where the archive of the events before {} ended and the live log resumes, is missing from the database (deleted): the live log was checked from the end of archive segment {file} instead; restore the row from a backup",
            base + 1
        ));
    }
    let blocks = RefCell::new(BlockCheck::new(reader.block_roots()?, base));
    let archived_to = RefCell::new(0u64);
    let segments = RefCell::new(SegmentRecords::default());
    let moved = RefCell::new(Vec::new());
    let upgraded = RefCell::new(None);
    let start = tree.clone();
    let start_size = start.size();
    let mut events = StoreEvents::new(&reader, base);
    let records = (&mut events).map(|(seq, data, hash)| {
        match claimed_seq(&data) {
            Some(claimed) if claimed == seq => {}
            Some(claimed) => moved.borrow_mut().push(format!(
                "event stored at {seq} claims to be event {claimed}: moved or forged"
            )),
            None => moved.borrow_mut().push(format!(
                "event stored at {seq} claims no sequence number: altered"
            )),
        }
        if let Some(to) = segments.borrow_mut().read(&data) {
            let mut a = archived_to.borrow_mut();
            *a = (*a).max(to);
        }
        if upgraded.borrow().is_none() && upgrades_to_kept_leaves(&data) {
            *upgraded.borrow_mut() = Some(seq);
        }
        blocks.borrow_mut().add(seq, data.as_bytes());
        Record {
            seq,
            leaf_data: data.into_bytes(),
            stored_leaf_hash: hash,
        }
    });
    let mut result = verify_log_from(tree, records, &checkpoints, &outside);
    if let Some(e) = events.failed {
        return Err(e.into());
    }
    problems.extend(moved.into_inner());
    // Events archived past where the log could resume: the tree where the live log starts is
    // not known, so no root the live events make can be compared, and none is said to differ.
    let archived_to = archived_to.into_inner();
    let unresumed = archived_to > base;
    if unresumed {
        let why = if stored_checkpoints.iter().any(|c| c.size == archived_to) {
            "its stored frontier is altered (see above)"
        } else {
            "it is missing from the database (deleted)"
        };
        problems.push(format!(
            "the checkpoint at size {archived_to}, where the archive of the events before {} ended and the live log resumes, cannot be resumed from: {why}, and no intact archive segment ending there is at hand, so the live events could not be checked against the signed checkpoints; restore the row from a backup",
            archived_to + 1
        ));
        // Those archived are not missing; any deleted past them still are.
        result.problems = std::mem::take(&mut result.problems)
            .into_iter()
            .filter_map(|p| match p {
                Problem::Missing { seq, count } if seq <= archived_to => {
                    (seq + count > archived_to + 1).then(|| Problem::Missing {
                        seq: archived_to + 1,
                        count: seq + count - archived_to - 1,
                    })
                }
                Problem::RootMismatch { .. } | Problem::Truncated { .. } => None,
                p => Some(p),
            })
            .collect();
    }
    // Kept checkpoints of archived sizes are checked against the segments' events; one whose
    // segment was deleted (past retention) cannot be, and is said so.
    let kept_archived: Vec<&Checkpoint> = outside.iter().filter(|c| c.size < base).collect();
    // The blocks the archive took events from: their stored roots, and the leaf hashes kept of
    // the block it cut into, are checked against the segments' events (and the live ones).
    let kept_leaves: BTreeMap<u64, Hash> = reader.archived_leaves()?.into_iter().collect();
    let mut archived = ArchivedEvents {
        blocks: BlockCheck::new(reader.block_roots()?, 0),
        kept: kept_leaves.clone(),
        found: BTreeMap::new(),
        keeps_leaves: reader.keeps_archived_leaves()?,
        upgraded: upgraded.into_inner(),
    };
    // What an altered segment's events are checked against: every signed checkpoint, and the
    // leaf hashes kept.
    let signed: Vec<&Checkpoint> = checkpoints.iter().chain(&outside).collect();
    let vouchers = Vouchers {
        key: &key,
        signed: &signed,
        kept: &kept_leaves,
    };
    let mut segments = segments.into_inner();
    let (segments_checked, segment_problems, compared) = segments.check(
        &data_dir.join("archive"),
        &kept_archived,
        &vouchers,
        &mut archived,
    );
    problems.extend(segment_problems);
    let first_live_seq = first_live.as_ref().map_or(u64::MAX, |(seq, _, _)| *seq);
    let live = first_live_seq..=start_size + result.events_checked;
    let (unaccounted, unrecorded) = segments.unaccounted(&data_dir.join("archive"), &listed, live);
    problems.extend(unaccounted);
    if base > 0 {
        problems.extend(archived.finish(base, &reader)?);
    }
    let unchecked: Vec<u64> = kept_archived
        .iter()
        .map(|c| c.size)
        .filter(|size| !compared.contains(size))
        .collect();
    if base > 0 && archived_to != base && !unresumed {
        problems.push(format!(
            "events 1..{base} left the live log without an audited archive ending at {base}"
        ));
    }
    problems.extend(result.problems.iter().map(describe));
    // An event changed with its stored hash forged to match shows only as a root that no longer
    // matches: the checkpoints that still do narrow down where.
    let mismatched = root_mismatches(&result.problems);
    let signed_here: Vec<&Checkpoint> = checkpoints.iter().chain(&server_file).collect();
    let forks = forks(&kept, &signed_here);
    // Sizes only grow: a stored checkpoint signed after a kept one of a larger size was signed
    // over a log rolled back past it, so it vouches for a fork and narrows nothing down; unless
    // the events still make the larger one's root (a log rolled back has lost or changed events
    // it covers), when the signer's clock went back, or the same events were signed again.
    let holds = |k: &Checkpoint| {
        let differs = |p: &Problem| match p {
            Problem::RootMismatch { size } => *size == k.size,
            Problem::Truncated {
                checkpoint_size, ..
            } => *checkpoint_size == k.size,
            _ => false,
        };
        let archived_differs = format!("kept checkpoint at size {}: ", k.size);
        !forks.iter().any(|(size, _)| *size == k.size)
            && if k.size < base {
                compared.contains(&k.size)
                    && !problems.iter().any(|p| p.starts_with(&archived_differs))
            } else {
                !unresumed && !result.problems.iter().any(differs)
            }
    };
    let mut resigned = Vec::new();
    let mut clock_back = Vec::new();
    for c in &checkpoints {
        let later = |k: &&Checkpoint| {
            k.size > c.size && matches!((c.time(), k.time()), (Some(ct), Some(kt)) if ct > kt)
        };
        let before: Vec<&Checkpoint> = outside.iter().filter(later).collect();
        if before.iter().all(|k| holds(k)) {
            clock_back.extend(before.into_iter().map(|k| (c, k)));
        } else {
            resigned.push(c.size);
        }
    }
    problems.extend(resigned.iter().map(|size| {
        format!(
            "checkpoint at size {size} was signed after a kept checkpoint of a larger size: the log was rolled back and signed again (a fork)"
        )
    }));
    // One warning for each kept checkpoint, naming those signed after it.
    let mut warnings: Vec<String> = outside
        .iter()
        .enumerate()
        .filter_map(|(i, k)| {
            let after: Vec<&Checkpoint> = clock_back
                .iter()
                .filter(|(_, kk)| std::ptr::eq(*kk, k))
                .map(|(c, _)| *c)
                .collect();
            let last = after.iter().max_by_key(|c| c.time())?;
            // Those given on the command line first, then the server's file.
            let file = kept.get(i).map_or(anchor.as_path(), |(file, _)| file);
            let these = match after.as_slice() {
                [c] => format!(
                    "the data dir's checkpoint at size {} (signed {}) was",
                    c.size,
                    signed_at(c)
                ),
                _ => format!(
                    "{} of the data dir's checkpoints, of sizes {} to {} (the last signed {}), were",
                    after.len(),
                    after.iter().map(|c| c.size).min().unwrap_or_default(),
                    after.iter().map(|c| c.size).max().unwrap_or_default(),
                    signed_at(last)
                ),
            };
            Some(format!(
                "{these} signed after the checkpoint at size {} in {} (signed {}), though sizes only grow: the signer's clock went back (or the log was signed again over the same events); the events still make every root, so this is no fork",
                k.size,
                file.display(),
                signed_at(k)
            ))
        })
        .collect();
    warnings.extend(unrecorded);
    problems.extend(forks.iter().map(|(_, fork)| fork.clone()));
    // Which kept checkpoints the live log itself does not match (those of archived events are
    // checked against the segments): a second pass over it, made only when some checkpoint
    // does not match it.
    let kept: Vec<&Checkpoint> = kept
        .iter()
        .map(|(_, cp)| cp)
        .filter(|cp| cp.size > base)
        .collect();
    let (compared, differ) = if mismatched.is_empty() || kept.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        kept_against_log(&reader, start, base, &kept)?
    };
    let since = differ
        .iter()
        .chain(forks.iter().map(|(size, _)| size))
        .min()
        .copied();
    // Signed again only if a checkpoint of the data dir contradicts a kept one, or matches the
    // log past where a kept one no longer does; where they flag the change themselves, they
    // narrow it down as well as the kept ones. One the log does not reach (past its end, once
    // events were deleted) was compared with nothing, so it matches nothing either.
    let log_end = start_size + result.events_checked;
    let signed_again = since.filter(|&since| {
        !forks.is_empty()
            || signed_here.iter().any(|c| {
                c.size >= since
                    && (start_size..=log_end).contains(&c.size)
                    && !mismatched.contains(&c.size)
            })
    });
    match signed_again {
        Some(since) => problems.extend(changed_since_kept(since, &compared, &differ, base)),
        None => {
            let trusted = checkpoints
                .iter()
                .chain(&outside)
                .map(|c| c.size)
                .filter(|size| !resigned.contains(size));
            problems.extend(changed_between(&mismatched, trusted, base));
        }
    }
    let blocks = blocks.into_inner();
    let blocks_checked = blocks.checked().len() + archived.blocks.checked().len();
    let height = warden_audit::merkle::BLOCK_HEIGHT;
    // A block's root is stored with the checkpoint that completes it: one reaching past the
    // log's last event shows the log once went further, and was cut back.
    let log_end = blocks.last_seq();
    let (cut_off, blocks_unchecked): (Vec<u64>, Vec<u64>) = blocks
        .unchecked()
        .filter(|b| !archived.blocks.checked().contains(b))
        .partition(|b| (b + 1) << height > log_end);
    if let Some(last) = cut_off.last() {
        problems.push(format!(
            "a block root is stored for events up to {}, but the log ends at {log_end}: events were removed from its end",
            (last + 1) << height
        ));
    }
    // A stored root whose events are not all at hand cannot be recomputed: not counted as
    // checked, and, where some of them were archived (a segment deleted past retention, or
    // missing), said so. Those of deleted live events are named as missing already.
    let archived_unchecked: Vec<u64> = blocks_unchecked
        .iter()
        .copied()
        .filter(|b| b << height < base)
        .collect();
    let mut altered_blocks: Vec<u64> = blocks
        .mismatched()
        .iter()
        .chain(archived.blocks.mismatched())
        .copied()
        .collect();
    altered_blocks.sort_unstable();
    altered_blocks.dedup();
    problems.extend(altered_blocks.iter().map(|&b| {
        format!(
            "{}: its stored Merkle root differs from the events' (altered; proofs through it fail)",
            block_name(b)
        )
    }));
    let (_, altered_columns) = reader.check_columns()?;
    problems.extend(altered_columns.iter().map(|seq| {
        format!(
            "event {seq}: its searchable columns (time, code, actor, target, request) differ from its text (altered; searches could miss it or show it to the wrong user)"
        )
    }));
    let (filters_checked, altered_filters) = reader.check_block_keys()?;
    problems.extend(altered_filters.iter().map(|&b| {
        format!(
            "{}: its stored search filter differs from the events' (altered; searches could miss them)",
            block_name(b)
        )
    }));
    if stored_checkpoints.is_empty() && result.events_checked > 0 {
        problems.push(format!(
            "no stored checkpoint covers any of the {} events, so none of them is authenticated (were the checkpoints deleted?)",
            result.events_checked
        ));
    }
    // Live events past every checkpoint are vouched for by none yet (the next one signs them);
    // archived ones are the segments' to vouch for, and are not counted.
    let newest_signed = checkpoints
        .iter()
        .chain(&outside)
        .map(|c| c.size)
        .max()
        .unwrap_or(0);
    let vouched_to = newest_signed.max(base);
    let unsigned = (base + result.events_checked).saturating_sub(vouched_to);
    if unsigned > 0 && !out.json {
        let events = crate::output::count(usize::try_from(unsigned).unwrap_or(usize::MAX), "event");
        // Stored checkpoints over them that did not verify were signed by another key, or
        // altered: no next checkpoint is awaited.
        if stored_checkpoints.iter().any(|c| c.size > vouched_to) {
            eprintln!(
                "Note: no checkpoint validly signed by {} covers the last {events}: those stored over them do not verify (see the problems), so nothing but the database vouches for them. If that is not the server's key, verify again with the one `warden audit verifier-key` prints; look at the events with `warden audit search --after {vouched_to}`.",
                key.name()
            );
        } else {
            eprintln!(
                "Note: no signed checkpoint covers the last {events} yet. A running server's next checkpoint signs them; in a stopped data dir nothing but the database vouches for them (a crash's last events, or `vault rewrap`'s), so look at them with `warden audit search --after {vouched_to}`."
            );
        }
    }
    if !archived_unchecked.is_empty() && !out.json {
        let names: Vec<String> = archived_unchecked.iter().map(|&b| block_name(b)).collect();
        eprintln!(
            "Note: the stored Merkle root of each {} was not checked, since its events are not all at hand (a segment holding some was deleted, or is missing): proofs of live events pass through it, and fail if it was altered.",
            names.join("; ")
        );
    }
    if !anchor.exists() && !out.json {
        eprintln!(
            "Note: {} is missing, so a data dir rolled back whole (the database with its own checkpoints) would verify as well as this one: check it against a checkpoint kept elsewhere with --checkpoint FILE.",
            anchor.display()
        );
    }
    let mut summary = json!({
        "events_checked": result.events_checked,
        "events_after_newest_checkpoint": unsigned,
        "checkpoints_checked": result.checkpoints_checked,
        "blocks_checked": blocks_checked,
        "blocks_unchecked": blocks_unchecked,
        "block_filters_checked": filters_checked,
        "external_checkpoints": outside.len(),
        "external_checkpoints_unchecked": unchecked,
        "server_checkpoint_file": anchored,
        "segments_checked": segments_checked,
        "verifier": key.name(),
    });
    if let Some(before) = first_live.filter(|_| base > 0).map(archived_before) {
        summary["archived_before"] = before;
    }
    if out.json {
        if !warnings.is_empty() {
            summary["warnings"] = json!(warnings);
        }
    } else {
        for w in &warnings {
            eprintln!("Warning: {w}");
        }
    }
    report(out, "the audit log", summary, &problems)
}

/// When a checkpoint says it was signed, by the signer's clock.
fn signed_at(cp: &Checkpoint) -> String {
    cp.time()
        .and_then(|t| i64::try_from(t).ok())
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .map_or_else(|| "at an unknown time".to_owned(), warden_domain::rfc3339)
}

/// The tree the live log's events are checked from, they following event `live_from`: that of
/// the stored checkpoint there, as the server resumes; failing it, that of the end of an archive
/// segment there (in `archive`), its events making the root its end checkpoint signed (the
/// segment's file name is returned then); failing both, that of the latest such point before,
/// or the empty tree, so that what is missing since is named.
fn resume_point(
    live_from: u64,
    stored: &[warden_store::Checkpoint],
    archive: &Path,
    key: &NoteVerifier,
) -> (Tree, Option<String>) {
    let at_stored = |size: u64| {
        stored
            .iter()
            .filter(|c| c.size <= size)
            .filter_map(|c| Tree::from_frontier(c.size, c.frontier.clone()).ok())
            .filter(|t| {
                stored
                    .iter()
                    .any(|c| c.size == t.size() && c.root == t.root())
            })
            .max_by_key(Tree::size)
    };
    let stored_tree = at_stored(live_from).unwrap_or_default();
    if stored_tree.size() == live_from {
        return (stored_tree, None);
    }
    // Segments ending after that checkpoint and no later than the live log's start, latest
    // first, by their names (segment-FROM-TO.json).
    let mut ends: Vec<(u64, String)> = std::fs::read_dir(archive)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let to = name
                .strip_prefix("segment-")?
                .strip_suffix(".json")?
                .split_once('-')?
                .1
                .parse()
                .ok()?;
            Some((to, name))
        })
        .filter(|(to, _)| (stored_tree.size() + 1..=live_from).contains(to))
        .collect();
    ends.sort_unstable_by(|a, b| b.cmp(a));
    for (to, name) in ends {
        let Ok(v) = std::fs::read(archive.join(&name))
            .map_err(|_| ())
            .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|_| ()))
        else {
            continue;
        };
        let (_, last, events, Some(mut tree)) = segment_parts(&v) else {
            continue;
        };
        for data in &events {
            tree.push(leaf_hash(data.as_bytes()));
        }
        let signed = Checkpoint::open(v["end"].as_str().unwrap_or_default(), key);
        if last == to
            && tree.size() == to
            && signed.is_ok_and(|end| end.size == to && end.root == tree.root())
        {
            return (tree, Some(name));
        }
    }
    (stored_tree, None)
}

/// Where the live log starts after an archive, as a search or an export says it: the oldest
/// live event (`first_live`: its sequence number and text) and its time.
fn archived_before((seq, data, _): (u64, String, [u8; 32])) -> Value {
    let time = serde_json::from_str::<Value>(&data)
        .ok()
        .map(|v| v["time"].clone());
    json!({ "seq": seq, "time": time.unwrap_or_default() })
}

/// The checkpoint kept in `file` (`--checkpoint`), checked to be signed by `key`: the error
/// if it is not, for the caller to report. The file's trailing blank lines, or a missing final
/// newline, are no part of the note (what is signed ends at its text, before the signature
/// lines), and are let be; a file that holds no checkpoint note at all is a usage error.
fn open_kept(
    file: &Path,
    key: &NoteVerifier,
) -> anyhow::Result<Result<Checkpoint, CheckpointError>> {
    let text = read_input(file)?;
    let note = format!("{}\n", text.trim_end_matches([' ', '\t', '\r', '\n']));
    match Checkpoint::open(&note, key) {
        Ok(cp) => Ok(Ok(cp)),
        Err(
            e @ (CheckpointError::BadSignature
            | CheckpointError::NotSignedByVerifier { .. }
            | CheckpointError::SignedByAnotherKey { .. }),
        ) => Ok(Err(e)),
        Err(
            e @ (CheckpointError::TooLarge { .. }
            | CheckpointError::ControlCharacter
            | CheckpointError::MissingSignatures
            | CheckpointError::MalformedSignature { .. }
            | CheckpointError::TooManySignatures
            | CheckpointError::MalformedBody(_)),
        ) => Err(Failure::new(
            exit::USAGE,
            format!(
                "{} is not a checkpoint note, it is malformed ({e}): a checkpoint file holds a note as `warden audit checkpoint` prints it, the log's name, its size and its root on a line each, then a `time` line, a blank line, and signature lines beginning with `— `",
                file.display()
            ),
        )
        .into()),
    }
}

/// The checkpoint in `file`, one kept outside the stored ones; one not validly signed by
/// `key` is a problem, and `None`.
fn open_outside(
    file: &Path,
    key: &NoteVerifier,
    problems: &mut Vec<String>,
) -> anyhow::Result<Option<Checkpoint>> {
    match Checkpoint::open(&read_input(file)?, key) {
        Ok(cp) => Ok(Some(cp)),
        Err(e) => {
            problems.push(format!(
                "external checkpoint {}: not validly signed ({e})",
                file.display()
            ));
            Ok(None)
        }
    }
}

/// The store's events after a sequence number, in order, read [`BATCH`] at a time. A read
/// that fails ends them, and is kept in `failed` for the caller to return.
struct StoreEvents<'r> {
    reader: &'r AuditReader,
    after: u64,
    batch: std::vec::IntoIter<(u64, String, [u8; 32])>,
    failed: Option<warden_store::Error>,
}

impl<'r> StoreEvents<'r> {
    fn new(reader: &'r AuditReader, after: u64) -> Self {
        Self {
            reader,
            after,
            batch: Vec::new().into_iter(),
            failed: None,
        }
    }
}

impl Iterator for StoreEvents<'_> {
    /// Sequence number, event, stored leaf hash.
    type Item = (u64, String, [u8; 32]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(event) = self.batch.next() {
                self.after = event.0;
                return Some(event);
            }
            match self.reader.leaves(self.after, BATCH) {
                Ok(next) if next.is_empty() => return None,
                Ok(next) => self.batch = next.into_iter(),
                Err(e) => {
                    self.failed = Some(e);
                    return None;
                }
            }
        }
    }
}

/// [`check_kept`] over the store's events after `base`, from `start`, the tree there.
fn kept_against_log(
    reader: &AuditReader,
    start: Tree,
    base: u64,
    kept: &[&Checkpoint],
) -> anyhow::Result<(Vec<u64>, Vec<u64>)> {
    let mut events = StoreEvents::new(reader, base);
    let found = check_kept(start, (&mut events).map(|(_, data, _)| data), kept);
    match events.failed {
        Some(e) => Err(e.into()),
        None => Ok(found),
    }
}

/// The kept checkpoints (file, checkpoint) that one signed in the data dir (`signed_here`)
/// contradicts, of the same size and another root, each with the problem saying so: their key
/// signed two histories of that size.
fn forks(kept: &[(&Path, Checkpoint)], signed_here: &[&Checkpoint]) -> Vec<(u64, String)> {
    kept.iter()
        .filter(|(_, k)| {
            signed_here
                .iter()
                .any(|c| c.size == k.size && c.root != k.root)
        })
        .map(|(file, k)| {
            (
                k.size,
                format!(
                    "the data dir's checkpoint at size {} has another root than the kept {}: the log was rewritten since (a fork)",
                    k.size,
                    file.display()
                ),
            )
        })
        .collect()
}

/// Where what changed lies while every checkpoint is trusted: past the largest of `sizes`
/// that still matches the log, or `base`, where its check started, up to the smallest that
/// does not (`mismatched`). None where that is no range: a checkpoint of fewer events than
/// the check started from was compared with nothing.
fn changed_between(
    mismatched: &[u64],
    sizes: impl Iterator<Item = u64>,
    base: u64,
) -> Option<String> {
    let first_bad = *mismatched.iter().min()?;
    let last_good = sizes
        .filter(|&size| size < first_bad && !mismatched.contains(&size))
        .max()
        .unwrap_or(base);
    if last_good >= first_bad {
        return None;
    }
    Some(format!(
        "what changed lies in events {}..={first_bad}: the log still matches the checkpoint at {last_good}",
        last_good + 1
    ))
}

/// Where what changed lies once a kept checkpoint, at size `since`, contradicts the log or one
/// signed in the data dir. Whoever rewrote the log with its signing key could sign the data
/// dir's checkpoints again to match, so only the kept ones narrow it down: `compared` are the
/// sizes of those the log reaches, `differ` of those it does not match.
fn changed_since_kept(since: u64, compared: &[u64], differ: &[u64], base: u64) -> Vec<String> {
    let mut problems = vec![format!(
        "the checkpoints in the data dir were signed again, or the log forked, since the kept checkpoint at size {since}: signed with the same key, they cannot narrow down what changed; only checkpoints kept outside the data dir can"
    )];
    if let Some(&first_bad) = differ.iter().min() {
        let last_good = compared
            .iter()
            .copied()
            .filter(|&size| size < first_bad && !differ.contains(&size))
            .max();
        problems.push(match last_good {
            Some(good) => format!(
                "what changed lies in events {}..={first_bad}: the log still matches the kept checkpoint at {good}",
                good + 1
            ),
            None => format!(
                "what changed lies in events {}..={first_bad}: no kept checkpoint of fewer events narrows it down",
                base + 1
            ),
        });
    }
    problems
}

/// Compares each of `kept` that the tree `start`, extended by `events` in order, reaches with
/// the root there. Returns the sizes compared and those whose root differs.
fn check_kept(
    mut tree: Tree,
    events: impl IntoIterator<Item = impl AsRef<str>>,
    kept: &[&Checkpoint],
) -> (Vec<u64>, Vec<u64>) {
    let (mut compared, mut differ) = (Vec::new(), Vec::new());
    let mut compare = |tree: &Tree| {
        for k in kept.iter().filter(|k| k.size == tree.size()) {
            compared.push(k.size);
            if k.root != tree.root() {
                differ.push(k.size);
            }
        }
    };
    compare(&tree);
    for data in events {
        tree.push(leaf_hash(data.as_ref().as_bytes()));
        compare(&tree);
    }
    (compared, differ)
}

/// A segment's first and last sequence numbers, its events, and the tree as it stood before
/// its first event (rebuilt from its start frontier; `None` if that does not parse).
fn segment_parts(v: &Value) -> (u64, u64, Vec<&str>, Option<Tree>) {
    let from = v["from"].as_u64().unwrap_or(0);
    let to = v["to"].as_u64().unwrap_or(0);
    let events = v["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e.as_str().unwrap_or_default())
        .collect();
    let start = if from > 1 {
        let frontier: Option<Vec<[u8; 32]>> = v["start"]["frontier"].as_array().and_then(|f| {
            f.iter()
                .map(|h| hex::decode(h.as_str()?).ok()?.try_into().ok())
                .collect()
        });
        frontier.and_then(|f| Tree::from_frontier(from - 1, f).ok())
    } else {
        Some(Tree::new())
    };
    (from, to, events, start)
}

/// The archive segments the log records as sealed (file name → SHA-256) and as deleted, from
/// the live log and from the segments themselves: a segment's own seal record may have been
/// archived since, into a later segment.
#[derive(Default)]
struct SegmentRecords {
    sealed: std::collections::BTreeMap<String, String>,
    deleted: std::collections::BTreeSet<String>,
}

impl SegmentRecords {
    /// Notes what event `data` records of segments; returns the end of the range an archive
    /// event sealed.
    fn read(&mut self, data: &str) -> Option<u64> {
        let archived = data.contains("\"audit.segment_archived\"");
        if !archived && !data.contains("\"audit.segment_deleted\"") {
            return None;
        }
        let v: Value = serde_json::from_str(data).ok()?;
        let file = v["details"]["file"].as_str()?.to_owned();
        if !archived {
            self.deleted.insert(file);
            return None;
        }
        if let Some(sha) = v["details"]["sha256"].as_str() {
            self.sealed.insert(file, sha.to_owned());
        }
        v["details"]["to"].as_u64()
    }

    /// Notes what the events of segment `v` record of segments; returns its first event.
    fn read_all(&mut self, v: &Value) -> u64 {
        let (from, _, events, _) = segment_parts(v);
        for data in &events {
            self.read(data);
        }
        from
    }

    /// Checks every segment sealed and not deleted is in `dir` as sealed, reading the records
    /// of each one found, then reads their events in sequence order, oldest segment first (a
    /// block of events that two segments share is whole only so): against the stored roots and
    /// kept hashes (`archived`), and each of the `kept` checkpoints whose size falls in a
    /// segment against its events. Returns how many segments were checked, the problems, and
    /// the sizes of the kept checkpoints compared.
    fn check(
        &mut self,
        dir: &Path,
        kept: &[&Checkpoint],
        vouchers: &Vouchers<'_>,
        archived: &mut ArchivedEvents,
    ) -> (usize, Vec<String>, Vec<u64>) {
        let mut problems = Vec::new();
        let mut found = self.find_sealed(dir, vouchers, &mut problems);
        found.sort_unstable();
        let mut compared = Vec::new();
        for (_, file, sha) in &found {
            let Ok(v) = read_sealed(&dir.join(file), sha) else {
                problems.push(format!(
                    "archive segment {file}: changed or removed while it was being verified"
                ));
                continue;
            };
            let (_, _, events, start) = segment_parts(&v);
            for data in &events {
                if let Some(seq) = claimed_seq(data) {
                    archived.add(seq, data.as_bytes());
                }
            }
            // Sealed as recorded, its start frontier is as the server kept it.
            if let Some(start) = start {
                let (sizes, differ) = check_kept(start, events, kept);
                compared.extend(sizes);
                problems.extend(differ.iter().map(|size| format!(
                    "kept checkpoint at size {size}: the events archived in {file} do not match it: the log was rewritten before it was archived (a fork)"
                )));
            }
        }
        (found.len(), problems, compared)
    }

    /// The files `listed` in the archive directory `dir` that the log does not account for
    /// (called after [`SegmentRecords::check`] has read every seal record at hand), the live log
    /// holding the events `live`: each named with what it is likely to be and what to do,
    /// as a problem, since whoever reads the directory as the archive would take it for sealed
    /// events (a segment an archive cut short left beside its still live events, read as
    /// archived, counts them twice); as a warning only a segment whose seal record may have gone
    /// with a later segment deleted past retention. One gone by now (an archive under way put it
    /// in place, or a start removed it) is not named.
    fn unaccounted(
        &self,
        dir: &Path,
        listed: &[String],
        live: std::ops::RangeInclusive<u64>,
    ) -> (Vec<String>, Vec<String>) {
        let (first_live, last) = (*live.start(), *live.end());
        let (mut problems, mut warnings) = (Vec::new(), Vec::new());
        let sealed: Vec<(u64, u64, &str)> = self
            .sealed
            .keys()
            .filter(|f| !self.deleted.contains(*f))
            .filter_map(|f| segment_range(f).map(|(from, to)| (from, to, f.as_str())))
            .collect();
        let deleted: Vec<(u64, &str)> = self
            .deleted
            .iter()
            .filter_map(|f| segment_range(f).map(|(from, _)| (from, f.as_str())))
            .collect();
        for name in listed {
            if (self.sealed.contains_key(name) && !self.deleted.contains(name))
                || std::fs::symlink_metadata(dir.join(name)).is_err()
            {
                continue;
            }
            let what = if self.deleted.contains(name) {
                format!(
                    "the log records its deletion, yet it is still there (a deletion cut short, or the file put back): delete it again with `warden audit delete-segment {name}`"
                )
            } else if let Some((from, to)) = name.strip_suffix(".new").and_then(segment_range) {
                format!(
                    "a segment of events {from}..{to} written aside and never put in place, so no record vouches for it: left by an archive cut short (the server removes it at its next start or archive), or one under way"
                )
            } else if let Some((from, to)) = segment_range(name) {
                if to > last {
                    format!(
                        "not a segment the log records as sealed, and its events {from}..{to} run past the log's last event ({last}): sealed from a log this one is not (warden.db lost or emptied and a new log begun from 1, which the server refuses to start beside), or put there from another data dir; restore warden.db and audit_checkpoint.note from a backup, or move it out of the archive directory if it belongs elsewhere"
                    )
                } else if to >= first_live {
                    format!(
                        "not a segment the log records as sealed, and its events {from}..{to} are still in the live log, which starts at event {first_live}: left by an archive cut short before they left it (the server removes it at its next start or archive, if its bytes are those the live log seals; move it out of the archive directory otherwise), or one under way; read as archived, its events would be counted twice"
                    )
                } else if let Some((_, _, other)) =
                    sealed.iter().find(|(f, t, _)| from <= *t && *f <= to)
                {
                    format!(
                        "not a segment the log records as sealed, and its events {from}..{to} overlap those of the sealed segment {other}: left by an archive cut short whose events were archived again since, or put there by hand; move it out of the archive directory"
                    )
                } else if let Some((_, by)) = deleted.iter().find(|(f, _)| *f > to) {
                    warnings.push(format!(
                        "archive/{name}: no record of its seal is at hand, which the segment {by}, deleted since, may have held; check it on its own with `warden audit verify --segment`"
                    ));
                    continue;
                } else {
                    "not a segment the log records as sealed: put there by hand, or left by an archive cut short whose events were archived again since; move it out of the archive directory".to_owned()
                }
            } else {
                "not an archive segment: only the segments the server seals (segment-FROM-TO.json) belong there; move it out of the archive directory".to_owned()
            };
            problems.push(format!("archive/{name}: {what}"));
        }
        (problems, warnings)
    }

    /// Every segment sealed and not deleted, each found in `dir` as sealed (first event, file
    /// name, SHA-256), its records read for older segments' seals; one missing is a problem,
    /// and one altered too, with what its events show against the `vouchers`.
    fn find_sealed(
        &mut self,
        dir: &Path,
        vouchers: &Vouchers<'_>,
        problems: &mut Vec<String>,
    ) -> Vec<(u64, String, String)> {
        let mut found = Vec::new();
        let mut visited = std::collections::BTreeSet::new();
        while let Some((file, sha)) = self
            .sealed
            .iter()
            .find(|(f, _)| !visited.contains(*f) && !self.deleted.contains(*f))
            .map(|(f, s)| (f.clone(), s.clone()))
        {
            visited.insert(file.clone());
            // An altered segment's records are read too: the older segments they name are
            // checked all the same, and any they misname is found missing or altered.
            match read_sealed(&dir.join(&file), &sha) {
                Ok(v) => {
                    found.push((self.read_all(&v), file, sha));
                }
                Err(Sealed::Altered(v)) => {
                    self.read_all(&v);
                    problems.push(format!(
                        "archive segment {file}: its contents differ from those the log recorded when it was sealed (altered)"
                    ));
                    let (_, found) = vouchers.check(&v);
                    problems.extend(found.iter().map(|p| format!("archive segment {file}: {p}")));
                }
                Err(Sealed::Missing) => problems.push(format!(
                    "archive segment {file}: missing from {}, though the log records no deletion of it",
                    dir.display()
                )),
            }
        }
        found
    }
}

/// The names of what the archive directory `dir` holds, sorted (none when there is none).
fn archive_listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The events a segment named `segment-FROM-TO.json` holds (both numbers in 12 digits, as
/// archiving names them), by its name.
fn segment_range(name: &str) -> Option<(u64, u64)> {
    let (from, to) = name
        .strip_prefix("segment-")?
        .strip_suffix(".json")?
        .split_once('-')?;
    let digits = |s: &str| s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(from) || !digits(to) {
        return None;
    }
    Some((from.parse().ok()?, to.parse().ok()?))
}

/// Why a sealed segment could not be read as sealed.
enum Sealed {
    Missing,
    /// Its bytes differ from those sealed: what they hold now.
    Altered(Value),
}

/// The segment at `path`, if its bytes still have the SHA-256 its seal recorded.
fn read_sealed(path: &Path, sha: &str) -> Result<Value, Sealed> {
    let bytes = std::fs::read(path).map_err(|_| Sealed::Missing)?;
    let v = serde_json::from_slice(&bytes).unwrap_or_default();
    if hex::encode(Sha256::digest(&bytes)) != sha {
        return Err(Sealed::Altered(v));
    }
    Ok(v)
}

/// What vouches for a segment's events beside its own checkpoints: the key that signed them,
/// checkpoints signed with it (verified already) that fall among the segment's events, and
/// leaf hashes kept of archived events (the data dir's).
struct Vouchers<'a> {
    key: &'a NoteVerifier,
    signed: &'a [&'a Checkpoint],
    kept: &'a BTreeMap<u64, Hash>,
}

impl Vouchers<'_> {
    /// Checks the segment `v`: its start frontier against its signed start checkpoint, and
    /// its events against its signed end checkpoint and the `signed` checkpoints among them.
    /// Each event missing, moved or repeated is named, and each whose hash is `kept` and
    /// differs; any other change is narrowed down to the events between the last checkpoint
    /// that still matches and the first that does not. Returns how many events it holds, and
    /// the problems.
    fn check(&self, v: &Value) -> (u64, Vec<String>) {
        let (from, to, events, start_tree) = segment_parts(v);
        let mut problems = Vec::new();
        let tree = segment_start(v, self.key, from, start_tree, &mut problems);
        let end = match Checkpoint::open(v["end"].as_str().unwrap_or_default(), self.key) {
            Ok(end) if end.size != to => {
                problems.push(format!(
                    "the segment says it holds events {from}..{to}, but its signed end checkpoint is of size {}: its range was altered",
                    end.size
                ));
                Some(end)
            }
            Ok(end) => Some(end),
            Err(e) => {
                problems.push(format!("the end checkpoint is not validly signed: {e}"));
                None
            }
        };
        let last = end.as_ref().map_or(to, |e| e.size);
        let within: Vec<Checkpoint> = self
            .signed
            .iter()
            .filter(|c| (tree.size()..=last).contains(&c.size))
            .map(|c| (*c).clone())
            .collect();
        let mut records = Vec::with_capacity(events.len());
        let mut claimed = Vec::with_capacity(events.len());
        for (data, at) in events.iter().zip(tree.size() + 1..) {
            let seq = claimed_seq(data).unwrap_or_else(|| {
                problems.push(format!(
                    "the segment's event in place of event {at} claims no sequence number (altered)"
                ));
                at
            });
            claimed.push(seq);
            let computed = leaf_hash(data.as_bytes());
            records.push(Record {
                seq,
                leaf_data: data.as_bytes().to_vec(),
                stored_leaf_hash: self.kept.get(&seq).copied().unwrap_or(computed),
            });
        }
        let start = tree.size();
        let report = verify_log_from(tree, records, end.as_slice(), &within);
        let mismatched = root_mismatches(&report.problems);
        // The events are those the end checkpoint signed: another checkpoint of theirs that
        // does not match them was signed over another history.
        let as_signed = end.as_ref().is_some_and(|e| !mismatched.contains(&e.size))
            && report
                .problems
                .iter()
                .all(|p| matches!(p, Problem::RootMismatch { .. }));
        if as_signed {
            problems.extend(mismatched.iter().map(|size| {
                format!(
                    "kept checkpoint at size {size}: the segment's events do not match it (a fork)"
                )
            }));
        } else {
            // Moved, repeated and missing events are named from their order in the segment:
            // the replay sees an event moved up as others deleted before it.
            let order: Vec<(u64, usize)> = claimed.iter().copied().zip(1..).collect();
            let (sequence, missing) = sequence_problems(&order, Some(start), "place");
            problems.extend(
                missing
                    .into_iter()
                    .map(|(seq, count)| describe(&Problem::Missing { seq, count })),
            );
            problems.extend(sequence);
            problems.extend(
                report
                    .problems
                    .iter()
                    .filter(|p| !matches!(p, Problem::Missing { .. } | Problem::OutOfOrder { .. }))
                    .map(describe),
            );
            let sizes = within.iter().chain(&end).map(|c| c.size);
            problems.extend(changed_between(&mismatched, sizes, start));
        }
        (report.events_checked, problems)
    }
}

/// The tree a segment's events extend: empty for the first segment, else rebuilt from its
/// start frontier, which must make the root of its signed start checkpoint (if not, that is a
/// problem, and the frontier, or failing it an empty tree, is taken as it is).
fn segment_start(
    v: &Value,
    key: &NoteVerifier,
    from: u64,
    start_tree: Option<Tree>,
    problems: &mut Vec<String>,
) -> Tree {
    if from <= 1 {
        return Tree::new();
    }
    if v["start"].is_null() {
        // Only the first segment begins without a checkpoint before it.
        problems.push(format!(
            "the segment begins at event {from} and holds no start checkpoint: its first events were removed (a segment that begins the log begins at event 1)"
        ));
        return Tree::new();
    }
    let start = Checkpoint::open(v["start"]["checkpoint"].as_str().unwrap_or_default(), key);
    match (start, start_tree) {
        (Ok(cp), Some(t)) if cp.size == from - 1 && t.root() == cp.root => t,
        (Err(e), t) => {
            problems.push(format!("the start checkpoint is not validly signed: {e}"));
            t.unwrap_or_default()
        }
        (_, t) => {
            problems
                .push("the start frontier does not match the signed start checkpoint".to_owned());
            t.unwrap_or_default()
        }
    }
}

/// The schema version from which the store keeps the leaf hashes of the archived events of the
/// block an archive cuts into (its migration `0013`).
const KEPT_LEAVES_SCHEMA: i64 = 13;

/// Whether event `data` is the start of a server that upgraded the store to keep the leaf
/// hashes of archived events: archives made before it kept none.
fn upgrades_to_kept_leaves(data: &str) -> bool {
    if !data.contains("\"server.started\"") {
        return false;
    }
    let Ok(v) = serde_json::from_str::<Value>(data) else {
        return false;
    };
    v["action"] == "server.started"
        && v["details"]["schema"]
            .as_i64()
            .is_some_and(|s| s >= KEPT_LEAVES_SCHEMA)
        && v["details"]["schema_upgraded_from"]
            .as_i64()
            .is_some_and(|s| s < KEPT_LEAVES_SCHEMA)
}

/// The archived events met in the segments, in sequence order: checked against the stored
/// roots of their blocks, and against the leaf hashes the live log keeps of the block an
/// archive cut into (`kept`; what was found of them in `found`).
struct ArchivedEvents {
    blocks: BlockCheck,
    kept: BTreeMap<u64, Hash>,
    found: BTreeMap<u64, Hash>,
    /// Whether the store has the table of kept leaf hashes at all: one no Warden keeping
    /// them has opened has none to miss.
    keeps_leaves: bool,
    /// The event of the start that upgraded the store to keep them, if the log holds one.
    upgraded: Option<u64>,
}

impl ArchivedEvents {
    fn add(&mut self, seq: u64, leaf_data: &[u8]) {
        let hash = leaf_hash(leaf_data);
        if self.kept.contains_key(&seq) {
            self.found.insert(seq, hash);
        }
        if std::str::from_utf8(leaf_data).is_ok_and(upgrades_to_kept_leaves) {
            self.upgraded = Some(self.upgraded.map_or(seq, |u| u.min(seq)));
        }
        self.blocks.add_hash(seq, hash);
    }

    /// The archived events of the block the archive (the live log starting after `base`)
    /// cut into whose leaf hash the log no longer keeps, as runs (first, last). Where an
    /// archive was made before the store kept them (before the start that upgraded it), those
    /// it took first have none: a run of them at the block's start is not missing.
    fn missing(&self, base: u64) -> Vec<(u64, u64)> {
        let block_len = 1u64 << warden_audit::merkle::BLOCK_HEIGHT;
        let cut_start = base / block_len * block_len;
        if !self.keeps_leaves || cut_start == base {
            return Vec::new();
        }
        let first_kept = self
            .kept
            .range(cut_start + 1..=base)
            .next()
            .map_or(base + 1, |(seq, _)| *seq);
        let from = match self.upgraded {
            Some(upgraded) if first_kept <= upgraded => first_kept,
            _ => cut_start + 1,
        };
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for seq in (from..=base).filter(|seq| !self.kept.contains_key(seq)) {
            match runs.last_mut() {
                Some((_, last)) if *last + 1 == seq => *last = seq,
                _ => runs.push((seq, seq)),
            }
        }
        runs
    }

    /// After the segments: each kept leaf hash compared with its event where a segment still
    /// holds it (the problems), then the block the archive cut into completed from the kept
    /// hashes no segment gave and the live events up to its end, for its root to be checked.
    fn finish(&mut self, base: u64, reader: &AuditReader) -> anyhow::Result<Vec<String>> {
        let problems = self
            .kept
            .iter()
            .filter(|(seq, hash)| self.found.get(seq).is_some_and(|found| found != *hash))
            .map(|(seq, _)| format!(
                "archived event {seq}: the leaf hash the log keeps of it differs from the event in its segment (altered; proofs of its block's live events fail)"
            ))
            .chain(self.missing(base).into_iter().map(|(first, last)| {
                let block = block_name(base >> warden_audit::merkle::BLOCK_HEIGHT);
                let (events, them) = if first == last {
                    (format!("event {first}"), "it")
                } else {
                    (format!("events {first}..={last}"), "them")
                };
                format!(
                    "archived {events}: the log keeps no leaf hash of {them}, though an archive keeps those of every archived event of the block it cuts into, here the {block} (deleted from the database; proofs and exports of the block's live events fail)"
                )
            }))
            .collect();
        let last_seq = self.blocks.last_seq();
        for (&seq, &hash) in self.kept.range(last_seq + 1..) {
            self.blocks.add_hash(seq, hash);
        }
        let block_len = 1u64 << warden_audit::merkle::BLOCK_HEIGHT;
        let cut_block_end = base.div_ceil(block_len) * block_len;
        let live = usize::try_from(cut_block_end - base).unwrap_or(0);
        if live > 0 {
            for (seq, data, _) in reader.leaves(base, live)? {
                self.blocks.add(seq, data.as_bytes());
            }
        }
        Ok(problems)
    }
}

/// "block of events 1025..=2048" for block 1.
fn block_name(block: u64) -> String {
    let height = warden_audit::merkle::BLOCK_HEIGHT;
    format!(
        "block of events {}..={}",
        (block << height) + 1,
        (block + 1) << height
    )
}

/// Checks one proof file from `warden audit prove` or `prove-consistency`; with `kept`, a
/// checkpoint kept earlier, also that the proof starts from it (a consistency proof) or is
/// against it (an inclusion proof at its size).
pub fn proof(file: &Path, key: &str, kept: Option<&Path>, out: Output) -> anyhow::Result<()> {
    let key = verifier(key)?;
    let kept = kept
        .map(|path| -> anyhow::Result<Checkpoint> {
            open_kept(path, &key)?.map_err(|e| {
                Failure::new(
                    exit::FAILURE,
                    format!("{} is not validly signed: {e}", path.display()),
                )
                .into()
            })
        })
        .transpose()?;
    // The proof's own checkpoint must be the kept one where they are of one size: the server
    // could otherwise prove from a rewritten history it signed since.
    let same_as_kept = |cp: &Checkpoint| -> Option<String> {
        match &kept {
            Some(k) if k.size == cp.size && k.root != cp.root => Some(format!(
                "the proof's checkpoint at size {} has another root than the one you kept: the log was rewritten since (a fork)",
                cp.size
            )),
            _ => None,
        }
    };
    let v: Value = serde_json::from_str(&read_input(file)?).map_err(|e| {
        Failure::new(
            exit::USAGE,
            format!("{} is not a proof file: {e}", file.display()),
        )
    })?;
    // A checkpoint that is not validly signed is the proof's problem, reported as such.
    let open = |field: &str| -> anyhow::Result<Result<Checkpoint, String>> {
        let note = v[field]
            .as_str()
            .with_context(|| format!("proof has no {field}"))?;
        Ok(Checkpoint::open(note, &key).map_err(|e| format!("{field} is not validly signed: {e}")))
    };
    let kind = v["kind"].as_str();
    if !matches!(kind, Some("inclusion" | "consistency")) {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "{} is not a proof from `warden audit prove` or `prove-consistency`: its kind is not inclusion or consistency",
                file.display()
            ),
        )
        .into());
    }
    let path = unhex(&v["proof"])?;
    let mut problems = Vec::new();
    let summary = match kind {
        Some("inclusion") => {
            let seq = v["seq"].as_u64().context("proof has no seq")?;
            let data = v["leaf_data"].as_str().context("proof has no leaf_data")?;
            let cp = match open("checkpoint")? {
                Ok(cp) => cp,
                Err(problem) => {
                    return proof_report(
                        out,
                        json!({ "kind": "inclusion", "seq": seq }),
                        &[problem],
                    );
                }
            };
            if let Some(k) = &kept
                && k.size != cp.size
            {
                return Err(Failure::new(
                    exit::USAGE,
                    format!(
                        "the proof is against the checkpoint of size {}, your checkpoint is of size {}: ask for one against yours (`warden audit prove SEQ --size {}`), or check that the newer one extends yours (`warden audit prove-consistency --from {}`)",
                        cp.size, k.size, k.size, k.size
                    ),
                )
                .into());
            }
            problems.extend(same_as_kept(&cp));
            if seq == 0 {
                problems.push(
                    "the proof is of seq 0: the log's sequence numbers start at 1".to_owned(),
                );
            } else if claimed_seq(data) != Some(seq) {
                problems.push(format!(
                    "the event claims another sequence number than {seq}"
                ));
            } else if let Err(e) = verify_inclusion(
                seq - 1,
                cp.size,
                &leaf_hash(data.as_bytes()),
                &path,
                &cp.root,
            ) {
                problems.push(format!("inclusion proof does not verify: {e}"));
            }
            json!({ "kind": "inclusion", "seq": seq, "checkpoint_size": cp.size })
        }
        Some("consistency") => {
            let new = match open("new_checkpoint")? {
                Ok(cp) => cp,
                Err(problem) => {
                    return proof_report(out, json!({ "kind": "consistency" }), &[problem]);
                }
            };
            let old_size = v["old_size"].as_u64().ok_or_else(|| {
                Failure::new(
                    exit::USAGE,
                    format!(
                        "{} is not a consistency proof of this version: it has no old_size (ask for it again with `warden audit prove-consistency`)",
                        file.display()
                    ),
                )
            })?;
            if let Some(k) = &kept
                && k.size != old_size
            {
                return Err(Failure::new(
                    exit::USAGE,
                    format!(
                        "the proof starts at size {old_size}, your checkpoint is of size {}: ask for one from it (`warden audit prove-consistency --from {}`)",
                        k.size, k.size
                    ),
                )
                .into());
            }
            // Where the server keeps no checkpoint of that size, the kept one is all there is
            // to check the proof's start against.
            let old = match (&v["old_checkpoint"], &kept) {
                (Value::Null, Some(k)) => k.clone(),
                (Value::Null, None) => {
                    return Err(Failure::new(
                        exit::USAGE,
                        format!(
                            "the server keeps no checkpoint at size {old_size}, where this proof starts: check it against the checkpoint of that size you kept (`--checkpoint FILE`)"
                        ),
                    )
                    .into());
                }
                _ => match open("old_checkpoint")? {
                    Ok(cp) => cp,
                    Err(problem) => {
                        return proof_report(
                            out,
                            json!({ "kind": "consistency", "from": old_size, "to": new.size }),
                            &[problem],
                        );
                    }
                },
            };
            problems.extend(same_as_kept(&old));
            if old.size != old_size {
                problems.push(format!(
                    "the proof claims to start at size {old_size} but its old checkpoint is of size {}",
                    old.size
                ));
            } else if let Err(e) =
                verify_consistency(old.size, new.size, &old.root, &new.root, &path)
            {
                problems.push(format!("consistency proof does not verify: {e}"));
            }
            json!({ "kind": "consistency", "from": old_size, "to": new.size })
        }
        _ => {
            return Err(Failure::new(
                exit::USAGE,
                "unknown proof kind; expected inclusion or consistency",
            )
            .into());
        }
    };
    proof_report(out, summary, &problems)
}

/// Reports a proof's check like any other, but with the reason it fails on stderr: a proof
/// fails for one reason or two, which say more than their count.
fn proof_report(out: Output, summary: Value, problems: &[String]) -> anyhow::Result<()> {
    report(out, "the proof", summary, problems).map_err(|e| match problems {
        [] => e,
        _ => Failure::new(exit::FAILURE, problems.join("; ")).into(),
    })
}

/// The files of an export bundle.
const BUNDLE_FILES: [&str; 3] = ["verifier.key", "checkpoint.note", "events.jsonl"];

/// Refuses a bundle directory that is a file, or holds a bundle already: an earlier export
/// may be someone's evidence, and is never replaced.
pub fn bundle_dir_free(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "{} is not a directory: give a new or empty directory for the bundle's files",
                dir.display()
            ),
        )
        .into());
    }
    let held: Vec<&str> = BUNDLE_FILES
        .into_iter()
        .filter(|f| dir.join(f).symlink_metadata().is_ok())
        .collect();
    if !held.is_empty() {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "{} holds an export already ({}): give a new or empty directory, so that no earlier bundle is replaced",
                dir.display(),
                held.join(", ")
            ),
        )
        .into());
    }
    // Files of others beside a bundle would be taken for part of it by whoever receives it.
    let other = std::fs::read_dir(dir)
        .ok()
        .and_then(|mut entries| entries.next())
        .and_then(Result::ok);
    if let Some(other) = other {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "{} is not empty (it holds {:?}): give a new or empty directory for the bundle's files",
                dir.display(),
                other.file_name()
            ),
        )
        .into());
    }
    Ok(())
}

/// Writes an export bundle as three files: the verifier key, the checkpoint, the events.
pub fn write_bundle(dir: &Path, v: &Value, out: Output) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Made new, never opened over an existing file (one made since the check above).
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
            .with_context(|| format!("writing {}", path.display()))
    };
    write(
        "verifier.key",
        format!("{}\n", v["verifier_key"].as_str().unwrap_or_default()),
    )?;
    write(
        "checkpoint.note",
        v["checkpoint"].as_str().unwrap_or_default().to_owned(),
    )?;
    let mut lines = String::new();
    let events = v["events"].as_array().cloned().unwrap_or_default();
    for e in &events {
        lines.push_str(&serde_json::to_string(e)?);
        lines.push('\n');
    }
    write("events.jsonl", lines)?;
    if out.json {
        let mut written = json!({ "dir": dir.display().to_string(), "events": events.len() });
        for said in ["archived_before", "held_back"] {
            if v[said].is_object() {
                written[said] = v[said].clone();
            }
        }
        out.json(&written)
    } else {
        println!(
            "Wrote {} events to {}; check them with `warden audit verify --bundle {} --verifier-key KEY` (KEY: the server's, from `warden audit verifier-key`, kept apart from the bundle).",
            events.len(),
            dir.display(),
            dir.display()
        );
        if let Some(note) = archived_note(v, "exported") {
            eprintln!("{note}");
        }
        if let Some(message) = v["held_back"]["message"].as_str() {
            eprintln!("note: {message}");
        }
        Ok(())
    }
}

/// The note that a search's or an export's range reaches back to archived events, which were
/// not `done` (searched, exported), when the server says so.
pub fn archived_note(v: &Value, done: &str) -> Option<String> {
    let before = v.get("archived_before")?;
    Some(format!(
        "note: events before {} (older than {}) were archived and are not {done} here; they are in the server's archive segments (check one with `warden audit verify --segment FILE`)",
        before["seq"],
        before["time"].as_str().unwrap_or("?")
    ))
}

/// Verifies a bundle: the checkpoint's signature and every event's inclusion proof.
pub fn bundle(
    dir: &Path,
    key: Option<&str>,
    external: &[std::path::PathBuf],
    out: Output,
) -> anyhow::Result<()> {
    // The key in the bundle is whatever its maker put there: anyone can sign a forged log with
    // a key of their own. Trust comes only from a key the verifier got elsewhere.
    let Some(key) = key else {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "pass --verifier-key: the server's key as you got it from `warden audit verifier-key` (or your own copy), not the bundle's {}/verifier.key, which proves nothing about who wrote the log",
                dir.display()
            ),
        )
        .into());
    };
    let key = verifier(key)?;
    let note = std::fs::read_to_string(dir.join("checkpoint.note")).map_err(|e| {
        Failure::new(
            exit::USAGE,
            format!(
                "{} is not a bundle from `warden audit export` (its checkpoint.note: {e})",
                dir.display()
            ),
        )
    })?;
    let cp = Checkpoint::open(&note, &key).map_err(|e| {
        Failure::new(
            exit::FAILURE,
            format!("the bundle's checkpoint is not validly signed: {e}"),
        )
    })?;
    // Its events are proven against its own checkpoint, so a kept one says something only
    // where it is of that size: then the roots must agree, or the log was forked.
    let mut problems = Vec::new();
    for path in external {
        let kept = open_kept(path, &key)?.map_err(|e| {
            Failure::new(
                exit::FAILURE,
                format!("{} is not validly signed: {e}", path.display()),
            )
        })?;
        if kept.size != cp.size {
            return Err(Failure::new(
                exit::USAGE,
                format!(
                    "the bundle's checkpoint is of size {}, the kept checkpoint {} of size {}: check that the newer extends the older with `warden audit prove-consistency --from SIZE`",
                    cp.size,
                    path.display(),
                    kept.size
                ),
            )
            .into());
        }
        if kept.root != cp.root {
            problems.push(format!(
                "the bundle's checkpoint at size {} has another root than the kept {}: the log was rewritten since (a fork)",
                cp.size,
                path.display()
            ));
        }
    }
    let text = std::fs::read_to_string(dir.join("events.jsonl")).map_err(|e| {
        Failure::new(
            exit::USAGE,
            format!(
                "{} is not a bundle from `warden audit export` (its events.jsonl: {e})",
                dir.display()
            ),
        )
    })?;
    let mut checked = 0u64;
    // Each event's sequence number and line, in the bundle's order.
    let mut order: Vec<(u64, usize)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let e: Value = match serde_json::from_str(line) {
            Ok(e) => e,
            Err(_) => {
                problems.push(format!("events.jsonl line {} is not JSON", n + 1));
                continue;
            }
        };
        let seq = e["seq"].as_u64().unwrap_or(0);
        let data = e["leaf_data"].as_str().unwrap_or_default();
        let ok = seq > 0
            && claimed_seq(data) == Some(seq)
            && unhex(&e["proof"]).is_ok_and(|p| {
                verify_inclusion(seq - 1, cp.size, &leaf_hash(data.as_bytes()), &p, &cp.root)
                    .is_ok()
            });
        if !ok {
            problems.push(format!(
                "event {seq} (line {}) is not in the signed log: modified or forged",
                n + 1
            ));
        }
        order.push((seq, n + 1));
        checked += 1;
    }
    let (mut sequence, missing) = sequence_problems(&order, None, "line");
    sequence.extend(missing.into_iter().map(|(from, count)| {
        if count == 1 {
            format!("event {from} is missing from the bundle")
        } else {
            format!(
                "events {from}..{} are missing from the bundle",
                from + count - 1
            )
        }
    }));
    problems.extend(sequence);
    // The range of events the bundle holds, signed with its checkpoint at export: none can be
    // taken out, at either end or between, without it showing.
    let held = order.iter().map(|(seq, _)| *seq);
    let found = (held.clone().min(), held.max(), order.len());
    match cp.extensions.iter().find_map(|e| e.strip_prefix("export ")) {
        Some("none") if order.is_empty() => {}
        Some(range) => {
            let signed: Vec<u64> = range.split(' ').filter_map(|n| n.parse().ok()).collect();
            let holds_it = matches!(signed[..], [first, last, count]
                if found == (Some(first), Some(last), usize::try_from(count).unwrap_or(usize::MAX)));
            if !holds_it {
                problems.push(format!(
                    "the bundle was exported holding events {range} (first, last, how many), but holds {} from {} to {}: events were taken out or added",
                    found.2,
                    found.0.map_or("-".into(), |s| s.to_string()),
                    found.1.map_or("-".into(), |s| s.to_string()),
                ));
            }
        }
        None => problems.push(
            "the bundle's checkpoint does not say which events were exported (it is not the one `warden audit export` signs): events may have been taken out".into(),
        ),
    }
    let mut summary =
        json!({ "events_checked": checked, "checkpoint_size": cp.size, "verifier": key.name() });
    // What the signed range was chosen by, and what it left out (bundles exported before these
    // lines were signed have neither).
    let signed = |name: &str| {
        cp.extensions
            .iter()
            .find_map(|e| e.strip_prefix(name)?.strip_prefix(' '))
    };
    // Events of the period archived before the live log's start, which the bundle leaves out:
    // signed, so a bundle is never taken for the whole period when it holds only its live part.
    let archived = match signed("export-archived-before") {
        None => None,
        Some(n) => match n.parse::<u64>() {
            Ok(seq) if seq > 0 => Some(seq),
            _ => {
                problems.push(format!(
                    "the bundle's checkpoint says events before {n:?} were archived, which is no event's sequence number: it is not the line `warden audit export` signs, so what the bundle leaves out is unknown"
                ));
                None
            }
        },
    };
    if let (Some(seq), Some(first)) = (archived, found.0)
        && first < seq
    {
        problems.push(format!(
            "the bundle's checkpoint says the events before {seq} were archived and left out, but the bundle holds event {first}: it is not the bundle that was signed"
        ));
    }
    if let Some((from, to)) = signed("export-period").and_then(|p| p.split_once(' ')) {
        let end = |t: &str, open: &str| {
            if t == "-" {
                open.to_owned()
            } else {
                t.to_owned()
            }
        };
        let (from, to) = (end(from, "the log's start"), end(to, "the checkpoint"));
        summary["period"] = json!(match archived {
            Some(seq) => format!(
                "events from the first at or after {from} to the last before {to}, except those before event {seq}, which were archived: from event {seq} on, every event of the period"
            ),
            None => format!(
                "events from the first at or after {from} to the last before {to}, and every event between them"
            ),
        });
    }
    if let Some(seq) = archived {
        summary["archived"] = json!(format!(
            "the events of the period before event {seq} are in the server's archive segments and NOT in this bundle (check a segment with `warden audit verify --segment FILE --verifier-key KEY`)"
        ));
        summary["archived_before_seq"] = json!(seq);
    }
    if let Some(n) = signed("export-held-back").and_then(|n| n.parse::<u64>().ok()) {
        summary["held_back"] = json!(n);
    }
    report(out, "the bundle", summary, &problems)
}

/// What is wrong with the order of events (sequence number, `place`: where each was found, in
/// order): each moved event named as moved, each repeated one as repeated; and the runs of
/// numbers missing (first, how many) between `after` (the lowest number found when `None`) and
/// the highest.
fn sequence_problems(
    order: &[(u64, usize)],
    after: Option<u64>,
    place: &str,
) -> (Vec<String>, Vec<(u64, u64)>) {
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeMap::new();
    for (i, &(seq, at)) in order.iter().enumerate() {
        if let Some(first) = seen.insert(seq, at) {
            problems.push(format!(
                "event {seq} appears twice ({place}s {first} and {at})"
            ));
        } else if let Some(&(before, before_at)) = i.checked_sub(1).map(|p| &order[p])
            && seq < before
        {
            problems.push(format!(
                "event {seq} ({place} {at}) comes after event {before} ({place} {before_at}): moved"
            ));
        }
    }
    let seqs: Vec<u64> = after.into_iter().chain(seen.into_keys()).collect();
    let missing = seqs
        .windows(2)
        .filter(|pair| pair[1] > pair[0] + 1)
        .map(|pair| (pair[0] + 1, pair[1] - pair[0] - 1))
        .collect();
    (problems, missing)
}

/// Verifies an archive segment on its own: both checkpoints' signatures, the start frontier
/// against the first, and every event against the second (and any kept checkpoint among them).
pub fn segment(
    file: &Path,
    key: Option<&str>,
    external: &[std::path::PathBuf],
    out: Output,
) -> anyhow::Result<()> {
    let key = verifier(key.ok_or_else(|| {
        Failure::new(
            exit::USAGE,
            "pass --verifier-key: the server's key as you got it from `warden audit verifier-key` (or your own copy); a segment carries none",
        )
    })?)?;
    let v: Value = serde_json::from_str(&read_input(file)?).map_err(|e| {
        Failure::new(
            exit::USAGE,
            format!("{} is not an archive segment: {e}", file.display()),
        )
    })?;
    let (from, to, _, _) = segment_parts(&v);
    let mut kept = Vec::new();
    for path in external {
        let cp = open_kept(path, &key)?.map_err(|e| {
            Failure::new(
                exit::FAILURE,
                format!("{} is not validly signed: {e}", path.display()),
            )
        })?;
        if cp.size + 1 < from || cp.size > to {
            return Err(Failure::new(
                exit::USAGE,
                format!(
                    "the kept checkpoint {} is of size {}, outside this segment's events {from}..{to}: check it against the segment holding event {} or the live log",
                    path.display(),
                    cp.size,
                    cp.size
                ),
            )
            .into());
        }
        kept.push(cp);
    }
    let signed: Vec<&Checkpoint> = kept.iter().collect();
    let vouchers = Vouchers {
        key: &key,
        signed: &signed,
        kept: &BTreeMap::new(),
    };
    let (events_checked, problems) = vouchers.check(&v);
    report(
        out,
        "the segment",
        json!({ "from": from, "to": to, "events_checked": events_checked }),
        &problems,
    )
}

/// The sizes of the checkpoints whose roots the events no longer make.
fn root_mismatches(problems: &[Problem]) -> Vec<u64> {
    problems
        .iter()
        .filter_map(|p| match p {
            Problem::RootMismatch { size } => Some(*size),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{
        ArchivedEvents, SegmentRecords, changed_between, key_shaped, segment_range,
        sequence_problems,
    };
    use std::collections::BTreeMap;
    use warden_audit::BlockCheck;

    #[test]
    fn what_changed_is_narrowed_down_to_a_range_or_not_at_all() {
        assert_eq!(
            changed_between(&[700, 900], [650, 685, 800, 700].into_iter(), 685).as_deref(),
            Some(
                "what changed lies in events 686..=700: the log still matches the checkpoint at 685"
            )
        );
        // A checkpoint of fewer events than the check started from matched nothing.
        assert_eq!(changed_between(&[5], std::iter::empty(), 685), None);
        assert_eq!(changed_between(&[], [5].into_iter(), 0), None);
    }

    #[test]
    fn kept_hashes_missing_from_the_block_an_archive_cut_into_are_named_in_runs() {
        let archived = |kept: &[u64], upgraded: Option<u64>, keeps_leaves: bool| ArchivedEvents {
            blocks: BlockCheck::new(Vec::new(), 0),
            kept: kept.iter().map(|&s| (s, [0; 32])).collect(),
            found: BTreeMap::new(),
            keeps_leaves,
            upgraded,
        };
        let all: Vec<u64> = (1..=685).collect();
        assert_eq!(archived(&all, None, true).missing(685), []);
        let gaps: Vec<u64> = all
            .iter()
            .copied()
            .filter(|s| ![1, 300, 301, 685].contains(s))
            .collect();
        assert_eq!(
            archived(&gaps, None, true).missing(685),
            [(1, 1), (300, 301), (685, 685)]
        );
        assert_eq!(archived(&[], None, true).missing(685), [(1, 685)]);
        // Into the second block; none to keep when the archive ended at a block's edge.
        assert_eq!(archived(&[1025], None, true).missing(1027), [(1026, 1027)]);
        assert_eq!(archived(&[], None, true).missing(1024), []);
        // Archived before the store kept them (the upgrade comes after): those first archived
        // have none, but those since must all be there.
        let since: Vec<u64> = (401..=685).filter(|&s| s != 500).collect();
        assert_eq!(archived(&since, Some(690), true).missing(685), [(500, 500)]);
        assert_eq!(archived(&[], Some(690), true).missing(685), []);
        // An upgrade before the first kept one excuses nothing.
        assert_eq!(
            archived(&since, Some(300), true).missing(685),
            [(1, 400), (500, 500)]
        );
        // A store no Warden keeping them has opened.
        assert_eq!(archived(&[], None, false).missing(685), []);
    }

    #[test]
    fn only_an_argument_shaped_like_a_key_is_read_as_one() {
        assert!(key_shaped(
            "warden.local/audit+0123abcd+AcBz9/+Rk5mZ2F0ZXN0a2V5MDEyMzQ1Njc4OWFiY2RlZg=="
        ));
        for path in [
            "nonexist.pub",
            "keys/audit.key",
            "warden.local/audit",
            "a+0123abc+AAAA",
            "a+0123abcd+AAAA.pub",
            "+0123abcd+AAAA",
        ] {
            assert!(!key_shaped(path), "{path}");
        }
    }

    fn lines(seqs: &[u64]) -> Vec<(u64, usize)> {
        seqs.iter().enumerate().map(|(i, s)| (*s, i + 1)).collect()
    }

    #[test]
    fn moved_repeated_and_missing_events_are_named_for_what_they_are() {
        let found = |seqs: &[u64], after| sequence_problems(&lines(seqs), after, "line");
        assert_eq!(found(&[4, 5, 6], None), (Vec::new(), Vec::new()));
        assert_eq!(
            found(&[9, 11, 10, 12], None),
            (
                vec!["event 10 (line 3) comes after event 11 (line 2): moved".to_owned()],
                Vec::new()
            )
        );
        assert_eq!(
            found(&[1, 2, 2, 3], None),
            (
                vec!["event 2 appears twice (lines 2 and 3)".to_owned()],
                Vec::new()
            )
        );
        assert_eq!(
            found(&[1, 2, 5, 7], None),
            (Vec::new(), vec![(3, 2), (6, 1)])
        );
        // From where the events are due: those missing before the first found too.
        assert_eq!(found(&[3, 4], Some(0)), (Vec::new(), vec![(1, 2)]));
    }

    #[test]
    fn every_file_in_the_archive_the_log_does_not_account_for_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let name = |from: u64, to: u64| format!("segment-{from:012}-{to:012}.json");
        let mut records = SegmentRecords::default();
        for (from, to) in [(1, 100), (201, 300)] {
            records.sealed.insert(name(from, to), String::new());
        }
        records.sealed.insert(name(101, 200), String::new());
        records.deleted.insert(name(101, 200));
        let files = [
            name(1, 100),
            name(201, 300),
            // Left by archives cut short: beside live events, aside, beside a sealed one.
            name(301, 350),
            format!("{}.new", name(301, 350)),
            name(1, 80),
            // Past the log's end: sealed from another log.
            name(351, 450),
            // Deleted on record, yet there.
            name(101, 200),
            "notes.txt".to_owned(),
        ];
        for f in &files {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let mut listed = files.to_vec();
        listed.push(name(351, 360)); // gone since it was listed
        listed.sort();
        let (problems, warnings) = records.unaccounted(dir.path(), &listed, 301..=400);
        let said = |f: &str, what: &str| {
            problems
                .iter()
                .any(|p| p.starts_with(&format!("archive/{f}: {what}")))
        };
        assert!(
            said(
                &name(301, 350),
                "not a segment the log records as sealed, and its events 301..350 are still in the live log"
            ),
            "{problems:?}"
        );
        assert!(
            said(
                &format!("{}.new", name(301, 350)),
                "a segment of events 301..350 written aside"
            ),
            "{problems:?}"
        );
        assert!(
            said(
                &name(1, 80),
                "not a segment the log records as sealed, and its events 1..80 overlap those of the sealed segment segment-000000000001-000000000100.json"
            ),
            "{problems:?}"
        );
        assert!(
            said(
                &name(101, 200),
                "the log records its deletion, yet it is still there"
            ),
            "{problems:?}"
        );
        assert!(
            said(
                &name(351, 450),
                "not a segment the log records as sealed, and its events 351..450 run past the log's last event (400)"
            ),
            "{problems:?}"
        );
        assert!(said("notes.txt", "not an archive segment"), "{problems:?}");
        assert_eq!(problems.len(), 6, "{problems:?}");
        assert!(warnings.is_empty(), "{warnings:?}");

        // A segment whose seal record a later segment held, deleted since, is only warned of.
        std::fs::remove_file(dir.path().join(name(1, 100))).unwrap();
        records.sealed.remove(&name(1, 100));
        let listed = [name(1, 100)];
        std::fs::write(dir.path().join(&listed[0]), "").unwrap();
        let (problems, warnings) = records.unaccounted(dir.path(), &listed, 301..=400);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("segment-000000000101-000000000200.json, deleted since"),
            "{warnings:?}"
        );
        assert_eq!(segment_range("segment-1-2.json"), None);
    }
}
