//! The poller: one loop per dependency, each on its own schedule, sending results to the runtime.
//!
//! A loop checks its dependency soon after start (with a small random offset so replicas started
//! together do not probe together), then exactly every `interval`, each check bounded by
//! `timeout`. Keeping the period exact keeps LLM spend at 60 / interval calls a minute. A provider
//! that asks for a pause (429 `Retry-After`) gets it, and a check that overran its slot does not
//! cause a burst of catch-up checks.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use vitals_core::config::{Check, Config};
use vitals_core::lifecycle::Outcome;
use vitals_core::signal::{Registry, SignalId};

use crate::checks::{BuildError, Checker, Report};

/// One finished check, for the runtime to apply and count.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub signal: SignalId,
    pub report: Report,
    pub latency: Duration,
    /// How long the result stays valid, when less than the dependency's `stale_after`: a
    /// result another instance of the fleet published some time ago.
    pub valid_for: Option<Duration>,
    /// What the fleet knows of a failure of a shared dependency.
    pub spread: vitals_core::lifecycle::Spread,
}

/// Something the poller can run once: a [`Checker`], or a scripted stand-in in tests.
pub trait Probe: Send + Sync + 'static {
    fn check(&self) -> impl Future<Output = Report> + Send;
}

impl Probe for Checker {
    fn check(&self) -> impl Future<Output = Report> + Send {
        Checker::check(self)
    }
}

/// When to check one dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Schedule {
    /// The largest random offset of the first check: a tenth of the interval, at most 500 ms.
    pub fn max_offset(self) -> Duration {
        (self.interval / 10).min(Duration::from_millis(500))
    }
}

/// Every dependency's check, built and ready to run.
#[derive(Debug)]
pub struct Poller<P = Checker> {
    jobs: Vec<Job<P>>,
    #[cfg(feature = "fleet")]
    fleet: Option<crate::fleet::Fleet>,
}

#[derive(Debug)]
struct Job<P> {
    signal: SignalId,
    name: String,
    schedule: Schedule,
    probe: Arc<P>,
    /// With `[fleet]` and `shared`: how long a published result stays valid.
    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
    stale_after: Duration,
    /// `max_probes_per_hour`: with `[fleet]`, the whole fleet's budget.
    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
    budget: Option<u32>,
}

impl Poller<Checker> {
    /// Builds the clients of every dependency in `config` (errors name the dependency); their
    /// signals come from `registry`.
    pub fn new(config: &Config, registry: &Registry) -> Result<Self, BuildError> {
        let mut jobs = Vec::with_capacity(config.dependencies.len());
        for d in &config.dependencies {
            let signal = registry.id(&d.name).ok_or_else(|| BuildError {
                name: d.name.clone(),
                key: "name",
                reason: "it has no signal in the registry".into(),
            })?;
            let mut budget = None;
            if let Check::Llm(c) = &d.check {
                budget = c.max_probes_per_hour;
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
            jobs.push(Job {
                signal,
                name: d.name.clone(),
                schedule: Schedule {
                    interval: d.interval.std(),
                    timeout: d.timeout.std(),
                },
                probe: Arc::new(Checker::new(d)?),
                stale_after: d.stale_after.std(),
                budget,
            });
        }
        Ok(Poller {
            jobs,
            #[cfg(feature = "fleet")]
            fleet: None,
        })
    }
}

impl<P: Probe> Poller<P> {
    /// A poller over given probes (tests, and embedders with checks of their own).
    pub fn from_probes(probes: impl IntoIterator<Item = (SignalId, String, Schedule, P)>) -> Self {
        Poller {
            jobs: probes
                .into_iter()
                .map(|(signal, name, schedule, probe)| Job {
                    signal,
                    name,
                    stale_after: schedule.interval * 2 + schedule.timeout,
                    budget: None,
                    schedule,
                    probe: Arc::new(probe),
                })
                .collect(),
            #[cfg(feature = "fleet")]
            fleet: None,
        }
    }

    /// Shares the checks of the fleet's shared dependencies through it.
    #[cfg(feature = "fleet")]
    pub fn with_fleet(mut self, fleet: Option<crate::fleet::Fleet>) -> Self {
        self.fleet = fleet;
        self
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Runs every loop until `cancel` fires or the receiver of `results` is gone. The loops live
    /// in a `JoinSet` owned by this future, so they end with it.
    pub async fn run(self, results: mpsc::Sender<Checked>, cancel: CancellationToken) {
        let mut loops = JoinSet::new();
        for job in self.jobs {
            #[cfg(feature = "fleet")]
            if let Some(fleet) = self.fleet.as_ref().filter(|f| f.is_shared(&job.name)) {
                loops.spawn(crate::poller::shared::shared_loop(
                    job,
                    fleet.clone(),
                    results.clone(),
                    cancel.clone(),
                ));
                continue;
            }
            loops.spawn(check_loop(job, results.clone(), cancel.clone()));
        }
        drop(results);
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = async { while loops.join_next().await.is_some() {} } => {}
        }
        loops.shutdown().await;
    }
}

async fn check_loop<P: Probe>(
    job: Job<P>,
    results: mpsc::Sender<Checked>,
    cancel: CancellationToken,
) {
    let interval = job.schedule.interval;
    let offset = job.schedule.max_offset().mul_f64(fastrand::f64());
    let mut next = Instant::now() + offset;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = sleep_until(next) => {}
        }
        let Some((report, latency)) = check_once(&job, &cancel).await else {
            return;
        };
        let finished = Instant::now();
        let retry_after = report.retry_after;
        tracing::debug!(dependency = %job.name, outcome = report.outcome.label(), latency_ms = latency.as_millis() as u64, "check done");
        let sent = tokio::select! {
            _ = cancel.cancelled() => return,
            sent = results.send(Checked { signal: job.signal, report, latency, valid_for: None, spread: Default::default() }) => sent,
        };
        if sent.is_err() {
            return;
        }
        next = next_check(next, interval, finished, retry_after, Instant::now());
        if let Some(pause) = retry_after {
            tracing::info!(dependency = %job.name, pause_s = pause.as_secs(), "provider asked to retry later; next probe delayed");
        }
    }
}

/// Runs `job`'s check once, bounded by its timeout (a check that overruns is a timeout): the
/// report and how long it took, or `None` when `cancel` fired first.
async fn check_once<P: Probe>(
    job: &Job<P>,
    cancel: &CancellationToken,
) -> Option<(Report, Duration)> {
    let started = Instant::now();
    let timeout = job.schedule.timeout;
    let report = tokio::select! {
        _ = cancel.cancelled() => return None,
        r = tokio::time::timeout(timeout, job.probe.check()) => match r {
            Ok(report) => report,
            Err(_) => Report::from(Outcome::TimedOut { after: timeout }),
        },
    };
    Some((report, started.elapsed()))
}

/// When the next check starts: one interval after the slot of the last, unless the provider asked
/// for a longer pause, and never in the past (no burst of catch-up checks after a stall).
fn next_check(
    slot: Instant,
    interval: Duration,
    finished: Instant,
    retry_after: Option<Duration>,
    now: Instant,
) -> Instant {
    let mut next = slot + interval;
    if let Some(not_before) = retry_after.and_then(|pause| finished.checked_add(pause)) {
        next = next.max(not_before);
    }
    next.max(now)
}

#[cfg(feature = "fleet")]
mod shared;
#[cfg(test)]
mod tests;
