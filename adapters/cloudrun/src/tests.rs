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

fn doc(r: &Rendered) -> Value {
    serde_yaml_ng::from_str(&r.files[0].contents).unwrap()
}

const QUICK: &str = r#"
[startup]
timeout = "60s"
[drain]
delay = "3s"
grace = "5s"
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
fn sidecar_matches_golden() {
    let r = render(
        &spec_from_toml(QUICK),
        &configured(QUICK),
        Options::default(),
    )
    .unwrap();
    assert_golden(golden("sidecar.yaml"), &r.files[0].contents);
}

#[test]
fn embedded_with_readiness_matches_golden_and_is_marked_beta() {
    let r = render(
        &spec_from_toml(QUICK),
        &workload(Layout::Embedded),
        Options { readiness: true },
    )
    .unwrap();
    assert_golden(golden("embedded-readiness.yaml"), &r.files[0].contents);
    let d = doc(&r);
    assert_eq!(
        d["metadata"]["annotations"]["run.googleapis.com/launch-stage"],
        Value::from("BETA")
    );
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"],
        Value::from("/readyz")
    );
    assert_eq!(
        c["startupProbe"]["httpGet"]["path"],
        Value::from("/startupz")
    );
    assert_eq!(c["ports"][0]["name"], Value::from("http1"));
    assert!(
        r.notes.is_empty(),
        "a drain within 10s and readiness on need no note: {:?}",
        r.notes
    );
}

#[test]
fn without_readiness_there_is_no_beta_annotation_and_a_note() {
    let r = render(
        &spec_from_toml(QUICK),
        &workload(Layout::Embedded),
        Options::default(),
    )
    .unwrap();
    assert!(doc(&r)["metadata"]["annotations"].is_null());
    assert!(r.notes.iter().any(|n| n.contains("--cloudrun-readiness")));
}

#[test]
fn a_drain_longer_than_ten_seconds_is_noted() {
    let r = render(
        &spec_from_toml(""),
        &workload(Layout::Embedded),
        Options { readiness: true },
    )
    .unwrap();
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("SIGKILL 10s after SIGTERM")),
        "{:?}",
        r.notes
    );
}

/// Each limit: accepted at the bound, refused one past it, with the message.
#[test]
fn limits_table() {
    let base = spec_from_toml("");
    let s = Duration::from_secs;
    let budget = |b: u64, p: u64| -> Change {
        Box::new(move |x: &mut HealthSpec| {
            x.startup_budget = s(b);
            x.startup.period = s(p);
            x.startup.timeout = s(1);
            x.startup.failure_threshold =
                vitals_core::config::startup_failure_threshold(s(b), s(p));
        })
    };
    let cases: Vec<(&str, Change, Option<&str>)> = vec![
        ("window 240", budget(240, 10), None),
        ("window 250", budget(241, 10),
            Some("cloudrun: startupProbe.failureThreshold × periodSeconds = 25 × 10 = 250s exceeds 240s (from startup.timeout, probes.startup.period); lower startup.timeout to 240s (24 probes of 10s fit in 240s); for a slower load, bind the port only once loading has started and let /startupz report it")),
        // 240s already, but 7s does not divide it: ceil(240 / 7) = 35 probes, 245s.
        ("window 245 from a 240s budget", budget(240, 7),
            Some("cloudrun: startupProbe.failureThreshold × periodSeconds = 35 × 7 = 245s exceeds 240s (from startup.timeout, probes.startup.period); lower startup.timeout to 238s (34 probes of 7s fit in 240s), or a probes.startup.period that divides 240s, such as 5s, 6s or 8s; for a slower load, bind the port only once loading has started and let /startupz report it")),
        ("startup period 240", budget(240, 240), None),
        ("startup period 241", budget(241, 241),
            Some("cloudrun: startupProbe.periodSeconds = 241 exceeds 240 (from probes.startup.period); lower probes.startup.period to 240s or less")),
        ("liveness timeout < period", Box::new(move |x| { x.liveness.period = s(10); x.liveness.timeout = s(9) }), None),
        ("liveness timeout = period", Box::new(move |x| { x.liveness.period = s(10); x.liveness.timeout = s(10) }),
            Some("cloudrun: livenessProbe.timeoutSeconds = 10 must be less than periodSeconds (10) (from probes.liveness.timeout); make probes.liveness.timeout shorter than probes.liveness.period")),
        ("liveness period 3600", Box::new(move |x| x.liveness.period = s(3600)), None),
        ("liveness period 3601", Box::new(move |x| x.liveness.period = s(3601)),
            Some("cloudrun: livenessProbe.periodSeconds = 3601 exceeds 3600 (from probes.liveness.period); lower probes.liveness.period to 3600s or less")),
    ];
    assert_limits(&base, cases, |s| {
        render(s, &workload(Layout::Embedded), Options { readiness: true })
    });
}

/// Cloud Run's probe limits, read back from the rendered YAML.
fn cloud_run_accepts(d: &Value) -> Result<(), String> {
    for c in d["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .ok_or("no containers")?
    {
        for (which, max_period) in [
            ("startupProbe", 240),
            ("livenessProbe", 3600),
            ("readinessProbe", 3600),
        ] {
            let p = &c[which];
            if p.is_null() {
                continue;
            }
            let int = |f: &str| p[f].as_i64().ok_or(format!("{which}.{f} missing"));
            let (period, timeout, failures) = (
                int("periodSeconds")?,
                int("timeoutSeconds")?,
                int("failureThreshold")?,
            );
            if !(1..=max_period).contains(&period) || timeout < 1 || failures < 1 {
                return Err(format!(
                    "{which}: period {period} timeout {timeout} failures {failures}"
                ));
            }
            if timeout > period || (timeout == period && which != "startupProbe") {
                return Err(format!("{which}: timeout {timeout} vs period {period}"));
            }
            if which == "startupProbe" && period * failures > 240 {
                return Err(format!("startup window {}", period * failures));
            }
            if which != "readinessProbe"
                && !p["successThreshold"].is_null()
                && p["successThreshold"].as_i64() != Some(1)
            {
                return Err(format!("{which}.successThreshold"));
            }
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn any_valid_config_is_refused_or_accepted(spec in arb_spec(), embedded in any::<bool>(), readiness in any::<bool>()) {
        let layout = if embedded { Layout::Embedded } else { Layout::Sidecar };
        match render(&spec, &workload(layout), Options { readiness }) {
            Ok(r) => prop_assert_eq!(cloud_run_accepts(&doc(&r)), Ok(())),
            Err(e) => prop_assert!(e.0.iter().all(|r| r.platform == PLATFORM && !r.key.is_empty() && !r.fix.is_empty())),
        }
    }
}

/// Cloud Run passes only 200-399, as kubelet does: degraded must not mean "not ready".
#[test]
fn a_degraded_429_instance_stays_in_traffic() {
    for (degraded, path) in [(429, "/readyz?degraded_status=200"), (200, "/readyz")] {
        let spec = spec_from_toml(&format!(
            "{QUICK}[readiness]\ndegraded_status = {degraded}\n"
        ));
        let r = render(
            &spec,
            &workload(Layout::Embedded),
            Options { readiness: true },
        )
        .unwrap();
        let c = &doc(&r)["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            c["readinessProbe"]["httpGet"]["path"],
            Value::from(path),
            "{degraded}"
        );
    }
}

/// container-dependencies made the agent wait for vitals' startup probe, which waits for
/// dependencies the agent may serve itself: a revision that never starts.
#[test]
fn the_agent_does_not_wait_for_the_sidecars_startup() {
    let r = render(
        &spec_from_toml(QUICK),
        &workload(Layout::Sidecar),
        Options::default(),
    )
    .unwrap();
    let d = doc(&r);
    let annotations = &d["spec"]["template"]["metadata"]["annotations"];
    assert!(
        annotations
            .get("run.googleapis.com/container-dependencies")
            .is_none(),
        "{annotations:?}"
    );
}

/// Cloud Run mounts no ConfigMaps: the text rides in VITALS_CONFIG_TOML (which `serve` reads
/// when no --config is given) and each secret comes from Secret Manager.
#[test]
fn the_configuration_and_its_secrets_reach_the_vitals_container() {
    let r = render(
        &spec_from_toml(QUICK),
        &configured(QUICK),
        Options::default(),
    )
    .unwrap();
    let d = doc(&r);
    let vitals = d["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "vitals")
        .unwrap()
        .clone();
    assert_eq!(vitals["args"][0], "serve");
    assert!(
        vitals["args"].as_sequence().unwrap().len() == 1,
        "no --config to a file nothing put there"
    );
    assert_eq!(vitals["env"][0]["name"], "VITALS_CONFIG_TOML");
    assert_eq!(vitals["env"][0]["value"].as_str(), Some(QUICK));
    assert_eq!(vitals["env"][1]["name"], "OPENAI_API_KEY");
    assert_eq!(
        vitals["env"][1]["valueFrom"]["secretKeyRef"]["name"],
        "agent-openai-api-key"
    );
    assert_eq!(
        vitals["env"][1]["valueFrom"]["secretKeyRef"]["key"],
        "latest"
    );
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("Secret Manager (agent-openai-api-key)")),
        "{:?}",
        r.notes
    );
}

/// The entrypoint layout: one container from the agent's image, vitals as its command running
/// the agent's, the configuration and secrets in its environment, traffic to the agent's port
/// and the probes to vitals' port.
#[test]
fn the_entrypoint_layout_runs_the_agent_under_vitals_in_one_container() {
    let w = Workload {
        layout: Layout::Entrypoint,
        agent_command: vec!["python".into(), "agent.py".into()],
        ..configured(QUICK)
    };
    let spec = spec_from_toml(QUICK);
    let r = render(&spec, &w, Options { readiness: true }).unwrap();
    let d = doc(&r);
    let containers = d["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
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
    assert_eq!(args, ["serve", "--", "python", "agent.py"]);
    assert_eq!(c["env"][0]["name"], "VITALS_CONFIG_TOML");
    assert_eq!(c["env"][0]["value"], QUICK);
    assert_eq!(
        c["env"][1]["valueFrom"]["secretKeyRef"]["name"],
        "agent-openai-api-key"
    );
    assert_eq!(c["ports"][0]["containerPort"], 8000);
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(
            c[probe]["httpGet"]["port"].as_u64(),
            Some(u64::from(spec.port)),
            "{probe}"
        );
    }
}
