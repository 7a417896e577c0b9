//! The webhook sink: batches POSTed as `{"events":[record, …]}` (records as in the file sink)
//! to a [`crate::webhook::Endpoint`]. Only a 2xx answer counts as delivered; anything else is
//! retried with the same batch.

use warden_store::Leaf;

use super::config::WebhookConfig;
use super::{Sink, json_record};
use crate::webhook::Endpoint;

/// POSTs batches of records to one URL.
#[derive(Debug)]
pub struct WebhookSink {
    endpoint: Endpoint,
    batch: usize,
}

impl WebhookSink {
    /// Fails only if the configuration was not checked, or no HTTP client can be made.
    pub fn new(c: &WebhookConfig) -> anyhow::Result<Self> {
        Ok(Self {
            endpoint: Endpoint::new(
                &format!("sink {:?}", c.name),
                &c.url,
                &c.header,
                c.ca_file.as_deref(),
            )?,
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
        self.endpoint
            .post(format!("{{\"events\":[{}]}}", records.join(",")))
            .await
    }
}
