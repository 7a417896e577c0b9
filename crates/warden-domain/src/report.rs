//! The zero-standing-privilege scorecard: how just-in-time, justified, short-lived, quickly
//! approved and quickly revoked privileged access was over a period.
//!
//! [`Scorecard::compute`] is a plain function of the requests created in the period, the
//! break-glass postmortems and the leases of its grants, so every figure can be checked against
//! a scripted history. It reads records the store keeps for good rather than audit events, so a
//! period's figures stay the same after its events are archived. Each figure carries the band
//! it should lie in and where it stands against it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::lease::Lease;
use crate::postmortem::Postmortem;
use crate::request::{Request, RequestId, State, Verdict};

/// Healthy approval times: quicker suggests rubber-stamping, slower stalls engineers.
pub const APPROVAL_BAND: Band = Band {
    min: Some(5.0 * 60.0),
    max: Some(15.0 * 60.0),
};
/// Just-in-time share to aim for: all privileged access, break-glass aside.
pub const JIT_BAND: Band = Band {
    min: Some(0.99),
    max: None,
};
/// A credential should be gone within a second of its grant ending.
pub const REVOCATION_BAND: Band = Band {
    min: None,
    max: Some(1.0),
};
/// Break-glass and open postmortems should be exceptional.
pub const NONE_BAND: Band = Band {
    min: None,
    max: Some(0.0),
};
/// No target: the figure is shown for information.
pub const NO_BAND: Band = Band {
    min: None,
    max: None,
};

/// Where a figure should lie; either bound may be open.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Band {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// Where a figure stands against its band.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Standing {
    Within,
    Below,
    Above,
    /// Nothing in the period to compute it from.
    NoData,
    /// The figure has no target band; it is shown for information.
    Untargeted,
}

impl Band {
    fn judge(&self, value: Option<f64>) -> Standing {
        match value {
            _ if self.min.is_none() && self.max.is_none() => Standing::Untargeted,
            None => Standing::NoData,
            Some(v) if self.min.is_some_and(|m| v < m) => Standing::Below,
            Some(v) if self.max.is_some_and(|m| v > m) => Standing::Above,
            Some(_) => Standing::Within,
        }
    }
}

/// One figure of the scorecard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// The figure: a share in 0..=1, seconds, or a count. `None` when there was no data.
    pub value: Option<f64>,
    /// What it was computed from: the numerator of a share, or the number of samples.
    pub count: u64,
    /// The denominator of a share.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub of: Option<u64>,
    pub band: Band,
    pub standing: Standing,
}

impl Figure {
    fn new(value: Option<f64>, count: u64, band: Band) -> Self {
        Self {
            value,
            count,
            of: None,
            band,
            standing: band.judge(value),
        }
    }

    fn share(part: u64, whole: u64, band: Band) -> Self {
        let value = (whole > 0).then(|| part as f64 / whole as f64);
        Self {
            of: Some(whole),
            ..Self::new(value, part, band)
        }
    }

    fn count(n: u64, band: Band) -> Self {
        Self::new(Some(n as f64), n, band)
    }
}

/// What the scorecard is computed from.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    /// The requests created in `[from, to)`; others are ignored.
    pub requests: &'a [Request],
    /// Break-glass postmortems: one opened in the period is a break-glass use (or drill), one
    /// opened before its end and not closed by then is open. Others are ignored.
    pub postmortems: &'a [Postmortem],
    /// Leases of the period's grants, for when each credential was confirmed gone and how
    /// many attempts failed first. Leases of other grants are ignored.
    pub leases: &'a [Lease],
}

/// The zero-standing-privilege scorecard of a period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scorecard {
    #[serde(with = "crate::timestamp")]
    pub from: OffsetDateTime,
    #[serde(with = "crate::timestamp")]
    pub to: OffsetDateTime,
    /// Requests created in the period, by their state now.
    pub requests: BTreeMap<String, u64>,
    /// Requests of the period that became grants.
    pub grants: u64,
    /// Grants made through request and approval, over all privileged access observed (those
    /// grants plus break-glass activations, drills included: a drill grants real access too).
    pub jit_share: Figure,
    /// Privileged accounts at targets that Warden did not grant. Not measured: standing
    /// privilege discovery is not available yet, so this is always `None` and the JIT share
    /// counts only access Warden saw.
    pub standing_accounts: Option<u64>,
    /// Grants that carry a ticket or incident id (every grant carries a reason: it is
    /// required).
    pub ticket_share: Figure,
    /// Mean time a grant was held within the period: from activation to its end (its expiry,
    /// if still active), at most to the end of the period, so that a past period's figure does
    /// not change when its grants end later.
    pub privilege_seconds: Figure,
    /// Median time from request to final approval, over grants that needed approval.
    pub approval_median_seconds: Figure,
    /// 90th percentile of the same.
    pub approval_p90_seconds: Figure,
    /// Break-glass activations in the period that were not drills.
    pub breakglass_uses: Figure,
    /// Break-glass drills in the period.
    pub breakglass_drills: u64,
    /// Postmortems opened and not closed, as of the end of the period.
    pub postmortems_open: Figure,
    /// Mean time from when an account at a target should be gone (its grant's end or expiry,
    /// whichever came first) to the confirmation that it is.
    pub revocation_mean_seconds: Figure,
    /// The longest such time.
    pub revocation_max_seconds: Figure,
    /// Revocations of the period's grants that failed (they are retried).
    pub revocation_failures: Figure,
}

fn seconds(d: Duration) -> f64 {
    d.as_seconds_f64().max(0.0)
}

/// The nearest-rank percentile `p` (0 < p ≤ 1) of sorted `values`.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// When the final approval of a request that needed approval was given, if it was: the last of
/// the approvals that counted toward its grant ([`Request::counted`], where it is recorded). An
/// approval withdrawn while the request waited (its giver offboarded, their password or second
/// factor reset) counted for nothing, however late it was given: the one its giver gave afresh,
/// or another's, approved the request.
fn approved_at(r: &Request) -> Option<OffsetDateTime> {
    let granted = r.activated_at.is_some() || r.state == State::Approved;
    if r.requirement.is_auto() || !granted {
        return None;
    }
    r.reviews
        .iter()
        .filter(|v| v.verdict == Verdict::Approve && v.withdrawn.is_none())
        .filter(|v| {
            r.counted
                .as_ref()
                .is_none_or(|counted| counted.contains(&v.reviewer.name))
        })
        .map(|v| v.at)
        .max()
}

impl Scorecard {
    /// Computes the scorecard; pure.
    pub fn compute(input: Input<'_>) -> Scorecard {
        let Input {
            from,
            to,
            requests,
            postmortems,
            leases,
        } = input;
        let requests: Vec<&Request> = requests
            .iter()
            .filter(|r| r.created_at >= from && r.created_at < to)
            .collect();
        let mut by_state = BTreeMap::new();
        for r in &requests {
            *by_state.entry(r.state.as_str().to_owned()).or_insert(0) += 1;
        }
        let grants: Vec<&Request> = requests
            .iter()
            .copied()
            .filter(|r| r.activated_at.is_some())
            .collect();
        let grant_ids: BTreeSet<RequestId> = grants.iter().map(|g| g.id).collect();

        let breakglass: Vec<&Postmortem> = postmortems
            .iter()
            .filter(|p| from <= p.opened_at && p.opened_at < to)
            .collect();
        let drills = breakglass.iter().filter(|p| p.drill).count() as u64;
        let breakglass_ids: BTreeSet<RequestId> = breakglass.iter().map(|p| p.request).collect();
        // Break-glass grants whose request falls outside the period (opened a millisecond
        // after a request made just before `from`) are access observed beyond its grants.
        let unrequested = breakglass
            .iter()
            .filter(|p| !grant_ids.contains(&p.request))
            .count() as u64;
        let jit = grants
            .iter()
            .filter(|g| !breakglass_ids.contains(&g.id))
            .count() as u64;
        let observed = grants.len() as u64 + unrequested;

        let with_ticket = grants.iter().filter(|g| g.ticket.is_some()).count() as u64;

        let held: Vec<f64> = grants
            .iter()
            .filter_map(|g| {
                let start = g.activated_at?;
                let end = g.ended_at.or(g.expires_at).unwrap_or(to).min(to);
                Some(seconds(end - start))
            })
            .collect();

        let mut approval: Vec<f64> = requests
            .iter()
            .filter_map(|r| approved_at(r).map(|at| seconds(at - r.created_at)))
            .collect();
        approval.sort_by(f64::total_cmp);

        let open = postmortems
            .iter()
            .filter(|p| p.opened_at < to && p.closed.as_ref().is_none_or(|c| c.at >= to))
            .count() as u64;

        let by_id: BTreeMap<RequestId, &Request> = grants.iter().map(|g| (g.id, *g)).collect();
        let mut revocation: Vec<f64> = Vec::new();
        let mut failures = 0;
        for lease in leases {
            let Some(g) = by_id.get(&lease.grant) else {
                continue;
            };
            failures += u64::from(lease.attempts);
            if let Some(gone) = lease.revoked_at {
                let due = match (g.ended_at, g.expires_at) {
                    (Some(end), Some(exp)) => end.min(exp),
                    (end, exp) => end.or(exp).unwrap_or(gone),
                };
                revocation.push(seconds(gone - due));
            }
        }

        Scorecard {
            from,
            to,
            requests: by_state,
            grants: grants.len() as u64,
            jit_share: Figure::share(jit, observed, JIT_BAND),
            standing_accounts: None,
            ticket_share: Figure::share(with_ticket, grants.len() as u64, NO_BAND),
            privilege_seconds: Figure::new(mean(&held), held.len() as u64, NO_BAND),
            approval_median_seconds: Figure::new(
                percentile(&approval, 0.5),
                approval.len() as u64,
                APPROVAL_BAND,
            ),
            approval_p90_seconds: Figure::new(
                percentile(&approval, 0.9),
                approval.len() as u64,
                APPROVAL_BAND,
            ),
            breakglass_uses: Figure::count(breakglass.len() as u64 - drills, NONE_BAND),
            breakglass_drills: drills,
            postmortems_open: Figure::count(open, NONE_BAND),
            revocation_mean_seconds: Figure::new(
                mean(&revocation),
                revocation.len() as u64,
                NO_BAND,
            ),
            revocation_max_seconds: Figure::new(
                revocation.iter().copied().reduce(f64::max),
                revocation.len() as u64,
                REVOCATION_BAND,
            ),
            revocation_failures: Figure::count(failures, NONE_BAND),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Decision;
    use crate::directory::{Directory, User};
    use crate::postmortem::Link;
    use crate::request::Ask;
    use crate::text::{Comment, Reason, Ticket};
    use time::macros::datetime;
    use uuid::Uuid;

    const T0: OffsetDateTime = datetime!(2026-03-02 09:00 UTC);

    fn min(n: i64) -> Duration {
        Duration::minutes(n)
    }

    fn user(name: &str, groups: &[&str], manager: Option<&str>) -> User {
        User {
            name: name.parse().unwrap(),
            groups: groups.iter().map(|g| g.parse().unwrap()).collect(),
            manager: manager.map(|m| m.parse().unwrap()),
        }
    }

    fn alice() -> User {
        user("alice", &["dev"], Some("mallory"))
    }

    /// A request made `at` minutes after T0 under `tier`, with a ticket if given.
    fn request(n: u128, at: i64, tier: &str, ticket: Option<&str>) -> Request {
        let mut d = Decision::deny(vec![]);
        d.allowed = true;
        d.requirement = tier.parse().unwrap();
        d.max_ttl = "8h".parse().unwrap();
        d.pending_timeout = "1h".parse().unwrap();
        Request::new(
            RequestId::from_uuid(Uuid::from_u128(n)),
            "alice".parse().unwrap(),
            Ask {
                target: "web".parse().unwrap(),
                role: "admin".parse().unwrap(),
                reason: Reason::parse("work").unwrap(),
                ticket: ticket.map(|t| Ticket::parse(t).unwrap()),
                ttl: "1h".parse().unwrap(),
            },
            &d,
            None,
            None,
            T0 + min(at),
        )
    }

    fn auto(n: u128, at: i64) -> Request {
        let mut r = request(n, at, "auto", None);
        r.approve_automatically().unwrap();
        r.activate(None, r.created_at).unwrap();
        r
    }

    /// A peer-approved grant, approved `wait` minutes after it was made.
    fn peer(n: u128, at: i64, wait: i64, ticket: Option<&str>) -> Request {
        let mut r = request(n, at, "peer(sre)", ticket);
        let bob = user("bob", &["sre"], None);
        let when = r.created_at + min(wait);
        let req = r.requirement.clone();
        r.approve(
            &bob,
            &alice(),
            req,
            &Directory::default(),
            Comment::parse("").unwrap(),
            when,
        )
        .unwrap();
        r.activate(None, when).unwrap();
        r
    }

    /// The postmortem of break-glass grant `r`, opened at `at`, closed at `closed` if given.
    fn postmortem(
        r: &Request,
        drill: bool,
        at: OffsetDateTime,
        closed: Option<OffsetDateTime>,
    ) -> Postmortem {
        let mut p = Postmortem::open(r, drill, at);
        if let Some(when) = closed {
            let link = Link::parse("https://wiki.example.com/pm/1").unwrap();
            // A postmortem is closed once its grant has ended.
            let mut ended = r.clone();
            if let Some(expiry) = ended.expires_at {
                ended.expire(expiry).unwrap();
            }
            p.close(
                &"sam".parse().unwrap(),
                link,
                Comment::parse("done").unwrap(),
                &ended,
                None,
                when,
            )
            .unwrap();
        }
        p
    }

    /// The lease of grant `g`: active, then revoked `gone` if given, after `failures` failed
    /// attempts.
    fn lease(g: &Request, failures: u32, gone: Option<OffsetDateTime>) -> Lease {
        let at = g.activated_at.unwrap();
        let mut l = Lease::intent(
            g.id,
            g.requester.clone(),
            g.target.clone(),
            g.role.clone(),
            format!("w_{}", g.id),
            g.expires_at.unwrap(),
            at,
        );
        l.activate(g.expires_at.unwrap());
        l.start_revoking(at);
        for _ in 0..failures {
            l.revoke_failed("down".into(), at);
        }
        if let Some(gone) = gone {
            l.revoked(gone);
        }
        l
    }

    fn card(requests: &[Request], postmortems: &[Postmortem], leases: &[Lease]) -> Scorecard {
        Scorecard::compute(Input {
            from: T0,
            to: T0 + Duration::days(1),
            requests,
            postmortems,
            leases,
        })
    }

    #[test]
    fn counts_states_shares_and_approval_times() {
        let mut early = peer(3, 20, 12, Some("CHG-1"));
        early
            .revoke(
                Some(&"bob".parse().unwrap()),
                Comment::parse("done").unwrap(),
                early.activated_at.unwrap() + min(10),
            )
            .unwrap();
        let mut denied = request(5, 40, "peer(sre)", None);
        let req = denied.requirement.clone();
        denied
            .deny(
                &user("bob", &["sre"], None),
                &alice(),
                &req,
                &Directory::default(),
                Comment::parse("no").unwrap(),
                T0 + min(45),
            )
            .unwrap();
        let mut cancelled = request(6, 50, "manager", None);
        cancelled
            .cancel(&"alice".parse().unwrap(), T0 + min(51))
            .unwrap();
        let before = auto(7, -10); // made before the period: ignored
        let requests = [
            auto(1, 0),
            peer(2, 10, 4, Some("CHG-2")),
            early,
            peer(4, 30, 30, None),
            denied,
            cancelled,
            before,
        ];
        let c = card(&requests, &[], &[]);
        assert_eq!(
            c.requests,
            BTreeMap::from([
                ("active".into(), 3),
                ("revoked".into(), 1),
                ("denied".into(), 1),
                ("cancelled".into(), 1)
            ])
        );
        assert_eq!(c.grants, 4);
        assert_eq!((c.jit_share.count, c.jit_share.of), (4, Some(4)));
        assert_eq!(c.jit_share.value, Some(1.0));
        assert_eq!(c.jit_share.standing, Standing::Within);
        assert_eq!(c.standing_accounts, None);
        assert_eq!((c.ticket_share.count, c.ticket_share.of), (2, Some(4)));
        assert_eq!(c.ticket_share.standing, Standing::Untargeted);
        assert_eq!(c.ticket_share.value, Some(0.5));
        // Approvals after 4, 12 and 30 minutes: median 12 (in band), p90 30 (above).
        assert_eq!(c.approval_median_seconds.value, Some(720.0));
        assert_eq!(c.approval_median_seconds.standing, Standing::Within);
        assert_eq!(c.approval_p90_seconds.value, Some(1800.0));
        assert_eq!(c.approval_p90_seconds.standing, Standing::Above);
        assert_eq!(c.approval_median_seconds.count, 3);
        // Held: three full hours and one early revoke after 10 minutes.
        assert_eq!(
            c.privilege_seconds.value,
            Some((3.0 * 3600.0 + 600.0) / 4.0)
        );
        assert_eq!(c.breakglass_uses.standing, Standing::Within);
        assert_eq!(c.revocation_max_seconds.standing, Standing::NoData);
    }

    /// A period's held time stops at its end, whenever its grants end later: the figure of a
    /// past period does not change.
    #[test]
    fn time_held_stops_at_the_period_s_end() {
        let from = T0;
        let to = T0 + min(30);
        let score = |r: &Request| {
            Scorecard::compute(Input {
                from,
                to,
                requests: std::slice::from_ref(r),
                postmortems: &[],
                leases: &[],
            })
            .privilege_seconds
            .value
        };
        let mut g = auto(1, 10);
        assert_eq!(score(&g), Some(1200.0));
        g.revoke(None, Comment::parse("done").unwrap(), T0 + min(50))
            .unwrap();
        assert_eq!(score(&g), Some(1200.0));
    }

    /// An approval withdrawn while the request waited counts for nothing, however late it was
    /// given: the approval time is that of the last approval that counted toward the grant,
    /// whether its giver approved afresh or the tier relaxed to what the others met.
    #[test]
    fn withdrawn_approvals_do_not_time_the_approval() {
        let bob = user("bob", &["sre"], None);
        let carol = user("carol", &["sre"], None);
        let sam = user("sam", &["security"], None);
        let mallory = user("mallory", &["managers"], None);
        let dir =
            Directory::new([alice(), bob.clone(), carol.clone(), sam.clone(), mallory]).unwrap();
        let approve = |r: &mut Request, who: &User, at: i64| {
            let req = r.requirement.clone();
            let when = r.created_at + min(at);
            r.approve(who, &alice(), req, &dir, Comment::parse("").unwrap(), when)
                .unwrap();
        };
        let reset = |r: &mut Request, who: &User| {
            let gone = r.void_approvals(|giver, _| *giver == who.name, "their password was reset");
            assert_eq!(gone, std::slice::from_ref(&who.name));
        };
        // Bob approves after 3 minutes, has his approval withdrawn, and gives it again after
        // 9; carol's at 6 completes nothing alone: approved at 9.
        let mut again = request(1, 0, "peer(sre, 2)", None);
        approve(&mut again, &bob, 3);
        reset(&mut again, &bob);
        approve(&mut again, &carol, 6);
        approve(&mut again, &bob, 9);
        assert_eq!(again.state, State::Approved);
        again.activate(None, again.created_at + min(9)).unwrap();
        // Bob approves after 5 minutes, sam after 12; sam's is withdrawn, and the tier relaxed
        // to what bob's meets: bob's approval made it approved, not sam's.
        let mut relaxed = request(2, 0, "peer(sre) & peer(security) & manager", None);
        approve(&mut relaxed, &bob, 5);
        approve(&mut relaxed, &sam, 12);
        reset(&mut relaxed, &sam);
        let at = relaxed.created_at + min(20);
        relaxed
            .approve_as_met(&alice(), "peer(sre)".parse().unwrap(), &dir, at)
            .unwrap();
        relaxed.activate(None, at).unwrap();
        assert_eq!(approved_at(&again), Some(again.created_at + min(9)));
        assert_eq!(approved_at(&relaxed), Some(relaxed.created_at + min(5)));
        let c = card(&[again, relaxed], &[], &[]);
        assert_eq!(c.approval_median_seconds.count, 2);
        assert_eq!(c.approval_median_seconds.value, Some(300.0));
        assert_eq!(c.approval_p90_seconds.value, Some(540.0));
    }

    #[test]
    fn quick_approvals_are_below_the_band() {
        let c = card(&[peer(1, 0, 1, None), peer(2, 5, 2, None)], &[], &[]);
        assert_eq!(c.approval_median_seconds.value, Some(60.0));
        assert_eq!(c.approval_median_seconds.standing, Standing::Below);
        assert_eq!(
            card(&[], &[], &[]).approval_median_seconds.standing,
            Standing::NoData
        );
        assert_eq!(card(&[], &[], &[]).jit_share.value, None);
    }

    #[test]
    fn breakglass_lowers_jit_and_postmortems_stay_open_until_closed() {
        let grants = [
            auto(1, 0),
            auto(2, 5),
            auto(3, 10),
            auto(4, 30),
            auto(5, 60),
        ];
        let before = auto(6, -3 * 24 * 60);
        let day = Duration::days(1);
        let postmortems = [
            // Break-glass through grants 3 and 4 (closed within the period, so not open),
            // and a drill through grant 5.
            postmortem(&grants[2], false, T0 + min(10), None),
            postmortem(&grants[3], false, T0 + min(30), Some(T0 + min(90))),
            postmortem(&grants[4], true, T0 + min(60), Some(T0 + 2 * day)),
            // Before the period: not a use of it, but still open at its end.
            postmortem(&before, false, before.created_at, None),
            // Opened after the period: neither.
            postmortem(&auto(7, 2 * 24 * 60), false, T0 + 2 * day, None),
        ];
        let c = card(&grants, &postmortems, &[]);
        assert_eq!(c.breakglass_uses.value, Some(2.0));
        assert_eq!(c.breakglass_uses.standing, Standing::Above);
        assert_eq!(c.breakglass_drills, 1);
        // Five grants observed; JIT: the two without break-glass.
        assert_eq!((c.jit_share.count, c.jit_share.of), (2, Some(5)));
        assert_eq!(c.jit_share.standing, Standing::Below);
        // Grant 3's, the drill's (closed after the period) and the one from before.
        assert_eq!(c.postmortems_open.value, Some(3.0));
        // A break-glass grant whose request is not the period's is observed beyond its grants.
        let c = card(&grants[..2], &postmortems, &[]);
        assert_eq!((c.jit_share.count, c.jit_share.of), (2, Some(5)));
    }

    #[test]
    fn revocation_runs_from_the_grant_end_or_expiry() {
        let expired = auto(1, 0); // expires at T0+60
        let mut revoked = auto(2, 0);
        revoked
            .revoke(
                Some(&"bob".parse().unwrap()),
                Comment::parse("x").unwrap(),
                T0 + min(20),
            )
            .unwrap();
        let other = auto(3, 0);
        let sec = Duration::milliseconds;
        let leases = [
            lease(&expired, 0, Some(T0 + min(60) + sec(400))),
            lease(&revoked, 0, Some(T0 + min(20) + sec(2500))),
            // Still being retried: its failures count, it has no revocation time yet.
            lease(&other, 2, None),
            // Not a grant of the period.
            lease(&auto(4, -60), 3, Some(T0 + min(5))),
        ];
        let c = card(&[expired, revoked, other], &[], &leases);
        assert_eq!(c.revocation_mean_seconds.count, 2);
        assert_eq!(c.revocation_mean_seconds.value, Some(1.45));
        assert_eq!(c.revocation_max_seconds.value, Some(2.5));
        assert_eq!(c.revocation_max_seconds.standing, Standing::Above);
        assert_eq!(c.revocation_failures.value, Some(2.0));
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(5.0));
        assert_eq!(percentile(&v, 0.9), Some(9.0));
        assert_eq!(percentile(&v[..1], 0.9), Some(1.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
