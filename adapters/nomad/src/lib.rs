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
    if spec.agent_heartbeat && workload.layout == Layout::Sidecar {
        notes.push("with agent.heartbeat = \"required\", a hung agent fails vitals' liveness check, and check_restart restarts the task that check belongs to, the vitals task, not the agent's; give the agent's task a check of its own on /healthz/agent with check_restart".into());
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
    let liveness = Check {
        name: "healthz".into(),
        path: vitals_core::spec::LIVENESS_PATH.into(),
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
    let readiness = Check {
        name: "readyz".into(),
        path: if consul {
            format!("{}?degraded_status=429", vitals_core::spec::READINESS_PATH)
        } else {
            vitals_core::spec::READINESS_PATH.into()
        },
        interval: spec.readiness.period,
        timeout: spec.readiness.timeout,
        check_restart: None,
        on_update: consul.then(|| "ignore_warnings".to_string()),
        // Consul counts consecutive results itself (N results to change state; 0 and 1 both
        // mean the first). The Nomad provider refuses these fields.
        failures_before_critical: consecutive(consul, spec.readiness.failure_threshold),
        success_before_passing: consecutive(consul, spec.readiness.success_threshold),
    };
    let service = Service {
        name: workload.name.clone(),
        provider: provider.as_str().into(),
        port_label: PORT_LABEL.into(),
        checks: vec![liveness, readiness],
    };
    let stop = Stop {
        kill_signal: "SIGTERM".into(),
        kill_timeout: spec.stop_budget(),
        shutdown_delay: spec.drain_delay,
    };
    let tasks = match workload.layout {
        Layout::Embedded => vec![Task {
            name: workload.name.clone(),
            image: workload.image.clone(),
            args: Vec::new(),
            ports: vec![PORT_LABEL.into()],
            sidecar: false,
            stop,
            services: vec![service],
        }],
        Layout::Sidecar => vec![
            Task {
                name: workload.name.clone(),
                image: workload.image.clone(),
                args: Vec::new(),
                ports: Vec::new(),
                sidecar: false,
                stop: stop.clone(),
                services: Vec::new(),
            },
            Task {
                name: "vitals".into(),
                image: workload.vitals_image.clone(),
                args: vec![
                    "serve".into(),
                    "--config".into(),
                    workload.config_path.clone(),
                ],
                ports: vec![PORT_LABEL.into()],
                sidecar: true,
                stop,
                services: vec![service],
            },
        ],
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
            port: spec.port,
            tasks,
        },
    }
}

#[cfg(test)]
mod tests;
