//! `[[processes]]`: the programs vitals supervises.

use std::net::SocketAddr;

use super::Errors;
use crate::config::names::{invalid_name, suggest, valid_name};
use crate::config::raw::*;
use crate::config::*;

/// The placeholder replaced by the process's port in its command and environment.
pub const PORT_PLACEHOLDER: &str = "{port}";

pub(super) fn process(
    e: &mut Errors,
    i: usize,
    raw: RawProcess,
    probe: Option<SocketAddr>,
) -> Option<Process> {
    let at = |key: &str| format!("processes[{i}].{key}");
    let before = e.0.len();
    let name = match raw.name {
        None => {
            e.push(
                at("name"),
                "is required; give each process a unique name such as \"llama\"",
            );
            String::new()
        }
        Some(n) if !valid_name(&n) => {
            e.push(at("name"), invalid_name(&n));
            n
        }
        Some(n) if n == AGENT_PROCESS => {
            e.push(
                at("name"),
                "\"agent\" is the process `vitals serve -- CMD` runs; rename this entry",
            );
            n
        }
        Some(n) => n,
    };
    let command = match raw.command {
        None => {
            e.push(
                at("command"),
                "is required; give the program and its arguments as a list (no shell), such as [\"llama-server\", \"--port\", \"{port}\", \"-m\", \"model.gguf\"]",
            );
            Vec::new()
        }
        Some(c) if c.first().is_none_or(|p| p.trim().is_empty()) => {
            e.push(
                at("command"),
                "names no program; give the program and its arguments as a list, such as [\"llama-server\", \"--port\", \"{port}\"]",
            );
            c
        }
        Some(c) => c,
    };
    let mut env = Vec::new();
    for (k, v) in raw.env.unwrap_or_default() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            e.push(
                at("env"),
                format!("{k:?} is not a variable name; use letters, digits and '_'"),
            );
        } else if v.contains('\0') {
            e.push(
                format!("processes[{i}].env.{k}"),
                "holds a NUL byte, which no environment can carry",
            );
        } else {
            env.push((k, v));
        }
    }
    let port = raw.port.and_then(|p| ports(e, &at("port"), p));
    if let Some(probe) = probe {
        super::process_on_probe(e, super::Probe::listen(probe), i, port);
    }
    let uses_placeholder = command.iter().any(|a| a.contains(PORT_PLACEHOLDER))
        || env.iter().any(|(_, v)| v.contains(PORT_PLACEHOLDER));
    match port {
        Some(Ports::Range { .. }) if !uses_placeholder => e.push(
            at("port"),
            "is a range, but neither the command nor env holds \"{port}\": the process could not know which port vitals chose; add it, such as [\"llama-server\", \"--port\", \"{port}\"]",
        ),
        None if uses_placeholder => e.push(
            at("command"),
            "holds \"{port}\" but processes[].port is not set; set port to a number or a range such as \"5800-5899\"",
        ),
        _ => {}
    }
    let health = match (raw.health.as_deref(), port) {
        (None, Some(_)) => ProcessHealth::Http {
            path: "/health".to_owned(),
        },
        (None | Some("none"), _) => ProcessHealth::None,
        (Some("tcp"), Some(_)) => ProcessHealth::Tcp,
        (Some(h), None) if h == "tcp" || h.starts_with('/') => {
            e.push(
                at("health"),
                format!("\"{h}\" checks the process's port, but processes[].port is not set; set port, or health = \"none\""),
            );
            ProcessHealth::None
        }
        (Some(h), Some(_)) if h.starts_with('/') => {
            if h.chars().any(|c| c.is_control() || c == ' ') {
                e.push(
                    at("health"),
                    format!("{h:?} is not a URL path; write it like \"/health\""),
                );
            }
            ProcessHealth::Http { path: h.to_owned() }
        }
        (Some(h), _) => {
            e.push(
                at("health"),
                format!(
                    "\"{h}\" is not a health check{}; use an HTTP path such as \"/health\", \"tcp\" or \"none\"",
                    suggest(h, &["tcp", "none"])
                ),
            );
            ProcessHealth::None
        }
    };
    let interval = e.positive(&at("interval"), raw.interval, Duration::from_secs(10));
    let timeout = e.positive(&at("timeout"), raw.timeout, Duration::from_secs(5));
    if timeout >= interval && health != ProcessHealth::None {
        e.push(
            at("timeout"),
            format!("{timeout} is not shorter than processes[{i}].interval ({interval}); lower the timeout or raise the interval"),
        );
    }
    let failure_threshold = e.at_least_one(&at("failure_threshold"), raw.failure_threshold, 3);
    let start_timeout = e.positive(
        &at("start_timeout"),
        raw.start_timeout,
        Duration::from_secs(120),
    );
    let stop_timeout = e.positive(
        &at("stop_timeout"),
        raw.stop_timeout,
        Duration::from_secs(10),
    );
    let restart = match raw.restart.as_deref() {
        None | Some("on-failure") => RestartPolicy::OnFailure,
        Some("always") => RestartPolicy::Always,
        Some("never") => RestartPolicy::Never,
        Some(other) => {
            e.push(
                at("restart"),
                format!(
                    "\"{other}\" is not a restart policy{}; use \"on-failure\", \"always\" or \"never\"",
                    suggest(other, &["on-failure", "always", "never"])
                ),
            );
            RestartPolicy::OnFailure
        }
    };
    let default = Backoff::default();
    let rb = raw.backoff.unwrap_or_default();
    let backoff = Backoff {
        initial: e.positive(&at("backoff.initial"), rb.initial, default.initial),
        max: e.positive(&at("backoff.max"), rb.max, default.max),
        reset_after: e.positive(
            &at("backoff.reset_after"),
            rb.reset_after,
            default.reset_after,
        ),
    };
    if backoff.max < backoff.initial {
        e.push(
            at("backoff.max"),
            format!(
                "{} is shorter than processes[{i}].backoff.initial ({}); raise max or lower initial",
                backoff.max, backoff.initial
            ),
        );
    }
    let give_up_after = match raw.give_up_after {
        Some(0) => {
            e.push(
                at("give_up_after"),
                "must be at least 1 (the restarts in a row before giving up); remove it to never give up",
            );
            None
        }
        other => other,
    };
    let stall_after = e.positive(&at("stall_after"), raw.stall_after, Duration::from_secs(60));
    if e.0.len() > before {
        return None;
    }
    Some(Process {
        name,
        command,
        env,
        port,
        health,
        interval,
        timeout,
        failure_threshold,
        start_timeout,
        stop_timeout,
        restart,
        critical: raw.critical.unwrap_or(true),
        backoff,
        give_up_after,
        stall_after,
    })
}

fn ports(e: &mut Errors, key: &str, raw: RawPort) -> Option<Ports> {
    let one = |e: &mut Errors, n: i64| match u16::try_from(n) {
        Ok(p) if p > 0 => Some(p),
        _ => {
            e.push(
                key,
                format!("{n} is not a port; use 1 to 65535, or a range such as \"5800-5899\""),
            );
            None
        }
    };
    match raw {
        RawPort::Number(n) => one(e, n).map(Ports::Fixed),
        RawPort::Text(t) => {
            let parsed = match t.split_once('-') {
                Some((a, b)) => a
                    .trim()
                    .parse::<i64>()
                    .ok()
                    .zip(b.trim().parse::<i64>().ok()),
                None => t.trim().parse::<i64>().ok().map(|n| (n, n)),
            };
            let Some((a, b)) = parsed else {
                e.push(
                    key,
                    format!("\"{t}\" is not a port or a range; write 8080 or \"5800-5899\""),
                );
                return None;
            };
            let (first, last) = (one(e, a)?, one(e, b)?);
            if first > last {
                e.push(
                    key,
                    format!("\"{t}\" runs backwards; write the lower port first, such as \"{last}-{first}\""),
                );
                return None;
            }
            Some(if first == last {
                Ports::Fixed(first)
            } else {
                Ports::Range { first, last }
            })
        }
    }
}

/// Whether `program` names something this machine can run: a path to an executable file, or a
/// name found in `PATH`. `None` when it can; otherwise what is wrong, for the message.
pub fn program_problem(program: &str, path_var: Option<&str>) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = std::path::Path::new(program);
        return match std::fs::metadata(p) {
            Err(_) => Some(format!("{program} does not exist")),
            Ok(m) if !m.is_file() => Some(format!("{program} is not a file")),
            Ok(_) if !executable(p) => Some(format!(
                "{program} is not executable; chmod +x it, or run it through its interpreter"
            )),
            Ok(_) => None,
        };
    }
    let path = path_var.unwrap_or("/usr/local/bin:/usr/bin:/bin");
    if std::env::split_paths(path).any(|dir| executable(&dir.join(program))) {
        None
    } else {
        Some(format!(
            "{program} is not in PATH ({path}); give its absolute path, or install it"
        ))
    }
}

/// The commands of `config`'s processes (and an entrypoint's) that cannot run here, as errors
/// under their keys. `serve` and `validate` check this; `render` does not (it renders for
/// another machine).
pub fn check_programs(
    config: &Config,
    entrypoint: Option<&[String]>,
    path_var: Option<&str>,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (i, p) in config.processes.iter().enumerate() {
        if let Some(problem) = p
            .command
            .first()
            .and_then(|program| program_problem(program, path_var))
        {
            errors.push(ConfigError::new(format!("processes[{i}].command"), problem));
        }
    }
    if let Some(problem) = entrypoint
        .and_then(|c| c.first())
        .and_then(|program| program_problem(program, path_var))
    {
        errors.push(ConfigError::new("-- CMD", problem));
    }
    errors
}
