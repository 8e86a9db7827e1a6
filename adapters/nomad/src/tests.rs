use proptest::prelude::*;
use serde_json::Value;
use vitals_core::spec::Layout;
use vitals_core::Duration;
use vitals_test_util::{arb_spec, assert_golden, assert_limits, spec_from_toml, Change};

use super::job::go_duration;
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

fn json_of(r: &Rendered) -> Value {
    let f = r.files.iter().find(|f| f.name.ends_with(".json")).unwrap();
    serde_json::from_str(&f.contents).unwrap()
}

const SLOW_BOOT: &str = r#"
[startup]
timeout = "4m"
[drain]
delay = "5s"
grace = "40s"
[readiness]
degraded_status = 429
[probes]
readiness = { period = "5s", timeout = "2s", failure_threshold = 3 }
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
fn consul_sidecar_matches_golden() {
    let r = render(
        &spec_from_toml(SLOW_BOOT),
        &configured(SLOW_BOOT),
        Provider::Consul,
    )
    .unwrap();
    assert_golden(golden("consul-sidecar.nomad.hcl"), &r.files[0].contents);
    assert_golden(golden("consul-sidecar.json"), &r.files[1].contents);
}

#[test]
fn nomad_provider_embedded_matches_golden_and_says_what_it_cannot_do() {
    let r = render(
        &spec_from_toml(SLOW_BOOT),
        &workload(Layout::Embedded),
        Provider::Nomad,
    )
    .unwrap();
    assert_golden(golden("nomad-embedded.nomad.hcl"), &r.files[0].contents);
    assert_golden(golden("nomad-embedded.json"), &r.files[1].contents);
    assert!(
        r.notes.iter().any(|n| n.contains("no traffic gating")),
        "{:?}",
        r.notes
    );
    assert!(
        r.notes.iter().any(|n| n.contains("no warning state")),
        "{:?}",
        r.notes
    );
    assert!(r.files[0]
        .contents
        .contains("# NOTE: provider = \"nomad\" has no traffic gating"));
    let job = json_of(&r);
    let text = job.to_string();
    assert!(
        !text.contains("IgnoreWarnings\":true") && !text.contains("OnUpdate"),
        "{text}"
    );
}

#[test]
fn consul_readiness_maps_degraded_to_warning_and_liveness_restarts_after_the_budget() {
    let r = render(
        &spec_from_toml(SLOW_BOOT),
        &workload(Layout::Embedded),
        Provider::Consul,
    )
    .unwrap();
    let job = json_of(&r);
    let task = &job["Job"]["TaskGroups"][0]["Tasks"][0];
    let checks = &task["Services"][0]["Checks"];
    assert_eq!(checks[0]["Path"], "/healthz");
    assert_eq!(checks[0]["CheckRestart"]["Limit"], 3);
    assert_eq!(checks[0]["CheckRestart"]["Grace"], 240_000_000_000u64);
    assert_eq!(checks[0]["CheckRestart"]["IgnoreWarnings"], true);
    assert_eq!(checks[1]["Path"], "/readyz?degraded_status=429");
    assert_eq!(checks[1]["OnUpdate"], "ignore_warnings");
    assert_eq!(checks[1]["FailuresBeforeCritical"], 3);
    assert!(checks[1]["CheckRestart"].is_null());
    assert_eq!(task["KillTimeout"], 45_000_000_000u64);
    assert_eq!(task["ShutdownDelay"], 5_000_000_000u64);
    assert_eq!(task["KillSignal"], "SIGTERM");
    let update = &job["Job"]["Update"];
    assert_eq!(update["HealthCheck"], "checks");
    // 4m budget + 10s min healthy + 3 × 5s readiness = 265s, so the 5m floor holds.
    assert_eq!(update["HealthyDeadline"], 300_000_000_000u64);
    assert!(
        r.notes.iter().any(|n| n.contains("max_kill_timeout")),
        "{:?}",
        r.notes
    );
}

#[test]
fn healthy_deadline_grows_with_the_startup_budget() {
    let spec = spec_from_toml("[startup]\ntimeout = \"10m\"\n");
    let job = json_of(&render(&spec, &workload(Layout::Sidecar), Provider::Consul).unwrap());
    let u = &job["Job"]["Update"];
    // 600s budget + 10s min healthy time + 1 success × 5s = 615s; progress = 615 + 300.
    assert_eq!(u["HealthyDeadline"], 615_000_000_000u64);
    assert_eq!(u["ProgressDeadline"], 915_000_000_000u64);
}

#[test]
fn go_durations_parse_in_go() {
    assert_eq!(go_duration(Duration::ZERO), "0s");
    assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
    assert_eq!(go_duration(Duration::from_millis(1500)), "1s500ms");
    assert_eq!(go_duration(Duration::from_secs(3600 + 1)), "1h1s");
}

/// Each limit: accepted at the bound, refused one past it, with the message.
#[test]
fn limits_table() {
    let base = spec_from_toml("");
    let cases: Vec<(&str, Change, Option<&str>)> = vec![
        ("1s interval", Box::new(|s| { s.liveness.period = Duration::from_secs(1); s.liveness.timeout = Duration::from_secs(1) }), None),
        (
            "999ms interval",
            Box::new(|s| { s.liveness.period = Duration::from_millis(999); s.liveness.timeout = Duration::from_millis(999) }),
            Some("nomad: check \"healthz\".interval = 999ms is below 1s (from probes.liveness.period); raise probes.liveness.period to 1s or more\nnomad: check \"healthz\".timeout = 999ms is below 1s (from probes.liveness.timeout); raise probes.liveness.timeout to 1s or more"),
        ),
        ("1s readiness timeout", Box::new(|s| s.readiness.timeout = Duration::from_secs(1)), None),
        (
            "500ms readiness timeout",
            Box::new(|s| s.readiness.timeout = Duration::from_millis(500)),
            Some("nomad: check \"readyz\".timeout = 500ms is below 1s (from probes.readiness.timeout); raise probes.readiness.timeout to 1s or more"),
        ),
    ];
    assert_limits(&base, cases, |s| {
        render(s, &workload(Layout::Sidecar), Provider::Consul)
    });
}

/// The server's rules (`nomad/structs` Validate), read back from the rendered JSON.
fn nomad_accepts(job: &Value) -> Result<(), String> {
    let job = &job["Job"];
    let ns = |v: &Value, what: &str| {
        v.as_u64()
            .ok_or(format!("{what} is not integer nanoseconds"))
    };
    let u = &job["Update"];
    let (min, healthy, progress) = (
        ns(&u["MinHealthyTime"], "MinHealthyTime")?,
        ns(&u["HealthyDeadline"], "HealthyDeadline")?,
        ns(&u["ProgressDeadline"], "ProgressDeadline")?,
    );
    if !(min < healthy && healthy < progress) {
        return Err(format!(
            "update deadlines out of order: {min} {healthy} {progress}"
        ));
    }
    for task in job["TaskGroups"][0]["Tasks"].as_array().ok_or("no tasks")? {
        for service in task["Services"].as_array().into_iter().flatten() {
            let nomad = service["Provider"] == "nomad";
            for c in service["Checks"].as_array().ok_or("no checks")? {
                for f in ["Interval", "Timeout"] {
                    if ns(&c[f], f)? < 1_000_000_000 {
                        return Err(format!("{f} below 1s"));
                    }
                }
                if !c["Path"].as_str().ok_or("no path")?.starts_with('/') {
                    return Err("path not relative".into());
                }
                if nomad
                    && (c["OnUpdate"] == "ignore_warnings"
                        || c["CheckRestart"]["IgnoreWarnings"] == true
                        || c.get("FailuresBeforeCritical").is_some())
                {
                    return Err(format!("consul-only field on the nomad provider: {c}"));
                }
                if c["OnUpdate"] == "ignore_warnings"
                    && c["CheckRestart"].is_object()
                    && c["CheckRestart"]["IgnoreWarnings"] != true
                {
                    return Err("ignore_warnings on_update with check_restart that does not ignore warnings".into());
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn any_valid_config_is_refused_or_accepted(spec in arb_spec(), embedded in any::<bool>(), consul in any::<bool>()) {
        let layout = if embedded { Layout::Embedded } else { Layout::Sidecar };
        let provider = if consul { Provider::Consul } else { Provider::Nomad };
        match render(&spec, &workload(layout), provider) {
            Ok(r) => {
                prop_assert_eq!(nomad_accepts(&json_of(&r)), Ok(()));
                prop_assert!(r.files[0].contents.contains("job \""));
            }
            Err(e) => prop_assert!(e.0.iter().all(|r| r.platform == PLATFORM && !r.key.is_empty() && !r.fix.is_empty())),
        }
    }
}

/// A new allocation is healthy once its readiness check has passed success_threshold times in a
/// row (Consul's success_before_passing); the failure threshold says nothing about that.
#[test]
fn healthy_deadline_waits_for_the_successes_readiness_needs() {
    let spec = spec_from_toml(
        "[startup]\ntimeout = \"10m\"\n[probes]\nreadiness = { period = \"10s\", timeout = \"2s\", failure_threshold = 1, success_threshold = 6 }\n",
    );
    let job = json_of(&render(&spec, &workload(Layout::Sidecar), Provider::Consul).unwrap());
    // 600s budget + 10s min healthy time + 6 successes × 10s.
    assert_eq!(job["Job"]["Update"]["HealthyDeadline"], 670_000_000_000u64);
}

fn task<'a>(job: &'a Value, name: &str) -> &'a Value {
    job["Job"]["TaskGroups"][0]["Tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["Name"] == name)
        .unwrap_or_else(|| panic!("no task {name}"))
}

/// The first wave's sidecar job could not work: vitals' port was advertised as the agent's, the
/// tasks shared no loopback, and readiness sat on the task Nomad stops last. Each is followed
/// here as Nomad and Consul resolve it.
#[test]
fn the_sidecar_job_routes_to_the_agent_and_gates_it_on_readiness() {
    let toml = "[agent]\nheartbeat = \"required\"\n";
    let spec = spec_from_toml(toml);
    let w = Workload {
        agent_port: 8000,
        ..configured(toml)
    };
    let job = json_of(&render(&spec, &w, Provider::Consul).unwrap());
    let network = &job["Job"]["TaskGroups"][0]["Networks"][0];
    assert_eq!(network["Mode"], "bridge", "tasks must share 127.0.0.1");
    let port_to = |label: &Value| {
        network["DynamicPorts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| &p["Label"] == label)
            .map(|p| p["To"].as_u64().unwrap())
            .unwrap_or_else(|| panic!("no port label {label}"))
    };

    let agent = task(&job, "agent");
    let service = &agent["Services"][0];
    assert_eq!(
        port_to(&service["PortLabel"]),
        8000,
        "the service advertises the agent's port"
    );
    let check = |name: &str| {
        service["Checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["Name"] == name)
            .unwrap_or_else(|| panic!("no check {name} on the agent's service"))
            .clone()
    };
    let readyz = check("readyz");
    assert_eq!(port_to(&readyz["PortLabel"]), 8080, "readiness asks vitals");
    assert!(readyz["CheckRestart"].is_null());
    let agent_live = check("healthz-agent");
    assert_eq!(agent_live["Path"], "/healthz/agent");
    assert_eq!(port_to(&agent_live["PortLabel"]), 8080);
    assert_eq!(
        agent_live["CheckRestart"]["Limit"], 3,
        "a hung agent restarts the agent's task"
    );

    let vitals = task(&job, "vitals");
    assert_eq!(vitals["Lifecycle"]["Sidecar"], true);
    let vitals_checks = vitals["Services"][0]["Checks"].as_array().unwrap();
    assert_eq!(vitals_checks.len(), 1);
    assert_eq!(vitals_checks[0]["Path"], "/healthz/vitals");
    assert_eq!(port_to(&vitals["Services"][0]["PortLabel"]), 8080);
}

/// Deliverable 3 for Nomad: only liveness checks carry check_restart, and liveness never asks
/// a dependency, so an outage that fails every allocation's readiness restarts none of them.
#[test]
fn no_readiness_check_can_restart_a_task() {
    for (layout, provider) in [
        (Layout::Sidecar, Provider::Consul),
        (Layout::Sidecar, Provider::Nomad),
        (Layout::Embedded, Provider::Consul),
        (Layout::Embedded, Provider::Nomad),
    ] {
        let spec = spec_from_toml("[agent]\nheartbeat = \"required\"\n");
        let job = json_of(&render(&spec, &workload(layout), provider).unwrap());
        for t in job["Job"]["TaskGroups"][0]["Tasks"].as_array().unwrap() {
            for c in t["Services"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| s["Checks"].as_array().unwrap())
            {
                let path = c["Path"].as_str().unwrap();
                if c["CheckRestart"].is_object() {
                    assert!(path.starts_with("/healthz"), "{layout:?} {provider:?}: {c}");
                } else {
                    assert!(path.starts_with("/readyz"), "{layout:?} {provider:?}: {c}");
                }
            }
        }
    }
}

#[test]
fn the_configuration_and_its_secrets_reach_the_vitals_task() {
    let toml = "[[signals]]\nname = \"web\"\n";
    let job = json_of(&render(&spec_from_toml(toml), &configured(toml), Provider::Consul).unwrap());
    let vitals = task(&job, "vitals");
    let args = vitals["Config"]["args"].as_array().unwrap();
    assert_eq!(args[1], "--config");
    // Nomad interpolates NOMAD_TASK_DIR at run time; the template writes local/ inside it.
    assert_eq!(args[2], "${NOMAD_TASK_DIR}/health.toml");
    let templates = vitals["Templates"].as_array().unwrap();
    assert_eq!(templates[0]["DestPath"], "local/health.toml");
    assert_eq!(templates[0]["EmbeddedTmpl"], toml);
    assert_eq!(templates[0]["Envvars"], false);
    assert_eq!(templates[1]["DestPath"], "secrets/vitals.env");
    assert_eq!(templates[1]["Envvars"], true);
    assert_eq!(
        templates[1]["EmbeddedTmpl"],
        "{{ with nomadVar \"nomad/jobs/agent\" }}\nOPENAI_API_KEY={{ .OPENAI_API_KEY | toJSON }}\n{{ end }}\n"
    );
}

/// consul-template would read a `{{` in health.toml (a prompt, say) as code: the file's
/// template gets delimiters its text does not contain.
#[test]
fn template_markup_in_the_configuration_stays_text() {
    let toml = "[[signals]]\nname = \"web\"\n# a prompt with {{ braces }} and [[vitals0: too\n";
    let job = json_of(&render(&spec_from_toml(""), &configured(toml), Provider::Consul).unwrap());
    let t = &task(&job, "vitals")["Templates"][0];
    assert_eq!(t["EmbeddedTmpl"], toml);
    let (left, right) = (
        t["LeftDelim"].as_str().unwrap(),
        t["RightDelim"].as_str().unwrap(),
    );
    assert!(
        !toml.contains(left) && !toml.contains(right),
        "{left} {right}"
    );
    let plain = json_of(
        &render(
            &spec_from_toml(""),
            &configured("[drain]\n"),
            Provider::Consul,
        )
        .unwrap(),
    );
    assert!(task(&plain, "vitals")["Templates"][0]["LeftDelim"].is_null());
}

#[test]
fn a_name_too_long_for_the_vitals_service_is_refused() {
    let spec = spec_from_toml("");
    let w = |n: usize| Workload {
        name: "a".repeat(n),
        ..workload(Layout::Sidecar)
    };
    assert!(render(&spec, &w(56), Provider::Consul).is_ok());
    let e = render(&spec, &w(57), Provider::Consul)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("is 64 characters; a service name has at most 63 (from --name); pass a --name of 56 characters or fewer for nomad"),
        "{e}"
    );
}

/// The entrypoint layout: one task from the agent's image with vitals as the docker driver's
/// entrypoint, running the agent's command; the configuration and secrets reach that task; its
/// service advertises the agent's port, and the checks ask vitals' port; only liveness restarts.
#[test]
fn the_entrypoint_layout_runs_the_agent_under_vitals_in_one_task() {
    let toml = "[[signals]]\nname = \"web\"\n";
    let w = Workload {
        layout: Layout::Entrypoint,
        agent_command: vec!["python".into(), "agent.py".into()],
        agent_port: 8000,
        ..configured(toml)
    };
    for provider in [Provider::Consul, Provider::Nomad] {
        let r = render(&spec_from_toml(toml), &w, provider).unwrap();
        let job = json_of(&r);
        nomad_accepts(&job).unwrap();
        let tasks = job["Job"]["TaskGroups"][0]["Tasks"].as_array().unwrap();
        assert_eq!(tasks.len(), 1);
        let t = task(&job, "agent");
        assert_eq!(t["Config"]["image"], w.image.as_str());
        assert_eq!(
            t["Config"]["entrypoint"],
            serde_json::json!(["/usr/local/bin/vitals"])
        );
        assert_eq!(
            t["Config"]["args"],
            serde_json::json!([
                "serve",
                "--config",
                "${NOMAD_TASK_DIR}/health.toml",
                "--",
                "python",
                "agent.py"
            ])
        );
        assert_eq!(t["Templates"][0]["EmbeddedTmpl"], toml);
        assert_eq!(t["Templates"][1]["Envvars"], true);
        let network = &job["Job"]["TaskGroups"][0]["Networks"][0];
        let port_to = |label: &Value| {
            network["DynamicPorts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| &p["Label"] == label)
                .map(|p| p["To"].as_u64().unwrap())
                .unwrap()
        };
        let service = &t["Services"][0];
        assert_eq!(port_to(&service["PortLabel"]), 8000);
        for c in service["Checks"].as_array().unwrap() {
            assert_eq!(port_to(&c["PortLabel"]), 8080, "{c}");
            assert_eq!(
                c["CheckRestart"].is_object(),
                c["Path"].as_str().unwrap().starts_with("/healthz"),
                "{c}"
            );
        }
        let hcl = &r
            .files
            .iter()
            .find(|f| f.name.ends_with(".hcl"))
            .unwrap()
            .contents;
        let at = hcl
            .find("entrypoint = [")
            .expect("an entrypoint in the HCL");
        assert!(
            hcl[at..]
                .trim_start_matches("entrypoint = [")
                .trim_start()
                .starts_with("\"/usr/local/bin/vitals\""),
            "{hcl}"
        );
    }
}
