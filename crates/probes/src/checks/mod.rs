//! One module per dependency kind. A check answers with an [`Outcome`]; it never panics and never
//! returns an error, and its reason is short, specific and free of secrets.

mod http;
mod tcp;

use vitals_core::config::{Check, Dependency};
use vitals_core::lifecycle::Outcome;

pub use http::HttpChecker;
pub use tcp::TcpChecker;

/// A ready-to-run check for one dependency, built once at start (HTTP clients, resolved secrets).
#[derive(Debug)]
pub enum Checker {
    Http(Box<HttpChecker>),
    Tcp(TcpChecker),
}

impl Checker {
    pub fn new(dependency: &Dependency) -> Result<Self, BuildError> {
        Ok(match &dependency.check {
            Check::Http(c) => Checker::Http(Box::new(HttpChecker::new(c)?)),
            Check::Tcp(c) => Checker::Tcp(TcpChecker::new(c)),
        })
    }

    /// Runs the check once. The caller bounds it with the dependency's timeout.
    pub async fn check(&self) -> Outcome {
        match self {
            Checker::Http(c) => c.check().await,
            Checker::Tcp(c) => c.check().await,
        }
    }
}

/// A client that could not be built (a TLS backend that fails to initialise, say).
#[derive(Debug, thiserror::Error)]
#[error("dependency {name}: cannot build its client: {reason}")]
pub struct BuildError {
    pub name: String,
    pub reason: String,
}

pub(crate) fn failed(reason: impl Into<String>) -> Outcome {
    Outcome::Failed {
        reason: reason.into(),
    }
}

/// The innermost cause of an error, which is what says what happened ("connection refused"),
/// rather than the outer layers' "error sending request".
pub(crate) fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
