//! Each example's Kubernetes render, run by `podman kube play` with the vitals image and a
//! stand-in agent: the configuration reaches vitals, the probes kubelet would send pass or fail
//! as promised, and an outage takes replicas out of traffic without restarting anything.
//!
//! Needs podman (rootful, runc, cgroupfs): scripts/setup-test-deps installs and configures it.

// Real containers run on the wall clock.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use serde_yaml_ng::Value;

/// From a Kubernetes render's files: its Deployment, and the documents podman plays
/// (Deployments, Pods and ConfigMaps; a Service has nothing to run).
fn deployment_and_played(files: &[(String, String)]) -> (Value, Vec<Value>) {
    let (_, yaml) = files
        .iter()
        .find(|(n, _)| n == "deployment.yaml")
        .expect("deployment.yaml");
    let all = docs(yaml);
    let deployment = all
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment")
        .clone();
    let played = all.into_iter().filter(|d| d["kind"] != "Service").collect();
    (deployment, played)
}

/// The rendered Deployment (with its ConfigMap and Service), and the documents to play: the
/// same, with the stand-in agent, no host ports and `extra` applied to the Deployment.
fn rendered(
    example: &str,
    agent_env: &[(&str, &str)],
    extra: impl Fn(&mut Value),
) -> (Value, Vec<Value>) {
    let (deployment, mut played) = deployment_and_played(&render(example, "kubernetes", &[]));
    for d in played.iter_mut().filter(|d| d["kind"] == "Deployment") {
        stand_in_for_agent(d, example, agent_env);
        strip_ports(d);
        extra(d);
    }
    (deployment, played)
}

/// `example` rendered with `--layout entrypoint` in `image` (vitals running the stand-in agent):
/// the rendered Deployment, and the documents to play, one replica with the stand-in's settings
/// and no host ports.
fn rendered_entrypoint(example: &str, image: &str) -> (Value, Vec<Value>) {
    let (deployment, mut played) = deployment_and_played(&render(
        example,
        "kubernetes",
        &[
            "--layout",
            "entrypoint",
            "--image",
            image,
            "--",
            "/usr/local/bin/agent-standin",
        ],
    ));
    for d in played.iter_mut().filter(|d| d["kind"] == "Deployment") {
        // The stand-in's own settings, beside what the render put there.
        let c = &mut d["spec"]["template"]["spec"]["containers"][0];
        for (k, v) in [
            ("STANDIN_ROLE", "agent"),
            ("AGENT_PORT", "8000"),
            ("VITALS_PORT", "8080"),
        ] {
            let var: Value =
                serde_yaml_ng::from_str(&format!("{{name: {k}, value: \"{v}\"}}")).unwrap();
            match c["env"].as_sequence_mut() {
                Some(env) => env.push(var),
                None => c["env"] = Value::Sequence(vec![var]),
            }
        }
        strip_ports(d);
        d["spec"]["replicas"] = Value::from(1);
    }
    (deployment, played)
}

fn probe<'a>(probes: &'a [RenderedProbe], container: &str, kind: &str) -> &'a RenderedProbe {
    probes
        .iter()
        .find(|p| p.container == container && p.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} on {container}: {probes:?}"))
}

/// Every container of every pod still in its first run.
fn assert_no_restarts(played: &Played, containers: &[&str], when: &str) {
    for pod in &played.pods {
        for c in containers {
            let (restarts, _) = pod.container_state(c);
            assert_eq!(
                restarts,
                0,
                "{when}: {}-{c} restarted:\n{}",
                pod.name,
                pod.logs(c)
            );
        }
    }
}

/// python-agent: the agent beats, says it started and reports its web-search tool. Both replicas
/// start within the rendered startup window, the agent's container is watched by its own
/// heartbeat, and a tool outage leaves every replica in traffic (degraded).
#[tokio::test]
async fn python_agent_starts_is_watched_and_stays_in_traffic_when_degraded() {
    let _serial = serial().await;
    let (deployment, docs) = rendered(
        "python-agent",
        &[
            ("STANDIN_ROLE", "agent"),
            ("AGENT_PORT", "8000"),
            ("VITALS_PORT", "8080"),
        ],
        |_| {},
    );
    let probes = probes(&deployment);
    let played = Played::start(&docs, &[]);
    assert_eq!(played.pods.len(), 2, "two replicas, as rendered");

    let startup = probe(&probes, "vitals", "startupProbe");
    let window = startup.period * startup.failure_threshold;
    for pod in &played.pods {
        until(
            &pod.ip,
            startup,
            window,
            "startup within the rendered window",
            |s, _| passes(s),
        )
        .await;
        // The ConfigMap reached vitals: /status runs the example's own configuration.
        let status = get_text(&format!("http://{}:8080/status", pod.ip)).await;
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        assert_eq!(
            status["agent"]["heartbeat"],
            "required",
            "{status}\n{}\n{}",
            pod.logs("vitals"),
            podman(&[
                "inspect",
                &format!("{}-vitals", pod.name),
                "--format",
                "{{.Config.Cmd}} {{.Mounts}}"
            ])
            .stdout
            .iter()
            .map(|b| *b as char)
            .collect::<String>()
        );
        assert_eq!(status["signals"][0]["name"], "web-search", "{status}");
    }

    let agent_live = probe(&probes, "python-agent", "livenessProbe");
    let vitals_live = probe(&probes, "vitals", "livenessProbe");
    let ready = probe(&probes, "vitals", "readinessProbe");
    assert_eq!(agent_live.path, "/healthz/agent");
    assert_eq!(vitals_live.path, "/healthz/vitals");
    let (pod0, pod1) = (&played.pods[0], &played.pods[1]);
    for pod in &played.pods {
        assert!(passes(probe_once(&pod.ip, agent_live).await.0));
        assert!(passes(probe_once(&pod.ip, vitals_live).await.0));
        // Nothing reported yet: the non-critical tool counts as down, degraded but in traffic.
        let (s, mode) = probe_once(&pod.ip, ready).await;
        assert!(passes(s), "{s}");
        assert_eq!(mode.as_deref(), Some("degraded"));
    }

    // The agent reports its tool: ready, not degraded.
    for pod in &played.pods {
        let url = format!("http://{}:8000/control/signal/web-search/up", pod.ip);
        assert_eq!(post(&url).await, 200);
        let (s, mode) = until(&pod.ip, ready, Duration::from_secs(5), "tool up", |s, m| {
            passes(s) && m.is_none()
        })
        .await;
        assert_eq!((s, mode), (200, None));
    }

    // The tool fails everywhere: every replica stays in traffic, degraded.
    for pod in &played.pods {
        let url = format!("http://{}:8000/control/signal/web-search/down", pod.ip);
        assert_eq!(post(&url).await, 200);
        until(
            &pod.ip,
            ready,
            Duration::from_secs(5),
            "degraded, in traffic",
            |s, m| passes(s) && m == Some("degraded"),
        )
        .await;
    }

    // The agent of pod 0 hangs: its own liveness probe fails past stall_after (5s), so kubelet
    // would restart the agent's container; vitals' container and the other pod are untouched.
    assert_eq!(
        post(&format!("http://{}:8000/control/hang", pod0.ip)).await,
        200
    );
    let limit = Duration::from_secs(5) + agent_live.timeout + Duration::from_secs(3);
    until(
        &pod0.ip,
        agent_live,
        limit,
        "a hung agent fails its probe",
        |s, _| !passes(s),
    )
    .await;
    assert!(
        passes(probe_once(&pod0.ip, vitals_live).await.0),
        "vitals itself is alive"
    );
    assert!(
        passes(probe_once(&pod1.ip, agent_live).await.0),
        "the other agent beats"
    );

    assert_no_restarts(&played, &["python-agent", "vitals"], "after the outage");
}

/// tools-only: the tools live on other hosts (a "world" pod, reached by hostAliases as cluster
/// DNS would). A non-critical tool outage degrades; a critical one takes both replicas out of
/// traffic with liveness untouched and no restart; recovery puts them back.
#[tokio::test]
async fn tools_only_outage_drains_traffic_without_a_restart_and_recovers() {
    let _serial = serial().await;
    let world_doc: Value = serde_yaml_ng::from_str(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: tools-world
spec:
  containers:
  - name: world
    image: {}
    command: [/usr/local/bin/agent-standin]
    env:
    - {{name: STANDIN_ROLE, value: world}}
    - {{name: WORLD_PORTS, value: "8080,445"}}
    - {{name: CONTROL_PORT, value: "7000"}}
    securityContext:
      runAsUser: 0
"#,
        standin_image()
    ))
    .unwrap();
    let world = Played::start(&[world_doc], &[]);
    let world_ip = world.pods[0].ip.clone();

    let (deployment, docs) = rendered(
        "tools-only",
        &[
            ("STANDIN_ROLE", "agent"),
            ("AGENT_PORT", "8000"),
            ("VITALS_PORT", "8080"),
        ],
        |d| {
            d["spec"]["template"]["spec"]["hostAliases"] = serde_yaml_ng::from_str(&format!(
                "[{{ip: \"{world_ip}\", hostnames: [tickets.internal, calendar.internal, files.internal]}}]"
            ))
            .unwrap();
        },
    );
    let probes = probes(&deployment);
    let played = Played::start(&docs, &[]);
    let startup = probe(&probes, "vitals", "startupProbe");
    let live = probe(&probes, "vitals", "livenessProbe");
    let ready = probe(&probes, "vitals", "readinessProbe");
    let window = startup.period * startup.failure_threshold;
    for pod in &played.pods {
        until(&pod.ip, startup, window, "startup", |s, _| passes(s)).await;
        until(&pod.ip, ready, Duration::from_secs(10), "ready", |s, m| {
            s == 200 && m.is_none()
        })
        .await;
    }
    // A check notices within its interval (30s by default) plus its timeout.
    let notice = Duration::from_secs(30 + 2 + 5);

    // files (tcp, non-critical) goes away: degraded, still in traffic.
    assert_eq!(
        post(&format!("http://{world_ip}:7000/control/445/down")).await,
        200
    );
    for pod in &played.pods {
        until(&pod.ip, ready, notice, "degraded", |s, m| {
            passes(s) && m == Some("degraded")
        })
        .await;
    }
    // tickets (critical) goes away: every replica out of traffic, each still alive.
    assert_eq!(
        post(&format!("http://{world_ip}:7000/control/8080/down")).await,
        200
    );
    for pod in &played.pods {
        until(&pod.ip, ready, notice, "not ready", |s, _| s == 503).await;
        assert!(
            passes(probe_once(&pod.ip, live).await.0),
            "liveness never asks a dependency"
        );
        assert!(
            passes(probe_once(&pod.ip, startup).await.0),
            "started stays started"
        );
        let verbose = get_text(&format!("http://{}:8080/readyz?verbose", pod.ip)).await;
        assert!(verbose.contains("[-]tickets failed"), "{verbose}");
    }
    assert_no_restarts(&played, &["tools-only", "vitals"], "during the outage");

    // Both come back: ready again, without anyone restarting anything.
    assert_eq!(
        post(&format!("http://{world_ip}:7000/control/8080/up")).await,
        200
    );
    assert_eq!(
        post(&format!("http://{world_ip}:7000/control/445/up")).await,
        200
    );
    for pod in &played.pods {
        until(&pod.ip, ready, notice, "recovered", |s, m| {
            s == 200 && m.is_none()
        })
        .await;
    }
    assert_no_restarts(&played, &["tools-only", "vitals"], "after recovery");
}

/// The other examples, as rendered: each starts with its configuration and the secrets its
/// `*_env` keys name (vitals exits 64 without them), answers liveness, and reports its
/// unreachable dependencies (nothing outside runs here) as not ready, without restarting.
#[tokio::test]
async fn every_other_example_runs_with_its_config_and_secrets() {
    let _serial = serial().await;
    for (example, secrets, dependency) in [
        (
            "hosted-llm",
            vec![("OPENAI_API_KEY", "sk-test-not-a-real-key")],
            "llm",
        ),
        ("llamacpp-slow-load", vec![], "llama"),
        (
            "vector-stores",
            vec![("REDIS_PASSWORD", "redis-test"), ("PGPASSWORD", "pg-test")],
            "pgvector",
        ),
    ] {
        let (deployment, docs) = rendered(
            example,
            &[
                ("STANDIN_ROLE", "agent"),
                ("AGENT_PORT", "8000"),
                ("VITALS_PORT", "8080"),
            ],
            |_| {},
        );
        let probes = probes(&deployment);
        let secret_name = format!("{example}-secrets");
        let secret = (secret_name.as_str(), secrets.clone());
        let played = Played::start(
            &docs,
            if secrets.is_empty() {
                &[]
            } else {
                std::slice::from_ref(&secret)
            },
        );
        let live = probe(&probes, "vitals", "livenessProbe");
        let startup = probe(&probes, "vitals", "startupProbe");
        for pod in &played.pods {
            until(&pod.ip, live, Duration::from_secs(20), example, |s, _| {
                passes(s)
            })
            .await;
            let status = get_text(&format!("http://{}:8080/status", pod.ip)).await;
            assert!(
                status.contains(&format!("\"{dependency}\"")),
                "{example}: {status}\n{}",
                played.diagnostics()
            );
            for (_, value) in &secrets {
                assert!(!status.contains(value), "{example}: a secret in /status");
            }
            // Nothing outside is reachable: not started, so kubelet keeps it out of traffic.
            assert!(!passes(probe_once(&pod.ip, startup).await.0), "{example}");
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_no_restarts(&played, &[example, "vitals"], example);
    }
}

/// python-agent rendered with `--layout entrypoint`: one container from the agent's image (the
/// stand-in with vitals beside it), whose rendered command is vitals running the agent. The
/// ConfigMap reaches it, the rendered probes pass on vitals' port while the agent serves its
/// own, a hung agent fails liveness (kubelet restarts the container: the agent with it), and a
/// stop reaches the agent only after drain.delay, the container ending with the agent's status.
#[tokio::test]
async fn the_entrypoint_layout_runs_the_agent_under_vitals_in_one_container() {
    let _serial = serial().await;
    let (deployment, played_docs) = rendered_entrypoint("python-agent", entrypoint_image());
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
    assert_eq!(containers.len(), 1, "one container");
    let probes = probes(&deployment);
    let played = Played::start(&played_docs, &[]);
    let pod = &played.pods[0];
    let startup = probe(&probes, "python-agent", "startupProbe");
    let live = probe(&probes, "python-agent", "livenessProbe");
    let ready = probe(&probes, "python-agent", "readinessProbe");
    until(
        &pod.ip,
        startup,
        startup.period * startup.failure_threshold,
        "startup",
        |s, _| passes(s),
    )
    .await;
    assert!(passes(probe_once(&pod.ip, live).await.0));
    assert!(passes(probe_once(&pod.ip, ready).await.0));
    // The agent itself serves its port, and runs as vitals' supervised process.
    assert!(passes(
        reqwest::Client::new()
            .get(format!("http://{}:8000/", pod.ip))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    ));
    let status = get_text(&format!("http://{}:8080/status", pod.ip)).await;
    assert!(
        status.contains("\"agent\"") && status.contains("web-search"),
        "{status}"
    );

    // Its loop hangs: liveness (which includes its heartbeat here) fails, so kubelet restarts
    // the one container, the agent with it.
    assert_eq!(
        post(&format!("http://{}:8000/control/hang", pod.ip)).await,
        200
    );
    until(
        &pod.ip,
        live,
        Duration::from_secs(5) + live.timeout + Duration::from_secs(3),
        "hung",
        |s, _| !passes(s),
    )
    .await;

    // A stop: SIGTERM to vitals (the container's process); the agent keeps serving through
    // drain.delay (5s), then gets SIGTERM, and the container ends with its status (143).
    let container = format!("{}-python-agent", pod.name);
    let started = std::time::Instant::now();
    podman_ok(&["stop", "-t", "30", &container]);
    let took = started.elapsed();
    let code = podman_ok(&["inspect", &container, "--format", "{{.State.ExitCode}}"]);
    assert_eq!(
        code,
        "143",
        "the agent's status (killed by SIGTERM):\n{}",
        pod.logs("python-agent")
    );
    assert!(
        took >= Duration::from_secs(5),
        "stopped after {took:?}, before drain.delay"
    );
    let logs = pod.logs("python-agent");
    assert!(
        logs.contains("the agent") || logs.contains("stopped"),
        "{logs}"
    );
}

/// llamacpp-supervised rendered with `--layout entrypoint`, in an agent image that holds
/// llama.cpp's real `llama-server` and a model at the example's paths: vitals starts the server
/// from the example's port range and fronts it with the gate inside the pod; the rendered startup,
/// liveness and readiness probes pass once it has loaded; the gate reaches it at 127.0.0.1:8081;
/// and a crash of the server takes the pod out of traffic without failing liveness, so kubelet
/// restarts nothing, until vitals has the server back.
#[tokio::test]
async fn the_supervised_llama_example_runs_llama_server_behind_the_gate_in_the_pod() {
    let _serial = serial().await;
    let (deployment, played_docs) = rendered_entrypoint("llamacpp-supervised", llama_image());
    let probes = probes(&deployment);
    let played = Played::start(&played_docs, &[]);
    let pod = &played.pods[0];
    let name = "llamacpp-supervised";
    let startup = probe(&probes, name, "startupProbe");
    let live = probe(&probes, name, "livenessProbe");
    let ready = probe(&probes, name, "readinessProbe");
    until(
        &pod.ip,
        startup,
        startup.period * startup.failure_threshold,
        "startup",
        |s, _| passes(s),
    )
    .await;
    assert!(passes(probe_once(&pod.ip, live).await.0));
    until(&pod.ip, ready, Duration::from_secs(30), "ready", |s, _| {
        passes(s)
    })
    .await;
    let status = get_text(&format!("http://{}:8080/status", pod.ip)).await;
    assert!(status.contains("\"llama\""), "{status}");

    // The agent's way to the model: the gate on the pod's loopback, to the server on whatever
    // port of the range it took (vitals' own health command is the one client in the image).
    let container = format!("{}-{name}", pod.name);
    let through_gate = || {
        podman(&[
            "exec",
            &container,
            "/usr/local/bin/vitals",
            "check",
            "http://127.0.0.1:8081/v1/models",
        ])
    };
    let out = through_gate();
    assert!(
        out.status.success(),
        "GET /v1/models through the gate: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        pod.logs(name)
    );

    // The server crashes: out of traffic, still live, and back once vitals restarted it.
    let pids = std::process::Command::new("pgrep")
        .args(["-f", "/models/model.gguf"])
        .output()
        .unwrap();
    let pids = String::from_utf8_lossy(&pids.stdout).trim().to_owned();
    assert_eq!(pids.lines().count(), 1, "one llama-server: {pids:?}");
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &pids])
        .status()
        .unwrap()
        .success());
    until(
        &pod.ip,
        ready,
        Duration::from_secs(10),
        "crashed",
        |s, _| !passes(s),
    )
    .await;
    assert!(passes(probe_once(&pod.ip, live).await.0));
    until(
        &pod.ip,
        ready,
        Duration::from_secs(60),
        "restarted",
        |s, _| passes(s),
    )
    .await;
    assert!(through_gate().status.success(), "{}", pod.logs(name));
    assert_no_restarts(&played, &[name], "after the server's crash");
}
