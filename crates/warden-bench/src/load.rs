//! Sends one kind of request again and again: a warmup, a latency run at
//! concurrency 1 and a throughput run at concurrency N, each bounded in count
//! and in time, counting every response that misses the expectation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderMap, Method};

use crate::check::Expectation;
use crate::conn::{Conn, Endpoint};

/// One endpoint and how to call it.
#[derive(Debug)]
pub struct Target {
    endpoint: Endpoint,
    method: Method,
    /// Every header of each request, `Host` included, prepared once.
    headers: HeaderMap,
    body: Option<Bytes>,
    /// When set, `{ttl}` in the body becomes a TTL in seconds from this range, inclusive,
    /// stepping through it request by request so the TTLs spread evenly.
    ttl_range: Option<(u64, u64)>,
    sent: AtomicU64,
    expect: Expectation,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Failures by reason, numbers and hex runs blanked so the same failure counts once.
    error_kinds: Mutex<BTreeMap<String, u64>>,
}

impl Target {
    pub fn new(
        endpoint: Endpoint,
        method: Method,
        headers: HeaderMap,
        body: Option<String>,
        expect: Expectation,
    ) -> Target {
        Target {
            headers: endpoint.headers(headers, body.is_some()),
            endpoint,
            method,
            body: body.map(Bytes::from),
            ttl_range: None,
            sent: AtomicU64::new(0),
            expect,
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
            error_kinds: Mutex::new(BTreeMap::new()),
        }
    }

    /// Replaces `{ttl}` in the body with TTLs from `min..=max` seconds, one step per request.
    pub fn with_ttl_range(mut self, range: Option<(u64, u64)>) -> Target {
        self.ttl_range = range;
        self
    }

    /// A connection of its own for one load worker.
    pub fn connection(&self) -> Conn {
        Conn::new(&self.endpoint)
    }

    /// The body of the next request.
    fn next_body(&self) -> Bytes {
        let Some(body) = &self.body else {
            return Bytes::new();
        };
        let n = self.sent.fetch_add(1, Ordering::Relaxed);
        match self.ttl_range {
            Some((min, max)) => {
                let ttl = min + n % (max - min + 1);
                let text = String::from_utf8_lossy(body);
                Bytes::from(text.replace("{ttl}", &format!("{ttl}s")))
            }
            None => body.clone(),
        }
    }

    /// Sends the request once on `conn`; `true` if the response met the expectation.
    async fn once(&self, conn: &mut Conn) -> bool {
        let request = self
            .endpoint
            .request(&self.method, &self.headers, self.next_body());
        let outcome = match conn.send(request).await {
            Ok((status, body)) => self.expect.check(status, &body),
            Err(e) => Err(format!("{e:#}")),
        };
        match outcome {
            Ok(()) => true,
            Err(why) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut kinds) = self.error_kinds.lock() {
                    *kinds.entry(error_kind(&why)).or_default() += 1;
                }
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert(why);
                }
                false
            }
        }
    }

    /// How many requests so far missed the expectation.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The reason the first failed request failed, if one did.
    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|f| f.clone())
    }

    /// Every kind of failure seen and how often, most frequent first.
    pub fn error_kinds(&self) -> Vec<(String, u64)> {
        let mut kinds: Vec<(String, u64)> = self
            .error_kinds
            .lock()
            .map(|k| k.iter().map(|(r, n)| (r.clone(), *n)).collect())
            .unwrap_or_default();
        kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
        kinds
    }
}

/// A failure's reason with every word that holds a digit (ids, account names, numbers) shown
/// as `#`, cut to 300 characters, so failures differing only in such values group together.
fn error_kind(why: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.chars().any(|c| c.is_ascii_digit()) {
            out.push('#');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in why.chars().take(300) {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::error_kind;

    #[test]
    fn error_kinds_blank_ids_and_numbers() {
        assert_eq!(
            error_kind(
                "HTTP 502: role w_admin_e24dc732b6fc: tuple concurrently updated (SQLSTATE XX000)"
            ),
            "HTTP #: role #: tuple concurrently updated (SQLSTATE #)"
        );
        assert_eq!(error_kind("row is too big"), "row is too big");
    }
}

/// What a latency run measured: per-request times of the successful
/// requests, in microseconds, and how many requests were sent.
#[derive(Debug)]
pub struct Latency {
    pub histogram: Histogram<u64>,
    pub sent: u64,
}

/// Sends up to `count` requests one after another, stopping early at `limit`.
pub async fn sequential(target: &Target, count: u64, limit: Duration) -> anyhow::Result<Latency> {
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("creating the histogram")?;
    let deadline = Instant::now() + limit;
    let mut sent = 0;
    let mut conn = target.connection();
    while sent < count && Instant::now() < deadline {
        let start = Instant::now();
        let ok = target.once(&mut conn).await;
        sent += 1;
        if ok {
            let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
            histogram.saturating_record(micros.max(1));
        }
    }
    Ok(Latency { histogram, sent })
}

/// What a throughput run measured.
#[derive(Debug)]
pub struct Throughput {
    pub sent: u64,
    /// Requests whose response met the expectation.
    pub ok: u64,
    pub elapsed: Duration,
}

/// Sends up to `count` requests from `concurrency` concurrent workers,
/// stopping early at `limit`.
pub async fn concurrent(
    target: Arc<Target>,
    count: u64,
    concurrency: usize,
    limit: Duration,
) -> anyhow::Result<Throughput> {
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + limit;
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let target = Arc::clone(&target);
        let issued = Arc::clone(&issued);
        workers.push(tokio::spawn(async move {
            let (mut sent, mut ok) = (0u64, 0u64);
            let mut conn = target.connection();
            while issued.fetch_add(1, Ordering::Relaxed) < count && Instant::now() < deadline {
                ok += u64::from(target.once(&mut conn).await);
                sent += 1;
            }
            (sent, ok)
        }));
    }
    let (mut sent, mut ok) = (0, 0);
    for worker in workers {
        let (s, o) = worker.await.context("a load worker failed")?;
        sent += s;
        ok += o;
    }
    Ok(Throughput {
        sent,
        ok,
        elapsed: start.elapsed(),
    })
}
