//! The check loop of a shared dependency (see [`crate::fleet`]).
//!
//! Each slot an instance either performs (it got the lease), or reads the performer's result.
//! Every check an instance makes itself is also published in the fleet's *view* of the
//! dependency, so a failure can be placed:
//! - a reader of a failed result that has no fresh result of its own tries to be one of
//!   [`crate::fleet::CONFIRMERS`] instances that check for themselves; the others wait for their
//!   views. Someone sees it up: the failure is the performer's own, and the reader is fine.
//!   Everyone who checked sees it down: the outage is fleet-wide.
//! - an instance whose own last check failed while the fleet's result says up checks for itself
//!   each interval (its view only), so its broken path stays visible until it heals.
//!
//! With `max_probes_per_hour`, both kinds of extra call spend from the fleet's hourly budget
//! in Redis and are skipped when it has no room left beyond the performer's slots.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vitals_core::lifecycle::Spread;

use super::{check_once, Checked, Job, Probe};
use crate::checks::Report;
use crate::fleet::{
    report_of, spread_of_own, until_next_slot, verdict_of_read, Fleet, Published, Role,
};

/// How long after the lease a reader waits for the performer's result, beyond the check's own
/// timeout.
const READ_MARGIN: Duration = Duration::from_millis(300);

struct Loop<'a, P> {
    job: &'a Job<P>,
    fleet: &'a Fleet,
    results: &'a mpsc::Sender<Checked>,
    cancel: &'a CancellationToken,
    /// Whether this instance's own last check succeeded.
    own_ok: Option<bool>,
    /// The published time of the last shared result taken: read again, it says nothing new.
    last_at: u64,
}

pub(crate) async fn shared_loop<P: Probe>(
    job: Job<P>,
    fleet: Fleet,
    results: mpsc::Sender<Checked>,
    cancel: CancellationToken,
) {
    let mut l = Loop {
        job: &job,
        fleet: &fleet,
        results: &results,
        cancel: &cancel,
        own_ok: None,
        last_at: 0,
    };
    let interval = job.schedule.interval;
    // The lease ends before the next slot, so the next slot's first asker gets it.
    let hold = interval.mul_f64(0.9);
    // At start: a fresh result of the fleet's, if there is one, before the first slot.
    if let Ok(Some(p)) = fleet.read(&job.name).await {
        if p.ok && !l.take(&p, Spread::Unknown).await {
            return;
        }
    }
    let mut first = true;
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
                l.spend(false).await;
                l.perform(true).await
            }
            Ok(false) => l.read(hold).await,
            Err(_) => l.fallback().await,
        };
        if !sent {
            return;
        }
    }
}

impl<P: Probe> Loop<'_, P> {
    fn stale_after(&self) -> Duration {
        self.job.stale_after
    }

    /// Whether the fleet's budget (`max_probes_per_hour`) lets this instance make a call:
    /// always for the performer's (counted), for an extra one only while the hour has room.
    /// Without a budget, or without an answer from Redis, nothing stops it.
    async fn spend(&self, extra: bool) -> bool {
        let Some(budget) = self.job.budget else {
            return true;
        };
        self.fleet
            .spend(&self.job.name, budget, self.job.schedule.interval, extra)
            .await
            .unwrap_or(true)
    }

    /// Checks, publishes this instance's view (and, with `publish`, the result the fleet reads),
    /// and reports it. Without `publish` it checks for itself without taking the fleet's place:
    /// an instance whose own last check failed while the fleet's result says up keeps checking
    /// for itself each interval, so its broken path stays visible (at one call an interval per
    /// such instance).
    async fn perform(&mut self, publish: bool) -> bool {
        let Some((report, latency)) = check_once(self.job, self.cancel).await else {
            return false;
        };
        let published = self.fleet.published(&report, latency);
        let ok = published.ok;
        if publish {
            self.fleet
                .publish(&self.job.name, &published, self.stale_after())
                .await;
            self.last_at = published.at_ms;
        }
        self.fleet
            .publish_view(&self.job.name, published.at_ms, ok, self.stale_after() * 4)
            .await;
        self.fleet
            .count(&self.job.name, Role::Performed, Some(published.at_ms));
        self.own_ok = Some(ok);
        let spread = if ok {
            Spread::Unknown
        } else {
            match self.fleet.views(&self.job.name, self.stale_after()).await {
                Ok(views) => spread_of_own(self.fleet.instance(), &views),
                Err(_) => Spread::Unknown,
            }
        };
        self.send(report, latency, None, spread).await
    }

    /// Redis is unreachable: this instance checks for itself, on its own slot.
    async fn fallback(&mut self) -> bool {
        let Some((report, latency)) = check_once(self.job, self.cancel).await else {
            return false;
        };
        self.fleet.count(&self.job.name, Role::Fallback, None);
        self.send(report, latency, None, Spread::Unknown).await
    }

    /// Not the lease holder: waits for the performer's result and uses it, or checks for itself
    /// when its own last check failed, or when the result failed and it is one of the
    /// confirmers; the others place a failure by the fleet's views.
    async fn read(&mut self, hold: Duration) -> bool {
        let interval = self.job.schedule.interval;
        let wait = (self.job.schedule.timeout + READ_MARGIN).min(interval / 2);
        tokio::select! {
            () = self.cancel.cancelled() => return false,
            () = tokio::time::sleep(wait) => {}
        }
        let p = match self.fleet.read(&self.job.name).await {
            Err(_) => return self.fallback().await,
            // No result yet (the performer is slow, or died): the lease moves on next slot.
            Ok(None) => return true,
            Ok(Some(p)) if p.at_ms == self.last_at => return true,
            Ok(Some(p)) => p,
        };
        if report_of(&p, self.stale_after()).is_none() {
            // Stale: nothing new; the last result expires as a local one would.
            return true;
        }
        let own_failed = self.own_ok == Some(false);
        if p.ok {
            // Re-checking its own path is an extra call: with no room in the fleet's budget, the
            // fleet's result stands in until this instance next holds the lease.
            if own_failed && self.spend(true).await {
                self.last_at = p.at_ms;
                return self.perform(false).await;
            }
            return self.take(&p, Spread::Unknown).await;
        }
        // A failure: is it the fleet's, or the performer's path?
        match self.fleet.confirm(&self.job.name, p.at_ms, hold).await {
            Ok(true) if self.spend(true).await => {
                self.last_at = p.at_ms;
                return self.perform(true).await;
            }
            Ok(_) => {}
            Err(_) => return self.fallback().await,
        }
        tokio::select! {
            () = self.cancel.cancelled() => return false,
            () = tokio::time::sleep(wait) => {}
        }
        match self.fleet.views(&self.job.name, self.stale_after()).await {
            // Someone saw it up lately: the failure is the performer's own.
            Ok(views) => match verdict_of_read(&views) {
                Ok(up_at) => {
                    let up = Published {
                        at_ms: up_at,
                        ok: true,
                        reason: None,
                        ..p.clone()
                    };
                    self.take(&up, Spread::Unknown).await
                }
                Err(spread) => self.take(&p, spread).await,
            },
            Err(_) => self.take(&p, Spread::Unknown).await,
        }
    }

    /// Reports a published result as this instance's, valid for what is left of it.
    async fn take(&mut self, p: &Published, spread: Spread) -> bool {
        let Some((report, latency, left)) = report_of(p, self.stale_after()) else {
            return true;
        };
        self.last_at = p.at_ms;
        self.fleet.count(&self.job.name, Role::Read, Some(p.at_ms));
        let spread = if report.outcome.is_success() {
            Spread::Unknown
        } else {
            spread
        };
        self.send(report, latency, Some(left), spread).await
    }

    async fn send(
        &self,
        report: Report,
        latency: Duration,
        valid_for: Option<Duration>,
        spread: Spread,
    ) -> bool {
        self.fleet.note_outage(
            &self.job.name,
            crate::fleet::Outage::of(report.outcome.is_success(), spread),
        );
        tokio::select! {
            () = self.cancel.cancelled() => false,
            sent = self.results.send(Checked { signal: self.job.signal, report, latency, valid_for, spread }) => sent.is_ok(),
        }
    }
}
