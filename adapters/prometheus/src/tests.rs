use std::process::Command;

use super::*;

fn config() -> Config {
    vitals_core::config::from_toml(
        "[[dependencies]]\nname = \"llm\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\ninterval = \"30s\"\ntimeout = \"5s\"\n[gate]\nlisten = \"0.0.0.0:8081\"\nupstream = \"http://127.0.0.1:8000\"\nmax_concurrent = 4\n",
        &|_| None,
    )
    .unwrap()
}

/// The gate's alert comes with a gate, and only then.
#[test]
fn gate_shedding_is_alerted_only_where_there_is_a_gate() {
    let with = render(&config(), &Options::default());
    assert!(with.files[0].contents.contains("alert: AgentGateShedding"));
    assert!(with.files[1]
        .contents
        .contains("AgentGateShedding: no shedding is quiet"));
    let without = render(&vitals_core::Config::default(), &Options::default());
    assert!(!without.files[0].contents.contains("AgentGateShedding"));
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

#[test]
fn dashboard_reads_only_contract_metrics_through_the_datasource_variable() {
    let d: serde_json::Value = serde_json::from_str(&dashboard::render()).unwrap();
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "job"]);
    assert_eq!(d["templating"]["list"][0]["type"], "datasource");
    let contract = [
        "vitals_ready",
        "vitals_degraded",
        "vitals_dependency_up",
        "vitals_dependency_check_duration_seconds_bucket",
        "vitals_dependency_checks_total",
        "vitals_llm_probe_tokens_total",
        "process_start_time_seconds",
        "vitals_gate_requests_total",
        "vitals_gate_in_flight",
        "vitals_gate_concurrency_limit",
        "vitals_gate_queue_depth",
        "vitals_gate_circuit_state",
        "vitals_gate_time_to_first_byte_seconds_bucket",
        "vitals_gate_request_duration_seconds_bucket",
        "vitals_gate_queue_wait_seconds_bucket",
        "vitals_process_restarts_total",
        "vitals_process_up",
        "vitals_process_resident_memory_bytes",
        "vitals_gpu_utilization_ratio",
        "vitals_process_gpu_memory_bytes",
        "vitals_fleet_checks_total",
        "vitals_fleet_connected",
    ];
    let panels = d["panels"].as_array().unwrap();
    assert_eq!(panels.len(), 13);
    let mut used = std::collections::BTreeSet::new();
    for p in panels {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"], "${datasource}");
            let expr = t["expr"].as_str().unwrap();
            assert!(expr.contains("job=~\"$job\""), "{expr}");
            let metric = contract
                .iter()
                .find(|m| expr.contains(*m))
                .unwrap_or_else(|| panic!("{expr} reads no contract metric"));
            used.insert(*metric);
        }
    }
    assert_eq!(
        used.len(),
        contract.len(),
        "every contract metric has a panel: {used:?}"
    );
}

/// A 1s check interval gave AgentProbeStale a 5s window, with no scrape in it: the alert could
/// never fire, and its own generated test failed. The rendered test file must pass promtool.
#[test]
fn a_short_interval_still_gets_a_window_that_holds_scrapes() {
    let config = vitals_core::config::from_toml(
        "[[dependencies]]\nname = \"fast\"\nkind = \"tcp\"\naddress = \"127.0.0.1:9\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n",
        &|_| None,
    )
    .unwrap();
    let r = render(&config, &Options::default());
    let rules = &r.files[0].contents;
    assert!(rules.contains("[2m])) == 0)"), "{rules}");
    let dir = tempfile::tempdir().unwrap();
    for f in &r.files {
        std::fs::write(dir.path().join(&f.name), &f.contents).unwrap();
    }
    let test = r
        .files
        .iter()
        .find(|f| f.name.ends_with("_test.yml"))
        .unwrap();
    let out = std::process::Command::new("promtool")
        .args(["test", "rules", &test.name])
        .current_dir(dir.path())
        .output()
        .expect("promtool not found; run scripts/setup-test-deps");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
