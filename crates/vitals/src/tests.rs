use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::*;

/// One request over a fresh connection; returns the status line and the body.
async fn request(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    format!("{} {body}", head.lines().next().unwrap())
}

#[tokio::test]
async fn the_runtime_serves_its_routes_and_drains_on_request() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (runtime, handle) = Builder::new()
        .signal("tool", false, Duration::from_secs(60))
        .drain(Duration::from_millis(300), Duration::from_secs(1))
        .listener(listener)
        .build()
        .unwrap();
    let run = tokio::spawn(runtime.run());
    assert_eq!(
        request(addr, "GET", "/readyz", "").await,
        "HTTP/1.1 200 OK degraded\n",
        "a signal never reported is down"
    );
    assert_eq!(
        request(addr, "PUT", "/signals/tool", r#"{"up": true}"#).await,
        "HTTP/1.1 200 OK up\n"
    );
    assert_eq!(
        request(addr, "GET", "/readyz", "").await,
        "HTTP/1.1 200 OK ok\n"
    );
    assert_eq!(handle.readiness(), Readiness::Ready);

    handle.drain();
    handle.wait_for(|s| s.is_draining()).await;
    assert_eq!(
        request(addr, "GET", "/readyz", "").await,
        "HTTP/1.1 503 Service Unavailable draining\n"
    );
    assert_eq!(
        request(addr, "GET", "/healthz", "").await,
        "HTTP/1.1 200 OK ok\n"
    );
    handle.stopping().await;
    let exit = run.await.unwrap().unwrap();
    assert_eq!(
        exit,
        Exit {
            cause: DrainCause::Requested,
            code: 0
        }
    );
    assert!(handle.snapshot().phase() == vitals_core::lifecycle::Phase::Drained);
    assert!(!handle.is_live(), "drained is the end of liveness");
}

#[tokio::test]
async fn handle_reports_reach_readiness_and_errors_are_typed() {
    let (runtime, handle) = Builder::from_toml(
        "[[dependencies]]\nname = \"db\"\nkind = \"tcp\"\naddress = \"127.0.0.1:9\"\ncritical = false\n[startup]\nrequire = []\n",
    )
    .unwrap()
    .signal("planner", true, Duration::from_secs(60))
    .drain(Duration::ZERO, Duration::ZERO)
    .build()
    .unwrap();
    let run = tokio::spawn(runtime.run());
    handle.set_signal("planner", true, "").unwrap();
    handle
        .wait_for(|s| s.signals()[1].last_result_at.is_some())
        .await;
    handle
        .set_signal("planner", false, "planner model answers garbage")
        .unwrap();
    handle
        .wait_for(|s| s.readiness(now()) == Readiness::NotReady)
        .await;
    assert_eq!(
        handle.set_signal("nope", true, ""),
        Err(SignalError::Unknown {
            name: "nope".into(),
            declared: vec!["planner".into()]
        })
    );
    assert_eq!(
        handle.set_signal("db", true, ""),
        Err(SignalError::NotPushed { name: "db".into() })
    );
    assert_eq!(
        handle.set_signal("nope", true, "").unwrap_err().to_string(),
        "no signal is named \"nope\"; declared: planner"
    );
    handle.drain();
    assert_eq!(run.await.unwrap().unwrap().code, 0);
}

#[test]
fn signals_declared_in_code_are_validated_like_the_file() {
    let err = Builder::from_toml("[[signals]]\nname = \"tool\"\n")
        .unwrap()
        .signal("tool", false, Duration::from_secs(60))
        .signal("Bad Name", false, Duration::ZERO)
        .build()
        .unwrap_err();
    let Error::Config(errors) = err else {
        panic!("not a config error: {err}")
    };
    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        text,
        vec![
            "signals[1].name: \"tool\" is already used by a dependency or signal; names must be unique",
            "signals[2].name: \"Bad Name\" is not a valid name; use lowercase letters, digits, '-', '_' or '.', starting with a letter or digit, at most 63 characters",
            "signals[2].ttl: must be greater than zero",
        ]
    );
}

/// Embedded, the routes are where the agent mounts them, not on `server.listen`: a local model
/// server on 8080 (llama.cpp's default, and `server.listen`'s) is no collision until the runtime
/// is told to listen there.
#[tokio::test]
async fn server_listen_is_no_address_in_use_until_the_runtime_listens_there() {
    let toml = "[[dependencies]]\nname = \"llm\"\nkind = \"http\"\nurl = \"http://127.0.0.1:8080/health\"\n";
    assert!(Builder::from_toml(toml).unwrap().build().is_ok());
    let other: std::net::SocketAddr = "127.0.0.1:9090".parse().unwrap();
    assert!(Builder::from_toml(toml)
        .unwrap()
        .listen(other)
        .build()
        .is_ok());
    let err = Builder::from_toml(toml)
        .unwrap()
        .listen("0.0.0.0:8080".parse().unwrap())
        .build()
        .unwrap_err();
    // The address named is the one given in code, not a `server.listen` nobody set.
    assert!(
        err.to_string().contains("dependencies[0]: \"llm\" checks vitals' own probe server (Builder::listen(0.0.0.0:8080))"),
        "{err}"
    );
    assert!(err.to_string().contains("or listen elsewhere"), "{err}");
    assert!(!err.to_string().contains("server.listen"), "{err}");
}

#[tokio::test]
async fn a_port_in_use_is_an_error_before_anything_starts() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let (runtime, _handle) = Builder::new().listen(addr).build().unwrap();
    let err = runtime.run().await.unwrap_err();
    assert!(matches!(err, Error::Bind { .. }), "{err}");
    assert!(err.to_string().contains("choose another address"), "{err}");
}

// ---- a proptest-driven fuzz of the configuration path (no nightly toolchain for cargo-fuzz) ----
//
// Adversarial health.toml documents, built from the real section and key names with hostile
// values, go through what `vitals validate` and `vitals serve` do: load and validate, build every
// client, build the runtime. Each either refuses with errors or yields a runtime; none panics.
// The seed corpus is the value list below (overflowing, negative, empty, non-ASCII, wrongly
// typed); proptest mixes them. A longer run: PROPTEST_CASES=20000 cargo test -p vitals fuzz_.

mod fuzz {
    use proptest::prelude::*;

    const SECTIONS: &[&str] = &[
        "server",
        "startup",
        "liveness",
        "readiness",
        "drain",
        "probes",
        "agent",
        "bogus",
    ];
    const KEYS: &[&str] = &[
        "listen",
        "admin_token_env",
        "header_read_timeout",
        "max_connections",
        "timeout",
        "require",
        "stall_after",
        "degraded_status",
        "delay",
        "grace",
        "liveness",
        "heartbeat",
        "startup",
        "period",
        "name",
        "kind",
        "critical",
        "interval",
        "failure_threshold",
        "success_threshold",
        "stale_after",
        "base_url",
        "model",
        "api_key_env",
        "check",
        "prompt",
        "expect",
        "address",
        "url",
        "method",
        "expect_status",
        "expect_body",
        "headers",
        "headers_env",
        "expect_json",
        "max_probes_per_hour",
        "password_env",
        "command",
        "query",
        "expect_rows",
        "ttl",
        "max_latency",
        "health_path",
        "api_version",
    ];
    const VALUES: &[&str] = &[
        "\"30s\"",
        "\"0s\"",
        "\"1ns\"",
        "\"400000000000y\"",
        "\"99999999999999999999s\"",
        "\"-5s\"",
        "\"\"",
        "\"24h\"",
        "\"1e400s\"",
        "0",
        "-1",
        "18446744073709551615",
        "9223372036854775807",
        "-9223372036854775808",
        "1.5",
        "nan",
        "inf",
        "true",
        "\"required\"",
        "\"signal\"",
        "\"http\"",
        "\"tcp\"",
        "\"openai\"",
        "\"redis\"",
        "\"postgres\"",
        "\"exec\"",
        "\"anthropic\"",
        "\"semantic\"",
        "\"127.0.0.1:0\"",
        "\"[::1]:9\"",
        "\"http://127.0.0.1:9/x\"",
        "\"redis://127.0.0.1:9/abc\"",
        "\"postgres://u@127.0.0.1:9/d?sslmode=bogus\"",
        "\"http://u:p@h/\"",
        "\"/re(/\"",
        "\"😀\\u0000\\n\"",
        "[]",
        "[\"a\", \"a\"]",
        "[1, \"x\"]",
        "{}",
        "{ pointer = \"/x\" }",
        "{ Authorization = \"UNSET_VAR\" }",
        "[\"/bin/true\"]",
        "429",
        "500",
    ];

    fn entry() -> impl Strategy<Value = String> {
        (prop::sample::select(KEYS), prop::sample::select(VALUES))
            .prop_map(|(k, v)| format!("{k} = {v}\n"))
    }

    fn document() -> impl Strategy<Value = String> {
        let table = (
            prop::sample::select(SECTIONS),
            prop::collection::vec(entry(), 0..5),
        )
            .prop_map(|(s, es)| format!("[{s}]\n{}", es.concat()));
        let array = (
            prop::sample::select(&["dependencies", "signals", "dependencies"][..]),
            prop::collection::vec(entry(), 0..8),
        )
            .prop_map(|(s, es)| format!("[[{s}]]\n{}", es.concat()));
        prop::collection::vec(prop_oneof![table, array], 0..6).prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(512)
        ))]

        #[test]
        fn fuzz_config_refuses_or_runs_never_panics(doc in document()) {
            let env = |k: &str| (k == "LLM_KEY").then(|| "sk-fuzz-0000".to_owned());
            if let Ok(config) = vitals_core::config::from_toml(&doc, &env) {
                if crate::check_clients(&config).is_ok() {
                    let built = crate::Builder::from_config(config).build();
                    prop_assert!(built.is_ok(), "validated but not built: {doc}\n{:?}", built.err());
                }
            }
        }

        #[test]
        fn fuzz_config_arbitrary_text_never_panics(doc in ".{0,400}") {
            let _ = vitals_core::config::from_toml(&doc, &|_| None);
        }
    }
}

/// An agent run with `Builder::entrypoint` that exits by itself ends the runtime as a drain does:
/// an embedder's `stopping()` completes, the state reaches Drained, and the exit carries the
/// agent's status.
#[cfg(feature = "supervisor")]
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_exits_by_itself_ends_the_runtime_as_a_drain_does() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (runtime, handle) = Builder::new()
        .entrypoint(vec!["sh".into(), "-c".into(), "sleep 0.3; exit 5".into()])
        .listener(listener)
        .build()
        .unwrap();
    let run = tokio::spawn(runtime.run());
    tokio::time::timeout(Duration::from_secs(20), handle.stopping())
        .await
        .expect("stopping() completes when the agent exits");
    let exit = run.await.unwrap().unwrap();
    assert_eq!(
        exit,
        Exit {
            cause: DrainCause::AgentExited,
            code: 5
        }
    );
    assert!(handle.snapshot().phase() == vitals_core::lifecycle::Phase::Drained);
}

/// One GET over a fresh connection, from a thread of its own: the status line and the body.
#[cfg(feature = "gate")]
fn blocking_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    format!("{} {body}", head.lines().next().unwrap_or(""))
}

/// The gate runs on a thread of its own: while the embedder's runtime thread is held (a
/// blocking call, a long computation), the agent's model requests still pass through the gate.
#[cfg(feature = "gate")]
#[tokio::test(flavor = "current_thread")]
async fn the_gate_serves_while_the_embedders_runtime_thread_is_held() {
    // An upstream on a thread of its own, answering every request with "ok".
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        for mut s in upstream.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    let gate_addr = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap()
    };
    let toml = format!(
        "[gate]\nlisten = \"{gate_addr}\"\nupstream = \"http://{upstream_addr}\"\nmax_concurrent = 2\nqueue_depth = 2\nqueue_timeout = \"1s\"\nrequest_timeout = \"5s\"\n"
    );
    let (runtime, handle) = Builder::from_toml(&toml)
        .unwrap()
        .listener(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .drain(Duration::ZERO, Duration::from_secs(1))
        .build()
        .unwrap();
    let run = tokio::spawn(runtime.run());
    // Served once the gate listens.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(gate_addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gate never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // This runtime's only thread is held until the answer comes (or 10 s pass).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(blocking_get(gate_addr, "/v1/models")));
    let answer = rx.recv_timeout(Duration::from_secs(10));
    assert_eq!(
        answer.as_deref(),
        Ok("HTTP/1.1 200 OK ok"),
        "the gate answered while the embedder's runtime thread was held"
    );
    handle.drain();
    let exit = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the runtime ends after the drain")
        .unwrap()
        .unwrap();
    assert_eq!(exit.cause, DrainCause::Requested);
}
