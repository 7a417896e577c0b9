//! OpenSSH key revocation lists (`PROTOCOL.krl`), for sshd's `RevokedKeys`.
//!
//! A grant revoked before its end is listed by its certificates' key ids: the grant id, which
//! the certificate handed to the user carries, and the grant id with
//! [`super::PROXY_KEY_ID_SUFFIX`], which the SSH proxy's own certificates for its sessions
//! carry ([`key_ids_of`]). So one grant is cut off at hosts, however it is reached, and no
//! other: not a later grant certifying the same public key (an extension, or a user's own key
//! passed to several requests), which a list of plain keys would also cut off.

use ssh_key::PublicKey;

/// `SSHKRL\n\0`.
const MAGIC: &[u8; 8] = b"SSHKRL\n\0";
const FORMAT_VERSION: u32 = 1;
const SECTION_CERTIFICATES: u8 = 1;
const CERT_SECTION_KEY_ID: u8 = 0x23;

/// The key ids of every certificate Warden signs for `grants` (their ids): the user's and the
/// SSH proxy's, for each.
pub fn key_ids_of(grants: &[String]) -> Vec<String> {
    grants
        .iter()
        .flat_map(|g| [g.clone(), super::proxy_key_id(g)])
        .collect()
}

/// A KRL revoking the certificates signed by `ca` whose key id is one of `key_ids`. `version`
/// must grow from one list to the next (the time it was made, in seconds, does).
pub fn revoked_key_ids(
    ca: &PublicKey,
    key_ids: &[String],
    version: u64,
) -> Result<Vec<u8>, ssh_key::Error> {
    let mut krl = Vec::new();
    krl.extend_from_slice(MAGIC);
    krl.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    krl.extend_from_slice(&version.to_be_bytes());
    // Generated at, then flags (none).
    krl.extend_from_slice(&version.to_be_bytes());
    krl.extend_from_slice(&0u64.to_be_bytes());
    string(&mut krl, b"");
    string(&mut krl, b"Warden: grants revoked before their end");
    if key_ids.is_empty() {
        return Ok(krl);
    }
    let mut ids = Vec::new();
    for id in key_ids {
        string(&mut ids, id.as_bytes());
    }
    let mut section = Vec::new();
    string(&mut section, &ca.to_bytes()?);
    string(&mut section, b"");
    section.push(CERT_SECTION_KEY_ID);
    string(&mut section, &ids);
    krl.push(SECTION_CERTIFICATES);
    string(&mut krl, &section);
    Ok(krl)
}

/// An SSH wire-format string: its length as a big-endian `u32`, then its bytes.
fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_key::{Algorithm, PrivateKey};

    #[test]
    fn an_empty_list_is_a_header_alone() {
        let ca = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let krl = revoked_key_ids(ca.public_key(), &[], 7).unwrap();
        assert_eq!(&krl[..8], MAGIC);
        assert_eq!(krl[8..12], 1u32.to_be_bytes());
        assert_eq!(krl[12..20], 7u64.to_be_bytes());
        // Header: magic, version, krl version, date, flags, two strings (4 + 0, 4 + 39).
        assert_eq!(krl.len(), 8 + 4 + 8 + 8 + 8 + 4 + 4 + 39);
        let listed = revoked_key_ids(ca.public_key(), &["g1".into()], 7).unwrap();
        assert_eq!(listed[krl.len()], SECTION_CERTIFICATES);
    }
}
