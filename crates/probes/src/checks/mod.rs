//! One module per dependency kind. A check answers with an [`Outcome`]; it never panics and never
//! returns an error, and its reason is short, specific and free of secrets.

//!
//! Each kind is a cargo feature (`http`, `llm`, `redis`, `postgres`, `exec`, `tcp`; all on by
//! default), so an agent that embeds vitals links only the clients it uses. A configuration that
//! names a kind left out of the build is refused when the checks are built, naming the feature.

#[cfg(feature = "exec")]
mod exec;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "llm")]
mod llm;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
pub(crate) mod redis;
#[cfg(feature = "tcp")]
mod tcp;

#[cfg(all(test, feature = "http", feature = "llm"))]
mod hostile_tests;

use std::time::Duration;

use vitals_core::config::Dependency;
use vitals_core::lifecycle::Outcome;

#[cfg(feature = "exec")]
pub use exec::ExecChecker;
#[cfg(feature = "http")]
pub use http::HttpChecker;
#[cfg(feature = "llm")]
pub use llm::LlmChecker;
#[cfg(feature = "postgres")]
pub use postgres::PostgresChecker;
#[cfg(feature = "redis")]
pub use redis::RedisChecker;
#[cfg(feature = "tcp")]
pub use tcp::TcpChecker;

/// A ready-to-run check for one dependency, built once at start (HTTP clients, resolved secrets).
#[derive(Debug)]
pub enum Checker {
    #[cfg(feature = "http")]
    Http(Box<HttpChecker>),
    #[cfg(feature = "tcp")]
    Tcp(TcpChecker),
    #[cfg(feature = "llm")]
    Llm(Box<LlmChecker>),
    #[cfg(feature = "redis")]
    Redis(Box<RedisChecker>),
    #[cfg(feature = "postgres")]
    Postgres(Box<PostgresChecker>),
    #[cfg(feature = "exec")]
    Exec(ExecChecker),
    /// Never built: keeps the enum inhabited-looking when no kind is compiled in.
    #[doc(hidden)]
    None(std::convert::Infallible),
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
    // With only some kinds compiled in, some of this is unused or unreachable.
    #[allow(unreachable_code, unused_variables)]
    pub fn new(dependency: &Dependency) -> Result<Self, BuildError> {
        #[allow(unused_imports)]
        use vitals_core::config::Check;
        let name = dependency.name.as_str();
        #[allow(unreachable_patterns)]
        Ok(match &dependency.check {
            #[cfg(feature = "http")]
            Check::Http(c) => Checker::Http(Box::new(HttpChecker::new(name, c)?)),
            #[cfg(feature = "tcp")]
            Check::Tcp(c) => Checker::Tcp(TcpChecker::new(c)),
            #[cfg(feature = "llm")]
            Check::Llm(c) => Checker::Llm(Box::new(LlmChecker::new(name, c)?)),
            #[cfg(feature = "redis")]
            Check::Redis(c) => Checker::Redis(Box::new(RedisChecker::new(name, c)?)),
            #[cfg(feature = "postgres")]
            Check::Postgres(c) => Checker::Postgres(Box::new(PostgresChecker::new(name, c)?)),
            #[cfg(feature = "exec")]
            Check::Exec(c) => Checker::Exec(ExecChecker::new(c)),
            _ => {
                let feature = match dependency.kind {
                    vitals_core::config::Kind::OpenAi | vitals_core::config::Kind::Anthropic => {
                        "llm"
                    }
                    other => other.as_str(),
                };
                return Err(BuildError {
                    name: name.to_owned(),
                    key: "kind",
                    reason: format!(
                        "kind \"{}\" is not compiled into this build; enable the \"{feature}\" feature of vitals",
                        dependency.kind
                    ),
                });
            }
        })
    }

    /// Runs the check once. The caller bounds it with the dependency's timeout.
    pub async fn check(&self) -> Report {
        match self {
            #[cfg(feature = "http")]
            Checker::Http(c) => c.check().await.into(),
            #[cfg(feature = "tcp")]
            Checker::Tcp(c) => c.check().await.into(),
            #[cfg(feature = "llm")]
            Checker::Llm(c) => c.check().await,
            #[cfg(feature = "redis")]
            Checker::Redis(c) => c.check().await.into(),
            #[cfg(feature = "postgres")]
            Checker::Postgres(c) => c.check().await.into(),
            #[cfg(feature = "exec")]
            Checker::Exec(c) => c.check().await.into(),
            Checker::None(never) => match *never {},
        }
    }
}

/// A client that could not be built from a validated configuration: a URL its client library
/// refuses (a Redis database that is not a number, an unknown `sslmode`), a secret a header
/// cannot carry, a TLS backend that fails to initialise.
#[derive(Debug, thiserror::Error)]
#[error("dependency {name}: cannot build its client: {reason}")]
pub struct BuildError {
    /// The dependency.
    pub name: String,
    /// The key of the dependency that caused it (`url`, `api_key_env`...), or empty.
    pub key: &'static str,
    pub reason: String,
}

/// `outcome`, with `secret` masked out of its reason.
// Unused when only some check kinds are compiled in.
#[allow(dead_code)]
pub(crate) fn scrubbed(outcome: Outcome, secret: Option<&vitals_core::Secret>) -> Outcome {
    match (outcome, secret) {
        (Outcome::Failed { reason }, Some(s)) => failed(s.scrub(&reason)),
        (other, _) => other,
    }
}

// Unused when only some check kinds are compiled in.
#[allow(dead_code)]
pub(crate) fn failed(reason: impl Into<String>) -> Outcome {
    Outcome::Failed {
        reason: reason.into(),
    }
}

/// The innermost cause of an error, which is what says what happened ("connection refused"),
/// rather than the outer layers' "error sending request".
// Unused when only some check kinds are compiled in.
#[allow(dead_code)]
pub(crate) fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
// Used by the HTTP and LLM kinds' tests only.
#[allow(dead_code)]
/// No part of `secret` (six characters in a row), as written or as Rust or JSON would escape it,
/// appears in `text`.
pub(crate) fn assert_no_part_of(secret: &str, text: &str) {
    let forms = [
        secret.to_owned(),
        secret.escape_debug().to_string(),
        serde_json::to_string(secret).unwrap(),
    ];
    for form in forms {
        let chars: Vec<char> = form.chars().collect();
        for part in chars.windows(6) {
            let part: String = part.iter().collect();
            assert!(
                !text.contains(&part),
                "{part:?}, part of the secret, is in {text:?}"
            );
        }
    }
}
