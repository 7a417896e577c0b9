//! `vault rewrap`: master key rotation, offline.
//!
//! With the server stopped: `warden vault rewrap --data-dir DIR` creates `DIR/master.key.new`,
//! re-wraps every secret's data key under it in one transaction, then swaps it in as
//! `DIR/master.key` and keeps the old key as `DIR/master.key.old` for you to destroy once the
//! server starts cleanly. Secrets' ciphertexts are not touched.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;
use warden_domain::audit::{Actor, Code, Event};
use warden_server::keys::Sealer;

use crate::output::Output;

#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// Rotate the master key: re-wrap every sealed secret under a new key (server stopped).
    Rewrap {
        #[arg(long, default_value = "warden-data")]
        data_dir: PathBuf,
    },
}

pub fn run(cmd: VaultCommand, out: Output) -> anyhow::Result<()> {
    let VaultCommand::Rewrap { data_dir } = cmd;
    let current = data_dir.join("master.key");
    let next = data_dir.join("master.key.new");
    let old = Sealer::load(&current)?;
    // A running server would keep sealing under the old key: it must be stopped.
    let _lock = warden_server::serve::lock_data_dir(&data_dir)?;
    let new = Sealer::create(&next)?;
    let n = warden_store::rewrap_sealed(
        &data_dir.join("warden.db"),
        |s| old.rewrap(s, &new).map_err(|e| e.to_string()),
        |n| {
            Event::new(
                Code::MasterKeyRotated,
                Actor::system(),
                time::OffsetDateTime::now_utc(),
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
    std::fs::rename(&current, data_dir.join("master.key.old"))?;
    std::fs::rename(&next, &current)?;
    if out.json {
        out.json(&json!({ "rewrapped": n }))
    } else {
        println!(
            "Re-wrapped {n} secret(s) under a new master key. The old key is in master.key.old: destroy it once Warden starts cleanly."
        );
        Ok(())
    }
}
