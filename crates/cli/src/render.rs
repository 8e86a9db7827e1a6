//! `vitals render PLATFORM`: one `health.toml` into each platform's probe settings.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use vitals_core::spec::{Layout, Refusals, Rendered, Workload};
use vitals_core::HealthSpec;

use crate::EXIT_CONFIG;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Platform {
    Kubernetes,
    Nomad,
    Ecs,
    Cloudrun,
    /// Prometheus alerting rules and their promtool test file.
    Alerts,
    /// A Grafana dashboard (its Prometheus data source is a variable).
    Dashboard,
    /// Every platform, the alerts and the dashboard; needs --out.
    All,
}

impl Platform {
    const EACH: [Platform; 6] = [
        Platform::Kubernetes,
        Platform::Nomad,
        Platform::Ecs,
        Platform::Cloudrun,
        Platform::Alerts,
        Platform::Dashboard,
    ];

    fn dir(self) -> &'static str {
        match self {
            Platform::Kubernetes => "kubernetes",
            Platform::Nomad => "nomad",
            Platform::Ecs => "ecs",
            Platform::Cloudrun => "cloudrun",
            Platform::Alerts => "alerts",
            Platform::Dashboard => "dashboard",
            Platform::All => "",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LayoutArg {
    /// vitals runs as its own container beside the agent's.
    Sidecar,
    /// The agent embeds vitals and serves the probe routes itself.
    Embedded,
    /// vitals is the agent container's entrypoint and runs the agent (the command after --):
    /// the agent's image holds vitals at --vitals-path.
    Entrypoint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NomadProvider {
    /// Consul: warning state for degraded, traffic gating.
    Consul,
    /// Nomad's built-in service discovery: no warning state, no traffic gating.
    Nomad,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Target platforms, comma-separated (such as `kubernetes,alerts`), or `all`. A refusal
    /// for any of them writes nothing: name only the platforms you deploy to.
    #[arg(
        value_enum,
        value_delimiter = ',',
        required = true,
        value_name = "PLATFORM"
    )]
    pub platforms: Vec<Platform>,
    /// The health configuration (TOML).
    #[arg(long, short, env = "VITALS_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    /// Write files under DIR/<platform>/ instead of printing them.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Name of the deployment, job, task family and service: lowercase letters, digits and
    /// '-', starting with a letter, at most 63 characters (a name every platform takes, and one
    /// that cannot leave --out or break out of a file's syntax).
    #[arg(long, default_value = "agent", value_parser = parse_name)]
    pub name: String,
    /// The agent's image.
    #[arg(long, default_value = "registry.example.com/agent:1.0.0")]
    pub image: String,
    /// The vitals image (sidecar layout). The default is the name `scripts/build-image` gives
    /// the image it builds; push it to your registry and pass its name there.
    #[arg(long, default_value = vitals_core::spec::DEFAULT_VITALS_IMAGE)]
    pub vitals_image: String,
    /// The port the agent serves its own traffic on (sidecar layout).
    #[arg(long, default_value_t = 8000, value_parser = clap::value_parser!(u16).range(1..))]
    pub agent_port: u16,
    /// Where vitals runs: its own container, or inside the agent.
    #[arg(long, value_enum, default_value_t = LayoutArg::Sidecar)]
    pub layout: LayoutArg,
    /// Path of the vitals binary in the image that runs the ECS health command.
    #[arg(long, default_value = "/usr/local/bin/vitals")]
    pub vitals_path: String,
    /// Path of health.toml inside the vitals container (Kubernetes sidecar layout: the
    /// ConfigMap is mounted on its folder). Absolute.
    #[arg(long, default_value = "/etc/vitals/health.toml", value_parser = parse_config_path)]
    pub config_path: String,
    /// Kubernetes: a strategic-merge patch for an existing Deployment instead of a whole one.
    #[arg(long)]
    pub patch: bool,
    /// Nomad: the service provider that registers the checks.
    #[arg(long, value_enum, default_value_t = NomadProvider::Consul)]
    pub nomad_provider: NomadProvider,
    /// Cloud Run: add a readinessProbe (Preview; adds the BETA launch-stage annotation).
    #[arg(long)]
    pub cloudrun_readiness: bool,
    /// Alerts: the scrape job's name (the `job` label); default: every vitals target.
    #[arg(long, default_value = "")]
    pub job: String,
    /// Alerts: the labels that make a fleet for AgentFleetDegraded, comma-separated (Prometheus
    /// label names).
    #[arg(long, value_delimiter = ',', default_value = "job", value_parser = parse_label_name)]
    pub group_by: Vec<String>,
    /// Entrypoint layout: the agent's command, which vitals runs (`vitals serve -- CMD`).
    #[arg(last = true, value_name = "AGENT_COMMAND")]
    pub agent_command: Vec<String>,
    /// Alerts: count restarts with kube-state-metrics (`kubernetes`) or from vitals' own
    /// process_start_time_seconds, which works everywhere (`any`).
    #[arg(long = "platform", id = "alerts_platform", value_enum, default_value_t = AlertsPlatform::Any)]
    pub alerts_platform: AlertsPlatform,
}

/// `--name`: a DNS-1035 label (Kubernetes Services and Cloud Run take no more).
fn parse_config_path(s: &str) -> Result<String, String> {
    let path = std::path::Path::new(s);
    if !path.is_absolute() || path.file_name().is_none() || s.ends_with('/') {
        return Err(format!(
            "{s:?} is not an absolute file path; pass one such as /etc/vitals/health.toml"
        ));
    }
    if path.parent() == Some(std::path::Path::new("/")) {
        return Err(format!(
            "{s:?} is at the root: the configuration is mounted over its folder; pass one such as /etc/vitals/health.toml"
        ));
    }
    Ok(s.to_owned())
}

fn parse_name(s: &str) -> Result<String, String> {
    let mut chars = s.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.ends_with('-')
        && s.len() <= 63;
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a name every platform takes; use lowercase letters, digits and '-', starting with a letter and ending with a letter or digit, at most 63 characters (such as \"support-agent\")"
        ))
    }
}

/// `--group-by`: a Prometheus label name.
fn parse_label_name(s: &str) -> Result<String, String> {
    let mut chars = s.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a Prometheus label name; use letters, digits and '_', not starting with a digit (such as \"cluster\")"
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AlertsPlatform {
    /// Restarts from process_start_time_seconds (Nomad, ECS, VMs; anywhere an instance keeps
    /// its scrape address).
    Any,
    /// Restarts from kube_pod_container_status_restarts_total.
    Kubernetes,
}

pub fn run(args: &RenderArgs) -> ExitCode {
    let platforms: Vec<Platform> = if args.platforms.contains(&Platform::All) {
        Platform::EACH.to_vec()
    } else {
        let mut unique = Vec::new();
        for p in &args.platforms {
            if !unique.contains(p) {
                unique.push(*p);
            }
        }
        unique
    };
    if platforms.len() > 1 && args.out.is_none() {
        report!("error: several platforms' files cannot share stdout; pass --out DIR");
        return ExitCode::from(EXIT_CONFIG);
    }
    let (config, config_toml, secret_env) = match crate::config::load_for_render(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let spec = HealthSpec::from_config(&config);
    let alerts = vitals_prometheus::Options {
        job: args.job.clone(),
        group_by: args.group_by.clone(),
        restarts: match args.alerts_platform {
            AlertsPlatform::Any => vitals_prometheus::Restarts::ProcessStart,
            AlertsPlatform::Kubernetes => vitals_prometheus::Restarts::KubeStateMetrics,
        },
        container: "vitals".into(),
    };
    let workload = Workload {
        name: args.name.clone(),
        image: args.image.clone(),
        agent_port: args.agent_port,
        vitals_image: args.vitals_image.clone(),
        vitals_path: args.vitals_path.clone(),
        config_path: args.config_path.clone(),
        config_toml: Some(config_toml),
        secret_env,
        layout: match args.layout {
            LayoutArg::Sidecar => Layout::Sidecar,
            LayoutArg::Embedded => Layout::Embedded,
            LayoutArg::Entrypoint => Layout::Entrypoint,
        },
        agent_command: args.agent_command.clone(),
        vitals_env: fleet_env(&config, &args.name),
    };
    match (workload.layout, workload.agent_command.is_empty()) {
        (Layout::Entrypoint, true) => {
            report!("error: --layout entrypoint runs the agent under vitals: give the agent's command after --, such as `vitals render kubernetes --config health.toml --layout entrypoint -- python agent.py`");
            return ExitCode::from(EXIT_CONFIG);
        }
        (Layout::Sidecar | Layout::Embedded, false) => {
            report!("error: a command after -- is the agent's command of --layout entrypoint; add --layout entrypoint, or remove it");
            return ExitCode::from(EXIT_CONFIG);
        }
        _ => {}
    }
    // Render everything first: a refused platform writes nothing, so no folder holds half a
    // render.
    let mut outputs = Vec::new();
    let mut refused = Vec::new();
    for p in platforms {
        let rendered = match p {
            Platform::Alerts => Ok(vitals_prometheus::render(&config, &alerts)),
            Platform::Dashboard => {
                let mut r = Rendered::default();
                r.file(
                    vitals_prometheus::dashboard::FILE,
                    vitals_prometheus::dashboard::render(),
                );
                Ok(r)
            }
            _ => spec
                .check_workload(&workload)
                .and_then(|()| render(p, &spec, &workload, args)),
        };
        match rendered {
            Ok(r) => outputs.push((p, r)),
            Err(e) => refused.push(e),
        }
    }
    if !refused.is_empty() {
        let n: usize = refused.iter().map(|r| r.0.len()).sum();
        report!(
            "error: {}: {n} setting{} the platform would refuse; nothing was written:",
            args.config.display(),
            if n == 1 { "" } else { "s" }
        );
        for r in refused.iter().flat_map(|r| r.0.iter()) {
            report!("  {r}");
        }
        return ExitCode::from(EXIT_CONFIG);
    }
    for (_, r) in &outputs {
        for n in &r.notes {
            report!("note: {n}");
        }
    }
    let platforms_rendered = outputs
        .iter()
        .any(|(p, _)| !matches!(p, Platform::Alerts | Platform::Dashboard));
    if let (Some(gate), true) = (&config.gate, platforms_rendered) {
        report!(
            "note: [gate] listens on {} inside the {}: point the agent's LLM base URL at http://127.0.0.1:{} (no platform port is opened for it, and no probe goes through it)",
            gate.listen,
            match workload.layout {
                Layout::Sidecar => "pod or task, beside the agent",
                Layout::Entrypoint => "agent's container",
                Layout::Embedded => "agent's own process",
            },
            gate.listen.port()
        );
        // Every port of a pod is open to the cluster unless a NetworkPolicy closes it: a gate
        // on every interface takes requests from any pod, and a client that is not the agent
        // can send requests whose 5xx count against the upstream.
        if !gate.listen.ip().to_canonical().is_loopback() {
            report!(
                "note: [gate] listens on every interface ({}): anything that reaches the pod's or task's IP reaches it too (on Kubernetes any pod, unless a NetworkPolicy says otherwise); where only the agent calls it, set [gate] listen = \"127.0.0.1:{}\"",
                gate.listen,
                gate.listen.port()
            );
        }
    }
    if !config.processes.is_empty() && platforms_rendered {
        let programs: Vec<&str> = config
            .processes
            .iter()
            .filter_map(|p| p.command.first().map(String::as_str))
            .collect();
        report!(
            "note: [[processes]] run in the container that runs vitals: {} must be in {}",
            programs.join(", "),
            match workload.layout {
                Layout::Sidecar => format!("the vitals image ({}); the image scripts/build-image builds holds vitals alone, so build one with them, or render --layout entrypoint for an agent image that has them", workload.vitals_image),
                Layout::Entrypoint | Layout::Embedded => format!("the agent's image ({})", workload.image),
            }
        );
    }
    if let (Some(fleet), true) = (&config.fleet, platforms_rendered) {
        let shared: Vec<&str> = config
            .dependencies
            .iter()
            .filter(|d| d.shared)
            .map(|d| d.name.as_str())
            .collect();
        report!(
            "note: [fleet]: every replica must reach Redis at {}{}; {} checked once an interval for the whole deployment, under keys {}. Where readiness replaces instances (ECS' scope=instance), a task whose own path to a shared dependency fails is replaced, and an outage the whole fleet sees only degrades",
            fleet.redis_url,
            fleet
                .password_env
                .as_deref()
                .map(|v| format!(" (password from {v}, delivered as the other secrets)"))
                .unwrap_or_default(),
            if shared.is_empty() {
                "no dependency is shared, so nothing is".to_owned()
            } else {
                format!("{} are", shared.join(", "))
            },
            match workload.vitals_env.iter().find(|(k, _)| k == vitals_core::config::FLEET_KEY_PREFIX_ENV) {
                Some((k, v)) if workload.delivers_config() => format!("{v}:… ({k} in the rendered environment: this service's own; set fleet.key_prefix to choose)"),
                _ => format!("{}:…", fleet.key_prefix),
            }
        );
    }
    let ca_files: Vec<String> = config
        .fleet
        .iter()
        .filter_map(|f| f.ca_file.as_ref())
        .chain(config.dependencies.iter().filter_map(|d| match &d.check {
            vitals_core::config::Check::Redis(r) => r.ca_file.as_ref(),
            vitals_core::config::Check::Http(h) => h.ca_file.as_ref(),
            vitals_core::config::Check::Llm(l) => l.ca_file.as_ref(),
            _ => None,
        }))
        .chain(config.gate.iter().filter_map(|g| g.ca_file.as_ref()))
        .map(|p| p.display().to_string())
        .collect();
    if !ca_files.is_empty() && platforms_rendered {
        report!(
            "note: the CA files {} are read in the container that runs vitals, at start; the files rendered do not deliver them: mount them there (Kubernetes: a Secret or ConfigMap volume; Nomad: a template; ECS and Cloud Run: a volume, or an image that holds them)",
            ca_files.join(", ")
        );
    }
    if workload.layout == Layout::Entrypoint && platforms_rendered {
        report!(
            "note: entrypoint layout: the agent's image ({}) must hold vitals at {}; vitals runs `{}` as its supervised process `agent`, holds its SIGTERM for drain.delay and exits with its status",
            workload.image,
            workload.vitals_path,
            workload.agent_command.join(" ")
        );
    }
    if workload.layout == Layout::Embedded && platforms_rendered {
        report!(
            "note: embedded layout: the agent embeds vitals and reads its configuration itself (vitals::Builder::from_toml, or in code); the files deliver no health.toml to it{}: ship them with the agent",
            if workload.secret_env.is_empty() {
                String::new()
            } else {
                format!(" and none of {}", workload.secret_env.join(", "))
            }
        );
    }
    match &args.out {
        Some(dir) => match write(dir, &outputs) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                report!("error: {e}");
                ExitCode::FAILURE
            }
        },
        None => {
            let (p, r) = &outputs[0];
            let many = r.files.len() > 1;
            for f in &r.files {
                if many {
                    out!("==> {}/{} <==", p.dir(), f.name);
                }
                crate::write_text(&f.contents);
            }
            ExitCode::SUCCESS
        }
    }
}

fn render(
    p: Platform,
    spec: &HealthSpec,
    workload: &Workload,
    args: &RenderArgs,
) -> Result<Rendered, Refusals> {
    match p {
        Platform::Kubernetes => vitals_kubernetes::render(
            spec,
            workload,
            if args.patch {
                vitals_kubernetes::Output::Patch
            } else {
                vitals_kubernetes::Output::Deployment
            },
        ),
        Platform::Nomad => vitals_nomad::render(
            spec,
            workload,
            match args.nomad_provider {
                NomadProvider::Consul => vitals_nomad::Provider::Consul,
                NomadProvider::Nomad => vitals_nomad::Provider::Nomad,
            },
        ),
        Platform::Ecs => vitals_ecs::render(spec, workload),
        Platform::Cloudrun => vitals_cloudrun::render(
            spec,
            workload,
            vitals_cloudrun::Options {
                readiness: args.cloudrun_readiness,
            },
        ),
        Platform::Alerts | Platform::Dashboard | Platform::All => {
            unreachable!("handled by the caller")
        }
    }
}

/// Writes every platform's files under `dir/<platform>/`, all or none: everything goes to a
/// staging folder inside `dir` first, and only once every file is written is each platform's
/// folder renamed into place (replacing the previous render). A full disk or a write error
/// leaves the previous render as it was.
fn write(dir: &Path, outputs: &[(Platform, Rendered)]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let staging = dir.join(format!(".vitals-render-{}", std::process::id()));
    let result = stage_and_swap(dir, &staging, outputs);
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn stage_and_swap(
    dir: &Path,
    staging: &Path,
    outputs: &[(Platform, Rendered)],
) -> Result<(), String> {
    for (p, r) in outputs {
        let sub = staging.join(p.dir());
        std::fs::create_dir_all(&sub)
            .map_err(|e| format!("cannot create {}: {e}; nothing was written", sub.display()))?;
        for f in &r.files {
            let path = sub.join(&f.name);
            std::fs::write(&path, &f.contents).map_err(|e| {
                format!("cannot write {}: {e}; nothing was written", path.display())
            })?;
        }
    }
    for (p, r) in outputs {
        let (from, to) = (staging.join(p.dir()), dir.join(p.dir()));
        if to.exists() {
            let old = staging.join(format!("{}.previous", p.dir()));
            std::fs::rename(&to, &old)
                .map_err(|e| format!("cannot replace {}: {e}", to.display()))?;
        }
        std::fs::rename(&from, &to)
            .map_err(|e| format!("cannot move the render into {}: {e}", to.display()))?;
        for f in &r.files {
            report!("wrote {}", to.join(&f.name).display());
        }
    }
    Ok(())
}

/// With `[fleet]` and no `key_prefix` in the file: `vitals:NAME`, so that two services sharing
/// a Redis (and checking the same provider) never share results or a budget. Not when the agent
/// embeds vitals: it brings its own configuration.
fn fleet_env(config: &vitals_core::Config, name: &str) -> Vec<(String, String)> {
    match &config.fleet {
        Some(f) if !f.key_prefix_set => vec![(
            vitals_core::config::FLEET_KEY_PREFIX_ENV.to_owned(),
            format!("{}:{name}", vitals_core::config::DEFAULT_KEY_PREFIX),
        )],
        _ => Vec::new(),
    }
}
