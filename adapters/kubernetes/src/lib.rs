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

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, Lifecycle, LifecycleHandler, PodSpec, PodTemplateSpec,
    Probe, SleepAction,
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
    let yaml = match output {
        Output::Deployment => to_yaml(&deployment(spec, workload, pod)),
        Output::Patch => to_yaml(&serde_json::json!({ "spec": { "template": { "spec": pod } } })),
    };
    let name = match output {
        Output::Deployment => "deployment.yaml",
        Output::Patch => "deployment-patch.yaml",
    };
    let pre_stop = workload.layout == Layout::Sidecar && !spec.drain_delay.is_zero();
    rendered.file(
        name,
        format!("{}{yaml}", header(workload, output, pre_stop)),
    );
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
    Ok(rendered)
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
    let containers = match workload.layout {
        Layout::Embedded => vec![Container {
            name: workload.name.clone(),
            image: Some(workload.image.clone()),
            ..probed
        }],
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
                args: Some(vec![
                    "serve".into(),
                    "--config".into(),
                    workload.config_path.clone(),
                ]),
                ..probed
            };
            vec![agent, vitals]
        }
    };
    PodSpec {
        containers,
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
