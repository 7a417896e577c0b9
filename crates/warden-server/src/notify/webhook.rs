//! The notification webhook: one POST per notification, as Warden's JSON (`format = "json"`)
//! or as a Slack incoming-webhook message (`format = "slack"`). Only a 2xx answer counts as
//! delivered; anything else, redirects included, is retried.

use serde_json::json;
use warden_domain::{Notice, rfc3339};

use super::config::{Format, WebhookConfig};
use super::{Links, text};
use crate::webhook::Endpoint;

/// Slack reads `<…>` as links and mentions (`<!channel>`): a requester's reason must not ping
/// a channel, so the three control characters are escaped as Slack documents.
fn slack_escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// POSTs notifications to one URL.
#[derive(Debug)]
pub struct WebhookSink {
    endpoint: Endpoint,
    format: Format,
}

impl WebhookSink {
    /// Fails only if the configuration was not checked, or no HTTP client can be made.
    pub fn new(c: &WebhookConfig) -> anyhow::Result<Self> {
        Ok(Self {
            endpoint: Endpoint::new(
                &format!("notify sink {:?}", c.name),
                &c.url,
                &c.header,
                c.ca_file.as_deref(),
            )?,
            format: c.format,
        })
    }

    /// Sends one notification.
    pub async fn deliver(&self, n: &Notice, links: &Links) -> Result<(), String> {
        let body = match self.format {
            Format::Json => json!({
                "id": n.id,
                "kind": n.kind.as_str(),
                "audience": n.audience,
                "recipients": n.recipients,
                "time": rfc3339(n.time),
                "subject": n.subject(),
                "request": {
                    "id": n.request,
                    "requester": n.requester,
                    "target": n.target,
                    "role": n.role,
                    "reason": n.reason,
                    "ticket": n.ticket,
                    "ttl": n.ttl.to_string(),
                    "breakglass": n.breakglass,
                    "drill": n.drill,
                    "expires_at": n.expires_at.map(rfc3339),
                },
                "detail": n.detail,
                "links": { "request": links.request, "commands": links.commands },
            }),
            Format::Slack => {
                let t = slack_escape(&text(n, links));
                json!({
                    "text": t,
                    "blocks": [
                        { "type": "section", "text": { "type": "mrkdwn", "text": t } }
                    ],
                })
            }
        };
        self.endpoint.post(body.to_string()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_text_cannot_mention_a_channel() {
        assert_eq!(
            slack_escape("fix <!channel> & co"),
            "fix &lt;!channel&gt; &amp; co"
        );
    }
}
