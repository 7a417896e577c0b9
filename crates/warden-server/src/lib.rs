//! Warden's server: configuration, the HTTP API, authentication, the request broker that
//! drives requests through policy, approval and issuance, and the background worker that
//! expires grants and times out requests.
//!
//! Invariant: only this crate knows HTTP and JSON request shapes; the domain and policy crates
//! stay pure, and every outside world (storage, issuers) is reached through a trait.

/// Prints a line for the operator on standard output, as `println!` does, except that a server
/// whose output went away (a log shipper that died, `| head`) goes on serving: the line is
/// lost, not the server (and not the development server's promise to delete its data).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod api;
pub mod archive;
pub mod auth;
pub mod broker;
pub mod ca_file;
pub mod checkpoints;
pub mod config;
pub mod config_secret;
mod disk_space;
mod durable_file;
pub mod export;
pub mod forwarded;
mod gates;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod notify;
mod owner_only;
pub mod postmortems;
pub mod serve;
pub mod ssh;
pub mod state;
pub mod throttle;
pub mod vault;
pub mod webhook;
pub mod worker;
mod write_stall;

pub use config::Config;
pub use serve::{ServeOptions, serve};
