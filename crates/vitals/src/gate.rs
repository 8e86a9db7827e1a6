//! `[gate]` in the runtime: the gate's listener beside the probe routes' (never behind it), its
//! metrics in `/metrics`, and its circuit as the `gate` signal of readiness.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vitals_core::config::{GateLimit, GATE_SIGNAL};
use vitals_core::lifecycle::{Event, Observation};
use vitals_gate::{BreakerOptions, CircuitState, Gate};
use vitals_server::Shared;

use crate::Error;

/// The gate of a runtime, built with the other parts and started by [`GatePart::start`].
#[derive(Debug)]
pub(crate) struct GatePart {
    gate: Gate,
    listen: SocketAddr,
    auto: bool,
    startup_timeout: Duration,
}

/// How often the gate's circuit is reported while it holds, so the signal never goes stale.
const REFRESH: Duration = Duration::from_secs(60);

impl GatePart {
    /// The gate `config` asks for, if any.
    pub(crate) fn from_config(
        config: &vitals_core::Config,
        header_read_timeout: Duration,
    ) -> Result<Option<GatePart>, Error> {
        let Some(g) = &config.gate else {
            return Ok(None);
        };
        let (limit, auto) = match g.max_concurrent {
            GateLimit::Fixed(n) => (n as usize, false),
            // Learned from the upstream at start; one request at a time until then.
            GateLimit::Auto => (1, true),
        };
        let gate = Gate::new(vitals_gate::Options {
            upstream: g.upstream.clone(),
            max_concurrent: limit,
            queue_depth: g.queue_depth as usize,
            queue_timeout: g.queue_timeout.std(),
            request_timeout: g.request_timeout.std(),
            max_body: g.max_body,
            header_read_timeout,
            breaker: BreakerOptions {
                failure_threshold: g.breaker.failure_threshold,
                open_for: g.breaker.open_for.std(),
                max_open_for: g.breaker.max_open_for.std(),
                jitter: 0.5,
            },
        })
        .map_err(|e| Error::Gate(format!("gate: cannot build the upstream client: {e}")))?;
        Ok(Some(GatePart {
            gate,
            listen: g.listen,
            auto,
            startup_timeout: config.startup.timeout.std(),
        }))
    }

    pub(crate) fn gate(&self) -> &Gate {
        &self.gate
    }

    pub(crate) async fn bind(&self) -> Result<TcpListener, Error> {
        TcpListener::bind(self.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: self.listen,
                source,
            })
    }

    /// Learns the limit (with `"auto"`), then serves the gate and reports its circuit, until
    /// `stop` (no new connections) and `root` (everything) are cancelled.
    pub(crate) async fn start(
        &self,
        listener: TcpListener,
        shared: &Shared,
        tasks: &TaskTracker,
        stop: CancellationToken,
        root: CancellationToken,
    ) -> Result<(), Error> {
        if self.auto {
            let slots = self.learn_slots().await?;
            self.gate.admission().raise_limit(slots);
            tracing::info!(
                slots,
                "gate: max_concurrent = \"auto\": the upstream has {slots} slots"
            );
        }
        let signal = shared
            .snapshot()
            .rules()
            .signals
            .id(GATE_SIGNAL)
            .expect("a [gate] registers the gate signal");
        let report = move |shared: &Shared, up: bool, reason: &str| {
            let _ = shared.send(Event::Observed {
                signal,
                observation: Observation::reported(up, reason, None),
            });
        };
        report(shared, true, "");
        let mut circuit = self.gate.circuit();
        let watcher_shared = shared.clone();
        let watcher_root = root.clone();
        tasks.spawn(async move {
            loop {
                let (up, reason) = {
                    let c = circuit.borrow_and_update();
                    match c.state {
                        CircuitState::Closed => (true, String::new()),
                        CircuitState::Open | CircuitState::HalfOpen => {
                            (false, format!("circuit open: {}", c.reason))
                        }
                    }
                };
                report(&watcher_shared, up, &reason);
                tokio::select! {
                    () = watcher_root.cancelled() => return,
                    changed = circuit.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(REFRESH) => {}
                }
            }
        });
        let bound = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(
            listen = %bound,
            upstream = %self.gate_upstream(),
            max_concurrent = self.gate.admission().max_concurrent(),
            "gate: serving"
        );
        tasks.spawn(self.gate.clone().serve(listener, stop));
        Ok(())
    }

    fn gate_upstream(&self) -> String {
        // Validation refused credentials in the URL, so it can be logged.
        self.gate.upstream().to_string()
    }

    /// llama.cpp's `/props` `total_slots`, asked until it answers or the startup budget ends
    /// (the server may still be loading its model).
    async fn learn_slots(&self) -> Result<usize, Error> {
        let deadline = tokio::time::Instant::now() + self.startup_timeout;
        loop {
            let last = match self.gate.upstream_slots().await {
                Ok(n) => return Ok(n),
                Err(e) => e,
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Gate(format!(
                    "gate.max_concurrent = \"auto\": the upstream did not say its slot count within startup.timeout ({:?}): {last}; set gate.max_concurrent to a number",
                    self.startup_timeout
                )));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Waits until no request holds a slot, for at most `grace`.
    pub(crate) async fn drained(&self, grace: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + grace;
        while self.gate.admission().in_flight() > 0 || self.gate.admission().queued() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}
