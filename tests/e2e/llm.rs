//! LLM checks against a real OpenAI-compatible server (llama-cpp-python with a tiny generated
//! model), and the cost and secret guarantees around them.

use std::time::{Duration, Instant};

use vitals_test_util::{LlmServer, VitalsProcess};

use crate::{bin, client, expect_body_within, expect_status_within, status};

fn llm_dep(name: &str, base_url: &str, extra: &str) -> String {
    format!(
        "[[dependencies]]\nname = \"{name}\"\nkind = \"openai\"\nbase_url = \"{base_url}\"\nmodel = \"tiny\"\ninterval = \"1s\"\ntimeout = \"900ms\"\n{extra}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn models_and_completion_pass_and_count_tokens() {
    let llm = LlmServer::start();
    let config = llm_dep("llm-models", &llm.base_url(), "check = \"models\"")
        + &llm_dep("llm-completion", &llm.base_url(), "check = \"completion\"");
    let v = VitalsProcess::start(&bin(), &config, &[]);
    expect_status_within(&v.url("/readyz"), 200, Duration::from_secs(10)).await;
    let metrics = expect_body_within(
        &v.url("/metrics"),
        r#"vitals_llm_probe_tokens_total{dependency="llm-completion",direction="completion"} 1"#,
        Duration::from_secs(5),
    )
    .await;
    assert!(
        metrics.contains(
            r#"vitals_dependency_up{dependency="llm-models",kind="openai",critical="true"} 1"#
        ),
        "{metrics}\n{}",
        llm.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn semantic_fails_on_gibberish_and_says_what_was_wrong() {
    let llm = LlmServer::start();
    let config = llm_dep(
        "llm",
        &llm.base_url(),
        "check = \"semantic\"\nexpect = \"READY\"\ncritical = false",
    );
    let v = VitalsProcess::start(&bin(), &config, &[]);
    let body = expect_body_within(
        &v.url("/readyz?verbose"),
        "[-]llm failed (non-critical): the answer does not match \"READY\": \"",
        Duration::from_secs(10),
    )
    .await;
    assert!(body.contains("readyz check passed (degraded)"), "{body}");
    let r = client().get(v.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-agent-mode"], "degraded");
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_llm_server_turns_readiness_503_within_interval_plus_timeout() {
    let mut llm = LlmServer::start();
    let config = llm_dep("llm", &llm.base_url(), "check = \"completion\"");
    let v = VitalsProcess::start(&bin(), &config, &[]);
    expect_status_within(&v.url("/readyz"), 200, Duration::from_secs(10)).await;
    llm.kill();
    // interval 1s + timeout 900ms, with 400 ms for scheduling.
    let took = expect_status_within(&v.url("/readyz"), 503, Duration::from_millis(2300)).await;
    let body = expect_body_within(
        &v.url("/readyz?verbose"),
        "[-]llm failed",
        Duration::from_secs(1),
    )
    .await;
    assert!(body.contains("connection refused"), "{body} after {took:?}");
}

/// 60 / interval upstream calls a minute, however many probes arrive.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_calls_follow_the_interval_not_the_probe_load() {
    let mut upstream = mockito::Server::new_async().await;
    // Started, then 3 seconds of load, with a 1s interval: about 4 calls; 6 leaves room for the
    // first check's random offset and scheduling, and is far below one call per probe.
    let models = upstream
        .mock("GET", "/v1/models")
        .with_status(200)
        .with_body(r#"{"data":[{"id":"tiny"}]}"#)
        .expect_at_least(2)
        .expect_at_most(6)
        .create_async()
        .await;
    let config = llm_dep(
        "llm",
        &format!("{}/v1", upstream.url()),
        "check = \"models\"",
    );
    let v = VitalsProcess::start(&bin(), &config, &[]);
    expect_status_within(&v.url("/readyz"), 200, Duration::from_secs(5)).await;
    let start = Instant::now();
    let mut probes = 0u32;
    while start.elapsed() < Duration::from_secs(3) {
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let url = v.url("/readyz");
            batch.spawn(async move { status(&url).await });
        }
        while let Some(code) = batch.join_next().await {
            assert_eq!(code.unwrap(), 200);
            probes += 1;
        }
    }
    assert!(probes > 300, "only {probes} probes were sent");
    models.assert_async().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_stretches_the_interval_and_status_says_so() {
    let llm = LlmServer::start();
    // 1800 an hour is one every 2s: the 1s interval the file asks for would spend twice that.
    let config = llm_dep(
        "llm",
        &llm.base_url(),
        "check = \"models\"\nmax_probes_per_hour = 1800",
    );
    let v = VitalsProcess::start(&bin(), &config, &[]);
    let status = expect_body_within(&v.url("/status"), "\"budget\"", Duration::from_secs(5)).await;
    let json: serde_json::Value = serde_json::from_str(&status).unwrap();
    let dep = &json["dependencies"][0];
    assert_eq!(dep["interval_seconds"], 2.0, "{dep}");
    assert_eq!(dep["budget"]["max_probes_per_hour"], 1800);
    assert_eq!(dep["budget"]["requested_interval_seconds"], 1.0);
    assert!(
        v.logs()
            .join("\n")
            .contains("the probe budget allows fewer probes than the interval asks for"),
        "{}",
        v.logs().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_key_never_appears_anywhere() {
    const KEY: &str = "sk-e2e-canary-5d41402abc4b2a76b9719d911017c592";
    let mut upstream = mockito::Server::new_async().await;
    // A provider that echoes the key in its error, as OpenAI's 401 partly does.
    let _m = upstream
        .mock("POST", "/v1/chat/completions")
        .with_status(401)
        .with_body(format!(
            r#"{{"error":{{"message":"Incorrect API key provided: {KEY}"}}}}"#
        ))
        .create_async()
        .await;
    let config = llm_dep(
        "llm",
        &format!("{}/v1", upstream.url()),
        "check = \"completion\"\napi_key_env = \"E2E_LLM_KEY\"",
    ) + &llm_dep(
        "llm-down",
        "http://127.0.0.1:9/v1",
        "check = \"completion\"\napi_key_env = \"E2E_LLM_KEY\"\ncritical = false",
    );
    let v = VitalsProcess::start(
        &bin(),
        &config,
        &[("E2E_LLM_KEY", KEY), ("RUST_LOG", "debug")],
    );
    expect_body_within(
        &v.url("/readyz?verbose"),
        "the API key was refused",
        Duration::from_secs(5),
    )
    .await;
    for path in [
        "/status",
        "/metrics",
        "/readyz?verbose",
        "/readyz/llm",
        "/readyz/llm-down",
    ] {
        let body = client()
            .get(v.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!body.contains(KEY), "{path} shows the key:\n{body}");
    }
    assert!(!v.logs().join("\n").contains(KEY), "the logs show the key");
    assert!(
        v.logs().join("\n").contains("the API key was refused"),
        "{}",
        v.logs().join("\n")
    );
}
