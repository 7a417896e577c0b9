//! One keep-alive HTTP/1.1 connection, on hyper's connection API.
//!
//! The load generator shares the machine with the system it measures, so every microsecond
//! it spends per request is taken from that system. A pooled general-purpose client parses
//! the URL, checks a pool out and in, and copies headers on every request; here each load
//! worker owns its connection and sends requests whose parts were prepared once.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Longest wait for one response, so a server that stops answering ends the run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where requests go: a plain-HTTP server on this machine and one path on it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    addr: SocketAddr,
    host: HeaderValue,
    path: Uri,
}

impl Endpoint {
    /// Parses `http://HOST:PORT/PATH?QUERY`, resolving HOST once.
    pub async fn parse(url: &str) -> anyhow::Result<Endpoint> {
        let uri: Uri = url.parse().with_context(|| format!("URL {url:?}"))?;
        if uri.scheme_str() != Some("http") {
            bail!("URL {url:?}: only http:// is supported (the benchmarks run over loopback)");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("URL {url:?} has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((authority.host(), port))
            .await
            .with_context(|| format!("resolving {}", authority.host()))?
            .next()
            .with_context(|| format!("{} has no address", authority.host()))?;
        let path = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .with_context(|| format!("URL {url:?}"))?;
        Ok(Endpoint {
            addr,
            host: HeaderValue::from_str(authority.as_str())?,
            path,
        })
    }

    /// The same server, another path (`/v1/audit?...`).
    pub fn with_path(&self, path: &str) -> anyhow::Result<Endpoint> {
        Ok(Endpoint {
            path: path.parse().with_context(|| format!("path {path:?}"))?,
            ..self.clone()
        })
    }

    /// A request to this endpoint with `headers` (which must include `Host`) and `body`.
    pub fn request(
        &self,
        method: &Method,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method.clone();
        *request.uri_mut() = self.path.clone();
        *request.headers_mut() = headers.clone();
        request
    }

    /// `extra` plus `Host`, and `Content-Type: application/json` when there is a body and
    /// `extra` names no content type.
    pub fn headers(&self, mut extra: HeaderMap, has_body: bool) -> HeaderMap {
        extra.insert(HOST, self.host.clone());
        if has_body && !extra.contains_key(CONTENT_TYPE) {
            extra.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        extra
    }
}

/// A connection to an [`Endpoint`]'s server, opened on first use and again after the server
/// closed it.
pub struct Conn {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub fn new(endpoint: &Endpoint) -> Conn {
        Conn {
            addr: endpoint.addr,
            sender: None,
        }
    }

    /// Sends `request` and reads the whole response: its status and body.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> anyhow::Result<(u16, Bytes)> {
        let open = match self.sender.take() {
            // Ready for the next request, or closed by the server since the last one.
            Some(mut s) => s.ready().await.is_ok().then_some(s),
            None => None,
        };
        let sender = match open {
            Some(s) => self.sender.insert(s),
            None => self.sender.insert(connect(self.addr).await?),
        };
        let exchange = async {
            let response = sender
                .send_request(request)
                .await
                .context("sending the request")?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .with_context(|| format!("reading the body of an HTTP {status} response"))?
                .to_bytes();
            anyhow::Ok((status, body))
        };
        let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => Err(anyhow::anyhow!(
                "no complete response within {} s",
                REQUEST_TIMEOUT.as_secs()
            )),
        };
        if outcome.is_err() {
            // Whatever was left half-sent or half-read, the next request gets a new connection.
            self.sender = None;
        }
        outcome
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    // One request is one write: nothing to gain from Nagle, a delayed ACK to lose.
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP/1.1 handshake with {addr}"))?;
    tokio::spawn(async move {
        // Ends when the server closes the connection; the next send opens another.
        let _ = connection.await;
    });
    Ok(sender)
}

/// Parses `Name: value` header arguments.
pub fn parse_headers(raw: &[String]) -> anyhow::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    for h in raw {
        let (name, value) = h
            .split_once(':')
            .with_context(|| format!("header {h:?} is not `Name: value`"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .with_context(|| format!("header name in {h:?}"))?;
        let value = HeaderValue::from_str(value.trim())
            .with_context(|| format!("header value in {h:?}"))?;
        headers.append(name, value);
    }
    Ok(headers)
}
