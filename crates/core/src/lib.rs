//! vitals-core: the parts of vitals that do no I/O.
//!
//! - [`config`]: the `health.toml` model, read as raw serde structs and validated into [`Config`],
//!   with every problem reported at once under its key path.
//! - [`lifecycle`]: the sans-IO state machine (`Starting → Serving → Draining → Drained`) and the
//!   readiness derived from dependency results.
//! - [`Duration`]: the one duration type, written as text (`"250ms"`, `"30s"`).
//! - [`Secret`]: a value read from the environment that never prints.
//! - [`spec`]: the [`HealthSpec`] the platform adapters render from, and their refusals.

pub mod config;
mod duration;
pub mod lifecycle;
mod secret;
pub mod spec;

pub use config::{Config, ConfigError, ConfigErrors};
pub use duration::Duration;
pub use secret::Secret;
pub use spec::HealthSpec;
