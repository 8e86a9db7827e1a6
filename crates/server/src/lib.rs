//! vitals-server: the probe routes, as a service first and a socket second.
//!
//! | route | answers |
//! | --- | --- |
//! | `GET/HEAD /healthz`, `/livez` | 200 `ok`; 503 when the heartbeat is stale |
//! | `GET/HEAD /readyz` | 200; 200 + `X-Agent-Mode: degraded`; 503 starting, not ready or draining. `?verbose`, `?degraded_status=429` |
//! | `GET /readyz/{dependency}` | 200 / 503, 404 for an unknown name |
//! | `GET/HEAD /startupz` | 200 once started, 503 before |
//! | `GET /status` | JSON: phase, readiness, each dependency |
//! | `GET /metrics` | Prometheus text exposition |
//! | `POST /drain` | starts draining; loopback callers, or a bearer token from `server.admin_token_env` |
//!
//! [`App::handle`] answers one request from the latest snapshot without waiting on anything;
//! [`serve`] puts it on a listener with a connection cap and a header-read timeout.

mod routes;
mod serve;
mod status;

pub use routes::App;
pub use serve::serve;
