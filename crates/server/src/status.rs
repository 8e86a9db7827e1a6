//! The `/status` document.

use std::time::{Instant, SystemTime};

use serde::Serialize;
use vitals_core::config::Check;
use vitals_core::lifecycle::{Lifecycle, SignalState};
use vitals_core::signal::{SignalId, Source};

use crate::Shared;

#[derive(Debug, Serialize)]
pub(crate) struct Status<'a> {
    pub phase: &'static str,
    pub readiness: &'static str,
    pub live: bool,
    pub started: bool,
    pub draining: bool,
    pub heartbeat_age_seconds: Option<f64>,
    /// What startup still waits for (empty once started).
    pub startup_pending: Vec<&'a str>,
    pub agent: AgentStatus,
    pub dependencies: Vec<DependencyStatus<'a>>,
    /// Capabilities the agent reports (`[[signals]]`), and the gate's.
    pub signals: Vec<SignalStatus<'a>>,
    /// Supervised processes (`[[processes]]`, and `agent` in entrypoint mode): `reason` says
    /// their state (starting, restarting in Ns, given up) while they are not up.
    pub processes: Vec<SignalStatus<'a>>,
    /// `[fleet]`: whether Redis answers, and what this instance did for each shared dependency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub(crate) struct AgentStatus {
    /// `off` or `required`.
    pub heartbeat: &'static str,
    /// not_required, waiting, fresh, stale or never.
    pub heartbeat_state: &'static str,
    pub heartbeat_age_seconds: Option<f64>,
    pub stall_after_seconds: f64,
    /// `dependencies` or `signal`.
    pub startup: &'static str,
    /// Whether the agent sent its own `started`.
    pub started: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct SignalStatus<'a> {
    pub name: &'a str,
    pub critical: bool,
    pub up: bool,
    /// RFC 3339 time of the last report.
    pub last_report: Option<String>,
    /// `up` or `down` as last reported.
    pub reported: Option<&'static str>,
    /// How long the last report stays valid (its ttl, or the signal's).
    pub ttl_seconds: Option<f64>,
    /// Why it is down: the agent's reason, an expired report, or no report yet.
    pub reason: Option<String>,
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

pub(crate) fn build<'a>(shared: &'a Shared, state: &'a Lifecycle, now: Instant) -> Status<'a> {
    let config = shared.config();
    let wall = SystemTime::now();
    let at = |t: Option<Instant>| t.map(|t| rfc3339(wall - now.saturating_duration_since(t)));
    let age = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t).as_secs_f64());
    let beats = shared.beats();
    let liveness = state.liveness(now, beats);
    let signal = |id: SignalId| state.signal(id).cloned().unwrap_or_default();
    let mut dependencies = Vec::new();
    for (i, d) in config.dependencies.iter().enumerate() {
        let Some(id) = state.rules().signals.id(&d.name) else {
            continue;
        };
        let s: SignalState = signal(id);
        debug_assert_eq!(id.index(), i, "dependencies come first in the registry");
        dependencies.push(DependencyStatus {
            name: &d.name,
            kind: d.kind.as_str(),
            critical: d.critical,
            up: state.is_up(id, now),
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
                    requested_interval_seconds: c.requested_interval.map(|r| r.std().as_secs_f64()),
                }),
                _ => None,
            },
        });
    }
    let reported = |sources: &[Source]| -> Vec<SignalStatus<'_>> {
        state
            .rules()
            .signals
            .iter()
            .filter(|(_, r)| sources.contains(&r.source))
            .map(|(id, r)| {
                let s = signal(id);
                let up = state.is_up(id, now);
                SignalStatus {
                    name: &r.name,
                    critical: r.critical,
                    up,
                    last_report: at(s.last_result_at),
                    reported: s.last_outcome.as_ref().map(|o| {
                        if o.is_success() {
                            "up"
                        } else {
                            "down"
                        }
                    }),
                    ttl_seconds: s.valid_for.map(|d| d.as_secs_f64()),
                    reason: (!up).then(|| state.down_reason(id, now)),
                }
            })
            .collect()
    };
    let signals = reported(&[Source::Pushed, Source::Gate]);
    let processes = reported(&[Source::Process]);
    Status {
        phase: state.phase().as_str(),
        readiness: state.readiness(now).as_str(),
        live: liveness.is_live(),
        started: state.started(),
        draining: state.is_draining(),
        heartbeat_age_seconds: age(beats.own),
        startup_pending: state.startup_pending(),
        agent: AgentStatus {
            heartbeat: config.agent.heartbeat.as_str(),
            heartbeat_state: liveness.agent.as_str(),
            heartbeat_age_seconds: age(beats.agent),
            stall_after_seconds: config.agent.stall_after.std().as_secs_f64(),
            startup: config.agent.startup.as_str(),
            started: state.agent_started(),
        },
        dependencies,
        signals,
        processes,
        fleet: shared.fleet_status(),
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
