//! The notification webhook: one POST per notification, as Warden's JSON (`format = "json"`)
//! or as a Slack incoming-webhook message (`format = "slack"`). Only a 2xx answer counts as
//! delivered; anything else, redirects included, is retried.

use serde_json::json;
use warden_domain::{Notice, rfc3339};

use super::config::{Format, WebhookConfig};
use super::{Links, text};
use crate::webhook::Endpoint;

/// Longest text Slack takes in a section block; it refuses a longer one (400) for good, so
/// a notice that long would be retried for ever and never shown.
const SLACK_SECTION_MAX: usize = 3000;
/// Ends a fact shortened to fit.
const SHORTENED: &str = "… (shortened)";
/// The facts people write, of any length: shortened, when a message must fit, where the fixed
/// facts (who, what, the request id), the links and the notification id never are.
const FREE_TEXT: [&str; 2] = ["reason", "detail"];

/// Slack reads `<…>` as links and mentions (`<!channel>`): a requester's reason must not ping
/// a channel, so the three control characters are escaped as Slack documents.
fn slack_escape(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    for c in t.chars() {
        match escape(c) {
            Some(e) => out.push_str(e),
            None => out.push(c),
        }
    }
    out
}

/// The escape that stands for `c` in Slack text, if it needs one.
fn escape(c: char) -> Option<&'static str> {
    match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        _ => None,
    }
}

/// The length of `c` once escaped, in UTF-16 units: never fewer than characters, however
/// Slack counts them.
fn escaped_len(c: char) -> usize {
    escape(c).map_or(c.len_utf16(), str::len)
}

/// The length of `t` once escaped, as [`escaped_len`] counts.
fn slack_len(t: &str) -> usize {
    t.chars().map(escaped_len).sum()
}

/// `n` as Slack text, escaped, that fits a section block: when the whole would not, the free
/// text is shortened, each part to a fair share of the room the rest leaves.
fn slack_text(n: &Notice, links: &Links) -> String {
    let mut facts = n.facts();
    let free: Vec<usize> = (0..facts.len())
        .filter(|&i| FREE_TEXT.contains(&facts[i].0))
        .collect();
    let mut fixed = facts.clone();
    for &i in &free {
        fixed[i].1.clear();
    }
    let room = SLACK_SECTION_MAX.saturating_sub(slack_len(&text(n, &fixed, links)));
    let lengths: Vec<usize> = free.iter().map(|&i| slack_len(&facts[i].1)).collect();
    for (&i, share) in free.iter().zip(fair_shares(&lengths, room)) {
        facts[i].1 = shortened(&facts[i].1, share);
    }
    slack_escape(&text(n, &facts, links))
}

/// Splits `room` between parts of `lengths`: a part that fits its even share keeps its length,
/// and what it leaves goes to the longer ones.
fn fair_shares(lengths: &[usize], room: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let mut shares = vec![0; lengths.len()];
    let mut left = room;
    for (k, &i) in order.iter().enumerate() {
        shares[i] = lengths[i].min(left / (order.len() - k));
        left -= shares[i];
    }
    shares
}

/// `t`, or as much of it as fits `max` (escaped, in [`slack_len`] units) with [`SHORTENED`]
/// after it. It is cut between characters before it is escaped, so never inside a character
/// or an escape.
fn shortened(t: &str, max: usize) -> String {
    if slack_len(t) <= max {
        return t.to_owned();
    }
    let room = max.saturating_sub(slack_len(SHORTENED));
    let (mut kept, mut used) = (String::new(), 0);
    for c in t.chars() {
        used += escaped_len(c);
        if used > room {
            break;
        }
        kept.push(c);
    }
    format!("{}{SHORTENED}", kept.trim_end())
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
                "by": n.by,
                "links": { "request": links.request, "commands": links.commands },
            }),
            Format::Slack => {
                let t = slack_text(n, links);
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

    /// A break-glass notice with `reason` and `detail`.
    fn notice(reason: &str, detail: Option<&str>) -> Notice {
        serde_json::from_value(json!({
            "id": uuid::Uuid::nil(), "kind": "break_glass", "audience": "security",
            "recipients": ["sam"], "time": "2026-01-01T00:00:00Z",
            "request": "01890000-0000-7000-8000-000000000000", "requester": "bob",
            "target": "web", "role": "root", "reason": reason, "ticket": "INC-7", "ttl": "1h",
            "breakglass": true, "drill": false, "expires_at": null, "detail": detail,
        }))
        .unwrap()
    }

    /// Whether every `&` in `t` starts one of the three escapes.
    fn escapes_whole(t: &str) -> bool {
        t.match_indices('&').all(|(i, _)| {
            ["&amp;", "&lt;", "&gt;"]
                .iter()
                .any(|e| t[i..].starts_with(e))
        })
    }

    #[test]
    fn slack_text_fits_a_section_block_by_shortening_only_the_free_text() {
        let links = |n: &Notice| Links::of(n, "https://warden.example.com");
        // Short enough: as it is.
        let n = notice("db down & out", Some("sam: <ok>"));
        assert_eq!(
            slack_text(&n, &links(&n)),
            slack_escape(&text(&n, &n.facts(), &links(&n)))
        );

        // A reason of 1000 `&`, 5000 characters escaped, and a comment of 1000 `<`.
        let comment = format!("carol: {}", "<".repeat(1000));
        for (reason, detail) in [
            ("&".repeat(1000), None),
            ("&".repeat(1000), Some(comment.as_str())),
            ("é&".repeat(500), Some(comment.as_str())),
            ("😀".repeat(1000), Some(comment.as_str())),
        ] {
            let n = notice(&reason, detail);
            let t = slack_text(&n, &links(&n));
            assert!(t.encode_utf16().count() <= SLACK_SECTION_MAX, "{}", t.len());
            assert!(escapes_whole(&t), "{t}");
            for fixed in [
                "BREAK-GLASS: bob took web/root",
                "request: 01890000-0000-7000-8000-000000000000",
                "target: web",
                "ticket: INC-7",
                "https://warden.example.com/v1/requests/01890000-0000-7000-8000-000000000000",
                "warden postmortem show 01890000-0000-7000-8000-000000000000",
                "notification id: 00000000-0000-0000-0000-000000000000",
            ] {
                assert!(t.contains(fixed), "{fixed} missing from {t}");
            }
            let reason_line = t.lines().find(|l| l.starts_with("reason: ")).unwrap();
            assert!(reason_line.ends_with(SHORTENED), "{reason_line}");
            // Shortened only as far as needed: little room is left unused.
            assert!(t.encode_utf16().count() > SLACK_SECTION_MAX - 20, "{t}");
        }
    }

    #[test]
    fn room_is_shared_evenly_and_what_a_short_part_leaves_goes_to_the_long() {
        assert_eq!(fair_shares(&[100, 5000], 2000), vec![100, 1900]);
        assert_eq!(fair_shares(&[5000, 5000], 2001), vec![1000, 1001]);
        assert_eq!(fair_shares(&[10, 20], 2000), vec![10, 20]);
        assert_eq!(fair_shares(&[], 2000), Vec::<usize>::new());
        assert_eq!(shortened("&&&&", 20), "&&&&");
        // Cut before an escape or a character that would not fit whole.
        let marker = slack_len(SHORTENED);
        assert_eq!(shortened("a&b&c&d&e", 5 + marker), format!("a{SHORTENED}"));
        let emoji = format!("ab😀{}", "x".repeat(20));
        assert_eq!(shortened(&emoji, 3 + marker), format!("ab{SHORTENED}"));
    }
}
