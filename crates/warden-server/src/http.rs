//! The API's HTTP/1.1 server: the accept loop, with the limits on connections that
//! `axum::serve` leaves unset.
//!
//! A client has `read_timeout` to send a request's headers and as long again for its body, and
//! a connection idle between two requests is closed after the same time (hyper starts its
//! header timer whenever it waits for a request), so slow or silent clients cannot hold
//! connections, file descriptors and handlers. Nor can one that stops reading its answers: see
//! [`WriteStall`].
//!
//! Connections run without Nagle's algorithm: a watched session's output is many small writes,
//! and each would otherwise wait for the acknowledgement of the one before.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower_http::add_extension::AddExtension;
use tower_http::timeout::RequestBodyDeadline;

use crate::write_stall::WriteStall;

pub mod framing;

/// How long an accept error that is not one connection's (out of file descriptors, say) stops
/// the loop before it tries again.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// How long requests in flight at shutdown get to finish. A watched session's stream or a
/// stalled upload could run on indefinitely; past this they are cut, so that the server still
/// writes its final audit checkpoint before a supervisor's kill.
const DRAIN: Duration = Duration::from_secs(5);

/// Send buffer of every API connection (the kernel doubles it for its own bookkeeping). A
/// writer learns it may write again only once a good part of the buffer has drained, and with
/// the buffer the kernel would grow to on its own (megabytes) a client reading slowly but
/// steadily would seem to read nothing for longer than [`WriteStall`] allows (a 5 MB export
/// read at 64 KiB/s was cut after 4 MB). With this one a reader of some 10 KB/s shows progress
/// within the read timeout; it is ample for the loopback or LAN hop from the TLS proxy in front.
const SEND_BUFFER: u32 = 64 * 1024;

/// Listens for API connections on `addr`, each with [`SEND_BUFFER`] (set on the listening
/// socket, which the accepted ones take it from).
pub async fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_send_buffer_size(SEND_BUFFER)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Serves `router` on `listener` until `shutdown` completes, then gives the requests in flight
/// `DRAIN` (5 s) to finish and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(read_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::error!(error = %e, "cannot accept API connections; retrying in a second");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot turn off Nagle's algorithm on a connection");
        }
        // What `ConnectInfo<SocketAddr>` extracts: the client's address for the audit log;
        // and what the connection's request heads named that hyper does not hand on.
        let heads = framing::Heads::default();
        let service = RequestBodyDeadline::new(
            AddExtension::new(
                AddExtension::new(router.clone(), ConnectInfo::<SocketAddr>(peer)),
                heads.clone(),
            ),
            read_timeout,
        );
        let io = WriteStall::new(
            TokioIo::new(framing::Watched::new(tcp, heads)),
            read_timeout,
        );
        let connection =
            graceful.watch(http.serve_connection(io, TowerToHyperService::new(service)));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "API connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "API requests still in flight {} s into shutdown are cut",
            DRAIN.as_secs()
        );
    }
}

/// Errors of one connection that came and went before it was accepted.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
