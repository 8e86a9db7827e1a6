//! Loading `health.toml` plus `VITALS_*` variables, and `vitals validate`.

use std::path::Path;
use std::process::ExitCode;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use vitals_core::config::{HeartbeatMode, StartupMode};
use vitals_core::{Config, ConfigErrors};

use crate::EXIT_CONFIG;

/// The `VITALS_<SECTION>__<KEY>` variables. Only variables with `__` are configuration, so
/// `VITALS_CONFIG` and `VITALS_LOG_FORMAT` stay flags.
fn env_overrides() -> Env {
    Env::prefixed("VITALS_")
        .filter(|k| k.as_str().contains("__"))
        .split("__")
}

/// The file (when given), then, with `overrides`, the `VITALS_*` variables.
pub fn figment(path: Option<&Path>, overrides: bool) -> Figment {
    let mut f = Figment::new();
    if let Some(path) = path {
        f = f.merge(Toml::file_exact(path));
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
pub fn load(path: Option<&Path>) -> Result<Config, ExitCode> {
    checked(path, load_with(path, true, &|k| std::env::var(k).ok())?)
}

/// `vitals validate --offline`, a CI lint: everything `load` checks, but the variables named by
/// `*_env` keys are not read (they need not be set where the lint runs).
pub fn load_offline(path: &Path) -> Result<Config, ExitCode> {
    checked(Some(path), load_with(Some(path), true, &placeholder)?)
}

/// For `vitals render`: the file alone. The rendered files describe `health.toml`, so neither
/// the secrets nor the `VITALS_*` variables of the machine that renders (a CI runner, a laptop)
/// may change them; each such variable set is named in a note.
pub fn load_for_render(path: &Path) -> Result<Config, ExitCode> {
    let mut ignored: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("VITALS_") && k.contains("__"))
        .collect();
    ignored.sort();
    for var in ignored {
        eprintln!("note: {var} is not read by render: the files describe {} alone; set it in the platform's container environment instead", path.display());
    }
    load_with(Some(path), false, &placeholder)
}

fn checked(path: Option<&Path>, config: Config) -> Result<Config, ExitCode> {
    match vitals::check_clients(&config) {
        Ok(()) => Ok(config),
        Err(errors) => Err(report(path, &errors)),
    }
}

fn load_with(
    path: Option<&Path>,
    overrides: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ExitCode> {
    if let Some(path) = path {
        if let Err(e) = std::fs::metadata(path) {
            eprintln!(
                "error: cannot read {}: {e}; pass an existing file to --config",
                path.display()
            );
            return Err(ExitCode::from(EXIT_CONFIG));
        }
    }
    vitals_core::config::load(&figment(path, overrides), env)
        .map_err(|errors| report(path, &errors))
}

fn report(path: Option<&Path>, errors: &ConfigErrors) -> ExitCode {
    let source = path
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "configuration".into());
    eprint!("error: {source}: {errors}");
    ExitCode::from(EXIT_CONFIG)
}

pub fn validate_command(path: &Path, offline: bool) -> ExitCode {
    let loaded = if offline {
        load_offline(path)
    } else {
        load(Some(path))
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
            if config.dependencies.is_empty() {
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
