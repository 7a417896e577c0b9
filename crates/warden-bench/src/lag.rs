//! How late Warden revoked its credentials, from its own audit log: every
//! `credential.revoked` event carries `details.lag_ms`, the time from the lease's expiry to the
//! revocation. Reads the events over the API (`GET /v1/audit`, an administrator's token),
//! waiting until the expected number has arrived, and prints their percentiles; given the time
//! a restarted server became ready, also how late each revocation was after that moment.
//!
//! Only events whose `details.outcome` is `revoked` (an account was removed) count; those of
//! credentials that were never created (`already_gone`, e.g. a failed issue) are only counted.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use http::{HeaderMap, Method};
use serde_json::Value;

use crate::conn::{Conn, Endpoint, parse_headers};

/// Events per page, the API's maximum.
const PAGE: usize = 10_000;

#[derive(Debug, Args)]
pub struct LagArgs {
    /// Prefix of every printed line, e.g. `db.warden`.
    #[arg(long)]
    name: String,
    /// Warden's base URL, e.g. `http://127.0.0.1:8443` (loopback only).
    #[arg(long)]
    url: String,
    /// A request header, `Name: value` (an administrator's `Authorization`); repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Wait until at least this many accounts have been removed (events with outcome `revoked`).
    #[arg(long, default_value_t = 1)]
    expect: usize,
    /// Give up waiting after this many seconds and report what arrived.
    #[arg(long, default_value_t = 60)]
    wait_secs: u64,
    /// Only events with a sequence number above this one.
    #[arg(long, default_value_t = 0)]
    after_seq: u64,
    /// Unix milliseconds at which a restarted server became ready: also print how late each
    /// revocation was after max(its expiry, this moment).
    #[arg(long)]
    ready_unix_ms: Option<i64>,
}

/// One `credential.revoked` event: when it was logged, its `lag_ms`, and whether an account
/// was removed (`outcome` `revoked`) rather than found gone already.
#[derive(Debug, Clone, Copy)]
struct Revoked {
    time_ms: i64,
    lag_ms: i64,
    removed: bool,
}

/// Fetches every matching event, page by page.
async fn fetch(
    conn: &mut Conn,
    server: &Endpoint,
    headers: &HeaderMap,
    after_seq: u64,
) -> anyhow::Result<Vec<Revoked>> {
    let mut after = after_seq;
    let mut out = Vec::new();
    loop {
        let path = format!("/v1/audit?code=credential.revoked&limit={PAGE}&after_seq={after}");
        let request = server
            .with_path(&path)?
            .request(&Method::GET, headers, Bytes::new());
        let (status, body) = conn
            .send(request)
            .await
            .with_context(|| format!("GET {path}"))?;
        let body: Value =
            serde_json::from_slice(&body).with_context(|| format!("reading GET {path}"))?;
        anyhow::ensure!(
            (200..300).contains(&status),
            "GET {path}: HTTP {status}: {body}"
        );
        let events = body["events"]
            .as_array()
            .with_context(|| format!("GET {path}: no `events` array"))?;
        for record in events {
            after = after.max(record["seq"].as_u64().context("an event without `seq`")?);
            let event = &record["event"];
            let time = event["time"].as_str().context("an event without `time`")?;
            out.push(Revoked {
                time_ms: rfc3339_ms(time)
                    .with_context(|| format!("event time {time:?} is not RFC 3339"))?,
                lag_ms: event["details"]["lag_ms"]
                    .as_i64()
                    .context("a credential.revoked event without `details.lag_ms`")?,
                removed: event["details"]["outcome"] == "revoked",
            });
        }
        if events.len() < PAGE {
            return Ok(out);
        }
    }
}

/// The nearest-rank `q` quantile of sorted `values`.
fn quantile(sorted: &[i64], q: f64) -> i64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Waits for the events, prints the figures; exits 1 if fewer than expected arrived.
pub async fn run(args: LagArgs) -> anyhow::Result<ExitCode> {
    let server = Endpoint::parse(&args.url).await?;
    let headers = server.headers(parse_headers(&args.headers)?, false);
    let mut conn = Conn::new(&server);
    let deadline = Instant::now() + Duration::from_secs(args.wait_secs);
    let all = loop {
        let all = fetch(&mut conn, &server, &headers, args.after_seq).await?;
        if all.iter().filter(|e| e.removed).count() >= args.expect || Instant::now() >= deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let events: Vec<Revoked> = all.iter().copied().filter(|e| e.removed).collect();
    let name = &args.name;
    let mut lags: Vec<i64> = events.iter().map(|e| e.lag_ms).collect();
    lags.sort_unstable();
    if lags.is_empty() {
        println!("{name}.revoke_lag_p50: n/a");
        println!("{name}.revoke_lag_p99: n/a");
        println!("{name}.revoke_lag_max: n/a");
    } else {
        println!("{name}.revoke_lag_p50: {} ms", quantile(&lags, 0.50));
        println!("{name}.revoke_lag_p99: {} ms", quantile(&lags, 0.99));
        println!("{name}.revoke_lag_max: {} ms", quantile(&lags, 1.0));
    }
    println!("{name}.revoked: {}", events.len());
    println!("{name}.revoked_already_gone: {}", all.len() - events.len());
    if let Some(ready) = args.ready_unix_ms {
        let mut late: Vec<i64> = events
            .iter()
            .map(|e| e.time_ms - (e.time_ms - e.lag_ms).max(ready))
            .collect();
        late.sort_unstable();
        match late.last() {
            Some(max) => {
                println!(
                    "{name}.after_restart_lateness_p50: {} ms",
                    quantile(&late, 0.5)
                );
                println!("{name}.after_restart_lateness_max: {max} ms");
            }
            None => println!("{name}.after_restart_lateness_max: n/a"),
        }
    }
    if events.len() < args.expect {
        eprintln!(
            "{name}: only {} of {} credential.revoked events within {} s",
            events.len(),
            args.expect,
            args.wait_secs
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Unix milliseconds of an RFC 3339 timestamp (`2026-01-02T03:04:05.678Z`, any offset).
fn rfc3339_ms(s: &str) -> Option<i64> {
    let (date, rest) = s.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-');
    let (year, month, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (time, offset_secs) = match rest.strip_suffix(['Z', 'z']) {
        Some(t) => (t, 0),
        None => {
            let at = rest.rfind(['+', '-'])?;
            let (t, off) = rest.split_at(at);
            let sign = if off.starts_with('-') { -1 } else { 1 };
            let (h, m) = off[1..].split_once(':')?;
            (
                t,
                sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60),
            )
        }
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':');
    let (h, mi, sec): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    let millis: i64 = format!("{:0<3}", frac.get(..3).unwrap_or(frac))
        .parse()
        .ok()?;
    let days = days_from_civil(year, month, day)?;
    Some((days * 86_400 + h * 3_600 + mi * 60 + sec - offset_secs) * 1_000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> Option<i64> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_rfc3339() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1_500));
        assert_eq!(
            rfc3339_ms("2026-11-22T05:34:03.639160Z"),
            Some(1_795_325_643_639)
        );
        assert_eq!(
            rfc3339_ms("2026-11-22T06:34:03.639+01:00"),
            Some(1_795_325_643_639)
        );
        assert_eq!(
            rfc3339_ms("2000-02-29T00:00:00-00:30"),
            Some(951_784_200_000)
        );
        assert_eq!(rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&[7], 0.5), 7);
    }
}
