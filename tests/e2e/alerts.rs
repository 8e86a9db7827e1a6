//! The rendered alerting rules in a real Prometheus that scrapes a real `vitals serve`.

use std::process::Command;
use std::time::{Duration, Instant};

use vitals_test_util::{PrometheusProcess, StubServer, VitalsProcess};

use crate::metrics::require_tool;
use crate::{bin, client};

/// Polls a Prometheus API URL until `pred` holds on its JSON `data`, failing after `within`.
async fn expect_api(
    prom: &PrometheusProcess,
    path: &str,
    what: &str,
    within: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let body: serde_json::Value = client()
            .get(prom.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if pred(&body["data"]) {
            return body["data"].clone();
        }
        assert!(
            start.elapsed() <= within,
            "{what} not seen within {within:?}; last answer of {path}: {body}\nprometheus logs:\n{}",
            prom.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn query_value(data: &serde_json::Value) -> Option<String> {
    data["result"][0]["value"][1].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_critical_dependency_drives_vitals_ready_to_0_and_agent_not_ready_pending() {
    require_tool("prometheus");
    let llm = StubServer::start(200).await;
    let config = format!(
        "[[dependencies]]\nname = \"llm\"\nkind = \"http\"\nurl = \"{}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n",
        llm.url("/v1/models")
    );
    let vitals = VitalsProcess::start(&bin(), &config, &[]);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("health.toml"), &config).unwrap();
    let out = Command::new(bin())
        .args(["render", "alerts", "--job", "agent", "--config"])
        .arg(dir.path().join("health.toml"))
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = dir.path().join("alerts/vitals-alerts.yml");

    let prom = PrometheusProcess::start(
        dir.path(),
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: agent\n    static_configs:\n      - targets: ['{}']\n",
            rules.display(),
            vitals.addr()
        ),
    );

    // Healthy first: Prometheus scrapes vitals and sees it ready.
    expect_api(
        &prom,
        "/api/v1/query?query=vitals_ready",
        "vitals_ready == 1",
        Duration::from_secs(20),
        |d| query_value(d).as_deref() == Some("1"),
    )
    .await;
    let loaded = expect_api(
        &prom,
        "/api/v1/rules",
        "the rendered rules",
        Duration::from_secs(5),
        |d| {
            d["groups"][0]["rules"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        },
    )
    .await;
    let names: Vec<&str> = loaded["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for alert in [
        "AgentNotReady",
        "AgentFleetDegraded",
        "AgentRestartLoop",
        "AgentDependencyDown",
        "AgentProbeStale",
    ] {
        assert!(names.contains(&alert), "{alert} not loaded: {names:?}");
    }

    // The critical dependency fails: within a check interval plus a scrape and an evaluation,
    // vitals_ready is 0 and AgentNotReady is pending (its 2-minute `for` is the promtool test's).
    llm.set_status(503);
    expect_api(
        &prom,
        "/api/v1/query?query=vitals_ready",
        "vitals_ready == 0",
        Duration::from_secs(15),
        |d| query_value(d).as_deref() == Some("0"),
    )
    .await;
    let alerts = expect_api(
        &prom,
        "/api/v1/alerts",
        "AgentNotReady pending",
        Duration::from_secs(15),
        |d| {
            d["alerts"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x["labels"]["alertname"] == "AgentNotReady" && x["state"] == "pending")
            })
        },
    )
    .await;
    let not_ready = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["labels"]["alertname"] == "AgentNotReady")
        .unwrap();
    assert_eq!(not_ready["labels"]["severity"], "page");
    assert_eq!(not_ready["labels"]["instance"], vitals.addr().to_string());
}
