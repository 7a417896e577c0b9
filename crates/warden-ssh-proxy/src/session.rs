//! One session channel, from request to end: authorize, check the rules, start the
//! recording, connect upstream, relay both ways, and end it when the user, the target, an
//! operator or the grant's expiry says so.
//!
//! Fail closed: a session that must be recorded and cannot be is refused, or ended at the
//! first failed write; an audit event that cannot be stored refuses the session or ends it.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use russh::server::{self, Msg};
use russh::{Channel, ChannelId, ChannelMsg, Pty, Sig};
use time::OffsetDateTime;
use tokio::sync::Notify;
use warden_domain::audit::{Actor, Code, Event};
use warden_domain::{Recording, RequestId, UserName};

use crate::exec_reading::ExecReading;
use crate::inbox::{Inbox, Up};
use crate::recorder::Recorder;
use crate::recording::{Asciicast, Header, Kind};
use crate::registry::Registration;
use crate::rules::{Blocked, INTERRUPT, LineTracker, Why};
use crate::server::Context;
use crate::sftp::{FileOp, Tracker};
use crate::{Grant, SessionInfo, upstream};

/// Who is connected and what they asked for at login.
#[derive(Debug)]
pub(crate) struct Identity {
    pub user: UserName,
    pub target: String,
    pub login: Option<String>,
    pub peer: SocketAddr,
    /// The grant whose certificate the user signed in with, if they signed in with one.
    pub grant: Option<RequestId>,
}

#[derive(Debug, Clone)]
struct PtyRequest {
    term: String,
    cols: u32,
    rows: u32,
    px: u32,
    py: u32,
    modes: Vec<(Pty, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Request {
    Shell,
    /// A command, and what reading it as the target's shell would tells of what it runs.
    Exec {
        command: String,
        reading: ExecReading,
    },
    Sftp,
}

impl Request {
    fn exec(command: String) -> Self {
        let reading = crate::exec_reading::read_exec(&command);
        Request::Exec { command, reading }
    }

    fn kind(&self) -> &'static str {
        match self {
            Request::Shell => "shell",
            Request::Exec { .. } => "exec",
            Request::Sftp => "sftp",
        }
    }

    /// Whether the channel carries SFTP: the subsystem's, or that of a command that runs
    /// `sftp-server` (`sftp -s PATH`), followed the same way.
    fn speaks_sftp(&self) -> bool {
        match self {
            Request::Sftp => true,
            Request::Exec { reading, .. } => reading.runs_sftp_server,
            Request::Shell => false,
        }
    }

    /// Whether it may copy files: SFTP, or a command that names a file-transfer program.
    fn transfers_files(&self) -> bool {
        match self {
            Request::Sftp => true,
            Request::Exec { reading, .. } => reading.names_a_transfer_tool,
            Request::Shell => false,
        }
    }

    /// Whether what the client sends is commands for a shell: a shell's input, or that of a
    /// command that starts a shell reading its input (`ssh HOST bash`, `env bash`).
    fn feeds_a_shell(&self) -> bool {
        match self {
            Request::Shell => true,
            Request::Exec { reading, .. } => reading.starts_a_shell,
            Request::Sftp => false,
        }
    }
}

/// A control a request breaks: the refusal's code, what the user is told, and the rule for the
/// audit event.
type Breach = (&'static str, String, serde_json::Value);

/// A refusal shown to the user on stderr, with exit status 1.
struct Refusal(String);

/// Current time to the millisecond, as the server reads it: session times and the events
/// about them have the precision of every other time Warden shows.
fn now() -> OffsetDateTime {
    warden_domain::to_millisecond(OffsetDateTime::now_utc())
}

/// Runs one session channel to its end. `backlog` counts what it holds for its target
/// ([`crate::inbox`]).
pub(crate) async fn run(
    ctx: Arc<Context>,
    who: Arc<Identity>,
    channel: Channel<Msg>,
    handle: server::Handle,
    backlog: Arc<AtomicUsize>,
) {
    let id = channel.id();
    let (mut down_rx, down_tx) = channel.split();
    let mut pty: Option<PtyRequest> = None;
    // A channel that asks for nothing within the idle limit is closed, as a connection with no
    // channel is: it would hold the connection open for nothing.
    let asked = tokio::time::timeout(ctx.limits.idle, async {
        loop {
            match down_rx.wait().await {
                None | Some(ChannelMsg::Close) | Some(ChannelMsg::Eof) => return None,
                Some(ChannelMsg::RequestPty {
                    want_reply,
                    term,
                    col_width,
                    row_height,
                    pix_width,
                    pix_height,
                    terminal_modes,
                }) => {
                    pty = Some(PtyRequest {
                        term,
                        cols: col_width,
                        rows: row_height,
                        px: pix_width,
                        py: pix_height,
                        modes: terminal_modes,
                    });
                    if want_reply {
                        let _ = handle.channel_success(id).await;
                    }
                }
                Some(ChannelMsg::WindowChange {
                    col_width,
                    row_height,
                    ..
                }) => {
                    if let Some(p) = pty.as_mut() {
                        p.cols = col_width;
                        p.rows = row_height;
                    }
                }
                Some(ChannelMsg::RequestShell { .. }) => return Some(Request::Shell),
                Some(ChannelMsg::Exec { command, .. }) => {
                    return Some(Request::exec(
                        String::from_utf8_lossy(&command).into_owned(),
                    ));
                }
                Some(ChannelMsg::RequestSubsystem { name, .. }) if name == "sftp" => {
                    return Some(Request::Sftp);
                }
                Some(ChannelMsg::RequestSubsystem { want_reply, .. }) => {
                    if want_reply {
                        let _ = handle.channel_failure(id).await;
                    }
                }
                // Environment, agent and X11 requests are not passed on (the connection audits
                // the last two as refused forwardings), and get no reply here: the library
                // reports `want_reply` as true for them whatever the client sent, and an unasked
                // reply would be taken as the answer to the next request.
                Some(_) => {}
            }
        }
    })
    .await;
    let request = match asked {
        Ok(Some(request)) => request,
        Ok(None) => return,
        Err(_) => {
            let text = format!(
                "warden: no shell, command or subsystem was asked for within {} s\r\n",
                ctx.limits.idle.as_secs()
            );
            let _ = down_tx.extended_data_bytes(1, Bytes::from(text)).await;
            let _ = down_tx.close().await;
            return;
        }
    };
    // Replies to the shell/exec/subsystem request come after the upstream answered; the
    // client waits for them.
    let start = Start {
        ctx: &ctx,
        who: &who,
        request: &request,
        pty: pty.as_ref(),
    };
    match start.open().await {
        Err(Refusal(message)) => {
            let _ = handle.channel_success(id).await;
            let text = format!("warden: {message}\r\n");
            let _ = down_tx.extended_data_bytes(1, Bytes::from(text)).await;
            let _ = down_tx.exit_status(1).await;
            let _ = down_tx.eof().await;
            let _ = down_tx.close().await;
        }
        Ok(open) => {
            let _ = handle.channel_success(id).await;
            let client = Client {
                id,
                rx: down_rx,
                tx: down_tx,
                handle,
            };
            open.relay(ctx, client, pty, backlog).await;
        }
    }
}

struct Start<'a> {
    ctx: &'a Context,
    who: &'a Identity,
    request: &'a Request,
    pty: Option<&'a PtyRequest>,
}

/// A session whose upstream channel is open.
struct Open {
    session: String,
    grant: Grant,
    request: Request,
    upstream: upstream::Connection,
    channel: Channel<russh::client::Msg>,
    /// Upstream messages that arrived before the reply to our request.
    early: Vec<ChannelMsg>,
    recording: Option<Asciicast>,
    registration: Registration,
    started: std::time::Instant,
    /// The account at the target the session runs as.
    login: String,
}

impl Start<'_> {
    fn actor(&self) -> Actor {
        Actor::user(self.who.user.clone(), Some(self.who.peer.ip().to_string()))
    }

    /// An event of this session's start, about `grant`; without one (a refusal before any
    /// was found), about the target asked for, when it is a target's name, and the grant whose
    /// certificate the user signed in with, so that searches by either find it.
    fn event(&self, code: Code, grant: Option<&Grant>, session: Option<&str>) -> Event {
        let mut e = Event::new(code, self.actor(), now());
        if let Some(g) = grant {
            e.request_id = Some(g.id);
            e.target = Some(g.target.clone());
            e.role = Some(g.role.clone());
        } else {
            e.request_id = self.who.grant;
            e.target = self.who.target.parse().ok();
        }
        e.session_id = session.map(str::to_owned);
        e
    }

    /// Audits a refusal and returns it; if the audit fails, the user hears that instead.
    async fn refuse(&self, event: Event, message: String) -> Refusal {
        match self.ctx.backend.audit(vec![event]).await {
            Ok(()) => Refusal(message),
            Err(e) => {
                tracing::error!(error = %e, "could not audit a refused ssh session");
                Refusal("the session is refused: the audit log cannot be written".into())
            }
        }
    }

    /// Removes the recording of a session that did not start: it holds a header and nothing
    /// else, and no `session.started` event would explain it to whoever audits recordings.
    fn abandon(&self, recording: Option<Asciicast>, session: &str) {
        if let Some(r) = recording {
            drop(r);
            if let Err(e) = self.ctx.recordings.discard(session) {
                tracing::warn!(session, error = %e, "could not remove the recording of a session that did not start");
            }
        }
    }

    fn details(&self, extra: serde_json::Value) -> serde_json::Value {
        let mut d = serde_json::json!({
            "requested_target": crate::server::recorded_target(&self.who.target),
            "kind": self.request.kind(),
        });
        if let Request::Exec { command, .. } = self.request {
            d["command"] = serde_json::json!(command);
        }
        if let (Some(map), serde_json::Value::Object(more)) = (d.as_object_mut(), extra) {
            map.extend(more);
        }
        d
    }

    /// The first of the role's controls the request breaks, if any.
    fn breaks_a_control(&self, grant: &Grant) -> Option<Breach> {
        self.unreadable(grant)
            .or_else(|| self.transfer_not_allowed(grant))
            .or_else(|| self.shell_without_terminal(grant))
            .or_else(|| self.denied_command(grant))
    }

    /// A command Warden cannot read whole (a quote left open) might run anything: refused for
    /// a role whose controls depend on what it runs.
    fn unreadable(&self, grant: &Grant) -> Option<Breach> {
        let Request::Exec { reading, .. } = self.request else {
            return None;
        };
        if reading.whole || !grant.rules.depend_on_what_runs() {
            return None;
        }
        let msg = format!(
            "Warden cannot read this command as the target's shell would (a quote is left open, or commands nest too deep), and role {} on {} controls what commands run",
            grant.role, grant.target
        );
        Some(("command_unreadable", msg, serde_json::Value::Null))
    }

    fn transfer_not_allowed(&self, grant: &Grant) -> Option<Breach> {
        if !self.request.transfers_files() || grant.rules.file_transfer {
            return None;
        }
        let msg = format!(
            "file transfer is not allowed for role {} on {}",
            grant.role, grant.target
        );
        let rule = serde_json::json!({ "rule": "file_transfer = false" });
        Some(("file_transfer_denied", msg, rule))
    }

    /// A shell's lines are checked as a terminal submits them; a shell without one reads
    /// whatever arrives, unchecked, so a role with deny rules needs the terminal: for a shell
    /// a command starts (`ssh HOST bash`, `env bash`) too.
    fn shell_without_terminal(&self, grant: &Grant) -> Option<Breach> {
        if !self.request.feeds_a_shell() || self.pty.is_some() || !grant.rules.has_deny() {
            return None;
        }
        let msg = format!(
            "role {} on {} checks each command line, which needs a terminal: ask for one with -t (`ssh -t …` or `warden ssh -t TARGET …`), or run a command that starts no shell",
            grant.role, grant.target
        );
        Some(("terminal_required", msg, serde_json::Value::Null))
    }

    /// The deny rules judge both what was asked and, for a role with `force_command`, what
    /// runs, and refuse the session if either matches:
    /// - what was asked, because a forced command is no reason to let it through: sshd hands
    ///   it to the forced command (`SSH_ORIGINAL_COMMAND`), which may well run it (wrappers
    ///   that check and run what was asked are what `force_command` is often used for), and a
    ///   request the rules refuse is on the record as refused either way;
    /// - the forced command, because it is what runs at the target, for every session of the
    ///   role (a shell or a subsystem asked for included). One a deny rule matches opens no
    ///   session of the role at all: the policy contradicts itself, and the refusal says which
    ///   setting to change rather than run what the rules forbid.
    fn denied_command(&self, grant: &Grant) -> Option<Breach> {
        if let Request::Exec { command, .. } = self.request
            && let Some(pattern) = grant.rules.denies(command)
        {
            let msg = format!(
                "command blocked: it matches the deny rule /{pattern}/ of role {} on {}",
                grant.role, grant.target
            );
            return Some((
                "command_denied",
                msg,
                serde_json::json!({ "rule": pattern }),
            ));
        }
        let forced = grant.force_command.as_deref()?;
        let pattern = grant.rules.denies(forced)?;
        let msg = format!(
            "session blocked: role {} on {} runs the forced command {forced:?} whatever is asked, and it matches the role's deny rule /{pattern}/; an administrator must change the role's force_command or deny_commands in the policy",
            grant.role, grant.target
        );
        Some((
            "command_denied",
            msg,
            serde_json::json!({ "rule": pattern, "forced_command": forced }),
        ))
    }

    async fn open(&self) -> Result<Open, Refusal> {
        let grant = match self
            .ctx
            .backend
            .authorize(
                &self.who.user,
                &self.who.target,
                self.who.login.as_deref(),
                self.who.grant,
                self.who.peer.ip(),
            )
            .await
        {
            Ok(Ok(g)) => g,
            Ok(Err(denied)) => {
                let e = self
                    .event(Code::SessionRefused, None, None)
                    .denied(denied.code, denied.message.clone())
                    .details(self.details(serde_json::Value::Null));
                return Err(self.refuse(e, denied.message).await);
            }
            Err(e) => {
                tracing::error!(error = %e, "ssh authorization failed");
                return Err(Refusal(
                    "the session is refused: Warden could not check your grants".into(),
                ));
            }
        };
        let refused = |code: &str, reason: &str| {
            self.event(Code::SessionRefused, Some(&grant), None)
                .denied(code, reason)
                .details(self.details(serde_json::Value::Null))
        };
        let login = self
            .who
            .login
            .clone()
            .or_else(|| grant.principals.first().cloned())
            .unwrap_or_default();
        if !grant.principals.contains(&login) {
            let msg = format!(
                "your grant for {} (role {}) logs in as {}; not as {login:?}",
                grant.target,
                grant.role,
                grant.principals.join(", ")
            );
            return Err(self.refuse(refused("login_not_granted", &msg), msg).await);
        }
        // The role's `source_address`, which the proxy's upstream certificate does not carry
        // (it comes from the proxy's address): checked here against the user's.
        if let Some(allowed) = &grant.source_address
            && !allowed.iter().any(|b| b.contains(self.who.peer.ip()))
        {
            let listed: Vec<String> = allowed.iter().map(ToString::to_string).collect();
            let msg = format!(
                "role {} on {} is used only from {}; your connection comes from {}: connect from one of those addresses",
                grant.role,
                grant.target,
                listed.join(", "),
                self.who.peer.ip().to_canonical()
            );
            return Err(self
                .refuse(refused("source_address_not_allowed", &msg), msg)
                .await);
        }
        // The client was told it has a terminal before its grant was known: one the role does
        // not give is refused here, as the target would, rather than left half-working.
        if self.pty.is_some() && !grant.terminal() {
            let msg = format!(
                "role {} gives no terminal (its extensions lack permit-pty): run a command without one, `ssh -T ... COMMAND`",
                grant.role
            );
            return Err(self
                .refuse(refused("terminal_not_granted", &msg), msg)
                .await);
        }
        // Command and file-transfer rules, before anything reaches the target.
        if let Some((code, msg, rule)) = self.breaks_a_control(&grant) {
            let e = self
                .event(Code::CommandBlocked, Some(&grant), None)
                .denied(code, msg.clone())
                .details(self.details(rule));
            return Err(self.refuse(e, msg).await);
        }

        let session = uuid::Uuid::now_v7().to_string();
        let recorded = grant.recording != Recording::Metadata && !self.request.speaks_sftp();
        let recording = if recorded {
            let header = Header {
                width: self.pty.map_or(80, |p| p.cols),
                height: self.pty.map_or(24, |p| p.rows),
                timestamp: now().unix_timestamp(),
                title: format!("{} on {} as {login}", self.who.user, grant.target),
                term: self.pty.map(|p| p.term.clone()),
                command: match self.request {
                    Request::Exec { command, .. } => Some(command.clone()),
                    _ => None,
                },
                forced_command: grant.force_command.clone(),
            };
            let started = self
                .ctx
                .recordings
                .create(&session)
                .and_then(|out| Asciicast::start(out, &header));
            match started {
                Ok(r) => Some(r),
                Err(e) => {
                    self.ctx.registry.recording_failed();
                    tracing::error!(error = %e, session = %session, target = %grant.target, "a recorded session was refused: its recording cannot be written");
                    let msg = format!(
                        "the session is refused: policy requires it to be recorded ({}) and the recording store cannot be written",
                        grant.recording
                    );
                    let ev = self
                        .event(Code::RecordingFailed, Some(&grant), Some(&session))
                        .failed("recording_unavailable", e.to_string())
                        .details(self.details(serde_json::Value::Null));
                    return Err(self.refuse(ev, msg).await);
                }
            }
        } else {
            None
        };

        let upstream = match upstream::connect(
            self.ctx.backend.as_ref(),
            &grant,
            &login,
            self.ctx.client.clone(),
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                self.abandon(recording, &session);
                let msg = format!("cannot reach {}: {e}", grant.target);
                return Err(self
                    .refuse(refused("upstream_failed", &e.to_string()), msg)
                    .await);
            }
        };
        let (channel, early) = match self.open_channel(&upstream).await {
            Ok(c) => c,
            Err(e) => {
                self.abandon(recording, &session);
                let msg = format!("{} refused the session: {e}", grant.target);
                return Err(self.refuse(refused("upstream_refused", &e), msg).await);
            }
        };

        let mut started = serde_json::json!({
            "login": login,
            "recording": grant.recording.to_string(),
            "recorded": recorded,
            "pty": self.pty.map(|p| serde_json::json!({"term": p.term, "cols": p.cols, "rows": p.rows})),
            "grant_expires_at": warden_domain::rfc3339(grant.expires_at),
        });
        if let Some(note) = input_unrecorded(&grant) {
            started["record_input"] = serde_json::json!(note);
        }
        // What ran, when the role forces it: `command` is only what was asked.
        if let Some(forced) = &grant.force_command {
            started["forced_command"] = serde_json::json!(forced);
        }
        let mut events = vec![
            self.event(Code::SessionStarted, Some(&grant), Some(&session))
                .details(self.details(started)),
        ];
        if let Request::Exec { command, .. } = self.request {
            events.push(
                self.event(Code::SessionExec, Some(&grant), Some(&session))
                    .details(match &grant.force_command {
                        Some(forced) => {
                            serde_json::json!({ "command": command, "forced_command": forced })
                        }
                        None => serde_json::json!({ "command": command }),
                    }),
            );
        }
        if let Err(e) = self.ctx.backend.audit(events).await {
            self.abandon(recording, &session);
            tracing::error!(error = %e, "could not audit a session start");
            return Err(Refusal(
                "the session is refused: the audit log cannot be written".into(),
            ));
        }
        let registration = self.ctx.registry.register(SessionInfo {
            id: session.clone(),
            user: self.who.user.clone(),
            target: grant.target.clone(),
            role: grant.role.clone(),
            grant: grant.id,
            login: login.clone(),
            kind: self.request.kind().to_owned(),
            started_at: now(),
            grant_expires_at: grant.expires_at,
            recorded,
        });
        // A revocation between the authorization above and this registration swept the
        // grant's sessions without this one; asked again now, any revocation is seen either
        // here or by its sweep.
        let ended = match self.ctx.backend.still_active(grant.id).await {
            Ok(true) => None,
            Ok(false) => Some(format!("your grant {} has ended", grant.id)),
            Err(e) => {
                tracing::error!(error = %e, "could not check a new session's grant");
                Some("Warden could not check your grant".to_owned())
            }
        };
        if let Some(reason) = ended {
            self.ctx.registry.kill(&session, &reason);
        }
        Ok(Open {
            session,
            grant,
            request: self.request.clone(),
            upstream,
            channel,
            early,
            recording,
            registration,
            started: std::time::Instant::now(),
            login,
        })
    }

    /// Opens the upstream channel and makes the same request there.
    async fn open_channel(
        &self,
        up: &upstream::Connection,
    ) -> Result<(Channel<russh::client::Msg>, Vec<ChannelMsg>), String> {
        let mut ch = up
            .handle
            .channel_open_session()
            .await
            .map_err(|e| e.to_string())?;
        let sent = async {
            if let Some(p) = self.pty {
                ch.request_pty(false, &p.term, p.cols, p.rows, p.px, p.py, &p.modes)
                    .await?;
            }
            match self.request {
                Request::Shell => ch.request_shell(true).await,
                Request::Exec { command, .. } => ch.exec(true, command.as_bytes()).await,
                Request::Sftp => ch.request_subsystem(true, "sftp").await,
            }
        };
        sent.await.map_err(|e: russh::Error| e.to_string())?;
        let mut early = Vec::new();
        loop {
            match ch.wait().await {
                Some(ChannelMsg::Success) => return Ok((ch, early)),
                Some(ChannelMsg::Failure) => {
                    return Err(format!("it refused the {} request", self.request.kind()));
                }
                None | Some(ChannelMsg::Close) => return Err("it closed the channel".into()),
                Some(other) => early.push(other),
            }
        }
    }
}

/// Why the role's `record_input = true` records nothing of this session, if it does not: a
/// session policy records as `metadata` records no terminal data at all, keystrokes included.
fn input_unrecorded(grant: &Grant) -> Option<String> {
    (grant.rules.record_input && grant.recording == Recording::Metadata).then(|| {
        format!(
            "ignored: role {} sets record_input = true, but policy records its sessions as metadata, which keeps no terminal data; keystrokes are recorded only with @recording(\"full\") or (\"sampled\")",
            grant.role
        )
    })
}

/// State both relay directions share.
struct Shared {
    recorder: Option<Recorder>,
    /// Set when a recording write failed; the session must end.
    recording_failed: Arc<Notify>,
    output: tokio::sync::broadcast::Sender<Bytes>,
    /// Told of each piece of the target's output, for a discard of a blocked line to see the
    /// shell act on it ([`Discard`]).
    heard: tokio::sync::watch::Sender<()>,
    sftp: Option<Mutex<Tracker>>,
}

impl Shared {
    /// Records terminal data (a failed write ends the session through `recording_failed`).
    async fn record(&self, kind: Kind, data: Bytes) {
        if let Some(recorder) = &self.recorder {
            recorder.data(kind, data).await;
        }
    }

    async fn resize(&self, cols: u32, rows: u32) {
        if let Some(recorder) = &self.recorder {
            recorder.resize(cols, rows).await;
        }
    }

    fn flush(&self) {
        if let Some(recorder) = &self.recorder {
            recorder.flush();
        }
    }
}

/// How a session ended.
enum End {
    /// The target closed the channel (the command or shell exited).
    Target(Option<u32>),
    /// The user closed the channel or went away.
    Client,
    /// Warden ended it, telling the user why.
    Warden(String),
}

/// How long the target's last messages (its exit status, its close) are waited for once the
/// client closed its channel or went away: a client may close as soon as it has the target's
/// end of file, while the exit status is still on its way.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How long the target's end of file is held back for its exit status: a client multiplexing
/// sessions (ControlMaster) closes a channel as soon as both ends of file are through, and
/// would not wait for an exit status sent after it.
const EOF_HOLD: Duration = Duration::from_secs(1);

/// How long telling the target that a session ended may take (stopping its command, closing
/// the connection), so that a target that stopped reading cannot keep the session open.
const GOODBYE_LIMIT: Duration = Duration::from_secs(5);

/// The client's end of a session channel.
struct Client {
    id: ChannelId,
    rx: russh::ChannelReadHalf,
    tx: russh::ChannelWriteHalf<Msg>,
    handle: server::Handle,
}

impl Open {
    /// Relays the session until it ends, then ends it at both sides and audits its end.
    /// `backlog` counts what the session holds for its target.
    async fn relay(
        self,
        ctx: Arc<Context>,
        client: Client,
        pty: Option<PtyRequest>,
        backlog: Arc<AtomicUsize>,
    ) {
        let Open {
            session,
            grant,
            request,
            upstream,
            channel,
            early,
            recording,
            mut registration,
            started,
            login,
        } = self;
        let Client { id, rx, tx, handle } = client;
        let (up_rx, up_tx) = channel.split();
        let up_tx = Arc::new(up_tx);
        let recording_failed = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            recorder: recording.map(|r| Recorder::spawn(r, recording_failed.clone())),
            recording_failed,
            output: registration.output.clone(),
            heard: tokio::sync::watch::Sender::new(()),
            sftp: request
                .speaks_sftp()
                .then(|| Mutex::new(Tracker::default())),
        });
        let audit_ctx = AuditCtx {
            ctx: ctx.clone(),
            grant: grant.clone(),
            session: session.clone(),
        };
        let to_client = ToClient {
            tx,
            handle: handle.clone(),
            id,
            eof: Eof::Open,
            gone: false,
        };
        let mut output = tokio::spawn(output_loop(up_rx, to_client, early, shared.clone()));
        let inbox = Arc::new(Inbox::new(backlog));
        // Whatever runs on a terminal, a shell or a command (`ssh -t HOST bash`), has its
        // lines checked as typed.
        let tracker = (!request.speaks_sftp() && pty.is_some() && grant.rules.has_deny())
            .then(LineTracker::default);
        let mut taker = tokio::spawn(take_input(
            rx,
            inbox.clone(),
            shared.clone(),
            tracker,
            audit_ctx.clone(),
            // What is typed into a shell, with or without a terminal, a shell a command starts
            // included: its commands. Any other command's input is its program's data (a file
            // being copied), not recorded as keystrokes.
            pty.is_some() || request.feeds_a_shell(),
        ));
        let giver = tokio::spawn(give_input(inbox, up_tx.clone(), handle.clone(), id));
        // The session's own deadline, independent of the worker that expires grants.
        let expiry = tokio::time::sleep(
            (grant.expires_at - now())
                .try_into()
                .unwrap_or(Duration::ZERO),
        );
        tokio::pin!(expiry);
        let mut flush = tokio::time::interval(crate::recording::FLUSH_INTERVAL);
        let end = loop {
            tokio::select! {
                out = &mut output => break End::Target(out.ok().flatten()),
                left = &mut taker => break match left {
                    Ok(Left::Warden(reason)) => End::Warden(reason),
                    Ok(Left::Closed) | Err(_) => settle(&mut output).await,
                },
                changed = registration.end.changed() => {
                    let reason = registration.end.borrow().clone();
                    match (changed, reason) {
                        (Ok(()), Some(reason)) => break End::Warden(reason),
                        (Ok(()), None) => {}
                        (Err(_), _) => break End::Warden("the proxy is shutting down".into()),
                    }
                }
                () = &mut expiry => {
                    break End::Warden(format!(
                        "your grant {} has expired (a session goes on under an extension of it only once opened anew: `warden ssh {}`)",
                        grant.id, grant.target
                    ));
                }
                // Counted once, below, when finishing the recording reports the failure.
                () = shared.recording_failed.notified() => {
                    break End::Warden("the recording could not be written; policy does not allow the session to go on unrecorded".into());
                }
                _ = flush.tick() => shared.flush(),
            }
        };
        taker.abort();
        giver.abort();
        let target_ended = matches!(end, End::Target(_));
        if !target_ended {
            // Its reading half goes with it, so the upstream connection reads on and takes
            // what is sent to stop the session.
            output.abort();
        }
        if let End::Warden(reason) = &end {
            tell_ended(&shared, &handle, id, pty.is_some(), reason).await;
        }
        let goodbye = async {
            if !target_ended {
                if login == "root" && pty.is_none() {
                    // OpenSSH delivers signals only to a privilege-separated session's
                    // processes, which a root login's are not; only its operator can end them.
                    tracing::warn!(session = %session, target = %grant.target, "a root login's command without a terminal may run on at the target: OpenSSH does not pass signals to root logins' commands");
                }
                stop_upstream(&up_tx).await;
            }
            let _ = upstream
                .handle
                .disconnect(russh::Disconnect::ByApplication, "session ended", "")
                .await;
        };
        if tokio::time::timeout(GOODBYE_LIMIT, goodbye).await.is_err() {
            tracing::warn!(session = %session, "the target did not take the end of a session in time");
        }
        let events = finish(&shared, &audit_ctx, &request, &end, started).await;
        if let Err(e) = ctx.backend.audit(events).await {
            tracing::error!(session = %session, error = %e, "could not audit a session end");
        }
        ctx.registry.unregister(&session);
    }
}

/// The client left: the target's last messages, on their way as it closed, are waited for
/// a moment, so that a session the target ended is recorded so, with its exit status; a target
/// still running then is the client's to have ended.
async fn settle(output: &mut tokio::task::JoinHandle<Option<u32>>) -> End {
    match tokio::time::timeout(CLOSE_GRACE, output).await {
        Ok(out) => End::Target(out.ok().flatten()),
        Err(_) => End::Client,
    }
}

/// Tells the user why Warden ended their session, and ends the channel at their side.
async fn tell_ended(
    shared: &Shared,
    handle: &server::Handle,
    id: ChannelId,
    terminal: bool,
    reason: &str,
) {
    let text = Bytes::from(format!("\r\nwarden: session ended: {reason}\r\n"));
    shared.record(Kind::Output, text.clone()).await;
    let _ = if terminal {
        handle.data(id, text).await
    } else {
        handle.extended_data(id, 1, text).await
    };
    let _ = handle.exit_status_request(id, 255).await;
    let _ = handle.eof(id).await;
    let _ = handle.close(id).await;
}

/// Finishes the recording and returns the events of the session's end.
async fn finish(
    shared: &Shared,
    audit_ctx: &AuditCtx,
    request: &Request,
    end: &End,
    started: std::time::Instant,
) -> Vec<Event> {
    let finished = match &shared.recorder {
        Some(recorder) => Some(recorder.finish().await),
        None => None,
    };
    let mut events = Vec::new();
    let digest = match finished {
        Some(Ok((sha256, bytes))) => serde_json::json!({"sha256": sha256, "bytes": bytes}),
        Some(Err(e)) => {
            audit_ctx.ctx.registry.recording_failed();
            // Its own event too, as a recording that cannot begin has: a search for failed
            // recordings finds both.
            events.push(
                audit_ctx
                    .event(Code::RecordingFailed)
                    .failed("recording_failed", e.to_string()),
            );
            serde_json::json!({"error": e.to_string()})
        }
        None => serde_json::Value::Null,
    };
    if let Some(t) = &shared.sftp {
        let tracker =
            std::mem::take(&mut *t.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        events.extend(
            tracker
                .finish()
                .into_iter()
                .map(|op| audit_ctx.transfer(op)),
        );
    }
    let (ended_by, reason, exit) = match end {
        End::Target(exit) => ("target", None, *exit),
        End::Client => ("client", None, None),
        End::Warden(r) => ("warden", Some(r.clone()), None),
    };
    events.push(
        audit_ctx
            .event(Code::SessionEnded)
            .details(serde_json::json!({
                "kind": request.kind(),
                "ended_by": ended_by,
                "reason": reason,
                "exit_status": exit,
                "duration_ms": started.elapsed().as_millis() as u64,
                "recording": digest,
            })),
    );
    events
}

/// What audit events of a running session carry.
#[derive(Clone)]
struct AuditCtx {
    ctx: Arc<Context>,
    grant: Grant,
    session: String,
}

impl AuditCtx {
    fn event(&self, code: Code) -> Event {
        let mut e = Event::new(code, Actor::user(self.grant.user.clone(), None), now());
        e.request_id = Some(self.grant.id);
        e.target = Some(self.grant.target.clone());
        e.role = Some(self.grant.role.clone());
        e.session_id = Some(self.session.clone());
        e
    }

    fn transfer(&self, op: FileOp) -> Event {
        self.event(Code::FileTransfer)
            .details(serde_json::to_value(op).unwrap_or_default())
    }
}

/// Where the target's end of file stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eof {
    Open,
    /// Received, held back for the exit status ([`EOF_HOLD`]).
    Held,
    Sent,
}

/// The target's messages on their way to the client. Once the client is gone nothing more is
/// sent, and the target's messages are still read, for its exit status.
struct ToClient {
    tx: russh::ChannelWriteHalf<Msg>,
    handle: server::Handle,
    id: ChannelId,
    eof: Eof,
    gone: bool,
}

impl ToClient {
    /// The target's next message; while its end of file is held, waits for it at most
    /// [`EOF_HOLD`] before letting the end of file go.
    async fn next(&mut self, up_rx: &mut russh::ChannelReadHalf) -> Option<ChannelMsg> {
        if self.eof == Eof::Held {
            match tokio::time::timeout(EOF_HOLD, up_rx.wait()).await {
                Ok(msg) => return msg,
                Err(_) => self.send_eof().await,
            }
        }
        up_rx.wait().await
    }

    /// Sends data (`ext`: its extended type), waiting for the client's window.
    async fn data(&mut self, ext: Option<u32>, data: Bytes) {
        if self.gone {
            return;
        }
        let sent = match ext {
            None => self.tx.data_bytes(data).await,
            Some(ext) => self.tx.extended_data_bytes(ext, data).await,
        };
        self.gone = sent.is_err();
    }

    async fn exit_status(&mut self, status: u32) {
        let _ = self.tx.exit_status(status).await;
        self.send_eof().await;
    }

    async fn exit_signal(&mut self, signal: Sig, core_dumped: bool, message: String, lang: String) {
        let _ = self
            .handle
            .exit_signal_request(self.id, signal, core_dumped, message, lang)
            .await;
        self.send_eof().await;
    }

    /// Sends the target's end of file, once, if it came.
    async fn send_eof(&mut self) {
        if self.eof == Eof::Held {
            let _ = self.tx.eof().await;
            self.eof = Eof::Sent;
        }
    }

    /// The target closed the channel: so does the client's end, after an end of file.
    async fn close(&mut self) {
        if self.eof != Eof::Sent {
            let _ = self.tx.eof().await;
            self.eof = Eof::Sent;
        }
        let _ = self.tx.close().await;
    }
}

/// Target → user: output, exit status, end of file, close. Returns the exit status once the
/// target closed the channel.
async fn output_loop(
    mut up_rx: russh::ChannelReadHalf,
    mut client: ToClient,
    early: Vec<ChannelMsg>,
    shared: Arc<Shared>,
) -> Option<u32> {
    let mut exit = None;
    let mut early = early.into_iter();
    loop {
        let msg = match early.next() {
            Some(m) => Some(m),
            None => client.next(&mut up_rx).await,
        };
        match msg {
            Some(ChannelMsg::Data { data }) => {
                if let Some(t) = &shared.sftp {
                    let parsed = t
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .server(&data);
                    if parsed.is_err() {
                        break;
                    }
                } else {
                    shared.record(Kind::Output, data.clone()).await;
                    let _ = shared.output.send(data.clone());
                    shared.heard.send_replace(());
                }
                client.data(None, data).await;
            }
            Some(ChannelMsg::ExtendedData { data, ext }) => {
                shared.record(Kind::Output, data.clone()).await;
                let _ = shared.output.send(data.clone());
                shared.heard.send_replace(());
                client.data(Some(ext), data).await;
            }
            Some(ChannelMsg::ExitStatus { exit_status }) => {
                exit = Some(exit_status);
                client.exit_status(exit_status).await;
            }
            Some(ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            }) => {
                client
                    .exit_signal(signal_name, core_dumped, error_message, lang_tag)
                    .await;
            }
            Some(ChannelMsg::Eof) if client.eof == Eof::Open => client.eof = Eof::Held,
            None | Some(ChannelMsg::Close) => break,
            Some(_) => {}
        }
    }
    client.close().await;
    exit
}

/// How long a command ended by Warden has between `TERM` and `KILL`.
const STOP_GRACE: Duration = Duration::from_millis(500);

/// Stops what the session runs at the target before the connection goes: closing it hangs up
/// a terminal, and its shell with it, but a command without one (`ssh HOST CMD`, any session
/// of a role without `permit-pty`) would run on, past the grant, unrecorded.
async fn stop_upstream(up_tx: &russh::ChannelWriteHalf<russh::client::Msg>) {
    if up_tx.signal(russh::Sig::TERM).await.is_ok() {
        tokio::time::sleep(STOP_GRACE).await;
        let _ = up_tx.signal(russh::Sig::KILL).await;
    }
}

/// Why the client's side of a session stopped.
enum Left {
    /// The client closed the channel or went away.
    Closed,
    /// Warden cannot go on with what the client sent: why.
    Warden(String),
}

/// How long each step of discarding a blocked line ([`Discard`]) waits at most for the target
/// to show it took it.
const DISCARD_LIMIT: Duration = Duration::from_secs(1);
/// How long the target's output must pause, after it began to answer a step of a discard, for
/// that step to count as taken.
const DISCARD_QUIET: Duration = Duration::from_millis(150);

/// A blocked line being discarded at the target. The erasing keys went on in place of its
/// Enter; once the target has answered them (output since, then a pause of [`DISCARD_QUIET`])
/// or [`DISCARD_LIMIT`] has passed, the interrupt follows, and once the target has answered
/// that too the user is told of the block. Until then, what the client types is dropped, not
/// queued: keys the terminal discards with the interrupt, or that readline reads before it acts
/// on it, would run the line (an Enter) or stay in it unseen by the tracker.
struct Discard {
    /// Whether the interrupt went on.
    interrupted: bool,
    /// When the current step went on, and when the target's output came last since then.
    since: tokio::time::Instant,
    heard: Option<tokio::time::Instant>,
    /// What the user is told once it is done.
    notice: String,
    /// Bytes typed after the blocked line's Enter and dropped.
    dropped: usize,
}

impl Discard {
    fn new(notice: String, dropped: usize) -> Self {
        Self {
            interrupted: false,
            since: tokio::time::Instant::now(),
            heard: None,
            notice,
            dropped,
        }
    }

    /// When the current step counts as taken, unless the target's output goes on.
    fn deadline(&self) -> tokio::time::Instant {
        let limit = self.since + DISCARD_LIMIT;
        self.heard
            .map_or(limit, |at| (at + DISCARD_QUIET).min(limit))
    }

    /// The notice of the block, and of what was dropped, if anything was.
    fn told(&self) -> Bytes {
        let mut text = format!("\r\nwarden: {}\r\n", self.notice);
        if self.dropped > 0 {
            text.push_str(&format!(
                "warden: what was typed after that line while the shell discarded it ({} byte{}) was dropped; type it again\r\n",
                self.dropped,
                if self.dropped == 1 { "" } else { "s" }
            ));
        }
        Bytes::from(text)
    }
}

/// User → Warden: keystrokes (checked against deny rules), resizes, signals, SFTP requests,
/// read as they come and queued for the target in `inbox`. Waits for nothing the client or
/// the target does (see [`crate::inbox`]), but a blocked line's [`Discard`].
async fn take_input(
    mut down_rx: russh::ChannelReadHalf,
    inbox: Arc<Inbox>,
    shared: Arc<Shared>,
    mut tracker: Option<LineTracker>,
    audit: AuditCtx,
    typed: bool,
) -> Left {
    let mut heard = shared.heard.subscribe();
    let mut discard: Option<Discard> = None;
    loop {
        let msg = match &mut discard {
            None => down_rx.wait().await,
            Some(d) => {
                let deadline = d.deadline();
                tokio::select! {
                    msg = down_rx.wait() => msg,
                    Ok(()) = heard.changed() => {
                        d.heard = Some(tokio::time::Instant::now());
                        continue;
                    }
                    () = tokio::time::sleep_until(deadline) => {
                        if d.interrupted {
                            if let Some(d) = discard.take() {
                                tell(&inbox, &shared, d.told()).await;
                            }
                        } else {
                            d.interrupted = true;
                            d.since = tokio::time::Instant::now();
                            d.heard = None;
                            heard.borrow_and_update();
                            if !inbox.push(Up::Data(BytesMut::from(&INTERRUPT[..]))) {
                                return overfull();
                            }
                        }
                        continue;
                    }
                }
            }
        };
        let item = match msg {
            None | Some(ChannelMsg::Close) => return Left::Closed,
            Some(ChannelMsg::Data { data }) if discard.is_some() => {
                if audit.grant.rules.record_input {
                    shared.record(Kind::Input, data.clone()).await;
                }
                if let Some(d) = &mut discard {
                    d.dropped += data.len();
                }
                continue;
            }
            Some(ChannelMsg::Data { data }) => {
                match typed_data(data, &shared, tracker.as_mut(), &audit, typed).await {
                    Ok((data, blocked)) => {
                        if let Some(d) = blocked {
                            heard.borrow_and_update();
                            discard = Some(d);
                        }
                        Up::Data(BytesMut::from(&data[..]))
                    }
                    Err(left) => return left,
                }
            }
            // The line is discarded before the input ends.
            Some(ChannelMsg::Eof) => {
                if let Some(d) = discard.take() {
                    if !d.interrupted && !inbox.push(Up::Data(BytesMut::from(&INTERRUPT[..]))) {
                        return overfull();
                    }
                    tell(&inbox, &shared, d.told()).await;
                }
                Up::Eof
            }
            Some(ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            }) => {
                shared.resize(col_width, row_height).await;
                Up::WindowChange {
                    cols: col_width,
                    rows: row_height,
                    px: pix_width,
                    py: pix_height,
                }
            }
            Some(ChannelMsg::Signal { signal }) => Up::Signal(signal),
            Some(_) => continue,
        };
        if !inbox.push(item) {
            return overfull();
        }
    }
}

/// Why a session whose target takes no input ends.
fn overfull() -> Left {
    Left::Warden(format!(
        "the target took none of the last {} MiB sent to it",
        crate::inbox::LIMIT / (1024 * 1024)
    ))
}

/// Shows the user a notice from Warden, in its turn with what goes to the target, and records
/// it with the session's output.
async fn tell(inbox: &Inbox, shared: &Shared, notice: Bytes) {
    shared.record(Kind::Output, notice.clone()).await;
    inbox.push(Up::Notice(notice));
}

/// What of the client's `data` goes on to the target: SFTP requests audited, a line matching a
/// deny rule replaced, and what follows it left out (its discard to go on, and the user told
/// why, once the target has taken what goes before), keystrokes recorded.
async fn typed_data(
    data: Bytes,
    shared: &Shared,
    tracker: Option<&mut LineTracker>,
    audit: &AuditCtx,
    typed: bool,
) -> Result<(Bytes, Option<Discard>), Left> {
    let unaudited = || Left::Warden("the audit log cannot be written".into());
    if let Some(t) = &shared.sftp {
        let ops = t
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .client(&data);
        match ops {
            Ok(ops) if ops.is_empty() => {}
            Ok(ops) => {
                let events = ops.into_iter().map(|op| audit.transfer(op)).collect();
                audit
                    .ctx
                    .backend
                    .audit(events)
                    .await
                    .map_err(|_| unaudited())?;
            }
            Err(e) => {
                tracing::warn!(error = %e, "ending an sftp session Warden cannot follow");
                return Err(Left::Warden(format!(
                    "Warden cannot follow this SFTP session's requests: {e}"
                )));
            }
        }
        return Ok((data, None));
    }
    let Some(t) = tracker else {
        if audit.grant.rules.record_input && typed {
            shared.record(Kind::Input, data.clone()).await;
        }
        return Ok((data, None));
    };
    let filtered = t.feed(&audit.grant.rules, &data);
    let mut discard = None;
    if let Some(Blocked { line, why }) = filtered.blocked {
        let role = &audit.grant.role;
        let (code, msg, details) = match why {
            Why::Rule(pattern) => (
                "command_denied",
                format!("blocked: the line matches the deny rule /{pattern}/ of role {role}"),
                serde_json::json!({"line": line, "rule": pattern, "kind": "shell"}),
            ),
            Why::Unfollowed(past) => (
                "line_not_followed",
                format!(
                    "blocked: Warden cannot follow this line past {past}, so cannot check it against the deny rules of role {role}; type the command again"
                ),
                serde_json::json!({"line": line, "not_followed_past": past, "kind": "shell"}),
            ),
        };
        let ev = audit
            .event(Code::CommandBlocked)
            .denied(code, msg.clone())
            .details(details);
        audit
            .ctx
            .backend
            .audit(vec![ev])
            .await
            .map_err(|_| unaudited())?;
        discard = Some(Discard::new(msg, filtered.dropped));
    }
    if audit.grant.rules.record_input {
        shared.record(Kind::Input, data.clone()).await;
    }
    Ok((Bytes::from(filtered.forward), discard))
}

/// Warden → target: what [`take_input`] queued, as the target's window takes it; notices to
/// the user in their turn.
async fn give_input(
    inbox: Arc<Inbox>,
    up_tx: Arc<russh::ChannelWriteHalf<russh::client::Msg>>,
    handle: server::Handle,
    id: ChannelId,
) {
    loop {
        let sent = match inbox.next().await {
            Up::Data(data) => {
                let n = data.len();
                let sent = up_tx.data_bytes(data.freeze()).await.is_ok();
                inbox.taken(n);
                sent
            }
            Up::Eof => up_tx.eof().await.is_ok(),
            Up::WindowChange { cols, rows, px, py } => {
                up_tx.window_change(cols, rows, px, py).await.is_ok()
            }
            Up::Signal(signal) => up_tx.signal(signal).await.is_ok(),
            Up::Notice(text) => handle.data(id, text).await.is_ok(),
        };
        if !sent {
            return;
        }
    }
}
