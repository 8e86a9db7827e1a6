use proptest::prelude::*;
use serde_yaml_ng::Value;
use vitals_core::spec::Layout;
use vitals_core::Duration;
use vitals_test_util::{arb_spec, assert_golden, assert_limits, spec_from_toml, Change};

use super::*;

fn golden(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn workload(layout: Layout) -> Workload {
    Workload {
        layout,
        ..Workload::default()
    }
}

/// The Deployment rendered from `toml`, parsed.
fn deployment_doc(toml: &str, layout: Layout) -> Value {
    let r = render(&spec_from_toml(toml), &workload(layout), Output::Deployment).unwrap();
    workload_doc(&r)
}

/// `deployment.yaml` or `deployment-patch.yaml`.
fn only_file(r: &Rendered) -> &str {
    assert!(r.files[0].name.starts_with("deployment"), "{r:?}");
    &r.files[0].contents
}

/// Every YAML document of `text`.
fn docs(text: &str) -> Vec<Value> {
    use serde::Deserialize as _;
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

/// The Deployment (or the patch) among the rendered documents.
fn workload_doc(r: &Rendered) -> Value {
    docs(only_file(r))
        .into_iter()
        .find(|d| d["kind"] == "Deployment" || d["kind"].is_null())
        .expect("a Deployment or a patch")
}

const SLOW_BOOT: &str = r#"
[server]
listen = "0.0.0.0:9090"
[startup]
timeout = "300s"
[drain]
delay = "5s"
grace = "30s"
[probes]
startup = { period = "10s", timeout = "3s" }
"#;

/// A sidecar workload whose vitals gets `toml` and needs one secret, as `vitals render` builds it.
fn configured(toml: &str) -> Workload {
    Workload {
        config_toml: Some(toml.into()),
        secret_env: vec!["OPENAI_API_KEY".into()],
        ..workload(Layout::Sidecar)
    }
}

#[test]
fn sidecar_deployment_matches_golden() {
    let r = render(
        &spec_from_toml(SLOW_BOOT),
        &configured(SLOW_BOOT),
        Output::Deployment,
    )
    .unwrap();
    assert_golden(golden("sidecar.yaml"), only_file(&r));
    assert_golden(golden("servicemonitor.yaml"), &r.files[1].contents);
}

/// The first wave's crash loop: `--config` pointed at a file nothing put there. The file the
/// container reads is the ConfigMap's text, at the path `--config` names, and each secret comes
/// from the Secret the note tells the user to create.
#[test]
fn the_configuration_and_its_secrets_reach_the_vitals_container() {
    let r = render(
        &spec_from_toml(SLOW_BOOT),
        &configured(SLOW_BOOT),
        Output::Deployment,
    )
    .unwrap();
    let all = docs(only_file(&r));
    let map = all.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let pod = &workload_doc(&r)["spec"]["template"]["spec"];
    let vitals = pod["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "vitals")
        .unwrap();
    let args = vitals["args"].as_sequence().unwrap();
    assert_eq!(args[0], "serve");
    assert_eq!(args[1], "--config");
    let config_path = args[2].as_str().unwrap();

    // Follow the path the way kubelet does: mount → volume → ConfigMap item → data.
    let mount = &vitals["volumeMounts"][0];
    assert_eq!(mount["readOnly"], true);
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(volume["configMap"]["name"], map["metadata"]["name"]);
    let item = &volume["configMap"]["items"][0];
    assert_eq!(
        format!(
            "{}/{}",
            mount["mountPath"].as_str().unwrap(),
            item["path"].as_str().unwrap()
        ),
        config_path
    );
    assert_eq!(
        map["data"][item["key"].as_str().unwrap()].as_str(),
        Some(SLOW_BOOT),
        "the container must read the very text that was rendered"
    );

    let env = &vitals["env"][0];
    assert_eq!(env["name"], "OPENAI_API_KEY");
    assert_eq!(env["valueFrom"]["secretKeyRef"]["name"], "agent-secrets");
    assert_eq!(env["valueFrom"]["secretKeyRef"]["key"], "OPENAI_API_KEY");
    assert!(
        r.notes.iter().any(|n| n.contains(
            "kubectl create secret generic agent-secrets --from-literal=OPENAI_API_KEY=..."
        )),
        "{:?}",
        r.notes
    );
    // A changed file changes the pod template, so the Deployment rolls.
    let other = render(
        &spec_from_toml(SLOW_BOOT),
        &configured(&format!("{SLOW_BOOT}\n# edited\n")),
        Output::Deployment,
    )
    .unwrap();
    let hash = |d: &Value| {
        d["spec"]["template"]["metadata"]["annotations"]["vitals/config-sha256"].clone()
    };
    assert_ne!(hash(&workload_doc(&r)), hash(&workload_doc(&other)));
    assert!(hash(&workload_doc(&r)).is_string());
}

/// The Service sends traffic to the agent's port and names vitals' port; the ServiceMonitor
/// finds that Service and port. Each reference is followed as Kubernetes resolves it.
#[test]
fn the_service_and_the_service_monitor_reach_the_right_ports() {
    for layout in [Layout::Sidecar, Layout::Embedded] {
        let r = render(
            &spec_from_toml(SLOW_BOOT),
            &workload(layout),
            Output::Deployment,
        )
        .unwrap();
        let all = docs(only_file(&r));
        let service = all.iter().find(|d| d["kind"] == "Service").unwrap();
        let pod_template = &workload_doc(&r)["spec"]["template"];
        for (k, v) in service["spec"]["selector"].as_mapping().unwrap() {
            assert_eq!(&pod_template["metadata"]["labels"][k.as_str().unwrap()], v);
        }
        let container_port = |name: &str| -> Option<(String, i64)> {
            pod_template["spec"]["containers"]
                .as_sequence()
                .unwrap()
                .iter()
                .flat_map(|c| {
                    c["ports"]
                        .as_sequence()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(move |p| (c["name"].as_str().unwrap().to_owned(), p))
                })
                .find(|(_, p)| p["name"] == name)
                .map(|(c, p)| (c, p["containerPort"].as_i64().unwrap()))
        };
        let http = service["spec"]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "http")
            .unwrap();
        let (container, port) = container_port(http["targetPort"].as_str().unwrap()).unwrap();
        assert_eq!(container, "agent", "{layout:?}: traffic goes to the agent");
        assert_eq!(
            port,
            if layout == Layout::Sidecar {
                8000
            } else {
                9090
            }
        );

        let monitor = docs(&r.files[1].contents).remove(0);
        assert_eq!(monitor["kind"], "ServiceMonitor");
        for (k, v) in monitor["spec"]["selector"]["matchLabels"]
            .as_mapping()
            .unwrap()
        {
            assert_eq!(&service["metadata"]["labels"][k.as_str().unwrap()], v);
        }
        let endpoint = &monitor["spec"]["endpoints"][0];
        assert_eq!(endpoint["path"], "/metrics");
        let scraped = service["spec"]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == endpoint["port"])
            .unwrap();
        let (container, port) = container_port(scraped["targetPort"].as_str().unwrap()).unwrap();
        let expected = if layout == Layout::Sidecar {
            "vitals"
        } else {
            "agent"
        };
        assert_eq!(
            container, expected,
            "{layout:?}: /metrics is served by vitals' routes"
        );
        assert_eq!(port, 9090);
    }
}

#[test]
fn a_patch_carries_the_config_map_beside_it() {
    let r = render(
        &spec_from_toml(SLOW_BOOT),
        &configured(SLOW_BOOT),
        Output::Patch,
    )
    .unwrap();
    let names: Vec<_> = r.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["deployment-patch.yaml", "configmap.yaml"]);
    let map = docs(&r.files[1].contents).remove(0);
    assert_eq!(map["data"]["health.toml"].as_str(), Some(SLOW_BOOT));
}

#[test]
fn embedded_patch_matches_golden() {
    let r = render(
        &spec_from_toml(SLOW_BOOT),
        &workload(Layout::Embedded),
        Output::Patch,
    )
    .unwrap();
    assert_golden(golden("embedded-patch.yaml"), only_file(&r));
}

#[test]
fn startup_threshold_covers_the_budget_and_grace_covers_the_drain() {
    let r = render(
        &spec_from_toml(SLOW_BOOT),
        &workload(Layout::Sidecar),
        Output::Deployment,
    )
    .unwrap();
    let doc: Value = workload_doc(&r);
    let pod = &doc["spec"]["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], Value::from(35));
    let vitals = &pod["containers"][1];
    // 300s / 10s = 30 periods; the first probe is at t = 0, so 31 probes span them all.
    assert_eq!(vitals["startupProbe"]["failureThreshold"], Value::from(31));
    assert_eq!(vitals["startupProbe"]["periodSeconds"], Value::from(10));
    assert_eq!(
        vitals["startupProbe"]["httpGet"]["path"],
        Value::from("/startupz")
    );
    assert_eq!(
        pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"],
        Value::from(5)
    );
}

/// Each limit: accepted at the bound, refused one past it, with the message.
#[test]
fn limits_table() {
    let base = spec_from_toml("");
    let cases: Vec<(&str, Change, Option<&str>)> = vec![
        ("whole-second period", Box::new(|s| s.liveness.period = Duration::from_secs(3)), None),
        (
            "fractional period",
            Box::new(|s| s.liveness.period = Duration::from_millis(2500)),
            Some("kubernetes: livenessProbe.periodSeconds = 2s 500ms is not a whole number of seconds (from probes.liveness.period); use 2s or 3s"),
        ),
        ("int32 threshold", Box::new(|s| s.readiness.failure_threshold = i32::MAX as u32), None),
        (
            "past int32",
            Box::new(|s| s.readiness.failure_threshold = i32::MAX as u32 + 1),
            Some("kubernetes: readinessProbe.failureThreshold = 2147483648 exceeds 2147483647 (int32) (from probes.readiness.failure_threshold); lower it"),
        ),
        ("readiness success 3", Box::new(|s| s.readiness.success_threshold = 3), None),
        (
            "liveness success 2",
            Box::new(|s| s.liveness.success_threshold = 2),
            Some("kubernetes: livenessProbe.successThreshold = 2 must be 1 for liveness and startup probes (from probes.liveness.success_threshold); set it to 1"),
        ),
        ("1s of drain", Box::new(|s| { s.drain_delay = Duration::ZERO; s.drain_grace = Duration::from_secs(1) }), None),
        (
            "no drain at all",
            Box::new(|s| { s.drain_delay = Duration::ZERO; s.drain_grace = Duration::ZERO }),
            Some("kubernetes: terminationGracePeriodSeconds = 0 leaves no time to drain (from drain.delay, drain.grace); set drain.grace to the time in-flight work needs"),
        ),
    ];
    assert_limits(&base, cases, |s| {
        render(s, &workload(Layout::Sidecar), Output::Deployment)
    });
}

/// The API server's probe rules, read back from the rendered YAML.
fn kubernetes_accepts(doc: &Value) -> Result<(), String> {
    let pod = &doc["spec"]["template"]["spec"];
    let grace = pod["terminationGracePeriodSeconds"]
        .as_i64()
        .ok_or("no grace period")?;
    if grace <= 0 {
        return Err(format!("grace period {grace}"));
    }
    for c in pod["containers"].as_sequence().ok_or("no containers")? {
        if let Some(s) = c["lifecycle"]["preStop"]["sleep"]["seconds"].as_i64() {
            if s <= 0 || s > grace {
                return Err(format!("preStop sleep {s} outside 1..={grace}"));
            }
        }
        for which in ["livenessProbe", "readinessProbe", "startupProbe"] {
            let p = &c[which];
            if p.is_null() {
                continue;
            }
            for field in [
                "periodSeconds",
                "timeoutSeconds",
                "failureThreshold",
                "successThreshold",
            ] {
                let v = p[field]
                    .as_i64()
                    .ok_or(format!("{which}.{field} missing or not an integer"))?;
                if !(1..=i64::from(i32::MAX)).contains(&v) {
                    return Err(format!("{which}.{field} = {v}"));
                }
            }
            if which != "readinessProbe" && p["successThreshold"].as_i64() != Some(1) {
                return Err(format!("{which}.successThreshold must be 1"));
            }
        }
    }
    Ok(())
}

proptest! {
    /// For any valid config: refused with reasons, or emitted and accepted; never emitted wrong.
    #[test]
    fn any_valid_config_is_refused_or_accepted(spec in arb_spec(), embedded in any::<bool>(), patch in any::<bool>()) {
        let layout = if embedded { Layout::Embedded } else { Layout::Sidecar };
        let output = if patch { Output::Patch } else { Output::Deployment };
        match render(&spec, &workload(layout), output) {
            Ok(r) => {
                let doc: Value = workload_doc(&r);
                prop_assert_eq!(kubernetes_accepts(&doc), Ok(()));
                // A whole-second spec within int32 is never refused.
            }
            Err(e) => prop_assert!(!e.0.is_empty() && e.0.iter().all(|r| r.platform == PLATFORM && !r.key.is_empty() && !r.fix.is_empty())),
        }
    }
}

/// kubelet passes only 200-399: with degraded_status = 429 the readiness probe asks for 200
/// while degraded, or one non-critical outage would take every replica out of traffic.
#[test]
fn a_degraded_429_instance_stays_in_traffic() {
    for (degraded, path) in [(429, "/readyz?degraded_status=200"), (200, "/readyz")] {
        let spec = spec_from_toml(&format!("[readiness]\ndegraded_status = {degraded}\n"));
        let r = render(&spec, &workload(Layout::Sidecar), Output::Deployment).unwrap();
        let d: Value = workload_doc(&r);
        let c = &d["spec"]["template"]["spec"]["containers"][1];
        assert_eq!(
            c["readinessProbe"]["httpGet"]["path"],
            Value::from(path),
            "{degraded}"
        );
        assert_eq!(
            c["livenessProbe"]["httpGet"]["path"],
            Value::from("/healthz")
        );
    }
}

/// kubelet probes at once, then every period: n failures span (n - 1) periods, so the window
/// needs one probe more than budget / period to cover the whole budget.
#[test]
fn the_startup_window_covers_the_whole_budget_and_the_rollout_outlasts_it() {
    let spec = spec_from_toml("[startup]\ntimeout = \"1200s\"\n[probes]\nstartup = { period = \"10s\", timeout = \"2s\" }\n");
    let r = render(&spec, &workload(Layout::Sidecar), Output::Deployment).unwrap();
    let d: Value = workload_doc(&r);
    let startup = &d["spec"]["template"]["spec"]["containers"][1]["startupProbe"];
    let (n, period) = (
        startup["failureThreshold"].as_u64().unwrap(),
        startup["periodSeconds"].as_u64().unwrap(),
    );
    assert!(
        (n - 1) * period >= 1200,
        "restarted after {}s of a 1200s budget",
        (n - 1) * period
    );
    assert_eq!(n, 121);
    let deadline = d["spec"]["progressDeadlineSeconds"].as_u64().unwrap();
    assert!(
        deadline > 1200,
        "rollout marked failed at {deadline}s, inside the startup budget"
    );
    // A short budget keeps Kubernetes' own default of 600s.
    let d = deployment_doc("", Layout::Sidecar);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], Value::from(600));
}

/// A strategic-merge patch merges containers by name: an `image` in it would replace the
/// Deployment's real agent image with whatever --image says (by default, a placeholder).
#[test]
fn a_patch_never_touches_the_agents_image() {
    for layout in [Layout::Embedded, Layout::Sidecar] {
        let r = render(&spec_from_toml(""), &workload(layout), Output::Patch).unwrap();
        let d: Value = workload_doc(&r);
        let containers = d["spec"]["template"]["spec"]["containers"]
            .as_sequence()
            .unwrap();
        let agent = containers.iter().find(|c| c["name"] == "agent").unwrap();
        assert_eq!(agent.get("image"), None, "{layout:?}");
        if layout == Layout::Sidecar {
            let vitals = containers.iter().find(|c| c["name"] == "vitals").unwrap();
            assert!(
                vitals["image"].is_string(),
                "the sidecar the patch adds needs its image"
            );
        }
    }
}

/// The preStop sleep action needs Kubernetes 1.30: a render that uses it says so, in the file
/// and in a note; one without it does not.
#[test]
fn the_minimum_version_is_stated_where_prestop_sleep_is_used() {
    let r = render(
        &spec_from_toml(""),
        &workload(Layout::Sidecar),
        Output::Deployment,
    )
    .unwrap();
    assert!(
        only_file(&r).contains("# Requires Kubernetes 1.30+"),
        "{}",
        only_file(&r)
    );
    assert!(
        r.notes.iter().any(|n| n.contains("1.29 drops it silently")),
        "{:?}",
        r.notes
    );
    let r = render(
        &spec_from_toml("[drain]\ndelay = \"0s\"\n"),
        &workload(Layout::Sidecar),
        Output::Deployment,
    )
    .unwrap();
    assert!(!only_file(&r).contains("1.30"));
    let r = render(
        &spec_from_toml(""),
        &workload(Layout::Embedded),
        Output::Deployment,
    )
    .unwrap();
    assert!(!only_file(&r).contains("1.30"));
}

/// With the agent heartbeat required, a hung agent must restart the agent's container: it gets
/// a liveness probe on /healthz/agent (through the pod's shared network, on vitals' port), and
/// the vitals container is probed on /healthz/vitals, which ignores the agent's beat.
#[test]
fn the_agent_container_is_watched_by_its_own_heartbeat() {
    let spec = spec_from_toml("[agent]\nheartbeat = \"required\"\n");
    let r = render(&spec, &workload(Layout::Sidecar), Output::Deployment).unwrap();
    let d: Value = workload_doc(&r);
    let containers = &d["spec"]["template"]["spec"]["containers"];
    let (agent, vitals) = (&containers[0], &containers[1]);
    assert_eq!(
        agent["livenessProbe"]["httpGet"]["path"],
        Value::from("/healthz/agent")
    );
    assert_eq!(agent["livenessProbe"]["httpGet"]["port"], Value::from(8080));
    assert_eq!(
        agent["livenessProbe"]["failureThreshold"],
        vitals["livenessProbe"]["failureThreshold"]
    );
    assert_eq!(
        vitals["livenessProbe"]["httpGet"]["path"],
        Value::from("/healthz/vitals")
    );
    // Without a required heartbeat, nothing changes.
    let d = deployment_doc("", Layout::Sidecar);
    let containers = &d["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers[0].get("livenessProbe"), None);
    assert_eq!(
        containers[1]["livenessProbe"]["httpGet"]["path"],
        Value::from("/healthz")
    );
}

/// The entrypoint layout: one container, the agent's image, whose command is vitals running the
/// agent's command after `--`; the ConfigMap reaches it where `--config` points; the probes go
/// to vitals' port and the Service's traffic to the agent's; no preStop sleep (vitals holds the
/// agent's SIGTERM itself).
#[test]
fn the_entrypoint_layout_runs_the_agent_under_vitals_in_one_container() {
    let w = Workload {
        layout: Layout::Entrypoint,
        agent_command: vec!["python".into(), "agent.py".into()],
        ..configured(SLOW_BOOT)
    };
    let r = render(&spec_from_toml(SLOW_BOOT), &w, Output::Deployment).unwrap();
    let all = docs(only_file(&r));
    let pod = &workload_doc(&r)["spec"]["template"]["spec"];
    let containers = pod["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["image"], w.image.as_str());
    assert_eq!(c["command"][0], "/usr/local/bin/vitals");
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "serve",
            "--config",
            "/etc/vitals/health.toml",
            "--",
            "python",
            "agent.py"
        ]
    );
    let map = all.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let mount = &c["volumeMounts"][0];
    let volume = &pod["volumes"][0];
    assert_eq!(volume["name"], mount["name"]);
    assert_eq!(volume["configMap"]["name"], map["metadata"]["name"]);
    assert_eq!(mount["mountPath"], "/etc/vitals");
    assert_eq!(map["data"]["health.toml"].as_str(), Some(SLOW_BOOT));
    assert_eq!(
        c["env"][0]["valueFrom"]["secretKeyRef"]["key"],
        "OPENAI_API_KEY"
    );
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], "vitals", "{probe}");
    }
    let ports = c["ports"].as_sequence().unwrap();
    let port = |name: &str| {
        ports
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["containerPort"].as_u64().unwrap())
    };
    assert_eq!(port("http"), Some(8000));
    assert_eq!(port("vitals"), Some(9090));
    assert!(c["lifecycle"].is_null(), "no preStop sleep");
    let service = all.iter().find(|d| d["kind"] == "Service").unwrap();
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    assert!(kubernetes_accepts(&workload_doc(&r)).is_ok());
}
