//! vitals-probes: checks the agent's dependencies in the background.
//!
//! - [`checks`]: one module per dependency kind, each a cargo feature; a check returns a
//!   [`Report`](checks::Report) whose [`Outcome`](vitals_core::lifecycle::Outcome) says what it
//!   found, never an error.
//! - [`Poller`]: runs each dependency on its own schedule with a timeout and sends every result
//!   as a [`Checked`] to the runtime, which owns the state. Nothing on a request path waits for
//!   a check.

pub mod checks;
#[cfg(feature = "fleet")]
pub mod fleet;
mod poller;

pub use poller::{Checked, Poller, Probe};
