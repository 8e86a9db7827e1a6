//! `[gate]` in the runtime: the gate's listener beside the probe routes' (never behind it), its
//! metrics in `/metrics`, and its circuit as the `gate` signal of readiness.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vitals_core::config::{GateLimit, GATE_SATURATION_SIGNAL, GATE_SIGNAL};
use vitals_core::lifecycle::{Event, Observation};
use vitals_gate::saturation::Load;
use vitals_gate::{BreakerOptions, CircuitState, Gate};
use vitals_server::Shared;

/// How often the log says the gate still waits for the upstream's slot count.
const SAY_WAITING_EVERY: Duration = Duration::from_secs(30);

use crate::Error;

/// The gate of a runtime, built with the other parts and started by [`GatePart::start`].
#[derive(Debug, Clone)]
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
    pub(crate) fn from_config(config: &vitals_core::Config) -> Result<Option<GatePart>, Error> {
        let Some(g) = &config.gate else {
            return Ok(None);
        };
        let (limit, auto) = match g.max_concurrent {
            GateLimit::Fixed(n) => (n as usize, false),
            // Learned from the upstream at start; one request at a time until then.
            GateLimit::Auto => (1, true),
        };
        let batch_sends = vitals_gate::one_cpu();
        if batch_sends {
            tracing::debug!("gate: one CPU: requests read together go to the upstream together");
        } else {
            tracing::debug!("gate: more than one CPU: each request goes to the upstream at once");
        }
        let gate = Gate::new(vitals_gate::Options {
            upstream: g.upstream.clone(),
            max_concurrent: limit,
            queue_depth: g.queue_depth as usize,
            queue_timeout: g.queue_timeout.std(),
            request_timeout: g.request_timeout.std(),
            max_body: g.max_body,
            max_buffered: g.max_buffered,
            ca_file: g.ca_file.clone(),
            // Slow clients are cut as on the probe routes.
            header_read_timeout: config.server.header_read_timeout.std(),
            // Each listener holds at most server.max_connections.
            max_connections: config.server.max_connections as usize,
            breaker: BreakerOptions {
                failure_threshold: g.breaker.failure_threshold,
                open_for: g.breaker.open_for.std(),
                max_open_for: g.breaker.max_open_for.std(),
                jitter: 0.5,
            },
            saturation: vitals_gate::saturation::SaturationOptions {
                high_water: g.saturation.high_water as usize,
                degrade_after: g.saturation.degrade_after.std(),
                recover_after: g.saturation.recover_after.std(),
                full_for: g.saturation.full_for.std(),
                ttfb_factor: g.saturation.ttfb_factor,
            },
            adaptive: g
                .adaptive_min
                .map(|min| vitals_gate::adaptive::AdaptiveOptions::new(min as usize, limit)),
            retry: vitals_gate::retry::RetryOptions {
                attempts: g.retry.attempts,
                base: g.retry.base.std(),
                cap: g.retry.cap.std(),
                ratio: g.retry.budget,
                min_per_sec: g.retry.budget_min_per_sec,
            },
            batch_sends,
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

    /// Learns the limit (with `"auto"`, while the probe routes already answer: the `gate`
    /// signal has no report until then, so the instance is not ready), then serves the gate and
    /// reports its circuit and load, until `stop` (no new connections) and `root` (everything)
    /// are cancelled. The receiver gets the error if the gate cannot start. All of it runs on the
    /// gate's own thread ([`gate_thread`]).
    pub(crate) fn start(
        &self,
        listener: TcpListener,
        shared: &Shared,
        tasks: &TaskTracker,
        stop: CancellationToken,
        root: CancellationToken,
    ) -> tokio::sync::oneshot::Receiver<Error> {
        let (failed, receiver) = tokio::sync::oneshot::channel();
        let (this, shared, spawner) = (self.clone(), shared.clone(), tasks.clone());
        // The gate's thread ends with the runtime's tree, or when the tokio runtime it was
        // started from is dropped: that drops this task, which closes the channel.
        let (alive, runtime_gone) = tokio::sync::oneshot::channel::<()>();
        let watch = root.clone();
        tasks.spawn(async move {
            watch.cancelled().await;
            drop(alive);
        });
        // Registered again on the runtime that serves it, which alone is then woken for it.
        let (listener, listen) = (listener.into_std(), self.listen);
        let serve: GateWork = Box::pin(async move {
            let run = async {
                let served = match listener.and_then(TcpListener::from_std) {
                    Ok(listener) => {
                        this.run(listener, &shared, &spawner, stop, root.clone())
                            .await
                    }
                    Err(source) => Err(Error::Bind {
                        addr: listen,
                        source,
                    }),
                };
                if let Err(e) = served {
                    let _ = failed.send(e);
                }
                // Its connections' tasks live on this runtime: requests in flight finish during
                // the drain, until the whole tree ends.
                root.cancelled().await;
            };
            tokio::select! {
                () = run => {}
                _ = runtime_gone => {}
            }
        });
        match gate_thread() {
            Ok(start) => {
                let _ = start.send(serve);
            }
            Err(e) => {
                // Out of threads (a container's process limit): the gate still serves, on the
                // runtime of the probe routes.
                tracing::warn!(error = %e, "gate: no thread of its own; it shares the probe routes' runtime");
                tasks.spawn(serve);
            }
        }
        receiver
    }

    async fn run(
        &self,
        listener: TcpListener,
        shared: &Shared,
        tasks: &TaskTracker,
        stop: CancellationToken,
        root: CancellationToken,
    ) -> Result<(), Error> {
        if self.auto {
            let slots = tokio::select! {
                slots = self.learn_slots() => slots?,
                () = root.cancelled() => return Ok(()),
            };
            self.gate.learned_limit(slots);
            tracing::info!(
                slots,
                "gate: max_concurrent = \"auto\": the upstream has {slots} slots"
            );
        }
        let rules = shared.snapshot().rules().clone();
        let gate_signal = rules
            .signals
            .id(GATE_SIGNAL)
            .expect("a [gate] registers its signals");
        let saturation_signal = rules
            .signals
            .id(GATE_SATURATION_SIGNAL)
            .expect("a [gate] registers its signals");
        let gate = self.gate.clone();
        let reporter_shared = shared.clone();
        let mut circuit = self.gate.circuit();
        tasks.spawn(async move {
            // Each second: the load sample, and the circuit as it stands; a report whenever
            // either changes, and every REFRESH while they hold.
            let mut last: Option<((bool, String), (bool, String))> = None;
            let mut reported_at = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                let load = gate.sample_load();
                let now_state = {
                    let c = circuit.borrow_and_update();
                    let critical = match (c.state, &load) {
                        (CircuitState::Open | CircuitState::HalfOpen, _) => {
                            (false, format!("circuit open: {}", c.reason))
                        }
                        (CircuitState::Closed, Load::Overloaded { why }) => (false, why.clone()),
                        (CircuitState::Closed, _) => (true, String::new()),
                    };
                    let saturated = match &load {
                        Load::Normal => (true, String::new()),
                        Load::Degraded { why } | Load::Overloaded { why } => (false, why.clone()),
                    };
                    (critical, saturated)
                };
                if last.as_ref() != Some(&now_state) || reported_at.elapsed() >= REFRESH {
                    for (signal, (up, reason)) in [
                        (gate_signal, &now_state.0),
                        (saturation_signal, &now_state.1),
                    ] {
                        let _ = reporter_shared.send(Event::Observed {
                            signal,
                            observation: Observation::reported(*up, reason, None),
                        });
                    }
                    reported_at = tokio::time::Instant::now();
                    last = Some(now_state);
                }
                tokio::select! {
                    () = root.cancelled() => return,
                    changed = circuit.changed() => if changed.is_err() { return },
                    _ = tick.tick() => {}
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
        self.gate.clone().serve(listener, stop).await;
        Ok(())
    }

    fn gate_upstream(&self) -> String {
        // Validation refused credentials in the URL, so it can be logged.
        self.gate.upstream().to_string()
    }

    /// llama.cpp's `/props` `total_slots`, asked until it answers or the startup budget ends
    /// (the server may still be loading its model), and said in the log while it waits. An
    /// answer that will not change (a 404: not llama.cpp's server) stops at once.
    async fn learn_slots(&self) -> Result<usize, Error> {
        let started = tokio::time::Instant::now();
        let deadline = started + self.startup_timeout;
        let mut said: Option<tokio::time::Instant> = None;
        loop {
            let last = match self.gate.upstream_slots().await {
                Ok(n) => return Ok(n),
                Err(e) => e,
            };
            let now = tokio::time::Instant::now();
            if !last.may_change || now >= deadline {
                let what = if last.may_change {
                    format!(
                        "did not say its slot count within startup.timeout ({:?})",
                        self.startup_timeout
                    )
                } else {
                    "cannot say its slot count".to_owned()
                };
                return Err(Error::Gate(format!(
                    "gate.max_concurrent = \"auto\": the upstream {what}: {}; set gate.max_concurrent to a number: the server's slots (llama-server's --parallel, vLLM's max_num_seqs)",
                    last.why
                )));
            }
            if said.is_none_or(|at| now - at >= SAY_WAITING_EVERY) {
                tracing::info!(
                    waited_s = (now - started).as_secs(),
                    "gate: max_concurrent = \"auto\": waiting for the upstream's slot count \
                     (a model server answers once its model is loaded): {}; asking each second \
                     until startup.timeout ({:?})",
                    last.why,
                    self.startup_timeout
                );
                said = Some(now);
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

/// The gate's whole life: serving, then waiting for the end of the runtime's tree.
type GateWork = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A thread of the gate's own, with a single-threaded runtime, waiting for its work.
///
/// The gate's load then never takes the thread the probe routes and checks run on, and an
/// embedder whose runtime thread is held (a blocking call) still has its model requests
/// proxied. A single-threaded scheduler also suits a proxy's request path: no work stealing
/// and no cross-thread wakes (measured against HAProxy: BENCHMARKS.md). One core serves tens of
/// thousands of requests a second, far beyond any model server behind it.
fn gate_thread() -> std::io::Result<std::sync::mpsc::Sender<GateWork>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (start, work) = std::sync::mpsc::channel::<GateWork>();
    std::thread::Builder::new()
        .name("vitals-gate".into())
        .spawn(move || {
            if let Ok(serve) = work.recv() {
                runtime.block_on(serve);
            }
            // A DNS lookup on a blocking thread that never answers must not hold this one.
            runtime.shutdown_background();
        })?;
    Ok(start)
}
