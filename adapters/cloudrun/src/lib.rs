//! Google Cloud Run: a Knative `serving.knative.dev/v1` Service for `gcloud run services replace`,
//! with probes from a [`HealthSpec`] (`k8s-openapi` probe types: Cloud Run takes the same shape).
//!
//! - startupProbe: HTTP on `/startupz`, its window (`failureThreshold × periodSeconds`) ≤ 240 s;
//! - livenessProbe: HTTP on `/healthz`;
//! - readinessProbe only on request (Preview): it needs the `BETA` launch-stage annotation;
//! - Cloud Run kills 10 s after SIGTERM with no setting to change it: a note says so when the
//!   drain needs longer.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use vitals_core::spec::{self, Layout, Limits, ProbeSpec, Refusals, Rendered, Workload};
use vitals_core::{Duration, HealthSpec};

pub const PLATFORM: &str = "cloudrun";
/// SIGTERM to SIGKILL on Cloud Run.
pub const STOP_WINDOW: Duration = Duration::from_secs(10);
/// The longest a startup probe may keep trying: `failureThreshold × periodSeconds`.
pub const STARTUP_WINDOW_MAX: u64 = 240;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// Emit a readinessProbe (Preview) and the BETA launch stage it needs.
    pub readiness: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Service {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata,
    spec: ServiceSpec,
}

#[derive(Debug, Serialize)]
struct Metadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct ServiceSpec {
    template: Template,
}

#[derive(Debug, Serialize)]
struct Template {
    metadata: Metadata,
    spec: TemplateSpec,
}

#[derive(Debug, Serialize)]
struct TemplateSpec {
    containers: Vec<Container>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Container {
    name: String,
    image: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    command: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    args: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    env: Vec<EnvVar>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ports: Vec<Port>,
    #[serde(skip_serializing_if = "Option::is_none")]
    startup_probe: Option<Probe>,
    #[serde(skip_serializing_if = "Option::is_none")]
    liveness_probe: Option<Probe>,
    #[serde(skip_serializing_if = "Option::is_none")]
    readiness_probe: Option<Probe>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EnvVar {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_from: Option<EnvVarSource>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EnvVarSource {
    secret_key_ref: SecretKeyRef,
}

/// A Secret Manager secret and version.
#[derive(Debug, Serialize)]
struct SecretKeyRef {
    name: String,
    key: &'static str,
}

/// The Secret Manager secret a variable comes from: `NAME-variable-in-lowercase`.
fn secret_name(workload: &Workload, var: &str) -> String {
    format!(
        "{}-{}",
        workload.name,
        var.to_ascii_lowercase().replace('_', "-")
    )
}

/// Cloud Run mounts no ConfigMaps: the text of health.toml rides in VITALS_CONFIG_TOML, and each
/// secret comes from Secret Manager (its latest version).
fn vitals_env(workload: &Workload) -> Vec<EnvVar> {
    let mut env = Vec::new();
    if let Some(toml) = &workload.config_toml {
        env.push(EnvVar {
            name: vitals_core::contract::CONFIG_TOML_ENV.into(),
            value: Some(toml.clone()),
            value_from: None,
        });
    }
    for (name, value) in &workload.vitals_env {
        env.push(EnvVar {
            name: name.clone(),
            value: Some(value.clone()),
            value_from: None,
        });
    }
    for var in &workload.secret_env {
        env.push(EnvVar {
            name: var.clone(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: SecretKeyRef {
                    name: secret_name(workload, var),
                    key: "latest",
                },
            }),
        });
    }
    env
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Port {
    /// `http1`: Cloud Run's HTTP probes need an HTTP/1 endpoint.
    name: &'static str,
    container_port: u16,
}

/// Renders `service.yaml`, or every setting Cloud Run would refuse.
pub fn render(
    spec: &HealthSpec,
    workload: &Workload,
    options: Options,
) -> Result<Rendered, Refusals> {
    let mut l = Limits::new(PLATFORM);
    let startup = probe(spec, &spec.startup, &mut l);
    let startup_period = startup.period_seconds.unwrap_or(0) as u64;
    l.range(
        "startupProbe.periodSeconds",
        startup_period,
        (1, 240),
        &spec.startup.key("period"),
        "raise probes.startup.period to 1s or more",
        "lower probes.startup.period to 240s or less",
    );
    let window = startup_period * u64::from(spec.startup.failure_threshold);
    // A period past 240 is refused above; the window would only repeat it.
    if (1..=240).contains(&startup_period) && window > STARTUP_WINDOW_MAX {
        // The largest budget whose probes fit: the failure threshold is ceil(budget / period),
        // so a budget of 240s with a 7s period needs 35 probes, 245s: the fix must be below it.
        let fits = STARTUP_WINDOW_MAX / startup_period;
        let budget = fits * startup_period;
        let also = if !STARTUP_WINDOW_MAX.is_multiple_of(startup_period) {
            ", or a probes.startup.period that divides 240s, such as 5s, 6s or 8s"
        } else {
            ""
        };
        l.refuse(
            "startupProbe.failureThreshold × periodSeconds",
            format!("{} × {startup_period} = {window}s", spec.startup.failure_threshold),
            format!("exceeds {STARTUP_WINDOW_MAX}s"),
            "startup.timeout, probes.startup.period",
            format!("lower startup.timeout to {budget}s ({fits} probes of {startup_period}s fit in 240s){also}; for a slower load, bind the port only once loading has started and let /startupz report it"),
        );
    }
    let liveness = probe(spec, &spec.liveness, &mut l);
    l.range(
        "livenessProbe.periodSeconds",
        liveness.period_seconds.unwrap_or(0) as u64,
        (1, 3600),
        &spec.liveness.key("period"),
        "raise probes.liveness.period to 1s or more",
        "lower probes.liveness.period to 3600s or less",
    );
    let readiness = options
        .readiness
        .then(|| probe(spec, &spec.readiness, &mut l));

    let mut notes = Vec::new();
    if spec.agent_heartbeat && workload.layout == Layout::Sidecar {
        notes.push("cloudrun: with agent.heartbeat = \"required\", a hung agent fails the livenessProbe on the vitals container; whether Cloud Run then restarts the agent's container too is not documented".into());
    }
    if spec.stop_budget() > STOP_WINDOW {
        notes.push(format!(
            "cloudrun: Cloud Run sends SIGKILL 10s after SIGTERM and has no setting to change it, but drain.delay + drain.grace = {}; in-flight work past 10s is cut off (lower drain.grace, or accept it)",
            spec.stop_budget()
        ));
    }
    if !options.readiness {
        notes.push("cloudrun: no readinessProbe (Preview on Cloud Run; pass --cloudrun-readiness to add it with the BETA launch stage): a degraded or not-ready instance keeps getting traffic once started".into());
    }

    let mut annotations = BTreeMap::new();
    if options.readiness {
        annotations.insert(
            "run.googleapis.com/launch-stage".to_string(),
            "BETA".to_string(),
        );
    }
    let containers = match workload.layout {
        Layout::Embedded => vec![Container {
            name: workload.name.clone(),
            image: workload.image.clone(),
            command: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            ports: vec![Port {
                name: "http1",
                container_port: spec.port,
            }],
            startup_probe: Some(startup),
            liveness_probe: Some(liveness),
            readiness_probe: readiness,
        }],
        // One container: traffic to the agent's port, probes to vitals' port beside it (a probe
        // may name any port of its container).
        Layout::Entrypoint => vec![Container {
            name: workload.name.clone(),
            image: workload.image.clone(),
            command: vec![workload.vitals_path.clone()],
            args: workload.vitals_args(false),
            env: vitals_env(workload),
            ports: vec![Port {
                name: "http1",
                container_port: workload.agent_port,
            }],
            startup_probe: Some(startup),
            liveness_probe: Some(liveness),
            readiness_probe: readiness,
        }],
        Layout::Sidecar => {
            // No container-dependencies: with it the agent would start only once vitals'
            // startup probe passed, and that probe waits for startup.require, which may name a
            // dependency the agent itself serves (its model server, say): the revision would
            // never start. The two start together, and vitals' /startupz gates the revision.
            vec![
                Container {
                    name: workload.name.clone(),
                    image: workload.image.clone(),
                    command: Vec::new(),
                    args: Vec::new(),
                    env: Vec::new(),
                    ports: vec![Port {
                        name: "http1",
                        container_port: workload.agent_port,
                    }],
                    startup_probe: None,
                    liveness_probe: None,
                    readiness_probe: None,
                },
                Container {
                    name: "vitals".into(),
                    image: workload.vitals_image.clone(),
                    command: Vec::new(),
                    args: workload.vitals_args(false),
                    env: vitals_env(workload),
                    ports: Vec::new(),
                    startup_probe: Some(startup),
                    liveness_probe: Some(liveness),
                    readiness_probe: readiness,
                },
            ]
        }
    };
    let service = Service {
        api_version: "serving.knative.dev/v1",
        kind: "Service",
        metadata: Metadata {
            name: Some(workload.name.clone()),
            annotations,
        },
        spec: ServiceSpec {
            template: Template {
                metadata: Metadata {
                    name: None,
                    annotations: BTreeMap::new(),
                },
                spec: TemplateSpec { containers },
            },
        },
    };
    let service = l.finish(service)?;
    let yaml = serde_yaml_ng::to_string(&service).expect("plain structs serialize");
    let mut rendered = Rendered::default();
    rendered.file(
        "service.yaml",
        format!(
            "# Rendered by `vitals render cloudrun` from health.toml; deploy with: gcloud run services replace service.yaml\n{yaml}"
        ),
    );
    rendered.notes = notes;
    if workload.delivers_config() && !workload.secret_env.is_empty() {
        rendered.notes.push(format!(
            "cloudrun: the {} container reads {} from Secret Manager ({}); create them and let the service's account access them (roles/secretmanager.secretAccessor)",
            workload.probe_container(),
            workload.secret_env.join(", "),
            workload
                .secret_env
                .iter()
                .map(|v| secret_name(workload, v))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(rendered)
}

/// What Cloud Run counts as a passing HTTP probe (as kubelet does).
const CLOUD_RUN_PASSES: std::ops::Range<u16> = 200..400;

fn probe(spec: &HealthSpec, p: &ProbeSpec, l: &mut Limits) -> Probe {
    let port = spec.port;
    let which = match p.probe {
        spec::Probe::Liveness => "livenessProbe",
        spec::Probe::Readiness => "readinessProbe",
        spec::Probe::Startup => "startupProbe",
    };
    let period = l.whole_secs(
        &format!("{which}.periodSeconds"),
        p.period,
        &p.key("period"),
    );
    let timeout = l.whole_secs(
        &format!("{which}.timeoutSeconds"),
        p.timeout,
        &p.key("timeout"),
    );
    // The API says a liveness or readiness timeout must be smaller than the period; for the
    // startup probe it may equal it.
    let equal_ok = p.probe == spec::Probe::Startup;
    if timeout > period || (timeout == period && !equal_ok) {
        l.refuse(
            format!("{which}.timeoutSeconds"),
            timeout,
            format!(
                "must be {} periodSeconds ({period})",
                if equal_ok { "at most" } else { "less than" }
            ),
            p.key("timeout"),
            format!("make {} shorter than {}", p.key("timeout"), p.key("period")),
        );
    }
    if p.probe != spec::Probe::Readiness && p.success_threshold != 1 {
        l.refuse(
            format!("{which}.successThreshold"),
            p.success_threshold,
            "must be 1",
            p.key("success_threshold"),
            "set it to 1",
        );
    }
    let int = |v: u64| i32::try_from(v).unwrap_or(i32::MAX);
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(spec.probe_path(p.probe, CLOUD_RUN_PASSES)),
            port: IntOrString::Int(i32::from(port)),
            ..Default::default()
        }),
        period_seconds: Some(int(period)),
        timeout_seconds: Some(int(timeout)),
        failure_threshold: Some(int(u64::from(p.failure_threshold))),
        success_threshold: (p.probe == spec::Probe::Readiness)
            .then(|| int(u64::from(p.success_threshold))),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
