//! Nomad: a service job whose checks come from a [`HealthSpec`], in HCL (`nomad job run`) and in
//! the JSON API form (`POST /v1/jobs`, durations as integer nanoseconds).
//!
//! One model ([`job::Job`]) is built once and written both ways, so the two files cannot drift.
//!
//! - liveness: an http check on `/healthz` with `check_restart { limit = failure threshold,
//!   grace = startup budget }`;
//! - readiness: an http check on `/readyz` without `check_restart`. With Consul the path is
//!   `/readyz?degraded_status=429`, so a degraded agent is a Consul *warning* (still routed) and
//!   `on_update = "ignore_warnings"` lets deployments proceed;
//! - startup: `check_restart.grace` and `update.healthy_deadline` cover the startup budget;
//! - drain: `shutdown_delay` = drain delay, `kill_timeout` = delay + grace, `kill_signal = SIGTERM`.

mod hcl_out;
mod job;

use vitals_core::spec::{Layout, Limits, Refusals, Rendered, Workload};
use vitals_core::{Duration, HealthSpec};

pub use job::Job;

pub const PLATFORM: &str = "nomad";

/// The client's default `max_kill_timeout`: a longer `kill_timeout` is silently capped to it.
const CLIENT_MAX_KILL_TIMEOUT: Duration = Duration::from_secs(30);
const MIN_HEALTHY_TIME: Duration = Duration::from_secs(10);
const PORT_LABEL: &str = "vitals";
/// Consul's and Nomad's limit on a service name (a DNS label).
const SERVICE_NAME_MAX: usize = 63;
/// The agent's traffic port in the sidecar layout.
const AGENT_PORT_LABEL: &str = "http";
/// The file the config template writes, in the vitals task's `local/` folder.
const CONFIG_FILE: &str = "health.toml";

/// Delimiters for a template whose data is plain text: Nomad runs every template through
/// consul-template, so a `{{` in `health.toml` (in a prompt, say) would be read as template
/// code. Delimiters the text does not contain keep it verbatim.
fn plain_text_delimiters(text: &str) -> Option<(String, String)> {
    if !text.contains("{{") && !text.contains("}}") {
        return None;
    }
    (0u32..)
        .map(|n| (format!("[[vitals{n}:"), format!(":vitals{n}]]")))
        .find(|(l, r)| !text.contains(l.as_str()) && !text.contains(r.as_str()))
}

/// The secrets `*_env` keys name, from Nomad Variables at `nomad/jobs/NAME` (readable by the
/// job's tasks through workload identity), as an env file. `toJSON` quotes each value, which
/// the env file's parser unquotes, so values with spaces, `#` or newlines survive.
fn secrets_template(workload: &Workload) -> String {
    let mut t = format!("{{{{ with nomadVar \"nomad/jobs/{}\" }}}}\n", workload.name);
    for var in &workload.secret_env {
        t.push_str(&format!("{var}={{{{ .{var} | toJSON }}}}\n"));
    }
    t.push_str("{{ end }}\n");
    t
}

/// Which service provider registers the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Provider {
    /// Consul: warning state, traffic gating through Consul queries and DNS.
    #[default]
    Consul,
    /// Nomad's built-in service discovery: no warning state, no traffic gating.
    Nomad,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Consul => "consul",
            Provider::Nomad => "nomad",
        }
    }
}

/// Renders `NAME.nomad.hcl` and `NAME.json`, or every setting Nomad would refuse.
pub fn render(
    spec: &HealthSpec,
    workload: &Workload,
    provider: Provider,
) -> Result<Rendered, Refusals> {
    let mut limits = Limits::new(PLATFORM);
    // Consul and Nomad service names are DNS labels: at most 63 characters.
    let vitals_service = format!("{}-vitals", workload.name);
    if workload.layout == Layout::Sidecar && vitals_service.len() > SERVICE_NAME_MAX {
        limits.refuse(
            "service name",
            &vitals_service,
            format!(
                "is {} characters; a service name has at most {SERVICE_NAME_MAX}",
                vitals_service.len()
            ),
            "--name",
            format!(
                "pass a --name of {} characters or fewer for nomad",
                SERVICE_NAME_MAX - "-vitals".len()
            ),
        );
    }
    let job = build(spec, workload, provider);
    job.check(&mut limits);
    let job = limits.finish(job)?;

    let mut rendered = Rendered::default();
    let notes = notes(spec, workload, provider);
    let mut header = format!(
        "# Rendered by `vitals render nomad` from health.toml; run with: nomad job run {}.nomad.hcl\n",
        workload.name
    );
    for n in &notes {
        header.push_str(&format!("# NOTE: {n}\n"));
    }
    rendered.file(
        format!("{}.nomad.hcl", workload.name),
        format!("{header}\n{}", hcl_out::to_hcl(&job)),
    );
    rendered.file(format!("{}.json", workload.name), job.to_json());
    rendered.notes = notes.into_iter().map(|n| format!("nomad: {n}")).collect();
    Ok(rendered)
}

fn notes(spec: &HealthSpec, workload: &Workload, provider: Provider) -> Vec<String> {
    let mut notes = Vec::new();
    if workload.layout == Layout::Sidecar {
        notes.push("the group uses bridge networking (the agent and vitals share 127.0.0.1): each client needs the CNI reference plugins in /opt/cni/bin".into());
    }
    if workload.delivers_config() && !workload.secret_env.is_empty() {
        notes.push(format!(
            "the {} task reads {} from Nomad Variables; store them before running the job: nomad var put nomad/jobs/{} {}",
            workload.probe_container(),
            workload.secret_env.join(", "),
            workload.name,
            workload
                .secret_env
                .iter()
                .map(|v| format!("{v}=..."))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    if provider == Provider::Nomad {
        notes.push(
            "provider = \"nomad\" has no traffic gating: its service discovery returns every instance, ready or not, so the readiness check gates deployments and nothing else; use provider = \"consul\" (or a router that reads /readyz) to keep traffic off an instance that is not ready".into(),
        );
        notes.push(format!(
            "provider = \"nomad\" has no warning state: a degraded agent answers readiness.degraded_status ({}) on /readyz, and any status of 400 or more fails the check",
            spec.degraded_status
        ));
    }
    let kill = spec.stop_budget();
    if kill > CLIENT_MAX_KILL_TIMEOUT {
        notes.push(format!(
            "kill_timeout = {} (drain.delay + drain.grace) exceeds the clients' default max_kill_timeout ({}), which caps it silently; raise max_kill_timeout on the clients or lower drain.grace",
            job::go_duration(kill),
            job::go_duration(CLIENT_MAX_KILL_TIMEOUT)
        ));
    }
    notes
}

fn consecutive(consul: bool, threshold: u32) -> u32 {
    if consul && threshold > 1 {
        threshold
    } else {
        0
    }
}

fn build(spec: &HealthSpec, workload: &Workload, provider: Provider) -> Job {
    use job::*;

    let consul = provider == Provider::Consul;
    let sidecar = workload.layout == Layout::Sidecar;
    let liveness = |name: &str, path: &str| Check {
        name: name.into(),
        path: path.into(),
        port: None,
        interval: spec.liveness.period,
        timeout: spec.liveness.timeout,
        check_restart: Some(CheckRestart {
            limit: spec.liveness.failure_threshold,
            grace: spec.startup_budget,
            // Consul only: a warning (degraded) must not restart the task.
            ignore_warnings: consul,
        }),
        on_update: None,
        failures_before_critical: 0,
        success_before_passing: 0,
    };
    // Readiness never has check_restart: a dependency outage that hits every allocation takes
    // them out of traffic and restarts none.
    let readiness = Check {
        name: "readyz".into(),
        path: if consul {
            format!("{}?degraded_status=429", vitals_core::spec::READINESS_PATH)
        } else {
            vitals_core::spec::READINESS_PATH.into()
        },
        port: None,
        interval: spec.readiness.period,
        timeout: spec.readiness.timeout,
        check_restart: None,
        on_update: consul.then(|| "ignore_warnings".to_string()),
        // Consul counts consecutive results itself (N results to change state; 0 and 1 both
        // mean the first). The Nomad provider refuses these fields.
        failures_before_critical: consecutive(consul, spec.readiness.failure_threshold),
        success_before_passing: consecutive(consul, spec.readiness.success_threshold),
    };
    let stop = Stop {
        kill_signal: "SIGTERM".into(),
        kill_timeout: spec.stop_budget(),
        shutdown_delay: spec.drain_delay,
    };
    // health.toml as a file in the task's own folder, and the secrets as its environment.
    let delivered = || {
        let mut args = Vec::new();
        let mut templates = Vec::new();
        if let Some(toml) = &workload.config_toml {
            args.extend([
                "--config".to_string(),
                format!("${{NOMAD_TASK_DIR}}/{CONFIG_FILE}"),
            ]);
            templates.push(Template {
                destination: format!("local/{CONFIG_FILE}"),
                data: toml.clone(),
                env: false,
                delimiters: plain_text_delimiters(toml),
            });
        }
        if !workload.secret_env.is_empty() {
            templates.push(Template {
                destination: "secrets/vitals.env".into(),
                data: secrets_template(workload),
                env: true,
                delimiters: None,
            });
        }
        (args, templates)
    };
    let on_vitals = |mut c: Check| {
        c.port = Some(PORT_LABEL.into());
        c
    };
    let tasks = if workload.layout == Layout::Embedded {
        vec![Task {
            name: workload.name.clone(),
            image: workload.image.clone(),
            entrypoint: Vec::new(),
            args: Vec::new(),
            ports: vec![PORT_LABEL.into()],
            sidecar: false,
            stop,
            env: Vec::new(),
            templates: Vec::new(),
            services: vec![Service {
                name: workload.name.clone(),
                provider: provider.as_str().into(),
                port_label: PORT_LABEL.into(),
                checks: vec![
                    liveness("healthz", vitals_core::spec::LIVENESS_PATH),
                    readiness,
                ],
            }],
        }]
    } else if workload.layout == Layout::Entrypoint {
        // One task: vitals is its entrypoint and runs the agent. The service advertises the
        // agent's port; its checks reach vitals' port in the same task.
        let (config_args, templates) = delivered();
        let mut args = vec!["serve".to_string()];
        args.extend(config_args);
        args.push("--".into());
        args.extend(workload.agent_command.iter().cloned());
        vec![Task {
            name: workload.name.clone(),
            image: workload.image.clone(),
            entrypoint: vec![workload.vitals_path.clone()],
            args,
            ports: vec![AGENT_PORT_LABEL.into(), PORT_LABEL.into()],
            sidecar: false,
            stop,
            env: workload.vitals_env.clone(),
            templates,
            services: vec![Service {
                name: workload.name.clone(),
                provider: provider.as_str().into(),
                port_label: AGENT_PORT_LABEL.into(),
                checks: vec![
                    on_vitals(liveness("healthz", vitals_core::spec::LIVENESS_PATH)),
                    on_vitals(readiness),
                ],
            }],
        }]
    } else {
        // The agent's service advertises the agent's port and carries readiness: Nomad
        // deregisters a task's services when it stops that task, and it stops the agent first
        // (vitals is a sidecar, stopped last), so Consul stops routing before the agent exits.
        // The checks reach vitals on its port label through the shared bridge network.
        let mut agent_checks = vec![on_vitals(readiness)];
        if spec.agent_heartbeat {
            // A hung agent restarts the agent's task: check_restart acts on the task whose
            // service holds the check.
            agent_checks.push(on_vitals(liveness(
                "healthz-agent",
                vitals_core::contract::paths::HEALTHZ_AGENT,
            )));
        }
        let vitals_liveness = if spec.agent_heartbeat {
            vitals_core::contract::paths::HEALTHZ_VITALS
        } else {
            vitals_core::spec::LIVENESS_PATH
        };
        let (config_args, templates) = delivered();
        let mut args = vec!["serve".to_string()];
        args.extend(config_args);
        vec![
            Task {
                name: workload.name.clone(),
                image: workload.image.clone(),
                entrypoint: Vec::new(),
                args: Vec::new(),
                ports: Vec::new(),
                sidecar: false,
                stop: stop.clone(),
                env: Vec::new(),
                templates: Vec::new(),
                services: vec![Service {
                    name: workload.name.clone(),
                    provider: provider.as_str().into(),
                    port_label: AGENT_PORT_LABEL.into(),
                    checks: agent_checks,
                }],
            },
            Task {
                name: "vitals".into(),
                image: workload.vitals_image.clone(),
                entrypoint: Vec::new(),
                args,
                ports: Vec::new(),
                sidecar: true,
                stop,
                env: workload.vitals_env.clone(),
                templates,
                services: vec![Service {
                    name: format!("{}-vitals", workload.name),
                    provider: provider.as_str().into(),
                    port_label: PORT_LABEL.into(),
                    checks: vec![liveness("healthz", vitals_liveness)],
                }],
            },
        ]
    };
    let ports = if workload.layout != Layout::Embedded {
        vec![
            (AGENT_PORT_LABEL.to_string(), workload.agent_port),
            (PORT_LABEL.to_string(), spec.port),
        ]
    } else {
        vec![(PORT_LABEL.to_string(), spec.port)]
    };
    // The deployment must wait out the whole startup budget before it calls an allocation
    // unhealthy, plus the successes readiness needs to pass (success_before_passing), plus the
    // time it must then stay healthy.
    let healthy_deadline = Duration::from_secs(300).max(
        spec.startup_budget
            .saturating_add(MIN_HEALTHY_TIME)
            .saturating_add(
                spec.readiness
                    .period
                    .saturating_mul(spec.readiness.success_threshold),
            ),
    );
    let progress_deadline =
        Duration::from_secs(600).max(healthy_deadline.saturating_add(Duration::from_secs(300)));
    Job {
        name: workload.name.clone(),
        update: Update {
            min_healthy_time: MIN_HEALTHY_TIME,
            healthy_deadline,
            progress_deadline,
        },
        group: Group {
            name: workload.name.clone(),
            count: 2,
            bridge: sidecar,
            ports,
            tasks,
        },
    }
}

#[cfg(test)]
mod tests;
