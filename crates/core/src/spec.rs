//! [`HealthSpec`]: what an orchestrator needs to know about a vitals instance, derived from the
//! validated config. The platform adapters read only this, so every platform sees one truth.
//!
//! Also the adapters' shared vocabulary: [`Workload`] (names, images, layout), [`Rendered`]
//! (files plus notes) and [`Refusal`] (a setting the platform would refuse, with its source key
//! and a fix).

use std::fmt;

use crate::{Config, Duration};

/// The routes the probes use; fixed by the HTTP contract.
pub const LIVENESS_PATH: &str = crate::contract::paths::HEALTHZ;
pub const READINESS_PATH: &str = crate::contract::paths::READYZ;
pub const STARTUP_PATH: &str = crate::contract::paths::STARTUPZ;

/// Which probe a timing belongs to; names the `health.toml` keys it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Liveness,
    Readiness,
    Startup,
}

impl Probe {
    /// The `health.toml` table, such as `probes.liveness`.
    pub fn key(self) -> &'static str {
        match self {
            Probe::Liveness => "probes.liveness",
            Probe::Readiness => "probes.readiness",
            Probe::Startup => "probes.startup",
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Probe::Liveness => LIVENESS_PATH,
            Probe::Readiness => READINESS_PATH,
            Probe::Startup => STARTUP_PATH,
        }
    }
}

/// How often and how patiently the orchestrator probes one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSpec {
    pub probe: Probe,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

impl ProbeSpec {
    /// The `health.toml` key of one field, such as `probes.liveness.period`.
    pub fn key(&self, field: &str) -> String {
        format!("{}.{field}", self.probe.key())
    }
}

/// Everything an adapter renders from. Built only by [`HealthSpec::from_config`], so its
/// invariants are the config's: periods and timeouts positive, timeout ≤ period, thresholds ≥ 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    /// The port vitals listens on (from `server.listen`).
    pub port: u16,
    pub liveness: ProbeSpec,
    pub readiness: ProbeSpec,
    /// `failure_threshold` is `ceil(startup.timeout / probes.startup.period)`.
    pub startup: ProbeSpec,
    /// `startup.timeout`: how long a boot may take before the platform gives up.
    pub startup_budget: Duration,
    /// `drain.delay`: readiness 503 while still serving.
    pub drain_delay: Duration,
    /// `drain.grace`: then at most this long for in-flight work.
    pub drain_grace: Duration,
    /// `readiness.degraded_status`: what `/readyz` answers when degraded (200 or 429 …).
    pub degraded_status: u16,
    /// `server.listen`, whose address decides whether a platform's probe can reach it.
    pub listen: std::net::SocketAddr,
    /// `[agent] heartbeat = "required"`: `/healthz` includes the agent's beat, so a sidecar
    /// render probes the agent's container on `/healthz/agent` and vitals' on `/healthz/vitals`.
    pub agent_heartbeat: bool,
}

impl HealthSpec {
    pub fn from_config(config: &Config) -> HealthSpec {
        let timing = |probe, t: &crate::config::ProbeTiming| ProbeSpec {
            probe,
            period: t.period,
            timeout: t.timeout,
            failure_threshold: t.failure_threshold,
            success_threshold: t.success_threshold,
        };
        HealthSpec {
            port: config.server.listen.port(),
            liveness: timing(Probe::Liveness, &config.probes.liveness),
            readiness: timing(Probe::Readiness, &config.probes.readiness),
            startup: timing(Probe::Startup, &config.probes.startup),
            startup_budget: config.startup.timeout,
            drain_delay: config.drain.delay,
            drain_grace: config.drain.grace,
            degraded_status: config.readiness.degraded_status,
            listen: config.server.listen,
            agent_heartbeat: config.agent.heartbeat == crate::config::HeartbeatMode::Required,
        }
    }

    /// What no platform can run, whichever it is: a probe address only the container itself can
    /// reach, or an agent and a sidecar vitals on one port of one network namespace.
    pub fn check_workload(&self, workload: &Workload) -> Result<(), Refusals> {
        let mut refusals = Vec::new();
        if self.listen.ip().is_loopback() {
            refusals.push(Refusal {
                platform: "every platform",
                field: "server.listen".into(),
                value: self.listen.to_string(),
                limit: "is loopback: the platform's probes come from outside the container".into(),
                key: "server.listen".into(),
                fix: format!("listen on 0.0.0.0:{} (or [::]:{})", self.port, self.port),
            });
        }
        if workload.layout != Layout::Embedded && workload.agent_port == self.port {
            refusals.push(Refusal {
                platform: "every platform",
                field: "agent port".into(),
                value: workload.agent_port.to_string(),
                limit: "is vitals' port too: the agent and the vitals sidecar share the pod's (or task's) network".into(),
                key: "--agent-port, server.listen".into(),
                fix: "give the agent and vitals different ports".into(),
            });
        }
        if refusals.is_empty() {
            Ok(())
        } else {
            Err(Refusals(refusals))
        }
    }

    /// The path a platform's probe of `probe` requests, for a platform that counts the statuses
    /// in `passing` as success (kubelet and Cloud Run: 200–399). When `readiness.degraded_status`
    /// is outside them (429 for Consul), the readiness path asks vitals for 200 while degraded:
    /// otherwise one non-critical outage would take every replica out of traffic, the opposite
    /// of degraded mode.
    pub fn probe_path(&self, probe: Probe, passing: std::ops::Range<u16>) -> String {
        match probe {
            Probe::Readiness if !passing.contains(&self.degraded_status) => {
                format!("{READINESS_PATH}?degraded_status=200")
            }
            other => other.path().to_owned(),
        }
    }

    /// The time a stop needs: the drain delay plus the grace for in-flight work.
    pub fn stop_budget(&self) -> Duration {
        self.drain_delay.saturating_add(self.drain_grace)
    }
}

/// Where vitals runs relative to the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// vitals is its own container beside the agent's (the default).
    #[default]
    Sidecar,
    /// The agent embeds vitals (the library) and serves the probe routes itself.
    Embedded,
    /// One container, the agent's image (which holds vitals): vitals is its entrypoint and runs
    /// the agent as a supervised child (`vitals serve -- CMD`), with `[[processes]]` beside it.
    Entrypoint,
}

/// The image `scripts/build-image` builds (the slim `vitals` binary in an image of its own),
/// and the renders' default vitals image.
pub const DEFAULT_VITALS_IMAGE: &str = concat!("vitals:", env!("CARGO_PKG_VERSION"));

/// The names and images a platform file needs, which `health.toml` does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Job, deployment, service and task family name.
    pub name: String,
    /// The agent's image.
    pub image: String,
    /// The port the agent serves its own traffic on (sidecar layout; embedded, it is vitals' port).
    pub agent_port: u16,
    /// The vitals image (sidecar layout).
    pub vitals_image: String,
    /// The path of the vitals binary inside the container that runs the ECS health command.
    pub vitals_path: String,
    /// The path of `health.toml` inside the vitals container (sidecar layout).
    pub config_path: String,
    /// `health.toml` as the render read it, delivered to the vitals container in the sidecar
    /// layout (a ConfigMap, a Nomad template, `VITALS_CONFIG_TOML`); `None` runs vitals with no
    /// configuration.
    pub config_toml: Option<String>,
    /// The environment variables the configuration's `*_env` keys name: secrets the vitals
    /// container gets from the platform's secret store, never from a rendered file.
    pub secret_env: Vec<String>,
    pub layout: Layout,
    /// The agent's command, which vitals runs in the entrypoint layout.
    pub agent_command: Vec<String>,
    /// Plain (not secret) environment variables of the process that runs vitals, such as
    /// `VITALS_FLEET__KEY_PREFIX` when `[fleet]` leaves its prefix to the service's name.
    pub vitals_env: Vec<(String, String)>,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            name: "agent".into(),
            image: "registry.example.com/agent:1.0.0".into(),
            agent_port: 8000,
            vitals_image: DEFAULT_VITALS_IMAGE.into(),
            vitals_path: "/usr/local/bin/vitals".into(),
            config_path: "/etc/vitals/health.toml".into(),
            config_toml: None,
            secret_env: Vec::new(),
            layout: Layout::Sidecar,
            agent_command: Vec::new(),
            vitals_env: Vec::new(),
        }
    }
}

impl Workload {
    /// The port traffic goes to: the agent's own in the sidecar layout, vitals' when embedded.
    pub fn traffic_port(&self, spec: &HealthSpec) -> u16 {
        match self.layout {
            Layout::Sidecar | Layout::Entrypoint => self.agent_port,
            Layout::Embedded => spec.port,
        }
    }

    /// Whether the files deliver `health.toml` and its secrets to vitals (not when the agent
    /// embeds vitals and configures it itself).
    pub fn delivers_config(&self) -> bool {
        self.layout != Layout::Embedded
    }

    /// Whether the agent and vitals are one container.
    pub fn one_container(&self) -> bool {
        self.layout != Layout::Sidecar
    }

    /// The arguments of `vitals` in its container: `serve`, the configuration when one is
    /// delivered as a file at `config_path` (`file`), and the agent's command after `--` in the
    /// entrypoint layout.
    pub fn vitals_args(&self, file: bool) -> Vec<String> {
        let mut args = vec!["serve".to_string()];
        if file && self.config_toml.is_some() {
            args.extend(["--config".into(), self.config_path.clone()]);
        }
        if self.layout == Layout::Entrypoint {
            args.push("--".into());
            args.extend(self.agent_command.iter().cloned());
        }
        args
    }

    /// The container that serves the probe routes: vitals' in the sidecar layout, else the agent's.
    pub fn probe_container(&self) -> String {
        match self.layout {
            Layout::Sidecar => "vitals".into(),
            Layout::Embedded | Layout::Entrypoint => self.name.clone(),
        }
    }
}

/// One rendered file, relative to the platform's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub name: String,
    pub contents: String,
}

/// An adapter's output: files, plus notes on what the platform cannot do or what to watch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rendered {
    pub files: Vec<RenderedFile>,
    pub notes: Vec<String>,
}

impl Rendered {
    pub fn file(&mut self, name: impl Into<String>, contents: impl Into<String>) {
        self.files.push(RenderedFile {
            name: name.into(),
            contents: contents.into(),
        });
    }
}

/// A value the platform would refuse, said so that it can be fixed in `health.toml`:
/// `ecs: healthCheck.retries = 24 exceeds 10 (from probes.liveness.failure_threshold); lower it
/// or raise probes.liveness.period`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub platform: &'static str,
    /// The platform's field, such as `healthCheck.retries`.
    pub field: String,
    /// The value vitals would have emitted.
    pub value: String,
    /// The rule it breaks, such as `exceeds 10`.
    pub limit: String,
    /// The `health.toml` key (or keys) it came from.
    pub key: String,
    pub fix: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} = {} {} (from {}); {}",
            self.platform, self.field, self.value, self.limit, self.key, self.fix
        )
    }
}

/// Every refusal an adapter found, so one run lists them all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Refusals(pub Vec<Refusal>);

impl fmt::Display for Refusals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Collects refusals for one platform; each check names the field, value, rule, key and fix.
#[derive(Debug)]
pub struct Limits {
    platform: &'static str,
    found: Vec<Refusal>,
}

impl Limits {
    pub fn new(platform: &'static str) -> Self {
        Limits {
            platform,
            found: Vec::new(),
        }
    }

    pub fn refuse(
        &mut self,
        field: impl Into<String>,
        value: impl fmt::Display,
        limit: impl Into<String>,
        key: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.found.push(Refusal {
            platform: self.platform,
            field: field.into(),
            value: value.to_string(),
            limit: limit.into(),
            key: key.into(),
            fix: fix.into(),
        });
    }

    /// Refuses `value` outside `min..=max`, with a fix for each side.
    #[allow(clippy::too_many_arguments)]
    pub fn range(
        &mut self,
        field: &str,
        value: u64,
        (min, max): (u64, u64),
        key: &str,
        fix_low: &str,
        fix_high: &str,
    ) {
        if value < min {
            self.refuse(field, value, format!("is below {min}"), key, fix_low);
        } else if value > max {
            self.refuse(field, value, format!("exceeds {max}"), key, fix_high);
        }
    }

    /// A duration as whole seconds, refusing a fraction: the platforms count probe timings in
    /// seconds, and rounding a period silently would change how fast a failure is seen.
    pub fn whole_secs(&mut self, field: &str, d: Duration, key: &str) -> u64 {
        let secs = d.as_secs_ceil();
        if d.std().subsec_nanos() != 0 {
            let fix = match secs.saturating_sub(1) {
                0 => format!("use {}", Duration::from_secs(secs)),
                lower => format!(
                    "use {} or {}",
                    Duration::from_secs(lower),
                    Duration::from_secs(secs)
                ),
            };
            self.refuse(field, d, "is not a whole number of seconds", key, fix);
        }
        secs
    }

    pub fn finish<T>(self, value: T) -> Result<T, Refusals> {
        if self.found.is_empty() {
            Ok(value)
        } else {
            Err(Refusals(self.found))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_reads_as_one_line_with_key_and_fix() {
        let mut l = Limits::new("ecs");
        l.range(
            "healthCheck.retries",
            24,
            (1, 10),
            "probes.liveness.failure_threshold",
            "raise it",
            "lower it or raise probes.liveness.period",
        );
        let e = l.finish(()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ecs: healthCheck.retries = 24 exceeds 10 (from probes.liveness.failure_threshold); lower it or raise probes.liveness.period"
        );
    }

    #[test]
    fn bounds_are_inclusive() {
        let mut l = Limits::new("x");
        l.range("f", 1, (1, 10), "k", "", "");
        l.range("f", 10, (1, 10), "k", "", "");
        assert!(l.finish(()).is_ok());
        let mut l = Limits::new("x");
        l.range("f", 0, (1, 10), "k", "", "");
        l.range("f", 11, (1, 10), "k", "", "");
        assert_eq!(l.finish(()).unwrap_err().0.len(), 2);
    }

    #[test]
    fn fractional_seconds_are_refused_with_the_neighbours_as_fix() {
        let mut l = Limits::new("kubernetes");
        let secs = l.whole_secs(
            "periodSeconds",
            Duration::from_millis(1500),
            "probes.liveness.period",
        );
        assert_eq!(secs, 2);
        let e = l.finish(()).unwrap_err();
        assert!(e.to_string().contains("use 1s or 2s"), "{e}");
        let mut l = Limits::new("kubernetes");
        l.whole_secs(
            "timeoutSeconds",
            Duration::from_millis(500),
            "probes.readiness.timeout",
        );
        let e = l.finish(()).unwrap_err();
        assert!(e.to_string().ends_with("; use 1s"), "{e}");
    }
}
