//! The check loop of a shared dependency (see [`crate::fleet`]).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vitals_core::lifecycle::Outcome;

use super::{Checked, Job, Probe};
use crate::checks::Report;
use crate::fleet::{report_of, until_next_slot, Fleet, Role};

/// How long after the lease a reader waits for the performer's result, beyond the check's own
/// timeout.
const READ_MARGIN: Duration = Duration::from_millis(300);

pub(crate) async fn shared_loop<P: Probe>(
    job: Job<P>,
    fleet: Fleet,
    results: mpsc::Sender<Checked>,
    cancel: CancellationToken,
) {
    let interval = job.schedule.interval;
    // The lease ends before the next slot, so the next slot's first asker gets it.
    let hold = interval.mul_f64(0.9);
    // At start: a fresh result of the fleet's, if there is one, before the first slot.
    if let Ok(Some(p)) = fleet.read(&job.name).await {
        if let Some((report, latency, left)) = report_of(&p, job.stale_after) {
            fleet.count(&job.name, Role::Read, Some(p.at_ms));
            if !send(&results, &job, report, latency, Some(left), &cancel).await {
                return;
            }
        }
    }
    let mut first = true;
    // The published time of the last result taken: the same result read again says nothing new.
    let mut last_at = 0;
    loop {
        if !first {
            // A little spread, so a fleet does not hit Redis in one millisecond.
            let wait = until_next_slot(interval) + Duration::from_millis(fastrand::u64(0..20));
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
        first = false;
        let lease = tokio::select! {
            () = cancel.cancelled() => return,
            l = fleet.lease(&job.name, hold) => l,
        };
        let sent = match lease {
            Ok(true) => {
                let (report, latency) = check(&job, &cancel).await;
                let published = fleet.published(&report, latency);
                fleet.publish(&job.name, &published, job.stale_after).await;
                fleet.count(&job.name, Role::Performed, Some(published.at_ms));
                last_at = published.at_ms;
                send(&results, &job, report, latency, None, &cancel).await
            }
            Ok(false) => {
                let wait = (job.schedule.timeout + READ_MARGIN).min(interval / 2);
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                match fleet.read(&job.name).await {
                    Ok(Some(p)) if p.at_ms == last_at => true,
                    Ok(Some(p)) => match report_of(&p, job.stale_after) {
                        Some((report, latency, left)) => {
                            last_at = p.at_ms;
                            fleet.count(&job.name, Role::Read, Some(p.at_ms));
                            send(&results, &job, report, latency, Some(left), &cancel).await
                        }
                        // Stale: nothing new to say; the last result expires as a local one would.
                        None => true,
                    },
                    // No result yet (the performer is slow, or died): the lease moves on next slot.
                    Ok(None) => true,
                    Err(_) => fallback(&job, &fleet, &results, &cancel).await,
                }
            }
            Err(_) => fallback(&job, &fleet, &results, &cancel).await,
        };
        if !sent {
            return;
        }
    }
}

/// Redis is unreachable: this instance checks for itself, on its own slot.
async fn fallback<P: Probe>(
    job: &Job<P>,
    fleet: &Fleet,
    results: &mpsc::Sender<Checked>,
    cancel: &CancellationToken,
) -> bool {
    let (report, latency) = check(job, cancel).await;
    fleet.count(&job.name, Role::Fallback, None);
    send(results, job, report, latency, None, cancel).await
}

async fn check<P: Probe>(job: &Job<P>, cancel: &CancellationToken) -> (Report, Duration) {
    let started = tokio::time::Instant::now();
    let timeout = job.schedule.timeout;
    let report = tokio::select! {
        () = cancel.cancelled() => Report::from(Outcome::TimedOut { after: timeout }),
        r = tokio::time::timeout(timeout, job.probe.check()) => match r {
            Ok(report) => report,
            Err(_) => Report::from(Outcome::TimedOut { after: timeout }),
        },
    };
    (report, started.elapsed())
}

async fn send<P>(
    results: &mpsc::Sender<Checked>,
    job: &Job<P>,
    report: Report,
    latency: Duration,
    valid_for: Option<Duration>,
    cancel: &CancellationToken,
) -> bool {
    tokio::select! {
        () = cancel.cancelled() => false,
        sent = results.send(Checked { signal: job.signal, report, latency, valid_for }) => sent.is_ok(),
    }
}
