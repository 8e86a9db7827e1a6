//! HealthSpecs for adapter tests: from `health.toml` text, or any that a valid config can give.

use proptest::prelude::*;
use vitals_core::config::startup_failure_threshold;
use vitals_core::spec::{Probe, ProbeSpec};
use vitals_core::{Duration, HealthSpec};

/// The spec of a valid `health.toml`; panics with every problem if it is not valid.
pub fn spec_from_toml(toml: &str) -> HealthSpec {
    match vitals_core::config::from_toml(toml, &|_| None) {
        Ok(config) => HealthSpec::from_config(&config),
        Err(e) => panic!("test config is invalid: {e}"),
    }
}

/// A duration of whole seconds in `secs`, or now and then one with milliseconds, which some
/// platforms cannot express.
fn duration(secs: std::ops::RangeInclusive<u64>) -> impl Strategy<Value = Duration> {
    let (lo, hi) = (*secs.start(), *secs.end());
    prop_oneof![
        9 => (lo..=hi).prop_map(Duration::from_secs),
        1 => (lo * 1000..=hi * 1000).prop_map(Duration::from_millis),
    ]
}

fn timing(
    probe: Probe,
    period: std::ops::RangeInclusive<u64>,
    failures: std::ops::RangeInclusive<u32>,
) -> impl Strategy<Value = ProbeSpec> {
    let success = if probe == Probe::Readiness {
        (1u32..=12).boxed()
    } else {
        Just(1u32).boxed()
    };
    (duration(period), 1u32..=100, failures, success).prop_map(
        move |(period, timeout_pct, failure_threshold, success_threshold)| {
            // The config guarantees 0 < timeout <= period.
            let ms = (period.std().as_millis() as u64 * u64::from(timeout_pct) / 100).max(1);
            ProbeSpec {
                probe,
                period,
                timeout: Duration::from_millis(ms).min(period),
                failure_threshold,
                success_threshold,
            }
        },
    )
}

/// Any spec a valid configuration can produce, over ranges that cross every platform's limits.
pub fn arb_spec() -> impl Strategy<Value = HealthSpec> {
    (
        1u16..=65535,
        timing(Probe::Liveness, 1..=400, 1..=15),
        timing(Probe::Readiness, 1..=400, 1..=12),
        timing(Probe::Startup, 1..=300, 1..=1),
        duration(1..=1200),
        duration(0..=60),
        duration(0..=200),
        prop_oneof![Just(200u16), Just(204), Just(429)],
    )
        .prop_map(
            |(port, liveness, readiness, mut startup, budget, delay, grace, degraded)| {
                startup.failure_threshold = startup_failure_threshold(budget, startup.period);
                HealthSpec {
                    port,
                    liveness,
                    readiness,
                    startup,
                    startup_budget: budget,
                    drain_delay: delay,
                    drain_grace: grace,
                    degraded_status: degraded,
                    listen: ([0, 0, 0, 0], port).into(),
                    agent_heartbeat: false,
                }
            },
        )
}

/// One change to a spec, for a limit table.
pub type Change = Box<dyn Fn(&mut HealthSpec)>;

/// A limit table: each case changes `base`, then expects `render` to accept it (`None`) or to
/// refuse it with exactly the given message.
pub fn assert_limits<T, E: std::fmt::Display>(
    base: &HealthSpec,
    cases: Vec<(&str, Change, Option<&str>)>,
    render: impl Fn(&HealthSpec) -> Result<T, E>,
) {
    for (name, change, refusal) in cases {
        let mut spec = base.clone();
        change(&mut spec);
        match (render(&spec), refusal) {
            (Ok(_), None) => {}
            (Err(e), None) => panic!("{name}: refused: {e}"),
            (Ok(_), Some(msg)) => panic!("{name}: accepted, but should be refused with: {msg}"),
            (Err(e), Some(msg)) => assert_eq!(e.to_string(), msg, "{name}"),
        }
    }
}
