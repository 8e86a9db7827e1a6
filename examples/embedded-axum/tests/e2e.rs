//! The example agent as a real process: its loop beats, it starts after warm-up, a tool failure
//! on real traffic degrades it, a blocked loop fails its liveness, and SIGTERM drains it.

// A real process on the wall clock, not tokio's.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Agent {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(tool: SocketAddr) -> Agent {
    let mut child = Command::new(env!("CARGO_BIN_EXE_embedded-axum"))
        .env("LISTEN", "127.0.0.1:0")
        .env("TOOL_ADDR", tool.to_string())
        .env("WARMUP_MS", "500")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the example");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("agent: {line}");
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("the example never said where it listens");
        let json: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => continue,
        };
        if let Some(addr) = json.get("listen").and_then(|v| v.as_str()) {
            break addr.parse().unwrap();
        }
    };
    Agent { child, addr }
}

async fn get(agent: &Agent, path: &str) -> (u16, bool, String) {
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{}{path}", agent.addr))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = r.status().as_u16();
    let degraded = r
        .headers()
        .get("x-agent-mode")
        .is_some_and(|v| v == "degraded");
    (status, degraded, r.text().await.unwrap())
}

/// Polls `path` until `f` accepts the answer, failing after `within`.
async fn until(agent: &Agent, path: &str, within: Duration, f: impl Fn(u16, bool) -> bool) {
    let start = Instant::now();
    loop {
        let (s, d, body) = get(agent, path).await;
        if f(s, d) {
            return;
        }
        assert!(
            start.elapsed() <= within,
            "{path} still {s} (degraded {d}) after {:?}: {body}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn the_embedded_agent_behaves_as_its_health_says() {
    let tool = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let agent = start(tool.local_addr().unwrap());
    assert_eq!(get(&agent, "/healthz").await.0, 200);
    until(&agent, "/startupz", Duration::from_secs(5), |s, _| s == 200).await;
    assert_eq!(get(&agent, "/healthz/agent").await.0, 200);

    // The tool works on real traffic, then fails: degraded, still in traffic.
    assert_eq!(get(&agent, "/ask").await.0, 200);
    assert_eq!(get(&agent, "/readyz").await.0, 200);
    drop(tool);
    let (s, _, body) = get(&agent, "/ask").await;
    assert_eq!(s, 502, "{body}");
    until(&agent, "/readyz", Duration::from_secs(2), |s, d| {
        s == 200 && d
    })
    .await;
    let (_, _, verbose) = get(&agent, "/readyz?verbose").await;
    assert!(
        verbose.contains("[-]tool failed (non-critical signal): tool unreachable"),
        "{verbose}"
    );

    // A blocked main loop: liveness fails within the 2 s stall bound; readiness keeps its
    // answer.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let blocked = Instant::now();
    let r = client
        .post(format!("http://{}/debug/block-loop", agent.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    until(&agent, "/healthz/agent", Duration::from_secs(4), |s, _| {
        s == 503
    })
    .await;
    assert!(
        blocked.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        blocked.elapsed()
    );
    assert_eq!(get(&agent, "/healthz").await.0, 503);
    let (s, d, _) = get(&agent, "/readyz").await;
    assert_eq!((s, d), (200, true), "readiness keeps its own answer");
}

#[tokio::test]
async fn sigterm_drains_then_the_app_stops_and_exits_zero() {
    let tool = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut agent = start(tool.local_addr().unwrap());
    until(&agent, "/readyz", Duration::from_secs(5), |s, _| s == 200).await;
    let sent = Instant::now();
    let ok = Command::new("kill")
        .args(["-TERM", &agent.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    until(&agent, "/readyz", Duration::from_millis(500), |s, _| {
        s == 503
    })
    .await;
    // Through the 1 s drain delay the app keeps answering, liveness included.
    assert_eq!(get(&agent, "/ask").await.0, 200);
    assert_eq!(get(&agent, "/healthz").await.0, 200);
    let deadline = Instant::now() + Duration::from_secs(8);
    let status = loop {
        if let Some(status) = agent.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the example did not exit after the drain"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert!(
        sent.elapsed() >= Duration::from_secs(1),
        "exited before the drain delay"
    );
}
