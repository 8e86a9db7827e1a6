//! The socket side: HTTP/1.1 with a header-read timeout, a write-stall deadline and a bounded
//! header buffer; a connection cap that keeps room for probes; graceful shutdown on request.
//!
//! Anyone who reaches the port can open connections, and a prober that cannot connect fails its
//! probe: a kubelet restarts the pod. So when every slot is taken, a new connection does not
//! wait and is not dropped: it takes the slot of the oldest connection with no request in
//! progress (an idle client, a slowloris still sending its head, a slow reader whose answer is
//! written and waits to be read). A prober's connection, fresh and sending its request at once,
//! is the newest and the last to go; an attacker must churn every older slot within the few
//! milliseconds between its connect and its request to reach it. Connections in the middle of a
//! request are never cut for room; when all of them are, the new one is closed.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use vitals_core::evictions::Evictions;

use crate::{Resp, Routes};

/// Largest request head accepted; a probe needs a few hundred bytes.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The open connections, oldest first.
#[derive(Debug, Default)]
struct Slots {
    next: u64,
    open: BTreeMap<u64, Slot>,
}

#[derive(Debug)]
struct Slot {
    /// A request is being handled on it.
    busy: Arc<AtomicBool>,
    /// Cancelled to take its slot.
    evict: CancellationToken,
}

impl Slots {
    /// A slot for a new connection: free, or taken from the oldest connection with no request
    /// in progress. `None` when every connection is busy.
    fn take(
        &mut self,
        max: usize,
        evictions: &Evictions,
    ) -> Option<(u64, Arc<AtomicBool>, CancellationToken, bool)> {
        let mut evicted = false;
        if self.open.len() >= max {
            let victim = self
                .open
                .iter()
                .find(|(_, s)| !s.busy.load(Ordering::Acquire))
                .map(|(id, _)| *id)?;
            if let Some(s) = self.open.remove(&victim) {
                evictions.evicting();
                s.evict.cancel();
                evicted = true;
            }
        }
        let id = self.next;
        self.next += 1;
        let busy = Arc::new(AtomicBool::new(false));
        let evict = CancellationToken::new();
        self.open.insert(
            id,
            Slot {
                busy: busy.clone(),
                evict: evict.clone(),
            },
        );
        Some((id, busy, evict, evicted))
    }

    /// Connection `id` is closed (its socket dropped): its slot is freed. A slot already gone
    /// was taken by [`Slots::take`], whose eviction counts in `evictions` until this close. The
    /// slot table, not the eviction token, says so: a connection that ends on its own just as
    /// it is evicted sees no cancelled token, and its eviction would be counted for ever.
    fn closed(&mut self, id: u64, evictions: &Evictions) {
        if self.open.remove(&id).is_none() {
            evictions.closed();
        }
    }
}

/// Serves `routes` on `listener` until `shutdown` fires, then stops accepting, asks every open
/// connection to finish its request and close, and returns when they have. The caller bounds
/// that wait with `drain.grace`.
pub async fn serve(listener: TcpListener, routes: Routes, shutdown: CancellationToken) {
    let config = routes.shared().config().clone();
    let max = config.server.max_connections as usize;
    let slots = Arc::new(Mutex::new(Slots::default()));
    let header_read_timeout: Duration = config.server.header_read_timeout.std();
    let graceful = GracefulShutdown::new();
    let connections = TaskTracker::new();
    let (mut evicted, mut refused, mut failed): (u64, u64, u64) = (0, 0, 0);
    let evictions = Arc::new(Evictions::default());

    loop {
        // The connections evicted for the last ones accepted are closed first: their sockets
        // count against the open-file limit the gate's listener shares.
        evictions.settle().await;
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off a little instead of spinning, and log the
                    // 1st, 2nd, 4th… failure, not 20 a second.
                    failed += 1;
                    if failed.is_power_of_two() {
                        tracing::warn!(error = %e, failed, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let taken = slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(max, &evictions);
        let Some((id, busy, evict, did_evict)) = taken else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(%peer, refused, max_connections = max, "every connection is in the middle of a request; closing a new one");
            }
            continue;
        };
        if did_evict {
            evicted += 1;
            if evicted.is_power_of_two() {
                tracing::warn!(%peer, evicted, max_connections = max, "connection cap reached; closed the oldest connection with no request in progress");
            }
        }
        let _ = stream.set_nodelay(true);
        let routes = routes.clone();
        // The peer goes straight to the handler: no per-request extension map to allocate.
        // Probes are answered right here; only the routes that wait get a future, and only
        // they mark the connection busy (an answer given here is never in progress).
        let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            match routes.answer_now(&req, Some(peer)) {
                Some(resp) => Answer::Now(Some(resp)),
                None => {
                    let (routes, busy) = (routes.clone(), busy.clone());
                    busy.store(true, Ordering::Release);
                    Answer::Later(Box::pin(async move {
                        let resp = routes.answer_later(req).await;
                        busy.store(false, Ordering::Release);
                        resp
                    }))
                }
            }
        });
        let io = StallDeadline::new(stream, header_read_timeout);
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .max_buf_size(MAX_HEAD_BYTES)
            .keep_alive(true)
            .serve_connection(TokioIo::new(io), service);
        let conn = graceful.watch(conn);
        let slots = slots.clone();
        let evictions = evictions.clone();
        connections.spawn(async move {
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                _ = evict.cancelled() => tracing::debug!(%peer, "connection closed to make room"),
            }
            // The connection (and its socket) was dropped with the branch not taken.
            slots
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .closed(id, &evictions);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    connections.close();
    connections.wait().await;
}

/// A response now, or a future for one: probes need no allocation.
enum Answer {
    Now(Option<Resp>),
    Later(Pin<Box<dyn Future<Output = Resp> + Send>>),
}

impl Future for Answer {
    type Output = Result<Resp, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut *self {
            Answer::Now(resp) => Poll::Ready(Ok(resp.take().expect("polled after completion"))),
            Answer::Later(fut) => fut.as_mut().poll(cx).map(Ok),
        }
    }
}

/// A stream whose writes may not stall longer than `limit`: a client that stops reading its
/// answers (pipelining requests and never reading) is cut instead of holding its connection
/// forever.
struct StallDeadline<T> {
    inner: T,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> StallDeadline<T> {
    fn new(inner: T, limit: Duration) -> Self {
        StallDeadline {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Called when a write returned `Pending`: arms the deadline once, and fails once it passes.
    fn check_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.check_stall(cx).map(Err),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.check_stall(cx).map(Err),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.check_stall(cx).map(Err),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_gives_up_the_oldest_idle_slot_and_never_a_busy_one() {
        let mut slots = Slots::default();
        let e = Evictions::default();
        let (a, a_busy, a_evict, _) = slots.take(3, &e).unwrap();
        let (b, _, b_evict, _) = slots.take(3, &e).unwrap();
        let (_c, _, _, evicted) = slots.take(3, &e).unwrap();
        assert!(!evicted);
        assert_eq!(e.pending(), 0);
        a_busy.store(true, Ordering::Release);
        // Full: the oldest (a) is busy, so b goes, and the next accept waits for it to close.
        let (_d, _, _, evicted) = slots.take(3, &e).unwrap();
        assert!(evicted);
        assert_eq!(e.pending(), 1);
        assert!(b_evict.is_cancelled() && !a_evict.is_cancelled());
        assert!(slots.open.contains_key(&a) && !slots.open.contains_key(&b));
        // All busy: no room, and nothing is cut.
        for s in slots.open.values() {
            s.busy.store(true, Ordering::Release);
        }
        assert!(slots.take(3, &e).is_none());
        assert_eq!(slots.open.len(), 3);
    }

    /// An evicted connection's close settles its eviction, even when the connection ended on
    /// its own just before it was evicted (its token was not cancelled when it looked); a
    /// connection that simply ends settles nothing.
    #[test]
    fn an_evicted_connection_settles_its_eviction_when_it_closes() {
        let mut slots = Slots::default();
        let e = Evictions::default();
        let (a, _, _, _) = slots.take(2, &e).unwrap();
        let (b, _, _, _) = slots.take(2, &e).unwrap();
        // a's connection ends, and before its task frees the slot the next accept evicts it.
        let (_c, _, _, evicted) = slots.take(2, &e).unwrap();
        assert!(evicted);
        assert_eq!(e.pending(), 1);
        slots.closed(a, &e);
        assert_eq!(e.pending(), 0, "the eviction is settled");
        // b was never evicted: its close leaves the count alone.
        e.evicting();
        slots.closed(b, &e);
        assert_eq!(
            e.pending(),
            1,
            "a close that settles no eviction counts for none"
        );
        assert!(!slots.open.contains_key(&b));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_stalls_past_the_limit_fails() {
        use tokio::io::AsyncWriteExt;
        // A pipe whose reader never reads: writes stall once its buffer is full.
        let (client, _server) = tokio::io::duplex(64);
        let mut io = StallDeadline::new(client, Duration::from_secs(5));
        let err = io.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
