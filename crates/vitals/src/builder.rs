//! Building a runtime: from a validated [`Config`] (what `health.toml` gives), or in code.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use vitals_core::config::{
    check_probe_address, invalid_name, valid_name, Config, ConfigError, ConfigErrors,
    HeartbeatMode, Routes, Signal, StartupMode,
};
use vitals_probes::Poller;
use vitals_server::Shared;

use crate::runtime::{Listen, Runtime};
use crate::{Error, Handle};

/// Builds a [`Runtime`] and its [`Handle`].
#[derive(Debug)]
pub struct Builder {
    config: Config,
    listen: Option<Listen>,
    os_signals: bool,
    entrypoint: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// No dependencies and no signals: ready as soon as it runs.
    pub fn new() -> Self {
        Self::from_config(Config::default())
    }

    /// From a validated configuration, such as [`vitals_core::config::load`] or
    /// [`vitals_core::config::from_toml`] return.
    pub fn from_config(config: Config) -> Self {
        Builder {
            config,
            listen: None,
            os_signals: false,
            entrypoint: false,
        }
    }

    /// From `health.toml` text; `*_env` keys are read from the process environment.
    pub fn from_toml(toml: &str) -> Result<Self, Error> {
        // The routes are wherever the agent mounts them, or at `listen`: server.listen is not
        // an address in use here (`build` checks the one given).
        let config = vitals_core::config::from_toml_for(
            toml,
            &|k| std::env::var(k).ok(),
            Routes::Elsewhere,
        )?;
        Ok(Self::from_config(config))
    }

    /// Declares a capability the agent reports with [`Handle::set_signal`] (or
    /// `PUT /signals/{name}`): down makes readiness 503 when `critical`, degraded otherwise; a
    /// report older than `ttl` counts as down.
    pub fn signal(mut self, name: impl Into<String>, critical: bool, ttl: Duration) -> Self {
        self.config.signals.push(Signal {
            name: name.into(),
            critical,
            ttl: ttl.into(),
        });
        self
    }

    /// Liveness also needs the agent's [`Handle::beat`]: `/healthz` fails once the last beat is
    /// older than `stall_after` (or when no beat came within `startup.timeout`).
    pub fn heartbeat_required(mut self, stall_after: Duration) -> Self {
        self.config.agent.heartbeat = HeartbeatMode::Required;
        self.config.agent.stall_after = stall_after.into();
        self
    }

    /// `/startupz` also waits for the agent's [`Handle::started`].
    pub fn startup_signal(mut self) -> Self {
        self.config.agent.startup = StartupMode::Signal;
        self
    }

    /// How long readiness answers 503 before the runtime stops (`delay`), then how long
    /// in-flight requests get (`grace`).
    pub fn drain(mut self, delay: Duration, grace: Duration) -> Self {
        self.config.drain.delay = delay.into();
        self.config.drain.grace = grace.into();
        self
    }

    /// Serve the routes on their own listener at `addr` (the sidecar's way). Without it, mount
    /// [`Handle::routes`] in your own app.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(Listen::Addr(addr));
        self
    }

    /// Serve the routes on an already bound listener (tests bind `127.0.0.1:0`).
    pub fn listener(mut self, listener: TcpListener) -> Self {
        self.listen = Some(Listen::Bound(listener));
        self
    }

    /// Drain on SIGTERM, SIGINT and SIGHUP, and exit at once on a second one. Off by default
    /// in the library, so it does not take the agent's own signal handling; `vitals serve` turns
    /// it on.
    pub fn os_signals(mut self, on: bool) -> Self {
        self.os_signals = on;
        self
    }

    /// Entrypoint mode (`vitals serve -- CMD`): runs `command` as the supervised process
    /// `agent`, healthy while it runs. On a drain it gets SIGTERM after `drain.delay` and
    /// SIGKILL after `drain.grace`; when it exits, vitals drains and [`Runtime::run`] returns
    /// its exit status.
    pub fn entrypoint(mut self, command: Vec<String>) -> Self {
        self.config
            .processes
            .push(vitals_core::config::Process::entrypoint(command));
        // Startup waits for the agent to be started.
        self.config
            .startup
            .require
            .push(vitals_core::config::AGENT_PROCESS.to_owned());
        self.entrypoint = true;
        self
    }

    /// Checks what was set in code, builds every dependency's client, and returns the runtime
    /// (run it on a task you own) and a handle to it.
    pub fn build(mut self) -> Result<(Runtime, Handle), Error> {
        check_signals(&self.config)?;
        let probe = match &self.listen {
            Some(Listen::Addr(addr)) => Some(*addr),
            Some(Listen::Bound(listener)) => listener.local_addr().ok(),
            None => None,
        };
        if let Some(probe) = probe {
            check_probe_address(&self.config, probe)?;
        }
        let grace = self.config.drain.grace;
        if let Some(agent) = self
            .config
            .processes
            .iter_mut()
            .find(|p| self.entrypoint && p.name == vitals_core::config::AGENT_PROCESS)
        {
            // The agent's own drain: SIGTERM after drain.delay, SIGKILL after drain.grace.
            agent.stop_timeout = if grace.is_zero() {
                vitals_core::Duration::from_secs(1)
            } else {
                grace
            };
        }
        let config = Arc::new(self.config);
        #[cfg(feature = "supervisor")]
        let supervisor = crate::supervise::SupervisorPart::from_config(&config, self.entrypoint);
        #[cfg(not(feature = "supervisor"))]
        if !config.processes.is_empty() {
            return Err(Error::Supervisor(
                "[[processes]] and `vitals serve -- CMD` need the supervisor feature of the vitals crate, which this build left out; enable it (the vitals binary has it)".into(),
            ));
        }
        #[cfg(feature = "gate")]
        let gate = crate::gate::GatePart::from_config(&config)?;
        #[cfg(not(feature = "gate"))]
        if config.gate.is_some() {
            return Err(Error::Gate(
                "[gate] needs the gate feature of the vitals crate, which this build left out; enable it (the vitals binary has it)".into(),
            ));
        }
        #[cfg(feature = "fleet")]
        let fleet =
            vitals_probes::fleet::Fleet::new(&config).map_err(|e| Error::Fleet(e.to_string()))?;
        #[cfg(not(feature = "fleet"))]
        if config.fleet.is_some() {
            return Err(Error::Fleet(
                "[fleet] needs the fleet feature of the vitals crate, which this build left out; enable it (the vitals binary has it)".into(),
            ));
        }
        let (shared, inbox) = Shared::with_metrics(config.clone(), &|r| {
            #[cfg(feature = "fleet")]
            if let Some(f) = &fleet {
                f.register_metrics(r);
            }
            #[cfg(feature = "gate")]
            if let Some(g) = &gate {
                g.gate().register_metrics(r);
            }
            #[cfg(feature = "supervisor")]
            if let Some(s) = &supervisor {
                s.supervisor().register_metrics(r);
            }
            let _ = r;
        });
        #[cfg(all(feature = "gate", feature = "supervisor"))]
        if let (Some(g), Some(s), Some(process)) = (
            &gate,
            &supervisor,
            config.gate.as_ref().and_then(|g| g.process.as_deref()),
        ) {
            s.front(process, g.gate());
        }
        let poller = Poller::new(&config, &shared.snapshot().rules().signals)?;
        #[cfg(feature = "fleet")]
        if let Some(f) = &fleet {
            let f = f.clone();
            shared.set_fleet_status(Box::new(move || f.status()));
        }
        #[cfg(feature = "fleet")]
        let poller = poller.with_fleet(fleet);
        let handle = Handle::new(shared.clone());
        let runtime = Runtime {
            shared,
            inbox,
            poller,
            listen: self.listen,
            os_signals: self.os_signals,
            handle: handle.clone(),
            #[cfg(feature = "gate")]
            gate,
            #[cfg(feature = "supervisor")]
            supervisor,
        };
        Ok((runtime, handle))
    }
}

/// What `validate` checks for `[[signals]]`, for signals added in code.
fn check_signals(config: &Config) -> Result<(), ConfigErrors> {
    let mut errors = Vec::new();
    let mut names: Vec<&str> = config
        .dependencies
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    for (i, s) in config.signals.iter().enumerate() {
        let key = format!("signals[{i}]");
        if !valid_name(&s.name) {
            errors.push(ConfigError::new(
                format!("{key}.name"),
                invalid_name(&s.name),
            ));
        }
        if names.contains(&s.name.as_str()) {
            errors.push(ConfigError::new(
                format!("{key}.name"),
                format!(
                    "\"{}\" is already used by a dependency or signal; names must be unique",
                    s.name
                ),
            ));
        }
        if s.ttl.is_zero() {
            errors.push(ConfigError::new(
                format!("{key}.ttl"),
                "must be greater than zero",
            ));
        }
        names.push(&s.name);
    }
    if config.agent.stall_after.is_zero() {
        errors.push(ConfigError::new(
            "agent.stall_after",
            "must be greater than zero",
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}
