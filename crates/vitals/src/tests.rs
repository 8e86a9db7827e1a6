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

#[tokio::test]
async fn a_port_in_use_is_an_error_before_anything_starts() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let (runtime, _handle) = Builder::new().listen(addr).build().unwrap();
    let err = runtime.run().await.unwrap_err();
    assert!(matches!(err, Error::Bind { .. }), "{err}");
    assert!(err.to_string().contains("choose another address"), "{err}");
}
