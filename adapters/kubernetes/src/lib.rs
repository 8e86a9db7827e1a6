//! Kubernetes: a Deployment (or a strategic-merge patch for an existing one) whose probes come
//! from a [`HealthSpec`], built from `k8s-openapi` types.
//!
//! - startupProbe on `/startupz`, `failureThreshold = ceil(startup budget / period) + 1`: kubelet
//!   probes at once and then every period, so n failures span (n - 1) periods;
//! - `progressDeadlineSeconds` outlasts the startup budget (a rollout is not marked failed while
//!   its pods are still allowed to boot);
//! - livenessProbe on `/healthz`, readinessProbe on `/readyz`;
//! - `terminationGracePeriodSeconds` = drain delay + grace; in the sidecar layout the agent's
//!   container gets a `preStop` sleep of the drain delay, so it keeps serving while vitals turns
//!   readiness 503 and the endpoints catch up.
//! - sidecar layout: `health.toml` reaches the vitals container as a ConfigMap mounted where
//!   `--config` points, the secrets its `*_env` keys name come from a Secret by `secretKeyRef`,
//!   and a pod annotation carries the file's SHA-256, so a changed file rolls the pods;
//! - a Service for the agent's traffic that also names vitals' port, and (`servicemonitor.yaml`)
//!   a prometheus-operator ServiceMonitor scraping vitals' `/metrics` through it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler, PodSpec, PodTemplateSpec, Probe,
    SecretKeySelector, Service, ServicePort, ServiceSpec, SleepAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use vitals_core::spec::{Layout, Limits, ProbeSpec, Refusals, Rendered, Workload};
use vitals_core::HealthSpec;

pub const PLATFORM: &str = "kubernetes";
const PORT_NAME: &str = "vitals";

/// What to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// A whole Deployment.
    #[default]
    Deployment,
    /// A strategic-merge patch for an existing Deployment
    /// (`kubectl patch deployment NAME --patch-file deployment-patch.yaml`).
    Patch,
}

/// Renders `deployment.yaml` (or `deployment-patch.yaml`), or every setting Kubernetes would refuse.
pub fn render(
    spec: &HealthSpec,
    workload: &Workload,
    output: Output,
) -> Result<Rendered, Refusals> {
    let mut limits = Limits::new(PLATFORM);
    let mut pod = pod_spec(spec, workload, &mut limits);
    if output == Output::Patch {
        // A strategic-merge patch merges containers by name: an image here would replace the
        // Deployment's real agent image. The patch carries health settings only (and the whole
        // vitals sidecar, which the Deployment may not have yet).
        for c in &mut pod.containers {
            if c.name == workload.name {
                c.image = None;
            }
        }
    }
    let pod = limits.finish(pod)?;
    let mut rendered = Rendered::default();
    let config_map = config_map(workload);
    let pre_stop = workload.layout == Layout::Sidecar && !spec.drain_delay.is_zero();
    match output {
        Output::Deployment => {
            let mut docs = Vec::new();
            if let Some(map) = &config_map {
                docs.push(to_yaml(map));
            }
            docs.push(to_yaml(&deployment(spec, workload, pod)));
            docs.push(to_yaml(&service(spec, workload)));
            rendered.file(
                "deployment.yaml",
                format!(
                    "{}{}",
                    header(workload, output, pre_stop),
                    docs.join("---\n")
                ),
            );
            rendered.file("servicemonitor.yaml", service_monitor(workload));
        }
        Output::Patch => {
            let yaml = to_yaml(&serde_json::json!({ "spec": { "template": { "spec": pod } } }));
            rendered.file(
                "deployment-patch.yaml",
                format!("{}{yaml}", header(workload, output, pre_stop)),
            );
            if let Some(map) = &config_map {
                rendered.file(
                    "configmap.yaml",
                    format!(
                        "# vitals' health.toml for the patched Deployment's vitals container; apply it first: kubectl apply -f configmap.yaml\n{}",
                        to_yaml(map)
                    ),
                );
            }
        }
    }
    if pre_stop {
        rendered.notes.push(format!(
            "kubernetes: {PRE_STOP_SLEEP_NEEDS}: 1.29 drops it silently (the agent gets SIGTERM at once, with no drain.delay), 1.28 and older refuse the Deployment"
        ));
    }
    if workload.layout == Layout::Embedded && !spec.drain_delay.is_zero() {
        rendered.notes.push(format!(
            "kubernetes: no preStop sleep in the embedded layout: the agent's own drain (drain.delay = {}) keeps it serving after SIGTERM while the endpoints are removed",
            spec.drain_delay
        ));
    }
    if workload.layout == Layout::Entrypoint && !spec.drain_delay.is_zero() {
        rendered.notes.push(format!(
            "kubernetes: no preStop sleep in the entrypoint layout: vitals holds the agent's SIGTERM for drain.delay ({}) while the endpoints are removed",
            spec.drain_delay
        ));
    }
    if workload.delivers_config() && !workload.secret_env.is_empty() {
        rendered.notes.push(format!(
            "kubernetes: the {} container reads {} from the Secret {}; create it before applying: kubectl create secret generic {} {}",
            workload.probe_container(),
            workload.secret_env.join(", "),
            secret_name(workload),
            secret_name(workload),
            workload
                .secret_env
                .iter()
                .map(|v| format!("--from-literal={v}=..."))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    if output == Output::Deployment {
        rendered.notes.push(
            "kubernetes: servicemonitor.yaml needs the prometheus-operator's CRDs (monitoring.coreos.com/v1); apply deployment.yaml alone where none runs".into(),
        );
    }
    Ok(rendered)
}

/// The ConfigMap's volume in the pod.
const CONFIG_VOLUME: &str = "vitals-config";

fn config_map_name(workload: &Workload) -> String {
    format!("{}-vitals", workload.name)
}

fn secret_name(workload: &Workload) -> String {
    format!("{}-secrets", workload.name)
}

/// `/etc/vitals/health.toml` → (`/etc/vitals`, `health.toml`): the folder the ConfigMap is
/// mounted on and the key that holds the file.
fn config_location(workload: &Workload) -> (String, String) {
    let path = std::path::Path::new(&workload.config_path);
    let dir = path
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/".into());
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "health.toml".into());
    (dir, file)
}

/// The ConfigMap holding `health.toml` exactly as the render read it (sidecar layout).
fn config_map(workload: &Workload) -> Option<ConfigMap> {
    let toml = workload.config_toml.as_ref()?;
    if !workload.delivers_config() {
        return None;
    }
    let (_, file) = config_location(workload);
    Some(ConfigMap {
        metadata: ObjectMeta {
            name: Some(config_map_name(workload)),
            labels: Some(BTreeMap::from([("app".into(), workload.name.clone())])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(file, toml.clone())])),
        ..Default::default()
    })
}

/// The annotation that rolls the pods when `health.toml` changes: kubelet refreshes a mounted
/// ConfigMap, but vitals reads its file once, at start.
const CONFIG_HASH_ANNOTATION: &str = "vitals/config-sha256";

fn config_hash(toml: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(toml.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The agent's Service: its traffic port, and vitals' port (named `vitals`) for the
/// ServiceMonitor. Traffic goes to ready pods only, so degraded pods (200) keep it and
/// not-ready ones (503) lose it.
fn service(spec: &HealthSpec, workload: &Workload) -> Service {
    let labels = BTreeMap::from([("app".to_string(), workload.name.clone())]);
    let mut ports = vec![ServicePort {
        name: Some("http".into()),
        port: i32::from(workload.traffic_port(spec)),
        target_port: Some(IntOrString::String(traffic_port_name(workload).into())),
        ..Default::default()
    }];
    if workload.layout != Layout::Embedded {
        ports.push(ServicePort {
            name: Some(PORT_NAME.into()),
            port: i32::from(spec.port),
            target_port: Some(IntOrString::String(PORT_NAME.into())),
            ..Default::default()
        });
    }
    Service {
        metadata: ObjectMeta {
            name: Some(workload.name.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(labels),
            ports: Some(ports),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The container port the agent's traffic arrives on.
fn traffic_port_name(workload: &Workload) -> &'static str {
    match workload.layout {
        Layout::Sidecar | Layout::Entrypoint => "http",
        Layout::Embedded => PORT_NAME,
    }
}

/// A prometheus-operator ServiceMonitor for vitals' `/metrics`, through the Service's port named
/// `vitals` (sidecar, entrypoint) or the agent's own port, which serves vitals' routes
/// (embedded).
fn service_monitor(workload: &Workload) -> String {
    let port = match workload.layout {
        Layout::Sidecar | Layout::Entrypoint => PORT_NAME,
        Layout::Embedded => "http",
    };
    let monitor = serde_json::json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {
            "name": format!("{}-vitals", workload.name),
            "labels": { "app": workload.name },
        },
        "spec": {
            "selector": { "matchLabels": { "app": workload.name } },
            "endpoints": [{ "port": port, "path": vitals_core::contract::paths::METRICS }],
        },
    });
    format!(
        "# Rendered by `vitals render kubernetes`: Prometheus (through the prometheus-operator) scrapes vitals' /metrics on the Service in deployment.yaml; apply with: kubectl apply -f servicemonitor.yaml\n{}",
        to_yaml(&monitor)
    )
}

/// The preStop `sleep` action is GA in Kubernetes 1.30; before it, it is dropped or refused.
const PRE_STOP_SLEEP_NEEDS: &str =
    "the agent's preStop sleep action needs Kubernetes 1.30 or later";

fn header(workload: &Workload, output: Output, pre_stop: bool) -> String {
    let how = match output {
        Output::Deployment => "kubectl apply -f deployment.yaml".to_string(),
        Output::Patch => format!(
            "kubectl patch deployment {} --patch-file deployment-patch.yaml",
            workload.name
        ),
    };
    let mut h =
        format!("# Rendered by `vitals render kubernetes` from health.toml; apply with: {how}\n");
    if pre_stop {
        h.push_str(&format!(
            "# Requires Kubernetes 1.30+: {PRE_STOP_SLEEP_NEEDS}.\n"
        ));
    }
    h
}

fn to_yaml<T: serde::Serialize>(value: &T) -> String {
    // Serializing plain data structs cannot fail.
    serde_yaml_ng::to_string(value).expect("k8s-openapi types serialize")
}

/// Kubernetes' own default `progressDeadlineSeconds`.
const DEFAULT_PROGRESS_DEADLINE: u64 = 600;

/// How long a rollout may make no progress before Kubernetes marks it failed: past the startup
/// budget and the readiness probes that follow it, with a minute to spare, and never below
/// Kubernetes' default.
fn progress_deadline(spec: &HealthSpec) -> i32 {
    let ready = spec.readiness.period.as_secs_ceil() * u64::from(spec.readiness.success_threshold);
    let needed = spec.startup_budget.as_secs_ceil() + ready + 60;
    i32::try_from(needed.max(DEFAULT_PROGRESS_DEADLINE)).unwrap_or(i32::MAX)
}

fn deployment(spec: &HealthSpec, workload: &Workload, pod: PodSpec) -> Deployment {
    let labels = BTreeMap::from([("app".to_string(), workload.name.clone())]);
    Deployment {
        metadata: ObjectMeta {
            name: Some(workload.name.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(2),
            progress_deadline_seconds: Some(progress_deadline(spec)),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: workload
                        .config_toml
                        .as_ref()
                        .filter(|_| workload.delivers_config())
                        .map(|toml| {
                            BTreeMap::from([(CONFIG_HASH_ANNOTATION.into(), config_hash(toml))])
                        }),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_spec(spec: &HealthSpec, workload: &Workload, limits: &mut Limits) -> PodSpec {
    let probed = Container {
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.into()),
            container_port: i32::from(spec.port),
            ..Default::default()
        }]),
        startup_probe: Some(probe(spec, &spec.startup, limits)),
        liveness_probe: Some(probe(spec, &spec.liveness, limits)),
        readiness_probe: Some(probe(spec, &spec.readiness, limits)),
        ..Default::default()
    };
    // With the agent's heartbeat required, /healthz includes it: in the sidecar layout that
    // would restart vitals for a hung agent. The agent's container is probed on its own beat
    // (through the pod's shared network, on vitals' port) and vitals' on its own liveness.
    let watch_agent = workload.layout == Layout::Sidecar && spec.agent_heartbeat;
    let agent_liveness = watch_agent
        .then(|| probed.liveness_probe.clone())
        .flatten()
        .map(|mut p| {
            if let Some(get) = p.http_get.as_mut() {
                get.path = Some(vitals_core::contract::paths::HEALTHZ_AGENT.into());
                get.port = IntOrString::Int(i32::from(spec.port));
            }
            p
        });
    let mut probed = probed;
    if watch_agent {
        if let Some(get) = probed
            .liveness_probe
            .as_mut()
            .and_then(|p| p.http_get.as_mut())
        {
            get.path = Some(vitals_core::contract::paths::HEALTHZ_VITALS.into());
        }
    }
    // The pod's grace period only needs to be long enough, so it rounds up.
    let grace = spec.stop_budget().as_secs_ceil();
    if grace == 0 {
        limits.refuse(
            "terminationGracePeriodSeconds",
            0,
            "leaves no time to drain",
            "drain.delay, drain.grace",
            "set drain.grace to the time in-flight work needs",
        );
    }
    let plain = workload.vitals_env.iter().map(|(name, value)| EnvVar {
        name: name.clone(),
        value: Some(value.clone()),
        ..Default::default()
    });
    let env: Vec<EnvVar> = plain
        .chain(workload.secret_env.iter().map(|var| EnvVar {
            name: var.clone(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret_name(workload),
                    key: var.clone(),
                    optional: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .collect();
    let configured = workload.config_toml.is_some();
    let config_mount = configured.then(|| {
        vec![VolumeMount {
            name: CONFIG_VOLUME.into(),
            mount_path: config_location(workload).0,
            read_only: Some(true),
            ..Default::default()
        }]
    });
    let containers = match workload.layout {
        Layout::Embedded => vec![Container {
            name: workload.name.clone(),
            image: Some(workload.image.clone()),
            ..probed
        }],
        Layout::Entrypoint => {
            let mut ports = vec![ContainerPort {
                name: Some("http".into()),
                container_port: i32::from(workload.agent_port),
                ..Default::default()
            }];
            ports.extend(probed.ports.clone().unwrap_or_default());
            vec![Container {
                name: workload.name.clone(),
                image: Some(workload.image.clone()),
                // The image's own entrypoint is replaced: vitals runs the agent.
                command: Some(vec![workload.vitals_path.clone()]),
                args: Some(workload.vitals_args(true)),
                ports: Some(ports),
                env: (!env.is_empty()).then_some(env),
                volume_mounts: config_mount,
                ..probed
            }]
        }
        Layout::Sidecar => {
            let delay = spec.drain_delay.as_secs_ceil();
            let agent = Container {
                name: workload.name.clone(),
                image: Some(workload.image.clone()),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: i32::from(workload.agent_port),
                    ..Default::default()
                }]),
                liveness_probe: agent_liveness,
                lifecycle: (delay > 0).then(|| Lifecycle {
                    pre_stop: Some(LifecycleHandler {
                        sleep: Some(SleepAction {
                            seconds: i64::try_from(delay).unwrap_or(i64::MAX),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let vitals = Container {
                name: "vitals".into(),
                image: Some(workload.vitals_image.clone()),
                args: Some(workload.vitals_args(true)),
                env: (!env.is_empty()).then_some(env),
                volume_mounts: config_mount,
                ..probed
            };
            vec![agent, vitals]
        }
    };
    let volumes = (workload.delivers_config() && configured).then(|| {
        let (_, file) = config_location(workload);
        vec![Volume {
            name: CONFIG_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(workload),
                items: Some(vec![KeyToPath {
                    key: file.clone(),
                    path: file,
                    mode: None,
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }]
    });
    PodSpec {
        containers,
        volumes,
        termination_grace_period_seconds: Some(i64::try_from(grace).unwrap_or(i64::MAX)),
        ..Default::default()
    }
}

/// Extension for the Kubernetes-only conversions.
trait KubeLimits {
    fn int32(&mut self, field: &str, value: u64, key: &str) -> i32;
}

impl KubeLimits for Limits {
    /// Probe fields are int32 in the API.
    fn int32(&mut self, field: &str, value: u64, key: &str) -> i32 {
        match i32::try_from(value) {
            Ok(v) => v,
            Err(_) => {
                self.refuse(
                    field,
                    value,
                    format!("exceeds {} (int32)", i32::MAX),
                    key,
                    "lower it",
                );
                i32::MAX
            }
        }
    }
}

/// What kubelet counts as a passing HTTP probe.
const KUBELET_PASSES: std::ops::Range<u16> = 200..400;

fn probe(spec: &HealthSpec, p: &ProbeSpec, limits: &mut Limits) -> Probe {
    let which = match p.probe {
        vitals_core::spec::Probe::Liveness => "livenessProbe",
        vitals_core::spec::Probe::Readiness => "readinessProbe",
        vitals_core::spec::Probe::Startup => "startupProbe",
    };
    let period = limits.whole_secs(
        &format!("{which}.periodSeconds"),
        p.period,
        &p.key("period"),
    );
    let timeout = limits.whole_secs(
        &format!("{which}.timeoutSeconds"),
        p.timeout,
        &p.key("timeout"),
    );
    let failure_key = if p.probe == vitals_core::spec::Probe::Startup {
        "startup.timeout, probes.startup.period".to_string()
    } else {
        p.key("failure_threshold")
    };
    if p.probe != vitals_core::spec::Probe::Readiness && p.success_threshold != 1 {
        limits.refuse(
            format!("{which}.successThreshold"),
            p.success_threshold,
            "must be 1 for liveness and startup probes",
            p.key("success_threshold"),
            "set it to 1",
        );
    }
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(spec.probe_path(p.probe, KUBELET_PASSES)),
            port: IntOrString::String(PORT_NAME.into()),
            ..Default::default()
        }),
        period_seconds: Some(limits.int32(
            &format!("{which}.periodSeconds"),
            period,
            &p.key("period"),
        )),
        timeout_seconds: Some(limits.int32(
            &format!("{which}.timeoutSeconds"),
            timeout,
            &p.key("timeout"),
        )),
        failure_threshold: Some(limits.int32(
            &format!("{which}.failureThreshold"),
            match p.probe {
                // The first probe is at t = 0: one more covers the last period of the budget.
                vitals_core::spec::Probe::Startup => u64::from(p.failure_threshold) + 1,
                _ => u64::from(p.failure_threshold),
            },
            &failure_key,
        )),
        success_threshold: Some(limits.int32(
            &format!("{which}.successThreshold"),
            u64::from(p.success_threshold),
            &p.key("success_threshold"),
        )),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
