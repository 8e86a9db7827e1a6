//! One timer per client connection for all of its deadlines.
//!
//! Each request on a connection has deadlines: hyper's for the next request's headers
//! (`header_read_timeout`), the gate's for the upstream's answer (`request_timeout`) and for a
//! body still arriving. As tokio timers, those are two timer-wheel insertions and removals a
//! request, under the wheel's lock: about 3 % of the gate's throughput before a fast upstream
//! (BENCHMARKS.md).
//!
//! Here a connection's deadlines are slots of its own ([`Deadlines`]). A [`Deadline`] is a
//! future that registers nothing: it is ready once the connection's one timer has fired at or
//! after it. [`drive`] polls the connection and keeps that timer set for the earliest deadline
//! still to come, setting it again only when it fires or when an earlier deadline is added, so
//! a busy connection touches the timer wheel about once a `header_read_timeout`, not twice a
//! request. When the timer fires, the whole connection is polled again and each deadline that
//! has passed answers ready. A deadline is as precise as a tokio timer.
//!
//! [`WriteStall`] puts the writes to the client under one of these deadlines, and [`Deadlines`]
//! also carries the request to close the connection (the gate's connection cap).
//!
//! The deadline for the next request's headers is the connection's own, not hyper's: hyper's
//! (`header_read_timeout` on its builder) allocates a timer a request, reads the clock for it
//! and makes one more read of the socket after each answer (BENCHMARKS.md). Here it is one
//! field: set when an answer's body ends ([`Deadlines::answer_ended`]), ignored while a request
//! is in progress ([`Deadlines::request_began`]), and [`drive`] ends a connection that reaches it
//! idle, as hyper does: before a request's headers are complete, or after its answer, waiting
//! for the next.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::time::Instant;
use vitals_core::evictions::Evictions;

/// More than a connection ever holds at once (the next request's headers, or a request's
/// body, answer and answer body); one more falls back to a tokio timer.
const SLOTS: usize = 4;
/// A free slot; no timer set.
const NONE: u64 = u64::MAX;

/// The deadlines of one connection.
#[derive(Debug)]
pub struct Deadlines {
    /// Deadlines are kept as microseconds since this, rounded up.
    base: Instant,
    slots: [AtomicU64; SLOTS],
    /// What the connection's timer is set for (`NONE`: not set).
    armed: AtomicU64,
    /// Every deadline up to this has passed.
    passed: AtomicU64,
    /// A deadline before `armed` was added: set the timer again.
    rearm: AtomicBool,
    close: AtomicBool,
    /// The connection's task, for [`Deadlines::close`].
    waker: Mutex<Option<Waker>>,
    /// How long the next request's headers may take (`None`: no limit).
    head_limit: Option<std::time::Duration>,
    /// When the next request's headers must have arrived by (`NONE`: no limit), while no
    /// request is in progress.
    head: AtomicU64,
    /// A request is in progress: its headers arrived and its answer's body has not ended.
    busy: AtomicBool,
    /// Asked to close while idle, and counted in the accept loop's evictions until it has.
    evicted_idle: AtomicBool,
}

impl Deadlines {
    /// The deadlines of a connection with no limit on its requests' headers.
    #[cfg(test)]
    pub fn new() -> Arc<Deadlines> {
        Deadlines::build(None)
    }

    /// The deadlines of a connection just accepted: its first request's headers must arrive
    /// within `limit`, and each next request's within `limit` of the end of the answer before.
    pub fn with_head_limit(limit: std::time::Duration) -> Arc<Deadlines> {
        Deadlines::build(Some(limit))
    }

    fn build(head_limit: Option<std::time::Duration>) -> Arc<Deadlines> {
        let head = head_limit.map_or(NONE, micros_up);
        Arc::new(Deadlines {
            base: Instant::now(),
            slots: std::array::from_fn(|_| AtomicU64::new(NONE)),
            armed: AtomicU64::new(NONE),
            passed: AtomicU64::new(0),
            rearm: AtomicBool::new(false),
            close: AtomicBool::new(false),
            waker: Mutex::new(None),
            head_limit,
            head: AtomicU64::new(head),
            busy: AtomicBool::new(false),
            evicted_idle: AtomicBool::new(false),
        })
    }

    /// Asks the connection to close to make room ([`Deadlines::close`]). An idle one closes at
    /// once, and counts in `evictions` until it has (the next accept waits for it); one with a
    /// request in progress closes after it, and is not waited for.
    pub fn evict(&self, evictions: &Evictions) {
        let idle = !self.busy.load(Relaxed);
        if idle {
            evictions.evicting();
        }
        self.evicted_idle.store(idle, Relaxed);
        self.close();
    }

    /// Whether [`Deadlines::evict`] found it idle: its end is owed to the evictions.
    pub fn evicted_idle(&self) -> bool {
        self.evicted_idle.load(Relaxed)
    }

    /// A request's headers arrived: the connection is busy until its answer's body ends.
    pub fn request_began(&self) {
        self.busy.store(true, Relaxed);
    }

    /// A request's answer ended (its body was taken whole, or dropped): the next request's
    /// headers must arrive within the limit from now.
    pub fn answer_ended(&self) {
        let Some(limit) = self.head_limit else {
            return;
        };
        let at = micros_up(Instant::now().saturating_duration_since(self.base) + limit);
        self.head.store(at, Relaxed);
        self.busy.store(false, Relaxed);
        if at < self.armed.load(Relaxed) {
            self.rearm.store(true, Relaxed);
        }
    }

    /// No request is in progress and the next one's headers are late.
    fn head_late(&self) -> bool {
        !self.busy.load(Relaxed) && self.head.load(Relaxed) <= self.passed.load(Relaxed)
    }

    /// A future ready at `at`, on this connection's timer (it must be polled by the task that
    /// runs [`drive`] for it).
    pub fn until(self: &Arc<Self>, at: Instant) -> Deadline<Arc<Deadlines>> {
        match self.take_slot(at) {
            Some((slot, at)) => Deadline(Kind::Slot {
                owner: self.clone(),
                slot,
                at,
            }),
            None => Deadline::timer(at),
        }
    }

    /// [`Deadlines::until`], borrowing.
    pub fn until_ref(&self, at: Instant) -> Deadline<&Deadlines> {
        match self.take_slot(at) {
            Some((slot, at)) => Deadline(Kind::Slot {
                owner: self,
                slot,
                at,
            }),
            None => Deadline::timer(at),
        }
    }

    /// A free slot, now holding `at`; and `at` as kept.
    fn take_slot(&self, at: Instant) -> Option<(usize, u64)> {
        let micros = micros_up(at.saturating_duration_since(self.base));
        let slot = self.slots.iter().position(|s| s.load(Relaxed) == NONE)?;
        self.slots[slot].store(micros, Relaxed);
        if micros < self.armed.load(Relaxed) {
            self.rearm.store(true, Relaxed);
        }
        Some((slot, micros))
    }

    /// Asks the connection to close (see [`drive`]) and wakes its task.
    pub fn close(&self) {
        self.close.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(waker) = self
            .waker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            waker.wake_by_ref();
        }
    }

    /// The earliest deadline still to come.
    fn earliest(&self) -> Option<u64> {
        let passed = self.passed.load(Relaxed);
        let head = if self.busy.load(Relaxed) {
            NONE
        } else {
            self.head.load(Relaxed)
        };
        self.slots
            .iter()
            .map(|s| s.load(Relaxed))
            .chain(std::iter::once(head))
            .filter(|&at| at != NONE && at > passed)
            .min()
    }

    fn instant(&self, micros: u64) -> Instant {
        self.base + std::time::Duration::from_micros(micros)
    }

    fn micros(&self, at: Instant) -> u64 {
        micros_of(at.saturating_duration_since(self.base)).min(NONE - 1)
    }
}

/// Whole microseconds in `d` (no 128-bit division, as `Duration::as_micros` makes).
fn micros_of(d: std::time::Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(d.subsec_micros()))
}

/// A deadline `d` after the connection's base, as kept: microseconds rounded up (never before
/// its time), below `NONE`.
fn micros_up(d: std::time::Duration) -> u64 {
    micros_of(d)
        .saturating_add(u64::from(!d.subsec_nanos().is_multiple_of(1000)))
        .min(NONE - 1)
}

/// A future ready at a deadline; see [`Deadlines::until`]. `O` holds the [`Deadlines`].
#[derive(Debug)]
pub struct Deadline<O: Deref<Target = Deadlines>>(Kind<O>);

#[derive(Debug)]
enum Kind<O> {
    Slot {
        owner: O,
        slot: usize,
        at: u64,
    },
    /// Every slot was taken.
    Timer(Pin<Box<tokio::time::Sleep>>),
}

impl<O: Deref<Target = Deadlines>> Deadline<O> {
    /// A deadline on a tokio timer of its own, for a future not run by [`drive`].
    pub fn timer(at: Instant) -> Deadline<O> {
        Deadline(Kind::Timer(Box::pin(tokio::time::sleep_until(at))))
    }
}

impl<O: Deref<Target = Deadlines> + Unpin> Future for Deadline<O> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.0 {
            Kind::Slot { owner, at, .. } => {
                if owner.passed.load(Relaxed) >= *at {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }
            Kind::Timer(sleep) => sleep.as_mut().poll(cx),
        }
    }
}

impl<O: Deref<Target = Deadlines>> Drop for Deadline<O> {
    fn drop(&mut self) {
        if let Kind::Slot { owner, slot, .. } = &self.0 {
            owner.slots[*slot].store(NONE, Relaxed);
        }
    }
}

/// A wait that may not last longer than `limit` without progress: a deadline set at the first
/// wait after progress (on the connection's timer, or a tokio timer without one), cleared by
/// progress.
#[derive(Debug)]
pub struct Stall {
    timers: Option<Arc<Deadlines>>,
    limit: std::time::Duration,
    until: Option<Deadline<Arc<Deadlines>>>,
}

impl Stall {
    pub fn new(timers: Option<Arc<Deadlines>>, limit: std::time::Duration) -> Stall {
        Stall {
            timers,
            limit,
            until: None,
        }
    }

    pub fn limit(&self) -> std::time::Duration {
        self.limit
    }

    /// Progress: the next wait has `limit` again.
    pub fn progressed(&mut self) {
        self.until = None;
    }

    /// A wait: ready once the waiting since the last progress has lasted `limit`.
    pub fn waiting(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let (timers, limit) = (&self.timers, self.limit);
        let deadline = self.until.get_or_insert_with(|| {
            let at = Instant::now() + limit;
            match timers {
                Some(timers) => timers.until(at),
                None => Deadline::timer(at),
            }
        });
        Pin::new(deadline).poll(cx)
    }
}

/// A client connection whose writes may not stall longer than `limit`: a client that stops
/// reading (a streamed answer, or the answers to requests it pipelines) is cut instead of
/// holding its connection, and a streamed answer's slot, for ever. The deadline is one of the
/// connection's, set only while a write waits.
#[derive(Debug)]
pub struct WriteStall<T> {
    inner: T,
    stall: Stall,
}

impl<T> WriteStall<T> {
    pub fn new(inner: T, deadlines: Arc<Deadlines>, limit: std::time::Duration) -> WriteStall<T> {
        WriteStall {
            inner,
            stall: Stall::new(Some(deadlines), limit),
        }
    }

    /// `polled`, a write's result: progress clears the deadline; a wait fails once it passes.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>> {
        if polled.is_pending() {
            return self.stall.waiting(cx).map(|()| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client stopped reading its answer",
                ))
            });
        }
        self.stall.progressed();
        polled
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteStall<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteStall<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Runs `conn` with the connection timer of `deadlines`; once [`Deadlines::close`] is called,
/// `close` is called on it once (and it is polled on to its end). `None` where the connection
/// was idle past its deadline for the next request's headers: it is dropped, which closes it.
pub async fn drive<C: Future>(
    deadlines: &Deadlines,
    conn: C,
    close: impl FnOnce(Pin<&mut C>),
) -> Option<C::Output> {
    let mut conn = std::pin::pin!(conn);
    let mut close = Some(close);
    let mut timer = std::pin::pin!(tokio::time::sleep_until(deadlines.base));
    let mut armed = false;
    // Whether the timer has had this task's waker since it was set: it is polled then, and
    // otherwise only asked whether it has fired (no waker to register, no budget to take).
    let mut told = false;
    // Deadlines added before (none, on a new connection) are looked at on the first poll.
    deadlines.armed.store(NONE, Relaxed);
    deadlines.rearm.store(true, Relaxed);
    let mut task: Option<Waker> = None;
    std::future::poll_fn(|cx| loop {
        if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            task = Some(cx.waker().clone());
            *deadlines.waker.lock().unwrap_or_else(|p| p.into_inner()) = task.clone();
            told = false;
        }
        if close.is_some() && deadlines.close.load(std::sync::atomic::Ordering::SeqCst) {
            if let Some(close) = close.take() {
                close(conn.as_mut());
            }
        }
        if let Poll::Ready(out) = conn.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if deadlines.head_late() {
            return Poll::Ready(None);
        }
        if deadlines.rearm.load(Relaxed) {
            deadlines.rearm.store(false, Relaxed);
            match deadlines.earliest() {
                Some(at) => {
                    deadlines.armed.store(at, Relaxed);
                    timer.as_mut().reset(deadlines.instant(at));
                    armed = true;
                    told = false;
                }
                None => {
                    deadlines.armed.store(NONE, Relaxed);
                    armed = false;
                }
            }
        }
        let fired = armed
            && if told {
                timer.is_elapsed()
            } else {
                told = true;
                timer.as_mut().poll(cx).is_ready()
            };
        if fired {
            // Every deadline up to now has passed: poll the connection again, then set the
            // timer for the next.
            deadlines
                .passed
                .store(deadlines.micros(Instant::now()), Relaxed);
            deadlines.armed.store(NONE, Relaxed);
            deadlines.rearm.store(true, Relaxed);
            armed = false;
            continue;
        }
        return Poll::Pending;
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Polls `fut` inside [`drive`] on `deadlines` until it ends; its output and when.
    async fn run<F: Future>(deadlines: &Arc<Deadlines>, fut: F) -> (F::Output, Instant) {
        let out = drive(deadlines, fut, |_| {})
            .await
            .expect("no limit on headers");
        (out, Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_is_ready_at_its_time_and_not_before() {
        let d = Deadlines::new();
        let start = Instant::now();
        let at = start + Duration::from_millis(250);
        let ((), ended) = run(&d, d.until(at)).await;
        assert_eq!(ended, at);
    }

    /// The timer is set for a later deadline; an earlier one added after it sets it again.
    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_added_later_is_kept() {
        let d = Deadlines::new();
        let start = Instant::now();
        let late = d.until(start + Duration::from_secs(5));
        let d2 = d.clone();
        let (which, ended) = run(&d, async move {
            tokio::select! {
                biased;
                () = late => "late",
                () = async {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    d2.until(start + Duration::from_millis(300)).await;
                } => "early",
            }
        })
        .await;
        assert_eq!(which, "early");
        assert_eq!(ended, start + Duration::from_millis(300));
    }

    /// Deadlines dropped before their time (requests that ended) never fire, and free their
    /// slots: far more deadlines than slots come and go on one connection.
    #[tokio::test(start_paused = true)]
    async fn dropped_deadlines_free_their_slots() {
        let d = Deadlines::new();
        let start = Instant::now();
        let d2 = d.clone();
        let (fired, _) = run(&d, async move {
            let mut fired = 0;
            for i in 0..100u64 {
                let deadline = d2.until(Instant::now() + Duration::from_millis(50));
                tokio::select! {
                    () = deadline => fired += 1,
                    () = tokio::time::sleep(Duration::from_millis(10 + i % 2)) => {}
                }
            }
            fired
        })
        .await;
        assert_eq!(fired, 0);
        assert!(Instant::now() >= start + Duration::from_millis(1000));
        assert!(d.slots.iter().all(|s| s.load(Relaxed) == NONE));
        // The last one's timer may still be set; it is nobody's.
        let at = Instant::now() + Duration::from_millis(20);
        let ((), ended) = run(&d, d.until(at)).await;
        assert_eq!(ended, at);
    }

    /// With every slot taken, a deadline is a tokio timer of its own, as exact.
    #[tokio::test(start_paused = true)]
    async fn past_the_slots_a_deadline_is_a_timer_of_its_own() {
        let d = Deadlines::new();
        let start = Instant::now();
        let held: Vec<Deadline<_>> = (0..SLOTS)
            .map(|_| d.until(start + Duration::from_secs(60)))
            .collect();
        let extra = d.until(start + Duration::from_millis(70));
        assert!(matches!(extra.0, Kind::Timer(_)));
        let ((), ended) = run(&d, extra).await;
        assert_eq!(ended, start + Duration::from_millis(70));
        drop(held);
    }

    /// An idle connection evicted closes at once, so the next accept waits for it; one with a
    /// request in progress closes after it, and is not waited for.
    #[test]
    fn only_an_idle_connection_evicted_is_waited_for() {
        let e = Evictions::default();
        let idle = Deadlines::new();
        idle.evict(&e);
        assert!(idle.evicted_idle() && idle.close.load(Relaxed));
        assert_eq!(e.pending(), 1);
        let busy = Deadlines::new();
        busy.request_began();
        busy.evict(&e);
        assert!(!busy.evicted_idle() && busy.close.load(Relaxed));
        assert_eq!(e.pending(), 1);
    }

    /// `close` wakes the connection's task and calls its close function once.
    #[tokio::test(start_paused = true)]
    async fn close_wakes_the_connection_and_closes_it_once() {
        let d = Deadlines::new();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = {
            let (d, calls) = (d.clone(), calls.clone());
            tokio::spawn(async move {
                drive(&d, rx, move |_| {
                    calls.fetch_add(1, Relaxed);
                    // The connection ends once asked to.
                    drop(tx);
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        d.close();
        d.close();
        assert!(task.await.unwrap().unwrap().is_err(), "ended by its close");
        assert_eq!(calls.load(Relaxed), 1);
    }
}
