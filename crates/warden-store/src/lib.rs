//! Durable storage for Warden: requests and grants, API tokens, users' secrets, and the audit
//! log, behind the [`Store`] trait.
//!
//! Invariant: every state change is written together with the audit events describing it, in
//! one transaction, and a write returns only once that transaction is durable. There is no way
//! to change a request without saying what to audit.

pub mod sqlite;

use async_trait::async_trait;
use time::OffsetDateTime;
use warden_domain::audit::{Code, Event};
use warden_domain::{
    Lease, Notice, Postmortem, Request, RequestId, RoleName, State, TargetName, UserName,
};

pub use sqlite::{AuditReader, Schema, SqliteStore, a_sealed_value, compact, rewrap_sealed};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Someone else changed the record first; reload and retry.
    #[error("the record was changed concurrently; retry")]
    Conflict,
    #[error("not found")]
    NotFound,
    #[error("storage failure: {0}")]
    Backend(String),
    /// The disk the store is on is full: nothing more is written until space is freed.
    #[error("storage is full: {0}")]
    Full(String),
    /// A change would pass a bound it was given ([`Change::waiting_bound`]); nothing of it
    /// was written.
    #[error("the change would pass its bound")]
    Bound,
}

impl Error {
    /// A failure of the database beneath, said in `text`: [`Error::Full`] when it says the disk
    /// is full (SQLite's `SQLITE_FULL`, or the system's `ENOSPC`), which an operator fixes
    /// otherwise than a fault.
    pub fn backend(text: String) -> Self {
        if text.contains("database or disk is full") || text.contains("No space left on device") {
            Error::Full(text)
        } else {
            Error::Backend(text)
        }
    }
}

/// Result alias for storage operations.
pub type Result<T> = std::result::Result<T, Error>;

/// How many break-glass grants were made, drills apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreakGlassUses {
    pub real: u64,
    pub drills: u64,
}

/// The records a period's report is computed from. None of them is an audit event, so
/// archiving the log changes no figure.
#[derive(Debug, Clone, Default)]
pub struct Period {
    /// Requests created in the period, oldest first.
    pub requests: Vec<Request>,
    /// Leases of those requests (and perhaps of a few made just after the period).
    pub leases: Vec<Lease>,
    /// Postmortems opened in the period, or before its end and not closed by then.
    pub postmortems: Vec<Postmortem>,
}

/// What is written together with a request, in the same transaction.
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// The grant's lease, inserted or replaced.
    pub lease: Option<Lease>,
    /// A sealed secret awaiting its one pickup by the requester.
    pub pickup: Option<String>,
    /// The postmortem a break-glass grant opens.
    pub postmortem: Option<Postmortem>,
    pub events: Vec<Event>,
    /// Notifications the change causes, queued in the outbox with it.
    pub notices: Vec<Outgoing>,
    /// For a request inserted waiting for approval: how many of its requester's may wait at
    /// once. The insert fails with [`Error::Bound`] when as many wait already, checked in its
    /// own transaction, so that requests arriving together cannot all pass the bound.
    pub waiting_bound: Option<usize>,
}

impl From<Vec<Event>> for Change {
    fn from(events: Vec<Event>) -> Self {
        Self {
            events,
            ..Self::default()
        }
    }
}

/// A notification queued for one notification sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The sink's configured name.
    pub sink: String,
    pub notice: Notice,
}

/// A queued notification as the outbox holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub sink: String,
    pub notice: Notice,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Whom earlier attempts reached, so a retry is sent to no one twice.
    pub reached: Reached,
}

/// What the earlier attempts of one sink's delivery settled, recipient by recipient (a mail
/// relay answers for each mailbox): who took the notification, and who was refused it for
/// good. A retry goes only to the rest, so no one is sent it twice.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reached {
    /// The recipients (mail addresses) who took it.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub sent: std::collections::BTreeSet<String>,
    /// The recipients refused it for good, each with the answer.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub refused: std::collections::BTreeMap<String, String>,
}

impl Reached {
    /// Whether no recipient is settled yet.
    pub fn is_empty(&self) -> bool {
        self.sent.is_empty() && self.refused.is_empty()
    }

    /// Whether `recipient` took it or was refused it for good.
    pub fn settled(&self, recipient: &str) -> bool {
        self.sent.contains(recipient) || self.refused.contains_key(recipient)
    }
}

/// The outbox's figures, for status and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxStatus {
    /// Notifications not yet delivered to every sink they are for (each counted once,
    /// however many sinks it waits for: the outbox holds a row per notification and sink).
    pub pending: u64,
    /// Of those, how many failed at least once at some sink.
    pub retrying: u64,
    /// Delivered to every sink they were for, but those that skipped them.
    pub delivered: u64,
    /// Dropped unsent at every sink, because they no longer applied by the time they could
    /// be sent.
    pub skipped: u64,
    /// When the oldest undelivered notification was queued: the outbox's lag.
    pub oldest_pending: Option<OffsetDateTime>,
    /// The undelivered ones by sink name, with the newest failure's error.
    pub by_sink: Vec<SinkBacklog>,
}

/// What one notification sink has yet to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkBacklog {
    pub sink: String,
    pub pending: u64,
    pub retrying: u64,
    /// The error of the newest notification that failed and waits for a retry.
    pub last_error: Option<String>,
}

/// When each break-glass role was last drilled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drill {
    pub target: TargetName,
    pub role: RoleName,
    pub at: OffsetDateTime,
    pub request: RequestId,
}

/// Which requests to list.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    pub requester: Option<UserName>,
    pub target: Option<TargetName>,
    /// Empty means every state. `Expired` (without `Active`) takes in the active grants due by
    /// about now too, whose expiry may have passed before the worker recorded it: the caller
    /// keeps those that ran out ([`Request::ran_out`](warden_domain::Request::ran_out)).
    pub states: Vec<State>,
    /// Only requests older than this one: the next page after a listing that ended there.
    pub before: Option<RequestId>,
    pub limit: usize,
}

/// Most rows one read returns, whatever its `limit` asks: a caller wanting more reads on from
/// where the last read ended.
pub const READ_MAX: usize = 10_000;

/// Which audit events to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub user: Option<UserName>,
    pub target: Option<TargetName>,
    pub request: Option<RequestId>,
    /// Empty means every code.
    pub codes: Vec<Code>,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
    /// Only events with a larger sequence number.
    pub after_seq: Option<u64>,
    pub limit: usize,
}

/// An audit event as stored: with its place in the log and its RFC 6962 leaf hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: u64,
    pub leaf_hash: [u8; 32],
    pub event: Event,
}

/// One audit log leaf: the exact bytes hashed into the Merkle tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub seq: u64,
    /// The event as JSON with its sequence number; the leaf hash is over these bytes.
    pub data: String,
    pub hash: [u8; 32],
}

/// A signed checkpoint of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub size: u64,
    pub root: [u8; 32],
    pub time: OffsetDateTime,
    /// The tree's frontier at `size` (see `warden_audit::Tree::frontier`).
    pub frontier: Vec<[u8; 32]>,
    /// The C2SP signed note.
    pub note: String,
}

/// An API token's record. The token itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub user: UserName,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub revoked: bool,
}

/// A user's login secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserSecrets {
    /// Argon2id PHC string.
    pub password_hash: Option<String>,
    /// Confirmed TOTP secret (sealed by the caller).
    pub totp: Option<String>,
    /// TOTP secret awaiting its first code (sealed by the caller).
    pub totp_pending: Option<String>,
    /// The `password_hash` the config file gave when the server last read it.
    pub config_hash: Option<String>,
    /// The administrator who last set the password ([`Reset::Password`]), who knows it; `None`
    /// for one the user set themselves, the config's, the bootstrap's, and one set before this
    /// was recorded.
    pub password_set_by: Option<UserName>,
}

/// The credentials a sign-in checked, as the store held them when it began: the token it earns
/// is stored only while they are still the user's ([`Store::insert_token`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The password hash the password was checked against.
    pub password_hash: String,
    /// The sealed TOTP secret the code was checked against; `None` when the user had none.
    pub totp: Option<String>,
}

/// A change of a user's credentials that ends everything signed in with the old ones
/// ([`Store::reset_user`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reset {
    /// A new password, which also lifts an offboarding.
    Password {
        /// An argon2id PHC string.
        hash: String,
        /// The administrator who set it, when it is not the user themselves: they know it
        /// ([`UserSecrets::password_set_by`]).
        set_by: Option<UserName>,
    },
    /// The second factor removed, confirmed and pending.
    SecondFactor,
    /// Offboarding: the password disabled, so none matches it until a new one is set.
    Offboarded,
    /// Gone from the directory: every secret of the user forgotten, so that put back later
    /// they are a new user, whose password the config sets.
    Departed,
}

/// A public key registered to a user for logging in to Warden's SSH proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshKey {
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    pub user: UserName,
    /// One OpenSSH public key line, without its comment.
    pub public_key: String,
    pub added_at: OffsetDateTime,
}

/// Durable state. Implementations: [`SqliteStore`].
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Stores a new request with its lease, pickup and events.
    async fn insert_request(&self, r: &Request, change: Change) -> Result<()>;

    /// Saves `r` (and its lease, pickup and events) if the stored version still equals
    /// `r.version`; returns the new version. Fails with [`Error::Conflict`] otherwise, writing
    /// nothing.
    async fn update_request(&self, r: &Request, change: Change) -> Result<u64>;

    /// A grant's lease.
    async fn lease(&self, grant: RequestId) -> Result<Option<Lease>>;

    /// Saves a lease with its events and the notifications it causes.
    async fn update_lease(
        &self,
        lease: &Lease,
        events: Vec<Event>,
        notices: Vec<Outgoing>,
    ) -> Result<()>;

    /// Leases whose next action is due at `now`, oldest first: the `per_target` oldest of each
    /// target, so that a target with many due (one that hangs, say) hides none of another's.
    async fn due_leases(&self, now: OffsetDateTime, per_target: usize) -> Result<Vec<Lease>>;

    /// Of the leases that wait at `now` for their target to answer again (their last attempt
    /// could not reach it), the one due first of each target and connection they were made
    /// through: where to ask whether it answers.
    async fn waiting_for_targets(&self, now: OffsetDateTime) -> Result<Vec<Lease>>;

    /// The target answered at `now` where `answered`'s account is made: the leases made there
    /// that wait for that are due at once, whatever is left of their backoff. Returns how many.
    async fn target_answers(&self, answered: &Lease, now: OffsetDateTime) -> Result<usize>;

    /// The accounts of the leases whose account may still exist, at any target: several
    /// targets may share one database server, and account names, which carry their grant's
    /// id, are unique across targets.
    async fn live_accounts(&self) -> Result<Vec<String>>;

    /// Takes (reads and deletes) a grant's sealed secret; `None` if already taken.
    async fn take_pickup(&self, grant: RequestId, events: Vec<Event>) -> Result<Option<String>>;

    /// A target's sealed admin credential.
    async fn target_credential(&self, target: &TargetName) -> Result<Option<String>>;

    /// Stores a target's sealed admin credential.
    async fn set_target_credential(
        &self,
        target: &TargetName,
        sealed: String,
        events: Vec<Event>,
    ) -> Result<()>;

    /// The users the store holds a secret, an SSH key or a live token of.
    async fn users_with_credentials(&self) -> Result<Vec<UserName>>;

    /// Applies `reset` to `user`, revokes every token of theirs and removes every SSH key
    /// registered to them, with `events`, in one transaction: a sign-in checked against the
    /// credentials of before gets no token after it ([`Store::insert_token`]). `keys` are the
    /// fingerprints of the keys the caller found (and names in `events`): [`Error::Conflict`],
    /// writing nothing, when the user's keys are others by then. Returns how many tokens were
    /// live.
    async fn reset_user(
        &self,
        user: &UserName,
        reset: Reset,
        keys: &[String],
        events: Vec<Event>,
    ) -> Result<usize>;

    /// The users offboarded whose password no administrator has set since.
    async fn offboarded_users(&self) -> Result<Vec<UserName>>;

    async fn request(&self, id: RequestId) -> Result<Option<Request>>;

    /// Newest first.
    async fn requests(&self, filter: RequestFilter) -> Result<Vec<Request>>;

    /// Every request revoked before its expiry that would still be valid at `now`, however
    /// many: the SSH revocation list must name each one.
    async fn revoked_unexpired(&self, now: OffsetDateTime) -> Result<Vec<Request>>;

    /// Active grants past their expiry and pending requests past their deadline at `now`.
    async fn due(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<Request>>;

    /// The earliest expiry, pending deadline or lease action, so workers can sleep until then.
    async fn next_due(&self) -> Result<Option<OffsetDateTime>>;

    /// [`Store::next_due`] without the leases due by `leases_read`: the worker read those as
    /// due then, and a lease whose revocation is under way keeps its past deadline until the
    /// attempt ends, which would hide every later one (another grant's expiry, say).
    async fn next_due_after(&self, leases_read: OffsetDateTime) -> Result<Option<OffsetDateTime>>;

    /// Whether the store takes writes now, for readiness: as the last transaction ended if it
    /// committed in the last seconds or failed in the last half minute, else as a one-row
    /// write of its own ends (an idle server's disk may have filled or gone read-only since
    /// its last write). A write that does not end within 2 s, or a batch under way that long,
    /// is reported as stalled. The error says why it cannot.
    async fn check_writes(&self) -> std::result::Result<(), String>;

    /// Copies everything the write-ahead log holds into the database file and empties the log,
    /// waiting for readers: at a clean stop, so that the database file alone is whole.
    async fn flush_log(&self) -> Result<()>;

    /// Appends events that change no other state.
    async fn append(&self, events: Vec<Event>) -> Result<()>;

    /// Oldest first.
    async fn audit(&self, filter: AuditFilter) -> Result<Vec<StoredEvent>>;
    /// Every event `filter` asks for (its `limit` and `after_seq` aside), read [`READ_MAX`] at a
    /// time; `None` when there are more than `most`: for a whole range or nothing, such as an
    /// export, which must never stop short unsaid.
    async fn audit_whole(
        &self,
        filter: AuditFilter,
        most: usize,
    ) -> Result<Option<Vec<StoredEvent>>> {
        let mut events: Vec<StoredEvent> = Vec::new();
        loop {
            let page = self
                .audit(AuditFilter {
                    after_seq: events.last().map(|e| e.seq),
                    limit: READ_MAX,
                    ..filter.clone()
                })
                .await?;
            let last = page.len() < READ_MAX;
            events.extend(page);
            if events.len() > most {
                return Ok(None);
            }
            if last {
                return Ok(Some(events));
            }
        }
    }

    /// Audit leaves with a sequence number above `after_seq`, oldest first.
    async fn audit_leaves(&self, after_seq: u64, limit: usize) -> Result<Vec<Leaf>>;

    /// The leaf hashes of the events after `after_seq` up to `upto_seq`, in order, for proofs.
    async fn leaf_hashes(&self, after_seq: u64, upto_seq: u64) -> Result<Vec<[u8; 32]>>;

    /// The stored roots of the log's first `count` blocks of events (block `b` holds events
    /// `b·2^h + 1 ..= (b+1)·2^h`, `h` being `warden_audit::merkle::BLOCK_HEIGHT`), in order,
    /// stopping at the first block without one (logs written before blocks were stored have
    /// none).
    async fn block_roots(&self, count: u64) -> Result<Vec<[u8; 32]>>;

    /// Blocks among the first `count` that have no stored root although all their events are
    /// still in the live log, oldest first, at most `limit`: the blocks of a log written before
    /// roots were stored, left for the checkpointer to fill in.
    async fn blocks_without_roots(&self, count: u64, limit: usize) -> Result<Vec<u64>>;

    /// Stores the roots of blocks of events (block number, root) with their search filters,
    /// built from the stored events. A block already stored keeps its own.
    async fn insert_block_roots(&self, blocks: Vec<(u64, [u8; 32])>) -> Result<()>;

    /// The newest checkpoint.
    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>>;

    /// The checkpoint at exactly `size`, if one was made.
    async fn checkpoint(&self, size: u64) -> Result<Option<Checkpoint>>;

    /// Stores a checkpoint, with the roots of the blocks of events it completed (block number,
    /// root). Checkpoints only grow: a smaller or equal size is refused.
    async fn insert_checkpoint(
        &self,
        checkpoint: Checkpoint,
        blocks: Vec<(u64, [u8; 32])>,
    ) -> Result<()>;

    /// The newest checkpoint of at most `size` events.
    async fn checkpoint_at_most(&self, size: u64) -> Result<Option<Checkpoint>>;

    /// The newest checkpoint made before `time`. It was made after every event it covers was
    /// stored, so all of them are older than `time`.
    async fn checkpoint_before(&self, time: OffsetDateTime) -> Result<Option<Checkpoint>>;

    /// The sequence number of the oldest event still in the live log (0 when empty); events
    /// before it were archived.
    async fn first_seq(&self) -> Result<u64>;

    /// Whether event `seq` is still held, in the live log or as archived (its leaf kept, or its
    /// whole block archived): a log whose newest checkpoint's last event is not was cut short.
    async fn holds_leaf(&self, seq: u64) -> Result<bool>;

    /// The sequence number of the newest event in the log (0 when empty).
    async fn last_seq(&self) -> Result<u64>;

    /// The sequence number of the oldest event whose leaf hash the live log holds (0 when
    /// empty): the first of the oldest block not archived whole. Proofs can be given from there.
    async fn first_leaf_hash(&self) -> Result<u64>;

    /// Removes events up to `upto` (sealed into an archive segment by the caller) and appends
    /// `events` saying so, in one transaction. The leaf hashes of the removed events that share
    /// a block with live ones are kept, for proofs about those.
    async fn archive_audit(&self, upto: u64, events: Vec<Event>) -> Result<usize>;

    /// How far export sink `sink` has delivered (0 when it never has).
    async fn sink_cursor(&self, sink: &str) -> Result<u64>;

    /// Records that `sink` delivered everything up to `seq`.
    async fn set_sink_cursor(&self, sink: &str, seq: u64) -> Result<()>;

    /// Stores a token a sign-in earned, with `events`, if the user's password hash and second
    /// factor are still those it `checked`; [`Error::Conflict`], writing nothing, once they
    /// changed (a new password, a reset, an offboarding came in between).
    async fn insert_token(
        &self,
        hash: [u8; 32],
        token: Token,
        checked: Checked,
        events: Vec<Event>,
    ) -> Result<()>;
    async fn token(&self, hash: [u8; 32]) -> Result<Option<Token>>;
    /// Returns whether a live token was revoked.
    async fn revoke_token(&self, hash: [u8; 32], events: Vec<Event>) -> Result<bool>;

    async fn secrets(&self, user: &UserName) -> Result<UserSecrets>;
    /// Sets a password only if the user has none; returns whether it was set.
    async fn init_password(
        &self,
        user: &UserName,
        hash: String,
        events: Vec<Event>,
    ) -> Result<bool>;
    async fn set_totp_pending(
        &self,
        user: &UserName,
        sealed: String,
        events: Vec<Event>,
    ) -> Result<()>;
    /// Promotes the pending TOTP secret to the confirmed one.
    async fn confirm_totp(&self, user: &UserName, events: Vec<Event>) -> Result<()>;
    /// Records `hash` as the `password_hash` the config file gives the user now.
    async fn set_config_hash(&self, user: &UserName, hash: String) -> Result<()>;
    /// Records that TOTP time step `step` was used; returns false if it (or a later one) was
    /// used already, so a code can never be replayed.
    async fn use_totp_step(&self, user: &UserName, step: u64) -> Result<bool>;

    // --- Figures for metrics and the zero-standing-privilege report --------------------------
    // Read-only, cheap grouped counts: the metrics endpoint calls them at every scrape.

    /// How many requests are in each state at `now`, by the approval requirement they carry as
    /// policy wrote it (e.g. `peer(sre) & manager`, `auto`): an active grant past its expiry
    /// counts as expired, recorded or not.
    async fn count_requests(&self, now: OffsetDateTime) -> Result<Vec<(State, String, u64)>>;

    /// How many leases are marked failed (revocation keeps failing; still retried).
    async fn count_failed_leases(&self) -> Result<u64>;

    /// Break-glass grants ever made: real ones and drills. Counted from their postmortems
    /// (every one opens one, and they are kept for good), so the figures hold after the audit
    /// log is archived.
    async fn breakglass_uses(&self) -> Result<BreakGlassUses>;

    /// What the report of `[from, to)` reads, from one snapshot: at most `limit` requests.
    async fn period(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: usize,
    ) -> Result<Period>;

    // --- Notification outbox and break-glass postmortems -----------------------------------
    // Notifications are queued by `Change::notices` (and `update_lease`), in the transaction of
    // the change that causes them; these methods deliver them and read postmortems.

    /// Queued notifications due for delivery at `now`, at most `limit`, but none for the `busy`
    /// sinks (those that can take no more now): each sink's oldest first, then each one's
    /// second, and so on, so that a sink with many waiting takes no other sink's place.
    async fn due_notices(
        &self,
        now: OffsetDateTime,
        limit: usize,
        busy: &[String],
    ) -> Result<Vec<Delivery>>;

    /// When the next queued notification is due, so the dispatcher can sleep until then.
    async fn next_notice_due(&self) -> Result<Option<OffsetDateTime>>;

    /// Makes the queued notifications of `sinks` due by `now`; returns how many were waiting
    /// longer. A start tries at once those a sink configured again can take, or whose backoff
    /// began before it, rather than show an error of the last run until their retry.
    async fn notices_due_by(&self, sinks: &[String], now: OffsetDateTime) -> Result<usize>;

    /// Marks notification `id` done with for `sink`: delivered, or, when `skipped`, dropped
    /// unsent because it no longer applied; with `events`.
    async fn notice_delivered(
        &self,
        id: uuid::Uuid,
        sink: &str,
        now: OffsetDateTime,
        skipped: bool,
        events: Vec<Event>,
    ) -> Result<()>;

    /// Records a failed delivery and when to try again, with `events`, and whom the attempts
    /// so far `reached` (replacing what was recorded): the retry is sent to the rest alone.
    #[allow(clippy::too_many_arguments)]
    async fn notice_failed(
        &self,
        id: uuid::Uuid,
        sink: &str,
        attempts: u32,
        retry_at: OffsetDateTime,
        error: &str,
        reached: &Reached,
        events: Vec<Event>,
    ) -> Result<()>;

    /// Pending, retrying and delivered notifications.
    async fn outbox_status(&self) -> Result<OutboxStatus>;

    /// One postmortem, by its grant's id.
    async fn postmortem(&self, request: RequestId) -> Result<Option<Postmortem>>;

    /// Postmortems, newest first; only open ones with `open_only`, only those of `requester`
    /// when one is given.
    async fn postmortems(
        &self,
        open_only: bool,
        requester: Option<&UserName>,
        before: Option<RequestId>,
        limit: usize,
    ) -> Result<Vec<Postmortem>>;

    /// Saves a closed postmortem with its events, if it was still open; [`Error::Conflict`]
    /// otherwise.
    async fn close_postmortem(&self, pm: &Postmortem, events: Vec<Event>) -> Result<()>;

    /// How many postmortems are open.
    async fn open_postmortems(&self) -> Result<u64>;

    /// The latest drill of every role that was ever drilled.
    async fn last_drills(&self) -> Result<Vec<Drill>>;

    // --- The SSH proxy: users' public keys and pinned upstream host keys. ---

    /// Registers a key; [`Error::Conflict`] if its fingerprint is registered already (to
    /// anyone), writing nothing.
    async fn add_ssh_key(&self, key: &SshKey, events: Vec<Event>) -> Result<()>;
    /// Removes `user`'s key `fingerprint`; returns whether it existed (events are written
    /// only then).
    async fn remove_ssh_key(
        &self,
        user: &UserName,
        fingerprint: &str,
        events: Vec<Event>,
    ) -> Result<bool>;
    /// `user`'s keys, oldest first.
    async fn ssh_keys(&self, user: &UserName) -> Result<Vec<SshKey>>;
    /// The key with `fingerprint`, whoever registered it.
    async fn ssh_key(&self, fingerprint: &str) -> Result<Option<SshKey>>;
    /// The grant of `requester` whose certificate for the SSH key `fingerprint` (`SHA256:…`)
    /// ends last, and when it ends; read through an index, however many requests they made.
    async fn key_certified_last(
        &self,
        requester: &UserName,
        fingerprint: &str,
    ) -> Result<Option<(RequestId, OffsetDateTime)>>;
    /// Pins a target's upstream host key (an OpenSSH public key line).
    async fn set_host_key(
        &self,
        target: &TargetName,
        key: String,
        events: Vec<Event>,
    ) -> Result<()>;
    /// A target's pinned host key.
    async fn host_key(&self, target: &TargetName) -> Result<Option<String>>;
    /// Appends a session's first events, `started` (its `session.started`) among them, and
    /// keeps `started` as the session's until [`Store::session_ended`]: a session a crash cut
    /// is found, and its end recorded, at the next start.
    async fn session_started(&self, started: &Event, events: Vec<Event>) -> Result<()>;
    /// Appends a session's last events and forgets the session `id` as live.
    async fn session_ended(&self, id: &str, events: Vec<Event>) -> Result<()>;
    /// The `session.started` events of sessions never ended, oldest first.
    async fn live_sessions(&self) -> Result<Vec<Event>>;
    /// Session `id`'s `session.ended` event (which holds its recording's digest), if the log
    /// still holds one.
    async fn session_end(&self, id: &str) -> Result<Option<StoredEvent>>;
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn a_full_disk_is_told_from_other_failures() {
        let full = Error::backend("commit failed: database or disk is full".into());
        assert!(matches!(full, Error::Full(_)), "{full}");
        let nospace = Error::backend("writing: No space left on device (os error 28)".into());
        assert!(matches!(nospace, Error::Full(_)), "{nospace}");
        let other = Error::backend("commit failed: disk I/O error".into());
        assert!(matches!(other, Error::Backend(_)), "{other}");
    }
}
