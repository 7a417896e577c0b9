//! Ed25519 keys and the envelope of C2SP signed notes (c2sp.org/signed-note).
//!
//! Checkpoints travel as signed notes so that auditors, witnesses and other
//! transparency-log tooling can check them without knowing anything about
//! Warden. A note is UTF-8 text, a blank line, and one signature line per key:
//! `— <key name> <base64(key ID ‖ signature)>`. Keys are exchanged as single
//! lines (`<name>+<key ID hex>+<base64 key>`), which is what an operator hands
//! to an auditor.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::checkpoint::CheckpointError;

/// Signature type byte of Ed25519 note keys.
const ED25519: u8 = 0x01;
/// Prefix of a signer key string, so it cannot be mistaken for a public key.
const PRIVATE_PREFIX: &str = "PRIVATE+KEY+";
/// What starts every signature line: an em dash and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// Upper bound on a note's size, so a hostile note cannot make a verifier
/// chew through unbounded input.
pub const MAX_NOTE_LEN: usize = 1 << 20;
/// Upper bound on signature lines; the spec asks verifiers to accept at
/// least 16.
pub(crate) const MAX_SIGNATURES: usize = 100;

/// A key string could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Key names must be non-empty, without spaces, `+` or control characters.
    #[error("key name must be non-empty and contain no spaces, '+' or control characters")]
    InvalidName,
    /// The key string is not `name+keyid+base64key` (with `PRIVATE+KEY+` for
    /// a signer).
    #[error("malformed key string")]
    Malformed,
    /// The key is of a signature type other than Ed25519.
    #[error("unsupported signature type {0:#04x}, only Ed25519 (0x01) is supported")]
    UnsupportedType(u8),
    /// The key ID in the string does not belong to the name and key.
    #[error("key ID does not match the key name and key")]
    KeyIdMismatch,
    /// The bytes are not a valid Ed25519 public key.
    #[error("invalid Ed25519 public key")]
    InvalidPublicKey,
}

/// Whether `name` may be a key name: non-empty, no Unicode spaces, no `+`
/// (the separator of key strings) and no control characters (which notes
/// may not contain).
pub fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

/// Key ID = first four bytes of SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key),
/// read big-endian; it lets a verifier pick its signature out of many.
fn key_id(name: &str, public: &VerifyingKey) -> u32 {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([b'\n', ED25519])
        .chain_update(public.as_bytes())
        .finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Splits `name+keyid+base64` and decodes the typed 32-byte key material.
fn parse_key_parts(s: &str) -> Result<(&str, u32, [u8; 32]), KeyError> {
    // The base64 key may itself contain '+', so split off only two fields.
    let mut parts = s.splitn(3, '+');
    let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(KeyError::Malformed);
    };
    if !valid_key_name(name) {
        return Err(KeyError::InvalidName);
    }
    if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(KeyError::Malformed);
    }
    let id = u32::from_str_radix(id_hex, 16).map_err(|_| KeyError::Malformed)?;
    let raw = BASE64.decode(key_b64).map_err(|_| KeyError::Malformed)?;
    match raw.split_first() {
        Some((&ED25519, key)) => {
            let key = <[u8; 32]>::try_from(key).map_err(|_| KeyError::Malformed)?;
            Ok((name, id, key))
        }
        Some((&other, _)) => Err(KeyError::UnsupportedType(other)),
        None => Err(KeyError::Malformed),
    }
}

/// Encodes typed key material as base64(0x01 ‖ key).
fn encode_key(key: &[u8; 32]) -> String {
    let mut raw = [0u8; 33];
    raw[0] = ED25519;
    raw[1..].copy_from_slice(key);
    BASE64.encode(raw)
}

/// A named Ed25519 key that signs notes (the log's checkpoint key).
///
/// Its string form, from [`NoteSigner::to_private_key_string`], is
/// `PRIVATE+KEY+<name>+<key ID hex>+<base64(0x01 ‖ seed)>`. There is
/// deliberately no `Display`, so the secret cannot end up in a log line by
/// accident, and `Debug` shows only the public half.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    id: u32,
    key: SigningKey,
}

impl NoteSigner {
    /// A signer named `name` for the Ed25519 private key `seed` (32 random
    /// bytes the caller draws from a CSPRNG).
    ///
    /// # Errors
    /// [`KeyError::InvalidName`] if `name` cannot be a key name.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, KeyError> {
        if !valid_key_name(name) {
            return Err(KeyError::InvalidName);
        }
        let key = SigningKey::from_bytes(seed);
        Ok(Self {
            name: name.to_owned(),
            id: key_id(name, &key.verifying_key()),
            key,
        })
    }

    /// The key name, which appears in every signature line.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching public key, to hand to auditors.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// The secret key string, for storing the key.
    pub fn to_private_key_string(&self) -> String {
        format!(
            "{PRIVATE_PREFIX}{}+{:08x}+{}",
            self.name,
            self.id,
            encode_key(self.key.as_bytes())
        )
    }
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteSigner")
            .field("verifier", &self.verifier().to_string())
            .finish_non_exhaustive()
    }
}

impl FromStr for NoteSigner {
    type Err = KeyError;

    /// Parses `PRIVATE+KEY+<name>+<key ID hex>+<base64(0x01 ‖ seed)>`,
    /// checking that the key ID belongs to the name and key.
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let rest = s.strip_prefix(PRIVATE_PREFIX).ok_or(KeyError::Malformed)?;
        let (name, id, seed) = parse_key_parts(rest)?;
        let signer = Self::from_seed(name, &seed)?;
        if signer.id != id {
            return Err(KeyError::KeyIdMismatch);
        }
        Ok(signer)
    }
}

/// A named Ed25519 public key that checks note signatures.
///
/// Its string form (`Display` / `FromStr`) is the one-line verifier key
/// `<name>+<key ID hex>+<base64(0x01 ‖ public key)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// The key name the verifier looks for in signature lines.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Ed25519 public key, whatever the name it goes by.
    pub fn public_key(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }
}

impl fmt::Display for NoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.id,
            encode_key(self.key.as_bytes())
        )
    }
}

impl FromStr for NoteVerifier {
    type Err = KeyError;

    /// Parses `<name>+<key ID hex>+<base64(0x01 ‖ public key)>`, checking
    /// that the key ID belongs to the name and key.
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let (name, id, raw) = parse_key_parts(s)?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| KeyError::InvalidPublicKey)?;
        if key_id(name, &key) != id {
            return Err(KeyError::KeyIdMismatch);
        }
        Ok(Self {
            name: name.to_owned(),
            id,
            key,
        })
    }
}

/// Signs note `text` (which must end in a newline) and returns the note.
pub(crate) fn sign(text: &str, signer: &NoteSigner) -> String {
    let signature = signer.key.sign(text.as_bytes());
    let mut blob = [0u8; 68];
    blob[..4].copy_from_slice(&signer.id.to_be_bytes());
    blob[4..].copy_from_slice(&signature.to_bytes());
    format!(
        "{text}\n{SIGNATURE_PREFIX}{} {}\n",
        signer.name,
        BASE64.encode(blob)
    )
}

/// Checks the envelope of `note` and a signature by `verifier`, and returns
/// the signed text (including its final newline).
///
/// Signatures by other keys are checked for form only and otherwise ignored,
/// as the spec requires, so witnesses can cosign and keys can rotate. A
/// signature that claims the verifier's name and key ID but does not verify
/// rejects the whole note.
pub(crate) fn open<'a>(note: &'a str, verifier: &NoteVerifier) -> Result<&'a str, CheckpointError> {
    if note.len() > MAX_NOTE_LEN {
        return Err(CheckpointError::TooLarge { len: note.len() });
    }
    if note.chars().any(|c| c < ' ' && c != '\n') {
        return Err(CheckpointError::ControlCharacter);
    }
    // The text may itself hold blank lines, so the last one separates it
    // from the signatures.
    let split = note
        .rfind("\n\n")
        .ok_or(CheckpointError::MissingSignatures)?;
    let (text, signatures) = (&note[..=split], &note[split + 2..]);
    if signatures.is_empty() {
        return Err(CheckpointError::MissingSignatures);
    }
    let signatures = signatures
        .strip_suffix('\n')
        .ok_or(CheckpointError::MalformedSignature { line: 1 })?;
    let mut verified = false;
    let mut same_name = None;
    for (i, line) in signatures.split('\n').enumerate() {
        let line_no = i + 1;
        if line_no > MAX_SIGNATURES {
            return Err(CheckpointError::TooManySignatures);
        }
        let malformed = || CheckpointError::MalformedSignature { line: line_no };
        let (name, blob) = line
            .strip_prefix(SIGNATURE_PREFIX)
            .and_then(|rest| rest.split_once(' '))
            .ok_or_else(malformed)?;
        if !valid_key_name(name) {
            return Err(malformed());
        }
        let blob = BASE64.decode(blob).map_err(|_| malformed())?;
        let (id, signature) = match blob.split_first_chunk::<4>() {
            Some((id, signature)) if !signature.is_empty() => (u32::from_be_bytes(*id), signature),
            _ => return Err(malformed()),
        };
        if name != verifier.name || id != verifier.id {
            if name == verifier.name {
                same_name = Some(id);
            }
            continue;
        }
        let signature =
            Signature::from_slice(signature).map_err(|_| CheckpointError::BadSignature)?;
        verifier
            .key
            .verify_strict(text.as_bytes(), &signature)
            .map_err(|_| CheckpointError::BadSignature)?;
        verified = true;
    }
    match (verified, same_name) {
        (true, _) => {}
        (false, Some(signed_by)) => {
            return Err(CheckpointError::SignedByAnotherKey {
                name: verifier.name.clone(),
                signed_by,
                trusted: verifier.id,
            });
        }
        (false, None) => {
            return Err(CheckpointError::NotSignedByVerifier {
                name: verifier.name.clone(),
            });
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example key pair and note published with the reference signed-note
    // implementation's documentation: an interoperability vector.
    const REF_VERIFIER: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const REF_SIGNER: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const REF_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                            then you don't know what your problem is.\n";
    const REF_NOTE: &str = "If you think cryptography is the answer to your problem,\n\
                            then you don't know what your problem is.\n\
                            \n\
                            — PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn signer(name: &str, byte: u8) -> NoteSigner {
        NoteSigner::from_seed(name, &[byte; 32]).unwrap()
    }

    #[test]
    fn reference_vector_keys_round_trip() {
        let signer: NoteSigner = REF_SIGNER.parse().unwrap();
        assert_eq!(signer.name(), "PeterNeumann");
        assert_eq!(signer.to_private_key_string(), REF_SIGNER);
        assert_eq!(signer.verifier().to_string(), REF_VERIFIER);
        let verifier: NoteVerifier = REF_VERIFIER.parse().unwrap();
        assert_eq!(verifier, signer.verifier());
    }

    #[test]
    fn reference_vector_signs_and_opens_byte_for_byte() {
        let signer: NoteSigner = REF_SIGNER.parse().unwrap();
        assert_eq!(sign(REF_TEXT, &signer), REF_NOTE);
        let verifier: NoteVerifier = REF_VERIFIER.parse().unwrap();
        assert_eq!(open(REF_NOTE, &verifier).unwrap(), REF_TEXT);
        let tampered = REF_NOTE.replace("cryptography", "cryptographY");
        assert_eq!(
            open(&tampered, &verifier),
            Err(CheckpointError::BadSignature)
        );
    }

    #[test]
    fn key_strings_reject_manglings() {
        // Every proper substring and every single-byte change must fail.
        let bytes = REF_VERIFIER.as_bytes();
        for i in 0..bytes.len() {
            for j in i + 1..=bytes.len() {
                if (i, j) != (0, bytes.len())
                    && let Ok(s) = std::str::from_utf8(&bytes[i..j])
                {
                    assert!(s.parse::<NoteVerifier>().is_err(), "accepted {s:?}");
                }
            }
        }
        for i in 0..bytes.len() {
            let mut b = bytes.to_vec();
            b[i] = b[i].wrapping_add(1);
            if let Ok(s) = String::from_utf8(b) {
                assert!(s.parse::<NoteVerifier>().is_err(), "accepted {s:?}");
            }
        }
        let signer_bytes = REF_SIGNER.as_bytes();
        for i in 0..signer_bytes.len() {
            let mut b = signer_bytes.to_vec();
            b[i] = b[i].wrapping_add(1);
            if let Ok(s) = String::from_utf8(b) {
                assert!(s.parse::<NoteSigner>().is_err(), "accepted {s:?}");
            }
        }
        // A public key is not a private key and the other way round.
        assert!(REF_VERIFIER.parse::<NoteSigner>().is_err());
        assert!(REF_SIGNER.parse::<NoteVerifier>().is_err());
    }

    #[test]
    fn key_errors_are_specific() {
        assert_eq!(
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
                .parse::<NoteVerifier>(),
            Err(KeyError::KeyIdMismatch)
        );
        assert_eq!(
            "PeterNeumann+c74f20a3+Ahpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
                .parse::<NoteVerifier>(),
            Err(KeyError::UnsupportedType(0x02))
        );
        assert_eq!(
            "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
                .parse::<NoteVerifier>(),
            Err(KeyError::InvalidName)
        );
        assert_eq!(
            "PeterNeumann+c74f20a3".parse::<NoteVerifier>(),
            Err(KeyError::Malformed)
        );
        for name in ["", "a b", "a+b", "a\u{2003}b", "a\tb", "a\nb"] {
            assert_eq!(
                NoteSigner::from_seed(name, &[1; 32]).map(|s| s.verifier()),
                Err(KeyError::InvalidName),
                "{name:?}"
            );
        }
    }

    #[test]
    fn debug_does_not_leak_the_seed() {
        let s = signer("warden.example/audit", 0x42);
        let debug = format!("{s:?}");
        let private = s.to_private_key_string();
        let secret = private.rsplit('+').next().unwrap();
        assert!(!debug.contains(secret));
        assert!(debug.contains(&s.verifier().to_string()));
    }

    #[test]
    fn unknown_keys_are_ignored_but_must_be_well_formed() {
        let log = signer("log.example", 1);
        let witness = signer("witness.example", 2);
        let text = "hello\n";
        let by_log = sign(text, &log);
        let witness_line = sign(text, &witness)
            .strip_prefix("hello\n\n")
            .unwrap()
            .to_owned();
        // Witness first, log second: the verifier finds its own line.
        let both = format!(
            "hello\n\n{witness_line}{}",
            by_log.strip_prefix("hello\n\n").unwrap()
        );
        assert_eq!(open(&both, &log.verifier()).unwrap(), text);
        assert_eq!(open(&both, &witness.verifier()).unwrap(), text);
        // A note signed only by an unknown key is not accepted.
        assert_eq!(
            open(&sign(text, &witness), &log.verifier()),
            Err(CheckpointError::NotSignedByVerifier {
                name: "log.example".into()
            })
        );
        // Same name, other key: not verified, and said to be another key's.
        let impostor = signer("log.example", 3);
        assert!(matches!(
            open(&sign(text, &impostor), &log.verifier()),
            Err(CheckpointError::SignedByAnotherKey { signed_by, trusted, .. })
                if signed_by == impostor.id && trusted == log.id
        ));
        // A garbled unknown line still makes the note malformed.
        let garbled = format!("{by_log}— other.example !!!\n");
        assert_eq!(
            open(&garbled, &log.verifier()),
            Err(CheckpointError::MalformedSignature { line: 2 })
        );
    }

    #[test]
    fn envelope_is_strict() {
        let log = signer("log.example", 1);
        let v = log.verifier();
        let note = sign("a\nb\n", &log);
        let sig_line = note.strip_prefix("a\nb\n\n").unwrap();
        assert_eq!(open(&note, &v).unwrap(), "a\nb\n");
        // No blank line before the signatures.
        assert_eq!(
            open(&format!("a\nb\n{sig_line}"), &v),
            Err(CheckpointError::MissingSignatures)
        );
        // Nothing after the blank line.
        assert_eq!(
            open("a\nb\n\n", &v),
            Err(CheckpointError::MissingSignatures)
        );
        // Missing final newline.
        assert_eq!(
            open(note.strip_suffix('\n').unwrap(), &v),
            Err(CheckpointError::MalformedSignature { line: 1 })
        );
        // An extra blank line moves the split and changes the signed text.
        assert_eq!(
            open(&format!("a\nb\n\n\n{sig_line}"), &v),
            Err(CheckpointError::BadSignature)
        );
        // Carriage returns and other control characters are not allowed.
        assert_eq!(
            open(&note.replace("a\n", "a\r\n"), &v),
            Err(CheckpointError::ControlCharacter)
        );
        // Hyphen instead of em dash.
        assert_eq!(
            open(&note.replace('—', "-"), &v),
            Err(CheckpointError::MalformedSignature { line: 1 })
        );
        // Oversized note.
        let big = format!("{}\n\n{sig_line}", "x".repeat(MAX_NOTE_LEN));
        assert_eq!(
            open(&big, &v),
            Err(CheckpointError::TooLarge { len: big.len() })
        );
        // Too many signature lines.
        let many = format!("a\nb\n\n{}", sig_line.repeat(MAX_SIGNATURES + 1));
        assert_eq!(open(&many, &v), Err(CheckpointError::TooManySignatures));
        let enough = format!("a\nb\n\n{}", sig_line.repeat(16));
        assert_eq!(open(&enough, &v).unwrap(), "a\nb\n");
    }
}
