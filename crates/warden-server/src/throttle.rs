//! Failed authentications counted by client address ([`warden_domain::throttle`]): wrong
//! passwords and codes at sign-in, and invalid API or metrics tokens.
//!
//! Only failures count, and a valid token is honoured whatever its address has done, so
//! users who share an address with a guesser (a NAT, the TLS proxy when `trusted_proxies` is
//! unset) keep working with the tokens they have; only their sign-ins wait. Attempts refused
//! while throttled are counted in `warden_auth_throttled_total`, not audited one by one: the
//! throttle's start is (`auth.source_throttled`), with each failure that led to it.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use warden_domain::audit::{Actor, Code, Event};
use warden_domain::throttle::{BURST, FailureBudget, REFILL};

use crate::auth::AuthError;
use crate::metrics;
use crate::state::{App, now};

/// Most addresses tracked at once. Past it, spent budgets are kept and whole ones dropped; if
/// every tracked address is still throttled, new addresses go uncounted (the per-user lockout
/// still holds), so a flood of addresses cannot grow the server's memory without bound.
const MAX_ADDRESSES: usize = 65_536;

/// Each address's budget of failures. IPv6 addresses count by their /64 network, the block
/// one host usually holds.
#[derive(Debug, Default)]
pub struct SourceThrottles {
    map: Mutex<Budgets>,
    /// The sign-ins waiting for their password's hash.
    pub(crate) sign_ins: SignInQueue,
}

#[derive(Debug, Default)]
struct Budgets {
    by_address: HashMap<IpAddr, FailureBudget>,
    /// When a full table was last swept of whole budgets. Budgets grow back one failure per
    /// [`REFILL`], so a sweep sooner than that after one that freed too little would free
    /// hardly more, at the cost of a pass over the whole table for every newcomer of a flood.
    swept_at: Option<Instant>,
}

/// A moment as both clocks read it: budgets are counted on the monotonic clock, which no step
/// of the wall clock moves, and the throttles they start are told (audited, and sent as
/// `Retry-After`) in wall-clock time, as the same distance from `wall`.
#[derive(Debug, Clone, Copy)]
struct Clocks {
    mono: Instant,
    wall: OffsetDateTime,
}

impl Clocks {
    fn now() -> Self {
        Self {
            mono: Instant::now(),
            wall: now(),
        }
    }

    /// The wall-clock time of `at`, a monotonic instant no earlier than this moment.
    fn wall_at(&self, at: Instant) -> OffsetDateTime {
        self.wall + at.saturating_duration_since(self.mono)
    }
}

/// The key an address is counted under, or `None` for an unknown one.
fn key(source: Option<&str>) -> Option<IpAddr> {
    match source?.parse::<IpAddr>().ok()? {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Some(IpAddr::V4(v4)),
            None => Some(IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into())),
        },
        v4 => Some(v4),
    }
}

impl SourceThrottles {
    fn budgets(&self) -> MutexGuard<'_, Budgets> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn throttled_until(&self, source: Option<&str>, at: Clocks) -> Option<OffsetDateTime> {
        let key = key(source)?;
        let until = self
            .budgets()
            .by_address
            .get(&key)?
            .throttled_until(at.mono)?;
        Some(at.wall_at(until))
    }

    /// Counts a failure; returns the end of the throttle it starts, if it spends the budget.
    fn failed(&self, source: Option<&str>, at: Clocks) -> Option<OffsetDateTime> {
        let key = key(source)?;
        let t = at.mono;
        let mut b = self.budgets();
        if b.by_address.len() >= MAX_ADDRESSES && !b.by_address.contains_key(&key) {
            if b.swept_at.is_some_and(|at| t < at + REFILL) {
                return None;
            }
            b.swept_at = Some(t);
            b.by_address.retain(|_, budget| !budget.is_whole(t));
            if b.by_address.len() >= MAX_ADDRESSES {
                return None;
            }
        }
        let until = b.by_address.entry(key).or_default().failed(t)?;
        Some(at.wall_at(until))
    }
}

/// Most sign-ins one address (an IPv6 /64) may have under way at once, waiting for their
/// password's hash or being hashed: its burst of failed authentications ([`BURST`]), as many
/// as it could be told are wrong before its budget is spent.
pub(crate) const PER_ADDRESS: usize = BURST as usize;

/// Sign-ins that may wait for a hash, per hashing slot (one per core): at the 20 to 50 ms a
/// hash of Warden's own cost takes a core, the last of them waits a few seconds.
const WAITING_PER_SLOT: usize = 64;

/// How long a sign-in waits for its turn at most: past it, it is refused unchecked, to be sent
/// again, rather than left waiting for hashes of a costlier config hash or a starved machine.
const WAIT_MAX: Duration = Duration::from_secs(15);

/// How long a sign-in that earned a token puts its address ahead of the others.
const TRUSTED_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// Most addresses remembered for their sign-ins: past it, the one that signed in longest ago
/// is forgotten.
const TRUSTED_MAX: usize = 4096;

/// How often at most the sign-ins refused for the queue are told in the server's log.
const SHED_TOLD_EVERY: Duration = Duration::from_secs(60);

/// The longest `Retry-After` a refusal for the queue says.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(30);

/// What a sign-in's place in the queue is kept under: its address's [`key`], `None` for an
/// unknown one (all such share one place).
type Place = Option<IpAddr>;

/// Why a sign-in was refused unchecked by the [`SignInQueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shed {
    /// Its address had [`PER_ADDRESS`] sign-ins under way already.
    AddressShare,
    /// The queue was full of sign-ins of addresses with no more waiting than its own.
    Full,
    /// It gave its place to a sign-in from an address with fewer waiting.
    Evicted,
    /// It waited [`WAIT_MAX`] without its turn coming.
    Deadline,
}

impl Shed {
    fn index(self) -> usize {
        self as usize
    }
}

/// A sign-in refused by the [`SignInQueue`], with how long its sender should wait before trying
/// again, and the summary for the server's log that is due, if one is.
#[derive(Debug)]
pub(crate) struct Refused {
    pub why: Shed,
    pub retry_after: Duration,
    pub told: Option<String>,
}

/// The sign-ins waiting for their password's argon2id hash, and those being hashed.
///
/// Sign-ins used to wait for a hashing slot first come first served, with no bound: a flood of
/// wrong ones from a hundred addresses, each within its budget of failures ([`BURST`]), made a
/// real sign-in wait behind thousands of hashes. So:
///
/// - At most [`WAITING_PER_SLOT`] per hashing slot wait; at most [`PER_ADDRESS`] from one
///   address are under way. A sign-in past either is refused at once, unchecked: nothing is
///   hashed, counted against the address or the user, or audited one by one (they are counted
///   in `warden_sign_ins_shed_total`, and told in the log at most once per
///   [`SHED_TOLD_EVERY`]).
/// - Turns go round the addresses with sign-ins waiting, one each in turn, not by arrival: an
///   address that sent twenty waits for its twenty, not others for them. When the queue is
///   full, a newcomer takes the place of the latest sign-in of the address with the most waiting
///   when that address has more waiting than the newcomer's would with it; so one sign-in from
///   an address with none waiting gets a place whatever the flood, unless every place is held by
///   an address with one waiting.
/// - A sign-in that waited [`WAIT_MAX`] is refused, to be sent again.
///
/// Addresses that earned a token in the last [`TRUSTED_FOR`] go first: their turns come
/// before the others', and they take the places of the others' sign-ins when the queue is full.
/// The preference is by address, never by the name a sign-in gives: were a name of the
/// directory preferred, a flood's owner would see which names get through while made-up ones are
/// refused, and so learn the directory's names; every sign-in takes its place before its name
/// is looked at, so the queue treats a known name and an unknown one alike, as the hash does. An
/// address earns its place only with a right password (and code), which a guesser does not have;
/// one who shares the address of a user who signed in (a NAT) gets its place, and still no more
/// than [`PER_ADDRESS`] at once and its budget of failures.
#[derive(Debug)]
pub struct SignInQueue {
    /// Sign-ins hashed at once: the hashing slots.
    slots: usize,
    /// Most sign-ins waiting.
    max_waiting: usize,
    /// Most sign-ins of one address under way.
    per_address: usize,
    /// Longest wait.
    wait_max: Duration,
    state: Mutex<Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    /// The sign-ins of each address that has some under way.
    lines: HashMap<Place, Line>,
    /// The addresses with sign-ins waiting, in the order their turns come: those that signed in
    /// lately first ([`Class`]).
    turns: [VecDeque<Place>; 2],
    /// Sign-ins waiting.
    waiting: usize,
    /// Sign-ins whose turn came and whose hash is not yet done.
    hashing: usize,
    next_id: u64,
    /// When each address last earned a token.
    signed_in: HashMap<IpAddr, Instant>,
    /// How long a turn lasts, on average.
    mean_turn: Option<Duration>,
    /// Sign-ins refused since the last summary in the log, by [`Shed::index`].
    shed: [u64; 4],
    /// When a summary was last logged.
    told_at: Option<Instant>,
}

/// Which addresses' turns come first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// It earned a token lately.
    SignedIn = 0,
    Other = 1,
}

/// One address's sign-ins under way.
#[derive(Debug)]
struct Line {
    class: Class,
    /// Those waiting, oldest first: each told its turn through its sender.
    waiting: VecDeque<(u64, tokio::sync::oneshot::Sender<()>)>,
    /// Those whose turn came.
    hashing: usize,
}

impl Default for SignInQueue {
    fn default() -> Self {
        let slots = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Self::new(slots, WAITING_PER_SLOT * slots, PER_ADDRESS, WAIT_MAX)
    }
}

impl Queue {
    fn class(&self, place: Place, now: Instant) -> Class {
        let lately = place
            .and_then(|ip| self.signed_in.get(&ip))
            .is_some_and(|at| now.saturating_duration_since(*at) < TRUSTED_FOR);
        if lately {
            Class::SignedIn
        } else {
            Class::Other
        }
    }

    /// Gives turns while slots are free: round the addresses with sign-ins waiting.
    fn give_turns(&mut self, slots: usize) {
        while self.hashing < slots {
            let Some(place) = self.turns.iter_mut().find_map(VecDeque::pop_front) else {
                return;
            };
            let Some(line) = self.lines.get_mut(&place) else {
                continue;
            };
            let Some((_, tell)) = line.waiting.pop_front() else {
                continue;
            };
            self.waiting -= 1;
            if !line.waiting.is_empty() {
                self.turns[line.class as usize].push_back(place);
            }
            // Its waiter is still there: one that goes removes itself under this lock.
            if tell.send(()).is_ok() {
                line.hashing += 1;
                self.hashing += 1;
            } else if line.waiting.is_empty() && line.hashing == 0 {
                self.lines.remove(&place);
            }
        }
    }

    /// Forgets `place`'s line once nothing of it is under way, and its turn once none waits.
    fn tidy(&mut self, place: Place) {
        let Some(line) = self.lines.get(&place) else {
            return;
        };
        if line.waiting.is_empty() {
            let class = line.class as usize;
            self.turns[class].retain(|p| *p != place);
            if line.hashing == 0 {
                self.lines.remove(&place);
            }
        }
    }

    /// Counts a refusal by a queue of `limits` (sign-ins under way per address, longest wait);
    /// returns the summary due in the log, if one is.
    fn shed(&mut self, why: Shed, now: Instant, limits: (usize, Duration)) -> Option<String> {
        self.shed[why.index()] += 1;
        if self
            .told_at
            .is_some_and(|at| now.saturating_duration_since(at) < SHED_TOLD_EVERY)
        {
            return None;
        }
        self.told_at = Some(now);
        let [share, full, evicted, late] = std::mem::take(&mut self.shed);
        Some(format!(
            "sign-ins refused unchecked, too many waiting for a password check (told at most once a minute; since the line before): {full} with the queue full, {evicted} giving their place to an address with fewer waiting, {share} from an address with {} under way, {late} after waiting {} s; {} waiting now (warden_sign_ins_shed_total counts every one)",
            limits.0,
            limits.1.as_secs(),
            self.waiting,
        ))
    }

    /// How long a sign-in refused now should wait before it is sent again: about as long as
    /// those waiting take to be hashed, from one second to [`RETRY_AFTER_MAX`].
    fn retry_after(&self, slots: usize) -> Duration {
        let turn = self.mean_turn.unwrap_or(Duration::from_millis(100));
        let rounds = u32::try_from(self.waiting / slots.max(1) + 1).unwrap_or(u32::MAX);
        turn.saturating_mul(rounds)
            .clamp(Duration::from_secs(1), RETRY_AFTER_MAX)
    }
}

impl SignInQueue {
    /// A queue for `slots` hashes at once, of at most `max_waiting` sign-ins waiting and
    /// `per_address` from one address under way, each waiting `wait_max` at most.
    pub(crate) fn new(
        slots: usize,
        max_waiting: usize,
        per_address: usize,
        wait_max: Duration,
    ) -> Self {
        Self {
            slots: slots.max(1),
            max_waiting: max_waiting.max(1),
            per_address: per_address.max(1),
            wait_max,
            state: Mutex::default(),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a place in the queue for a sign-in from `source`, or refuses it at once.
    pub(crate) fn join(&self, source: Option<&str>) -> Result<Waiting<'_>, Refused> {
        self.join_at(key(source), Instant::now())
    }

    fn join_at(&self, place: Place, now: Instant) -> Result<Waiting<'_>, Refused> {
        let mut guard = self.queue();
        let q = &mut *guard;
        let (had_waiting, under_way) = q
            .lines
            .get(&place)
            .map_or((0, 0), |l| (l.waiting.len(), l.waiting.len() + l.hashing));
        let refuse = |q: &mut Queue, why| Refused {
            why,
            retry_after: q.retry_after(self.slots),
            told: q.shed(why, now, (self.per_address, self.wait_max)),
        };
        if under_way >= self.per_address {
            return Err(refuse(q, Shed::AddressShare));
        }
        let class = match q.lines.get(&place) {
            Some(line) => line.class,
            None => q.class(place, now),
        };
        let mut evicted = None;
        if q.waiting >= self.max_waiting {
            // The heaviest line: of the class that goes last, with the most waiting, and of
            // those the one whose latest sign-in came last.
            let heaviest = q
                .lines
                .iter()
                .filter_map(|(p, l)| {
                    let latest = l.waiting.back()?.0;
                    Some((*p, (l.class, l.waiting.len()), latest))
                })
                .max_by_key(|(_, weight, latest)| (*weight, *latest))
                .map(|(p, weight, _)| (p, weight));
            match heaviest {
                Some((victim, weight)) if weight > (class, had_waiting + 1) => {
                    evicted = q.lines.get_mut(&victim).and_then(|l| l.waiting.pop_back());
                    q.waiting -= 1;
                    q.tidy(victim);
                }
                _ => return Err(refuse(q, Shed::Full)),
            }
        }
        let id = q.next_id;
        q.next_id += 1;
        let (tell, told) = tokio::sync::oneshot::channel();
        let line = q.lines.entry(place).or_insert_with(|| Line {
            class,
            waiting: VecDeque::new(),
            hashing: 0,
        });
        line.waiting.push_back((id, tell));
        if line.waiting.len() == 1 {
            q.turns[class as usize].push_back(place);
        }
        q.waiting += 1;
        q.give_turns(self.slots);
        // Told its refusal once it looks for its turn.
        drop(evicted);
        Ok(Waiting {
            queue: self,
            place,
            id,
            joined: now,
            told: Some(told),
        })
    }

    /// Remembers that a sign-in from `source` earned a token: its address goes first for
    /// [`TRUSTED_FOR`].
    pub(crate) fn signed_in(&self, source: Option<&str>) {
        self.signed_in_at(key(source), Instant::now());
    }

    fn signed_in_at(&self, place: Place, now: Instant) {
        let Some(ip) = place else { return };
        let mut q = self.queue();
        if q.signed_in.len() >= TRUSTED_MAX && !q.signed_in.contains_key(&ip) {
            q.signed_in
                .retain(|_, at| now.saturating_duration_since(*at) < TRUSTED_FOR);
            if q.signed_in.len() >= TRUSTED_MAX
                && let Some(oldest) = q
                    .signed_in
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(k, _)| *k)
            {
                q.signed_in.remove(&oldest);
            }
        }
        q.signed_in.insert(ip, now);
    }

    /// Sign-ins waiting now, and being hashed.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let q = self.queue();
        (q.waiting, q.hashing)
    }
}

/// A sign-in's place in the [`SignInQueue`], until its turn comes ([`Waiting::turn`]); dropped
/// before, it leaves the queue.
#[derive(Debug)]
pub(crate) struct Waiting<'a> {
    queue: &'a SignInQueue,
    place: Place,
    id: u64,
    joined: Instant,
    /// Told when its turn comes; dropped unsent when its place is taken. `None` once the turn
    /// is taken or the refusal known.
    told: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl<'a> Waiting<'a> {
    /// Waits for this sign-in's turn, until the queue's longest wait from when it joined; the
    /// turn lasts until the result is dropped.
    pub(crate) async fn turn(mut self) -> Result<Turn<'a>, Refused> {
        let left = self.queue.wait_max.saturating_sub(self.joined.elapsed());
        let why = match self.told.as_mut() {
            Some(told) => match tokio::time::timeout(left, told).await {
                Ok(Ok(())) => {
                    self.told = None;
                    return Ok(Turn {
                        queue: self.queue,
                        place: self.place,
                        began: Instant::now(),
                    });
                }
                Ok(Err(_)) => {
                    self.told = None;
                    Shed::Evicted
                }
                // Left in place: dropped below, it leaves the queue (or its turn, come now).
                Err(_) => Shed::Deadline,
            },
            None => Shed::Evicted,
        };
        let queue = self.queue;
        drop(self);
        let mut q = queue.queue();
        Err(Refused {
            why,
            retry_after: q.retry_after(queue.slots),
            told: q.shed(why, Instant::now(), (queue.per_address, queue.wait_max)),
        })
    }
}

#[cfg(test)]
impl Waiting<'_> {
    /// Whether its turn has come.
    fn has_turn(&self) -> bool {
        self.told.as_ref().is_some_and(|t| !t.is_empty())
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let Some(told) = self.told.as_mut() else {
            return;
        };
        let mut guard = self.queue.queue();
        let q = &mut *guard;
        let Some(line) = q.lines.get_mut(&self.place) else {
            return;
        };
        if let Some(at) = line.waiting.iter().position(|(id, _)| *id == self.id) {
            line.waiting.remove(at);
            q.waiting -= 1;
            q.tidy(self.place);
        } else if told.try_recv().is_ok() {
            // Its turn came as it went: handed on.
            line.hashing -= 1;
            q.hashing -= 1;
            q.tidy(self.place);
            q.give_turns(self.queue.slots);
        }
    }
}

/// A sign-in's turn to be hashed: the next one's comes once it is dropped.
#[derive(Debug)]
pub(crate) struct Turn<'a> {
    queue: &'a SignInQueue,
    place: Place,
    began: Instant,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let took = self.began.elapsed();
        let mut q = self.queue.queue();
        // An average over the last eight turns or so.
        q.mean_turn = Some(match q.mean_turn {
            Some(mean) => (mean * 7 + took) / 8,
            None => took,
        });
        if let Some(line) = q.lines.get_mut(&self.place) {
            line.hashing -= 1;
        }
        q.hashing -= 1;
        q.tidy(self.place);
        q.give_turns(self.queue.slots);
    }
}

impl App {
    /// Takes a place for a sign-in from `source` among those waiting for their password's hash
    /// ([`SignInQueue`]), or refuses it at once, unchecked.
    pub(crate) fn sign_in_place(&self, source: Option<&str>) -> Result<Waiting<'_>, AuthError> {
        self.throttles
            .sign_ins
            .join(source)
            .map_err(|r| self.shed(r))
    }

    /// Waits for the turn of a sign-in at `place`; refused, unchecked, once it has waited too
    /// long or its place was given to a sign-in of an address with fewer waiting.
    pub(crate) async fn sign_in_turn<'a>(&self, place: Waiting<'a>) -> Result<Turn<'a>, AuthError> {
        place.turn().await.map_err(|r| self.shed(r))
    }

    /// A sign-in the queue refused, as answered: counted, and told in the log in summary.
    fn shed(&self, refused: Refused) -> AuthError {
        self.metrics.add(&metrics::SIGN_INS_SHED, &[], 1);
        if let Some(told) = refused.told {
            tracing::warn!("{told}");
        }
        let wait = refused.retry_after;
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        match refused.why {
            Shed::AddressShare => AuthError::SignInsFromAddress(secs),
            Shed::Full | Shed::Evicted | Shed::Deadline => AuthError::SignInsBusy(secs),
        }
    }

    /// Refuses an authentication attempt from an address that has spent its failures.
    pub(crate) fn check_source(&self, source: Option<&str>) -> Result<(), AuthError> {
        match self.throttles.throttled_until(source, Clocks::now()) {
            Some(until) => {
                self.metrics.add(&metrics::AUTH_THROTTLED, &[], 1);
                Err(AuthError::Throttled(until))
            }
            None => Ok(()),
        }
    }

    /// Audits a failed authentication and counts it against its actor's address; the failure
    /// that spends the address's budget is audited with the throttle it starts, in the same
    /// commit.
    pub(crate) async fn auth_failed(&self, event: Event) -> Result<(), AuthError> {
        let source = event.actor.source.clone();
        let mut events = vec![event];
        let at = Clocks::now();
        let t = at.wall;
        if let Some(until) = self.throttles.failed(source.as_deref(), at) {
            events.push(
                Event::new(
                    Code::SourceThrottled,
                    Actor {
                        source,
                        ..Actor::default()
                    },
                    t,
                )
                .details(serde_json::json!({
                    "failures": BURST,
                    "until": warden_domain::rfc3339(until),
                })),
            );
        }
        self.store.append(events).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Addresses 192.0.2.`i`.
    fn at(i: u8) -> Place {
        Some(IpAddr::V4([192, 0, 2, i].into()))
    }

    fn queue(slots: usize, waiting: usize, per_address: usize) -> SignInQueue {
        SignInQueue::new(slots, waiting, per_address, Duration::from_secs(60))
    }

    /// One address that sent five at once waits for its own: another's one sign-in comes
    /// after the first address's next, not after all of them.
    #[tokio::test]
    async fn turns_go_round_the_addresses_not_by_arrival() {
        let q = queue(1, 16, 20);
        let t0 = Instant::now();
        let mut a: VecDeque<_> = (0..5).map(|_| q.join_at(at(1), t0).unwrap()).collect();
        let b = q.join_at(at(2), t0).unwrap();
        assert_eq!(q.counts(), (5, 1));
        let first = a.pop_front().unwrap().turn().await.unwrap();
        drop(first);
        assert!(a[0].has_turn() && !b.has_turn());
        let second = a.pop_front().unwrap().turn().await.unwrap();
        drop(second);
        assert!(
            b.has_turn() && !a[0].has_turn(),
            "b waits for a's three others"
        );
        let b = b.turn().await.unwrap();
        assert_eq!(q.counts(), (3, 1));
        drop(b);
        assert!(a[0].has_turn());
    }

    /// A full queue refuses at once a sign-in from an address with as many waiting as any
    /// other, and gives one from an address with fewer the place of the latest sign-in of the
    /// address with the most, which is told so.
    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_gives_a_newcomer_the_place_of_the_heaviest() {
        let q = queue(1, 4, 20);
        let t0 = Instant::now();
        let hashing = q.join_at(at(1), t0).unwrap();
        let a: Vec<_> = (0..4).map(|_| q.join_at(at(1), t0).unwrap()).collect();
        assert_eq!(q.counts(), (4, 1));
        let refused = q.join_at(at(1), t0).unwrap_err();
        assert_eq!(refused.why, Shed::Full);
        assert!(refused.retry_after >= Duration::from_secs(1));
        // A newcomer takes the place of a's latest.
        let b = q.join_at(at(2), t0).unwrap();
        assert_eq!(q.counts(), (4, 1));
        let mut a = a;
        let evicted = a.pop().unwrap().turn().await.unwrap_err();
        assert_eq!(evicted.why, Shed::Evicted);
        // Two each now: a third from b is refused, as is one from a; c gets the place of the
        // latest of the two addresses' (b's second).
        let b2 = q.join_at(at(2), t0).unwrap();
        assert_eq!(q.counts(), (4, 1));
        assert_eq!(
            a.pop().unwrap().turn().await.unwrap_err().why,
            Shed::Evicted
        );
        assert_eq!(q.join_at(at(2), t0).unwrap_err().why, Shed::Full);
        assert_eq!(q.join_at(at(1), t0).unwrap_err().why, Shed::Full);
        let c = q.join_at(at(3), t0).unwrap();
        assert_eq!(q.counts(), (4, 1));
        assert_eq!(b2.turn().await.unwrap_err().why, Shed::Evicted);
        // Nothing was left behind: each goes in turn, and the queue empties.
        drop(hashing.turn().await.unwrap());
        let mut left: Vec<_> = a.into_iter().chain([b, c]).collect();
        while !left.is_empty() {
            let next = left.iter().position(Waiting::has_turn).unwrap();
            drop(left.remove(next).turn().await.unwrap());
        }
        assert_eq!(q.counts(), (0, 0));
        assert!(q.queue().lines.is_empty());
        assert!(q.queue().turns.iter().all(VecDeque::is_empty));
    }

    /// An address may have its share under way (waiting or hashed) and no more: the next is
    /// refused at once, whatever room the queue has, and may come once one is done.
    #[tokio::test]
    async fn an_address_has_its_share_under_way_at_most() {
        let q = queue(2, 100, 3);
        let t0 = Instant::now();
        let mut mine: Vec<_> = (0..3).map(|_| q.join_at(at(1), t0).unwrap()).collect();
        assert_eq!(q.join_at(at(1), t0).unwrap_err().why, Shed::AddressShare);
        // An IPv4 address's neighbour is another address.
        let other = q.join_at(at(2), t0).unwrap();
        let done = mine.remove(0).turn().await.unwrap();
        assert_eq!(q.join_at(at(1), t0).unwrap_err().why, Shed::AddressShare);
        drop(done);
        mine.push(q.join_at(at(1), t0).unwrap());
        drop(other);
        drop(mine);
        assert_eq!(q.counts(), (0, 0));
    }

    /// An address that earned a token goes first, and takes the place of a sign-in of another
    /// address even when the queue holds no more of that one's than of its own.
    #[tokio::test]
    async fn an_address_that_signed_in_goes_first() {
        let q = queue(1, 2, 20);
        let t0 = Instant::now();
        let hashing = q.join_at(at(1), t0).unwrap();
        let a = q.join_at(at(1), t0).unwrap();
        let b = q.join_at(at(2), t0).unwrap();
        assert_eq!(q.join_at(at(3), t0).unwrap_err().why, Shed::Full);
        q.signed_in_at(at(9), t0);
        let known = q.join_at(at(9), t0).unwrap();
        // b's place was taken (the latest of the heaviest: one each, b came last).
        assert_eq!(b.turn().await.unwrap_err().why, Shed::Evicted);
        drop(hashing.turn().await.unwrap());
        assert!(known.has_turn() && !a.has_turn());
        drop(known.turn().await.unwrap());
        assert!(a.has_turn());
        drop(a);
        // Its preference lasts a while, not for ever.
        let later = t0 + TRUSTED_FOR;
        assert_eq!(q.queue().class(at(9), t0), Class::SignedIn);
        assert_eq!(q.queue().class(at(9), later), Class::Other);
        assert_eq!(q.queue().class(None, t0), Class::Other);
        assert_eq!(q.counts(), (0, 0));
    }

    /// The addresses remembered for their sign-ins are bounded: the oldest is forgotten.
    #[test]
    fn the_addresses_remembered_are_bounded() {
        let q = queue(1, 1, 1);
        let t0 = Instant::now();
        for i in 0..TRUSTED_MAX as u32 + 10 {
            let ip = IpAddr::V4((0x0a00_0000 + i).into());
            q.signed_in_at(Some(ip), t0 + Duration::from_millis(u64::from(i)));
        }
        let remembered = &q.queue().signed_in;
        assert_eq!(remembered.len(), TRUSTED_MAX);
        assert!(!remembered.contains_key(&IpAddr::V4(0x0a00_0000.into())));
        assert!(remembered.contains_key(&IpAddr::V4((0x0a00_0000 + 10).into())));
    }

    /// A sign-in that waits past the longest wait is refused and leaves the queue; one dropped
    /// while waiting leaves it too, and one dropped as its turn came hands the turn on.
    #[tokio::test]
    async fn a_sign_in_waits_so_long_and_no_turn_is_lost() {
        let q = SignInQueue::new(1, 10, 20, Duration::from_millis(50));
        let hashing = q.join(Some("192.0.2.1")).unwrap().turn().await.unwrap();
        let late = q.join(Some("192.0.2.1")).unwrap();
        let gone = q.join(Some("192.0.2.2")).unwrap();
        let handed_on = q.join(Some("192.0.2.3")).unwrap();
        let next = q.join(Some("192.0.2.4")).unwrap();
        let refused = late.turn().await.unwrap_err();
        assert_eq!(refused.why, Shed::Deadline);
        drop(gone);
        assert_eq!(q.counts(), (2, 1));
        drop(hashing);
        assert!(handed_on.has_turn());
        drop(handed_on);
        assert!(next.has_turn());
        drop(next);
        assert_eq!(q.counts(), (0, 0));
        assert!(q.queue().lines.is_empty());
    }

    /// Refusals are told in the log once per interval at most, each line with the counts since
    /// the one before.
    #[test]
    fn refusals_are_told_in_summary() {
        let mut q = Queue::default();
        let t0 = Instant::now();
        let wait = (20, Duration::from_secs(15));
        let first = q.shed(Shed::Full, t0, wait).unwrap();
        assert!(first.contains("1 with the queue full"), "{first}");
        for _ in 0..1000 {
            assert_eq!(
                q.shed(Shed::Evicted, t0 + Duration::from_secs(1), wait),
                None
            );
        }
        q.shed(Shed::AddressShare, t0 + Duration::from_secs(2), wait);
        let next = q.shed(Shed::Deadline, t0 + SHED_TOLD_EVERY, wait).unwrap();
        assert!(
            next.contains("0 with the queue full, 1000 giving their place")
                && next.contains("1 from an address with 20 under way")
                && next.contains("1 after waiting 15 s"),
            "{next}"
        );
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_network_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            key(Some("2001:db8:1:2:aaaa::1")),
            key(Some("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(key(Some("2001:db8:1:2::1")), key(Some("2001:db8:1:3::1")));
        assert_eq!(key(Some("::ffff:192.0.2.7")), key(Some("192.0.2.7")));
        assert_ne!(key(Some("192.0.2.7")), key(Some("192.0.2.8")));
        assert_eq!(key(None), None);
        assert_eq!(key(Some("not an address")), None);
    }

    #[test]
    fn a_full_table_drops_whole_budgets_and_leaves_new_addresses_uncounted_while_all_are_spent() {
        let throttles = SourceThrottles::default();
        let at = Clocks::now();
        let t = at.mono;
        {
            let mut b = throttles.budgets();
            let mut spent = FailureBudget::default();
            for _ in 0..BURST {
                spent.failed(t);
            }
            for i in 0..MAX_ADDRESSES as u32 {
                b.by_address.insert(IpAddr::V4(i.into()), spent);
            }
        }
        let newcomer = Some("203.0.113.9");
        for _ in 0..BURST {
            assert_eq!(throttles.failed(newcomer, at), None);
        }
        assert_eq!(throttles.throttled_until(newcomer, at), None);
        // The table was swept once, not once per failure.
        assert_eq!(throttles.budgets().swept_at, Some(t));
        // Once the others' budgets are whole again, the newcomer is counted.
        let later = Clocks {
            mono: t + REFILL * BURST,
            wall: at.wall + REFILL * BURST,
        };
        throttles.failed(newcomer, later);
        assert_eq!(throttles.budgets().by_address.len(), 1);
    }

    /// The wall clock stepped ten minutes back between an address's failures and its next
    /// attempt, a second later: one failure throttles it for nothing, and a spent budget for
    /// the two seconds left of its refill, not for the step.
    #[test]
    fn a_step_back_of_the_wall_clock_neither_throttles_nor_lengthens_a_throttle() {
        let throttles = SourceThrottles::default();
        let before = Clocks::now();
        let after = Clocks {
            mono: before.mono + std::time::Duration::from_secs(1),
            wall: before.wall - time::Duration::minutes(10) + time::Duration::seconds(1),
        };
        let once = Some("198.51.100.1");
        assert_eq!(throttles.failed(once, before), None);
        assert_eq!(throttles.throttled_until(once, after), None);

        let spent = Some("198.51.100.2");
        for _ in 0..BURST - 1 {
            assert_eq!(throttles.failed(spent, before), None);
        }
        assert_eq!(
            throttles.failed(spent, before),
            Some(before.wall + REFILL),
            "the throttle ends a refill after the failure that started it"
        );
        assert_eq!(
            throttles.throttled_until(spent, after),
            Some(after.wall + time::Duration::seconds(2))
        );
        let whole = Clocks {
            mono: before.mono + REFILL,
            wall: after.wall + time::Duration::seconds(2),
        };
        assert_eq!(throttles.throttled_until(spent, whole), None);
    }
}
