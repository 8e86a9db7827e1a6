//! The `/status` document.

use std::time::{Instant, SystemTime};

use serde::Serialize;
use vitals_core::config::{Check, Config};
use vitals_core::lifecycle::{Lifecycle, Phase};

#[derive(Debug, Serialize)]
pub(crate) struct Status<'a> {
    pub phase: &'static str,
    pub readiness: &'static str,
    pub live: bool,
    pub started: bool,
    pub draining: bool,
    pub heartbeat_age_seconds: f64,
    pub dependencies: Vec<DependencyStatus<'a>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct DependencyStatus<'a> {
    pub name: &'a str,
    pub kind: &'static str,
    pub critical: bool,
    pub up: bool,
    pub interval_seconds: f64,
    /// RFC 3339 time of the last finished check.
    pub last_check: Option<String>,
    pub last_success: Option<String>,
    pub last_outcome: Option<&'static str>,
    pub latency_ms: Option<f64>,
    pub consecutive_failures: u32,
    /// Reasons are built by the checks and carry no secrets.
    pub last_error: Option<String>,
    /// LLM kinds: the check mode (models, completion, semantic).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<&'static str>,
    /// LLM kinds with `max_probes_per_hour`: the budget, and what it did to the interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Budget {
    pub max_probes_per_hour: u32,
    /// Probes an hour at the interval in force: never more than the budget.
    pub probes_per_hour: f64,
    /// Set when the budget stretched the interval the file asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_interval_seconds: Option<f64>,
}

pub(crate) fn build<'a>(
    config: &'a Config,
    state: &Lifecycle,
    now: Instant,
    live: bool,
    heartbeat_age: f64,
) -> Status<'a> {
    let wall = SystemTime::now();
    let at = |t: Option<Instant>| t.map(|t| rfc3339(wall - now.saturating_duration_since(t)));
    Status {
        phase: match state.phase() {
            Phase::Starting => "starting",
            Phase::Serving => "serving",
            Phase::Draining { .. } => "draining",
            Phase::Drained => "drained",
        },
        readiness: state.readiness(now).as_str(),
        live,
        started: state.started(),
        draining: state.is_draining(),
        heartbeat_age_seconds: heartbeat_age,
        dependencies: config
            .dependencies
            .iter()
            .zip(state.dependencies())
            .enumerate()
            .map(|(i, (d, s))| DependencyStatus {
                name: &d.name,
                kind: d.kind.as_str(),
                critical: d.critical,
                up: state.is_up(i, now),
                interval_seconds: d.interval.std().as_secs_f64(),
                last_check: at(s.last_result_at),
                last_success: at(s.last_success_at),
                last_outcome: s.last_outcome.as_ref().map(|o| o.label()),
                latency_ms: s
                    .last_latency
                    .map(|l| (l.as_secs_f64() * 1e6).round() / 1e3),
                consecutive_failures: s.consecutive_failures,
                last_error: s.last_outcome.as_ref().and_then(|o| o.reason()),
                check: match &d.check {
                    Check::Llm(c) => Some(c.mode.as_str()),
                    _ => None,
                },
                budget: match &d.check {
                    Check::Llm(c) => c.max_probes_per_hour.map(|n| Budget {
                        max_probes_per_hour: n,
                        probes_per_hour: (3600.0 / d.interval.std().as_secs_f64() * 100.0).round()
                            / 100.0,
                        requested_interval_seconds: c
                            .requested_interval
                            .map(|r| r.std().as_secs_f64()),
                    }),
                    _ => None,
                },
            })
            .collect(),
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
