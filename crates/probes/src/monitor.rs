//! The poller: one loop per dependency, one driver that owns the lifecycle state.
//!
//! Each check loop runs its dependency on its own interval, bounds every check by the
//! dependency's timeout and sends the result to the driver. The driver applies
//! [`Lifecycle::transition`], beats the heartbeat and publishes a fresh [`Snapshot`]. Nothing on
//! the request path waits for a check: routes read the latest snapshot.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use vitals_core::config::{Config, Dependency};
use vitals_core::lifecycle::{Event, Lifecycle, Outcome, Rules};

use crate::checks::{BuildError, Checker, Report};
use crate::{Heartbeat, Metrics};

/// The state as last published. Cheap to clone; read it with the current time.
pub type Snapshot = Arc<Lifecycle>;

/// The current time on the clock the lifecycle uses (tokio's, so paused-time tests work).
pub fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// The background poller and state driver. Build it with [`Monitor::new`], run it with
/// [`Monitor::run`] on a task the binary owns.
#[derive(Debug)]
pub struct Monitor {
    config: Arc<Config>,
    checkers: Vec<Arc<Checker>>,
    metrics: Arc<Metrics>,
    heartbeat: Heartbeat,
    events: mpsc::UnboundedReceiver<Event>,
    events_tx: mpsc::UnboundedSender<Event>,
    snapshot: watch::Sender<Snapshot>,
}

/// A handle to a running [`Monitor`]: read the snapshot, ask for a drain.
#[derive(Debug, Clone)]
pub struct Control {
    events: mpsc::UnboundedSender<Event>,
    snapshot: watch::Receiver<Snapshot>,
}

impl Control {
    /// The latest published state.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.borrow().clone()
    }

    /// A receiver that sees every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.snapshot.clone()
    }

    /// Starts draining: readiness turns 503 with the next snapshot.
    pub fn drain(&self) {
        let _ = self.events.send(Event::DrainRequested);
    }

    /// The drain is over: the state becomes `Drained`.
    pub fn finish_drain(&self) {
        let _ = self.events.send(Event::DrainFinished);
    }

    /// Waits until a published snapshot satisfies `f`.
    pub async fn wait_for(&self, f: impl Fn(&Lifecycle) -> bool) {
        let mut rx = self.snapshot.clone();
        let _ = rx.wait_for(|s| f(s)).await;
    }
}

impl Monitor {
    pub fn new(
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        heartbeat: Heartbeat,
    ) -> Result<(Monitor, Control), BuildError> {
        let checkers = config
            .dependencies
            .iter()
            .map(|d| Checker::new(d).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let state = Lifecycle::new(Rules::from_config(&config));
        let (snapshot, snapshot_rx) = watch::channel(Arc::new(state));
        heartbeat.beat();
        let control = Control {
            events: events_tx.clone(),
            snapshot: snapshot_rx,
        };
        Ok((
            Monitor {
                config,
                checkers,
                metrics,
                heartbeat,
                events,
                events_tx,
                snapshot,
            },
            control,
        ))
    }

    /// Runs until `cancel` fires. The check loops live in a `JoinSet` owned by this future, so
    /// they end with it.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut loops = JoinSet::new();
        for (i, (dep, checker)) in self
            .config
            .dependencies
            .iter()
            .zip(&self.checkers)
            .enumerate()
        {
            loops.spawn(check_loop(
                i,
                dep.clone(),
                checker.clone(),
                self.metrics.clone(),
                self.events_tx.clone(),
                cancel.clone(),
            ));
        }

        for d in &self.config.dependencies {
            if let vitals_core::config::Check::Llm(c) = &d.check {
                if let (Some(budget), Some(requested)) =
                    (c.max_probes_per_hour, c.requested_interval)
                {
                    tracing::warn!(
                        dependency = %d.name,
                        max_probes_per_hour = budget,
                        requested_interval = %requested,
                        interval = %d.interval,
                        "the probe budget allows fewer probes than the interval asks for; probing less often to stay within it"
                    );
                }
            }
        }
        let mut state: Lifecycle = (**self.snapshot.borrow()).clone();
        let mut readiness = state.readiness(now());
        tracing::info!(
            readiness = readiness.as_str(),
            dependencies = self.checkers.len(),
            "monitor started"
        );
        let stall_after = self.config.liveness.stall_after.std();
        let mut beat = tokio::time::interval((stall_after / 4).min(Duration::from_secs(1)));
        beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let startup_deadline = sleep_until(Instant::now() + self.config.startup.timeout.std());
        tokio::pin!(startup_deadline);
        let mut startup_reported = state.started();

        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                event = self.events.recv() => {
                    let Some(event) = event else { break };
                    let at = now();
                    if let Event::Checked { dependency, outcome, .. } = &event {
                        self.log_change(&state, *dependency, outcome, at);
                    }
                    let was_started = state.started();
                    state = state.transition(event, at);
                    if state.started() && !was_started {
                        tracing::info!("startup finished: every required dependency has succeeded once");
                    }
                    self.snapshot.send_replace(Arc::new(state.clone()));
                }
                _ = beat.tick() => {}
                _ = &mut startup_deadline, if !startup_reported => {
                    startup_reported = true;
                    if !state.started() {
                        let pending: Vec<&str> = state.rules().startup_require.iter()
                            .filter(|&&i| state.dependencies()[i].last_success_at.is_none())
                            .map(|&i| self.config.dependencies[i].name.as_str())
                            .collect();
                        tracing::warn!(
                            timeout = %self.config.startup.timeout,
                            pending = ?pending,
                            "startup did not finish within startup.timeout; /startupz stays 503 and the orchestrator decides"
                        );
                    }
                }
            }
            self.heartbeat.beat();
            let now_readiness = state.readiness(now());
            if now_readiness != readiness {
                tracing::info!(
                    from = readiness.as_str(),
                    to = now_readiness.as_str(),
                    "readiness changed"
                );
                readiness = now_readiness;
            }
        }
        loops.shutdown().await;
    }

    fn log_change(&self, state: &Lifecycle, i: usize, outcome: &Outcome, at: std::time::Instant) {
        let Some(dep) = self.config.dependencies.get(i) else {
            return;
        };
        let was_up = state.is_up(i, at);
        let first = state.dependencies()[i].last_result_at.is_none();
        match (outcome.reason(), was_up || first) {
            (Some(reason), _) => {
                tracing::warn!(dependency = %dep.name, kind = %dep.kind, critical = dep.critical, %reason, "check failed")
            }
            (None, false) => {
                tracing::info!(dependency = %dep.name, kind = %dep.kind, "check succeeded again")
            }
            (None, true) if first => {
                tracing::info!(dependency = %dep.name, kind = %dep.kind, "first check succeeded")
            }
            (None, true) => {}
        }
    }
}

/// Checks one dependency forever: the first check soon after start (with a small random offset so
/// replicas started together do not probe together), then exactly every `interval`, each bounded
/// by `timeout`. Keeping the period exact keeps LLM spend at 60 / interval calls a minute.
async fn check_loop(
    index: usize,
    dep: Dependency,
    checker: Arc<Checker>,
    metrics: Arc<Metrics>,
    events: mpsc::UnboundedSender<Event>,
    cancel: CancellationToken,
) {
    let interval = dep.interval.std();
    let timeout = dep.timeout.std();
    let max_offset = (interval / 10).min(Duration::from_millis(500));
    let offset = max_offset.mul_f64(fastrand::f64());
    let mut next = Instant::now() + offset;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = sleep_until(next) => {}
        }
        let started = Instant::now();
        let report = tokio::select! {
            _ = cancel.cancelled() => return,
            r = tokio::time::timeout(timeout, checker.check()) => match r {
                Ok(report) => report,
                Err(_) => Report::from(Outcome::TimedOut { after: timeout }),
            },
        };
        let latency = started.elapsed();
        let Report {
            outcome,
            retry_after,
            usage,
        } = report;
        metrics.record_check(index, &outcome, latency);
        if let Some(u) = usage {
            metrics.record_tokens(index, u.prompt, u.completion);
        }
        tracing::debug!(dependency = %dep.name, outcome = outcome.label(), latency_ms = latency.as_millis() as u64, "check done");
        if events
            .send(Event::Checked {
                dependency: index,
                outcome,
                latency,
            })
            .is_err()
        {
            return;
        }
        next += interval;
        // A provider that asked for a pause (429 Retry-After) gets it: probing harder would
        // only spend budget on more 429s.
        if let Some(pause) = retry_after {
            let not_before = started + latency + pause;
            if not_before > next {
                tracing::info!(dependency = %dep.name, pause_s = pause.as_secs(), "provider asked to retry later; next probe delayed");
                next = not_before;
            }
        }
        // A check that overran its slot (it cannot, being shorter than the interval, unless the
        // runtime stalled) does not cause a burst of catch-up checks.
        let now = Instant::now();
        if next < now {
            next = now;
        }
    }
}
