//! The circuit breaker: after `failure_threshold` upstream faults in a row the circuit opens and
//! requests fail fast (503) for an open period that doubles at each reopening up to
//! `max_open_for`, with jitter; then one trial request goes through (half-open): a success
//! closes the circuit, a fault opens it again for longer. Where no client's request comes to
//! be the trial, the gate sends one of its own.
//!
//! Only upstream faults count: a refused or reset connection, an upstream timeout, a 5xx other
//! than a model still loading, an answer that is not an API's. Client errors (4xx) and the
//! gate's own sheds are not the upstream's fault.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerOptions {
    /// Consecutive faults that open the circuit.
    pub failure_threshold: u32,
    /// The first open period.
    pub open_for: Duration,
    /// The longest open period.
    pub max_open_for: Duration,
    /// Each open period is scaled by a factor drawn from `[1 − jitter/2, 1 + jitter/2]`, so a
    /// fleet of gates does not retry a recovering upstream in step (0 to 1).
    pub jitter: f64,
}

impl Default for BreakerOptions {
    fn default() -> Self {
        BreakerOptions {
            failure_threshold: 5,
            open_for: Duration::from_secs(1),
            max_open_for: Duration::from_secs(60),
            jitter: 0.5,
        }
    }
}

/// The circuit's state, as `vitals_gate_circuit_state` exports it (0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }

    pub fn gauge(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed {
        faults: u32,
    },
    Open {
        until: Instant,
    },
    /// The open period ended; `trial` is true while the one trial request is in flight.
    HalfOpen {
        trial: bool,
    },
}

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Forward it.
    Yes,
    /// Forward it as the half-open trial: its result decides the circuit.
    Trial,
    /// Fail fast: the circuit is open, for about this long yet.
    No { retry_after: Duration },
}

/// The breaker's state machine. Time comes from the caller, so it is tested with paused time.
#[derive(Debug)]
pub struct Breaker {
    options: BreakerOptions,
    state: State,
    /// Times opened since the circuit last closed: the next open period is
    /// `open_for × 2^(opened − 1)`.
    opened: u32,
    /// Why it last opened.
    reason: String,
}

impl Breaker {
    pub fn new(options: BreakerOptions) -> Breaker {
        Breaker {
            options,
            state: State::Closed { faults: 0 },
            opened: 0,
            reason: String::new(),
        }
    }

    pub fn state(&self, now: Instant) -> CircuitState {
        match self.state {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { until } if now < until => CircuitState::Open,
            State::Open { .. } | State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Closed with no fault since the last success, and no open period to remember: a
    /// success changes nothing, and every request is admitted.
    pub fn is_clean(&self) -> bool {
        matches!(self.state, State::Closed { faults: 0 }) && self.opened == 0
    }

    /// Why the circuit last opened (the last fault's reason).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub fn admit(&mut self, now: Instant) -> Admit {
        match self.state {
            State::Closed { .. } => Admit::Yes,
            State::Open { until } if now < until => Admit::No {
                retry_after: until - now,
            },
            State::Open { .. } | State::HalfOpen { trial: false } => {
                self.state = State::HalfOpen { trial: true };
                Admit::Trial
            }
            // Another request is the trial: fail fast until it answers.
            State::HalfOpen { trial: true } => Admit::No {
                retry_after: self.options.open_for,
            },
        }
    }

    /// Whether a trial may go now and none has: the open period has passed (or the last trial
    /// went away without a result).
    pub fn trial_due(&self, now: Instant) -> bool {
        match self.state {
            State::Open { until } => now >= until,
            State::HalfOpen { trial } => !trial,
            State::Closed { .. } => false,
        }
    }

    /// A forwarded request's result: `Err(reason)` for an upstream fault.
    pub fn record(&mut self, now: Instant, trial: bool, result: Result<(), &str>) {
        match (result, self.state) {
            (Ok(()), State::HalfOpen { .. }) if trial => self.close(),
            // A client's answer while closed: faults, and open periods, are behind it.
            (Ok(()), State::Closed { .. }) => self.close(),
            (Err(reason), State::HalfOpen { .. }) if trial => self.open(now, reason),
            (Err(reason), State::Closed { faults }) => {
                let faults = faults + 1;
                if faults >= self.options.failure_threshold {
                    self.open(now, reason);
                } else {
                    self.state = State::Closed { faults };
                }
            }
            // Results of requests admitted before the circuit opened change nothing now.
            _ => {}
        }
    }

    /// The result of the gate's own trial (`GET /v1/models`, sent when no client's request came
    /// to be the trial). Weaker evidence than a client's answer: the models list may answer
    /// while completions still fail (a hosted API's partial outage, a model server whose
    /// generation hangs). A success closes the circuit but keeps the count of open periods, so
    /// if clients' requests open it again soon the next open period is doubled, not the first
    /// again; a client's answer while closed clears that count.
    pub fn record_own_trial(&mut self, now: Instant, result: Result<(), &str>) {
        if let State::HalfOpen { trial: true } = self.state {
            match result {
                Ok(()) => self.state = State::Closed { faults: 0 },
                Err(reason) => self.open(now, reason),
            }
        }
    }

    /// The trial request went away without a result (the client left): let another try.
    pub fn abandon_trial(&mut self) {
        if let State::HalfOpen { trial: true } = self.state {
            self.state = State::HalfOpen { trial: false };
        }
    }

    fn close(&mut self) {
        self.state = State::Closed { faults: 0 };
        self.opened = 0;
    }

    fn open(&mut self, now: Instant, reason: &str) {
        self.opened = self.opened.saturating_add(1);
        let period = self.open_period();
        self.state = State::Open {
            until: now + period,
        };
        self.reason = reason.to_owned();
    }

    /// `open_for × 2^(opened − 1)`, capped, then jittered.
    fn open_period(&mut self) -> Duration {
        let doubling = 2u32.saturating_pow(self.opened.saturating_sub(1).min(20));
        let base = self
            .options
            .open_for
            .saturating_mul(doubling)
            .min(self.options.max_open_for);
        let jitter = self.options.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return base;
        }
        let draw: f64 = rand::Rng::gen(&mut rand::thread_rng());
        base.mul_f64(1.0 - jitter / 2.0 + jitter * draw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32) -> Breaker {
        Breaker::new(BreakerOptions {
            failure_threshold: threshold,
            open_for: Duration::from_secs(1),
            max_open_for: Duration::from_secs(8),
            jitter: 0.0,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_faults_only() {
        let t = Instant::now();
        let mut b = breaker(3);
        b.record(t, false, Err("refused"));
        b.record(t, false, Err("refused"));
        b.record(t, false, Ok(()));
        b.record(t, false, Err("refused"));
        b.record(t, false, Err("refused"));
        assert_eq!(
            b.state(t),
            CircuitState::Closed,
            "a success resets the count"
        );
        b.record(t, false, Err("reset by peer"));
        assert_eq!(b.state(t), CircuitState::Open);
        assert_eq!(b.reason(), "reset by peer");
        assert_eq!(
            b.admit(t),
            Admit::No {
                retry_after: Duration::from_secs(1)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_gates_own_trial_closes_without_forgetting_how_often_it_opened() {
        let t = Instant::now();
        let mut b = breaker(1);
        b.record(t, false, Err("boom"));
        let t = t + Duration::from_secs(1);
        assert_eq!(b.admit(t), Admit::Trial);
        b.record_own_trial(t, Ok(()));
        assert_eq!(b.state(t), CircuitState::Closed);
        assert!(!b.is_clean(), "a client's answer has yet to confirm it");
        // Clients' requests fail again at once: the next open period is doubled.
        b.record(t, false, Err("boom"));
        assert_eq!(
            b.admit(t),
            Admit::No {
                retry_after: Duration::from_secs(2)
            }
        );
        // The own trial fails: open again, doubled again.
        let t = t + Duration::from_secs(2);
        assert_eq!(b.admit(t), Admit::Trial);
        b.record_own_trial(t, Err("refused"));
        assert_eq!(b.reason(), "refused");
        assert_eq!(
            b.admit(t),
            Admit::No {
                retry_after: Duration::from_secs(4)
            }
        );
        // It passes, and a client's answer confirms it: the next outage starts afresh.
        let t = t + Duration::from_secs(4);
        assert_eq!(b.admit(t), Admit::Trial);
        b.record_own_trial(t, Ok(()));
        b.record(t, false, Ok(()));
        assert!(b.is_clean());
        b.record(t, false, Err("boom"));
        assert_eq!(
            b.admit(t),
            Admit::No {
                retry_after: Duration::from_secs(1)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_one_trial_through_and_its_result_decides() {
        let t = Instant::now();
        let mut b = breaker(1);
        b.record(t, false, Err("refused"));
        let t1 = t + Duration::from_secs(1);
        assert_eq!(b.state(t1), CircuitState::HalfOpen);
        assert_eq!(b.admit(t1), Admit::Trial);
        assert!(
            matches!(b.admit(t1), Admit::No { .. }),
            "one trial at a time"
        );
        // The trial fails: open again, for twice as long.
        b.record(t1, true, Err("refused"));
        assert_eq!(
            b.admit(t1),
            Admit::No {
                retry_after: Duration::from_secs(2)
            }
        );
        let t3 = t1 + Duration::from_secs(2);
        assert_eq!(b.admit(t3), Admit::Trial);
        b.record(t3, true, Ok(()));
        assert_eq!(b.state(t3), CircuitState::Closed);
        assert_eq!(b.admit(t3), Admit::Yes);
        // Closed again: the next opening starts from the first period.
        b.record(t3, false, Err("refused"));
        assert_eq!(
            b.admit(t3),
            Admit::No {
                retry_after: Duration::from_secs(1)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_open_period_doubles_up_to_its_cap() {
        let mut t = Instant::now();
        let mut b = breaker(1);
        b.record(t, false, Err("refused"));
        let mut periods = Vec::new();
        for _ in 0..6 {
            let Admit::No { retry_after } = b.admit(t) else {
                panic!("open")
            };
            periods.push(retry_after.as_secs());
            t += retry_after;
            assert_eq!(b.admit(t), Admit::Trial);
            b.record(t, true, Err("refused"));
        }
        assert_eq!(periods, [1, 2, 4, 8, 8, 8]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trial_whose_client_left_lets_another_try() {
        let t = Instant::now();
        let mut b = breaker(1);
        b.record(t, false, Err("refused"));
        let t1 = t + Duration::from_secs(1);
        assert_eq!(b.admit(t1), Admit::Trial);
        b.abandon_trial();
        assert_eq!(b.admit(t1), Admit::Trial);
    }

    #[tokio::test(start_paused = true)]
    async fn results_from_before_the_opening_change_nothing() {
        let t = Instant::now();
        let mut b = breaker(1);
        b.record(t, false, Err("refused"));
        b.record(t, false, Ok(()));
        assert_eq!(b.state(t), CircuitState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_spreads_the_period_within_its_bounds() {
        let mut seen = Vec::new();
        for _ in 0..50 {
            let mut b = Breaker::new(BreakerOptions {
                failure_threshold: 1,
                open_for: Duration::from_secs(10),
                max_open_for: Duration::from_secs(60),
                jitter: 0.5,
            });
            let t = Instant::now();
            b.record(t, false, Err("refused"));
            let Admit::No { retry_after } = b.admit(t) else {
                panic!()
            };
            assert!(
                (Duration::from_millis(7500)..=Duration::from_millis(12500)).contains(&retry_after),
                "{retry_after:?}"
            );
            seen.push(retry_after);
        }
        seen.sort();
        seen.dedup();
        assert!(seen.len() > 40, "jitter spreads the periods");
    }
}
