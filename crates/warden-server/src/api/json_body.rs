//! Request bodies: one JSON object, sent as `application/json`, parsed into the endpoint's
//! type. Anything else is refused with a JSON error that says what was wrong, never quoting
//! the values sent (the refusal is audited, and a password in the wrong shape must not reach
//! the log).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use super::{ApiError, body_too_large};

/// A request body parsed into `T`. With `EMPTY_IS_DEFAULT` (see [`OptionalJson`]) an empty (or blank)
/// body, however it was sent, and the JSON `null` stand for `{}`.
pub(crate) struct JsonBody<T, const EMPTY_IS_DEFAULT: bool = false>(pub T);

/// A body whose every field may be left out, so the body itself may be too: `curl -X POST
/// …/approve` with no body reviews without a comment, as `{}` would.
pub(crate) type OptionalJson<T> = JsonBody<T, true>;

/// The body of an action that takes no fields: none, or `{}`. Anything else is refused rather
/// than ignored, so a field a client believes it sent is never silently dropped.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoFields {}

/// What a refusal of a field sent to an action that takes none says: each such action takes
/// [`NoFields`] as an [`OptionalJson`].
const NO_FIELDS: &str = "this action takes no fields (send `{}` or no body)";

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T, false> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (json, bytes) = read(req, state).await?;
        parse(json, &bytes).map(Self)
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for JsonBody<T, true> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (json, bytes) = read(req, state).await?;
        // `null` is how the OpenAPI document (and JSON) says "no body" too.
        if bytes.iter().all(|b| json_space(*b)) || (json && bytes.trim_ascii() == b"null") {
            return Ok(Self(T::default()));
        }
        parse(json, &bytes).map(Self)
    }
}

/// Whether the body is declared as JSON, and the whole body, read within the body limit and
/// the connection's read timeout. A body declared larger than the limit is refused unread.
async fn read<S: Send + Sync>(req: Request, state: &S) -> Result<(bool, Bytes), ApiError> {
    let json = is_json(req.headers());
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > super::BODY_LIMIT) {
        return Err(body_too_large());
    }
    let bytes = Bytes::from_request(req, state)
        .await
        .map_err(|r| unreadable(&r))?;
    Ok((json, bytes))
}

/// Parses `bytes` as the JSON object `T`, if they were declared as JSON (`json`).
fn parse<T: DeserializeOwned>(json: bool, bytes: &[u8]) -> Result<T, ApiError> {
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the request body must be JSON in UTF-8, sent with one `Content-Type: application/json` header (a type given twice, or another charset, is refused)",
        ));
    }
    let bad = |message: String| ApiError::bad_request("bad_json", message);
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        return Err(bad(
            "the request body starts with a byte-order mark: send the JSON as plain UTF-8, without one".into(),
        ));
    }
    if bytes.iter().all(|b| json_space(*b)) {
        return Err(bad(
            "the request body is empty: this action needs a JSON object of its fields (see /v1/openapi.json)".into(),
        ));
    }
    if let Some(kind) = not_an_object(bytes) {
        return Err(bad(format!(
            "the request body must be a JSON object of the action's fields, {{\"name\": value, ...}}, not {kind}"
        )));
    }
    match Json::<T>::from_bytes(bytes) {
        Ok(Json(v)) => Ok(v),
        Err(JsonRejection::JsonSyntaxError(e)) => Err(bad(format!(
            "the request body is not valid JSON: {}",
            without_values(cause(&e.body_text()))
        ))),
        Err(e) => {
            let text = e.body_text();
            let cause = cause(&text);
            Err(bad(format!(
                "the request body does not fit the action: {}",
                super::named_unknown(cause, "field", NO_FIELDS)
                    .unwrap_or_else(|| without_values(cause))
            )))
        }
    }
}

/// The parser's own words, without the extractor's preamble ("Failed to deserialize the JSON
/// body into the target type: ", "Failed to deserialize query string: ").
pub(super) fn cause(text: &str) -> &str {
    text.split_once(": ").map_or(text, |(_, cause)| cause)
}

fn json_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Whether the body is declared as JSON: `application/json`, or a `+json` type, declared once
/// (two declarations could be read two ways) and in UTF-8, the only encoding it is read in.
fn is_json(headers: &HeaderMap) -> bool {
    let mut declared = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(value), None) = (
        declared.next().and_then(|v| v.to_str().ok()),
        declared.next(),
    ) else {
        return false;
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    let other_charset = parts.filter_map(|p| p.split_once('=')).any(|(name, v)| {
        let v = v.trim().trim_matches('"');
        name.trim().eq_ignore_ascii_case("charset")
            && !(v.eq_ignore_ascii_case("utf-8") || v.eq_ignore_ascii_case("utf8"))
    });
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    if other_charset {
        return false;
    }
    let sub = sub.to_ascii_lowercase();
    kind.eq_ignore_ascii_case("application") && (sub == "json" || sub.ends_with("+json"))
}

/// What the body's top-level value is when it is plainly not an object (JSON also parses an
/// array into a struct, by position, which no client means); `None` for an object, or for
/// text the parser will refuse with its own message.
fn not_an_object(bytes: &[u8]) -> Option<&'static str> {
    let first = bytes.iter().find(|b| !json_space(**b))?;
    Some(match first {
        b'[' => "an array",
        b'"' => "a string",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        b'-' | b'0'..=b'9' => "a number",
        _ => return None,
    })
}

/// The error for a body that could not be read whole: too slow to arrive (408: the
/// connection's `http_read_timeout` ran out), too large (413) or broken off (400 `bad_body`).
fn unreadable(rejection: &BytesRejection) -> ApiError {
    let timed_out =
        std::iter::successors(Some(rejection as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        })
        .any(|e| e.is::<tower_http::timeout::TimeoutError>());
    if timed_out {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body did not arrive in time: send it right after the headers",
        )
    } else if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        body_too_large()
    } else {
        ApiError::bad_request(
            "bad_body",
            "the request body could not be read whole: its framing is broken or the connection was cut",
        )
    }
}

/// A body's parse error without the values it quotes (`invalid type: string "…"`), only their
/// kind, nor the names of fields it did not expect: the refusal is audited, and a password sent
/// in the wrong shape (or as a key) must not reach the log.
pub(super) fn without_values(text: &str) -> String {
    const MARKS: [&str; 4] = [
        "invalid type: ",
        "invalid value: ",
        "unknown field",
        "unknown variant",
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((at, len)) = MARKS
        .iter()
        .filter_map(|m| rest.find(m).map(|i| (i, m.len())))
        .min()
    {
        // The path in front of an unknown field ends with that field's name: left out too.
        let kept = if rest[at..].starts_with("unknown field") {
            at
        } else {
            0
        };
        out.push_str(&rest[kept..at + len]);
        rest = &rest[at + len..];
        // The value's kind (`string`, `integer`, `map`...), then the value itself if quoted.
        let kind_end = rest.find(['"', '`', ',']).unwrap_or(rest.len());
        out.push_str(rest[..kind_end].trim_end());
        rest = &rest[kind_end..];
        let mut chars = rest.char_indices();
        let close = match chars.next() {
            Some((_, '`')) => chars.find(|(_, c)| *c == '`').map(|(i, _)| i + 1),
            Some((_, '"')) => {
                let mut escaped = false;
                chars
                    .find(|(_, c)| {
                        let end = *c == '"' && !escaped;
                        escaped = *c == '\\' && !escaped;
                        end
                    })
                    .map(|(i, _)| i + 1)
            }
            _ => Some(0),
        };
        rest = &rest[close.unwrap_or(rest.len())..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_keep_the_kind_of_a_value_but_not_the_value() {
        let cases = [
            (
                r#"Failed to deserialize the JSON body into the target type: invalid type: string "Leak-Me-Password-1", expected struct PasswordBody at line 1 column 20"#,
                "Failed to deserialize the JSON body into the target type: invalid type: string, expected struct PasswordBody at line 1 column 20",
            ),
            (
                "password: invalid type: integer `123456789012345`, expected a string at line 1 column 29",
                "password: invalid type: integer, expected a string at line 1 column 29",
            ),
            (
                r#"invalid value: string "a\", expected b", expected struct X"#,
                "invalid value: string, expected struct X",
            ),
            (
                "invalid type: floating point `1.5`, expected u64; invalid type: map, expected a string",
                "invalid type: floating point, expected u64; invalid type: map, expected a string",
            ),
            (
                "unknown field `Leak-as-a-key`, expected `password` at line 1 column 10",
                "unknown field, expected `password` at line 1 column 10",
            ),
            (
                "Leak\u{202e}-as-a-key: unknown field `Leak\u{202e}-as-a-key`, expected `password` at line 1 column 10",
                "unknown field, expected `password` at line 1 column 10",
            ),
            (
                "unknown variant `Leak`, expected one of `a`, `b`",
                "unknown variant, expected one of `a`, `b`",
            ),
            (
                r#"invalid type: string "unterminated"#,
                "invalid type: string",
            ),
        ];
        for (raw, clean) in cases {
            assert_eq!(without_values(raw), clean, "{raw}");
        }
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Ask {
        #[allow(dead_code)]
        ttl: String,
    }

    #[test]
    fn each_bad_body_is_told_what_is_wrong_with_it() {
        let said = |body: &[u8]| parse::<Ask>(true, body).unwrap_err().message;
        for (body, says) in [
            (&b" \n"[..], "the request body is empty"),
            (b"\xEF\xBB\xBF{}", "byte-order mark"),
            (b"[\"1h\"]", "not an array"),
            (
                b"{ttl: 1}",
                "not valid JSON: key must be a string at line 1 column 2",
            ),
            (
                b"{\"ttl\": 3600}",
                "does not fit the action: ttl: invalid type: integer, expected a string",
            ),
            (
                b"{\"ttl\": \"1h\", \"tll\": 1}",
                "does not fit the action: unknown field `tll`, expected `ttl`",
            ),
            (
                b"{\"ttl\": \"1h\", \"sekret-as-a-key\": 1}",
                "unknown field (a name of 15 characters), expected `ttl`",
            ),
            // With capitals, unlike every name the API takes: a password sent as a key.
            (
                b"{\"ttl\": \"1h\", \"Sup3rS3cret\": 1}",
                "unknown field (a name of 11 characters), expected `ttl`",
            ),
        ] {
            let message = said(body);
            assert!(message.contains(says), "{body:?}: {message}");
            assert!(!message.contains("Failed to"), "{message}");
        }
        // To an action that takes no fields, a field is named as to any other.
        let none = |body: &[u8]| parse::<NoFields>(true, body).unwrap_err().message;
        assert_eq!(
            none(b"{\"x\": 1}"),
            "the request body does not fit the action: unknown field `x`: this action takes no fields (send `{}` or no body)"
        );
        let secret = none(b"{\"Sup3rS3cret\": 1}");
        assert!(
            secret.contains("unknown field (a name of 11 characters): this action takes no fields"),
            "{secret}"
        );
        let quoted = none(b"{\"a`, expected b\": 1}");
        assert!(
            quoted.contains("unknown field (a name of 14 characters): this action takes no fields"),
            "{quoted}"
        );
        let plain = parse::<Ask>(false, b"{}").unwrap_err();
        assert_eq!(plain.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn only_objects_declared_as_json_are_bodies() {
        let json = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            is_json(&h)
        };
        for ct in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/json; charset=\"UTF8\"",
            "application/merge-patch+json",
        ] {
            assert!(json(ct), "{ct}");
        }
        for ct in [
            "text/plain",
            "application/jsonx",
            "json",
            "text/json",
            "application/json; charset=latin1",
        ] {
            assert!(!json(ct), "{ct}");
        }
        assert!(!is_json(&HeaderMap::new()));
        let mut twice = HeaderMap::new();
        twice.append(header::CONTENT_TYPE, "application/json".parse().unwrap());
        twice.append(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(!is_json(&twice));
        for (body, kind) in [
            (&b" [1, 2]"[..], Some("an array")),
            (b"\"x\"", Some("a string")),
            (b"\n-1", Some("a number")),
            (b"true", Some("a boolean")),
            (b"null", Some("null")),
            (b"\t{}", None),
            (b"{not json", None),
            (b"", None),
        ] {
            assert_eq!(not_an_object(body), kind, "{body:?}");
        }
    }
}
