//! Golden files: compare rendered output with a committed file; `VITALS_BLESS=1` rewrites it.

use std::path::Path;

/// Asserts that `actual` equals the file at `path`. With `VITALS_BLESS=1` in the environment,
/// writes `actual` there instead (review the diff, then commit it).
pub fn assert_golden(path: impl AsRef<Path>, actual: &str) {
    let path = path.as_ref();
    if std::env::var_os("VITALS_BLESS").is_some_and(|v| v == "1") {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create the golden folder");
        }
        std::fs::write(path, actual).expect("write the golden file");
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "cannot read golden file {}: {e}; create it with VITALS_BLESS=1 cargo test",
            path.display()
        )
    });
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the fresh render, first at line {}:\n  golden: {:?}\n  render: {:?}\nIf the change is intended, rerun with VITALS_BLESS=1 and review the diff.",
            path.display(),
            line + 1,
            expected.lines().nth(line).unwrap_or("<end of file>"),
            actual.lines().nth(line).unwrap_or("<end of file>"),
        );
    }
}
