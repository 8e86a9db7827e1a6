//! The job model both outputs are written from, its JSON API form, and the server's rules.

use serde_json::{json, Value};
use vitals_core::spec::Limits;
use vitals_core::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub name: String,
    pub update: Update,
    pub group: Group,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub min_healthy_time: Duration,
    pub healthy_deadline: Duration,
    pub progress_deadline: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub count: u32,
    /// `network { mode = "bridge" }`: the group's tasks share one network namespace, so the
    /// agent and vitals reach each other (and the agent's loopback dependencies) on 127.0.0.1.
    pub bridge: bool,
    /// Port labels and the container ports behind them.
    pub ports: Vec<(String, u16)>,
    pub tasks: Vec<Task>,
}

/// A `template` block: a file Nomad writes into the task's folder before starting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Relative to the task's folder, such as `local/health.toml`.
    pub destination: String,
    pub data: String,
    /// `env = true`: the file's `KEY=value` lines become the task's environment.
    pub env: bool,
    /// Delimiters other than `{{ }}`, for data that holds `{{` as text.
    pub delimiters: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub name: String,
    pub image: String,
    /// The docker driver's `entrypoint`, replacing the image's (entrypoint layout: vitals).
    pub entrypoint: Vec<String>,
    pub args: Vec<String>,
    pub ports: Vec<String>,
    /// A `lifecycle { hook = "prestart", sidecar = true }` task: runs for the allocation's life.
    pub sidecar: bool,
    pub stop: Stop,
    /// Plain environment variables (`env { }`); secrets come through templates.
    pub env: Vec<(String, String)>,
    pub templates: Vec<Template>,
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub kill_signal: String,
    pub kill_timeout: Duration,
    pub shutdown_delay: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub provider: String,
    pub port_label: String,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub path: String,
    /// The port label the check requests, when not the service's own.
    pub port: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub check_restart: Option<CheckRestart>,
    pub on_update: Option<String>,
    /// 0 is Consul's default and the only value the Nomad provider takes.
    pub failures_before_critical: u32,
    pub success_before_passing: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRestart {
    pub limit: u32,
    pub grace: Duration,
    pub ignore_warnings: bool,
}

/// A Go duration string for HCL (`"1m30s"`, `"250ms"`): humantime's `"1m 30s"` does not parse in Go.
pub fn go_duration(d: Duration) -> String {
    let mut ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ] {
        if ns >= size {
            out.push_str(&format!("{}{unit}", ns / size));
            ns %= size;
        }
    }
    out
}

/// Integer nanoseconds, the JSON API's `time.Duration`.
pub fn nanos(d: Duration) -> Value {
    json!(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Job {
    /// The rules the Nomad server applies at submit time (`nomad/structs` `Validate`), on the
    /// values vitals would emit, each traced back to its `health.toml` key.
    pub fn check(&self, limits: &mut Limits) {
        for task in &self.group.tasks {
            for service in &task.services {
                for c in &service.checks {
                    let key = if c.check_restart.is_some() {
                        "probes.liveness"
                    } else {
                        "probes.readiness"
                    };
                    if c.interval < Duration::from_secs(1) {
                        limits.refuse(
                            format!("check \"{}\".interval", c.name),
                            go_duration(c.interval),
                            "is below 1s",
                            format!("{key}.period"),
                            format!("raise {key}.period to 1s or more"),
                        );
                    }
                    if c.timeout < Duration::from_secs(1) {
                        limits.refuse(
                            format!("check \"{}\".timeout", c.name),
                            go_duration(c.timeout),
                            "is below 1s",
                            format!("{key}.timeout"),
                            format!("raise {key}.timeout to 1s or more"),
                        );
                    }
                    if service.provider == "nomad"
                        && (c.failures_before_critical != 0 || c.success_before_passing != 0)
                    {
                        limits.refuse(
                            format!("check \"{}\".failures_before_critical", c.name),
                            c.failures_before_critical,
                            "must be 0 with provider = \"nomad\"",
                            format!("{key}.failure_threshold"),
                            "use provider = \"consul\"",
                        );
                    }
                }
            }
        }
        let u = &self.update;
        if u.min_healthy_time >= u.healthy_deadline {
            limits.refuse(
                "update.min_healthy_time",
                go_duration(u.min_healthy_time),
                format!(
                    "must be shorter than update.healthy_deadline ({})",
                    go_duration(u.healthy_deadline)
                ),
                "startup.timeout",
                "lower startup.timeout",
            );
        }
        if u.progress_deadline <= u.healthy_deadline {
            limits.refuse(
                "update.progress_deadline",
                go_duration(u.progress_deadline),
                format!(
                    "must be longer than update.healthy_deadline ({})",
                    go_duration(u.healthy_deadline)
                ),
                "startup.timeout",
                "lower startup.timeout",
            );
        }
    }

    /// The JSON API form: `{"Job": {...}}`, Go field names, durations in nanoseconds.
    pub fn to_json(&self) -> String {
        let tasks: Vec<Value> = self.group.tasks.iter().map(task_json).collect();
        let job = json!({
            "Job": {
                "ID": self.name,
                "Name": self.name,
                "Type": "service",
                "Datacenters": ["*"],
                "Update": {
                    "MaxParallel": 1,
                    "HealthCheck": "checks",
                    "MinHealthyTime": nanos(self.update.min_healthy_time),
                    "HealthyDeadline": nanos(self.update.healthy_deadline),
                    "ProgressDeadline": nanos(self.update.progress_deadline),
                    "AutoRevert": true,
                },
                "TaskGroups": [{
                    "Name": self.group.name,
                    "Count": self.group.count,
                    "Networks": [network_json(&self.group)],
                    "Tasks": tasks,
                }],
            }
        });
        let mut out = serde_json::to_string_pretty(&job).expect("json values serialize");
        out.push('\n');
        out
    }
}

fn network_json(g: &Group) -> Value {
    let ports: Vec<Value> = g
        .ports
        .iter()
        .map(|(label, to)| json!({ "Label": label, "To": to }))
        .collect();
    let mut network = json!({ "DynamicPorts": ports });
    if g.bridge {
        network["Mode"] = json!("bridge");
    }
    network
}

fn template_json(t: &Template) -> Value {
    let mut v = json!({
        "DestPath": t.destination,
        "EmbeddedTmpl": t.data,
        "ChangeMode": "restart",
        "Envvars": t.env,
    });
    if let Some((left, right)) = &t.delimiters {
        v["LeftDelim"] = json!(left);
        v["RightDelim"] = json!(right);
    }
    v
}

fn task_json(t: &Task) -> Value {
    let mut config = json!({ "image": t.image });
    if !t.entrypoint.is_empty() {
        config["entrypoint"] = json!(t.entrypoint);
    }
    if !t.args.is_empty() {
        config["args"] = json!(t.args);
    }
    if !t.ports.is_empty() {
        config["ports"] = json!(t.ports);
    }
    let mut task = json!({
        "Name": t.name,
        "Driver": "docker",
        "Config": config,
        "KillSignal": t.stop.kill_signal,
        "KillTimeout": nanos(t.stop.kill_timeout),
        "ShutdownDelay": nanos(t.stop.shutdown_delay),
    });
    if t.sidecar {
        task["Lifecycle"] = json!({ "Hook": "prestart", "Sidecar": true });
    }
    if !t.env.is_empty() {
        task["Env"] = t
            .env
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    if !t.templates.is_empty() {
        task["Templates"] = t.templates.iter().map(template_json).collect();
    }
    if !t.services.is_empty() {
        task["Services"] = t.services.iter().map(service_json).collect();
    }
    task
}

fn service_json(s: &Service) -> Value {
    json!({
        "Name": s.name,
        "Provider": s.provider,
        "PortLabel": s.port_label,
        "Checks": s.checks.iter().map(check_json).collect::<Vec<_>>(),
    })
}

fn check_json(c: &Check) -> Value {
    let mut v = json!({
        "Name": c.name,
        "Type": "http",
        "Path": c.path,
        "Interval": nanos(c.interval),
        "Timeout": nanos(c.timeout),
    });
    if let Some(port) = &c.port {
        v["PortLabel"] = json!(port);
    }
    if let Some(r) = &c.check_restart {
        v["CheckRestart"] = json!({
            "Limit": r.limit,
            "Grace": nanos(r.grace),
            "IgnoreWarnings": r.ignore_warnings,
        });
    }
    if let Some(u) = &c.on_update {
        v["OnUpdate"] = json!(u);
    }
    if c.failures_before_critical > 0 {
        v["FailuresBeforeCritical"] = json!(c.failures_before_critical);
    }
    if c.success_before_passing > 0 {
        v["SuccessBeforePassing"] = json!(c.success_before_passing);
    }
    v
}
