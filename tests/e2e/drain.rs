use std::time::{Duration, Instant};

use vitals_test_util::VitalsProcess;

use crate::{bin, client, expect_status_within, status};

#[tokio::test]
async fn sigterm_drains_readiness_first_then_exits_zero() {
    let mut v = VitalsProcess::start(&bin(), "[drain]\ndelay = \"2s\"\ngrace = \"1s\"\n", &[]);
    assert_eq!(status(&v.url("/readyz")).await, 200);
    let sent = Instant::now();
    v.signal("TERM");
    expect_status_within(&v.url("/readyz"), 503, Duration::from_millis(500)).await;
    // Throughout the delay, liveness stays 200 and readiness stays 503.
    while sent.elapsed() < Duration::from_millis(1500) {
        assert_eq!(status(&v.url("/healthz")).await, 200);
        assert_eq!(status(&v.url("/readyz")).await, 503);
        assert_eq!(
            status(&v.url("/startupz")).await,
            200,
            "/startupz is unchanged while draining"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = client()
        .get(v.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("vitals_draining 1") && metrics.contains("vitals_ready 0"),
        "{metrics}"
    );
    let exit = v
        .wait_exit(Duration::from_secs(5))
        .expect("vitals did not exit after delay + grace");
    assert_eq!(exit.code(), Some(0));
    assert!(
        sent.elapsed() >= Duration::from_secs(2),
        "exited before drain.delay: {:?}",
        sent.elapsed()
    );
}

#[tokio::test]
async fn sigint_drains_too_and_a_second_signal_exits_at_once() {
    let mut v = VitalsProcess::start(&bin(), "[drain]\ndelay = \"30s\"\n", &[]);
    v.signal("INT");
    expect_status_within(&v.url("/readyz"), 503, Duration::from_millis(500)).await;
    assert_eq!(status(&v.url("/healthz")).await, 200);
    let t = Instant::now();
    v.signal("INT");
    let exit = v
        .wait_exit(Duration::from_secs(5))
        .expect("second signal did not end it");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(exit.code(), Some(130));
}

#[tokio::test]
async fn post_drain_is_for_loopback_and_starts_the_same_sequence() {
    let mut v = VitalsProcess::start(&bin(), "[drain]\ndelay = \"200ms\"\ngrace = \"1s\"\n", &[]);
    let get = client().get(v.url("/drain")).send().await.unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "POST");
    let r = client().post(v.url("/drain")).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let exit = v
        .wait_exit(Duration::from_secs(5))
        .expect("did not exit after POST /drain");
    assert_eq!(exit.code(), Some(0));
    assert!(v
        .logs()
        .iter()
        .any(|l| l.contains("drain requested over HTTP")));
}

#[tokio::test]
async fn sighup_drains_like_sigterm_instead_of_killing_vitals() {
    let mut v = VitalsProcess::start(&bin(), "[drain]\ndelay = \"1s\"\ngrace = \"1s\"\n", &[]);
    let sent = Instant::now();
    v.signal("HUP");
    expect_status_within(&v.url("/readyz"), 503, Duration::from_millis(500)).await;
    assert_eq!(
        status(&v.url("/healthz")).await,
        200,
        "alive through the delay"
    );
    let exit = v
        .wait_exit(Duration::from_secs(5))
        .expect("did not exit after the drain");
    assert_eq!(exit.code(), Some(0), "a drain, not death by SIGHUP");
    assert!(sent.elapsed() >= Duration::from_secs(1));
    assert!(v.logs().iter().any(|l| l.contains("SIGHUP")));
}

#[tokio::test]
async fn sigusr1_and_sigusr2_are_ignored_not_fatal() {
    let mut v = VitalsProcess::start(&bin(), "[drain]\ndelay = \"0s\"\ngrace = \"1s\"\n", &[]);
    v.signal("USR1");
    v.signal("USR2");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(&v.url("/readyz")).await, 200, "still serving");
    assert!(v.wait_exit(Duration::from_millis(10)).is_none());
    assert!(v
        .logs()
        .iter()
        .any(|l| l.contains("SIGUSR1") && l.contains("ignored")));
    v.signal("TERM");
    let exit = v
        .wait_exit(Duration::from_secs(5))
        .expect("exit after TERM");
    assert_eq!(exit.code(), Some(0));
}

#[tokio::test]
async fn drain_under_load_fails_no_request_during_the_delay_and_ends_within_grace() {
    let mut v = VitalsProcess::start(&bin(), "[drain]\ndelay = \"2s\"\ngrace = \"1s\"\n", &[]);
    let stop = tokio_util::sync::CancellationToken::new();
    let sent_at = std::sync::Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut load = Vec::new();
    for i in 0..8 {
        let url = v.url(if i % 2 == 0 { "/readyz" } else { "/healthz" });
        let (stop, sent_at) = (stop.clone(), sent_at.clone());
        load.push(tokio::spawn(async move {
            let c = client();
            let (mut ok, mut failed_in_delay) = (0u64, Vec::new());
            while !stop.is_cancelled() {
                let t = Instant::now();
                match c.get(&url).send().await {
                    Ok(r) if matches!(r.status().as_u16(), 200 | 503) => ok += 1,
                    other => {
                        // Only a failure inside the delay counts: after it vitals stops accepting.
                        if sent_at
                            .get()
                            .is_some_and(|s| t.duration_since(*s) < Duration::from_millis(1900))
                        {
                            failed_in_delay.push(format!("{other:?}"));
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            (ok, failed_in_delay)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = crate::peak_rss_kib(v.pid());
    let _ = sent_at.set(Instant::now());
    v.signal("TERM");
    let exit = v.wait_exit(Duration::from_secs(10)).expect("no exit");
    let took = sent_at.get().unwrap().elapsed();
    stop.cancel();
    let (mut served, mut failures) = (0, Vec::new());
    for l in load {
        let (ok, failed) = l.await.unwrap();
        served += ok;
        failures.extend(failed);
    }
    assert_eq!(exit.code(), Some(0));
    assert!(
        failures.is_empty(),
        "{} requests failed during the delay: {failures:?}",
        failures.len()
    );
    assert!(served > 1000, "only {served} requests served");
    assert!(
        took >= Duration::from_secs(2) && took <= Duration::from_millis(3500),
        "exit {took:?} after SIGTERM; delay + grace = 3s"
    );
    assert!(rss < 64 * 1024, "peak RSS {rss} KiB under load");
}
