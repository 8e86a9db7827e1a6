//! The driver: the one task that changes the state. It applies commands (from the agent API, the
//! handle and the drain policy) and check results (from the poller) to the lifecycle, publishes
//! each new snapshot, counts checks in the metrics, and beats vitals' own heartbeat on every turn,
//! so a stalled runtime or a deadlocked driver shows as a stale `/healthz`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use vitals_core::lifecycle::{Event, Lifecycle, Observation, Readiness};
use vitals_core::signal::SignalId;
use vitals_probes::Checked;
use vitals_server::{now, Inbox, Shared};

pub(crate) async fn drive(
    shared: Shared,
    mut inbox: Inbox,
    mut checks: mpsc::Receiver<Checked>,
    cancel: CancellationToken,
) {
    let config = shared.config().clone();
    let mut state: Lifecycle = (**inbox.snapshot.borrow()).clone();
    let mut readiness = state.readiness(now());
    tracing::info!(
        readiness = readiness.as_str(),
        signals = state.rules().signals.len(),
        "runtime started"
    );
    let stall_after = config.liveness.stall_after.std();
    let mut beat = tokio::time::interval((stall_after / 4).min(Duration::from_secs(1)));
    beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let startup_deadline = sleep_until(Instant::now() + config.startup.timeout.std());
    tokio::pin!(startup_deadline);
    let mut startup_reported = state.started();
    let mut checks_open = true;

    loop {
        let mut ack = None;
        let event = tokio::select! {
            _ = cancel.cancelled() => break,
            command = inbox.commands.recv() => match command {
                Some(c) => {
                    ack = c.ack;
                    Some(c.event)
                }
                None => break,
            },
            checked = checks.recv(), if checks_open => match checked {
                Some(c) => Some(apply_check(&shared, &state, c)),
                None => {
                    checks_open = false;
                    None
                }
            },
            _ = beat.tick() => None,
            _ = &mut startup_deadline, if !startup_reported => {
                startup_reported = true;
                if !state.started() {
                    tracing::warn!(
                        timeout = %config.startup.timeout,
                        pending = ?state.startup_pending(),
                        "startup did not finish within startup.timeout; /startupz stays 503 and the orchestrator decides"
                    );
                }
                None
            }
        };
        if let Some(event) = event {
            let was_started = state.started();
            if event == Event::AgentStarted && !state.agent_started() {
                tracing::info!("the agent says it has started");
            }
            log_report(&state, &event);
            state = state.transition(event, now());
            if state.started() && !was_started {
                tracing::info!("startup finished");
            }
            inbox.snapshot.send_replace(Arc::new(state.clone()));
        }
        if let Some(ack) = ack {
            let _ = ack.send(());
        }
        shared.own_heartbeat().beat();
        let now_readiness = state.readiness(now());
        if now_readiness != readiness {
            log_readiness(readiness, now_readiness);
            readiness = now_readiness;
        }
    }
}

/// Counts a finished check and turns it into the lifecycle's event.
fn apply_check(shared: &Shared, state: &Lifecycle, checked: Checked) -> Event {
    let Checked {
        signal,
        report,
        latency,
        valid_for,
        spread,
    } = checked;
    let metrics = shared.metrics();
    metrics.record_check(signal, &report.outcome, latency);
    if let Some(u) = report.usage {
        metrics.record_tokens(signal, u.prompt, u.completion);
    }
    log_check(shared, state, signal, &report.outcome);
    Event::Observed {
        signal,
        observation: Observation {
            outcome: report.outcome,
            spread,
            latency: Some(latency),
            ttl: valid_for,
        },
    }
}

/// How often a dependency that keeps failing is logged again.
const STILL_FAILING_EVERY: Duration = Duration::from_secs(600);

/// Logs a check on a change only: the first failure after a success (or the first result), the
/// first success after failures, and every [`STILL_FAILING_EVERY`] a "still failing" with the
/// latest reason. A dependency down for an hour costs a few lines, not one per check.
fn log_check(
    shared: &Shared,
    state: &Lifecycle,
    id: SignalId,
    outcome: &vitals_core::lifecycle::Outcome,
) {
    let (Some(rules), Some(s)) = (state.rules().signals.get(id), state.signal(id)) else {
        return;
    };
    let first = s.last_result_at.is_none();
    let kind = rules.source.label();
    let name = &rules.name;
    match outcome.reason() {
        Some(reason) if first || s.consecutive_failures == 0 => {
            tracing::warn!(dependency = %name, kind, critical = rules.critical, %reason, "check failed")
        }
        Some(reason) => {
            let failures = u64::from(s.consecutive_failures) + 1;
            let interval = shared
                .config()
                .dependencies
                .get(id.index())
                .map_or(STILL_FAILING_EVERY, |d| d.interval.std());
            let every = (STILL_FAILING_EVERY.as_secs() / interval.as_secs().max(1)).max(1);
            if failures.is_multiple_of(every) {
                tracing::warn!(dependency = %name, kind, critical = rules.critical, %reason, failures, "check still failing")
            }
        }
        None if first => tracing::info!(dependency = %name, kind, "first check succeeded"),
        None if s.consecutive_failures > 0 => {
            tracing::info!(dependency = %name, kind, after_failures = s.consecutive_failures, "check succeeded again")
        }
        None => {}
    }
}

/// A pushed report that changes the signal's state is logged; repeats are not.
fn log_report(state: &Lifecycle, event: &Event) {
    let Event::Observed {
        signal,
        observation,
    } = event
    else {
        return;
    };
    let Some(rules) = state.rules().signals.get(*signal) else {
        return;
    };
    if observation.latency.is_some() {
        return; // a check, logged by log_check
    }
    if rules.source != vitals_core::signal::Source::Pushed {
        return; // the gate and the supervisor log their own changes
    }
    let was_up = state.is_up(*signal, now());
    let first = state
        .signal(*signal)
        .is_none_or(|s| s.last_result_at.is_none());
    match (observation.outcome.reason(), was_up) {
        (Some(reason), true) => {
            tracing::warn!(signal = %rules.name, critical = rules.critical, %reason, "the agent reports a signal down")
        }
        (Some(reason), false) if first => {
            tracing::warn!(signal = %rules.name, critical = rules.critical, %reason, "the agent reports a signal down")
        }
        (None, false) => tracing::info!(signal = %rules.name, "the agent reports a signal up"),
        _ => {}
    }
}

fn log_readiness(from: Readiness, to: Readiness) {
    tracing::info!(from = from.as_str(), to = to.as_str(), "readiness changed");
}
