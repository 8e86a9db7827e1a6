//! vitals as a library: the health runtime an agent embeds.
//!
//! One [`Runtime`] owns everything that changes state: the background poller of the agent's
//! dependencies, the registry of named signals, the drain policy (delay, grace, a second signal)
//! and one cancellation tree. [`Builder::build`] returns it with a [`Handle`]: the agent beats,
//! says it started, reports capabilities and asks for a drain through the handle, and mounts
//! [`Handle::routes`] (a [`tower::Service`]) in its own axum or hyper app, or lets the runtime
//! serve them on a listener of their own.
//!
//! ```
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (runtime, handle) = vitals::Builder::new()
//!     .heartbeat_required(Duration::from_secs(10))
//!     .signal("web-search", false, Duration::from_secs(60))
//!     .build()?;
//! let running = tokio::spawn(runtime.run());
//!
//! handle.beat(); // from the agent's main loop
//! handle.set_signal("web-search", false, "search API answers 500")?;
//! handle.wait_for(|s| s.readiness(vitals::now()) == vitals::Readiness::Degraded).await;
//!
//! handle.drain(); // or SIGTERM with Builder::os_signals(true)
//! let exit = running.await.expect("the runtime task")?;
//! assert_eq!(exit.code, 0);
//! # Ok(())
//! # }
//! ```
//!
//! The `vitals` binary (`vitals serve`) is a thin shell over this crate. Each dependency kind is
//! a cargo feature (`http`, `llm`, `redis`, `postgres`, `exec`, `tcp`, all on by default): with
//! `default-features = false` and only the kinds you use, nothing else is linked.

#![warn(missing_docs)]

mod builder;
mod driver;
#[cfg(feature = "gate")]
mod gate;
mod handle;
mod runtime;
#[cfg(feature = "supervisor")]
mod supervise;

pub use builder::Builder;
pub use handle::{Handle, SignalError};
pub use runtime::{DrainCause, Exit, Runtime};

pub use vitals_core::config::{Config, ConfigError, ConfigErrors};
pub use vitals_core::lifecycle::{Lifecycle, Liveness, Readiness};
pub use vitals_probes::checks::BuildError;
pub use vitals_server::{now, Busy, PeerAddr, Routes, Snapshot};

/// Builds every dependency's client (and the fleet's Redis client), as [`Builder::build`] will,
/// and reports each one that cannot be built under its key (`dependencies[2].url: ...`): what
/// `vitals validate` accepts, `vitals serve` then runs. Nothing is connected to; no task starts.
pub fn check_clients(config: &Config) -> Result<(), ConfigErrors> {
    #[allow(unused_mut)]
    let mut errors: Vec<ConfigError> = config
        .dependencies
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            let e = vitals_probes::checks::Checker::new(d).err()?;
            let key = match e.key {
                "" => format!("dependencies[{i}]"),
                key => format!("dependencies[{i}].{key}"),
            };
            Some(ConfigError::new(
                key,
                format!("{}; fix the value", e.reason),
            ))
        })
        .collect();
    #[cfg(feature = "gate")]
    if let Some(g) = &config.gate {
        if let Err(e) = vitals_gate::check_upstream(&g.upstream, g.ca_file.as_deref()) {
            let key = if g.ca_file.is_some() {
                "gate.ca_file"
            } else {
                "gate.upstream"
            };
            errors.push(ConfigError::new(key, format!("{e}; fix the value")));
        }
    }
    #[cfg(feature = "fleet")]
    if let Err(e) = vitals_probes::fleet::Fleet::new(config) {
        errors.push(ConfigError::new(
            e.key,
            format!("{}; fix the value", e.reason),
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Why a runtime could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid; each problem names its key.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// A dependency's client could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The listener could not be bound.
    #[error(
        "cannot listen on {addr}: {source}; choose another address with --listen or server.listen"
    )]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why the bind failed.
        source: std::io::Error,
    },
    /// The process signals (SIGTERM, SIGINT, SIGHUP) could not be listened for.
    #[error("cannot listen for {signal}: {source}")]
    OsSignal {
        /// The signal's name.
        signal: &'static str,
        /// Why it could not be listened for.
        source: std::io::Error,
    },
    /// The runtime's own listener stopped although nothing asked it to.
    #[error("the probe server stopped unexpectedly")]
    ServerStopped,
    /// `[gate]` could not start (its message names the key and the fix).
    #[error("{0}")]
    Gate(String),
    /// `[[processes]]` or entrypoint mode need the supervisor feature.
    #[error("{0}")]
    Supervisor(String),
    /// `[fleet]` could not be set up, or this build has no fleet.
    #[error("{0}")]
    Fleet(String),
}

#[cfg(test)]
mod tests;
