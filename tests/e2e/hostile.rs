//! Clients that misbehave must not delay the probes.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vitals_test_util::VitalsProcess;

use crate::{bin, client, status};

#[tokio::test]
async fn slowloris_and_idle_connections_are_cut_and_do_not_delay_probes() {
    let v = VitalsProcess::start(&bin(), "[server]\nheader_read_timeout = \"1s\"\n", &[]);
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(v.addr()).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    let idle = TcpStream::connect(v.addr()).await.unwrap();
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(status(&v.url("/healthz")).await, 200);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "probe delayed {:?}",
            t.elapsed()
        );
    }
    // Each slow connection is closed once the header-read timeout passes.
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let mut s = slow.pop().unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("slow client never cut")
        .unwrap_or(0);
    assert!(start.elapsed() < Duration::from_secs(3));
    let _ = n;
    let mut idle = idle;
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("idle client never cut")
        .unwrap_or(0);
    assert_eq!(n, 0, "idle connection closed without a response");
}

#[tokio::test]
async fn oversized_and_malformed_requests_are_refused() {
    let v = VitalsProcess::start(&bin(), "", &[]);
    let mut s = TcpStream::connect(v.addr()).await.unwrap();
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let _ = s.write_all(big.as_bytes()).await;
    let mut buf = vec![0u8; 256];
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );

    let mut s = TcpStream::connect(v.addr()).await.unwrap();
    s.write_all(b"\x16\x03\x01 this is not http\r\n\r\n")
        .await
        .unwrap();
    let n = s.read(&mut buf).await.unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(status(&v.url("/readyz")).await, 200);
}

#[tokio::test]
async fn at_the_cap_a_new_connection_takes_the_oldest_idle_slot() {
    let v = VitalsProcess::start(
        &bin(),
        "[server]\nheader_read_timeout = \"5s\"\nmax_connections = 4\n",
        &[],
    );
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(v.addr()).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        held.push(s);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Over the cap: the new connection is served, in the oldest slowloris's slot.
    assert_eq!(status(&v.url("/healthz")).await, 200);
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(1), held[0].read(&mut buf))
        .await
        .expect("the oldest connection was not closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    for s in &mut held[2..] {
        assert!(
            tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf))
                .await
                .is_err(),
            "a younger connection was closed too"
        );
    }
}

#[tokio::test]
async fn a_client_that_never_reads_its_answers_is_cut() {
    let v = VitalsProcess::start(&bin(), "[server]\nheader_read_timeout = \"1s\"\n", &[]);
    let mut s = TcpStream::connect(v.addr()).await.unwrap();
    // Far more answers than the socket buffers hold, never read.
    let many = b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n".repeat(20_000);
    let _ = tokio::time::timeout(Duration::from_secs(5), s.write_all(&many)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Without reading (which would unblock vitals): closed, a write meets the reset; held open,
    // writes fill the buffers and block.
    let cut = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            if s.write_all(&[b'x'; 65536]).await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(
        cut.is_ok(),
        "the connection is still open 3s after its answers stalled"
    );
    assert_eq!(status(&v.url("/healthz")).await, 200);
}

/// A resolver that never answers, in a mount namespace of vitals' own: `/etc/resolv.conf` names
/// a loopback UDP socket this test holds and never answers on.
struct HangingResolver {
    _socket: std::net::UdpSocket,
    _dir: tempfile::TempDir,
    conf: std::path::PathBuf,
}

impl HangingResolver {
    fn start() -> HangingResolver {
        let socket = std::net::UdpSocket::bind("127.83.0.1:53")
            .expect("bind 127.83.0.1:53 (the test runs as root, as CI does)");
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("resolv.conf");
        std::fs::write(
            &conf,
            "nameserver 127.83.0.1\noptions timeout:30 attempts:2\n",
        )
        .unwrap();
        HangingResolver {
            _socket: socket,
            _dir: dir,
            conf,
        }
    }

    /// `unshare` then a bind mount of the resolver's file, then exec: vitals keeps the PID.
    fn wrapper(&self) -> Vec<String> {
        vec![
            "unshare".into(),
            "--mount".into(),
            "--propagation".into(),
            "private".into(),
            "sh".into(),
            "-c".into(),
            r#"mount --bind "$0" /etc/resolv.conf && exec "$@""#.into(),
            self.conf.display().to_string(),
        ]
    }
}

#[tokio::test]
async fn a_resolver_that_never_answers_cannot_hold_the_exit_past_the_grace_period() {
    let dns = HangingResolver::start();
    let wrapper = dns.wrapper();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let config = r#"
        [drain]
        delay = "0s"
        grace = "1s"
        [startup]
        require = []
        [[dependencies]]
        name = "tool"
        kind = "http"
        url = "http://tool.vitals-test.example:8080/health"
        interval = "1s"
        timeout = "500ms"
        critical = false
        [[dependencies]]
        name = "crm"
        kind = "tcp"
        address = "crm.vitals-test.example:5432"
        interval = "1s"
        timeout = "500ms"
        critical = false
        "#;
    let mut v = VitalsProcess::start_wrapped(&wrapper, &bin(), config, &[]);
    // Lookups pile up in the resolver while checks time out; the probes do not notice.
    for want in [
        "[-]tool failed (non-critical): timed out after 500ms",
        "[-]crm failed (non-critical): timed out after 500ms",
    ] {
        crate::expect_body_within(&v.url("/readyz?verbose"), want, Duration::from_secs(5)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(status(&v.url("/healthz")).await, 200);
    let sent = Instant::now();
    v.signal("TERM");
    let exit = v
        .wait_exit(Duration::from_secs(20))
        .expect("vitals did not exit");
    let took = sent.elapsed();
    assert_eq!(exit.code(), Some(0));
    assert!(
        took <= Duration::from_millis(1800),
        "exit took {took:?} with drain.delay + drain.grace = 1s: hung lookups held it"
    );
}

#[tokio::test]
async fn refused_calls_and_a_failing_check_do_not_flood_the_logs() {
    let v = VitalsProcess::start(
        &bin(),
        r#"
        [server]
        admin_token_env = "E2E_ADMIN"
        [startup]
        require = []
        [[dependencies]]
        name = "crm"
        kind = "tcp"
        address = "127.0.0.1:9"
        interval = "1s"
        timeout = "500ms"
        critical = false
        "#,
        &[("E2E_ADMIN", "admin-token-e2e-000")],
    );
    let c = client();
    for _ in 0..1000 {
        let r = c.post(v.url("/drain")).send().await.unwrap();
        assert_eq!(r.status(), 403);
    }
    // Five failing checks of the same dependency.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let logs = v.logs();
    let refused = logs
        .iter()
        .filter(|l| l.contains("refused a call without the admin token"))
        .count();
    assert!(
        (1..=11).contains(&refused),
        "{refused} log lines for 1000 refused calls (one per power of two at most)"
    );
    assert!(
        logs.iter().any(|l| l.contains("\"refused\":512")),
        "the count is in the log: {logs:#?}"
    );
    let failed = logs.iter().filter(|l| l.contains("check failed")).count();
    assert_eq!(
        failed, 1,
        "one line when it starts failing, not one per check: {logs:#?}"
    );
    assert_eq!(status(&v.url("/healthz")).await, 200);
}

/// One hostile connection of each kind, reopened whenever vitals cuts it.
async fn hold_a_slot(
    addr: std::net::SocketAddr,
    kind: usize,
    stop: tokio_util::sync::CancellationToken,
) {
    while !stop.is_cancelled() {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        match kind % 3 {
            // Idle: connect and say nothing.
            0 => {}
            // Slowloris: half a request head, then a byte now and then.
            1 => {
                let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
            }
            // Slow reader: pipeline requests and never read the answers.
            _ => {
                let many = b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2000);
                let _ = tokio::time::timeout(Duration::from_secs(30), s.write_all(&many)).await;
            }
        }
        // Hold it until vitals closes it (a read of 0 or an error), then reopen.
        let mut buf = [0u8; 1];
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = async {
                loop {
                    match kind % 3 {
                        0 => match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        },
                        1 => {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            if s.write_all(b"X").await.is_err() {
                                return;
                            }
                        }
                        _ => {
                            // The slow reader never reads; it notices a close when a write fails.
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            if s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n").await.is_err() {
                                return;
                            }
                        }
                    }
                }
            } => {}
        }
    }
}

#[tokio::test]
async fn probes_keep_answering_while_hostile_clients_hold_every_slot() {
    let v = VitalsProcess::start(
        &bin(),
        "[server]\nmax_connections = 32\nheader_read_timeout = \"2s\"\n",
        &[],
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let mut attackers = Vec::new();
    // Twice as many hostile clients as slots: every slot is held all the time.
    for kind in 0..64 {
        attackers.push(tokio::spawn(hold_a_slot(v.addr(), kind, stop.clone())));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let prober = crate::prober();
    // 30 probes (6 s) in the suite; VITALS_SOAK_SECS=600 makes it a ten-minute soak.
    let probes = std::env::var("VITALS_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .map_or(30, |secs| (secs * 5).max(30));
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    for i in 0..probes {
        let path = ["/healthz", "/readyz", "/startupz"][i % 3];
        let t = Instant::now();
        match prober.get(v.url(path)).send().await {
            Ok(r) if r.status() == 200 => latencies.push(t.elapsed()),
            other => failures.push(format!("{path}: {other:?}")),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rss = crate::peak_rss_kib(v.pid());
    stop.cancel();
    for a in attackers {
        a.abort();
    }
    assert!(
        failures.is_empty(),
        "{} of {probes} probes failed: {failures:#?}",
        failures.len()
    );
    assert!(rss < 64 * 1024, "peak RSS {rss} KiB under attack");
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    eprintln!(
        "probe latency under slot exhaustion ({probes} probes): p50 {:?}, p99 {:?}, max {:?}; peak RSS {rss} KiB",
        p(0.5),
        p(0.99),
        latencies[latencies.len() - 1]
    );
}

/// vitals with a gate (its upstream unused), under `prlimit --nofile=SOFT:HARD`; and the gate's
/// address.
fn with_open_files(soft_hard: &str) -> (VitalsProcess, String) {
    with_open_files_under(&[], soft_hard)
}

/// [`with_open_files`], run by `wrapper` (`taskset -c 0`: on one CPU).
fn with_open_files_under(wrapper: &[&str], soft_hard: &str) -> (VitalsProcess, String) {
    let nofile = format!("--nofile={soft_hard}");
    let wrapper: Vec<&str> = wrapper
        .iter()
        .copied()
        .chain(["prlimit", &nofile, "--"])
        .collect();
    let v = VitalsProcess::start_wrapped(
        &wrapper,
        &bin(),
        "[gate]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://127.0.0.1:9\"\nmax_concurrent = 2\n",
        &[],
    );
    let gate = crate::gate::gate_addr(&v);
    (v, gate)
}

/// `/healthz` and `/readyz` answer 200 on a fresh connection (a prober's), `while_` saying what
/// holds vitals meanwhile.
async fn probes_answer(v: &VitalsProcess, while_: &str) {
    let prober = crate::prober();
    for path in ["/healthz", "/readyz"] {
        let r = prober.get(v.url(path)).send().await;
        assert!(
            r.as_ref().is_ok_and(|r| r.status() == 200),
            "{while_}: {path}: {r:?}"
        );
    }
}

/// The soft and hard open-file limits of process `pid` ("self" for this one), as
/// `/proc/PID/limits` states them (a number, or "unlimited").
fn open_file_limits(pid: &str) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("/proc/PID/limits has Max open files");
    let words: Vec<&str> = line.split_whitespace().collect();
    (words[3].to_owned(), words[4].to_owned())
}

/// Sets process `pid`'s soft open-file limit to `soft`, its hard limit kept.
fn set_soft_open_files(pid: &str, soft: &str) {
    let status = std::process::Command::new("prlimit")
        .args(["--pid", pid, &format!("--nofile={soft}:")])
        .status()
        .expect("prlimit runs (apt-get install util-linux)");
    assert!(
        status.success(),
        "prlimit --pid {pid} --nofile={soft}: {status}"
    );
}

/// No accept of vitals' failed for want of a file descriptor.
fn never_out_of_files(v: &VitalsProcess) {
    assert!(
        !v.logs().iter().any(|l| l.contains("Too many open files")),
        "{:#?}",
        v.logs()
    );
}

/// The flood tests hold hundreds of sockets each in this process: one at a time.
static FLOODS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Raises this test process's soft open-file limit to 4,096 (or its hard limit, if lower), so
/// the floods' client sockets (600 at once) and the other tests' fit beside each other on a
/// machine whose soft limit is 1,024.
fn room_for_sockets() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let (_, hard) = open_file_limits("self");
        let soft = hard.parse::<u64>().map_or(4096, |h| h.min(4096));
        set_soft_open_files(&std::process::id().to_string(), &soft.to_string());
    });
}

/// With few file descriptors (a container's `nofile` of 256 here), a flood of idle connections
/// on the gate's port or on the probe port runs into vitals' own connection cap, which closes
/// the oldest to make room, and not into the process's limit, where accepting a probe's
/// connection would fail. vitals lowers `server.max_connections` to fit the limit and says so.
#[tokio::test]
async fn a_connection_flood_never_takes_the_probes_file_descriptors() {
    let _alone = FLOODS.lock().await;
    room_for_sockets();
    let (v, gate) = with_open_files("256:256");
    assert!(
        v.logs()
            .iter()
            .any(|l| l
                .contains("server.max_connections lowered to 63 (with 2 upstream connections)")),
        "(256 files - 128 reserved - 2 to the upstream) / 2 listeners: {:#?}",
        v.logs()
    );
    let prober = crate::prober();
    for target in [
        gate.trim_start_matches("http://").to_owned(),
        v.addr().to_string(),
    ] {
        // More connections than the process may open, all held.
        let mut held = Vec::new();
        for _ in 0..300 {
            held.push(TcpStream::connect(&target).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut failures = Vec::new();
        for i in 0..10 {
            let path = ["/healthz", "/readyz"][i % 2];
            match prober.get(v.url(path)).send().await {
                Ok(r) if r.status() == 200 => {}
                other => failures.push(format!("{path}: {other:?}")),
            }
        }
        assert!(
            failures.is_empty(),
            "with 300 connections held on {target}: {failures:#?}"
        );
        drop(held);
    }
    never_out_of_files(&v);
}

/// Both listeners flooded at once, with vitals on one CPU: each accept loop at its cap waits
/// for the connection it evicted to close before it accepts the next, so a burst of accepts
/// never holds more than the cap. Without that wait, a burst on the gate's single-threaded
/// runtime and one on the probe routes' (whose evicted connections wait for the same core)
/// together went past the 256 files, and the probe listener's accept failed with `EMFILE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_on_both_listeners_at_once_never_take_the_probes_file_descriptors() {
    let _alone = FLOODS.lock().await;
    room_for_sockets();
    let (v, gate) = with_open_files_under(&["taskset", "-c", "0"], "256:256");
    let gate = gate.trim_start_matches("http://").to_owned();
    let probe = v.addr().to_string();
    // Over four times the cap of 64 on each: 600 sockets in this process at once.
    const PER_LISTENER: usize = 300;
    let flood = |target: String| {
        tokio::spawn(async move {
            let mut held = Vec::new();
            for _ in 0..PER_LISTENER {
                held.push(TcpStream::connect(&target).await.unwrap());
            }
            held
        })
    };
    for round in 0..5 {
        let (a, b) = (flood(gate.clone()), flood(probe.clone()));
        let held = (a.await.unwrap(), b.await.unwrap());
        tokio::time::sleep(Duration::from_millis(300)).await;
        probes_answer(
            &v,
            &format!("round {round}, {PER_LISTENER} connections held on each listener"),
        )
        .await;
        drop(held);
    }
    never_out_of_files(&v);
}

/// The gate's connections to its upstream come out of the same open-file budget as the two
/// listeners': with 512 files, each listener's cap is lowered so that both full, and the gate
/// holding a request in flight on every one of its connections (an upstream that never
/// answers, one connection each), still leave vitals its own files. Probes answer; no accept
/// and no connect runs out of files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_count_in_the_open_file_budget() {
    let _alone = FLOODS.lock().await;
    room_for_sockets();
    let up = vitals_test_util::StubServer::start(200).await;
    up.hang();
    let config = format!(
        "[gate]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{}\"\nmax_concurrent = 1000\nrequest_timeout = \"60s\"\n",
        up.addr()
    );
    let v =
        VitalsProcess::start_wrapped(&["prlimit", "--nofile=512:512", "--"], &bin(), &config, &[]);
    let cap: usize = v
        .logs()
        .iter()
        .find_map(|l| {
            let at = l.find("server.max_connections lowered to ")?;
            let rest = &l[at + "server.max_connections lowered to ".len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no cap lowered: {:#?}", v.logs()));
    let gate = crate::gate::gate_addr(&v)
        .trim_start_matches("http://")
        .to_owned();
    // A request in flight on each of the gate's connections: each holds an upstream socket.
    let mut in_flight = Vec::new();
    for _ in 0..cap {
        let mut s = TcpStream::connect(&gate).await.unwrap();
        s.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
            .await
            .unwrap();
        in_flight.push(s);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.requests() < cap {
        assert!(
            Instant::now() < deadline,
            "{} of {cap} requests reached the upstream: {:#?}",
            up.requests(),
            v.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the probe listener flooded past its cap.
    let mut held = Vec::new();
    for _ in 0..300 {
        held.push(TcpStream::connect(v.addr()).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    probes_answer(
        &v,
        &format!("{cap} requests in flight through the gate, 300 connections on the probe port"),
    )
    .await;
    never_out_of_files(&v);
    drop((held, in_flight));
}

/// Out of files all the same (the limit lowered under a running vitals: another process's
/// doing, or a limit set below what vitals needs), each listener says so in the log, at the
/// 1st, 2nd, 4th… failed accept, and serves again once files are free.
#[tokio::test]
async fn listeners_out_of_files_say_so_and_serve_again() {
    let up = vitals_test_util::StubServer::start(200).await;
    let config = format!(
        "[gate]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{}\"\nmax_concurrent = 2\n",
        up.addr()
    );
    let v = VitalsProcess::start(&bin(), &config, &[]);
    let gate = crate::gate::gate_addr(&v);
    let pid = v.pid().to_string();
    let (soft, _) = open_file_limits(&pid);
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    // Room for two more files: the flood's third connection finds none.
    set_soft_open_files(&pid, &(open + 2).to_string());
    // The kernel completes the connections; the gate's accepts fail on them.
    let mut flood = Vec::new();
    for _ in 0..8 {
        flood.push(TcpStream::connect(gate.trim_start_matches("http://")).await);
        flood.push(TcpStream::connect(v.addr()).await);
    }
    let said = |what: &str| {
        v.logs()
            .iter()
            .filter(|l| l.contains(what) && l.contains("Too many open files"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while said("gate: accept failed") == 0 || said("\"accept failed\"") == 0 {
        assert!(Instant::now() < deadline, "{:#?}", v.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Failing every 50 ms for a second, the probe listener logs 5 lines at most (1, 2, 4, 8, 16).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(said("\"accept failed\"") <= 5, "{:#?}", v.logs());
    drop(flood);
    set_soft_open_files(&pid, &soft);
    let r = client()
        .post(format!("{gate}/v1/completions"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:#?}", v.logs());
    assert_eq!(crate::status(&v.url("/readyz")).await, 200);
}

/// Below what two listeners need but with a higher ceiling, vitals raises its own open-file
/// limit as far as needed (2 × 1024 connections, 2 to the upstream (`max_concurrent`) and 128)
/// and keeps `server.max_connections`.
#[tokio::test]
async fn the_open_file_limit_is_raised_as_far_as_the_listeners_need() {
    let (v, _) = with_open_files("256:4096");
    let limits = open_file_limits(&v.pid().to_string());
    assert_eq!(limits, ("2178".to_owned(), "4096".to_owned()));
    assert!(
        !v.logs().iter().any(|l| l.contains("lowered")),
        "{:#?}",
        v.logs()
    );
}

/// SIGTERM: vitals drains and exits 0 within 15 s.
fn drains_and_exits_0(v: &mut VitalsProcess) {
    v.signal("TERM");
    let exit = v
        .wait_exit(Duration::from_secs(15))
        .expect("vitals exits after SIGTERM");
    assert_eq!(exit.code(), Some(0), "{exit:?}");
}

/// A reader of vitals' log that stops reading and stays (a log driver in blocking mode whose
/// destination is down: Docker's and ECS's `awslogs` during a CloudWatch outage) costs lines,
/// never probes: with four processes flooding the log, `/healthz` and `/readyz` keep answering
/// at once. When the reader reads again, the log says how many lines were dropped; SIGTERM
/// drains and exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn a_log_reader_that_stops_reading_costs_lines_not_probes() {
    // The first 3,000 bytes reach the test (the listen address is among them); then the pipe
    // stays open and nothing reads it for 8 s, so it fills in a moment; then it is read again.
    let wrapper = [
        "bash",
        "-c",
        r#"exec "$0" "$@" 2> >(head -c 3000 >&2; sleep 8; exec cat >&2)"#,
    ];
    // 20,000 lines each (the test keeps what it reads), then quiet.
    let mut config = String::new();
    for i in 0..4 {
        config += &format!(
            "[[processes]]\nname = \"flood{i}\"\ncommand = [\"sh\", \"-c\", \"n=0; while [ $n -lt 20000 ]; do echo flood {i} 0123456789012345678901234567890123456789; n=$((n+1)); done; exec sleep 600\"]\nhealth = \"none\"\ncritical = false\n"
        );
    }
    let mut v = VitalsProcess::start_wrapped(&wrapper, &bin(), &config, &[]);
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..20 {
        for path in ["/healthz", "/readyz"] {
            let r = c.get(v.url(path)).send().await;
            let status = r.as_ref().map(|r| r.status().as_u16());
            assert!(
                matches!(status, Ok(200)),
                "{path} with the log's reader stalled: {status:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let said = "dropped: the log's reader did not keep up";
    let deadline = Instant::now() + Duration::from_secs(20);
    while !v.logs().iter().any(|l| l.contains(said)) {
        assert!(
            Instant::now() < deadline,
            "no word of the dropped lines in {} lines",
            v.logs().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drains_and_exits_0(&mut v);
}

/// The reader of vitals' log going away (a log shipper restarting, `vitals serve 2>&1 | head`)
/// loses the lines written after it, not vitals: it keeps serving, and drains and exits 0 on
/// SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn a_log_reader_that_goes_away_loses_lines_not_vitals() {
    // vitals' stderr goes to a reader that takes 3,000 bytes and leaves; a process that exits
    // at once, restarted every 100 ms, keeps vitals logging after that.
    let wrapper = ["bash", "-c", r#"exec "$0" "$@" 2> >(head -c 3000 >&2)"#];
    let config = "[[processes]]\nname = \"flaky\"\ncommand = [\"sh\", \"-c\", \"exit 3\"]\ncritical = false\n[processes.backoff]\ninitial = \"100ms\"\nmax = \"100ms\"\n";
    let mut v = VitalsProcess::start_wrapped(&wrapper, &bin(), config, &[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        v.logs().iter().any(|l| l.contains("flaky")),
        "{:#?}",
        v.logs()
    );
    for _ in 0..10 {
        assert_eq!(status(&v.url("/healthz")).await, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drains_and_exits_0(&mut v);
}
