use proptest::prelude::*;
use serde_json::Value;
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

fn file(r: &Rendered, name: &str) -> Value {
    let f = r.files.iter().find(|f| f.name == name).unwrap();
    serde_json::from_str(&f.contents).unwrap()
}

const SLOW_BOOT: &str = r#"
[startup]
timeout = "6m"
[drain]
delay = "5s"
grace = "25s"
[readiness]
degraded_status = 429
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
fn sidecar_files_match_golden() {
    let r = render(&spec_from_toml(SLOW_BOOT), &configured(SLOW_BOOT)).unwrap();
    for f in &r.files {
        assert_golden(golden(&format!("sidecar/{}", f.name)), &f.contents);
    }
    assert_eq!(r.files.len(), 5);
}

#[test]
fn health_command_is_vitals_check_without_a_shell() {
    let r = render(&spec_from_toml(""), &workload(Layout::Embedded)).unwrap();
    let td = file(&r, "task-definition.json");
    let hc = &td["containerDefinitions"][0]["healthCheck"];
    assert_eq!(
        hc["command"],
        serde_json::json!([
            "CMD",
            "/usr/local/bin/vitals",
            "check",
            "http://127.0.0.1:8080/healthz",
            "--timeout",
            "1750ms"
        ]),
        "vitals check gives up just before ECS's 2s timeout, with a reason of its own"
    );
    assert_eq!(
        (
            hc["interval"].as_u64(),
            hc["timeout"].as_u64(),
            hc["retries"].as_u64()
        ),
        (Some(10), Some(2), Some(3))
    );
    assert_eq!(hc["startPeriod"], 120);
    assert_eq!(td["containerDefinitions"][0]["stopTimeout"], 25);
    assert!(r
        .notes
        .iter()
        .any(|n| n.contains("inside the agent's image")));
}

#[test]
fn a_startup_budget_past_300s_goes_to_the_service_grace_period_with_a_note() {
    let r = render(&spec_from_toml(SLOW_BOOT), &workload(Layout::Sidecar)).unwrap();
    let td = file(&r, "task-definition.json");
    assert_eq!(
        td["containerDefinitions"][1]["healthCheck"]["startPeriod"],
        300
    );
    assert_eq!(
        file(&r, "service.json")["healthCheckGracePeriodSeconds"],
        360
    );
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("healthCheckGracePeriodSeconds (360)")),
        "{:?}",
        r.notes
    );
}

#[test]
fn target_group_checks_readyz_and_accepts_the_degraded_status() {
    let r = render(&spec_from_toml(SLOW_BOOT), &workload(Layout::Sidecar)).unwrap();
    let tg = file(&r, "target-group.json");
    assert_eq!(tg["HealthCheckPath"], "/readyz?scope=instance");
    assert_eq!(tg["HealthCheckPort"], "8080");
    assert_eq!(tg["Port"], 8000);
    assert_eq!(tg["Matcher"]["HttpCode"], "200-299,429");
    // CreateTargetGroup takes no attributes; ModifyTargetGroupAttributes sets them on the ARN.
    assert_eq!(tg.get("Attributes"), None);
    assert_eq!(tg["VpcId"], "vpc-REPLACE-ME");
    let attrs = file(&r, "target-group-attributes.json");
    assert_eq!(
        attrs["Attributes"][0]["Key"],
        "deregistration_delay.timeout_seconds"
    );
    assert_eq!(attrs["Attributes"][0]["Value"], "25");
    let svc = file(&r, "service.json");
    assert_eq!(
        svc["loadBalancers"][0]["targetGroupArn"],
        attrs["TargetGroupArn"]
    );
    assert_eq!(
        svc["networkConfiguration"]["awsvpcConfiguration"]["subnets"][0], "subnet-REPLACE-ME",
        "awsvpc needs the task's network"
    );
    assert_eq!(
        svc["deploymentConfiguration"]["deploymentCircuitBreaker"]["rollback"],
        true
    );
}

/// Each limit: accepted at the bound, refused one past it, with the message.
#[test]
fn limits_table() {
    let base = spec_from_toml("");
    let s = Duration::from_secs;
    let cases: Vec<(&str, Change, Option<&str>)> = vec![
        ("retries 10", Box::new(|x| x.liveness.failure_threshold = 10), None),
        ("retries 11", Box::new(|x| x.liveness.failure_threshold = 11),
            Some("ecs: healthCheck.retries = 11 exceeds 10 (from probes.liveness.failure_threshold); lower it or raise probes.liveness.period")),
        ("interval 5", Box::new(move |x| x.liveness.period = s(5)), None),
        ("interval 4", Box::new(move |x| x.liveness.period = s(4)),
            Some("ecs: healthCheck.interval = 4 is below 5 (from probes.liveness.period); raise probes.liveness.period to 5s or more")),
        ("interval 300", Box::new(move |x| x.liveness.period = s(300)), None),
        ("interval 301", Box::new(move |x| x.liveness.period = s(301)),
            Some("ecs: healthCheck.interval = 301 exceeds 300 (from probes.liveness.period); lower probes.liveness.period to 300s or less")),
        ("timeout 60", Box::new(move |x| { x.liveness.period = s(120); x.liveness.timeout = s(60) }), None),
        ("timeout 61", Box::new(move |x| { x.liveness.period = s(120); x.liveness.timeout = s(61) }),
            Some("ecs: healthCheck.timeout = 61 exceeds 60 (from probes.liveness.timeout); lower probes.liveness.timeout to 60s or less")),
        ("stopTimeout 120", Box::new(move |x| { x.drain_delay = s(20); x.drain_grace = s(100) }), None),
        ("stopTimeout 121", Box::new(move |x| { x.drain_delay = s(20); x.drain_grace = s(101) }),
            Some("ecs: containerDefinitions[].stopTimeout = 121 exceeds 120 (from drain.delay, drain.grace); lower drain.delay + drain.grace to 120s or less (Fargate's limit)")),
        ("tg interval 5 > timeout 4", Box::new(move |x| x.readiness.timeout = s(4)), None),
        ("tg interval 5 = timeout 5", Box::new(move |x| x.readiness.timeout = s(5)),
            Some("ecs: HealthCheckIntervalSeconds = 5 must be greater than HealthCheckTimeoutSeconds (5) (from probes.readiness.period, probes.readiness.timeout); make probes.readiness.timeout shorter than probes.readiness.period")),
        ("unhealthy 2", Box::new(|x| x.readiness.failure_threshold = 2), None),
        ("unhealthy 1", Box::new(|x| x.readiness.failure_threshold = 1),
            Some("ecs: UnhealthyThresholdCount = 1 is below 2 (from probes.readiness.failure_threshold); raise it to 2 or more")),
        ("healthy 10", Box::new(|x| x.readiness.success_threshold = 10), None),
        ("healthy 11", Box::new(|x| x.readiness.success_threshold = 11),
            Some("ecs: HealthyThresholdCount = 11 exceeds 10 (from probes.readiness.success_threshold); lower it to 10 or less")),
    ];
    assert_limits(&base, cases, |s| render(s, &workload(Layout::Sidecar)));
}

/// ECS's and ELBv2's documented ranges, read back from the rendered files.
fn ecs_accepts(r: &Rendered) -> Result<(), String> {
    let td = file(r, "task-definition.json");
    let within = |v: &Value, what: &str, lo: u64, hi: u64| {
        let n = v.as_u64().ok_or(format!("{what} is not an integer"))?;
        if (lo..=hi).contains(&n) {
            Ok(n)
        } else {
            Err(format!("{what} = {n} outside {lo}..={hi}"))
        }
    };
    for c in td["containerDefinitions"]
        .as_array()
        .ok_or("no containers")?
    {
        within(&c["stopTimeout"], "stopTimeout", 2, 120)?;
        let hc = &c["healthCheck"];
        if hc.is_null() {
            continue;
        }
        if hc["command"][0] != "CMD" {
            return Err("command is not the CMD form".into());
        }
        within(&hc["interval"], "interval", 5, 300)?;
        within(&hc["timeout"], "timeout", 2, 60)?;
        within(&hc["retries"], "retries", 1, 10)?;
        within(&hc["startPeriod"], "startPeriod", 0, 300)?;
    }
    let tg = file(r, "target-group.json");
    let i = within(&tg["HealthCheckIntervalSeconds"], "interval", 5, 300)?;
    let t = within(&tg["HealthCheckTimeoutSeconds"], "timeout", 2, 120)?;
    if i <= t {
        return Err(format!("target group interval {i} <= timeout {t}"));
    }
    within(&tg["HealthyThresholdCount"], "healthy", 2, 10)?;
    within(&tg["UnhealthyThresholdCount"], "unhealthy", 2, 10)?;
    let attributes = file(r, "target-group-attributes.json");
    let delay: u64 = attributes["Attributes"][0]["Value"]
        .as_str()
        .ok_or("no delay")?
        .parse()
        .map_err(|_| "delay")?;
    within(&Value::from(delay), "deregistration delay", 0, 3600)?;
    Ok(())
}

proptest! {
    #[test]
    fn any_valid_config_is_refused_or_accepted(spec in arb_spec(), embedded in any::<bool>()) {
        let layout = if embedded { Layout::Embedded } else { Layout::Sidecar };
        match render(&spec, &workload(layout)) {
            Ok(r) => prop_assert_eq!(ecs_accepts(&r), Ok(())),
            Err(e) => prop_assert!(e.0.iter().all(|r| r.platform == PLATFORM && !r.key.is_empty() && !r.fix.is_empty())),
        }
    }
}

/// The health command's own timeout follows healthCheck.timeout: with the default 2s of
/// `vitals check`, a 5s healthCheck.timeout was never used.
#[test]
fn the_health_command_times_out_with_the_health_check() {
    let spec = spec_from_toml("[probes]\nliveness = { period = \"10s\", timeout = \"5s\" }\n");
    let r = render(&spec, &workload(Layout::Embedded)).unwrap();
    let hc = &file(&r, "task-definition.json")["containerDefinitions"][0]["healthCheck"];
    assert_eq!(hc["timeout"], 5);
    assert_eq!(hc["command"][4], "--timeout");
    assert_eq!(hc["command"][5], "4750ms");
}

/// ECS mounts no files: the text of health.toml rides in VITALS_CONFIG_TOML (which `serve`
/// reads when no --config is given), and each secret comes from Secrets Manager.
#[test]
fn the_configuration_and_its_secrets_reach_the_vitals_container() {
    let r = render(&spec_from_toml(SLOW_BOOT), &configured(SLOW_BOOT)).unwrap();
    let td = file(&r, "task-definition.json");
    let vitals = td["containerDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "vitals")
        .unwrap();
    assert_eq!(vitals["command"], serde_json::json!(["serve"]));
    assert_eq!(vitals["environment"][0]["name"], "VITALS_CONFIG_TOML");
    assert_eq!(vitals["environment"][0]["value"], SLOW_BOOT);
    assert_eq!(vitals["secrets"][0]["name"], "OPENAI_API_KEY");
    assert_eq!(
        vitals["secrets"][0]["valueFrom"],
        "arn:aws:secretsmanager:REGION:ACCOUNT:secret:agent/OPENAI_API_KEY"
    );
    assert!(
        td["executionRoleArn"].is_string(),
        "secrets need an execution role"
    );
}

/// Deliverable 3 for ECS: the target group asks `/readyz?scope=instance`, where a shared
/// dependency's outage degrades (matched as healthy) instead of failing, so ECS does not
/// replace every task during a provider outage.
#[test]
fn the_target_group_fails_only_on_what_a_new_task_can_cure() {
    let r = render(&spec_from_toml(SLOW_BOOT), &configured(SLOW_BOOT)).unwrap();
    let tg = file(&r, "target-group.json");
    assert_eq!(tg["HealthCheckPath"], "/readyz?scope=instance");
    assert_eq!(
        tg["Matcher"]["HttpCode"], "200-299,429",
        "degraded counts as healthy"
    );
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("ECS replaces tasks its target group calls unhealthy")),
        "{:?}",
        r.notes
    );
}

#[test]
fn names_longer_than_a_target_group_takes_are_refused() {
    let spec = spec_from_toml("");
    let ok = Workload {
        name: "a".repeat(32),
        ..workload(Layout::Sidecar)
    };
    assert!(render(&spec, &ok).is_ok());
    let long = Workload {
        name: "a".repeat(33),
        ..workload(Layout::Sidecar)
    };
    let e = render(&spec, &long).unwrap_err();
    assert_eq!(
        e.to_string().trim(),
        format!("ecs: target group Name = {} is 33 characters; an ELB target group name has at most 32 (from --name); pass a --name of 32 characters or fewer for ecs", "a".repeat(33))
    );
    let internal = Workload {
        name: "internal-agent".into(),
        ..workload(Layout::Sidecar)
    };
    assert!(render(&spec, &internal)
        .unwrap_err()
        .to_string()
        .contains("may not begin with \"internal-\""));
}

/// The entrypoint layout: one essential container from the agent's image, vitals as its
/// entrypoint running the agent's command, the configuration and secrets delivered to it, the
/// target group on the agent's port with its health check on vitals' port.
#[test]
fn the_entrypoint_layout_runs_the_agent_under_vitals_in_one_container() {
    let w = Workload {
        layout: Layout::Entrypoint,
        agent_command: vec!["python".into(), "agent.py".into()],
        ..configured(SLOW_BOOT)
    };
    let spec = spec_from_toml(SLOW_BOOT);
    let r = render(&spec, &w).unwrap();
    let td = file(&r, "task-definition.json");
    let containers = td["containerDefinitions"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["name"], "agent");
    assert_eq!(c["image"], w.image.as_str());
    assert_eq!(c["essential"], true);
    assert_eq!(
        c["entryPoint"],
        serde_json::json!(["/usr/local/bin/vitals"])
    );
    assert_eq!(
        c["command"],
        serde_json::json!(["serve", "--", "python", "agent.py"])
    );
    assert_eq!(c["environment"][0]["name"], "VITALS_CONFIG_TOML");
    assert_eq!(c["environment"][0]["value"], SLOW_BOOT);
    assert_eq!(c["secrets"][0]["name"], "OPENAI_API_KEY");
    assert!(td["executionRoleArn"].is_string());
    assert_eq!(c["healthCheck"]["command"][1], "/usr/local/bin/vitals");
    let ports: Vec<u64> = c["portMappings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [8000, u64::from(spec.port)]);
    let tg = file(&r, "target-group.json");
    assert_eq!(tg["Port"], 8000);
    assert_eq!(tg["HealthCheckPort"], spec.port.to_string());
    let service = file(&r, "service.json");
    assert_eq!(service["loadBalancers"][0]["containerName"], "agent");
    assert_eq!(service["loadBalancers"][0]["containerPort"], 8000);
    assert!(ecs_accepts(&r).is_ok(), "{:?}", ecs_accepts(&r));
}
