//! The ECS render's container health check, run by podman's Docker-compatible health checks
//! (ECS uses the same semantics: CMD exec form, interval, timeout, retries, start period) on
//! the vitals image, with the configuration the task definition hands over.
//!
//! Needs podman: scripts/setup-test-deps installs and configures it.

// Real containers run on the wall clock.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The vitals container of a rendered ECS task definition.
fn vitals_container(example: &str) -> serde_json::Value {
    let files = render(example, "ecs", &[]);
    let (_, td) = files
        .iter()
        .find(|(n, _)| n == "task-definition.json")
        .unwrap();
    let td: serde_json::Value = serde_json::from_str(td).unwrap();
    td["containerDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "vitals")
        .unwrap()
        .clone()
}

/// A running container made from a rendered container definition, removed on drop.
struct Task(String);

impl Task {
    /// `podman run` with the definition's image, command, environment and healthCheck (the
    /// command as its JSON exec form, no shell), plus `env` for what ECS takes from Secrets
    /// Manager.
    fn start(name: &str, c: &serde_json::Value, env: &[(&str, &str)]) -> Task {
        let _ = podman(&["rm", "-f", name]);
        let hc = &c["healthCheck"];
        let secs = |k: &str| format!("{}s", hc[k].as_u64().unwrap());
        // ECS's ["CMD", args…] is Docker's exec form; podman's --health-cmd spells it as the
        // JSON array of the args (it adds the CMD itself; `start` checks it did).
        let command = hc["command"].as_array().unwrap();
        assert_eq!(command[0], "CMD");
        let exec_form = serde_json::Value::Array(command[1..].to_vec()).to_string();
        let mut args: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            name.into(),
            "--network=none".into(),
            "--health-cmd".into(),
            exec_form,
            "--health-interval".into(),
            secs("interval"),
            "--health-timeout".into(),
            secs("timeout"),
            "--health-retries".into(),
            hc["retries"].to_string(),
            "--health-start-period".into(),
            secs("startPeriod"),
        ];
        for e in c["environment"].as_array().into_iter().flatten() {
            args.push("--env".into());
            args.push(format!(
                "{}={}",
                e["name"].as_str().unwrap(),
                e["value"].as_str().unwrap()
            ));
        }
        for (k, v) in env {
            args.push("--env".into());
            args.push(format!("{k}={v}"));
        }
        args.push(c["image"].as_str().unwrap().into());
        args.extend(
            c["command"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_owned()),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        podman_ok(&args);
        let test = podman_ok(&[
            "inspect",
            name,
            "--format",
            "{{json .Config.Healthcheck.Test}}",
        ]);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&test).unwrap(),
            hc["command"],
            "podman runs the rendered command as it is"
        );
        Task(name.into())
    }

    /// `podman healthcheck run`: exit status 0 means healthy; its wall time.
    fn check(&self) -> (bool, Duration) {
        let t = Instant::now();
        let out = podman(&["healthcheck", "run", &self.0]);
        (out.status.success(), t.elapsed())
    }

    fn health(&self) -> String {
        podman_ok(&["inspect", &self.0, "--format", "{{.State.Health.Status}}"])
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.0]);
    }
}

#[test]
fn the_rendered_health_command_runs_in_the_vitals_image() {
    let _serial = serial_blocking();
    let c = vitals_container("python-agent");
    let hc = &c["healthCheck"];
    assert_eq!(hc["command"][0], "CMD", "exec form: the image has no shell");
    // The configuration rides in the environment: vitals runs it (heartbeat required, startup
    // on the agent's signal), so with no agent beside it, it answers liveness until the
    // startup budget is spent.
    let task = Task::start("vitals-ecs-health", &c, &[]);
    std::thread::sleep(Duration::from_secs(1));
    let (healthy, took) = task.check();
    assert!(healthy, "{}", podman_ok(&["logs", "vitals-ecs-health"]));
    assert!(took < Duration::from_secs(hc["timeout"].as_u64().unwrap()));
    assert_eq!(task.health(), "healthy");

    // A hung vitals (stopped by SIGSTOP): the command gives up at its own --timeout, inside
    // healthCheck.timeout, and reports unhealthy rather than being killed by the runtime.
    podman_ok(&["kill", "--signal", "STOP", "vitals-ecs-health"]);
    let (healthy, took) = task.check();
    assert!(!healthy);
    assert!(
        took < Duration::from_secs(hc["timeout"].as_u64().unwrap() + 1),
        "the check took {took:?}"
    );
    podman_ok(&["kill", "--signal", "CONT", "vitals-ecs-health"]);
    assert!(task.check().0, "healthy again once it runs");
}

/// The task's configuration carries its secrets by name only: vitals exits 64 without them
/// (ECS would stop the task, saying why), and runs with them.
#[test]
fn a_secret_the_configuration_needs_comes_from_the_task_environment() {
    let _serial = serial_blocking();
    let c = vitals_container("hosted-llm");
    assert_eq!(c["secrets"][0]["name"], "OPENAI_API_KEY");
    {
        let task = Task::start("vitals-ecs-nosecret", &c, &[]);
        let code = podman_ok(&["wait", &task.0]);
        assert_eq!(code, "64");
        let logs = podman(&["logs", &task.0]);
        let logs = String::from_utf8_lossy(&logs.stderr);
        assert!(logs.contains("OPENAI_API_KEY"), "{logs}");
    }
    let task = Task::start(
        "vitals-ecs-secret",
        &c,
        &[("OPENAI_API_KEY", "sk-test-not-a-real-key")],
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(task.check().0, "{}", podman_ok(&["logs", &task.0]));
}
