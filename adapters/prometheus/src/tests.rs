use std::process::Command;

use super::*;

fn config() -> Config {
    vitals_core::config::from_toml(
        "[[dependencies]]\nname = \"llm\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\ninterval = \"30s\"\ntimeout = \"5s\"\n",
        &|_| None,
    )
    .unwrap()
}

/// promtool from Debian's `prometheus` package (scripts/setup-test-deps installs it).
fn promtool(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}); install it with scripts/setup-test-deps")
        });
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn check(options: &Options) {
    let r = render(&config(), options);
    let dir = tempfile_dir();
    for f in &r.files {
        std::fs::write(dir.join(&f.name), &f.contents).unwrap();
    }
    let (ok, out) = promtool(&dir, &["check", "rules", RULES_FILE]);
    assert!(ok, "{out}");
    let (ok, out) = promtool(&dir, &["test", "rules", TEST_FILE]);
    assert!(ok, "{out}\n{}", r.files[1].contents);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "vitals-alerts-{}-{}",
        std::process::id(),
        fastish()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fastish() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn default_rules_pass_promtool_and_their_own_threshold_tests() {
    check(&Options::default());
}

#[test]
fn kubernetes_restarts_job_and_group_by_variants_pass_too() {
    check(&Options {
        job: "planner".into(),
        group_by: vec!["job".into(), "namespace".into()],
        restarts: Restarts::KubeStateMetrics,
        container: "vitals".into(),
    });
}
