//! `vitals render` and `vitals check` as a user runs them.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use vitals_test_util::{HangingTcp, StubServer};

use crate::{bin, DEFAULTS};

fn vitals(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `vitals render PLATFORMS --config CFG --out OUT`.
pub(crate) fn render_to(platforms: &str, cfg: &str, out: &Path) -> Output {
    vitals(&[
        "render",
        platforms,
        "--config",
        cfg,
        "--out",
        out.to_str().unwrap(),
    ])
}

pub(crate) fn config(dir: &Path, toml: &str) -> String {
    let path = dir.join("health.toml");
    std::fs::write(&path, toml).unwrap();
    path.display().to_string()
}

#[test]
fn render_one_platform_prints_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "[startup]\ntimeout = \"60s\"\n");
    let out = vitals(&[
        "render",
        "kubernetes",
        "--config",
        &cfg,
        "--name",
        "planner",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("name: planner"),
        "{yaml}"
    );
    // 60s budget / 5s period = 12 periods; the first probe is at t = 0, so 13 probes.
    assert!(yaml.contains("failureThreshold: 13"), "{yaml}");
}

#[test]
fn render_all_writes_each_platform_folder() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), DEFAULTS);
    let out_dir = dir.path().join("out");
    let out = render_to("all", &cfg, &out_dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for f in [
        "kubernetes/deployment.yaml",
        "nomad/agent.nomad.hcl",
        "nomad/agent.json",
        "ecs/task-definition.json",
        "ecs/target-group.json",
        "ecs/service.json",
        "cloudrun/service.yaml",
        "alerts/vitals-alerts.yml",
        "alerts/vitals-alerts_test.yml",
        "dashboard/vitals-dashboard.json",
    ] {
        assert!(out_dir.join(f).is_file(), "missing {f}");
    }
    assert!(
        text(&out.stderr).contains("note: cloudrun:"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_refused_setting_exits_64_names_key_and_fix_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[probes]\nliveness = { period = \"10s\", timeout = \"2s\", failure_threshold = 24 }\n",
    );
    let out_dir = dir.path().join("out");
    let out = render_to("all", &cfg, &out_dir);
    assert_eq!(out.status.code(), Some(64));
    let err = text(&out.stderr);
    assert!(
        err.contains("ecs: healthCheck.retries = 24 exceeds 10 (from probes.liveness.failure_threshold); lower it or raise probes.liveness.period"),
        "{err}"
    );
    assert!(err.contains("nothing was written"), "{err}");
    assert!(!out_dir.exists(), "a refused render must not leave files");
}

/// An empty file renders nothing: the platform would deliver it to `serve`, which refuses an
/// empty `--config` file, and every replica would crash-loop.
#[test]
fn an_empty_config_file_is_refused_before_anything_is_rendered() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "\n  \n");
    let out_dir = dir.path().join("out");
    let out = render_to("kubernetes", &cfg, &out_dir);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("is empty"), "{err}");
    assert!(!out_dir.exists(), "a refused render must not leave files");
}

#[test]
fn render_all_without_out_says_what_to_pass() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), DEFAULTS);
    let out = vitals(&["render", "all", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("pass --out DIR"));
}

#[test]
fn render_needs_no_secrets_in_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[[dependencies]]\nname = \"llm\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\nheaders_env = { Authorization = \"NOT_SET_ON_THIS_MACHINE_E2E\" }\n",
    );
    let out = vitals(&["render", "nomad", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn check_exits_0_on_2xx_and_3xx_and_1_otherwise_with_a_reason() {
    let stub = StubServer::start(200).await;
    let url = stub.url("/healthz");
    let run = |url: String| tokio::task::spawn_blocking(move || vitals(&["check", &url]));

    let out = run(url.clone()).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "a passing check is silent");

    stub.set_status(302);
    assert_eq!(run(url.clone()).await.unwrap().status.code(), Some(0));

    stub.set_status(503);
    let out = run(url.clone()).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("answered 503"), "{err}");
}

#[test]
fn check_reports_a_refused_connection() {
    // Bind, then close: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = vitals(&["check", &format!("http://127.0.0.1:{port}/healthz")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot connect"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_gives_up_on_a_server_that_never_answers() {
    let hang = HangingTcp::start().await;
    let url = hang.url("/healthz");
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || vitals(&["check", &url, "--timeout", "300ms"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("timed out after 300ms"),
        "{}",
        text(&out.stderr)
    );
    // The bound under test is the command's own timeout; the margin covers process start.
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn check_refuses_https_with_the_reason() {
    let out = vitals(&["check", "https://127.0.0.1:1/healthz"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("only http://"));
}

#[test]
fn check_passes_against_a_real_vitals_serve() {
    let v = vitals_test_util::VitalsProcess::start(&bin(), "", &[]);
    let out = vitals(&["check", &v.url("/healthz")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// `promtool` (Debian's prometheus package, installed by scripts/setup-test-deps).
fn promtool(args: &[&str], dir: &Path) -> Output {
    Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool not found; run scripts/setup-test-deps")
}

#[test]
fn a_hostile_job_stays_a_label_value_and_the_rules_keep_their_thresholds() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "[startup]\ntimeout = \"60s\"\n");
    let out_dir = dir.path().join("out");
    let out = vitals(&[
        "render",
        "alerts",
        "--config",
        &cfg,
        "--job",
        r#"a\" or vector(1) or x{y=""#,
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let alerts = out_dir.join("alerts");
    let rules = std::fs::read_to_string(alerts.join("vitals-alerts.yml")).unwrap();
    assert!(
        rules.contains(r#"vitals_ready{job="a\\\" or vector(1) or x{y=\""}"#),
        "{rules}"
    );
    let check = promtool(&["check", "rules", "vitals-alerts.yml"], &alerts);
    assert!(check.status.success(), "{}", text(&check.stdout));
    // The test file pins each threshold's quiet side: an injected `or vector(1)` would fire.
    let test = promtool(&["test", "rules", "vitals-alerts_test.yml"], &alerts);
    assert!(
        test.status.success(),
        "{}{}",
        text(&test.stdout),
        text(&test.stderr)
    );
}

#[test]
fn names_and_label_names_that_could_escape_their_place_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), DEFAULTS);
    let out_dir = dir.path().join("out");
    for (flag, value, says) in [
        ("--name", "../../x", "is not a name every platform takes"),
        (
            "--name",
            "agent\n# injected",
            "is not a name every platform takes",
        ),
        (
            "--name",
            "My_Agent.v2",
            "is not a name every platform takes",
        ),
        (
            "--group-by",
            "job,cluster)) or vector(1",
            "is not a Prometheus label name",
        ),
    ] {
        let out = vitals(&[
            "render",
            "all",
            "--config",
            &cfg,
            "--out",
            out_dir.to_str().unwrap(),
            flag,
            value,
        ]);
        assert_eq!(out.status.code(), Some(2), "{flag} {value:?}");
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
        assert!(!out_dir.exists(), "nothing is written");
        assert!(!dir.path().join("x").exists() && !Path::new("/x").exists());
    }
}

#[test]
fn probes_no_platform_can_reach_and_colliding_ports_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let loopback = config(dir.path(), "[server]\nlisten = \"127.0.0.1:8080\"\n");
    let out = vitals(&["render", "kubernetes", "--config", &loopback]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("server.listen = 127.0.0.1:8080 is loopback"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let plain = config(dir.path(), DEFAULTS);
    let out = vitals(&["render", "ecs", "--config", &plain, "--agent-port", "8080"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("agent port = 8080 is vitals' port too"),
        "{}",
        text(&out.stderr)
    );
    let out = vitals(&["render", "nomad", "--config", &plain, "--agent-port", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // Embedded, the agent serves vitals' routes on its own port: one port is the point.
    let out = vitals(&[
        "render",
        "kubernetes",
        "--config",
        &plain,
        "--layout",
        "embedded",
        "--agent-port",
        "8080",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn the_renderers_environment_does_not_change_what_is_rendered() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "[drain]\ndelay = \"5s\"\ngrace = \"20s\"\n");
    let out = Command::new(bin())
        .args(["render", "kubernetes", "--config", &cfg])
        .env("VITALS_DRAIN__DELAY", "99s")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    assert!(yaml.contains("terminationGracePeriodSeconds: 25"), "{yaml}");
    assert!(
        text(&out.stderr).contains("VITALS_DRAIN__DELAY is not read by render"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn one_platforms_refusal_blocks_only_a_render_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    // A 600s startup budget: Cloud Run's startup window is at most 240s; the others take it.
    let cfg = config(dir.path(), "[startup]\ntimeout = \"600s\"\n");
    let out_dir = dir.path().join("deploy");
    let out = render_to("all", &cfg, &out_dir);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cloudrun: startupProbe"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !out_dir.exists(),
        "nothing is written when a named platform refuses"
    );
    let out = render_to("kubernetes,nomad,alerts", &cfg, &out_dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut written: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, ["alerts", "kubernetes", "nomad"]);
    let out = vitals(&["render", "kubernetes,nomad", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(64), "two platforms need --out");
}

/// A disk that fills up midway leaves no half render: every file is staged first.
#[test]
fn a_write_error_midway_leaves_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), DEFAULTS);
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    // A 32 KiB tmpfs in a mount namespace of its own holds a few of the render's files, not all.
    let script = r#"mount -t tmpfs -o size=32k tmpfs "$0" || exit 99
"$1" render all --config "$2" --out "$0/deploy" 2>&1 | tail -1
echo "files: $(find "$0/deploy" -type f 2>/dev/null | wc -l)"
echo "entries: $(ls -A "$0/deploy" 2>/dev/null | wc -l)""#;
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .arg(&mnt)
        .arg(bin())
        .arg(&cfg)
        .output()
        .expect("unshare (util-linux) runs as root, as CI does");
    let stdout = text(&out.stdout);
    assert_ne!(
        out.status.code(),
        Some(99),
        "cannot mount a tmpfs: {}",
        text(&out.stderr)
    );
    assert!(stdout.contains("nothing was written"), "{stdout}");
    assert!(
        stdout.contains("files: 0") && stdout.contains("entries: 0"),
        "{stdout}"
    );
}

/// With the agent's heartbeat required, each platform's render says what a hung agent does
/// there, and Kubernetes probes the agent's own container.
#[test]
fn a_required_agent_heartbeat_is_wired_or_explained_per_platform() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "[agent]\nheartbeat = \"required\"\n");
    let out_dir = dir.path().join("deploy");
    let out = render_to("all", &cfg, &out_dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let notes = text(&out.stderr);
    for platform in ["ecs", "cloudrun"] {
        assert!(
            notes.contains(&format!(
                "note: {platform}: with agent.heartbeat = \"required\""
            )),
            "{notes}"
        );
    }
    // Nomad: the agent's task has its own check, whose check_restart restarts that task.
    let job: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("nomad/agent.json")).unwrap())
            .unwrap();
    let agent_checks = &job["Job"]["TaskGroups"][0]["Tasks"][0]["Services"][0]["Checks"];
    assert!(
        agent_checks
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["Path"] == "/healthz/agent" && c["CheckRestart"].is_object()),
        "{agent_checks}"
    );
    let yaml = std::fs::read_to_string(out_dir.join("kubernetes/deployment.yaml")).unwrap();
    assert!(
        yaml.contains("path: /healthz/agent") && yaml.contains("path: /healthz/vitals"),
        "{yaml}"
    );
}

/// The first wave's crash loop: every render started vitals with a --config nothing put there.
/// Each platform's file now carries health.toml itself; the text each delivers, served the way
/// that platform hands it over, runs the very configuration that was rendered, with the secrets
/// its `*_env` keys name listed for the platform's secret store.
#[tokio::test]
async fn every_render_delivers_the_configuration_it_was_rendered_from() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[server]\nlisten = \"0.0.0.0:8080\"\n[[signals]]\nname = \"web-search\"\n[[dependencies]]\nname = \"llm\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\napi_key_env = \"OPENAI_API_KEY\"\ncheck = \"models\"\n";
    let cfg = config(dir.path(), toml);
    let out_dir = dir.path().join("deploy");
    let out = render_to("kubernetes,nomad,ecs,cloudrun", &cfg, &out_dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let read = |p: &str| std::fs::read_to_string(out_dir.join(p)).unwrap();

    use serde::Deserialize as _;
    let k8s: Vec<serde_yaml_ng::Value> =
        serde_yaml_ng::Deserializer::from_str(&read("kubernetes/deployment.yaml"))
            .map(|d| serde_yaml_ng::Value::deserialize(d).unwrap())
            .collect();
    let delivered_k8s = k8s[0]["data"]["health.toml"].as_str().unwrap().to_owned();
    let nomad: serde_json::Value = serde_json::from_str(&read("nomad/agent.json")).unwrap();
    let delivered_nomad = nomad["Job"]["TaskGroups"][0]["Tasks"][1]["Templates"][0]["EmbeddedTmpl"]
        .as_str()
        .unwrap()
        .to_owned();
    let ecs: serde_json::Value = serde_json::from_str(&read("ecs/task-definition.json")).unwrap();
    let delivered_ecs = ecs["containerDefinitions"][1]["environment"][0]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let run: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read("cloudrun/service.yaml")).unwrap();
    let delivered_run = run["spec"]["template"]["spec"]["containers"][1]["env"][0]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    for (platform, delivered) in [
        ("kubernetes", &delivered_k8s),
        ("nomad", &delivered_nomad),
        ("ecs", &delivered_ecs),
        ("cloudrun", &delivered_run),
    ] {
        assert_eq!(delivered, toml, "{platform}");
    }
    // Served as ECS and Cloud Run hand it over (VITALS_CONFIG_TOML), with the secret set as the
    // platform's secret store would: the rendered dependency and signal are there.
    let vitals = vitals_test_util::VitalsProcess::start_inline(
        &bin(),
        &delivered_ecs,
        &[("OPENAI_API_KEY", "sk-from-the-secret-store")],
    );
    let status = crate::body(&vitals.url("/status")).await;
    assert!(
        status.contains("\"llm\"") && status.contains("\"web-search\""),
        "{status}"
    );
    assert!(!status.contains("sk-from-the-secret-store"));
    let notes = text(&out.stderr);
    for needle in [
        "kubectl create secret generic agent-secrets --from-literal=OPENAI_API_KEY=...",
        "nomad var put nomad/jobs/agent OPENAI_API_KEY=...",
        "arn:aws:secretsmanager:REGION:ACCOUNT:secret:agent/OPENAI_API_KEY",
        "Secret Manager (agent-openai-api-key)",
    ] {
        assert!(notes.contains(needle), "{needle}: {notes}");
    }
}

/// Embedded, the agent owns its configuration: the render says it delivers none.
#[test]
fn the_embedded_layout_says_the_agent_brings_its_own_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[[dependencies]]\nname = \"llm\"\nkind = \"openai\"\nbase_url = \"https://api.example.com/v1\"\nmodel = \"m\"\napi_key_env = \"OPENAI_API_KEY\"\n",
    );
    let out = vitals(&[
        "render",
        "kubernetes",
        "--config",
        &cfg,
        "--layout",
        "embedded",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let notes = text(&out.stderr);
    assert!(
        notes.contains("the files deliver no health.toml to it and none of OPENAI_API_KEY"),
        "{notes}"
    );
    assert!(!text(&out.stdout).contains("kind: ConfigMap"));
}

/// With a gate, the render says where the agent sends its inference requests.
#[test]
fn a_gate_is_explained_where_the_agent_must_use_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[gate]\nlisten = \"127.0.0.1:8081\"\nupstream = \"http://127.0.0.1:8090\"\nmax_concurrent = 4\n",
    );
    let out = vitals(&["render", "kubernetes", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("point the agent's LLM base URL at http://127.0.0.1:8081"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !text(&out.stdout).contains("containerPort: 8081")
            && !text(&out.stdout).contains("port: 8081"),
        "no platform port for the gate"
    );
    assert!(
        !text(&out.stderr).contains("every interface"),
        "on loopback: {}",
        text(&out.stderr)
    );
    let alerts = vitals(&["render", "alerts", "--config", &cfg]);
    assert!(
        !text(&alerts.stderr).contains("base URL"),
        "only where a platform is rendered"
    );

    // On every interface, any pod of the cluster reaches the gate at the pod's IP: the note
    // says so, and how to keep it to the agent.
    let cfg = config(
        dir.path(),
        "[gate]\nlisten = \"0.0.0.0:8081\"\nupstream = \"http://127.0.0.1:8090\"\nmax_concurrent = 4\n",
    );
    let out = vitals(&["render", "kubernetes", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let notes = text(&out.stderr);
    assert!(
        notes.contains("every interface") && notes.contains("listen = \"127.0.0.1:8081\""),
        "{notes}"
    );
}

/// `--layout entrypoint` needs the agent's command after `--`, and a command needs that layout;
/// with both, the note says what the agent's image must hold, programs of [[processes]] included.
#[test]
fn the_entrypoint_layout_takes_the_agents_command_after_the_double_dash() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[[processes]]\nname = \"llama\"\ncommand = [\"/opt/llama/llama-server\", \"--port\", \"{port}\"]\nport = \"5800-5899\"\n",
    );
    let out = vitals(&[
        "render",
        "kubernetes",
        "--config",
        &cfg,
        "--layout",
        "entrypoint",
    ]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("give the agent's command after --"),
        "{}",
        text(&out.stderr)
    );
    let out = vitals(&[
        "render",
        "kubernetes",
        "--config",
        &cfg,
        "--",
        "python",
        "agent.py",
    ]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("add --layout entrypoint"),
        "{}",
        text(&out.stderr)
    );
    let out = vitals(&[
        "render",
        "kubernetes",
        "--config",
        &cfg,
        "--layout",
        "entrypoint",
        "--",
        "python",
        "agent.py",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("/opt/llama/llama-server must be in the agent's image")
            && stderr.contains("vitals runs `python agent.py` as its supervised process `agent`"),
        "{stderr}"
    );
    // Rendered for another machine: the program need not exist here.
    let out = vitals(&["render", "kubernetes", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("the image scripts/build-image builds holds vitals alone"),
        "{}",
        text(&out.stderr)
    );
}

/// A configuration with `[fleet]` renders as any other, with a note on Redis and what is shared.
#[test]
fn a_fleet_configuration_renders_with_a_note_on_redis() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[fleet]\nredis_url = \"redis://redis.internal:6379/0\"\npassword_env = \"REDIS_PASSWORD\"\n\n[[dependencies]]\nname = \"llm\"\nkind = \"openai\"\nbase_url = \"https://api.openai.com/v1\"\napi_key_env = \"OPENAI_API_KEY\"\nfleet_outage = \"degraded\"\n",
    );
    let out = vitals(&["render", "ecs", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("every replica must reach Redis at redis://redis.internal:6379/0 (password from REDIS_PASSWORD")
            && stderr.contains("llm are checked once an interval"),
        "{stderr}"
    );
    // The password's variable is a secret the task definition takes from Secrets Manager.
    assert!(
        text(&out.stdout).contains("REDIS_PASSWORD"),
        "{}",
        text(&out.stdout)
    );
    // rediss:// with a private CA: the CA file is the container's to have (and render, for
    // another machine, does not look for it here).
    let cfg = config(
        dir.path(),
        "[fleet]\nredis_url = \"rediss://redis.internal:6380/0\"\nca_file = \"/etc/vitals/redis-ca.pem\"\n",
    );
    let out = vitals(&["render", "kubernetes", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "the CA files /etc/vitals/redis-ca.pem are read in the container that runs vitals"
        ),
        "{stderr}"
    );
    // https:// with a private CA: an HTTPS check, an LLM API and the gate's upstream alike.
    let cfg = config(
        dir.path(),
        "[[dependencies]]\nname = \"search\"\nkind = \"http\"\nurl = \"https://search.internal/health\"\nca_file = \"/etc/vitals/search-ca.pem\"\n\n[[dependencies]]\nname = \"llm\"\nkind = \"openai\"\nbase_url = \"https://vllm.internal/v1\"\nca_file = \"/etc/vitals/llm-ca.pem\"\n\n[gate]\nlisten = \"0.0.0.0:9000\"\nupstream = \"https://vllm.internal\"\nmax_concurrent = 4\nca_file = \"/etc/vitals/gate-ca.pem\"\n",
    );
    let out = vitals(&["render", "kubernetes", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "the CA files /etc/vitals/search-ca.pem, /etc/vitals/llm-ca.pem, /etc/vitals/gate-ca.pem are read in the container"
        ),
        "{stderr}"
    );
}

/// Two services sharing a Redis must not share results or a budget: without `key_prefix` in the
/// file, every platform's render gives vitals `VITALS_FLEET__KEY_PREFIX=vitals:NAME`, and vitals
/// run with it keys its results so. A prefix the file sets is left alone.
#[tokio::test(flavor = "multi_thread")]
async fn each_rendered_service_gets_its_own_fleet_keys() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = "[fleet]\nredis_url = \"redis://redis.internal:6379/0\"\n\n[[dependencies]]\nname = \"llm\"\nkind = \"openai\"\nbase_url = \"https://api.openai.com/v1\"\n";
    let cfg = config(dir.path(), fleet);
    let out = dir.path().join("out");
    let r = vitals(&[
        "render",
        "all",
        "--config",
        &cfg,
        "--name",
        "checkout",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    assert!(
        text(&r.stderr).contains("under keys vitals:checkout:"),
        "{}",
        text(&r.stderr)
    );
    for platform in ["kubernetes", "nomad", "ecs", "cloudrun"] {
        let mut all = String::new();
        for f in std::fs::read_dir(out.join(platform)).unwrap() {
            all.push_str(&std::fs::read_to_string(f.unwrap().path()).unwrap());
        }
        assert!(
            all.contains("VITALS_FLEET__KEY_PREFIX") && all.contains("vitals:checkout"),
            "{platform}: {all}"
        );
    }
    // What the variable does to a running vitals.
    let v = vitals_test_util::VitalsProcess::start(
        &crate::bin(),
        fleet.replace("redis.internal:6379", "127.0.0.1:9").as_str(),
        &[("VITALS_FLEET__KEY_PREFIX", "vitals:checkout")],
    );
    let doc: serde_json::Value =
        serde_json::from_str(&crate::body(&v.url("/status")).await).unwrap();
    let key = doc["fleet"]["dependencies"][0]["key"].as_str().unwrap();
    assert!(key.starts_with("vitals:checkout:llm:"), "{doc}");

    let own = config(
        dir.path(),
        &fleet.replace("[fleet]\n", "[fleet]\nkey_prefix = \"team-a\"\n"),
    );
    let r = vitals(&[
        "render",
        "kubernetes",
        "--config",
        &own,
        "--name",
        "checkout",
    ]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    assert!(!text(&r.stdout).contains("VITALS_FLEET__KEY_PREFIX"));
    assert!(
        text(&r.stderr).contains("under keys team-a:"),
        "{}",
        text(&r.stderr)
    );
}
