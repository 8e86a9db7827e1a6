//! Checks a [`RawConfig`] and builds the [`Config`]: pure, every problem reported with its key.

mod checks;
mod dependency;
mod fleet;
mod gate;
mod processes;
mod sections;
mod signals;

use std::collections::HashMap;
use std::net::SocketAddr;

use super::names::suggest;
use super::raw::*;
use super::*;

pub use gate::{GATE_SATURATION_SIGNAL, GATE_SIGNAL};
pub use processes::{check_programs, program_problem, PORT_PLACEHOLDER};
pub use sections::startup_failure_threshold;

/// The raw sections, each already read on its own.
#[derive(Debug, Default)]
pub struct RawConfig {
    pub server: RawServer,
    pub startup: RawStartup,
    pub liveness: RawLiveness,
    pub readiness: RawReadiness,
    pub drain: RawDrain,
    pub probes: RawProbes,
    pub agent: RawAgent,
    pub dependencies: Vec<RawDependency>,
    pub signals: Vec<RawSignal>,
    /// `None` without a `[gate]` table.
    pub gate: Option<RawGate>,
    pub processes: Vec<RawProcess>,
    /// `None` without a `[fleet]` table.
    pub fleet: Option<RawFleet>,
}

/// Where the probe routes are served, which decides what would collide with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routes {
    /// On `server.listen`, as `vitals serve` serves them.
    OnListen,
    /// Wherever the embedding program mounts them (the `vitals` crate's `Builder`, which checks
    /// the address it is given with [`check_probe_address`]).
    Elsewhere,
}

/// The probe server's address, and how a message names it: `server.listen` for `vitals serve`,
/// the call that gave it for a program embedding vitals.
#[derive(Debug, Clone, Copy)]
struct Probe {
    addr: SocketAddr,
    given: Given,
}

/// Where the probe server's address was given.
#[derive(Debug, Clone, Copy)]
enum Given {
    /// `server.listen`, as `validate` checks it.
    ServerListen,
    /// The `vitals` crate's `Builder::listen`.
    Builder,
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.given {
            Given::ServerListen => write!(f, "server.listen = {}", self.addr),
            Given::Builder => write!(f, "Builder::listen({})", self.addr),
        }
    }
}

impl Probe {
    fn listen(addr: SocketAddr) -> Probe {
        Probe {
            addr,
            given: Given::ServerListen,
        }
    }

    fn builder(addr: SocketAddr) -> Probe {
        Probe {
            addr,
            given: Given::Builder,
        }
    }

    /// How to move it, for a fix.
    fn move_it(&self) -> &'static str {
        match self.given {
            Given::ServerListen => "or move server.listen",
            Given::Builder => "or listen elsewhere",
        }
    }
}

/// Whether `probe` names a port something configured could collide with: at port 0 the system
/// picks a free one.
fn names_a_port(probe: SocketAddr) -> bool {
    probe.port() != 0
}

/// The gate on the probe server's address: the probes would sit behind its limits.
fn gate_on_probe(e: &mut Errors, probe: Probe, listen: SocketAddr) {
    let at = probe.addr;
    let overlaps =
        listen.ip() == at.ip() || listen.ip().is_unspecified() || at.ip().is_unspecified();
    if listen.port() == at.port() && overlaps {
        e.push(
            "gate.listen",
            format!("{listen} is the probe server's address ({probe}); the probes must never sit behind the gate's limits: give the gate a port of its own"),
        );
    }
}

/// A supervised process given the probe server's port.
fn process_on_probe(e: &mut Errors, probe: Probe, index: usize, port: Option<Ports>) {
    if port == Some(Ports::Fixed(probe.addr.port())) {
        e.push(
            format!("processes[{index}].port"),
            format!(
                "{} is the probe server's port ({probe}); give the process a port of its own",
                probe.addr.port()
            ),
        );
    }
}

/// A gate upstream or a check that would reach vitals' own probe server at `probe` (llama.cpp's
/// server, like vitals, takes 8080 unless told otherwise).
fn reaching_probe(e: &mut Errors, probe: Probe, gate: Option<&Gate>, dependencies: &[Dependency]) {
    if let Some(g) = gate.filter(|g| g.process.is_none()) {
        let url = &g.upstream;
        // Host and port only: a path may hold what is not to be echoed.
        if let Some((host, port)) = url
            .host_str()
            .zip(url.port_or_known_default())
            .filter(|&(host, port)| reaches(probe.addr, host, port))
        {
            e.push(
                "gate.upstream",
                format!("{host}:{port} is vitals' own probe server ({probe}), not an inference server; point it at the inference server's port (llama.cpp's server takes 8080 unless told otherwise: start it with --port 8000, say)"),
            );
        }
    }
    for (i, d) in dependencies.iter().enumerate() {
        if d.address()
            .is_some_and(|(host, port)| reaches(probe.addr, host, port))
        {
            e.push(
                format!("dependencies[{i}]"),
                format!(
                    "\"{}\" checks vitals' own probe server ({probe}), which answers for vitals, not for the dependency; point it at the dependency's own port, {}",
                    d.name, probe.move_it()
                ),
            );
        }
    }
}

/// Whether probe routes served at `probe` collide with what `config` sets up: what `validate`
/// checks against `server.listen`, for an address given in code.
pub fn check_probe_address(config: &Config, probe: SocketAddr) -> Result<(), ConfigErrors> {
    if !names_a_port(probe) {
        return Ok(());
    }
    let mut e = Errors(Vec::new());
    let probe = Probe::builder(probe);
    if let Some(g) = &config.gate {
        gate_on_probe(&mut e, probe, g.listen);
    }
    for (i, p) in config.processes.iter().enumerate() {
        process_on_probe(&mut e, probe, i, p.port);
    }
    reaching_probe(&mut e, probe, config.gate.as_ref(), &config.dependencies);
    if e.0.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(e.0))
    }
}

struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::new(key, message));
    }

    /// A duration that must be greater than zero.
    fn positive(&mut self, key: &str, value: Option<Duration>, default: Duration) -> Duration {
        match value {
            Some(d) if d.is_zero() => {
                self.push(key, "must be greater than zero");
                default
            }
            Some(d) => d,
            None => default,
        }
    }

    /// A duration of at least `min`; `why` says what a shorter one would do.
    fn at_least(
        &mut self,
        key: &str,
        value: Option<Duration>,
        min: Duration,
        why: &str,
        default: Duration,
    ) -> Duration {
        match value {
            Some(d) if d.is_zero() => {
                self.push(
                    key,
                    format!("must be greater than zero; use at least \"{min}\""),
                );
                default
            }
            Some(d) if d < min => {
                self.push(
                    key,
                    format!("{d} is shorter than {min}: {why}; use at least \"{min}\""),
                );
                default
            }
            other => other.unwrap_or(default),
        }
    }

    fn at_least_one(&mut self, key: &str, value: Option<u32>, default: u32) -> u32 {
        match value {
            Some(0) => {
                self.push(key, "must be at least 1");
                default
            }
            Some(n) => n,
            None => default,
        }
    }

    /// Resolves the environment variable that `key` names. A missing one is an error now rather
    /// than a failing check later.
    fn env_secret(
        &mut self,
        key: &str,
        var: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Secret> {
        if var.is_empty() {
            self.push(
                key,
                "names no environment variable; give the variable's name",
            );
            return None;
        }
        match env(var) {
            Some(v) if !v.is_empty() => Some(Secret::new(v)),
            Some(_) => {
                self.push(
                    key,
                    format!("environment variable {var} is empty; set it to the secret's value"),
                );
                None
            }
            None => {
                self.push(
                    key,
                    format!(
                        "environment variable {var} is not set; export it before starting vitals, \
                         or remove this key"
                    ),
                );
                None
            }
        }
    }
}

/// Validates `raw`. `env` resolves the environment variables named by `*_env` keys.
pub fn validate(
    raw: RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
    routes: Routes,
) -> Result<Config, ConfigErrors> {
    let mut e = Errors(Vec::new());

    let server = sections::server(&mut e, raw.server, env);
    // Where the probe routes are, when it is server.listen.
    let probe = (routes == Routes::OnListen)
        .then_some(server.listen)
        .filter(|&p| names_a_port(p));
    let liveness = Liveness {
        stall_after: e.positive(
            "liveness.stall_after",
            raw.liveness.stall_after,
            Duration::from_secs(10),
        ),
    };
    let readiness = Readiness {
        degraded_status: match raw.readiness.degraded_status {
            Some(code) if !is_valid_degraded_status(code) => {
                e.push(
                    "readiness.degraded_status",
                    format!("{code} is not allowed; use 200 (degraded still serves) or 429 (Consul shows a warning)"),
                );
                200
            }
            Some(code) => code,
            None => 200,
        },
    };
    let drain = Drain {
        // Zero is meaningful here: no delay, or no wait for in-flight work.
        delay: raw.drain.delay.unwrap_or(Duration::from_secs(5)),
        grace: raw.drain.grace.unwrap_or(Duration::from_secs(20)),
    };
    let startup_set = raw.startup.timeout.is_some();
    let startup_timeout = e.positive(
        "startup.timeout",
        raw.startup.timeout,
        Duration::from_secs(120),
    );

    let agent = signals::agent(&mut e, raw.agent);
    // Names are compared as written, across dependencies and signals (they share routes and
    // metric labels), so a duplicate is reported even when either entry has other problems.
    let written: Vec<(String, Option<String>)> = raw
        .dependencies
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("dependencies[{i}]"), d.name.clone()))
        .chain(
            raw.signals
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("signals[{i}]"), s.name.clone())),
        )
        .chain(
            raw.processes
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("processes[{i}]"), p.name.clone())),
        )
        .collect();
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (at, name) in &written {
        let Some(name) = name.as_deref() else {
            continue;
        };
        match seen.get(name) {
            Some(first) => e.push(
                format!("{at}.name"),
                format!("\"{name}\" is already used by {first}; names must be unique across dependencies, signals and processes, so rename one of them"),
            ),
            None => {
                seen.insert(name, at.as_str());
            }
        }
    }
    if raw.gate.is_some() {
        for (at, name) in &written {
            if let Some(taken) = name
                .as_deref()
                .filter(|n| [GATE_SIGNAL, GATE_SATURATION_SIGNAL].contains(n))
            {
                e.push(
                    format!("{at}.name"),
                    format!("\"{taken}\" is a name [gate] takes in readiness; rename this entry"),
                );
            }
        }
    }
    let gate = raw.gate.and_then(|g| gate::gate(&mut e, g, probe));
    let raw_names: Vec<&str> = written.iter().filter_map(|(_, n)| n.as_deref()).collect();
    let has_fleet = raw.fleet.is_some();
    let fleet = raw.fleet.and_then(|f| fleet::fleet(&mut e, f, env));
    if !has_fleet {
        for (i, d) in raw.dependencies.iter().enumerate() {
            if d.shared == Some(true) {
                e.push(
                    format!("dependencies[{i}].shared"),
                    "needs [fleet] (the Redis the instances share results through); add it, or remove shared",
                );
            }
        }
    }
    let dependencies: Vec<Dependency> = raw
        .dependencies
        .into_iter()
        .enumerate()
        .filter_map(|(i, d)| dependency::dependency(&mut e, i, d, env))
        .collect();
    let signals: Vec<Signal> = raw
        .signals
        .into_iter()
        .enumerate()
        .filter_map(|(i, s)| signals::signal(&mut e, i, s))
        .collect();
    let processes: Vec<Process> = raw
        .processes
        .into_iter()
        .enumerate()
        .filter_map(|(i, p)| processes::process(&mut e, i, p, probe))
        .collect();
    if let Some(probe) = probe {
        reaching_probe(&mut e, Probe::listen(probe), gate.as_ref(), &dependencies);
    }
    // A dependency cannot follow a process that moves within its port range: say so, and how.
    for (i, d) in dependencies.iter().enumerate() {
        let Some(port) = d.loopback_port() else {
            continue;
        };
        for p in &processes {
            if let Some(Ports::Range { first, last }) = p.port {
                if (first..=last).contains(&port) {
                    e.push(
                        format!("dependencies[{i}]"),
                        format!(
                            "\"{}\" checks 127.0.0.1:{port}, inside the port range of process \"{}\" ({first}-{last}), which may run on any port of it: the check would not follow; give the process a fixed port, or check it through the gate (gate.process = \"{}\", and the dependency on gate.listen)",
                            d.name, p.name, p.name
                        ),
                    );
                }
            }
        }
    }
    if let Some(name) = gate.as_ref().and_then(|g| g.process.as_deref()) {
        match processes.iter().find(|p| p.name == name) {
            Some(p) if p.port.is_none() => e.push(
                "gate.process",
                format!("processes entry \"{name}\" has no port for the gate to send requests to; set its port"),
            ),
            Some(_) => {}
            None if raw_names.contains(&name) => {}
            None => {
                let known: Vec<&str> = processes.iter().map(|p| p.name.as_str()).collect();
                e.push(
                    "gate.process",
                    format!(
                        "no [[processes]] entry is named \"{name}\"{}; known: {}",
                        suggest(name, &known),
                        if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                    ),
                );
            }
        }
    }

    let require = match raw.startup.require {
        None => dependencies
            .iter()
            .filter(|d| d.critical)
            .map(|d| d.name.clone())
            .chain(
                processes
                    .iter()
                    .filter(|p| p.critical)
                    .map(|p| p.name.clone()),
            )
            .collect(),
        Some(names) => {
            let known: Vec<&str> = dependencies
                .iter()
                .map(|d| d.name.as_str())
                .chain(signals.iter().map(|s| s.name.as_str()))
                .chain(processes.iter().map(|p| p.name.as_str()))
                .collect();
            let mut require: Vec<String> = Vec::new();
            for (j, name) in names.iter().enumerate() {
                if known.contains(&name.as_str()) {
                    if !require.contains(name) {
                        require.push(name.clone());
                    }
                } else if !raw_names.contains(&name.as_str()) {
                    // An entry with problems of its own is left out; its errors say why.
                    e.push(
                        format!("startup.require[{j}]"),
                        format!(
                            "no dependency, signal or process is named \"{name}\"{}; known: {}",
                            suggest(name, &known),
                            if known.is_empty() {
                                "none".to_owned()
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
                }
            }
            require
        }
    };

    // A process startup waits for may take its whole start_timeout to become healthy: the
    // budget must allow it, or the platform's startup probe (derived from the budget) stops
    // the container while the process may still be loading its model.
    let slowest = processes
        .iter()
        .filter(|p| require.contains(&p.name))
        .max_by_key(|p| p.start_timeout);
    let startup_timeout = match slowest {
        Some(p) if p.start_timeout > startup_timeout && !startup_set => p.start_timeout,
        Some(p) if p.start_timeout > startup_timeout => {
            e.push(
                "startup.timeout",
                format!(
                    "{startup_timeout} is shorter than the start_timeout ({}) of process \"{}\", which startup waits for: the platform's startup probe would stop the container while it may still be starting; raise startup.timeout to {} or more (or leave it out: it then covers the slowest start), or lower that start_timeout",
                    p.start_timeout, p.name, p.start_timeout
                ),
            );
            startup_timeout
        }
        _ => startup_timeout,
    };
    let probes = sections::probes(&mut e, raw.probes, startup_timeout);

    if !e.0.is_empty() {
        return Err(ConfigErrors(e.0));
    }
    Ok(Config {
        server,
        startup: Startup {
            timeout: startup_timeout,
            require,
        },
        liveness,
        readiness,
        drain,
        probes,
        agent,
        dependencies,
        signals,
        gate,
        processes,
        fleet,
    })
}
