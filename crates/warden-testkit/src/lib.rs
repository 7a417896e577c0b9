//! Test support for Warden's integration tests.
//!
//! Everything here runs real programs as child processes on 127.0.0.1 and
//! keeps its files in a temporary directory that disappears with the value:
//!
//! - [`Sshd`]: a private OpenSSH server that trusts a caller-given user CA,
//!   with [`ensure_local_user`] and [`ssh_login`] to prove a certificate works.
//! - [`Server`]: the `warden` binary, started on a free port and waited for
//!   until `/readyz` answers 200.
//! - [`Cli`]: the `warden` binary as a client, with its own home directory.
//! - [`Postgres`] and [`Mariadb`]: private database servers with an administrator account
//!   and a small `app` database, driven with the real `psql` and `mariadb` clients (started
//!   with `start_tls`, they take TCP logins over TLS only, with a [`TestCa`]'s certificate); an
//!   [`OpenSession`] holds a client connected to prove that revoking ends it.
//! - [`WebhookReceiver`]: an HTTP receiver that accepts POSTs, or answers them with an error, or
//!   is stopped and started again, to play a notification sink that goes down.
//! - [`SmtpSink`]: a real SMTP server (Python's `smtpd`) that keeps the messages it receives.
//! - [`TestCa`] and [`TlsFront`]: a throwaway CA's certificate for 127.0.0.1, and `socat`
//!   terminating TLS with it for a local port.
//! - [`StallingRelay`]: a TCP relay that holds back, then delivers late, what a client sends
//!   containing a given statement, as a network partition longer than the client waits does.
//! - [`Tmux`]: a terminal program (e.g. an interactive `ssh`) driven through tmux.
//! - [`free_port`], [`http_get`], [`http_get_with`] and [`http_post_with`]: small building
//!   blocks of the above, and probes for tests that speak HTTP as an attacker or a proxy would.
//!
//! Helpers panic with a clear message when the environment is not as a test
//! needs it: a failed setup is a failed test.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod cli;
mod database;
mod http;
mod mariadb;
mod postgres;
mod process;
mod server;
mod smtp;
mod sshd;
mod stall;
mod tls;
mod tmux;
mod webhook;

pub use cli::{Cli, CliOutput};
pub use database::OpenSession;
pub use http::{HttpResponse, http_get, http_get_with, http_post_with};
pub use mariadb::Mariadb;
pub use postgres::Postgres;
pub use server::Server;
pub use smtp::{SmtpSink, SmtpTls};
pub use sshd::{
    Sshd, ensure_local_user, ssh_base_args, ssh_keypair, ssh_login, ssh_person_args, ssh_run,
};
pub use stall::StallingRelay;
pub use tls::{TestCa, TlsFront};
pub use tmux::Tmux;
pub use webhook::WebhookReceiver;

use std::net::{Ipv4Addr, TcpListener};

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is found by binding port 0 and reading what the kernel chose; the
/// listener is closed before returning, so another process could take the port
/// in between. Callers that start a server on it retry when that happens.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("binding 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("reading the local address of a bound listener")
        .port()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_bindable() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .expect("the port from free_port can be bound");
    }
}
