//! One supervised process's state, sans IO: events in (started, a health result, an exit, the
//! time), actions out (stop it, start it). The runtime ([`crate::run`]) does the IO.
//!
//! ```text
//!          ┌────────── health ok ─────────┐
//! start ─▶ Starting ──start_timeout──▶ (stop) ──exit──▶ BackingOff ──delay──▶ start
//!             │                                              ▲
//!             └─ ok ─▶ Ready ──failure_threshold fails──▶ (stop)
//!                        └──────── exit ─────────────────────┤
//!                                                Down (never, clean exit, given up)
//! ```
//!
//! Backoff is kubelet's shape: `initial`, doubling each restart in a row up to `max`; a process
//! healthy for `reset_after` starts the count again. With `give_up_after = N`, the N+1-th
//! restart in a row is not made: the process stays down (supervisord's FATAL).

use std::time::{Duration, Instant};

use vitals_core::config::{Backoff, Process, RestartPolicy};

/// The fixed rules of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub restart: RestartPolicy,
    pub backoff: Backoff,
    pub failure_threshold: u32,
    pub start_timeout: Duration,
    pub give_up_after: Option<u32>,
}

impl From<&Process> for Rules {
    fn from(p: &Process) -> Self {
        Rules {
            restart: p.restart,
            backoff: p.backoff,
            failure_threshold: p.failure_threshold,
            start_timeout: p.start_timeout.std(),
            give_up_after: p.give_up_after,
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn from_status(status: std::process::ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt as _;
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(sig)) => Exit::Signal(sig),
            (None, None) => Exit::Code(-1),
        }
    }

    /// The status a shell reports: the code, or 128 + the signal.
    pub fn shell_code(self) -> u8 {
        match self {
            Exit::Code(c) => u8::try_from(c).unwrap_or(1),
            Exit::Signal(s) => u8::try_from(128 + s).unwrap_or(1),
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exited with status {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s} ({})", signal_name(*s)),
        }
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        1 => "SIGHUP",
        2 => "SIGINT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        _ => "signal",
    }
}

/// Why a process is down, or was restarted: the `reason` label of
/// `vitals_process_restarts_total` and the start of the reason readiness gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// It ended by itself.
    Exited(Exit),
    /// Its health check failed `failure_threshold` times in a row after it was ready.
    Unhealthy(String),
    /// It did not become healthy within `start_timeout`.
    StartTimeout,
    /// The gate saw it hang (see [`Stall`]).
    Stalled(Stall),
    /// Its port was taken (at start, or it said "address already in use"): who holds it, and
    /// the fix.
    PortInUse(String),
    /// It could not be started at all (the program vanished, a permission).
    SpawnFailed(String),
}

/// How the gate saw a process hang.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// An answer had begun, and no byte of any answer came for `stall_after`.
    Silent(Duration),
    /// It sent nothing on a request for the gate's `request_timeout`: before the answer began
    /// (a non-streamed answer may take that long), or in its middle.
    TimedOut,
}

impl Reason {
    pub fn label(&self) -> &'static str {
        match self {
            Reason::Exited(_) => "exited",
            Reason::Unhealthy(_) => "unhealthy",
            Reason::StartTimeout => "start_timeout",
            Reason::Stalled(_) => "stalled",
            Reason::PortInUse(_) => "port_in_use",
            Reason::SpawnFailed(_) => "spawn_failed",
        }
    }

    pub const LABELS: [&'static str; 6] = [
        "exited",
        "unhealthy",
        "start_timeout",
        "stalled",
        "port_in_use",
        "spawn_failed",
    ];
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Exited(e) => e.fmt(f),
            Reason::Unhealthy(why) => write!(f, "unhealthy: {why}"),
            Reason::StartTimeout => f.write_str("not healthy within start_timeout"),
            Reason::Stalled(Stall::Silent(d)) => write!(
                f,
                "hung: an answer in flight with no byte from it for {}",
                vitals_core::Duration::from(*d)
            ),
            Reason::Stalled(Stall::TimedOut) => f.write_str(
                "hung: it sent nothing on a request through the gate for gate.request_timeout",
            ),
            Reason::PortInUse(why) => f.write_str(why),
            Reason::SpawnFailed(why) => write!(f, "cannot start: {why}"),
        }
    }
}

/// What a health check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// Alive but not ready yet (llama.cpp's 503 "Loading model").
    Loading,
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not started yet.
    Idle,
    /// Started at `since`, not healthy yet.
    Starting { since: Instant },
    /// Healthy since `since`; `failures` checks in a row have failed since.
    Ready {
        since: Instant,
        failures: u32,
        last_failure: Option<String>,
    },
    /// Being stopped for `reason`; its exit decides what follows.
    Stopping { reason: Reason },
    /// Restarts at `until`.
    BackingOff { until: Instant, reason: Reason },
    /// Not restarted: `restart = "never"`, a clean exit under `on-failure`, or given up.
    Down { reason: Reason, gave_up: bool },
    /// Stopped by vitals' own drain.
    Stopped,
}

/// What the runtime must do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// Stop the process (SIGTERM to its group, SIGKILL after `stop_timeout`), then report its
    /// exit with [`Machine::exited`].
    Stop(Reason),
    /// Start it.
    Start,
}

/// `at + d`, or a century later where that does not fit (a configured day-long backoff must
/// not panic the clock).
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(at)
}

/// One process's supervision state.
#[derive(Debug, Clone)]
pub struct Machine {
    rules: Rules,
    state: State,
    /// Restarts in a row, without `backoff.reset_after` of health between them.
    streak: u32,
    restarts: u64,
}

impl Machine {
    pub fn new(rules: Rules) -> Machine {
        Machine {
            rules,
            state: State::Idle,
            streak: 0,
            restarts: 0,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Restarts in a row so far.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Every restart since vitals started.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready { .. })
    }

    /// The process was started at `now`.
    pub fn started(&mut self, now: Instant) {
        self.state = State::Starting { since: now };
    }

    /// A health check's result at `now`.
    pub fn health(&mut self, health: Health, now: Instant) -> Action {
        match (&mut self.state, health) {
            (State::Starting { .. }, Health::Ok) => {
                self.state = State::Ready {
                    since: now,
                    failures: 0,
                    last_failure: None,
                };
                Action::Nothing
            }
            // Still loading, or not listening yet: only the start budget ends it.
            (State::Starting { .. }, _) => self.tick(now),
            (
                State::Ready {
                    failures,
                    last_failure,
                    ..
                },
                Health::Ok,
            ) => {
                *failures = 0;
                *last_failure = None;
                Action::Nothing
            }
            (
                State::Ready {
                    failures,
                    last_failure,
                    ..
                },
                bad,
            ) => {
                let why = match bad {
                    Health::Loading => "answered 503 (loading) after it was ready".to_owned(),
                    Health::Failed(why) => why,
                    Health::Ok => unreachable!("matched above"),
                };
                *failures += 1;
                if *failures >= self.rules.failure_threshold {
                    let why = format!("{why} ({} checks in a row)", *failures);
                    self.stop(Reason::Unhealthy(why))
                } else {
                    *last_failure = Some(why);
                    Action::Nothing
                }
            }
            // A check that finished after the process left these states says nothing.
            _ => Action::Nothing,
        }
    }

    /// The gate saw the process hang.
    pub fn stalled(&mut self, stall: Stall) -> Action {
        match self.state {
            State::Starting { .. } | State::Ready { .. } => self.stop(Reason::Stalled(stall)),
            _ => Action::Nothing,
        }
    }

    fn stop(&mut self, reason: Reason) -> Action {
        self.state = State::Stopping {
            reason: reason.clone(),
        };
        Action::Stop(reason)
    }

    /// Time passing: the start budget, and the end of a backoff.
    pub fn tick(&mut self, now: Instant) -> Action {
        match self.state {
            State::Starting { since }
                if now.saturating_duration_since(since) >= self.rules.start_timeout =>
            {
                self.stop(Reason::StartTimeout)
            }
            State::BackingOff { until, .. } if now >= until => Action::Start,
            _ => Action::Nothing,
        }
    }

    /// When [`Machine::tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            State::Starting { since } => Some(later(since, self.rules.start_timeout)),
            State::BackingOff { until, .. } => Some(until),
            _ => None,
        }
    }

    /// The process exited at `now` with `exit`. If vitals stopped it, the reason it was stopped
    /// for is the reason; otherwise its exit is.
    pub fn exited(&mut self, exit: Exit, now: Instant) {
        if let State::Ready { since, .. } = self.state {
            if now.saturating_duration_since(since) >= self.rules.backoff.reset_after.std() {
                self.streak = 0;
            }
        }
        let (reason, stopped_by_us) = match std::mem::replace(&mut self.state, State::Idle) {
            State::Stopping { reason } => (reason, true),
            _ => (Reason::Exited(exit), false),
        };
        self.after_failure(reason, stopped_by_us, now);
    }

    /// The process could not be started, or its port was taken: as an exit, for backoff.
    pub fn failed_to_start(&mut self, reason: Reason, now: Instant) {
        self.state = State::Idle;
        self.after_failure(reason, false, now);
    }

    fn after_failure(&mut self, reason: Reason, stopped_by_us: bool, now: Instant) {
        let clean = matches!(reason, Reason::Exited(Exit::Code(0)));
        let restart = match self.rules.restart {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => stopped_by_us || !clean,
            RestartPolicy::Always => true,
        };
        if !restart {
            self.state = State::Down {
                reason,
                gave_up: false,
            };
            return;
        }
        if self.rules.give_up_after.is_some_and(|n| self.streak >= n) {
            self.state = State::Down {
                reason,
                gave_up: true,
            };
            return;
        }
        self.streak += 1;
        self.restarts += 1;
        self.state = State::BackingOff {
            until: later(now, self.delay()),
            reason,
        };
    }

    /// The delay before the current restart: `initial × 2^(streak − 1)`, at most `max`.
    pub fn delay(&self) -> Duration {
        let initial = self.rules.backoff.initial.std();
        let doublings = self.streak.saturating_sub(1).min(32);
        initial
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(Duration::MAX)
            .min(self.rules.backoff.max.std())
    }

    /// vitals' drain stopped the process: nothing follows.
    pub fn stopped(&mut self) {
        self.state = State::Stopped;
    }

    /// Whether readiness may count the process as up, and why not.
    pub fn report(&self, now: Instant) -> (bool, String) {
        let secs = |d: Duration| vitals_core::Duration::from(Duration::from_secs(d.as_secs()));
        match &self.state {
            State::Ready { .. } => (true, String::new()),
            State::Idle => (false, "not started yet".to_owned()),
            State::Starting { since } => (
                false,
                format!(
                    "starting: not healthy yet after {} (start_timeout {})",
                    secs(now.saturating_duration_since(*since)),
                    vitals_core::Duration::from(self.rules.start_timeout)
                ),
            ),
            State::Stopping { reason } => (false, format!("restarting: {reason}")),
            State::BackingOff { until, reason } => (
                false,
                format!(
                    "restarting in {}: {reason} (restart {} in a row)",
                    secs(until.saturating_duration_since(now) + Duration::from_millis(999)),
                    self.streak
                ),
            ),
            State::Down {
                reason,
                gave_up: true,
            } => (
                false,
                format!(
                    "given up after {} restarts in a row (give_up_after): {reason}",
                    self.streak
                ),
            ),
            State::Down { reason, .. } => (
                false,
                format!(
                    "down, not restarted (restart = \"{}\"): {reason}",
                    self.rules.restart.as_str()
                ),
            ),
            State::Stopped => (false, "stopped by vitals' drain".to_owned()),
        }
    }

    /// A short word for `/status`.
    pub fn phase(&self) -> &'static str {
        match self.state {
            State::Idle => "idle",
            State::Starting { .. } => "starting",
            State::Ready { .. } => "ready",
            State::Stopping { .. } => "stopping",
            State::BackingOff { .. } => "restarting",
            State::Down { gave_up: true, .. } => "given_up",
            State::Down { .. } => "down",
            State::Stopped => "stopped",
        }
    }
}

#[cfg(test)]
mod tests;
