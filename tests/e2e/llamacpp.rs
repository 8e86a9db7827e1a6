//! llama.cpp's own server (`llama-server`, C++), as `examples/llamacpp-supervised` runs it:
//! vitals starts it, learns its slots from its `/props`, puts the gate in front of it and
//! restarts it after a crash. The example's file is run as written, less the paths of the
//! binary and the model, the gate's port, and `max_concurrent = "auto"` in place of its 4.

use std::time::{Duration, Instant};

use vitals_test_util::{llama_server, tiny_model, VitalsProcess};

use crate::{bin, client, expect_status_within, metric};

/// The pid of llama-server's `n`th start, from vitals' log.
fn nth_start(v: &VitalsProcess, n: usize, within: Duration) -> i32 {
    crate::supervisor::nth_start(v, "llama", n, within).0
}

/// A chat completion through the gate: 200 and an answer, streamed or not.
async fn complete(gate: &str, stream: bool) -> (reqwest::StatusCode, String, String) {
    let answer = client()
        .post(format!("{gate}/v1/chat/completions"))
        .json(&serde_json::json!({
            "messages": [{"role": "user", "content": "Say ready."}],
            "max_tokens": 4,
            "stream": stream,
        }))
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let kind = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, kind, answer.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_supervised_example_runs_llama_server_behind_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let gate_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/llamacpp-supervised/health.toml"),
    )
    .unwrap();
    let mut config = example.clone();
    for (from, to) in [
        (
            "\"/usr/local/bin/llama-server\"",
            format!("{:?}", llama_server().display().to_string()),
        ),
        (
            "\"/models/model.gguf\"",
            format!("{:?}", model.display().to_string()),
        ),
        (
            "listen = \"127.0.0.1:8081\"",
            format!("listen = \"127.0.0.1:{gate_port}\""),
        ),
        (
            "max_concurrent = 4 ",
            "max_concurrent = \"auto\" ".to_owned(),
        ),
    ] {
        assert!(config.contains(from), "the example no longer has {from}");
        config = config.replace(from, &to);
    }
    let v = VitalsProcess::start(&bin(), &config, &[]);
    let pid = nth_start(&v, 1, Duration::from_secs(10));
    expect_status_within(&v.url("/readyz"), 200, Duration::from_secs(120)).await;

    // "auto" asked the real server's /props: its slots are the example's --parallel 4.
    assert_eq!(metric(&v, "vitals_gate_concurrency_limit").await, 4.0);
    let gate = format!("http://127.0.0.1:{gate_port}");
    let (status, kind, text) = complete(&gate, false).await;
    assert_eq!(status, 200, "{text}");
    assert!(kind.starts_with("application/json"), "{kind}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(json["choices"][0]["message"].is_object(), "{json}");
    // Streamed: server-sent events through the gate, to llama.cpp's end marker.
    let (status, kind, text) = complete(&gate, true).await;
    assert_eq!(status, 200, "{text}");
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    assert!(text.starts_with("data: "), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(
        metric(&v, r#"vitals_gate_requests_total{outcome="ok"}"#).await,
        2.0
    );

    // Requests llama.cpp refuses (a negative max_tokens, a prompt past the context) get its 400,
    // which is the client's fault, not the server's: more of them than the breaker's threshold
    // leave the circuit closed and the instance ready.
    for body in [
        serde_json::json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}),
        serde_json::json!({"messages": [{"role": "user", "content": "word ".repeat(5000)}]}),
        serde_json::json!({"messages": "not a list"}),
    ] {
        for _ in 0..2 {
            let answer = client()
                .post(format!("{gate}/v1/chat/completions"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 400, "{}", answer.text().await.unwrap());
        }
    }
    assert_eq!(metric(&v, "vitals_gate_circuit_state").await, 0.0);
    assert_eq!(crate::status(&v.url("/readyz")).await, 200);

    // A crash: not ready (never not live) until the server is back; the gate follows it.
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    expect_status_within(&v.url("/readyz"), 503, Duration::from_secs(5)).await;
    assert_eq!(crate::status(&v.url("/healthz")).await, 200);
    let again = nth_start(&v, 2, Duration::from_secs(10));
    assert_ne!(again, pid);
    expect_status_within(&v.url("/readyz"), 200, Duration::from_secs(120)).await;
    let (status, _, text) = complete(&gate, false).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        metric(
            &v,
            r#"vitals_process_restarts_total{process="llama",reason="exited"}"#
        )
        .await,
        1.0
    );
}

/// llama-server on a free loopback port with `args`, killed on drop.
struct LlamaServer {
    child: std::process::Child,
    port: u16,
}

impl LlamaServer {
    async fn start(model: &std::path::Path, args: &[&str]) -> LlamaServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(llama_server())
            .arg("-m")
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut server = LlamaServer { child, port };
        // Refused until it listens, 503 while it loads the model.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let health = client()
                .get(format!("http://127.0.0.1:{port}/health"))
                .send()
                .await;
            if health.is_ok_and(|h| h.status() == 200) {
                return server;
            }
            assert!(
                server.child.try_wait().unwrap().is_none() && Instant::now() < deadline,
                "llama-server {args:?} did not become healthy"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `examples/llamacpp-slow-load` as written (less the server's port) against a real
/// llama-server named `local`: its semantic check asks for an answer and validates it. Held to
/// answer "Ready." by a grammar, the tiny model passes and the instance is ready; free to answer
/// as its random weights do, it fails the check, with the answer quoted in the reason.
#[tokio::test(flavor = "multi_thread")]
async fn the_slow_load_example_validates_a_real_llama_servers_answer() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/llamacpp-slow-load/health.toml"),
    )
    .unwrap();
    assert!(example.contains("base_url = \"http://127.0.0.1:8081/v1\""));
    for (args, ready, says) in [
        (
            vec!["--alias", "local", "--grammar", "root ::= \"Ready.\""],
            200,
            "[+]llama ok",
        ),
        (
            vec!["--alias", "local"],
            503,
            "[-]llama failed: the answer does not match /(?i)ready/",
        ),
    ] {
        let server = LlamaServer::start(&model, &args).await;
        let config = example.replace(
            "http://127.0.0.1:8081/v1",
            &format!("http://127.0.0.1:{}/v1", server.port),
        );
        let v = VitalsProcess::start(&bin(), &config, &[]);
        let verbose =
            crate::expect_body_within(&v.url("/readyz?verbose"), says, Duration::from_secs(30))
                .await;
        assert_eq!(crate::status(&v.url("/readyz")).await, ready, "{verbose}");
    }
}

/// llama-server started with `--api-key` answers `/props` only with the key, which the gate does
/// not hold: `max_concurrent = "auto"` stops at once and says so, with the fix.
#[tokio::test(flavor = "multi_thread")]
async fn auto_before_a_llama_server_with_an_api_key_says_why_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let server = LlamaServer::start(&model, &["--api-key", "sk-local-test-key"]).await;
    let addr = format!("127.0.0.1:{}", server.port);
    let (out, took) = tokio::task::spawn_blocking(move || {
        crate::gate::auto_stops_with_the_key_and_the_fix(addr, "60s")
    })
    .await
    .unwrap();
    assert!(took < Duration::from_secs(10), "stopped after {took:?}");
    assert!(
        out.contains("answered 401 Unauthorized") && out.contains("--api-key"),
        "{out}"
    );
    assert!(!out.contains("sk-local-test-key"), "{out}");
}
