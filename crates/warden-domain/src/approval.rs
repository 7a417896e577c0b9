//! Approval tiers and whether the approvals given so far satisfy them.
//!
//! A [`Requirement`] is a conjunction of [`Clause`]s, written in policies as
//! `peer(sre) & manager` or `two-person(security)`; `auto` is the empty conjunction. When
//! several permits match a request, their tiers are joined by AND, and each must hold as it
//! would alone. So the approvers given (distinct people, the requester never among them)
//! satisfy a requirement when they satisfy every clause on their own:
//!
//! - `peer(G, n)`: at least `n` of them are members of a group of `G`;
//! - `two-person(S)`: there are at least two of them, and one is a member of `S`;
//! - `manager`: the requester's manager is one of them.
//!
//! One approver may thus count for several clauses: two security members satisfy both
//! `two-person(security)` and `peer(security, 2)`, as they would either rule alone. The one
//! exception keeps a separation of duties: beside other clauses, the manager's approval counts
//! only as the manager's, and the approvers without the manager must satisfy the other clauses.
//! A manager who is also an SRE does not satisfy `peer(sre) & manager` alone, and
//! `manager & two-person(security)` takes the manager and two others.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::directory::User;
use crate::names::GroupName;

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
    /// another implies (`peer(dba|sre)` beside `peer(sre)`: the SRE counts for both) is left
    /// out, so the tier reads as what it asks. Leaving it out changes no outcome: every
    /// clause is judged on its own (see the module's documentation).
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

    /// How many approvers from `groups` another clause ensures anyway: a peer clause over fewer
    /// of them asks for its count, a two-person tier over one of them for one member. A peer
    /// clause over `groups` asking no more than that is implied, and [`and`](Self::and) leaves
    /// it out. The largest such share: shares of several clauses may be the same people.
    fn brought(&self, groups: &BTreeSet<GroupName>) -> u8 {
        self.clauses
            .iter()
            .filter_map(|other| match other {
                Clause::Peer {
                    groups: g,
                    count: n,
                } if g != groups && g.is_subset(groups) => Some(*n),
                Clause::TwoPerson { security } if groups.contains(security) => Some(1),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// Whether a `manager` clause sets the manager's approval apart: beside other clauses it
    /// counts only for that one, so the manager never doubles as a peer or a second person.
    fn manager_apart(&self) -> bool {
        self.clauses.contains(&Clause::Manager)
    }

    /// How many more approvers each clause needs, clause by clause, given `people` (distinct,
    /// the requester left out). Zero everywhere is satisfied; adding someone never raises one.
    fn shortfalls(&self, requester: &User, people: &[&User]) -> Vec<usize> {
        let manager_approved = people.iter().any(|u| is_manager(requester, u));
        let others = self.others(requester, people);
        self.clauses
            .iter()
            .map(|c| match c {
                Clause::Peer { groups, count } => usize::from(*count)
                    .saturating_sub(others.iter().filter(|u| in_any(u, groups)).count()),
                Clause::Manager => usize::from(!manager_approved),
                Clause::TwoPerson { security } => {
                    let member = others.iter().any(|u| u.in_group(security));
                    2usize
                        .saturating_sub(others.len())
                        .max(usize::from(!member))
                }
            })
            .collect()
    }

    /// The approvers who count for the clauses other than `manager`: all of `people`, less the
    /// manager where [`manager_apart`](Self::manager_apart) says so.
    fn others<'a>(&self, requester: &User, people: &[&'a User]) -> Vec<&'a User> {
        let apart = self.manager_apart();
        people
            .iter()
            .copied()
            .filter(|u| !(apart && is_manager(requester, u)))
            .collect()
    }

    /// The places more approvers, one person each, would fill to satisfy the requirement on
    /// top of `people`. Each place is described as broadly as it can be while counting for
    /// everything it was chosen for: one new SRE fills both `peer(sre)` and `peer(sre|dba)`,
    /// so those ask for one place (`an approver from sre`), not two. The places are chosen
    /// greedily, each taking from the group that serves the most clauses still short.
    fn still_needed(&self, requester: &User, people: &[&User]) -> Vec<Place> {
        let others = self.others(requester, people);
        // What the clauses still ask of particular groups: a peer clause's shortfall, a
        // two-person tier's missing security member.
        let mut short: Vec<(&BTreeSet<GroupName>, usize)> = Vec::new();
        let securities: Vec<BTreeSet<GroupName>> = self
            .clauses
            .iter()
            .filter_map(|c| match c {
                Clause::TwoPerson { security } => Some(BTreeSet::from([security.clone()])),
                _ => None,
            })
            .collect();
        for c in &self.clauses {
            if let Clause::Peer { groups, count } = c {
                let have = others.iter().filter(|u| in_any(u, groups)).count();
                short.push((groups, usize::from(*count).saturating_sub(have)));
            }
        }
        for security in &securities {
            let member = others.iter().any(|u| in_any(u, security));
            short.push((security, usize::from(!member)));
        }
        let mut places = Vec::new();
        loop {
            let open: Vec<&BTreeSet<GroupName>> = short
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(g, _)| *g)
                .collect();
            // For each group asked for, the clauses a member of it would serve (one at least:
            // it was asked for) and the groups all of them take from; the group serving most
            // wins, then the one whose place more people could fill. Each round lowers a
            // shortfall, so the rounds end.
            let best = open
                .iter()
                .flat_map(|g| g.iter())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(|g| {
                    let served: Vec<_> = open.iter().filter(|o| o.contains(g)).collect();
                    let from = served
                        .iter()
                        .skip(1)
                        .fold((*served[0]).clone(), |acc, o| &acc & *o);
                    (served.len(), from)
                })
                .reduce(|best, next| {
                    if (next.0, next.1.len()) > (best.0, best.1.len()) {
                        next
                    } else {
                        best
                    }
                });
            let Some((_, from)) = best else { break };
            for (groups, n) in &mut short {
                if *n > 0 && from.is_subset(groups) {
                    *n -= 1;
                }
            }
            places.push(Place::From(from));
        }
        if !securities.is_empty() {
            let anyone = 2usize.saturating_sub(others.len() + places.len());
            places.extend((0..anyone).map(|_| Place::Anyone));
        }
        if self.manager_apart() && !people.iter().any(|u| is_manager(requester, u)) {
            places.push(Place::Manager);
        }
        places.sort_by(|a, b| a.order().cmp(&b.order()));
        places
    }

    /// Evaluates `approvers` (people who approved, as they were when they acted) for a request
    /// made by `requester`. The requester and repeated names never count.
    pub fn progress<'a>(
        &self,
        requester: &User,
        approvers: impl IntoIterator<Item = &'a User>,
    ) -> Progress {
        let people = distinct_others(requester, approvers);
        let satisfied = self.shortfalls(requester, &people).iter().all(|n| *n == 0);
        // Places alike (a clause's count) are named once, with how many.
        let mut open: Vec<(Place, usize)> = Vec::new();
        for place in self.still_needed(requester, &people) {
            match open.last_mut() {
                Some((last, n)) if *last == place => *n += 1,
                _ => open.push((place, 1)),
            }
        }
        Progress {
            satisfied,
            missing: open.iter().map(|(place, n)| place.describe(*n)).collect(),
        }
    }

    /// Whether `candidate`'s approval would count, given those already given: they are not the
    /// requester, have not approved yet, and their approval lowers what some clause still
    /// needs. Beside other clauses the manager's approval counts for the `manager` clause.
    pub fn would_count(&self, requester: &User, approvers: &[User], candidate: &User) -> bool {
        if candidate.name == requester.name || approvers.iter().any(|a| a.name == candidate.name) {
            return false;
        }
        let mut people = distinct_others(requester, approvers);
        let before = self.shortfalls(requester, &people);
        people.push(candidate);
        let after = self.shortfalls(requester, &people);
        before.iter().zip(&after).any(|(b, a)| a < b)
    }

    /// Whether `candidate` could count toward any clause at all; such a person may deny the
    /// request.
    pub fn may_review(&self, requester: &User, candidate: &User) -> bool {
        candidate.name != requester.name
            && self.clauses.iter().any(|c| match c {
                Clause::TwoPerson { .. } => true,
                c => names(c, requester, candidate),
            })
    }

    /// Whether this requirement names `candidate` as a reviewer of `requester`'s requests: a
    /// member of a group it lists, or the requester's manager. Unlike [`may_review`]
    /// (Self::may_review), a two-person tier's "anyone else" does not count: every user is
    /// that.
    pub fn names_reviewer(&self, requester: &User, candidate: &User) -> bool {
        candidate.name != requester.name
            && self.clauses.iter().any(|c| names(c, requester, candidate))
    }
}

/// Whether `clause` names `candidate` as someone it asks for: a member of its groups, or the
/// requester's manager.
fn names(clause: &Clause, requester: &User, candidate: &User) -> bool {
    match clause {
        Clause::Peer { groups, .. } => in_any(candidate, groups),
        Clause::Manager => is_manager(requester, candidate),
        Clause::TwoPerson { security } => candidate.in_group(security),
    }
}

fn in_any(who: &User, groups: &BTreeSet<GroupName>) -> bool {
    groups.iter().any(|g| who.in_group(g))
}

fn is_manager(requester: &User, who: &User) -> bool {
    requester.manager.as_ref() == Some(&who.name)
}

/// The approvers who count at all: not the requester, each once.
fn distinct_others<'a>(
    requester: &User,
    approvers: impl IntoIterator<Item = &'a User>,
) -> Vec<&'a User> {
    let mut seen = BTreeSet::new();
    approvers
        .into_iter()
        .filter(|a| a.name != requester.name && seen.insert(&a.name))
        .collect()
}

/// What the approvals given so far achieve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub satisfied: bool,
    /// Human descriptions of what is still needed, e.g. `an approver from sre`: together, one
    /// more person for each place they count.
    pub missing: Vec<String>,
}

/// A place one more approver would fill: the manager's, one for a member of any of some
/// groups, or a two-person tier's second, which anyone else could fill.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    Manager,
    From(BTreeSet<GroupName>),
    Anyone,
}

impl Place {
    /// The order places are named in: the manager, whom only one person can be, then places
    /// by how many groups they take from, the narrowest first, then anyone's.
    fn order(&self) -> (u8, usize, Option<&BTreeSet<GroupName>>) {
        match self {
            Place::Manager => (0, 0, None),
            Place::From(groups) => (1, groups.len(), Some(groups)),
            Place::Anyone => (2, 0, None),
        }
    }

    /// `n` places like this one, for people: `2 approvers from sre`.
    fn describe(&self, n: usize) -> String {
        match self {
            Place::From(groups) => {
                let groups = groups
                    .iter()
                    .map(GroupName::as_str)
                    .collect::<Vec<_>>()
                    .join(" or ");
                match n {
                    1 => format!("an approver from {groups}"),
                    n => format!("{n} approvers from {groups}"),
                }
            }
            Place::Manager => "the requester's manager".to_owned(),
            // One at most: with no one yet, a two-person tier asks for its security member
            // first.
            Place::Anyone => "a second approver".to_owned(),
        }
    }
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
        // Order does not matter: the manager counts as the manager wherever they come.
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
        // A security member counts toward security before anyone's place.
        let r: Requirement = "two-person(security) & manager".parse().unwrap();
        assert_eq!(
            missing(&r, std::slice::from_ref(&sam)),
            ["the requester's manager", "a second approver"]
        );
        assert_eq!(
            missing(&r, std::slice::from_ref(&mallory)),
            ["an approver from security", "a second approver"]
        );
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

    #[test]
    fn two_security_members_satisfy_two_person_and_two_security_peers() {
        let alice = user("alice", &["dev"], None);
        let s1 = user("s1", &["security"], None);
        let s2 = user("s2", &["security"], None);
        let r: Requirement = "two-person(security) & peer(security, 2)".parse().unwrap();
        assert_eq!(r.to_string(), "peer(security, 2) & two-person(security)");
        // Together the only people besides the requester: the directory can approve.
        assert!(r.progress(&alice, [&alice, &s1, &s2]).satisfied);
        let pr = r.progress(&alice, [&s1]);
        assert!(!pr.satisfied);
        assert_eq!(pr.missing, ["an approver from security"]);
        assert_eq!(
            r.progress(&alice, []).missing,
            ["2 approvers from security"]
        );
    }

    #[test]
    fn three_people_satisfy_one_sre_one_dba_and_three_of_either() {
        let alice = user("alice", &["dev"], None);
        let r1 = user("r1", &["sre"], None);
        let r2 = user("r2", &["sre"], None);
        let d1 = user("d1", &["dba"], None);
        let r: Requirement = "peer(sre) & peer(dba) & peer(sre|dba, 3)".parse().unwrap();
        assert_eq!(r.to_string(), "peer(dba) & peer(dba|sre, 3) & peer(sre)");
        assert!(r.progress(&alice, [&r1, &d1, &r2]).satisfied);
        assert_eq!(
            r.progress(&alice, [&r1, &r2]).missing,
            ["an approver from dba"]
        );
        assert_eq!(
            r.progress(&alice, [&r1, &d1]).missing,
            ["an approver from dba or sre"]
        );
        // Nothing yet: three places, the SRE and the DBA counting toward the three.
        assert_eq!(
            r.progress(&alice, []).missing,
            [
                "an approver from dba",
                "an approver from sre",
                "an approver from dba or sre"
            ]
        );
    }

    #[test]
    fn one_member_of_each_satisfies_two_two_person_tiers() {
        let alice = user("alice", &["dev"], None);
        let a1 = user("a1", &["a"], None);
        let a2 = user("a2", &["a"], None);
        let b1 = user("b1", &["b"], None);
        let r: Requirement = "two-person(a) & two-person(b)".parse().unwrap();
        assert!(r.progress(&alice, [&a1, &b1]).satisfied);
        assert_eq!(r.progress(&alice, [&a1]).missing, ["an approver from b"]);
        assert_eq!(
            r.progress(&alice, [&a1, &a2]).missing,
            ["an approver from b"]
        );
        assert_eq!(
            r.progress(&alice, []).missing,
            ["an approver from a", "an approver from b"]
        );
    }

    #[test]
    fn a_security_member_and_an_sre_satisfy_two_person_and_a_peer() {
        let alice = user("alice", &["dev"], None);
        let sec = user("sec", &["security"], None);
        let sre = user("sre", &["sre"], None);
        let both = user("both", &["security", "sre"], None);
        let r: Requirement = "two-person(security) & peer(sre)".parse().unwrap();
        assert!(r.progress(&alice, [&sec, &sre]).satisfied);
        assert_eq!(r.progress(&alice, [&sec]).missing, ["an approver from sre"]);
        assert_eq!(
            r.progress(&alice, [&sre]).missing,
            ["an approver from security"]
        );
        assert_eq!(
            r.progress(&alice, []).missing,
            ["an approver from security", "an approver from sre"]
        );
        // One person in both groups is still one person.
        assert_eq!(r.progress(&alice, [&both]).missing, ["a second approver"]);
    }

    #[test]
    fn beside_other_clauses_the_manager_counts_only_as_the_manager() {
        let alice = user("alice", &["dev"], Some("mallory"));
        let mallory = user("mallory", &["sre", "security"], None);
        let sam = user("sam", &["sre"], None);
        let sec = user("sec", &["security"], None);
        let dan = user("dan", &["dev"], None);
        let r: Requirement = "peer(sre) & manager".parse().unwrap();
        assert!(!r.progress(&alice, [&mallory]).satisfied);
        assert!(r.progress(&alice, [&mallory, &sam]).satisfied);
        assert!(r.would_count(&alice, std::slice::from_ref(&sam), &mallory));
        assert!(r.would_count(&alice, std::slice::from_ref(&mallory), &sam));
        // The manager and two others, one of them from security.
        let r: Requirement = "manager & two-person(security)".parse().unwrap();
        assert_eq!(
            r.progress(&alice, [&mallory, &sec]).missing,
            ["a second approver"]
        );
        assert!(r.progress(&alice, [&mallory, &sec, &dan]).satisfied);
        assert_eq!(
            r.progress(&alice, [&sec, &dan]).missing,
            ["the requester's manager"]
        );
        // Alone, the manager clause is the manager; without one, the manager is a peer.
        let manager: Requirement = "manager".parse().unwrap();
        assert!(manager.progress(&alice, [&mallory]).satisfied);
        let peer: Requirement = "peer(sre)".parse().unwrap();
        assert!(peer.progress(&alice, [&mallory]).satisfied);
    }

    #[test]
    fn an_approval_counts_only_where_a_clause_still_needs_it() {
        let alice = user("alice", &["dev"], None);
        let r1 = user("r1", &["sre"], None);
        let r2 = user("r2", &["sre"], None);
        let r3 = user("r3", &["sre"], None);
        let sec = user("sec", &["security"], None);
        let r: Requirement = "peer(sre, 2) & two-person(security)".parse().unwrap();
        let given = [r1.clone(), r2.clone()];
        // The two SREs met peer(sre, 2) and two-person's count: a third SRE adds nothing.
        assert!(!r.would_count(&alice, &given, &r3));
        assert!(r.would_count(&alice, &given, &sec));
        assert_eq!(
            r.progress(&alice, &given).missing,
            ["an approver from security"]
        );
        // A clause met on its own takes no more.
        let r: Requirement = "peer(sre, 2)".parse().unwrap();
        assert!(!r.would_count(&alice, &given, &r3));
        assert!(r.would_count(&alice, std::slice::from_ref(&r1), &r3));
    }

    #[test]
    fn repeated_names_and_the_requester_count_for_nothing() {
        let sara = user("sara", &["security"], None);
        let s1 = user("s1", &["security"], None);
        let dan = user("dan", &["dev"], None);
        let r: Requirement = "two-person(security) & peer(security, 2)".parse().unwrap();
        assert!(!r.progress(&sara, [&sara, &s1]).satisfied);
        assert!(!r.progress(&sara, [&s1, &s1]).satisfied);
        assert_eq!(
            r.progress(&sara, [&s1, &s1, &sara]).missing,
            ["an approver from security"]
        );
        assert!(!r.would_count(&sara, std::slice::from_ref(&s1), &s1));
        assert!(!r.would_count(&sara, std::slice::from_ref(&s1), &sara));
        let r: Requirement = "two-person(security)".parse().unwrap();
        assert!(!r.progress(&sara, [&sara, &dan]).satisfied);
        assert!(!r.progress(&dan, [&s1, &s1]).satisfied);
    }

    #[test]
    fn one_place_serves_every_clause_it_can() {
        let alice = user("alice", &["dev"], None);
        let dave = user("dave", &["dba"], None);
        let sam = user("sam", &["security"], None);
        let r: Requirement = "peer(dba|sre) & peer(security|sre)".parse().unwrap();
        assert_eq!(r.progress(&alice, []).missing, ["an approver from sre"]);
        assert_eq!(
            r.progress(&alice, [&dave]).missing,
            ["an approver from security or sre"]
        );
        assert!(r.progress(&alice, [&dave, &sam]).satisfied);
    }

    #[test]
    fn anyone_may_review_a_two_person_tier_but_it_names_only_security() {
        let alice = user("alice", &["dev"], Some("mallory"));
        let dan = user("dan", &["dev"], None);
        let sam = user("sam", &["security"], None);
        let mallory = user("mallory", &[], None);
        let r: Requirement = "two-person(security) & manager".parse().unwrap();
        assert!(r.may_review(&alice, &dan));
        assert!(!r.names_reviewer(&alice, &dan));
        assert!(r.names_reviewer(&alice, &sam));
        assert!(r.names_reviewer(&alice, &mallory));
        assert!(!r.names_reviewer(&alice, &alice));
        let r: Requirement = "peer(sre)".parse().unwrap();
        assert!(!r.may_review(&alice, &dan));
        assert!(!r.may_review(&alice, &mallory));
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
