//! Test helpers for vitals: real local servers whose behaviour a test can change while vitals
//! probes them, and a harness that runs the `vitals` binary.
//!
//! - [`StubServer`]: an HTTP server on `127.0.0.1:0` that answers a status the test sets, or
//!   hangs; it counts the requests it gets.
//! - [`HangingTcp`]: accepts connections and never says a word.
//! - [`VitalsProcess`]: `vitals serve` with a config, on a port the OS picked, with its logs.

mod process;
mod stub;

pub use process::VitalsProcess;
pub use stub::{HangingTcp, StubServer};
