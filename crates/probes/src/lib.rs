//! vitals-probes: checks the agent's dependencies in the background and publishes what it found.
//!
//! - [`checks`]: one module per dependency kind; a check returns an
//!   [`Outcome`](vitals_core::lifecycle::Outcome), never an error.
//! - [`Monitor`]: runs each dependency on its own interval with a timeout, feeds the results to the
//!   lifecycle state machine and publishes a [`Snapshot`] through a `watch` channel. Probe routes
//!   only read that snapshot.
//! - [`Heartbeat`]: the in-process beat that liveness is read from.
//! - [`Metrics`]: every metric vitals exports, named in one place.

pub mod checks;
mod heartbeat;
mod metrics;
mod monitor;

pub use heartbeat::Heartbeat;
pub use metrics::{Format as MetricsFormat, Metrics};
pub use monitor::{now, Control, Monitor, Snapshot};
