//! The lifecycle state machine, sans IO: `transition(state, event, now) -> state`.
//!
//! ```text
//! Starting ──startup gate──▶ Serving{Ready|Degraded|NotReady} ──drain──▶ Draining ──▶ Drained
//!    └────────────────────────── drain ──────────────────────────────────▶ Draining
//! ```
//!
//! Readiness is derived from the dependency states and the time, never stored: a result that has
//! gone stale counts as a failure even when no new event arrives (a stuck poller cannot keep an
//! instance ready). Liveness is not decided here at all; it comes from the heartbeat, so no
//! dependency result can restart the process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;

/// What the rules of the machine need to know about one dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyRules {
    pub critical: bool,
    pub failure_threshold: u32,
    pub success_threshold: u32,
    pub stale_after: Duration,
}

/// The fixed rules: one entry per dependency, in configuration order, and the startup gate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rules {
    pub dependencies: Vec<DependencyRules>,
    /// Indices of the dependencies that must have succeeded once before startup passes.
    pub startup_require: Vec<usize>,
}

impl Rules {
    pub fn from_config(config: &Config) -> Self {
        Rules {
            dependencies: config
                .dependencies
                .iter()
                .map(|d| DependencyRules {
                    critical: d.critical,
                    failure_threshold: d.failure_threshold,
                    success_threshold: d.success_threshold,
                    stale_after: d.stale_after.std(),
                })
                .collect(),
            startup_require: config.startup.require.clone(),
        }
    }
}

/// The result of one check. A failing dependency is a value, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The check answered, wrongly; `reason` is short, specific and free of secrets.
    Failed {
        reason: String,
    },
    /// No answer within the check's timeout.
    TimedOut {
        after: Duration,
    },
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success)
    }

    /// Short label for metrics: success, failure or timeout.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failed { .. } => "failure",
            Outcome::TimedOut { .. } => "timeout",
        }
    }

    /// Why it failed, for `/readyz?verbose` and `/status`; `None` on success.
    pub fn reason(&self) -> Option<String> {
        match self {
            Outcome::Success => None,
            Outcome::Failed { reason } => Some(reason.clone()),
            Outcome::TimedOut { after } => {
                Some(format!("timed out after {}", crate::Duration::from(*after)))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Serving,
    Draining { since: Instant },
    Drained,
}

/// What `/readyz` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Starting,
    Ready,
    Degraded,
    NotReady,
    Draining,
    Drained,
}

impl Readiness {
    /// True when `/readyz` answers 2xx.
    pub fn is_serving(self) -> bool {
        matches!(self, Readiness::Ready | Readiness::Degraded)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Starting => "starting",
            Readiness::Ready => "ready",
            Readiness::Degraded => "degraded",
            Readiness::NotReady => "not_ready",
            Readiness::Draining => "draining",
            Readiness::Drained => "drained",
        }
    }
}

/// Everything known about one dependency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DependencyState {
    /// Up after the thresholds, ignoring staleness (see [`Lifecycle::is_up`]).
    pub up: bool,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub last_result_at: Option<Instant>,
    pub last_success_at: Option<Instant>,
    pub last_outcome: Option<Outcome>,
    pub last_latency: Option<Duration>,
}

impl DependencyState {
    /// Applies one result with hysteresis. The very first result is taken as it is: thresholds
    /// smooth changes of state, they do not delay the first one.
    fn record(
        &mut self,
        rules: &DependencyRules,
        outcome: Outcome,
        latency: Duration,
        now: Instant,
    ) {
        let first = self.last_result_at.is_none();
        if outcome.is_success() {
            self.consecutive_successes = self.consecutive_successes.saturating_add(1);
            self.consecutive_failures = 0;
            self.last_success_at = Some(now);
            if first || self.consecutive_successes >= rules.success_threshold {
                self.up = true;
            }
        } else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            self.consecutive_successes = 0;
            if first || self.consecutive_failures >= rules.failure_threshold {
                self.up = false;
            }
        }
        self.last_result_at = Some(now);
        self.last_outcome = Some(outcome);
        self.last_latency = Some(latency);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A check of `dependency` (index into the rules) finished.
    Checked {
        dependency: usize,
        outcome: Outcome,
        latency: Duration,
    },
    /// SIGTERM, SIGINT or `POST /drain`.
    DrainRequested,
    /// The drain delay and grace are over and in-flight work is done.
    DrainFinished,
}

/// The whole state. Cheap to clone for publishing; the rules are shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    rules: Arc<Rules>,
    phase: Phase,
    started: bool,
    dependencies: Vec<DependencyState>,
}

impl Lifecycle {
    /// A new instance: `Starting`, or already `Serving` when the startup gate requires nothing.
    pub fn new(rules: Rules) -> Self {
        let n = rules.dependencies.len();
        let mut state = Lifecycle {
            rules: Arc::new(rules),
            phase: Phase::Starting,
            started: false,
            dependencies: vec![DependencyState::default(); n],
        };
        state.try_start();
        state
    }

    /// The one transition function. Exhaustive over (phase, event): every pair is decided here.
    #[must_use]
    pub fn transition(mut self, event: Event, now: Instant) -> Self {
        match (self.phase, event) {
            (Phase::Drained, _) => {}
            (Phase::Draining { .. }, Event::DrainRequested) => {}
            (Phase::Starting | Phase::Serving, Event::DrainRequested) => {
                self.phase = Phase::Draining { since: now };
            }
            (Phase::Draining { .. }, Event::DrainFinished) => self.phase = Phase::Drained,
            // Finishing a drain that never began is a driver bug; the state stays as it is.
            (Phase::Starting | Phase::Serving, Event::DrainFinished) => {}
            (
                Phase::Starting | Phase::Serving | Phase::Draining { .. },
                Event::Checked {
                    dependency,
                    outcome,
                    latency,
                },
            ) => {
                if let (Some(rules), Some(dep)) = (
                    self.rules.dependencies.get(dependency),
                    self.dependencies.get_mut(dependency),
                ) {
                    dep.record(rules, outcome, latency, now);
                }
                if self.phase == Phase::Starting {
                    self.try_start();
                }
            }
        }
        self
    }

    /// The startup gate: every required dependency has succeeded once. A one-way latch.
    fn try_start(&mut self) {
        let passed = self.rules.startup_require.iter().all(|&i| {
            self.dependencies
                .get(i)
                .is_some_and(|d| d.last_success_at.is_some())
        });
        if passed {
            self.started = true;
            self.phase = Phase::Serving;
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    pub fn dependencies(&self) -> &[DependencyState] {
        &self.dependencies
    }

    /// `/startupz`: true once the gate has passed, also while draining afterwards.
    pub fn started(&self) -> bool {
        self.started
    }

    pub fn is_draining(&self) -> bool {
        matches!(self.phase, Phase::Draining { .. })
    }

    /// The lifecycle's part of liveness: only a finished drain ends it. The heartbeat decides the
    /// rest; nothing a dependency does enters here.
    pub fn live(&self) -> bool {
        self.phase != Phase::Drained
    }

    /// Whether dependency `i` counts as up at `now`: up by its thresholds and its last result
    /// not older than its staleness bound.
    pub fn is_up(&self, i: usize, now: Instant) -> bool {
        let (Some(rules), Some(dep)) = (self.rules.dependencies.get(i), self.dependencies.get(i))
        else {
            return false;
        };
        dep.up
            && dep
                .last_result_at
                .is_some_and(|at| now.saturating_duration_since(at) <= rules.stale_after)
    }

    /// Readiness at `now`, derived from the phase and the dependencies.
    pub fn readiness(&self, now: Instant) -> Readiness {
        match self.phase {
            Phase::Starting => Readiness::Starting,
            Phase::Draining { .. } => Readiness::Draining,
            Phase::Drained => Readiness::Drained,
            Phase::Serving => {
                let mut degraded = false;
                for (i, rules) in self.rules.dependencies.iter().enumerate() {
                    if !self.is_up(i, now) {
                        if rules.critical {
                            return Readiness::NotReady;
                        }
                        degraded = true;
                    }
                }
                if degraded {
                    Readiness::Degraded
                } else {
                    Readiness::Ready
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
