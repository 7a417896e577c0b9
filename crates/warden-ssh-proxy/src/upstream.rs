//! The connection to the target's sshd: a fresh key per session, a certificate valid only
//! for the grant, and the pinned host key checked before anything is sent.

use std::sync::Arc;
use std::time::Duration;

use russh::client;
use russh::keys::PublicKeyOrCertificate;
use russh::keys::ssh_key::{Algorithm, HashAlg, PrivateKey, PublicKey};

use crate::{Backend, Error, Grant};

/// How long connecting and logging in upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts exactly the pinned host key.
#[derive(Debug)]
pub(crate) struct Pinned {
    key: PublicKey,
    /// The fingerprint of the key the server presented, for the error message.
    seen: Arc<std::sync::Mutex<Option<String>>>,
}

impl client::Handler for Pinned {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        presented: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match presented {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(_) => return Ok(false),
        };
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(key.fingerprint(HashAlg::Sha256).to_string());
        }
        Ok(key.key_data() == self.key.key_data())
    }
}

/// A logged-in upstream connection.
pub(crate) struct Connection {
    pub handle: client::Handle<Pinned>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connection")
    }
}

/// Connects to the grant's target and logs in as `login`.
pub(crate) async fn connect(
    backend: &dyn Backend,
    grant: &Grant,
    login: &str,
    config: Arc<client::Config>,
) -> Result<Connection, Error> {
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
        .map_err(|e| Error::Upstream(format!("generating a session key: {e}")))?;
    let cert = backend.sign(grant, key.public_key()).await?;
    let up = &grant.upstream;
    let seen = Arc::new(std::sync::Mutex::new(None));
    let pinned = Pinned {
        key: up.host_key.clone(),
        seen: seen.clone(),
    };
    let addr = (up.host.as_str(), up.port);
    let work = async {
        let mut handle = client::connect(config, addr, pinned).await.map_err(|e| {
            match e {
                russh::Error::UnknownKey => Error::Upstream(format!(
                    "{}:{} presented a host key ({}) other than the one pinned for {} ({}); nothing was sent",
                    up.host,
                    up.port,
                    seen.lock()
                        .ok()
                        .and_then(|s| s.clone())
                        .unwrap_or_else(|| "a certificate".to_owned()),
                    grant.target,
                    up.host_key.fingerprint(HashAlg::Sha256)
                )),
                e => Error::Upstream(format!("connecting to {}:{}: {e}", up.host, up.port)),
            }
        })?;
        let auth = handle
            .authenticate_openssh_cert(login, Arc::new(key), cert)
            .await?;
        if !auth.success() {
            return Err(Error::Upstream(format!(
                "{}:{} refused Warden's certificate for {login:?}: does its sshd trust Warden's CA (TrustedUserCAKeys) and allow the principal?",
                up.host, up.port
            )));
        }
        Ok(Connection { handle })
    };
    tokio::time::timeout(CONNECT_TIMEOUT, work)
        .await
        .map_err(|_| Error::Upstream(format!("{}:{} did not answer in time", up.host, up.port)))?
}

/// Records the host key a server presents and refuses to go on.
#[derive(Debug, Default)]
struct Scan(Arc<std::sync::Mutex<Option<PublicKey>>>);

impl client::Handler for Scan {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        presented: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        if let PublicKeyOrCertificate::PublicKey { key, .. } = presented {
            *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(key.clone());
        }
        Ok(false)
    }
}

/// The host key `host:port` presents, for an administrator to confirm before pinning it.
pub async fn fetch_host_key(host: &str, port: u16) -> Result<PublicKey, Error> {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let config = Arc::new(client::Config::default());
    let attempt = client::connect(config, (host, port), Scan(seen.clone()));
    let outcome = tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .map_err(|_| Error::Upstream(format!("{host}:{port} did not answer in time")))?;
    let key = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    // Scan refuses every key, so the connection always ends in an error: it only matters
    // when no key was seen, to tell a host never reached from one that showed none.
    match (key, outcome) {
        (Some(key), _) => Ok(key),
        (None, Err(russh::Error::IO(e))) => Err(Error::Upstream(format!(
            "cannot reach {host}:{port}: {e}; is its sshd listening there, and are connection.host and connection.port in the policy right?"
        ))),
        (None, Err(e)) => Err(Error::Upstream(format!(
            "{host}:{port} presented no host key ({e}): is it an SSH server?"
        ))),
        (None, Ok(_)) => Err(Error::Upstream(format!(
            "{host}:{port} presented no host key"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port nothing listens on is reported as unreachable, with the reason, not as a host
    /// that showed no key.
    #[tokio::test]
    async fn a_closed_port_is_reported_as_unreachable() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let err = fetch_host_key("127.0.0.1", port)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("cannot reach 127.0.0.1:{port}")) && err.contains("refused"),
            "{err}"
        );
        assert!(!err.contains("presented no host key"), "{err}");
    }
}
