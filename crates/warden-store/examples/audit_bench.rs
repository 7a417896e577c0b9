//! Audit log throughput: durable appends through the group-commit writer, offline
//! verification of the stored log, and the machine's raw SHA-256 speed for reference.
//!
//! `cargo run --release -p warden-store --example audit_bench [EVENTS]` prints
//! `name: value unit` lines. Run by `bench/run audit`.

use std::time::Instant;

use time::OffsetDateTime;
use warden_audit::{Checkpoint, Record, Tree, verify_log};
use warden_domain::UserName;
use warden_domain::audit::{Actor, Code, Event};
use warden_store::{AuditReader, SqliteStore, Store};

/// Concurrent writers; each appends batches the size of a request's events.
const WRITERS: usize = 256;
const PER_WRITE: usize = 4;

fn event(user: &UserName, i: usize) -> Event {
    Event::new(Code::RequestCreated, Actor::user(user.clone(), Some("127.0.0.1".into())), OffsetDateTime::now_utc())
        .details(serde_json::json!({ "reason": "benchmark", "ticket": format!("INC-{i}"), "ttl": "1h", "tier": "peer(sre) & manager" }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let total: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(200_000);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.db");
    let store = SqliteStore::open(&path)?;

    // Durable appends: WRITERS tasks, each writing PER_WRITE events per transaction share.
    let started = Instant::now();
    let mut tasks = Vec::new();
    let writes = total / PER_WRITE / WRITERS;
    let user: UserName = "alice".parse()?;
    for w in 0..WRITERS {
        let store = store.clone();
        let user = user.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..writes {
                let events = (0..PER_WRITE)
                    .map(|k| event(&user, w * 1_000_000 + n * PER_WRITE + k))
                    .collect();
                store.append(events).await?;
            }
            Ok::<_, warden_store::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let appended = writes * WRITERS * PER_WRITE;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "audit.append_durable: {:.0} events/s ({appended} events, fsync per commit)",
        appended as f64 / secs
    );

    // Verification from the file, as `warden audit verify` does: stream, rehash, rebuild.
    let reader = AuditReader::open(&path)?;
    let mut tree = Tree::new();
    for (_, data, _) in reader.leaves(0, usize::MAX)? {
        tree.push(warden_audit::merkle::leaf_hash(data.as_bytes()));
    }
    let checkpoint = Checkpoint {
        origin: "bench".into(),
        size: tree.size(),
        root: tree.root(),
        extensions: vec![],
    };
    let started = Instant::now();
    let report = verify_log(records(&reader)?, &[checkpoint], &[]);
    let secs = started.elapsed().as_secs_f64();
    if !report.is_clean() {
        return Err("the benchmark log does not verify".into());
    }
    println!(
        "audit.verify: {:.0} events/s ({} events read from SQLite, rehashed, root checked)",
        report.events_checked as f64 / secs,
        report.events_checked
    );

    // Raw SHA-256 on 1 MiB buffers, the floor under both figures.
    let buf = vec![0x5au8; 1 << 20];
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed().as_secs_f64() < 1.0 {
        std::hint::black_box(warden_audit::merkle::leaf_hash(&buf));
        n += 1;
    }
    println!(
        "audit.sha256_raw: {:.0} MB/s",
        (n as f64 * buf.len() as f64) / started.elapsed().as_secs_f64() / 1e6
    );
    Ok(())
}

/// Every stored leaf as verification records.
fn records(reader: &AuditReader) -> Result<Vec<Record>, warden_store::Error> {
    Ok(reader
        .leaves(0, usize::MAX)?
        .into_iter()
        .map(|(seq, data, hash)| Record {
            seq,
            leaf_data: data.into_bytes(),
            stored_leaf_hash: hash,
        })
        .collect())
}
