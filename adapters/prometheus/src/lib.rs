//! Prometheus alerting rules for vitals' metrics, and a `promtool test rules` file rendered beside
//! them that pins each alert's threshold: quiet one evaluation before, firing at it.
//!
//! - `AgentNotReady`: started, not draining, `vitals_ready == 0` for 2 minutes (page);
//! - `AgentFleetDegraded`: more than 30 % of a group's instances degraded for 5 minutes (page);
//! - `AgentRestartLoop`: more than 3 restarts of one instance in 10 minutes (page), from vitals'
//!   own `process_start_time_seconds` (every platform), or on Kubernetes from kube-state-metrics;
//!   with `[[processes]]`, also more than 3 restarts of one supervised process;
//! - `AgentDependencyDown`: a critical dependency down for 2 minutes, named (ticket);
//! - `AgentProbeStale`: no check of a dependency completed for 5 of its intervals (at least two
//!   minutes, so that several scrapes fall in the window): the poller itself is stuck (ticket);
//! - `AgentGateShedding` (with `[gate]`): the gate has shed more than 5 % of its requests (full
//!   queue, queue timeout, open circuit) for 10 minutes: the instance needs more capacity or
//!   the upstream is failing (ticket).
//!
//! A single liveness failure pages nothing: no rule reads `vitals_live`.
//!
//! [`dashboard`] renders the Grafana dashboard over the same metrics.

pub mod dashboard;
mod test_file;

use std::collections::BTreeMap;

use serde::Serialize;
use vitals_core::contract::metrics as m;
use vitals_core::spec::{Rendered, RenderedFile};
use vitals_core::{Config, Duration};

pub const RULES_FILE: &str = "vitals-alerts.yml";
pub const TEST_FILE: &str = "vitals-alerts_test.yml";

/// Where restarts are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restarts {
    /// Changes of vitals' own `process_start_time_seconds` per instance: works wherever an
    /// instance keeps its scrape address across restarts (Nomad, ECS on EC2, VMs).
    #[default]
    ProcessStart,
    /// `kube_pod_container_status_restarts_total` from kube-state-metrics (a restarted
    /// container keeps its pod, so the counter is the truth there).
    KubeStateMetrics,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The scrape job's name (`job` label); empty selects every vitals target.
    pub job: String,
    /// The labels that make a fleet for `AgentFleetDegraded` (default `job`).
    pub group_by: Vec<String>,
    pub restarts: Restarts,
    /// The vitals container's name, for the Kubernetes restart counter.
    pub container: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            job: String::new(),
            group_by: vec!["job".into()],
            restarts: Restarts::ProcessStart,
            container: "vitals".into(),
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct RuleFile {
    pub groups: Vec<Group>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Group {
    pub name: String,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Rule {
    pub alert: String,
    pub expr: String,
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// A Prometheus duration (`2m`, `90s`): whole seconds, the largest exact unit.
pub fn prom_duration(d: Duration) -> String {
    let s = d.as_secs_ceil();
    if s > 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s > 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// `value` as a PromQL string literal: backslashes, quotes and line breaks escaped, so a label
/// value from a flag stays a value (`a\\" or vector(1)` would otherwise end the string early).
pub(crate) fn promql_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn selector(options: &Options, extra: &str) -> String {
    let mut parts = Vec::new();
    if !options.job.is_empty() {
        parts.push(format!("job={}", promql_string(&options.job)));
    }
    if !extra.is_empty() {
        parts.push(extra.to_string());
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(", "))
    }
}

fn rule(
    alert: &str,
    expr: String,
    for_: Option<&str>,
    severity: &str,
    summary: &str,
    description: &str,
    runbook: &str,
) -> Rule {
    Rule {
        alert: alert.into(),
        expr,
        for_: for_.map(str::to_string),
        labels: BTreeMap::from([("severity".to_string(), severity.to_string())]),
        annotations: BTreeMap::from([
            ("summary".to_string(), summary.to_string()),
            ("description".to_string(), description.to_string()),
            ("runbook".to_string(), runbook.to_string()),
        ]),
    }
}

pub(crate) fn rules(config: &Config, options: &Options) -> Vec<Rule> {
    let sel = |extra: &str| selector(options, extra);
    let by = options.group_by.join(", ");
    let on = "on (job, instance)";
    let mut rules = vec![
        rule(
            "AgentNotReady",
            format!(
                "({ready} == 0) and {on} ({started} == 1) unless {on} ({draining} == 1)",
                ready = format_args!("{}{}", m::READY, sel("")),
                started = format_args!("{}{}", m::STARTED, sel("")),
                draining = format_args!("{}{}", m::DRAINING, sel("")),
            ),
            Some("2m"),
            "page",
            "{{ $labels.instance }} of {{ $labels.job }} has not been ready for 2 minutes",
            "vitals on {{ $labels.instance }} answers /readyz with 503: a critical dependency is down or stale. The instance gets no traffic but is not restarted.",
            "curl {{ $labels.instance }}/readyz?verbose names the failing dependency and its reason; /status has the detail.",
        ),
        rule(
            "AgentFleetDegraded",
            format!(
                "(sum by ({by}) ({d}{s}) / count by ({by}) ({d}{s})) > 0.3",
                d = m::DEGRADED,
                s = sel("")
            ),
            Some("5m"),
            "page",
            "more than 30% of {{ $labels.job }} is degraded",
            "More than 30% of the instances have been serving in degraded mode (a non-critical dependency down) for 5 minutes: a shared tool or provider is failing.",
            "vitals_dependency_up == 0 shows which dependency; check that tool's status and the agents' fallbacks.",
        ),
    ];
    let mut restarts = match options.restarts {
        Restarts::ProcessStart => rule(
            "AgentRestartLoop",
            format!(
                "changes({}{}[10m]) > 3",
                m::PROCESS_START,
                sel("")
            ),
            None,
            "page",
            "{{ $labels.instance }} of {{ $labels.job }} restarted more than 3 times in 10 minutes",
            "vitals started more than 3 times on {{ $labels.instance }} in 10 minutes: the platform keeps killing the instance (liveness failures, out of memory, or a crash).",
            "Look at the platform's events and the last exit reason; a liveness probe that is too strict for a slow boot is a common cause (raise startup.timeout).",
        ),
        Restarts::KubeStateMetrics => {
            let s = selector(
                &Options {
                    job: String::new(),
                    ..options.clone()
                },
                &format!("container={}", promql_string(&options.container)),
            );
            rule(
                "AgentRestartLoop",
                format!(
                    "(max_over_time(kube_pod_container_status_restarts_total{s}[10m]) - min_over_time(kube_pod_container_status_restarts_total{s}[10m])) > 3"
                ),
                None,
                "page",
                "{{ $labels.namespace }}/{{ $labels.pod }} restarted more than 3 times in 10 minutes",
                "The {{ $labels.container }} container of {{ $labels.pod }} restarted more than 3 times in 10 minutes.",
                "kubectl describe pod {{ $labels.pod }} shows the last state and the probe failures; a liveness probe too strict for a slow boot is a common cause (raise startup.timeout).",
            )
        }
    };
    if !config.processes.is_empty() {
        // The processes vitals restarts itself, which the platform never sees: one alert, whose
        // text says which kind of restart fired it (a series with a `process` label).
        let r = format!("{}{}", m::PROCESS_RESTARTS_TOTAL, sel(""));
        restarts.expr = format!(
            "({}) or ((max_over_time(sum by (job, instance, process) ({r})[10m:1m]) - min_over_time(sum by (job, instance, process) ({r})[10m:1m])) > 3)",
            restarts.expr
        );
        for (key, process_text) in [
            ("summary", "process {{ $labels.process }} on {{ $labels.instance }} restarted more than 3 times in 10 minutes"),
            ("description", "vitals restarted its supervised process {{ $labels.process }} more than 3 times in 10 minutes: it keeps exiting, failing its health check or hanging."),
            ("runbook", "vitals_process_restarts_total by reason says why; /readyz?verbose gives the last reason and the backoff, and vitals' log carries the process's own output (field process)."),
        ] {
            if let Some(text) = restarts.annotations.get_mut(key) {
                *text = format!("{{{{ if $labels.process }}}}{process_text}{{{{ else }}}}{text}{{{{ end }}}}");
            }
        }
    }
    rules.push(restarts);
    rules.push(rule(
        "AgentDependencyDown",
        format!("{}{} == 0", m::DEPENDENCY_UP, sel("critical=\"true\"")),
        Some("2m"),
        "ticket",
        "critical dependency {{ $labels.dependency }} of {{ $labels.instance }} is down",
        "The {{ $labels.kind }} dependency {{ $labels.dependency }} has failed its checks for 2 minutes, so {{ $labels.instance }} is not ready.",
        "curl {{ $labels.instance }}/readyz/{{ $labels.dependency }} gives the reason of the last failure.",
    ));
    // Per dependency: its own interval sets how long "no check at all" may last.
    let stale: Vec<String> = config
        .dependencies
        .iter()
        .map(|d| {
            let window = prom_duration(stale_window(d.interval));
            format!(
                "(sum by (job, instance, dependency) (increase({}{}[{window}])) == 0)",
                m::CHECKS_TOTAL,
                sel(&format!("dependency=\"{}\"", d.name))
            )
        })
        .collect();
    if !stale.is_empty() {
        rules.push(rule(
            "AgentProbeStale",
            stale.join(" or "),
            Some("1m"),
            "ticket",
            "checks of {{ $labels.dependency }} on {{ $labels.instance }} have stopped",
            "No check of {{ $labels.dependency }} has completed for 5 of its intervals (at least 2 minutes, so that several scrapes fall in the window): the poller is stuck, so readiness rests on a stale result until it expires.",
            "Restart the instance and report it with its /status output and logs.",
        ));
    }
    if config.gate.is_some() {
        let shed = sel("outcome=~\"shed_queue_full|shed_queue_timeout|circuit_open\"");
        rules.push(rule(
            "AgentGateShedding",
            format!(
                "(sum by (job, instance) (rate({r}{shed}[5m])) / sum by (job, instance) (rate({r}{all}[5m]))) > 0.05",
                r = GATE_REQUESTS,
                all = sel(""),
            ),
            Some("10m"),
            "ticket",
            "the gate of {{ $labels.instance }} sheds more than 5% of requests",
            "For 10 minutes the gate on {{ $labels.instance }} has answered more than 5% of inference requests with 503 (queue full, queue timeout or circuit open): traffic exceeds what the upstream serves, or the upstream is failing.",
            "vitals_gate_requests_total by outcome says which: shed_* means add replicas or slots (max_concurrent), circuit_open means the upstream fails (/readyz?verbose has the reason).",
        ));
    }
    rules
}

const GATE_REQUESTS: &str = m::GATE_REQUESTS_TOTAL;

/// The shortest window `AgentProbeStale` looks back over: `increase()` needs two samples in its
/// window, and a scrape interval of 30s puts four in two minutes. A 1s check interval alone gave
/// a 5s window with no sample in it, so the alert could never fire.
const MIN_STALE_WINDOW: Duration = Duration::from_secs(120);

/// How long no check may complete before the poller counts as stuck: 5 intervals, or
/// [`MIN_STALE_WINDOW`] when that is longer.
fn stale_window(interval: Duration) -> Duration {
    interval.saturating_mul(5).max(MIN_STALE_WINDOW)
}

/// Renders `alerts/vitals-alerts.yml` and its `promtool test rules` file.
pub fn render(config: &Config, options: &Options) -> Rendered {
    let rules = rules(config, options);
    let file = RuleFile {
        groups: vec![Group {
            name: "vitals".into(),
            rules: rules.clone(),
        }],
    };
    let header = "# Rendered by `vitals render alerts` from health.toml; load with rule_files in prometheus.yml.\n";
    let yaml = serde_yaml_ng::to_string(&file).expect("plain structs serialize");
    Rendered {
        files: vec![
            RenderedFile {
                name: RULES_FILE.into(),
                contents: format!("{header}{yaml}"),
            },
            RenderedFile {
                name: TEST_FILE.into(),
                contents: test_file::render(&rules, options),
            },
        ],
        notes: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
