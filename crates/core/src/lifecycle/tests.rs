use super::*;
use proptest::prelude::*;

const SEC: Duration = Duration::from_secs(1);

fn dep(critical: bool, failure_threshold: u32, success_threshold: u32) -> DependencyRules {
    DependencyRules {
        critical,
        failure_threshold,
        success_threshold,
        stale_after: 65 * SEC,
    }
}

fn checked(dependency: usize, ok: bool) -> Event {
    Event::Checked {
        dependency,
        outcome: if ok {
            Outcome::Success
        } else {
            Outcome::Failed {
                reason: "connection refused".into(),
            }
        },
        latency: Duration::from_millis(3),
    }
}

#[test]
fn no_dependencies_means_ready_at_once() {
    let s = Lifecycle::new(Rules::default());
    assert!(s.started());
    assert_eq!(s.readiness(Instant::now()), Readiness::Ready);
}

#[test]
fn startup_waits_for_required_dependencies() {
    let t0 = Instant::now();
    let rules = Rules {
        dependencies: vec![dep(true, 1, 1), dep(false, 1, 1)],
        startup_require: vec![0],
    };
    let s = Lifecycle::new(rules);
    assert_eq!(s.readiness(t0), Readiness::Starting);
    let s = s.transition(checked(1, true), t0);
    assert_eq!(
        s.readiness(t0),
        Readiness::Starting,
        "a non-required success does not start"
    );
    let s = s.transition(checked(0, false), t0);
    assert!(!s.started());
    let s = s.transition(checked(0, true), t0 + SEC);
    assert!(s.started());
    assert_eq!(s.readiness(t0 + SEC), Readiness::Ready);
}

#[test]
fn critical_down_is_not_ready_and_non_critical_down_is_degraded() {
    let t0 = Instant::now();
    let rules = Rules {
        dependencies: vec![dep(true, 1, 1), dep(false, 1, 1)],
        startup_require: vec![],
    };
    let s = Lifecycle::new(rules)
        .transition(checked(0, true), t0)
        .transition(checked(1, true), t0);
    assert_eq!(s.readiness(t0), Readiness::Ready);
    let s = s.transition(checked(1, false), t0);
    assert_eq!(s.readiness(t0), Readiness::Degraded);
    let s = s.transition(checked(0, false), t0);
    assert_eq!(s.readiness(t0), Readiness::NotReady);
}

#[test]
fn thresholds_give_hysteresis_after_the_first_result() {
    let t0 = Instant::now();
    let rules = Rules {
        dependencies: vec![dep(true, 3, 2)],
        startup_require: vec![],
    };
    let mut s = Lifecycle::new(rules).transition(checked(0, true), t0);
    assert!(s.is_up(0, t0), "the first result counts at once");
    for n in 1..=2 {
        s = s.transition(checked(0, false), t0);
        assert!(s.is_up(0, t0), "still up after {n} failures of 3");
    }
    s = s.transition(checked(0, false), t0);
    assert!(!s.is_up(0, t0));
    s = s.transition(checked(0, true), t0);
    assert!(!s.is_up(0, t0), "one success of 2 is not enough");
    s = s.transition(checked(0, true), t0);
    assert!(s.is_up(0, t0));
}

#[test]
fn a_stale_result_counts_as_down() {
    let t0 = Instant::now();
    let rules = Rules {
        dependencies: vec![dep(true, 1, 1)],
        startup_require: vec![],
    };
    let s = Lifecycle::new(rules).transition(checked(0, true), t0);
    assert_eq!(s.readiness(t0 + 65 * SEC), Readiness::Ready);
    assert_eq!(s.readiness(t0 + 66 * SEC), Readiness::NotReady);
}

#[test]
fn drain_from_starting_and_serving_and_started_latch_survives_it() {
    let t0 = Instant::now();
    let s = Lifecycle::new(Rules::default()).transition(Event::DrainRequested, t0);
    assert_eq!(s.readiness(t0), Readiness::Draining);
    assert!(s.started(), "/startupz stays as it was while draining");
    assert!(s.live());
    let s = s.transition(Event::DrainFinished, t0);
    assert_eq!(s.phase(), Phase::Drained);

    let rules = Rules {
        dependencies: vec![dep(true, 1, 1)],
        startup_require: vec![0],
    };
    let s = Lifecycle::new(rules).transition(Event::DrainRequested, t0);
    assert!(!s.started());
    assert_eq!(s.readiness(t0), Readiness::Draining);
    let s = s.transition(checked(0, true), t0);
    assert!(
        matches!(s.phase(), Phase::Draining { .. }),
        "a success does not leave Draining"
    );
}

#[test]
fn finishing_a_drain_that_never_began_changes_nothing() {
    let s = Lifecycle::new(Rules::default());
    let t = s.clone().transition(Event::DrainFinished, Instant::now());
    assert_eq!(s, t);
}

// ---- properties ----

#[derive(Debug, Clone)]
enum Step {
    Check { dep: usize, ok: bool, after_ms: u64 },
    Drain,
    Finish,
}

fn arb_rules() -> impl Strategy<Value = Rules> {
    prop::collection::vec((any::<bool>(), 1u32..4, 1u32..4, 1u64..120), 0..5).prop_flat_map(
        |deps| {
            let n = deps.len();
            let rules: Vec<DependencyRules> = deps
                .into_iter()
                .map(|(critical, f, s, stale)| DependencyRules {
                    critical,
                    failure_threshold: f,
                    success_threshold: s,
                    stale_after: Duration::from_secs(stale),
                })
                .collect();
            (
                Just(rules),
                prop::collection::vec(0..n.max(1), 0..n.max(1) + 1),
            )
                .prop_map(move |(dependencies, req)| Rules {
                    startup_require: if n == 0 { vec![] } else { req },
                    dependencies,
                })
        },
    )
}

fn arb_steps(n: usize) -> impl Strategy<Value = Vec<Step>> {
    let check = (0..n.max(1), any::<bool>(), 0u64..40_000)
        .prop_map(|(dep, ok, after_ms)| Step::Check { dep, ok, after_ms });
    prop::collection::vec(
        prop_oneof![8 => check, 1 => Just(Step::Drain), 1 => Just(Step::Finish)],
        0..60,
    )
}

fn apply(s: Lifecycle, step: &Step, now: Instant) -> Lifecycle {
    match step {
        Step::Check { dep, ok, .. } => s.transition(checked(*dep, *ok), now),
        Step::Drain => s.transition(Event::DrainRequested, now),
        Step::Finish => s.transition(Event::DrainFinished, now),
    }
}

proptest! {
    /// No dependency result ever changes liveness.
    #[test]
    fn dependency_results_never_change_liveness(
        (rules, steps) in arb_rules().prop_flat_map(|r| { let n = r.dependencies.len(); (Just(r), arb_steps(n)) })
    ) {
        let mut now = Instant::now();
        let mut s = Lifecycle::new(rules);
        for step in &steps {
            if let Step::Check { after_ms, .. } = step { now += Duration::from_millis(*after_ms); }
            let before = s.live();
            let next = apply(s.clone(), step, now);
            if matches!(step, Step::Check { .. }) {
                prop_assert_eq!(before, next.live());
            }
            s = next;
        }
    }

    /// Drained is terminal; nothing leaves Draining except Drained; started never goes back.
    #[test]
    fn drain_is_one_way(
        (rules, steps) in arb_rules().prop_flat_map(|r| { let n = r.dependencies.len(); (Just(r), arb_steps(n)) })
    ) {
        let mut now = Instant::now();
        let mut s = Lifecycle::new(rules);
        for step in &steps {
            if let Step::Check { after_ms, .. } = step { now += Duration::from_millis(*after_ms); }
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
                prop_assert!(!next.readiness(now).is_serving());
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
        break_at_frac in 0u64..100,
        others_up in any::<bool>(),
    ) {
        let interval = Duration::from_secs(interval_s);
        let timeout = interval * timeout_frac as u32 / 100;
        let stale = interval * 2 + timeout;
        let rules = Rules {
            dependencies: vec![
                DependencyRules { critical: true, failure_threshold: 1, success_threshold: 1, stale_after: stale },
                DependencyRules { critical: false, failure_threshold: 1, success_threshold: 1, stale_after: stale },
            ],
            startup_require: vec![0],
        };
        let mut now = Instant::now();
        let mut s = Lifecycle::new(rules).transition(checked(0, true), now);
        for ok in history {
            now += interval;
            s = s.transition(checked(0, ok), now).transition(checked(1, others_up), now);
        }
        now += interval;
        s = s.transition(checked(0, true), now);
        // The dependency breaks somewhere within the next interval; the next check starts at the
        // end of it and its failure arrives within the timeout.
        let broke = now + interval * break_at_frac as u32 / 100;
        let reported = now + interval + timeout;
        s = s.transition(checked(0, false), reported);
        prop_assert!(reported <= broke + interval + timeout + interval);
        prop_assert_eq!(s.readiness(reported), Readiness::NotReady);
    }

    /// With the poller stuck (no results at all), readiness fails once the staleness bound passes.
    #[test]
    fn a_stuck_poller_cannot_keep_an_instance_ready(stale_s in 1u64..600, critical in any::<bool>()) {
        let t0 = Instant::now();
        let rules = Rules {
            dependencies: vec![DependencyRules { critical, failure_threshold: 1, success_threshold: 1, stale_after: Duration::from_secs(stale_s) }],
            startup_require: vec![],
        };
        let s = Lifecycle::new(rules).transition(checked(0, true), t0);
        prop_assert_eq!(s.readiness(t0 + Duration::from_secs(stale_s)), Readiness::Ready);
        let later = s.readiness(t0 + Duration::from_secs(stale_s) + Duration::from_millis(1));
        prop_assert_eq!(later, if critical { Readiness::NotReady } else { Readiness::Degraded });
    }
}
