//! The server's shared state and the policy it enforces.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, MutexGuard, PoisonError};

use arc_swap::ArcSwap;
use time::OffsetDateTime;
use tokio::sync::{Mutex, Notify};
use uuid::Uuid;
use warden_domain::audit::{Actor, Code, Event};
use warden_domain::{Directory, RequestId, User, UserName};
use warden_issuers::Registry;
use warden_issuers::ssh_cert::UserCa;
use warden_policy::{Diagnostic, Policy, Report, Severity, TargetCheck, Targets, TestReport};
use warden_store::Store;

use crate::config::Config;
use crate::gates::{Gate, Gates};
use crate::keys::Sealer;
use crate::owner_only::others_may_change;

/// Everything request handlers and workers share.
#[derive(Debug)]
pub struct App {
    pub store: Arc<dyn Store>,
    pub policy: ArcSwap<Policy>,
    pub policy_dir: PathBuf,
    pub directory: Directory,
    /// The directory as approvals are counted: without the users offboarded (and given no new
    /// password since), nor those whose credentials an administrator is changing
    /// ([`App::hold_approvals`]), so that an approval they gave before no longer fills a place.
    reviewers: ArcSwap<Directory>,
    /// Whom `reviewers` leaves out: changed only with `reviewers` made again under its lock.
    left_out: std::sync::Mutex<LeftOut>,
    /// Serialises [`App::refresh_reviewers`], so that an older reading is never stored last.
    refreshing_reviewers: Mutex<()>,
    pub issuers: Registry,
    pub ca: UserCa,
    /// Signs the audit log's checkpoints, and the range of events an export holds.
    pub audit_signer: warden_audit::NoteSigner,
    pub sealer: Sealer,
    pub config: Config,
    /// Wakes the worker when a new deadline may be earlier than the one it sleeps for.
    pub wake: crate::worker::Wake,
    /// Wakes the notification dispatcher when notifications were queued.
    pub outbox: Notify,
    /// Serialises policy reloads.
    reload: Mutex<()>,
    /// What decisions hold, and a reload of another policy and an offboarding wait for.
    gates: Gates,
    /// Serialises archives of the audit log.
    pub(crate) archiving: Mutex<()>,
    /// Held by an offboarding from its caller's check until it is done, so that two never
    /// cross: each checks again, with it held, that its caller still stands and that an
    /// administrator who can sign in remains.
    pub(crate) offboarding: Mutex<()>,
    /// Held by a request's credential issue, and by whatever ends the request, so that a
    /// revocation waits for an issue under way and then removes what it made.
    pub(crate) issuing: crate::broker::Locks<RequestId>,
    /// Held while a review of a request is decided and stored, so that approvers acting at the
    /// same instant take turns rather than spend their retries on each other's writes.
    pub(crate) reviewing: crate::broker::Locks<RequestId>,
    /// Held per requester and target (every grant of a chain of extensions shares both) while
    /// an extension is made and while a grant is revoked with its extensions, so that neither
    /// two extensions nor an extension and a revocation cross.
    pub(crate) chains: crate::broker::Locks<(UserName, warden_domain::TargetName)>,
    /// Held while a target's admin password is rotated or an interrupted rotation settled.
    pub(crate) rotations: crate::broker::Locks<warden_domain::TargetName>,
    /// Recently seen tokens, so a request does not cost a database read to authenticate.
    pub tokens: crate::auth::TokenCache,
    /// Runs of wrong passwords and TOTP codes, per user.
    pub(crate) lockouts: crate::auth::Lockouts,
    /// What a sign-in's password is checked against when its name has none that signs in.
    pub(crate) sign_in_dummy: crate::auth::SignInDummy,
    /// Failed authentications per client address, and the sign-ins waiting for a password hash.
    pub(crate) throttles: crate::throttle::SourceThrottles,
    /// Bounds the argon2id hashes computed at once to the cores: each holds 19 MiB and a core
    /// for tens of milliseconds, and anyone who reaches the API can ask for one by signing in.
    pub(crate) hashing: tokio::sync::Semaphore,
    /// The audit export's live figures, for `GET /v1/audit/status`.
    pub export: crate::export::Status,
    /// Why the last audit checkpoint could not be written, until one is: a server that can no
    /// longer sign its log is not ready.
    pub(crate) checkpoint_failure: std::sync::Mutex<Option<String>>,
    /// Whether this run hashed again the stored events the newest checkpoint covers and found
    /// they make its root (see `checkpoints::check_covered`): nothing is signed before.
    pub(crate) log_checked: std::sync::atomic::AtomicBool,
    pub metrics: crate::metrics::Metrics,
    /// The SSH proxy's live sessions.
    pub sessions: Arc<warden_ssh_proxy::SessionRegistry>,
    /// Where SSH session recordings are kept (`<data_dir>/recordings`).
    pub recordings: Arc<dyn warden_ssh_proxy::Recordings>,
    /// Where the SSH proxy listens and the host key it presents, once it listens.
    pub ssh_proxy: std::sync::OnceLock<SshProxy>,
}

/// Whom the directory as approvals are counted ([`App::reviewers`]) leaves out.
#[derive(Debug, Default)]
struct LeftOut {
    /// The users offboarded (and given no new password since), as last read from the store,
    /// and those an offboarding under way barred ([`App::bar_reviewer`]).
    offboarded: HashSet<UserName>,
    /// The users whose approvals an administrator's change of their credentials holds
    /// ([`App::hold_approvals`]), with how many such holds there are.
    held: HashMap<UserName, usize>,
    /// The holds the change that took them left in place ([`ApprovalsHeld`] dropped unreleased).
    lingering: Vec<Lingering>,
}

/// A hold on a user's approvals that outlived the change of credentials that took it: the
/// change was cut short, or went on before the user's calls under way ended, or could not
/// withdraw what the old credentials approved. Kept until
/// [`App::release_lingering`](crate::state::App::release_lingering) finds the user's calls
/// ended and has withdrawn the approvals they gave until `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lingering {
    pub user: UserName,
    /// When the credentials changed: the approvals given until then are the old ones'.
    pub at: OffsetDateTime,
    /// Why those approvals are withdrawn, as `request.approvals_voided` says it.
    pub why: String,
}

/// A hold on `user`'s approvals while an administrator changes their credentials
/// ([`App::hold_approvals`]): none of theirs counts, and none of theirs is stored, until it
/// is released. Dropped unreleased (withdrawing failed once the change was stored, the change
/// was cut short, or the user's calls under way outlasted the wait), it stays in place, failing
/// closed, as a [`Lingering`] hold.
#[derive(Debug)]
pub(crate) struct ApprovalsHeld<'a> {
    app: &'a App,
    user: UserName,
    at: OffsetDateTime,
    why: String,
    released: bool,
}

impl ApprovalsHeld<'_> {
    /// Whose approvals are held.
    pub fn user(&self) -> &UserName {
        &self.user
    }

    /// When the hold was taken: the time of the change of credentials. Every approval of the
    /// user's stored before it is no later; none is stored after it while it holds.
    pub fn at(&self) -> OffsetDateTime {
        self.at
    }

    /// Why the approvals the old credentials gave are withdrawn.
    pub fn why(&self) -> &str {
        &self.why
    }

    /// Lets the user's approvals count again: once what the old credentials approved is
    /// withdrawn, and no call made with them is under way; or when the change was not stored.
    pub fn release(mut self) {
        self.released = true;
        self.app.unhold(&self.user);
    }
}

impl Drop for ApprovalsHeld<'_> {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        tracing::warn!(user = %self.user, "the approvals of a user whose credentials changed stay held until their calls under way end and what they approved before is withdrawn");
        self.app.left_out().lingering.push(Lingering {
            user: self.user.clone(),
            at: self.at,
            why: self.why.clone(),
        });
    }
}

/// A decision's hold on the policy it reads ([`App::deciding`]): a reload waits until it is
/// dropped.
#[derive(Debug)]
pub struct Deciding<'a> {
    pub policy: Arc<Policy>,
    pub(crate) gate: Gate<'a>,
}

/// What `warden ssh` needs to reach the proxy and trust it on first use.
#[derive(Debug, Clone)]
pub struct SshProxy {
    pub addr: std::net::SocketAddr,
    /// The host's public key, OpenSSH format.
    pub host_key: String,
}

/// Handle passed to handlers.
pub type Shared = Arc<App>;

/// Current time to the millisecond ([`warden_domain::to_millisecond`]); the one place the
/// server reads the clock for domain decisions.
pub fn now() -> OffsetDateTime {
    warden_domain::to_millisecond(OffsetDateTime::now_utc())
}

/// A new request's id and the instant it is created: a UUIDv7 (ordered within the process)
/// and the millisecond it carries, so ids sort by creation time.
pub fn new_request_id() -> (RequestId, OffsetDateTime) {
    let id = RequestId::from_uuid(Uuid::now_v7());
    (id, id.instant().unwrap_or_else(now))
}

/// Loads a policy directory, checking every target's connection and role settings against
/// its issuer, so that one run reports every problem.
pub fn load_policy(dir: &Path) -> Result<Policy, Report> {
    Policy::load_dir(dir, ISSUERS)
}

/// [`load_policy`] for `warden policy check`: the fixture files in `tests/` are read too (not
/// run), so that a CI job checking the policy is not told OK beside fixtures `policy test`
/// cannot read.
pub fn check_policy(dir: &Path) -> Result<Policy, Report> {
    Policy::check_dir(dir, ISSUERS)
}

/// Runs a policy directory's fixtures against it, loaded as [`load_policy`] loads it: one run
/// reports every problem of the policy and of the fixture files together.
pub fn test_policy(dir: &Path) -> Result<TestReport, Report> {
    warden_policy::run_tests(dir, ISSUERS)
}

/// [`load_policy`] for the policy a server enforces: also refused for what
/// [`open_to_others`] finds.
pub fn load_served_policy(dir: &Path) -> Result<Policy, Report> {
    let open = open_to_others(dir, Severity::Error);
    if open.is_empty() {
        return load_policy(dir);
    }
    Err(Report { diagnostics: open })
}

/// Why a server refuses the policy in `dir` whatever it says: anyone but the server's user
/// (and root) may change the directory, a policy file in it ([`warden_policy::is_policy_file`]:
/// not the fixtures, nor a repository's other files), where a link leads, or a directory above
/// any of them ([`others_may_change`]), since whoever can change the policy decides who gets
/// access at the next reload. As errors for the server; as warnings for `warden policy check`,
/// of a server running as the check does, since a policy checked out for CI is often writable
/// by its group and no server loads that copy.
pub fn open_to_others(dir: &Path, severity: Severity) -> Vec<Diagnostic> {
    let mut open: Vec<(PathBuf, String)> = Vec::new();
    if let Some(why) = others_may_change(dir, None) {
        open.push((dir.to_owned(), why));
    }
    let checked = std::fs::canonicalize(dir).ok();
    if let Ok(entries) = std::fs::read_dir(dir) {
        open.extend(entries.filter_map(|e| {
            let e = e.ok()?;
            if !e
                .file_name()
                .to_str()
                .is_some_and(warden_policy::is_policy_file)
            {
                return None;
            }
            let path = e.path();
            let why = others_may_change(&path, checked.as_deref())?;
            Some((path, why))
        }));
    }
    let me = rustix::process::geteuid().as_raw();
    open.into_iter()
        .map(|(p, why)| Diagnostic {
            // Named as its other problems are, relative to the policy directory.
            file: p
                .strip_prefix(dir)
                .ok()
                .filter(|r| !r.as_os_str().is_empty())
                .map_or_else(|| dir.display().to_string(), |r| r.display().to_string()),
            line: None,
            column: None,
            message: match severity {
                Severity::Error => why,
                Severity::Warning => format!(
                    "a server running as uid {me}, as this check does, would refuse to load this policy: {why}"
                ),
            },
            severity,
        })
        .collect()
}

/// What the policy a server enforces says that most likely is not meant: its own warnings
/// ([`Policy::warnings`]) and its `User::` and `Group::` literals and `@approval` groups naming
/// no one in `directory` ([`Policy::directory_warnings`]), which only the server can check. Logged when the policy
/// goes live, at start and at each reload, and returned by a reload as its notice.
pub fn policy_warnings(policy: &Policy, directory: &Directory) -> Vec<Diagnostic> {
    let mut warnings = policy.warnings().to_vec();
    warnings.extend(policy.directory_warnings(directory));
    warnings
}

/// Logs `warnings` of the policy that just went live: the log is the record, where the
/// terminal of whoever reloaded is not.
fn log_policy_warnings(warnings: &[Diagnostic]) {
    for w in warnings {
        tracing::warn!("policy: {w}");
    }
}

/// What the issuers know of the targets: the problems with their connections and role
/// settings, and whether Warden records their sessions.
const ISSUERS: TargetCheck<'static> = TargetCheck {
    problems: &check_issuers,
    records_sessions: &warden_issuers::records_sessions,
};

/// Problems with connections and role settings that only the issuers can see.
fn check_issuers(targets: &Targets) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (_, target) in targets.iter() {
        if !warden_issuers::KINDS.contains(&target.kind.as_str()) {
            out.push(target.kind_at.problem(format!(
                "target {}: unknown kind {:?}; known kinds: {}",
                target.name,
                target.kind,
                warden_issuers::KINDS.join(", ")
            )));
            continue;
        }
        for p in warden_issuers::check_connection(&target.kind, &target.connection) {
            let at = p
                .key
                .as_ref()
                .and_then(|k| target.connection_settings_at.get(k))
                .unwrap_or(&target.connection_at);
            // In the words an issue would refuse with.
            out.push(at.problem(format!(
                "target {}: invalid settings: {}",
                target.name, p.message
            )));
        }
        for role in target.roles.values() {
            for p in warden_issuers::check_role(&target.kind, &role.settings) {
                let at = p
                    .key
                    .as_ref()
                    .and_then(|k| role.settings_at.get(k))
                    .unwrap_or(&role.at);
                out.push(at.problem(format!(
                    "target {} role {}: {}",
                    target.name, role.name, p.message
                )));
            }
        }
    }
    out
}

/// Why a policy reload left the live policy in place.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new policy has errors, each with its file and line.
    #[error("{0}")]
    Invalid(Report),
    /// The new policy is valid, but its going live could not be recorded (the store failed), so
    /// it did not go live.
    #[error(
        "the new policy is valid but was not made live, because its audit event could not be stored: {0}"
    )]
    Unstored(String),
}

impl App {
    /// Assembles the state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        policy: Policy,
        policy_dir: PathBuf,
        directory: Directory,
        offboarded: &[UserName],
        issuers: Registry,
        ca: UserCa,
        audit_signer: warden_audit::NoteSigner,
        sealer: Sealer,
        config: Config,
        metrics: crate::metrics::Metrics,
    ) -> Self {
        log_policy_warnings(&policy_warnings(&policy, &directory));
        Self {
            store,
            policy: ArcSwap::from_pointee(policy),
            policy_dir,
            reviewers: ArcSwap::from_pointee(directory.without(offboarded)),
            left_out: std::sync::Mutex::new(LeftOut {
                offboarded: offboarded.iter().cloned().collect(),
                ..LeftOut::default()
            }),
            refreshing_reviewers: Mutex::new(()),
            directory,
            issuers,
            ca,
            audit_signer,
            sealer,
            wake: crate::worker::Wake::default(),
            outbox: Notify::new(),
            reload: Mutex::new(()),
            gates: Gates::default(),
            archiving: Mutex::new(()),
            offboarding: Mutex::new(()),
            issuing: crate::broker::Locks::default(),
            reviewing: crate::broker::Locks::default(),
            chains: crate::broker::Locks::default(),
            rotations: crate::broker::Locks::default(),
            tokens: crate::auth::TokenCache::default(),
            lockouts: crate::auth::Lockouts::default(),
            sign_in_dummy: crate::auth::SignInDummy::default(),
            throttles: crate::throttle::SourceThrottles::default(),
            hashing: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            ),
            export: crate::export::Status::default(),
            checkpoint_failure: std::sync::Mutex::default(),
            log_checked: std::sync::atomic::AtomicBool::default(),
            metrics,
            sessions: Arc::default(),
            recordings: Arc::new(warden_ssh_proxy::FsRecordings::new(
                config.data_dir.join("recordings"),
            )),
            ssh_proxy: std::sync::OnceLock::new(),
            config,
        }
    }

    /// The directory as approvals are counted ([`App::reviewers`]).
    pub fn reviewers(&self) -> Arc<Directory> {
        self.reviewers.load_full()
    }

    /// Whom the reviewers leave out, to read or change (then [`Self::rebuild_reviewers`]).
    fn left_out(&self) -> MutexGuard<'_, LeftOut> {
        self.left_out.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the directory as approvals are counted again, from `left` ([`Self::left_out`],
    /// held).
    fn rebuild_reviewers(&self, left: &LeftOut) {
        let out = left.offboarded.iter().chain(left.held.keys());
        self.reviewers.store(Arc::new(self.directory.without(out)));
    }

    /// Stops counting `user`'s approvals, before their offboarding is stored: a decision under
    /// way stores its outcome first (its approval was given before the offboarding), and one
    /// after does not count theirs. Should the offboarding fail, they stay left out (failing
    /// closed) until the next reading.
    pub async fn bar_reviewer(&self, user: &UserName) {
        let _barring = self.gates.barring_reviewer().await;
        let _turn = self.refreshing_reviewers.lock().await;
        let mut left = self.left_out();
        left.offboarded.insert(user.clone());
        self.rebuild_reviewers(&left);
    }

    /// Stops counting `user`'s approvals, and storing any, while an administrator changes their
    /// password or second factor, as an offboarding bars them ([`Self::bar_reviewer`]): taken
    /// before the change is stored, once the decisions under way are, so that no decision
    /// after it counts an approval the old credentials gave, however long withdrawing those
    /// takes, and none of theirs is stored meanwhile ([`Self::resetting`]). `why` says why the
    /// approvals it withdraws are withdrawn. Until released ([`ApprovalsHeld::release`]).
    pub(crate) async fn hold_approvals(&self, user: &UserName, why: &str) -> ApprovalsHeld<'_> {
        let _barring = self.gates.barring_reviewer().await;
        let mut left = self.left_out();
        *left.held.entry(user.clone()).or_default() += 1;
        self.rebuild_reviewers(&left);
        ApprovalsHeld {
            app: self,
            user: user.clone(),
            at: now(),
            why: why.to_owned(),
            released: false,
        }
    }

    /// Gives back one hold on `user`'s approvals.
    fn unhold(&self, user: &UserName) {
        let mut left = self.left_out();
        if let Some(n) = left.held.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                left.held.remove(user);
            }
        }
        self.rebuild_reviewers(&left);
    }

    /// Whether an administrator's change of `user`'s credentials holds their approvals
    /// ([`Self::hold_approvals`]): one of theirs under way now was made with the old ones, or
    /// before they were withdrawn, and does not count.
    pub fn resetting(&self, user: &UserName) -> bool {
        self.left_out().held.contains_key(user)
    }

    /// The holds on approvals their changes left in place ([`Lingering`]).
    pub(crate) fn lingering(&self) -> Vec<Lingering> {
        self.left_out().lingering.clone()
    }

    /// Gives back `hold`, a lingering hold, once the approvals it holds are withdrawn.
    pub(crate) fn release_lingering_hold(&self, hold: &Lingering) {
        let found = {
            let mut left = self.left_out();
            let found = left.lingering.iter().position(|l| l == hold);
            if let Some(i) = found {
                left.lingering.remove(i);
            }
            found.is_some()
        };
        if found {
            self.unhold(&hold.user);
        }
    }

    /// Reads again which users are offboarded, after an offboarding or a new password.
    pub async fn refresh_reviewers(&self) -> Result<(), warden_store::Error> {
        let _turn = self.refreshing_reviewers.lock().await;
        let gone = self.store.offboarded_users().await?;
        let mut left = self.left_out();
        left.offboarded = gone.into_iter().collect();
        self.rebuild_reviewers(&left);
        Ok(())
    }

    /// The live policy, for a decision whose outcome will be stored: keep it until it is
    /// ([`Gates::deciding`]).
    pub async fn deciding(&self) -> Deciding<'_> {
        let gate = self.gates.deciding().await;
        Deciding {
            policy: self.policy.load_full(),
            gate,
        }
    }

    /// The decision gate again after a call made without it ([`Gates::again`]): `None` when a
    /// reload of another policy is under way or has replaced `policy`, so that what was decided
    /// under it may no longer stand.
    pub(crate) fn still_deciding(&self, policy: &Policy) -> Option<Gate<'_>> {
        let gate = self.gates.again()?;
        // A reload of the same files (a routine SIGHUP) changes no decision.
        (self.policy.load().digest() == policy.digest()).then_some(gate)
    }

    /// Whether `user` was offboarded (and given no new password since): nothing of theirs may
    /// be granted, and their approvals do not count.
    pub fn offboarded(&self, user: &UserName) -> bool {
        self.user(user).is_some() && self.left_out().offboarded.contains(user)
    }

    /// Whether `user` administers Warden.
    pub fn is_admin(&self, user: &User) -> bool {
        user.in_group(&self.config.admin_group)
    }

    /// Whether `user` may read everyone's audit events, proofs and requests: administrators
    /// and the `audit_readers` group.
    pub fn may_read_audit(&self, user: &User) -> bool {
        self.is_admin(user) || user.in_group(&self.config.audit_readers)
    }

    /// Whether `user` may read the zero-standing-privilege report: administrators and the
    /// security group.
    pub fn may_report(&self, user: &User) -> bool {
        self.is_admin(user) || user.in_group(&self.config.security_group)
    }

    /// Looks a user up in the directory.
    pub fn user(&self, name: &UserName) -> Option<&User> {
        self.directory.get(name)
    }

    /// What a reload leaves as it was: when the config file's users, groups or managers are no
    /// longer those this server started with, which are read at start only, or its password
    /// hashes changed ([`App::changed_password_hashes`]), a note saying so. The file is weighed
    /// against the one read at start, both with the users offboarded now, so that who was
    /// offboarded or given a password back since is not taken for a change of the file.
    pub async fn directory_drift(&self) -> Option<String> {
        let path = self.config.file.as_ref()?;
        let offboarded = self.store.offboarded_users().await.unwrap_or_default();
        let config = match Config::load(path) {
            Ok(c) => c,
            Err(e) => return Some(e.to_string()),
        };
        let now = match config.directory(&offboarded) {
            Ok(d) => d,
            Err(e) => return Some(format!("{}: {e}", path.display())),
        };
        // What the file said at start, read with who is offboarded now: an offboarding or a new
        // password since then changes whom the bootstrap admin stands in for, not the file.
        let then = match self.config.directory(&offboarded) {
            Ok(d) => d,
            Err(_) => self.directory.clone(),
        };
        let mut notes = Vec::new();
        if now != then {
            notes.push(format!(
                "the users, groups or managers in {} changed since the server started: they take effect at its next start (`warden revoke --user NAME --all` ends a leaver's access now)",
                path.display()
            ));
        }
        notes.extend(self.changed_password_hashes(&config).await);
        (!notes.is_empty()).then(|| notes.join("; "))
    }

    /// A note naming the users whose `password_hash` in `config` changed since the server last
    /// read the config, which is recorded as read: the config sets a password only for a user
    /// who has none, so a hash changed there (a leaked password rotated, say) changes no
    /// password by itself. Each change is named once; a hash read for the first time is taken
    /// as it is; offboarded users, whose password is disabled, are left out.
    pub async fn changed_password_hashes(&self, config: &Config) -> Option<String> {
        let offboarded = self.store.offboarded_users().await.ok()?;
        let mut changed = Vec::new();
        for (name, u) in &config.users {
            let Some(configured) = &u.password_hash else {
                continue;
            };
            if offboarded.contains(name) {
                continue;
            }
            let seen = self.store.secrets(name).await.ok()?.config_hash;
            if seen.as_ref() == Some(configured) {
                continue;
            }
            if seen.is_some() {
                changed.push(name.to_string());
            }
            if let Err(e) = self.store.set_config_hash(name, configured.clone()).await {
                tracing::warn!(user = %name, error = %e, "could not record the config's password hash as read");
            }
        }
        (!changed.is_empty()).then(|| {
            format!(
                "the password_hash of {} changed in the config since the server last read it, and changes no password: the config sets one only for a user who has none. Change a password with `warden user set-password NAME`",
                changed.join(", ")
            )
        })
    }

    /// Reloads the policy directory, returning the new policy's digest and its warnings
    /// ([`policy_warnings`], logged too). An invalid policy is rejected and the live one stays;
    /// both outcomes are audited, and a valid one whose audit event cannot be stored is not
    /// made live either.
    pub async fn reload_policy(
        &self,
        actor: Actor,
    ) -> Result<(String, Vec<Diagnostic>), ReloadError> {
        let _guard = self.reload.lock().await;
        let dir = self.policy_dir.clone();
        let loaded = tokio::task::spawn_blocking(move || load_served_policy(&dir))
            .await
            .map_err(|e| {
                ReloadError::Invalid(Report {
                    diagnostics: vec![Diagnostic {
                        file: String::new(),
                        line: None,
                        column: None,
                        message: format!("the policy loader crashed: {e}"),
                        severity: Severity::Error,
                    }],
                })
            })?;
        let old = self.policy.load().digest().to_owned();
        match loaded {
            Ok(policy) => {
                let digest = policy.digest().to_owned();
                let warnings = policy_warnings(&policy, &self.directory);
                let event =
                    Event::new(Code::PolicyLoaded, actor, now()).details(serde_json::json!({
                        "digest": digest,
                        "previous_digest": old,
                        "rules": policy.rule_count(),
                        "dir": self.policy_dir.display().to_string(),
                    }));
                // Another policy waits for the decisions under way; the same files (a routine
                // SIGHUP) change no decision, so none is made to wait or withdrawn.
                let _live = if digest == old {
                    None
                } else {
                    Some(self.gates.replacing_policy().await)
                };
                self.store
                    .append(vec![event])
                    .await
                    .map_err(|e| ReloadError::Unstored(e.to_string()))?;
                self.policy.store(Arc::new(policy));
                log_policy_warnings(&warnings);
                Ok((digest, warnings))
            }
            Err(report) => {
                // The reasons for the refusal; its warnings would be read as more of them. The
                // first hundred, and how many more: the audit event, the log line and the answer
                // each hold them, and a directory gone wrong can hold thousands.
                const LISTED: usize = 100;
                let mut report = report.errors();
                let all = report.diagnostics.len();
                if all > LISTED {
                    report.diagnostics.truncate(LISTED);
                    let dir = self.policy_dir.display();
                    report.diagnostics.push(Diagnostic {
                        file: dir.to_string(),
                        line: None,
                        column: None,
                        message: format!(
                            "and {} more problem(s), not listed here: `warden policy check {dir}` lists them all",
                            all - LISTED
                        ),
                        severity: Severity::Error,
                    });
                }
                let event = Event::new(Code::PolicyReloadRejected, actor, now())
                    .denied("invalid_policy", format!("{all} problem(s); the previous policy stays live"))
                    .details(serde_json::json!({
                        "live_digest": old,
                        "problems": report.diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    }));
                if let Err(e) = self.store.append(vec![event]).await {
                    tracing::error!(error = %e, "could not audit a rejected policy reload");
                }
                Err(ReloadError::Invalid(report))
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A server on a new data dir in `dir` whose directory holds `users`, serving the demo
    /// policy: for the unit tests of every module that need a whole server.
    pub(crate) fn app_in(dir: &Path, users: &[&str]) -> App {
        let directory = Directory::new(users.iter().map(|u| User {
            name: u.parse().unwrap(),
            groups: Default::default(),
            manager: None,
        }))
        .unwrap();
        let audit_key = crate::keys::audit_signing_key(&dir.join("audit_signing.key")).unwrap();
        App::new(
            Arc::new(warden_store::SqliteStore::open(&dir.join("warden.db")).unwrap()),
            Policy::from_files(&warden_policy::demo_files()).unwrap(),
            dir.join("policy"),
            directory,
            &[],
            Registry::new([]),
            UserCa::load_or_create(&dir.join("ssh_user_ca")).unwrap().0,
            crate::checkpoints::signer("warden.test/audit", &audit_key).unwrap(),
            Sealer::load_or_create(&dir.join("master.key")).unwrap(),
            Config {
                data_dir: dir.to_owned(),
                ..Default::default()
            },
            crate::metrics::Metrics::new().unwrap(),
        )
    }

    /// A change of credentials holds the user's approvals until it gives them back; one cut
    /// short (its hold dropped unreleased) leaves them held, failing closed, until a later pass
    /// finds no call of theirs under way and has withdrawn what they approved until then.
    #[tokio::test]
    async fn a_hold_cut_short_lingers_until_a_pass_gives_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let app = app_in(dir.path(), &["alice", "bob"]);
        let bob: UserName = "bob".parse().unwrap();
        let counted = |app: &App| app.reviewers().get(&bob).is_some();
        assert!(counted(&app));

        // Two changes at once: bob counts again only once both gave theirs back.
        let first = app.hold_approvals(&bob, "their password was reset").await;
        let second = app
            .hold_approvals(&bob, "their second factor was reset")
            .await;
        assert!(!counted(&app) && app.resetting(&bob) && !app.offboarded(&bob));
        first.release();
        assert!(!counted(&app) && app.resetting(&bob));
        let at = second.at();
        drop(second);
        assert!(!counted(&app) && app.resetting(&bob));
        assert_eq!(
            app.lingering(),
            [Lingering {
                user: bob.clone(),
                at,
                why: "their second factor was reset".into(),
            }]
        );

        assert_eq!(app.release_lingering().await.unwrap(), 1);
        assert!(counted(&app) && !app.resetting(&bob) && app.lingering().is_empty());
        // The decision gate was given back: a decision goes on.
        drop(app.deciding().await);
    }
}
