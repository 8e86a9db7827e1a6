//! The heartbeat that `/healthz` reads: proof that the process still runs its event loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// A shared "last beat" time. The monitor's driver beats it on every turn of its loop, so a
/// stalled runtime or a deadlocked driver shows as a stale heartbeat. An agent that embeds vitals
/// may also beat it from its own main loop.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    origin: Instant,
    /// Nanoseconds after `origin` of the last beat.
    last: Arc<AtomicU64>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self::new()
    }
}

impl Heartbeat {
    pub fn new() -> Self {
        Heartbeat {
            origin: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn beat(&self) {
        let nanos = self.origin.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        self.last.fetch_max(nanos, Ordering::Relaxed);
    }

    /// How long ago the last beat was.
    pub fn age(&self) -> Duration {
        let last = Duration::from_nanos(self.last.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }

    pub fn is_fresh(&self, stall_after: Duration) -> bool {
        self.age() <= stall_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn goes_stale_without_beats() {
        let hb = Heartbeat::new();
        hb.beat();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(hb.is_fresh(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!hb.is_fresh(Duration::from_secs(10)));
        hb.beat();
        assert!(hb.is_fresh(Duration::from_secs(10)));
    }
}
