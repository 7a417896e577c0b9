//! A configured HTTP endpoint that Warden POSTs JSON to: the audit export's webhook sink and
//! the notification webhook share it.
//!
//! Only a 2xx answer counts as delivered; anything else, redirects included, is a failure for
//! the caller to retry (a redirect could carry the configured headers elsewhere). Error
//! messages show the URL without credentials or query, and never the configured headers.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use crate::export::{Headers, shown_url, webhook_url};

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
    pub fn new(what: &str, url: &str, header: &Headers) -> anyhow::Result<Self> {
        let url = webhook_url(url).map_err(|m| anyhow::anyhow!("{what}: {m}"))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &header.0 {
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| anyhow::anyhow!("{what}: header {name:?} is invalid"))?;
            value.set_sensitive(true);
            headers.insert(HeaderName::from_bytes(name.as_bytes())?, value);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .timeout(REQUEST_LIMIT)
            .connect_timeout(CONNECT_LIMIT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
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
