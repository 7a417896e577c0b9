//! A configured HTTP endpoint that Warden POSTs JSON to: the audit export's webhook sink and
//! the notification webhook share it.
//!
//! Only a 2xx answer counts as delivered; anything else, redirects included, is a failure for
//! the caller to retry (a redirect could carry the configured headers elsewhere). Error
//! messages show only the URL's scheme, host and port (its path, query and user part may be the
//! credential, as a Slack webhook's path is), and never the configured headers.
//!
//! `https://` receivers are verified against the system's trusted roots, or only against the
//! certificates of a `ca_file` for a private CA; a receiver that fails verification is a
//! failed delivery like any other, retried and reported, and nothing is sent to it.

use std::path::Path;
use std::time::Duration;

use reqwest::Certificate;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use crate::export::{Headers, shown_url};

/// Limit on one POST, connecting included.
const REQUEST_LIMIT: Duration = Duration::from_secs(30);
const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// Where one sink POSTs, with its headers.
#[derive(Debug)]
pub struct Endpoint {
    http: reqwest::Client,
    url: reqwest::Url,
    /// `url` as shown in messages.
    shown: String,
    headers: HeaderMap,
}

impl Endpoint {
    /// `what` names the sink in errors, e.g. `sink "siem"`. Fails only if the configuration
    /// was not checked, or no HTTP client can be made.
    pub fn new(
        what: &str,
        url: &str,
        header: &Headers,
        ca_file: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let url = webhook_url(url).map_err(|m| anyhow::anyhow!("{what}: {m}"))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &header.0 {
            let mut value = HeaderValue::from_str(value.expose())
                .map_err(|_| anyhow::anyhow!("{what}: header {name:?} is invalid"))?;
            value.set_sensitive(true);
            headers.insert(HeaderName::from_bytes(name.as_bytes())?, value);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let mut http = reqwest::Client::builder()
            .timeout(REQUEST_LIMIT)
            .connect_timeout(CONNECT_LIMIT)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = ca_file {
            http = http.tls_certs_only(roots(path).map_err(|m| anyhow::anyhow!("{what}: {m}"))?);
        }
        let http = http.build()?;
        Ok(Self {
            http,
            shown: shown_url(&url),
            url,
            headers,
        })
    }

    /// POSTs `body` (JSON); `Ok` only on a 2xx answer.
    pub async fn post(&self, body: String) -> Result<(), String> {
        let answer = self
            .http
            .post(self.url.clone())
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| format!("POST {}: {}", self.shown, chain(&e.without_url())))?;
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("POST {} answered {status}", self.shown))
        }
    }
}

/// Why a webhook's `url`, `header` and `ca_file` cannot work, if they cannot. Header values
/// are never echoed: they are likely secrets.
pub fn check(url: &str, header: &Headers, ca_file: Option<&Path>) -> Result<(), String> {
    let url = webhook_url(url)?;
    for (name, value) in &header.0 {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!("`header` {name:?} is not a valid HTTP header name"));
        }
        if HeaderValue::from_str(value.expose()).is_err() {
            return Err(format!(
                "`header` {name:?} has a value that is not valid in HTTP"
            ));
        }
    }
    match ca_file {
        Some(_) if url.scheme() != "https" => Err("`ca_file` is only for an https:// `url`".into()),
        Some(path) => roots(path).map(|_| ()),
        None => Ok(()),
    }
}

/// Parses and checks a webhook URL.
fn webhook_url(url: &str) -> Result<reqwest::Url, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("`url` is not a valid URL: {e}"))?;
    // The parser forgives `http:///hook` by taking `hook` for the host: a host left out is
    // said so, not guessed.
    let host_left_out = url
        .split_once("://")
        .is_some_and(|(_, rest)| rest.starts_with('/'));
    match u.scheme() {
        "http" | "https" if host_left_out => {
            Err("`url` has no host: write it as https://HOST/PATH".into())
        }
        "http" | "https" if u.host().is_some() => Ok(u),
        "http" | "https" => Err("`url` has no host".into()),
        s => Err(format!(
            "`url` has scheme {s:?}; use https:// (or http:// to a receiver on a trusted network)"
        )),
    }
}

/// The certificates of a `ca_file`, the only roots an endpoint with one trusts.
fn roots(path: &Path) -> Result<Vec<Certificate>, String> {
    let pem = crate::ca_file::read(path)?;
    Certificate::from_pem_bundle(&pem).map_err(|e| format!("`ca_file` {}: {e}", path.display()))
}

/// An error with its causes, e.g. "error sending request: connection refused".
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
