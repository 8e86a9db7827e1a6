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
    /// request back (a provider that repeats the header it refused, say): as written, and as
    /// Rust's `{:?}` or JSON would escape it (a secret holding `"` or `\\` reads differently once
    /// quoted). Scrub before cutting a text short: a cut can leave a part of the secret that no
    /// longer matches it.
    pub fn scrub(&self, text: &str) -> String {
        if self.0.len() < 4 {
            return text.to_owned();
        }
        let mut out = text.replace(&self.0, "<redacted>");
        let debug = self.0.escape_debug().to_string();
        let json = serde_json::to_string(&self.0).unwrap_or_default();
        let json = json.trim_matches('"');
        for escaped in [debug.as_str(), json] {
            if escaped != self.0 && out.contains(escaped) {
                out = out.replace(escaped, "<redacted>");
            }
        }
        out
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

    #[test]
    fn escaped_forms_are_scrubbed_too() {
        let s = Secret::new(r#"tok"en\x"#);
        let debug = format!("{:?}", "a tok\"en\\x b");
        assert_eq!(s.scrub(&debug), r#""a <redacted> b""#);
        let json = serde_json::to_string(r#"a tok"en\x b"#).unwrap();
        assert_eq!(s.scrub(&json), r#""a <redacted> b""#);
    }
}
