//! Saturation: whether the upstream is keeping up, from what the gate sees each second, with
//! hysteresis so one burst does not flap readiness.
//!
//! - **Degraded** once the gate has been *hot* for `degrade_after`: its queue at or above
//!   `high_water`, or the recent time to first byte above `ttfb_factor` × its baseline (the
//!   upstream is slowing down: llama.cpp's own queue, a throttled GPU, a swapped model). Of
//!   streamed answers only: a non-streamed answer's first byte comes after its last token.
//! - **Overloaded** (not ready) once requests have been shed for a full queue for `full_for`
//!   without a break: more traffic than the instance can take, for longer than a burst.
//! - Each comes back after `recover_after` without its cause.
//!
//! Liveness never depends on any of it.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SaturationOptions {
    /// Queued requests that make a sample hot (0: the queue alone never does).
    pub high_water: usize,
    pub degrade_after: Duration,
    pub recover_after: Duration,
    pub full_for: Duration,
    /// Recent time to first byte over this many times its baseline makes a sample hot.
    pub ttfb_factor: f64,
}

/// What one second looked like.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    /// Requests waiting for a slot now.
    pub queued: usize,
    /// Requests shed for a full queue during the second.
    pub shed_full: u64,
    /// The mean time to first byte of requests forwarded during the second, if any were.
    pub ttfb: Option<Duration>,
}

/// The load readiness reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Load {
    Normal,
    Degraded { why: String },
    Overloaded { why: String },
}

/// A condition held since, and released since, with the reason it last held.
#[derive(Debug, Default)]
struct Held {
    since: Option<Instant>,
    clear_since: Option<Instant>,
    on: bool,
}

impl Held {
    /// Feeds one sample; true while the condition is considered on.
    fn feed(&mut self, now: Instant, hot: bool, after: Duration, recover: Duration) -> bool {
        if hot {
            self.clear_since = None;
            let since = *self.since.get_or_insert(now);
            if now.duration_since(since) >= after {
                self.on = true;
            }
        } else {
            self.since = None;
            let clear = *self.clear_since.get_or_insert(now);
            if self.on && now.duration_since(clear) >= recover {
                self.on = false;
            }
        }
        self.on
    }
}

#[derive(Debug)]
pub struct Saturation {
    options: SaturationOptions,
    hot: Held,
    full: Held,
    /// A slow average of the time to first byte while not hot (seconds).
    baseline: Option<f64>,
    /// A fast average of the recent time to first byte (seconds).
    recent: Option<f64>,
    load: Load,
}

/// The baseline follows a changing model slowly; the recent value follows a slowdown fast.
const BASELINE_WEIGHT: f64 = 0.05;
const RECENT_WEIGHT: f64 = 0.3;

impl Saturation {
    pub fn new(options: SaturationOptions) -> Saturation {
        Saturation {
            options,
            hot: Held::default(),
            full: Held::default(),
            baseline: None,
            recent: None,
            load: Load::Normal,
        }
    }

    pub fn load(&self) -> &Load {
        &self.load
    }

    /// The baseline time to first byte, once learned.
    pub fn baseline(&self) -> Option<Duration> {
        self.baseline.map(Duration::from_secs_f64)
    }

    /// Feeds one second's sample; the load readiness should report now.
    pub fn sample(&mut self, now: Instant, s: Sample) -> &Load {
        let o = self.options;
        if let Some(t) = s.ttfb.map(|t| t.as_secs_f64()) {
            self.recent = Some(match self.recent {
                None => t,
                Some(r) => r + RECENT_WEIGHT * (t - r),
            });
        }
        let slow = match (self.recent, self.baseline) {
            (Some(r), Some(b)) if b > 0.0 => r > o.ttfb_factor * b,
            _ => false,
        };
        let queued = o.high_water > 0 && s.queued >= o.high_water;
        let hot = queued || slow;
        // The baseline learns from calm seconds only, and never from a sample that is itself
        // slow, so a slowdown cannot become the normal it is measured against.
        if !hot && !self.hot.on {
            let calm = |t: f64| self.baseline.is_none_or(|b| t <= o.ttfb_factor * b);
            if let Some(t) = s.ttfb.map(|t| t.as_secs_f64()).filter(|t| calm(*t)) {
                self.baseline = Some(match self.baseline {
                    None => t,
                    Some(b) => b + BASELINE_WEIGHT * (t - b),
                });
            }
        }
        let degraded = self.hot.feed(now, hot, o.degrade_after, o.recover_after);
        let overloaded = self
            .full
            .feed(now, s.shed_full > 0, o.full_for, o.recover_after);
        self.load = if overloaded {
            Load::Overloaded {
                why: format!(
                    "requests shed for a full queue for {:?} or more: more traffic than this instance can serve",
                    o.full_for
                ),
            }
        } else if degraded {
            let why = match (queued, slow) {
                (true, _) => format!(
                    "{} requests waiting (high water {})",
                    s.queued, o.high_water
                ),
                (false, true) => format!(
                    "time to first byte {:.0} ms, over {}× its baseline of {:.0} ms",
                    self.recent.unwrap_or(0.0) * 1e3,
                    o.ttfb_factor,
                    self.baseline.unwrap_or(0.0) * 1e3
                ),
                // Still within recover_after of the last hot second.
                (false, false) => "recovering from saturation".to_owned(),
            };
            Load::Degraded {
                why: format!("saturated: {why}"),
            }
        } else {
            Load::Normal
        };
        &self.load
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sat() -> Saturation {
        Saturation::new(SaturationOptions {
            high_water: 4,
            degrade_after: Duration::from_secs(5),
            recover_after: Duration::from_secs(10),
            full_for: Duration::from_secs(20),
            ttfb_factor: 3.0,
        })
    }

    fn run(s: &mut Saturation, t: &mut Instant, secs: u64, sample: Sample) -> Load {
        for _ in 0..secs {
            *t += Duration::from_secs(1);
            s.sample(*t, sample);
        }
        s.load().clone()
    }

    fn queued(n: usize) -> Sample {
        Sample {
            queued: n,
            ..Sample::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_shorter_than_degrade_after_changes_nothing() {
        let (mut s, mut t) = (sat(), Instant::now());
        assert_eq!(run(&mut s, &mut t, 4, queued(6)), Load::Normal);
        assert_eq!(run(&mut s, &mut t, 1, queued(0)), Load::Normal);
        assert_eq!(
            run(&mut s, &mut t, 4, queued(6)),
            Load::Normal,
            "the count restarts"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_queue_above_high_water_degrades_and_recovers_after_recover_after() {
        let (mut s, mut t) = (sat(), Instant::now());
        run(&mut s, &mut t, 6, queued(5));
        assert!(
            matches!(s.load(), Load::Degraded { why } if why.contains("5 requests waiting")),
            "{:?}",
            s.load()
        );
        // Calm, but not yet for recover_after (counted from the first calm second): still
        // degraded, no flapping.
        assert!(matches!(
            run(&mut s, &mut t, 10, queued(0)),
            Load::Degraded { .. }
        ));
        assert_eq!(run(&mut s, &mut t, 1, queued(0)), Load::Normal);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slowing_upstream_degrades_on_time_to_first_byte() {
        let (mut s, mut t) = (sat(), Instant::now());
        let ttfb = |ms| Sample {
            ttfb: Some(Duration::from_millis(ms)),
            ..Sample::default()
        };
        run(&mut s, &mut t, 30, ttfb(100));
        assert_eq!(s.load(), &Load::Normal);
        let base = s.baseline().unwrap();
        assert!((Duration::from_millis(95)..Duration::from_millis(105)).contains(&base));
        // 2× is within the factor of 3; 10× is not.
        assert_eq!(run(&mut s, &mut t, 30, ttfb(200)), Load::Normal);
        let load = run(&mut s, &mut t, 10, ttfb(1000));
        assert!(
            matches!(&load, Load::Degraded { why } if why.contains("time to first byte")),
            "{load:?}"
        );
        assert!(
            s.baseline().unwrap() < Duration::from_millis(250),
            "a slowdown does not become the baseline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shedding_for_full_for_is_overloaded_and_a_break_resets_it() {
        let (mut s, mut t) = (sat(), Instant::now());
        let shedding = Sample {
            queued: 8,
            shed_full: 3,
            ttfb: None,
        };
        // full_for is counted from the first second that shed: 20 s later is the 21st sample.
        assert!(matches!(
            run(&mut s, &mut t, 20, shedding),
            Load::Degraded { .. }
        ));
        assert!(matches!(
            run(&mut s, &mut t, 1, shedding),
            Load::Overloaded { .. }
        ));
        // No shed for recover_after: back to degraded (the queue is still high), then normal.
        assert!(matches!(
            run(&mut s, &mut t, 11, queued(8)),
            Load::Degraded { .. }
        ));
        assert_eq!(run(&mut s, &mut t, 11, queued(0)), Load::Normal);
        // Shedding that stops before full_for never overloads.
        assert!(!matches!(
            run(&mut s, &mut t, 15, shedding),
            Load::Overloaded { .. }
        ));
        run(&mut s, &mut t, 1, queued(8));
        assert!(!matches!(
            run(&mut s, &mut t, 15, shedding),
            Load::Overloaded { .. }
        ));
    }
}
