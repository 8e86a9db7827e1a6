// The machine is sans-IO: its tests hand it instants from a fixed origin, not a clock.
#![allow(clippy::disallowed_methods)]

use super::*;

fn rules() -> Rules {
    Rules {
        restart: RestartPolicy::OnFailure,
        backoff: Backoff {
            initial: vitals_core::Duration::from_secs(10),
            max: vitals_core::Duration::from_secs(300),
            reset_after: vitals_core::Duration::from_secs(600),
        },
        failure_threshold: 3,
        start_timeout: Duration::from_secs(120),
        give_up_after: None,
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Crashes at once after each start, and returns the delays the machine chose.
fn crash_loop(m: &mut Machine, t0: Instant, times: usize) -> Vec<Duration> {
    let mut now = t0;
    let mut delays = Vec::new();
    for _ in 0..times {
        m.started(now);
        m.exited(Exit::Code(1), now);
        match m.state().clone() {
            State::BackingOff { until, .. } => {
                delays.push(until - now);
                assert_eq!(m.tick(until - Duration::from_millis(1)), Action::Nothing);
                assert_eq!(m.tick(until), Action::Start);
                now = until;
            }
            other => panic!("expected a backoff, got {other:?}"),
        }
    }
    delays
}

#[test]
fn backoff_doubles_from_initial_to_its_cap_like_kubelet() {
    let mut m = Machine::new(rules());
    let delays = crash_loop(&mut m, Instant::now(), 8);
    assert_eq!(
        delays,
        [10, 20, 40, 80, 160, 300, 300, 300].map(secs).to_vec()
    );
    assert_eq!(m.restarts(), 8);
}

#[test]
fn health_for_reset_after_starts_the_count_again_and_less_does_not() {
    let t0 = Instant::now();
    let mut m = Machine::new(rules());
    crash_loop(&mut m, t0, 3);
    // Ready for 9 minutes, then a crash: the streak goes on (80 s).
    let start = t0 + secs(1000);
    m.started(start);
    assert_eq!(m.health(Health::Ok, start + secs(5)), Action::Nothing);
    m.exited(Exit::Signal(9), start + secs(5 + 540));
    assert!(
        matches!(m.state(), State::BackingOff { until, .. } if *until - (start + secs(545)) == secs(80))
    );
    // Ready for 10 minutes: back to the initial 10 s.
    let start = start + secs(2000);
    m.started(start);
    m.health(Health::Ok, start);
    m.exited(Exit::Signal(9), start + secs(600));
    assert!(
        matches!(m.state(), State::BackingOff { until, .. } if *until - (start + secs(600)) == secs(10))
    );
    assert_eq!(m.streak(), 1);
}

#[test]
fn gives_up_after_the_limit_and_says_why() {
    let t0 = Instant::now();
    let mut m = Machine::new(Rules {
        give_up_after: Some(3),
        ..rules()
    });
    crash_loop(&mut m, t0, 3);
    m.started(t0 + secs(3600));
    m.exited(Exit::Code(2), t0 + secs(3600));
    assert_eq!(
        m.state(),
        &State::Down {
            reason: Reason::Exited(Exit::Code(2)),
            gave_up: true
        }
    );
    assert_eq!(m.phase(), "given_up");
    let (up, why) = m.report(t0 + secs(3601));
    assert!(!up);
    assert_eq!(
        why,
        "given up after 3 restarts in a row (give_up_after): exited with status 2"
    );
    // Nothing brings it back by itself.
    assert_eq!(m.tick(t0 + secs(99_999)), Action::Nothing);
}

#[test]
fn policies_decide_what_an_exit_does() {
    let t0 = Instant::now();
    let case = |restart, exit| {
        let mut m = Machine::new(Rules { restart, ..rules() });
        m.started(t0);
        m.exited(exit, t0 + secs(1));
        m.phase()
    };
    assert_eq!(case(RestartPolicy::OnFailure, Exit::Code(0)), "down");
    assert_eq!(case(RestartPolicy::OnFailure, Exit::Code(3)), "restarting");
    assert_eq!(
        case(RestartPolicy::OnFailure, Exit::Signal(9)),
        "restarting"
    );
    assert_eq!(case(RestartPolicy::Always, Exit::Code(0)), "restarting");
    assert_eq!(case(RestartPolicy::Never, Exit::Code(3)), "down");
}

#[test]
fn a_process_vitals_stopped_is_restarted_even_if_it_exits_cleanly() {
    let t0 = Instant::now();
    let mut m = Machine::new(rules());
    m.started(t0);
    m.health(Health::Ok, t0 + secs(1));
    for i in 1..=2 {
        assert_eq!(
            m.health(Health::Failed("timed out".into()), t0 + secs(i)),
            Action::Nothing
        );
        assert!(m.is_ready(), "below failure_threshold it stays ready");
    }
    let action = m.health(Health::Failed("timed out".into()), t0 + secs(3));
    assert_eq!(
        action,
        Action::Stop(Reason::Unhealthy("timed out (3 checks in a row)".into()))
    );
    // SIGTERM made it exit 0: the reason stays "unhealthy", and it is restarted.
    m.exited(Exit::Code(0), t0 + secs(4));
    assert!(matches!(
        m.state(),
        State::BackingOff {
            reason: Reason::Unhealthy(_),
            ..
        }
    ));
}

#[test]
fn a_success_between_failures_resets_the_threshold() {
    let t0 = Instant::now();
    let mut m = Machine::new(rules());
    m.started(t0);
    m.health(Health::Ok, t0);
    for i in 0..10 {
        let t = t0 + secs(i);
        m.health(Health::Failed("503".into()), t);
        m.health(Health::Failed("503".into()), t);
        assert_eq!(m.health(Health::Ok, t), Action::Nothing);
    }
    assert!(m.is_ready());
}

#[test]
fn loading_waits_for_the_start_budget_and_no_longer() {
    let t0 = Instant::now();
    let mut m = Machine::new(rules());
    m.started(t0);
    for s in [1, 30, 119] {
        assert_eq!(m.health(Health::Loading, t0 + secs(s)), Action::Nothing);
        assert_eq!(
            m.health(Health::Failed("connection refused".into()), t0 + secs(s)),
            Action::Nothing
        );
    }
    assert_eq!(m.next_deadline(), Some(t0 + secs(120)));
    assert_eq!(m.tick(t0 + secs(120)), Action::Stop(Reason::StartTimeout));
    let (up, why) = m.report(t0 + secs(120));
    assert!(!up);
    assert_eq!(why, "restarting: not healthy within start_timeout");
}

#[test]
fn a_stall_stops_a_ready_process_and_nothing_else() {
    let t0 = Instant::now();
    let mut m = Machine::new(rules());
    assert_eq!(m.stalled(Stall::Silent(secs(60))), Action::Nothing, "idle");
    m.started(t0);
    m.health(Health::Ok, t0);
    assert_eq!(
        m.stalled(Stall::Silent(secs(60))),
        Action::Stop(Reason::Stalled(Stall::Silent(secs(60))))
    );
    m.exited(Exit::Signal(9), t0 + secs(61));
    assert_eq!(
        m.stalled(Stall::Silent(secs(60))),
        Action::Nothing,
        "backing off"
    );
}

#[test]
fn the_report_counts_down_the_backoff() {
    let t0 = Instant::now();
    let mut m = Machine::new(rules());
    m.started(t0);
    m.exited(Exit::Code(1), t0);
    assert_eq!(
        m.report(t0 + Duration::from_millis(2500)).1,
        "restarting in 8s: exited with status 1 (restart 1 in a row)"
    );
}

#[test]
fn the_delay_never_overflows() {
    let mut m = Machine::new(Rules {
        backoff: Backoff {
            initial: vitals_core::Duration::from_secs(u64::MAX / 4),
            max: vitals_core::Duration::from_secs(u64::MAX / 2),
            reset_after: vitals_core::Duration::from_secs(1),
        },
        ..rules()
    });
    m.streak = 1000;
    assert!(m.delay() <= Duration::from_secs(u64::MAX / 2));
}
