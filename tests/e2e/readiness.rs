use std::time::{Duration, Instant};

use vitals_test_util::{HangingTcp, StubServer, VitalsProcess};

use crate::{bin, client, expect_body_within, expect_status_within, status};

/// Scheduling slack on top of the design's bound (process start-up of a check, the poll step).
const SLACK: Duration = Duration::from_millis(400);

#[tokio::test]
async fn without_config_it_is_live_ready_and_started() {
    let v = VitalsProcess::start(&bin(), "", &[]);
    for route in [
        "/healthz",
        "/livez",
        "/readyz",
        "/startupz",
        "/status",
        "/metrics",
    ] {
        assert_eq!(status(&v.url(route)).await, 200, "{route}");
    }
    let head = client().head(v.url("/readyz")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn critical_failure_turns_readiness_503_within_interval_plus_timeout_and_recovers() {
    let dep = StubServer::start(200).await;
    let config = format!(
        r#"
        [[dependencies]]
        name = "tool"
        kind = "http"
        url = "{}"
        interval = "1s"
        timeout = "500ms"
        "#,
        dep.url("/health")
    );
    let v = VitalsProcess::start(&bin(), &config, &[]);
    let bound = Duration::from_millis(1500) + SLACK;
    expect_status_within(&v.url("/readyz"), 200, bound).await;
    assert_eq!(status(&v.url("/startupz")).await, 200);

    dep.set_status(500);
    let flipped = expect_status_within(&v.url("/readyz"), 503, bound).await;
    assert!(flipped <= bound);
    assert_eq!(
        status(&v.url("/healthz")).await,
        200,
        "a dependency never touches liveness"
    );
    assert_eq!(status(&v.url("/readyz/tool")).await, 503);
    let verbose = client()
        .get(v.url("/readyz?verbose"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        verbose.contains("[-]tool failed: HTTP 500 (expected 2xx)"),
        "{verbose}"
    );
    assert!(verbose.ends_with("readyz check failed\n"), "{verbose}");

    dep.set_status(200);
    expect_status_within(&v.url("/readyz"), 200, bound).await;
    assert_eq!(status(&v.url("/readyz/tool")).await, 200);
    assert_eq!(status(&v.url("/readyz/nope")).await, 404);
}

#[tokio::test]
async fn non_critical_failure_is_degraded_not_unready() {
    let dep = StubServer::start(503).await;
    let config = format!(
        r#"
        [[dependencies]]
        name = "search"
        kind = "http"
        url = "{}"
        critical = false
        interval = "1s"
        timeout = "500ms"
        "#,
        dep.url("/")
    );
    let v = VitalsProcess::start(&bin(), &config, &[]);
    // Non-critical, so not required for startup: it starts at once. After the first failed check
    // it is degraded: 200 with the header.
    let bound = Duration::from_millis(1500) + SLACK;
    expect_body_within(
        &v.url("/readyz?verbose"),
        "[-]search failed (non-critical): HTTP 503 (expected 2xx)",
        bound,
    )
    .await;
    let r = client().get(v.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-agent-mode"], "degraded");
    let consul = client()
        .get(v.url("/readyz?degraded_status=429"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        consul.status(),
        429,
        "one caller can ask for Consul's warning code"
    );
    assert_eq!(
        client()
            .get(v.url("/readyz?degraded_status=503"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );

    let status_doc: serde_json::Value = client()
        .get(v.url("/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status_doc["readiness"], "degraded");
    assert_eq!(status_doc["dependencies"][0]["name"], "search");
    assert_eq!(status_doc["dependencies"][0]["up"], false);
    assert_eq!(
        status_doc["dependencies"][0]["last_error"],
        "HTTP 503 (expected 2xx)"
    );
    let metrics = client()
        .get(v.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("vitals_degraded 1"), "{metrics}");
    assert!(
        metrics.contains("vitals_ready 1"),
        "degraded still answers 2xx: {metrics}"
    );
    assert!(
        metrics.contains(
            r#"vitals_dependency_up{dependency="search",kind="http",critical="false"} 0"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_dependency_that_never_answers_never_slows_readyz() {
    let hang_http = HangingTcp::start().await;
    let stub = StubServer::start(200).await;
    stub.hang();
    let config = format!(
        r#"
        [startup]
        require = []
        [[dependencies]]
        name = "silent-tcp-peer"
        kind = "http"
        url = "{}"
        interval = "20s"
        timeout = "10s"
        [[dependencies]]
        name = "hung-handler"
        kind = "http"
        url = "{}"
        interval = "20s"
        timeout = "10s"
        "#,
        hang_http.url("/"),
        stub.url("/")
    );
    let v = VitalsProcess::start(&bin(), &config, &[]);
    // Wait until both checks are in flight: the silent peer holds a connection, the stub got the
    // request.
    let start = Instant::now();
    while hang_http.accepted() == 0 || stub.requests() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "checks never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // While both checks hang for up to 10 s, every probe answers at once: far below the timeout,
    // which is what it would take if a route waited on a check.
    let c = client();
    for _ in 0..50 {
        let t = Instant::now();
        let r = c.get(v.url("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 503, "no result yet for critical dependencies");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "/readyz took {:?} while checks hung",
            t.elapsed()
        );
        let t = Instant::now();
        assert_eq!(c.get(v.url("/healthz")).send().await.unwrap().status(), 200);
        assert!(t.elapsed() < Duration::from_secs(1));
    }
    let verbose = c
        .get(v.url("/readyz?verbose"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        verbose.contains("[-]silent-tcp-peer failed: no result yet"),
        "{verbose}"
    );
}

#[tokio::test]
async fn tcp_dependency_and_timeout_reason() {
    let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = HangingTcp::start().await;
    let config = format!(
        r#"
        [[dependencies]]
        name = "crm"
        kind = "tcp"
        address = "{}"
        interval = "1s"
        timeout = "500ms"
        [[dependencies]]
        name = "slow"
        kind = "http"
        url = "{}"
        critical = false
        interval = "1s"
        timeout = "300ms"
        "#,
        peer.local_addr().unwrap(),
        silent.url("/")
    );
    let v = VitalsProcess::start(&bin(), &config, &[]);
    let bound = Duration::from_millis(1500) + SLACK;
    expect_status_within(&v.url("/readyz/crm"), 200, bound).await;
    expect_body_within(
        &v.url("/readyz?verbose"),
        "[-]slow failed (non-critical): timed out after 300ms",
        bound,
    )
    .await;

    drop(peer);
    expect_status_within(&v.url("/readyz"), 503, bound).await;
    let body = client()
        .get(v.url("/readyz/crm"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.starts_with("failed: cannot connect to 127.0.0.1:"),
        "{body}"
    );
    assert!(body.contains("connection refused"), "{body}");
}

#[tokio::test]
async fn secrets_from_the_environment_never_show() {
    let dep = StubServer::start(401).await;
    let secret = "tok-e2e-9f8e7d6c5b4a";
    let config = format!(
        r#"
        [server]
        admin_token_env = "E2E_ADMIN_TOKEN"
        [[dependencies]]
        name = "tool"
        kind = "http"
        url = "{}"
        headers_env = {{ Authorization = "E2E_TOOL_TOKEN" }}
        interval = "1s"
        timeout = "500ms"
        "#,
        dep.url("/")
    );
    let v = VitalsProcess::start(
        &bin(),
        &config,
        &[
            ("E2E_TOOL_TOKEN", secret),
            ("E2E_ADMIN_TOKEN", "admin-e2e-0123456789"),
        ],
    );
    expect_body_within(&v.url("/readyz/tool"), "HTTP 401", Duration::from_secs(2)).await;
    let c = client();
    let mut seen = String::new();
    for route in ["/status", "/metrics", "/readyz?verbose", "/readyz/tool"] {
        seen.push_str(
            &c.get(v.url(route))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    seen.push_str(&v.logs().join("\n"));
    assert!(
        seen.contains("HTTP 401"),
        "the failure itself is reported: {seen}"
    );
    assert!(!seen.contains(secret), "secret leaked: {seen}");
    assert!(!seen.contains("admin-e2e-0123456789"), "admin token leaked");
}

/// Servers behind a private CA: with `ca_file` an HTTPS check and an OpenAI-compatible check
/// trust that CA and pass; without it the bundled public roots refuse the same server, and the
/// reason names the certificate.
#[tokio::test]
async fn https_checks_trust_the_private_ca_they_are_given() {
    let tls = vitals_test_util::TlsHttp::start();
    let config = format!(
        r#"
        [[dependencies]]
        name = "trusted"
        kind = "http"
        url = "{health}"
        ca_file = "{ca}"
        interval = "1s"
        [[dependencies]]
        name = "llm"
        kind = "openai"
        base_url = "{base}"
        ca_file = "{ca}"
        interval = "1s"
        [[dependencies]]
        name = "public-roots"
        kind = "http"
        url = "{health}"
        critical = false
        interval = "1s"
        "#,
        health = tls.url("/health"),
        base = tls.url("/v1"),
        ca = tls.ca_file.display(),
    );
    let v = VitalsProcess::start(&bin(), &config, &[]);
    let body = crate::expect_body_where(
        &v.url("/readyz?verbose"),
        "a result of each check",
        Duration::from_secs(10),
        |b| !b.contains("no result yet") && b.contains("public-roots"),
    )
    .await;
    assert!(body.contains("[+]trusted ok"), "{body}");
    assert!(body.contains("[+]llm ok"), "{body}");
    let reason = body
        .lines()
        .find(|l| l.contains("public-roots"))
        .unwrap()
        .to_lowercase();
    assert!(
        reason.starts_with("[-]public-roots failed") && reason.contains("certificate"),
        "the reason names the certificate: {reason}"
    );
}
