//! What the routes read and the agent API writes: the published snapshot, the heartbeats, the
//! metrics, and the channel into the runtime's driver, which alone changes the state.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use vitals_core::config::Config;
use vitals_core::lifecycle::{Beats, Event, Lifecycle, Liveness, Rules};

use crate::{Heartbeat, Metrics};

/// The state as last published. Cheap to clone; read it with the current time.
pub type Snapshot = Arc<Lifecycle>;

/// The current time on the clock the lifecycle uses (tokio's, so paused-time tests work).
pub fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// How many events may wait for the driver. The agent API answers 503 beyond it rather than
/// queue without bound.
const EVENT_QUEUE: usize = 1024;

/// One change for the driver to apply, with an optional acknowledgement sent once the snapshot
/// that includes it is published.
#[derive(Debug)]
pub struct Command {
    pub event: Event,
    pub ack: Option<oneshot::Sender<()>>,
}

/// The driver's side: the commands to apply and where to publish.
#[derive(Debug)]
pub struct Inbox {
    pub commands: mpsc::Receiver<Command>,
    pub snapshot: watch::Sender<Snapshot>,
}

/// The driver's queue is full: the runtime is not keeping up with the agent's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("vitals is busy applying earlier changes; retry shortly")]
pub struct Busy;

/// Shared by the routes, the runtime's handle and the driver. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shared {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Arc<Config>,
    snapshot: watch::Receiver<Snapshot>,
    commands: mpsc::Sender<Command>,
    own: Heartbeat,
    agent: Heartbeat,
    metrics: Metrics,
    drain: CancellationToken,
    /// Admin calls refused so far, for a log line that cannot be flooded.
    refused: std::sync::atomic::AtomicU64,
    /// One `/metrics` encoding at a time; the others wait here, off the runtime's workers.
    scrapes: tokio::sync::Semaphore,
    /// `/status`'s `fleet` section, from the part of the runtime that shares checks.
    fleet_status: std::sync::OnceLock<Section>,
}

/// A [`StatusSection`], with a `Debug` that says only whether it is set.
struct Section(StatusSection);

impl std::fmt::Debug for Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Section")
    }
}

/// A section of `/status` a part of the runtime provides, read at each request.
pub type StatusSection = Box<dyn Fn() -> serde_json::Value + Send + Sync>;

impl Shared {
    /// A new state for `config`, born now, and the inbox its driver reads.
    pub fn new(config: Arc<Config>) -> (Shared, Inbox) {
        Self::with_metrics(config, &|_| {})
    }

    /// [`Shared::new`], with more metrics registered by `extend` (the gate's).
    pub fn with_metrics(
        config: Arc<Config>,
        extend: &dyn Fn(&mut prometheus_client::registry::Registry),
    ) -> (Shared, Inbox) {
        let state = Lifecycle::new(Rules::from_config(&config), now());
        let metrics = Metrics::with(&state, config.readiness.degraded_status, extend);
        let (snapshot_tx, snapshot) = watch::channel(Arc::new(state));
        let (commands_tx, commands) = mpsc::channel(EVENT_QUEUE);
        let own = Heartbeat::new();
        own.beat();
        let shared = Shared {
            inner: Arc::new(Inner {
                config,
                snapshot,
                commands: commands_tx,
                own,
                agent: Heartbeat::new(),
                metrics,
                drain: CancellationToken::new(),
                refused: Default::default(),
                scrapes: tokio::sync::Semaphore::new(1),
                fleet_status: std::sync::OnceLock::new(),
            }),
        };
        (
            shared,
            Inbox {
                commands,
                snapshot: snapshot_tx,
            },
        )
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.inner.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Sets `/status`'s `fleet` section (once; later calls are ignored).
    pub fn set_fleet_status(&self, section: StatusSection) {
        let _ = self.inner.fleet_status.set(Section(section));
    }

    pub(crate) fn fleet_status(&self) -> Option<serde_json::Value> {
        self.inner.fleet_status.get().map(|f| (f.0)())
    }

    /// The latest published state.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.snapshot.borrow().clone()
    }

    /// A receiver that sees every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.inner.snapshot.clone()
    }

    /// vitals' own heartbeat, beaten by the driver.
    pub fn own_heartbeat(&self) -> &Heartbeat {
        &self.inner.own
    }

    /// The agent's heartbeat.
    pub fn agent_heartbeat(&self) -> &Heartbeat {
        &self.inner.agent
    }

    pub fn beats(&self) -> Beats {
        Beats {
            own: self.inner.own.last(),
            agent: self.inner.agent.last(),
        }
    }

    /// Liveness of `snapshot` at `now`, with the heartbeats as they are.
    pub fn liveness(&self, snapshot: &Lifecycle, now: std::time::Instant) -> Liveness {
        snapshot.liveness(now, self.beats())
    }

    /// Queues `event` for the driver without waiting.
    pub fn send(&self, event: Event) -> Result<(), Busy> {
        self.inner
            .commands
            .try_send(Command { event, ack: None })
            .map_err(|_| Busy)
    }

    /// Queues `event` and waits until a snapshot that includes it is published, at most
    /// `within`.
    pub async fn apply(&self, event: Event, within: Duration) -> Result<(), Busy> {
        let (ack, done) = oneshot::channel();
        self.inner
            .commands
            .try_send(Command {
                event,
                ack: Some(ack),
            })
            .map_err(|_| Busy)?;
        match tokio::time::timeout(within, done).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Busy),
        }
    }

    /// Waits (at most `within`) for the turn to encode `/metrics`; `None` when it did not come.
    pub async fn scrape_turn(&self, within: Duration) -> Option<tokio::sync::SemaphorePermit<'_>> {
        tokio::time::timeout(within, self.inner.scrapes.acquire())
            .await
            .ok()?
            .ok()
    }

    /// Counts one refused admin call; returns how many there have been.
    pub fn count_refusal(&self) -> u64 {
        self.inner
            .refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    /// Asks the runtime to drain. Idempotent.
    pub fn request_drain(&self) {
        let _ = self.send(Event::DrainRequested);
        self.inner.drain.cancel();
    }

    /// Fires once a drain was requested through [`Shared::request_drain`].
    pub fn drain_requested(&self) -> &CancellationToken {
        &self.inner.drain
    }
}
