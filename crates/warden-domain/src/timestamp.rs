//! How a time is written: RFC 3339 in UTC to the millisecond, always with three decimals
//! (`2026-01-01T09:30:00.250Z`, `2026-01-01T09:30:00.000Z`). One width everywhere, so that
//! times in API bodies, exports and the audit log sort as text in time order and a parser
//! expecting fixed fields meets no surprise. Reading accepts any RFC 3339 time, as events
//! written before kept fewer decimals.
//!
//! Also a serde `with` module for such fields (`#[serde(with = "warden_domain::timestamp")]`,
//! or `timestamp::option` for an `Option`).

use serde::{Deserializer, Serializer};
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

const MILLISECONDS: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// `t` as RFC 3339 text in UTC with three decimals: the one way a time is written into
/// messages, notices, API bodies and the audit log.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(UtcOffset::UTC)
        .format(MILLISECONDS)
        .unwrap_or_default()
}

pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
    time::serde::rfc3339::deserialize(d)
}

/// The same for an `Option`: `null` for `None`.
pub mod option {
    use serde::{Deserializer, Serializer};
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        time::serde::rfc3339::option::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    #[test]
    fn every_time_has_three_decimals_in_utc() {
        assert_eq!(
            super::rfc3339(datetime!(2026-01-01 09:30:00 UTC)),
            "2026-01-01T09:30:00.000Z"
        );
        assert_eq!(
            super::rfc3339(datetime!(2026-01-01 09:30:00.25 UTC)),
            "2026-01-01T09:30:00.250Z"
        );
        assert_eq!(
            super::rfc3339(datetime!(2026-01-01 10:30:00.123_456 +01:00)),
            "2026-01-01T09:30:00.123Z"
        );
    }

    #[test]
    fn times_of_any_width_are_read() {
        #[derive(serde::Deserialize, serde::Serialize)]
        struct At {
            #[serde(with = "super")]
            at: time::OffsetDateTime,
            #[serde(with = "super::option")]
            until: Option<time::OffsetDateTime>,
        }
        let at: At =
            serde_json::from_str(r#"{"at":"2026-01-01T09:30:00.5Z","until":null}"#).unwrap();
        assert_eq!(at.at, datetime!(2026-01-01 09:30:00.5 UTC));
        assert_eq!(
            serde_json::to_string(&at).unwrap(),
            r#"{"at":"2026-01-01T09:30:00.500Z","until":null}"#
        );
    }
}
