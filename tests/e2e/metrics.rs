use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use vitals_test_util::{StubServer, VitalsProcess};

use crate::{bin, client, expect_body_within};

/// Runs a tool the test suite installs, or fails saying how to get it.
pub fn require_tool(name: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(found, "{name} is not installed; run scripts/setup-test-deps (it installs Debian's prometheus package)");
}

/// `promtool check metrics` on an exposition: Prometheus' own lint of names, types and help.
pub fn promtool_check_metrics(text: &str) {
    require_tool("promtool");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn metrics_follow_the_contract_and_pass_promtool() {
    require_tool("promtool");
    let up = StubServer::start(200).await;
    let down = StubServer::start(500).await;
    let config = format!(
        r#"
        [[dependencies]]
        name = "llm-gateway"
        kind = "http"
        url = "{}"
        interval = "1s"
        timeout = "500ms"
        [[dependencies]]
        name = "search"
        kind = "http"
        url = "{}"
        critical = false
        interval = "1s"
        timeout = "500ms"
        "#,
        up.url("/"),
        down.url("/")
    );
    let v = VitalsProcess::start(&bin(), &config, &[]);
    // Both first checks must have finished: the failing one counted, the healthy one up.
    expect_body_within(
        &v.url("/metrics"),
        r#"vitals_dependency_checks_total{dependency="search",outcome="failure"} 1"#,
        Duration::from_secs(3),
    )
    .await;
    let text = expect_body_within(
        &v.url("/metrics"),
        r#"vitals_dependency_up{dependency="llm-gateway",kind="http",critical="true"} 1"#,
        Duration::from_secs(3),
    )
    .await;

    for (name, kind) in [
        ("vitals_live", "gauge"),
        ("vitals_started", "gauge"),
        ("vitals_ready", "gauge"),
        ("vitals_degraded", "gauge"),
        ("vitals_draining", "gauge"),
        ("vitals_dependency_up", "gauge"),
        ("vitals_dependency_check_duration_seconds", "histogram"),
        ("vitals_dependency_checks_total", "counter"),
        ("vitals_dependency_last_success_timestamp_seconds", "gauge"),
        ("vitals_llm_probe_tokens_total", "counter"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "no TYPE for {name}:\n{text}"
        );
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
    }
    assert!(
        text.contains(
            r#"vitals_dependency_up{dependency="llm-gateway",kind="http",critical="true"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"vitals_dependency_check_duration_seconds_bucket{le="0.001",dependency="search"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"vitals_dependency_check_duration_seconds_bucket{le="30.0",dependency="search"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"vitals_dependency_last_success_timestamp_seconds{dependency="llm-gateway"}"#
        ),
        "{text}"
    );

    promtool_check_metrics(&text);
    assert!(!text.contains("# EOF"));
    // Prometheus itself asks for OpenMetrics and gets it.
    let r = client()
        .get(v.url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let om = r.text().await.unwrap();
    assert!(
        om.ends_with("# EOF\n") && om.contains("# TYPE vitals_dependency_checks counter"),
        "{om}"
    );
}

/// Scrapes encode off the runtime's workers: a flood of scrapes of a very large registry
/// cannot delay liveness.
#[tokio::test]
async fn concurrent_scrapes_of_a_large_registry_do_not_delay_liveness() {
    let mut config = String::from("[startup]\nrequire = []\n");
    for i in 0..3000 {
        config.push_str(&format!(
            "[[dependencies]]\nname = \"d{i}\"\nkind = \"tcp\"\naddress = \"127.0.0.1:9\"\ninterval = \"24h\"\ntimeout = \"1s\"\ncritical = false\n"
        ));
    }
    let v = VitalsProcess::start(&bin(), &config, &[]);
    let size = crate::body(&v.url("/metrics")).await.len();
    assert!(size > 1_000_000, "a large registry: {size} bytes");
    let stop = tokio_util::sync::CancellationToken::new();
    let mut scrapers = Vec::new();
    for _ in 0..16 {
        let (url, stop) = (v.url("/metrics"), stop.clone());
        scrapers.push(tokio::spawn(async move {
            let c = client();
            while !stop.is_cancelled() {
                if let Ok(r) = c.get(&url).send().await {
                    let _ = r.bytes().await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let prober = crate::prober();
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = std::time::Instant::now();
        let r = prober.get(v.url("/healthz")).send().await;
        assert!(
            matches!(&r, Ok(r) if r.status() == 200),
            "a liveness probe failed during the scrapes: {r:?}"
        );
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    for s in scrapers {
        let _ = s.await;
    }
    eprintln!("slowest /healthz during 16 concurrent scrapes of {size} bytes: {worst:?}");
}
