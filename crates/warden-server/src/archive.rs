//! Retention: old audit events are sealed into archive segments that verify on their own, then
//! leave the live log.
//!
//! A segment holds the events between two signed checkpoints, the first checkpoint's tree
//! frontier, and both signed notes. Rebuilding the tree from the frontier must give the first
//! checkpoint's root (which authenticates the frontier), and adding the events must give the
//! second's, so a segment proves itself with only the verifier key. The live log then starts
//! from the second checkpoint, which `warden audit verify` resumes from. Archiving and deleting
//! segments are themselves audited.
//!
//! A segment is written aside and renamed into place, durably, before its events leave the live
//! log, in one transaction with its seal record: a crash in between leaves it beside the live
//! events it holds, unrecorded, and the next start (or archive) removes it, audited.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use warden_audit::Tree;
use warden_domain::audit::{Actor, Code, Event};

use crate::state::{App, now};

/// An archive segment file.
#[derive(Debug, Serialize, Deserialize)]
pub struct Segment {
    /// Always `warden-audit-segment-v1`.
    pub format: String,
    pub from: u64,
    pub to: u64,
    /// The signed checkpoint at `from - 1` and its tree frontier (hex); absent when `from` is 1.
    pub start: Option<Start>,
    /// The signed checkpoint at `to`.
    pub end: String,
    /// The events' exact leaf bytes, `from` to `to`.
    pub events: Vec<String>,
}

/// Where a segment's tree starts.
#[derive(Debug, Serialize, Deserialize)]
pub struct Start {
    pub checkpoint: String,
    pub frontier: Vec<String>,
}

/// Where segments are kept.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("archive")
}

/// An archive that would remove events an export sink has not delivered yet: they stay in the
/// live log until it has, or the sink would never send them.
#[derive(Debug)]
pub struct SinkBehind {
    pub sink: String,
    pub delivered: u64,
}

impl std::fmt::Display for SinkBehind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "nothing can be archived yet: export sink {:?} has delivered the events up to {} only, and no checkpoint older than the cutoff covers only those; the rest stay in the live log until it delivers them (see `warden audit status`)",
            self.sink, self.delivered
        )
    }
}

impl std::error::Error for SinkBehind {}

/// The outcome of an archive run.
#[derive(Debug, Serialize, Deserialize)]
pub struct Archived {
    pub file: String,
    pub from: u64,
    pub to: u64,
    pub sha256: String,
    /// The export sink that has not delivered the events after `to` that the cutoff would
    /// have archived too, if one has not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_back_by: Option<String>,
}

impl App {
    /// Seals the events of the newest checkpoint made before `before`, every one of them older
    /// than `before`, into a segment and removes them from the live log.
    pub async fn archive(
        &self,
        before: OffsetDateTime,
        actor: Actor,
    ) -> anyhow::Result<Option<Archived>> {
        // One at a time: two seeing the same live log would seal the same events twice.
        let _one = self.archiving.lock().await;
        // What an archive cut short left goes first, or it would stand beside this one's.
        self.remove_unsealed().await?;
        let Some(written) = self.write_segment(before, &actor).await? else {
            return Ok(None);
        };
        // The lockouts in force, whose `auth.user_locked` events may be among those sealed:
        // a restart reads them back from here (see `App::restore_lockouts`).
        let locks: Vec<serde_json::Value> = self
            .locks_in_force()
            .into_iter()
            .map(|(user, kind, until)| {
                serde_json::json!({
                    "user": user, "kind": kind.as_str(), "until": warden_domain::rfc3339(until),
                })
            })
            .collect();
        let ev = Event::new(Code::SegmentArchived, actor, now()).details(serde_json::json!({
            "file": written.file, "from": written.from, "to": written.to, "sha256": written.sha256,
            "locks": locks,
        }));
        if let Err(e) = self.store.archive_audit(written.to, vec![ev]).await {
            // The events stay in the live log: their segment goes too, if the log shows them
            // still there (a failed commit may yet have happened).
            if let Err(e) = self.remove_unsealed().await {
                tracing::error!(error = %e, file = %written.file, "an archive segment whose events stayed in the live log could not be removed; the next start removes it");
            }
            return Err(e.into());
        }
        Ok(Some(written))
    }

    /// What an archive does before its events leave the live log: seals them into their
    /// segment and puts it in place, durably, and returns it; `None` when there is nothing to
    /// archive. The caller holds `archiving`.
    async fn write_segment(
        &self,
        before: OffsetDateTime,
        actor: &Actor,
    ) -> anyhow::Result<Option<Archived>> {
        let Some(mut end) = self.store.checkpoint_before(before).await? else {
            return Ok(None);
        };
        let base = self.store.first_seq().await?.saturating_sub(1);
        if end.size <= base {
            return Ok(None);
        }
        let mut held_back_by = None;
        if let Some(behind) = self.slowest_sink(end.size).await? {
            match self.store.checkpoint_at_most(behind.delivered).await? {
                Some(cp) if cp.size > base => {
                    tracing::warn!(sink = %behind.sink, delivered = behind.delivered, "audit archive held back to what an export sink has delivered");
                    end = cp;
                    held_back_by = Some(behind.sink);
                }
                _ => return Err(behind.into()),
            }
        }
        let start =
            if base == 0 {
                None
            } else {
                Some(self.store.checkpoint(base).await?.context(
                    "the live log's base checkpoint is missing; run `warden audit verify`",
                )?)
            };
        let end_size = end.size;
        let segment = match self.seal(start, end).await? {
            Ok(segment) => segment,
            Err(why) => {
                let message = format!(
                    "nothing is archived: {why}. Sealed, the altered events would go out of the live log under the server's signature; find what changed with `warden audit verify --data-dir DIR`, and restore the data dir from a backup"
                );
                let refused = Event::new(Code::SegmentArchived, actor.clone(), now())
                    .failed("log_altered", message.clone())
                    .details(serde_json::json!({ "from": base + 1, "to": end_size }));
                if let Err(e) = self.store.append(vec![refused]).await {
                    tracing::error!(error = %e, "a refused audit archive could not be audited");
                }
                bail!(message);
            }
        };
        let bytes = serde_json::to_vec(&segment)?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let dir = dir(&self.config.data_dir);
        make_dir(&dir)?;
        let name = segment_name(segment.from, segment.to);
        let path = dir.join(&name);
        // What an archive cut short left under this name was removed above: anything else
        // there is not the server's to write over.
        if std::fs::symlink_metadata(&path).is_ok() {
            bail!(
                "nothing is archived: archive/{name} is already there, and is neither a segment the log records as sealed nor one an archive cut short left of these events (its bytes are not theirs); move it out of the archive directory (`warden audit verify --data-dir DIR` names it) and archive again"
            );
        }
        // Written aside, synced, renamed into place and the directory synced, all before its
        // events leave the live log: a crash leaves the segment whole or not at all, and once
        // they are gone it is there for good. A crash before they go leaves it beside the live
        // events it holds, for the next start (or archive) to remove.
        crate::durable_file::replace(&path, &bytes, 0o600)?;
        Ok(Some(Archived {
            file: name,
            from: segment.from,
            to: segment.to,
            sha256,
            held_back_by,
        }))
    }

    /// The segment of the stored events after `start` (the signed checkpoint there; `None` for
    /// the log's first event) up to `end`, or why they cannot be sealed.
    async fn seal(
        &self,
        start: Option<warden_store::Checkpoint>,
        end: warden_store::Checkpoint,
    ) -> anyhow::Result<Result<Segment, String>> {
        let base = start.as_ref().map_or(0, |cp| cp.size);
        let mut leaves = Vec::new();
        let mut after = base;
        while after < end.size {
            let batch = self.store.audit_leaves(after, 10_000).await?;
            let Some(last) = batch.last().map(|l| l.seq) else {
                break;
            };
            leaves.extend(batch.into_iter().filter(|l| l.seq <= end.size));
            after = last;
        }
        if let Err(why) = sealable(&self.audit_signer.verifier(), start.as_ref(), &end, &leaves) {
            return Ok(Err(why));
        }
        let start = start.map(|cp| Start {
            checkpoint: cp.note,
            frontier: cp.frontier.iter().map(hex::encode).collect(),
        });
        Ok(Ok(Segment {
            format: "warden-audit-segment-v1".into(),
            from: base + 1,
            to: end.size,
            start,
            end: end.note,
            events: leaves.into_iter().map(|l| l.data).collect(),
        }))
    }

    /// Removes, at start, what an archive cut short left in the archive directory: one at a
    /// time with archives. See [`App::remove_unsealed`].
    pub async fn remove_unsealed_segments(&self) -> anyhow::Result<Vec<String>> {
        let _one = self.archiving.lock().await;
        self.remove_unsealed().await
    }

    /// Removes from the archive directory the segments the log does not record as sealed that
    /// an archive cut short left there: one still being written (`segment-FROM-TO.json.new`,
    /// never renamed into place), and one whose events are all still in the live log, their
    /// removal never having committed, if its bytes are those the live log seals now (or the
    /// first of them: written by a version that wrote in place, and torn). One audit event names
    /// them, before they go; a file that is neither is left for `warden audit verify
    /// --data-dir` to name, since it may be the one copy of what it holds. Returns their names.
    /// The caller holds `archiving`.
    async fn remove_unsealed(&self) -> anyhow::Result<Vec<String>> {
        let dir = dir(&self.config.data_dir);
        let mut names: Vec<String> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(anyhow::Error::from(e)
                    .context(format!("reading the archive directory {}", dir.display())));
            }
        };
        names.sort();
        let (first, last) = (self.store.first_seq().await?, self.store.last_seq().await?);
        let mut unsealed = Vec::new();
        for name in names {
            let path = dir.join(&name);
            if name.strip_suffix(".new").is_some_and(is_segment_name) {
                // Never renamed into place: whatever it holds, no record names it.
                if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
                    let bytes = std::fs::read(&path).unwrap_or_default();
                    unsealed.push((name, bytes.len(), Sha256::digest(&bytes)));
                }
                continue;
            }
            let Some((from, to)) = segment_range(&name) else {
                continue;
            };
            // A sealed segment's events left the live log with its seal record.
            if first == 0 || from < first || to > last || from > to {
                continue;
            }
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(file = %name, error = %e, "an archive segment holding events still in the live log could not be read, and is kept");
                    continue;
                }
            };
            let start = match from - 1 {
                0 => None,
                size => self.store.checkpoint(size).await?,
            };
            let end = self.store.checkpoint(to).await?;
            let sealed = match (start, end) {
                (start, Some(end)) if start.is_some() || from == 1 => self.seal(start, end).await?,
                _ => Err("no stored checkpoint begins or ends its events".into()),
            };
            match sealed.map(|s| serde_json::to_vec(&s)) {
                Ok(Ok(sealed)) if sealed.starts_with(&bytes) => {
                    unsealed.push((name, bytes.len(), Sha256::digest(&bytes)));
                }
                Ok(Ok(_)) => {
                    tracing::warn!(file = %name, from, to, "an archive segment whose events are still in the live log is kept: its bytes are not those the live log seals (`warden audit verify --data-dir` names it; move it out of the archive directory once you know what it holds)")
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(why) => {
                    tracing::warn!(file = %name, from, to, %why, "an archive segment whose events are still in the live log is kept: the live log cannot seal them to compare (`warden audit verify --data-dir` names it)")
                }
            }
        }
        if unsealed.is_empty() {
            return Ok(Vec::new());
        }
        let files: Vec<serde_json::Value> = unsealed
            .iter()
            .map(|(name, bytes, sha256)| {
                serde_json::json!({ "name": name, "bytes": bytes, "sha256": hex::encode(sha256) })
            })
            .collect();
        let names: Vec<String> = unsealed.into_iter().map(|(n, _, _)| n).collect();
        // Audited first, as a deletion is: a removal that cannot be recorded does not happen.
        let ev =
            Event::new(Code::SegmentDeleted, Actor::system(), now()).details(serde_json::json!({
                "unsealed": files,
                "reason": UNSEALED,
            }));
        self.store.append(vec![ev]).await?;
        for name in &names {
            match std::fs::remove_file(dir.join(name)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(anyhow::Error::from(e)
                        .context(format!("removing archive/{name}, which {UNSEALED}")));
                }
                _ => {}
            }
        }
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing the archive directory {}", dir.display()))?;
        tracing::warn!(files = ?names, "removed from the archive directory what {UNSEALED}");
        Ok(names)
    }

    /// The configured export sink furthest behind, if it has not delivered the first `upto`
    /// events.
    async fn slowest_sink(&self, upto: u64) -> anyhow::Result<Option<SinkBehind>> {
        let mut slowest: Option<SinkBehind> = None;
        for sink in &self.config.sinks {
            let delivered = self.store.sink_cursor(sink.name()).await?;
            if delivered < upto && slowest.as_ref().is_none_or(|s| delivered < s.delivered) {
                slowest = Some(SinkBehind {
                    sink: sink.name().to_owned(),
                    delivered,
                });
            }
        }
        Ok(slowest)
    }

    /// Deletes an archive segment past retention (its newest event older than
    /// `audit_retention_days`), recording which events it held. Without a retention set,
    /// segments are kept.
    pub async fn delete_segment(&self, name: &str, actor: Actor) -> Result<(), DeleteError> {
        if !is_segment_name(name) {
            return Err(DeleteError::BadName(name.to_owned()));
        }
        let path = dir(&self.config.data_dir).join(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DeleteError::NotFound(name.to_owned()));
            }
            Err(e) => {
                return Err(anyhow::Error::from(e)
                    .context(format!("reading segment {name}"))
                    .into());
            }
        };
        let segment: Segment = serde_json::from_slice(&bytes)
            .with_context(|| format!("{name} is not an archive segment"))?;
        let newest = segment
            .events
            .last()
            .and_then(|e| serde_json::from_str::<Timed>(e).ok())
            .map(|e| e.time)
            .with_context(|| format!("{name} holds no readable event"))?;
        let Some(days) = self.config.audit_retention_days else {
            return Err(DeleteError::Retained {
                name: name.to_owned(),
                newest,
                days: None,
            });
        };
        if newest > now() - time::Duration::days(i64::from(days)) {
            return Err(DeleteError::Retained {
                name: name.to_owned(),
                newest,
                days: Some(days),
            });
        }
        let ev = Event::new(Code::SegmentDeleted, actor, now()).details(serde_json::json!({
            "file": name, "from": segment.from, "to": segment.to, "sha256": hex::encode(Sha256::digest(&bytes)),
        }));
        // Audit first: a deletion that cannot be recorded does not happen.
        self.store
            .append(vec![ev])
            .await
            .map_err(anyhow::Error::from)?;
        std::fs::remove_file(&path).with_context(|| format!("removing segment {name}"))?;
        Ok(())
    }
}

/// Fails, saying why, unless `leaves`, the stored events after `start` (the signed checkpoint
/// the live log begins at; `None` for the log's first event) up to `end`, are every event in
/// between and make `end`'s signed root, `start`'s frontier making its signed root: a segment
/// seals its events under both signatures, so events changed or deleted in the stored log would
/// come out of an archive as if the server had signed them, and leave the live log, where the
/// checkpointer finds them altered, with nothing left to show it.
fn sealable(
    verifier: &warden_audit::NoteVerifier,
    start: Option<&warden_store::Checkpoint>,
    end: &warden_store::Checkpoint,
    leaves: &[warden_store::Leaf],
) -> Result<(), String> {
    let signed = |cp: &warden_store::Checkpoint| {
        warden_audit::Checkpoint::open(&cp.note, verifier)
            .ok()
            .filter(|s| s.size == cp.size)
            .ok_or_else(|| {
                format!(
                    "the stored checkpoint at {} is not one this server signed (forged or altered)",
                    cp.size
                )
            })
    };
    let mut tree = match start {
        None => Tree::new(),
        Some(cp) => Tree::from_frontier(cp.size, cp.frontier.clone())
            .ok()
            .filter(|t| signed(cp).is_ok_and(|s| s.root == t.root()))
            .ok_or_else(|| {
                format!(
                    "the stored checkpoint at {}, where the live log begins, does not make the root it was signed with (altered)",
                    cp.size
                )
            })?,
    };
    let gone = |from: u64, to: u64| {
        let events = if from == to {
            format!("event {from} is")
        } else {
            format!("events {from}..{to} are")
        };
        format!("{events} missing from the stored log (deleted)")
    };
    let from = tree.size() + 1;
    for leaf in leaves {
        if leaf.seq != tree.size() + 1 {
            return Err(gone(tree.size() + 1, leaf.seq - 1));
        }
        tree.push(warden_audit::merkle::leaf_hash(leaf.data.as_bytes()));
    }
    if tree.size() != end.size {
        return Err(gone(tree.size() + 1, end.size));
    }
    if signed(end)?.root != tree.root() {
        return Err(format!(
            "the stored events {from}..{} no longer make the root this server signed at {}: an event was changed or deleted in the stored log",
            end.size, end.size
        ));
    }
    Ok(())
}

/// An event's time, all a deletion reads of it.
#[derive(Deserialize)]
struct Timed {
    #[serde(with = "warden_domain::timestamp")]
    time: OffsetDateTime,
}

/// `segment-FROM-TO.json` with both numbers written out in 12 digits, as archiving names them:
/// nothing else in the archive directory, and nothing outside it, can be named.
fn is_segment_name(name: &str) -> bool {
    let digits = |s: &str| s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit());
    name.strip_prefix("segment-")
        .and_then(|n| n.strip_suffix(".json"))
        .and_then(|n| n.split_once('-'))
        .is_some_and(|(from, to)| digits(from) && digits(to))
}

/// What the segments [`App::remove_unsealed`] removes are, as its audit event and log say.
const UNSEALED: &str = "an archive cut short left there before the removal of its events from the live log committed: never sealed, its events are still in the live log";

/// The name of the segment of events `from` to `to`.
fn segment_name(from: u64, to: u64) -> String {
    format!("segment-{from:012}-{to:012}.json")
}

/// The events a segment named `segment-FROM-TO.json` holds, by its name.
fn segment_range(name: &str) -> Option<(u64, u64)> {
    if !is_segment_name(name) {
        return None;
    }
    let (from, to) = name
        .strip_prefix("segment-")?
        .strip_suffix(".json")?
        .split_once('-')?;
    Some((from.parse().ok()?, to.parse().ok()?))
}

/// Makes the archive directory, readable by the server's user alone as the database is, its
/// entry synced in the data dir when made, so that no segment is there to lose with it.
fn make_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let made = !dir.exists();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("making the archive directory {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    if made && let Some(parent) = dir.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", parent.display()))?;
    }
    Ok(())
}

/// Why a segment was not deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error(
        "{0:?} is not an archive segment name: they look like segment-000000000001-000000001024.json"
    )]
    BadName(String),
    #[error("no archive segment named {0}")]
    NotFound(String),
    #[error("{name} holds events until {}, {}", warden_domain::rfc3339(*.newest), retained(*.days))]
    Retained {
        name: String,
        newest: OffsetDateTime,
        days: Option<u32>,
    },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

fn retained(days: Option<u32>) -> String {
    match days {
        Some(d) => format!("within the retention of {d} days (`audit_retention_days`): it can be deleted once its newest event is older than that"),
        None => "and no `audit_retention_days` is set, so archive segments are kept: set it in the config to delete segments older than it".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on a new data dir in `dir`, its empty log's note written as a first start does.
    fn app_in(dir: &Path) -> App {
        let app = crate::state::tests::app_in(dir, &["alice"]);
        crate::checkpoints::anchor_empty_log(
            &dir.join(crate::checkpoints::ANCHOR_FILE),
            &app.audit_signer,
            app.audit_signer.name(),
        )
        .unwrap();
        app
    }

    /// Appends `n` events and signs a checkpoint over the log: its size.
    async fn signed_events(app: &App, n: usize) -> u64 {
        for _ in 0..n {
            let ev = Event::new(Code::ServerStarted, Actor::system(), now());
            app.store.append(vec![ev]).await.unwrap();
        }
        crate::checkpoints::checkpoint(
            app.store.as_ref(),
            &app.audit_signer,
            app.audit_signer.name(),
            &app.config.data_dir.join(crate::checkpoints::ANCHOR_FILE),
            &app.log_checked,
        )
        .await
        .unwrap()
        .unwrap()
    }

    /// The files in the archive directory, by name.
    fn files(app: &App) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir(&app.config.data_dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// The details of the log's `audit.segment_deleted` events.
    async fn deletions(app: &App) -> Vec<serde_json::Value> {
        let leaves = app.store.audit_leaves(0, 100_000).await.unwrap();
        leaves
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(&l.data).unwrap())
            .filter(|e| e["action"] == "audit.segment_deleted")
            .map(|e| e["details"].clone())
            .collect()
    }

    fn later() -> OffsetDateTime {
        now() + time::Duration::seconds(1)
    }

    /// A crash after an archive put its segment in place and before its events left the live
    /// log leaves the segment beside them: the next start removes it (and what else an archive
    /// cut short left: a segment still being written, one torn as written in place before),
    /// naming them in one audit event, keeps whatever the live log does not account for, and
    /// the next archive seals the same events again.
    #[tokio::test]
    async fn a_segment_an_archive_cut_short_left_is_removed_at_start() {
        let data = tempfile::tempdir().unwrap();
        let app = app_in(data.path());
        let older = signed_events(&app, 20).await;
        let newer = signed_events(&app, 30).await;

        // Cut short: written, never committed.
        let written = {
            let _one = app.archiving.lock().await;
            app.write_segment(later(), &Actor::system())
                .await
                .unwrap()
                .unwrap()
        };
        assert_eq!((written.from, written.to), (1, newer));
        assert_eq!(app.store.first_seq().await.unwrap(), 1);
        let archive = dir(data.path());
        let stray = std::fs::read(archive.join(&written.file)).unwrap();
        assert_eq!(hex::encode(Sha256::digest(&stray)), written.sha256);
        // A segment a crash cut off while it was written aside, and one torn as an older
        // version wrote it in place.
        let aside = format!("{}.new", written.file);
        std::fs::write(archive.join(&aside), &stray[..stray.len() / 2]).unwrap();
        let start = app.store.checkpoint(older).await.unwrap();
        let sealed = app
            .seal(None, start.clone().unwrap())
            .await
            .unwrap()
            .unwrap();
        let torn = segment_name(1, older);
        std::fs::write(
            archive.join(&torn),
            &serde_json::to_vec(&sealed).unwrap()[..300],
        )
        .unwrap();
        // Live events, but not the bytes the live log seals; and a file of someone else's.
        let foreign = segment_name(older + 1, newer);
        std::fs::write(archive.join(&foreign), b"{\"format\":\"forged\"}").unwrap();
        std::fs::write(archive.join("notes.txt"), b"kept").unwrap();

        let removed = app.remove_unsealed_segments().await.unwrap();
        assert_eq!(removed, [torn.clone(), written.file.clone(), aside.clone()]);
        assert_eq!(files(&app), ["notes.txt".to_owned(), foreign.clone()]);
        let said = deletions(&app).await;
        assert_eq!(said.len(), 1, "{said:?}");
        let named: Vec<&str> = said[0]["unsealed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(named, [&torn, &written.file, &aside]);
        assert_eq!(said[0]["unsealed"][1]["sha256"], written.sha256.as_str());
        assert!(said[0]["file"].is_null(), "names no sealed segment deleted");
        // Nothing more the next time.
        assert!(app.remove_unsealed_segments().await.unwrap().is_empty());

        // An archive does not write over a file it cannot account for.
        std::fs::rename(archive.join(&foreign), archive.join(&written.file)).unwrap();
        let refused = app.archive(later(), Actor::system()).await.unwrap_err();
        assert!(
            refused.to_string().contains("is already there"),
            "{refused}"
        );
        assert_eq!(app.store.first_seq().await.unwrap(), 1);
        std::fs::remove_file(archive.join(&written.file)).unwrap();

        // The archive seals the same events into the same bytes, and nothing else is left.
        let archived = app
            .archive(later(), Actor::system())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (archived.file.as_str(), archived.to),
            (written.file.as_str(), newer)
        );
        assert_eq!(archived.sha256, written.sha256);
        assert_eq!(files(&app), ["notes.txt".to_owned(), written.file.clone()]);
        assert_eq!(app.store.first_seq().await.unwrap(), newer + 1);
        // Sealed, it stays, its events having left the live log.
        assert!(app.remove_unsealed_segments().await.unwrap().is_empty());
        assert_eq!(files(&app), ["notes.txt".to_owned(), written.file]);
    }

    /// A segment whose events are still live, written by an archive cut short but the log since
    /// rewritten beneath it, is the one copy of what it holds: it is kept.
    #[tokio::test]
    async fn a_segment_the_live_log_does_not_seal_again_is_kept() {
        let data = tempfile::tempdir().unwrap();
        let app = app_in(data.path());
        let size = signed_events(&app, 10).await;
        let written = {
            let _one = app.archiving.lock().await;
            app.write_segment(later(), &Actor::system())
                .await
                .unwrap()
                .unwrap()
        };
        let path = dir(data.path()).join(&written.file);
        let mut segment: Segment = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        segment.events[3] = segment.events[3].replacen("server.started", "server.stopped", 1);
        std::fs::write(&path, serde_json::to_vec(&segment).unwrap()).unwrap();
        assert!(app.remove_unsealed_segments().await.unwrap().is_empty());
        assert_eq!(files(&app), [segment_name(1, size)]);
        assert!(deletions(&app).await.is_empty());
    }
}
