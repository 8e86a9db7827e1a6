//! One module per dependency kind. A check answers with an [`Outcome`]; it never panics and never
//! returns an error, and its reason is short, specific and free of secrets.

mod exec;
mod http;
mod llm;
mod postgres;
mod redis;
mod tcp;

use std::time::Duration;

use vitals_core::config::{Check, Dependency};
use vitals_core::lifecycle::Outcome;

pub use exec::ExecChecker;
pub use http::HttpChecker;
pub use llm::LlmChecker;
pub use postgres::PostgresChecker;
pub use redis::RedisChecker;
pub use tcp::TcpChecker;

/// A ready-to-run check for one dependency, built once at start (HTTP clients, resolved secrets).
#[derive(Debug)]
pub enum Checker {
    Http(Box<HttpChecker>),
    Tcp(TcpChecker),
    Llm(Box<LlmChecker>),
    Redis(Box<RedisChecker>),
    Postgres(Box<PostgresChecker>),
    Exec(ExecChecker),
}

/// Tokens one LLM probe spent, from the provider's `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
}

/// What one check found: the outcome, plus what the provider said about cost and pace.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub outcome: Outcome,
    /// The provider asked not to be called again before this (HTTP 429 `Retry-After`).
    pub retry_after: Option<Duration>,
    pub usage: Option<Usage>,
}

impl Report {
    pub fn success() -> Report {
        Report::from(Outcome::Success)
    }

    pub fn failed(reason: impl Into<String>) -> Report {
        Report::from(failed(reason))
    }

    pub fn with_usage(mut self, usage: Option<Usage>) -> Report {
        self.usage = usage;
        self
    }
}

impl From<Outcome> for Report {
    fn from(outcome: Outcome) -> Report {
        Report {
            outcome,
            retry_after: None,
            usage: None,
        }
    }
}

impl Checker {
    pub fn new(dependency: &Dependency) -> Result<Self, BuildError> {
        let name = dependency.name.as_str();
        Ok(match &dependency.check {
            Check::Http(c) => Checker::Http(Box::new(HttpChecker::new(c)?)),
            Check::Tcp(c) => Checker::Tcp(TcpChecker::new(c)),
            Check::Llm(c) => Checker::Llm(Box::new(LlmChecker::new(name, c)?)),
            Check::Redis(c) => Checker::Redis(Box::new(RedisChecker::new(name, c)?)),
            Check::Postgres(c) => Checker::Postgres(Box::new(PostgresChecker::new(name, c)?)),
            Check::Exec(c) => Checker::Exec(ExecChecker::new(c)),
        })
    }

    /// Runs the check once. The caller bounds it with the dependency's timeout.
    pub async fn check(&self) -> Report {
        match self {
            Checker::Http(c) => c.check().await.into(),
            Checker::Tcp(c) => c.check().await.into(),
            Checker::Llm(c) => c.check().await,
            Checker::Redis(c) => c.check().await.into(),
            Checker::Postgres(c) => c.check().await.into(),
            Checker::Exec(c) => c.check().await.into(),
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

/// `outcome`, with `secret` masked out of its reason.
pub(crate) fn scrubbed(outcome: Outcome, secret: Option<&vitals_core::Secret>) -> Outcome {
    match (outcome, secret) {
        (Outcome::Failed { reason }, Some(s)) => failed(s.scrub(&reason)),
        (other, _) => other,
    }
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
