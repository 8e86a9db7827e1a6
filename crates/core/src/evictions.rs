//! Connections closed to make room, counted until they are: an accept loop at its connection
//! cap asks the oldest connection to close, but the connection's task closes its socket only
//! when it next runs. Accepting on meanwhile would hold the old socket and the new one, and a
//! burst of accepts (before those tasks run, as on a busy machine) would hold many: past the
//! process's open-file limit, which the other listener (the probes') shares. So an accept loop
//! that evicted waits for its evictions to be done before the next accept, a short while at most.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// The longest an accept waits for evicted connections to close: a connection's task that has
/// not run by then is stuck elsewhere, and the listener is not held for it.
const SETTLE_FOR: Duration = Duration::from_millis(100);

/// Evicted connections whose sockets are not closed yet.
#[derive(Debug, Default)]
pub struct Evictions {
    pending: AtomicUsize,
    closed: Notify,
}

impl Evictions {
    /// A connection was asked to close to make room: call before asking it.
    pub fn evicting(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
    }

    /// An evicted connection's socket is closed.
    pub fn closed(&self) {
        let _ = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        self.closed.notify_one();
    }

    /// Evicted connections not closed yet.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Waits until every evicted connection is closed, for [`SETTLE_FOR`] at most.
    pub async fn settle(&self) {
        if self.pending() == 0 {
            return;
        }
        let _ = tokio::time::timeout(SETTLE_FOR, async {
            while self.pending() > 0 {
                self.closed.notified().await;
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// An accept waits for the eviction before it, and not past the bound for one never done.
    #[tokio::test(start_paused = true)]
    async fn settle_waits_for_evictions_and_no_longer_than_its_bound() {
        let e = Arc::new(Evictions::default());
        e.settle().await;
        e.evicting();
        let closer = {
            let e = e.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                e.closed();
            })
        };
        let start = tokio::time::Instant::now();
        e.settle().await;
        assert_eq!(start.elapsed(), Duration::from_millis(30));
        closer.await.unwrap();
        assert_eq!(e.pending(), 0);
        e.evicting();
        let start = tokio::time::Instant::now();
        e.settle().await;
        assert_eq!(start.elapsed(), SETTLE_FOR);
    }
}
