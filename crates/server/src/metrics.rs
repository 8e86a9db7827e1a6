//! Every metric vitals exports, named in one place (DESIGN.md's metrics contract).
//!
//! Counters and histograms are updated as checks finish; the 0/1 gauges are set from the
//! snapshot at scrape time, so `vitals_ready` is 1 exactly when `/readyz` would answer 2xx at that
//! moment. Labels are bounded: signal names come from the configuration, never from errors.
//!
//! Pushed signals (`[[signals]]`) are series of `vitals_dependency_up` with `kind="signal"`, so
//! the alerts and the dashboard that watch dependencies watch them too. They have no check
//! counters: nothing is checked, the agent reports.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use vitals_core::contract::metrics as names;
use vitals_core::lifecycle::{Lifecycle, Liveness, Outcome, Readiness};
use vitals_core::signal::{SignalId, Source};

/// Buckets for check latencies, 1 ms to 30 s: a local store answers in milliseconds, an LLM
/// completion in seconds, and a timeout lands in the last bucket.
pub const CHECK_DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabels {
    dependency: String,
    kind: String,
    critical: String,
}

/// A gauge with no sample until it is first set: before the agent's first beat, its age is
/// absent, not a misleading 0.
#[derive(Debug, Clone, Default)]
struct OptionalGauge(Arc<Mutex<Option<f64>>>);

impl OptionalGauge {
    fn set(&self, v: f64) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
    }
}

impl TypedMetric for OptionalGauge {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for OptionalGauge {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        match *self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(v) => encoder.encode_gauge(&v),
            None => Ok(()),
        }
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabel {
    dependency: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    dependency: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    dependency: String,
    direction: String,
}

/// The two exposition formats. Prometheus asks for OpenMetrics; `promtool check metrics`, curl
/// and older scrapers read the classic text format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    /// `text/plain; version=0.0.4`.
    Text,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    /// The format an `Accept` header asks for.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }
}

/// OpenMetrics → classic text: a counter family takes its samples' `_total` name, and `# UNIT`
/// and `# EOF` go. Everything else (gauges, histograms, label syntax) is the same in both.
fn openmetrics_to_text(om: &str) -> String {
    let counters: Vec<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + 64);
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The registry and handles to each metric.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Serialises scrapes: gauges are set from the snapshot, then encoded.
    scrape: Mutex<()>,
    /// Signal names, by [`SignalId::index`].
    names: Vec<String>,
    /// `readiness.degraded_status`: whether `/readyz` answers 2xx while degraded.
    degraded_status: u16,
    dep_labels: Vec<DependencyLabels>,
    /// Which signals are checked (dependencies), by index.
    checked: Vec<bool>,
    live: Gauge,
    agent_live: Gauge,
    agent_heartbeat_age: OptionalGauge,
    started: Gauge,
    ready: Gauge,
    degraded: Gauge,
    draining: Gauge,
    dependency_up: Family<DependencyLabels, Gauge>,
    check_duration: Family<NameLabel, Histogram>,
    checks: Family<OutcomeLabels, Counter>,
    last_success: Family<NameLabel, Gauge<f64, AtomicU64>>,
    llm_tokens: Family<TokenLabels, Counter>,
}

fn check_histogram() -> Histogram {
    Histogram::new(CHECK_DURATION_BUCKETS)
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl Metrics {
    /// The metrics of `state`'s signals; `degraded_status` is `readiness.degraded_status`.
    pub fn new(state: &Lifecycle, degraded_status: u16) -> Self {
        Self::with(state, degraded_status, &|_| {})
    }

    /// [`Metrics::new`], plus what `extend` registers (a part of the runtime with metrics of
    /// its own, such as the gate).
    pub fn with(state: &Lifecycle, degraded_status: u16, extend: &dyn Fn(&mut Registry)) -> Self {
        let mut registry = Registry::default();
        extend(&mut registry);
        let live = Gauge::default();
        let agent_live = Gauge::default();
        let agent_heartbeat_age = OptionalGauge::default();
        let started = Gauge::default();
        let ready = Gauge::default();
        let degraded = Gauge::default();
        let draining = Gauge::default();
        let dependency_up = Family::<DependencyLabels, Gauge>::default();
        let check_duration = Family::<NameLabel, Histogram>::new_with_constructor(
            check_histogram as fn() -> Histogram,
        );
        let checks = Family::<OutcomeLabels, Counter>::default();
        let last_success = Family::<NameLabel, Gauge<f64, AtomicU64>>::default();
        let llm_tokens = Family::<TokenLabels, Counter>::default();
        let process_start = Gauge::<f64, AtomicU64>::default();

        registry.register(names::LIVE, "1 when /healthz answers 200", live.clone());
        registry.register(
            names::AGENT_LIVE,
            "1 when /healthz/agent answers 200 (the agent's heartbeat is fresh, or not required)",
            agent_live.clone(),
        );
        registry.register(
            names::AGENT_HEARTBEAT_AGE,
            "Seconds since the agent's last heartbeat; absent until its first beat",
            agent_heartbeat_age.clone(),
        );
        registry.register(
            names::STARTED,
            "1 once the startup gate has passed (/startupz 200)",
            started.clone(),
        );
        registry.register(
            names::READY,
            "1 exactly when /readyz answers 2xx",
            ready.clone(),
        );
        registry.register(
            names::DEGRADED,
            "1 when a non-critical dependency is down and /readyz says degraded",
            degraded.clone(),
        );
        registry.register(
            names::DRAINING,
            "1 while draining after SIGTERM or POST /drain",
            draining.clone(),
        );
        registry.register(
            names::DEPENDENCY_UP,
            "1 when the dependency or signal counts as up (thresholds, staleness and ttl applied)",
            dependency_up.clone(),
        );
        registry.register(
            names::CHECK_DURATION,
            "How long each dependency check took",
            check_duration.clone(),
        );
        // prometheus-client appends `_total` to counters.
        registry.register(
            names::counter_base(names::CHECKS_TOTAL),
            "Dependency checks by outcome (success, failure, timeout)",
            checks.clone(),
        );
        registry.register(
            names::LAST_SUCCESS,
            "Unix time of the dependency's last successful check",
            last_success.clone(),
        );
        registry.register(
            names::counter_base(names::LLM_TOKENS_TOTAL),
            "Tokens spent by LLM probes, from the provider's usage",
            llm_tokens.clone(),
        );
        registry.register(
            names::PROCESS_START,
            "Start time of the process since unix epoch in seconds",
            process_start.clone(),
        );
        process_start.set(unix_seconds(SystemTime::now()));

        let signals = &state.rules().signals;
        let dep_labels: Vec<DependencyLabels> = signals
            .iter()
            .map(|(_, r)| DependencyLabels {
                dependency: r.name.clone(),
                kind: r.source.label().to_owned(),
                critical: r.critical.to_string(),
            })
            .collect();
        let names: Vec<String> = signals.iter().map(|(_, r)| r.name.clone()).collect();
        let checked: Vec<bool> = signals
            .iter()
            .map(|(_, r)| matches!(r.source, Source::Dependency(_)))
            .collect();
        // Create every series up front so a dashboard sees zeros, not gaps, before the first check.
        for ((labels, name), checked) in dep_labels.iter().zip(&names).zip(&checked) {
            drop(dependency_up.get_or_create(labels));
            if !checked {
                continue;
            }
            drop(check_duration.get_or_create(&NameLabel {
                dependency: name.clone(),
            }));
            for outcome in ["success", "failure", "timeout"] {
                drop(checks.get_or_create(&OutcomeLabels {
                    dependency: name.clone(),
                    outcome: outcome.to_owned(),
                }));
            }
        }
        Metrics {
            registry,
            scrape: Mutex::new(()),
            names,
            degraded_status,
            dep_labels,
            checked,
            live,
            agent_live,
            agent_heartbeat_age,
            started,
            ready,
            degraded,
            draining,
            dependency_up,
            check_duration,
            checks,
            last_success,
            llm_tokens,
        }
    }

    /// Records one finished check of dependency `signal`.
    pub fn record_check(&self, signal: SignalId, outcome: &Outcome, latency: Duration) {
        let Some(name) = self.names.get(signal.index()) else {
            return;
        };
        self.check_duration
            .get_or_create(&NameLabel {
                dependency: name.clone(),
            })
            .observe(latency.as_secs_f64());
        self.checks
            .get_or_create(&OutcomeLabels {
                dependency: name.clone(),
                outcome: outcome.label().to_owned(),
            })
            .inc();
    }

    /// Adds tokens an LLM probe spent, as the provider reported them.
    pub fn record_tokens(&self, signal: SignalId, prompt: u64, completion: u64) {
        let Some(name) = self.names.get(signal.index()) else {
            return;
        };
        for (direction, n) in [("prompt", prompt), ("completion", completion)] {
            self.llm_tokens
                .get_or_create(&TokenLabels {
                    dependency: name.clone(),
                    direction: direction.to_owned(),
                })
                .inc_by(n);
        }
    }

    /// The exposition for this moment, in `format`: gauges from `state` and `liveness` at
    /// `now`; `agent_beat_age` is how long ago the agent last beat, if it ever did.
    pub fn encode(
        &self,
        state: &Lifecycle,
        now: std::time::Instant,
        liveness: Liveness,
        agent_beat_age: Option<Duration>,
        format: Format,
    ) -> String {
        let _guard = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        let readiness = state.readiness(now);
        self.live.set(i64::from(liveness.is_live()));
        self.agent_live.set(i64::from(liveness.agent.is_live()));
        if let Some(age) = agent_beat_age {
            self.agent_heartbeat_age.set(age.as_secs_f64());
        }
        self.started.set(i64::from(state.started()));
        self.ready
            .set(i64::from(readiness.is_ready(self.degraded_status)));
        self.degraded
            .set(i64::from(readiness == Readiness::Degraded));
        self.draining.set(i64::from(state.is_draining()));
        let wall_now = SystemTime::now();
        for ((id, _), labels) in state.rules().signals.iter().zip(&self.dep_labels) {
            self.dependency_up
                .get_or_create(labels)
                .set(i64::from(state.is_up(id, now)));
            if !self.checked[id.index()] {
                continue;
            }
            if let Some(at) = state.signal(id).and_then(|d| d.last_success_at) {
                let ago = now.saturating_duration_since(at);
                self.last_success
                    .get_or_create(&NameLabel {
                        dependency: labels.dependency.clone(),
                    })
                    .set(unix_seconds(wall_now - ago));
            }
        }
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        match format {
            Format::OpenMetrics => out,
            Format::Text => openmetrics_to_text(&out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_take_their_total_name_in_the_text_format() {
        let om = "# HELP c Checks.\n# TYPE c counter\nc_total{a=\"b\"} 1\n# HELP g G.\n# TYPE g gauge\n# UNIT g seconds\ng 2\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(om),
            "# HELP c_total Checks.\n# TYPE c_total counter\nc_total{a=\"b\"} 1\n# HELP g G.\n# TYPE g gauge\ng 2\n"
        );
    }

    #[test]
    fn negotiation_prefers_what_prometheus_asks_for() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(Format::negotiate(None), Format::Text);
    }
}
