//! Test helpers for vitals: real local servers whose behaviour a test can change while vitals
//! probes them, and a harness that runs the `vitals` binary.
//!
//! - [`StubServer`]: an HTTP server on `127.0.0.1:0` that answers a status the test sets, or
//!   hangs; it counts the requests it gets.
//! - [`HangingTcp`]: accepts connections and never says a word.
//! - [`VitalsProcess`]: `vitals serve` with a config, on a port the OS picked, with its logs.
//! - [`LlmServer`], [`redis_addr`], [`postgres_addr`], [`TcpProxy`]: real LLM, Redis and
//!   PostgreSQL servers, and a proxy to cut to make one go away.
//! - [`PrometheusProcess`]: a real Prometheus on a loopback port, for scrape and alert tests.
//! - [`spec_from_toml`], [`arb_spec`]: HealthSpecs for the adapters' golden and property tests.
//! - [`assert_golden`]: compare rendered output with a committed file (`VITALS_BLESS=1` rewrites).

mod golden;
mod output;
mod process;
mod prometheus;
mod services;
mod spec;
mod stub;

pub use golden::assert_golden;
pub use process::VitalsProcess;
pub use prometheus::PrometheusProcess;
pub use services::{
    llama_server, llm_python, postgres_addr, redis_addr, tiny_model, LlmServer, MotoServer,
    TcpProxy, TlsHttp, TlsRedis, POSTGRES_PASSWORD,
};
pub use spec::{arb_spec, assert_limits, spec_from_toml, Change};
pub use stub::{HangingTcp, StubServer};
