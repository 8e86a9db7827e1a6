//! The one duration type of the configuration, written as text (`"250ms"`, `"30s"`, `"1m30s"`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative span of time, read and written in humantime's text form.
///
/// Each adapter converts it to its target's unit in one place (`as_secs_ceil`, `as_nanos`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(std::time::Duration);

impl Duration {
    pub const ZERO: Duration = Duration(std::time::Duration::ZERO);

    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }

    pub const fn from_millis(millis: u64) -> Self {
        Duration(std::time::Duration::from_millis(millis))
    }

    pub const fn std(self) -> std::time::Duration {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    /// Whole seconds, rounded up: a platform that counts in seconds never gets less than asked for.
    pub fn as_secs_ceil(self) -> u64 {
        let secs = self.0.as_secs();
        if self.0.subsec_nanos() > 0 {
            secs + 1
        } else {
            secs
        }
    }

    pub fn as_nanos(self) -> u128 {
        self.0.as_nanos()
    }

    pub fn saturating_add(self, other: Duration) -> Duration {
        Duration(self.0.saturating_add(other.0))
    }

    pub fn saturating_mul(self, n: u32) -> Duration {
        Duration(self.0.saturating_mul(n))
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(d)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl Duration {
    /// The longest duration vitals reads from text: a day. Nothing vitals times (a check, a
    /// drain, a startup budget, a ttl) is meaningful beyond it, and a value far larger overflows
    /// the clock arithmetic it feeds (`now + timeout`), which would abort the process.
    pub const MAX: Duration = Duration::from_secs(24 * 3600);
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        if trimmed.starts_with('-') {
            return Err(format!("{s:?} is negative; durations must be positive"));
        }
        let d = humantime::parse_duration(trimmed).map_err(|e| {
            format!("{s:?} is not a duration ({e}); write it like \"250ms\", \"30s\" or \"2m\"")
        })?;
        if d > Duration::MAX.0 {
            return Err(format!(
                "{s:?} is longer than a day, the longest duration vitals takes; use at most \"24h\""
            ));
        }
        Ok(Duration(d))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0s");
        }
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"250ms\" or \"30s\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "{v} has no unit; write it as a string with a unit, such as \"{v}s\""
                )))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
                self.visit_i64(v as i64)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "{v} has no unit; write it as a string with a unit, such as \"{v}s\""
                )))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_text_form() {
        let d: Duration = "1m30s".parse().unwrap();
        assert_eq!(d.std(), std::time::Duration::from_secs(90));
        assert_eq!(d.to_string(), "1m 30s");
        assert_eq!("250ms".parse::<Duration>().unwrap().to_string(), "250ms");
        assert_eq!(Duration::ZERO.to_string(), "0s");
    }

    #[test]
    fn a_day_is_the_longest() {
        assert_eq!("24h".parse::<Duration>(), Ok(Duration::MAX));
        for s in ["24h 1s", "400000000000y", "99999999999999999999s"] {
            let e = s.parse::<Duration>().unwrap_err();
            assert!(
                e.contains("longer than a day") || e.contains("is not a duration"),
                "{s}: {e}"
            );
        }
        assert!("25h"
            .parse::<Duration>()
            .unwrap_err()
            .contains("use at most \"24h\""));
    }

    #[test]
    fn rejects_negative_and_unitless() {
        let err = "-5s".parse::<Duration>().unwrap_err();
        assert!(err.contains("negative"), "{err}");
        let err = "5".parse::<Duration>().unwrap_err();
        assert!(err.contains("\"30s\""), "{err}");
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(Duration::from_millis(1500).as_secs_ceil(), 2);
        assert_eq!(Duration::from_secs(2).as_secs_ceil(), 2);
        assert_eq!(Duration::from_millis(1).as_secs_ceil(), 1);
    }
}
