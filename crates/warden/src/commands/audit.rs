//! `audit search|checkpoint|verifier-key|verify|prove|prove-consistency|verify-proof|export|status`.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::Value;

use super::audit_verify;
use crate::client::{Client, query, segment};
use crate::output::{Output, instant, table};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Search events by user, target, request, code and time (RFC 3339).
    Search {
        /// Only events by this user (who acted).
        #[arg(long)]
        user: Option<String>,
        /// Only events about this target.
        #[arg(long)]
        target: Option<String>,
        /// Only events about this request (its id).
        #[arg(long)]
        request: Option<String>,
        /// Event code (W2000) or name (request.created).
        #[arg(long)]
        code: Option<String>,
        /// Only events at or after this time (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Only events before this time (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        /// Only events after this sequence number: the next page, from the last one shown.
        #[arg(long, value_parser = super::sequence_number)]
        after: Option<u64>,
        /// At most this many events, oldest first (1 to 10000).
        #[arg(long, default_value_t = 100, value_parser = super::events_limit)]
        limit: usize,
    },
    /// Print the newest signed checkpoint; keep copies elsewhere to detect truncation later.
    Checkpoint,
    /// Print the verifier key for checkpoints and proofs.
    VerifierKey,
    /// Verify the whole log offline from a data directory, or an export bundle.
    Verify {
        /// The server's data directory (read directly; no server needed).
        #[arg(long, default_value = "warden-data", conflicts_with = "bundle")]
        data_dir: PathBuf,
        /// A verifier key, or a file holding one (default for a data dir:
        /// DATA_DIR/audit_verifier.pub; required for a bundle or a segment).
        #[arg(long)]
        verifier_key: Option<String>,
        /// A checkpoint kept outside the server (repeatable): detects truncation and rewrites,
        /// of archived events too. With --segment it must fall within the segment's events,
        /// with --bundle be of the bundle's size.
        #[arg(long)]
        checkpoint: Vec<PathBuf>,
        /// Verify an export bundle written by `warden audit export` instead.
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// Verify an archive segment (DATA_DIR/archive/segment-*.json) instead.
        #[arg(long, conflicts_with = "bundle")]
        segment: Option<PathBuf>,
    },
    /// Print an inclusion proof for event SEQ against a signed checkpoint.
    Prove {
        /// The event's sequence number (SEQ in `audit search`, `seq` with --json).
        #[arg(value_parser = super::sequence_number)]
        seq: u64,
        /// The checkpoint's size (default: the newest).
        #[arg(long, value_parser = super::log_size)]
        size: Option<u64>,
    },
    /// Print a consistency proof: the log at a checkpoint extends its first FROM events.
    ProveConsistency {
        /// The size to prove from: that of a checkpoint you kept (its second line), whether or
        /// not the server still has one of that size.
        #[arg(long, value_parser = super::log_size)]
        from: u64,
        /// The checkpoint's size to prove to (default: the newest).
        #[arg(long, value_parser = super::log_size)]
        to: Option<u64>,
    },
    /// Check a proof printed by `prove` or `prove-consistency`, offline.
    VerifyProof {
        /// The proof, as `prove` or `prove-consistency` printed it.
        file: PathBuf,
        /// A verifier key, or a file holding one.
        #[arg(long)]
        verifier_key: String,
        /// A checkpoint you kept earlier (`warden audit checkpoint`): the proof must start from
        /// it, root and all, or the log was rewritten since.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
    /// Seal events older than TIME into a self-verifying archive segment (retention does this
    /// daily when `audit_retention_days` is set).
    Archive {
        /// RFC 3339.
        #[arg(long)]
        before: String,
    },
    /// Delete an archive segment past retention (audited).
    DeleteSegment {
        /// The segment's file name in DATA_DIR/archive (segment-….json).
        name: String,
    },
    /// Write a self-contained, offline-verifiable bundle of events to DIR.
    Export {
        /// Where to write the bundle (a new or empty directory: created if missing; one holding anything is refused).
        dir: PathBuf,
        /// RFC 3339.
        #[arg(long)]
        from: Option<String>,
        /// RFC 3339.
        #[arg(long)]
        to: Option<String>,
    },
    /// Show how far each export sink (`[[sinks]]` in the server's config) has delivered.
    Status,
}

pub async fn run(server: Option<String>, cmd: AuditCommand, out: Output) -> anyhow::Result<()> {
    let (user, target, request, code, from, to, after, limit) = match cmd {
        AuditCommand::Search {
            user,
            target,
            request,
            code,
            from,
            to,
            after,
            limit,
        } => (user, target, request, code, from, to, after, limit),
        AuditCommand::Checkpoint => {
            let note = Client::new(server)?
                .get_text_authed("/v1/audit/checkpoint")
                .await?;
            return out.document("checkpoint", &note);
        }
        AuditCommand::VerifierKey => {
            let client = Client::new(server)?;
            let key = client.get_text("/v1/audit/verifier-key").await?;
            // What is printed here is kept to check the log by: a page that is no key would
            // only fail later, at a verification.
            if key.trim().parse::<warden_audit::NoteVerifier>().is_err() {
                return Err(client.not_a("audit verifier key").into());
            }
            return out.document("verifier_key", &key);
        }
        AuditCommand::Verify {
            data_dir,
            verifier_key,
            checkpoint,
            bundle,
            segment,
        } => {
            return match (bundle, segment) {
                (Some(dir), _) => {
                    audit_verify::bundle(&dir, verifier_key.as_deref(), &checkpoint, out)
                }
                (None, Some(file)) => {
                    audit_verify::segment(&file, verifier_key.as_deref(), &checkpoint, out)
                }
                (None, None) => {
                    audit_verify::store(&data_dir, verifier_key.as_deref(), &checkpoint, out)
                }
            };
        }
        AuditCommand::Prove { seq, size } => {
            let q = query(&[("size", size.map(|s| s.to_string()))]);
            let v: Value = Client::new(server)?
                .get(&format!("/v1/audit/proof/{}{q}", segment(seq)))
                .await?;
            return out.json(&v);
        }
        AuditCommand::ProveConsistency { from, to } => {
            let q = query(&[
                ("from", Some(from.to_string())),
                ("to", to.map(|t| t.to_string())),
            ]);
            let v: Value = Client::new(server)?
                .get(&format!("/v1/audit/consistency{q}"))
                .await?;
            return out.json(&v);
        }
        AuditCommand::Archive { before } => {
            let v: Value = Client::new(server)?
                .post(
                    "/v1/audit/archive",
                    &serde_json::json!({ "before": before }),
                )
                .await?;
            if out.json {
                return out.json(&v);
            }
            if v["file"].is_null() {
                println!("Nothing to archive: no checkpoint covers only events before {before}.");
                return Ok(());
            }
            println!(
                "Archived events {}..{} into {} (sha256 {}).",
                v["from"],
                v["to"],
                v["file"].as_str().unwrap_or_default(),
                v["sha256"].as_str().unwrap_or_default()
            );
            if let Some(sink) = v["held_back_by"].as_str() {
                println!(
                    "Later events stay in the live log until export sink {sink:?} delivers them (see `warden audit status`)."
                );
            }
            return Ok(());
        }
        AuditCommand::DeleteSegment { name } => {
            let _: Value = Client::new(server)?
                .delete(&format!("/v1/audit/segments/{}", segment(&name)))
                .await?;
            if out.json {
                return out.json(&serde_json::json!({ "deleted": name }));
            }
            println!("Deleted {name}; the deletion is in the audit log.");
            return Ok(());
        }
        AuditCommand::VerifyProof {
            file,
            verifier_key,
            checkpoint,
        } => {
            return audit_verify::proof(&file, &verifier_key, checkpoint.as_deref(), out);
        }
        AuditCommand::Export { dir, from, to } => {
            audit_verify::bundle_dir_free(&dir)?;
            let q = query(&[("from", from), ("to", to)]);
            let v: Value = Client::new(server)?
                .get(&format!("/v1/audit/export{q}"))
                .await?;
            return audit_verify::write_bundle(&dir, &v, out);
        }
        AuditCommand::Status => return status(server, out).await,
    };
    let q = query(&[
        ("user", user),
        ("target", target),
        ("request", request),
        ("code", code),
        ("from", from),
        ("to", to),
        ("after_seq", after.map(|a| a.to_string())),
        ("limit", Some(limit.to_string())),
    ]);
    let v: Value = Client::new(server)?.get(&format!("/v1/audit{q}")).await?;
    if out.json {
        return out.json(&v);
    }
    let shown = v["events"].as_array().map_or(0, Vec::len);
    let next = v["events"]
        .as_array()
        .and_then(|e| e.last())
        .and_then(|e| e["seq"].as_u64());
    let rows: Vec<Vec<String>> = v["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let ev = &e["event"];
            let s = |p: &str| {
                ev.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            // A failed sign-in has no user, only the name typed; a refusal says why; an event
            // about another user (a password set, an offboarding) names them after an arrow.
            let user = match (s("/actor/user"), s("/actor/claimed")) {
                (user, claimed) if user.is_empty() && !claimed.is_empty() => {
                    format!("{claimed} (claimed)")
                }
                (user, _) => user,
            };
            let user = match s("/details/user") {
                about if about.is_empty() || about == user => user,
                about if user.is_empty() => format!("→ {about}"),
                about => format!("{user} → {about}"),
            };
            let outcome = match (s("/outcome/result"), s("/outcome/code")) {
                (result, code) if code.is_empty() => result,
                (result, code) => format!("{result}: {code}"),
            };
            vec![
                e["seq"].to_string(),
                instant(ev, "time"),
                s("/code"),
                s("/action"),
                user,
                s("/target"),
                s("/request_id"),
                outcome,
                s("/session_id"),
            ]
        })
        .collect();
    table(
        &[
            "SEQ", "TIME", "CODE", "ACTION", "USER", "TARGET", "REQUEST", "OUTCOME", "SESSION",
        ],
        &rows,
    );
    if let Some(note) = audit_verify::archived_note(&v, "searched") {
        eprintln!("{note}");
    }
    // A full page may have more after it: say how to read on rather than stop silently.
    if let Some(last) = next.filter(|_| shown >= limit.min(10_000)) {
        eprintln!(
            "{} shown, oldest first; more may follow: add --after {last}",
            crate::output::count(shown, "event")
        );
    }
    Ok(())
}

/// Prints each sink's cursor, lag and failures.
async fn status(server: Option<String>, out: Output) -> anyhow::Result<()> {
    let v: Value = Client::new(server)?.get("/v1/audit/status").await?;
    if out.json {
        return out.json(&v);
    }
    let rows: Vec<Vec<String>> = v["sinks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let text = |k: &str| s[k].as_str().unwrap_or("").to_owned();
            vec![
                text("name"),
                text("kind"),
                s["cursor"].to_string(),
                v["log_size"].to_string(),
                s["lag"].to_string(),
                s["failures"].to_string(),
                text("last_success"),
                // The error of the failures in a row now; one a success has since passed is
                // history (still in `--json`).
                if s["failures"].as_u64().unwrap_or(0) > 0 {
                    text("last_error")
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("No export sinks configured (add [[sinks]] to the server's config file).");
        return Ok(());
    }
    table(
        &[
            "SINK",
            "KIND",
            "CURSOR",
            "SIZE",
            "LAG",
            "FAILURES",
            "LAST SUCCESS",
            "LAST ERROR",
        ],
        &rows,
    );
    Ok(())
}
