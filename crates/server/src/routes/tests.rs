use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::Figment;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;
use vitals_probes::{Control, Heartbeat, Metrics, Monitor};

use super::*;

struct Harness {
    app: App,
    control: Control,
    monitor: Option<Monitor>,
    drain: CancellationToken,
}

fn harness(toml: &str) -> Harness {
    let env = |k: &str| (k == "ADMIN_TOKEN").then(|| "admin-secret-123".to_owned());
    let config =
        Arc::new(vitals_core::config::load(&Figment::from(Toml::string(toml)), &env).unwrap());
    let heartbeat = Heartbeat::new();
    let metrics = Arc::new(Metrics::new(&config));
    let (monitor, control) =
        Monitor::new(config.clone(), metrics.clone(), heartbeat.clone()).unwrap();
    let drain = CancellationToken::new();
    Harness {
        app: App::new(config, control.clone(), heartbeat, metrics, drain.clone()),
        control,
        monitor: Some(monitor),
        drain,
    }
}

const LOCAL: &str = "127.0.0.1:40000";
const REMOTE: &str = "10.1.2.3:40000";

async fn call(
    app: &App,
    method: &str,
    uri: &str,
    peer: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, String) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(()).unwrap();
    let resp = app.handle(&req, peer.parse::<SocketAddr>().unwrap());
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

async fn get(app: &App, uri: &str) -> (StatusCode, String) {
    let (s, _, b) = call(app, "GET", uri, LOCAL, &[]).await;
    (s, b)
}

#[tokio::test]
async fn no_dependencies_is_ready_and_every_route_answers() {
    let h = harness("");
    assert_eq!(
        get(&h.app, "/healthz").await,
        (StatusCode::OK, "ok\n".into())
    );
    assert_eq!(get(&h.app, "/livez").await, (StatusCode::OK, "ok\n".into()));
    assert_eq!(
        get(&h.app, "/readyz").await,
        (StatusCode::OK, "ok\n".into())
    );
    assert_eq!(
        get(&h.app, "/startupz").await,
        (StatusCode::OK, "started\n".into())
    );
    assert_eq!(
        get(&h.app, "/readyz?verbose").await,
        (StatusCode::OK, "readyz check passed\n".into())
    );
    let (s, headers, _) = call(&h.app, "HEAD", "/readyz", LOCAL, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    let (s, body) = get(&h.app, "/status").await;
    assert_eq!(s, StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["phase"], "serving");
    assert_eq!(doc["readiness"], "ready");
}

#[tokio::test]
async fn wrong_methods_and_unknown_routes() {
    let h = harness("");
    let (s, headers, _) = call(&h.app, "POST", "/healthz", LOCAL, &[]).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "GET, HEAD");
    let (s, headers, _) = call(&h.app, "GET", "/drain", LOCAL, &[]).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "POST");
    assert_eq!(get(&h.app, "/nope").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&h.app, "/readyz/nope").await,
        (
            StatusCode::NOT_FOUND,
            "no dependency named \"nope\"\n".into()
        )
    );
    let (s, body) = get(&h.app, "/readyz?degraded_status=500").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body.contains("use a 2xx status or 429"), "{body}");
}

#[tokio::test]
async fn before_the_first_check_it_is_starting_and_says_why() {
    let h =
        harness("[[dependencies]]\nname = \"llm\"\nkind = \"tcp\"\naddress = \"127.0.0.1:9\"\n");
    assert_eq!(
        get(&h.app, "/readyz").await,
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n".into())
    );
    assert_eq!(
        get(&h.app, "/startupz").await,
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n".into())
    );
    assert_eq!(
        get(&h.app, "/healthz").await.0,
        StatusCode::OK,
        "liveness never waits for dependencies"
    );
    assert_eq!(
        get(&h.app, "/readyz?verbose").await.1,
        "[-]startup pending\n[-]llm failed: no result yet\nreadyz check failed\n"
    );
    assert_eq!(
        get(&h.app, "/readyz/llm").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "failed: no result yet\n".into()
        )
    );
}

#[tokio::test(start_paused = true)]
async fn a_stale_heartbeat_fails_liveness() {
    let h = harness("[liveness]\nstall_after = \"10s\"\n");
    tokio::time::advance(Duration::from_secs(11)).await;
    let (s, body) = get(&h.app, "/healthz").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        "heartbeat stale: last beat 11s ago (liveness.stall_after = 10s)\n"
    );
    let metrics = get(&h.app, "/metrics").await.1;
    assert!(metrics.contains("vitals_live 0\n"), "{metrics}");
}

#[tokio::test]
async fn drain_needs_loopback_or_the_admin_token() {
    let h = harness("[server]\nadmin_token_env = \"ADMIN_TOKEN\"\n");
    let (s, _, body) = call(&h.app, "POST", "/drain", REMOTE, &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(body.contains("Authorization: Bearer"), "{body}");
    let (s, _, _) = call(
        &h.app,
        "POST",
        "/drain",
        REMOTE,
        &[("authorization", "Bearer wrong-token-000")],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(!h.drain.is_cancelled());
    let (s, _, _) = call(
        &h.app,
        "POST",
        "/drain",
        REMOTE,
        &[("authorization", "Bearer admin-secret-123")],
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert!(h.drain.is_cancelled());

    let h = harness("");
    let (s, _, body) = call(
        &h.app,
        "POST",
        "/drain",
        REMOTE,
        &[("authorization", "Bearer anything")],
    )
    .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "without a configured token only loopback may drain"
    );
    assert!(body.contains("set server.admin_token_env"), "{body}");
    assert_eq!(
        call(&h.app, "POST", "/drain", "[::1]:5000", &[]).await.0,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn draining_turns_readiness_503_and_keeps_liveness() {
    let mut h = harness("");
    let cancel = CancellationToken::new();
    let monitor = tokio::spawn(h.monitor.take().unwrap().run(cancel.clone()));
    h.control.drain();
    h.control.wait_for(|s| s.is_draining()).await;
    assert_eq!(
        get(&h.app, "/readyz").await,
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
    );
    assert_eq!(
        get(&h.app, "/readyz?verbose").await.1,
        "[-]draining\nreadyz check failed\n"
    );
    assert_eq!(get(&h.app, "/healthz").await.0, StatusCode::OK);
    assert_eq!(get(&h.app, "/startupz").await.0, StatusCode::OK);
    cancel.cancel();
    monitor.await.unwrap();
}

#[tokio::test]
async fn metrics_format_follows_accept() {
    let h = harness("");
    let (_, headers, body) = call(&h.app, "GET", "/metrics", LOCAL, &[]).await;
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(!body.contains("# EOF"));
    let (_, headers, body) = call(
        &h.app,
        "GET",
        "/metrics",
        LOCAL,
        &[("accept", "application/openmetrics-text;version=1.0.0")],
    )
    .await;
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(body.ends_with("# EOF\n"));
}
