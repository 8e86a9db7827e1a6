//! The rendered Grafana dashboard's queries, as Grafana would send them, in a real Prometheus
//! that scrapes a real `vitals serve` with a dependency and a gate carrying traffic.

use std::time::{Duration, Instant};

use vitals_test_util::{PrometheusProcess, StubServer, VitalsProcess};

use crate::gate::gate_addr;
use crate::metrics::require_tool;
use crate::render::{self, render_to};
use crate::{bin, body, client};

/// Panels that need what this test does not run: an LLM server, supervised processes (or a
/// restart of one), the fleet's Redis. Their queries must still be valid PromQL.
const FED_ELSEWHERE: [&str; 4] = [
    "LLM probe tokens per hour",
    "Supervised process restarts",
    "Supervised processes: up, memory, GPU",
    "Fleet: upstream calls per minute",
];

/// What Prometheus answers to `expr`: `Err` with its error for a query it refuses, else the
/// values of the result's series.
async fn query(prom: &PrometheusProcess, expr: &str) -> Result<Vec<String>, String> {
    let url =
        reqwest::Url::parse_with_params(&prom.url("/api/v1/query"), [("query", expr)]).unwrap();
    let answer: serde_json::Value = serde_json::from_str(&body(url.as_str()).await).unwrap();
    if answer["status"] != "success" {
        return Err(answer.to_string());
    }
    Ok(answer["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["value"][1].as_str().map(str::to_owned))
        .collect())
}

/// Every panel's every query is valid; every panel this vitals feeds (readiness, dependencies,
/// restarts, the gate's traffic, limits and latency) shows numbers in each of its queries: a
/// panel whose query names a metric wrongly, aggregates away its data or divides by nothing
/// would be empty or NaN here.
#[tokio::test(flavor = "multi_thread")]
async fn every_panel_the_config_feeds_shows_numbers_in_a_real_prometheus() {
    require_tool("prometheus");
    let dep = StubServer::start(200).await;
    let upstream = StubServer::start(200).await;
    let config = format!(
        "[[dependencies]]\nname = \"db\"\nkind = \"http\"\nurl = \"{}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n\
         [gate]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{}\"\nmax_concurrent = 2\nqueue_depth = 4\nqueue_timeout = \"5s\"\nrequest_timeout = \"30s\"\n",
        dep.url("/health"),
        upstream.addr()
    );
    let vitals = VitalsProcess::start(&bin(), &config, &[]);
    let gate = gate_addr(&vitals);

    let dir = tempfile::tempdir().unwrap();
    let out = render_to(
        "dashboard",
        &render::config(dir.path(), &config),
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("dashboard/vitals-dashboard.json")).unwrap(),
    )
    .unwrap();

    let prom = PrometheusProcess::start(
        dir.path(),
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: agent\n    static_configs:\n      - targets: ['{}']\n",
            vitals.addr()
        ),
    );
    // Traffic through the gate for as long as the test runs, 20 requests a second.
    let traffic = tokio::spawn(async move {
        let c = client();
        loop {
            let r = c.get(format!("{gate}/v1/models")).send().await.unwrap();
            assert_eq!(r.status(), 200);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    // As Grafana sends them: the job variable at "All" (.+), a rate interval that holds scrapes.
    let targets: Vec<(String, String, String)> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap().to_owned();
            p["targets"].as_array().unwrap().iter().map(move |t| {
                let expr = t["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$job", ".+")
                    .replace("$__rate_interval", "10s");
                (
                    title.clone(),
                    t["legendFormat"].as_str().unwrap().to_owned(),
                    expr,
                )
            })
        })
        .collect();
    assert!(
        targets.iter().any(|(title, ..)| title == "Gate latency"),
        "the dashboard has the gate's latency"
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let mut wanting = Vec::new();
        for (title, legend, expr) in &targets {
            let values = query(&prom, expr)
                .await
                .unwrap_or_else(|e| panic!("{title} / {legend}: Prometheus refuses {expr}: {e}"));
            let numbers = !values.is_empty() && values.iter().all(|v| v != "NaN");
            if !numbers && !FED_ELSEWHERE.contains(&title.as_str()) {
                wanting.push(format!("{title} / {legend}: {expr} gives {values:?}"));
            }
        }
        if wanting.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "panels without numbers after 40 s of scrapes:\n{}\nprometheus logs:\n{}",
            wanting.join("\n"),
            prom.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    traffic.abort();
}
