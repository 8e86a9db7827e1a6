//! `[gate]` through the binary: in front of the real llama-cpp-python server, and in front of a
//! failing upstream whose outage reaches readiness through the breaker, and whose recovery
//! brings readiness back with no client's request.

use std::time::{Duration, Instant};

use vitals_test_util::{LlmServer, StubServer, VitalsProcess};

use crate::{bin, body, client, expect_status_within};

/// The gate's address, from its "gate: serving" log line.
pub(crate) fn gate_addr(v: &VitalsProcess) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for line in v.logs() {
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if json["fields"]["message"] == "gate: serving" || json["message"] == "gate: serving" {
                let listen = json["fields"]["listen"]
                    .as_str()
                    .or(json["listen"].as_str())
                    .unwrap();
                return format!("http://{listen}");
            }
        }
        assert!(
            Instant::now() < deadline,
            "the gate never said it serves: {:?}",
            v.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn gate_config(upstream: &str, extra: &str) -> String {
    format!(
        "[gate]\nlisten = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\nmax_concurrent = 2\nqueue_depth = 4\nqueue_timeout = \"5s\"\nrequest_timeout = \"30s\"\n{extra}\n"
    )
}

/// The text pieces of an OpenAI completion stream (server-sent events), in order.
fn stream_texts(sse: &str) -> Vec<String> {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| {
            let v: serde_json::Value = serde_json::from_str(d).unwrap();
            v["choices"][0]["text"].as_str().unwrap_or("").to_owned()
        })
        .collect()
}

/// A completion and a streamed completion through the gate equal the same requests sent to
/// the server directly (temperature 0: the tiny model answers deterministically), token for
/// token; the gate counts them.
#[tokio::test(flavor = "multi_thread")]
async fn completions_and_streams_pass_through_the_gate_token_for_token() {
    let llm = LlmServer::start();
    let upstream = llm.base_url().trim_end_matches("/v1").to_owned();
    let v = VitalsProcess::start(&bin(), &gate_config(&upstream, ""), &[]);
    let gate = gate_addr(&v);
    let c = client();
    let ask = |base: String, stream: bool| {
        let c = c.clone();
        async move {
            let r = c
                .post(format!("{base}/v1/completions"))
                .json(&serde_json::json!({
                    "model": "tiny", "prompt": "Hello", "max_tokens": 12,
                    "temperature": 0.0, "seed": 7, "stream": stream,
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{base}");
            r.text().await.unwrap()
        }
    };
    let direct = ask(upstream.clone(), false).await;
    let gated = ask(gate.clone(), false).await;
    let text = |s: &str| {
        serde_json::from_str::<serde_json::Value>(s).unwrap()["choices"][0]["text"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(text(&gated), text(&direct));

    let direct = stream_texts(&ask(upstream, true).await);
    let gated = stream_texts(&ask(gate.clone(), true).await);
    assert!(direct.len() > 1, "a stream of several events: {direct:?}");
    assert_eq!(gated, direct, "the same events, in order");

    let metrics = body(&v.url("/metrics")).await;
    assert!(
        metrics.contains("vitals_gate_requests_total{outcome=\"ok\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vitals_gate_concurrency_limit 2"),
        "{metrics}"
    );
    assert!(metrics.contains("vitals_gate_circuit_state 0"), "{metrics}");
    for family in [
        "vitals_gate_request_duration_seconds_bucket",
        "vitals_gate_time_to_first_byte_seconds_bucket",
        "vitals_gate_queue_wait_seconds_bucket",
        "vitals_gate_in_flight",
        "vitals_gate_queue_depth",
        "vitals_gate_retries_total",
        "vitals_gate_requests_total{outcome=\"shed_queue_full\"} 0",
    ] {
        assert!(metrics.contains(family), "{family}: {metrics}");
    }
    // The gate's families pass Prometheus' own lint, as the rest do.
    crate::metrics::promtool_check_metrics(&metrics);

    // The server's own web page (FastAPI's docs, HTML) is not an API answer: a 502 with the
    // reason. And a body that says it is JSON and is not, which this server answers with a 500,
    // is the gate's 400. Each asked for more times than the breaker's threshold (5), they leave
    // the circuit closed and the instance ready: a client cannot take it out of traffic so.
    for _ in 0..7 {
        let r = c.get(format!("{gate}/docs")).send().await.unwrap();
        assert_eq!(r.status(), 502);
        let json: serde_json::Value = r.json().await.unwrap();
        assert_eq!(json["error"]["code"], "upstream_garbage", "{json}");
        let r = c
            .post(format!("{gate}/v1/completions"))
            .header("content-type", "application/json")
            .body("{\"prompt\": \"Hello\", \"max_tokens\": 4,")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let json: serde_json::Value = r.json().await.unwrap();
        assert_eq!(json["error"]["code"], "invalid_json", "{json}");
    }
    expect_status_within(&v.url("/readyz"), 200, Duration::from_secs(1)).await;
    let metrics = body(&v.url("/metrics")).await;
    assert!(metrics.contains("vitals_gate_circuit_state 0"), "{metrics}");
}

/// A client that speaks HTTP/2 with prior knowledge (`curl --http2-prior-knowledge`, an h2c
/// client) gets its connection closed, as an HTTP/1.1 server must; the log says why, so the
/// operator does not hunt for a network fault. HTTP/1.1 clients go on being served.
#[tokio::test(flavor = "multi_thread")]
async fn an_http2_client_is_told_in_the_log_that_the_gate_speaks_http1() {
    let up = StubServer::start(200).await;
    let v = VitalsProcess::start(
        &bin(),
        &gate_config(&format!("http://{}", up.addr()), ""),
        &[],
    );
    let gate = gate_addr(&v);
    // Closed, not held: the exchange ends.
    raw_exchange(&gate, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !v.logs().iter().any(|l| l.contains("HTTP/2")) {
        assert!(
            Instant::now() < deadline,
            "no log line names HTTP/2: {:?}",
            v.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = client()
        .get(format!("{gate}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// The e2e: the breaker opens on an upstream outage, /readyz goes 503 with no change to
/// liveness, and both recover once a trial request succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_outage_opens_the_breaker_and_readiness_follows_liveness_does_not() {
    let up = StubServer::start(200).await;
    let config = gate_config(
        &format!("http://{}", up.addr()),
        "[gate.breaker]\nfailure_threshold = 3\nopen_for = \"1s\"\n[drain]\ndelay = \"0s\"",
    );
    let v = VitalsProcess::start(&bin(), &config, &[]);
    let gate = gate_addr(&v);
    expect_status_within(&v.url("/readyz"), 200, Duration::from_secs(5)).await;

    up.set_status(500);
    let c = client();
    for _ in 0..3 {
        let r = c.get(format!("{gate}/v1/models")).send().await.unwrap();
        assert_eq!(r.status(), 500);
    }
    expect_status_within(&v.url("/readyz"), 503, Duration::from_secs(2)).await;
    assert_eq!(
        crate::status(&v.url("/healthz")).await,
        200,
        "liveness never follows the upstream"
    );
    let verbose = body(&v.url("/readyz?verbose")).await;
    assert!(
        verbose.contains("[-]gate failed: circuit open: the upstream answered 500"),
        "{verbose}"
    );
    let r = c.get(format!("{gate}/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-vitals-overloaded"], "circuit_open");
    let metrics = body(&v.url("/metrics")).await;
    assert!(metrics.contains("vitals_gate_circuit_state 1"), "{metrics}");
    assert!(
        metrics.contains("vitals_gate_requests_total{outcome=\"circuit_open\"} 1"),
        "{metrics}"
    );

    // The upstream recovers. The instance is out of traffic, so no client's request comes to
    // be the trial: the gate's own trial closes the circuit, and readiness comes back.
    up.set_status(200);
    expect_status_within(&v.url("/readyz"), 200, Duration::from_secs(8)).await;
    let metrics = body(&v.url("/metrics")).await;
    assert!(metrics.contains("vitals_gate_circuit_state 0"), "{metrics}");
    assert!(
        metrics.contains("vitals_gate_requests_total{outcome=\"ok\"} 0"),
        "no client's request did it: {metrics}"
    );
    let r = c.get(format!("{gate}/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// A configuration the gate cannot run is refused before anything starts.
#[test]
fn a_gate_on_the_probe_port_is_refused_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("health.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"0.0.0.0:8080\"\n[gate]\nlisten = \"0.0.0.0:8080\"\nupstream = \"http://127.0.0.1:9\"\nmax_concurrent = 2\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("gate.listen: 0.0.0.0:8080 is the probe server's address"));
}

/// Saturation with hysteresis: a queue held above high water for degrade_after turns readiness
/// degraded (still in traffic) with the reason; once it drains, readiness recovers after
/// recover_after. Liveness never moves.
#[tokio::test(flavor = "multi_thread")]
async fn a_queue_held_above_high_water_degrades_readiness_until_it_drains() {
    let up = StubServer::start(200).await;
    up.hang();
    let config = format!(
        "[gate]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{}\"\nmax_concurrent = 1\nqueue_depth = 4\nqueue_timeout = \"20s\"\nrequest_timeout = \"30s\"\n[gate.saturation]\nhigh_water = 2\ndegrade_after = \"2s\"\nrecover_after = \"3s\"\n[drain]\ndelay = \"0s\"\n",
        up.addr()
    );
    let v = VitalsProcess::start(&bin(), &config, &[]);
    let gate = gate_addr(&v);
    expect_status_within(&v.url("/readyz"), 200, Duration::from_secs(5)).await;
    // One request holds the only slot (the upstream never answers); three wait.
    let waiting: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("{gate}/v1/completions");
            tokio::spawn(async move { client().post(url).body("{}").send().await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(8);
    let verbose = loop {
        let r = client().get(v.url("/readyz?verbose")).send().await.unwrap();
        let degraded = r
            .headers()
            .get("x-agent-mode")
            .is_some_and(|m| m == "degraded");
        let (status, text) = (r.status().as_u16(), r.text().await.unwrap());
        if degraded {
            assert_eq!(status, 200, "degraded stays in traffic: {text}");
            break text;
        }
        assert!(Instant::now() < deadline, "never degraded: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        verbose.contains("[-]gate-saturation failed (non-critical): saturated: 3 requests waiting (high water 2)"),
        "{verbose}"
    );
    assert_eq!(crate::status(&v.url("/healthz")).await, 200);
    let metrics = body(&v.url("/metrics")).await;
    assert!(metrics.contains("vitals_gate_queue_depth 3"), "{metrics}");
    assert!(metrics.contains("vitals_gate_in_flight 1"), "{metrics}");

    // The clients give up: the queue drains, and after recover_after readiness is plain again.
    for w in waiting {
        w.abort();
    }
    let recovered = expect_status_within(&v.url("/readyz"), 200, Duration::from_secs(1)).await;
    let _ = recovered;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = client().get(v.url("/readyz")).send().await.unwrap();
        if r.headers().get("x-agent-mode").is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still degraded after the queue drained"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = body(&v.url("/metrics")).await;
    assert!(
        metrics.contains("vitals_gate_requests_total{outcome=\"client_cancelled\"} 4"),
        "{metrics}"
    );
}

/// A tiny llama.cpp stand-in for `/props`: `{"total_slots": slots}`, and 404 elsewhere.
async fn props_server(slots: u64) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let reply = if head.starts_with("GET /props ") {
                    let body =
                        format!("{{\"total_slots\": {slots}, \"model_path\": \"tiny.gguf\"}}");
                    format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
                } else {
                    "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        .to_owned()
                };
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

/// `max_concurrent = "auto"` learns the slot count from llama.cpp's /props at start.
#[tokio::test(flavor = "multi_thread")]
async fn auto_learns_the_slot_count_from_the_upstream() {
    let up = props_server(3).await;
    let config = format!(
        "[gate]\nlisten = \"127.0.0.1:0\"\nupstream = \"{up}\"\nmax_concurrent = \"auto\"\n"
    );
    let v = VitalsProcess::start(&bin(), &config, &[]);
    let _ = gate_addr(&v);
    let metrics = body(&v.url("/metrics")).await;
    assert!(
        metrics.contains("vitals_gate_concurrency_limit 3"),
        "{metrics}"
    );
}

/// An upstream that answers and cannot say its slot count (a 404: not llama.cpp's server; one
/// that claims more slots than a limit can be, which used to abort vitals) will not say it by
/// waiting: vitals stops at once with the key and the fix, not after the whole startup budget
/// (here a minute, and a model's load can take ten).
#[test]
fn auto_without_props_stops_at_once_with_the_key_and_the_fix() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(async { StubServer::start(404).await });
    let absurd = rt.block_on(props_server(u64::MAX));
    let (out, took) = auto_stops_with_the_key_and_the_fix(up.addr().to_string(), "60s");
    assert!(out.contains("answered 404 Not Found"), "{out}");
    assert!(took < Duration::from_secs(10), "stopped after {took:?}");
    let (out, took) =
        auto_stops_with_the_key_and_the_fix(absurd.trim_start_matches("http://").to_owned(), "60s");
    assert!(out.contains("total_slots"), "{out}");
    assert!(took < Duration::from_secs(10), "stopped after {took:?}");
}

/// A server still loading its model (llama.cpp answers 503 meanwhile) is waited for, and the
/// log says so while it lasts; at the end of the startup budget vitals stops with the fix.
#[test]
fn auto_waits_for_a_loading_upstream_and_says_so() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(async { StubServer::start(503).await });
    let (out, took) = auto_stops_with_the_key_and_the_fix(up.addr().to_string(), "3s");
    assert!(
        took >= Duration::from_secs(3),
        "stopped after {took:?}: {out}"
    );
    assert!(
        out.contains("waiting for the upstream's slot count")
            && out.contains("answered 503 Service Unavailable"),
        "{out}"
    );
}

/// vitals' stderr once it stopped for want of a slot count from `addr`, and how long it ran.
pub(crate) fn auto_stops_with_the_key_and_the_fix(
    addr: String,
    startup: &str,
) -> (String, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("health.toml");
    std::fs::write(
        &path,
        format!(
            "[startup]\ntimeout = \"{startup}\"\n[gate]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{addr}\"\nmax_concurrent = \"auto\"\n",
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut child = std::process::Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Killed after 15 s: a vitals that neither serves nor stops must fail the test, not hang it.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("vitals neither served nor stopped within 15 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = started.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("gate.max_concurrent = \"auto\"")
            && stderr.contains("set gate.max_concurrent to a number: the server's slots"),
        "{stderr}"
    );
    (stderr, took)
}

/// A kept-alive TLS connection that sat idle for 4 s is closed by the gate rather than reused:
/// before the 5 s after which uvicorn, llama.cpp's server and Node close theirs, so that a
/// request never goes out on a connection the upstream is closing. A busy one is reused.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_https_connection_is_closed_before_the_upstreams_keep_alive_ends() {
    let tls = vitals_test_util::TlsHttp::start();
    let ca = format!("ca_file = \"{}\"", tls.ca_file.display());
    let v = VitalsProcess::start(&bin(), &gate_config(&tls.url(""), &ca), &[]);
    let gate = gate_addr(&v);
    let connections = || async {
        let answer = client()
            .get(format!("{gate}/connections"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        answer.json::<serde_json::Value>().await.unwrap()["connections"]
            .as_u64()
            .unwrap()
    };
    let first = connections().await;
    // A moment for the connection to go back to the pool, as it does once its answer is read.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(connections().await, first, "a busy connection is reused");
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(
        connections().await,
        first + 1,
        "after 4.5 s idle the gate opened a new connection"
    );
}

/// Sends `request` as it is to the gate at `gate` (`http://…`) and reads until it closes the
/// connection, which it must within 5 s.
async fn raw_exchange(gate: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(gate.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer))
        .await
        .expect("the gate closes the connection, not holds it")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A model server behind a private CA: with `gate.ca_file` the gate reaches it over TLS and
/// passes its answer through; without it the gate refuses the server's certificate and answers
/// 502 with the reason, never the upstream's answer unverified.
#[tokio::test(flavor = "multi_thread")]
async fn an_https_upstream_behind_a_private_ca_is_reached_with_gate_ca_file() {
    let tls = vitals_test_util::TlsHttp::start();
    let completion = |gate: String| {
        client()
            .post(format!("{gate}/v1/chat/completions"))
            .body("{\"model\":\"m\"}")
            .send()
    };
    let ca = format!("ca_file = \"{}\"", tls.ca_file.display());
    let v = VitalsProcess::start(&bin(), &gate_config(&tls.url(""), &ca), &[]);
    let gate = gate_addr(&v);
    let answer = completion(gate.clone()).await.unwrap();
    assert_eq!(answer.status(), 200);
    let json: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(json["path"], "/v1/chat/completions", "{json}");
    assert_eq!(json["body"], "{\"model\":\"m\"}", "{json}");
    // The upstream is asked for itself, not for the gate the client named.
    assert_eq!(json["host"], tls.addr, "{json}");
    // A stream passes through as it comes over TLS too: the first event long before the second.
    let started = Instant::now();
    let mut stream = client().get(format!("{gate}/stream")).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let first = stream.chunk().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert_eq!(&first[..], b"data: 0\n\n");
    assert!(
        first_at < Duration::from_millis(800),
        "first event after {first_at:?}: buffered?"
    );
    let mut rest = Vec::new();
    while let Some(chunk) = stream.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(&rest[..], b"data: 1\n\n");
    assert!(started.elapsed() >= Duration::from_millis(1200));
    // A stream the upstream hangs up on in its middle ends short for the client, and counts as
    // the upstream's error, not as an answer.
    let mut cut = client().get(format!("{gate}/cut")).send().await.unwrap();
    assert_eq!(cut.status(), 200);
    assert_eq!(&cut.chunk().await.unwrap().unwrap()[..], b"data: 0\n\n");
    assert!(cut.chunk().await.is_err(), "the stream must end short");
    let metrics = body(&v.url("/metrics")).await;
    for counted in [
        "vitals_gate_requests_total{outcome=\"ok\"} 2",
        "vitals_gate_requests_total{outcome=\"upstream_error\"} 1",
    ] {
        assert!(metrics.contains(counted), "{counted}: {metrics}");
    }
    // An empty chunked POST reaches the hosted API with `Content-Length: 0`, as RFC 9110 asks.
    let empty = raw_exchange(
        &gate,
        "POST /v1/x HTTP/1.1\r\nhost: g\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(empty.contains("\"content_length\": \"0\""), "{empty}");
    drop(v);

    let v = VitalsProcess::start(&bin(), &gate_config(&tls.url(""), ""), &[]);
    // A key in the query (as some hosted APIs take it) stays out of the answer and the logs.
    let answer = client()
        .post(format!(
            "{}/v1/chat/completions?key=query-secret-7f3a",
            gate_addr(&v)
        ))
        .body("{\"model\":\"m\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 502);
    let text = answer.text().await.unwrap();
    assert!(
        text.to_lowercase().contains("certificate"),
        "the reason names the certificate: {text}"
    );
    assert!(!text.contains("query-secret"), "{text}");
    let logs = v.logs().join("\n");
    assert!(
        logs.contains("certificate"),
        "the refusal is logged: {logs}"
    );
    assert!(!logs.contains("query-secret"), "{logs}");
    // A certificate refused now is refused on a retry too: none is spent on it.
    let metrics = body(&v.url("/metrics")).await;
    assert!(
        metrics.lines().any(|l| l == "vitals_gate_retries_total 0"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("vitals_gate_retries"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
