//! `health.toml` as written: every field optional, unknown keys refused. [`super::validate`]
//! turns this into the checked [`super::Config`].

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::Duration;

/// The whole file. Each section is read on its own so that one bad section does not hide the
/// problems of the others.
pub(crate) const SECTIONS: &[&str] = &[
    "server",
    "startup",
    "liveness",
    "readiness",
    "drain",
    "probes",
    "agent",
    "dependencies",
    "signals",
    "gate",
    "processes",
    "fleet",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// `host:port` the probe server listens on (default `0.0.0.0:8080`).
    pub listen: Option<String>,
    /// Name of an environment variable holding a token that lets non-loopback callers
    /// `POST /drain` with `Authorization: Bearer <token>`.
    pub admin_token_env: Option<String>,
    /// How long a client may take to send a request's headers before the connection is closed.
    pub header_read_timeout: Option<Duration>,
    /// How many connections are served at once; further ones are closed at accept.
    pub max_connections: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStartup {
    /// The startup budget: how long a boot may take. Adapters size startup probes from it.
    pub timeout: Option<Duration>,
    /// Dependencies that must succeed once before `/startupz` passes (default: every critical one).
    pub require: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLiveness {
    /// `/healthz` fails when the heartbeat is older than this.
    pub stall_after: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReadiness {
    /// The status `/readyz` answers while degraded: 200 (default) or 429.
    pub degraded_status: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDrain {
    /// After SIGTERM, keep serving with readiness 503 for this long.
    pub delay: Option<Duration>,
    /// Then wait at most this long for in-flight requests before exiting.
    pub grace: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbes {
    /// How the orchestrator should probe `/healthz`.
    pub liveness: Option<RawProbeTiming>,
    /// How the orchestrator should probe `/readyz`.
    pub readiness: Option<RawProbeTiming>,
    /// How the orchestrator should probe `/startupz`.
    pub startup: Option<RawProbeTiming>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbeTiming {
    /// Time between two probes.
    pub period: Option<Duration>,
    /// How long one probe may take.
    pub timeout: Option<Duration>,
    /// Consecutive failures before the orchestrator acts.
    pub failure_threshold: Option<u32>,
    /// Consecutive successes before the orchestrator counts the probe as passing again.
    pub success_threshold: Option<u32>,
}

/// `[agent]`: how the agent itself takes part in its health.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    /// `"off"` (default) or `"required"`: with `required`, `/healthz` fails once the agent's last
    /// `POST /heartbeat` is older than `stall_after`.
    pub heartbeat: Option<String>,
    /// How old the agent's last beat may be before `/healthz` and `/healthz/agent` fail.
    pub stall_after: Option<Duration>,
    /// `"dependencies"` (default) or `"signal"`: with `signal`, `/startupz` also waits for the
    /// agent's `POST /started`.
    pub startup: Option<String>,
}

/// One `[[signals]]` entry: a capability the agent reports with `PUT /signals/{name}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSignal {
    /// Unique among dependencies and signals; used in routes, metrics and logs.
    pub name: Option<String>,
    /// Down makes readiness 503 when critical; otherwise degraded (default false).
    pub critical: Option<bool>,
    /// A report older than this counts as down (default 60s); a report may carry its own.
    pub ttl: Option<Duration>,
}

/// One `[[dependencies]]` entry. The fields a kind does not use are refused by validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDependency {
    /// The keys written in this entry (filled by the loader, not read from the file), so that
    /// keys a kind does not take can be refused by name.
    #[serde(skip)]
    pub present: Vec<String>,
    /// Unique name, used in routes (`/readyz/{name}`), metrics and logs.
    pub name: Option<String>,
    /// What to check: openai, anthropic, http, tcp, redis, postgres or exec.
    pub kind: Option<String>,
    /// A critical dependency that is down makes readiness 503; a non-critical one only degrades.
    pub critical: Option<bool>,
    /// Time between two checks.
    pub interval: Option<Duration>,
    /// How long one check may take; shorter than `interval`.
    pub timeout: Option<Duration>,
    /// Consecutive failures before the dependency counts as down.
    pub failure_threshold: Option<u32>,
    /// Consecutive successes before a down dependency counts as up again.
    pub success_threshold: Option<u32>,
    /// A result older than this counts as a failure (default `2 × interval + timeout`).
    pub stale_after: Option<Duration>,
    /// With `[fleet]`: one instance checks per interval and the others read its result (default
    /// true for remote `openai` and `anthropic` dependencies, false for the rest).
    pub shared: Option<bool>,
    /// With `shared`: what an outage every instance sees does to readiness: `"not-ready"`
    /// (default) or `"degraded"` (the fleet stays in traffic and is not replaced).
    pub fleet_outage: Option<String>,

    // LLM providers.
    /// Provider base URL, such as `https://api.openai.com/v1`.
    pub base_url: Option<String>,
    /// Model name the check uses.
    pub model: Option<String>,
    /// Environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// LLM check mode: models, completion or semantic.
    pub check: Option<String>,
    /// Semantic check: the validation prompt.
    pub prompt: Option<String>,
    /// Semantic check: substring or `/regex/` the answer must match. Redis: the reply, exactly,
    /// or a `/regex/`.
    pub expect: Option<String>,
    /// OpenAI: the request field that limits the answer: `max_tokens` (default) or
    /// `max_completion_tokens` (models that refuse `max_tokens`).
    pub max_tokens_field: Option<String>,
    /// Completion and semantic checks: an answer slower than this is a failure.
    pub max_latency: Option<Duration>,
    /// OpenAI: Azure OpenAI's `api-version` (sends `api-key` instead of a bearer token).
    /// Anthropic: the `anthropic-version` header (default `2023-06-01`).
    pub api_version: Option<String>,
    /// OpenAI-compatible local servers: a path on the server's root (llama.cpp: `/health`) that
    /// answers 503 while the model loads; the check waits for it instead of failing hard.
    pub health_path: Option<String>,
    /// LLM kinds: at most this many probes an hour; the interval is stretched to fit.
    pub max_probes_per_hour: Option<u32>,

    // redis, postgres, exec.
    /// Redis and PostgreSQL: environment variable holding the password.
    pub password_env: Option<String>,
    /// Redis: the command, such as `"EXISTS doc:42"` or `["GET", "key with spaces"]`.
    /// Exec: the program and its arguments, as a list (no shell).
    pub command: Option<StringOrList>,
    /// With TLS (`https://` for http and the LLM kinds, `rediss://` for Redis): a PEM file of
    /// the certificate authorities to trust instead of the bundled public roots (a private CA).
    pub ca_file: Option<std::path::PathBuf>,
    /// PostgreSQL: the query to run, such as `SELECT 1 FROM items WHERE id = 42`.
    pub query: Option<String>,
    /// PostgreSQL: how many rows the query must return.
    pub expect_rows: Option<u64>,

    // tcp.
    /// `host:port` to connect to.
    pub address: Option<String>,

    // http.
    /// URL to request.
    pub url: Option<String>,
    /// GET (default) or HEAD.
    pub method: Option<String>,
    /// Statuses that count as healthy (default: any 2xx).
    pub expect_status: Option<Vec<u16>>,
    /// A substring the response body must contain.
    pub expect_body: Option<String>,
    /// Request headers with literal values.
    pub headers: Option<BTreeMap<String, String>>,
    /// Request headers whose values come from environment variables: header name → variable name.
    pub headers_env: Option<BTreeMap<String, String>>,
    /// A JSON body whose value at `pointer` must equal `equals` (or exist, without `equals`).
    pub expect_json: Option<RawExpectJson>,
}

/// A string, or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    String(String),
    List(Vec<String>),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExpectJson {
    /// An RFC 6901 JSON pointer, such as `/result/id`.
    pub pointer: Option<String>,
    /// The value expected there (any JSON value).
    pub equals: Option<serde_json::Value>,
}

/// `[gate]`: vitals as a reverse proxy in front of the inference server.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGate {
    /// Where clients send their inference requests (never the probe port).
    pub listen: Option<String>,
    /// The inference server's base URL.
    pub upstream: Option<String>,
    /// A `[[processes]]` entry the gate fronts: the upstream is that process on loopback, at
    /// whatever port it runs on now (instead of `upstream`).
    pub process: Option<String>,
    /// Requests let through at once: a number, or `"auto"` (llama.cpp's `/props`).
    pub max_concurrent: Option<RawGateLimit>,
    /// `"fixed"` (default): `max_concurrent` it is; `"adaptive"`: follows the upstream's pace
    /// up to `max_concurrent`.
    pub limit: Option<String>,
    pub adaptive: Option<RawAdaptive>,
    /// Requests that may wait for a slot; the rest are shed.
    pub queue_depth: Option<u32>,
    /// How long a request may wait for a slot.
    pub queue_timeout: Option<Duration>,
    /// How long the upstream may take to begin its answer.
    pub request_timeout: Option<Duration>,
    /// The largest request body forwarded, in bytes.
    pub max_body: Option<usize>,
    /// The most bytes of request bodies held at once, over all requests.
    pub max_buffered: Option<usize>,
    /// With an `https://` upstream: a PEM file of the certificate authorities to trust instead
    /// of the bundled public roots (a private CA).
    pub ca_file: Option<std::path::PathBuf>,
    pub breaker: Option<RawBreaker>,
    pub saturation: Option<RawSaturation>,
    pub retry: Option<RawRetry>,
}

/// `[gate.retry]`: retries where they are safe, within a budget.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Retries after the first attempt (0: none).
    pub attempts: Option<u32>,
    /// The first backoff's ceiling (full jitter under it).
    pub base: Option<Duration>,
    /// The largest backoff.
    pub cap: Option<Duration>,
    /// Retries as a share of requests (0.2: at most 20 % more load).
    pub budget: Option<f64>,
    /// Retries a second allowed however few requests come.
    pub budget_min_per_sec: Option<f64>,
}

/// `[gate.saturation]`: when a saturated upstream turns readiness degraded or not ready.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSaturation {
    /// Queued requests that count as saturated.
    pub high_water: Option<u32>,
    /// How long saturation lasts before readiness says degraded.
    pub degrade_after: Option<Duration>,
    /// How long it must be gone before readiness says so.
    pub recover_after: Option<Duration>,
    /// How long requests are shed for a full queue before the instance is not ready.
    pub full_for: Option<Duration>,
    /// Time to first byte over this many times its baseline counts as saturated.
    pub ttfb_factor: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawGateLimit {
    /// Any integer: the bounds are checked with the others, each error naming the key.
    Number(i64),
    Word(String),
    /// Anything else (a float, a table): refused by name, not with the parser's words.
    Other(serde::de::IgnoredAny),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    /// Consecutive upstream faults that open the circuit.
    pub failure_threshold: Option<u32>,
    /// The first open period.
    pub open_for: Option<Duration>,
    /// The longest open period (each reopening doubles it).
    pub max_open_for: Option<Duration>,
}

/// `[gate.adaptive]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdaptive {
    /// The lowest the adaptive limit goes.
    pub min_limit: Option<u32>,
}

/// One `[[processes]]` entry: a program vitals starts, watches, restarts and stops.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProcess {
    /// Unique among dependencies, signals and processes; the process's signal, metric label and
    /// log field.
    pub name: Option<String>,
    /// The program and its arguments, as a list (no shell). `{port}` is replaced by the port.
    pub command: Option<Vec<String>>,
    /// Variables added to the inherited environment. `{port}` is replaced in the values.
    pub env: Option<BTreeMap<String, String>>,
    /// A port (`8080`) or a range (`"5800-5899"`) to choose a free one from.
    pub port: Option<RawPort>,
    /// How vitals checks it: an HTTP path (`"/health"`), `"tcp"` or `"none"` (alive is healthy).
    pub health: Option<String>,
    /// Time between two health checks.
    pub interval: Option<Duration>,
    /// How long one health check may take.
    pub timeout: Option<Duration>,
    /// Consecutive failed health checks before the process is restarted.
    pub failure_threshold: Option<u32>,
    /// How long the process may take to become healthy after each start.
    pub start_timeout: Option<Duration>,
    /// After SIGTERM, how long the process may take to exit before SIGKILL.
    pub stop_timeout: Option<Duration>,
    /// `"on-failure"` (default), `"always"` or `"never"`.
    pub restart: Option<String>,
    /// Whether the process being down makes readiness 503 (default true) or degraded.
    pub critical: Option<bool>,
    /// Restarts in a row (without `backoff.reset_after` of health between them) before vitals
    /// gives up on the process; unset: never gives up.
    pub give_up_after: Option<u32>,
    /// With `gate.process` naming this process: an answer under way with no byte from it for
    /// this long counts as a hung process (one not begun has `gate.request_timeout`).
    pub stall_after: Option<Duration>,
    pub backoff: Option<RawBackoff>,
}

/// A port number, or a range written `"FIRST-LAST"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawPort {
    Number(i64),
    Text(String),
}

/// `[processes.backoff]`: the delay before each restart.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackoff {
    /// The first delay; each restart in a row doubles it.
    pub initial: Option<Duration>,
    /// The longest delay.
    pub max: Option<Duration>,
    /// Healthy this long, the next restart waits `initial` again.
    pub reset_after: Option<Duration>,
}

/// `[fleet]`: the instances of one deployment share their checks of shared dependencies
/// through Redis.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    /// `redis://host:port/db` or `rediss://` (TLS), without a password.
    pub redis_url: Option<String>,
    /// Environment variable holding Redis' password.
    pub password_env: Option<String>,
    /// With `rediss://`: a PEM file of the certificate authorities to trust instead of the
    /// bundled public roots (a private CA).
    pub ca_file: Option<std::path::PathBuf>,
    /// Prefix of every key vitals writes (default `vitals`).
    pub key_prefix: Option<String>,
}
