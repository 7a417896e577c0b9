//! The webhook sink: batches POSTed as `{"events":[record, …]}` (records as in the file sink)
//! with `Content-Type: application/json`. Only a 2xx answer counts as delivered; anything else,
//! redirects included, is retried with the same batch.
//!
//! Error messages show the URL without credentials or query, and never the configured headers.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use warden_store::Leaf;

use super::config::{WebhookConfig, shown_url, webhook_url};
use super::{Sink, json_record};

/// Limit on one POST, connecting included.
const REQUEST_LIMIT: Duration = Duration::from_secs(30);
const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// POSTs batches of records to one URL.
#[derive(Debug)]
pub struct WebhookSink {
    http: reqwest::Client,
    url: reqwest::Url,
    /// `url` as shown in messages.
    shown: String,
    headers: HeaderMap,
    batch: usize,
}

impl WebhookSink {
    /// Fails only if the configuration was not checked, or no HTTP client can be made.
    pub fn new(c: &WebhookConfig) -> anyhow::Result<Self> {
        let url = webhook_url(&c.url).map_err(|m| anyhow::anyhow!("sink {:?}: {m}", c.name))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &c.header.0 {
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| anyhow::anyhow!("sink {:?}: header {name:?} is invalid", c.name))?;
            value.set_sensitive(true);
            headers.insert(HeaderName::from_bytes(name.as_bytes())?, value);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .timeout(REQUEST_LIMIT)
            .connect_timeout(CONNECT_LIMIT)
            // A redirect could carry the headers elsewhere; it is a failure instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            shown: shown_url(&url),
            url,
            headers,
            batch: c.batch,
        })
    }
}

impl Sink for WebhookSink {
    fn batch(&self) -> usize {
        self.batch
    }

    async fn deliver(&mut self, leaves: &[Leaf]) -> Result<(), String> {
        let records: Vec<String> = leaves.iter().map(json_record).collect();
        let body = format!("{{\"events\":[{}]}}", records.join(","));
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
