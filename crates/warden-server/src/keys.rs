//! Keys Warden generates on first start and keeps in its data directory, each 0600: the SSH
//! user CA, the audit signing key, and the master key that seals secrets at rest.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rand::Rng;

/// Environment variable that supplies the master key (base64 of 32 bytes) instead of a file.
pub const MASTER_KEY_ENV: &str = "WARDEN_MASTER_KEY";

/// Writes `bytes` to a new file readable only by its owner.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Reads a key file, refusing one that group or others can read.
fn read_private(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => {
            let mode = fs::metadata(path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                bail!(
                    "{} is readable by group or others (mode {mode:o}); run chmod 600 on it",
                    path.display()
                );
            }
            Ok(Some(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Loads the Ed25519 audit signing key (PKCS#8 PEM), creating it on first start.
pub fn audit_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    if let Some(bytes) = read_private(path)? {
        // Damaged (the key is written whole before first use): only its backup can stand in,
        // since verifiers trust its public key.
        let restore = "restore the file from a backup of the data dir";
        if bytes.trim_ascii().is_empty() {
            bail!(
                "{} is empty, where the audit signing key should be: {restore}",
                path.display()
            );
        }
        let pem = String::from_utf8(bytes).with_context(|| {
            format!(
                "{}: the audit signing key is not PEM text: {restore}",
                path.display()
            )
        })?;
        if !pem.trim_start().starts_with("-----BEGIN PRIVATE KEY-----") {
            bail!(
                "{}: does not begin -----BEGIN PRIVATE KEY-----, as the audit signing key does: {restore}",
                path.display()
            );
        }
        return SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
            anyhow::anyhow!(
                "{}: not an Ed25519 PKCS#8 key ({e}): {restore}",
                path.display()
            )
        });
    }
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    let pem = key
        .to_pkcs8_pem(Default::default())
        .map_err(|e| anyhow::anyhow!("encoding audit signing key: {e}"))?;
    write_private(path, pem.as_bytes())?;
    Ok(key)
}

/// Seals secrets at rest with AES-256-GCM envelope encryption: each secret is encrypted under
/// its own random data key, and only the data key is encrypted under the master key. Rotating
/// the master key re-wraps the small data keys and leaves the secrets' ciphertexts untouched.
///
/// Format: `v2.` base64(nonce ‖ wrapped data key) `.` base64(nonce ‖ ciphertext).
#[derive(Clone)]
pub struct Sealer {
    master: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<key>)")
    }
}

fn encrypt(cipher: &Aes256Gcm, plain: &[u8]) -> anyhow::Result<String> {
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(&Nonce::from(nonce), plain)
        .map_err(|_| anyhow::anyhow!("sealing failed"))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    Ok(STANDARD.encode(out))
}

fn decrypt(cipher: &Aes256Gcm, b64: &str) -> anyhow::Result<Vec<u8>> {
    let raw = STANDARD
        .decode(b64)
        .ok()
        .filter(|r| r.len() > 12)
        .context("sealed value is malformed")?;
    let (nonce, ct) = raw.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().context("sealed value is malformed")?;
    cipher
        .decrypt(&Nonce::from(nonce), ct)
        .map_err(|_| anyhow::anyhow!("sealed value does not open with this master key"))
}

fn cipher(key: &[u8]) -> anyhow::Result<Aes256Gcm> {
    Aes256Gcm::new_from_slice(key).map_err(|_| anyhow::anyhow!("a key must be 32 bytes"))
}

impl Sealer {
    /// Loads the master key from `WARDEN_MASTER_KEY` or `path`, creating the file on first
    /// start when the variable is unset.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        let key = match std::env::var(MASTER_KEY_ENV) {
            Ok(b64) => STANDARD
                .decode(b64.trim())
                .ok()
                .filter(|k| k.len() == 32)
                .with_context(|| {
                    format!("{MASTER_KEY_ENV} must be the base64 of exactly 32 bytes")
                })?,
            Err(_) => match read_private(path)? {
                Some(k) if k.len() == 32 => k,
                Some(_) => bail!("{} must hold exactly 32 bytes", path.display()),
                None => {
                    let mut k = vec![0u8; 32];
                    rand::rng().fill_bytes(&mut k);
                    write_private(path, &k)?;
                    k
                }
            },
        };
        Ok(Self {
            master: cipher(&key)?,
        })
    }

    /// Whether `sealed` opens under this master key: the check that a key is the data's.
    pub fn opens(&self, sealed: &str) -> bool {
        self.open(sealed).is_ok()
    }

    /// Loads a master key file that must exist (for re-wrapping).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        match read_private(path)? {
            Some(k) if k.len() == 32 => Ok(Self {
                master: cipher(&k)?,
            }),
            Some(_) => bail!("{} must hold exactly 32 bytes", path.display()),
            None => bail!("{} does not exist", path.display()),
        }
    }

    /// Creates a new random master key file (mode 0600) for a rotation.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let mut k = vec![0u8; 32];
        rand::rng().fill_bytes(&mut k);
        write_private(path, &k)?;
        Ok(Self {
            master: cipher(&k)?,
        })
    }

    /// Encrypts `plain` under a fresh data key.
    pub fn seal(&self, plain: &[u8]) -> anyhow::Result<String> {
        let mut dek = [0u8; 32];
        rand::rng().fill_bytes(&mut dek);
        let body = encrypt(&cipher(&dek)?, plain)?;
        let wrapped = encrypt(&self.master, &dek)?;
        Ok(format!("v2.{wrapped}.{body}"))
    }

    fn parts(sealed: &str) -> anyhow::Result<(&str, &str)> {
        sealed
            .strip_prefix("v2.")
            .and_then(|r| r.split_once('.'))
            .context("sealed value is malformed")
    }

    /// Decrypts what [`Sealer::seal`] produced.
    pub fn open(&self, sealed: &str) -> anyhow::Result<Vec<u8>> {
        let (wrapped, body) = Self::parts(sealed)?;
        let dek = decrypt(&self.master, wrapped)?;
        decrypt(&cipher(&dek)?, body)
    }

    /// Re-wraps a sealed value's data key under `new`, for master key rotation.
    pub fn rewrap(&self, sealed: &str, new: &Sealer) -> anyhow::Result<String> {
        let (wrapped, body) = Self::parts(sealed)?;
        let dek = decrypt(&self.master, wrapped)?;
        Ok(format!("v2.{}.{body}", encrypt(&new.master, &dek)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.key");
        let k1 = audit_signing_key(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(audit_signing_key(&p).unwrap().to_bytes(), k1.to_bytes());
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            audit_signing_key(&p)
                .unwrap_err()
                .to_string()
                .contains("chmod 600")
        );
        // A damaged key is refused with the way out.
        let empty = dir.path().join("empty.key");
        write_private(&empty, b"").unwrap();
        let e = audit_signing_key(&empty).unwrap_err().to_string();
        assert!(e.contains("is empty") && e.contains("backup"), "{e}");
        let garbage = dir.path().join("garbage.key");
        write_private(&garbage, b"garbage\n").unwrap();
        let e = audit_signing_key(&garbage).unwrap_err().to_string();
        assert!(
            e.contains("does not begin -----BEGIN PRIVATE KEY-----") && e.contains("backup"),
            "{e}"
        );

        let s = Sealer::load_or_create(&dir.path().join("master.key")).unwrap();
        let sealed = s.seal(b"JBSWY3DPEHPK3PXP").unwrap();
        assert!(!sealed.contains("JBSWY3DPEHPK3PXP"));
        assert_eq!(s.open(&sealed).unwrap(), b"JBSWY3DPEHPK3PXP");
        assert!(s.open("v2.AAAA.AAAA").is_err());
        // Rotation: the new key opens the re-wrapped value, the old one no longer does.
        let new = Sealer::create(&dir.path().join("master.key.new")).unwrap();
        let rewrapped = s.rewrap(&sealed, &new).unwrap();
        assert_eq!(new.open(&rewrapped).unwrap(), b"JBSWY3DPEHPK3PXP");
        assert!(s.open(&rewrapped).is_err());
        assert_eq!(sealed.rsplit('.').next(), rewrapped.rsplit('.').next());
    }
}
