//! Authentication: argon2id passwords, TOTP second factors, and short-lived API tokens.
//!
//! Tokens are 256-bit random strings handed out once; only their SHA-256 is stored, so a stolen
//! database yields no usable token. TOTP codes are accepted once: the last used time step is
//! stored and a code for it or an earlier step is refused, so a code seen over a shoulder
//! cannot be replayed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use totp_rs::{Secret, Totp};
use warden_domain::audit::{Actor, Code, Event};
use warden_domain::lockout::{Kind, Lockout};
use warden_domain::{User, UserName};
use warden_store::{AuditFilter, Checked, Reset, Token};

use crate::state::{App, now};

/// Prefix of Warden API tokens, so secret scanners can recognise them.
pub const TOKEN_PREFIX: &str = "wdn_";

/// Why authentication failed. Messages are safe to show: they never say which factor was wrong.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "invalid user name, password or TOTP code (five wrong ones in a row lock a user's sign-in for 15 minutes)"
    )]
    BadCredentials,
    #[error(
        "the password is right, and this user has a second factor: pass the code your authenticator shows as `totp` (`--totp CODE` from the CLI)"
    )]
    TotpRequired,
    #[error(
        "missing, repeated or malformed Authorization header: send one, `Authorization: Bearer TOKEN`, with the token `warden login` gives"
    )]
    NoToken,
    #[error("the API token is invalid, expired or revoked: log in again with `warden login`")]
    BadToken,
    #[error("{0}")]
    Mfa(String),
    /// A confirmation with no enrolment begun: nothing to confirm, whatever the code.
    #[error("no MFA enrolment in progress: run `warden mfa enroll` first")]
    NoEnrolment,
    /// A TOTP code was given and is wrong (or used already, or no code at all in shape): told
    /// apart from a missing one, for whoever watches the audit log for guessing.
    #[error("{0}")]
    WrongCode(String),
    /// Only step-ups are told so (a locked sign-in is answered as a wrong password is), and
    /// only a step-up's lock refuses them.
    #[error(
        "too many wrong TOTP codes (or current passwords, to change one's own) in a row at step-up, from a signed-in session (which suggests a stolen token): this user's step-ups and sign-ins are refused until {}",
        warden_domain::rfc3339(*.0)
    )]
    Locked(OffsetDateTime),
    #[error(
        "too many failed sign-ins or invalid tokens from your address: try again after {}",
        warden_domain::rfc3339(*.0)
    )]
    Throttled(OffsetDateTime),
    /// Refused unchecked ([`crate::throttle::SignInQueue`]): the address has as many sign-ins
    /// under way as one may; another may be sent after the seconds given.
    #[error(
        "too many sign-ins from your address are under way at once (at most {}): this one was not checked and counts as no failure; wait for their answers, then sign in again",
        crate::throttle::PER_ADDRESS
    )]
    SignInsFromAddress(u64),
    /// Refused unchecked ([`crate::throttle::SignInQueue`]): too many sign-ins wait for a
    /// password check, or this one waited too long; it may be sent again after the seconds
    /// given.
    #[error(
        "the server has too many sign-ins waiting for a password check: this one was not checked and counts as no failure; sign in again in {0} seconds"
    )]
    SignInsBusy(u64),
    #[error("{0}")]
    Store(#[from] warden_store::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

/// A name someone typed at sign-in as the append-only record keeps it: as typed when it is one
/// of the directory's names (in any letter case: `Alice` for `alice`), else only its length.
/// What names no user is most often a password typed into the wrong field, which the log would
/// otherwise keep for ever, and a lower-case passphrase reads like a name as well as any; it
/// also holds nothing that could forge a log line.
fn claimed(name: &str, in_directory: impl Fn(&UserName) -> bool) -> String {
    let known = name
        .to_ascii_lowercase()
        .parse::<UserName>()
        .is_ok_and(|n| in_directory(&n));
    if known {
        name.to_owned()
    } else {
        format!("(no such user, {} characters)", name.chars().count())
    }
}

/// The second factor of a sign-in, checked once its password passed.
enum Factor<'a> {
    /// The user has none.
    None,
    /// The user has one, and the sign-in brought no code: it is asked for.
    Missing,
    /// The user's factor, and the code the sign-in brought.
    Given(Totp, &'a str),
}

/// Which of a user's TOTP secrets a code is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WhichSecret {
    /// The confirmed one.
    InUse,
    /// A new one, pending its first code.
    Confirming,
}

/// Hashes a password, in its normal form ([`warden_domain::password::normalized`]), with
/// argon2id and a random salt.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let password = warden_domain::password::normalized(password);
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h: PasswordHash| h.to_string())
        .map_err(|e| AuthError::Internal(e.to_string()))
}

/// The least memory (KiB) and passes an initial password's hash may take: those of the hashes
/// Warden makes (OWASP's minimum for argon2id), so a hash made elsewhere is no weaker.
const HASH_MIN_COST: (u32, u32) = (19 * 1024, 2);
/// The most memory (KiB), passes and lanes it may take: each sign-in pays for them, and a
/// hash that asks for gigabytes would be a way to exhaust the server.
const HASH_MAX_COST: (u32, u32, u32) = (256 * 1024, 16, 8);

/// What is wrong with `phc` as a config's initial password hash, if anything: it must be an
/// argon2id hash as `warden hash-password` writes it (never the password itself), with
/// parameters argon2 accepts, as costly as Warden's own and not so costly that sign-ins suffer.
pub(crate) fn argon2id_hash_problem(phc: &str) -> Option<String> {
    let Ok(hash) = PasswordHash::new(phc) else {
        return Some("it is no PHC hash string".into());
    };
    if hash.algorithm.as_str() != "argon2id" {
        return Some(format!("it is a {} hash, not argon2id", hash.algorithm));
    }
    let params = match argon2::Params::try_from(&hash) {
        Ok(p) => p,
        Err(e) => return Some(format!("its parameters are not valid argon2 ones ({e})")),
    };
    let (m, t, p) = (params.m_cost(), params.t_cost(), params.p_cost());
    let ((min_m, min_t), (max_m, max_t, max_p)) = (HASH_MIN_COST, HASH_MAX_COST);
    (m < min_m || t < min_t || m > max_m || t > max_t || p > max_p).then(|| {
        format!(
            "its cost m={m},t={t},p={p} is outside m={min_m}..={max_m} (KiB), t={min_t}..={max_t}, p=1..={max_p}"
        )
    })
}

/// Whether `password` matches the stored hash `phc`. A name with no password that signs in
/// (`None`: no such user, or none set; or a stored hash that is no PHC string, an offboarded
/// user's disabled password) matches nothing, after the same work against `dummy`
/// ([`SignInDummy`]), so the time of a refusal tells none of them from a wrong password.
///
/// The password is tried in its normal form ([`warden_domain::password::normalized`]), as
/// hashes are made, and also as typed when that differs, for a hash made from it before
/// passwords were normalised; so is the dummy, so that the time depends on the input only.
fn verify_password(password: &str, phc: Option<&str>, dummy: &PasswordHash) -> bool {
    let stored = phc.and_then(|phc| PasswordHash::new(phc).ok());
    let hash = stored.as_ref().unwrap_or(dummy);
    let normal = warden_domain::password::normalized(password);
    let mut forms = std::iter::once(&*normal).chain((*normal != *password).then_some(password));
    let matched = forms.any(|form| {
        Argon2::default()
            .verify_password(form.as_bytes(), hash)
            .is_ok()
    });
    matched && stored.is_some()
}

/// The argon2 work a check against `hash` costs: its memory blocks times its passes (lanes
/// share the memory). `None` for a hash argon2 cannot check.
fn hash_cost(hash: &PasswordHash) -> Option<u64> {
    let params = argon2::Params::try_from(hash).ok()?;
    Some(u64::from(params.m_cost()) * u64::from(params.t_cost()))
}

/// A hash no password matches with the algorithm, version and parameters of the costliest of
/// `hashes` that argon2 can check (the first of those that cost the most), or of the hashes
/// Warden makes when there is none: a random salt and output.
fn dummy_like<'a>(hashes: impl IntoIterator<Item = &'a str>) -> Result<PasswordHash, AuthError> {
    let mut costliest: Option<(u64, PasswordHash)> = None;
    for hash in hashes.into_iter().filter_map(|h| PasswordHash::new(h).ok()) {
        let Some(cost) = hash_cost(&hash) else {
            continue;
        };
        if costliest.as_ref().is_none_or(|(most, _)| cost > *most) {
            costliest = Some((cost, hash));
        }
    }
    let internal = |e: argon2::password_hash::phc::Error| AuthError::Internal(e.to_string());
    let mut dummy = match costliest {
        Some((_, hash)) => hash,
        None => PasswordHash {
            algorithm: argon2::Algorithm::Argon2id.ident(),
            version: Some(argon2::Version::V0x13.into()),
            params: (&argon2::Params::default())
                .try_into()
                .map_err(|e: argon2::password_hash::Error| AuthError::Internal(e.to_string()))?,
            salt: None,
            hash: None,
        },
    };
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    dummy.salt = Some(argon2::password_hash::phc::Salt::new(&salt).map_err(internal)?);
    let len = dummy.hash.as_ref().map_or(32, |h| h.len());
    let mut output = vec![0u8; len];
    rand::rng().fill_bytes(&mut output);
    dummy.hash = Some(argon2::password_hash::phc::Output::new(&output).map_err(internal)?);
    Ok(dummy)
}

/// What the password of a sign-in is checked against when its name has none that signs in
/// (no such user, none set, or one disabled by an offboarding): a hash as costly as the
/// costliest stored for the directory's users, so that a name is not told from an unknown one
/// by the time a wrong password takes, even when a config's `password_hash` costs more than the
/// hashes Warden makes. Made from the stored hashes (those are what sign-ins check) at the
/// first such sign-in, and again at the first after any of them changed ([`SignInDummy::forget`]:
/// a password set, one disabled by an offboarding, a departed user's forgotten), so that it
/// follows the costliest at all times: a costly config hash replaced by a cheaper password
/// must not leave unknown names slower than known ones, nor a costlier one leave them quicker.
#[derive(Debug, Default)]
pub struct SignInDummy {
    /// The dummy, with the count of [`Self::changes`] it was made after.
    made: tokio::sync::Mutex<Option<(u64, PasswordHash)>>,
    /// How many times a stored password hash changed.
    changes: std::sync::atomic::AtomicU64,
}

impl SignInDummy {
    /// Says that a stored password hash changed (once the change is written): the next
    /// check makes the dummy anew.
    pub(crate) fn forget(&self) {
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// When a lockout recorded in the audit log ends: RFC 3339 text, or Unix seconds as earlier
/// versions wrote it.
fn lock_end(until: &serde_json::Value) -> Option<OffsetDateTime> {
    match until {
        serde_json::Value::String(t) => {
            OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        }
        v => v
            .as_i64()
            .and_then(|u| OffsetDateTime::from_unix_timestamp(u).ok()),
    }
}

/// A fresh random password for the bootstrap admin.
pub fn random_password() -> String {
    let mut b = [0u8; 18];
    rand::rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// SHA-256 of a token, the form in which tokens are stored.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn totp_for(user: &UserName, secret: Vec<u8>) -> Result<Totp, AuthError> {
    totp_rs::Builder::new()
        .with_secret(Secret::from(secret))
        .with_issuer(Some("Warden"))
        .with_account_name(user.as_str())
        .build()
        .map_err(|e| AuthError::Internal(format!("TOTP setup: {e}")))
}

/// Most tokens remembered by [`TokenCache`]; past this the cache forgets its live entries.
const TOKEN_CACHE_MAX: usize = 10_000;

/// Live tokens already checked against the store, by hash. Only this process revokes tokens
/// (logout, offboarding, new credentials), and it tells the cache *before* writing the
/// revocation: a lookup that read the store just before the write must not cache the token
/// live afterwards. So a logout leaves a revoked entry that a late `put` cannot replace, and a
/// user's sign-out bars every token they had from use; neither is forgotten when the cache
/// fills. A sign-out is told again once written ([`App::reset_user`]): a sign-in that finished
/// between the two stored its token before the write, which revoked it. Expiry is checked on
/// every use.
///
/// It also counts each user's changes in flight (API calls that may write), so offboarding
/// can wait for those that passed authentication before it began: a change is counted only
/// if its token was not barred meanwhile, checked under the lock that bars it.
#[derive(Debug, Default)]
pub struct TokenCache {
    map: Arc<Mutex<Cached>>,
}

#[derive(Debug, Default)]
struct Cached {
    tokens: HashMap<[u8; 32], Token>,
    /// Users signed out (offboarded, or given new credentials), and when: their tokens created
    /// until then are never used.
    signed_out: HashMap<UserName, OffsetDateTime>,
    /// Changes in flight by user; a user with none has no entry.
    changing: HashMap<UserName, usize>,
    /// Ended tokens still sent, by hash: when a use was last put on the record, and how many
    /// uses since were not ([`TokenCache::record_stale_use`]).
    stale_uses: HashMap<[u8; 32], (OffsetDateTime, u64)>,
}

/// How often the use of one ended token is put on the record: a client that keeps sending a
/// revoked or expired token (a departed user's script) would otherwise write an audit event
/// per call, at the speed of its loop, for as long as the token's record is kept.
const STALE_USE_RECORDED_EVERY: time::Duration = time::Duration::MINUTE;

/// Most ended tokens whose last recorded use is remembered; past it, those recorded longer ago
/// than [`STALE_USE_RECORDED_EVERY`] are forgotten, and if none was, every use is recorded.
const STALE_TOKENS_REMEMBERED: usize = 4096;

impl Cached {
    fn barred(&self, token: &Token) -> bool {
        self.signed_out
            .get(&token.user)
            .is_some_and(|at| token.created_at <= *at)
    }
}

fn lock(map: &Mutex<Cached>) -> MutexGuard<'_, Cached> {
    map.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One API call of a user that may change state, counted from its authentication until it
/// is dropped (see [`App::authenticate`]).
#[derive(Debug)]
pub struct ChangeInFlight {
    map: Arc<Mutex<Cached>>,
    user: UserName,
}

impl Drop for ChangeInFlight {
    fn drop(&mut self) {
        let mut c = lock(&self.map);
        if let Some(n) = c.changing.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                c.changing.remove(&self.user);
            }
        }
    }
}

impl TokenCache {
    fn cached(&self) -> MutexGuard<'_, Cached> {
        lock(&self.map)
    }

    /// Whether a use at `t` of the ended token whose hash is `hash` goes on the record, with
    /// how many of its uses since the last recorded one did not; `None` within
    /// [`STALE_USE_RECORDED_EVERY`] of that one.
    fn record_stale_use(&self, hash: [u8; 32], t: OffsetDateTime) -> Option<u64> {
        let mut c = self.cached();
        if c.stale_uses.len() >= STALE_TOKENS_REMEMBERED && !c.stale_uses.contains_key(&hash) {
            c.stale_uses
                .retain(|_, (at, _)| t - *at < STALE_USE_RECORDED_EVERY);
            if c.stale_uses.len() >= STALE_TOKENS_REMEMBERED {
                return Some(0);
            }
        }
        match c.stale_uses.get_mut(&hash) {
            Some((at, unrecorded)) if t - *at < STALE_USE_RECORDED_EVERY => {
                *unrecorded += 1;
                None
            }
            Some((at, unrecorded)) => {
                *at = t;
                Some(std::mem::take(unrecorded))
            }
            None => {
                c.stale_uses.insert(hash, (t, 0));
                Some(0)
            }
        }
    }

    /// Counts a change by the holder of `token` until the result is dropped; `None` when the
    /// token's user has been signed out since the token was made.
    fn begin_change(&self, token: &Token) -> Option<ChangeInFlight> {
        let mut c = self.cached();
        if c.barred(token) {
            return None;
        }
        *c.changing.entry(token.user.clone()).or_default() += 1;
        Some(ChangeInFlight {
            map: Arc::clone(&self.map),
            user: token.user.clone(),
        })
    }

    /// How many changes by `user` are in flight.
    pub fn changes_in_flight(&self, user: &UserName) -> usize {
        self.cached().changing.get(user).copied().unwrap_or(0)
    }

    fn get(&self, hash: &[u8; 32]) -> Option<Token> {
        self.cached()
            .tokens
            .get(hash)
            .filter(|t| !t.revoked)
            .cloned()
    }

    /// Whether `token`'s user has been signed out since it was made.
    fn barred(&self, token: &Token) -> bool {
        self.cached().barred(token)
    }

    /// Whether `user` has been signed out (offboarded, or given new credentials) at `at` or
    /// since: a token that passed authentication before `at` no longer would.
    pub(crate) fn signed_out_since(&self, user: &UserName, at: OffsetDateTime) -> bool {
        self.cached()
            .signed_out
            .get(user)
            .is_some_and(|out| *out >= at)
    }

    fn put(&self, hash: [u8; 32], token: Token) {
        let mut c = self.cached();
        if c.barred(&token) {
            return;
        }
        if c.tokens.len() >= TOKEN_CACHE_MAX {
            c.tokens.retain(|_, t| t.revoked);
            if c.tokens.len() >= TOKEN_CACHE_MAX {
                // Ten thousand logouts since the last time: older markers have long served.
                c.tokens.clear();
            }
        }
        c.tokens.entry(hash).or_insert(token);
    }

    /// Bars every token of `user` created until `at` from use (a sign-out), and marks those
    /// cached revoked.
    fn sign_out(&self, user: &UserName, at: OffsetDateTime) {
        let mut c = self.cached();
        let since = c.signed_out.entry(user.clone()).or_insert(at);
        *since = (*since).max(at);
        for t in c.tokens.values_mut().filter(|t| &t.user == user) {
            t.revoked = true;
        }
    }

    fn mark_revoked(&self, hash: [u8; 32], token: Token) {
        self.cached().tokens.insert(
            hash,
            Token {
                revoked: true,
                ..token
            },
        );
    }
}

/// A caller resolved from their bearer token.
#[derive(Debug)]
pub struct Authenticated {
    pub user: User,
    pub token: Token,
    /// Set for a change: counts it in flight while held.
    pub in_flight: Option<ChangeInFlight>,
}

/// Each user's runs of wrong passwords and TOTP codes, at sign-in and at step-up apart
/// ([`Lockout`]). Kept in memory, holding directory users only: a restart forgets runs that
/// locked no one, and reads the lockouts in force, with their kind, back from the audit log
/// ([`App::restore_lockouts`]).
#[derive(Debug, Default)]
pub struct Lockouts {
    map: std::sync::Mutex<std::collections::HashMap<UserName, Lockout>>,
}

impl Lockouts {
    fn runs(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<UserName, Lockout>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The end of `user`'s lockout in force at `now`, of either kind (the one that ends last).
    fn locked_until(&self, user: &UserName, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.refusing(user, Kind::SignIn, now)
            .map(|(_, until)| until)
    }

    /// The lock that refuses `user` a check of `kind` at `now`, with its own kind.
    fn refusing(
        &self,
        user: &UserName,
        kind: Kind,
        now: OffsetDateTime,
    ) -> Option<(Kind, OffsetDateTime)> {
        self.runs().get(user).and_then(|l| l.refusing(kind, now))
    }

    fn failed(&self, user: &UserName, kind: Kind, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.runs()
            .entry(user.clone())
            .or_default()
            .failed(kind, now)
    }

    /// A right answer to a check of `kind`: ends that run of `user`'s wrong ones.
    fn succeeded(&self, user: &UserName, kind: Kind) {
        let mut runs = self.runs();
        if let Some(l) = runs.get_mut(user) {
            l.succeeded(kind);
            if *l == Lockout::default() {
                runs.remove(user);
            }
        }
    }

    /// Ends `user`'s runs and locks of both kinds: an administrator lifting a lock.
    fn clear(&self, user: &UserName) {
        self.runs().remove(user);
    }

    fn restore(&self, user: UserName, lockout: Lockout) {
        self.runs().insert(user, lockout);
    }

    /// The locks in force at `now`, each with its user and kind, by name.
    fn locks(&self, now: OffsetDateTime) -> Vec<(UserName, Kind, OffsetDateTime)> {
        let mut locks: Vec<_> = self
            .runs()
            .iter()
            .flat_map(|(user, l)| {
                l.locks(now)
                    .into_iter()
                    .map(|(kind, until)| (user.clone(), kind, until))
            })
            .collect();
        locks.sort();
        locks
    }
}

/// Audit events read at a time when lockouts are restored at start.
const RESTORE_PAGE: usize = 1000;

/// Times [`App::reset_user`] reads a user's SSH keys again when one was registered meanwhile.
const RESET_TRIES: usize = 5;

/// What ended with a user's credentials ([`App::reset_user`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signed {
    /// Live tokens revoked.
    pub tokens: usize,
    /// SSH keys removed.
    pub ssh_keys: usize,
    /// Live SSH sessions ended.
    pub sessions: usize,
}

/// The `auth.tokens_revoked` of an administrator's (`actor`) change of `user`'s credentials.
fn signed_out(actor: &Actor, user: &UserName, why: &str, at: OffsetDateTime) -> Event {
    Event::new(Code::TokensRevoked, actor.clone(), at)
        .details(serde_json::json!({ "user": user, "why": why }))
}

/// When an administrator last gave users new credentials ([`App::credential_resets`]).
#[derive(Debug, Default)]
pub(crate) struct CredentialResets {
    /// A password set by another user, by user.
    pub password: HashMap<UserName, OffsetDateTime>,
    /// A reset of the second factor, by user.
    pub second_factor: HashMap<UserName, OffsetDateTime>,
}

/// A token just issued: shown to the user once.
#[derive(Debug)]
pub struct Issued {
    pub token: String,
    pub expires_at: OffsetDateTime,
}

impl App {
    /// Locks again, at start, the users a lockout still held when the server stopped, so a
    /// restart is no way around one: the `auth.user_locked` events of the last
    /// [`LOCKOUT`](warden_domain::lockout::LOCKOUT) (or, once an archive sealed them, the
    /// lockouts its `audit.segment_archived` event lists), less those a new password, a reset of
    /// the second factor or an administrator's unlock lifted since. Each lock keeps its kind
    /// ([`Kind`]): one recorded without it refuses every check, as all did before.
    /// Only the log's tail is read, from the newest checkpoint made before that window. Users
    /// no longer in the directory are left out: gone, they have no sign-in to lock (put back,
    /// they are locked again if the log still says so, unless given a password since).
    /// Returns how many users are locked.
    pub async fn restore_lockouts(&self) -> Result<usize, AuthError> {
        let t = now();
        let since = t - warden_domain::lockout::LOCKOUT;
        let after_seq = self.store.checkpoint_before(since).await?.map(|c| c.size);
        let mut locked: HashMap<UserName, Lockout> = HashMap::new();
        let codes = [
            Code::UserLocked,
            Code::PasswordSet,
            Code::UserUnlocked,
            Code::MfaReset,
            Code::SegmentArchived,
        ];
        self.each_audited(&codes, since, after_seq, |e| {
            if e.code == Code::SegmentArchived {
                // Lockouts whose events the archive sealed.
                for lock in e.details["locks"].as_array().into_iter().flatten() {
                    if let (Some(user), Some(until)) = (
                        lock["user"]
                            .as_str()
                            .and_then(|u| u.parse::<UserName>().ok()),
                        lock_end(&lock["until"]).filter(|until| *until > t),
                    ) {
                        let kind = Kind::recorded(lock["kind"].as_str());
                        locked.entry(user).or_default().lock(kind, until);
                    }
                }
                return;
            }
            let Some(user) = e.details["user"]
                .as_str()
                .and_then(|u| u.parse::<UserName>().ok())
            else {
                return;
            };
            if e.code != Code::UserLocked {
                locked.remove(&user);
            } else if let Some(until) = lock_end(&e.details["until"]).filter(|until| *until > t) {
                // Without its kind, written by a version whose locks refused every check.
                let kind = Kind::recorded(e.details["kind"].as_str());
                locked.entry(user).or_default().lock(kind, until);
            }
        })
        .await?;
        locked.retain(|user, _| self.user(user).is_some());
        let count = locked.len();
        for (user, lockout) in locked {
            self.lockouts.restore(user, lockout);
        }
        Ok(count)
    }

    async fn user_totp(&self, user: &UserName, pending: bool) -> Result<Option<Totp>, AuthError> {
        let secrets = self.store.secrets(user).await?;
        let sealed = if pending {
            secrets.totp_pending
        } else {
            secrets.totp
        };
        self.open_totp(user, sealed.as_deref())
    }

    /// `user`'s TOTP secret `sealed`, as stored, ready to check codes with.
    fn open_totp(&self, user: &UserName, sealed: Option<&str>) -> Result<Option<Totp>, AuthError> {
        sealed
            .map(|s| {
                let raw = self
                    .sealer
                    .open(s)
                    .map_err(|e| AuthError::Internal(e.to_string()))?;
                totp_for(user, raw)
            })
            .transpose()
    }

    /// Runs argon2id work (a hash or a check) on the blocking pool, as many at once as
    /// [`App::hashing`] allows. `gate` is asked once a slot is free and can refuse the work:
    /// sign-ins sent all at once pass every check made on arrival before any of them has
    /// failed, so the address's budget is checked again right before the hash.
    async fn argon2<R: Send + 'static>(
        &self,
        gate: impl FnOnce() -> Result<(), AuthError>,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, AuthError> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        gate()?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))
    }

    /// [`App::argon2`] for a sign-in, once its turn among those waiting for a hash comes
    /// ([`crate::throttle::SignInQueue`]), from `place`: refused unchecked when it waited too
    /// long or gave its place up. Other argon2 work is a signed-in user's (a password set, one's
    /// own checked at its change) and waits for a hashing slot only, ahead of queued sign-ins.
    async fn argon2_in_turn<R: Send + 'static>(
        &self,
        place: crate::throttle::Waiting<'_>,
        gate: impl FnOnce() -> Result<(), AuthError>,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, AuthError> {
        let _turn = self.sign_in_turn(place).await?;
        self.argon2(gate, work).await
    }

    /// Checks a TOTP code for `user`, sent from `source` at a check of `kind` (a sign-in or a
    /// step-up), and burns its time step. False for a wrong or reused code.
    async fn check_code(
        &self,
        user: &UserName,
        totp: &Totp,
        code: &str,
        kind: Kind,
        source: Option<&str>,
    ) -> Result<bool, AuthError> {
        self.check_code_of(user, totp, code, WhichSecret::InUse, kind, source)
            .await
    }

    /// [`App::check_code`] for `secret`: the time step a code burns is the user's, shared by
    /// their secrets, and the first code of a new one, being confirmed, may come from the step
    /// the old one just used (to replace it); it is no replay, and still burns the step.
    /// Refused while a lock refuses checks of `kind`: at a step-up, only one begun by wrong
    /// codes at step-ups, so that a user whom others keep from signing in can still step up
    /// (break glass) with the session they have.
    async fn check_code_of(
        &self,
        user: &UserName,
        totp: &Totp,
        code: &str,
        secret: WhichSecret,
        kind: Kind,
        source: Option<&str>,
    ) -> Result<bool, AuthError> {
        let t = now();
        if let Some((_, until)) = self.lockouts.refusing(user, kind, t) {
            return Err(AuthError::Locked(until));
        }
        let (ok, replayed) = match u64::try_from(t.unix_timestamp())
            .ok()
            .and_then(|unix| totp.check(code.trim(), unix))
        {
            Some(step) => {
                let fresh = self.store.use_totp_step(user, step).await?;
                (fresh || secret == WhichSecret::Confirming, !fresh)
            }
            None => (false, false),
        };
        // A right code sent again (a double submit, a retried script) is refused but guesses
        // nothing: only wrong codes count towards the lockout. Nor does a code of a secret
        // being confirmed, which whoever confirms it was just shown: a wrong one guesses at
        // nothing, and a right one proves no more than the token did.
        if secret == WhichSecret::InUse && (ok || !replayed) {
            self.count(user, ok, kind, t, source).await?;
        }
        Ok(ok)
    }

    /// Records a check of `user`'s last factor at a check of `kind`: a right answer ends their
    /// run of wrong ones of that kind, and the wrong answer that locks them is audited
    /// ([`App::audit_lock`]). A wrong TOTP code's refusal is stored by its caller, after the
    /// lock.
    async fn count(
        &self,
        user: &UserName,
        ok: bool,
        kind: Kind,
        t: OffsetDateTime,
        source: Option<&str>,
    ) -> Result<(), AuthError> {
        if ok {
            self.lockouts.succeeded(user, kind);
            return Ok(());
        }
        if let Some(until) = self.lockouts.failed(user, kind, t) {
            self.audit_lock(user, kind, until, t, source).await?;
        }
        Ok(())
    }

    /// Audits the lockout of `user`'s checks of `kind` (and what it refuses) until `until`,
    /// which the wrong answer from `source` at `t` began: its kind is read back after a
    /// restart.
    async fn audit_lock(
        &self,
        user: &UserName,
        kind: Kind,
        until: OffsetDateTime,
        t: OffsetDateTime,
        source: Option<&str>,
    ) -> Result<(), AuthError> {
        let event = Event::new(Code::UserLocked, Actor::system(), t).details(serde_json::json!({
            "user": user,
            "failures": warden_domain::lockout::MAX_FAILURES,
            "until": warden_domain::rfc3339(until),
            "kind": kind.as_str(),
            "refuses": kind.refuses(),
            "last_failure_from": source,
        }));
        self.store.append(vec![event]).await?;
        Ok(())
    }

    /// Whether `user` has a confirmed second factor.
    pub async fn mfa_enrolled(&self, user: &UserName) -> Result<bool, AuthError> {
        Ok(self.store.secrets(user).await?.totp.is_some())
    }

    /// Verifies a fresh TOTP code for MFA step-up, sent from `source`.
    /// `Ok(false)` when no code was given; a wrong or malformed code is an error saying which.
    pub async fn step_up(
        &self,
        user: &UserName,
        code: Option<&str>,
        source: Option<&str>,
    ) -> Result<bool, AuthError> {
        let Some(totp) = self.user_totp(user, false).await? else {
            return Err(AuthError::Mfa(
                "this action requires MFA step-up, and you have no second factor: enrol one with `warden mfa enroll` and `warden mfa confirm CODE`, then pass the code it shows as `totp` (`--totp CODE` from the CLI)"
                    .into(),
            ));
        };
        let Some(code) = code else { return Ok(false) };
        if self
            .check_code(user, &totp, code, Kind::StepUp, source)
            .await?
        {
            return Ok(true);
        }
        let digits = code.trim();
        let shaped = digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit());
        Err(AuthError::WrongCode(if shaped {
            "the TOTP code is wrong, or was used already (each code works once): pass the one your authenticator shows now".into()
        } else {
            "a TOTP code is the 6 digits your authenticator shows".into()
        }))
    }

    /// Exchanges a password (and a TOTP code when enrolled) for an API token.
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        code: Option<&str>,
        source: Option<String>,
    ) -> Result<Issued, AuthError> {
        let refusal = |code: &str, why: &str| {
            Event::new(
                Code::LoginFailed,
                Actor {
                    user: None,
                    claimed: Some(claimed(name, |n| self.user(n).is_some())),
                    source: source.clone(),
                },
                now(),
            )
            .denied(code, why)
        };
        let fail = |why: &str| refusal("bad_credentials", why);
        // An address that has spent its failures is refused at once, without queueing for a
        // hashing slot (and looked at again once it has one: see `argon2`).
        self.check_source(source.as_deref())?;
        // A place among the sign-ins waiting for a hash, taken before the name is looked at so
        // that the queue treats every name alike, or a refusal at once, unchecked.
        let place = self.sign_in_place(source.as_deref())?;
        let user = name
            .parse::<UserName>()
            .ok()
            .and_then(|n| self.user(&n).cloned());
        let t = now();
        let secrets = match &user {
            Some(u) => self.store.secrets(&u.name).await?,
            None => Default::default(),
        };
        // A user with a second factor who sent no code is asked for it only once the password
        // is known to be right: a wrong one is answered as any wrong password is (counted
        // towards the lockout and the address's budget), so the answer tells no one who has a
        // factor without their password. Either way one password check is made, so the time of
        // the answer tells no more.
        let factor = match (&user, secrets.totp.as_deref(), code) {
            (Some(u), Some(sealed), Some(code)) => self
                .open_totp(&u.name, Some(sealed))?
                .map_or(Factor::None, |totp| Factor::Given(totp, code)),
            (Some(_), Some(_), None) => Factor::Missing,
            _ => Factor::None,
        };
        let gate = || self.check_source(source.as_deref());
        // A name with no password that signs in is checked against the dummy, as costly as the
        // dearest stored hash, so that timing does not reveal user names.
        let phc = secrets.password_hash.clone();
        let dummy = self.sign_in_dummy().await?;
        let pw = password.to_owned();
        let checked = self
            .argon2_in_turn(place, gate, move || {
                verify_password(&pw, phc.as_deref(), &dummy)
            })
            .await;
        let ok = match checked {
            Ok(ok) => ok,
            Err(
                refused @ (AuthError::Throttled(_)
                | AuthError::SignInsBusy(_)
                | AuthError::SignInsFromAddress(_)),
            ) => return Err(refused),
            Err(_) => false,
        };
        // A locked user is told nothing a wrong password would not tell them; the audit log
        // says why. Looked at once the hash is done: guesses sent all at once were all on their
        // way before the lockout began, and those that finish after it learn nothing, right
        // or wrong. Either kind of lock refuses a sign-in (a step-up's refuses both).
        let locked = user
            .as_ref()
            .and_then(|u| self.lockouts.refusing(&u.name, Kind::SignIn, now()));
        let ok = ok && locked.is_none();
        let (user, password_hash) = match (user, secrets.password_hash) {
            (Some(u), Some(phc)) if ok => (u, phc),
            (refused, _) => {
                // An offboarded user's password was taken away, not guessed wrong: on the
                // record as such, and no lockout of a user who cannot sign in anyway.
                let gone = refused.as_ref().is_some_and(|u| self.offboarded(&u.name));
                let why = match (&refused, locked) {
                    (Some(_), _) if gone => {
                        "the user was offboarded: their password no longer signs in".to_owned()
                    }
                    (Some(_), Some((Kind::SignIn, until))) => format!(
                        "sign-in locked until {} after wrong passwords or TOTP codes at sign-in",
                        warden_domain::rfc3339(until)
                    ),
                    (Some(_), Some((Kind::StepUp, until))) => format!(
                        "user locked until {} after wrong TOTP codes at step-up (or wrong current passwords at a change of their own), which refuses sign-ins too",
                        warden_domain::rfc3339(until)
                    ),
                    (Some(_), None) => "wrong password".to_owned(),
                    (None, _) => "unknown user or wrong password".to_owned(),
                };
                let code = if gone {
                    "offboarded"
                } else {
                    "bad_credentials"
                };
                // Counted as soon as it is known, with no wait since the lockout was looked
                // at: guesses whose hashes finish while this one's refusal is stored find the
                // lock it began. The lock's event follows the refusal's.
                let locks = match (&refused, locked, gone) {
                    (Some(u), None, false) => self.lockouts.failed(&u.name, Kind::SignIn, t),
                    _ => None,
                };
                self.auth_failed(refusal(code, &why)).await?;
                if let (Some(u), Some(until)) = (refused, locks) {
                    self.audit_lock(&u.name, Kind::SignIn, until, t, source.as_deref())
                        .await?;
                }
                return Err(AuthError::BadCredentials);
            }
        };
        // The factor of the same reading as the password: the token is stored only while both
        // are still the user's.
        match factor {
            // The right password, and no code: asked for, on the record apart from wrong
            // answers (the CLI asks for the code and signs in again), and counted as neither a
            // failure nor a success; the user's run of wrong answers goes on until a code
            // passes.
            Factor::Missing => {
                let e = refusal(
                    "totp_required",
                    "TOTP code missing (the password was right)",
                );
                self.store.append(vec![e]).await?;
                return Err(AuthError::TotpRequired);
            }
            Factor::Given(totp, code) => {
                let checked = match self
                    .check_code(&user.name, &totp, code, Kind::SignIn, source.as_deref())
                    .await
                {
                    // Locked by a concurrent guess since the password was checked: answered
                    // like a wrong code, as a locked sign-in is.
                    Err(AuthError::Locked(_)) => Ok(false),
                    other => other,
                };
                if !checked? {
                    self.auth_failed(fail("wrong or reused TOTP code")).await?;
                    return Err(AuthError::BadCredentials);
                }
            }
            Factor::None => self.lockouts.succeeded(&user.name, Kind::SignIn),
        }
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
        let created = now();
        let expires_at = created + self.config.token_ttl.as_duration();
        let event = Event::new(
            Code::LoginSucceeded,
            Actor::user(user.name.clone(), source.clone()),
            created,
        )
        .details(serde_json::json!({ "token_expires_at": warden_domain::rfc3339(expires_at) }));
        let checked = Checked {
            password_hash,
            totp: secrets.totp,
        };
        let record = Token {
            user: user.name.clone(),
            created_at: created,
            expires_at,
            revoked: false,
        };
        match self
            .store
            .insert_token(token_hash(&token), record, checked, vec![event])
            .await
        {
            Ok(()) => {
                // Its address goes first among sign-ins waiting for a hash for a while.
                self.throttles.sign_ins.signed_in(source.as_deref());
                Ok(Issued { token, expires_at })
            }
            // A new password, a reset of the factor or an offboarding came while this sign-in
            // was checked (a burst of sign-ins queued for the hashing slots widens that window):
            // what it checked no longer signs anyone in.
            Err(warden_store::Error::Conflict) => {
                let why = "the password or second factor changed while the sign-in was checked (a new password, a reset or an offboarding)";
                self.auth_failed(fail(why)).await?;
                Err(AuthError::BadCredentials)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Resolves a bearer token to its user. Refusals are audited and counted against the
    /// caller's address; a valid token passes whatever its address has done. A `change` (a
    /// call that may write) is counted in flight until the result is dropped, so that
    /// offboarding can wait for it, and refused once its user has been offboarded.
    pub async fn authenticate(
        &self,
        token: &str,
        source: Option<String>,
        change: bool,
    ) -> Result<Authenticated, AuthError> {
        let hash = token_hash(token);
        let t = now();
        let (record, from_store) = self.token_record(token, hash, t).await?;
        let why = match &record {
            None => "unknown token",
            Some(r) if r.revoked => "revoked token",
            Some(r) if r.expires_at <= t => "expired token",
            Some(r) => match self.user(&r.user) {
                None => "token of a user no longer in the directory",
                // A change is counted under the lock that bars it: an offboarding waits for it.
                Some(u) => match self.admit(r, change) {
                    None => "token of a user signed out since it was made",
                    Some(in_flight) => {
                        if from_store {
                            self.tokens.put(hash, r.clone());
                        }
                        return Ok(Authenticated {
                            user: u.clone(),
                            token: r.clone(),
                            in_flight,
                        });
                    }
                },
            },
        };
        self.check_source(source.as_deref())?;
        let issued = record.is_some();
        let event = Event::new(
            Code::TokenRejected,
            Actor {
                user: None,
                claimed: record.map(|r| r.user.to_string()),
                source,
            },
            t,
        )
        .denied("bad_token", why);
        // A token this server issued, ended since, is no guess: a client that still holds it
        // (a stale login, a replaced one being revoked) is audited but not throttled, its
        // uses at most once a minute, with how many since went unrecorded.
        if issued {
            if let Some(unrecorded) = self.tokens.record_stale_use(hash, t) {
                let event = match unrecorded {
                    0 => event,
                    n => event.details(serde_json::json!({ "uses_unrecorded_since_last": n })),
                };
                self.store.append(vec![event]).await?;
            }
        } else {
            self.auth_failed(event).await?;
        }
        Err(AuthError::BadToken)
    }

    /// The record of `token` (whose hash is `hash`) at time `t`: the cached one while it has
    /// not expired, else the store's when the token is shaped like one Warden issues; and
    /// whether it was read from the store, to be cached once found live.
    async fn token_record(
        &self,
        token: &str,
        hash: [u8; 32],
        t: OffsetDateTime,
    ) -> Result<(Option<Token>, bool), AuthError> {
        Ok(match self.tokens.get(&hash).filter(|r| r.expires_at > t) {
            Some(cached) => (Some(cached), false),
            None if token.starts_with(TOKEN_PREFIX) && token.len() < 100 => {
                (self.store.token(hash).await?, true)
            }
            None => (None, false),
        })
    }

    /// The user a live `token` belongs to, or `None` for any other, with nothing put on the
    /// record and nothing counted either way: for a refusal answered alike whatever the token
    /// (a request refused for its size or framing before it is routed), to be recorded as its
    /// holder's. An answer that does not depend on the token tells no guesser anything, so a
    /// token that is none is no failed authentication here.
    pub async fn token_holder(&self, token: &str) -> Result<Option<User>, AuthError> {
        let t = now();
        let (record, _) = self.token_record(token, token_hash(token), t).await?;
        Ok(record
            .filter(|r| !r.revoked && r.expires_at > t && !self.tokens.barred(r))
            .and_then(|r| self.user(&r.user).cloned()))
    }

    /// Whether a live `token` may be used: `None` when its user was signed out since it was
    /// made (read from the store before the revocation was written, say), else the change it
    /// makes counted in flight, if it is one.
    fn admit(&self, token: &Token, change: bool) -> Option<Option<ChangeInFlight>> {
        if change {
            self.tokens.begin_change(token).map(Some)
        } else {
            (!self.tokens.barred(token)).then_some(None)
        }
    }

    /// Puts on the record a sign-in refused before any check of its password, because its
    /// request does not read (`code`, `why`), with the name it claimed if one could be read;
    /// counted against its address as a wrong password is. `Err` when the address is throttled
    /// or the record cannot be kept.
    pub async fn unreadable_login(
        &self,
        source: Option<String>,
        name: Option<&str>,
        code: &str,
        why: &str,
    ) -> Result<(), AuthError> {
        self.check_source(source.as_deref())?;
        let event = Event::new(
            Code::LoginFailed,
            Actor {
                user: None,
                claimed: name.map(|n| claimed(n, |u| self.user(u).is_some())),
                source,
            },
            now(),
        )
        .denied(code, why);
        self.auth_failed(event).await
    }

    /// Refuses a call with no bearer token (no or a malformed `Authorization` header) as one
    /// with a bad token is: on the record, and counted against its address.
    pub async fn no_token(&self, source: Option<String>) -> AuthError {
        let refused = self
            .token_refused(
                source,
                "no_token",
                "missing, repeated or malformed Authorization header",
                serde_json::Value::Null,
            )
            .await;
        refused.err().unwrap_or(AuthError::NoToken)
    }

    /// Puts on the record a call refused for the token it carried, or lacked (`code`, `why`,
    /// `details`), counted against its address; `Err` when the address is throttled already or
    /// the record cannot be kept.
    pub async fn token_refused(
        &self,
        source: Option<String>,
        code: &str,
        why: &str,
        details: serde_json::Value,
    ) -> Result<(), AuthError> {
        self.check_source(source.as_deref())?;
        let event = Event::new(
            Code::TokenRejected,
            Actor {
                source,
                ..Actor::default()
            },
            now(),
        )
        .denied(code, why)
        .details(details);
        self.auth_failed(event).await
    }

    /// Revokes a token (logout).
    pub async fn logout(
        &self,
        token: &str,
        user: &User,
        source: Option<String>,
    ) -> Result<(), AuthError> {
        let t = now();
        let event = Event::new(Code::Logout, Actor::user(user.name.clone(), source), t);
        let hash = token_hash(token);
        self.tokens.mark_revoked(
            hash,
            Token {
                user: user.name.clone(),
                created_at: t,
                expires_at: t,
                revoked: true,
            },
        );
        self.store.revoke_token(hash, vec![event]).await?;
        Ok(())
    }

    /// Starts TOTP enrolment and returns the otpauth URI to scan. Re-enrolling while a factor
    /// is confirmed needs a current code from it.
    pub async fn mfa_enroll(
        &self,
        user: &User,
        code: Option<&str>,
        source: Option<String>,
    ) -> Result<String, AuthError> {
        if let Some(totp) = self.user_totp(&user.name, false).await? {
            let ok = match code {
                Some(c) => {
                    self.check_code(&user.name, &totp, c, Kind::StepUp, source.as_deref())
                        .await?
                }
                None => false,
            };
            if !ok {
                return Err(match code {
                    None => AuthError::Mfa("you already have MFA; pass a current code as `totp` (`--totp CODE` from the CLI) to replace it".into()),
                    Some(_) => AuthError::WrongCode("the TOTP code is wrong, or was used already (each code works once): to replace your second factor, pass the code your current authenticator shows now".into()),
                });
            }
        }
        let secret = Secret::generate();
        let totp = totp_for(&user.name, secret.as_bytes().to_vec())?;
        let uri = totp
            .to_url()
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let sealed = self
            .sealer
            .seal(secret.as_bytes())
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let event = Event::new(
            Code::MfaEnrollStarted,
            Actor::user(user.name.clone(), source),
            now(),
        );
        self.store
            .set_totp_pending(&user.name, sealed, vec![event])
            .await?;
        Ok(uri)
    }

    /// Confirms enrolment with a first code from the authenticator.
    pub async fn mfa_confirm(
        &self,
        user: &User,
        code: &str,
        source: Option<String>,
    ) -> Result<(), AuthError> {
        let totp = self
            .user_totp(&user.name, true)
            .await?
            .ok_or(AuthError::NoEnrolment)?;
        if !self
            .check_code_of(
                &user.name,
                &totp,
                code,
                WhichSecret::Confirming,
                Kind::StepUp,
                source.as_deref(),
            )
            .await?
        {
            return Err(AuthError::WrongCode(
                "the code does not match; check the authenticator's clock and try the next code"
                    .into(),
            ));
        }
        let event = Event::new(
            Code::MfaEnrolled,
            Actor::user(user.name.clone(), source),
            now(),
        );
        // Gone since it was read: an administrator's reset of the factor came in between.
        match self.store.confirm_totp(&user.name, vec![event]).await {
            Err(warden_store::Error::NotFound) => return Err(AuthError::NoEnrolment),
            other => other?,
        }
        Ok(())
    }

    /// Checks what `user` gives, from a session of their own, to change their own password:
    /// their `current` password, then a fresh `code` of their second factor when they have
    /// one. `Ok(false)` for a wrong current password; a missing or wrong code is an error
    /// saying which ([`App::step_up`]), as is a lock in force ([`AuthError::Locked`]).
    ///
    /// A wrong current password counts towards the user's lockout as a wrong answer at a
    /// step-up ([`Kind::StepUp`]), not at a sign-in: only a caller holding one of the user's
    /// tokens reaches this check, so wrong passwords here suggest a stolen token guessing its
    /// way to the account, as wrong step-up codes do, and their lock refuses step-ups (this
    /// check included) and sign-ins both. Counted as a sign-in's, the guesses would share
    /// their run with wrong sign-ins that anyone who knows the name can send, so a stranger
    /// could keep a signed-in user from changing their password, and the lock would not stop
    /// the token's holder from stepping up elsewhere. A right password ends no run of wrong
    /// answers by itself: the whole check must pass, or a thief who knows the password would
    /// reset the count of the codes they guess.
    pub async fn own_step_up(
        &self,
        user: &UserName,
        current: &str,
        code: Option<&str>,
        source: Option<&str>,
    ) -> Result<bool, AuthError> {
        let t = now();
        if let Some((_, until)) = self.lockouts.refusing(user, Kind::StepUp, t) {
            return Err(AuthError::Locked(until));
        }
        // A password disabled by an offboarding, or none, matches nothing.
        let phc = self
            .store
            .secrets(user)
            .await?
            .password_hash
            .filter(|phc| PasswordHash::new(phc).is_ok());
        let right = match phc {
            Some(phc) => {
                let pw = current.to_owned();
                self.argon2(
                    || Ok(()),
                    move || {
                        PasswordHash::new(&phc)
                            .is_ok_and(|hash| verify_password(&pw, Some(&phc), &hash))
                    },
                )
                .await?
            }
            None => false,
        };
        // Locked by a concurrent guess while this one was checked: refused as locked.
        if let Some((_, until)) = self.lockouts.refusing(user, Kind::StepUp, now()) {
            return Err(AuthError::Locked(until));
        }
        if !right {
            self.count(user, false, Kind::StepUp, t, source).await?;
            return Ok(false);
        }
        if self.user_totp(user, false).await?.is_none() {
            self.lockouts.succeeded(user, Kind::StepUp);
            return Ok(true);
        }
        if self.step_up(user, code, source).await? {
            return Ok(true);
        }
        Err(AuthError::Mfa(
            "changing your own password takes a fresh code of your second factor too: pass the one your authenticator shows now as `totp` (`--totp CODE` from the CLI)".into(),
        ))
    }

    /// Sets `target`'s password, for `admin`: an administrator, for anyone (checked by the
    /// caller, as is the fresh `code` of the administrator's own second factor when the user
    /// is another: [`App::step_up_over`]); or the user themselves, whose current password and
    /// code the caller checked ([`App::own_step_up`]). A new password ends the sessions of the old one, SSH
    /// keys included: a reset after a suspected compromise must not leave a stolen token, or a
    /// key registered with one, working, nor an approval given with either counting
    /// ([`App::withdraw_approvals`]; not for one's own new password). One's own new password
    /// keeps the record of the administrator who set the one before
    /// ([`warden_store::UserSecrets::password_set_by`]): that administrator knew the old one,
    /// so the change may be theirs, made signed in as the user to lift the refusals the record
    /// stands for; only another administrator's new password clears it. Either lifts the
    /// user's lock: one's own is set only once the step-up passed, which no step-up's lock
    /// allows, so only a sign-in's can be in force, and the user proved more than a sign-in.
    pub async fn set_password(
        &self,
        admin: &User,
        target: &UserName,
        password: &str,
        source: Option<String>,
    ) -> Result<Signed, AuthError> {
        let pw = password.to_owned();
        let phc = self.argon2(|| Ok(()), move || hash_password(&pw)).await??;
        // Another's password is known to whoever set it ([`App::password_set_by`]).
        let other = admin.name != *target;
        // What the old password approved counts no more from before the new one is stored
        // until it is withdrawn: they approve afresh ([`App::hold_approvals`]).
        let held = if other {
            Some(
                self.hold_approvals(target, "their password was reset")
                    .await,
            )
        } else {
            None
        };
        let at = held.as_ref().map_or_else(now, |h| h.at());
        let actor = Actor::user(admin.name.clone(), source);
        let why = "a new password was set";
        let events = vec![
            signed_out(&actor, target, why, at),
            Event::new(Code::PasswordSet, actor.clone(), at)
                .details(serde_json::json!({ "user": target })),
        ];
        let set_by = if other {
            Some(admin.name.clone())
        } else {
            self.store.secrets(target).await?.password_set_by
        };
        let reset = Reset::Password { hash: phc, set_by };
        let signed = match self.reset_user(target, reset, &actor, why, events).await {
            Ok(signed) => signed,
            Err(e) => {
                // Nothing changed: what they approved stands.
                if let Some(held) = held {
                    held.release();
                }
                return Err(e);
            }
        };
        // A new password from an administrator is a way out of a lockout, and of an
        // offboarding: the user's approvals count again (those given before it were withdrawn).
        self.lockouts.clear(target);
        self.refresh_reviewers().await?;
        if let Some(held) = held {
            self.withdraw_approvals(held).await?;
        }
        Ok(signed)
    }

    /// Removes `target`'s second factor (administrators only; checked by the caller, as is
    /// their own code: [`App::step_up_over`]), for a user who lost it, or whose account had one
    /// bound by someone holding a stolen token: the user's sessions and SSH keys go with it,
    /// their lock (wrong passwords or codes: the lock tells them not apart) is lifted, and they
    /// sign in with their password alone and enrol again; their approvals of requests still
    /// pending are withdrawn ([`App::withdraw_approvals`]). Returns whether they had one
    /// (confirmed or being enrolled), until when they were locked, and what ended.
    pub async fn reset_mfa(
        &self,
        admin: &User,
        target: &UserName,
        source: Option<String>,
    ) -> Result<(bool, Option<OffsetDateTime>, Signed), AuthError> {
        let secrets = self.store.secrets(target).await?;
        let had = secrets.totp.is_some() || secrets.totp_pending.is_some();
        // Whoever bound the factor may hold a session.
        let why = "their second factor was reset";
        // What the old factor approved counts no more from before the reset is stored until
        // it is withdrawn: they approve afresh ([`App::hold_approvals`]).
        let held = if admin.name == *target {
            None
        } else {
            Some(self.hold_approvals(target, why).await)
        };
        let at = held.as_ref().map_or_else(now, |h| h.at());
        let locked_until = self.lockouts.locked_until(target, at);
        let actor = Actor::user(admin.name.clone(), source);
        let events = vec![
            signed_out(&actor, target, why, at),
            Event::new(Code::MfaReset, actor.clone(), at).details(serde_json::json!({
                "user": target,
                "had_factor": had,
                "was_locked_until": locked_until.map(warden_domain::rfc3339),
            })),
        ];
        let signed = match self
            .reset_user(target, Reset::SecondFactor, &actor, why, events)
            .await
        {
            Ok(signed) => signed,
            Err(e) => {
                // Nothing changed: what they approved stands.
                if let Some(held) = held {
                    held.release();
                }
                return Err(e);
            }
        };
        self.lockouts.clear(target);
        if let Some(held) = held {
            self.withdraw_approvals(held).await?;
        }
        Ok((had, locked_until, signed))
    }

    /// Checks the fresh TOTP `code` of `admin`, about to change `target`'s credentials, when
    /// `target` is someone else and `admin` has a second factor: a stolen administrator's token
    /// alone must not reset another administrator's factor and password, sign in as them, and
    /// through them reset the first one's own. An administrator without a factor has no code
    /// to give (whoever holds their token could enrol one). A wrong code counts towards the
    /// administrator's lockout, as at any step-up.
    pub async fn step_up_over(
        &self,
        admin: &User,
        target: &UserName,
        code: Option<&str>,
        source: Option<&str>,
    ) -> Result<(), AuthError> {
        if admin.name == *target || !self.mfa_enrolled(&admin.name).await? {
            return Ok(());
        }
        if self.step_up(&admin.name, code, source).await? {
            return Ok(());
        }
        Err(AuthError::Mfa(
            "changing another user's password or second factor requires MFA step-up: pass a fresh TOTP code as `totp` (`--totp CODE` from the CLI)".into(),
        ))
    }

    /// Applies `reset` to `user` with `events` (and an `ssh.key_removed` by `actor` for each
    /// key registered to them, `why`), and ends everything signed in with their credentials of
    /// before: their tokens, the SSH keys registered with them, and their live SSH sessions.
    ///
    /// The cache is told before the write, so that no change of theirs starts and no token
    /// read before the write is used after it, and again after it: a sign-in that finished
    /// between the two stored its token before the write, which revoked it. One that finishes
    /// after the write stores none ([`warden_store::Store::insert_token`]).
    pub(crate) async fn reset_user(
        &self,
        user: &UserName,
        reset: Reset,
        actor: &Actor,
        why: &str,
        events: Vec<Event>,
    ) -> Result<Signed, AuthError> {
        for _ in 0..RESET_TRIES {
            self.tokens.sign_out(user, now());
            let keys: Vec<String> = self
                .store
                .ssh_keys(user)
                .await?
                .into_iter()
                .map(|k| k.fingerprint)
                .collect();
            let mut all = events.clone();
            all.extend(keys.iter().map(|key| {
                Event::new(Code::SshKeyRemoved, actor.clone(), now())
                    .details(serde_json::json!({ "user": user, "fingerprint": key, "why": why }))
            }));
            match self.store.reset_user(user, reset.clone(), &keys, all).await {
                Ok(tokens) => {
                    // Their password hash may be the costliest no more, or be it now.
                    self.sign_in_dummy.forget();
                    self.tokens.sign_out(user, now());
                    return Ok(Signed {
                        tokens,
                        ssh_keys: keys.len(),
                        sessions: self.end_sessions_of(user, why),
                    });
                }
                // A key registered (by a call under way when the sign-out began) since the
                // keys were read: read again, so that each one removed is on the record.
                Err(warden_store::Error::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AuthError::Store(warden_store::Error::Conflict))
    }

    /// Ends `user`'s live SSH sessions, saying `why`; returns how many.
    fn end_sessions_of(&self, user: &UserName, why: &str) -> usize {
        let theirs: Vec<_> = self
            .sessions
            .list()
            .into_iter()
            .filter(|s| s.user == *user)
            .collect();
        for s in &theirs {
            self.sessions.kill(&s.id, why);
        }
        theirs.len()
    }

    /// The locks in force now of the directory's users, each with its kind, by name, as an
    /// archive of the events that began them keeps them for [`App::restore_lockouts`]: one no
    /// longer in the directory has no sign-in to lock, nor can it be unlocked. Each lock
    /// refuses sign-ins; a user locked both ways is named twice.
    pub fn locks_in_force(&self) -> Vec<(UserName, Kind, OffsetDateTime)> {
        let mut locks = self.lockouts.locks(now());
        locks.retain(|(user, _, _)| self.user(user).is_some());
        locks
    }

    /// The hash a sign-in's password is checked against when its name has none that signs in
    /// ([`SignInDummy`]), made at the first such sign-in.
    async fn sign_in_dummy(&self) -> Result<PasswordHash, AuthError> {
        // Held while the dummy is made: sign-ins at the same time wait for it rather than each
        // read every hash.
        let mut made = self.sign_in_dummy.made.lock().await;
        // Read before the hashes: a change written while they are read is counted after this,
        // so the dummy made of them is made again at the next check.
        let changes = self
            .sign_in_dummy
            .changes
            .load(std::sync::atomic::Ordering::SeqCst);
        if let Some((after, dummy)) = made.as_ref()
            && *after == changes
        {
            return Ok(dummy.clone());
        }
        let mut stored = Vec::new();
        for user in self.directory.users() {
            stored.extend(self.store.secrets(&user.name).await?.password_hash);
        }
        let dummy = dummy_like(stored.iter().map(String::as_str))?;
        *made = Some((changes, dummy.clone()));
        Ok(dummy)
    }

    /// When an administrator last gave each user new credentials, from the audit log: a
    /// password set by another user (`auth.password_set`; one's own is no reset), and a reset
    /// of the second factor (`auth.mfa_reset`), each since the oldest approval still standing
    /// on a pending request (none is read when there is none). An approval given before is
    /// one of the old credentials: the start-time sweep withdraws it, for a stop that cut
    /// short the change between storing it and withdrawing the user's approvals
    /// ([`App::withdraw_approvals`]).
    pub(crate) async fn credential_resets(&self) -> Result<CredentialResets, AuthError> {
        let pending = self
            .store
            .requests(warden_store::RequestFilter {
                states: vec![warden_domain::State::Pending],
                limit: warden_store::READ_MAX,
                ..Default::default()
            })
            .await?;
        let oldest = pending
            .iter()
            .flat_map(|r| r.reviews.iter())
            .filter(|v| {
                v.verdict == warden_domain::request::Verdict::Approve && v.withdrawn.is_none()
            })
            .map(|v| v.at)
            .min();
        let mut resets = CredentialResets::default();
        let Some(since) = oldest else {
            return Ok(resets);
        };
        self.each_audited(&[Code::PasswordSet, Code::MfaReset], since, None, |e| {
            let Some(user) = e.details["user"]
                .as_str()
                .and_then(|u| u.parse::<UserName>().ok())
            else {
                return;
            };
            let latest = match e.code {
                Code::PasswordSet if e.actor.user.as_ref() != Some(&user) => &mut resets.password,
                Code::MfaReset => &mut resets.second_factor,
                _ => return,
            };
            // Oldest first: the last one read is the latest.
            latest.insert(user, e.time);
        })
        .await?;
        Ok(resets)
    }

    /// Hands `each` the audit events with one of `codes` timed from `since` on (after event
    /// `after_seq`, when given), oldest first, read a page at a time so that a long log is
    /// never held whole.
    async fn each_audited(
        &self,
        codes: &[Code],
        since: OffsetDateTime,
        mut after_seq: Option<u64>,
        mut each: impl FnMut(Event),
    ) -> Result<(), AuthError> {
        loop {
            let page = self
                .store
                .audit(AuditFilter {
                    codes: codes.to_vec(),
                    from: Some(since),
                    after_seq,
                    limit: RESTORE_PAGE,
                    ..AuditFilter::default()
                })
                .await?;
            let Some(last) = page.last().map(|e| e.seq) else {
                return Ok(());
            };
            after_seq = Some(last);
            page.into_iter().for_each(|s| each(s.event));
        }
    }

    /// Whether `user` has a password that signs in: one set, and not disabled by an
    /// offboarding.
    pub(crate) async fn has_password(&self, user: &UserName) -> Result<bool, AuthError> {
        let secrets = self.store.secrets(user).await?;
        Ok(secrets
            .password_hash
            .as_deref()
            .is_some_and(|phc| PasswordHash::new(phc).is_ok()))
    }

    /// Lifts `target`'s lockout, if any, keeping their password: for the user who mistyped,
    /// when nothing suggests a guesser. Audited either way; returns the end of the lockout
    /// lifted.
    pub async fn unlock(
        &self,
        admin: &User,
        target: &UserName,
        source: Option<String>,
    ) -> Result<Option<OffsetDateTime>, AuthError> {
        let t = now();
        let until = self.lockouts.locked_until(target, t);
        let event = Event::new(
            Code::UserUnlocked,
            Actor::user(admin.name.clone(), source),
            t,
        )
        .details(serde_json::json!({
            "user": target,
            "was_locked_until": until.map(warden_domain::rfc3339),
        }));
        self.store.append(vec![event]).await?;
        self.lockouts.clear(target);
        Ok(until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(user: &str, created_at: OffsetDateTime) -> Token {
        Token {
            user: user.parse().unwrap(),
            created_at,
            expires_at: created_at + time::Duration::hours(8),
            revoked: false,
        }
    }

    #[test]
    fn an_ended_tokens_uses_are_recorded_once_a_minute_with_those_left_unrecorded() {
        let cache = TokenCache::default();
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let s = time::Duration::SECOND;
        assert_eq!(cache.record_stale_use([1; 32], t0), Some(0));
        for i in 1..=5 {
            assert_eq!(cache.record_stale_use([1; 32], t0 + s * i), None);
        }
        // Another token is its own.
        assert_eq!(cache.record_stale_use([2; 32], t0 + s), Some(0));
        assert_eq!(cache.record_stale_use([1; 32], t0 + s * 60), Some(5));
        assert_eq!(cache.record_stale_use([1; 32], t0 + s * 61), None);
        // Remembering as many as it may, the oldest recorded are forgotten for a new one;
        // with none to forget, every use is recorded.
        let later = t0 + s * 200;
        for i in 0..STALE_TOKENS_REMEMBERED - 2 {
            let mut hash = [3; 32];
            hash[..8].copy_from_slice(&(i as u64).to_le_bytes());
            assert_eq!(cache.record_stale_use(hash, later), Some(0));
        }
        assert_eq!(cache.record_stale_use([4; 32], later), Some(0));
        assert_eq!(cache.record_stale_use([4; 32], later), None);
        // The first two were forgotten: recorded anew.
        assert_eq!(cache.record_stale_use([1; 32], later), Some(0));
        let full = cache.cached().stale_uses.len();
        assert_eq!(full, STALE_TOKENS_REMEMBERED);
        assert_eq!(cache.record_stale_use([5; 32], later), Some(0));
        assert_eq!(cache.record_stale_use([5; 32], later), Some(0));
    }

    #[test]
    fn a_lookup_racing_an_offboarding_never_caches_the_users_tokens() {
        let cache = TokenCache::default();
        let t0 = OffsetDateTime::UNIX_EPOCH;
        cache.put([1; 32], live("mallory", t0));
        cache.sign_out(&"mallory".parse().unwrap(), t0 + time::Duration::SECOND);
        // Cached before: marked revoked. Read from the store just before its revocation and
        // put after: not cached, nor used. Made after the offboarding: cached as usual.
        assert!(cache.get(&[1; 32]).is_none());
        cache.put([2; 32], live("mallory", t0));
        assert!(cache.get(&[2; 32]).is_none());
        assert!(cache.barred(&live("mallory", t0)));
        cache.put([3; 32], live("mallory", t0 + time::Duration::MINUTE));
        assert!(cache.get(&[3; 32]).is_some());
    }

    #[test]
    fn a_sign_out_told_again_after_its_write_bars_the_tokens_made_in_between() {
        let cache = TokenCache::default();
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let mallory: UserName = "mallory".parse().unwrap();
        cache.sign_out(&mallory, t0);
        // A sign-in that finished after the first telling stored its token before the write,
        // and a lookup cached it before the write revoked it.
        let between = live("mallory", t0 + time::Duration::MILLISECOND);
        cache.put([1; 32], between.clone());
        assert!(cache.get(&[1; 32]).is_some());
        cache.sign_out(&mallory, t0 + time::Duration::SECOND);
        assert!(cache.get(&[1; 32]).is_none());
        assert!(cache.barred(&between));
        // An earlier time told late moves nothing back.
        cache.sign_out(&mallory, t0);
        assert!(cache.barred(&between));
    }

    #[test]
    fn changes_under_way_are_counted_and_none_starts_after_an_offboarding() {
        let cache = TokenCache::default();
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let mallory: UserName = "mallory".parse().unwrap();
        let first = cache.begin_change(&live("mallory", t0)).unwrap();
        let second = cache.begin_change(&live("mallory", t0)).unwrap();
        assert_eq!(cache.changes_in_flight(&mallory), 2);
        cache.sign_out(&mallory, t0 + time::Duration::SECOND);
        // Authenticated a moment before the offboarding, counted after it: refused.
        assert!(cache.begin_change(&live("mallory", t0)).is_none());
        // A token made since (the user came back) works as usual.
        let later = cache.begin_change(&live("mallory", t0 + time::Duration::MINUTE));
        assert!(later.is_some());
        drop(later);
        drop(first);
        assert_eq!(cache.changes_in_flight(&mallory), 1);
        drop(second);
        assert_eq!(cache.changes_in_flight(&mallory), 0);
        assert!(cache.cached().changing.is_empty());
    }

    #[test]
    fn a_logout_outlives_a_full_cache() {
        let cache = TokenCache::default();
        let t0 = OffsetDateTime::UNIX_EPOCH;
        cache.mark_revoked([0; 32], live("alice", t0));
        for i in 0..=TOKEN_CACHE_MAX as u32 {
            let mut hash = [0xff; 32];
            hash[..4].copy_from_slice(&i.to_le_bytes());
            cache.put(hash, live("bob", t0));
        }
        // A lookup that read the store before the logout was written puts it back late.
        cache.put([0; 32], live("alice", t0));
        assert!(cache.get(&[0; 32]).is_none());
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        let dummy = dummy_like([h.as_str()]).unwrap();
        assert!(verify_password("correct horse", Some(&h), &dummy));
        assert!(!verify_password("wrong", Some(&h), &dummy));
        assert!(!verify_password("x", Some("not a hash"), &dummy));
        assert!(!verify_password("correct horse", None, &dummy));
        // The dummy is no hash of the password whose parameters it has.
        assert!(!verify_password(
            "correct horse",
            Some(&dummy.to_string()),
            &dummy
        ));
    }

    #[test]
    fn a_password_is_one_in_any_unicode_form() {
        let composed = "caf\u{E9} cr\u{E8}me br\u{FB}l\u{E9}e";
        let decomposed = "cafe\u{301} cre\u{300}me bru\u{302}le\u{301}e";
        let dummy = dummy_like([]).unwrap();
        for (set, typed) in [(composed, decomposed), (decomposed, composed)] {
            let h = hash_password(set).unwrap();
            assert!(
                verify_password(typed, Some(&h), &dummy),
                "{set:?} {typed:?}"
            );
        }
        // A hash made from a password as typed, before passwords were normalised, still
        // takes it as typed.
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let legacy = Argon2::default()
            .hash_password_with_salt(decomposed.as_bytes(), &salt)
            .unwrap()
            .to_string();
        assert!(verify_password(decomposed, Some(&legacy), &dummy));
    }

    /// The costliest of the parameters the directory's hashes have, whatever their order; with
    /// none, those of the hashes Warden makes.
    #[test]
    fn the_dummy_costs_what_the_costliest_stored_hash_does() {
        let params = |h: &PasswordHash| argon2::Params::try_from(h).unwrap();
        let default = hash_password("a default password").unwrap();
        // Dearer than the default: more memory, more passes, and more lanes (which cost
        // nothing more: they share the memory).
        let made = |m, t, p| {
            let params = argon2::Params::new(m, t, p, None).unwrap();
            let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
            argon
                .hash_password_with_salt(b"a password", b"saltsaltsaltsalt")
                .unwrap()
                .to_string()
        };
        let dear = made(32 * 1024, 3, 1);
        let dearest = made(24 * 1024, 5, 2);
        let more_lanes = made(19 * 1024, 2, 4);
        for order in [
            [&default, &dear, &dearest, &more_lanes],
            [&dearest, &more_lanes, &dear, &default],
            [&more_lanes, &default, &dearest, &dear],
        ] {
            let dummy = dummy_like(order.iter().map(|h| h.as_str()).chain(["disabled"])).unwrap();
            let dearest = PasswordHash::new(&dearest).unwrap();
            assert_eq!(params(&dummy), params(&dearest));
            assert_eq!(dummy.algorithm, dearest.algorithm);
            assert_eq!(dummy.version, dearest.version);
            assert_ne!(dummy.salt, dearest.salt);
            assert_ne!(dummy.hash, dearest.hash);
            assert!(argon2id_hash_problem(&dummy.to_string()).is_none());
        }
        let none = dummy_like(["not a hash"]).unwrap();
        assert_eq!(params(&none), params(&PasswordHash::new(&default).unwrap()));
        assert_eq!(params(&none).m_cost(), argon2::Params::DEFAULT_M_COST);
    }

    /// The dummy is made again once a password changes, so that it costs what the costliest
    /// hash stored costs now: not what a costly config hash, replaced since, cost.
    #[tokio::test]
    async fn the_dummy_follows_the_costliest_stored_hash_as_passwords_change() {
        let dir = tempfile::tempdir().unwrap();
        let app = crate::state::tests::app_in(dir.path(), &["alice", "bob"]);
        let (alice, bob): (UserName, UserName) = ("alice".parse().unwrap(), "bob".parse().unwrap());
        let made = |m, t| {
            let params = argon2::Params::new(m, t, 1, None).unwrap();
            Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password_with_salt(b"a password", b"saltsaltsaltsalt")
                .unwrap()
                .to_string()
        };
        let cost = |h: PasswordHash| {
            let p = argon2::Params::try_from(&h).unwrap();
            (p.m_cost(), p.t_cost())
        };
        let default = (
            argon2::Params::DEFAULT_M_COST,
            argon2::Params::DEFAULT_T_COST,
        );
        // A config's costly hash for alice, stored at a first start, as bob's of Warden's own.
        let ours = hash_password("bob's first password").unwrap();
        assert!(
            app.store
                .init_password(&alice, made(32 * 1024, 3), vec![])
                .await
                .unwrap()
        );
        assert!(app.store.init_password(&bob, ours, vec![]).await.unwrap());
        assert_eq!(cost(app.sign_in_dummy().await.unwrap()), (32 * 1024, 3));
        let reset = async |user: &UserName, reset: Reset| {
            app.reset_user(user, reset, &Actor::system(), "a test", vec![])
                .await
                .unwrap();
            cost(app.sign_in_dummy().await.unwrap())
        };
        let password = |hash: String| Reset::Password { hash, set_by: None };
        // alice's replaced by a password Warden hashes: no stored hash costs more than that.
        let new = hash_password("alice's new password").unwrap();
        assert_eq!(reset(&alice, password(new)).await, default);
        // A costlier one than any before: the dummy costs as much.
        assert_eq!(
            reset(&bob, password(made(32 * 1024, 4))).await,
            (32 * 1024, 4)
        );
        // That one disabled by an offboarding: no sign-in checks it.
        assert_eq!(reset(&bob, Reset::Offboarded).await, default);
    }
}
