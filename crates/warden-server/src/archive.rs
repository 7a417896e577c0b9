//! Retention: old audit events are sealed into archive segments that verify on their own, then
//! leave the live log.
//!
//! A segment holds the events between two signed checkpoints, the first checkpoint's tree
//! frontier, and both signed notes. Rebuilding the tree from the frontier must give the first
//! checkpoint's root (which authenticates the frontier), and adding the events must give the
//! second's, so a segment proves itself with only the verifier key. The live log then starts
//! from the second checkpoint, which `warden audit verify` resumes from. Archiving and deleting
//! segments are themselves audited.

use std::io::Write;
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
            let message = format!(
                "nothing is archived: {why}. Sealed, the altered events would go out of the live log under the server's signature; find what changed with `warden audit verify --data-dir DIR`, and restore the data dir from a backup"
            );
            let refused = Event::new(Code::SegmentArchived, actor, now())
                .failed("log_altered", message.clone())
                .details(serde_json::json!({ "from": base + 1, "to": end.size }));
            if let Err(e) = self.store.append(vec![refused]).await {
                tracing::error!(error = %e, "a refused audit archive could not be audited");
            }
            bail!(message);
        }
        let start = start.map(|cp| Start {
            checkpoint: cp.note,
            frontier: cp.frontier.iter().map(hex::encode).collect(),
        });
        let events = leaves.into_iter().map(|l| l.data).collect();
        let segment = Segment {
            format: "warden-audit-segment-v1".into(),
            from: base + 1,
            to: end.size,
            start,
            end: end.note,
            events,
        };
        let bytes = serde_json::to_vec(&segment)?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let dir = dir(&self.config.data_dir);
        // The sealed events are the audit log's: readable by the server's user alone, as the
        // database is.
        {
            use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let name = format!("segment-{:012}-{:012}.json", segment.from, segment.to);
        let path = dir.join(&name);
        let mut f = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?
        };
        f.write_all(&bytes)?;
        f.sync_all()?;
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
            "file": name, "from": segment.from, "to": segment.to, "sha256": sha256,
            "locks": locks,
        }));
        self.store.archive_audit(segment.to, vec![ev]).await?;
        Ok(Some(Archived {
            file: name,
            from: segment.from,
            to: segment.to,
            sha256,
            held_back_by,
        }))
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
