// The sans-IO core takes any instant: the std clock only picks an arbitrary origin here.
#![allow(clippy::disallowed_methods)]

use super::*;
use crate::config::Kind;
use proptest::prelude::*;

const SEC: Duration = Duration::from_secs(1);

/// A dependency's rules, or a pushed signal's when `source` is `Source::Pushed`.
fn sig(
    critical: bool,
    failure_threshold: u32,
    success_threshold: u32,
) -> (Source, bool, u32, u32, Duration) {
    (
        Source::Dependency(Kind::Http),
        critical,
        failure_threshold,
        success_threshold,
        65 * SEC,
    )
}

fn pushed(critical: bool, ttl: Duration) -> (Source, bool, u32, u32, Duration) {
    (Source::Pushed, critical, 1, 1, ttl)
}

fn rules(signals: Vec<(Source, bool, u32, u32, Duration)>, require: Vec<usize>) -> Rules {
    let mut registry = Registry::new();
    for (i, (source, critical, f, s, stale)) in signals.into_iter().enumerate() {
        registry
            .register(SignalRules {
                name: format!("s{i}"),
                source,
                critical,
                instance_local: false,
                failure_threshold: f,
                success_threshold: s,
                stale_after: stale,
                fleet_outage_degrades: false,
            })
            .unwrap();
    }
    let startup_require = require.into_iter().map(|i| id(&registry, i)).collect();
    Rules {
        signals: registry,
        startup_require,
        ..Rules::default()
    }
}

fn id(registry: &Registry, i: usize) -> SignalId {
    registry.id(&format!("s{i}")).unwrap()
}

fn sid(s: &Lifecycle, i: usize) -> SignalId {
    id(&s.rules().signals, i)
}

fn observed(signal: SignalId, ok: bool, ttl: Option<Duration>) -> Event {
    Event::Observed {
        signal,
        observation: Observation {
            outcome: if ok {
                Outcome::Success
            } else {
                Outcome::Failed {
                    reason: "connection refused".into(),
                }
            },
            spread: Spread::Unknown,
            latency: Some(Duration::from_millis(3)),
            ttl,
        },
    }
}

/// Applies a result for signal number `i` (registry order).
trait Apply {
    fn checked(self, i: usize, ok: bool, now: Instant) -> Lifecycle;
}

impl Apply for Lifecycle {
    fn checked(self, i: usize, ok: bool, now: Instant) -> Lifecycle {
        let id = sid(&self, i);
        self.transition(observed(id, ok, None), now)
    }
}

#[test]
fn no_dependencies_means_ready_at_once() {
    let t0 = Instant::now();
    let s = Lifecycle::new(Rules::default(), t0);
    assert!(s.started());
    assert_eq!(s.readiness(Instant::now()), Readiness::Ready);
}

#[test]
fn startup_waits_for_required_dependencies() {
    let t0 = Instant::now();
    let rules = rules(vec![sig(true, 1, 1), sig(false, 1, 1)], vec![0]);
    let s = Lifecycle::new(rules, t0);
    assert_eq!(s.readiness(t0), Readiness::Starting);
    let s = s.checked(1, true, t0);
    assert_eq!(
        s.readiness(t0),
        Readiness::Starting,
        "a non-required success does not start"
    );
    let s = s.checked(0, false, t0);
    assert!(!s.started());
    let s = s.checked(0, true, t0 + SEC);
    assert!(s.started());
    assert_eq!(s.readiness(t0 + SEC), Readiness::Ready);
}

#[test]
fn critical_down_is_not_ready_and_non_critical_down_is_degraded() {
    let t0 = Instant::now();
    let rules = rules(vec![sig(true, 1, 1), sig(false, 1, 1)], vec![]);
    let s = Lifecycle::new(rules, t0)
        .checked(0, true, t0)
        .checked(1, true, t0);
    assert_eq!(s.readiness(t0), Readiness::Ready);
    let s = s.checked(1, false, t0);
    assert_eq!(s.readiness(t0), Readiness::Degraded);
    let s = s.checked(0, false, t0);
    assert_eq!(s.readiness(t0), Readiness::NotReady);
}

/// `/readyz?scope=instance`, the ECS target group's path: a shared critical dependency down
/// degrades (the fleet keeps its tasks), a local one still fails (a new task can cure it).
#[test]
fn the_instance_scope_counts_only_local_critical_signals() {
    let t0 = Instant::now();
    let mut registry = Registry::new();
    for (name, local) in [("s0", false), ("s1", true)] {
        registry
            .register(SignalRules {
                name: name.into(),
                source: Source::Dependency(Kind::Http),
                critical: true,
                instance_local: local,
                failure_threshold: 1,
                success_threshold: 1,
                stale_after: 65 * SEC,
                fleet_outage_degrades: false,
            })
            .unwrap();
    }
    let rules = Rules {
        signals: registry,
        ..Rules::default()
    };
    let s = Lifecycle::new(rules, t0)
        .checked(0, true, t0)
        .checked(1, true, t0);
    assert_eq!(s.readiness_in(Scope::Instance, t0), Readiness::Ready);
    let s = s.checked(0, false, t0);
    assert_eq!(s.readiness(t0), Readiness::NotReady);
    assert_eq!(s.readiness_in(Scope::Instance, t0), Readiness::Degraded);
    let s = s.checked(1, false, t0);
    assert_eq!(s.readiness_in(Scope::Instance, t0), Readiness::NotReady);
    let s = s.checked(0, true, t0).checked(1, true, t0);
    let s = s.transition(Event::DrainRequested, t0);
    assert_eq!(
        s.readiness_in(Scope::Instance, t0),
        Readiness::Draining,
        "a drain still takes the instance out"
    );
}

#[test]
fn thresholds_give_hysteresis_after_the_first_result() {
    let t0 = Instant::now();
    let rules = rules(vec![sig(true, 3, 2)], vec![]);
    let mut s = Lifecycle::new(rules, t0).checked(0, true, t0);
    assert!(s.is_up(sid(&s, 0), t0), "the first result counts at once");
    for n in 1..=2 {
        s = s.checked(0, false, t0);
        assert!(s.is_up(sid(&s, 0), t0), "still up after {n} failures of 3");
    }
    s = s.checked(0, false, t0);
    assert!(!s.is_up(sid(&s, 0), t0));
    s = s.checked(0, true, t0);
    assert!(!s.is_up(sid(&s, 0), t0), "one success of 2 is not enough");
    s = s.checked(0, true, t0);
    assert!(s.is_up(sid(&s, 0), t0));
}

#[test]
fn a_stale_result_counts_as_down() {
    let t0 = Instant::now();
    let rules = rules(vec![sig(true, 1, 1)], vec![]);
    let s = Lifecycle::new(rules, t0).checked(0, true, t0);
    assert_eq!(s.readiness(t0 + 65 * SEC), Readiness::Ready);
    assert_eq!(s.readiness(t0 + 66 * SEC), Readiness::NotReady);
}

#[test]
fn drain_from_starting_and_serving_and_started_latch_survives_it() {
    let t0 = Instant::now();
    let s = Lifecycle::new(Rules::default(), t0).transition(Event::DrainRequested, t0);
    assert_eq!(s.readiness(t0), Readiness::Draining);
    assert!(s.started(), "/startupz stays as it was while draining");
    let beats = Beats {
        own: Some(t0),
        agent: None,
    };
    assert!(s.liveness(t0, beats).is_live());
    let s = s.transition(Event::DrainFinished, t0);
    assert_eq!(s.phase(), Phase::Drained);

    let rules = rules(vec![sig(true, 1, 1)], vec![0]);
    let s = Lifecycle::new(rules, t0).transition(Event::DrainRequested, t0);
    assert!(!s.started());
    assert_eq!(s.readiness(t0), Readiness::Draining);
    let s = s.checked(0, true, t0);
    assert!(
        matches!(s.phase(), Phase::Draining { .. }),
        "a success does not leave Draining"
    );
}

#[test]
fn finishing_a_drain_that_never_began_changes_nothing() {
    let t0 = Instant::now();
    let s = Lifecycle::new(Rules::default(), t0);
    let t = s.clone().transition(Event::DrainFinished, Instant::now());
    assert_eq!(s, t);
}

#[test]
fn a_pushed_signal_expires_after_its_ttl_or_the_reports_own() {
    let t0 = Instant::now();
    let s = Lifecycle::new(rules(vec![pushed(false, 60 * SEC)], vec![]), t0);
    assert_eq!(
        s.readiness(t0),
        Readiness::Degraded,
        "no report yet is down"
    );
    assert_eq!(s.down_reason(sid(&s, 0), t0), "no report yet");
    let s = s.checked(0, true, t0);
    assert_eq!(s.readiness(t0 + 60 * SEC), Readiness::Ready);
    assert_eq!(s.readiness(t0 + 61 * SEC), Readiness::Degraded);
    assert_eq!(
        s.down_reason(sid(&s, 0), t0 + 61 * SEC),
        "last report expired (1m 1s old)"
    );
    let id = sid(&s, 0);
    let s = s.transition(observed(id, true, Some(5 * SEC)), t0);
    assert!(s.is_up(id, t0 + 5 * SEC));
    assert!(!s.is_up(id, t0 + 6 * SEC), "the report's own ttl wins");
}

#[test]
fn a_critical_pushed_signal_down_is_not_ready() {
    let t0 = Instant::now();
    let s = Lifecycle::new(rules(vec![pushed(true, 60 * SEC)], vec![]), t0)
        .checked(0, true, t0)
        .checked(0, false, t0);
    assert_eq!(s.readiness(t0), Readiness::NotReady);
    assert_eq!(s.down_reason(sid(&s, 0), t0), "connection refused");
}

#[test]
fn startup_signal_waits_for_the_agent_and_the_required_signals() {
    let t0 = Instant::now();
    let mut r = rules(vec![sig(true, 1, 1)], vec![0]);
    r.agent.startup_signal = true;
    let s = Lifecycle::new(r, t0).checked(0, true, t0);
    assert!(!s.started(), "the agent has not said it started");
    assert_eq!(s.startup_pending(), vec!["agent (POST /started)"]);
    let s = s.transition(Event::AgentStarted, t0);
    assert!(s.started());
    assert!(s.startup_pending().is_empty());
}

#[test]
fn agent_heartbeat_waits_for_the_startup_budget_then_goes_stale() {
    let t0 = Instant::now();
    let mut r = rules(vec![], vec![]);
    r.agent.heartbeat_required = true;
    r.agent.stall_after = 10 * SEC;
    r.startup_timeout = 120 * SEC;
    let s = Lifecycle::new(r, t0);
    let own = |t| Some(t);
    let at = |t: Instant, agent| s.liveness(t, Beats { own: own(t), agent });
    assert_eq!(at(t0 + 120 * SEC, None).agent, AgentBeat::Waiting);
    assert_eq!(at(t0 + 121 * SEC, None).agent, AgentBeat::Never);
    assert!(!at(t0 + 121 * SEC, None).is_live());
    let beat = Some(t0 + 5 * SEC);
    assert_eq!(at(t0 + 15 * SEC, beat).agent, AgentBeat::Fresh);
    assert_eq!(
        at(t0 + 16 * SEC, beat).agent,
        AgentBeat::Stale { age: 11 * SEC }
    );
    assert!(!at(t0 + 16 * SEC, beat).is_live());
}

#[test]
fn own_heartbeat_goes_stale_after_stall_after() {
    let t0 = Instant::now();
    let s = Lifecycle::new(Rules::default(), t0);
    let beats = Beats {
        own: Some(t0),
        agent: None,
    };
    assert!(s.liveness(t0 + 10 * SEC, beats).is_live());
    assert!(!s.liveness(t0 + 11 * SEC, beats).is_live());
    assert!(!s.liveness(t0, Beats::default()).is_live(), "never beat");
}

#[test]
fn readiness_becomes_http_in_one_place() {
    assert_eq!(Readiness::Ready.http_status(429), 200);
    assert_eq!(Readiness::Degraded.http_status(200), 200);
    assert_eq!(Readiness::Degraded.http_status(429), 429);
    assert!(!Readiness::Degraded.is_ready(429));
    assert!(Readiness::Degraded.is_ready(200));
    for r in [
        Readiness::Starting,
        Readiness::NotReady,
        Readiness::Draining,
        Readiness::Drained,
    ] {
        assert_eq!(r.http_status(200), 503);
    }
}

// ---- properties ----

#[derive(Debug, Clone)]
enum Step {
    Observe {
        signal: usize,
        ok: bool,
        ttl_ms: Option<u64>,
        after_ms: u64,
    },
    AgentStarted,
    Drain,
    Finish,
}

/// Up to 5 signals, dependencies and pushed ones mixed, with any rules and startup gate.
fn arb_rules() -> impl Strategy<Value = Rules> {
    let one = (any::<bool>(), any::<bool>(), 1u32..4, 1u32..4, 1u64..120).prop_map(
        |(is_pushed, critical, f, s, stale)| {
            let source = if is_pushed {
                Source::Pushed
            } else {
                Source::Dependency(Kind::OpenAi)
            };
            (source, critical, f, s, Duration::from_secs(stale))
        },
    );
    (
        prop::collection::vec(one, 0..5),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(|(signals, startup_signal, heartbeat_required)| {
            let n = signals.len();
            (
                Just(signals),
                prop::collection::vec(0..n.max(1), 0..n.max(1) + 1),
            )
                .prop_map(move |(signals, req)| {
                    let mut r = rules(signals, if n == 0 { vec![] } else { req });
                    r.agent.startup_signal = startup_signal;
                    r.agent.heartbeat_required = heartbeat_required;
                    r
                })
        })
}

fn arb_steps(n: usize) -> impl Strategy<Value = Vec<Step>> {
    let observe = (
        0..n.max(1),
        any::<bool>(),
        prop::option::of(1u64..90_000),
        0u64..40_000,
    )
        .prop_map(|(signal, ok, ttl_ms, after_ms)| Step::Observe {
            signal,
            ok,
            ttl_ms,
            after_ms,
        });
    prop::collection::vec(
        prop_oneof![
            8 => observe,
            1 => Just(Step::AgentStarted),
            1 => Just(Step::Drain),
            1 => Just(Step::Finish)
        ],
        0..60,
    )
}

fn apply(s: Lifecycle, step: &Step, now: Instant) -> Lifecycle {
    match step {
        Step::Observe {
            signal, ok, ttl_ms, ..
        } => {
            if s.rules().signals.is_empty() {
                return s;
            }
            let id = sid(&s, *signal);
            s.transition(observed(id, *ok, ttl_ms.map(Duration::from_millis)), now)
        }
        Step::AgentStarted => s.transition(Event::AgentStarted, now),
        Step::Drain => s.transition(Event::DrainRequested, now),
        Step::Finish => s.transition(Event::DrainFinished, now),
    }
}

fn with_steps() -> impl Strategy<Value = (Rules, Vec<Step>)> {
    arb_rules().prop_flat_map(|r| {
        let n = r.signals.len();
        (Just(r), arb_steps(n))
    })
}

proptest! {
    /// No dependency result and no pushed capability ever changes liveness, whatever the beats.
    #[test]
    fn signals_never_change_liveness(
        (rules, steps) in with_steps(),
        own_lag_ms in 0u64..20_000,
        agent_lag_ms in prop::option::of(0u64..60_000),
    ) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut s = Lifecycle::new(rules, t0);
        for step in &steps {
            if let Step::Observe { after_ms, .. } = step { now += Duration::from_millis(*after_ms); }
            let beats = Beats {
                own: now.checked_sub(Duration::from_millis(own_lag_ms)),
                agent: agent_lag_ms.and_then(|l| now.checked_sub(Duration::from_millis(l))),
            };
            let next = apply(s.clone(), step, now);
            if matches!(step, Step::Observe { .. } | Step::AgentStarted) {
                prop_assert_eq!(s.liveness(now, beats), next.liveness(now, beats));
            }
            s = next;
        }
    }

    /// Drained is terminal; nothing leaves Draining except Drained; started never goes back.
    #[test]
    fn drain_is_one_way((rules, steps) in with_steps()) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut s = Lifecycle::new(rules, t0);
        for step in &steps {
            if let Step::Observe { after_ms, .. } = step { now += Duration::from_millis(*after_ms); }
            let next = apply(s.clone(), step, now);
            match s.phase() {
                Phase::Drained => prop_assert_eq!(&next, &s),
                Phase::Draining { .. } => {
                    let ok = matches!(next.phase(), Phase::Draining { .. } | Phase::Drained);
                    prop_assert!(ok, "left Draining for {:?}", next.phase());
                }
                _ => {}
            }
            if s.started() { prop_assert!(next.started()); }
            if matches!(next.phase(), Phase::Draining { .. } | Phase::Drained) {
                prop_assert!(!next.readiness(now).is_ready(200));
            }
            s = next;
        }
    }

    /// A critical dependency that breaks shows in readiness within one interval plus one
    /// timeout: the next check starts at most one interval later and reports within its timeout.
    /// Whatever came before (any history of results), that one failure is enough at threshold 1.
    #[test]
    fn critical_failure_is_visible_within_interval_plus_timeout(
        history in prop::collection::vec(any::<bool>(), 0..20),
        interval_s in 1u64..120,
        timeout_frac in 1u64..100,
        others_up in any::<bool>(),
    ) {
        let interval = Duration::from_secs(interval_s);
        let timeout = interval * timeout_frac as u32 / 100;
        let stale = interval * 2 + timeout;
        let dep = |critical| (Source::Dependency(Kind::Http), critical, 1, 1, stale);
        let t0 = Instant::now();
        let mut now = t0;
        let mut s = Lifecycle::new(rules(vec![dep(true), dep(false)], vec![0]), t0).checked(0, true, now);
        for ok in history {
            now += interval;
            s = s.checked(0, ok, now).checked(1, others_up, now);
        }
        now += interval;
        s = s.checked(0, true, now);
        // It breaks just after that check; the next starts one interval later and reports
        // within its timeout.
        let reported = now + interval + timeout;
        s = s.checked(0, false, reported);
        prop_assert_eq!(s.readiness(reported), Readiness::NotReady);
    }

    /// A stuck source (no results at all, polled or pushed) cannot keep an instance ready: its
    /// signal goes down once its bound passes.
    #[test]
    fn a_stuck_source_goes_stale(stale_s in 1u64..600, critical in any::<bool>(), is_pushed in any::<bool>()) {
        let t0 = Instant::now();
        let stale = Duration::from_secs(stale_s);
        let signal = if is_pushed { pushed(critical, stale) } else { (Source::Dependency(Kind::Tcp), critical, 1, 1, stale) };
        let s = Lifecycle::new(rules(vec![signal], vec![]), t0).checked(0, true, t0);
        prop_assert_eq!(s.readiness(t0 + stale), Readiness::Ready);
        let later = s.readiness(t0 + stale + Duration::from_millis(1));
        prop_assert_eq!(later, if critical { Readiness::NotReady } else { Readiness::Degraded });
    }
}

#[test]
fn a_reported_reason_is_made_safe_to_show_and_never_empty() {
    let failed = |r: &str| Observation::reported(false, r, None).outcome;
    assert_eq!(
        failed("search\nAPI\u{7} answers 500 "),
        Outcome::Failed {
            reason: "search API  answers 500".into()
        }
    );
    assert_eq!(
        failed(" \n"),
        Outcome::Failed {
            reason: "reported down by the agent".into()
        }
    );
    let Outcome::Failed { reason } = failed(&"x".repeat(5000)) else {
        panic!()
    };
    assert_eq!(reason.chars().count(), 200);
    let up = Observation::reported(true, "ignored", Some(5 * SEC));
    assert_eq!(
        (up.outcome, up.ttl, up.latency),
        (Outcome::Success, Some(5 * SEC), None)
    );
}

/// `[fleet]`: a shared critical dependency down for the whole fleet degrades where
/// `fleet_outage = "degraded"` says so (and fails readiness where it does not); down for this
/// instance only, it fails readiness for `scope=instance` too.
#[test]
fn the_fleets_spread_decides_what_a_shared_outage_does() {
    let t0 = Instant::now();
    let mut registry = Registry::new();
    // s0 tolerates a fleet-wide outage, s1 does not.
    for (name, degrades) in [("s0", true), ("s1", false)] {
        registry
            .register(SignalRules {
                name: name.into(),
                source: Source::Dependency(Kind::OpenAi),
                critical: true,
                instance_local: false,
                failure_threshold: 1,
                success_threshold: 1,
                stale_after: 65 * SEC,
                fleet_outage_degrades: degrades,
            })
            .unwrap();
    }
    let rules = Rules {
        signals: registry,
        ..Rules::default()
    };
    let down = |spread: Spread| Observation {
        outcome: Outcome::Failed {
            reason: "HTTP 503".into(),
        },
        spread,
        latency: Some(Duration::from_millis(3)),
        ttl: None,
    };
    let s = Lifecycle::new(rules, t0)
        .checked(0, true, t0)
        .checked(1, true, t0);
    let on = |s: Lifecycle, i: usize, spread: Spread| {
        let id = sid(&s, i);
        s.transition(
            Event::Observed {
                signal: id,
                observation: down(spread),
            },
            t0,
        )
    };
    let s = on(s, 0, Spread::FleetWide);
    assert_eq!(
        s.readiness(t0),
        Readiness::Degraded,
        "fleet-wide, tolerated"
    );
    assert!(s.down_reason(sid(&s, 0), t0).contains("fleet-wide"));
    let s = on(s, 1, Spread::FleetWide);
    assert_eq!(
        s.readiness(t0),
        Readiness::NotReady,
        "fleet-wide, not tolerated"
    );
    assert_eq!(s.readiness_in(Scope::Instance, t0), Readiness::Degraded);
    let s = s.checked(1, true, t0);
    let s = on(s, 0, Spread::Local);
    assert_eq!(
        s.readiness(t0),
        Readiness::NotReady,
        "this instance's own path"
    );
    assert_eq!(s.readiness_in(Scope::Instance, t0), Readiness::NotReady);
    assert!(s.down_reason(sid(&s, 0), t0).contains("this instance only"));
    let s = on(s, 0, Spread::Unknown);
    assert_eq!(s.readiness(t0), Readiness::NotReady);
    assert_eq!(s.readiness_in(Scope::Instance, t0), Readiness::Degraded);
}
