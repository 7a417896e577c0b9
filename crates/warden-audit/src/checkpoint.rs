//! Signed checkpoints of the audit log in the C2SP tlog-checkpoint format
//! (c2sp.org/tlog-checkpoint).
//!
//! A checkpoint states "the log named *origin* had *size* events and this
//! Merkle root", signed by the log's key. Handed to an auditor or kept off the
//! server, it is the anchor that later verification compares against: the log
//! can no longer rewrite, drop or reorder anything up to that size without the
//! mismatch showing. The standard format means generic transparency-log
//! tooling (witnesses, monitors) can read Warden's checkpoints too.
//!
//! The body is `origin`, the decimal size and the base64 root, one per line,
//! then optional extension lines; Warden adds `time <unix seconds>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::merkle::Hash;
use crate::note::{self, MAX_NOTE_LEN, MAX_SIGNATURES, NoteSigner, NoteVerifier};

/// A signed checkpoint could not be produced or accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The note is over the 1 MiB limit.
    #[error("note is {len} bytes, over the {MAX_NOTE_LEN}-byte limit")]
    TooLarge {
        /// The note's length in bytes.
        len: usize,
    },
    /// Notes may contain no ASCII control characters except newline.
    #[error("note contains a control character other than newline")]
    ControlCharacter,
    /// There is no blank line followed by signature lines.
    #[error("note has no signature lines after a blank line")]
    MissingSignatures,
    /// A signature line is not `— <key name> <base64>`.
    #[error("signature line {line} is malformed")]
    MalformedSignature {
        /// 1-based number of the line within the signature block.
        line: usize,
    },
    /// More signature lines than a verifier is willing to read.
    #[error("note has more than {MAX_SIGNATURES} signature lines")]
    TooManySignatures,
    /// A signature by the verifier's key (same name and key ID) is invalid:
    /// the text or the signature was altered.
    #[error("the signature by the trusted key does not verify")]
    BadSignature,
    /// No signature line belongs to the verifier's key.
    #[error("note carries no signature by key {name}")]
    NotSignedByVerifier {
        /// The trusted key's name.
        name: String,
    },
    /// The note is signed under the verifier's name by another key: the log's key was
    /// replaced (or the note forged), which says more than a missing signature.
    #[error(
        "note is signed by another key named {name} (key id {signed_by:08x}), not by this one ({trusted:08x})"
    )]
    SignedByAnotherKey {
        /// The trusted key's name, which the signature bears too.
        name: String,
        /// The key id of the note's signature under that name.
        signed_by: u32,
        /// The trusted key's id.
        trusted: u32,
    },
    /// The signed text is not a well-formed checkpoint.
    #[error("malformed checkpoint: {0}")]
    MalformedBody(&'static str),
}

/// Prefix of the extension line that records when a checkpoint was made.
const TIME_PREFIX: &str = "time ";

/// A log's signed tree head: the log identity, its size and Merkle root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Which log this is, e.g. `warden.example/audit`. Verifiers should check
    /// it is the log they expect, since one key could sign for several.
    pub origin: String,
    /// Number of events (leaves) in the tree.
    pub size: u64,
    /// RFC 6962 Merkle root of the first `size` events.
    pub root: Hash,
    /// Extension lines after the root, without their newlines. Warden writes
    /// `time <unix seconds>`; unknown ones are kept as they are.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// Signs the checkpoint and returns the signed note text.
    ///
    /// # Errors
    /// [`CheckpointError::MalformedBody`] if a field cannot be written as a
    /// checkpoint (empty origin or extension, newline or control character in
    /// one), and [`CheckpointError::TooLarge`] if the note would exceed the
    /// size verifiers accept. Whatever this signs, [`Checkpoint::open`]
    /// accepts.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, CheckpointError> {
        let body = self.body();
        if parse_body(&body)? != *self {
            return Err(CheckpointError::MalformedBody(
                "fields do not survive a round trip",
            ));
        }
        let signed = note::sign(&body, signer);
        if signed.len() > MAX_NOTE_LEN {
            return Err(CheckpointError::TooLarge { len: signed.len() });
        }
        Ok(signed)
    }

    /// Parses a signed checkpoint note and checks that `verifier`'s key
    /// signed it. Signatures by other keys (cosigning witnesses, a rotated
    /// key) are ignored.
    ///
    /// # Errors
    /// Any [`CheckpointError`]: the note or the body is malformed, there is no
    /// signature by the verifier's key, or that signature does not verify.
    pub fn open(note: &str, verifier: &NoteVerifier) -> Result<Self, CheckpointError> {
        let text = note::open(note, verifier)?;
        parse_body(text)
    }

    /// The time from a `time <unix seconds>` extension line, if any.
    pub fn time(&self) -> Option<u64> {
        self.extensions
            .iter()
            .find_map(|line| parse_decimal(line.strip_prefix(TIME_PREFIX)?))
    }

    /// The note text: origin, size and root lines, then the extensions.
    fn body(&self) -> String {
        let mut body = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root)
        );
        for line in &self.extensions {
            body.push_str(line);
            body.push('\n');
        }
        body
    }
}

/// Strict decimal: ASCII digits only, no sign, no leading zero except `0`.
fn parse_decimal(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

/// Parses a checkpoint body, rejecting anything [`Checkpoint::body`] would
/// not have written.
fn parse_body(text: &str) -> Result<Checkpoint, CheckpointError> {
    let lines = text
        .strip_suffix('\n')
        .ok_or(CheckpointError::MalformedBody("text must end in a newline"))?;
    if lines.chars().any(|c| c < ' ' && c != '\n') {
        return Err(CheckpointError::ControlCharacter);
    }
    let mut lines = lines.split('\n');
    let origin = lines.next().unwrap_or_default();
    if origin.is_empty() {
        return Err(CheckpointError::MalformedBody("empty origin"));
    }
    let size = lines
        .next()
        .and_then(parse_decimal)
        .ok_or(CheckpointError::MalformedBody(
            "tree size is not a canonical decimal",
        ))?;
    let root = lines
        .next()
        .and_then(|b64| BASE64.decode(b64).ok())
        .and_then(|raw| Hash::try_from(raw).ok())
        .ok_or(CheckpointError::MalformedBody(
            "root is not a base64 SHA-256 hash",
        ))?;
    let extensions: Vec<String> = lines.map(str::to_owned).collect();
    if extensions.iter().any(String::is_empty) {
        return Err(CheckpointError::MalformedBody("empty extension line"));
    }
    Ok(Checkpoint {
        origin: origin.to_owned(),
        size,
        root,
        extensions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{leaf_hash, root};

    const ORIGIN: &str = "warden.example/audit";

    /// A note built outside this crate: the 32-byte seed 00 01 .. 1f, key
    /// name `warden.example/audit`, and the RFC 6962 reference tree of 8
    /// leaves, signed with an independent Ed25519 implementation.
    const KNOWN_SIGNER: &str =
        "PRIVATE+KEY+warden.example/audit+35717699+AQABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f";
    const KNOWN_VERIFIER: &str =
        "warden.example/audit+35717699+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4";
    const KNOWN_NOTE: &str = "warden.example/audit\n\
        8\n\
        XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n\
        time 1700000000\n\
        \n\
        — warden.example/audit NXF2mcf7mgqyyiWUSa528uHNMe1k7dfP0YZAYZIqfvuCEBPbOfzvodmUGjDr6zWCgRxHRut3zwqfuaIJ62WApKja6gI=\n";

    fn signer(byte: u8) -> NoteSigner {
        NoteSigner::from_seed(ORIGIN, &[byte; 32]).unwrap()
    }

    fn sample() -> Checkpoint {
        let leaves: Vec<_> = (0..1000u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        Checkpoint {
            origin: ORIGIN.into(),
            size: 1000,
            root: root(&leaves),
            extensions: vec!["time 1767225600".into()],
        }
    }

    #[test]
    fn round_trip() {
        let s = signer(7);
        let cp = sample();
        let note = cp.sign(&s).unwrap();
        assert!(note.starts_with("warden.example/audit\n1000\n"));
        assert!(note.contains("\ntime 1767225600\n\n— warden.example/audit "));
        assert_eq!(Checkpoint::open(&note, &s.verifier()).unwrap(), cp);
        assert_eq!(cp.time(), Some(1_767_225_600));
        // Through the string forms an operator would store and hand out.
        let stored: NoteSigner = s.to_private_key_string().parse().unwrap();
        let handed_out: NoteVerifier = s.verifier().to_string().parse().unwrap();
        assert_eq!(
            Checkpoint::open(&cp.sign(&stored).unwrap(), &handed_out).unwrap(),
            cp
        );
    }

    #[test]
    fn empty_tree_and_no_extensions() {
        let cp = Checkpoint {
            origin: ORIGIN.into(),
            size: 0,
            root: root(&[]),
            extensions: Vec::new(),
        };
        let note = cp.sign(&signer(1)).unwrap();
        assert!(note.starts_with(
            "warden.example/audit\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\n"
        ));
        assert_eq!(Checkpoint::open(&note, &signer(1).verifier()).unwrap(), cp);
        assert_eq!(cp.time(), None);
    }

    #[test]
    fn known_good_note_parses() {
        let verifier: NoteVerifier = KNOWN_VERIFIER.parse().unwrap();
        let cp = Checkpoint::open(KNOWN_NOTE, &verifier).unwrap();
        assert_eq!(cp.origin, ORIGIN);
        assert_eq!(cp.size, 8);
        assert_eq!(
            BASE64.encode(cp.root),
            "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg="
        );
        assert_eq!(cp.extensions, vec!["time 1700000000".to_owned()]);
        assert_eq!(cp.time(), Some(1_700_000_000));
        // Signing is deterministic, so this crate reproduces the note exactly.
        let known_signer: NoteSigner = KNOWN_SIGNER.parse().unwrap();
        assert_eq!(known_signer.verifier(), verifier);
        assert_eq!(cp.sign(&known_signer).unwrap(), KNOWN_NOTE);
        let seed: [u8; 32] = std::array::from_fn(|i| i as u8);
        assert_eq!(
            NoteSigner::from_seed(ORIGIN, &seed).unwrap().verifier(),
            verifier
        );
    }

    #[test]
    fn forged_with_another_key_is_rejected() {
        let real = signer(1);
        let forger = signer(2); // same name, different key
        let mut cp = sample();
        cp.size += 1;
        let forged = cp.sign(&forger).unwrap();
        assert!(matches!(
            Checkpoint::open(&forged, &real.verifier()),
            Err(CheckpointError::SignedByAnotherKey { name, .. }) if name == ORIGIN
        ));
        // Claiming the real key's ID does not help: the signature fails.
        let real_id = real.verifier().to_string();
        let real_id = real_id.split('+').nth(1).unwrap();
        let forger_line = forged.rsplit_once(' ').unwrap();
        let mut blob = BASE64.decode(forger_line.1.trim_end()).unwrap();
        blob[..4].copy_from_slice(&u32::from_str_radix(real_id, 16).unwrap().to_be_bytes());
        let relabelled = format!("{} {}\n", forger_line.0, BASE64.encode(blob));
        assert_eq!(
            Checkpoint::open(&relabelled, &real.verifier()),
            Err(CheckpointError::BadSignature)
        );
    }

    #[test]
    fn flipping_any_byte_is_rejected() {
        let s = signer(3);
        let v = s.verifier();
        let note = sample().sign(&s).unwrap();
        let bytes = note.as_bytes();
        for i in 0..bytes.len() {
            for mask in [0x01u8, 0x20] {
                let mut b = bytes.to_vec();
                b[i] ^= mask;
                // A flip that breaks UTF-8 cannot even be a &str.
                if let Ok(tampered) = String::from_utf8(b) {
                    assert!(
                        Checkpoint::open(&tampered, &v).is_err(),
                        "flip {mask:#x} at byte {i} accepted"
                    );
                }
            }
        }
    }

    #[test]
    fn cosigned_note_opens_for_either_key() {
        let log = signer(4);
        let witness = NoteSigner::from_seed("witness.example", &[5; 32]).unwrap();
        let cp = sample();
        let by_log = cp.sign(&log).unwrap();
        let by_witness = cp.sign(&witness).unwrap();
        let witness_line = by_witness.rsplit_once("\n\n").unwrap().1;
        let cosigned = format!("{by_log}{witness_line}");
        assert_eq!(Checkpoint::open(&cosigned, &log.verifier()).unwrap(), cp);
        assert_eq!(
            Checkpoint::open(&cosigned, &witness.verifier()).unwrap(),
            cp
        );
    }

    #[test]
    fn body_format_is_strict() {
        let s = signer(6);
        let v = s.verifier();
        let root_b64 = BASE64.encode(sample().root);
        let open_text = |text: &str| Checkpoint::open(&note::sign(text, &s), &v);
        assert!(open_text(&format!("{ORIGIN}\n5\n{root_b64}\n")).is_ok());
        let bad = [
            format!("\n5\n{root_b64}\n"),                            // empty origin
            format!("{ORIGIN}\n05\n{root_b64}\n"),                   // leading zero
            format!("{ORIGIN}\n+5\n{root_b64}\n"),                   // sign
            format!("{ORIGIN}\n 5\n{root_b64}\n"),                   // space
            format!("{ORIGIN}\n18446744073709551616\n{root_b64}\n"), // > u64
            format!("{ORIGIN}\n5\n"),                                // no root
            format!("{ORIGIN}\n5\n{}\n", &root_b64[..43]),           // bad base64
            format!("{ORIGIN}\n5\n{}\n", root_b64.trim_end_matches('=')), // no padding
            format!("{ORIGIN}\n5\n{}\n", BASE64.encode([0u8; 31])),  // wrong length
            format!("{ORIGIN}\n5\n{root_b64}\n\ntime 1\n"),          // blank line inside
        ];
        for text in bad {
            assert!(open_text(&text).is_err(), "accepted {text:?}");
        }
    }

    #[test]
    fn unsignable_fields_are_refused() {
        let s = signer(8);
        let mut cases = Vec::new();
        for origin in ["", "a\nb", "a\rb"] {
            cases.push(Checkpoint {
                origin: origin.into(),
                ..sample()
            });
        }
        for ext in ["", "time 1\n", "x\u{7}"] {
            cases.push(Checkpoint {
                extensions: vec![ext.into()],
                ..sample()
            });
        }
        cases.push(Checkpoint {
            extensions: vec!["x".repeat(MAX_NOTE_LEN)],
            ..sample()
        });
        for cp in cases {
            assert!(cp.sign(&s).is_err(), "signed {:?}", cp.origin);
        }
    }

    #[test]
    fn time_extension_is_strict() {
        let mut cp = sample();
        for (line, want) in [
            ("time 0", Some(0)),
            ("time 42", Some(42)),
            ("time -1", None),
            ("time 042", None),
            ("time", None),
            ("times 5", None),
        ] {
            cp.extensions = vec![line.into()];
            assert_eq!(cp.time(), want, "{line:?}");
        }
    }
}
