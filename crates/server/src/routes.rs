//! The routes: each answers from the latest snapshot and the heartbeat, with no I/O and no wait.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use tokio_util::sync::CancellationToken;
use vitals_core::config::{is_valid_degraded_status, Config};
use vitals_core::lifecycle::Readiness;
use vitals_probes::{now, Control, Heartbeat, Metrics, MetricsFormat};

use crate::status;

const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const DEGRADED: HeaderValue = HeaderValue::from_static("degraded");
const AGENT_MODE: &str = "x-agent-mode";

/// Everything the routes read. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct App {
    config: Arc<Config>,
    control: Control,
    heartbeat: Heartbeat,
    metrics: Arc<Metrics>,
    /// Cancelled by `POST /drain`; the binary runs the drain sequence when it fires.
    drain: CancellationToken,
}

type Resp = Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: HeaderValue, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, content_type);
    h.insert(CACHE_CONTROL, NO_STORE);
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

impl App {
    pub fn new(
        config: Arc<Config>,
        control: Control,
        heartbeat: Heartbeat,
        metrics: Arc<Metrics>,
        drain: CancellationToken,
    ) -> Self {
        App {
            config,
            control,
            heartbeat,
            metrics,
            drain,
        }
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Answers one request. `peer` is the caller's address (for `POST /drain`).
    pub fn handle<B>(&self, req: &Request<B>, peer: SocketAddr) -> Resp {
        let path = req.uri().path();
        let query = req.uri().query().unwrap_or("");
        let method = req.method();
        let get_or_head = method == Method::GET || method == Method::HEAD;
        match path {
            "/healthz" | "/livez" if get_or_head => self.liveness(),
            "/readyz" if get_or_head => self.readiness(query),
            "/startupz" if get_or_head => self.startup(),
            "/status" if get_or_head => self.status(),
            "/metrics" if get_or_head => self.metrics(req.headers().get(http::header::ACCEPT).and_then(|v| v.to_str().ok())),
            "/drain" if method == Method::POST => self.drain(req, peer),
            p if p.starts_with("/readyz/") && get_or_head => self.dependency(&p["/readyz/".len()..]),
            "/healthz" | "/livez" | "/readyz" | "/startupz" | "/status" | "/metrics" => method_not_allowed("GET, HEAD"),
            p if p.starts_with("/readyz/") => method_not_allowed("GET, HEAD"),
            "/drain" => method_not_allowed("POST"),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; routes: /healthz /livez /readyz /readyz/{dependency} /startupz /status /metrics /drain\n",
            ),
        }
    }

    fn live(&self) -> bool {
        self.heartbeat
            .is_fresh(self.config.liveness.stall_after.std())
            && self.control.snapshot().live()
    }

    fn liveness(&self) -> Resp {
        if self.live() {
            text(StatusCode::OK, "ok\n")
        } else {
            let age = vitals_core::Duration::from(self.heartbeat.age());
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "heartbeat stale: last beat {age} ago (liveness.stall_after = {})\n",
                    self.config.liveness.stall_after
                ),
            )
        }
    }

    fn readiness(&self, query: &str) -> Resp {
        let mut verbose = false;
        let mut degraded_status = self.config.readiness.degraded_status;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "verbose" => verbose = true,
                "degraded_status" => match value.parse::<u16>() {
                    Ok(code) if is_valid_degraded_status(code) => degraded_status = code,
                    _ => {
                        return text(
                            StatusCode::BAD_REQUEST,
                            format!(
                                "degraded_status={value} is not allowed; use a 2xx status or 429\n"
                            ),
                        )
                    }
                },
                _ => {}
            }
        }
        let snapshot = self.control.snapshot();
        let now = now();
        let readiness = snapshot.readiness(now);
        let status = match readiness {
            Readiness::Ready => StatusCode::OK,
            Readiness::Degraded => StatusCode::from_u16(degraded_status).unwrap_or(StatusCode::OK),
            Readiness::Starting
            | Readiness::NotReady
            | Readiness::Draining
            | Readiness::Drained => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut body = String::new();
        if verbose {
            if !snapshot.started() {
                body.push_str("[-]startup pending\n");
            }
            if matches!(readiness, Readiness::Draining | Readiness::Drained) {
                body.push_str("[-]draining\n");
            }
            for (i, d) in self.config.dependencies.iter().enumerate() {
                let _ = if snapshot.is_up(i, now) {
                    writeln!(body, "[+]{} ok", d.name)
                } else {
                    let reason = reason(&snapshot, i, now);
                    let note = if d.critical { "" } else { " (non-critical)" };
                    writeln!(body, "[-]{} failed{note}: {reason}", d.name)
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

    fn dependency(&self, name: &str) -> Resp {
        let Some((i, _)) = self.config.dependency(name) else {
            return text(
                StatusCode::NOT_FOUND,
                format!("no dependency named {name:?}\n"),
            );
        };
        let snapshot = self.control.snapshot();
        let now = now();
        if snapshot.is_up(i, now) {
            text(StatusCode::OK, "ok\n")
        } else {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("failed: {}\n", reason(&snapshot, i, now)),
            )
        }
    }

    fn startup(&self) -> Resp {
        let started = self.control.snapshot().started();
        text(
            status_of(started),
            if started { "started\n" } else { "starting\n" },
        )
    }

    fn status(&self) -> Resp {
        let snapshot = self.control.snapshot();
        let doc = status::build(
            &self.config,
            &snapshot,
            now(),
            self.live(),
            self.heartbeat.age().as_secs_f64(),
        );
        match serde_json::to_vec_pretty(&doc) {
            Ok(body) => respond(StatusCode::OK, JSON, body),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode status: {e}\n"),
            ),
        }
    }

    fn metrics(&self, accept: Option<&str>) -> Resp {
        let snapshot = self.control.snapshot();
        let live = self
            .heartbeat
            .is_fresh(self.config.liveness.stall_after.std());
        let format = MetricsFormat::negotiate(accept);
        respond(
            StatusCode::OK,
            HeaderValue::from_static(format.content_type()),
            self.metrics.encode(&snapshot, now(), live, format),
        )
    }

    fn drain<B>(&self, req: &Request<B>, peer: SocketAddr) -> Resp {
        let loopback = peer.ip().is_loopback() || peer.ip().to_canonical().is_loopback();
        let token_ok = self
            .config
            .server
            .admin_token
            .as_ref()
            .is_some_and(|token| {
                req.headers()
                    .get(AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .is_some_and(|given| {
                        constant_time_eq(given.as_bytes(), token.expose().as_bytes())
                    })
            });
        if !loopback && !token_ok {
            tracing::warn!(%peer, "refused POST /drain from a non-loopback caller without a valid token");
            let hint = if self.config.server.admin_token.is_some() {
                "present the token from server.admin_token_env as 'Authorization: Bearer <token>'"
            } else {
                "only loopback callers may drain; set server.admin_token_env to allow remote callers with a token"
            };
            return text(StatusCode::FORBIDDEN, format!("forbidden: {hint}\n"));
        }
        tracing::info!(%peer, "drain requested over HTTP");
        self.drain.cancel();
        text(StatusCode::ACCEPTED, "draining\n")
    }
}

fn reason(
    snapshot: &vitals_core::lifecycle::Lifecycle,
    i: usize,
    now: std::time::Instant,
) -> String {
    let Some(dep) = snapshot.dependencies().get(i) else {
        return "unknown".into();
    };
    match (&dep.last_outcome, dep.last_result_at) {
        (None, _) | (_, None) => "no result yet".into(),
        (Some(o), Some(at)) => match o.reason() {
            Some(r) => r,
            None if dep.up => {
                let age = vitals_core::Duration::from(now.saturating_duration_since(at));
                format!("last result is stale ({age} old)")
            }
            None => format!(
                "recovering: {} consecutive successes so far",
                dep.consecutive_successes
            ),
        },
    }
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

#[cfg(test)]
mod tests;
