//! `/v1/audit`: search, signed checkpoints, inclusion and consistency proofs, and export
//! bundles that verify offline with only the verifier key.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use warden_audit::merkle::{BLOCK_HEIGHT, Proofs};
use warden_domain::audit::Code;
use warden_store::{AuditFilter, StoredEvent};

use super::{
    ApiError, Authed, ErrorBody, JsonBody, PathText, admitted, body, field, query, refuse,
    refuse_4xx, require_audit_reader, rfc3339,
};
use crate::state::Shared;

/// Audit search filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub user: Option<String>,
    pub target: Option<String>,
    #[param(format = Uuid)]
    pub request: Option<String>,
    /// An event code (`W2000`) or name (`request.created`).
    pub code: Option<String>,
    /// RFC 3339.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339.
    #[param(format = DateTime)]
    pub to: Option<String>,
    #[param(format = "uint64")]
    pub after_seq: Option<u64>,
    /// At most this many (default 1000, at most 10,000).
    #[param(minimum = 1)]
    pub limit: Option<usize>,
}

/// One stored event.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditRecord {
    pub seq: u64,
    /// Hex RFC 6962 leaf hash.
    pub leaf_hash: String,
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
}

/// Matching events.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    pub events: Vec<AuditRecord>,
    /// Present when the search reaches back to archived events, which it does not see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_before: Option<ArchivedBefore>,
}

/// Where the live log starts after an archive: the events before it are in archive segments,
/// not in a search's or an export's answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ArchivedBefore {
    /// The oldest live event; every one before it was archived.
    pub seq: u64,
    /// Its time, RFC 3339: the archived events are older.
    #[schema(format = DateTime)]
    pub time: String,
}

/// Where the live log starts, if events before it were archived and a range from `from` (the
/// beginning when `None`) and after `after_seq` reaches back to them.
async fn archived_behind(
    app: &Shared,
    from: Option<OffsetDateTime>,
    after_seq: Option<u64>,
) -> Result<Option<ArchivedBefore>, ApiError> {
    let store = app.store.as_ref();
    let first = store
        .first_seq()
        .await
        .map_err(crate::broker::Error::from)?;
    if first <= 1 || after_seq.is_some_and(|a| a.saturating_add(1) >= first) {
        return Ok(None);
    }
    let oldest = store
        .audit(AuditFilter {
            after_seq: Some(first - 1),
            limit: 1,
            ..AuditFilter::default()
        })
        .await
        .map_err(crate::broker::Error::from)?;
    Ok(oldest
        .first()
        .filter(|e| from.is_none_or(|f| f < e.event.time))
        .map(|e| ArchivedBefore {
            seq: e.seq,
            time: warden_domain::rfc3339(e.event.time),
        }))
}

/// The `from` and `to` parameters of a search or an export, either optional; both given, `from`
/// must come first (a range the wrong way round would silently match nothing).
fn period(
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(Option<OffsetDateTime>, Option<OffsetDateTime>), ApiError> {
    let from = from.map(|t| rfc3339("from", t)).transpose()?;
    let to = to.map(|t| rfc3339("to", t)).transpose()?;
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        return Err(ApiError::bad_request(
            "bad_period",
            "from must be before to (both RFC 3339, e.g. 2026-01-01T00:00:00Z)",
        ));
    }
    Ok((from, to))
}

/// Searches the audit log, oldest first. Administrators and `audit_readers` see everyone's
/// events; others their own.
#[utoipa::path(get, path = "/v1/audit", params(AuditQuery), security(("token" = [])),
    responses((status = 200, body = AuditList),
        (status = 400, description = "`bad_user`, `bad_target`, `bad_id` (`request`), `bad_code`, `bad_time` (`from` or `to`), `bad_period` (`from` is not before `to`), `bad_limit`", body = ErrorBody),
        (status = 403, description = "`not_permitted`: others' events, by one who is neither an administrator nor an audit reader", body = ErrorBody)))]
pub async fn search(
    State(app): State<Shared>,
    who: Authed,
    raw: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditList>, ApiError> {
    let filter = admitted(&app, &who, "audit.search", search_filter(&app, &who, raw)).await?;
    let archived_before = archived_behind(&app, filter.from, filter.after_seq).await?;
    let events = app
        .store
        .audit(filter)
        .await
        .map_err(crate::broker::Error::from)?;
    let events = events
        .into_iter()
        .map(|e| AuditRecord {
            seq: e.seq,
            leaf_hash: hex(&e.leaf_hash),
            event: serde_json::to_value(&e.event).unwrap_or_default(),
        })
        .collect();
    Ok(Json(AuditList {
        events,
        archived_before,
    }))
}

/// Why `given` is no event code, with the codes of its family (`policy.…`), or all of them.
fn unknown_code(given: &str) -> String {
    let family = given.split('.').next().unwrap_or_default();
    let all = Code::ALL.iter().map(|c| c.name());
    let mut known: Vec<&str> = all
        .clone()
        .filter(|n| n.split('.').next() == Some(family))
        .collect();
    if known.is_empty() {
        known = all.collect();
    }
    format!(
        "unknown event code {}; codes are names such as {} (or their numbers, W2000)",
        warden_domain::text::shown(given, 40),
        known.join(", ")
    )
}

/// What a search asks for, as far as the caller may see: others' events only for audit
/// readers.
fn search_filter(
    app: &Shared,
    who: &Authed,
    raw: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<AuditFilter, ApiError> {
    let q = query(raw)?;
    let mut user = q
        .user
        .as_deref()
        .map(|u| field("bad_user", u.parse()))
        .transpose()?;
    if !app.may_read_audit(&who.user) {
        if user.as_ref().is_some_and(|u| u != &who.user.name) {
            require_audit_reader(app, who, "search other users' events")?;
        }
        user = Some(who.user.name.clone());
    }
    let code = q
        .code
        .as_deref()
        .map(|c| Code::parse(c).ok_or_else(|| ApiError::invalid("bad_code", unknown_code(c))))
        .transpose()?;
    let (from, to) = period(q.from.as_deref(), q.to.as_deref())?;
    Ok(AuditFilter {
        user,
        target: q
            .target
            .as_deref()
            .map(|t| field("bad_target", t.parse()))
            .transpose()?,
        request: q
            .request
            .as_deref()
            .map(|r| field("bad_id", r.parse()))
            .transpose()?,
        codes: code.into_iter().collect(),
        from,
        to,
        after_seq: q.after_seq,
        limit: super::limit(q.limit, 1000, super::EVENTS_AT_ONCE)?,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Refuses, and audits as a refusal of `action`, a caller who is not an administrator.
async fn require_admin(
    app: &Shared,
    who: &Authed,
    action: &str,
    what: &str,
) -> Result<(), ApiError> {
    if app.is_admin(&who.user) {
        return Ok(());
    }
    let err = ApiError::forbidden(format!("only administrators can {what}"));
    Err(refuse(app, who, action, err).await)
}

/// Refuses a proof that needs the hashes of events from index `needed_from` (a sequence
/// number minus one) on when some of them were archived without their hashes kept: the store
/// no longer holds them. (Archived ranges prove themselves, with their segment.)
async fn refuse_archived(app: &Shared, needed_from: u64) -> Result<(), ApiError> {
    let hashed = app
        .store
        .first_leaf_hash()
        .await
        .map_err(crate::broker::Error::from)?;
    if hashed > needed_from + 1 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "archived",
            format!(
                "this proof needs the hashes of events from {} on, and those before {hashed} were archived without them: verify them with their archive segment (`warden audit verify --segment`)",
                needed_from + 1
            ),
        ));
    }
    Ok(())
}

/// Refuses an export of events the live log cannot prove: those sharing a block with events
/// archived before their leaf hashes were kept, saying from when on an export can start.
async fn refuse_unprovable(app: &Shared, events: &[StoredEvent]) -> Result<(), ApiError> {
    let Some(oldest) = events.first() else {
        return Ok(());
    };
    let first = app
        .store
        .first_leaf_hash()
        .await
        .map_err(crate::broker::Error::from)?;
    if first <= 1 {
        return Ok(());
    }
    let provable = (warden_audit::merkle::first_whole_block(first) << BLOCK_HEIGHT) + 1;
    if oldest.seq >= provable {
        return Ok(());
    }
    // Just after the newest of them: the search matches times to the millisecond.
    let after_them = events
        .iter()
        .take_while(|e| e.seq < provable)
        .map(|e| e.event.time)
        .max()
        .map(|t| warden_domain::to_millisecond(t) + time::Duration::milliseconds(1));
    let from = match after_them {
        Some(t) if events.iter().any(|e| e.seq >= provable) => {
            format!("export from {} on (`--from`)", warden_domain::rfc3339(t))
        }
        _ => "no event of this range can be proven from the live log".to_owned(),
    };
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "archived",
        format!(
            "events {}..{} share a block of the log with archived events, so the live log cannot prove them: {from}, and verify older events with their archive segment (`warden audit verify --segment`)",
            oldest.seq,
            provable - 1
        ),
    ))
}

/// The tree of the first `size` events, every node hashed once.
async fn whole_tree(app: &Shared, size: u64) -> Result<Proofs, ApiError> {
    refuse_archived(app, 0).await?;
    let leaves = app
        .store
        .leaf_hashes(0, size)
        .await
        .map_err(crate::broker::Error::from)?;
    // A hash per event: seconds of CPU for a long log, kept off the request workers.
    tokio::task::spawn_blocking(move || Proofs::new(leaves))
        .await
        .map_err(|e| internal(format!("hashing the audit tree failed: {e}")))
}

/// The first events' indexes of the blocks that inclusion proofs of the events at indexes
/// `leaves` (their seqs minus one) in the tree of the first `size` events pass through.
fn inclusion_blocks(size: u64, leaves: &[u64]) -> BTreeSet<u64> {
    leaves
        .iter()
        .flat_map(|&leaf| Proofs::blocks_needed(leaf, size, BLOCK_HEIGHT))
        .collect()
}

/// The tree of the first `size` events as far as proofs passing through the blocks whose first
/// events' indexes are `firsts` need it: the stored roots of its blocks and the hashes of the
/// events of those blocks. Read whole when those blocks are all of it, or when early blocks
/// have no stored roots (a log written by an older Warden).
async fn tree_for(app: &Shared, size: u64, firsts: BTreeSet<u64>) -> Result<Proofs, ApiError> {
    let count = size >> BLOCK_HEIGHT;
    if (firsts.len() as u64) << BLOCK_HEIGHT >= size {
        return whole_tree(app, size).await;
    }
    let roots = app
        .store
        .block_roots(count)
        .await
        .map_err(crate::broker::Error::from)?;
    if roots.len() as u64 != count {
        return whole_tree(app, size).await;
    }
    // Archived blocks keep their roots: proofs through live blocks alone still work.
    if let Some(&first) = firsts.first() {
        refuse_archived(app, first).await?;
    }
    let mut blocks = Vec::new();
    for first in firsts {
        let upto = (first + (1 << BLOCK_HEIGHT)).min(size);
        let hashes = app
            .store
            .leaf_hashes(first, upto)
            .await
            .map_err(crate::broker::Error::from)?;
        blocks.push((first, hashes));
    }
    Proofs::from_blocks(size, BLOCK_HEIGHT, roots, blocks).map_err(|e| {
        internal(format!(
            "the audit log's events up to {size} cannot be read whole ({e}); run `warden audit verify`"
        ))
    })
}

fn internal(message: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
}

fn hexes(hashes: &[[u8; 32]]) -> Vec<String> {
    hashes.iter().map(|h| hex(h)).collect()
}

fn proof_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("bad_proof_request", e.to_string())
}

async fn checkpoint_at(
    app: &Shared,
    size: Option<u64>,
) -> Result<warden_store::Checkpoint, ApiError> {
    let cp = match size {
        Some(s) => app.store.checkpoint(s).await,
        None => app.store.latest_checkpoint().await,
    }
    .map_err(crate::broker::Error::from)?;
    cp.ok_or_else(|| match size {
        Some(s) => ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no checkpoint at size {s}; proofs anchor to checkpoint sizes (see `warden audit checkpoint`)")),
        None => ApiError::new(StatusCode::NOT_FOUND, "not_found", "no checkpoint has been written yet; try again in a few seconds"),
    })
}

/// The newest signed checkpoint (C2SP signed note). Keep copies elsewhere: they later expose
/// any rewrite or truncation of the log.
#[utoipa::path(get, path = "/v1/audit/checkpoint", security(("token" = [])), responses((status = 200, content_type = "text/plain"), (status = 404, description = "`not_found`: no checkpoint has been written yet", body = ErrorBody)))]
pub async fn checkpoint(
    State(app): State<Shared>,
    _who: Authed,
) -> Result<impl IntoResponse, ApiError> {
    let cp = checkpoint_at(&app, None).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        cp.note,
    ))
}

/// The note verifier key for checkpoints: `name+keyid+base64`.
#[utoipa::path(get, path = "/v1/audit/verifier-key", responses((status = 200, content_type = "text/plain"),
    (status = 500, description = "`internal`: the verifier key cannot be read", body = ErrorBody)))]
pub async fn verifier_key(State(app): State<Shared>) -> Result<impl IntoResponse, ApiError> {
    let key =
        std::fs::read_to_string(app.config.data_dir.join("audit_verifier.pub")).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("verifier key unavailable: {e}"),
            )
        })?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], key))
}

/// Which checkpoint to anchor a proof to.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ProofQuery {
    /// A checkpoint's tree size; default the newest.
    #[param(format = "uint64")]
    pub size: Option<u64>,
}

/// An inclusion proof: the event's exact leaf bytes, the signed checkpoint, and the audit path.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InclusionProof {
    /// Always `inclusion`.
    pub kind: String,
    pub seq: u64,
    pub leaf_data: String,
    pub checkpoint: String,
    /// Hex hashes, RFC 9162 order.
    pub proof: Vec<String>,
}

/// Proves that event `seq` is in the log committed to by a signed checkpoint. Administrators
/// and audit readers.
#[utoipa::path(get, path = "/v1/audit/proof/{seq}", params(("seq" = u64, Path, minimum = 1, format = "uint64", description = "The event's sequence number"), ProofQuery), security(("token" = [])),
    responses((status = 200, body = InclusionProof), (status = 400, description = "`bad_path` (`seq` is not a number), `bad_proof_request` (`seq` is 0)", body = ErrorBody), (status = 403, description = "`not_permitted`: administrators and audit readers only", body = ErrorBody),
        (status = 404, description = "`no_such_event` (`seq` past the checkpoint's size: not yet in a checkpoint, or never written), `not_found` (no checkpoint of that size, or none yet)", body = ErrorBody),
        (status = 409, description = "`archived` (the events it needs were archived: verify them with their archive segment)", body = ErrorBody)))]
pub async fn proof(
    State(app): State<Shared>,
    who: Authed,
    seq: Result<Path<u64>, PathRejection>,
    raw: Result<Query<ProofQuery>, QueryRejection>,
) -> Result<Json<InclusionProof>, ApiError> {
    let asked = require_audit_reader(&app, &who, "read audit proofs").and_then(|()| {
        let seq = seq.map_err(|_| {
            ApiError::bad_request(
                "bad_path",
                "the path's last part must be an event's seq: a whole number from 1",
            )
        })?;
        Ok((seq.0, query(raw)?))
    });
    let (seq, q) = admitted(&app, &who, "audit.prove", asked).await?;
    match inclusion(&app, seq, q.size).await {
        Ok(proof) => Ok(Json(proof)),
        Err(e) => Err(refuse_4xx(&app, &who, "audit.prove", e).await),
    }
}

/// [`proof`] once the caller was admitted.
async fn inclusion(app: &Shared, seq: u64, size: Option<u64>) -> Result<InclusionProof, ApiError> {
    if seq == 0 {
        return Err(ApiError::bad_request(
            "bad_proof_request",
            "events are numbered from 1: there is no event 0",
        ));
    }
    let cp = checkpoint_at(app, size).await?;
    // Not yet checkpointed (or never written) is an event not found, as any other unknown id.
    if seq > cp.size {
        let which = if size.is_some() { "the" } else { "the newest" };
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_such_event",
            format!(
                "event {seq} is not in {which} checkpoint, of size {n}: prove an event from 1 to {n}, or wait for the next checkpoint to take it in",
                n = cp.size
            ),
        ));
    }
    let first = app
        .store
        .first_seq()
        .await
        .map_err(crate::broker::Error::from)?;
    if seq < first {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "archived",
            format!(
                "event {seq} was archived, with every event before {first}: verify it with its archive segment (`warden audit verify --segment`)"
            ),
        ));
    }
    let path = tree_for(app, cp.size, inclusion_blocks(cp.size, &[seq - 1]))
        .await?
        .inclusion(seq - 1)
        .map_err(proof_error)?;
    let leaf = app
        .store
        .audit_leaves(seq - 1, 1)
        .await
        .map_err(crate::broker::Error::from)?;
    let leaf = leaf
        .into_iter()
        .next()
        .filter(|l| l.seq == seq)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("event {seq} is missing from the store"),
            )
        })?;
    Ok(InclusionProof {
        kind: "inclusion".into(),
        seq,
        leaf_data: leaf.data,
        checkpoint: cp.note,
        proof: hexes(&path),
    })
}

/// Two checkpoints to relate.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    #[param(minimum = 1, format = "uint64")]
    pub from: u64,
    /// Default the newest checkpoint.
    #[param(format = "uint64")]
    pub to: Option<u64>,
}

/// A consistency proof: the newer checkpoint's log extends the older one's without changing it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConsistencyProof {
    /// Always `consistency`.
    pub kind: String,
    /// The size the proof starts from.
    pub old_size: u64,
    /// The server's checkpoint at `old_size`, or `null` where it keeps none: then the proof is
    /// checked against a checkpoint of that size kept elsewhere.
    pub old_checkpoint: Option<String>,
    pub new_checkpoint: String,
    pub proof: Vec<String>,
}

/// Proves that the log at checkpoint `to` is an append-only extension of its first `from`
/// events. `from` need not be a size the server kept a checkpoint at: an auditor's kept
/// checkpoint is checked against the log as it is now, whatever the server's own checkpoints
/// say (they may have been rewritten with the log). Administrators and audit readers, like
/// inclusion proofs.
#[utoipa::path(get, path = "/v1/audit/consistency", params(ConsistencyQuery), security(("token" = [])),
    responses((status = 200, body = ConsistencyProof), (status = 400, description = "`bad_proof_request` (`from` is not below `to`)", body = ErrorBody), (status = 403, description = "`not_permitted`: administrators and audit readers only", body = ErrorBody),
        (status = 404, description = "`not_found`: no checkpoint of that size, or none yet", body = ErrorBody),
        (status = 409, description = "`archived` (the events it needs were archived: verify them with their archive segment)", body = ErrorBody)))]
pub async fn consistency(
    State(app): State<Shared>,
    who: Authed,
    raw: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    let asked = require_audit_reader(&app, &who, "read audit proofs").and_then(|()| query(raw));
    let q = admitted(&app, &who, "audit.prove_consistency", asked).await?;
    match extension(&app, &q).await {
        Ok(proof) => Ok(Json(proof)),
        Err(e) => Err(refuse_4xx(&app, &who, "audit.prove_consistency", e).await),
    }
}

/// [`consistency`] once the caller was admitted.
async fn extension(app: &Shared, q: &ConsistencyQuery) -> Result<ConsistencyProof, ApiError> {
    let new = checkpoint_at(app, q.to).await?;
    if q.from == 0 {
        return Err(ApiError::bad_request(
            "bad_proof_request",
            "from must be 1 or more: every log extends the empty one, and no checkpoint is of size 0",
        ));
    }
    if q.from > new.size {
        return Err(ApiError::bad_request(
            "bad_proof_request",
            format!(
                "from {} is beyond the checkpoint of size {}: a consistency proof runs from an older size to a newer one",
                q.from, new.size
            ),
        ));
    }
    let old = app
        .store
        .checkpoint(q.from)
        .await
        .map_err(crate::broker::Error::from)?;
    let blocks = Proofs::blocks_for_consistency(q.from, new.size, BLOCK_HEIGHT);
    let path = tree_for(app, new.size, blocks.into_iter().collect())
        .await?
        .consistency(q.from)
        .map_err(proof_error)?;
    Ok(ConsistencyProof {
        kind: "consistency".into(),
        old_size: q.from,
        old_checkpoint: old.map(|cp| cp.note),
        new_checkpoint: new.note,
        proof: hexes(&path),
    })
}

/// Which events to export.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// RFC 3339; default the beginning.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339; default the newest checkpoint.
    #[param(format = DateTime)]
    pub to: Option<String>,
}

/// One exported event with its inclusion proof.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExportedEvent {
    pub seq: u64,
    pub leaf_data: String,
    pub proof: Vec<String>,
}

/// A self-contained bundle: events, each provably in the log of the signed checkpoint.
///
/// It holds a run of consecutive events: from the first whose time is at or after `from` to
/// the last whose time is before `to`, and every event between them. An event's time is taken
/// just before the log numbers it, so under load a few events between them are a few
/// milliseconds outside the range: they are in the bundle too, which never has a gap.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Bundle {
    pub verifier_key: String,
    /// The newest checkpoint, signed again with an `export FIRST LAST COUNT` line (or `export
    /// none`) naming the run of consecutive events the bundle holds, an `export-period FROM TO`
    /// line naming the range they were chosen by (RFC 3339, `-` for an open end), when events
    /// of the range were archived and so left out, an `export-archived-before SEQ` line (the
    /// oldest live event: the bundle holds none before it), and, when events of the range were
    /// left out because no checkpoint covered them yet, an `export-held-back N` line.
    pub checkpoint: String,
    pub events: Vec<ExportedEvent>,
    /// Present when the range reaches back to archived events, which the bundle leaves out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_before: Option<ArchivedBefore>,
    /// Present when events of the range came after the newest checkpoint, which the bundle
    /// leaves out since nothing signed proves them yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_back: Option<HeldBack>,
}

/// Events of an export's range that no signed checkpoint covered yet: not in the bundle.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HeldBack {
    /// How many.
    pub events: u64,
    /// The first of them, just after the newest checkpoint's last event.
    pub from_seq: u64,
    /// RFC 3339: by when the next checkpoint, which will cover them, is due; `null` when the
    /// server's checkpoints are failing.
    #[schema(format = DateTime)]
    pub next_checkpoint_by: Option<String>,
    /// What to do about them.
    pub message: String,
}

/// Most events in one export.
const EXPORT_MAX: usize = 100_000;

/// An export's time bound as its signed `export-period` line shows it.
fn period_end(t: Option<OffsetDateTime>) -> String {
    t.map_or_else(|| "-".to_owned(), warden_domain::rfc3339)
}

/// What to say of the events `first..=last` of an export's range that the checkpoint of
/// `size` does not cover, if there are any.
fn uncovered(app: &Shared, size: u64, first: u64, last: u64) -> Option<HeldBack> {
    let from_seq = size.max(first - 1) + 1;
    if last < from_seq {
        return None;
    }
    let events = last - from_seq + 1;
    let interval = app.config.checkpoint_interval.as_secs();
    let failing = match app.checkpoint_failure.lock() {
        Ok(failure) => failure.is_some(),
        Err(_) => true,
    };
    // The checkpointer looks for new events every `interval`: by then at the latest (and a
    // second for the signing).
    let by = (!failing).then(|| {
        let wait = time::Duration::seconds(i64::try_from(interval).unwrap_or(i64::MAX / 2) + 1);
        warden_domain::rfc3339(warden_domain::to_millisecond(crate::state::now()) + wait)
    });
    let which = match events {
        1 => format!("event {from_seq} of the range is"),
        n => format!("{n} events of the range, from {from_seq} on, are"),
    };
    let message = match &by {
        Some(by) => format!(
            "{which} not in the bundle: no signed checkpoint covers them yet; the next, due by {by} (one is signed every {interval} s while events come), will: export again after it, into a new directory"
        ),
        None => format!(
            "{which} not in the bundle: no signed checkpoint covers them yet, and the server's checkpoints are failing (its log says why, and /readyz): export again once one is signed"
        ),
    };
    Some(HeldBack {
        events,
        from_seq,
        next_checkpoint_by: by,
        message,
    })
}

/// Exports the events of a time range, each with an inclusion proof against the newest signed
/// checkpoint: a run of consecutive events, from the first at or after `from` to the last
/// before `to` (see [`Bundle`]), as far as that checkpoint covers them (`held_back` counts the
/// rest). Administrators and audit readers.
#[utoipa::path(get, path = "/v1/audit/export", params(ExportQuery), security(("token" = [])),
    responses((status = 200, body = Bundle), (status = 400, description = "`bad_time` (`from` or `to`), `bad_period` (`from` is not before `to`)", body = ErrorBody), (status = 403, description = "`not_permitted`: administrators and audit readers only", body = ErrorBody),
        (status = 409, description = "`archived` (the events it needs were archived: verify them with their archive segment)", body = ErrorBody),
        (status = 422, description = "`range_too_large`: more events than one bundle holds", body = ErrorBody),
        (status = 502, description = "`issuer_failed`: the bundle could not be signed", body = ErrorBody)))]
pub async fn export(
    State(app): State<Shared>,
    who: Authed,
    raw: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Json<Bundle>, ApiError> {
    let asked = require_audit_reader(&app, &who, "export the audit log")
        .and_then(|()| query(raw))
        .and_then(|q| period(q.from.as_deref(), q.to.as_deref()));
    let (from, to) = admitted(&app, &who, "audit.export", asked).await?;
    let cp = checkpoint_at(&app, None).await?;
    let too_large = || {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "range_too_large",
            format!(
                "the range holds more than {EXPORT_MAX} events, more than one bundle holds: export it in shorter ranges (--from and --to)"
            ),
        )
    };
    let whole = app.store.audit_whole(
        AuditFilter {
            from,
            to,
            ..Default::default()
        },
        EXPORT_MAX,
    );
    let events = match whole.await.map_err(crate::broker::Error::from)? {
        Some(events) => events,
        None => return Err(refuse_4xx(&app, &who, "audit.export", too_large()).await),
    };
    if let Err(e) = refuse_unprovable(&app, &events).await {
        return Err(refuse_4xx(&app, &who, "audit.export", e).await);
    }
    // Where the live log starts, read after its events: an archive made while they were read
    // is said too, never a bundle silently short of the events it took.
    let archived_before = archived_behind(&app, from, None).await?;
    // The run of events from the first in the range to the last: those between them whose
    // times fall just outside it (numbered a little later or earlier than timed) are in it too,
    // or the bundle would have gaps that tell of events taken out.
    let run = match (events.first(), events.last()) {
        (Some(first), Some(last)) => Some((first.seq, last.seq)),
        _ => None,
    };
    drop(events);
    if run.is_some_and(|(first, last)| last - first >= EXPORT_MAX as u64) {
        return Err(refuse_4xx(&app, &who, "audit.export", too_large()).await);
    }
    if let (Some((first, _)), Some(a)) = (run, &archived_before)
        && first < a.seq
    {
        let err = ApiError::new(
            StatusCode::CONFLICT,
            "archived",
            format!(
                "events {first}..{} of the range were archived while the export read them: export again (the bundle then starts at event {})",
                a.seq - 1,
                a.seq
            ),
        );
        return Err(refuse_4xx(&app, &who, "audit.export", err).await);
    }
    let held_back = run.and_then(|(first, last)| uncovered(&app, cp.size, first, last));
    // Only what the checkpoint signs: the events after it have no proof yet.
    let run = run
        .map(|(first, last)| (first, last.min(cp.size)))
        .filter(|(first, end)| first <= end);
    let verifier_key = std::fs::read_to_string(app.config.data_dir.join("audit_verifier.pub"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    // The checkpoint again, signed with the run of events the bundle holds and the range they
    // were chosen by: no event can be taken out of the bundle unseen, nor the bundle passed off
    // as another range's.
    let mut lines = vec![
        match run {
            Some((first, end)) => format!("export {first} {end} {}", end - first + 1),
            None => "export none".to_owned(),
        },
        format!("export-period {} {}", period_end(from), period_end(to)),
    ];
    // Events of the range archived before the live log starts are in archive segments, not in
    // the bundle: signed, so that no verification takes the bundle for the whole range.
    if let Some(a) = &archived_before {
        lines.push(format!("export-archived-before {}", a.seq));
    }
    if let Some(h) = &held_back {
        lines.push(format!("export-held-back {}", h.events));
    }
    let checkpoint = warden_audit::Checkpoint::open(&cp.note, &app.audit_signer.verifier())
        .and_then(|mut signed| {
            signed.extensions.extend(lines);
            signed.sign(&app.audit_signer)
        })
        .map_err(|e| crate::broker::Error::Issuer(format!("signing the export: {e}")))?;
    let bundle = |events| {
        Json(Bundle {
            verifier_key,
            checkpoint,
            events,
            archived_before,
            held_back,
        })
    };
    // No event, no proof to build (nor to refuse for the archive behind it).
    let Some((first, end)) = run else {
        return Ok(bundle(Vec::new()));
    };
    let indexes: Vec<u64> = (first - 1..end).collect();
    let tree = tree_for(&app, cp.size, inclusion_blocks(cp.size, &indexes)).await?;
    let mut out = Vec::with_capacity(usize::try_from(end - first + 1).unwrap_or(0));
    // The events' exact bytes, read on until the run is whole; one missing is a damaged log,
    // never a bundle short of it.
    let mut next = first;
    while next <= end {
        let want = usize::try_from(end - next + 1).unwrap_or(usize::MAX);
        let leaves = app
            .store
            .audit_leaves(next - 1, want.min(warden_store::READ_MAX))
            .await
            .map_err(crate::broker::Error::from)?;
        if leaves.is_empty() {
            return Err(missing_event(next));
        }
        for leaf in leaves.into_iter().take_while(|l| l.seq <= end) {
            if leaf.seq != next {
                return Err(missing_event(next));
            }
            let proof = tree.inclusion(leaf.seq - 1).map_err(proof_error)?;
            out.push(ExportedEvent {
                seq: leaf.seq,
                leaf_data: leaf.data,
                proof: hexes(&proof),
            });
            next += 1;
        }
    }
    Ok(bundle(out))
}

/// The error of an export whose run of events lacks event `seq` in the live log.
fn missing_event(seq: u64) -> ApiError {
    internal(format!(
        "the audit log's event {seq} is missing, though a checkpoint covers it: run `warden audit verify` on the data dir"
    ))
}

/// What an archive sealed: the segment file and the range of events in it, or, with `file`
/// null, why nothing was.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ArchiveResult {
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
    /// Of the segment file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The export sink that has not delivered the events the cutoff would have archived too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_back_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Which events to seal.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArchiveBody {
    /// RFC 3339: events older than this (up to the newest checkpoint covering only them).
    #[schema(format = DateTime)]
    pub before: String,
}

/// Seals old events into a self-verifying archive segment and removes them from the live log
/// (retention does this daily), never events an export sink has not delivered yet (409
/// `sink_behind` when nothing else is left). Administrators.
#[utoipa::path(post, path = "/v1/audit/archive", request_body = ArchiveBody, security(("token" = [])),
    responses((status = 200, body = ArchiveResult), (status = 400, description = "`bad_time` (`before` is not an RFC 3339 time, or is in the future)", body = ErrorBody),
        (status = 403, description = "`not_permitted`: administrators only", body = ErrorBody),
        (status = 409, description = "`sink_behind`: only events an export sink has not delivered are left to archive", body = ErrorBody),
        (status = 500, description = "`archive_failed`: the segment could not be written; the live log is unchanged", body = ErrorBody)))]
pub async fn archive(
    State(app): State<Shared>,
    who: Authed,
    raw: Result<JsonBody<ArchiveBody>, ApiError>,
) -> Result<Json<ArchiveResult>, ApiError> {
    require_admin(&app, &who, "audit.archive", "archive the audit log").await?;
    let b = body(&app, &who, "audit.archive", raw).await?;
    let before = rfc3339("before", &b.before).and_then(|before| {
        if before > crate::state::now() {
            return Err(ApiError::bad_request(
                "bad_time",
                format!(
                    "before {} is in the future: archive events older than a time that has passed",
                    b.before
                ),
            ));
        }
        Ok(before)
    });
    let before = match before {
        Ok(b) => b,
        Err(e) => return Err(refuse(&app, &who, "audit.archive", e).await),
    };
    let archived = app
        .archive(
            before,
            warden_domain::audit::Actor::user(who.user.name.clone(), who.source.clone()),
        )
        .await
        .map_err(|e| match e.downcast_ref::<crate::archive::SinkBehind>() {
            Some(behind) => ApiError::new(StatusCode::CONFLICT, "sink_behind", behind.to_string()),
            None => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "archive_failed",
                e.to_string(),
            ),
        });
    let archived = match archived {
        Ok(a) => a,
        Err(e) => return Err(refuse_4xx(&app, &who, "audit.archive", e).await),
    };
    Ok(Json(match archived {
        Some(a) => ArchiveResult {
            file: Some(a.file),
            from: Some(a.from),
            to: Some(a.to),
            sha256: Some(a.sha256),
            held_back_by: a.held_back_by,
            message: None,
        },
        None => ArchiveResult {
            message: Some(format!(
                "nothing to archive: no checkpoint covers only events before {}",
                b.before
            )),
            ..ArchiveResult::default()
        },
    }))
}

/// Deletes an archive segment past retention (409 `segment_retained` for one that is not, or
/// when no retention is set); the deletion is audited first. Administrators.
#[utoipa::path(delete, path = "/v1/audit/segments/{name}", security(("token" = [])),
    responses((status = 204), (status = 400, description = "`bad_segment_name`: not an archive segment's name", body = ErrorBody),
        (status = 403, description = "`not_permitted`: administrators only", body = ErrorBody),
        (status = 404, description = "`not_found`: no such segment", body = ErrorBody),
        (status = 409, description = "`segment_retained`: the segment is within retention, or no retention is set", body = ErrorBody),
        (status = 500, description = "`delete_failed`: the segment could not be deleted", body = ErrorBody)))]
pub async fn delete_segment(
    State(app): State<Shared>,
    who: Authed,
    PathText(name): PathText,
) -> Result<StatusCode, ApiError> {
    require_admin(
        &app,
        &who,
        "audit.delete_segment",
        "delete archive segments",
    )
    .await?;
    let deleted = app
        .delete_segment(
            &name,
            warden_domain::audit::Actor::user(who.user.name.clone(), who.source.clone()),
        )
        .await;
    let Err(e) = deleted else {
        return Ok(StatusCode::NO_CONTENT);
    };
    use crate::archive::DeleteError as E;
    let (status, code) = match &e {
        E::BadName(_) => (StatusCode::BAD_REQUEST, "bad_segment_name"),
        E::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        E::Retained { .. } => (StatusCode::CONFLICT, "segment_retained"),
        E::Other(_) => (StatusCode::INTERNAL_SERVER_ERROR, "delete_failed"),
    };
    let e = ApiError {
        // A name that is none may be anything typed in the wrong place: kept by its length.
        quotes_input: matches!(e, E::BadName(_)),
        ..ApiError::new(status, code, format!("{e:#}"))
    };
    Err(refuse_4xx(&app, &who, "audit.delete_segment", e).await)
}
