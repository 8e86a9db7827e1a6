//! The lifecycle state machine, sans IO: `transition(state, event, now) -> state`.
//!
//! ```text
//! Starting ──startup gate──▶ Serving{Ready|Degraded|NotReady} ──drain──▶ Draining ──▶ Drained
//!    └────────────────────────── drain ──────────────────────────────────▶ Draining
//! ```
//!
//! Readiness is derived from the [signals](crate::signal) and the time, never stored: a result
//! that has gone stale counts as down even when no new event arrives (a stuck poller or a silent
//! agent cannot keep an instance ready). Liveness is derived from heartbeats alone
//! ([`Lifecycle::liveness`]): no dependency result or pushed capability enters it, so none can
//! restart the process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, HeartbeatMode, StartupMode};
use crate::signal::{Registry, SignalId, SignalRules, Source};

/// The agent's part in liveness and startup (`[agent]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentRules {
    /// Whether `/healthz` needs the agent's heartbeat.
    pub heartbeat_required: bool,
    /// How old the agent's last beat may be.
    pub stall_after: Duration,
    /// Whether startup waits for the agent's own `started` latch.
    pub startup_signal: bool,
}

impl Default for AgentRules {
    fn default() -> Self {
        AgentRules {
            heartbeat_required: false,
            stall_after: Duration::from_secs(30),
            startup_signal: false,
        }
    }
}

/// The fixed rules: the signals, the startup gate, and the heartbeats' bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub signals: Registry,
    /// Signals that must have been up once before startup passes.
    pub startup_require: Vec<SignalId>,
    pub agent: AgentRules,
    /// How old vitals' own heartbeat may be (`liveness.stall_after`).
    pub own_stall_after: Duration,
    /// The startup budget: an agent that must beat and never did fails liveness after it.
    pub startup_timeout: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            signals: Registry::default(),
            startup_require: Vec::new(),
            agent: AgentRules::default(),
            own_stall_after: Duration::from_secs(10),
            startup_timeout: Duration::from_secs(120),
        }
    }
}

/// How old the gate's last report may be: the runtime refreshes it every minute.
pub const GATE_STALE_AFTER: Duration = Duration::from_secs(300);

/// How old a supervised process's last report may be: the supervisor reports at least every
/// minute, so only a stuck supervisor lets it go stale.
pub const PROCESS_STALE_AFTER: Duration = Duration::from_secs(300);

impl Rules {
    /// The registry holds the dependencies first, in file order (dependency `i` is signal `i`),
    /// then the `[[signals]]`.
    pub fn from_config(config: &Config) -> Self {
        let mut signals = Registry::new();
        let dependencies = config.dependencies.iter().map(|d| SignalRules {
            name: d.name.clone(),
            source: Source::Dependency(d.kind),
            critical: d.critical,
            instance_local: d.is_instance_local(),
            failure_threshold: d.failure_threshold,
            success_threshold: d.success_threshold,
            stale_after: d.stale_after.std(),
            fleet_outage_degrades: d.shared
                && config.fleet.is_some()
                && d.fleet_outage == crate::config::FleetOutage::Degraded,
        });
        let pushed = config.signals.iter().map(|s| SignalRules {
            name: s.name.clone(),
            source: Source::Pushed,
            critical: s.critical,
            // The agent reports a capability; vitals cannot tell whether its cause is shared.
            instance_local: false,
            failure_threshold: 1,
            success_threshold: 1,
            stale_after: s.ttl.std(),
            fleet_outage_degrades: false,
        });
        // The gate's circuit, reported by the gate as it changes (and refreshed while it holds,
        // so it never goes stale).
        let gate = config.gate.iter().flat_map(|g| {
            [
                (crate::config::GATE_SIGNAL, true),
                (crate::config::GATE_SATURATION_SIGNAL, false),
            ]
            .map(|(name, critical)| SignalRules {
                name: name.into(),
                source: Source::Gate,
                critical,
                instance_local: g.is_instance_local(),
                failure_threshold: 1,
                success_threshold: 1,
                stale_after: GATE_STALE_AFTER,
                fleet_outage_degrades: false,
            })
        });
        // Supervised processes, reported by the supervisor on every change of state.
        let processes = config.processes.iter().map(|p| SignalRules {
            name: p.name.clone(),
            source: Source::Process,
            critical: p.critical,
            // A process beside vitals: a new instance starts a new one.
            instance_local: true,
            failure_threshold: 1,
            success_threshold: 1,
            stale_after: PROCESS_STALE_AFTER,
            fleet_outage_degrades: false,
        });
        for rules in dependencies.chain(pushed).chain(gate).chain(processes) {
            // Validation already refused duplicate names.
            let _ = signals.register(rules);
        }
        let startup_require = config
            .startup
            .require
            .iter()
            .filter_map(|name| signals.id(name))
            .collect();
        Rules {
            signals,
            startup_require,
            agent: AgentRules {
                heartbeat_required: config.agent.heartbeat == HeartbeatMode::Required,
                stall_after: config.agent.stall_after.std(),
                startup_signal: config.agent.startup == StartupMode::Signal,
            },
            own_stall_after: config.liveness.stall_after.std(),
            startup_timeout: config.startup.timeout.std(),
        }
    }
}

/// The result of one check or report. A failing dependency is a value, not an error.
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

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Serving => "serving",
            Phase::Draining { .. } => "draining",
            Phase::Drained => "drained",
        }
    }
}

/// Which critical signals can make an instance not ready.
///
/// Where failing readiness *replaces* an instance (an ECS service behind an ALB replaces tasks
/// its target group calls unhealthy), a dependency the whole fleet shares must not fail it: one
/// LLM provider outage would replace every task at once, and the new ones would fail the same
/// way. `Scope::Instance` (`/readyz?scope=instance`) counts only what is local to this instance:
/// dependencies on a loopback address and `exec` checks, whose failure a new instance can
/// cure. A down shared critical dependency then degrades instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// Every critical signal (`/readyz`).
    #[default]
    All,
    /// Only critical signals local to this instance (`/readyz?scope=instance`).
    Instance,
}

impl Scope {
    fn counts(self, rules: &SignalRules) -> bool {
        match self {
            Scope::All => true,
            Scope::Instance => rules.instance_local,
        }
    }
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
    /// The status `/readyz` answers: the one place readiness becomes HTTP. `degraded_status` is
    /// `readiness.degraded_status` or a caller's `?degraded_status=` (2xx or 429).
    pub fn http_status(self, degraded_status: u16) -> u16 {
        match self {
            Readiness::Ready => 200,
            Readiness::Degraded => degraded_status,
            Readiness::Starting
            | Readiness::NotReady
            | Readiness::Draining
            | Readiness::Drained => 503,
        }
    }

    /// True when `/readyz` answers 2xx with `degraded_status`; `vitals_ready` reads this.
    pub fn is_ready(self, degraded_status: u16) -> bool {
        (200..300).contains(&self.http_status(degraded_status))
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

/// Everything known about one signal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignalState {
    /// Up after the thresholds, ignoring staleness (see [`Lifecycle::is_up`]).
    pub up: bool,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub last_result_at: Option<Instant>,
    pub last_success_at: Option<Instant>,
    pub last_outcome: Option<Outcome>,
    pub last_latency: Option<Duration>,
    /// How long the last result stays valid: the signal's staleness bound, or the ttl the last
    /// report carried.
    pub valid_for: Option<Duration>,
    /// What the fleet knew of the last result.
    pub spread: Spread,
}

impl SignalState {
    /// Applies one result with hysteresis. The very first result is taken as it is: thresholds
    /// smooth changes of state, they do not delay the first one.
    fn record(&mut self, rules: &SignalRules, observation: Observation, now: Instant) {
        let first = self.last_result_at.is_none();
        if observation.outcome.is_success() {
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
        self.spread = observation.spread;
        self.last_outcome = Some(observation.outcome);
        self.last_latency = observation.latency;
        self.valid_for = Some(observation.ttl.unwrap_or(rules.stale_after));
    }
}

/// What the fleet knows of a shared dependency's failure (`[fleet]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Spread {
    /// Not shared, or the fleet cannot tell.
    #[default]
    Unknown,
    /// Every instance that checked it lately sees it down: a provider outage. With
    /// `fleet_outage = "degraded"` it degrades instead of failing readiness.
    FleetWide,
    /// Other instances see it up: this instance's own path fails. It counts for
    /// `/readyz?scope=instance` too: a new instance may not have the problem.
    Local,
}

/// One result for one signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub outcome: Outcome,
    /// What the fleet knows of a failure (shared dependencies only).
    pub spread: Spread,
    /// How long the check took; `None` for a pushed report.
    pub latency: Option<Duration>,
    /// How long this result stays valid, when the source says (a pushed report's `ttl`).
    pub ttl: Option<Duration>,
}

/// A reported reason is cut to this many characters.
const MAX_REASON_CHARS: usize = 200;

impl Observation {
    /// What the agent reported for a pushed signal, valid for `ttl` (the signal's own when
    /// `None`). The reason is made safe to show, whichever way it came (HTTP or the library):
    /// control characters become spaces, it is cut to 200 characters, and an empty one says
    /// only that the agent reported the signal down.
    pub fn reported(up: bool, reason: &str, ttl: Option<Duration>) -> Observation {
        let outcome = if up {
            Outcome::Success
        } else {
            let clean: String = reason
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(MAX_REASON_CHARS)
                .collect();
            let clean = clean.trim();
            Outcome::Failed {
                reason: if clean.is_empty() {
                    "reported down by the agent".to_owned()
                } else {
                    clean.to_owned()
                },
            }
        };
        Observation {
            outcome,
            spread: Spread::Unknown,
            latency: None,
            ttl,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A check finished, or the agent reported a signal.
    Observed {
        signal: SignalId,
        observation: Observation,
    },
    /// The agent's own startup latch (`POST /started`).
    AgentStarted,
    /// SIGTERM, SIGINT, SIGHUP or `POST /drain`.
    DrainRequested,
    /// The drain delay and grace are over and in-flight work is done.
    DrainFinished,
}

/// When the heartbeats last beat, read at the moment liveness is asked for. Beats are kept
/// outside the state (they are too frequent to publish a snapshot for each), so they come in as
/// an argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Beats {
    /// vitals' own driver loop.
    pub own: Option<Instant>,
    /// The agent's last `POST /heartbeat` or `Handle::beat`.
    pub agent: Option<Instant>,
}

/// The agent heartbeat's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentBeat {
    /// `[agent] heartbeat = "off"`.
    NotRequired,
    /// No beat yet, still within the startup budget.
    Waiting,
    /// Beat within `agent.stall_after`.
    Fresh,
    /// The last beat is older than `agent.stall_after`.
    Stale { age: Duration },
    /// No beat at all within the startup budget.
    Never,
}

impl AgentBeat {
    pub fn is_live(self) -> bool {
        matches!(
            self,
            AgentBeat::NotRequired | AgentBeat::Waiting | AgentBeat::Fresh
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AgentBeat::NotRequired => "not_required",
            AgentBeat::Waiting => "waiting",
            AgentBeat::Fresh => "fresh",
            AgentBeat::Stale { .. } => "stale",
            AgentBeat::Never => "never",
        }
    }
}

/// What `/healthz` says, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// vitals' own heartbeat is fresh.
    pub own: bool,
    pub agent: AgentBeat,
    /// The process has not finished draining.
    pub running: bool,
}

impl Liveness {
    pub fn is_live(self) -> bool {
        self.own && self.agent.is_live() && self.running
    }
}

/// The whole state. Cheap to clone for publishing; the rules are shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    rules: Arc<Rules>,
    /// When this instance began: the startup budget counts from here.
    born: Instant,
    phase: Phase,
    started: bool,
    agent_started: bool,
    signals: Vec<SignalState>,
}

impl Lifecycle {
    /// A new instance born at `now`: `Starting`, or already `Serving` when the startup gate
    /// requires nothing.
    pub fn new(rules: Rules, now: Instant) -> Self {
        let n = rules.signals.len();
        let mut state = Lifecycle {
            rules: Arc::new(rules),
            born: now,
            phase: Phase::Starting,
            started: false,
            agent_started: false,
            signals: vec![SignalState::default(); n],
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
                Event::Observed {
                    signal,
                    observation,
                },
            ) => {
                if let (Some(rules), Some(state)) = (
                    self.rules.signals.get(signal),
                    self.signals.get_mut(signal.index()),
                ) {
                    state.record(rules, observation, now);
                }
                if self.phase == Phase::Starting {
                    self.try_start();
                }
            }
            (Phase::Starting | Phase::Serving | Phase::Draining { .. }, Event::AgentStarted) => {
                self.agent_started = true;
                if self.phase == Phase::Starting {
                    self.try_start();
                }
            }
        }
        self
    }

    /// The startup gate: every required signal has been up once, and the agent said it started
    /// when it must. A one-way latch.
    fn try_start(&mut self) {
        let signals_passed = self.rules.startup_require.iter().all(|id| {
            self.signals
                .get(id.index())
                .is_some_and(|s| s.last_success_at.is_some())
        });
        if signals_passed && (self.agent_started || !self.rules.agent.startup_signal) {
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

    pub fn born(&self) -> Instant {
        self.born
    }

    /// Every signal's state, indexed by [`SignalId::index`].
    pub fn signals(&self) -> &[SignalState] {
        &self.signals
    }

    pub fn signal(&self, id: SignalId) -> Option<&SignalState> {
        self.signals.get(id.index())
    }

    /// `/startupz`: true once the gate has passed, also while draining afterwards.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Whether the agent has sent its own `started`.
    pub fn agent_started(&self) -> bool {
        self.agent_started
    }

    /// What startup still waits for: the required signals never up, and the agent's latch.
    pub fn startup_pending(&self) -> Vec<&str> {
        let mut pending: Vec<&str> = self
            .rules
            .startup_require
            .iter()
            .filter(|id| {
                self.signal(**id)
                    .is_none_or(|s| s.last_success_at.is_none())
            })
            .filter_map(|id| self.rules.signals.get(*id).map(|r| r.name.as_str()))
            .collect();
        if self.rules.agent.startup_signal && !self.agent_started {
            pending.push("agent (POST /started)");
        }
        pending
    }

    pub fn is_draining(&self) -> bool {
        matches!(self.phase, Phase::Draining { .. })
    }

    /// Liveness at `now` from the heartbeats. It reads the phase (a finished drain ends it) and
    /// the beats, and nothing a signal reported.
    pub fn liveness(&self, now: Instant, beats: Beats) -> Liveness {
        let own = beats
            .own
            .is_some_and(|at| now.saturating_duration_since(at) <= self.rules.own_stall_after);
        let agent = if !self.rules.agent.heartbeat_required {
            AgentBeat::NotRequired
        } else {
            match beats.agent {
                Some(at) => {
                    let age = now.saturating_duration_since(at);
                    if age <= self.rules.agent.stall_after {
                        AgentBeat::Fresh
                    } else {
                        AgentBeat::Stale { age }
                    }
                }
                None if now.saturating_duration_since(self.born) <= self.rules.startup_timeout => {
                    AgentBeat::Waiting
                }
                None => AgentBeat::Never,
            }
        };
        Liveness {
            own,
            agent,
            running: self.phase != Phase::Drained,
        }
    }

    /// Whether signal `id` counts as up at `now`: up by its thresholds and its last result still
    /// valid.
    pub fn is_up(&self, id: SignalId, now: Instant) -> bool {
        let Some(state) = self.signals.get(id.index()) else {
            return false;
        };
        state.up
            && state.last_result_at.is_some_and(|at| {
                state
                    .valid_for
                    .is_some_and(|valid| now.saturating_duration_since(at) <= valid)
            })
    }

    /// Why signal `id` is down at `now`, for `/readyz?verbose`, `/readyz/{name}` and `/status`.
    pub fn down_reason(&self, id: SignalId, now: Instant) -> String {
        let Some(state) = self.signals.get(id.index()) else {
            return "unknown".into();
        };
        let pushed = self
            .rules
            .signals
            .get(id)
            .is_some_and(|r| r.source == Source::Pushed);
        match (&state.last_outcome, state.last_result_at) {
            (None, _) | (_, None) if pushed => "no report yet".into(),
            (None, _) | (_, None) => "no result yet".into(),
            (Some(o), Some(at)) => match o.reason() {
                Some(r) => match state.spread {
                    Spread::FleetWide => format!(
                        "{r} (fleet-wide: every instance that checked it lately sees it down)"
                    ),
                    Spread::Local => format!("{r} (this instance only: other instances see it up)"),
                    Spread::Unknown => r,
                },
                None if state.up => {
                    let age = crate::Duration::from(now.saturating_duration_since(at));
                    if pushed {
                        format!("last report expired ({age} old)")
                    } else {
                        format!("last result is stale ({age} old)")
                    }
                }
                None => format!(
                    "recovering: {} consecutive successes so far",
                    state.consecutive_successes
                ),
            },
        }
    }

    /// Readiness at `now`, derived from the phase and the signals.
    pub fn readiness(&self, now: Instant) -> Readiness {
        self.readiness_in(Scope::All, now)
    }

    /// Readiness over the signals `scope` counts; the others, when down, degrade at most.
    pub fn readiness_in(&self, scope: Scope, now: Instant) -> Readiness {
        match self.phase {
            Phase::Starting => Readiness::Starting,
            Phase::Draining { .. } => Readiness::Draining,
            Phase::Drained => Readiness::Drained,
            Phase::Serving => {
                let mut degraded = false;
                for (id, rules) in self.rules.signals.iter() {
                    if !self.is_up(id, now) {
                        let spread = self.signals[id.index()].spread;
                        let critical = rules.critical
                            && !(rules.fleet_outage_degrades && spread == Spread::FleetWide);
                        let counts = scope.counts(rules) || spread == Spread::Local;
                        if critical && counts {
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
