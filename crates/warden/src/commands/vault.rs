//! `vault rewrap`: master key rotation, offline.
//!
//! With the server stopped: `warden vault rewrap --data-dir DIR` creates `DIR/master.key.new`,
//! re-wraps every secret's data key under it in one transaction, then swaps it in as
//! `DIR/master.key` and keeps the old key as `DIR/master.key.old` for you to destroy once the
//! server starts cleanly. Secrets' ciphertexts are not touched; the database is then rewritten
//! from its live rows, so that no value deleted before the rotation lingers in its free pages
//! under the old key. A rotation cut short at any
//! point is finished (or, before its commit, done afresh) by running it again: which key opens
//! the stored secrets says how far it got.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;
use warden_domain::audit::{Actor, Code, Event};
use warden_server::keys::{MASTER_KEY_ENV, Sealer};

use crate::exit::{self, Failure};
use crate::output::Output;

#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// Rotate the master key: re-wrap every sealed secret under a new key (server stopped).
    Rewrap {
        /// The stopped server's data directory, whose master.key and sealed secrets it rewraps.
        #[arg(long, default_value = "warden-data")]
        data_dir: PathBuf,
    },
}

pub fn run(cmd: VaultCommand, out: Output) -> anyhow::Result<()> {
    let VaultCommand::Rewrap { data_dir } = cmd;
    let current = data_dir.join("master.key");
    let next = data_dir.join("master.key.new");
    let db = super::database_in(&data_dir)?;
    // Not where others could read or swap the new key: a server would refuse the dir anyway.
    warden_server::serve::check_private_dir(&data_dir)?;
    // A running server would keep sealing under the old key: it must be stopped.
    let _lock = warden_server::serve::lock_data_dir(&data_dir).map_err(|e| {
        match e.downcast::<warden_server::serve::DataDirInUse>() {
            Ok(in_use) => Failure::new(exit::CONFLICT, in_use.to_string()).into(),
            Err(e) => e,
        }
    })?;
    let sample = warden_store::a_sealed_value(&db)?;
    // A rotation cut short leaves master.key.new. If the secrets were re-wrapped under it (the
    // commit happened), the rotation only has its files to finish; if not, it is left over.
    if next.exists() {
        let new = Sealer::load(&next)?;
        if sample.as_deref().is_some_and(|s| new.opens(s)) {
            install(&data_dir, &current, &next)?;
            return said(
                out,
                json!({ "finished": true }),
                "Finished a rotation that was cut short: the secrets were already re-wrapped under master.key.new, now master.key. Destroy master.key.old once Warden starts cleanly.",
            );
        }
        std::fs::remove_file(&next)
            .with_context(|| format!("removing the unused {}", next.display()))?;
    }
    let old = match std::env::var(MASTER_KEY_ENV) {
        Ok(_) => Sealer::load_or_create(&current)?,
        // Without the key the secrets were sealed under there is nothing to re-wrap them from.
        Err(_) if !current.exists() => {
            return Err(Failure::new(
                exit::FAILURE,
                format!(
                    "{} does not exist: restore the master key from your backup into it, or set {MASTER_KEY_ENV} to the key (its base64), then run the rotation again; nothing was changed",
                    current.display()
                ),
            )
            .into());
        }
        Err(_) => Sealer::load(&current)?,
    };
    if let Some(s) = &sample
        && !old.opens(s)
    {
        return Err(Failure::new(
            exit::FAILURE,
            "the master key (master.key, or WARDEN_MASTER_KEY) does not open the secrets sealed in this data dir: nothing was changed; use the key they were sealed under",
        )
        .into());
    }
    let new = Sealer::create(&next)?;
    let n = warden_store::rewrap_sealed(
        &db,
        |s| old.rewrap(s, &new).map_err(|e| e.to_string()),
        |n| {
            Event::new(
                Code::MasterKeyRotated,
                Actor::system(),
                warden_server::state::now(),
            )
            .details(json!({ "rewrapped": n, "by": "warden vault rewrap" }))
        },
    );
    let n = match n {
        Ok(n) => n,
        Err(e) => {
            // Nothing was committed: the old key still opens everything.
            let _ = std::fs::remove_file(&next);
            return Err(e.into());
        }
    };
    // Committed: the new key is the one now, whatever the compaction does.
    let compacted = warden_store::compact(&db);
    install(&data_dir, &current, &next)?;
    if let Err(e) = compacted {
        eprintln!(
            "warning: the database could not be rewritten from its live rows ({e}): values deleted before the rotation may linger in its free pages, sealed under the old key; run `sqlite3 {} VACUUM` with the server stopped",
            db.display()
        );
    }
    let after = if std::env::var_os(MASTER_KEY_ENV).is_some() {
        format!(
            "It is in master.key: set {MASTER_KEY_ENV} to its base64 (`base64 -w0 master.key`) before starting Warden, and destroy the old value once it starts cleanly."
        )
    } else {
        "The old key is in master.key.old: destroy it once Warden starts cleanly.".to_owned()
    };
    said(
        out,
        json!({ "rewrapped": n }),
        &format!("Re-wrapped {n} secret(s) under a new master key. {after}"),
    )
}

/// Swaps the new key in: `master.key` (if there is one) becomes `master.key.old`, then
/// `master.key.new` becomes `master.key`, and the directory is synced so that the renames
/// outlast a crash. Run again after a crash between the two, it finds no `master.key` and
/// finishes with the second.
fn install(dir: &Path, current: &Path, next: &Path) -> anyhow::Result<()> {
    if current.exists() {
        std::fs::rename(current, dir.join("master.key.old"))
            .with_context(|| format!("keeping {} as master.key.old", current.display()))?;
    }
    std::fs::rename(next, current)
        .with_context(|| format!("installing {} as {}", next.display(), current.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// Prints the outcome: `v` with `--json`, `text` otherwise.
fn said(out: Output, v: serde_json::Value, text: &str) -> anyhow::Result<()> {
    if out.json {
        out.json(&v)
    } else {
        println!("{text}");
        Ok(())
    }
}
