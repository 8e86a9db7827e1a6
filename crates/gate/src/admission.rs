//! Admission: at most `max_concurrent` requests reach the upstream; up to `queue_depth` more
//! wait, each for at most `queue_timeout`; the rest are shed at once.
//!
//! tower's `ConcurrencyLimit` waits without bound and `LoadShed` sheds without a queue; this is
//! the composition the gate needs, in one place: a semaphore for the slots and a counter of
//! waiters that bounds the queue. A shed says when to come back (`Retry-After`), estimated from
//! the queue ahead and the recent service time.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// Every slot busy and the queue full: shed on arrival.
    QueueFull { retry_after: Duration },
    /// Waited `queue_timeout` in the queue without a slot.
    QueueTimeout { retry_after: Duration },
}

impl Shed {
    pub fn retry_after(self) -> Duration {
        match self {
            Shed::QueueFull { retry_after } | Shed::QueueTimeout { retry_after } => retry_after,
        }
    }
}

/// The limits, and what admission has seen.
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    max_concurrent: AtomicUsize,
    queue_depth: usize,
    queue_timeout: Duration,
    waiting: AtomicUsize,
    /// Slots owed after the limit went down while they were held.
    debt: Arc<AtomicUsize>,
    /// Mean time a request holds its slot (an exponentially weighted average, in µs; 0 before
    /// the first request ends).
    service_micros: Arc<AtomicU64>,
}

/// A slot at the upstream, held until dropped (a streamed answer holds it to its end).
#[derive(Debug)]
pub struct Slot {
    /// When the slot ended, if its holder knew ([`Slot::release_at`]); else its drop reads the
    /// clock.
    ended: Option<Instant>,
    permit: Option<OwnedSemaphorePermit>,
    /// Slots the limit owes after a decrease: a slot that ends while some are owed is not
    /// given back.
    debt: Arc<AtomicUsize>,
    since: Instant,
    service_micros: Arc<AtomicU64>,
    /// How long the request waited in the queue.
    pub waited: Duration,
}

impl Slot {
    /// Gives the slot back, `now` being the time its request ended (one clock read less than a
    /// drop, on every request).
    pub fn release_at(mut self, now: Instant) {
        self.ended = Some(now);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let owed = self
            .debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
            .is_ok();
        if owed {
            if let Some(p) = self.permit.take() {
                p.forget();
            }
        }
        let ended = self.ended.unwrap_or_else(Instant::now);
        let took = u64::try_from(ended.saturating_duration_since(self.since).as_micros())
            .unwrap_or(u64::MAX);
        // An EWMA with weight 1/8: recent enough to follow a slowing model, smooth enough that
        // one long answer does not swing Retry-After.
        let _ = self
            .service_micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 {
                    took.max(1)
                } else {
                    old - old / 8 + took / 8
                })
            });
    }
}

/// The bounds of a `Retry-After`: a client told 0 retries at once, and one told minutes has given
/// up on an answer the queue would have had in seconds.
const RETRY_AFTER_MIN: Duration = Duration::from_secs(1);
const RETRY_AFTER_MAX: Duration = Duration::from_secs(30);

impl Admission {
    /// `max_concurrent` ≥ 1 (validated by the configuration).
    pub fn new(max_concurrent: usize, queue_depth: usize, queue_timeout: Duration) -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent: AtomicUsize::new(max_concurrent),
            queue_depth,
            queue_timeout,
            waiting: AtomicUsize::new(0),
            debt: Arc::new(AtomicUsize::new(0)),
            service_micros: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Requests holding a slot.
    pub fn in_flight(&self) -> usize {
        (self.max_concurrent() + self.debt.load(Ordering::Acquire))
            .saturating_sub(self.slots.available_permits())
    }

    /// Requests waiting for a slot.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent.load(Ordering::Acquire)
    }

    /// Raises the limit to `limit` (a no-op when it is not higher): `"auto"` starts at 1 and
    /// learns the upstream's slot count at start.
    pub fn raise_limit(&self, limit: usize) {
        if limit > self.max_concurrent() {
            self.set_limit(limit);
        }
    }

    /// Sets the limit (at least 1). Lowering it takes free slots away at once and the rest as
    /// the requests holding them end; nothing in flight is cut short.
    pub fn set_limit(&self, limit: usize) {
        let limit = limit.max(1);
        let old = self.max_concurrent.swap(limit, Ordering::AcqRel);
        if limit > old {
            // Pay back what is owed first: those slots are still held.
            let mut add = limit - old;
            let _ = self
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                    let paid = d.min(add);
                    add -= paid;
                    Some(d - paid)
                });
            self.slots.add_permits(add);
        } else if limit < old {
            let want = old - limit;
            let taken = self.slots.forget_permits(want);
            self.debt.fetch_add(want - taken, Ordering::AcqRel);
        }
    }

    /// The mean time a request holds its slot, once one has ended.
    pub fn service_time(&self) -> Option<Duration> {
        match self.service_micros.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// When a shed request should come back: the work ahead of it (the queue, plus itself)
    /// shared by the slots, at the recent service time; 1–30 s.
    pub fn retry_after(&self) -> Duration {
        let Some(service) = self.service_time() else {
            return RETRY_AFTER_MIN;
        };
        let ahead = u32::try_from(self.queued() + 1).unwrap_or(u32::MAX);
        let slots = u32::try_from(self.max_concurrent().max(1)).unwrap_or(u32::MAX);
        (service.saturating_mul(ahead) / slots).clamp(RETRY_AFTER_MIN, RETRY_AFTER_MAX)
    }

    /// A slot now, a place in the queue and then a slot, or a shed.
    pub async fn admit(&self) -> Result<Slot, Shed> {
        self.admit_at(Instant::now()).await
    }

    /// [`Admission::admit`] for a request that arrived at `arrived`: a slot free at once reads
    /// no clock.
    pub async fn admit_at(&self, arrived: Instant) -> Result<Slot, Shed> {
        let slot = |permit, since: Instant| Slot {
            ended: None,
            permit: Some(permit),
            debt: self.debt.clone(),
            since,
            service_micros: self.service_micros.clone(),
            waited: since.saturating_duration_since(arrived),
        };
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(slot(permit, arrived));
        }
        // Take a place in the queue, if one is free.
        let joined = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w < self.queue_depth).then_some(w + 1)
            });
        if joined.is_err() {
            return Err(Shed::QueueFull {
                retry_after: self.retry_after(),
            });
        }
        let leave = Leave(&self.waiting);
        let result =
            tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned()).await;
        drop(leave);
        match result {
            Ok(Ok(permit)) => Ok(slot(permit, Instant::now())),
            // The semaphore is never closed; treat it as a timeout all the same.
            Ok(Err(_)) | Err(_) => Err(Shed::QueueTimeout {
                retry_after: self.retry_after(),
            }),
        }
    }
}

/// Leaves the queue however the wait ends: a slot, a timeout, or the client going away (the
/// request's future dropped mid-wait).
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slots_then_queue_then_shed() {
        let a = Arc::new(Admission::new(2, 2, Duration::from_secs(10)));
        let s1 = a.admit().await.unwrap();
        let s2 = a.admit().await.unwrap();
        assert_eq!(a.in_flight(), 2);
        // Two wait in the queue; the fifth is shed at once.
        let q1 = tokio::spawn({
            let a = a.clone();
            async move { a.admit().await }
        });
        let q2 = tokio::spawn({
            let a = a.clone();
            async move { a.admit().await }
        });
        tokio::task::yield_now().await;
        assert_eq!(a.queued(), 2);
        assert!(matches!(a.admit().await, Err(Shed::QueueFull { .. })));
        // A slot frees: the first waiter gets it, having waited as long as the slot was held.
        tokio::time::advance(Duration::from_secs(3)).await;
        drop(s1);
        let got = q1.await.unwrap().unwrap();
        assert_eq!(got.waited, Duration::from_secs(3));
        assert_eq!(a.queued(), 1);
        drop(s2);
        assert!(q2.await.unwrap().is_ok());
        assert_eq!(a.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_is_shed_after_the_queue_timeout_and_leaves_the_queue() {
        let a = Arc::new(Admission::new(1, 4, Duration::from_millis(500)));
        let _held = a.admit().await.unwrap();
        let start = Instant::now();
        let shed = a.admit().await.unwrap_err();
        assert!(matches!(shed, Shed::QueueTimeout { .. }));
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        assert_eq!(a.queued(), 0, "a timed-out waiter leaves the queue");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_goes_away_while_waiting_frees_its_place() {
        let a = Arc::new(Admission::new(1, 1, Duration::from_secs(60)));
        let _held = a.admit().await.unwrap();
        let waiter = tokio::spawn({
            let a = a.clone();
            async move { a.admit().await }
        });
        tokio::task::yield_now().await;
        assert_eq!(a.queued(), 1);
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(a.queued(), 0);
        // Its place is free again: the next one waits instead of being shed.
        let next = tokio::spawn({
            let a = a.clone();
            async move { a.admit().await }
        });
        tokio::task::yield_now().await;
        assert_eq!(a.queued(), 1);
        next.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_follows_the_queue_and_the_service_time() {
        let a = Arc::new(Admission::new(2, 10, Duration::from_secs(60)));
        assert_eq!(a.retry_after(), RETRY_AFTER_MIN, "nothing measured yet");
        for _ in 0..2 {
            let s = a.admit().await.unwrap();
            tokio::time::advance(Duration::from_secs(4)).await;
            drop(s);
        }
        assert_eq!(a.service_time(), Some(Duration::from_secs(4)));
        // Alone: 4 s of work shared by 2 slots.
        assert_eq!(a.retry_after(), Duration::from_secs(2));
        // Behind 5 waiters: 6 × 4 s / 2 slots = 12 s.
        let _s1 = a.admit().await.unwrap();
        let _s2 = a.admit().await.unwrap();
        let mut waiters = Vec::new();
        for _ in 0..5 {
            let a = a.clone();
            waiters.push(tokio::spawn(async move { a.admit().await }));
        }
        tokio::task::yield_now().await;
        assert_eq!(a.queued(), 5);
        assert_eq!(a.retry_after(), Duration::from_secs(12));
        for w in waiters {
            w.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lowering_the_limit_takes_free_slots_at_once_and_held_ones_as_they_end() {
        let a = Admission::new(4, 0, Duration::from_secs(1));
        let s1 = a.admit().await.unwrap();
        let s2 = a.admit().await.unwrap();
        let s3 = a.admit().await.unwrap();
        a.set_limit(1);
        assert_eq!(a.max_concurrent(), 1);
        assert_eq!(a.in_flight(), 3, "nothing in flight is cut short");
        assert!(a.admit().await.is_err(), "no slot while over the new limit");
        drop(s1);
        drop(s2);
        assert!(a.admit().await.is_err(), "still one held: the limit is 1");
        drop(s3);
        let s = a.admit().await.unwrap();
        assert_eq!(a.in_flight(), 1);
        assert!(a.admit().await.is_err());
        // Raising it again gives slots back.
        a.set_limit(3);
        let _b = a.admit().await.unwrap();
        let _c = a.admit().await.unwrap();
        assert!(a.admit().await.is_err());
        drop(s);
        assert_eq!(a.in_flight(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn raising_while_slots_are_owed_pays_the_debt_first() {
        let a = Admission::new(4, 0, Duration::from_secs(1));
        let held: Vec<_> = [(); 4]
            .iter()
            .map(|_| a.slots.clone().try_acquire_owned().unwrap())
            .collect();
        let slots: Vec<Slot> = held
            .into_iter()
            .map(|p| Slot {
                ended: None,
                permit: Some(p),
                debt: a.debt.clone(),
                since: Instant::now(),
                service_micros: a.service_micros.clone(),
                waited: Duration::ZERO,
            })
            .collect();
        a.set_limit(1);
        a.set_limit(2);
        drop(slots);
        assert_eq!(a.in_flight(), 0);
        let _x = a.admit().await.unwrap();
        let _y = a.admit().await.unwrap();
        assert!(a.admit().await.is_err(), "exactly 2 slots");
    }

    #[test]
    fn retry_after_is_bounded() {
        let a = Admission::new(1, 1000, Duration::from_secs(1));
        a.service_micros.store(600_000_000, Ordering::Relaxed);
        assert_eq!(a.retry_after(), RETRY_AFTER_MAX);
        a.service_micros.store(1_000, Ordering::Relaxed);
        assert_eq!(a.retry_after(), RETRY_AFTER_MIN);
    }
}
