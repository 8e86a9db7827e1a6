//! End-to-end tests: the real `vitals` binary against real local HTTP and TCP servers.
//!
//! Every server here listens on 127.0.0.1 with a port the OS picked, except where a port must
//! be free again after a restart ([`ports_below_ephemeral`]); nothing is mocked inside
//! vitals. Timing bounds are the design's own (a failure visible within interval + timeout), with
//! a small margin for process scheduling, never a sleep that hopes.

// These tests drive real processes on the wall clock, not tokio's.
#![allow(clippy::disallowed_methods)]

mod agent;
mod alerts;
mod config;
mod dashboard;
mod drain;
#[cfg(feature = "ecs-live")]
mod ecs;
mod fleet;
mod gate;
mod hostile;
mod llamacpp;
mod llm;
mod metrics;
mod readiness;
mod render;
mod stores;
mod supervisor;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A configuration that sets only what the defaults already are, for commands that need a
/// file (an empty one is refused).
pub const DEFAULTS: &str = "[startup]\ntimeout = \"2m\"\n";

/// `count` ports in a row that are free now, the first held by a listener the caller keeps,
/// for a server that must find its port free again when it restarts.
///
/// They lie below the kernel's ephemeral range (`ip_local_port_range`), in a block of 32 that
/// no other test of this run is given. A port in that range can be taken at any moment by
/// another test's outgoing connection (`connect` picks its local port there, and the port stays
/// taken in TIME_WAIT after the close) or listener (`bind` to port 0): a server coming back on
/// it would find it in use.
pub fn ports_below_ephemeral(count: u16) -> (std::net::TcpListener, u16) {
    static NEXT_BLOCK: AtomicU32 = AtomicU32::new(0);
    const SPAN: u32 = 12_000;
    assert!((1..=32).contains(&count), "a block has 32 ports");
    let low = u32::from(*vitals_core::config::ephemeral_ports().start());
    assert!(
        low > SPAN + 1024,
        "the ephemeral port range starts at {low}: these tests need ports below it"
    );
    let blocks = SPAN / 32;
    // Two runs on one machine (two checkouts) start at different blocks.
    let seed = std::process::id() % blocks;
    for _ in 0..blocks {
        let block = (seed + NEXT_BLOCK.fetch_add(1, Ordering::Relaxed)) % blocks;
        let first = u16::try_from(low - SPAN + block * 32).expect("below 65536");
        let Ok(held) = std::net::TcpListener::bind(("127.0.0.1", first)) else {
            continue;
        };
        if (1..count).all(|k| std::net::TcpListener::bind(("127.0.0.1", first + k)).is_ok()) {
            return (held, first);
        }
    }
    panic!("no {count} free ports in a row below the ephemeral range ({low})");
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vitals"))
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The body of `GET url`.
pub async fn body(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap()
}

/// A kubelet-like prober: a fresh connection for every probe, a 1 s timeout.
pub fn prober() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
}

/// Peak resident memory of process `pid` in KiB (`VmHWM` in /proc).
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The value of one series (name and labels, as exposed) in `v`'s `/metrics`; fails the test
/// when it is not there.
pub async fn metric(v: &vitals_test_util::VitalsProcess, series: &str) -> f64 {
    let text = body(&v.url("/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// Status of `GET url`.
pub async fn status(url: &str) -> u16 {
    client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .status()
        .as_u16()
}

/// Polls `url` until it answers `want`, failing if that takes longer than `within`. This checks a
/// stated bound; it is not a retry that hides a wrong answer.
pub async fn expect_status_within(url: &str, want: u16, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = status(url).await;
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() <= within,
            "{url} still answered {got}, not {want}, after {:?} (bound {within:?})",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls `url` until its body contains `want`, failing after `within`.
pub async fn expect_body_within(url: &str, want: &str, within: Duration) -> String {
    expect_body_where(url, &format!("{want:?}"), within, |body| {
        body.contains(want)
    })
    .await
}

/// Polls `url` until `holds` is true of its body (`what` names it in the failure), failing
/// after `within`.
pub async fn expect_body_where(
    url: &str,
    what: &str,
    within: Duration,
    holds: impl Fn(&str) -> bool,
) -> String {
    let start = Instant::now();
    loop {
        let body = client()
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if holds(&body) {
            return body;
        }
        assert!(
            start.elapsed() <= within,
            "{url} never said {what} within {within:?}; last:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
