//! Loading `health.toml` plus `VITALS_*` variables, and `vitals validate`.

use std::path::Path;
use std::process::ExitCode;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use vitals_core::config::{HeartbeatMode, StartupMode};
use vitals_core::{Config, ConfigErrors};

use crate::EXIT_CONFIG;

/// The file (when given), then `VITALS_<SECTION>__<KEY>` variables. Only variables with `__` are
/// configuration, so `VITALS_CONFIG` and `VITALS_LOG_FORMAT` stay flags.
pub fn figment(path: Option<&Path>) -> Figment {
    let mut f = Figment::new();
    if let Some(path) = path {
        f = f.merge(Toml::file_exact(path));
    }
    f.merge(
        Env::prefixed("VITALS_")
            .filter(|k| k.as_str().contains("__"))
            .split("__"),
    )
}

/// Reads and validates, and builds every dependency's client (so that what `validate` accepts,
/// `serve` runs); on failure prints every problem and returns the exit code.
pub fn load(path: Option<&Path>) -> Result<Config, ExitCode> {
    let config = load_with(path, &|k| std::env::var(k).ok())?;
    match vitals::check_clients(&config) {
        Ok(()) => Ok(config),
        Err(errors) => Err(report(path, &errors)),
    }
}

/// For `vitals render`, which never uses a secret: variables named by `*_env` keys need not be
/// set on the machine that renders (a CI runner, a laptop).
pub fn load_without_secrets(path: &Path) -> Result<Config, ExitCode> {
    load_with(Some(path), &|_| Some("unused-when-rendering".into()))
}

fn load_with(
    path: Option<&Path>,
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
    vitals_core::config::load(&figment(path), env).map_err(|errors| report(path, &errors))
}

fn report(path: Option<&Path>, errors: &ConfigErrors) -> ExitCode {
    let source = path
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "configuration".into());
    eprint!("error: {source}: {errors}");
    ExitCode::from(EXIT_CONFIG)
}

pub fn validate_command(path: &Path) -> ExitCode {
    match load(Some(path)) {
        Err(code) => code,
        Ok(config) => {
            out!("{}: valid", path.display());
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
