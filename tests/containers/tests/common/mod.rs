//! The harness: podman, the two images, rendering inside the vitals image, and a prober that
//! runs a rendered Kubernetes probe as kubelet does.
//!
//! podman runs the pods (ConfigMaps, Secrets, shared pod networking, hostAliases) but cannot
//! run these probes itself: `kube play` turns an httpGet probe into `curl` run by a shell inside
//! the container, and the vitals image has neither (it is `FROM scratch`). The tests therefore
//! play kubelet's part: each rendered probe is sent from outside the pod, to the pod's address,
//! with its path, port, timeout and thresholds, and kubelet's decision (restart, out of traffic)
//! is asserted.

// Real containers run on the wall clock.
#![allow(clippy::disallowed_methods, dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_yaml_ng::Value;

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One container test at a time: pods on 2 cores, and one podman store.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// [`serial`] for tests without a runtime.
pub fn serial_blocking() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.blocking_lock()
}

/// Runs podman; a missing podman fails with the command that installs it.
pub fn podman(args: &[&str]) -> Output {
    Command::new("podman").args(args).output().unwrap_or_else(|e| {
        panic!("cannot run podman ({e}); install it: apt-get install podman runc (scripts/setup-test-deps does)")
    })
}

/// Runs podman and returns its stdout, failing the test with its stderr.
pub fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn build_image(args: &[&str]) {
    let out = Command::new(root().join("scripts/build-image"))
        .args(args)
        .output()
        .expect("scripts/build-image runs");
    assert!(
        out.status.success(),
        "scripts/build-image {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The image users deploy, built from this tree by `scripts/build-image` (the slim release
/// binary; cargo and podman make an unchanged tree quick).
pub fn vitals_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let image = format!("vitals:{}", env!("CARGO_PKG_VERSION"));
        build_image(&["--tag", &image]);
        image
    })
}

/// The stand-in agent's image (src/bin/agent-standin.rs), built the same way.
pub fn standin_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let image = "vitals-agent-standin:test".to_owned();
        build_image(&[
            "--binary",
            env!("CARGO_BIN_EXE_agent-standin"),
            "--program",
            "agent-standin",
            "--tag",
            &image,
        ]);
        image
    })
}

/// The static vitals binary [`vitals_image`] holds, as scripts/build-image built it.
fn image_vitals_binary() -> PathBuf {
    vitals_image();
    std::fs::read_dir(root().join("target/image"))
        .expect("scripts/build-image built target/image")
        .flatten()
        .map(|e| e.path().join("release/vitals"))
        .find(|p| p.exists())
        .expect("the vitals binary scripts/build-image built")
}

/// An agent image: the stand-in agent, the vitals binary of [`vitals_image`] beside it at
/// /usr/local/bin/vitals, and `more` arguments of scripts/build-image.
fn agent_image(tag: &str, more: &[&str]) -> String {
    let vitals = image_vitals_binary();
    let mut args = vec![
        "--binary",
        env!("CARGO_BIN_EXE_agent-standin"),
        "--program",
        "agent-standin",
        "--add",
        vitals.to_str().unwrap(),
        "--tag",
        tag,
    ];
    args.extend_from_slice(more);
    build_image(&args);
    tag.to_owned()
}

/// The entrypoint layout's agent image: the stand-in agent with vitals beside it.
pub fn entrypoint_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| agent_image("vitals-entrypoint-agent:test", &[]))
}

/// The supervised llama.cpp example's agent image: [`entrypoint_image`]'s stand-in and vitals,
/// with llama.cpp's `llama-server` (built by scripts/setup-test-deps) at
/// `/usr/local/bin/llama-server` and a tiny model at `/models/model.gguf`, the example's paths.
pub fn llama_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let model = vitals_test_util::tiny_model(dir.path());
        let server = vitals_test_util::llama_server();
        agent_image(
            "vitals-llama-agent:test",
            &[
                "--add",
                server.to_str().unwrap(),
                "--file",
                &format!("{}:/models/model.gguf", model.display()),
            ],
        )
    })
}

/// `vitals render PLATFORM` of `examples/NAME/health.toml`, run by the vitals image itself (as a
/// CI job would with the image it deploys); the files, by name.
pub fn render(example: &str, platform: &str, extra: &[&str]) -> Vec<(String, String)> {
    let out = tempfile::tempdir().unwrap();
    // The image runs as user 65532.
    std::fs::set_permissions(
        out.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let examples = root().join("examples").canonicalize().unwrap();
    let mut args = vec![
        "run".to_owned(),
        "--rm".into(),
        "--network=none".into(),
        "-v".into(),
        format!("{}:/examples:ro", examples.display()),
        "-v".into(),
        format!("{}:/out", out.path().display()),
        vitals_image().into(),
        "render".into(),
        platform.into(),
        "--config".into(),
        format!("/examples/{example}/health.toml"),
        "--name".into(),
        example.into(),
        "--out".into(),
        "/out".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    podman_ok(&args);
    let dir = out.path().join(platform);
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Every YAML document of `text`.
pub fn docs(text: &str) -> Vec<Value> {
    use serde::Deserialize as _;
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|d| !d.is_null())
        .collect()
}

/// A probe as rendered, for one container.
#[derive(Debug, Clone)]
pub struct RenderedProbe {
    pub container: String,
    pub kind: &'static str,
    pub path: String,
    pub port: u16,
    pub timeout: Duration,
    pub period: Duration,
    pub failure_threshold: u32,
}

/// Every probe of the Deployment's pod template, with named ports resolved as kubelet does
/// (against the container's own `ports`).
pub fn probes(deployment: &Value) -> Vec<RenderedProbe> {
    let mut out = Vec::new();
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
    for c in containers {
        for kind in ["startupProbe", "livenessProbe", "readinessProbe"] {
            let p = &c[kind];
            if p.is_null() {
                continue;
            }
            let get = &p["httpGet"];
            let port = match &get["port"] {
                Value::Number(n) => n.as_u64().unwrap() as u16,
                Value::String(name) => c["ports"]
                    .as_sequence()
                    .and_then(|ports| ports.iter().find(|q| q["name"].as_str() == Some(name)))
                    .unwrap_or_else(|| panic!("{kind}: no port named {name} on {:?}", c["name"]))
                    ["containerPort"]
                    .as_u64()
                    .unwrap() as u16,
                other => panic!("{kind}: port {other:?}"),
            };
            let secs =
                |k: &str, default: u64| Duration::from_secs(p[k].as_u64().unwrap_or(default));
            out.push(RenderedProbe {
                container: c["name"].as_str().unwrap().to_owned(),
                kind,
                path: get["path"].as_str().unwrap().to_owned(),
                port,
                timeout: secs("timeoutSeconds", 1),
                period: secs("periodSeconds", 10),
                failure_threshold: p["failureThreshold"].as_u64().unwrap_or(3) as u32,
            });
        }
    }
    out
}

/// One probe's result as kubelet counts it: 200–399 passes; anything else, a timeout or a refused
/// connection fails. Returns the status (0 when none came) and the X-Agent-Mode header.
pub async fn probe_once(ip: &str, p: &RenderedProbe) -> (u16, Option<String>) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(p.timeout)
        .build()
        .unwrap();
    match client
        .get(format!("http://{ip}:{}{}", p.port, p.path))
        .send()
        .await
    {
        Ok(r) => (
            r.status().as_u16(),
            r.headers()
                .get("x-agent-mode")
                .map(|v| v.to_str().unwrap_or("").to_owned()),
        ),
        Err(_) => (0, None),
    }
}

pub fn passes(status: u16) -> bool {
    (200..400).contains(&status)
}

/// Probes `p` every period until `want` holds for its result, for at most `within`; panics with
/// the last result otherwise.
pub async fn until(
    ip: &str,
    p: &RenderedProbe,
    within: Duration,
    what: &str,
    want: impl Fn(u16, Option<&str>) -> bool,
) -> (u16, Option<String>) {
    let deadline = Instant::now() + within;
    loop {
        let (status, mode) = probe_once(ip, p).await;
        if want(status, mode.as_deref()) {
            return (status, mode);
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {} {} on {ip}:{}{} still answers {status} (mode {mode:?}) after {within:?}",
            p.container,
            p.kind,
            p.port,
            p.path
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A pod that `podman kube play` made: its name and its address on the pod network.
#[derive(Debug, Clone)]
pub struct PlayedPod {
    pub name: String,
    pub ip: String,
}

impl PlayedPod {
    /// `(restart count, started at)` of one of its containers.
    pub fn container_state(&self, container: &str) -> (u64, String) {
        let out = podman_ok(&[
            "inspect",
            &format!("{}-{container}", self.name),
            "--format",
            "{{.RestartCount}} {{.State.StartedAt}} {{.State.Status}}",
        ]);
        let mut parts = out.splitn(2, ' ');
        let count = parts.next().unwrap().parse().unwrap();
        (count, parts.next().unwrap_or("").to_owned())
    }

    pub fn logs(&self, container: &str) -> String {
        let out = podman(&["logs", &format!("{}-{container}", self.name)]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

/// YAML played with `podman kube play`, torn down (pods, and the secrets it was given) on drop.
#[derive(Debug)]
pub struct Played {
    file: tempfile::NamedTempFile,
    secrets: Vec<String>,
    /// The volumes podman makes for the ConfigMaps (named after them): removed before and after,
    /// so no play ever mounts what an earlier one left.
    volumes: Vec<String>,
    pub pods: Vec<PlayedPod>,
}

impl Played {
    /// Plays `docs` after creating `secrets` (name → key → value) the way podman 4's kube play
    /// reads a Secret for `secretKeyRef`: a podman secret holding a JSON object of base64 values.
    pub fn start(docs: &[Value], secrets: &[(&str, Vec<(&str, &str)>)]) -> Played {
        let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        let text = docs
            .iter()
            .map(|d| serde_yaml_ng::to_string(d).unwrap())
            .collect::<Vec<_>>()
            .join("---\n");
        std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
        let mut names = Vec::new();
        for (name, pairs) in secrets {
            let _ = podman(&["secret", "rm", name]);
            let json = serde_json::Value::Object(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String(base64(v))))
                    .collect(),
            );
            let data = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(data.path(), json.to_string()).unwrap();
            podman_ok(&["secret", "create", name, data.path().to_str().unwrap()]);
            names.push(name.to_string());
        }
        let path = file.path().to_str().unwrap().to_owned();
        // A previous run killed half-way may have left the same pods.
        let _ = podman(&["kube", "down", &path]);
        let volumes: Vec<String> = docs
            .iter()
            .filter(|d| d["kind"] == "ConfigMap")
            .filter_map(|d| d["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        for v in &volumes {
            let _ = podman(&["volume", "rm", "-f", v]);
        }
        let mut played = Played {
            file,
            secrets: names,
            volumes,
            pods: Vec::new(),
        };
        // Created first, started after: podman writes each ConfigMap's files again (truncating
        // them) for every replica it creates, so a replica started while the next one is being
        // created can read an empty health.toml. Kubernetes swaps a ConfigMap volume's files
        // atomically; starting only once every replica exists keeps that guarantee here.
        let out = podman(&["kube", "play", "--start=false", &path]);
        assert!(
            out.status.success(),
            "podman kube play: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        // `podman kube play` names a Deployment's pods NAME-pod-0, NAME-pod-1 …; a Pod keeps its
        // name.
        for d in docs {
            let (base, count) = match d["kind"].as_str() {
                Some("Deployment") => (
                    d["metadata"]["name"].as_str().unwrap().to_owned(),
                    d["spec"]["replicas"].as_u64().unwrap_or(1),
                ),
                Some("Pod") => (d["metadata"]["name"].as_str().unwrap().to_owned(), 0),
                _ => continue,
            };
            let names: Vec<String> = if d["kind"] == "Pod" {
                vec![base]
            } else {
                (0..count).map(|i| format!("{base}-pod-{i}")).collect()
            };
            for name in names {
                podman_ok(&["pod", "start", &name]);
                let infra =
                    podman_ok(&["pod", "inspect", &name, "--format", "{{.InfraContainerID}}"]);
                let ip = podman_ok(&[
                    "inspect",
                    &infra,
                    "--format",
                    "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                ]);
                assert!(!ip.is_empty(), "pod {name} has no address");
                played.pods.push(PlayedPod { name, ip });
            }
        }
        played
    }

    /// What a failing assertion should show: each pod's address and its containers' last log
    /// lines, and the files of each ConfigMap volume as podman wrote them.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for pod in &self.pods {
            let containers = podman(&[
                "pod",
                "inspect",
                &pod.name,
                "--format",
                "{{range .Containers}}{{.Name}} {{end}}",
            ]);
            for c in String::from_utf8_lossy(&containers.stdout).split_whitespace() {
                let logs = podman(&["logs", "--tail", "15", c]);
                out.push_str(&format!(
                    "--- {} ({}) container {c}:\n{}{}\n",
                    pod.name,
                    pod.ip,
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                ));
            }
        }
        for v in &self.volumes {
            let at = podman(&["volume", "inspect", v, "--format", "{{.Mountpoint}}"]);
            let at = String::from_utf8_lossy(&at.stdout).trim().to_owned();
            let files = std::fs::read_dir(&at)
                .map(|d| {
                    d.flatten()
                        .map(|e| {
                            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                            format!("{} ({} bytes)", e.path().display(), text.len())
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_else(|e| format!("cannot read {at}: {e}"));
            out.push_str(&format!("--- volume {v}: {files}\n"));
        }
        out
    }

    pub fn pod(&self, name: &str) -> &PlayedPod {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name}: {:?}", self.pods))
    }
}

impl Drop for Played {
    fn drop(&mut self) {
        let _ = podman(&["kube", "down", self.file.path().to_str().unwrap()]);
        for v in &self.volumes {
            let _ = podman(&["volume", "rm", "-f", v]);
        }
        for s in &self.secrets {
            let _ = podman(&["secret", "rm", s]);
        }
    }
}

fn base64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, byte)| {
            acc | (u32::from(*byte) << (16 - 8 * i))
        });
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The agent's container in a rendered Deployment becomes the stand-in: its image and
/// command, and the environment it needs. Everything vitals' container got from the render is
/// left as rendered, except the container ports (see [`strip_ports`]).
pub fn stand_in_for_agent(deployment: &mut Value, agent: &str, env: &[(&str, &str)]) {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence_mut()
        .unwrap();
    let c = containers
        .iter_mut()
        .find(|c| c["name"].as_str() == Some(agent))
        .unwrap_or_else(|| panic!("no container {agent}"));
    c["image"] = Value::from(standin_image());
    c["command"] = serde_yaml_ng::from_str("[/usr/local/bin/agent-standin]").unwrap();
    let env: Vec<Value> = env
        .iter()
        .map(|(k, v)| serde_yaml_ng::from_str(&format!("{{name: {k}, value: \"{v}\"}}")).unwrap())
        .collect();
    c["env"] = Value::Sequence(env);
}

/// podman 4 publishes every containerPort on the host; two replicas would collide on it. The
/// probes and the tests reach the pods on their own addresses, so the played copy drops them
/// (the probes' named ports were resolved from the rendered file).
pub fn strip_ports(deployment: &mut Value) {
    for c in deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence_mut()
        .unwrap()
    {
        if let Some(m) = c.as_mapping_mut() {
            m.remove("ports");
        }
    }
}

pub async fn post(url: &str) -> u16 {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .post(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

pub async fn get_text(url: &str) -> String {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap()
}
