//! Signed checkpoints of the audit log: the tree size, its RFC 6962 root and the time, as a
//! C2SP signed note by Warden's Ed25519 audit key.
//!
//! A checkpoint commits to every event before it. Anyone holding the verifier key can check
//! it offline, and a copy kept elsewhere later exposes any rewrite or truncation of the log.
//!
//! The newest one is also written to `audit_checkpoint.note` beside the database, and the
//! server signs nothing that does not extend it: a log whose stored checkpoints were deleted or
//! rolled back, or whose newest one no longer matches what it was extended from, gets no more
//! signatures (each refusal is logged as an error), so its own key never vouches for a
//! rewritten history. `warden audit verify --data-dir` checks the log against that file too.

use std::path::Path;

use anyhow::Context;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use warden_audit::merkle::BLOCK_HEIGHT;
use warden_audit::{Checkpoint, NoteSigner, Tree};
use warden_domain::audit::Code;
use warden_store::Store;

use crate::state::{Shared, now};

/// Leaves read from the store per batch while extending the tree.
const BATCH: usize = 10_000;

/// Blocks whose roots are filled in per checkpoint (see [`backfill`]): some thirty thousand
/// events read at each tick, so a long log from before roots were stored gets them within
/// minutes without holding up its checkpoints.
const BACKFILL_BLOCKS: usize = 32;

/// Makes the audit signing key into a note signer named after the log's origin.
pub fn signer(origin: &str, key: &ed25519_dalek::SigningKey) -> anyhow::Result<NoteSigner> {
    NoteSigner::from_seed(origin, &key.to_bytes())
        .map_err(|e| anyhow::anyhow!("audit_origin {origin:?} cannot name a signing key: {e}"))
}

/// The file beside the database holding the newest signed checkpoint.
pub const ANCHOR_FILE: &str = "audit_checkpoint.note";

/// Writes a checkpoint if the log grew since the last one, with the roots of the blocks of
/// events it completes (see [`BLOCK_HEIGHT`]), and copies it to `anchor` (see the module
/// documentation). Returns its size.
pub async fn checkpoint(
    store: &dyn Store,
    signer: &NoteSigner,
    origin: &str,
    anchor: &Path,
    checked: &AtomicBool,
) -> anyhow::Result<Option<u64>> {
    let last = store.latest_checkpoint().await?;
    let mut tree = match &last {
        Some(c) => {
            // Only a checkpoint this server signed is extended: a row written into the database
            // (a forged root and frontier beside any note) would have the next signature vouch
            // for a history it never saw.
            let signed = Checkpoint::open(&c.note, &signer.verifier()).map_err(|e| {
                anyhow::anyhow!(
                    "the stored checkpoint at {} is not one this server signed ({e}): forged or altered, and nothing more is signed; run `warden audit verify`",
                    c.size
                )
            })?;
            anyhow::ensure!(
                signed.size == c.size && signed.root == c.root,
                "the stored checkpoint at {} differs from its signed note (altered), and nothing more is signed; run `warden audit verify`",
                c.size
            );
            let tree = Tree::from_frontier(c.size, c.frontier.clone())
                .map_err(|e| anyhow::anyhow!("stored checkpoint at {} is damaged: {e}", c.size))?;
            anyhow::ensure!(
                tree.root() == c.root,
                "the stored checkpoint at {} does not match the tree it was made of (altered); run `warden audit verify`",
                c.size
            );
            if !checked.load(Ordering::SeqCst) {
                check_covered(store, c).await?;
                checked.store(true, Ordering::SeqCst);
            }
            tree
        }
        None => Tree::new(),
    };
    let events = store.last_seq().await?;
    let covered_held = match &last {
        Some(c) => store.holds_leaf(c.size).await?,
        None => true,
    };
    let kept = check_anchor(
        anchor,
        &signer.verifier(),
        last.as_ref(),
        events,
        covered_held,
    )?;
    let mut block = current_block(&tree)?;
    let mut blocks = Vec::new();
    extend_from_store(store, &mut tree, None, |size, hash| {
        block.push(hash);
        if block.size() == 1 << BLOCK_HEIGHT {
            blocks.push(((size >> BLOCK_HEIGHT) - 1, block.root()));
            block = Tree::new();
        }
    })
    .await?;
    if last.as_ref().map_or(0, |c| c.size) == tree.size() {
        // Nothing new to sign; a copy that failed to be written last time is written now, so
        // the file is never left behind the log for long.
        if let Some(c) = &last
            && kept != Some(c.size)
        {
            write_anchor(anchor, &c.note)?;
        }
        return Ok(None);
    }
    let time = now();
    let cp = Checkpoint {
        origin: origin.to_owned(),
        size: tree.size(),
        root: tree.root(),
        extensions: vec![format!("time {}", time.unix_timestamp())],
    };
    let note = cp.sign(signer)?;
    store
        .insert_checkpoint(
            warden_store::Checkpoint {
                size: cp.size,
                root: cp.root,
                time,
                frontier: tree.frontier().to_vec(),
                note: note.clone(),
            },
            blocks,
        )
        .await?;
    write_anchor(anchor, &note)?;
    Ok(Some(cp.size))
}

/// Hashes again, from their stored bytes, the events the newest checkpoint `last` (its note
/// already checked) covers and fails unless they make its root. Done once per run, before the
/// first signature: the checkpoints that follow extend `last`'s frontier and hash only newer
/// events, so an event changed in the stopped database, its stored hash with it, would
/// otherwise be signed over, and every proof served from then on would fail. A log whose
/// older events were archived is checked from the checkpoint it was cut at (the archive's
/// segments are checked on their own, by `warden audit verify --segment`).
async fn check_covered(store: &dyn Store, last: &warden_store::Checkpoint) -> anyhow::Result<()> {
    // A block's root is stored with the checkpoint that completes it: one past the newest
    // checkpoint shows the log once reached further, and was cut back with its checkpoints.
    let block = last.size >> BLOCK_HEIGHT;
    if store.block_roots(block + 1).await?.len() > usize::try_from(block)? {
        let reached = (block + 1) << BLOCK_HEIGHT;
        anyhow::bail!(
            "a block root is stored for events up to {reached}, but the newest checkpoint covers {}: events were removed from the log's end together with their checkpoints, and nothing more is signed. Check it with `warden audit verify --data-dir DIR`, and start only on a data dir restored from a backup",
            last.size
        );
    }
    let first = store.first_seq().await?;
    let mut tree = if first <= 1 {
        Tree::new()
    } else {
        let cut = first - 1;
        let Some(c) = store.checkpoint(cut).await? else {
            anyhow::bail!(
                "the live log begins at event {first}, but no checkpoint was made at {cut}, where an archive would have cut it: events before it were deleted; nothing more is signed. Run `warden audit verify --data-dir DIR`"
            );
        };
        Tree::from_frontier(c.size, c.frontier)
            .map_err(|e| anyhow::anyhow!("stored checkpoint at {cut} is damaged: {e}"))?
    };
    extend_from_store(store, &mut tree, Some(last.size), |_, _| {}).await?;
    anyhow::ensure!(
        tree.size() == last.size && tree.root() == last.root,
        "the stored events up to {} no longer make the root this server signed at that size: an event was changed or deleted while the server was stopped, and nothing more is signed. `warden audit verify --data-dir DIR` says which; restore the data dir from a backup",
        last.size
    );
    Ok(())
}

/// Pushes onto `tree` the stored events that follow it, up to `upto` (all of them when `None`),
/// each hashed from its stored bytes, not its stored hash, so that a damaged row is never
/// signed over; `each` gets the tree's new size and the hash. Fails at a gap.
async fn extend_from_store(
    store: &dyn Store,
    tree: &mut Tree,
    upto: Option<u64>,
    mut each: impl FnMut(u64, [u8; 32]),
) -> anyhow::Result<()> {
    loop {
        let want = upto.map_or(BATCH, |upto| {
            usize::try_from(upto.saturating_sub(tree.size())).map_or(BATCH, |n| n.min(BATCH))
        });
        if want == 0 {
            return Ok(());
        }
        let leaves = store.audit_leaves(tree.size(), want).await?;
        let done = leaves.len() < want;
        for leaf in leaves {
            anyhow::ensure!(
                leaf.seq == tree.size() + 1,
                "audit log has a gap before seq {} (expected {}); nothing more is signed. Run `warden audit verify --data-dir DIR`",
                leaf.seq,
                tree.size() + 1
            );
            let hash = warden_audit::merkle::leaf_hash(leaf.data.as_bytes());
            tree.push(hash);
            each(tree.size(), hash);
        }
        if done {
            return Ok(());
        }
    }
}

/// Fails unless the newest stored checkpoint, `last`, is at least the one in `anchor` (a new
/// log has the note of the empty log, [`anchor_empty_log`]) and the log, whose events end at
/// `events`, still holds the last event it covers (`covered_held`): a smaller one, or another
/// root at its size, means the log or its checkpoints were rolled back or rewritten; none at all
/// in a log of events, that they were deleted (with the file too, or with only the empty log's
/// note, nothing is left to tell what the log was, so nothing is signed); its last event gone,
/// that the log was cut short. Returns the size the file vouches for.
pub(crate) fn check_anchor(
    anchor: &Path,
    verifier: &warden_audit::NoteVerifier,
    last: Option<&warden_store::Checkpoint>,
    events: u64,
    covered_held: bool,
) -> anyhow::Result<Option<u64>> {
    if let Some(c) = last {
        anyhow::ensure!(
            events >= c.size && covered_held,
            "the log's newest checkpoint covers {} events, but its last event is gone (the log's events end at {events}): events were deleted from its end (the log was cut short), and nothing more is signed. Check it with `warden audit verify --data-dir DIR`, and start only on a data dir restored from a backup",
            c.size
        );
    }
    let note = match std::fs::read_to_string(anchor) {
        Ok(note) => note,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            anyhow::ensure!(
                last.is_some() || events == 0,
                "the log holds {events} events, but no checkpoint covers any of them and {} is missing: its checkpoints were deleted with that file, and its events may have been rewritten; nothing is signed. Check the log against a checkpoint kept elsewhere (`warden audit verify --data-dir DIR --checkpoint FILE`), and start only on a data dir restored from a backup",
                anchor.display()
            );
            return Ok(None);
        }
        Err(e) => anyhow::bail!("reading {}: {e}", anchor.display()),
    };
    let signed = Checkpoint::open(&note, verifier).map_err(|e| {
        // A note's first line names the log it was signed for, and its signature lines the
        // key (named for the log): a note whole but for another name is a renamed log, while
        // one without a signature of that name is damaged.
        let origin = note.lines().next().unwrap_or_default();
        let signed_as = note
            .lines()
            .filter_map(|l| l.strip_prefix("\u{2014} "))
            .any(|l| l.split(' ').next() == Some(origin));
        if let warden_audit::CheckpointError::SignedByAnotherKey { .. } = e {
            anyhow::anyhow!(
                "{} {e}: either this data dir's audit signing key (audit_signing.key, audit_verifier.pub) was replaced, and both are to be restored from a backup, or the note was written by someone else's key; keep it where it is, and check the log against a checkpoint kept elsewhere (`warden audit verify --data-dir DIR --checkpoint FILE`)",
                anchor.display()
            )
        } else if !origin.is_empty() && origin != verifier.name() && signed_as {
            anyhow::anyhow!(
                "{} was signed for the log {origin:?}, but the config names it {:?}: set `audit_origin` back to {origin:?} (a log keeps its name)",
                anchor.display(),
                verifier.name()
            )
        } else {
            anyhow::anyhow!(
                "{} is not validly signed ({e}): if a crash damaged it, move it aside (keep it) and restart, then check the log with `warden audit verify --data-dir`",
                anchor.display()
            )
        }
    })?;
    // The empty log's note, written before a new log's first event, vouches for no event (see
    // [`check_start`] for a start that finds it alone).
    if signed.size == 0 {
        return Ok(Some(0));
    }
    let stored = last.map_or((0, None), |c| (c.size, Some(c.root)));
    // No event at all is no restored backup (even the oldest holds its first start's events):
    // the database is gone, or was copied without the log file that held its writes.
    anyhow::ensure!(
        events > 0,
        "the database holds no events, but this server signed a checkpoint of {} (kept in {}): warden.db is missing or empty, most likely copied without its warden.db-wal; nothing is started on it. Restore warden.db together with its warden.db-wal (or from `sqlite3 warden.db \".backup FILE\"`), or the whole data dir from a backup",
        signed.size,
        anchor.display()
    );
    // A restored backup carries the checkpoints signed up to its time; a log that has none at
    // all had them deleted, and its events may have been rewritten with them.
    anyhow::ensure!(
        stored.0 > 0 || signed.size == 0,
        "the log holds no checkpoint at all, but this server signed one of {} events (kept in {}): the log's checkpoints were deleted, and its events may have been rewritten since; nothing more is signed. Check the log against that file with `warden audit verify --data-dir DIR --checkpoint {}`, and start only on a data dir restored from a backup",
        signed.size,
        anchor.display(),
        anchor.display()
    );
    anyhow::ensure!(
        stored.0 >= signed.size,
        "the log's newest checkpoint covers {} events, but this server signed one of {} (kept in {}): the log or its checkpoints were rolled back or deleted, and nothing more is signed. If a backup was restored on purpose, move that file aside (keep it: it records what the restore dropped) and restart",
        stored.0,
        signed.size,
        anchor.display()
    );
    anyhow::ensure!(
        stored.0 > signed.size || stored.1 == Some(signed.root),
        "the log's checkpoint at size {} has another root than the one this server signed (kept in {}): the log was rewritten, and nothing more is signed; run `warden audit verify --data-dir` to see where",
        signed.size,
        anchor.display()
    );
    Ok(Some(signed.size))
}

/// [`check_anchor`] at a start, before this run writes any event: a log of `events` events
/// with no stored checkpoint and only the empty log's note cannot be told from one cut back
/// to nothing with a copy of that note, so it is not signed on either, unless every event is
/// one a start writes by itself ([`START_CODES`], `start_only`): a first start cut short
/// before its first checkpoint left it, and a log cut back to nothing would be taken as much
/// (as a new one) without them. (The checkpointer's first checkpoint of a new log finds
/// exactly that, of the events its own start wrote.) Returns whether the log has events but
/// [`ANCHOR_FILE`] was missing, which is said as a warning and recorded by the start: its
/// rollback protection had nothing to check against.
pub(crate) fn check_start(
    anchor: &Path,
    verifier: &warden_audit::NoteVerifier,
    last: Option<&warden_store::Checkpoint>,
    events: u64,
    covered_held: bool,
    start_only: bool,
) -> anyhow::Result<bool> {
    let vouched = check_anchor(anchor, verifier, last, events, covered_held)?;
    anyhow::ensure!(
        !(vouched == Some(0) && last.is_none() && events > 0 && !start_only),
        "the log holds {events} events, but no checkpoint covers any of them, and {} is the empty log's: this data dir's first start stopped before its first checkpoint, or the log was cut back to nothing and that note put back. Nothing is signed: a new data dir whose first start was cut short can be removed and started afresh; otherwise restore a backup",
        anchor.display()
    );
    let unanchored = vouched.is_none() && (last.is_some() || events > 0);
    if unanchored {
        tracing::warn!(
            file = %anchor.display(),
            "{ANCHOR_FILE} is missing from a data dir whose log has events: the protection against a rolled-back database (one restored from an older copy) had nothing to check it against until now, and the next checkpoint writes the file anew. Check the log with `warden audit verify --data-dir DIR`, and that its newest checkpoint extends those kept elsewhere (`--checkpoint FILE`)"
        );
    }
    Ok(unanchored)
}

/// Fails when the data dir shows it has served beyond its log, whose events end at `events`
/// (0: none): a segment in `archive/` (sealed, or one being written aside) of events past that
/// end, or, with no event at all, rows of `served_rows` (tables only a serving server writes,
/// [`warden_store::sqlite::SERVED_TABLES`]). Its history was lost (`warden.db` gone, or its
/// log emptied) or it was restarted from 1 on top of it: started, it would number events from 1
/// again, under the audit key that signed the old ones if that is still there (a fork of the
/// log signed by the server itself), and with `warden.db` lost the revocation list is gone too.
/// Checked before anything is written, and before the start's removal of segments an archive
/// cut short (`App::remove_unsealed_segments`) reads the archive directory. A first start cut
/// short after making its keys, before its first event or note, leaves neither: it starts.
pub(crate) fn check_served(
    data: &Path,
    events: u64,
    served_rows: &[(&'static str, u64)],
) -> anyhow::Result<()> {
    let segments = segments_past(&crate::archive::dir(data), events)?;
    let rows: Vec<String> = if events == 0 {
        served_rows
            .iter()
            .map(|(table, n)| format!("{n} {}", row_name(table, *n)))
            .collect()
    } else {
        Vec::new()
    };
    if segments.is_empty() && rows.is_empty() {
        return Ok(());
    }
    let mut found = Vec::new();
    if let Some(&(_, to)) = segments.iter().max_by_key(|(_, to)| *to) {
        const NAMED: usize = 3;
        let named: Vec<&str> = segments
            .iter()
            .take(NAMED)
            .map(|(n, _)| n.as_str())
            .collect();
        let named = named.join(", ");
        let (held, more) = match segments.len() {
            1 => ("a segment".to_owned(), String::new()),
            n if n <= NAMED => (format!("{n} segments"), String::new()),
            n => (format!("{n} segments"), format!(" and {} more", n - NAMED)),
        };
        found.push(format!(
            "archive/ holds {held} of events up to {to} ({named}{more})"
        ));
    }
    if !rows.is_empty() {
        found.push(format!("warden.db holds {}", rows.join(", ")));
    }
    let found = found.join(", and ");
    let key = if data.join("audit_signing.key").exists() {
        ", under the audit signing key that signed them (audit_signing.key is still there): a fork of the log, signed by the server itself"
    } else {
        ""
    };
    let restore = "Restore warden.db (with its warden.db-wal) and audit_checkpoint.note from your backup, or the whole data dir";
    let fresh = "to start afresh instead, move this data dir aside (keep it: it holds what is left of the old log, and hosts may still trust its SSH user CA) and start on a new one";
    if events == 0 {
        let lost = if data.join("warden.db").exists() {
            "warden.db's audit log was emptied"
        } else {
            "warden.db is missing, and with it the revocation list: grants revoked and tokens ended would work again"
        };
        let note = if data.join(ANCHOR_FILE).exists() {
            ""
        } else {
            ", and audit_checkpoint.note is missing too"
        };
        anyhow::bail!(
            "Not started: the audit log holds no events, but this data dir has served: {found}. {lost}{note}. Started, it would number events from 1 again, reusing the sequence numbers of events already signed{key}. {restore}; {fresh}"
        );
    }
    anyhow::bail!(
        "Not started: the audit log's events end at {events}, but this data dir has served further: {found}. Its log was lost or cut back and begun again from 1, reusing the sequence numbers of the events those segments sealed{key}. {restore} (one that holds the log which sealed them); if those segments are not this data dir's, move them out of archive/ and start again; {fresh}"
    )
}

/// The segments in the archive directory `dir` (`segment-FROM-TO.json`, sealed, or
/// `segment-FROM-TO.json.new`, being written aside) of events past `events`, by name with the
/// last event they hold, sorted: a live log that ends at `events` never sealed them (an archive
/// records itself in the live log after the events it seals, and one cut short leaves its
/// segment beside events still live). An archive directory that cannot be read is an error.
fn segments_past(dir: &Path, events: u64) -> anyhow::Result<Vec<(String, u64)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(anyhow::Error::from(e).context(format!(
                "reading the archive directory {} (a start checks that it holds no segment the log does not account for): make it readable by the server's user",
                dir.display()
            )));
        }
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry =
            entry.with_context(|| format!("reading the archive directory {}", dir.display()))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if let Some(to) = segment_end(&name)
            && to > events
        {
            found.push((name, to));
        }
    }
    found.sort();
    Ok(found)
}

/// The last event a segment named `segment-FROM-TO.json` (or `.json.new`) holds, by its name.
fn segment_end(name: &str) -> Option<u64> {
    let digits = |s: &str| s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit());
    let name = name.strip_suffix(".new").unwrap_or(name);
    let (from, to) = name
        .strip_prefix("segment-")?
        .strip_suffix(".json")?
        .split_once('-')?;
    (digits(from) && digits(to))
        .then(|| to.parse().ok())
        .flatten()
}

/// What a row of `table` (one of [`warden_store::sqlite::SERVED_TABLES`]) is, for `n` of them.
fn row_name(table: &str, n: u64) -> &'static str {
    let one = n == 1;
    match table {
        "requests" if one => "request",
        "requests" => "requests",
        "tokens" if one => "sign-in token",
        "tokens" => "sign-in tokens",
        "leases" if one => "lease of a grant's account",
        "leases" => "leases of grants' accounts",
        "audit_blocks" if one => "root of a block of signed events",
        "audit_blocks" => "roots of blocks of signed events",
        "archived_leaves" if one => "hash of an archived event",
        "archived_leaves" => "hashes of archived events",
        _ if one => "row",
        _ => "rows",
    }
}

/// The events a start writes before it serves anyone: the passwords the config, `--dev` or
/// the bootstrap give, then `server.started` and `policy.loaded`.
pub const START_CODES: [Code; 3] = [Code::PasswordSet, Code::ServerStarted, Code::PolicyLoaded];

/// Whether `codes`, numbers of the events of a log, are all [`START_CODES`].
pub fn only_start_events(codes: &[u16]) -> bool {
    codes
        .iter()
        .all(|n| START_CODES.iter().any(|c| c.number() == *n))
}

/// Writes the note of the empty log to `anchor` for a log about to begin, before its first
/// event: a log with events but neither a checkpoint nor this file lost both (see
/// [`check_anchor`]), while one whose first start was cut short before its first checkpoint
/// still has this.
pub fn anchor_empty_log(anchor: &Path, signer: &NoteSigner, origin: &str) -> anyhow::Result<()> {
    let empty = Checkpoint {
        origin: origin.to_owned(),
        size: 0,
        root: Tree::new().root(),
        extensions: vec![format!("time {}", now().unix_timestamp())],
    };
    write_anchor(anchor, &empty.sign(signer)?)
}

/// Replaces `anchor` with `note`, whole and durably. Public, and the server's alone to change.
fn write_anchor(anchor: &Path, note: &str) -> anyhow::Result<()> {
    crate::durable_file::replace(anchor, note.as_bytes(), 0o644)
}

/// Stores the roots and search filters of the complete blocks of events that the newest
/// checkpoint covers but that have none: a log written before blocks were stored has none for
/// its earlier blocks, so its proofs would read every event's hash and its searches every
/// event. At most [`BACKFILL_BLOCKS`] per call; returns how many were stored, or `None` when
/// none was missing: every block completed from then on gets its root with its checkpoint, so
/// there is nothing left to look for.
async fn backfill(store: &dyn Store) -> anyhow::Result<Option<usize>> {
    let Some(last) = store.latest_checkpoint().await? else {
        return Ok(None);
    };
    let missing = store
        .blocks_without_roots(last.size >> BLOCK_HEIGHT, BACKFILL_BLOCKS)
        .await?;
    if missing.is_empty() {
        return Ok(None);
    }
    let mut roots = Vec::with_capacity(missing.len());
    for block in missing {
        if let Some(root) = block_root(store, block).await? {
            roots.push((block, root));
        }
    }
    let stored = roots.len();
    store.insert_block_roots(roots).await?;
    Ok(Some(stored))
}

/// The Merkle root of block `block`'s events, hashed from their stored bytes like the
/// checkpoint's; `None` if some were archived since the block was found without one.
async fn block_root(store: &dyn Store, block: u64) -> anyhow::Result<Option<[u8; 32]>> {
    let first = block << BLOCK_HEIGHT;
    let leaves = store.audit_leaves(first, 1 << BLOCK_HEIGHT).await?;
    if leaves.first().map(|l| l.seq) != Some(first + 1) && store.first_seq().await? > first + 1 {
        return Ok(None);
    }
    let mut tree = Tree::new();
    for leaf in &leaves {
        let expected = first + tree.size() + 1;
        anyhow::ensure!(
            leaf.seq == expected,
            "audit log has a gap before seq {} (expected {expected}); run `warden audit verify`",
            leaf.seq
        );
        tree.push(warden_audit::merkle::leaf_hash(leaf.data.as_bytes()));
    }
    anyhow::ensure!(
        tree.size() == 1 << BLOCK_HEIGHT,
        "audit log ends at seq {} inside block {block}, which a checkpoint covers; run `warden audit verify`",
        first + tree.size()
    );
    Ok(Some(tree.root()))
}

/// The tree of the events of `tree`'s last, incomplete block. Its perfect subtrees are the
/// smallest of `tree`'s frontier: one per set bit of the size below the block height.
fn current_block(tree: &Tree) -> anyhow::Result<Tree> {
    let size = tree.size() & ((1 << BLOCK_HEIGHT) - 1);
    let frontier = tree.frontier();
    let own = frontier.len() - size.count_ones() as usize;
    Tree::from_frontier(size, frontier[own..].to_vec())
        .map_err(|e| anyhow::anyhow!("the audit tree's frontier is damaged: {e}"))
}

/// Writes checkpoints every `interval` until `stop`. The server writes the last one itself,
/// after its final event.
pub async fn run(app: Shared, mut stop: watch::Receiver<bool>) {
    let signer = &app.audit_signer;
    let interval = Duration::from_secs(app.config.checkpoint_interval.as_secs());
    let anchor = app.config.data_dir.join(ANCHOR_FILE);
    let mut backfilling = true;
    loop {
        let outcome = {
            // Not while an archive cuts the log: the first checkpoint hashes again every event
            // from where the live log begins, and events gone from under it would look deleted.
            let _no_archive = app.archiving.lock().await;
            checkpoint(
                app.store.as_ref(),
                signer,
                &app.config.audit_origin,
                &anchor,
                &app.log_checked,
            )
            .await
        };
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "audit checkpoint failed");
        }
        if let Ok(mut failure) = app.checkpoint_failure.lock() {
            *failure = outcome.err().map(|e| e.to_string());
        }
        if backfilling {
            match backfill(app.store.as_ref()).await {
                Ok(None) => backfilling = false,
                Ok(Some(n)) => tracing::info!(
                    blocks = n,
                    "stored the roots of earlier blocks of audit events"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "storing the roots of earlier blocks of audit events failed")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Segments past the log's end, or rows only a serving server writes beside an empty log,
    /// refuse a start; a segment the live log still reaches, a file that is no segment, or rows
    /// beside a log of events do not.
    #[test]
    fn a_data_dir_that_served_beyond_its_log_is_told_from_a_new_one() {
        let data = tempfile::tempdir().unwrap();
        let data = data.path();
        check_served(data, 0, &[]).unwrap();
        std::fs::write(data.join("audit_signing.key"), b"key").unwrap();
        check_served(data, 0, &[]).unwrap();
        let archive = crate::archive::dir(data);
        std::fs::create_dir(&archive).unwrap();
        std::fs::write(archive.join("notes.txt"), b"").unwrap();
        std::fs::write(archive.join("segment-1-9.json"), b"").unwrap();
        check_served(data, 0, &[]).unwrap();

        std::fs::write(data.join("warden.db"), b"").unwrap();
        let rows = [("requests", 1), ("tokens", 2)];
        let e = check_served(data, 0, &rows).unwrap_err().to_string();
        assert!(
            e.contains("has served: warden.db holds 1 request, 2 sign-in tokens."),
            "{e}"
        );
        assert!(e.contains("warden.db's audit log was emptied"), "{e}");
        assert!(e.contains("a fork of the log"), "{e}");
        check_served(data, 5, &rows).unwrap();

        std::fs::write(archive.join("segment-000000000001-000000000059.json"), b"").unwrap();
        check_served(data, 60, &[]).unwrap();
        check_served(data, 59, &[]).unwrap();
        let e = check_served(data, 58, &[]).unwrap_err().to_string();
        assert!(
            e.contains("the audit log's events end at 58, but this data dir has served further: archive/ holds a segment of events up to 59 (segment-000000000001-000000000059.json)"),
            "{e}"
        );
        std::fs::remove_file(data.join("warden.db")).unwrap();
        std::fs::write(
            archive.join("segment-000000000060-000000000070.json.new"),
            b"",
        )
        .unwrap();
        let e = check_served(data, 0, &[]).unwrap_err().to_string();
        assert!(
            e.contains("archive/ holds 2 segments of events up to 70 (segment-000000000001-000000000059.json, segment-000000000060-000000000070.json.new)"),
            "{e}"
        );
        assert!(e.contains("warden.db is missing"), "{e}");
    }

    fn signed_note(signer: &NoteSigner, size: u64) -> String {
        Checkpoint {
            origin: signer.name().to_owned(),
            size,
            root: [7; 32],
            extensions: Vec::new(),
        }
        .sign(signer)
        .unwrap()
    }

    #[test]
    fn a_kept_checkpoint_that_cannot_be_read_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let anchor = dir.path().join(ANCHOR_FILE);
        let signer = NoteSigner::from_seed("warden.test/audit", &[3; 32]).unwrap();
        // Written durably and whole, it reads back; a database with no event at all is no
        // backup (even the oldest holds its first start's events) but one lost or copied
        // without its log file, and moving the note aside would start a new log over it.
        write_anchor(&anchor, &signed_note(&signer, 5)).unwrap();
        let lost = check_anchor(&anchor, &signer.verifier(), None, 0, true).unwrap_err();
        assert!(
            lost.to_string().contains("warden.db is missing or empty")
                && !lost.to_string().contains("move that file aside"),
            "{lost}"
        );
        // Torn by a crash: move it aside.
        std::fs::write(&anchor, "warden.test/audit\n5\n").unwrap();
        let torn = check_anchor(&anchor, &signer.verifier(), None, 0, true).unwrap_err();
        assert!(torn.to_string().contains("move it aside"), "{torn}");
        // Signed for a log the config now names otherwise: name it back.
        let renamed = NoteSigner::from_seed("other.test/audit", &[3; 32]).unwrap();
        write_anchor(&anchor, &signed_note(&renamed, 5)).unwrap();
        let other = check_anchor(&anchor, &signer.verifier(), None, 0, true).unwrap_err();
        assert!(
            other
                .to_string()
                .contains("set `audit_origin` back to \"other.test/audit\""),
            "{other}"
        );
        // Cut short or garbage, its first line names no log: damaged, not renamed.
        for damaged in ["warden.loc", "garbage\n"] {
            std::fs::write(&anchor, damaged).unwrap();
            let said = check_anchor(&anchor, &signer.verifier(), None, 0, true).unwrap_err();
            assert!(said.to_string().contains("move it aside"), "{said}");
        }
    }

    #[test]
    fn a_log_that_lost_its_checkpoints_or_its_newest_events_is_not_signed() {
        let dir = tempfile::tempdir().unwrap();
        let anchor = dir.path().join(ANCHOR_FILE);
        let signer = NoteSigner::from_seed("warden.test/audit", &[3; 32]).unwrap();
        let verifier = signer.verifier();
        // A new log's note vouches for nothing: one whose first start stopped before its
        // first checkpoint goes on.
        anchor_empty_log(&anchor, &signer, "warden.test/audit").unwrap();
        assert_eq!(
            check_anchor(&anchor, &verifier, None, 3, true).unwrap(),
            Some(0)
        );
        assert!(!check_start(&anchor, &verifier, None, 0, true, false).unwrap());
        // A start that finds events and that note alone: cut back to nothing with a copy of
        // it, or a first start stopped before its first checkpoint; nothing tells which...
        let alone = check_start(&anchor, &verifier, None, 3, true, false).unwrap_err();
        assert!(alone.to_string().contains("the empty log's"), "{alone}");
        // ... unless all it holds is what a start writes: then nothing is lost either way.
        check_start(&anchor, &verifier, None, 3, true, true).unwrap();
        let codes = START_CODES.map(Code::number);
        assert!(only_start_events(&codes));
        assert!(!only_start_events(&[
            Code::ServerStarted.number(),
            Code::RequestCreated.number()
        ]));
        // Events, and neither a checkpoint nor the note: both were deleted.
        std::fs::remove_file(&anchor).unwrap();
        assert_eq!(
            check_anchor(&anchor, &verifier, None, 0, true).unwrap(),
            None
        );
        let lost = check_anchor(&anchor, &verifier, None, 3, true).unwrap_err();
        assert!(
            lost.to_string().contains("no checkpoint covers any"),
            "{lost}"
        );
        // Fewer events than the newest checkpoint covers: cut short, note or not.
        let stored = warden_store::Checkpoint {
            size: 5,
            root: [7; 32],
            time: now(),
            frontier: Vec::new(),
            note: signed_note(&signer, 5),
        };
        let cut = check_anchor(&anchor, &verifier, Some(&stored), 4, false).unwrap_err();
        assert!(cut.to_string().contains("cut short"), "{cut}");
        // Numbered on past it since, its last event gone all the same.
        let cut = check_anchor(&anchor, &verifier, Some(&stored), 9, false).unwrap_err();
        assert!(cut.to_string().contains("cut short"), "{cut}");
        assert_eq!(
            check_anchor(&anchor, &verifier, Some(&stored), 5, true).unwrap(),
            None
        );
        // A log of events and checkpoints without the note starts, and says so.
        assert!(check_start(&anchor, &verifier, Some(&stored), 5, true, false).unwrap());
        write_anchor(&anchor, &stored.note).unwrap();
        assert!(!check_start(&anchor, &verifier, Some(&stored), 5, true, false).unwrap());
    }
}
