//! A heartbeat: the time of the last beat, lock-free, so that beating costs one atomic store.
//!
//! vitals' own driver loop beats one (a stalled runtime or a deadlocked driver shows as a stale
//! heartbeat); the agent beats another with `POST /heartbeat` or `Handle::beat`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::time::Instant;

/// A shared "last beat" time, on tokio's clock.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    origin: Instant,
    /// Nanoseconds after `origin` of the last beat, plus one; 0 until the first beat.
    last: Arc<AtomicU64>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self::new()
    }
}

impl Heartbeat {
    /// A heartbeat that has not beaten yet.
    pub fn new() -> Self {
        Heartbeat {
            origin: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn beat(&self) {
        let nanos = self.origin.elapsed().as_nanos().min(u64::MAX as u128 - 1) as u64;
        self.last.fetch_max(nanos + 1, Ordering::Relaxed);
    }

    /// When it last beat, on the lifecycle's clock; `None` before the first beat.
    pub fn last(&self) -> Option<std::time::Instant> {
        match self.last.load(Ordering::Relaxed) {
            0 => None,
            n => Some((self.origin + std::time::Duration::from_nanos(n - 1)).into_std()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn records_the_last_beat_on_tokios_clock() {
        let hb = Heartbeat::new();
        assert_eq!(hb.last(), None, "no beat yet");
        tokio::time::advance(Duration::from_secs(3)).await;
        hb.beat();
        let first = hb.last().unwrap();
        assert_eq!(
            crate::now().saturating_duration_since(first),
            Duration::ZERO
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            crate::now().saturating_duration_since(hb.last().unwrap()),
            Duration::from_secs(10)
        );
        hb.beat();
        assert!(hb.last().unwrap() > first);
    }
}
