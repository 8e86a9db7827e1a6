//! `[[processes]]` and entrypoint mode through the binary: the real llama-cpp-python server as a
//! managed process (a port from a range, kill -9, SIGSTOP, a taken port), a Python stand-in
//! agent under `vitals serve -- CMD`, and a vitals killed by SIGKILL taking its children along.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use vitals_test_util::{llm_python, tiny_model, VitalsProcess};

use crate::{bin, body, client, expect_body_within, expect_status_within, metric, status};

/// Every `started` log line of process `name`: (pid, port).
fn starts(v: &VitalsProcess, name: &str) -> Vec<(i32, Option<u16>)> {
    v.logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|j| j["message"] == "started" && j["process"] == name)
        .map(|j| {
            (
                j["pid"].as_i64().unwrap() as i32,
                j["port"].as_u64().map(|p| p as u16),
            )
        })
        .collect()
}

/// Waits until process `name` has started `n` times; returns the last start.
pub(crate) fn nth_start(
    v: &VitalsProcess,
    name: &str,
    n: usize,
    within: Duration,
) -> (i32, Option<u16>) {
    let deadline = Instant::now() + within;
    loop {
        let s = starts(v, name);
        if s.len() >= n {
            return s[n - 1];
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not start {n} times within {within:?}: {:#?}",
            v.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(pid: i32, signal: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// A range for a process whose first port is taken: a port held by a listener the caller
/// keeps, with the 20 after it free ([`crate::ports_below_ephemeral`]).
fn range_with_first_taken() -> (TcpListener, u16) {
    crate::ports_below_ephemeral(21)
}

fn llama_config(model: &std::path::Path, port: &str, extra: &str) -> String {
    let py = llm_python();
    format!(
        r#"
[startup]
timeout = "90s"

[[processes]]
name = "llama"
command = ["{py}", "-m", "llama_cpp.server", "--model", "{model}", "--model_alias", "tiny", "--host", "127.0.0.1", "--port", "{{port}}", "--n_ctx", "512"]
port = {port}
health = "/v1/models"
interval = "1s"
timeout = "500ms"
failure_threshold = 2
start_timeout = "60s"
stop_timeout = "2s"
{extra}

[processes.backoff]
initial = "500ms"
max = "4s"
"#,
        py = py.display(),
        model = model.display()
    )
}

/// The real model server on a range whose first port is taken: it runs on the next one and
/// vitals is ready once it loaded; `kill -9` makes readiness 503 with the reason and it comes
/// back, counted, on its port; SIGSTOP (a hung server) fails its health check and it is
/// restarted; liveness stays 200 throughout.
#[tokio::test(flavor = "multi_thread")]
async fn a_managed_llama_server_is_started_on_a_free_port_restarted_and_followed() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let (held, first) = range_with_first_taken();
    let config = llama_config(&model, &format!("\"{first}-{}\"", first + 20), "");
    let v = VitalsProcess::start(&bin(), &config, &[]);
    assert_eq!(status(&v.url("/readyz")).await, 503, "starting");
    let (pid, port) = nth_start(&v, "llama", 1, Duration::from_secs(10));
    assert_eq!(port, Some(first + 1), "the taken first port is skipped");
    expect_status_within(&v.url("/readyz"), 200, Duration::from_secs(60)).await;
    // The process really serves on that port.
    let models = body(&format!("http://127.0.0.1:{}/v1/models", first + 1)).await;
    assert!(models.contains("tiny"), "{models}");

    // A crash: not ready at once, with why; back after the backoff.
    kill(pid, "KILL");
    let why = expect_body_within(
        &v.url("/readyz?verbose"),
        "restarting in",
        Duration::from_secs(3),
    )
    .await;
    assert!(why.contains("killed by signal 9"), "{why}");
    assert_eq!(status(&v.url("/healthz")).await, 200);
    let (pid2, port2) = nth_start(&v, "llama", 2, Duration::from_secs(5));
    assert_ne!(pid2, pid);
    assert_eq!(
        port2,
        Some(first + 1),
        "a free port is kept across restarts"
    );
    expect_status_within(&v.url("/readyz"), 200, Duration::from_secs(60)).await;
    assert_eq!(
        metric(
            &v,
            r#"vitals_process_restarts_total{process="llama",reason="exited"}"#
        )
        .await,
        1.0
    );

    // Hung: alive, but its health check times out twice in a row: restarted.
    assert!(
        alive(pid2),
        "the process started second ({pid2}) is gone: {:#?}",
        v.logs()
    );
    kill(pid2, "STOP");
    let stopped_at = Instant::now();
    let (pid3, _) = nth_start(&v, "llama", 3, Duration::from_secs(15));
    // 2 failed checks 1 s apart, each 500 ms, then SIGTERM (a stopped process is woken to act on
    // it) within stop_timeout 2 s, then the 500 ms backoff.
    assert!(
        stopped_at.elapsed() < Duration::from_secs(8),
        "{:?}",
        stopped_at.elapsed()
    );
    assert!(!alive(pid2), "the hung process is gone");
    assert_ne!(pid3, pid2);
    expect_status_within(&v.url("/readyz"), 200, Duration::from_secs(60)).await;
    assert_eq!(
        metric(
            &v,
            r#"vitals_process_restarts_total{process="llama",reason="unhealthy"}"#
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(&v, r#"vitals_process_up{process="llama"}"#).await,
        1.0
    );
    assert!(
        metric(
            &v,
            r#"vitals_process_resident_memory_bytes{process="llama"}"#
        )
        .await
            > 1e6
    );
    assert!(metric(&v, r#"vitals_process_cpu_seconds_total{process="llama"}"#).await > 0.0);
    assert!(metric(&v, r#"vitals_process_start_time_seconds{process="llama"}"#).await > 1.7e9);
    crate::metrics::promtool_check_metrics(&body(&v.url("/metrics")).await);
    drop(held);
}

/// A fixed port another program holds: the process is not started, readiness names the holder
/// and the fix, vitals keeps serving liveness, and once the port is freed the process starts.
#[tokio::test(flavor = "multi_thread")]
async fn a_fixed_port_in_use_names_its_holder_and_the_process_starts_once_it_is_free() {
    let (held, port) = range_with_first_taken();
    let config = format!(
        r#"
[[processes]]
name = "web"
command = ["python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1"]
port = {port}
health = "/"
interval = "1s"
timeout = "500ms"
[processes.backoff]
initial = "300ms"
max = "1s"
"#
    );
    let v = VitalsProcess::start(&bin(), &config, &[]);
    let why = expect_body_within(&v.url("/readyz?verbose"), "in use", Duration::from_secs(5)).await;
    assert!(
        why.contains(&format!("listens on 127.0.0.1:{port}")) && why.contains("pid "),
        "{why}"
    );
    let logged = v.logs().join("\n");
    assert!(
        logged.contains("give processes[0].port a range"),
        "{logged}"
    );
    assert_eq!(status(&v.url("/healthz")).await, 200);
    assert!(starts(&v, "web").is_empty());
    drop(held);
    expect_status_within(&v.url("/readyz"), 200, Duration::from_secs(10)).await;
    assert_eq!(starts(&v, "web")[0].1, Some(port));
}

/// A process that exits at once every time: backoff grows to its cap, then vitals gives up,
/// readiness says why, and vitals itself stays up and serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_loop_backs_off_then_gives_up_and_vitals_stays_up() {
    let config = r#"
[[processes]]
name = "flaky"
command = ["sh", "-c", "echo failing >&2; exit 3"]
give_up_after = 3
[processes.backoff]
initial = "200ms"
max = "400ms"
"#;
    let v = VitalsProcess::start(&bin(), config, &[]);
    let why = expect_body_within(
        &v.url("/readyz?verbose"),
        "given up",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        why.contains("given up after 3 restarts in a row (give_up_after): exited with status 3"),
        "{why}"
    );
    assert_eq!(
        starts(&v, "flaky").len(),
        4,
        "the first start and 3 restarts"
    );
    // The delays the log reports: 200 ms, then doubled to the 400 ms cap.
    let delays: Vec<String> = v
        .logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|j| j["state"] == "restarting")
        .filter_map(|j| j["message"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(delays.len(), 3, "{delays:?}");
    let logged = v.logs().join("\n");
    assert!(logged.contains("failing"), "its stderr reaches the log");
    let doc: serde_json::Value = serde_json::from_str(&body(&v.url("/status")).await).unwrap();
    assert_eq!(doc["processes"][0]["name"], "flaky", "{doc}");
    assert_eq!(doc["processes"][0]["up"], false);
    assert!(
        doc["processes"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("given up after 3 restarts"),
        "{doc}"
    );
    assert_eq!(status(&v.url("/healthz")).await, 200);
    assert_eq!(status(&v.url("/readyz")).await, 503);
    assert_eq!(
        metric(
            &v,
            r#"vitals_process_restarts_total{process="flaky",reason="exited"}"#
        )
        .await,
        3.0
    );
}

/// A command that does not exist, or is not executable: exit 64 naming the key and the path,
/// from `serve` and `validate` alike; `validate --offline` (a CI lint) does not look.
#[test]
fn a_missing_or_non_executable_command_exits_64_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    for (program, says) in [
        (
            "/opt/nowhere/llama-server".to_owned(),
            "/opt/nowhere/llama-server does not exist",
        ),
        (script.display().to_string(), "is not executable"),
        ("llama-serverr".to_owned(), "llama-serverr is not in PATH"),
    ] {
        let path = dir.path().join("health.toml");
        std::fs::write(
            &path,
            format!("[[processes]]\nname = \"llama\"\ncommand = [\"{program}\"]\n"),
        )
        .unwrap();
        for args in [vec!["serve", "--listen", "127.0.0.1:0"], vec!["validate"]] {
            let out = std::process::Command::new(bin())
                .args(&args)
                .arg("--config")
                .arg(&path)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
            assert!(
                stderr.contains("processes[0].command: ") && stderr.contains(says),
                "{args:?}: {stderr}"
            );
        }
        let out = std::process::Command::new(bin())
            .args(["validate", "--offline", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = std::process::Command::new(bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--",
            "/opt/nowhere/agent",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/opt/nowhere/agent does not exist"));
}

const STANDIN_AGENT: &str = r#"
import os, signal, subprocess, sys, time
out = sys.argv[1]
# An orphan: a shell that starts a 2 s sleep and exits at once; the sleep's parent is gone,
# so it is re-parented to vitals (a subreaper), which must reap it when it ends.
subprocess.Popen(["sh", "-c", "sleep 2 & exit 0"])
def term(*_):
    with open(out, "w") as f:
        f.write(repr(time.time()))
    time.sleep(0.3)
    sys.exit(int(os.environ.get("AGENT_EXIT", "0")))
signal.signal(signal.SIGTERM, term)
print("agent up", flush=True)
while True:
    time.sleep(0.05)
"#;

/// The children of `pid`: (pid, command name, state).
fn children_of(pid: u32) -> Vec<(u32, String, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let (child, comm) = head.split_once(" (")?;
            let mut f = rest.split_whitespace();
            let state = f.next()?.to_owned();
            let ppid: u32 = f.next()?.parse().ok()?;
            let child: u32 = child.trim().parse().ok()?;
            (ppid == pid).then(|| (child, comm.to_owned(), state))
        })
        .collect()
}

/// Zombie children of `pid`.
fn zombies_of(pid: u32) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let rest = stat.rsplit(')').next().unwrap_or("");
            let mut f = rest.split_whitespace();
            f.next() == Some("Z") && f.next() == Some(pid.to_string().as_str())
        })
        .collect()
}

/// Entrypoint mode: the agent runs under vitals; SIGTERM turns readiness 503 at once, the agent
/// gets SIGTERM only after drain.delay, vitals exits with the agent's status, and the orphan
/// the agent left is reaped.
#[tokio::test(flavor = "multi_thread")]
async fn entrypoint_mode_drains_then_forwards_sigterm_and_exits_with_the_agents_status() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("agent.py");
    std::fs::write(&script, STANDIN_AGENT).unwrap();
    let marker = dir.path().join("sigterm-at");
    let config = "[drain]\ndelay = \"1s\"\ngrace = \"5s\"\n";
    let mut v = VitalsProcess::start_entrypoint(
        &bin(),
        config,
        &[("AGENT_EXIT", "7")],
        &[
            "python3",
            script.to_str().unwrap(),
            marker.to_str().unwrap(),
        ],
    );
    expect_status_within(&v.url("/readyz"), 200, Duration::from_secs(5)).await;
    expect_body_within(
        &v.url("/readyz?verbose"),
        "agent ok",
        Duration::from_secs(1),
    )
    .await;
    // Its output reaches the log.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !v.logs().join("\n").contains("agent up") {
        assert!(
            Instant::now() < deadline,
            "no 'agent up' in {:#?}",
            v.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The orphan (a sleep whose parent shell exited at once) is re-parented to vitals, the
    // subreaper, not to the machine's init...
    let orphan = children_of(v.pid())
        .into_iter()
        .find(|(_, comm, _)| comm == "sleep")
        .unwrap_or_else(|| panic!("no orphaned sleep under vitals: {:?}", children_of(v.pid())));
    // ...and once it ends, nobody else waits for it: the reaper takes it once it has lingered a
    // second as a zombie.
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(orphan.0 as i32) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !zombies_of(v.pid()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(zombies_of(v.pid()), Vec::<String>::new());

    let sent = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    v.signal("TERM");
    // At once: well within the 1 s delay before the agent hears of it.
    expect_status_within(&v.url("/readyz"), 503, Duration::from_millis(300)).await;
    assert_eq!(status(&v.url("/healthz")).await, 200);
    let exit = v.wait_exit(Duration::from_secs(10)).expect("vitals exits");
    assert_eq!(exit.code(), Some(7), "the agent's status: {:#?}", v.logs());
    let got: f64 = std::fs::read_to_string(&marker).unwrap().parse().unwrap();
    assert!(
        got - sent >= 0.9,
        "the agent got SIGTERM {:.2}s after vitals, before drain.delay (1s)",
        got - sent
    );
}

/// The agent exiting by itself ends vitals with its status, and a managed process with it.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_exits_ends_vitals_with_its_status() {
    let config = "[[processes]]\nname = \"helper\"\ncommand = [\"sleep\", \"1000\"]\n";
    let mut v =
        VitalsProcess::start_entrypoint(&bin(), config, &[], &["sh", "-c", "sleep 1; exit 5"]);
    let (helper, _) = nth_start(&v, "helper", 1, Duration::from_secs(5));
    let exit = v.wait_exit(Duration::from_secs(10)).expect("vitals exits");
    assert_eq!(exit.code(), Some(5));
    std::thread::sleep(Duration::from_millis(100));
    assert!(!alive(helper), "the helper was stopped");
}

/// vitals killed by SIGKILL (no chance to stop anything): its children die with it.
#[tokio::test(flavor = "multi_thread")]
async fn children_die_when_vitals_is_killed_by_sigkill() {
    let config = "[[processes]]\nname = \"sleeper\"\ncommand = [\"sleep\", \"1000\"]\n";
    let mut v = VitalsProcess::start_entrypoint(&bin(), config, &[], &["sleep", "1000"]);
    let (sleeper, _) = nth_start(&v, "sleeper", 1, Duration::from_secs(5));
    let (agent, _) = nth_start(&v, "agent", 1, Duration::from_secs(5));
    assert!(alive(sleeper) && alive(agent));
    v.signal("KILL");
    v.wait_exit(Duration::from_secs(5)).expect("vitals is gone");
    let deadline = Instant::now() + Duration::from_secs(2);
    while (alive(sleeper) || alive(agent)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(sleeper), "the managed process outlived vitals");
    assert!(!alive(agent), "the agent outlived vitals");
}

const HANGING_UPSTREAM: &str = r#"
import http.server, sys, time
health = 0
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        global health
        if self.path == "/health":
            health += 1
            self.send_response(200); self.end_headers(); self.wfile.write(b"ok"); return
        if self.path == "/count":
            body = str(health).encode()
            self.send_response(200); self.end_headers(); self.wfile.write(body); return
        self.send_response(404); self.end_headers()
    def do_POST(self):
        n = int(self.headers.get("content-length", 0)); self.rfile.read(n)
        if b"hang" in self.path.encode():
            time.sleep(3600)
        if b"slow" in self.path.encode():
            time.sleep(4)
        if b"stall" in self.path.encode():
            # HTTP/1.0: the answer runs to the connection's end, as a stream.
            self.send_response(200); self.send_header("content-type", "text/event-stream")
            self.end_headers(); self.wfile.write(b"data: {}\n\n"); self.wfile.flush()
            time.sleep(3600)
        body = b'{"choices":[{"text":"ok"}]}'
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

/// The gate in front of a managed process: requests reach it on whatever port it runs; steady
/// traffic stretches health polling. A stream the process goes silent in for stall_after is a
/// hang, and so is a request it has not begun to answer within request_timeout: each restarts
/// it. A non-streamed answer longer than stall_after (a long generation, of which nothing comes
/// before the whole) is no hang.
#[tokio::test(flavor = "multi_thread")]
async fn the_gate_follows_its_process_and_a_hang_under_traffic_restarts_it() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("upstream.py");
    std::fs::write(&script, HANGING_UPSTREAM).unwrap();
    let (held, first) = range_with_first_taken();
    let config = format!(
        r#"
[gate]
listen = "127.0.0.1:0"
process = "model"
max_concurrent = 4
queue_depth = 4
queue_timeout = "2s"
request_timeout = "6s"

[[processes]]
name = "model"
command = ["python3", "{script}", "{{port}}"]
port = "{first}-{last}"
interval = "1s"
timeout = "500ms"
stall_after = "2s"
stop_timeout = "1s"
[processes.backoff]
initial = "200ms"
"#,
        script = script.display(),
        last = first + 10
    );
    let v = VitalsProcess::start(&bin(), &config, &[]);
    expect_status_within(&v.url("/readyz"), 200, Duration::from_secs(10)).await;
    let gate = crate::gate::gate_addr(&v);
    let port = first + 1;
    let count = || async move {
        body(&format!("http://127.0.0.1:{port}/count"))
            .await
            .parse::<u32>()
            .unwrap()
    };
    // Idle: polled every second.
    let before = count().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let idle = count().await - before;
    // Busy: answers through the gate stand in for the checks.
    let before = count().await;
    let busy_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < busy_until {
        let r = client()
            .post(format!("{gate}/v1/completions"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let busy = count().await - before;
    assert!(idle >= 3, "idle: {idle} checks in 4s");
    assert!(busy < idle, "busy: {busy} checks in 4s, idle: {idle}");

    // A non-streamed answer that takes 4 s, twice stall_after: it arrives, from the same process.
    let (pid, _) = nth_start(&v, "model", 1, Duration::from_secs(1));
    let r = client()
        .post(format!("{gate}/v1/completions?slow"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a long answer is no hang");
    assert_eq!(starts(&v, "model").len(), 1, "{:#?}", v.logs());

    // A stream the process goes silent in: after stall_after it is restarted, and the client's
    // stream ends.
    let mut stream = client()
        .post(format!("{gate}/v1/completions?stall"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(stream.chunk().await.unwrap().is_some(), "the stream began");
    let (pid2, _) = nth_start(&v, "model", 2, Duration::from_secs(8));
    assert_ne!(pid2, pid);
    assert!(!alive(pid));
    // Its end: the process's connection closed (an HTTP/1.0 stream runs to that end).
    assert!(
        !matches!(stream.chunk().await, Ok(Some(_))),
        "the stream ends"
    );
    expect_status_within(&v.url("/readyz"), 200, Duration::from_secs(10)).await;

    // A request the process never begins to answer: at request_timeout the gate answers 504,
    // and the process is restarted.
    let answer = client()
        .post(format!("{gate}/v1/completions?hang"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 504);
    let (pid3, port2) = nth_start(&v, "model", 3, Duration::from_secs(4));
    assert_ne!(pid3, pid2);
    assert!(!alive(pid2));
    expect_status_within(&v.url("/readyz"), 200, Duration::from_secs(10)).await;
    assert_eq!(
        metric(
            &v,
            r#"vitals_process_restarts_total{process="model",reason="stalled"}"#
        )
        .await,
        2.0
    );
    // Requests follow the process to whatever port it runs on now.
    assert!(port2.is_some());
    let r = client()
        .post(format!("{gate}/v1/completions"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(held);
}

/// `serve` says the same as `validate` when the life of a supervised process with a fixed port
/// in the ephemeral range starts, and keeps serving. Whether the process then starts is left
/// out: its port may be held by any connection on this machine, which is the point.
#[tokio::test(flavor = "multi_thread")]
async fn a_fixed_port_in_the_ephemeral_range_is_warned_about() {
    let port = vitals_core::config::ephemeral_ports().start() + 100;
    let config = format!(
        "[[processes]]\nname = \"idle\"\ncommand = [\"sleep\", \"60\"]\nport = {port}\nhealth = \"none\"\n"
    );
    let v = VitalsProcess::start(&bin(), &config, &[]);
    let said = format!("processes[0].port {port} is in the ephemeral port range");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !v.logs().iter().any(|l| l.contains(&said)) {
        assert!(Instant::now() < deadline, "no warning in {:#?}", v.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status(&v.url("/healthz")).await, 200);
    let warned = v.logs().iter().filter(|l| l.contains(&said)).count();
    assert_eq!(warned, 1, "{:#?}", v.logs());
}
