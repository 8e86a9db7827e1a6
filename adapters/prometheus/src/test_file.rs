//! The `promtool test rules` file: for each alert, input series that cross its threshold, and
//! evaluations one step before (quiet) and at it (firing), with the exact labels and annotations.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{Options, Restarts, Rule, RULES_FILE};

#[derive(Debug, Serialize)]
struct TestFile {
    rule_files: Vec<String>,
    evaluation_interval: String,
    tests: Vec<Case>,
}

#[derive(Debug, Serialize)]
struct Case {
    name: String,
    interval: String,
    input_series: Vec<Series>,
    alert_rule_test: Vec<AlertTest>,
}

#[derive(Debug, Serialize)]
struct Series {
    series: String,
    values: String,
}

#[derive(Debug, Serialize)]
struct AlertTest {
    eval_time: String,
    alertname: String,
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Debug, Serialize)]
struct ExpAlert {
    exp_labels: BTreeMap<String, String>,
    exp_annotations: BTreeMap<String, String>,
}

type Labels = Vec<(String, String)>;
type LabelsOf<'a> = Box<dyn Fn(&str) -> Labels + 'a>;

fn series(name: &str, labels: &Labels, values: &str) -> Series {
    let l: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", crate::promql_string(v)))
        .collect();
    Series {
        series: format!("{name}{{{}}}", l.join(", ")),
        values: values.into(),
    }
}

/// The alert `rule` raises for a series with `labels`, annotations expanded as Prometheus does.
fn expect(rule: &Rule, labels: &Labels) -> ExpAlert {
    let mut exp_labels: BTreeMap<String, String> = labels.iter().cloned().collect();
    exp_labels.extend(rule.labels.clone());
    let exp_annotations = rule
        .annotations
        .iter()
        .map(|(k, v)| {
            let mut text = expand_if(v, labels);
            for (name, value) in labels {
                text = text.replace(&format!("{{{{ $labels.{name} }}}}"), value);
            }
            (k.clone(), text)
        })
        .collect();
    ExpAlert {
        exp_labels,
        exp_annotations,
    }
}

/// Expands `{{ if $labels.X }}A{{ else }}B{{ end }}` as Prometheus's templates do: A when the
/// alert has label X, else B.
fn expand_if(text: &str, labels: &Labels) -> String {
    let Some(start) = text.find("{{ if $labels.") else {
        return text.to_owned();
    };
    let rest = &text[start + "{{ if $labels.".len()..];
    let (name, rest) = rest.split_once(" }}").expect("an if names a label");
    let (then, rest) = rest.split_once("{{ else }}").expect("an if has an else");
    let (otherwise, after) = rest.split_once("{{ end }}").expect("an if has an end");
    let chosen = if labels.iter().any(|(k, _)| k == name) {
        then
    } else {
        otherwise
    };
    format!("{}{chosen}{}", &text[..start], expand_if(after, labels))
}

fn at(rule: &Rule, eval_time: &str, alerts: Vec<ExpAlert>) -> AlertTest {
    AlertTest {
        eval_time: eval_time.into(),
        alertname: rule.alert.clone(),
        exp_alerts: alerts,
    }
}

pub fn render(rules: &[Rule], options: &Options) -> String {
    let job = if options.job.is_empty() {
        "agent".to_string()
    } else {
        options.job.clone()
    };
    let instance = |name: &str| -> Labels {
        vec![
            ("instance".to_string(), format!("{name}:8080")),
            ("job".to_string(), job.clone()),
        ]
    };
    let find = |name: &str| rules.iter().find(|r| r.alert == name);
    let mut tests = Vec::new();

    if let Some(r) = find("AgentNotReady") {
        let (a, b) = (instance("10.0.0.1"), instance("10.0.0.2"));
        tests.push(Case {
            name: "AgentNotReady: 1m59s not ready is quiet, 2m01s pages; a draining instance never does".into(),
            interval: "10s".into(),
            input_series: vec![
                // Not ready from t=10s on.
                series("vitals_ready", &a, "1 0x60"),
                series("vitals_started", &a, "1x61"),
                series("vitals_draining", &a, "0x61"),
                series("vitals_ready", &b, "1 0x60"),
                series("vitals_started", &b, "1x61"),
                series("vitals_draining", &b, "0 1x60"),
            ],
            alert_rule_test: vec![
                at(r, "2m9s", vec![]),
                at(r, "2m11s", vec![expect(r, &a)]),
            ],
        });
    }

    if let Some(r) = find("AgentFleetDegraded") {
        let fleet = |n: usize, degraded: usize| -> Vec<Series> {
            (0..n)
                .map(|i| {
                    let mut l = instance(&format!("10.1.0.{i}"));
                    for g in &options.group_by {
                        if g != "job" && g != "instance" {
                            l.push((g.clone(), "fleet".into()));
                        }
                    }
                    series(
                        "vitals_degraded",
                        &l,
                        if i < degraded { "0 1x60" } else { "0x61" },
                    )
                })
                .collect()
        };
        let mut group: Labels = Vec::new();
        for g in &options.group_by {
            match g.as_str() {
                "job" => group.push(("job".into(), job.clone())),
                "instance" => {}
                other => group.push((other.into(), "fleet".into())),
            }
        }
        tests.push(Case {
            name: "AgentFleetDegraded: 3 of 10 (30%) degraded never pages".into(),
            interval: "10s".into(),
            input_series: fleet(10, 3),
            alert_rule_test: vec![at(r, "10m", vec![])],
        });
        tests.push(Case {
            name: "AgentFleetDegraded: 4 of 13 (31%) degraded pages after 5 minutes, not before"
                .into(),
            interval: "10s".into(),
            input_series: fleet(13, 4),
            alert_rule_test: vec![
                at(r, "5m9s", vec![]),
                at(r, "5m11s", vec![expect(r, &group)]),
            ],
        });
    }

    if let Some(r) = find("AgentRestartLoop") {
        let (name, four, three, labels_of): (&str, &str, &str, LabelsOf<'_>) =
            match options.restarts {
                Restarts::ProcessStart => (
                    "process_start_time_seconds",
                    "100 200 300 400 500 500x10",
                    "100 200 300 400 400x10",
                    Box::new(|i: &str| instance(i)),
                ),
                Restarts::KubeStateMetrics => (
                    "kube_pod_container_status_restarts_total",
                    "0 1 2 3 4 4x10",
                    "0 1 2 3 3x10",
                    Box::new(|pod: &str| {
                        vec![
                            ("container".into(), options.container.clone()),
                            ("namespace".into(), "default".to_string()),
                            ("pod".into(), pod.to_string()),
                        ]
                    }),
                ),
            };
        let (r4, r3) = (labels_of("10.2.0.4"), labels_of("10.2.0.3"));
        tests.push(Case {
            name: "AgentRestartLoop: 3 restarts in 10 minutes are quiet, the 4th pages".into(),
            interval: "1m".into(),
            input_series: vec![series(name, &r4, four), series(name, &r3, three)],
            alert_rule_test: vec![at(r, "3m59s", vec![]), at(r, "4m", vec![expect(r, &r4)])],
        });
    }

    if let Some(r) =
        find("AgentRestartLoop").filter(|r| r.expr.contains("vitals_process_restarts_total"))
    {
        let with = |i: &str, process: &str, reason: &str| {
            let mut l = instance(i);
            l.push(("process".into(), process.into()));
            l.push(("reason".into(), reason.into()));
            l
        };
        let fired = {
            let mut l = instance("10.6.0.1");
            l.push(("process".into(), "llama".into()));
            l
        };
        tests.push(Case {
            name: "AgentRestartLoop: 3 restarts of a supervised process in 10 minutes are quiet, the 4th pages, whatever their reasons".into(),
            interval: "1m".into(),
            input_series: vec![
                series("vitals_process_restarts_total", &with("10.6.0.1", "llama", "exited"), "0 1 2 2 2x10"),
                series("vitals_process_restarts_total", &with("10.6.0.1", "llama", "unhealthy"), "0 0 0 1 2 2x10"),
                series("vitals_process_restarts_total", &with("10.6.0.2", "llama", "exited"), "0 1 2 3 3x10"),
            ],
            alert_rule_test: vec![at(r, "3m", vec![]), at(r, "4m", vec![expect(r, &fired)])],
        });
    }

    if let Some(r) = find("AgentDependencyDown") {
        let mut l = instance("10.3.0.1");
        l.extend([
            ("critical".into(), "true".to_string()),
            ("dependency".into(), "llm".to_string()),
            ("kind".into(), "openai".to_string()),
        ]);
        let mut optional = instance("10.3.0.1");
        optional.extend([
            ("critical".into(), "false".to_string()),
            ("dependency".into(), "search".to_string()),
            ("kind".into(), "http".to_string()),
        ]);
        tests.push(Case {
            name: "AgentDependencyDown: a critical dependency down 2 minutes is named; a non-critical one is not".into(),
            interval: "10s".into(),
            input_series: vec![
                series("vitals_dependency_up", &l, "1 0x60"),
                series("vitals_dependency_up", &optional, "1 0x60"),
            ],
            alert_rule_test: vec![
                at(r, "2m9s", vec![]),
                at(r, "2m11s", vec![expect(r, &l)]),
            ],
        });
    }

    if let Some(r) = find("AgentProbeStale") {
        // The first dependency's series, read from the rule itself.
        if let Some(dep) = r
            .expr
            .split("dependency=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
        {
            let mut l = instance("10.4.0.1");
            l.push(("dependency".into(), dep.to_string()));
            let mut with_outcome = l.clone();
            with_outcome.push(("outcome".into(), "success".to_string()));
            tests.push(Case {
                name: format!("AgentProbeStale: checks of {dep} that keep completing are quiet; when they stop, it fires"),
                interval: "10s".into(),
                // One check every 10s for 10 minutes, then none for 2 hours.
                input_series: vec![series(
                    "vitals_dependency_checks_total",
                    &with_outcome,
                    "0+1x60 60x720",
                )],
                alert_rule_test: vec![
                    at(r, "10m", vec![]),
                    at(r, "2h", vec![expect(r, &l)]),
                ],
            });
        }
    }

    if let Some(r) = find("AgentGateShedding") {
        let l = instance("10.5.0.1");
        let with = |outcome: &str| {
            let mut o = l.clone();
            o.push(("outcome".into(), outcome.to_string()));
            o
        };
        tests.push(Case {
            name: "AgentGateShedding: no shedding is quiet; 10 % shed for 10 minutes fires".into(),
            interval: "1m".into(),
            // 100 served a minute throughout; from minute 20 on, 10 more shed a minute.
            input_series: vec![
                series("vitals_gate_requests_total", &with("ok"), "0+100x60"),
                series(
                    "vitals_gate_requests_total",
                    &with("shed_queue_full"),
                    "0x20 0+10x40",
                ),
            ],
            alert_rule_test: vec![
                at(r, "20m", vec![]),
                at(r, "28m", vec![]),
                at(r, "40m", vec![expect(r, &l)]),
            ],
        });
    }

    let file = TestFile {
        rule_files: vec![RULES_FILE.into()],
        evaluation_interval: "1s".into(),
        tests,
    };
    format!(
        "# Rendered by `vitals render alerts`: run with `promtool test rules {}`.\n{}",
        crate::TEST_FILE,
        serde_yaml_ng::to_string(&file).expect("plain structs serialize")
    )
}
