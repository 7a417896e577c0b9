//! `warden-bench`: the load generator behind `bench/run`.
//!
//! `warden-bench http` measures one HTTP endpoint (latency at concurrency 1,
//! then throughput at concurrency N) and prints one stable `NAME.metric: value
//! unit` line per figure; `warden-bench revoke-lag` reads Warden's audit log
//! and prints how late its credentials were revoked; `warden-bench free-port`
//! prints a free port on 127.0.0.1 for the script to start a server on. Every
//! system is measured through the same client, so the figures compare.

mod check;
mod conn;
mod lag;
mod load;

use std::net::{Ipv4Addr, TcpListener};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use http::Method;

use crate::check::{Expectation, FieldRule};

#[derive(Debug, Parser)]
#[command(
    name = "warden-bench",
    about = "Load generator for Warden's benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure one HTTP endpoint: warmup, latency at concurrency 1, throughput at concurrency N.
    Http(HttpArgs),
    /// Revocation lag from Warden's audit log: the `credential.revoked` events' `lag_ms`.
    RevokeLag(lag::LagArgs),
    /// Print a TCP port on 127.0.0.1 that is free now.
    FreePort,
}

#[derive(Debug, Args)]
struct HttpArgs {
    /// Prefix of every printed line, e.g. `grant.warden`.
    #[arg(long)]
    name: String,
    /// Names the figures `NAME.METRIC_p50`, `NAME.METRIC_throughput_cN`, ... instead of
    /// `NAME.latency_p50`, `NAME.throughput_cN`, ...; adds `NAME.METRIC_ok`.
    #[arg(long)]
    metric: Option<String>,
    /// Full URL of the endpoint (loopback only).
    #[arg(long)]
    url: String,
    /// HTTP method; POST when a body is given, GET otherwise.
    #[arg(long)]
    method: Option<String>,
    /// A request header, `Name: value`; repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// The request body (sent as application/json unless a Content-Type header is given).
    #[arg(long)]
    body: Option<String>,
    /// `MIN-MAX` seconds: `{ttl}` in the body becomes `Ns`, N stepping through the range
    /// request by request (e.g. `60-180`), so expiries spread evenly.
    #[arg(long, value_parser = parse_range)]
    ttl_range: Option<(u64, u64)>,
    /// The status every response must have.
    #[arg(long, default_value_t = 200)]
    expect_status: u16,
    /// A JSON field every response body must have: `PATH=VALUE` or `PATH^=PREFIX`; repeatable.
    #[arg(long = "expect-json-field")]
    expect_json_fields: Vec<FieldRule>,
    /// Concurrent requests in the throughput run.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Requests in the throughput run (0: no throughput run).
    #[arg(long, default_value_t = 10_000)]
    requests: u64,
    /// Requests in the latency run, one at a time (0: no latency run).
    #[arg(long, default_value_t = 2_000)]
    latency_requests: u64,
    /// Requests sent first and not measured.
    #[arg(long, default_value_t = 500)]
    warmup: u64,
    /// Each run stops after this many seconds even if not all its requests were sent.
    #[arg(long, default_value_t = 60)]
    time_limit_secs: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::FreePort => free_port().map(|port| {
            println!("{port}");
            ExitCode::SUCCESS
        }),
        Command::Http(args) => runtime().and_then(|rt| rt.block_on(http(args))),
        Command::RevokeLag(args) => runtime().and_then(|rt| rt.block_on(lag::run(args))),
    };
    result.unwrap_or_else(|e| {
        eprintln!("warden-bench: {e:#}");
        ExitCode::from(2)
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Parses `MIN-MAX` with `1 <= MIN <= MAX`.
fn parse_range(s: &str) -> anyhow::Result<(u64, u64)> {
    let (min, max) = s
        .split_once('-')
        .with_context(|| format!("expected MIN-MAX, got {s:?}"))?;
    let (min, max): (u64, u64) = (min.trim().parse()?, max.trim().parse()?);
    anyhow::ensure!(
        1 <= min && min <= max,
        "expected 1 <= MIN <= MAX, got {s:?}"
    );
    Ok((min, max))
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Runs the three phases and prints the figures; exits 1 if any request failed.
async fn http(args: HttpArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let method = match &args.method {
        Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes()).context("--method")?,
        None if args.body.is_some() => Method::POST,
        None => Method::GET,
    };
    let target = Arc::new(
        load::Target::new(
            conn::Endpoint::parse(&args.url).await?,
            method,
            conn::parse_headers(&args.headers)?,
            args.body.clone(),
            Expectation {
                status: args.expect_status,
                fields: args.expect_json_fields.clone(),
            },
        )
        .with_ttl_range(args.ttl_range),
    );
    let limit = Duration::from_secs(args.time_limit_secs);
    let name = &args.name;

    load::sequential(&target, args.warmup, limit).await?;
    let latency = load::sequential(&target, args.latency_requests, limit).await?;
    let throughput =
        load::concurrent(Arc::clone(&target), args.requests, args.concurrency, limit).await?;

    let ms = |micros: u64| micros as f64 / 1000.0;
    // The default names are the `grant` benchmark's; `--metric` names them after what is measured.
    let (latency_name, throughput_name, errors_name) = match &args.metric {
        Some(m) => (
            format!("{name}.{m}"),
            format!("{name}.{m}_throughput_c{}", args.concurrency),
            format!("{name}.{m}_errors"),
        ),
        None => (
            format!("{name}.latency"),
            format!("{name}.throughput_c{}", args.concurrency),
            format!("{name}.errors"),
        ),
    };
    let h = &latency.histogram;
    if args.latency_requests > 0 {
        if h.is_empty() {
            println!("{latency_name}_p50: n/a");
            println!("{latency_name}_p99: n/a");
            println!("{latency_name}_max: n/a");
        } else {
            println!(
                "{latency_name}_p50: {:.2} ms",
                ms(h.value_at_quantile(0.50))
            );
            println!(
                "{latency_name}_p99: {:.2} ms",
                ms(h.value_at_quantile(0.99))
            );
            println!("{latency_name}_max: {:.2} ms", ms(h.max()));
        }
    }
    if args.requests > 0 {
        // Only responses that met the expectation count: failing fast is not throughput.
        let rate = throughput.ok as f64 / throughput.elapsed.as_secs_f64().max(f64::EPSILON);
        println!("{throughput_name}: {rate:.0} req/s");
        if let Some(m) = &args.metric {
            println!("{name}.{m}_ok: {}", throughput.ok);
        }
    }
    println!("{errors_name}: {}", target.errors());

    if latency.sent < args.latency_requests || throughput.sent < args.requests {
        eprintln!(
            "{name}: time limit of {} s reached: {} of {} latency and {} of {} throughput requests sent",
            args.time_limit_secs,
            latency.sent,
            args.latency_requests,
            throughput.sent,
            args.requests
        );
    }
    match target.first_error() {
        Some(first) => {
            eprintln!("{name}: first error: {first}");
            for (kind, n) in target.error_kinds().iter().take(5) {
                eprintln!("{name}: {n} failed with: {kind}");
            }
            Ok(ExitCode::FAILURE)
        }
        None => Ok(ExitCode::SUCCESS),
    }
}
