//! The routes: probe routes answer from the latest snapshot and the heartbeats, with no I/O and
//! no wait; the agent API (`/heartbeat`, `/started`, `/signals/{name}`, `/drain`) changes state
//! only through the driver.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use vitals_core::config::{is_valid_degraded_status, HeartbeatMode, StartupMode};
use vitals_core::contract::paths;
use vitals_core::lifecycle::{AgentBeat, Event, Observation, Readiness, Scope};
use vitals_core::signal::{NotPushable, Source};

use crate::state::{now, Shared};
use crate::{status, MetricsFormat};

const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const DEGRADED: HeaderValue = HeaderValue::from_static("degraded");
const AGENT_MODE: &str = "x-agent-mode";
const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");

/// The largest `PUT /signals/{name}` body: a flag, a short reason and a ttl.
const MAX_SIGNAL_BODY: usize = 4096;
/// The longest ttl a report may carry; longer would mean "never expires".
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a scrape waits for the ones before it before answering 503.
const SCRAPE_WAIT: Duration = Duration::from_secs(10);
/// How long an agent call waits for the driver to publish its change.
const APPLY_WITHIN: Duration = Duration::from_secs(2);

/// The caller's address, put in a request's extensions by whoever accepted the connection.
/// [`serve`](crate::serve) adds it; an app that mounts [`Routes`] adds it to let loopback callers
/// use the agent API without a token. Without it, a caller counts as remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// A response of the routes.
pub type Resp = Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: HeaderValue, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, content_type);
    h.insert(CACHE_CONTROL, NO_STORE);
    // Some bodies quote what the caller sent: never let a browser read them as anything else.
    h.insert(X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    r
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    respond(status, TEXT, body)
}

fn status_of(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Every route of vitals, as a [`tower::Service`] (mount it in an axum or hyper app) or through
/// [`Routes::handle`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Routes {
    shared: Shared,
}

/// A body `PUT /signals/{name}` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalReport {
    up: bool,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    ttl: Option<String>,
}

const SIGNAL_BODY_HELP: &str =
    "send JSON like {\"up\": false, \"reason\": \"search API answers 500\", \"ttl\": \"60s\"} (reason and ttl are optional)";

impl Routes {
    pub fn new(shared: Shared) -> Self {
        Routes { shared }
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Answers one request. `peer` is the caller's address, when known (for the agent API).
    pub async fn handle<B>(&self, req: Request<B>, peer: Option<SocketAddr>) -> Resp
    where
        B: http_body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match self.answer_now(&req, peer) {
            Some(resp) => resp,
            None => self.answer_later(req).await,
        }
    }

    /// The answer, when it needs no waiting: every probe route, `/status`, the agent API's
    /// beat and drain, and every refusal. `None` for the three routes that wait (for a body, for
    /// the driver, for a turn to encode metrics), which [`Routes::answer_later`] answers. Probes
    /// take this path: no future to build, nothing to clone.
    pub fn answer_now<B>(&self, req: &Request<B>, peer: Option<SocketAddr>) -> Option<Resp> {
        let method = req.method();
        let get_or_head = method == Method::GET || method == Method::HEAD;
        let path = req.uri().path();
        if path.starts_with(paths::SIGNALS_PREFIX) {
            if method != Method::PUT {
                return Some(method_not_allowed("PUT"));
            }
            return self.denied(req, peer, "PUT /signals");
        }
        Some(match path {
            paths::HEALTHZ | paths::LIVEZ if get_or_head => self.liveness(true),
            paths::HEALTHZ_VITALS if get_or_head => self.liveness(false),
            paths::HEALTHZ_AGENT if get_or_head => self.agent_liveness(),
            paths::READYZ if get_or_head => self.readiness(req.uri().query().unwrap_or("")),
            paths::STARTUPZ if get_or_head => self.startup(),
            paths::STATUS if get_or_head => self.status(),
            paths::METRICS if get_or_head => return None,
            paths::DRAIN if method == Method::POST => self
                .denied(req, peer, "POST /drain")
                .unwrap_or_else(|| self.drain(peer)),
            paths::HEARTBEAT if method == Method::POST => self
                .denied(req, peer, "POST /heartbeat")
                .unwrap_or_else(|| self.heartbeat()),
            paths::STARTED if method == Method::POST => {
                return self.denied(req, peer, "POST /started");
            }
            p if p.starts_with(paths::READYZ_PREFIX) && get_or_head => {
                self.one_signal(&p[paths::READYZ_PREFIX.len()..])
            }
            paths::HEALTHZ
            | paths::LIVEZ
            | paths::HEALTHZ_AGENT
            | paths::HEALTHZ_VITALS
            | paths::READYZ
            | paths::STARTUPZ
            | paths::STATUS
            | paths::METRICS => method_not_allowed("GET, HEAD"),
            p if p.starts_with(paths::READYZ_PREFIX) => method_not_allowed("GET, HEAD"),
            paths::DRAIN | paths::HEARTBEAT | paths::STARTED => method_not_allowed("POST"),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; routes: /healthz /livez /healthz/agent /healthz/vitals /readyz /readyz/{name} /startupz /status /metrics, and POST /heartbeat /started /drain, PUT /signals/{name}\n",
            ),
        })
    }

    /// The routes that wait, once [`Routes::answer_now`] has let the request through:
    /// `PUT /signals/{name}`, `POST /started` and `GET /metrics`.
    pub async fn answer_later<B>(&self, req: Request<B>) -> Resp
    where
        B: http_body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = req.uri().path();
        if let Some(name) = path.strip_prefix(paths::SIGNALS_PREFIX) {
            let name = name.to_owned();
            return self.put_signal(&name, req.into_body()).await;
        }
        match path {
            paths::STARTED => self.started().await,
            _ => {
                let format = MetricsFormat::negotiate(
                    req.headers()
                        .get(http::header::ACCEPT)
                        .and_then(|v| v.to_str().ok()),
                );
                self.metrics(format).await
            }
        }
    }

    /// `None` when the caller may call `what`, else the 403 to answer. The agent API and
    /// `/drain` change state: a configured admin token must be presented
    /// (`Authorization: Bearer <token>`, scheme in any case); without one, only loopback callers
    /// may call.
    fn denied<B>(&self, req: &Request<B>, peer: Option<SocketAddr>, what: &str) -> Option<Resp> {
        let server = &self.shared.config().server;
        let allowed = match &server.admin_token {
            Some(token) => req
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer)
                .is_some_and(|given| constant_time_eq(given.as_bytes(), token.expose().as_bytes())),
            None => peer.is_some_and(|p| p.ip().to_canonical().is_loopback()),
        };
        if allowed {
            return None;
        }
        // Logged at the 1st, 2nd, 4th, 8th... refusal: visible, and a flood of refused calls
        // costs the log a few lines.
        let refused = self.shared.count_refusal();
        if refused.is_power_of_two() {
            tracing::warn!(what, peer = ?peer, refused, "refused a call without the admin token");
        }
        let hint = match (&server.admin_token_env, peer) {
            (Some(var), _) => format!(
                "present the token from ${var} (server.admin_token_env) as 'Authorization: Bearer <token>'"
            ),
            (None, Some(_)) => "only loopback callers may call it; set server.admin_token_env to allow callers with a token".to_owned(),
            (None, None) => "the caller's address is unknown here; call the runtime's Handle in-process, or set server.admin_token_env and present the token".to_owned(),
        };
        Some(text(
            StatusCode::FORBIDDEN,
            format!("forbidden: {what}: {hint}\n"),
        ))
    }

    /// `/healthz` (with the agent's heartbeat, when required) or `/healthz/vitals` (without).
    fn liveness(&self, with_agent: bool) -> Resp {
        let snapshot = self.shared.snapshot();
        let now = now();
        let mut live = self.shared.liveness(&snapshot, now);
        if !with_agent {
            live.agent = AgentBeat::NotRequired;
        }
        if live.is_live() {
            return text(StatusCode::OK, "ok\n");
        }
        let config = self.shared.config();
        let mut body = String::new();
        if !live.own {
            let age = self
                .shared
                .beats()
                .own
                .map(|at| vitals_core::Duration::from(now.saturating_duration_since(at)));
            let _ = writeln!(
                body,
                "heartbeat stale: last beat {} ago (liveness.stall_after = {})",
                age.map(|a| a.to_string()).unwrap_or_else(|| "never".into()),
                config.liveness.stall_after
            );
        }
        if !live.agent.is_live() {
            body.push_str(&agent_problem(live.agent, self.shared.config()));
        }
        if !live.running {
            body.push_str("drained\n");
        }
        text(StatusCode::SERVICE_UNAVAILABLE, body)
    }

    fn agent_liveness(&self) -> Resp {
        let config = self.shared.config();
        if config.agent.heartbeat == HeartbeatMode::Off {
            return text(
                StatusCode::NOT_FOUND,
                "the agent heartbeat is off; set [agent] heartbeat = \"required\" and have the agent POST /heartbeat\n",
            );
        }
        let snapshot = self.shared.snapshot();
        match self.shared.liveness(&snapshot, now()).agent {
            AgentBeat::Fresh | AgentBeat::NotRequired => text(StatusCode::OK, "ok\n"),
            AgentBeat::Waiting => text(
                StatusCode::OK,
                format!(
                    "waiting for the agent's first beat (startup.timeout = {})\n",
                    config.startup.timeout
                ),
            ),
            beat => text(StatusCode::SERVICE_UNAVAILABLE, agent_problem(beat, config)),
        }
    }

    fn readiness(&self, query: &str) -> Resp {
        let mut verbose = false;
        let mut scope = Scope::All;
        let mut degraded_status = self.shared.config().readiness.degraded_status;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "verbose" => verbose = true,
                "scope" => match value {
                    "all" => scope = Scope::All,
                    "instance" => scope = Scope::Instance,
                    _ => {
                        return text(
                            StatusCode::BAD_REQUEST,
                            "scope is all (every critical signal, the default) or instance (only those local to this instance)\n",
                        )
                    }
                },
                "degraded_status" => match value.parse::<u16>() {
                    Ok(code) if is_valid_degraded_status(code) => degraded_status = code,
                    _ => {
                        return text(
                            StatusCode::BAD_REQUEST,
                            "degraded_status is not allowed; use a 2xx status or 429\n",
                        )
                    }
                },
                _ => {}
            }
        }
        let snapshot = self.shared.snapshot();
        let now = now();
        let readiness = snapshot.readiness_in(scope, now);
        let status = StatusCode::from_u16(readiness.http_status(degraded_status))
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let mut body = String::new();
        if verbose {
            if !snapshot.started() {
                let _ = writeln!(
                    body,
                    "[-]startup pending: {}",
                    snapshot.startup_pending().join(", ")
                );
            }
            if matches!(readiness, Readiness::Draining | Readiness::Drained) {
                body.push_str("[-]draining\n");
            }
            for (id, rules) in snapshot.rules().signals.iter() {
                let _ = if snapshot.is_up(id, now) {
                    writeln!(body, "[+]{} ok", rules.name)
                } else {
                    let note = match (rules.critical, rules.source) {
                        (true, _) if scope == Scope::Instance && !rules.instance_local => {
                            " (shared: degrades for scope=instance)"
                        }
                        (true, _) => "",
                        (false, Source::Pushed) => " (non-critical signal)",
                        (false, _) => " (non-critical)",
                    };
                    writeln!(
                        body,
                        "[-]{} failed{note}: {}",
                        rules.name,
                        snapshot.down_reason(id, now)
                    )
                };
            }
            let _ = writeln!(
                body,
                "readyz check {}",
                match readiness {
                    Readiness::Ready => "passed",
                    Readiness::Degraded => "passed (degraded)",
                    _ => "failed",
                }
            );
        } else {
            body.push_str(match readiness {
                Readiness::Ready => "ok\n",
                Readiness::Degraded => "degraded\n",
                Readiness::Starting => "starting\n",
                Readiness::NotReady => "not ready\n",
                Readiness::Draining | Readiness::Drained => "draining\n",
            });
        }
        let mut r = text(status, body);
        if readiness == Readiness::Degraded {
            r.headers_mut().insert(AGENT_MODE, DEGRADED);
        }
        r
    }

    fn one_signal(&self, name: &str) -> Resp {
        let snapshot = self.shared.snapshot();
        let Some(id) = snapshot.rules().signals.id(name) else {
            return text(
                StatusCode::NOT_FOUND,
                "no dependency or signal has that name; /status lists them\n",
            );
        };
        let now = now();
        if snapshot.is_up(id, now) {
            text(StatusCode::OK, "ok\n")
        } else {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("failed: {}\n", snapshot.down_reason(id, now)),
            )
        }
    }

    fn startup(&self) -> Resp {
        let started = self.shared.snapshot().started();
        text(
            status_of(started),
            if started { "started\n" } else { "starting\n" },
        )
    }

    fn status(&self) -> Resp {
        let snapshot = self.shared.snapshot();
        let now = now();
        let doc = status::build(&self.shared, &snapshot, now);
        match serde_json::to_vec_pretty(&doc) {
            Ok(body) => respond(StatusCode::OK, JSON, body),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode status: {e}\n"),
            ),
        }
    }

    /// Encoding a large registry takes a while: it runs on the blocking pool, one scrape at a
    /// time, so that no number of scrapes can hold the runtime's workers and delay a probe.
    async fn metrics(&self, format: MetricsFormat) -> Resp {
        let Some(_turn) = self.shared.scrape_turn(SCRAPE_WAIT).await else {
            return retry_soon("earlier scrapes are still being encoded; retry shortly\n");
        };
        let shared = self.shared.clone();
        let encoded = tokio::task::spawn_blocking(move || {
            let snapshot = shared.snapshot();
            let now = now();
            let liveness = shared.liveness(&snapshot, now);
            let agent_age = shared
                .beats()
                .agent
                .map(|at| now.saturating_duration_since(at));
            shared
                .metrics()
                .encode(&snapshot, now, liveness, agent_age, format)
        })
        .await;
        match encoded {
            Ok(body) => respond(
                StatusCode::OK,
                HeaderValue::from_static(format.content_type()),
                body,
            ),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the metrics: {e}\n"),
            ),
        }
    }

    fn drain(&self, peer: Option<SocketAddr>) -> Resp {
        tracing::info!(peer = ?peer, "drain requested over HTTP");
        self.shared.request_drain();
        text(StatusCode::ACCEPTED, "draining\n")
    }

    fn heartbeat(&self) -> Resp {
        self.shared.agent_heartbeat().beat();
        text(StatusCode::OK, "ok\n")
    }

    async fn started(&self) -> Resp {
        if self
            .shared
            .apply(Event::AgentStarted, APPLY_WITHIN)
            .await
            .is_err()
        {
            return busy();
        }
        match self.shared.config().agent.startup {
            StartupMode::Signal => text(StatusCode::OK, "started\n"),
            StartupMode::Dependencies => text(
                StatusCode::OK,
                "noted; /startupz does not wait for it while [agent] startup = \"dependencies\"\n",
            ),
        }
    }

    async fn put_signal<B>(&self, name: &str, body: B) -> Resp
    where
        B: http_body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let snapshot = self.shared.snapshot();
        let signals = &snapshot.rules().signals;
        let id = match signals.pushed(name) {
            Ok(id) => id,
            Err(NotPushable::Checked) => {
                return text(
                    StatusCode::CONFLICT,
                    "that name is a dependency vitals checks itself; only [[signals]] entries can be set\n",
                )
            }
            Err(NotPushable::Unknown { declared }) => {
                return text(
                    StatusCode::NOT_FOUND,
                    if declared.is_empty() {
                        "no signal has that name, and none is declared; add a [[signals]] entry to health.toml\n".to_owned()
                    } else {
                        format!(
                            "no signal has that name; declared: {}\n",
                            declared.join(", ")
                        )
                    },
                );
            }
        };
        let bytes = match Limited::new(body, MAX_SIGNAL_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the body is larger than {MAX_SIGNAL_BODY} bytes; {SIGNAL_BODY_HELP}\n"
                    ),
                )
            }
        };
        let report: SignalReport = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not a signal report ({e}); {SIGNAL_BODY_HELP}\n"),
                )
            }
        };
        let ttl = match report
            .ttl
            .as_deref()
            .map(str::parse::<vitals_core::Duration>)
        {
            None => None,
            Some(Ok(d)) if !d.is_zero() && d.std() <= MAX_TTL => Some(d.std()),
            Some(_) => return text(
                StatusCode::BAD_REQUEST,
                "ttl must be a duration such as \"60s\", greater than zero and at most \"24h\"\n",
            ),
        };
        let event = Event::Observed {
            signal: id,
            observation: Observation::reported(
                report.up,
                report.reason.as_deref().unwrap_or(""),
                ttl,
            ),
        };
        match self.shared.apply(event, APPLY_WITHIN).await {
            Ok(()) => text(StatusCode::OK, if report.up { "up\n" } else { "down\n" }),
            Err(_) => busy(),
        }
    }
}

fn busy() -> Resp {
    retry_soon("vitals is busy applying earlier changes; retry shortly\n")
}

/// 503 with `Retry-After: 1`: a moment of load, not a failure.
fn retry_soon(body: &'static str) -> Resp {
    let mut r = text(StatusCode::SERVICE_UNAVAILABLE, body);
    r.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

fn agent_problem(beat: AgentBeat, config: &vitals_core::Config) -> String {
    match beat {
        AgentBeat::Stale { age } => format!(
            "agent heartbeat stale: last beat {} ago (agent.stall_after = {})\n",
            vitals_core::Duration::from(age),
            config.agent.stall_after
        ),
        AgentBeat::Never => format!(
            "no agent heartbeat within startup.timeout ({}); the agent must POST /heartbeat\n",
            config.startup.timeout
        ),
        _ => String::new(),
    }
}

/// The credentials of a `Bearer` authorization, whatever the scheme's case (RFC 9110).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

fn method_not_allowed(allow: &'static str) -> Resp {
    let mut r = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed; use {allow}\n"),
    );
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl<B> tower::Service<Request<B>> for Routes
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Resp, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let routes = self.clone();
        let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
        Box::pin(async move { Ok(routes.handle(req, peer).await) })
    }
}

#[cfg(test)]
mod tests;
