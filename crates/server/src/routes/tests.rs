use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::task::JoinHandle;
use vitals_core::lifecycle::Lifecycle;

use super::*;
use crate::Inbox;

struct Harness {
    app: Routes,
    shared: Shared,
    _driver: JoinHandle<()>,
}

/// Applies commands as the runtime's driver does: transition, publish, acknowledge.
async fn drive(mut inbox: Inbox) {
    while let Some(command) = inbox.commands.recv().await {
        let state: Lifecycle = (**inbox.snapshot.borrow()).clone();
        let next = state.transition(command.event, now());
        inbox.snapshot.send_replace(Arc::new(next));
        if let Some(ack) = command.ack {
            let _ = ack.send(());
        }
    }
}

fn harness(toml: &str) -> Harness {
    let env = |k: &str| (k == "ADMIN_TOKEN").then(|| "admin-secret-123".to_owned());
    let config = Arc::new(vitals_core::config::from_toml(toml, &env).unwrap());
    let (shared, inbox) = Shared::new(config);
    Harness {
        app: Routes::new(shared.clone()),
        shared,
        _driver: tokio::spawn(drive(inbox)),
    }
}

const LOCAL: &str = "127.0.0.1:40000";
const REMOTE: &str = "10.1.2.3:40000";

async fn send(
    app: &Routes,
    method: &str,
    uri: &str,
    peer: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, http::HeaderMap, String) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(bytes::Bytes::from(body.to_owned())))
        .unwrap();
    let resp = app
        .handle(req, peer.map(|p| p.parse::<SocketAddr>().unwrap()))
        .await;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

async fn call(
    app: &Routes,
    method: &str,
    uri: &str,
    peer: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, String) {
    send(app, method, uri, Some(peer), headers, "").await
}

async fn get(app: &Routes, uri: &str) -> (StatusCode, String) {
    let (s, _, b) = call(app, "GET", uri, LOCAL, &[]).await;
    (s, b)
}

async fn put_signal(app: &Routes, name: &str, body: &str) -> (StatusCode, String) {
    let (s, _, b) = send(
        app,
        "PUT",
        &format!("/signals/{name}"),
        Some(LOCAL),
        &[],
        body,
    )
    .await;
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
    assert_eq!(headers["x-content-type-options"], "nosniff");
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
    let (s, headers, _) = call(&h.app, "GET", "/nope", LOCAL, &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(
        get(&h.app, "/readyz/nope").await,
        (
            StatusCode::NOT_FOUND,
            "no dependency or signal has that name; /status lists them\n".into()
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
        "[-]startup pending: llm\n[-]llm failed: no result yet\nreadyz check failed\n"
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
    assert!(!h.shared.drain_requested().is_cancelled());
    let (s, _, _) = call(
        &h.app,
        "POST",
        "/drain",
        REMOTE,
        &[("authorization", "Bearer admin-secret-123")],
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert!(h.shared.drain_requested().is_cancelled());

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
    let h = harness("");
    h.shared.request_drain();
    let mut rx = h.shared.subscribe();
    rx.wait_for(|s| s.is_draining()).await.unwrap();
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

#[tokio::test]
async fn with_a_token_configured_loopback_callers_need_it_too() {
    let h = harness("[server]\nadmin_token_env = \"ADMIN_TOKEN\"\n");
    for (method, path) in [
        ("POST", "/drain"),
        ("POST", "/heartbeat"),
        ("POST", "/started"),
    ] {
        let (s, _, body) = call(&h.app, method, path, LOCAL, &[]).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path}");
        assert!(body.contains("$ADMIN_TOKEN"), "{body}");
    }
    assert!(!h.shared.drain_requested().is_cancelled());
    assert_eq!(
        h.shared.beats().agent,
        None,
        "a refused beat changes nothing"
    );
    // The scheme is case-insensitive (RFC 9110).
    let (s, _, _) = call(
        &h.app,
        "POST",
        "/heartbeat",
        REMOTE,
        &[("authorization", "bearer admin-secret-123")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(h.shared.beats().agent.is_some());
}

#[tokio::test]
async fn without_a_peer_address_the_agent_api_needs_a_token() {
    let h = harness("");
    let (s, _, body) = send(&h.app, "POST", "/heartbeat", None, &[], "").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        body.contains("call the runtime's Handle in-process"),
        "{body}"
    );
    assert_eq!(h.shared.beats().agent, None);
}

const AGENT: &str = r#"
[startup]
timeout = "60s"
[agent]
heartbeat = "required"
stall_after = "10s"
"#;

#[tokio::test(start_paused = true)]
async fn agent_heartbeat_drives_healthz_agent_and_healthz_but_not_readyz() {
    let h = harness(AGENT);
    assert_eq!(
        get(&h.app, "/healthz/agent").await,
        (
            StatusCode::OK,
            "waiting for the agent's first beat (startup.timeout = 1m)\n".into()
        )
    );
    let metrics = get(&h.app, "/metrics").await.1;
    assert!(
        metrics.contains("# TYPE vitals_agent_heartbeat_age_seconds gauge\n")
            && !metrics.contains("vitals_agent_heartbeat_age_seconds 0"),
        "no sample before the first beat: {metrics}"
    );
    assert_eq!(
        call(&h.app, "POST", "/heartbeat", LOCAL, &[]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        get(&h.app, "/healthz/agent").await,
        (StatusCode::OK, "ok\n".into())
    );
    tokio::time::advance(Duration::from_secs(11)).await;
    h.shared.own_heartbeat().beat(); // vitals itself is fine
    let stale = "agent heartbeat stale: last beat 11s ago (agent.stall_after = 10s)\n";
    assert_eq!(
        get(&h.app, "/healthz/agent").await,
        (StatusCode::SERVICE_UNAVAILABLE, stale.into())
    );
    assert_eq!(
        get(&h.app, "/healthz").await,
        (StatusCode::SERVICE_UNAVAILABLE, stale.into())
    );
    assert_eq!(
        get(&h.app, "/readyz").await,
        (StatusCode::OK, "ok\n".into()),
        "readiness keeps its own answer"
    );
    let metrics = get(&h.app, "/metrics").await.1;
    assert!(metrics.contains("vitals_agent_live 0\n"), "{metrics}");
    assert!(
        metrics.contains("vitals_agent_heartbeat_age_seconds 11.0\n"),
        "{metrics}"
    );
    assert!(metrics.contains("vitals_live 0\n"), "{metrics}");
    call(&h.app, "POST", "/heartbeat", LOCAL, &[]).await;
    assert_eq!(get(&h.app, "/healthz").await.0, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn an_agent_that_never_beats_fails_after_the_startup_budget() {
    let h = harness(AGENT);
    tokio::time::advance(Duration::from_secs(61)).await;
    h.shared.own_heartbeat().beat();
    assert_eq!(
        get(&h.app, "/healthz/agent").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no agent heartbeat within startup.timeout (1m); the agent must POST /heartbeat\n"
                .into()
        )
    );
}

#[tokio::test]
async fn healthz_agent_is_404_while_the_heartbeat_is_off() {
    let h = harness("");
    let (s, body) = get(&h.app, "/healthz/agent").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(body.contains("[agent] heartbeat = \"required\""), "{body}");
    assert_eq!(
        call(&h.app, "GET", "/heartbeat", LOCAL, &[]).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn started_gates_startupz_when_startup_is_signal() {
    let h = harness("[agent]\nstartup = \"signal\"\n");
    assert_eq!(
        get(&h.app, "/startupz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(&h.app, "/readyz?verbose").await.1,
        "[-]startup pending: agent (POST /started)\nreadyz check failed\n"
    );
    assert_eq!(
        call(&h.app, "POST", "/started", LOCAL, &[]).await.2,
        "started\n"
    );
    assert_eq!(
        get(&h.app, "/startupz").await,
        (StatusCode::OK, "started\n".into())
    );
    assert_eq!(get(&h.app, "/readyz").await.0, StatusCode::OK);
}

const SIGNALS: &str = r#"
[[signals]]
name = "web-search"
[[signals]]
name = "planner"
critical = true
ttl = "30s"
[[dependencies]]
name = "crm"
kind = "tcp"
address = "127.0.0.1:9"
critical = false
[startup]
require = []
"#;

#[tokio::test(start_paused = true)]
async fn pushed_signals_degrade_or_fail_readiness_and_expire() {
    let h = harness(SIGNALS);
    assert_eq!(
        put_signal(&h.app, "planner", r#"{"up": true}"#).await,
        (StatusCode::OK, "up\n".into())
    );
    assert_eq!(
        put_signal(&h.app, "web-search", r#"{"up": true}"#).await.0,
        StatusCode::OK
    );
    // (The tcp dependency has no result yet, so readiness is degraded already; the lines for
    // the signals are what this test reads.)
    let verbose = get(&h.app, "/readyz?verbose").await.1;
    assert!(
        verbose.contains("[+]web-search ok\n[+]planner ok\n"),
        "{verbose}"
    );

    let (s, body) = put_signal(
        &h.app,
        "web-search",
        r#"{"up": false, "reason": "search API answers 500\u0007", "ttl": "5m"}"#,
    )
    .await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "down\n"));
    let (s, headers, _) = call(&h.app, "GET", "/readyz", LOCAL, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(headers["x-agent-mode"], "degraded");
    let verbose = get(&h.app, "/readyz?verbose").await.1;
    assert!(
        verbose.contains("[-]web-search failed (non-critical signal): search API answers 500\n"),
        "control characters are cleaned from the reason: {verbose}"
    );
    assert_eq!(
        get(&h.app, "/readyz/web-search").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "failed: search API answers 500\n".into()
        )
    );
    let status: serde_json::Value = serde_json::from_str(&get(&h.app, "/status").await.1).unwrap();
    assert_eq!(status["signals"][0]["name"], "web-search");
    assert_eq!(status["signals"][0]["up"], false);
    assert_eq!(status["signals"][0]["reported"], "down");
    assert_eq!(status["signals"][0]["ttl_seconds"], 300.0);
    let metrics = get(&h.app, "/metrics").await.1;
    assert!(
        metrics.contains(
            "vitals_dependency_up{dependency=\"web-search\",kind=\"signal\",critical=\"false\"} 0\n"
        ),
        "{metrics}"
    );
    assert!(
        !metrics.contains("vitals_dependency_checks_total{dependency=\"web-search\""),
        "a pushed signal has no check counters"
    );

    // The critical one's report lapses after its 30 s ttl: not ready.
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(
        get(&h.app, "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(&h.app, "/readyz/planner").await.1,
        "failed: last report expired (31s old)\n"
    );
}

#[tokio::test]
async fn bad_signal_reports_get_clear_errors_and_change_nothing() {
    let h = harness(SIGNALS);
    let before = h.shared.snapshot();
    let cases: &[(&str, &str, StatusCode, &str)] = &[
        (
            "nope",
            r#"{"up": true}"#,
            StatusCode::NOT_FOUND,
            "declared: web-search, planner",
        ),
        (
            "crm",
            r#"{"up": true}"#,
            StatusCode::CONFLICT,
            "a dependency vitals checks itself",
        ),
        ("planner", "up", StatusCode::BAD_REQUEST, "send JSON like"),
        (
            "planner",
            r#"{"up": "yes"}"#,
            StatusCode::BAD_REQUEST,
            "invalid type",
        ),
        (
            "planner",
            r#"{"reason": "x"}"#,
            StatusCode::BAD_REQUEST,
            "missing field `up`",
        ),
        (
            "planner",
            r#"{"up": true, "colour": 1}"#,
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (
            "planner",
            r#"{"up": true, "ttl": "0s"}"#,
            StatusCode::BAD_REQUEST,
            "greater than zero",
        ),
        (
            "planner",
            r#"{"up": true, "ttl": "400000000000y"}"#,
            StatusCode::BAD_REQUEST,
            "at most",
        ),
        (
            "planner",
            r#"{"up": true, "ttl": "soon"}"#,
            StatusCode::BAD_REQUEST,
            "a duration",
        ),
    ];
    for (name, body, want, says) in cases {
        let (s, text) = put_signal(&h.app, name, body).await;
        assert_eq!(s, *want, "{name} {body}: {text}");
        assert!(text.contains(says), "{name} {body}: {text}");
    }
    let huge = format!(r#"{{"up": false, "reason": "{}"}}"#, "x".repeat(5000));
    assert_eq!(
        put_signal(&h.app, "planner", &huge).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let (s, _, _) = send(
        &h.app,
        "PUT",
        "/signals/planner",
        Some(REMOTE),
        &[],
        r#"{"up": true}"#,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        call(&h.app, "POST", "/signals/planner", LOCAL, &[]).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        *h.shared.snapshot(),
        *before,
        "no refused call changed the state"
    );
}

#[tokio::test]
async fn the_routes_are_a_tower_service() {
    use tower::Service;
    let h = harness("");
    let mut service = h.app.clone();
    let mut req = Request::builder()
        .method("POST")
        .uri("/heartbeat")
        .body(Full::new(bytes::Bytes::new()))
        .unwrap();
    req.extensions_mut()
        .insert(PeerAddr(LOCAL.parse().unwrap()));
    let resp = service.call(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(h.shared.beats().agent.is_some());
}

/// `/healthz/vitals` is vitals' own liveness alone: in the sidecar layout the vitals container
/// is probed there, so a hung agent (which fails /healthz and /healthz/agent) restarts the
/// agent's container, not vitals'.
#[tokio::test(start_paused = true)]
async fn healthz_vitals_ignores_the_agents_heartbeat() {
    let h = harness(AGENT);
    call(&h.app, "POST", "/heartbeat", LOCAL, &[]).await;
    tokio::time::advance(Duration::from_secs(11)).await;
    h.shared.own_heartbeat().beat();
    assert_eq!(
        get(&h.app, "/healthz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(&h.app, "/healthz/agent").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(&h.app, "/healthz/vitals").await,
        (StatusCode::OK, "ok\n".into())
    );
    // And it fails as /healthz does when vitals itself stalls.
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(
        get(&h.app, "/healthz/vitals").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

/// `/readyz?scope=instance` (the ECS target group's path): a remote critical dependency down
/// degrades, so a provider outage cannot make ECS replace every task; a loopback one still
/// fails, since a new task can cure it.
#[tokio::test]
async fn the_instance_scope_fails_only_on_local_critical_dependencies() {
    let h = harness(
        r#"
[startup]
require = []
[[dependencies]]
name = "provider"
kind = "http"
url = "https://llm.example.com/health"
[[dependencies]]
name = "model-server"
kind = "http"
url = "http://127.0.0.1:8081/health"
"#,
    );
    let report = |i: usize, up: bool| {
        let signal = h.shared.snapshot().rules().signals.iter().nth(i).unwrap().0;
        h.shared.apply(
            Event::Observed {
                signal,
                observation: Observation::reported(up, "connection refused", None),
            },
            Duration::from_secs(1),
        )
    };
    report(0, true).await.unwrap();
    report(1, true).await.unwrap();
    assert_eq!(
        get(&h.app, "/readyz?scope=instance").await.0,
        StatusCode::OK
    );

    report(0, false).await.unwrap();
    assert_eq!(
        get(&h.app, "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (s, headers, _) = call(&h.app, "GET", "/readyz?scope=instance", LOCAL, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(headers["x-agent-mode"], "degraded");
    let (_, body) = get(&h.app, "/readyz?scope=instance&verbose").await;
    assert!(
        body.contains("[-]provider failed (shared: degrades for scope=instance)"),
        "{body}"
    );

    report(1, false).await.unwrap();
    assert_eq!(
        get(&h.app, "/readyz?scope=instance").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(&h.app, "/readyz?scope=fleet").await.0,
        StatusCode::BAD_REQUEST
    );
}
