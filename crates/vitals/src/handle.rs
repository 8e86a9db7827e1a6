//! The agent's side of a running runtime.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use vitals_core::lifecycle::{Event, Lifecycle, Observation, Readiness};
use vitals_core::signal::NotPushable;
use vitals_server::{now, Busy, Routes, Shared, Snapshot};

/// A handle to a [`Runtime`](crate::Runtime): beat, say started, report signals, drain, read
/// the state, and get the routes. Cheap to clone; every method is non-blocking.
#[derive(Debug, Clone)]
pub struct Handle {
    shared: Shared,
    /// Fires when the drain delay is over: time for an embedding app to stop accepting.
    stopping: CancellationToken,
}

/// Why [`Handle::set_signal`] refused a report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// No `[[signals]]` entry (or [`Builder::signal`](crate::Builder::signal)) has this name.
    #[error("no signal is named {name:?}; declared: {}", if declared.is_empty() { "none".to_owned() } else { declared.join(", ") })]
    Unknown {
        /// The name given.
        name: String,
        /// The signals that are declared.
        declared: Vec<String>,
    },
    /// The name is a dependency that vitals checks itself.
    #[error("{name:?} is a dependency vitals checks itself; only declared signals can be set")]
    NotPushed {
        /// The name given.
        name: String,
    },
    /// The runtime is not keeping up; the report was not queued.
    #[error(transparent)]
    Busy(#[from] Busy),
}

impl Handle {
    pub(crate) fn new(shared: Shared) -> Self {
        Handle {
            shared,
            stopping: CancellationToken::new(),
        }
    }

    pub(crate) fn stopping_token(&self) -> &CancellationToken {
        &self.stopping
    }

    /// The agent's main loop is alive. One atomic store: call it as often as the loop turns.
    pub fn beat(&self) {
        self.shared.agent_heartbeat().beat();
    }

    /// The agent's own warm-up is done (what `[agent] startup = "signal"` waits for).
    pub fn started(&self) -> Result<(), Busy> {
        self.shared.send(Event::AgentStarted)
    }

    /// Reports a declared signal up or down, valid for the signal's ttl. `reason` says why it is
    /// down (shown in `/readyz?verbose`, `/readyz/{name}` and `/status`; keep secrets out).
    pub fn set_signal(
        &self,
        name: &str,
        up: bool,
        reason: impl Into<String>,
    ) -> Result<(), SignalError> {
        self.report(name, up, reason.into(), None)
    }

    /// Like [`Handle::set_signal`], valid for `ttl` instead of the signal's own.
    pub fn set_signal_for(
        &self,
        name: &str,
        up: bool,
        reason: impl Into<String>,
        ttl: Duration,
    ) -> Result<(), SignalError> {
        self.report(name, up, reason.into(), Some(ttl))
    }

    fn report(
        &self,
        name: &str,
        up: bool,
        reason: String,
        ttl: Option<Duration>,
    ) -> Result<(), SignalError> {
        let id = self
            .shared
            .snapshot()
            .rules()
            .signals
            .pushed(name)
            .map_err(|e| match e {
                NotPushable::Unknown { declared } => SignalError::Unknown {
                    name: name.to_owned(),
                    declared,
                },
                NotPushable::Checked => SignalError::NotPushed {
                    name: name.to_owned(),
                },
            })?;
        self.shared.send(Event::Observed {
            signal: id,
            observation: Observation::reported(up, &reason, ttl),
        })?;
        Ok(())
    }

    /// Starts draining, as SIGTERM or `POST /drain` would.
    pub fn drain(&self) {
        self.shared.request_drain();
    }

    /// Completes when the drain delay is over and vitals' own listener (if any) has stopped: an
    /// app that mounted [`Handle::routes`] should stop accepting then, and finish in-flight work
    /// within `drain.grace`.
    pub async fn stopping(&self) {
        self.stopping.cancelled().await;
    }

    /// The routes, to mount in an axum or hyper app.
    pub fn routes(&self) -> Routes {
        Routes::new(self.shared.clone())
    }

    /// The latest published state.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot()
    }

    /// What `/readyz` would say now.
    pub fn readiness(&self) -> Readiness {
        self.snapshot().readiness(now())
    }

    /// Whether `/healthz` would answer 200 now.
    pub fn is_live(&self) -> bool {
        let snapshot = self.snapshot();
        self.shared.liveness(&snapshot, now()).is_live()
    }

    /// Waits until a published state satisfies `f` (it is called with each new snapshot).
    pub async fn wait_for(&self, f: impl Fn(&Lifecycle) -> bool) {
        let mut rx = self.shared.subscribe();
        let _ = rx.wait_for(|s| f(s)).await;
    }
}
