//! Loading `health.toml` plus `VITALS_*` variables, and `vitals validate`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use vitals_core::config::{HeartbeatMode, StartupMode};
use vitals_core::files::MAX_FILE_BYTES;
use vitals_core::{Config, ConfigErrors};

use crate::EXIT_CONFIG;

/// The `VITALS_<SECTION>__<KEY>` variables. Only variables with `__` are configuration, so
/// `VITALS_CONFIG` and `VITALS_LOG_FORMAT` stay flags.
fn env_overrides() -> Env {
    Env::prefixed("VITALS_")
        .filter(|k| k.as_str().contains("__"))
        .split("__")
}

/// Where a configuration comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// None given: no dependencies, ready at once.
    Nothing,
    /// `--config FILE` (or `VITALS_CONFIG`).
    File(PathBuf),
    /// The file's text in [`CONFIG_TOML_ENV`]: platforms that mount no files (ECS, Cloud Run)
    /// deliver it this way.
    Text(String),
}

/// The variable that carries the whole `health.toml` as text.
pub const CONFIG_TOML_ENV: &str = vitals_core::contract::CONFIG_TOML_ENV;

impl Source {
    /// `--config`, or else the text in `VITALS_CONFIG_TOML`; both at once is a mistake (which
    /// one did the deployment mean?) and exits 64.
    pub fn from_args(file: Option<PathBuf>) -> Result<Source, ExitCode> {
        let text = std::env::var_os(CONFIG_TOML_ENV);
        match (file, text) {
            (Some(_), Some(_)) => {
                report!(
                    "error: both --config (or VITALS_CONFIG) and {CONFIG_TOML_ENV} are set; keep one: the file, or the configuration's text in {CONFIG_TOML_ENV}"
                );
                Err(ExitCode::from(EXIT_CONFIG))
            }
            (Some(file), None) => Ok(Source::File(file)),
            (None, Some(text)) => {
                match text.into_string() {
                    Ok(text) if is_blank(text.as_bytes()) => {
                        report!(
                            "error: {CONFIG_TOML_ENV} is empty (a parameter not filled in?); set it to the text of health.toml, or unset it to serve without a configuration"
                        );
                        Err(ExitCode::from(EXIT_CONFIG))
                    }
                    Ok(text) => Ok(Source::Text(text)),
                    Err(_) => {
                        report!("error: {CONFIG_TOML_ENV} is not UTF-8; set it to the text of health.toml");
                        Err(ExitCode::from(EXIT_CONFIG))
                    }
                }
            }
            (None, None) => Ok(Source::Nothing),
        }
    }

    /// How errors name it.
    fn describe(&self) -> String {
        match self {
            Source::Nothing => "configuration".into(),
            Source::File(path) => path.display().to_string(),
            Source::Text(_) => CONFIG_TOML_ENV.into(),
        }
    }
}

/// The configuration's text (none: the defaults), then, with `overrides`, the `VITALS_*`
/// variables.
fn figment(text: Option<&str>, overrides: bool) -> Figment {
    let mut f = Figment::new();
    if let Some(text) = text {
        f = f.merge(Toml::string(text));
    }
    if overrides {
        f = f.merge(env_overrides());
    }
    f
}

/// A stand-in for secrets when they are not read: a valid header value, never a real one.
fn placeholder(_: &str) -> Option<String> {
    Some("secret-not-read".into())
}

/// Reads and validates, and builds every dependency's client (so that what `validate` accepts,
/// `serve` runs); on failure prints every problem and returns the exit code.
/// `listen` is `serve --listen`: where the probe routes will be, which the checks of what would
/// collide with them need.
pub fn load(source: &Source, listen: Option<SocketAddr>) -> Result<Config, ExitCode> {
    let config = checked(
        source,
        load_with(source, true, listen, &|k| std::env::var(k).ok())?,
    )?;
    // The programs [[processes]] run must exist here (render, for another machine, skips this).
    let path = std::env::var("PATH").ok();
    let missing = vitals_core::config::check_programs(&config, None, path.as_deref());
    if missing.is_empty() {
        Ok(config)
    } else {
        Err(report(source, &ConfigErrors(missing)))
    }
}

/// `vitals validate --offline`, a CI lint: everything `load` checks, but the variables named by
/// `*_env` keys are not read (they need not be set where the lint runs), and the programs of
/// `[[processes]]` are not looked for (they need not be installed there).
pub fn load_offline(path: &Path) -> Result<Config, ExitCode> {
    let source = Source::File(path.to_owned());
    checked(&source, load_with(&source, true, None, &placeholder)?)
}

/// For `vitals render`: the file alone, with the file's text and the variables its `*_env` keys
/// name (the secrets a deployment must provide). The rendered files describe `health.toml`, so
/// neither the secrets nor the `VITALS_*` variables of the machine that renders (a CI runner, a
/// laptop) may change them; each such variable set is named in a note.
pub fn load_for_render(path: &Path) -> Result<(Config, String, Vec<String>), ExitCode> {
    let mut ignored: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("VITALS_") && k.contains("__"))
        .collect();
    ignored.sort();
    for var in ignored {
        report!("note: {var} is not read by render: the files describe {} alone; set it in the platform's container environment instead", path.display());
    }
    let text = utf8(path, read_bounded(path)?)?;
    if is_blank(text.as_bytes()) {
        report!(
            "error: {} is empty; put the configuration in it: the rendered files deliver it to \
             `vitals serve`, which refuses an empty --config file",
            path.display()
        );
        return Err(ExitCode::from(EXIT_CONFIG));
    }
    let secrets = std::cell::RefCell::new(Vec::<String>::new());
    // The text read once is what is validated and what the files deliver; errors name the file.
    let config = vitals_core::config::load(&figment(Some(&text), false), &|var| {
        let mut seen = secrets.borrow_mut();
        if !seen.iter().any(|s| s == var) {
            seen.push(var.to_owned());
        }
        placeholder(var)
    })
    .map_err(|errors| report(&Source::File(path.to_owned()), &errors))?;
    Ok((config, text, secrets.into_inner()))
}

fn checked(source: &Source, config: Config) -> Result<Config, ExitCode> {
    match vitals::check_clients(&config) {
        Ok(()) => Ok(config),
        Err(errors) => Err(report(source, &errors)),
    }
}

fn load_with(
    source: &Source,
    overrides: bool,
    listen: Option<SocketAddr>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ExitCode> {
    // A file is read once, and that text is what is checked, parsed and run: a second read
    // could see another text (a ConfigMap being rewritten) or none at all (a pipe).
    let file_text;
    let text = match source {
        Source::Nothing => None,
        Source::File(path) => {
            file_text = read_with_content(path)?;
            Some(file_text.as_str())
        }
        Source::Text(text) => Some(text.as_str()),
    };
    let mut figment = figment(text, overrides);
    if let Some(listen) = listen {
        figment = figment.merge(Serialized::default("server.listen", listen.to_string()));
    }
    vitals_core::config::load(&figment, env).map_err(|errors| report(source, &errors))
}

/// Nothing but whitespace: no configuration, whatever delivered it.
fn is_blank(text: &[u8]) -> bool {
    text.iter().all(u8::is_ascii_whitespace)
}

/// How long an empty `--config` file is given to be written.
const EMPTY_FILE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The text of the file passed to `--config`. An empty file is a volume not written yet (seen
/// with a ConfigMap shared by several pods) or a mount of the wrong thing, never a
/// configuration: serving the defaults would hide that the configuration never arrived. It is
/// read again for a moment, then refused. (No `--config` at all is how to serve without a
/// configuration.)
// Before any runtime exists: the wall clock, not tokio's.
#[allow(clippy::disallowed_methods)]
fn read_with_content(path: &Path) -> Result<String, ExitCode> {
    let deadline = std::time::Instant::now() + EMPTY_FILE_WAIT;
    loop {
        let bytes = read_bounded(path)?;
        if !is_blank(&bytes) {
            return utf8(path, bytes);
        }
        if std::time::Instant::now() >= deadline {
            report!(
                "error: {} is empty (a volume not written yet, or the wrong file mounted?); \
                 put the configuration in it, or leave --config out to serve without one",
                path.display()
            );
            return Err(ExitCode::from(EXIT_CONFIG));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The file's bytes (at most [`MAX_FILE_BYTES`]); any failure printed with what to do.
fn read_bounded(path: &Path) -> Result<Vec<u8>, ExitCode> {
    let read = vitals_core::files::read_bounded(path).map_err(|e| {
        report!(
            "error: cannot read {}: {e}; pass an existing, readable file to --config",
            path.display()
        );
        ExitCode::from(EXIT_CONFIG)
    })?;
    read.ok_or_else(|| {
        report!(
            "error: {} is larger than {} MiB, more than any configuration; check that --config names health.toml",
            path.display(),
            MAX_FILE_BYTES >> 20
        );
        ExitCode::from(EXIT_CONFIG)
    })
}

fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, ExitCode> {
    String::from_utf8(bytes).map_err(|e| {
        report!(
            "error: {} is not UTF-8 text (invalid byte at offset {}); save it as UTF-8",
            path.display(),
            e.utf8_error().valid_up_to()
        );
        ExitCode::from(EXIT_CONFIG)
    })
}

fn report(source: &Source, errors: &ConfigErrors) -> ExitCode {
    report_text!("error: {}: {errors}", source.describe());
    ExitCode::from(EXIT_CONFIG)
}

pub fn validate_command(path: &Path, offline: bool) -> ExitCode {
    let loaded = if offline {
        load_offline(path)
    } else {
        load(&Source::File(path.to_owned()), None)
    };
    match loaded {
        Err(code) => code,
        Ok(config) => {
            if offline {
                out!("{}: valid (secrets not read (--offline))", path.display());
            } else {
                out!("{}: valid", path.display());
            }
            out!("  listen {}", config.server.listen);
            out!(
                "  startup budget {}, requires: {}",
                config.startup.timeout,
                if config.startup.require.is_empty() {
                    "nothing".to_owned()
                } else {
                    config.startup.require.join(", ")
                }
            );
            if config.agent.heartbeat == HeartbeatMode::Required {
                out!(
                    "  agent heartbeat required: /healthz fails once the agent's last beat is older than {}",
                    config.agent.stall_after
                );
            }
            if config.agent.startup == StartupMode::Signal {
                out!("  /startupz also waits for the agent's POST /started");
            }
            if config.dependencies.is_empty()
                && config.processes.is_empty()
                && config.gate.is_none()
            {
                out!("  no dependencies: ready as soon as it starts");
            }
            for d in &config.dependencies {
                out!(
                    "  dependency {} ({}, {}): every {}, timeout {}, down after {} failure(s), stale after {}",
                    d.name,
                    d.kind,
                    if d.critical { "critical" } else { "non-critical" },
                    d.interval,
                    d.timeout,
                    d.failure_threshold,
                    d.stale_after
                );
            }
            for p in &config.processes {
                out!(
                    "  process {} ({}): {}{}, health {}, restart {}{}",
                    p.name,
                    if p.critical {
                        "critical"
                    } else {
                        "non-critical"
                    },
                    p.command.join(" "),
                    p.port
                        .map(|port| format!(" on port {port}"))
                        .unwrap_or_default(),
                    match &p.health {
                        vitals_core::config::ProcessHealth::Http { path } =>
                            format!("GET {path} every {}", p.interval),
                        vitals_core::config::ProcessHealth::Tcp =>
                            format!("tcp every {}", p.interval),
                        vitals_core::config::ProcessHealth::None => "alive".to_owned(),
                    },
                    p.restart.as_str(),
                    p.give_up_after
                        .map(|n| format!(", gives up after {n} restarts in a row"))
                        .unwrap_or_default()
                );
            }
            for note in
                vitals_core::config::advice(&config, &vitals_core::config::ephemeral_ports())
            {
                out!("  note: {note}");
            }
            if let Some(g) = &config.gate {
                out!("  {}", gate_summary(g));
            }
            if let Some(f) = &config.fleet {
                out!(
                    "  fleet: results shared through {}{}{}, keys {}:…",
                    f.redis_url,
                    f.password_env
                        .as_deref()
                        .map(|var| format!(" (password from {var})"))
                        .unwrap_or_default(),
                    f.ca_file
                        .as_ref()
                        .map(|ca| format!(", trusting the CAs in {}", ca.display()))
                        .unwrap_or_default(),
                    f.key_prefix
                );
            }
            for s in &config.signals {
                out!(
                    "  signal {} ({}): reported by the agent, down once a report is older than {}",
                    s.name,
                    if s.critical {
                        "critical"
                    } else {
                        "non-critical"
                    },
                    s.ttl
                );
            }
            ExitCode::SUCCESS
        }
    }
}

/// `validate`'s line for `[gate]`: where it listens, what it fronts, its limits.
fn gate_summary(g: &vitals_core::config::Gate) -> String {
    use vitals_core::config::GateLimit;
    let fronts = match &g.process {
        Some(name) => format!("process {name}"),
        None => g.upstream.to_string(),
    };
    let limit = match (g.max_concurrent, g.adaptive_min) {
        (GateLimit::Fixed(n), None) => format!("{n} at once"),
        (GateLimit::Fixed(n), Some(min)) => format!("{min} to {n} at once (adaptive)"),
        (GateLimit::Auto, None) => "the upstream's slots (/props) at once".to_owned(),
        (GateLimit::Auto, Some(min)) => {
            format!("{min} to the upstream's slots (/props) at once (adaptive)")
        }
    };
    format!(
        "gate {} -> {fronts}: {limit}, {} more queued for up to {}, an answer begun within {}{}; readiness follows its circuit and queue",
        g.listen,
        g.queue_depth,
        g.queue_timeout,
        g.request_timeout,
        g.ca_file
            .as_ref()
            .map(|ca| format!(", trusting the CAs in {}", ca.display()))
            .unwrap_or_default()
    )
}
