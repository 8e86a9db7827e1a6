//! vitals-server: the routes, as a service first and a socket second, and the state they share
//! with the runtime.
//!
//! | route | answers |
//! | --- | --- |
//! | `GET/HEAD /healthz`, `/livez` | 200 `ok`; 503 when vitals' heartbeat (or the agent's, when required) is stale |
//! | `GET/HEAD /healthz/agent` | the agent's heartbeat alone: 200, 503 stale, 404 when `[agent] heartbeat = "off"` |
//! | `GET/HEAD /healthz/vitals` | vitals' own liveness alone (for the vitals sidecar's container) |
//! | `GET/HEAD /readyz` | 200; 200 + `X-Agent-Mode: degraded`; 503 starting, not ready or draining. `?verbose`, `?degraded_status=429` |
//! | `GET /readyz/{name}` | one dependency or signal: 200 / 503, 404 for an unknown name |
//! | `GET/HEAD /startupz` | 200 once started, 503 before |
//! | `GET /status` | JSON: phase, readiness, the agent, each dependency and signal |
//! | `GET /metrics` | Prometheus text exposition |
//! | `POST /heartbeat`, `POST /started`, `PUT /signals/{name}`, `POST /drain` | the agent API: loopback callers, or the bearer token from `server.admin_token_env` when one is set |
//!
//! [`Routes`] answers each request from the latest snapshot without waiting on anything but, for
//! the agent API, the driver's acknowledgement; it is a [`tower::Service`] to mount in an axum or
//! hyper app. [`serve`] puts it on a listener with a connection cap and a header-read timeout.
//! This crate links no dependency client (no reqwest, redis or postgres): the checks live in
//! `vitals-probes` and the runtime that joins them in `vitals`.

mod heartbeat;
mod metrics;
mod routes;
mod serve;
mod state;
mod status;

pub use heartbeat::Heartbeat;
pub use metrics::{Format as MetricsFormat, Metrics, CHECK_DURATION_BUCKETS};
pub use routes::{PeerAddr, Resp, Routes};
pub use serve::serve;
pub use state::{now, Busy, Command, Inbox, Shared, Snapshot};
