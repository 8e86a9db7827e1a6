//! The poller's schedule on tokio's paused clock: every time below is exact, no sleeps.

use std::sync::Mutex;

use super::*;

const SEC: Duration = Duration::from_secs(1);

/// Records when each check started; answers from a script (delay, report), then successes.
#[derive(Debug, Default)]
struct Scripted {
    calls: Mutex<Vec<Instant>>,
    script: Mutex<Vec<(Duration, Report)>>,
}

impl Scripted {
    fn with(script: Vec<(Duration, Report)>) -> Self {
        Scripted {
            calls: Mutex::default(),
            script: Mutex::new(script.into_iter().rev().collect()),
        }
    }
}

impl Probe for Arc<Scripted> {
    fn check(&self) -> impl Future<Output = Report> + Send {
        let this = self.clone();
        async move {
            this.calls.lock().unwrap().push(Instant::now());
            let step = this.script.lock().unwrap().pop();
            let (delay, report) = step.unwrap_or((Duration::ZERO, Report::success()));
            tokio::time::sleep(delay).await;
            report
        }
    }
}

fn id() -> SignalId {
    let mut r = Registry::new();
    r.register(vitals_core::signal::SignalRules {
        name: "dep".into(),
        source: vitals_core::signal::Source::Pushed,
        critical: true,
        instance_local: false,
        failure_threshold: 1,
        success_threshold: 1,
        stale_after: SEC,
        fleet_outage_degrades: false,
    })
    .unwrap()
}

/// Runs one scripted dependency for `for_` of paused time; returns the check start times
/// (relative to the start) and what was sent.
async fn run(
    schedule: Schedule,
    script: Vec<(Duration, Report)>,
    for_: Duration,
) -> (Vec<Duration>, Vec<Checked>) {
    let probe = Arc::new(Scripted::with(script));
    let poller = Poller::from_probes([(id(), "dep".to_owned(), schedule, probe.clone())]);
    let (tx, mut rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let t0 = Instant::now();
    let task = tokio::spawn(poller.run(tx, cancel.clone()));
    tokio::time::sleep(for_).await;
    cancel.cancel();
    task.await.unwrap();
    let mut sent = Vec::new();
    while let Ok(c) = rx.try_recv() {
        sent.push(c);
    }
    let calls = probe
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|t| *t - t0)
        .collect();
    (calls, sent)
}

fn every(interval: Duration, timeout: Duration) -> Schedule {
    Schedule { interval, timeout }
}

#[tokio::test(start_paused = true)]
async fn first_check_within_the_jitter_then_exactly_every_interval() {
    let schedule = every(30 * SEC, 5 * SEC);
    assert_eq!(schedule.max_offset(), Duration::from_millis(500));
    let (calls, sent) = run(schedule, vec![(2 * SEC, Report::success())], 125 * SEC).await;
    assert_eq!(calls.len(), 5, "{calls:?}");
    let offset = calls[0];
    assert!(
        offset <= Duration::from_millis(500),
        "first check at {offset:?}"
    );
    for (n, at) in calls.iter().enumerate() {
        assert_eq!(
            *at,
            offset + 30 * SEC * n as u32,
            "check {n} keeps the exact period, whatever the last check took"
        );
    }
    assert_eq!(sent.len(), 5);
    assert_eq!(sent[0].latency, 2 * SEC);
}

#[tokio::test(start_paused = true)]
async fn the_offset_is_a_tenth_of_a_short_interval() {
    assert_eq!(
        every(SEC, Duration::from_millis(500)).max_offset(),
        Duration::from_millis(100)
    );
    for _ in 0..20 {
        let (calls, _) = run(every(SEC, Duration::from_millis(500)), vec![], SEC / 2).await;
        assert!(calls[0] <= Duration::from_millis(100), "{calls:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_hanging_check_times_out_and_the_period_holds() {
    let (calls, sent) = run(
        every(10 * SEC, 2 * SEC),
        vec![(3600 * SEC, Report::success())],
        25 * SEC,
    )
    .await;
    assert_eq!(sent[0].report.outcome, Outcome::TimedOut { after: 2 * SEC });
    assert_eq!(sent[0].latency, 2 * SEC);
    assert_eq!(calls[1] - calls[0], 10 * SEC);
    assert_eq!(calls[2] - calls[1], 10 * SEC);
}

#[tokio::test(start_paused = true)]
async fn retry_after_delays_the_next_check_and_a_short_one_does_not() {
    let asked = |pause| Report {
        retry_after: Some(pause),
        ..Report::failed("429 Too Many Requests")
    };
    let (calls, _) = run(
        every(10 * SEC, 2 * SEC),
        vec![(SEC, asked(45 * SEC)), (Duration::ZERO, asked(3 * SEC))],
        70 * SEC,
    )
    .await;
    // The first check ends 1 s after it starts and asks for 45 s: the next starts 46 s after the
    // first, not 10 s. The second asks for 3 s, less than the interval: the period resumes.
    assert_eq!(calls[1] - calls[0], 46 * SEC);
    assert_eq!(calls[2] - calls[1], 10 * SEC);
}

#[tokio::test(start_paused = true)]
async fn an_absurd_retry_after_cannot_overflow_the_clock() {
    let report = Report {
        retry_after: Some(Duration::MAX),
        ..Report::failed("429 Too Many Requests")
    };
    let (calls, _) = run(every(10 * SEC, 2 * SEC), vec![(SEC, report)], 25 * SEC).await;
    assert_eq!(
        calls.len(),
        3,
        "an unrepresentable pause is ignored: {calls:?}"
    );
}

#[test]
fn no_burst_of_catch_up_checks_after_a_stall() {
    let t0 = Instant::now();
    // The runtime stalled for 95 s after a check of the 10 s slot at t0: the next check runs
    // now, once, not nine times in a row.
    let now = t0 + 95 * SEC;
    let next = next_check(t0, 10 * SEC, t0 + SEC, None, now);
    assert_eq!(next, now);
    // And the one after that is one interval later, not back on the old grid.
    assert_eq!(
        next_check(next, 10 * SEC, now + SEC, None, now + SEC),
        now + 10 * SEC
    );
}
