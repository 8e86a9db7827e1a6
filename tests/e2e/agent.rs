//! The agent's own health over the HTTP API, with the example Python agent
//! (`examples/python-agent/agent.py`, standard library only) as a real process beside a real
//! `vitals serve` using the example's own `health.toml`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vitals_test_util::{StubServer, VitalsProcess};

use crate::{bin, client, expect_body_within, expect_status_within, status};

fn example(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/python-agent")
        .join(file)
}

/// The Python agent, killed on drop.
struct Agent(Child);

impl Agent {
    fn start(vitals: &VitalsProcess, tool: &str, env: &[(&str, &str)]) -> Agent {
        let mut cmd = Command::new("python3");
        cmd.arg(example("agent.py"))
            .env("VITALS_URL", vitals.url(""))
            .env("TOOL_URL", tool)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Agent(cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start python3 (Debian: apt-get install python3): {e}")
        }))
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.0.id().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} failed");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config() -> String {
    std::fs::read_to_string(example("health.toml")).expect("read the example's health.toml")
}

async fn degraded(url: &str) -> (u16, bool) {
    let r = client().get(url).send().await.unwrap();
    (
        r.status().as_u16(),
        r.headers()
            .get("x-agent-mode")
            .is_some_and(|v| v == "degraded"),
    )
}

/// Polls until `/readyz` answers `want` (status, degraded), failing after `within`.
async fn expect_ready(v: &VitalsProcess, want: (u16, bool), within: Duration) {
    let start = Instant::now();
    loop {
        let got = degraded(&v.url("/readyz")).await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() <= within,
            "/readyz answered {got:?}, not {want:?}, after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn python_agent_beats_starts_and_reports_a_tool_from_real_traffic() {
    let tool = StubServer::start(200).await;
    let v = VitalsProcess::start(&bin(), &config(), &[]);
    assert_eq!(
        status(&v.url("/startupz")).await,
        503,
        "before the agent runs"
    );
    let agent = Agent::start(
        &v,
        &tool.url("/search"),
        &[
            ("WARMUP_SECONDS", "1"),
            ("BEAT_SECONDS", "0.2"),
            ("SIGNAL_TTL", "2s"),
        ],
    );
    expect_status_within(&v.url("/startupz"), 200, Duration::from_secs(10)).await;
    assert_eq!(status(&v.url("/healthz/agent")).await, 200);
    expect_ready(&v, (200, false), Duration::from_secs(3)).await;

    // The tool fails on real traffic: the agent reports it, and the instance stays in traffic,
    // degraded.
    tool.set_status(500);
    expect_ready(&v, (200, true), Duration::from_secs(3)).await;
    expect_body_within(
        &v.url("/readyz?verbose"),
        "[-]web-search failed (non-critical signal): web search answers 500",
        Duration::from_secs(1),
    )
    .await;
    tool.set_status(200);
    expect_ready(&v, (200, false), Duration::from_secs(3)).await;

    // The agent's loop stops (SIGSTOP): /healthz/agent fails within agent.stall_after (5s)
    // while /readyz keeps its own answer; and as no report comes, the signal's ttl (2s) lapses.
    agent.signal("STOP");
    let stopped = Instant::now();
    expect_ready(&v, (200, true), Duration::from_secs(4)).await;
    expect_body_within(
        &v.url("/readyz/web-search"),
        "last report expired",
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(status(&v.url("/healthz/agent")).await, 200, "not stale yet");
    expect_status_within(&v.url("/healthz/agent"), 503, Duration::from_secs(7)).await;
    let since_stop = stopped.elapsed();
    // The last beat came at most one beat (0.2 s) before the stop; stale once 5 s old.
    assert!(
        since_stop >= Duration::from_millis(4700) && since_stop <= Duration::from_millis(6500),
        "stale {since_stop:?} after the stop; agent.stall_after is 5s"
    );
    assert_eq!(
        status(&v.url("/healthz")).await,
        503,
        "heartbeat = required"
    );
    assert_eq!(
        degraded(&v.url("/readyz")).await,
        (200, true),
        "a hung agent is restarted by liveness, not drained by readiness"
    );
    let body = crate::body(&v.url("/healthz/agent")).await;
    assert!(
        body.starts_with("agent heartbeat stale: last beat "),
        "{body}"
    );

    agent.signal("CONT");
    expect_status_within(&v.url("/healthz/agent"), 200, Duration::from_secs(3)).await;
    expect_ready(&v, (200, false), Duration::from_secs(3)).await;
}

#[tokio::test]
async fn an_agent_that_never_says_started_keeps_startupz_503() {
    let tool = StubServer::start(200).await;
    let v = VitalsProcess::start(&bin(), &config(), &[]);
    let _agent = Agent::start(
        &v,
        &tool.url("/search"),
        &[("WARMUP_SECONDS", "3600"), ("BEAT_SECONDS", "0.2")],
    );
    // It beats through its (endless) warm-up, so it is alive, but never started.
    expect_status_within(&v.url("/healthz/agent"), 200, Duration::from_secs(5)).await;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(status(&v.url("/startupz")).await, 503);
        assert_eq!(status(&v.url("/readyz")).await, 503);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    expect_body_within(
        &v.url("/readyz?verbose"),
        "[-]startup pending: agent (POST /started)",
        Duration::from_secs(1),
    )
    .await;
}
