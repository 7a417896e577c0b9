//! Warden's SSH user certificate authority key: created on first start, kept 0600.
//!
//! The key is held as an AWS-LC Ed25519 key pair with its public half and fingerprint derived
//! once at load: signing through `ssh_key::PrivateKey` re-derives the public key (a scalar
//! multiplication as costly as the signature itself) at every certificate. AWS-LC's Ed25519
//! (formally verified assembly) signs in half the time of `ed25519_dalek` on this path, and
//! a signature is the largest single cost of a grant.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::signature::Ed25519KeyPair;

use ed25519_dalek::ed25519::signature;
use ssh_key::certificate::Builder;
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey, Signature};

/// Why the CA key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    // Not a `source`: the message holds it, and error chains would print it twice.
    #[error("cannot read SSH user CA key {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("SSH user CA key {path} is not an unencrypted OpenSSH private key: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error(
        "SSH user CA key {path} is readable by group or others (mode {mode:o}); run chmod 600 on it"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("cannot create SSH user CA key {path}: {detail}")]
    Create { path: PathBuf, detail: String },
    #[error("signing failed: {0}")]
    Sign(String),
}

/// The CA that signs user certificates.
#[derive(Clone)]
pub struct UserCa {
    signer: CaSigner,
    public: String,
    fingerprint: String,
}

/// The CA key in the form that signs without re-deriving anything.
#[derive(Clone)]
struct CaSigner {
    key: Arc<Ed25519KeyPair>,
    public: KeyData,
}

impl signature::Signer<Signature> for CaSigner {
    fn try_sign(&self, message: &[u8]) -> signature::Result<Signature> {
        Ok(Signature::new(
            Algorithm::Ed25519,
            self.key.sign(message).as_ref(),
        )?)
    }
}

impl From<&CaSigner> for KeyData {
    fn from(signer: &CaSigner) -> Self {
        signer.public.clone()
    }
}

impl std::fmt::Debug for UserCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserCa")
            .field("public", &self.public)
            .finish()
    }
}

impl UserCa {
    /// Loads the Ed25519 CA key at `path`, creating it (mode 0600) if it does not exist.
    /// Returns whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), CaError> {
        match fs::read_to_string(path) {
            Ok(text) => {
                let mode = fs::metadata(path)
                    .map_err(|error| CaError::Read {
                        path: path.into(),
                        error,
                    })?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(CaError::Permissions {
                        path: path.into(),
                        mode: mode & 0o777,
                    });
                }
                // The PEM decoder's word for text that is no PEM at all (an emptied or
                // overwritten file) names a NUL byte the file does not hold: said plainly here.
                const BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
                if !text.trim_start().starts_with(BEGIN) {
                    let what = if text.trim().is_empty() {
                        "it is empty".to_owned()
                    } else {
                        format!("it does not begin {BEGIN}")
                    };
                    return Err(CaError::Parse {
                        path: path.into(),
                        detail: format!(
                            "{what}: restore it from a backup of the data dir (hosts trust its public half)"
                        ),
                    });
                }
                let key = PrivateKey::from_openssh(text).map_err(|e| CaError::Parse {
                    path: path.into(),
                    detail: e.to_string(),
                })?;
                if key.is_encrypted() {
                    return Err(CaError::Parse {
                        path: path.into(),
                        detail: "it is encrypted".into(),
                    });
                }
                Ok((Self::from_key(key, path)?, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let create = |detail: String| CaError::Create {
                    path: path.into(),
                    detail,
                };
                let mut rng = rand::rng();
                let mut key = PrivateKey::random(&mut rng, Algorithm::Ed25519)
                    .map_err(|e| create(e.to_string()))?;
                key.set_comment("warden-user-ca");
                let pem = key
                    .to_openssh(LineEnding::LF)
                    .map_err(|e| create(e.to_string()))?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| create(e.to_string()))?;
                f.write_all(pem.as_bytes())
                    .map_err(|e| create(e.to_string()))?;
                f.sync_all().map_err(|e| create(e.to_string()))?;
                Ok((Self::from_key(key, path)?, true))
            }
            Err(error) => Err(CaError::Read {
                path: path.into(),
                error,
            }),
        }
    }

    fn from_key(key: PrivateKey, path: &Path) -> Result<Self, CaError> {
        let parse = |detail: String| CaError::Parse {
            path: path.into(),
            detail,
        };
        let pair = key.key_data().ed25519().ok_or_else(|| {
            parse(format!(
                "it is an {} key; the user CA must be Ed25519: put back the Ed25519 CA key this data dir made (hosts trust its public half); a new one is made only for a new data dir",
                key.algorithm()
            ))
        })?;
        let pair =
            Ed25519KeyPair::from_seed_and_public_key(pair.private.as_ref(), pair.public.as_ref())
                .map_err(|e| parse(format!("its private and public halves do not match: {e}")))?;
        let signer = CaSigner {
            key: Arc::new(pair),
            public: key.public_key().key_data().clone(),
        };
        let public = key
            .public_key()
            .to_openssh()
            .map_err(|e| parse(e.to_string()))?;
        let fingerprint = key.public_key().fingerprint(HashAlg::Sha256).to_string();
        Ok(Self {
            signer,
            public,
            fingerprint,
        })
    }

    /// The CA public key in OpenSSH format, for sshd's `TrustedUserCAKeys`.
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// The CA key's SHA-256 fingerprint.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// A key revocation list of this CA's certificates for the given grants (their ids): the
    /// certificate handed to the user and the SSH proxy's own for each (see [`super::krl`]).
    pub fn revocation_list(&self, grants: &[String], version: u64) -> Result<Vec<u8>, String> {
        let key_ids = super::krl::key_ids_of(grants);
        PublicKey::from_openssh(&self.public)
            .and_then(|ca| super::krl::revoked_key_ids(&ca, &key_ids, version))
            .map_err(|e| e.to_string())
    }

    /// Signs a prepared certificate and returns it in OpenSSH format.
    pub(crate) fn sign(&self, builder: Builder) -> Result<String, CaError> {
        builder
            .sign(&self.signer)
            .and_then(|c| c.to_openssh())
            .map_err(|e| CaError::Sign(e.to_string()))
    }
}
