//! A Grafana dashboard over vitals' metrics: readiness and degraded share, dependency timeline,
//! check latency quantiles, LLM probe tokens, restarts; the gate's traffic, limits and latency;
//! supervised processes; the fleet's calls. The data source is a variable, so it imports into
//! any Grafana with a Prometheus data source.

use serde_json::{json, Value};
use vitals_core::contract::metrics as m;

pub const FILE: &str = "vitals-dashboard.json";

const DS: &str = "${datasource}";

fn datasource() -> Value {
    json!({ "type": "prometheus", "uid": DS })
}

fn target(expr: &str, legend: &str, ref_id: &str) -> Value {
    json!({
        "datasource": datasource(),
        "expr": expr,
        "legendFormat": legend,
        "refId": ref_id,
    })
}

struct Panel<'a> {
    title: &'a str,
    description: &'a str,
    kind: &'a str,
    unit: &'a str,
    targets: Vec<Value>,
    /// x, y, w, h on Grafana's 24-column grid.
    pos: (u32, u32, u32, u32),
    extra_defaults: Value,
}

fn panel(id: u32, p: Panel<'_>) -> Value {
    let mut defaults = json!({ "unit": p.unit });
    if let (Some(d), Some(extra)) = (defaults.as_object_mut(), p.extra_defaults.as_object()) {
        d.extend(extra.clone());
    }
    json!({
        "id": id,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": datasource(),
        "gridPos": { "x": p.pos.0, "y": p.pos.1, "w": p.pos.2, "h": p.pos.3 },
        "fieldConfig": { "defaults": defaults, "overrides": [] },
        "options": {},
        "targets": p.targets,
    })
}

/// The `q` quantile of histogram `h` over the selected series, from its rate.
fn quantile(q: f64, h: &str, sel: &str) -> String {
    format!("histogram_quantile({q}, sum by (le) (rate({h}_bucket{{{sel}}}[$__rate_interval])))")
}

/// The dashboard as pretty JSON.
pub fn render() -> String {
    let sel = "job=~\"$job\"";
    let panels = vec![
        panel(1, Panel {
            title: "Ready instances",
            description: "vitals_ready per instance: 1 when /readyz answers 2xx.",
            kind: "timeseries",
            unit: "none",
            targets: vec![target(&format!("{}{{{sel}}}", m::READY), "{{instance}}", "A")],
            pos: (0, 0, 12, 8),
            extra_defaults: json!({ "min": 0, "max": 1 }),
        }),
        panel(2, Panel {
            title: "Degraded share",
            description: "Share of each job's instances serving degraded (a non-critical dependency down). AgentFleetDegraded pages above 30 % for 5 minutes.",
            kind: "timeseries",
            unit: "percentunit",
            targets: vec![target(
                &format!("sum by (job) ({d}{{{sel}}}) / count by (job) ({d}{{{sel}}})", d = m::DEGRADED),
                "{{job}}",
                "A",
            )],
            pos: (12, 0, 12, 8),
            extra_defaults: json!({
                "min": 0,
                "max": 1,
                "thresholds": { "mode": "absolute", "steps": [
                    { "color": "green", "value": null },
                    { "color": "red", "value": 0.3 }
                ] }
            }),
        }),
        panel(3, Panel {
            title: "Dependencies up / down",
            description: "vitals_dependency_up per instance and dependency, after thresholds and staleness.",
            kind: "state-timeline",
            unit: "none",
            targets: vec![target(
                &format!("{}{{{sel}}}", m::DEPENDENCY_UP),
                "{{instance}} {{dependency}}",
                "A",
            )],
            pos: (0, 8, 24, 8),
            extra_defaults: json!({
                "mappings": [
                    { "type": "value", "options": {
                        "0": { "text": "down", "color": "red" },
                        "1": { "text": "up", "color": "green" }
                    } }
                ]
            }),
        }),
        panel(4, Panel {
            title: "Check latency",
            description: "Quantiles of vitals_dependency_check_duration_seconds per dependency.",
            kind: "timeseries",
            unit: "s",
            targets: ["0.5", "0.95", "0.99"]
                .iter()
                .zip(["A", "B", "C"])
                .map(|(q, r)| {
                    target(
                        &format!("histogram_quantile({q}, sum by (le, dependency) (rate({h}_bucket{{{sel}}}[$__rate_interval])))", h = m::CHECK_DURATION),
                        &format!("p{} {{{{dependency}}}}", &q[2..]),
                        r,
                    )
                })
                .collect(),
            pos: (0, 16, 12, 8),
            extra_defaults: json!({}),
        }),
        panel(5, Panel {
            title: "Check outcomes",
            description: "Dependency checks per second by outcome (success, failure, timeout).",
            kind: "timeseries",
            unit: "ops",
            targets: vec![target(
                &format!("sum by (dependency, outcome) (rate({}{{{sel}}}[$__rate_interval]))", m::CHECKS_TOTAL),
                "{{dependency}} {{outcome}}",
                "A",
            )],
            pos: (12, 16, 12, 8),
            extra_defaults: json!({}),
        }),
        panel(6, Panel {
            title: "LLM probe tokens per hour",
            description: "Tokens the LLM probes spent over the last hour, from the provider's usage.",
            kind: "timeseries",
            unit: "short",
            targets: vec![target(
                &format!("sum by (dependency, direction) (increase({}{{{sel}}}[1h]))", m::LLM_TOKENS_TOTAL),
                "{{dependency}} {{direction}}",
                "A",
            )],
            pos: (0, 24, 12, 8),
            extra_defaults: json!({}),
        }),
        panel(7, Panel {
            title: "Restarts per hour",
            description: "How often vitals restarted on each instance in the last hour (changes of process_start_time_seconds). AgentRestartLoop pages at more than 3 in 10 minutes.",
            kind: "timeseries",
            unit: "short",
            targets: vec![target(
                &format!("changes({}{{{sel}}}[1h])", m::PROCESS_START),
                "{{instance}}",
                "A",
            )],
            pos: (12, 24, 12, 8),
            extra_defaults: json!({}),
        }),
        panel(9, Panel {
            title: "Gate requests by outcome",
            description: "Requests through [gate] per second: ok, upstream_error, shed_queue_full, shed_queue_timeout, circuit_open, client_cancelled, bad_request. AgentGateShedding files a ticket above 5 % shed for 10 minutes. Empty without a gate.",
            kind: "timeseries",
            unit: "reqps",
            targets: vec![target(
                &format!("sum by (outcome) (rate({}{{{sel}}}[5m]))", m::GATE_REQUESTS_TOTAL),
                "{{outcome}}",
                "A",
            )],
            pos: (0, 32, 12, 8),
            extra_defaults: json!({ "min": 0 }),
        }),
        panel(10, Panel {
            title: "Gate slots, queue and circuit",
            description: "Requests at the upstream (in flight) against the limit, requests waiting in the gate's queue, and the circuit (0 closed, 1 open, 2 half-open), per instance. Empty without a gate.",
            kind: "timeseries",
            unit: "none",
            targets: vec![
                target(&format!("{}{{{sel}}}", m::GATE_IN_FLIGHT), "in flight {{instance}}", "A"),
                target(&format!("{}{{{sel}}}", m::GATE_CONCURRENCY_LIMIT), "limit {{instance}}", "B"),
                target(&format!("{}{{{sel}}}", m::GATE_QUEUE_DEPTH), "queued {{instance}}", "C"),
                target(&format!("{}{{{sel}}}", m::GATE_CIRCUIT_STATE), "circuit {{instance}}", "D"),
            ],
            pos: (12, 32, 12, 8),
            extra_defaults: json!({ "min": 0 }),
        }),
        panel(11, Panel {
            title: "Supervised process restarts",
            description: "Restarts of the processes vitals supervises ([[processes]], or the agent in entrypoint mode) in the last 10 minutes, by why: exited, unhealthy, start_timeout, stalled, port_in_use, spawn_failed. AgentRestartLoop pages at more than 3 in 10 minutes. Empty without supervised processes.",
            kind: "timeseries",
            unit: "short",
            targets: vec![target(
                &format!(
                    "sum by (instance, process, reason) (increase({}{{{sel}}}[10m]))",
                    m::PROCESS_RESTARTS_TOTAL
                ),
                "{{process}} {{reason}} {{instance}}",
                "A",
            )],
            pos: (0, 40, 12, 8),
            extra_defaults: json!({ "min": 0 }),
        }),
        panel(12, Panel {
            title: "Supervised processes: up, memory, GPU",
            description: "1 while a supervised process runs and passes its health check; its resident memory; and, where NVML is present, GPU utilisation and the GPU memory it holds. Empty without supervised processes.",
            kind: "timeseries",
            unit: "none",
            targets: vec![
                target(&format!("{}{{{sel}}}", m::PROCESS_UP), "up {{process}} {{instance}}", "A"),
                target(&format!("{}{{{sel}}} / 2^30", m::PROCESS_RESIDENT_MEMORY), "RSS GiB {{process}} {{instance}}", "B"),
                target(&format!("{}{{{sel}}}", m::GPU_UTILIZATION), "GPU {{gpu}} busy {{instance}}", "C"),
                target(&format!("{}{{{sel}}} / 2^30", m::PROCESS_GPU_MEMORY), "GPU {{gpu}} GiB {{process}} {{instance}}", "D"),
            ],
            pos: (12, 40, 12, 8),
            extra_defaults: json!({ "min": 0 }),
        }),
        panel(13, Panel {
            title: "Fleet: upstream calls per minute",
            description: "Checks of shared dependencies made against the upstream by the whole fleet (performed by the lease holder, or fallback while Redis is unreachable), per minute: one per interval however many instances, N per interval during a Redis outage. Empty without [fleet].",
            kind: "timeseries",
            unit: "short",
            targets: vec![
                target(
                    &format!(
                        "sum by (dependency) (rate({}{{{sel}, role=~\"performed|fallback\"}}[5m])) * 60",
                        m::FLEET_CHECKS_TOTAL
                    ),
                    "{{dependency}}",
                    "A",
                ),
                target(
                    &format!("count({}{{{sel}}} == 0)", m::FLEET_CONNECTED),
                    "instances without Redis",
                    "B",
                ),
            ],
            pos: (0, 48, 12, 8),
            extra_defaults: json!({ "min": 0 }),
        }),
        panel(14, Panel {
            title: "Gate latency",
            description: "Through [gate], over the selected instances: the upstream's first byte (p50, p99), the whole answer from arrival to its last byte (p99: for a stream, the model's generation time), and the wait in the gate's queue (p99, never above queue_timeout). Empty without a gate.",
            kind: "timeseries",
            unit: "s",
            targets: vec![
                target(&quantile(0.5, m::GATE_TIME_TO_FIRST_BYTE, sel), "first byte p50", "A"),
                target(&quantile(0.99, m::GATE_TIME_TO_FIRST_BYTE, sel), "first byte p99", "B"),
                target(&quantile(0.99, m::GATE_REQUEST_DURATION, sel), "whole answer p99", "C"),
                target(&quantile(0.99, m::GATE_QUEUE_WAIT, sel), "queue wait p99", "D"),
            ],
            pos: (12, 48, 12, 8),
            extra_defaults: json!({ "min": 0 }),
        }),
    ];
    let dashboard = json!({
        "uid": "vitals-agents",
        "title": "vitals: agent health",
        "description": "Readiness, degraded share, dependencies, check latency, LLM probe tokens and restarts of agents probed by vitals; the gate in front of their model server, supervised processes and the fleet's shared checks.",
        "tags": ["vitals", "agents"],
        "editable": true,
        "schemaVersion": 39,
        "time": { "from": "now-6h", "to": "now" },
        "refresh": "30s",
        "templating": { "list": [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "hide": 0,
            },
            {
                "name": "job",
                "label": "Job",
                "type": "query",
                "datasource": datasource(),
                "query": format!("label_values({}, job)", m::READY),
                "refresh": 2,
                "includeAll": true,
                "multi": true,
                "allValue": ".+",
                "hide": 0,
            },
        ] },
        "annotations": { "list": [] },
        "panels": panels,
    });
    let mut s = serde_json::to_string_pretty(&dashboard).expect("json values serialize");
    s.push('\n');
    s
}
