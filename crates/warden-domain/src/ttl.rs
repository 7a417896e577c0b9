//! Durations a grant may last.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest TTL Warden accepts anywhere, whatever a policy says: 30 days.
pub const CEILING: Duration = Duration::from_secs(30 * 24 * 3600);

/// A positive duration of whole seconds, at most [`CEILING`], written like `90s`, `15m`, `1h30m`
/// or `2d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ttl(u64);

/// Most characters of a TTL read: room for any duration, however many leading zeros it is
/// written with, while the work of reading one stays bounded whatever is sent.
pub const MAX_LEN: usize = 128;

/// Most characters of a refused TTL a message quotes; a longer one is cut, and said to be.
const SHOWN: usize = 40;

/// Why a string is not a valid TTL. Each holds the text as written (without surrounding white
/// space), or for [`TtlError::TooLong`] its length in characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.of_request())]
pub enum TtlError {
    Unparseable(String),
    Zero,
    NoUnit(String),
    AboveCeiling(String),
    TooLong(usize),
}

impl TtlError {
    /// The problem, said of a requested TTL: past the ceiling, where to find the maximum that
    /// does apply, so that the requester need not be refused twice to learn it.
    fn of_request(&self) -> String {
        match self {
            TtlError::AboveCeiling(_) => format!(
                "{}; each role's own maximum is at most that: `warden targets` lists them",
                self.of("TTL")
            ),
            _ => self.of("TTL"),
        }
    }

    /// The problem, said of `what` (a TTL, or a setting that takes a duration).
    pub fn of(&self, what: &str) -> String {
        match self {
            TtlError::Unparseable(s) => format!(
                "{what} {} is not a duration: write it like 90s, 15m, 1h30m or 2d",
                quoted(s)
            ),
            TtlError::Zero => format!("{what} must be longer than zero"),
            TtlError::NoUnit(s) => {
                let n = s.trim_start_matches('0');
                let fix = if n.len() <= 10 {
                    format!("write {n}s, {n}m, {n}h or {n}d")
                } else {
                    "write it with a unit, like 90s, 15m, 1h30m or 2d".to_owned()
                };
                format!("{what} {} has no unit: {fix}", quoted(s))
            }
            // Digits and units only, so shown as they are, but cut when long.
            TtlError::AboveCeiling(s) => match cut(s) {
                Some((head, len)) => format!(
                    "{what} {head}… (the first {SHOWN} of its {len} characters) is above Warden's ceiling of 30d"
                ),
                None => format!("{what} {s} is above Warden's ceiling of 30d"),
            },
            TtlError::TooLong(len) => format!(
                "{what} is {len} characters long, more than the {MAX_LEN} a duration may take: write it like 90s, 15m, 1h30m or 2d"
            ),
        }
    }
}

/// `s`'s first [`SHOWN`] characters and its length in characters, when it is longer.
fn cut(s: &str) -> Option<(&str, usize)> {
    let (end, _) = s.char_indices().nth(SHOWN)?;
    Some((&s[..end], s.chars().count()))
}

/// `s` in quotes, its hidden characters escaped ([`crate::text::shown`]); when long, its first
/// [`SHOWN`] characters, with how many there were.
fn quoted(s: &str) -> String {
    let shown = crate::text::shown(s, SHOWN);
    match cut(s) {
        Some((_, len)) => format!("{shown} (the first {SHOWN} of its {len} characters)"),
        None => shown,
    }
}

impl Ttl {
    /// The shortest TTL: one second.
    pub const MIN: Ttl = Ttl(1);

    /// Builds a TTL from seconds, checking the same bounds as parsing does.
    pub fn from_secs(secs: u64) -> Result<Self, TtlError> {
        if secs == 0 {
            return Err(TtlError::Zero);
        }
        if secs > CEILING.as_secs() {
            return Err(TtlError::AboveCeiling(format_secs(secs)));
        }
        Ok(Self(secs))
    }

    /// Length in seconds.
    pub fn as_secs(self) -> u64 {
        self.0
    }

    /// Length as a [`Duration`].
    pub fn as_duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

fn format_secs(mut s: u64) -> String {
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if s >= len {
            out.push_str(&format!("{}{unit}", s / len));
            s %= len;
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

impl FromStr for Ttl {
    type Err = TtlError;
    /// Judged by value: leading zeros add nothing, and a number too large to count is above the
    /// ceiling once the whole text reads as a duration.
    fn from_str(s: &str) -> Result<Self, TtlError> {
        let t = s.trim();
        // Bounded work whatever is sent.
        if t.chars().nth(MAX_LEN).is_some() {
            return Err(TtlError::TooLong(t.chars().count()));
        }
        let bad = || TtlError::Unparseable(t.to_owned());
        if t.is_empty() {
            return Err(bad());
        }
        // Past the ceiling, how far past does not matter: values stop growing there, and so
        // never overflow.
        let beyond = CEILING.as_secs() + 1;
        let mut total: u64 = 0;
        // The value of the digits since the last unit, if any.
        let mut number: Option<u64> = None;
        // Units go from the largest down, each once: `1h1h` or `30s1m` is a typo, not a sum.
        let mut last_unit = u64::MAX;
        for c in t.chars() {
            if let Some(d) = c.to_digit(10) {
                number = Some((number.unwrap_or(0) * 10 + u64::from(d)).min(beyond));
                continue;
            }
            let unit = match c {
                'd' => 86_400,
                'h' => 3600,
                'm' => 60,
                's' => 1,
                _ => return Err(bad()),
            };
            let Some(n) = number.take() else {
                return Err(bad());
            };
            if unit >= last_unit {
                return Err(bad());
            }
            last_unit = unit;
            total = (total + n * unit).min(beyond);
        }
        if let Some(n) = number {
            // A bare number is ambiguous (seconds? minutes?), so it is refused; digits after
            // the last unit (`1h30`) are no duration.
            return Err(if last_unit != u64::MAX {
                bad()
            } else if n == 0 {
                TtlError::Zero
            } else {
                TtlError::NoUnit(t.to_owned())
            });
        }
        Self::from_secs(total).map_err(|e| match e {
            TtlError::AboveCeiling(_) => TtlError::AboveCeiling(t.to_owned()),
            other => other,
        })
    }
}

impl TryFrom<String> for Ttl {
    type Error = TtlError;
    fn try_from(s: String) -> Result<Self, TtlError> {
        s.parse()
    }
}

impl From<Ttl> for String {
    fn from(t: Ttl) -> String {
        t.to_string()
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_secs(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (input, secs, shown) in [
            ("90s", 90, "1m30s"),
            ("15m", 900, "15m"),
            ("1h30m", 5400, "1h30m"),
            ("2d", 172_800, "2d"),
            ("30d", 2_592_000, "30d"),
        ] {
            let t: Ttl = input.parse().unwrap();
            assert_eq!(t.as_secs(), secs);
            assert_eq!(t.to_string(), shown);
        }
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!("0s".parse::<Ttl>(), Err(TtlError::Zero));
        assert_eq!("0".parse::<Ttl>(), Err(TtlError::Zero));
        assert_eq!("30".parse::<Ttl>(), Err(TtlError::NoUnit("30".into())));
        assert!(matches!(
            "1h30".parse::<Ttl>(),
            Err(TtlError::Unparseable(_))
        ));
        assert!(matches!(
            "31d".parse::<Ttl>(),
            Err(TtlError::AboveCeiling(_))
        ));
        // Too long to count is too long, not unreadable.
        for long in [
            "99999999999999999999d",
            "1d18446744073709551615s",
            "99999999999999999999999999999999d",
            &format!("{}d", "9".repeat(100)),
        ] {
            assert!(
                matches!(long.parse::<Ttl>(), Err(TtlError::AboveCeiling(_))),
                "{long}"
            );
        }
        for bad in [
            "", "1x", "h", "-1h", "1.5h", "1h1h", "30s1m", "1m1h", "1h0", "1h30", "１h",
        ] {
            assert!(
                matches!(bad.parse::<Ttl>(), Err(TtlError::Unparseable(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn long_text_is_judged_by_its_value() {
        // Leading zeros make no number bigger.
        let zeros = format!("{}1h", "0".repeat(63));
        assert_eq!(zeros.parse::<Ttl>().map(Ttl::as_secs), Ok(3600));
        assert_eq!(
            format!("{}30d", "0".repeat(120))
                .parse::<Ttl>()
                .map(Ttl::as_secs),
            Ok(CEILING.as_secs())
        );
        assert_eq!("00".parse::<Ttl>(), Err(TtlError::Zero));
        assert_eq!("0h0m".parse::<Ttl>(), Err(TtlError::Zero));
        // Malformed however long: a unit repeated is no duration, not a big one.
        let repeated = "1h".repeat(33);
        assert_eq!(
            repeated.parse::<Ttl>(),
            Err(TtlError::Unparseable(repeated.clone()))
        );
        assert_eq!(
            "1h".repeat(33).parse::<Ttl>().unwrap_err().to_string(),
            format!(
                "TTL \"{}\"… (the first 40 of its 66 characters) is not a duration: write it like 90s, 15m, 1h30m or 2d",
                "1h".repeat(20)
            )
        );
        // Above the ceiling, cut and said to be.
        let big = format!("{}1d", "9".repeat(60));
        assert_eq!(
            big.parse::<Ttl>().unwrap_err().to_string(),
            format!(
                "TTL {}… (the first 40 of its 62 characters) is above Warden's ceiling of 30d; each role's own maximum is at most that: `warden targets` lists them",
                "9".repeat(40)
            )
        );
        assert_eq!(
            "31d".parse::<Ttl>().unwrap_err().to_string(),
            "TTL 31d is above Warden's ceiling of 30d; each role's own maximum is at most that: `warden targets` lists them"
        );
        // A bare number is told to take a unit, without its leading zeros.
        assert_eq!(
            "007".parse::<Ttl>().unwrap_err().of("@max_ttl"),
            "@max_ttl \"007\" has no unit: write 7s, 7m, 7h or 7d"
        );
        assert_eq!(
            "9".repeat(100).parse::<Ttl>().unwrap_err().of("@max_ttl"),
            format!(
                "@max_ttl \"{}\"… (the first 40 of its 100 characters) has no unit: write it with a unit, like 90s, 15m, 1h30m or 2d",
                "9".repeat(40)
            )
        );
        // Past MAX_LEN, too long, with its length, whatever it holds.
        for long in [format!("{}1h", "0".repeat(MAX_LEN)), "x".repeat(10_000)] {
            let len = long.chars().count();
            assert_eq!(long.parse::<Ttl>(), Err(TtlError::TooLong(len)));
        }
        assert_eq!(
            TtlError::TooLong(130).of("@pending_timeout"),
            "@pending_timeout is 130 characters long, more than the 128 a duration may take: write it like 90s, 15m, 1h30m or 2d"
        );
        assert_eq!(
            format!("  {}  ", "0".repeat(MAX_LEN - 2) + "1h")
                .parse::<Ttl>()
                .map(Ttl::as_secs),
            Ok(3600)
        );
    }
}
