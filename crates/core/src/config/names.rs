//! Names in the configuration: what a valid one is, and the nearest known one to a typo.

/// What an invalid `name` is told, with the rule it breaks.
pub fn invalid_name(name: &str) -> String {
    format!("\"{name}\" is not a valid name; use lowercase letters, digits, '-', '_' or '.', starting with a letter or digit, at most 63 characters")
}

/// Lowercase letters, digits, `-`, `_` and `.`, starting with a letter or digit, at most 63
/// characters: safe in routes, metric labels and every platform's names.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
        && name.len() <= 63
}

/// ` (did you mean "x"?)` when a known name is close to `given`.
pub fn suggest(given: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|k| (strsim::levenshtein(given, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| format!(" (did you mean \"{k}\"?)"))
        .unwrap_or_default()
}
