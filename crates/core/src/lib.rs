//! vitals-core: the parts of vitals that do no network I/O and start no tasks (the files it
//! touches are the ones a configuration names: programs looked for, CA files read).
//!
//! - [`config`]: the `health.toml` model, read as raw serde structs and validated into [`Config`],
//!   with every problem reported at once under its key path.
//! - [`signal`]: the registry of named signals (dependencies, agent-pushed capabilities) that
//!   readiness and startup are computed over, keyed by [`signal::SignalId`].
//! - [`lifecycle`]: the sans-IO state machine (`Starting → Serving → Draining → Drained`), the
//!   readiness derived from the signals, and the liveness derived from heartbeats alone.
//! - [`contract`]: route paths and metric names, defined once.
//! - [`Duration`]: the one duration type, written as text (`"250ms"`, `"30s"`).
//! - [`Secret`]: a value read from the environment that never prints.
//! - [`spec`]: the [`HealthSpec`] the platform adapters render from, and their refusals.
//! - [`files`], [`tls`]: the bounded reads of `--config` and of `ca_file`s, for every client.

pub mod config;
pub mod contract;
mod duration;
pub mod evictions;
pub mod files;
pub mod lifecycle;
mod secret;
pub mod signal;
pub mod spec;
pub mod tls;

pub use config::{Config, ConfigError, ConfigErrors};
pub use duration::Duration;
pub use secret::Secret;
pub use spec::HealthSpec;
