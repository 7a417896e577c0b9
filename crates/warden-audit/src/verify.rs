//! Offline verification of a stored audit log against its checkpoints.
//!
//! The log store keeps, for each event, its sequence number, the exact bytes
//! that were hashed into the Merkle tree and the leaf hash it recorded. An
//! attacker with write access to the store alone can edit, delete, insert or
//! reorder rows and fix up the stored hashes, but cannot re-sign checkpoints
//! (one who can also read the server's signing key can: checkpoints kept
//! elsewhere are what settles it).
//! Replaying the stored events into a fresh tree and comparing the roots with
//! signed checkpoints — those kept with the log and, crucially, those held
//! outside it — exposes every such change, and the sequence numbers and
//! stored hashes say where it happened.
//!
//! Verification streams: it holds the tree frontier and the (few) checkpoint
//! roots, never the events, so a log of any length is checked in constant
//! memory at the speed of two SHA-256 calls per event.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::iter::Peekable;
use std::vec::IntoIter;

use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::merkle::{BLOCK_HEIGHT, Hash, Tree, leaf_hash};

/// One stored event, as read back from the log store in storage order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Sequence number the store assigned; the log numbers events 1, 2, 3…
    pub seq: u64,
    /// The exact bytes that were hashed into the tree for this event.
    pub leaf_data: Vec<u8>,
    /// The leaf hash the store recorded when the event was appended.
    pub stored_leaf_hash: Hash,
}

/// One finding of [`verify_log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// The event's data no longer hashes to the leaf hash stored with it:
    /// the event was edited after it was logged.
    Modified {
        /// The edited event.
        seq: u64,
    },
    /// Sequence numbers jump: `count` events starting at `seq` are absent,
    /// deleted or moved elsewhere (a moved one also shows as
    /// [`Problem::OutOfOrder`]).
    Missing {
        /// The first absent sequence number.
        seq: u64,
        /// How many consecutive sequence numbers are absent.
        count: u64,
    },
    /// An event whose sequence number was already passed: a duplicate, an
    /// inserted event or one moved later in the log.
    OutOfOrder {
        /// The sequence number found.
        seq: u64,
        /// The sequence number that was due at that position.
        expected: u64,
    },
    /// The tree over the first `size` stored events does not have the root
    /// that a signed checkpoint of that size states: some event at or below
    /// that position was changed, removed, inserted or reordered, even if its
    /// stored hash was forged to match.
    RootMismatch {
        /// The checkpoint's tree size.
        size: u64,
    },
    /// A signed checkpoint covers more events than the log holds: the tail
    /// was cut off.
    Truncated {
        /// The checkpoint's tree size.
        checkpoint_size: u64,
        /// How many events the log holds.
        log_size: u64,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Modified { seq } => write!(f, "event {seq} was modified"),
            Self::Missing { seq, count: 1 } => write!(f, "event {seq} is missing"),
            Self::Missing { seq, count } => write!(
                f,
                "events {seq} to {} are missing",
                seq.saturating_add(count - 1)
            ),
            Self::OutOfOrder { seq, expected } => {
                write!(f, "event {seq} found where event {expected} was due")
            }
            Self::RootMismatch { size } => {
                write!(
                    f,
                    "the first {size} events do not match their signed checkpoint"
                )
            }
            Self::Truncated {
                checkpoint_size,
                log_size,
            } => write!(
                f,
                "a signed checkpoint covers {checkpoint_size} events but the log holds {log_size}"
            ),
        }
    }
}

/// The outcome of [`verify_log`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// How many records were read.
    pub events_checked: u64,
    /// How many checkpoint roots were compared with the recomputed tree.
    pub checkpoints_checked: u64,
    /// Everything found wrong, in log order; truncations come last.
    pub problems: Vec<Problem>,
}

impl Report {
    /// Whether the log showed no sign of tampering.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checkpoint sizes and roots still to be compared, smallest size first.
type Anchors = Peekable<IntoIter<(u64, Hash)>>;

/// Replays `records` (in storage order) into a Merkle tree and checks them.
///
/// `checkpoints` are the signed checkpoints kept with the log and `external`
/// those held elsewhere (by an auditor, a witness, a backup); both must
/// already have had their signatures verified with [`Checkpoint::open`].
/// They are treated alike, but only external ones can reveal a tail cut off
/// together with its checkpoints.
///
/// The tree is built from the hashes recomputed from `leaf_data`, not from
/// the stored hashes, so a forged stored hash cannot hide an edit from the
/// checkpoint comparison. A truncation is only visible against a checkpoint
/// beyond the remaining events; events dropped after the last checkpoint
/// leave no trace, which is why checkpoints should be published often.
pub fn verify_log<I>(records: I, checkpoints: &[Checkpoint], external: &[Checkpoint]) -> Report
where
    I: IntoIterator<Item = Record>,
{
    verify_log_from(Tree::new(), records, checkpoints, external)
}

/// Like [`verify_log`], for a log whose first `base.size()` events were archived: the records
/// continue from `base`, the tree as it stood after the archived events (rebuilt from a stored
/// frontier). A checkpoint at exactly `base.size()` authenticates the base itself; checkpoints
/// below it cover archived events and are left to the archive's own verification.
pub fn verify_log_from<I>(
    base: Tree,
    records: I,
    checkpoints: &[Checkpoint],
    external: &[Checkpoint],
) -> Report
where
    I: IntoIterator<Item = Record>,
{
    let mut anchors: Vec<(u64, Hash)> = checkpoints
        .iter()
        .chain(external)
        .filter(|c| c.size >= base.size())
        .map(|c| (c.size, c.root))
        .collect();
    anchors.sort_unstable_by_key(|&(size, _)| size);
    let mut anchors = anchors.into_iter().peekable();

    let mut report = Report::default();
    let mut expected = base.size() + 1;
    let mut tree = base;
    check_anchors(&tree, &mut anchors, &mut report);
    for record in records {
        report.events_checked += 1;
        match record.seq.cmp(&expected) {
            Ordering::Equal => expected = expected.saturating_add(1),
            Ordering::Greater => {
                report.problems.push(Problem::Missing {
                    seq: expected,
                    count: record.seq - expected,
                });
                expected = record.seq.saturating_add(1);
            }
            Ordering::Less => report.problems.push(Problem::OutOfOrder {
                seq: record.seq,
                expected,
            }),
        }
        let leaf = leaf_hash(&record.leaf_data);
        if leaf != record.stored_leaf_hash {
            report.problems.push(Problem::Modified { seq: record.seq });
        }
        tree.push(leaf);
        check_anchors(&tree, &mut anchors, &mut report);
    }
    for (checkpoint_size, _) in anchors {
        report.problems.push(Problem::Truncated {
            checkpoint_size,
            log_size: tree.size(),
        });
    }
    report
}

/// Compares every checkpoint of the tree's current size with its root.
fn check_anchors(tree: &Tree, anchors: &mut Anchors, report: &mut Report) {
    let mut root = None;
    while let Some((size, want)) = anchors.next_if(|&(size, _)| size == tree.size()) {
        report.checkpoints_checked += 1;
        if *root.get_or_insert_with(|| tree.root()) != want {
            report.problems.push(Problem::RootMismatch { size });
        }
    }
}

/// Checks the roots a store keeps for its blocks of 2^[`BLOCK_HEIGHT`] events (the shortcut
/// proofs take) against the events themselves, fed in sequence order. The roots are not signed
/// and every proof is checked against a signed checkpoint, so a wrong root cannot make a false
/// proof pass; it makes true ones fail, and says the store was altered.
///
/// A block is checked only when its events arrive from its first to its last without a gap:
/// events that come out of order, or a block some of whose events are not at hand, leave its
/// stored root unchecked, which [`BlockCheck::checked`] lets the caller say.
#[derive(Debug)]
pub struct BlockCheck {
    stored: BTreeMap<u64, Hash>,
    tree: Tree,
    /// Whether `tree` holds its block's events from the first, without a gap.
    whole: bool,
    last_seq: u64,
    checked: Vec<u64>,
    mismatched: Vec<u64>,
}

impl BlockCheck {
    /// A check of the `stored` roots (block number, root) over events after `after_seq`.
    pub fn new(stored: impl IntoIterator<Item = (u64, Hash)>, after_seq: u64) -> Self {
        Self {
            stored: stored.into_iter().collect(),
            tree: Tree::new(),
            whole: false,
            last_seq: after_seq,
            checked: Vec::new(),
            mismatched: Vec::new(),
        }
    }

    /// Adds the next stored event.
    pub fn add(&mut self, seq: u64, leaf_data: &[u8]) {
        self.add_hash(seq, leaf_hash(leaf_data));
    }

    /// Adds the next event by its leaf hash (one kept apart from its event: an archived one).
    pub fn add_hash(&mut self, seq: u64, hash: Hash) {
        let index = seq.saturating_sub(1);
        let block_len = 1u64 << BLOCK_HEIGHT;
        if index.is_multiple_of(block_len) {
            self.tree = Tree::new();
            self.whole = true;
        } else if seq != self.last_seq + 1 {
            self.whole = false;
        }
        self.last_seq = seq;
        self.tree.push(hash);
        let block = index >> BLOCK_HEIGHT;
        if self.whole
            && self.tree.size() == block_len
            && let Some(stored) = self.stored.get(&block)
        {
            self.checked.push(block);
            if *stored != self.tree.root() {
                self.mismatched.push(block);
            }
        }
    }

    /// The sequence number of the last event added.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The blocks whose stored root was compared with their events', in the order checked.
    pub fn checked(&self) -> &[u64] {
        &self.checked
    }

    /// The blocks with a stored root that this check never compared: their events did not
    /// all arrive, in order.
    pub fn unchecked(&self) -> impl Iterator<Item = u64> + '_ {
        self.stored
            .keys()
            .copied()
            .filter(|block| !self.checked.contains(block))
    }

    /// The blocks whose stored root differs from their events' root.
    pub fn mismatched(&self) -> &[u64] {
        &self.mismatched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: u64 = 100;

    /// A ~300-byte JSON-ish event, like the ones the server logs.
    fn event(seq: u64) -> Vec<u8> {
        let mut data = format!(
            "{{\"seq\":{seq},\"actor\":\"alice@example.com\",\"action\":\"grant\",\
             \"target\":\"db-prod-{}\",\"reason\":\"ticket OPS-{}\",\"pad\":\"",
            seq % 7,
            seq * 31
        )
        .into_bytes();
        data.resize(298, b'x');
        data.extend_from_slice(b"\"}");
        data
    }

    fn record(seq: u64) -> Record {
        let leaf_data = event(seq);
        Record {
            seq,
            stored_leaf_hash: leaf_hash(&leaf_data),
            leaf_data,
        }
    }

    fn log() -> Vec<Record> {
        (1..=N).map(record).collect()
    }

    /// Checkpoints of the honest log at every multiple of `every`.
    fn checkpoints(records: &[Record], every: u64) -> Vec<Checkpoint> {
        let mut tree = Tree::new();
        let mut out = Vec::new();
        for r in records {
            tree.push(r.stored_leaf_hash);
            if tree.size().is_multiple_of(every) {
                out.push(Checkpoint {
                    origin: "warden.example/audit".into(),
                    size: tree.size(),
                    root: tree.root(),
                    extensions: Vec::new(),
                });
            }
        }
        out
    }

    fn mismatches_from(first: u64) -> Vec<Problem> {
        (first..=N)
            .filter(|s| s.is_multiple_of(10))
            .map(|size| Problem::RootMismatch { size })
            .collect()
    }

    #[test]
    fn clean_log_passes() {
        let records = log();
        let cps = checkpoints(&records, 10);
        let external = checkpoints(&records, 25);
        let report = verify_log(records, &cps, &external);
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!(report.events_checked, N);
        assert_eq!(report.checkpoints_checked, 10 + 4);
    }

    #[test]
    fn unordered_checkpoints_are_all_checked() {
        let records = log();
        let mut cps = checkpoints(&records, 10);
        cps.reverse();
        cps.push(cps[3].clone());
        let report = verify_log(records, &cps, &[]);
        assert!(report.is_clean());
        assert_eq!(report.checkpoints_checked, 11);
    }

    #[test]
    fn flipped_byte_is_reported_as_modified() {
        let mut records = log();
        let cps = checkpoints(&records, 10);
        records[41].leaf_data[100] ^= 0x01; // seq 42
        let report = verify_log(records, &cps, &[]);
        let mut want = vec![Problem::Modified { seq: 42 }];
        want.extend(mismatches_from(42));
        assert_eq!(report.problems, want);
        assert_eq!(report.events_checked, N);
    }

    #[test]
    fn edit_with_forged_stored_hash_is_caught_by_checkpoints() {
        let mut records = log();
        let cps = checkpoints(&records, 10);
        records[41].leaf_data[100] ^= 0x01;
        records[41].stored_leaf_hash = leaf_hash(&records[41].leaf_data);
        let report = verify_log(records, &cps, &[]);
        assert_eq!(report.problems, mismatches_from(42));
    }

    #[test]
    fn deleted_record_is_reported_as_missing() {
        let mut records = log();
        let cps = checkpoints(&records, 10);
        records.remove(49); // seq 50
        let report = verify_log(records, &cps, &[]);
        let mut want = vec![Problem::Missing { seq: 50, count: 1 }];
        // The tree is one short from there on, so later roots differ and the
        // final checkpoint is beyond the log.
        want.extend(
            mismatches_from(50)
                .into_iter()
                .filter(|p| *p != Problem::RootMismatch { size: 100 }),
        );
        want.push(Problem::Truncated {
            checkpoint_size: 100,
            log_size: 99,
        });
        assert_eq!(report.problems, want);
        assert_eq!(report.problems[0].to_string(), "event 50 is missing");
    }

    #[test]
    fn deleted_range_is_one_problem() {
        let mut records = log();
        records.drain(60..63); // seqs 61, 62, 63
        let report = verify_log(records, &[], &[]);
        assert_eq!(
            report.problems,
            vec![Problem::Missing { seq: 61, count: 3 }]
        );
        assert_eq!(
            report.problems[0].to_string(),
            "events 61 to 63 are missing"
        );
    }

    #[test]
    fn swapped_records_are_reported() {
        let mut records = log();
        let cps = checkpoints(&records, 10);
        records.swap(29, 30); // seqs 30 and 31
        let report = verify_log(records, &cps, &[]);
        // Position 30 holds event 31 (gap at 30, and checkpoint 30 fails),
        // then event 30 turns up late.
        let mut want = vec![
            Problem::Missing { seq: 30, count: 1 },
            Problem::RootMismatch { size: 30 },
            Problem::OutOfOrder {
                seq: 30,
                expected: 32,
            },
        ];
        want.extend(mismatches_from(31));
        assert_eq!(report.problems, want);
    }

    #[test]
    fn truncated_tail_is_caught_by_external_checkpoint() {
        let mut records = log();
        let external = checkpoints(&records, N);
        records.truncate(95);
        // The attacker also removed the stored checkpoints past the cut.
        let internal = checkpoints(&records, 10);
        let report = verify_log(records, &internal, &external);
        assert_eq!(
            report.problems,
            vec![Problem::Truncated {
                checkpoint_size: 100,
                log_size: 95
            }]
        );
        assert_eq!(report.checkpoints_checked, 9);
        // Without the external checkpoint the cut is invisible.
        assert!(verify_log(log().into_iter().take(95), &internal, &[]).is_clean());
    }

    #[test]
    fn inserted_duplicate_is_reported_out_of_order() {
        let mut records = log();
        let cps = checkpoints(&records, 10);
        let mut fake = record(20);
        fake.leaf_data[50] = b'!';
        fake.stored_leaf_hash = leaf_hash(&fake.leaf_data);
        records.insert(20, fake); // right after seq 20
        let report = verify_log(records, &cps, &[]);
        let mut want = vec![Problem::OutOfOrder {
            seq: 20,
            expected: 21,
        }];
        want.extend(mismatches_from(21));
        assert_eq!(report.problems, want);
        assert_eq!(report.events_checked, N + 1);
    }

    #[test]
    fn inserted_and_renumbered_is_caught_by_checkpoints() {
        let records = log();
        let cps = checkpoints(&records, 10);
        // A fabricated event 21 and everything after it shifted by one, with
        // every stored hash recomputed: only the signed roots can tell.
        let forged: Vec<Record> = (1..=N + 1)
            .map(|seq| match seq {
                ..=20 => record(seq),
                21 => {
                    let mut r = record(21);
                    r.leaf_data[60] = b'?';
                    r.stored_leaf_hash = leaf_hash(&r.leaf_data);
                    r
                }
                _ => {
                    let mut r = record(seq - 1);
                    r.seq = seq;
                    r
                }
            })
            .collect();
        let report = verify_log(forged, &cps, &[]);
        assert_eq!(report.problems, mismatches_from(21));
    }

    #[test]
    fn empty_log() {
        let empty = Checkpoint {
            origin: "warden.example/audit".into(),
            size: 0,
            root: crate::merkle::EMPTY_ROOT,
            extensions: Vec::new(),
        };
        let report = verify_log(Vec::new(), std::slice::from_ref(&empty), &[]);
        assert!(report.is_clean());
        assert_eq!(report.checkpoints_checked, 1);
        let five = checkpoints(&log(), 5)[0].clone();
        let report = verify_log(Vec::new(), &[empty], &[five]);
        assert_eq!(
            report.problems,
            vec![Problem::Truncated {
                checkpoint_size: 5,
                log_size: 0
            }]
        );
    }

    #[test]
    fn first_seq_must_be_one() {
        let records = vec![
            Record {
                seq: 0,
                ..record(1)
            },
            record(2),
        ];
        let report = verify_log(records, &[], &[]);
        assert_eq!(
            report.problems,
            vec![
                Problem::OutOfOrder {
                    seq: 0,
                    expected: 1
                },
                Problem::Missing { seq: 1, count: 1 },
            ]
        );
    }

    #[test]
    fn report_serialises_with_problem_kinds() {
        let report = Report {
            events_checked: 3,
            checkpoints_checked: 1,
            problems: vec![
                Problem::Modified { seq: 2 },
                Problem::Truncated {
                    checkpoint_size: 5,
                    log_size: 3,
                },
            ],
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "events_checked": 3,
                "checkpoints_checked": 1,
                "problems": [
                    {"kind": "modified", "seq": 2},
                    {"kind": "truncated", "checkpoint_size": 5, "log_size": 3},
                ],
            })
        );
        assert_eq!(serde_json::from_value::<Report>(json).unwrap(), report);
    }

    #[test]
    fn block_roots_are_checked_against_whole_blocks_only() {
        use crate::merkle::root;
        let block = 1usize << BLOCK_HEIGHT;
        let data: Vec<Vec<u8>> = (1..=3 * block + 5)
            .map(|seq| format!("event {seq}").into_bytes())
            .collect();
        let hashes: Vec<Hash> = data.iter().map(|d| leaf_hash(d)).collect();
        let roots: Vec<Hash> = hashes.chunks_exact(block).map(root).collect();
        let stored = vec![(0, roots[0]), (1, [7; 32]), (2, roots[2])];

        let mut all = BlockCheck::new(stored.clone(), 0);
        for (i, d) in data.iter().enumerate() {
            all.add(i as u64 + 1, d);
        }
        assert_eq!(
            (all.checked(), all.mismatched()),
            (&[0, 1, 2][..], &[1][..])
        );
        assert_eq!(all.unchecked().count(), 0);

        // Starting inside block 0 (archived events before), and a gap in block 2: only block 1
        // is whole.
        let mut partial = BlockCheck::new(stored, 10);
        for (i, d) in data.iter().enumerate().skip(10) {
            if i != 2 * block + 3 {
                partial.add(i as u64 + 1, d);
            }
        }
        assert_eq!(
            (partial.checked(), partial.mismatched()),
            (&[1][..], &[1][..])
        );
        assert_eq!(partial.unchecked().collect::<Vec<_>>(), [0, 2]);
    }

    /// Events of one block fed in two runs, the later run first (as archive segments read
    /// newest first would be), leave it unchecked and say so; fed in sequence order across the
    /// same split, it is checked.
    #[test]
    fn a_block_is_checked_only_from_events_in_sequence_order() {
        use crate::merkle::root;
        let block = 1u64 << BLOCK_HEIGHT;
        let hashes: Vec<Hash> = (1..=block)
            .map(|seq| leaf_hash(format!("event {seq}").as_bytes()))
            .collect();
        let stored = [(0, root(&hashes))];
        let (older, newer) = hashes.split_at(208);
        let numbered = |run: &[Hash], first: u64| -> Vec<(u64, Hash)> {
            (first..).zip(run.iter().copied()).collect()
        };

        let mut newest_first = BlockCheck::new(stored, 0);
        for (seq, hash) in numbered(newer, 209).into_iter().chain(numbered(older, 1)) {
            newest_first.add_hash(seq, hash);
        }
        assert!(newest_first.checked().is_empty());
        assert_eq!(newest_first.unchecked().collect::<Vec<_>>(), [0]);

        let mut in_order = BlockCheck::new(stored, 0);
        for (seq, hash) in numbered(older, 1).into_iter().chain(numbered(newer, 209)) {
            in_order.add_hash(seq, hash);
        }
        assert_eq!(
            (in_order.checked(), in_order.mismatched()),
            (&[0][..], &[][..])
        );
        assert_eq!(in_order.unchecked().count(), 0);
    }
}
