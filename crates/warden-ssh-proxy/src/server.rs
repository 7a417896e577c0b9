//! The listener and the per-connection SSH server: who is connecting, to which target.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use russh::keys::ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey};
use russh::server::{self, Auth, Msg, Session, VerifiedPublicKey};
use russh::{Channel, MethodKind, MethodSet};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use warden_domain::audit::{Actor, Code, Event};
use warden_domain::{RequestId, UserName};

use crate::limits::{Limits, Reason, Signed, SignedIn, Unsigned, Waiting};
use crate::session::{self, Identity};
use crate::{Backend, Certified, Denied, Error, Recordings, SessionRegistry};

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
    /// How long a client has from connecting to signing in: [`SIGN_IN_DEADLINE`] (tests take
    /// less).
    pub sign_in_deadline: Duration,
    /// What one user or address may hold: [`Limits::default`] (tests take less).
    pub limits: Limits,
}

/// Shared by every connection.
#[derive(Debug)]
pub(crate) struct Context {
    pub backend: Arc<dyn Backend>,
    pub registry: Arc<SessionRegistry>,
    pub recordings: Arc<dyn Recordings>,
    pub client: Arc<russh::client::Config>,
    pub limits: Limits,
    /// The connections signed in, by user and by address.
    pub signed: Arc<Signed>,
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
            // The parser's own words name PEM details ("preamble", "NUL byte") that say little
            // of a damaged file; what to do about it is what matters.
            let key = PrivateKey::from_openssh(text).map_err(|e| {
                err(format!(
                    "it is not an OpenSSH private key ({e}); restore it from your backup (clients pinned it), or move it away to have a new one made, which clients then refuse until they pin it anew"
                ))
            })?;
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
    /// Serves on `tcp`, bound by the caller (who takes its address before anything else at
    /// start), with the proxy's host key.
    pub fn new(tcp: TcpListener, host_key: PrivateKey) -> Self {
        let server = server::Config {
            methods: MethodSet::from(PUBLIC_KEYS),
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
        Self {
            tcp,
            server: Arc::new(server),
        }
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Accepts connections until `stop` resolves. A connection past the limits on those
    /// waiting to sign in is closed at once; refusals, and accepts that fail (the process out of
    /// file descriptors), are counted and logged as a summary at most once a minute per reason,
    /// never a line each.
    pub async fn run(self, config: ProxyConfig, stop: impl Future<Output = ()>) {
        let deadline = config.sign_in_deadline;
        let unsigned = Arc::new(Unsigned::new(&config.limits));
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
            signed: Arc::new(Signed::new(&config.limits)),
            limits: config.limits,
        });
        let refusals = || ctx.registry.refusals();
        let mut summaries = tokio::time::interval(crate::limits::SUMMARY_INTERVAL);
        summaries.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            let (socket, peer) = tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        refusals().count(Reason::AcceptFailed, Some(&e));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = summaries.tick() => {
                    refusals().summarize();
                    continue;
                }
                () = &mut stop => return,
            };
            let waiting = match unsigned.admit(peer.ip()) {
                Ok(waiting) => waiting,
                Err(reason) => {
                    refusals().count(reason, None);
                    continue;
                }
            };
            let _ = socket.set_nodelay(true);
            let signed_in = Arc::new(AtomicBool::new(false));
            let handler = Connection {
                ctx: ctx.clone(),
                peer,
                identity: None,
                signed_in: signed_in.clone(),
                waiting: Some(waiting),
                place: None,
                open: Arc::new(watch::channel(0).0),
                refused: 0,
                sign_in_refusals: 0,
                told: None,
                backlogs: std::collections::HashMap::new(),
            };
            let stream = SignInDeadline {
                stream: socket,
                deadline: Box::pin(tokio::time::sleep(deadline)),
                signed_in,
            };
            let server = self.server.clone();
            tokio::spawn(async move {
                match server::run_stream(server, stream, handler).await {
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

/// How clients sign in: with public keys, certificates among them.
const PUBLIC_KEYS: &[MethodKind] = &[MethodKind::PublicKey];

/// The same, and keyboard-interactive, offered only to tell why a Warden certificate (or
/// registered key) was refused (see `Connection::told`); it signs no one in.
const TELLING_WHY: &[MethodKind] = &[MethodKind::PublicKey, MethodKind::KeyboardInteractive];

/// What the SSH user name asks for: `WARDEN_USER:TARGET[:LOGIN]`. A target or login is kept
/// as [`bounded`], so a refusal and its audit event can quote it.
fn parse_user(s: &str) -> Option<(UserName, String, Option<String>)> {
    let mut parts = s.splitn(3, ':');
    let user = parts.next()?.parse().ok()?;
    let target = parts.next().filter(|t| !t.is_empty()).map(bounded)?;
    let login = parts.next().filter(|l| !l.is_empty()).map(bounded);
    Some((user, target, login))
}

/// `name` as it may be quoted: whole when it is at most [`NAME_MAX`] characters that show as
/// themselves, else its first [`NAME_MAX`] with each hidden one replaced by U+FFFD and `…`
/// after them, which no target or login is named, so it is refused as unknown.
fn bounded(name: &str) -> String {
    use warden_domain::text::hidden;
    if name.chars().count() <= NAME_MAX && !name.chars().any(hidden) {
        return name.to_owned();
    }
    let mut shown: String = name
        .chars()
        .take(NAME_MAX)
        .map(|c| if hidden(c) { '\u{FFFD}' } else { c })
        .collect();
    shown.push('…');
    shown
}

/// Longest target or login name taken in an SSH user name.
const NAME_MAX: usize = 64;

/// How long a client has from connecting to signing in.
pub const SIGN_IN_DEADLINE: Duration = Duration::from_secs(30);

/// A client's connection, cut at its sign-in deadline unless the client signed in by then,
/// whatever stage it reached: the library runs a connection on a task of its own once the
/// client's identification string is read, which nothing else could end before the client
/// speaks again, and which holds the connection's place among those not signed in.
struct SignInDeadline {
    stream: TcpStream,
    deadline: Pin<Box<tokio::time::Sleep>>,
    signed_in: Arc<AtomicBool>,
}

impl SignInDeadline {
    /// Whether the deadline passed with the client not signed in; else the task is woken when
    /// it passes.
    fn passed(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        !self.signed_in.load(Ordering::Acquire) && self.deadline.as_mut().poll(cx).is_ready()
    }

    fn cut() -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "not signed in by the sign-in deadline",
        )
    }
}

impl AsyncRead for SignInDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.passed(cx) {
            return Poll::Ready(Err(Self::cut()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SignInDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.passed(cx) {
            return Poll::Ready(Err(Self::cut()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A session channel open on a connection, counted in its [`Connection::open`] until dropped.
struct OpenSession(Arc<watch::Sender<usize>>);

impl OpenSession {
    fn new(open: Arc<watch::Sender<usize>>) -> Self {
        open.send_modify(|n| *n += 1);
        Self(open)
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Closes a signed-in connection once it has had no session channel open for the idle limit
/// ([`Limits::idle`]): since it signed in, or since its last session ended. A connection
/// signed in for no session would hold its file descriptor, and its place among its user's
/// and address's, for nothing; a session, however long it runs, is never cut for it. Ends
/// with the connection (when `open`'s sender, held by the connection and its sessions, goes).
async fn close_when_idle(
    ctx: Arc<Context>,
    handle: server::Handle,
    mut open: watch::Receiver<usize>,
) {
    let idle = ctx.limits.idle;
    loop {
        if open.wait_for(|n| *n == 0).await.is_err() {
            return;
        }
        tokio::select! {
            biased;
            changed = open.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(idle) => {
                ctx.registry.refusals().count(Reason::Idle, None);
                let why = format!(
                    "warden: signed in, but no session was opened for {} s: connect again to run a command or a shell",
                    idle.as_secs()
                );
                let _ = handle
                    .disconnect(russh::Disconnect::ByApplication, why, String::new())
                    .await;
                return;
            }
        }
    }
}

/// One client connection.
struct Connection {
    ctx: Arc<Context>,
    peer: SocketAddr,
    identity: Option<Arc<Identity>>,
    /// Set once the client signed in: the sign-in deadline no longer applies.
    signed_in: Arc<AtomicBool>,
    /// Counts the connection as not signed in, until it is (or it closes).
    waiting: Option<Waiting>,
    /// Counts the connection as signed in, once it is.
    place: Option<SignedIn>,
    /// How many session channels are open on the connection.
    open: Arc<watch::Sender<usize>>,
    /// Forwarding requests refused on this connection so far (see [`Connection::refuse`]).
    refused: u32,
    /// Sign-ins refused on this connection so far (see [`Connection::refuse_sign_in`]).
    sign_in_refusals: u32,
    /// Why the first refused sign-in with a Warden certificate (or registered key) was refused, until the client is
    /// told (by the handler's `auth_keyboard_interactive`).
    told: Option<String>,
    /// Bytes each session channel holds that its target has not taken yet.
    backlogs: std::collections::HashMap<russh::ChannelId, Arc<AtomicUsize>>,
}

/// `text` as the client sent it when it is short and shows as itself, else quoted with its
/// hidden characters escaped.
fn plain(text: &str) -> String {
    if text.len() <= 256 && text.chars().all(warden_domain::text::visible) {
        text.to_owned()
    } else {
        warden_domain::text::shown(text, 256)
    }
}

/// The target an SSH user name names, as the audit log records it: a name as it is, anything
/// else by its length alone, since it may be a password typed there, which the signed log would
/// keep for good.
pub(crate) fn recorded_target(target: &str) -> String {
    match target.parse::<warden_domain::TargetName>() {
        Ok(_) => target.to_owned(),
        Err(_) => format!("(not a target name, {} characters)", target.chars().count()),
    }
}

/// The target a refused sign-in's SSH user name names, as the audit log records it: as it is
/// when it is a target in the policy (`known`), else by its length alone, whether shaped like a
/// name or not, as a claimed user name no user has is kept: a lower-case passphrase typed there
/// is shaped like a name as well as any.
fn refused_target(target: &str, known: bool) -> String {
    if known {
        return target.to_owned();
    }
    match target.parse::<warden_domain::TargetName>() {
        Ok(_) => format!("(no such target, {} characters)", target.chars().count()),
        Err(_) => recorded_target(target),
    }
}

/// A claimed Warden user name no user in the directory has, as the audit log records it: by
/// its length alone, as the API's sign-in records one.
fn no_such_user(name: &str) -> String {
    format!("(no such user, {} characters)", name.chars().count())
}

/// `message` with each place it names `value` as a word of its own (not a part of a longer
/// name or word) replaced by `with`; a full stop after it ends a sentence unless a name goes
/// on past it.
fn withhold(message: &str, value: &str, with: &str) -> String {
    let in_name = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || "_-.".contains(c));
    let goes_on = |after: &str| {
        let mut next = after.chars();
        match next.next() {
            Some('.') => in_name(next.next()),
            c => in_name(c),
        }
    };
    if value.is_empty() {
        return message.to_owned();
    }
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(value) {
        let (before, after) = (&rest[..at], &rest[at + value.len()..]);
        out.push_str(before);
        let alone = !in_name(before.chars().next_back()) && !goes_on(after);
        out.push_str(if alone { with } else { value });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// A login an SSH user name asks for that no role of its target logs in as, as the audit log
/// records it: by its length alone, as a target no policy has, since it may be a password
/// typed there.
fn no_such_login(login: &str) -> String {
    format!("(no such login, {} characters)", login.chars().count())
}

/// The forwarding refusals of one connection that are audited, each; a client asking on and
/// on is not let fill the log (the first ones show what it was after).
const REFUSALS_AUDITED: u32 = 16;

/// The sign-ins with a certificate Warden issued (or a key of Warden's) that are audited, each,
/// when refused on one connection: a client offers each of its keys once, and one trying on and on is not let fill
/// the log.
const SIGN_IN_REFUSALS_AUDITED: u32 = 3;

/// What an SSH user name claims: the Warden user, the target, and the login if one is named.
type Claim = (UserName, String, Option<String>);

/// A refused sign-in: the grant the certificate names, if it names one, and why.
type Refused = (Option<RequestId>, Denied);

/// Whom a certificate Warden issued (for `grant`) lets the SSH user name `user` sign in as, and
/// under which grant; `None` for a certificate that is not Warden's; why not, with the grant it
/// names, when it lets no one in.
fn certified_as(user: &str, certified: Certified) -> Result<Option<(Claim, RequestId)>, Refused> {
    let (owner, grant) = match certified {
        Certified::Foreign => return Ok(None),
        Certified::Refused { grant, denied } => return Err((grant, denied)),
        Certified::Active { user, grant } => (user, grant),
    };
    match parse_user(user) {
        Some(claim) if claim.0 == owner => Ok(Some((claim, grant))),
        Some((claimed, ..)) => Err((
            Some(grant),
            Denied {
                code: "certificate_of_another_user",
                message: format!(
                    "the certificate of grant {grant} was issued to {owner}, not {claimed}: sign in as {owner}:TARGET"
                ),
            },
        )),
        None => Err((
            Some(grant),
            Denied {
                code: "bad_user_name",
                message: "the SSH user name is not WARDEN_USER:TARGET[:LOGIN]".into(),
            },
        )),
    }
}

impl Connection {
    /// Refuses a sign-in, telling the client `why` once it has no other key to offer (see
    /// [`Connection::told`]).
    fn tell(&mut self, why: String) -> Auth {
        self.told.get_or_insert(why);
        Auth::Reject {
            proceed_with_methods: Some(MethodSet::from(TELLING_WHY)),
            partial_success: false,
        }
    }

    /// Why the connection's address is refused sign-ins before any check, if it is: it spent
    /// its budget of failed sign-ins (counted, not audited, each time).
    fn throttled(&mut self) -> Option<Auth> {
        let denied = self.ctx.backend.throttled(self.peer.ip())?;
        Some(self.tell(denied.message))
    }

    /// Signs `claim` in, under `grant` when they signed in with its certificate, if they may
    /// open a session there now (the target exists and they hold an active grant for it that
    /// the proxy can use, as each session asks again) and neither they, their address nor the
    /// proxy holds as many signed-in connections as they may; `user` is the SSH user name as
    /// typed. A connection signed in for nothing would hold its file descriptor for nothing.
    async fn sign_in(&mut self, user: &str, claim: Claim, grant: Option<RequestId>) -> Auth {
        let (claimed, target, login) = claim;
        // Its place first, counted in memory: a user at the limit costs no lookup.
        let place = match self.ctx.signed.admit(&claimed, self.peer.ip()) {
            Ok(place) => place,
            Err((reason, why)) => {
                self.ctx.registry.refusals().count(reason, None);
                return self.tell(why);
            }
        };
        let allowed = self
            .ctx
            .backend
            .authorize(&claimed, &target, login.as_deref(), grant, self.peer.ip())
            .await;
        match allowed {
            Ok(Ok(_)) => {
                self.identity = Some(Arc::new(Identity {
                    user: claimed,
                    target,
                    login,
                    peer: self.peer,
                    grant,
                }));
                self.signed_in.store(true, Ordering::Release);
                self.waiting = None;
                self.place = Some(place);
                Auth::Accept
            }
            Ok(Err(denied)) => {
                drop(place);
                self.refuse_sign_in(user, grant, denied).await
            }
            Err(e) => {
                tracing::error!(error = %e, "ssh sign-in refused: the grants could not be checked");
                self.tell("Warden could not check your grants: try again in a while".into())
            }
        }
    }

    /// Refuses a sign-in with a certificate Warden issued, the key of one, a key registered
    /// to another user than `user` names, or for a target the user may open no session on,
    /// and audits it (`auth.login_failed`): who and what the SSH user name `user` claimed, the
    /// grant the certificate names, and why; never the certificate itself. The first
    /// [`SIGN_IN_REFUSALS_AUDITED`] of a connection only, each counted against the address's
    /// budget of failed sign-ins, and none once it is spent (see [`Backend::refused_sign_in`]).
    /// The client is told why once it has no other key to offer (see [`Connection::told`]).
    async fn refuse_sign_in(
        &mut self,
        user: &str,
        grant: Option<RequestId>,
        denied: Denied,
    ) -> Auth {
        let refused = self.tell(denied.message.clone());
        self.sign_in_refusals += 1;
        if self.sign_in_refusals > SIGN_IN_REFUSALS_AUDITED {
            return refused;
        }
        // What names no user in the directory is kept by its length alone, as the API's sign-in
        // keeps it: a password typed where the SSH user name goes would stay in the signed log
        // for good, and a lower-case passphrase is shaped like a name as well as any.
        // So is a login no role of the target logs in as.
        let mut reason = denied.message;
        let (claimed, target, login) = match parse_user(user) {
            Some((claimed, target, login)) => {
                let backend = &self.ctx.backend;
                let known_target = backend.is_target(&target);
                let recorded = refused_target(&target, known_target);
                if recorded != target {
                    reason = withhold(&reason, &target, &recorded);
                }
                let known_user = backend.is_user(&claimed);
                let recorded_login = login.map(|login| {
                    // Text kept already as the user's or the target's name is no secret.
                    let named = backend.is_login(&target, &login)
                        || (known_target && login == target)
                        || (known_user && login == claimed.as_str());
                    if named {
                        return login;
                    }
                    let withheld = no_such_login(&login);
                    reason = withhold(&reason, &login, &withheld);
                    withheld
                });
                if known_user {
                    (claimed.to_string(), Some(recorded), recorded_login)
                } else {
                    let typed = claimed.as_str();
                    let withheld = no_such_user(typed);
                    reason = withhold(&reason, typed, &withheld);
                    (withheld, Some(recorded), recorded_login)
                }
            }
            None => (
                format!(
                    "(not WARDEN_USER:TARGET, {} characters)",
                    user.chars().count()
                ),
                None,
                None,
            ),
        };
        let actor = Actor {
            user: None,
            claimed: Some(claimed.clone()),
            source: Some(self.peer.ip().to_string()),
        };
        let mut e = Event::new(
            Code::LoginFailed,
            actor,
            warden_domain::to_millisecond(time::OffsetDateTime::now_utc()),
        )
        .denied(denied.code, reason)
        .details(serde_json::json!({
            "via": "ssh",
            "claimed_user": claimed,
            "target": target,
            "login": login,
            "grant": grant,
        }));
        e.request_id = grant;
        e.target = target.and_then(|t| t.parse().ok());
        if let Err(e) = self.ctx.backend.refused_sign_in(e).await {
            tracing::error!(error = %e, "could not audit a refused ssh sign-in");
        }
        refused
    }
}

impl Connection {
    /// Audits a refused forwarding request, `what` (as `session.refused`): the proxy relays
    /// sessions and nothing else, so a port, socket or agent forwarded would reach past
    /// what the grant allows and its recording.
    async fn refuse(&mut self, kind: &str, what: String) {
        let Some(who) = self.identity.clone() else {
            return;
        };
        self.refused += 1;
        if self.refused > REFUSALS_AUDITED {
            return;
        }
        let mut e = Event::new(
            Code::SessionRefused,
            Actor::user(who.user.clone(), Some(who.peer.ip().to_string())),
            warden_domain::to_millisecond(time::OffsetDateTime::now_utc()),
        )
        .denied(
            "forwarding_refused",
            format!("{kind} ({what}) is not relayed: Warden's SSH proxy relays sessions only"),
        )
        .details(serde_json::json!({ "kind": kind, "to": what }));
        e.request_id = who.grant;
        e.target = who.target.parse().ok();
        if let Err(e) = self.ctx.backend.audit(vec![e]).await {
            tracing::error!(error = %e, "could not audit a refused ssh forwarding");
        }
    }
}

impl server::Handler for Connection {
    type Error = Error;

    async fn channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        host: &str,
        port: u32,
        _originator_address: &str,
        _originator_port: u32,
        _reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Dropping the reply refuses the channel.
        let to = format!("{}:{port}", plain(host));
        self.refuse("port forwarding", to).await;
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        socket_path: &str,
        _reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let to = plain(socket_path);
        self.refuse("socket forwarding", to).await;
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let at = format!("{}:{port}", plain(address));
        self.refuse("remote port forwarding", at).await;
        Ok(false)
    }

    async fn streamlocal_forward(
        &mut self,
        socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let at = plain(socket_path);
        self.refuse("remote socket forwarding", at).await;
        Ok(false)
    }

    async fn agent_request(
        &mut self,
        _channel: russh::ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse("agent forwarding", "the client's agent".to_owned())
            .await;
        Ok(false)
    }

    /// Audited as refused, and not answered: an answer sent from here could reach the client
    /// before the session's answer to a terminal asked for just before, and be taken for it.
    /// The client's authentication cookie is a secret, never audited.
    async fn x11_request(
        &mut self,
        _channel: russh::ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        x11_screen_number: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let to = format!("the client's display, screen {x11_screen_number}");
        self.refuse("X11 forwarding", to).await;
        Ok(())
    }

    /// The window the client is given next on `channel`: a trickle while its session holds
    /// much that its target has not taken (see `inbox`); the connection's other channels are
    /// not slowed down by it.
    fn adjust_window(&mut self, channel: russh::ChannelId, _current: u32) -> u32 {
        self.backlogs
            .get(&channel)
            .map_or(WINDOW, |held| crate::inbox::window(held, WINDOW))
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if let Some(refused) = self.throttled() {
            return Ok(refused);
        }
        let Some(claim) = parse_user(user) else {
            return Ok(Auth::reject());
        };
        let claimed = claim.0.clone();
        let owner = self
            .ctx
            .backend
            .authenticate(key.public_key, self.peer.ip())
            .await?;
        match owner {
            Some(owner) if owner == claimed => Ok(self.sign_in(user, claim, None).await),
            Some(owner) => {
                let fingerprint = key.public_key.fingerprint(HashAlg::Sha256);
                let denied = Denied {
                    code: "key_of_another_user",
                    message: format!(
                        "the key {fingerprint} is registered to {owner}, not {claimed}: sign in as {owner}:TARGET"
                    ),
                };
                Ok(self.refuse_sign_in(user, None, denied).await)
            }
            None => {
                let expired = self
                    .ctx
                    .backend
                    .expired_certificate(&claimed, key.public_key)
                    .await?;
                match expired {
                    Some((grant, denied)) => {
                        Ok(self.refuse_sign_in(user, Some(grant), denied).await)
                    }
                    None => Ok(Auth::reject()),
                }
            }
        }
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &russh::keys::Certificate,
    ) -> Result<Auth, Self::Error> {
        if let Some(refused) = self.throttled() {
            return Ok(refused);
        }
        let certified = self
            .ctx
            .backend
            .authenticate_certificate(certificate)
            .await?;
        match certified_as(user, certified) {
            Ok(None) => Ok(Auth::reject()),
            Ok(Some((claim, grant))) => Ok(self.sign_in(user, claim, Some(grant)).await),
            Err((grant, denied)) => Ok(self.refuse_sign_in(user, grant, denied).await),
        }
    }

    /// Tells the client why its Warden certificate (or registered key) was refused, once it has
    /// offered all its keys: the SSH library sends its one banner before any key is offered, so the reason
    /// comes as the instructions of a keyboard-interactive round with no questions, which
    /// OpenSSH shows as it shows a banner, and which is then refused. Offered to the client
    /// only after such a refusal ([`Connection::refuse_sign_in`]); it never signs anyone in.
    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        _user: &str,
        _submethods: &str,
        response: Option<server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        match (response, self.told.take()) {
            (None, Some(why)) => Ok(Auth::Partial {
                name: "".into(),
                instructions: format!("warden: {why}").into(),
                prompts: Vec::new().into(),
            }),
            _ => Ok(Auth::Reject {
                proceed_with_methods: Some(MethodSet::from(PUBLIC_KEYS)),
                partial_success: false,
            }),
        }
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
        if *self.open.borrow() >= self.ctx.limits.sessions_per_connection {
            self.ctx
                .registry
                .refusals()
                .count(Reason::SessionsPerConnection, None);
            reply
                .reject(russh::ChannelOpenFailure::ResourceShortage)
                .await;
            return Ok(());
        }
        let open = OpenSession::new(self.open.clone());
        reply.accept().await;
        let ctx = self.ctx.clone();
        let handle = session.handle();
        // An ended channel's count stays until the connection ends: a few bytes each.
        let backlog = self.backlogs.entry(channel.id()).or_default().clone();
        tokio::spawn(async move {
            session::run(ctx, identity, channel, handle, backlog).await;
            drop(open);
        });
        Ok(())
    }

    /// Watches the connection, once signed in, for a time without a session (see
    /// [`close_when_idle`]).
    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        tokio::spawn(close_when_idle(
            self.ctx.clone(),
            session.handle(),
            self.open.subscribe(),
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_no_user_has_is_withheld_where_it_stands_alone() {
        let with = no_such_user("sshtypedsecret-88");
        assert_eq!(with, "(no such user, 17 characters)");
        assert_eq!(
            withhold(
                "the certificate of grant g was issued to alice, not sshtypedsecret-88: sign in as alice:TARGET",
                "sshtypedsecret-88",
                &with
            ),
            "the certificate of grant g was issued to alice, not (no such user, 17 characters): sign in as alice:TARGET"
        );
        // Inside a longer name it is another name, and stays.
        assert_eq!(withhold("bobby is not bob.", "bob", "X"), "bobby is not X.");
        assert_eq!(
            withhold("bob.smith, not bob", "bob", "X"),
            "bob.smith, not X"
        );
        assert_eq!(withhold("nothing here", "", "X"), "nothing here");
    }

    #[test]
    fn a_refused_sign_ins_target_is_kept_only_when_the_policy_has_it() {
        assert_eq!(refused_target("web", true), "web");
        // Shaped like a name, but no target's: a lower-case passphrase would be too.
        assert_eq!(
            refused_target("hunter2passphrase", false),
            "(no such target, 17 characters)"
        );
        assert_eq!(
            refused_target("S3cret Passw0rd", false),
            "(not a target name, 15 characters)"
        );
    }

    #[test]
    fn user_names_name_the_target() {
        let (u, t, l) = parse_user("alice:prod-web-1").unwrap();
        assert_eq!((u.as_str(), t.as_str(), l), ("alice", "prod-web-1", None));
        let (_, _, l) = parse_user("alice:web:deploy").unwrap();
        assert_eq!(l.as_deref(), Some("deploy"));
        assert!(parse_user("alice").is_none());
        assert!(parse_user("alice:").is_none());
        // Nothing longer than a name, nor anything that would not show as itself, is taken
        // as it came: it is cut and marked, so it names nothing and is quoted short.
        let (_, t, _) = parse_user(&format!("alice:{}", "t".repeat(5000))).unwrap();
        assert_eq!(t, format!("{}…", "t".repeat(64)));
        let (_, _, l) = parse_user("alice:web:ops\n").unwrap();
        assert_eq!(l.as_deref(), Some("ops\u{FFFD}…"));
        let (_, t, _) = parse_user("alice:web\u{202e}").unwrap();
        assert_eq!(t, "web\u{FFFD}…");
        let (_, t, _) = parse_user(&format!("alice:{}", "t".repeat(64))).unwrap();
        assert_eq!(t, "t".repeat(64));
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
