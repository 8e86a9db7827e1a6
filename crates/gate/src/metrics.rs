//! The gate's metrics (DESIGN.md's second wave): counters and histograms updated as requests
//! end, and gauges read from the admission and the breaker at scrape time, so they are exact.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::Inner;

/// Request latencies, 5 ms to 5 min: a cached answer, a short completion, a long generation.
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Queue waits and time to first byte, 1 ms to 60 s.
const WAIT_BUCKETS: [f64; 13] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Debug)]
pub(crate) struct GateMetrics {
    pub requests: Family<OutcomeLabel, Counter>,
    /// `requests`' series by [`crate::Outcome`] (a counter's clone shares its value), so a
    /// request counts without a lookup in the family.
    pub by_outcome: [Counter; crate::Outcome::ALL.len()],
    pub duration: DurationHistogram,
    pub ttfb: DurationHistogram,
    pub queue_wait: DurationHistogram,
    pub retries: Counter,
}

impl GateMetrics {
    pub fn new() -> GateMetrics {
        let requests = Family::<OutcomeLabel, Counter>::default();
        // Every outcome has a series from the start, so rate() sees the first shed.
        let by_outcome = crate::Outcome::ALL.map(|o| {
            requests
                .get_or_create(&OutcomeLabel {
                    outcome: o.as_str(),
                })
                .clone()
        });
        GateMetrics {
            requests,
            by_outcome,
            duration: DurationHistogram::new(&DURATION_BUCKETS),
            ttfb: DurationHistogram::new(&WAIT_BUCKETS),
            queue_wait: DurationHistogram::new(&WAIT_BUCKETS),
            retries: Counter::default(),
        }
    }
}

/// A histogram of durations in seconds, observed without a lock: a count per bucket and the sum
/// (in microseconds), each an atomic. prometheus-client's histogram takes a lock for every
/// observation, and the gate observes three a request. A scrape reads bucket by bucket, so it
/// may count a request observed meanwhile in one series and not yet in another, as any
/// lock-free exporter may; the count is the buckets' total, so `_count` and the `+Inf` bucket
/// always agree.
#[derive(Debug, Clone)]
pub(crate) struct DurationHistogram(Arc<Buckets>);

#[derive(Debug)]
struct Buckets {
    /// Upper bounds in seconds, ascending.
    bounds: &'static [f64],
    /// The same bounds in microseconds.
    bounds_micros: Vec<u64>,
    /// One count per bound, then the count above the last bound (`+Inf`).
    counts: Box<[AtomicU64]>,
    sum_micros: AtomicU64,
}

impl DurationHistogram {
    fn new(bounds: &'static [f64]) -> DurationHistogram {
        DurationHistogram(Arc::new(Buckets {
            bounds,
            bounds_micros: bounds.iter().map(|b| (b * 1e6).round() as u64).collect(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }))
    }

    pub fn observe(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let b = &self.0;
        // `le` is inclusive, as prometheus-client's `upper_bound >= v`.
        let i = b
            .bounds_micros
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(b.bounds_micros.len());
        b.counts[i].fetch_add(1, Ordering::Relaxed);
        b.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let b = &self.0;
        let buckets: Vec<(f64, u64)> = b
            .bounds
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(b.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = b.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A gauge computed at scrape time from the gate's state.
struct Computed {
    inner: Arc<Inner>,
    read: fn(&Inner) -> i64,
}

impl std::fmt::Debug for Computed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Computed")
    }
}

impl TypedMetric for Computed {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for Computed {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&(self.read)(&self.inner))
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Metric names, as scraped (DESIGN.md's contract, defined in `vitals_core::contract`).
pub mod names {
    pub use vitals_core::contract::metrics::{
        GATE_CIRCUIT_STATE as CIRCUIT_STATE, GATE_CONCURRENCY_LIMIT as CONCURRENCY_LIMIT,
        GATE_IN_FLIGHT as IN_FLIGHT, GATE_QUEUE_DEPTH as QUEUE_DEPTH,
        GATE_QUEUE_WAIT as QUEUE_WAIT, GATE_REQUESTS_TOTAL as REQUESTS_TOTAL,
        GATE_REQUEST_DURATION as REQUEST_DURATION, GATE_RETRIES_TOTAL as RETRIES_TOTAL,
        GATE_TIME_TO_FIRST_BYTE as TIME_TO_FIRST_BYTE,
    };
}

pub(crate) fn register(inner: &Arc<Inner>, registry: &mut Registry) {
    let m = &inner.metrics;
    registry.register(
        names::REQUESTS_TOTAL.strip_suffix("_total").unwrap_or_default(),
        "Requests through the gate, by outcome (ok, upstream_error, shed_queue_full, shed_queue_timeout, circuit_open, client_cancelled, bad_request), counted as they end",
        m.requests.clone(),
    );
    registry.register(
        names::REQUEST_DURATION,
        "Seconds from a request's arrival to the end of its answer (a stream's last byte, or where it was cut), for forwarded requests",
        m.duration.clone(),
    );
    registry.register(
        names::TIME_TO_FIRST_BYTE,
        "Seconds from forwarding a request to the upstream's first answer byte (its headers)",
        m.ttfb.clone(),
    );
    registry.register(
        names::QUEUE_WAIT,
        "Seconds admitted requests waited in the gate's queue for a slot",
        m.queue_wait.clone(),
    );
    registry.register(
        names::RETRIES_TOTAL.strip_suffix("_total").unwrap_or_default(),
        "Retries the gate made (refused connections, a model loading, 429 with Retry-After), within the retry budget",
        m.retries.clone(),
    );
    let gauge = |read: fn(&Inner) -> i64| Computed {
        inner: inner.clone(),
        read,
    };
    registry.register(
        names::IN_FLIGHT,
        "Requests holding a slot at the upstream (streams until their last byte)",
        gauge(|i| i64::try_from(i.admission.in_flight()).unwrap_or(i64::MAX)),
    );
    registry.register(
        names::QUEUE_DEPTH,
        "Requests waiting in the gate's queue for a slot",
        gauge(|i| i64::try_from(i.admission.queued()).unwrap_or(i64::MAX)),
    );
    registry.register(
        names::CONCURRENCY_LIMIT,
        "The most requests the gate lets reach the upstream at once",
        gauge(|i| i64::try_from(i.admission.max_concurrent()).unwrap_or(i64::MAX)),
    );
    registry.register(
        names::CIRCUIT_STATE,
        "The circuit breaker: 0 closed, 1 open (failing fast), 2 half-open (one trial request)",
        gauge(|i| i.circuit_state().gauge()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::histogram::Histogram;

    fn exposition(
        name: &str,
        metric: impl EncodeMetric + std::fmt::Debug + Send + Sync + 'static,
    ) -> String {
        let mut registry = Registry::default();
        registry.register(name, "help", metric);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    /// Scrapers see the same series as from prometheus-client's histogram: the bounds (`le`
    /// inclusive), the cumulative counts, `+Inf`, the count and the sum.
    #[test]
    fn the_lock_free_histogram_exposes_what_prometheus_clients_does() {
        let ours = DurationHistogram::new(&WAIT_BUCKETS);
        let theirs = Histogram::new(WAIT_BUCKETS);
        for micros in [
            0, 999, 1_000, 1_001, 4_000, 250_000, 61_000_000, 2_500_000, 7,
        ] {
            let d = Duration::from_micros(micros);
            ours.observe(d);
            theirs.observe(d.as_secs_f64());
        }
        let (ours, theirs) = (
            exposition("wait_seconds", ours),
            exposition("wait_seconds", theirs),
        );
        // The sums agree to float rounding: ours adds whole microseconds.
        let sum = |text: &str| -> f64 {
            let line = text
                .lines()
                .find(|l| l.starts_with("wait_seconds_sum "))
                .unwrap();
            line["wait_seconds_sum ".len()..].parse().unwrap()
        };
        assert!((sum(&ours) - 63.757007).abs() < 1e-9, "{ours}");
        assert!((sum(&ours) - sum(&theirs)).abs() < 1e-9);
        let rest = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| !l.starts_with("wait_seconds_sum "))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(rest(&ours), rest(&theirs));
    }
}
