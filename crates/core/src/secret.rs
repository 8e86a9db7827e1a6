//! A secret read from the environment: usable by the code that needs it, invisible everywhere else.

use std::fmt;

/// A value such as an API key or a bearer token. `Debug` and `Display` print `<redacted>`;
/// only [`Secret::expose`] yields the value, so every use of it is easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Removes every occurrence of this secret from `text`, for error strings that may echo a
    /// request back (a provider that repeats the header it refused, say).
    pub fn scrub(&self, text: &str) -> String {
        if self.0.len() < 4 {
            return text.to_owned();
        }
        text.replace(&self.0, "<redacted>")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("sk-live-1234567890");
        assert!(!format!("{s:?}").contains("sk-live"));
        assert!(!format!("{s}").contains("sk-live"));
        assert_eq!(s.expose(), "sk-live-1234567890");
        assert_eq!(
            s.scrub("bad key sk-live-1234567890!"),
            "bad key <redacted>!"
        );
    }
}
