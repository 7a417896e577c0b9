//! Approval tiers and whether the approvals given so far satisfy them.
//!
//! A [`Requirement`] is a conjunction of [`Clause`]s, written in policies as
//! `peer(sre) & manager` or `two-person(security)`; `auto` is the empty conjunction. Each clause
//! expands into *slots* that distinct approvers fill. One person fills at most one slot, so a
//! manager who is also an SRE cannot satisfy `peer(sre) & manager` alone. A peer clause asks
//! only for the approvers a narrower clause does not already bring from its groups: permits
//! combined by AND that ask for `peer(sre)` and `peer(sre|dba)` need one SRE, not two people.
//! Whether a set of approvers satisfies a requirement is a bipartite matching between
//! approvers and slots.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::directory::User;
use crate::names::{GroupName, UserName};

/// One conjunct of an approval requirement.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Clause {
    /// `count` approvers, each a member of at least one of `groups`.
    Peer {
        groups: BTreeSet<GroupName>,
        count: u8,
    },
    /// The requester's manager, as the directory names them.
    Manager,
    /// Two distinct approvers, at least one of them a member of `security`.
    TwoPerson { security: GroupName },
}

/// What must approve a request before it is granted. Empty means `auto`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Requirement {
    clauses: Vec<Clause>,
}

/// Why a tier expression does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid approval tier {expr:?}: {why}. Write `auto`, or clauses joined by `&` from peer(GROUP[|GROUP...][, COUNT]), manager, two-person(SECURITY_GROUP)"
)]
pub struct TierError {
    expr: String,
    why: String,
}

impl Requirement {
    /// The `auto` tier: granted without any approval.
    pub fn auto() -> Self {
        Self::default()
    }

    /// Whether no approval is needed.
    pub fn is_auto(&self) -> bool {
        self.clauses.is_empty()
    }

    /// The clauses, in canonical order.
    pub fn clauses(&self) -> &[Clause] {
        &self.clauses
    }

    /// The groups whose members its clauses take approvers from, each once.
    pub fn groups(&self) -> BTreeSet<&GroupName> {
        self.clauses
            .iter()
            .flat_map(|c| match c {
                Clause::Peer { groups, .. } => groups.iter().collect(),
                Clause::TwoPerson { security } => vec![security],
                Clause::Manager => Vec::new(),
            })
            .collect()
    }

    /// The tier's shape without its groups and counts, for metric labels and reports: `auto`,
    /// `peer`, `manager`, `two-person`, or kinds joined by `+` such as `peer+manager`. At most
    /// eight values whatever the policy says.
    pub fn tier(&self) -> &'static str {
        let has = |f: fn(&Clause) -> bool| self.clauses.iter().any(f);
        let peer = has(|c| matches!(c, Clause::Peer { .. }));
        let manager = has(|c| matches!(c, Clause::Manager));
        let two = has(|c| matches!(c, Clause::TwoPerson { .. }));
        match (peer, manager, two) {
            (false, false, false) => "auto",
            (true, false, false) => "peer",
            (false, true, false) => "manager",
            (false, false, true) => "two-person",
            (true, true, false) => "peer+manager",
            (true, false, true) => "peer+two-person",
            (false, true, true) => "manager+two-person",
            (true, true, true) => "peer+manager+two-person",
        }
    }

    /// The strictest combination of two requirements: both must hold. Peer clauses over the
    /// same groups keep the higher count; identical clauses are kept once; and a peer clause
    /// the others fill anyway (`peer(dba|sre)` beside `peer(sre)`: the SRE counts for both) is
    /// left out, so the tier reads as what it asks.
    pub fn and(&self, other: &Requirement) -> Requirement {
        let mut clauses = self.clauses.clone();
        for c in &other.clauses {
            match c {
                Clause::Peer { groups, count } => {
                    if let Some(Clause::Peer { count: have, .. }) = clauses
                        .iter_mut()
                        .find(|x| matches!(x, Clause::Peer { groups: g, .. } if g == groups))
                    {
                        *have = (*have).max(*count);
                    } else {
                        clauses.push(c.clone());
                    }
                }
                _ if clauses.contains(c) => {}
                _ => clauses.push(c.clone()),
            }
        }
        clauses.sort();
        let all = Requirement { clauses };
        let clauses = all
            .clauses
            .iter()
            .filter(|c| match c {
                Clause::Peer { groups, count } => all.brought(groups) < *count,
                _ => true,
            })
            .cloned()
            .collect();
        Requirement { clauses }
    }

    /// How many of the approvers a peer clause over `groups` asks for the other clauses bring
    /// anyway: the places of the peer clauses over fewer of them (each narrower clause's own,
    /// after what it is brought in turn, so that no one is counted twice), and a two-person
    /// tier's member of one.
    fn brought(&self, groups: &BTreeSet<GroupName>) -> u8 {
        self.clauses
            .iter()
            .map(|other| match other {
                Clause::Peer {
                    groups: g,
                    count: n,
                } if g != groups && g.is_subset(groups) => n.saturating_sub(self.brought(g)),
                Clause::TwoPerson { security } if groups.contains(security) => 1,
                _ => 0,
            })
            .fold(0, u8::saturating_add)
    }

    /// The places approvers fill, the most particular first (see [`Slot::rank`]). A
    /// two-person tier's second approver may be anyone, unless the other places already ask
    /// for someone beside its security member: each place takes a person of its own.
    fn slots(&self) -> Vec<Slot<'_>> {
        let mut slots = Vec::new();
        let mut two_person = false;
        for c in &self.clauses {
            match c {
                Clause::Peer { groups, count } => {
                    // Approvers a narrower clause brings from these groups count here too.
                    let brought = self.brought(groups);
                    slots.extend((brought..*count).map(|_| Slot::AnyOf(groups)));
                }
                Clause::Manager => slots.push(Slot::Manager),
                Clause::TwoPerson { security } => {
                    slots.push(Slot::Member(security));
                    two_person = true;
                }
            }
        }
        if two_person && slots.len() < 2 {
            slots.push(Slot::Anyone);
        }
        slots.sort_by_key(|s| (s.rank(), s.breadth()));
        slots
    }

    /// Evaluates `approvers` (people who approved, as they were when they acted) for a request
    /// made by `requester`. The requester and repeated names never count.
    pub fn progress<'a>(
        &self,
        requester: &User,
        approvers: impl IntoIterator<Item = &'a User>,
    ) -> Progress {
        let slots = self.slots();
        let people = distinct_others(requester, approvers);
        let fillers = as_fillers(&people);
        let assignment = max_matching(&slots, &fillers, requester);
        // Open places alike (a clause's count) are named once, with how many.
        let mut open: Vec<(Wanted<'_>, usize)> = Vec::new();
        for wanted in self.still_wanted(&slots, &fillers, &assignment, requester) {
            match open.last_mut() {
                Some((last, n)) if *last == wanted => *n += 1,
                _ => open.push((wanted, 1)),
            }
        }
        let missing = open.iter().map(|(wanted, n)| wanted.describe(*n)).collect();
        Progress {
            satisfied: assignment.iter().all(Option::is_some),
            missing,
            counted: assignment
                .iter()
                .flatten()
                .map(|&p| people[p].name.clone())
                .collect(),
        }
    }

    /// The places `assignment` (a maximum matching of `fillers`) leaves open, as people are told
    /// of them. Each is widened to every other group of the tier one more of whose members would
    /// fill a place as well, the others who approved moving to the place they leave open (one
    /// in `sre` and `dba` who approved `peer(sre) & peer(dba)` leaves open a place for either),
    /// so long as any newcomers, one per place and each a member of any one group named for it,
    /// still fill every place: each group said is one whose member counts.
    fn still_wanted<'a>(
        &'a self,
        slots: &[Slot<'a>],
        fillers: &[Filler<'a>],
        assignment: &[Option<usize>],
        requester: &User,
    ) -> Vec<Wanted<'a>> {
        let mut wanted: Vec<Wanted<'a>> = slots
            .iter()
            .zip(assignment)
            .filter(|(_, a)| a.is_none())
            .map(|(slot, _)| slot.wanted())
            .collect();
        let groups = self.groups();
        for i in 0..wanted.len() {
            for &g in &groups {
                let mut trial = wanted.clone();
                let Wanted::From(from) = &mut trial[i] else {
                    break;
                };
                if from.insert(g) && every_choice_fills(slots, fillers, &trial, requester) {
                    wanted = trial;
                }
            }
        }
        wanted
    }

    /// Whether `candidate`'s approval would count, given those already given: they are not the
    /// requester, have not approved yet, and adding them fills one more slot.
    pub fn would_count(&self, requester: &User, approvers: &[User], candidate: &User) -> bool {
        if candidate.name == requester.name || approvers.iter().any(|a| a.name == candidate.name) {
            return false;
        }
        let slots = self.slots();
        let before = distinct_others(requester, approvers);
        let mut after = before.clone();
        after.push(candidate);
        let filled = |people: &[&User]| {
            max_matching(&slots, &as_fillers(people), requester)
                .iter()
                .filter(|a| a.is_some())
                .count()
        };
        filled(&after) > filled(&before)
    }

    /// Whether `candidate` could fill any slot at all; such a person may deny the request.
    pub fn may_review(&self, requester: &User, candidate: &User) -> bool {
        candidate.name != requester.name
            && self.slots().iter().any(|s| s.accepts(candidate, requester))
    }

    /// Whether this requirement names `candidate` as a reviewer of `requester`'s requests: a
    /// member of a group it lists, or the requester's manager. Unlike [`may_review`]
    /// (Self::may_review), a two-person tier's "anyone else" does not count: every user is
    /// that.
    pub fn names_reviewer(&self, requester: &User, candidate: &User) -> bool {
        candidate.name != requester.name
            && self
                .slots()
                .iter()
                .any(|s| !matches!(s, Slot::Anyone) && s.accepts(candidate, requester))
    }
}

/// The approvers who count at all: not the requester, each once, the requester's manager
/// first. Matched first, against the most particular place first, the manager fills the
/// manager's place, which no one else could; the places left open are then those someone who
/// has not approved yet could fill.
fn distinct_others<'a>(
    requester: &User,
    approvers: impl IntoIterator<Item = &'a User>,
) -> Vec<&'a User> {
    let mut seen = BTreeSet::new();
    let mut people: Vec<&User> = approvers
        .into_iter()
        .filter(|a| a.name != requester.name && seen.insert(&a.name))
        .collect();
    people.sort_by_key(|a| requester.manager.as_ref() != Some(&a.name));
    people
}

/// The most choices of newcomers [`every_choice_fills`] tries: beyond them a place is named
/// as the matching left it open, which is true if perhaps not all that would do.
const CHOICES: usize = 64;

/// Whether newcomers, one per place of `wanted`, each any one of what it names for that place,
/// fill every slot beside `fillers` however they are chosen. False where there are more than
/// [`CHOICES`] ways to choose them.
fn every_choice_fills(
    slots: &[Slot<'_>],
    fillers: &[Filler<'_>],
    wanted: &[Wanted<'_>],
    requester: &User,
) -> bool {
    let options: Vec<Vec<Filler<'_>>> = wanted.iter().map(Wanted::newcomers).collect();
    let Some(ways) = options.iter().try_fold(1usize, |n, o| {
        n.checked_mul(o.len()).filter(|&n| n <= CHOICES)
    }) else {
        return false;
    };
    (0..ways).all(|mut way| {
        let mut all = fillers.to_vec();
        for o in &options {
            all.push(o[way % o.len()]);
            way /= o.len();
        }
        max_matching(slots, &all, requester)
            .iter()
            .all(Option::is_some)
    })
}

/// Those who approved, as places take them.
fn as_fillers<'a>(people: &[&'a User]) -> Vec<Filler<'a>> {
    people.iter().map(|&p| Filler::Approver(p)).collect()
}

/// Someone who may fill a place: one who approved, or one yet to come, who is only what a place
/// still open asks for.
#[derive(Debug, Clone, Copy)]
enum Filler<'a> {
    Approver(&'a User),
    /// A member of this group and of no other.
    Member(&'a GroupName),
    /// The requester's manager, in none of the tier's groups.
    Manager,
    /// Anyone else, in none of the tier's groups.
    Other,
}

/// A place still open, as people are told of it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wanted<'a> {
    /// A member of any of these groups would fill it.
    From(BTreeSet<&'a GroupName>),
    Manager,
    Anyone,
}

impl<'a> Wanted<'a> {
    /// The newcomers, one of whom fills it.
    fn newcomers(&self) -> Vec<Filler<'a>> {
        match self {
            Wanted::From(groups) => groups.iter().map(|&g| Filler::Member(g)).collect(),
            Wanted::Manager => vec![Filler::Manager],
            Wanted::Anyone => vec![Filler::Other],
        }
    }

    /// `n` open places like this one, for people: `2 approvers from sre`.
    fn describe(&self, n: usize) -> String {
        match self {
            Wanted::From(groups) => {
                let groups = groups
                    .iter()
                    .map(|g| g.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ");
                match n {
                    1 => format!("an approver from {groups}"),
                    n => format!("{n} approvers from {groups}"),
                }
            }
            Wanted::Manager => "the requester's manager".to_owned(),
            Wanted::Anyone if n == 1 => "a second approver".to_owned(),
            Wanted::Anyone => format!("{n} more approvers"),
        }
    }
}

/// What the approvals given so far achieve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub satisfied: bool,
    /// Human descriptions of the slots still open, e.g. `an approver from sre`.
    pub missing: Vec<String>,
    /// The approvers who fill a place: an approval given by anyone else counts for nothing
    /// under this tier (its giver is not, or no longer, one it names, or the place they could
    /// fill is someone else's).
    #[serde(default)]
    pub counted: Vec<UserName>,
}

#[derive(Debug, Clone, Copy)]
enum Slot<'a> {
    AnyOf(&'a BTreeSet<GroupName>),
    Member(&'a GroupName),
    Manager,
    Anyone,
}

impl<'a> Slot<'a> {
    /// How few people could fill it: one (the manager), a named group's members, several
    /// groups' members, anyone.
    fn rank(&self) -> u8 {
        match self {
            Slot::Manager => 0,
            Slot::Member(_) => 1,
            Slot::AnyOf(_) => 2,
            Slot::Anyone => 3,
        }
    }

    /// How many groups it takes approvers from: among places of one rank, the narrower is
    /// filled first, so what stays open is what the most people could still give.
    fn breadth(&self) -> usize {
        match self {
            Slot::AnyOf(groups) => groups.len(),
            _ => 0,
        }
    }

    fn accepts(&self, who: &User, requester: &User) -> bool {
        self.takes(Filler::Approver(who), requester)
    }

    fn takes(&self, who: Filler<'_>, requester: &User) -> bool {
        match (self, who) {
            (Slot::Anyone, _) => true,
            (Slot::AnyOf(groups), Filler::Approver(u)) => groups.iter().any(|g| u.in_group(g)),
            (Slot::AnyOf(groups), Filler::Member(g)) => groups.contains(g),
            (Slot::Member(g), Filler::Approver(u)) => u.in_group(g),
            (Slot::Member(g), Filler::Member(m)) => *g == m,
            (Slot::Manager, Filler::Approver(u)) => requester.manager.as_ref() == Some(&u.name),
            (Slot::Manager, Filler::Manager) => true,
            _ => false,
        }
    }

    /// What it asks for, as an open place.
    fn wanted(&self) -> Wanted<'a> {
        match *self {
            Slot::AnyOf(groups) => Wanted::From(groups.iter().collect()),
            Slot::Member(g) => Wanted::From(BTreeSet::from([g])),
            Slot::Manager => Wanted::Manager,
            Slot::Anyone => Wanted::Anyone,
        }
    }
}

/// Maximum bipartite matching of people to slots by augmenting paths (Kuhn's algorithm).
/// Returns, for each slot, the index of the person filling it. A slot once filled stays filled
/// (an augmenting path only changes who fills it), so the first person takes the first slot
/// they fit and keeps it filled.
fn max_matching(slots: &[Slot<'_>], people: &[Filler<'_>], requester: &User) -> Vec<Option<usize>> {
    fn augment(
        p: usize,
        slots: &[Slot<'_>],
        people: &[Filler<'_>],
        requester: &User,
        seen: &mut [bool],
        owner: &mut [Option<usize>],
    ) -> bool {
        for s in 0..slots.len() {
            if seen[s] || !slots[s].takes(people[p], requester) {
                continue;
            }
            seen[s] = true;
            let free = match owner[s] {
                None => true,
                Some(q) => augment(q, slots, people, requester, seen, owner),
            };
            if free {
                owner[s] = Some(p);
                return true;
            }
        }
        false
    }
    let mut owner = vec![None; slots.len()];
    for p in 0..people.len() {
        // Everyone else can only change who fills a place, not how many are filled.
        if owner.iter().all(Option::is_some) {
            break;
        }
        let mut seen = vec![false; slots.len()];
        augment(p, slots, people, requester, &mut seen, &mut owner);
    }
    owner
}

impl Requirement {
    /// A requirement as a policy author writes it in `@approval`: as [`FromStr`] reads it, and
    /// refused where a clause repeats or overlaps another, which would not add the approvers
    /// it was most likely meant to (a stored combination of several rules may do either).
    pub fn written(expr: &str) -> Result<Self, TierError> {
        let clauses = clauses(expr)?;
        // Rules combined by AND share a clause (strictest wins, the larger count for the same
        // groups, a narrower peer clause's approvers counted by a broader one); written twice
        // in one tier, it was most likely meant as more approvers than that gives.
        for (i, (part, clause)) in clauses.iter().enumerate() {
            for (_, c) in &clauses[..i] {
                let problem = match (c, clause) {
                    (Clause::Peer { groups: a, .. }, Clause::Peer { groups: b, .. }) if a == b => {
                        "repeats a clause for the same approvers, which would not add to it: for several approvers from one group write peer(GROUP, N) once"
                    }
                    (Clause::Peer { groups: a, .. }, Clause::Peer { groups: b, .. })
                        if a.is_subset(b) || b.is_subset(a) =>
                    {
                        "takes its approvers from groups that include another clause's, whose approvers count for both: for one approver from each write peer(A) & peer(B) with groups apart, for several write peer(A|B, N)"
                    }
                    (c, clause) if c == clause => "is written twice: once is enough",
                    _ => continue,
                };
                return Err(TierError {
                    expr: expr.chars().take(200).collect(),
                    why: format!("`{part}` {problem}"),
                });
            }
        }
        Ok(combined(clauses))
    }
}

/// The clauses of `expr` joined by AND.
fn combined(clauses: Vec<(&str, Clause)>) -> Requirement {
    clauses
        .into_iter()
        .fold(Requirement::auto(), |req, (_, clause)| {
            req.and(&Requirement {
                clauses: vec![clause],
            })
        })
}

/// The clauses of `expr`, each with the text it was read from; none for `auto`.
fn clauses(expr: &str) -> Result<Vec<(&str, Clause)>, TierError> {
    let err = |why: &str| TierError {
        expr: expr.chars().take(200).collect(),
        why: why.to_owned(),
    };
    let t = expr.trim();
    if t == "auto" {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for part in t.split('&').map(str::trim) {
        let (head, args) = match part.split_once('(') {
            Some((h, rest)) => {
                let inner = rest.strip_suffix(')').ok_or_else(|| {
                    if rest.contains(')') {
                        err(&format!(
                            "`{part}` is not one clause: clauses are joined with `&`, and `|` separates groups inside peer(…)"
                        ))
                    } else {
                        err("missing closing parenthesis")
                    }
                })?;
                (h.trim(), Some(inner.trim()))
            }
            None => (part, None),
        };
        let clause = match (head, args) {
            ("manager", None) => Clause::Manager,
            ("manager", Some(_)) => {
                return Err(err(
                    "`manager` takes no groups or count: write it as `manager`",
                ));
            }
            ("peer", Some(a)) => {
                let (groups, count) = match a.split_once(',') {
                    Some((g, n)) => (
                        g,
                        n.trim()
                            .parse::<u8>()
                            .ok()
                            .filter(|n| (1..=5).contains(n))
                            .ok_or_else(|| err("peer count must be 1 to 5"))?,
                    ),
                    None => (a, 1),
                };
                let groups = groups
                    .split('|')
                    .map(|g| {
                        g.trim()
                            .parse::<GroupName>()
                            .map_err(|e| err(&e.to_string()))
                    })
                    .collect::<Result<BTreeSet<_>, _>>()?;
                Clause::Peer { groups, count }
            }
            ("two-person", Some(a)) => Clause::TwoPerson {
                security: a
                    .parse()
                    .map_err(|e: crate::names::NameError| err(&e.to_string()))?,
            },
            ("auto", None) => return Err(err("`auto` cannot be combined with other clauses")),
            ("", _) => return Err(err("empty clause")),
            (h, _) => return Err(err(&format!("unknown clause `{h}`"))),
        };
        out.push((part, clause));
    }
    Ok(out)
}

impl FromStr for Requirement {
    type Err = TierError;
    /// Any well-formed requirement, as stored or compared: clauses that repeat or overlap are
    /// combined as rules are ([`Requirement::and`]). Policies are read with
    /// [`Requirement::written`].
    fn from_str(expr: &str) -> Result<Self, TierError> {
        clauses(expr).map(combined)
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.clauses.is_empty() {
            return f.write_str("auto");
        }
        let parts: Vec<String> = self
            .clauses
            .iter()
            .map(|c| match c {
                Clause::Peer { groups, count } => {
                    let g = groups
                        .iter()
                        .map(GroupName::as_str)
                        .collect::<Vec<_>>()
                        .join("|");
                    if *count == 1 {
                        format!("peer({g})")
                    } else {
                        format!("peer({g}, {count})")
                    }
                }
                Clause::Manager => "manager".to_owned(),
                Clause::TwoPerson { security } => format!("two-person({security})"),
            })
            .collect();
        f.write_str(&parts.join(" & "))
    }
}

impl TryFrom<String> for Requirement {
    type Error = TierError;
    fn try_from(s: String) -> Result<Self, TierError> {
        s.parse()
    }
}

impl From<Requirement> for String {
    fn from(r: Requirement) -> String {
        r.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str], manager: Option<&str>) -> User {
        User {
            name: name.parse().unwrap(),
            groups: groups.iter().map(|g| g.parse().unwrap()).collect(),
            manager: manager.map(|m| m.parse().unwrap()),
        }
    }

    #[test]
    fn parses_canonically() {
        for (input, shown) in [
            ("auto", "auto"),
            ("manager", "manager"),
            ("peer(sre)", "peer(sre)"),
            ("peer(sre|dba, 2)", "peer(dba|sre, 2)"),
            ("manager & peer(sre)", "peer(sre) & manager"),
            (
                "two-person(security) & manager",
                "manager & two-person(security)",
            ),
        ] {
            let r: Requirement = input.parse().unwrap();
            assert_eq!(r.to_string(), shown, "{input}");
            assert_eq!(r.to_string().parse::<Requirement>().unwrap(), r);
        }
        for bad in [
            "",
            "boss",
            "peer()",
            "peer(sre",
            "auto & manager",
            "peer(sre, 9)",
            "peer(SRE)",
            "peer(sre) | manager",
            "manager()",
        ] {
            assert!(bad.parse::<Requirement>().is_err(), "{bad}");
        }
        let why = |expr: &str| Requirement::written(expr).unwrap_err().to_string();
        assert!(why("peer(sre) | manager").contains("joined with `&`"));
        assert!(why("manager()").contains("takes no groups"));
        // Written by a policy's author, a repeated or overlapping clause is refused; read back
        // (a combination of several rules, as stored), it is combined as rules are.
        for (written, combined) in [
            ("peer(sre) & peer(sre)", "repeats a clause"),
            ("peer(sre) & peer(sre, 2)", "repeats a clause"),
            ("peer(sre, 2) & peer(sre)", "repeats a clause"),
            ("peer(sre) & peer(sre|dba)", "include another clause's"),
            ("manager & manager", "written twice"),
        ] {
            assert!(
                why(written).contains(combined),
                "{written}: {}",
                why(written)
            );
            assert!(written.parse::<Requirement>().is_ok(), "{written}");
        }
        // Read back, combined as rules are: a clause the others fill anyway is left out.
        let stored: Requirement = "peer(dba|sre) & peer(sre)".parse().unwrap();
        assert_eq!(stored.to_string(), "peer(sre)");
        assert_eq!(
            Requirement::written("peer(sre) & peer(dba)")
                .unwrap()
                .to_string(),
            "peer(dba) & peer(sre)"
        );
    }

    #[test]
    fn same_person_counts_once() {
        let alice = user("alice", &["dev"], Some("mallory"));
        let mallory = user("mallory", &["sre"], None);
        let sam = user("sam", &["sre"], None);
        let r: Requirement = "peer(sre) & manager".parse().unwrap();
        assert!(!r.progress(&alice, std::slice::from_ref(&mallory)).satisfied);
        assert!(
            !r.progress(&alice, &[mallory.clone(), mallory.clone()])
                .satisfied
        );
        assert!(
            r.progress(&alice, &[mallory.clone(), sam.clone()])
                .satisfied
        );
        // Order does not matter: the matching reassigns mallory to the manager slot.
        assert!(
            r.progress(&alice, &[sam.clone(), mallory.clone()])
                .satisfied
        );
        assert!(!r.would_count(&alice, std::slice::from_ref(&mallory), &mallory));
    }

    #[test]
    fn what_is_still_needed_is_what_someone_new_could_give() {
        let alice = user("alice", &["dev"], Some("mallory"));
        let mallory = user("mallory", &["sre", "security"], None);
        let sam = user("sam", &["sre", "security"], None);
        // The manager, also a peer, counts as the manager: only the peer is still needed.
        let r: Requirement = "peer(sre) & manager".parse().unwrap();
        let missing = |r: &Requirement, who: &[User]| r.progress(&alice, who).missing;
        assert_eq!(
            missing(&r, std::slice::from_ref(&mallory)),
            ["an approver from sre"]
        );
        // Beside the manager's place a two-person tier asks for its security member alone: the
        // manager is its second approver.
        let r: Requirement = "two-person(security) & manager".parse().unwrap();
        assert_eq!(
            missing(&r, std::slice::from_ref(&sam)),
            ["the requester's manager"]
        );
        assert_eq!(
            missing(&r, std::slice::from_ref(&mallory)),
            ["an approver from security"]
        );
        assert!(
            r.progress(&alice, &[sam.clone(), mallory.clone()])
                .satisfied
        );
    }

    /// Rules joined by AND ask for no one beyond what each asks: each place takes a person of
    /// its own, so places already distinct are the second approver a two-person tier wants, and
    /// narrower peer clauses bring a broader one every person they place.
    #[test]
    fn combined_rules_ask_for_no_one_more_than_each_does() {
        let alice = user("alice", &["dev"], None);
        let sam = user("sam", &["security"], None);
        let sue = user("sue", &["security"], None);
        let carol = user("carol", &["sre"], None);
        let dave = user("dave", &["dba"], None);
        let erin = user("erin", &["dba"], None);
        let ops = user("oscar", &["ops"], None);
        let req = |text: &str| text.parse::<Requirement>().unwrap();
        let met =
            |r: &Requirement, who: &[&User]| r.progress(&alice, who.iter().copied()).satisfied;
        // Two security members meet both `two-person(security)` and `peer(security, 2)`.
        let r = req("two-person(security)").and(&req("peer(security, 2)"));
        assert!(met(&r, &[&sam, &sue]));
        assert!(!met(&r, &[&sam, &carol]));
        assert!(!met(&r, &[&sam]));
        assert_eq!(
            r.progress(&alice, []).missing,
            ["2 approvers from security"],
            "{r}"
        );
        // One member of each security group meets two two-person tiers.
        let r = req("two-person(security)").and(&req("two-person(sre)"));
        assert!(met(&r, &[&sam, &carol]));
        assert!(!met(&r, &[&sam, &sue]));
        // A security member and an SRE meet `two-person(security)` and `peer(sre)`.
        let r = req("two-person(security)").and(&req("peer(sre)"));
        assert!(met(&r, &[&sam, &carol]));
        assert!(!met(&r, &[&sam, &ops]));
        assert!(!r.would_count(&alice, std::slice::from_ref(&sam), &ops));
        // One SRE, one DBA and a third of either meet all of `peer(sre)`, `peer(dba)` and
        // `peer(sre|dba, 3)`; two are not enough.
        let r = req("peer(sre)")
            .and(&req("peer(dba)"))
            .and(&req("peer(sre|dba, 3)"));
        assert!(met(&r, &[&carol, &dave, &erin]));
        assert!(!met(&r, &[&carol, &dave]));
        assert!(!met(&r, &[&carol, &dave, &ops]));
        // Within one rule each clause still takes a person of its own.
        let r = req("peer(sre) & peer(dba)");
        let both = user("bo", &["sre", "dba"], None);
        assert!(!met(&r, &[&both]));
        assert!(met(&r, &[&both, &dave]));
        // A two-person tier alone still wants a second approver, who may be anyone.
        let r = req("two-person(security)");
        assert!(met(&r, &[&sam, &ops]));
        assert!(!met(&r, &[&sam]));
    }

    #[test]
    fn a_broader_peer_clause_counts_the_approvers_a_narrower_one_brings() {
        let alice = user("alice", &["dev"], None);
        let carol = user("carol", &["sre"], None);
        let dave = user("dave", &["dba"], None);
        let sam = user("sam", &["security"], None);
        let and = |a: &str, b: &str| {
            a.parse::<Requirement>()
                .unwrap()
                .and(&b.parse::<Requirement>().unwrap())
        };
        // Two permits: any SRE or DBA for the target, an SRE for its admin role. The SRE
        // counts for both, so the tier reads as the one clause.
        let r = and("peer(sre|dba)", "peer(sre)");
        assert_eq!(r.to_string(), "peer(sre)");
        assert!(r.progress(&alice, [&carol]).satisfied);
        assert_eq!(
            r.progress(&alice, [&dave]).missing,
            ["an approver from sre"]
        );
        assert!(!r.may_review(&alice, &dave));
        // Two from either, one of them an SRE: the SRE counts toward the two.
        let r = and("peer(sre|dba, 2)", "peer(sre)");
        assert_eq!(r.to_string(), "peer(dba|sre, 2) & peer(sre)");
        assert_eq!(
            r.progress(&alice, [&carol]).missing,
            ["an approver from dba or sre"]
        );
        assert!(r.progress(&alice, [&carol, &dave]).satisfied);
        // A two-person tier's security member is the security approver a peer clause asks for.
        let r = and("two-person(security)", "peer(security)");
        assert_eq!(r.to_string(), "two-person(security)");
        assert!(r.progress(&alice, [&sam, &dave]).satisfied);
        // Groups apart still need a person each.
        let r = and("peer(sre)", "peer(dba)");
        assert!(!r.progress(&alice, [&carol]).satisfied);
    }

    /// An open place is named with every group one more of whose members would fill it, the
    /// approvers given moved where they fit as well; and with no group whose member would not.
    #[test]
    fn what_is_still_needed_names_every_group_that_would_do() {
        let alice = user("alice", &["dev"], None);
        let bob = user("bob", &["sre"], None);
        let carol = user("carol", &["sre", "dba"], None);
        let dave = user("dave", &["dba"], None);
        let r: Requirement = "peer(sre) & peer(dba)".parse().unwrap();
        let missing = |r: &Requirement, who: &[&User]| r.progress(&alice, who.to_vec()).missing;
        // carol fills either place: a DBA or an SRE completes it.
        assert_eq!(missing(&r, &[&carol]), ["an approver from dba or sre"]);
        assert!(r.progress(&alice, [&carol, &dave]).satisfied);
        assert!(r.progress(&alice, [&carol, &bob]).satisfied);
        // bob fills the SRE's place alone: only a DBA completes it.
        assert_eq!(missing(&r, &[&bob]), ["an approver from dba"]);
        assert!(!r.would_count(
            &alice,
            std::slice::from_ref(&bob),
            &user("sue", &["sre"], None)
        ));
        // A third place no one given could fill is named as it is, beside the one either fills.
        let r: Requirement = "peer(sre) & peer(dba) & peer(ops)".parse().unwrap();
        assert_eq!(
            missing(&r, &[&carol]),
            ["an approver from ops", "an approver from dba or sre"]
        );
        // One in all three groups: a DBA and an SRE would complete it, two DBAs would not, so
        // no place is said to take a DBA twice.
        let all = user("al", &["sre", "dba", "ops"], None);
        let said = missing(&r, &[&all]);
        assert_eq!(said.len(), 2, "{said:?}");
        let dbas = said.iter().filter(|m| m.contains("dba")).count();
        assert_eq!(dbas, 1, "{said:?}");
        let erin = user("erin", &["dba"], None);
        assert!(!r.progress(&alice, [&all, &dave, &erin]).satisfied);
    }

    #[test]
    fn places_alike_are_counted_not_repeated() {
        let alice = user("alice", &["dev"], None);
        let bob = user("bob", &["sre"], None);
        let r: Requirement = "peer(sre|security, 3)".parse().unwrap();
        assert_eq!(
            r.progress(&alice, []).missing,
            ["3 approvers from security or sre"]
        );
        assert_eq!(
            r.progress(&alice, [&bob]).missing,
            ["2 approvers from security or sre"]
        );
    }

    #[test]
    fn requester_never_counts() {
        let bob = user("bob", &["sre", "security"], None);
        let r: Requirement = "peer(sre)".parse().unwrap();
        assert!(!r.progress(&bob, std::slice::from_ref(&bob)).satisfied);
        assert!(!r.would_count(&bob, &[], &bob));
        assert!(!r.may_review(&bob, &bob));
    }

    #[test]
    fn two_person_needs_security() {
        let alice = user("alice", &["dev"], None);
        let p1 = user("p1", &["sre"], None);
        let p2 = user("p2", &["sre"], None);
        let s = user("sec", &["security"], None);
        let r: Requirement = "two-person(security)".parse().unwrap();
        let pr = r.progress(&alice, &[p1.clone(), p2.clone()]);
        assert!(!pr.satisfied);
        assert_eq!(pr.missing, vec!["an approver from security"]);
        assert!(!r.would_count(&alice, std::slice::from_ref(&p1), &p2));
        assert!(r.would_count(&alice, std::slice::from_ref(&p1), &s));
        assert!(r.progress(&alice, &[p1, s]).satisfied);
    }

    #[test]
    fn auto_is_satisfied_by_nobody() {
        let alice = user("alice", &[], None);
        assert!(Requirement::auto().progress(&alice, &[]).satisfied);
    }

    #[test]
    fn tier_drops_groups_and_counts() {
        for (expr, tier) in [
            ("auto", "auto"),
            ("peer(sre|dba, 2)", "peer"),
            ("peer(sre) & peer(dba)", "peer"),
            ("manager & peer(sre)", "peer+manager"),
            ("two-person(security)", "two-person"),
            (
                "two-person(sec) & manager & peer(x)",
                "peer+manager+two-person",
            ),
        ] {
            let r: Requirement = expr.parse().unwrap();
            assert_eq!(r.tier(), tier, "{expr}");
        }
    }
}
