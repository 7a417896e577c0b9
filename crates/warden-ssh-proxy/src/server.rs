//! The listener and the per-connection SSH server: who is connecting, to which target.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::ssh_key::{Algorithm, LineEnding, PrivateKey};
use russh::server::{self, Auth, Msg, Session, VerifiedPublicKey};
use russh::{Channel, MethodKind, MethodSet};
use tokio::net::TcpListener;
use warden_domain::{RequestId, UserName};

use crate::session::{self, Identity};
use crate::{Backend, Error, Recordings, SessionRegistry};

/// Upstream and downstream channel window: large enough for bulk transfers at loopback
/// speed, small enough that an idle session holds little.
const WINDOW: u32 = 2 * 1024 * 1024;

/// The ciphers of both legs, AES-GCM only: with AES-NI it costs a fraction of
/// ChaCha20-Poly1305, and the proxy pays for every byte twice (decrypting it from one side,
/// encrypting it for the other). Offering nothing else makes the stock OpenSSH client, which
/// prefers ChaCha20 and then the CTR modes, choose AES-128-GCM; every OpenSSH since 6.2 has it.
const CIPHERS: &[russh::cipher::Name] = &[russh::cipher::AES_128_GCM, russh::cipher::AES_256_GCM];

fn preferred() -> russh::Preferred {
    russh::Preferred {
        cipher: std::borrow::Cow::Borrowed(CIPHERS),
        ..russh::Preferred::default()
    }
}

/// What the proxy needs to run.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub backend: Arc<dyn Backend>,
    pub registry: Arc<SessionRegistry>,
    pub recordings: Arc<dyn Recordings>,
}

/// Shared by every connection.
#[derive(Debug)]
pub(crate) struct Context {
    pub backend: Arc<dyn Backend>,
    pub registry: Arc<SessionRegistry>,
    pub recordings: Arc<dyn Recordings>,
    pub client: Arc<russh::client::Config>,
}

/// A bound SSH listener.
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    server: Arc<server::Config>,
}

/// Loads the proxy's host key from `path`, creating an Ed25519 key (mode 0600) on first
/// start. Returns whether it was created.
pub fn load_or_create_host_key(path: &Path) -> Result<(PrivateKey, bool), Error> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let err = |detail: String| Error::HostKey {
        path: path.display().to_string(),
        detail,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mode = std::fs::metadata(path)
                .map_err(|e| err(e.to_string()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(err(format!(
                    "readable by group or others (mode {:o}); run chmod 600 on it",
                    mode & 0o777
                )));
            }
            let key = PrivateKey::from_openssh(text).map_err(|e| err(e.to_string()))?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
                .map_err(|e| err(e.to_string()))?;
            key.set_comment("warden-ssh-proxy");
            let pem = key
                .to_openssh(LineEnding::LF)
                .map_err(|e| err(e.to_string()))?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| err(e.to_string()))?;
            f.write_all(pem.as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| err(e.to_string()))?;
            Ok((key, true))
        }
        Err(e) => Err(err(e.to_string())),
    }
}

impl Listener {
    /// Binds `addr` with the proxy's host key.
    pub async fn bind(addr: SocketAddr, host_key: PrivateKey) -> Result<Self, Error> {
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen { addr, source })?;
        let mut methods = MethodSet::empty();
        methods.push(MethodKind::PublicKey);
        let server = server::Config {
            methods,
            keys: vec![host_key],
            auth_rejection_time: Duration::from_millis(100),
            auth_rejection_time_initial: Some(Duration::ZERO),
            window_size: WINDOW,
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            nodelay: true,
            preferred: preferred(),
            ..Default::default()
        };
        Ok(Self {
            tcp,
            server: Arc::new(server),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Accepts connections until `stop` resolves.
    pub async fn run(self, config: ProxyConfig, stop: impl std::future::Future<Output = ()>) {
        let ctx = Arc::new(Context {
            backend: config.backend,
            registry: config.registry,
            recordings: config.recordings,
            client: Arc::new(russh::client::Config {
                window_size: WINDOW,
                inactivity_timeout: None,
                nodelay: true,
                preferred: preferred(),
                ..Default::default()
            }),
        });
        tokio::pin!(stop);
        loop {
            let (socket, peer) = tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "ssh accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut stop => return,
            };
            let _ = socket.set_nodelay(true);
            let handler = Connection {
                ctx: ctx.clone(),
                peer,
                identity: None,
            };
            let server = self.server.clone();
            tokio::spawn(async move {
                match server::run_stream(server, socket, handler).await {
                    Ok(running) => {
                        if let Err(e) = running.await {
                            tracing::debug!(%peer, error = %e, "ssh connection ended with an error");
                        }
                    }
                    Err(e) => tracing::debug!(%peer, error = %e, "ssh handshake failed"),
                }
            });
        }
    }
}

/// What the SSH user name asks for: `WARDEN_USER:TARGET[:LOGIN]`.
fn parse_user(s: &str) -> Option<(UserName, String, Option<String>)> {
    let mut parts = s.splitn(3, ':');
    let user = parts.next()?.parse().ok()?;
    let target = parts.next().filter(|t| !t.is_empty())?.to_owned();
    let login = parts.next().filter(|l| !l.is_empty()).map(str::to_owned);
    Some((user, target, login))
}

/// One client connection.
struct Connection {
    ctx: Arc<Context>,
    peer: SocketAddr,
    identity: Option<Arc<Identity>>,
}

impl Connection {
    /// Accepts the login when the key or certificate belongs to the user the SSH user name
    /// claims, and remembers who they are and what they asked for.
    fn accept_if(
        &mut self,
        owner: Option<(UserName, Option<RequestId>)>,
        claimed: UserName,
        target: String,
        login: Option<String>,
    ) -> Auth {
        match owner {
            Some((user, grant)) if user == claimed => {
                self.identity = Some(Arc::new(Identity {
                    user,
                    target,
                    login,
                    peer: self.peer,
                    grant,
                }));
                Auth::Accept
            }
            _ => Auth::reject(),
        }
    }
}

impl server::Handler for Connection {
    type Error = Error;

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let Some((claimed, target, login)) = parse_user(user) else {
            return Ok(Auth::reject());
        };
        let owner = self.ctx.backend.authenticate(key.public_key).await?;
        Ok(self.accept_if(owner.map(|u| (u, None)), claimed, target, login))
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &russh::keys::Certificate,
    ) -> Result<Auth, Self::Error> {
        let Some((claimed, target, login)) = parse_user(user) else {
            return Ok(Auth::reject());
        };
        let owner = self
            .ctx
            .backend
            .authenticate_certificate(certificate)
            .await?;
        Ok(self.accept_if(
            owner.map(|(u, grant)| (u, Some(grant))),
            claimed,
            target,
            login,
        ))
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(identity) = self.identity.clone() else {
            return Ok(()); // dropping the reply refuses the channel
        };
        reply.accept().await;
        let ctx = self.ctx.clone();
        let handle = session.handle();
        tokio::spawn(session::run(ctx, identity, channel, handle));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_name_the_target() {
        let (u, t, l) = parse_user("alice:prod-web-1").unwrap();
        assert_eq!((u.as_str(), t.as_str(), l), ("alice", "prod-web-1", None));
        let (_, _, l) = parse_user("alice:web:deploy").unwrap();
        assert_eq!(l.as_deref(), Some("deploy"));
        assert!(parse_user("alice").is_none());
        assert!(parse_user("alice:").is_none());
    }

    #[test]
    fn the_host_key_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh_host_key");
        let (a, created) = load_or_create_host_key(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (b, created) = load_or_create_host_key(&path).unwrap();
        assert!(!created);
        assert_eq!(a.public_key(), b.public_key());
    }
}
