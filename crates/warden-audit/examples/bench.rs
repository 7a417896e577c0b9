//! Micro benchmark of the audit log's hot paths, without a benchmark harness.
//!
//! Run in release: `cargo run --release -p warden-audit --example bench`.
//! Each figure is printed on its own `audit.<name>: <value> <unit>` line so
//! scripts can pick them out and compare runs; MB is 10^6 bytes. The
//! verification figure is one pass over a synthetic log of 1,000,000 events;
//! every other measurement repeats its work until about half a second has
//! passed, so the figures are steady from run to run on an idle machine.

use std::hint::black_box;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use warden_audit::merkle::{Proofs, leaf_hash, verify_inclusion};
use warden_audit::{Checkpoint, Hash, Record, Tree, verify_log};

/// How long each repeated measurement runs at least.
const MIN_TIME: Duration = Duration::from_millis(500);
/// Size of a typical serialised audit event.
const EVENT_LEN: usize = 300;
/// Events in the synthetic log of the verification benchmark.
const LOG_EVENTS: u64 = 1_000_000;
/// A checkpoint every this many events.
const CHECKPOINT_EVERY: u64 = 10_000;

/// Runs `batch` (which does `per_batch` units of work) until `MIN_TIME` has
/// passed and returns units per second.
fn rate(per_batch: u64, mut batch: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut units = 0u64;
    while start.elapsed() < MIN_TIME {
        batch();
        units += per_batch;
    }
    units as f64 / start.elapsed().as_secs_f64()
}

/// A deterministic 300-byte event for sequence number `seq`.
fn event(seq: u64) -> Vec<u8> {
    let mut data = format!(
        "{{\"seq\":{seq},\"actor\":\"alice@example.com\",\"action\":\"grant\",\"target\":\"db-{}\",\"pad\":\"",
        seq % 97
    )
    .into_bytes();
    data.resize(EVENT_LEN - 2, b'x');
    data.extend_from_slice(b"\"}");
    data
}

fn sha256_raw() -> f64 {
    let buf = vec![0xa5u8; 1 << 20];
    rate(buf.len() as u64, || {
        black_box(Sha256::digest(black_box(&buf)));
    }) / 1e6
}

fn leaf_hashes() -> f64 {
    let data = event(42);
    rate(1000, || {
        for _ in 0..1000 {
            black_box(leaf_hash(black_box(&data)));
        }
    })
}

fn tree_append() -> f64 {
    let leaves: Vec<Hash> = (0..100_000u64)
        .map(|i| leaf_hash(&i.to_be_bytes()))
        .collect();
    rate(leaves.len() as u64, || {
        let mut tree = Tree::new();
        for leaf in &leaves {
            tree.push(*leaf);
        }
        black_box(tree.root());
    })
}

fn verify_log_rate() -> f64 {
    // Each event is a 300-byte template with its sequence number written in,
    // so building a record costs a copy, as reading a row from a store would.
    let template = event(0);
    let make = |seq: u64| {
        let mut data = template.clone();
        data[..8].copy_from_slice(&seq.to_be_bytes());
        data
    };
    // The stored hashes and checkpoints come from an honest pass.
    let mut stored = Vec::with_capacity(LOG_EVENTS as usize);
    let mut checkpoints = Vec::new();
    let mut tree = Tree::new();
    for seq in 1..=LOG_EVENTS {
        let leaf = leaf_hash(&make(seq));
        stored.push(leaf);
        tree.push(leaf);
        if seq % CHECKPOINT_EVERY == 0 {
            checkpoints.push(Checkpoint {
                origin: "warden.example/audit".into(),
                size: seq,
                root: tree.root(),
                extensions: Vec::new(),
            });
        }
    }
    let records = stored.iter().zip(1..).map(|(hash, seq)| Record {
        seq,
        leaf_data: make(seq),
        stored_leaf_hash: *hash,
    });
    let start = Instant::now();
    let report = verify_log(records, &checkpoints, &[]);
    let elapsed = start.elapsed().as_secs_f64();
    assert!(report.is_clean(), "the synthetic log must verify");
    assert_eq!(report.events_checked, LOG_EVENTS);
    assert_eq!(report.checkpoints_checked, LOG_EVENTS / CHECKPOINT_EVERY);
    LOG_EVENTS as f64 / elapsed
}

/// A million leaves, the tree's root, and the tree with every node kept.
fn million() -> (Vec<Hash>, Hash, Proofs) {
    let leaves: Vec<Hash> = (0..1_000_000u64)
        .map(|i| leaf_hash(&i.to_be_bytes()))
        .collect();
    let mut tree = Tree::new();
    for leaf in &leaves {
        tree.push(*leaf);
    }
    let proofs = Proofs::new(leaves.clone());
    (leaves, tree.root(), proofs)
}

/// Leaves per second hashed into a tree that keeps every node (done once per proof request
/// or export).
fn proof_tree_build(leaves: &[Hash]) -> f64 {
    rate(leaves.len() as u64, || {
        black_box(Proofs::new(leaves.to_vec()));
    })
}

/// Inclusion proofs per second from a built tree of a million leaves.
fn inclusion_proof(proofs: &Proofs) -> f64 {
    let size = proofs.size();
    let mut i = 0u64;
    rate(64, || {
        for _ in 0..64 {
            i += 1;
            black_box(proofs.inclusion(i * 15_619 % size).unwrap_or_default());
        }
    })
}

fn inclusion_proof_verify(leaves: &[Hash], root: &Hash, tree: &Proofs) -> f64 {
    let size = tree.size();
    let proofs: Vec<(u64, Vec<Hash>)> = (0..64u64)
        .map(|i| {
            let index = i * 15_619 % size;
            (index, tree.inclusion(index).unwrap_or_default())
        })
        .collect();
    rate(proofs.len() as u64, || {
        for (index, proof) in &proofs {
            let ok = verify_inclusion(*index, size, &leaves[*index as usize], proof, root);
            assert!(ok.is_ok());
        }
    })
}

fn main() {
    println!("audit.sha256_raw: {:.0} MB/s", sha256_raw());
    println!("audit.leaf_hash: {:.0} hashes/s", leaf_hashes());
    println!("audit.tree_append: {:.0} leaves/s", tree_append());
    println!("audit.verify_log: {:.0} events/s", verify_log_rate());
    let (leaves, root, proofs) = million();
    println!(
        "audit.proof_tree_build: {:.0} leaves/s",
        proof_tree_build(&leaves)
    );
    println!("audit.inclusion_proof: {:.0}/s", inclusion_proof(&proofs));
    println!(
        "audit.inclusion_proof_verify: {:.0}/s",
        inclusion_proof_verify(&leaves, &root, &proofs)
    );
}
