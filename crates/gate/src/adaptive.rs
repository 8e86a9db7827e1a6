//! The adaptive limit (`gate.limit = "adaptive"`): Vegas (as in Netflix's concurrency-limits),
//! on the time to first byte rather than the whole answer, whose length depends on how much the
//! model writes; and of streamed answers only (the gate takes no sample from the others, whose
//! first byte comes after their last token).
//!
//! The fastest time to first byte seen is the upstream at ease. A sample `s` taken with the
//! limit at `L` says about `L · (1 − min / s)` requests are waiting in the upstream's own queue
//! (llama.cpp defers what its slots cannot take). Below `alpha` waiting, the limit grows by one;
//! above `beta`, it shrinks by one; between them it holds, keeping the upstream's slots busy
//! with a short queue of its own and no more. `alpha = max(1, 3·log10 L)` and
//! `beta = max(2, 6·log10 L)`, so the band widens slowly with the limit. The limit stays within
//! `[min_limit, max_concurrent]`, does not grow while fewer than half its slots are in use
//! (nothing to learn from an idle upstream), and every `30 · L` samples the fastest time is
//! measured afresh, as Envoy does: the limit drops to `min_limit` for a few answers, whose
//! fastest becomes the new reference, then returns. A slower model that replaced a faster one
//! thus does not pin the limit at its floor, and a queue is never mistaken for the upstream's
//! own pace.

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveOptions {
    pub min_limit: usize,
    pub max_limit: usize,
}

impl AdaptiveOptions {
    pub fn new(min_limit: usize, max_limit: usize) -> AdaptiveOptions {
        AdaptiveOptions {
            min_limit,
            max_limit: max_limit.max(min_limit),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Vegas {
    options: AdaptiveOptions,
    limit: usize,
    /// The fastest time to first byte since the last re-measure.
    fastest: Option<f64>,
    /// Samples until the fastest time is measured afresh.
    until_probe: usize,
    /// While re-measuring: answers left, the limit to return to, the fastest so far, and the
    /// answers it may still wait for before giving up (requests sent before the drop may hold
    /// their slots a long while).
    probing: Option<(usize, usize, f64, usize)>,
}

/// Answers taken at `min_limit` when the fastest time is measured afresh.
const PROBE_SAMPLES: usize = 3;
/// Answers a re-measure waits through before it gives up and keeps the old reference.
const PROBE_PATIENCE: usize = 64;

/// Samples between re-measures of the fastest time, per unit of limit.
const PROBE_MULTIPLIER: usize = 30;

impl Vegas {
    /// Starts at `initial` (clamped to the bounds).
    pub fn new(options: AdaptiveOptions, initial: usize) -> Vegas {
        let limit = initial.clamp(options.min_limit, options.max_limit);
        Vegas {
            options,
            limit,
            fastest: None,
            until_probe: PROBE_MULTIPLIER * limit,
            probing: None,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A new ceiling (`"auto"` learns it at start).
    pub fn set_max(&mut self, max: usize) {
        self.options.max_limit = max.max(self.options.min_limit);
        self.limit = self
            .limit
            .clamp(self.options.min_limit, self.options.max_limit);
    }

    /// A request that timed out or failed before an answer: always one less.
    pub fn drop_one(&mut self) -> usize {
        if self.probing.is_none() {
            self.limit = self.limit.saturating_sub(1).max(self.options.min_limit);
        }
        self.limit
    }

    /// An answer whose time to first byte measures nothing (not streamed: it came after the
    /// last token), sent with `in_flight` requests in flight: the upstream answered, so while it
    /// is busy the limit climbs back one step toward its ceiling, as after a fast sample. Without
    /// it, the timeouts and failures that lower the limit would ratchet it down for good where
    /// no answer is streamed. The new limit.
    pub fn unmeasured(&mut self, in_flight: usize) -> usize {
        if self.probing.is_none() && in_flight * 2 >= self.limit {
            self.limit = (self.limit + 1).min(self.options.max_limit);
        }
        self.limit
    }

    /// One request's time to first byte (seconds) and the requests in flight when it was sent;
    /// the new limit.
    pub fn sample(&mut self, ttfb: f64, in_flight: usize) -> usize {
        if !(ttfb > 0.0 && ttfb.is_finite()) {
            return self.limit;
        }
        if let Some((left, back_to, best, patience)) = self.probing {
            // Answers to requests sent before the limit dropped still carry the old queue: only
            // those sent at the floor measure the upstream at ease.
            let (left, best) = if in_flight <= self.options.min_limit {
                (left - 1, best.min(ttfb))
            } else {
                (left, best)
            };
            if left == 0 || patience == 0 {
                if left == 0 {
                    self.fastest = Some(best);
                }
                self.limit = back_to;
                self.probing = None;
                self.until_probe = PROBE_MULTIPLIER * self.limit;
            } else {
                self.probing = Some((left, back_to, best, patience - 1));
            }
            return self.limit;
        }
        // Only a busy upstream says anything about its pace: an idle one is not re-measured.
        if in_flight * 2 >= self.limit {
            self.until_probe = self.until_probe.saturating_sub(1);
        }
        if self.until_probe == 0 && self.fastest.is_some() {
            self.probing = Some((PROBE_SAMPLES, self.limit, f64::INFINITY, PROBE_PATIENCE));
            self.limit = self.options.min_limit;
            return self.limit;
        }
        let fastest = self.fastest.map_or(ttfb, |f| f.min(ttfb));
        self.fastest = Some(fastest);
        let l = self.limit as f64;
        let waiting = l * (1.0 - fastest / ttfb);
        let log = l.log10();
        let (alpha, beta) = ((3.0 * log).max(1.0), (6.0 * log).max(2.0));
        if waiting > beta {
            self.limit = self.limit.saturating_sub(1);
        } else if waiting < alpha && in_flight * 2 >= self.limit {
            self.limit += 1;
        }
        self.limit = self
            .limit
            .clamp(self.options.min_limit, self.options.max_limit);
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream with `slots` slots and `base` seconds to first byte: beyond its slots,
    /// requests wait in its own queue (llama.cpp defers them), so the time to first byte grows
    /// with how far the load exceeds the slots.
    fn upstream_ttfb(in_flight: usize, slots: usize, base: f64) -> f64 {
        if in_flight <= slots {
            base
        } else {
            base * (in_flight as f64 / slots as f64)
        }
    }

    /// Many clients keep the gate full: in flight is the limit; each step samples one answer.
    fn run(g: &mut Vegas, slots: usize, base: f64, steps: usize) -> Vec<usize> {
        (0..steps)
            .map(|_| {
                let in_flight = g.limit();
                g.sample(upstream_ttfb(in_flight, slots, base), in_flight)
            })
            .collect()
    }

    #[test]
    fn converges_near_the_upstreams_slots_from_above_and_below() {
        for (start, slots) in [(1, 8), (64, 8), (1, 2), (64, 32)] {
            let mut g = Vegas::new(AdaptiveOptions::new(1, 64), start);
            let limits = run(&mut g, slots, 0.2, 3000);
            // The brief re-measures at the floor aside.
            let tail: Vec<usize> = limits[2000..].iter().copied().filter(|l| *l > 1).collect();
            let measuring = limits[2000..].len() - tail.len();
            assert!(
                measuring <= 50,
                "re-measures take {measuring} of 1000 answers"
            );
            let (lo, hi) = (*tail.iter().min().unwrap(), *tail.iter().max().unwrap());
            // Near the slots: the tolerance (1.5x) and the headroom let it sit a little above,
            // which keeps the upstream's slots busy; never far above, where its queue grows.
            assert!(
                lo >= slots && hi <= slots * 2 + 2,
                "start {start}, {slots} slots: settled in {lo}..={hi}"
            );
            assert!(hi - lo <= slots / 2 + 2, "stable: {lo}..={hi}");
        }
    }

    #[test]
    fn follows_the_upstream_when_it_loses_capacity_and_when_it_gets_it_back() {
        let mut g = Vegas::new(AdaptiveOptions::new(1, 64), 8);
        run(&mut g, 16, 0.2, 3000);
        let before = g.limit();
        assert!(before >= 16, "{before}");
        // Half the slots go (a GPU throttles, a model swaps in).
        run(&mut g, 8, 0.2, 3000);
        let during = g.limit();
        assert!(during < before && during <= 18, "{before} -> {during}");
        // They come back.
        run(&mut g, 16, 0.2, 3000);
        assert!(g.limit() >= 16, "{during} -> {}", g.limit());
    }

    #[test]
    fn stays_within_its_bounds_and_ignores_nonsense() {
        let mut g = Vegas::new(AdaptiveOptions::new(2, 6), 100);
        assert_eq!(g.limit(), 6);
        run(&mut g, 64, 0.2, 500);
        assert_eq!(g.limit(), 6, "capped at max");
        let mut g = Vegas::new(AdaptiveOptions::new(2, 6), 4);
        for _ in 0..500 {
            g.sample(10.0, 6);
        }
        g.sample(f64::NAN, 6);
        g.sample(-1.0, 6);
        assert!(g.limit() >= 2, "floored at min");
    }

    #[test]
    fn answers_it_cannot_measure_win_back_what_failures_took() {
        let mut g = Vegas::new(AdaptiveOptions::new(1, 8), 8);
        for _ in 0..5 {
            g.drop_one();
        }
        assert_eq!(g.limit(), 3);
        // Non-streamed answers while busy: one step back up each, to the ceiling and no further.
        for _ in 0..10 {
            g.unmeasured(g.limit());
        }
        assert_eq!(g.limit(), 8);
        // While less than half used they hold it.
        g.drop_one();
        for _ in 0..10 {
            g.unmeasured(1);
        }
        assert_eq!(g.limit(), 7);
    }

    #[test]
    fn an_idle_upstream_teaches_nothing() {
        let mut g = Vegas::new(AdaptiveOptions::new(1, 64), 16);
        for _ in 0..1000 {
            g.sample(0.2, 2);
        }
        assert_eq!(g.limit(), 16);
    }
}
