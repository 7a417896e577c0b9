//! Prometheus metrics, served at `/metrics` in the text exposition format 0.0.4.
//!
//! Every series is declared once in `series!` below: adding a metric is one line there plus
//! the call that feeds it (`app.metrics.add`, `observe` or `set`). Event-driven series
//! (counters, histograms) are fed by the broker as things happen; figures that must be right
//! after a restart and an archive of the audit log (requests by state, failed leases, export
//! lag, break-glass uses and open postmortems) are read from the store at scrape time. Label values are always bounded:
//! states, approval tiers
//! ([`warden_domain::Request::tier`]), issuer kinds and configured sink names, never user
//! names or request ids.

use std::fmt;

use metrics::{Key, KeyName, Label, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use warden_domain::State;

use crate::state::App;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// From well under a second (automatic grants) to a day (approvals).
const GRANT_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
    14400.0, 86400.0,
];
/// Dense around the healthy 5–15 minute band.
const APPROVAL_BUCKETS: &[f64] = &[
    60.0, 120.0, 300.0, 450.0, 600.0, 750.0, 900.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0,
    28800.0, 86400.0,
];
/// Around the one-second target.
const REVOCATION_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    /// With its bucket upper bounds.
    Histogram(&'static [f64]),
}

/// One declared metric.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    /// Label names; every use passes one value per name, in this order.
    pub labels: &'static [&'static str],
}

impl Def {
    const fn new(
        kind: Kind,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        Self {
            name,
            help,
            kind,
            labels,
        }
    }
    const fn counter(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        Self::new(Kind::Counter, name, help, labels)
    }
    const fn gauge(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        Self::new(Kind::Gauge, name, help, labels)
    }
    const fn histogram(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        buckets: &'static [f64],
    ) -> Self {
        Self::new(Kind::Histogram(buckets), name, help, labels)
    }
}

macro_rules! series {
    ($($id:ident = $ctor:ident($($arg:expr),* $(,)?);)*) => {
        $(pub const $id: Def = Def::$ctor($($arg),*);)*
        /// Every declared metric.
        pub const ALL: &[Def] = &[$($id),*];
    };
}

series! {
    REQUESTS = gauge("warden_requests", "Requests by state and approval tier, counted in the store at scrape time (a grant past its expiry counts as expired).", &["state", "tier"]);
    REQUESTS_CREATED = counter("warden_requests_created_total", "Requests created since start, by approval tier.", &["tier"]);
    TIME_TO_GRANT = histogram("warden_time_to_grant_seconds", "Time from a request's creation to its grant becoming active.", &["tier"], GRANT_BUCKETS);
    APPROVAL_LATENCY = histogram("warden_approval_latency_seconds", "Time from a request's creation to its final approval, for tiers that need approval (healthy median 5-15 minutes).", &["tier"], APPROVAL_BUCKETS);
    GRANTS_ACTIVE = gauge("warden_grants_active", "Grants active now.", &[]);
    ISSUED = counter("warden_credentials_issued_total", "Credentials issued since start, by issuer kind.", &["kind"]);
    ISSUE_FAILURES = counter("warden_credential_issue_failures_total", "Credential issues that failed since start, by issuer kind.", &["kind"]);
    REVOKED = counter("warden_credentials_revoked_total", "Accounts confirmed removed at targets since start, by issuer kind.", &["kind"]);
    REVOKE_FAILURES = counter("warden_revoke_failures_total", "Failed attempts to remove an account at a target since start (retried), by issuer kind.", &["kind"]);
    LEASES_FAILED = gauge("warden_leases_failed", "Leases whose revocation kept failing and that need attention (still retried).", &[]);
    REVOCATION_LAG = histogram("warden_revocation_lag_seconds", "Time from when an account should be gone (its grant's end or expiry, whichever first) to its confirmed removal.", &["kind"], REVOCATION_BUCKETS);
    EXPORT_LAG = gauge("warden_audit_export_lag_events", "Audit events not yet delivered, by export sink.", &["sink"]);
    BREAKGLASS_USES = counter("warden_breakglass_uses_total", "Break-glass grants ever made, drills apart.", &["drill"]);
    POSTMORTEMS_OPEN = gauge("warden_postmortems_open", "Postmortems opened and not yet closed.", &[]);
    OUTBOX_PENDING = gauge("warden_notifications_pending", "Notifications queued and not yet delivered to every sink; retrying: those that failed at least once.", &["state"]);
    SESSIONS_ACTIVE = gauge("warden_sessions_active", "SSH sessions open through the proxy now.", &[]);
    SSH_CONNECTIONS_REFUSED = counter("warden_ssh_connections_refused_total", "SSH connections the proxy refused or closed since start to stay within its limits, by reason: waiting_per_address, waiting_total (not yet signed in), signed_in_per_user, signed_in_per_address, signed_in_total, sessions_per_connection (a session channel refused), idle (signed in with no session for 30 s, closed), accept_failed (not accepted, such as for want of file descriptors).", &["reason"]);
    SESSIONS_RECORDED = counter("warden_sessions_recorded_total", "SSH sessions recorded since start.", &[]);
    RECORDING_FAILURES = counter("warden_recording_failures_total", "SSH sessions refused or ended since start because their recording could not be written.", &[]);
    USERS_LOCKED = gauge("warden_users_locked", "Users whose password and TOTP checks are locked now after wrong answers in a row (see warden user locked).", &[]);
    AUTH_THROTTLED = counter("warden_auth_throttled_total", "Sign-ins and invalid tokens refused since start, unchecked and unaudited, because their address had spent its failed authentications (each throttle's start is audited as auth.source_throttled).", &[]);
    SIGN_INS_SHED = counter("warden_sign_ins_shed_total", "Sign-ins refused unchecked since start because too many waited for a password check: the queue was full, their address had 20 under way, or they waited 15 s (none counts against its address or user, nor is audited).", &[]);
    OUTBOX_LAG = gauge("warden_notifications_lag_seconds", "Age of the oldest undelivered notification (0 when none).", &[]);
    API_CONNECTIONS = gauge("warden_api_connections", "API connections open now.", &[]);
    API_CONNECTIONS_REFUSED = counter("warden_api_connections_refused_total", "API connections closed unread since start because their address (an IPv6 /64) held as many open as it may (reason address; trusted proxies apart) or all addresses together did (reason total).", &["reason"]);
    DATA_DIR_FREE = gauge("warden_data_dir_free_bytes", "Free space on the data dir's disk; under 64 MiB the server is not ready.", &[]);
}

/// The registry of Warden's metrics.
pub struct Metrics {
    recorder: PrometheusRecorder,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

fn key(def: &Def, values: &[&str]) -> Key {
    debug_assert_eq!(def.labels.len(), values.len(), "labels of {}", def.name);
    let labels: Vec<Label> = def
        .labels
        .iter()
        .zip(values)
        .map(|(k, v)| Label::new(*k, (*v).to_owned()))
        .collect();
    Key::from_parts(def.name, labels)
}

impl Metrics {
    /// Declares every series with its help text and histogram buckets.
    pub fn new() -> Result<Self, String> {
        let mut builder = PrometheusBuilder::new();
        for def in ALL {
            if let Kind::Histogram(buckets) = def.kind {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(def.name.to_owned()), buckets)
                    .map_err(|e| format!("metric {}: {e}", def.name))?;
            }
        }
        let recorder = builder.build_recorder();
        for def in ALL {
            let (name, help) = (KeyName::from(def.name), SharedString::from(def.help));
            match def.kind {
                Kind::Counter => recorder.describe_counter(name, None, help),
                Kind::Gauge => recorder.describe_gauge(name, None, help),
                Kind::Histogram(_) => recorder.describe_histogram(name, None, help),
            }
            // A counter without labels, or labelled by issuer kind alone, is shown at 0 from the
            // start, and such a histogram empty: an alert on its rate would otherwise see no
            // data until the first event.
            let label_sets: Vec<Vec<&str>> = match def.labels {
                [] => vec![vec![]],
                ["kind"] => warden_issuers::KINDS.iter().map(|k| vec![*k]).collect(),
                _ => Vec::new(),
            };
            for labels in &label_sets {
                match def.kind {
                    Kind::Counter => recorder
                        .register_counter(&key(def, labels), &METADATA)
                        .increment(0),
                    Kind::Histogram(_) if !labels.is_empty() => {
                        // Registered is enough: the recorder keeps it, empty.
                        let _ = recorder.register_histogram(&key(def, labels), &METADATA);
                    }
                    _ => {}
                }
            }
        }
        Ok(Self { recorder })
    }

    /// Adds `n` to a counter.
    pub fn add(&self, def: &Def, labels: &[&str], n: u64) {
        self.recorder
            .register_counter(&key(def, labels), &METADATA)
            .increment(n);
    }

    /// Records one observation of a histogram.
    pub fn observe(&self, def: &Def, labels: &[&str], value: f64) {
        self.recorder
            .register_histogram(&key(def, labels), &METADATA)
            .record(value);
    }

    /// Sets a gauge.
    pub fn set(&self, def: &Def, labels: &[&str], value: f64) {
        self.recorder
            .register_gauge(&key(def, labels), &METADATA)
            .set(value);
    }

    /// Sets a counter read from durable state.
    fn absolute(&self, def: &Def, labels: &[&str], value: u64) {
        self.recorder
            .register_counter(&key(def, labels), &METADATA)
            .absolute(value);
    }

    /// Reads the scrape-time figures and renders every series.
    pub async fn render(&self, app: &App) -> Result<String, warden_store::Error> {
        let counts = app.store.count_requests(crate::state::now()).await?;
        let mut tiers: Vec<&'static str> = vec![warden_domain::Requirement::auto().tier()];
        let mut table = std::collections::HashMap::new();
        for (state, requirement, n) in &counts {
            let tier = warden_domain::request::tier_of_approval(requirement);
            if !tiers.contains(&tier) {
                tiers.push(tier);
            }
            *table.entry((*state, tier)).or_insert(0u64) += n;
        }
        for state in State::ALL {
            for tier in &tiers {
                let n = table.get(&(state, *tier)).copied().unwrap_or(0);
                self.set(&REQUESTS, &[state.as_str(), tier], n as f64);
            }
        }
        let active: u64 = counts
            .iter()
            .filter(|(s, _, _)| *s == State::Active)
            .map(|(_, _, n)| n)
            .sum();
        self.set(&GRANTS_ACTIVE, &[], active as f64);
        let failed = app.store.count_failed_leases().await?;
        self.set(&LEASES_FAILED, &[], failed as f64);

        let export = app.export.snapshot();
        for sink in &export.sinks {
            let lag = export.log_size.saturating_sub(sink.cursor);
            self.set(&EXPORT_LAG, &[&sink.name], lag as f64);
        }

        // Users, not locks: one locked both ways is one user whose sign-ins are refused.
        let locked: std::collections::BTreeSet<_> = app
            .locks_in_force()
            .into_iter()
            .map(|(user, _, _)| user)
            .collect();
        self.set(&USERS_LOCKED, &[], locked.len() as f64);
        self.set(&SESSIONS_ACTIVE, &[], app.sessions.active() as f64);
        self.absolute(&SESSIONS_RECORDED, &[], app.sessions.recorded_total());
        self.absolute(&RECORDING_FAILURES, &[], app.sessions.recording_failures());
        for (reason, n) in app.sessions.connections_refused() {
            self.absolute(&SSH_CONNECTIONS_REFUSED, &[reason], n);
        }

        let outbox = app.store.outbox_status().await?;
        self.set(
            &OUTBOX_PENDING,
            &["queued"],
            outbox.pending.saturating_sub(outbox.retrying) as f64,
        );
        self.set(&OUTBOX_PENDING, &["retrying"], outbox.retrying as f64);
        let lag = outbox
            .oldest_pending
            .map_or(0.0, |t| (crate::state::now() - t).as_seconds_f64().max(0.0));
        self.set(&OUTBOX_LAG, &[], lag);

        let uses = app.store.breakglass_uses().await?;
        self.absolute(&BREAKGLASS_USES, &["false"], uses.real);
        self.absolute(&BREAKGLASS_USES, &["true"], uses.drills);
        let open = app.store.open_postmortems().await?;
        self.set(&POSTMORTEMS_OPEN, &[], open as f64);
        // A disk whose space cannot be read leaves the last figure: readiness says why.
        if let Ok(free) = crate::disk_space::free_bytes(&app.config.data_dir) {
            self.set(&DATA_DIR_FREE, &[], free as f64);
        }
        Ok(self.recorder.handle().render())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_well_formed_and_declared_once() {
        let mut names = std::collections::HashSet::new();
        for def in ALL {
            assert!(names.insert(def.name), "{} declared twice", def.name);
            assert!(def.name.starts_with("warden_"), "{}", def.name);
            let is_total = def.name.ends_with("_total");
            assert_eq!(
                is_total,
                matches!(def.kind, Kind::Counter),
                "{}: counters and only counters end in _total",
                def.name
            );
            if let Kind::Histogram(b) = def.kind {
                assert!(b.windows(2).all(|w| w[0] < w[1]), "{} buckets", def.name);
            }
        }
        assert!(Metrics::new().is_ok());
    }

    #[test]
    fn renders_counters_and_histograms_in_text_format() {
        let m = Metrics::new().unwrap();
        m.add(&REQUESTS_CREATED, &["peer"], 2);
        m.observe(&APPROVAL_LATENCY, &["peer"], 400.0);
        let text = m.recorder.handle().render();
        assert!(
            text.contains("# TYPE warden_requests_created_total counter"),
            "{text}"
        );
        assert!(
            text.contains("warden_requests_created_total{tier=\"peer\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("warden_approval_latency_seconds_bucket{tier=\"peer\",le=\"450\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("warden_approval_latency_seconds_bucket{tier=\"peer\",le=\"300\"} 0"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
        for def in ALL.iter().filter(|d| d.labels.is_empty()) {
            if matches!(def.kind, Kind::Counter) {
                assert!(text.contains(&format!("\n{} 0\n", def.name)), "{text}");
            }
        }
        // Series by issuer kind are there for every kind before their first event.
        for kind in warden_issuers::KINDS {
            for def in [&ISSUED, &ISSUE_FAILURES, &REVOKED, &REVOKE_FAILURES] {
                let line = format!("\n{}{{kind=\"{kind}\"}} 0\n", def.name);
                assert!(text.contains(&line), "{line}: {text}");
            }
            let lag = format!("warden_revocation_lag_seconds_count{{kind=\"{kind}\"}} 0");
            assert!(text.contains(&lag), "{lag}: {text}");
        }
    }
}
