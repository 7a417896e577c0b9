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

/// Why a string is not a valid TTL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.of_request())]
pub enum TtlError {
    Unparseable(String),
    Zero,
    NoUnit(String),
    AboveCeiling(String),
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
            TtlError::Unparseable(s) => {
                format!("{what} {s:?} is not a duration: write it like 90s, 15m, 1h30m or 2d")
            }
            TtlError::Zero => format!("{what} must be longer than zero"),
            TtlError::NoUnit(s) => {
                format!("{what} {s:?} has no unit: write {s}s, {s}m, {s}h or {s}d")
            }
            TtlError::AboveCeiling(s) => format!("{what} {s} is above Warden's ceiling of 30d"),
        }
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
    fn from_str(s: &str) -> Result<Self, TtlError> {
        let bad = || TtlError::Unparseable(s.chars().take(40).collect());
        let t = s.trim();
        if t.is_empty() {
            return Err(bad());
        }
        // Bounded work whatever is sent; a long run of digits and units is one too large to
        // count, said as such below, where anything else that long is no duration.
        if t.len() > 64 {
            let counted = t.chars().all(|c| c.is_ascii_digit() || "dhms".contains(c));
            return Err(if counted {
                TtlError::AboveCeiling(t.chars().take(40).collect())
            } else {
                bad()
            });
        }
        let mut total: u64 = 0;
        let mut digits = String::new();
        // Units go from the largest down, each once: `1h1h` or `30s1m` is a typo, not a sum.
        let mut last_unit = u64::MAX;
        for c in t.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let unit = match c {
                'd' => 86_400,
                'h' => 3600,
                'm' => 60,
                's' => 1,
                _ => return Err(bad()),
            };
            if digits.is_empty() || unit >= last_unit {
                return Err(bad());
            }
            last_unit = unit;
            // Only digits: too many of them to count is far above the ceiling.
            let n: u64 = digits
                .parse()
                .map_err(|_| TtlError::AboveCeiling(t.to_owned()))?;
            digits.clear();
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| TtlError::AboveCeiling(t.to_owned()))?;
        }
        if !digits.is_empty() {
            // A bare number is ambiguous (seconds? minutes?), so it is refused.
            return Err(if digits.chars().all(|c| c == '0') {
                TtlError::Zero
            } else if digits == t {
                TtlError::NoUnit(digits)
            } else {
                bad()
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
            &"9".repeat(100),
        ] {
            assert!(
                matches!(long.parse::<Ttl>(), Err(TtlError::AboveCeiling(_))),
                "{long}"
            );
        }
        for bad in ["", "1x", "h", "-1h", "1.5h", "1h1h", "30s1m", "1m1h"] {
            assert!(
                matches!(bad.parse::<Ttl>(), Err(TtlError::Unparseable(_))),
                "{bad}"
            );
        }
    }
}
