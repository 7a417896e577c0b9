//! Cryptographic core of Warden's tamper-evident audit log.
//!
//! Every audit event becomes a leaf of an RFC 6962 Merkle tree ([`merkle`]);
//! the log periodically signs its tree size and root as a C2SP checkpoint
//! ([`checkpoint`], with the keys and note envelope in [`note`]); and
//! [`verify`] replays a stored log against those checkpoints to find edited,
//! deleted, inserted, reordered or truncated events.
//!
//! The crate does no I/O and reads no clock: callers pass in bytes, times and
//! key material, which keeps every result reproducible and lets the same code
//! run in the server, in an offline auditor's tool and in tests.
//!
//! ```
//! use warden_audit::{Checkpoint, NoteSigner, NoteVerifier, Record, Tree, verify_log};
//! use warden_audit::merkle::leaf_hash;
//!
//! // The server appends events and, now and then, signs a checkpoint.
//! let signer = NoteSigner::from_seed("warden.example/audit", &[7; 32])?;
//! let events: Vec<Vec<u8>> = (1..=3).map(|i| format!("event {i}").into_bytes()).collect();
//! let mut tree = Tree::new();
//! for event in &events {
//!     tree.push(leaf_hash(event));
//! }
//! let checkpoint = Checkpoint {
//!     origin: "warden.example/audit".into(),
//!     size: tree.size(),
//!     root: tree.root(),
//!     extensions: vec!["time 1767225600".into()],
//! };
//! let note = checkpoint.sign(&signer)?;
//!
//! // An auditor holding the one-line public key checks the note and the log.
//! let verifier: NoteVerifier = signer.verifier().to_string().parse()?;
//! let held = Checkpoint::open(&note, &verifier)?;
//! let records = events.into_iter().zip(1..).map(|(leaf_data, seq)| Record {
//!     seq,
//!     stored_leaf_hash: leaf_hash(&leaf_data),
//!     leaf_data,
//! });
//! let report = verify_log(records, &[], &[held]);
//! assert!(report.is_clean());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod checkpoint;
pub mod merkle;
pub mod note;
pub mod verify;

pub use checkpoint::{Checkpoint, CheckpointError};
pub use merkle::{FrontierError, Hash, ProofError, Tree};
pub use note::{KeyError, NoteSigner, NoteVerifier, valid_key_name};
pub use verify::{BlockCheck, Problem, Record, Report, verify_log, verify_log_from};
