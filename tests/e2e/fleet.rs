//! `[fleet]` through the binary: 1, 10 and 30 `vitals serve` processes sharing one LLM
//! dependency through the suite's real Redis make one upstream call per interval in total; a
//! Redis outage makes each check for itself and its return brings the sharing back; nothing
//! secret reaches Redis; a value that is not vitals' is ignored.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use vitals_test_util::{redis_addr, TcpProxy, VitalsProcess};

use crate::{bin, body, expect_status_within};

/// An OpenAI-compatible stand-in that counts `GET /v1/models` and can be made to fail.
struct CountingLlm {
    addr: SocketAddr,
    calls: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
}

/// The key the stand-in refuses with 401, as a provider refuses a revoked key.
const REVOKED: &str = "sk-revoked-key-0000";

impl CountingLlm {
    async fn start() -> CountingLlm {
        // A loopback dependency is the instance's own and is never shared: the stand-in
        // listens on this machine's own address, as a remote provider would.
        let ip = own_address();
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let (c, d) = (calls.clone(), down.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (c, d) = (c.clone(), d.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (c, d) = (c.clone(), d.clone());
                        async move {
                            if req.uri().path().ends_with("/models") {
                                c.fetch_add(1, Ordering::SeqCst);
                            }
                            let revoked = req
                                .headers()
                                .get("authorization")
                                .is_some_and(|v| v.to_str().unwrap_or("").contains(REVOKED));
                            let (status, text) = if revoked {
                                (401, r#"{"error":{"message":"invalid api key"}}"#)
                            } else if d.load(Ordering::SeqCst) {
                                (503, r#"{"error":{"message":"overloaded"}}"#)
                            } else {
                                (
                                    200,
                                    r#"{"object":"list","data":[{"id":"tiny","object":"model"}]}"#,
                                )
                            };
                            let mut r = Response::new(Full::new(Bytes::from(text)));
                            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            r.headers_mut()
                                .insert("content-type", "application/json".parse().unwrap());
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        CountingLlm { addr, calls, down }
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

/// This machine's address on its default route (no packet is sent: a UDP "connect" only picks
/// the source address).
fn own_address() -> std::net::IpAddr {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect("192.0.2.1:9")
        .expect("a default route (any non-loopback address)");
    let ip = s.local_addr().unwrap().ip();
    assert!(
        !ip.is_loopback() && !ip.is_unspecified(),
        "no non-loopback address: {ip}"
    );
    ip
}

fn fleet_config(llm: SocketAddr, redis: &str, prefix: &str) -> String {
    format!(
        r#"
[fleet]
redis_url = "redis://{redis}/0"
key_prefix = "{prefix}"

[[dependencies]]
name = "llm"
kind = "openai"
base_url = "http://{llm}/v1"
api_key_env = "FLEET_TEST_KEY"
interval = "2s"
timeout = "500ms"
"#
    )
}

const KEY: &str = "sk-fleet-test-secret-9f8e7d";

fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("vitals-test:{what}:{}:{nanos}", std::process::id())
}

/// Upstream calls during `intervals` whole intervals of 2 s, once every instance is ready.
async fn calls_over(llm: &CountingLlm, intervals: u64) -> u64 {
    // Start on a slot boundary (slots are aligned on the wall clock) plus a little.
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(2000 - ms % 2000 + 1000)).await;
    let before = llm.calls();
    tokio::time::sleep(Duration::from_secs(2 * intervals)).await;
    llm.calls() - before
}

/// `n` instances of `config` with `env`, each ready.
async fn ready_fleet(n: usize, config: &str, env: &[(&str, &str)]) -> Vec<VitalsProcess> {
    let fleet: Vec<VitalsProcess> = (0..n)
        .map(|_| VitalsProcess::start(&bin(), config, env))
        .collect();
    all_ready(&fleet).await;
    fleet
}

/// Waits until every instance answers `/readyz` 200.
async fn all_ready(fleet: &[VitalsProcess]) {
    for v in fleet {
        expect_status_within(&v.url("/readyz"), 200, Duration::from_secs(15)).await;
    }
}

/// An instance's `/status`.
async fn status_doc(v: &VitalsProcess) -> serde_json::Value {
    serde_json::from_str(&body(&v.url("/status")).await).unwrap()
}

async fn metric_sum(instances: &[VitalsProcess], series: &str) -> f64 {
    let mut sum = 0.0;
    for v in instances {
        sum += crate::metric(v, series).await;
    }
    sum
}

/// 1, 10 and 30 instances: one call per interval for the whole fleet (± one at a handover),
/// where each used to make its own.
#[tokio::test(flavor = "multi_thread")]
async fn one_upstream_call_per_interval_whatever_the_fleet_size() {
    let redis = redis_addr();
    for n in [1usize, 10, 30] {
        let llm = CountingLlm::start().await;
        let config = fleet_config(llm.addr, &redis, &unique("size"));
        let fleet = ready_fleet(n, &config, &[("FLEET_TEST_KEY", KEY)]).await;
        let calls = calls_over(&llm, 5).await;
        assert!(
            (4..=6).contains(&calls),
            "{n} instances made {calls} calls in 5 intervals"
        );
        let performed = metric_sum(
            &fleet,
            r#"vitals_fleet_checks_total{dependency="llm",role="performed"}"#,
        )
        .await;
        let fallback = metric_sum(
            &fleet,
            r#"vitals_fleet_checks_total{dependency="llm",role="fallback"}"#,
        )
        .await;
        assert_eq!(fallback, 0.0);
        assert!(
            performed as u64 >= calls,
            "performed {performed}, calls {calls}"
        );
        if n > 1 {
            let read = metric_sum(
                &fleet,
                r#"vitals_fleet_checks_total{dependency="llm",role="read"}"#,
            )
            .await;
            assert!(
                read >= (n as f64 - 1.0) * 4.0,
                "{n} instances read {read} results"
            );
        }
        assert_eq!(metric_sum(&fleet, "vitals_fleet_connected").await, n as f64);
        crate::metrics::promtool_check_metrics(&body(&fleet[0].url("/metrics")).await);
    }
}

/// Redis goes away: each instance checks for itself (N calls an interval), says so, and stays
/// ready; Redis comes back: one call an interval again. A performer killed mid-fleet is
/// replaced within an interval.
#[tokio::test(flavor = "multi_thread")]
async fn without_redis_each_checks_for_itself_and_sharing_resumes_when_it_returns() {
    let redis = redis_addr();
    // Cut, the proxy comes back on its port: one no other test's connection can take meanwhile.
    let (held, port) = crate::ports_below_ephemeral(1);
    drop(held);
    let proxy_addr = format!("127.0.0.1:{port}");
    let proxy = TcpProxy::start_on(&proxy_addr, &redis).await;
    let llm = CountingLlm::start().await;
    let config = fleet_config(llm.addr, &proxy_addr, &unique("outage"));
    let mut fleet = ready_fleet(3, &config, &[("FLEET_TEST_KEY", KEY)]).await;
    assert!((3..=5).contains(&calls_over(&llm, 4).await));

    proxy.cut().await;
    let calls = calls_over(&llm, 4).await;
    assert!(
        (10..=14).contains(&calls),
        "3 instances on their own made {calls} calls in 4 intervals"
    );
    for v in &fleet {
        assert_eq!(
            crate::status(&v.url("/readyz")).await,
            200,
            "Redis down is not the agent down"
        );
        let logs = v.logs().join("\n");
        assert!(logs.contains("fleet: Redis unreachable"), "{logs}");
        let doc = status_doc(v).await;
        assert_eq!(doc["fleet"]["connected"], false, "{doc}");
        assert_eq!(
            doc["fleet"]["dependencies"][0]["last_role"], "fallback",
            "{doc}"
        );
    }
    assert_eq!(metric_sum(&fleet, "vitals_fleet_connected").await, 0.0);

    let back = TcpProxy::start_on(&proxy_addr, &redis).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = calls_over(&llm, 4).await;
    assert!(
        (3..=5).contains(&calls),
        "after Redis returned: {calls} calls in 4 intervals"
    );
    assert_eq!(metric_sum(&fleet, "vitals_fleet_connected").await, 3.0);

    // Whoever performs now goes away: the others carry on, one call an interval.
    let mut performers = Vec::new();
    for (i, v) in fleet.iter().enumerate() {
        let n = crate::metric(
            v,
            r#"vitals_fleet_checks_total{dependency="llm",role="performed"}"#,
        )
        .await;
        performers.push((n, i));
    }
    performers.sort_by(|a, b| a.0.total_cmp(&b.0));
    let top = performers.last().unwrap().1;
    let mut gone = fleet.remove(top);
    gone.signal("KILL");
    let _ = gone.wait_exit(Duration::from_secs(5));
    let calls = calls_over(&llm, 4).await;
    assert!(
        (3..=5).contains(&calls),
        "after the performer died: {calls} calls in 4 intervals"
    );
    drop(back);
}

/// What reaches Redis carries no secret (the key, here rejected by a failing upstream whose
/// answer is echoed in the reason), and a value that is not vitals' is ignored with a warning.
#[tokio::test(flavor = "multi_thread")]
async fn nothing_secret_reaches_redis_and_foreign_values_are_ignored() {
    let redis = redis_addr();
    let llm = CountingLlm::start().await;
    let prefix = unique("secret");
    let config = fleet_config(llm.addr, &redis, &prefix);
    let v = VitalsProcess::start(&bin(), &config, &[("FLEET_TEST_KEY", KEY)]);
    expect_status_within(&v.url("/readyz"), 200, Duration::from_secs(15)).await;
    llm.down.store(true, Ordering::SeqCst);
    expect_status_within(&v.url("/readyz"), 503, Duration::from_secs(8)).await;

    let (mut conn, keys) = fleet_keys(&redis, &prefix).await;
    assert!(keys.iter().any(|k| k.ends_with(":result")), "{keys:?}");
    for k in &keys {
        let value: String = if k.ends_with(":views") {
            let all: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
                .arg(k)
                .query_async(&mut conn)
                .await
                .unwrap();
            format!("{all:?}")
        } else {
            redis::cmd("GET")
                .arg(k)
                .query_async(&mut conn)
                .await
                .unwrap()
        };
        assert!(
            !value.contains(KEY) && !value.contains(&KEY[..12]),
            "{k}: {value}"
        );
        assert!(!k.contains(KEY));
        if k.ends_with(":result") {
            let json: serde_json::Value = serde_json::from_str(&value).unwrap();
            assert_eq!(json["ok"], false, "{value}");
            assert!(json["reason"].as_str().unwrap().contains("503"), "{value}");
        }
    }

    // A value that is not vitals': another instance, started while it is there, warns and
    // never trusts it (it says "ok": the upstream is still down, and the instance says so).
    let result_key = keys
        .iter()
        .find(|k| k.ends_with(":result"))
        .unwrap()
        .clone();
    let foreign = r#"{"ok":true,"note":"not vitals"}"#;
    let _: () = redis::cmd("SET")
        .arg(&result_key)
        .arg(foreign)
        .query_async(&mut conn)
        .await
        .unwrap();
    let second = VitalsProcess::start(&bin(), &config, &[("FLEET_TEST_KEY", KEY)]);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        let _: () = redis::cmd("SET")
            .arg(&result_key)
            .arg(foreign)
            .query_async(&mut conn)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(
        crate::status(&second.url("/readyz")).await,
        200,
        "a foreign 'ok' was trusted"
    );
    let logs = second.logs().join("\n");
    assert!(logs.contains("not a vitals result; ignored"), "{logs}");
    let logs = v.logs().join("\n");
    assert!(!logs.contains(KEY));
}

/// A connection to the test Redis, and the keys the fleet under `prefix` wrote there.
async fn fleet_keys(redis: &str, prefix: &str) -> (redis::aio::MultiplexedConnection, Vec<String>) {
    let client = redis::Client::open(format!("redis://{redis}/0")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    (conn, keys)
}

/// Redis' count of the bytes it has sent its clients.
async fn redis_bytes_out(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_net_output_bytes:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// A huge value under the result's key (another program's, or a hostile one) is not read
/// whole: what an instance takes of it is bounded, so it costs neither memory nor time, and it
/// is ignored as not vitals'.
#[tokio::test(flavor = "multi_thread")]
async fn a_huge_foreign_value_is_not_read_whole() {
    let redis = redis_addr();
    let llm = CountingLlm::start().await;
    let prefix = unique("huge");
    let config = fleet_config(llm.addr, &redis, &prefix);
    let fleet = ready_fleet(2, &config, &[("FLEET_TEST_KEY", KEY)]).await;
    let (mut conn, keys) = fleet_keys(&redis, &prefix).await;
    let result_key = keys
        .into_iter()
        .find(|k| k.ends_with(":result"))
        .expect("the performer published a result");
    let huge = vec![b'x'; 8 << 20];
    let before = redis_bytes_out(&mut conn).await;
    // Kept there across three intervals: the performer's result replaces it each slot.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(7) {
        let _: () = redis::cmd("SET")
            .arg(&result_key)
            .arg(&huge[..])
            .query_async(&mut conn)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let sent = redis_bytes_out(&mut conn).await - before;
    let reads = metric_sum(
        &fleet,
        r#"vitals_fleet_checks_total{dependency="llm",role="read"}"#,
    )
    .await;
    let logs = fleet
        .iter()
        .flat_map(|v| v.logs())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        logs.contains("not a vitals result; ignored"),
        "never read: {logs}"
    );
    assert!(
        sent < 4 << 20,
        "Redis sent {sent} bytes in 7 s ({reads} reads of the fleet's result): the 8 MiB value was read whole"
    );
    all_ready(&fleet).await;
}

fn view_config(llm: SocketAddr, redis: &str, prefix: &str, outage: &str) -> String {
    format!(
        "{}fleet_outage = \"{outage}\"\n",
        fleet_config(llm, redis, prefix)
    )
}

/// The two readiness answers a fleet gives: an outage every instance sees degrades with
/// fleet_outage = "degraded" (in traffic, nothing replaced) and fails readiness with the
/// default; one instance whose own key is revoked fails alone, /readyz?scope=instance included
/// (a replacement may not have its problem), while the others stay ready.
#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_wide_outage_and_one_broken_path_get_different_answers() {
    let redis = redis_addr();
    let llm = CountingLlm::start().await;
    let degraded_cfg = view_config(llm.addr, &redis, &unique("wide-degraded"), "degraded");
    let strict_cfg = view_config(llm.addr, &redis, &unique("wide-strict"), "not-ready");
    let degraded = ready_fleet(3, &degraded_cfg, &[("FLEET_TEST_KEY", KEY)]).await;
    let strict = ready_fleet(3, &strict_cfg, &[("FLEET_TEST_KEY", KEY)]).await;
    llm.down.store(true, Ordering::SeqCst);
    for v in &degraded {
        let why = crate::expect_body_within(
            &v.url("/readyz?verbose"),
            "fleet-wide",
            Duration::from_secs(12),
        )
        .await;
        assert!(why.contains("503"), "{why}");
        let r = crate::client().get(v.url("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200, "a fleet-wide outage degrades");
        assert_eq!(r.headers()["x-agent-mode"], "degraded");
        // The fleet's view, in /status and as a metric.
        let doc = status_doc(v).await;
        assert_eq!(
            doc["fleet"]["dependencies"][0]["outage"], "fleet-wide",
            "{doc}"
        );
        assert_eq!(
            crate::metric(
                v,
                r#"vitals_fleet_outage{dependency="llm",scope="fleet-wide"}"#
            )
            .await,
            1.0
        );
    }
    for v in &strict {
        crate::expect_body_within(
            &v.url("/readyz?verbose"),
            "fleet-wide",
            Duration::from_secs(12),
        )
        .await;
        assert_eq!(
            crate::status(&v.url("/readyz")).await,
            503,
            "the default: not ready"
        );
    }
    llm.down.store(false, Ordering::SeqCst);
    for v in degraded.iter().chain(&strict) {
        expect_status_within(&v.url("/readyz"), 200, Duration::from_secs(12)).await;
    }
    drop((degraded, strict));

    // One instance's key is revoked: it alone goes not ready, for every scope.
    let cfg = view_config(llm.addr, &redis, &unique("local"), "degraded");
    let good: Vec<VitalsProcess> = (0..2)
        .map(|_| VitalsProcess::start(&bin(), &cfg, &[("FLEET_TEST_KEY", KEY)]))
        .collect();
    let broken = VitalsProcess::start(&bin(), &cfg, &[("FLEET_TEST_KEY", REVOKED)]);
    // It learns of its own path when it next checks for itself (holding the lease): within a
    // few intervals.
    let why = crate::expect_body_within(
        &broken.url("/readyz?verbose"),
        "this instance only",
        Duration::from_secs(30),
    )
    .await;
    assert!(why.contains("401"), "{why}");
    assert_eq!(crate::status(&broken.url("/readyz")).await, 503);
    let doc = status_doc(&broken).await;
    assert_eq!(
        doc["fleet"]["dependencies"][0]["outage"], "this-instance",
        "{doc}"
    );
    assert_eq!(
        crate::metric(
            &broken,
            r#"vitals_fleet_outage{dependency="llm",scope="this-instance"}"#
        )
        .await,
        1.0
    );
    assert_eq!(
        crate::status(&broken.url("/readyz?scope=instance")).await,
        503
    );
    for v in &good {
        assert_eq!(
            crate::status(&v.url("/readyz")).await,
            200,
            "{}",
            body(&v.url("/readyz?verbose")).await
        );
    }
    // And it stays so while the others' results say up (its own fresh result wins).
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        crate::status(&broken.url("/readyz")).await,
        503,
        "{}",
        body(&broken.url("/readyz?verbose")).await
    );
    for v in &good {
        assert_eq!(
            crate::status(&v.url("/readyz")).await,
            200,
            "{}\n{}",
            body(&v.url("/readyz?verbose")).await,
            body(&v.url("/status")).await
        );
    }
}

/// libfaketime, which the fleet tests preload to skew one instance's wall clock
/// (scripts/setup-test-deps installs it: apt-get install faketime).
fn faketime_lib() -> String {
    let lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    assert!(
        std::path::Path::new(lib).exists(),
        "{lib} missing: install it with apt-get install faketime (scripts/setup-test-deps does)"
    );
    lib.to_owned()
}

/// Instances whose wall clocks disagree by more than a second still make one call an interval
/// (the lease expires on Redis' clock, not theirs) and stay ready on each other's results.
#[tokio::test(flavor = "multi_thread")]
async fn clocks_a_second_apart_still_share_one_call_per_interval() {
    let redis = redis_addr();
    let llm = CountingLlm::start().await;
    let lib = faketime_lib();
    let prefix = unique("skew");
    let config = format!(
        "{}stale_after = \"10s\"\n",
        fleet_config(llm.addr, &redis, &prefix)
    );
    let fleet: Vec<VitalsProcess> = ["+1s", "+0", "-0.7s"]
        .iter()
        .map(|skew| {
            VitalsProcess::start(
                &bin(),
                &config,
                &[
                    ("FLEET_TEST_KEY", KEY),
                    ("LD_PRELOAD", lib.as_str()),
                    ("FAKETIME", skew),
                    ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
                ],
            )
        })
        .collect();
    all_ready(&fleet).await;
    let calls = calls_over(&llm, 5).await;
    assert!(
        (4..=6).contains(&calls),
        "skewed clocks: {calls} calls in 5 intervals"
    );
    for v in &fleet {
        assert_eq!(
            crate::status(&v.url("/readyz")).await,
            200,
            "{}",
            body(&v.url("/readyz?verbose")).await
        );
        let doc = status_doc(v).await;
        let age = doc["fleet"]["dependencies"][0]["result_age_seconds"]
            .as_f64()
            .unwrap();
        assert!(age < 5.0, "result age {age} s: {doc}");
    }
    // The skew was real: each instance logs SIGUSR1 (ignored) with its own clock.
    let mut skews = Vec::new();
    for v in &fleet {
        let before = v.logs().len();
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        v.signal("USR1");
        let deadline = Instant::now() + Duration::from_secs(3);
        let line = loop {
            if let Some(l) = v.logs()[before..].iter().find(|l| l.contains("SIGUSR1")) {
                break l.clone();
            }
            assert!(Instant::now() < deadline, "no SIGUSR1 line");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        let stamp = humantime::parse_rfc3339(json["timestamp"].as_str().unwrap())
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        skews.push(stamp - real);
    }
    assert!(
        skews[0] > 0.7
            && skews[0] < 1.5
            && skews[1].abs() < 0.4
            && skews[2] < -0.4
            && skews[2] > -1.2,
        "skews {skews:?}"
    );
    let _ = prefix;
}

/// `rediss://` with a private CA and a password: the fleet shares over TLS as over plain TCP
/// (one call an interval for three instances), and the Redis password shows nowhere.
#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_shares_through_a_tls_redis_with_a_private_ca() {
    let tls = vitals_test_util::TlsRedis::start();
    let llm = CountingLlm::start().await;
    let config = fleet_config(llm.addr, &tls.addr, &unique("tls")).replace(
        "redis_url = \"redis://",
        &format!(
            "password_env = \"FLEET_REDIS_PASSWORD\"\nca_file = \"{}\"\nredis_url = \"rediss://",
            tls.ca_file.display()
        ),
    );
    assert!(config.contains("rediss://"), "{config}");
    let env = [
        ("FLEET_TEST_KEY", KEY),
        ("FLEET_REDIS_PASSWORD", tls.password),
    ];
    let fleet = ready_fleet(3, &config, &env).await;
    let calls = calls_over(&llm, 4).await;
    assert!(
        (3..=5).contains(&calls),
        "3 instances over TLS made {calls} calls in 4 intervals"
    );
    assert_eq!(metric_sum(&fleet, "vitals_fleet_connected").await, 3.0);
    let read = metric_sum(
        &fleet,
        r#"vitals_fleet_checks_total{dependency="llm",role="read"}"#,
    )
    .await;
    assert!(read >= 6.0, "the others read the shared result: {read}");
    for v in &fleet {
        let status = body(&v.url("/status")).await;
        let metrics = body(&v.url("/metrics")).await;
        let logs = v.logs().join("\n");
        for text in [&status, &metrics, &logs] {
            assert!(!text.contains(tls.password), "{text}");
            assert!(!text.contains(KEY), "{text}");
        }
    }
}

/// `max_probes_per_hour` is the fleet's: every call is counted in Redis per hour, and once the
/// hour has no room beyond the performer's slots, an outage costs one call an interval (no
/// confirmations) instead of three, and recovery still brings every instance back.
#[tokio::test(flavor = "multi_thread")]
async fn with_the_hours_budget_spent_an_outage_costs_one_call_an_interval() {
    let redis = redis_addr();
    let llm = CountingLlm::start().await;
    let prefix = unique("budget");
    // 1800 an hour fits the 2 s interval exactly.
    let config = format!(
        "{}max_probes_per_hour = 1800\n",
        fleet_config(llm.addr, &redis, &prefix)
    );
    let fleet = ready_fleet(3, &config, &[("FLEET_TEST_KEY", KEY)]).await;
    let client = redis::Client::open(format!("redis://{redis}/0")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let spent_keys = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        let prefix = prefix.clone();
        async move {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}:*:spent:*"))
                .query_async(&mut conn)
                .await
                .unwrap();
            keys
        }
    };
    let keys = spent_keys(&mut conn).await;
    assert!(!keys.is_empty(), "the fleet counts its calls in Redis");
    let counted: u64 = redis::cmd("GET")
        .arg(&keys[keys.len() - 1])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(counted >= 1, "{counted}");

    // Spend the hour (and the next, should the test cross it).
    let key = keys[0].rsplit_once(':').unwrap().0.to_owned();
    let hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        / 3_600_000;
    for h in [hour, hour + 1] {
        let _: () = redis::cmd("SET")
            .arg(format!("{key}:{h}"))
            .arg(1800)
            .arg("EX")
            .arg(7200)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    llm.down.store(true, Ordering::SeqCst);
    for v in &fleet {
        expect_status_within(&v.url("/readyz"), 503, Duration::from_secs(12)).await;
    }
    let calls = calls_over(&llm, 4).await;
    assert!(
        (3..=5).contains(&calls),
        "an outage on a spent budget made {calls} calls in 4 intervals"
    );
    assert!(
        fleet
            .iter()
            .any(|v| v.logs().join("\n").contains("probe budget has no room")),
        "someone says why it does not confirm"
    );
    llm.down.store(false, Ordering::SeqCst);
    for v in &fleet {
        expect_status_within(&v.url("/readyz"), 200, Duration::from_secs(12)).await;
    }
}
