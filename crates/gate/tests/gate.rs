//! The gate against a real upstream on loopback (a scriptable hyper server: slow answers,
//! streams, hangs), through real connections.

// Real sockets on the wall clock.
#![allow(clippy::disallowed_methods)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vitals_gate::retry::RetryOptions;
use vitals_gate::saturation::SaturationOptions;
use vitals_gate::{BreakerOptions, CircuitState, Gate, Options, Outcome};

const RETRY: RetryOptions = RetryOptions {
    attempts: 2,
    base: Duration::from_millis(10),
    cap: Duration::from_millis(50),
    ratio: 0.2,
    min_per_sec: 1.0,
};

const SATURATION: SaturationOptions = SaturationOptions {
    high_water: 2,
    degrade_after: Duration::from_secs(5),
    recover_after: Duration::from_secs(10),
    full_for: Duration::from_secs(30),
    ttfb_factor: 3.0,
};

/// What the upstream saw.
#[derive(Debug)]
struct Seen {
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    requests: AtomicUsize,
    /// Streams whose client (the gate) went away before the end.
    cancelled: AtomicUsize,
    /// While set, every request gets a 500.
    failing: std::sync::atomic::AtomicBool,
    /// Requests to /warming and /limited so far.
    warming: AtomicUsize,
    limited: AtomicUsize,
    /// `/model`'s slots: beyond them, requests wait inside the upstream, as llama.cpp defers.
    model_slots: tokio::sync::Semaphore,
}

struct InFlight(Arc<Seen>);

impl InFlight {
    fn new(seen: &Arc<Seen>) -> InFlight {
        seen.requests.fetch_add(1, Ordering::SeqCst);
        let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(seen.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a stream dropped before its end.
struct Cancel(Arc<Seen>, bool);

impl Drop for Cancel {
    fn drop(&mut self) {
        if !self.1 {
            self.0.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

type UpBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn query(req: &Request<hyper::body::Incoming>, key: &str) -> u64 {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|p| p.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The upstream: `/slow?ms=N` answers after N ms (`&sse=1`: as a stream of one event, as
/// `/model?sse=1` does); `/stream?chunks=K&every=MS` streams K SSE events; `/forever` streams
/// one event and then nothing, until its client goes away; `/flood` streams 64 KiB chunks as
/// fast as they are taken, until its client goes away; `/huge` announces 64 MiB, sends 2 MiB
/// and then nothing; `/endless503` answers 503 with a body that never ends; `/hang` never
/// answers; anything else echoes the request body.
async fn upstream() -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen {
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
        requests: AtomicUsize::new(0),
        cancelled: AtomicUsize::new(0),
        failing: Default::default(),
        warming: AtomicUsize::new(0),
        limited: AtomicUsize::new(0),
        model_slots: tokio::sync::Semaphore::new(4),
    });
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let seen = s.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let guard = InFlight::new(&seen);
                        if seen.failing.load(Ordering::SeqCst) {
                            let mut r = Response::new(
                                Full::new(Bytes::from_static(b"{\"error\":\"boom\"}")).boxed(),
                            );
                            *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                            return Ok::<_, Infallible>(r);
                        }
                        let body: UpBody = match req.uri().path() {
                            // A model with 4 slots, 20 ms an answer; the rest wait their turn
                            // inside, before the first byte.
                            "/model" => {
                                let _slot = seen.model_slots.acquire().await.unwrap();
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                drop(guard);
                                if query(&req, "sse") == 1 {
                                    return Ok(one_event());
                                }
                                Full::new(Bytes::from_static(b"{\"ok\":true}")).boxed()
                            }
                            // 503 "Loading model" twice, then an answer.
                            "/warming" if seen.warming.fetch_add(1, Ordering::SeqCst) < 2 => {
                                let mut r = Response::new(
                                    Full::new(Bytes::from_static(
                                        b"{\"error\":{\"code\":503,\"message\":\"Loading model\"}}",
                                    ))
                                    .boxed(),
                                );
                                *r.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                                return Ok(r);
                            }
                            // 429 with Retry-After: 1 once, then an answer.
                            "/limited" if seen.limited.fetch_add(1, Ordering::SeqCst) < 1 => {
                                let mut r =
                                    Response::new(Full::new(Bytes::from_static(b"{}")).boxed());
                                *r.status_mut() = hyper::StatusCode::TOO_MANY_REQUESTS;
                                r.headers_mut().insert("retry-after", "1".parse().unwrap());
                                return Ok(r);
                            }
                            "/loading" => {
                                let mut r = Response::new(Full::new(Bytes::from_static(
                                    b"{\"error\":{\"code\":503,\"message\":\"Loading model\",\"type\":\"unavailable_error\"}}",
                                )).boxed());
                                *r.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                                return Ok(r);
                            }
                            "/html" => {
                                let mut r = Response::new(
                                    Full::new(Bytes::from_static(b"<html>502 Bad Gateway</html>"))
                                        .boxed(),
                                );
                                r.headers_mut()
                                    .insert("content-type", "text/html".parse().unwrap());
                                if let Ok(status) = u16::try_from(query(&req, "status")) {
                                    if let Ok(status) = hyper::StatusCode::from_u16(status) {
                                        *r.status_mut() = status;
                                    }
                                }
                                return Ok(r);
                            }
                            "/slow" => {
                                tokio::time::sleep(Duration::from_millis(query(&req, "ms"))).await;
                                drop(guard);
                                if query(&req, "sse") == 1 {
                                    return Ok(one_event());
                                }
                                Full::new(Bytes::from_static(b"{\"ok\":true}")).boxed()
                            }
                            "/stream" | "/forever" => {
                                let forever = req.uri().path() == "/forever";
                                let (chunks, every) = if forever {
                                    (1, 0)
                                } else {
                                    (query(&req, "chunks"), query(&req, "every"))
                                };
                                let cancel = Cancel(seen.clone(), false);
                                let events = futures_util::stream::unfold(
                                    (0u64, guard, cancel),
                                    move |(i, guard, mut cancel)| async move {
                                        if i == chunks {
                                            if forever {
                                                std::future::pending::<()>().await;
                                            }
                                            cancel.1 = true;
                                            drop(cancel);
                                            drop(guard);
                                            return None;
                                        }
                                        if i > 0 {
                                            tokio::time::sleep(Duration::from_millis(every)).await;
                                        }
                                        let frame =
                                            Frame::data(Bytes::from(format!("data: {i}\n\n")));
                                        Some((Ok::<_, Infallible>(frame), (i + 1, guard, cancel)))
                                    },
                                );
                                StreamBody::new(events).boxed()
                            }
                            // 2 MiB with its length, over what the gate reads whole.
                            "/sized" => {
                                let chunks = futures_util::stream::iter((0..32).map(|_| {
                                    Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b's'; 65536])))
                                }));
                                drop(guard);
                                return Ok(sized(StreamBody::new(chunks).boxed(), 2 << 20));
                            }
                            "/huge" => {
                                let chunks = futures_util::StreamExt::then(
                                    futures_util::stream::iter(0..33),
                                    |i| async move {
                                        if i == 32 {
                                            std::future::pending::<()>().await;
                                        }
                                        Ok::<_, Infallible>(Frame::data(Bytes::from(vec![
                                            b'h';
                                            65536
                                        ])))
                                    },
                                );
                                drop(guard);
                                return Ok(sized(StreamBody::new(chunks).boxed(), 64 << 20));
                            }
                            "/endless503" => {
                                let chunks = futures_util::stream::repeat_with(|| {
                                    Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'e'; 16384])))
                                });
                                let mut r = Response::new(StreamBody::new(chunks).boxed());
                                *r.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                                drop(guard);
                                return Ok(r);
                            }
                            "/flood" => {
                                let cancel = Cancel(seen.clone(), false);
                                let chunks = futures_util::stream::repeat_with(move || {
                                    let _held = (&guard, &cancel);
                                    Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; 65536])))
                                });
                                StreamBody::new(chunks).boxed()
                            }
                            "/hang" => {
                                std::future::pending::<()>().await;
                                unreachable!()
                            }
                            // The names of the request's headers; the answer names one of its
                            // own in Connection.
                            "/headers" => {
                                let mut names: Vec<_> =
                                    req.headers().keys().map(|k| k.as_str()).collect();
                                names.sort_unstable();
                                let mut r =
                                    Response::new(Full::new(Bytes::from(names.join(","))).boxed());
                                let h = r.headers_mut();
                                h.insert("connection", "x-upstream-private".parse().unwrap());
                                h.insert("x-upstream-private", "hop".parse().unwrap());
                                h.insert("x-upstream-kept", "end".parse().unwrap());
                                return Ok(r);
                            }
                            _ => {
                                let bytes = req.into_body().collect().await.unwrap().to_bytes();
                                drop(guard);
                                Full::new(bytes).boxed()
                            }
                        };
                        Ok::<_, Infallible>(Response::new(body))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

/// A short streamed answer: one server-sent event.
fn one_event() -> Response<UpBody> {
    let mut r = Response::new(Full::new(Bytes::from_static(b"data: {}\n\n")).boxed());
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    r
}

/// An answer of `body` that announces `len` bytes.
fn sized(body: UpBody, len: u64) -> Response<UpBody> {
    let mut r = Response::new(body);
    r.headers_mut()
        .insert("content-length", len.to_string().parse().unwrap());
    r
}

/// A gate in front of `upstream`, serving on a port of its own; its address.
/// The tests' gate settings in front of `upstream`: a fast breaker, quick retries.
fn options(upstream: &str, max: usize, depth: usize, queue_timeout: Duration) -> Options {
    Options {
        upstream: upstream.parse().unwrap(),
        max_concurrent: max,
        queue_depth: depth,
        queue_timeout,
        request_timeout: Duration::from_secs(5),
        max_body: 64 * 1024,
        max_buffered: 1 << 20,
        ca_file: None,
        header_read_timeout: Duration::from_secs(5),
        max_connections: 64,
        breaker: BreakerOptions {
            failure_threshold: 3,
            open_for: Duration::from_millis(300),
            max_open_for: Duration::from_secs(5),
            jitter: 0.0,
        },
        saturation: SATURATION,
        retry: RETRY,
        adaptive: None,
        batch_sends: true,
    }
}

/// A gate with `options`, serving on a port of its own; its address.
async fn serve_gate(options: Options) -> (String, Gate) {
    let gate = Gate::new(options).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(gate.clone().serve(listener, CancellationToken::new()));
    (format!("http://{addr}"), gate)
}

async fn start_gate(
    upstream: &str,
    max: usize,
    depth: usize,
    queue_timeout: Duration,
) -> (String, Gate) {
    serve_gate(options(upstream, max, depth, queue_timeout)).await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The example: max_concurrent = 2 and queue_depth = 4, 20 requests at once. Two are
/// served, four wait and are served in turn, fourteen are shed at once; the upstream never sees
/// more than two.
#[tokio::test]
async fn twenty_at_once_give_exactly_the_served_and_shed_mix() {
    twenty_at_once(true).await;
}

/// The same mix where the gate sends each request as soon as it is admitted (a gate with more
/// than one CPU, `Options::batch_sends` off).
#[tokio::test]
async fn twenty_at_once_give_the_same_mix_sent_at_once() {
    twenty_at_once(false).await;
}

async fn twenty_at_once(batch_sends: bool) {
    let (up, seen) = upstream().await;
    let (gate_url, gate) = serve_gate(Options {
        batch_sends,
        ..options(&up, 2, 4, Duration::from_secs(20))
    })
    .await;
    let c = client();
    let answers = futures_util::future::join_all((0..20).map(|_| {
        let c = c.clone();
        let url = format!("{gate_url}/slow?ms=1000");
        async move {
            let r = c.post(url).body("{}").send().await.unwrap();
            let status = r.status().as_u16();
            let retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let overloaded = r
                .headers()
                .get("x-vitals-overloaded")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = r.text().await.unwrap();
            (status, retry_after, overloaded, body)
        }
    }))
    .await;
    let served = answers.iter().filter(|a| a.0 == 200).count();
    let shed: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    assert_eq!((served, shed.len()), (6, 14), "{answers:?}");
    for (_, retry_after, overloaded, body) in shed {
        let secs: u64 = retry_after.as_deref().unwrap().parse().unwrap();
        assert!((1..=30).contains(&secs));
        assert_eq!(overloaded.as_deref(), Some("queue_full"));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["type"], "server_overloaded");
        assert_eq!(json["error"]["code"], "queue_full");
    }
    assert_eq!(seen.max_in_flight.load(Ordering::SeqCst), 2);
    assert_eq!(seen.requests.load(Ordering::SeqCst), 6);
    assert_eq!(gate.count(Outcome::Ok), 6);
    assert_eq!(gate.count(Outcome::ShedQueueFull), 14);
}

#[tokio::test]
async fn a_waiter_past_the_queue_timeout_is_shed() {
    let (up, seen) = upstream().await;
    let (gate_url, gate) = start_gate(&up, 1, 2, Duration::from_millis(300)).await;
    let c = client();
    let started = std::time::Instant::now();
    let statuses = futures_util::future::join_all((0..4).map(|_| {
        let c = c.clone();
        let url = format!("{gate_url}/slow?ms=2000");
        async move {
            let r = c.get(url).send().await.unwrap();
            (
                r.status().as_u16(),
                r.headers().get("x-vitals-overloaded").cloned(),
                started.elapsed(),
            )
        }
    }))
    .await;
    let mut codes: Vec<_> = statuses.iter().map(|s| s.0).collect();
    codes.sort();
    assert_eq!(codes, [200, 503, 503, 503], "{statuses:?}");
    let timed_out: Vec<_> = statuses
        .iter()
        .filter(|s| s.1.as_ref().is_some_and(|v| v == "queue_timeout"))
        .collect();
    assert_eq!(timed_out.len(), 2, "{statuses:?}");
    for s in timed_out {
        assert!(
            s.2 < Duration::from_millis(1500),
            "shed after its queue timeout, not the upstream's answer: {s:?}"
        );
    }
    assert_eq!(gate.count(Outcome::ShedQueueTimeout), 2);
    assert_eq!(gate.count(Outcome::ShedQueueFull), 1);
    assert_eq!(seen.requests.load(Ordering::SeqCst), 1);
}

/// Server-sent events pass through as the upstream sends them: the first event reaches the
/// client long before the last is sent, and every event arrives, in order.
#[tokio::test]
async fn a_stream_passes_through_without_buffering() {
    let (up, _) = upstream().await;
    let (gate_url, _) = start_gate(&up, 2, 2, Duration::from_secs(5)).await;
    let started = std::time::Instant::now();
    let mut r = client()
        .get(format!("{gate_url}/stream?chunks=5&every=400"))
        .send()
        .await
        .unwrap();
    let first = r.chunk().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert_eq!(first, "data: 0\n\n");
    assert!(
        first_at < Duration::from_millis(800),
        "first event after {first_at:?}: buffered?"
    );
    let mut rest = String::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        rest.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert_eq!(rest, "data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n");
    assert!(started.elapsed() >= Duration::from_millis(1600));
}

/// Waits up to 5 s for `done`, and gives what satisfied it; what was seen last goes into the
/// failure.
async fn until<T: std::fmt::Debug>(
    what: &str,
    mut seen: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = seen();
        if done(&now) {
            return now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: still {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A streamed answer is counted by how it ends: `ok` once the upstream finished it (chunked, or
/// sized and too large to read whole). (`client_cancelled` when the client went away first: the
/// next test.)
#[tokio::test]
async fn a_streamed_answer_counts_by_how_it_ends() {
    let (up, _) = upstream().await;
    let (gate_url, gate) = start_gate(&up, 2, 2, Duration::from_secs(5)).await;
    let counts = || {
        (
            gate.count(Outcome::Ok),
            gate.count(Outcome::ClientCancelled),
            gate.count(Outcome::UpstreamError),
        )
    };
    let r = client()
        .get(format!("{gate_url}/stream?chunks=3&every=20"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "data: 0\n\ndata: 1\n\ndata: 2\n\n");
    let r = client()
        .get(format!("{gate_url}/sized"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), 2 << 20);
    until("two streams read to their end", counts, |c| *c == (2, 0, 0)).await;
}

/// A streamed answer's duration is the whole stream's, not its head's: a model's generation
/// time, where `vitals_gate_time_to_first_byte_seconds` already has the head.
#[tokio::test]
async fn a_streams_duration_runs_to_its_end() {
    let (up, _) = upstream().await;
    let (gate_url, gate) = start_gate(&up, 2, 2, Duration::from_secs(5)).await;
    let r = client()
        .get(format!("{gate_url}/stream?chunks=3&every=300"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "data: 0\n\ndata: 1\n\ndata: 2\n\n");
    let durations = || histogram(&gate, "vitals_gate_request_duration_seconds");
    let (count, sum) = until("the stream's duration", durations, |(n, _)| *n == 1).await;
    assert_eq!(count, 1);
    assert!(
        sum >= 0.6,
        "the stream lasted 0.6 s or more, its duration says {sum} s"
    );
    let (_, ttfb) = histogram(&gate, "vitals_gate_time_to_first_byte_seconds");
    assert!(ttfb < 0.3, "its first byte came at once, yet {ttfb} s");
}

/// `name`'s count and sum as the gate's metrics give them.
fn histogram(gate: &Gate, name: &str) -> (u64, f64) {
    let mut registry = prometheus_client::registry::Registry::default();
    gate.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let value = |suffix: &str| {
        let key = format!("{name}_{suffix} ");
        text.lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .unwrap_or_else(|| panic!("no {key} in\n{text}"))
            .trim()
            .parse::<f64>()
            .unwrap()
    };
    (value("count") as u64, value("sum"))
}

/// An upstream that breaks its stream once it has begun to reach the client (a model server
/// that crashes in the middle of an answer): the client's stream ends short, and the request
/// is an `upstream_error` and a fault for the breaker, which opens on such faults as on any.
#[tokio::test]
async fn a_stream_the_upstream_breaks_midway_is_its_fault() {
    use tokio::io::AsyncWriteExt as _;
    let raw_url = raw_upstream(|mut s, path| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n8\r\ndata: 1\n\r\n")
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if path == "/garbage" {
            let _ = s.write_all(b"zz\r\nxx\r\n").await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        // Otherwise hung up, mid-answer.
    })
    .await;
    let mut opts = options(&raw_url, 2, 2, Duration::from_secs(1));
    opts.breaker.failure_threshold = 2;
    let (gate_url, gate) = serve_gate(opts).await;
    for path in ["/cut", "/garbage"] {
        let mut r = client()
            .get(format!("{gate_url}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.chunk().await.unwrap().unwrap(), "data: 1\n", "{path}");
        assert!(
            r.chunk().await.is_err(),
            "{path}: the stream must end short"
        );
    }
    let counts = || (gate.count(Outcome::Ok), gate.count(Outcome::UpstreamError));
    until("two broken streams", counts, |c| *c == (0, 2)).await;
    let r = client()
        .get(format!("{gate_url}/cut"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "two faults in a row open the circuit");
    assert_eq!(r.headers()["x-vitals-overloaded"], "circuit_open");
}

/// A client that goes away mid-stream cancels the upstream request and frees its slot at once;
/// the request counts as `client_cancelled`, not as an answer.
#[tokio::test]
async fn a_client_that_goes_away_cancels_upstream_and_frees_its_slot() {
    let (up, seen) = upstream().await;
    let (gate_url, gate) = start_gate(&up, 1, 0, Duration::from_secs(1)).await;
    let mut r = client()
        .get(format!("{gate_url}/forever"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.chunk().await.unwrap().unwrap(), "data: 0\n\n");
    assert_eq!(gate.admission().in_flight(), 1);
    // Begun, not ended: counted as neither yet.
    assert_eq!(gate.count(Outcome::Ok), 0);
    // The only slot is taken: another request is shed.
    let shed = client()
        .get(format!("{gate_url}/slow?ms=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(shed.status(), 503);
    drop(r);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while seen.cancelled.load(Ordering::SeqCst) == 0 || gate.admission().in_flight() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream stream was never cancelled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gate.count(Outcome::ClientCancelled), 1);
    assert_eq!(gate.count(Outcome::Ok), 0);
    let next = client()
        .get(format!("{gate_url}/slow?ms=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(next.status(), 200, "the slot is free again");
}

#[tokio::test]
async fn bad_requests_and_upstream_failures_get_the_gates_own_answers() {
    let (up, seen) = upstream().await;
    let (gate_url, gate) = start_gate(&up, 2, 2, Duration::from_secs(1)).await;
    // Over max_body: 413 from the gate, nothing forwarded.
    let big = client()
        .post(format!("{gate_url}/v1/chat/completions"))
        .body(vec![b'x'; 65 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    let json: serde_json::Value = big.json().await.unwrap();
    assert_eq!(json["error"]["code"], "request_too_large");
    assert_eq!(seen.requests.load(Ordering::SeqCst), 0);
    assert_eq!(gate.count(Outcome::BadRequest), 1);
    // The body arrives intact when it fits.
    let echo = client()
        .post(format!("{gate_url}/v1/chat/completions?x=1"))
        .body("{\"model\":\"m\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(echo.text().await.unwrap(), "{\"model\":\"m\"}");

    // An upstream that is not there: 502 with the reason.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (gate_url, gate) = start_gate(&gone, 2, 2, Duration::from_secs(1)).await;
    let r = client()
        .get(format!("{gate_url}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let json: serde_json::Value = r.json().await.unwrap();
    assert_eq!(json["error"]["code"], "upstream_unavailable");
    assert_eq!(gate.count(Outcome::UpstreamError), 1);
    assert_eq!(
        gate.admission().in_flight(),
        0,
        "a failed request frees its slot"
    );
}

#[tokio::test]
async fn an_upstream_that_never_answers_gets_504_after_request_timeout() {
    let (up, _) = upstream().await;
    let (url, g) = serve_gate(Options {
        request_timeout: Duration::from_millis(500),
        ..options(&up, 1, 0, Duration::from_millis(100))
    })
    .await;
    let started = std::time::Instant::now();
    let r = client().get(format!("{url}/hang")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(g.admission().in_flight(), 0);
}

/// The upstream fails every request from now on, and 3 requests through the gate at
/// `gate_url` each get its 500, as they are: enough faults to open the tests' circuit.
async fn outage(gate_url: &str, seen: &Seen) {
    seen.failing.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let r = client()
            .get(format!("{gate_url}/slow?ms=1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 500, "the upstream's own answer passes through");
    }
}

/// The breaker opens on an upstream outage (3 faults in a row here), fails fast while open,
/// lets one trial through after the open period and closes when it succeeds; each change is
/// published for readiness.
#[tokio::test]
async fn the_breaker_opens_on_an_outage_fails_fast_and_closes_after_recovery() {
    let (up, seen) = upstream().await;
    let (gate_url, gate) = start_gate(&up, 2, 2, Duration::from_secs(1)).await;
    let mut circuit = gate.circuit();
    outage(&gate_url, &seen).await;
    assert_eq!(
        seen.requests.load(Ordering::SeqCst),
        3,
        "a 500 is never retried"
    );
    circuit.changed().await.unwrap();
    assert_eq!(circuit.borrow().state, CircuitState::Open);
    assert!(
        circuit.borrow().reason.contains("500"),
        "{:?}",
        circuit.borrow()
    );
    let before = seen.requests.load(Ordering::SeqCst);
    let r = client()
        .get(format!("{gate_url}/slow?ms=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-vitals-overloaded"], "circuit_open");
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        seen.requests.load(Ordering::SeqCst),
        before,
        "failing fast: not forwarded"
    );
    assert_eq!(gate.count(Outcome::CircuitOpen), 1);

    // The upstream recovers; after the open period the trial succeeds and the circuit closes.
    seen.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let r = client()
        .get(format!("{gate_url}/slow?ms=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    circuit.changed().await.unwrap();
    assert_eq!(circuit.borrow().state, CircuitState::Closed);
}

/// An open circuit takes the instance out of traffic, so a trial that waited for a client's
/// request could wait for ever. When the open period has passed and no client's request has
/// taken the trial for a second, the gate tries itself (`GET /v1/models`): while the upstream
/// still fails the circuit opens again, and once it answers the circuit closes, with no client
/// request at all.
#[tokio::test]
async fn an_open_circuit_is_tried_by_the_gate_itself_when_no_client_asks() {
    let (up, seen) = upstream().await;
    let (gate_url, gate) = start_gate(&up, 2, 2, Duration::from_secs(1)).await;
    outage(&gate_url, &seen).await;
    assert_eq!(gate.circuit().borrow().state, CircuitState::Open);
    // Still failing: the gate's own trials go to it, and the circuit stays open.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while seen.requests.load(Ordering::SeqCst) < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "no trial of the gate's own"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(gate.circuit().borrow().state, CircuitState::Open);
    assert!(
        gate.circuit().borrow().reason.contains("trial"),
        "{:?}",
        gate.circuit().borrow()
    );
    // It recovers: the next trial of the gate's own closes the circuit.
    seen.failing.store(false, Ordering::SeqCst);
    let mut circuit = gate.circuit();
    let closed = tokio::time::timeout(
        Duration::from_secs(10),
        circuit.wait_for(|c| c.state == CircuitState::Closed),
    )
    .await;
    assert!(closed.is_ok(), "still {:?}", gate.circuit().borrow());
    assert_eq!(
        gate.count(Outcome::Ok),
        0,
        "no client's request was a trial"
    );
}

/// A model still loading (llama.cpp's 503 "Loading model") is not an upstream fault.
#[tokio::test]
async fn a_loading_model_does_not_open_the_breaker() {
    let (up, _) = upstream().await;
    let (gate_url, gate) = start_gate(&up, 2, 2, Duration::from_secs(1)).await;
    for _ in 0..6 {
        let r = client()
            .get(format!("{gate_url}/loading"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        assert!(r.text().await.unwrap().contains("Loading model"));
    }
    assert_eq!(gate.circuit().borrow().state, CircuitState::Closed);
}

/// Garbage from the upstream reaches the client as a 502 with a reason: an HTML page where an
/// API answer belongs, and a sized answer cut short (a fault; on HTML pages see
/// `html_pages_a_client_asks_for_never_open_the_circuit`).
#[tokio::test]
async fn upstream_garbage_is_a_502_with_a_reason() {
    let (up, _) = upstream().await;
    let (gate_url, _) = start_gate(&up, 2, 2, Duration::from_secs(1)).await;
    let r = client()
        .get(format!("{gate_url}/html"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let json: serde_json::Value = r.json().await.unwrap();
    assert_eq!(json["error"]["code"], "upstream_garbage");

    // An upstream that promises 100 bytes, sends 10 and hangs up; and one that begins a stream
    // and hangs up after its first chunk, before anything went on to the client.
    use tokio::io::AsyncWriteExt as _;
    let raw_url = raw_upstream(|mut s, path| async move {
        let answer: &[u8] = if path == "/stream" {
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n8\r\ndata: 1\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"id\":\"x"
        };
        let _ = s.write_all(answer).await;
    })
    .await;
    let (gate_url, gate) = start_gate(&raw_url, 2, 2, Duration::from_secs(1)).await;
    for path in ["/v1/models", "/stream"] {
        bad_gateway(&gate_url, path, "upstream_truncated").await;
    }
    assert_eq!(gate.count(Outcome::UpstreamError), 2);
}

/// An HTML page the upstream serves when a client asks for it (llama.cpp's web UI at `/`, a
/// docs page, a 404 page) is the upstream answering, not failing: however many a client asks
/// for, the circuit stays closed and readiness with it. A 4xx keeps its status, so that a
/// client's library does not retry it as it would a 502; a 2xx or 3xx page becomes a 502 with
/// the reason. An HTML error page with a 5xx (a proxy's, in the way) is a fault like any 5xx.
#[tokio::test]
async fn html_pages_a_client_asks_for_never_open_the_circuit() {
    let (up, _) = upstream().await;
    let mut opts = options(&up, 2, 2, Duration::from_secs(1));
    opts.breaker.failure_threshold = 2;
    let (gate_url, gate) = serve_gate(opts).await;
    for _ in 0..3 {
        for (status, expected, code) in [
            (200, 502, "upstream_garbage"),
            (302, 502, "upstream_garbage"),
            (404, 404, "upstream_html"),
            (401, 401, "upstream_html"),
        ] {
            let r = client()
                .get(format!("{gate_url}/html?status={status}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), expected, "an HTML {status}");
            let json: serde_json::Value = r.json().await.unwrap();
            assert_eq!(json["error"]["code"], code, "an HTML {status}: {json}");
            let message = json["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(&status.to_string()) && message.contains("HTML"),
                "an HTML {status}: {message}"
            );
        }
    }
    assert_eq!(gate.circuit().borrow().state, CircuitState::Closed);
    assert_eq!(gate.count(Outcome::UpstreamError), 6, "the 502s");
    assert_eq!(gate.count(Outcome::Ok), 6, "the 4xx, passed on");

    for _ in 0..2 {
        bad_gateway(&gate_url, "/html?status=502", "upstream_garbage").await;
    }
    assert_eq!(gate.circuit().borrow().state, CircuitState::Open);
}

/// A body that says it is JSON and is not is a malformed request: 400 from the gate, never
/// sent on. (llama-cpp-python answers such a body with a 500, which would count against it as
/// a fault: a client could open the circuit by sending bad JSON.) A body that says nothing of
/// JSON, and JSON nested deeper than the gate's parser goes, are the upstream's to judge.
#[tokio::test]
async fn a_body_that_says_json_and_is_not_gets_400_from_the_gate() {
    let (up, seen) = upstream().await;
    let mut opts = options(&up, 2, 2, Duration::from_secs(1));
    opts.breaker.failure_threshold = 2;
    let (gate_url, gate) = serve_gate(opts).await;
    let post = |content_type: &'static str, body: String| {
        let url = format!("{gate_url}/v1/completions");
        async move {
            let r = client()
                .post(url)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    for (content_type, body) in [
        ("application/json", "{\"prompt\": \"hi\", "),
        ("application/json; charset=utf-8", "{bad json}"),
        ("Application/JSON", "{\"a\":1} trailing"),
        ("application/vnd.api+json", "[1,]"),
    ] {
        let (status, text) = post(content_type, body.to_owned()).await;
        assert_eq!(status, 400, "{content_type} {body}: {text}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["error"]["code"], "invalid_json", "{text}");
        assert_eq!(json["error"]["type"], "invalid_request_error", "{text}");
        assert!(
            json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("line 1"),
            "where it broke: {text}"
        );
    }
    assert_eq!(seen.requests.load(Ordering::SeqCst), 0, "none sent on");
    assert_eq!(gate.count(Outcome::BadRequest), 4);
    assert_eq!(gate.circuit().borrow().state, CircuitState::Closed);

    // Compressed JSON is JSON only once the upstream decodes it.
    let r = client()
        .post(format!("{gate_url}/v1/completions"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(vec![0x1f_u8, 0x8b, 0x08, 0x00])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a compressed body is passed on");
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        [0x1f_u8, 0x8b, 0x08, 0x00]
    );

    // Passed on as they are: the upstream echoes them.
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    for (content_type, body) in [
        ("text/plain", "{bad json}".to_owned()),
        ("application/json", "{\"prompt\": \"hi\"}".to_owned()),
        ("application/json", String::new()),
        ("application/json", deep),
    ] {
        let (status, text) = post(content_type, body.clone()).await;
        assert_eq!((status, text), (200, body.clone()), "{content_type} {body}");
    }
}

/// What a supervisor reads of the traffic: requests whose answer has not begun (a client that
/// goes away takes its request out of the count), a stream under way, and the times the
/// upstream went silent for request_timeout, before an answer began or in its middle.
#[tokio::test]
async fn traffic_tells_answers_not_begun_from_streams_and_counts_timeouts() {
    let (up, _) = upstream().await;
    let mut opts = options(&up, 4, 0, Duration::from_secs(1));
    opts.request_timeout = Duration::from_millis(500);
    let (gate_url, gate) = serve_gate(opts).await;
    let until_traffic = |what: &'static str, ok: fn(&vitals_gate::Traffic) -> bool| {
        let gate = gate.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let t = gate.traffic();
                if ok(&t) {
                    return t;
                }
                assert!(std::time::Instant::now() < deadline, "{what}: {t:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let hung = tokio::spawn(client().get(format!("{gate_url}/hang")).send());
    until_traffic("one awaiting", |t| t.in_flight == 1 && t.awaiting == 1).await;
    hung.abort();
    until_traffic("none after the client left", |t| {
        t.in_flight == 0 && t.awaiting == 0
    })
    .await;
    assert_eq!(gate.traffic().timed_out, 0, "cancelled, not timed out");

    // `/forever` sends one event and then nothing: cut after request_timeout.
    let mut r = client()
        .get(format!("{gate_url}/forever"))
        .send()
        .await
        .unwrap();
    assert!(r.chunk().await.unwrap().is_some());
    let t = gate.traffic();
    assert_eq!((t.in_flight, t.awaiting), (1, 0), "a stream under way");
    assert!(r.chunk().await.is_err(), "cut");
    let t = until_traffic("the stream ended", |t| t.in_flight == 0).await;
    assert_eq!((t.awaiting, t.timed_out), (0, 1));

    let r = client()
        .get(format!("{gate_url}/hang"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    let t = until_traffic("the request ended", |t| t.in_flight == 0).await;
    assert_eq!((t.awaiting, t.timed_out), (0, 2));
}

/// An upstream of raw bytes: reads each request's head and hands the connection and the
/// request's path to `answer`, each connection on a task of its own. Its URL.
async fn raw_upstream<F, Fut>(answer: F) -> String
where
    F: Fn(tokio::net::TcpStream, String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use tokio::io::AsyncReadExt as _;
    let raw = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", raw.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut s, _) = raw.accept().await.unwrap();
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                answer(s, path).await;
            });
        }
    });
    url
}

/// GETs `path` through the gate, which must answer 502 with the error `code`; its message.
async fn bad_gateway(gate_url: &str, path: &str, code: &str) -> String {
    let r = client()
        .get(format!("{gate_url}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: no answer from the gate: {e}"));
    assert_eq!(r.status(), 502, "{path}");
    let json: serde_json::Value = r.json().await.unwrap();
    assert_eq!(json["error"]["code"], code, "{path}: {json}");
    json["error"]["message"].as_str().unwrap().to_owned()
}

/// An upstream that does not speak HTTP/1.1 as it should: what it sends is a 502
/// `upstream_garbage` with the reason, never a connection the client sees fail without an
/// answer, and each is a fault for the breaker.
#[tokio::test]
async fn an_answer_that_is_not_http_is_a_502_saying_so() {
    use tokio::io::AsyncWriteExt as _;
    let raw_url = raw_upstream(|mut s, path| async move {
        let answer: Vec<u8> = match path.as_str() {
            "/ssh" => b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec(),
            "/headers" => {
                let mut a = b"HTTP/1.1 200 OK\r\n".to_vec();
                for i in 0..500 {
                    a.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
                }
                a.extend_from_slice(b"content-length: 2\r\n\r\nok");
                a
            }
            "/switch" => b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
                           connection: upgrade\r\n\r\nraw bytes"
                .to_vec(),
            "/chunk" => b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                          transfer-encoding: chunked\r\n\r\nzz\r\ndata: 1\r\n0\r\n\r\n"
                .to_vec(),
            // A good first chunk, then a bad one, all with the head: nothing has gone to
            // the client yet, so it can still have its 502.
            "/chunk2" => b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                           transfer-encoding: chunked\r\n\r\n8\r\ndata: 1\n\r\nzz\r\nxx\r\n"
                .to_vec(),
            // Three digits, as hyper accepts, but no HTTP status class (RFC 9110 §15).
            "/status" => b"HTTP/1.1 999 Whatever\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        };
        let _ = s.write_all(&answer).await;
        // Held open: the answer, not a closed connection, is what the gate must judge.
        tokio::time::sleep(Duration::from_secs(2)).await;
    })
    .await;
    let mut opts = options(&raw_url, 2, 2, Duration::from_secs(1));
    // Five faults in a row: the circuit stays closed for all of them to be seen.
    opts.breaker.failure_threshold = 10;
    let (gate_url, gate) = serve_gate(opts).await;
    for (path, says) in [
        ("/ssh", "not HTTP/1.1"),
        ("/headers", "not HTTP/1.1"),
        ("/switch", "101"),
        ("/chunk", "malformed"),
        ("/chunk2", "malformed"),
        ("/status", "999"),
    ] {
        let message = bad_gateway(&gate_url, path, "upstream_garbage").await;
        assert!(message.contains(says), "{path}: {message}");
    }
    assert_eq!(gate.count(Outcome::UpstreamError), 6);
    // A well-formed answer from the same upstream passes.
    let r = client().get(format!("{gate_url}/ok")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");
}

/// A model still loading and a 429 with Retry-After are retried, within the request's time;
/// the client sees the answer that followed.
#[tokio::test]
async fn transient_answers_are_retried_and_the_client_sees_the_answer() {
    let (up, seen) = upstream().await;
    let (gate_url, _) = start_gate(&up, 2, 2, Duration::from_secs(1)).await;
    let r = client()
        .get(format!("{gate_url}/warming"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        seen.warming.load(Ordering::SeqCst),
        3,
        "two 503 Loading model, then the answer"
    );

    let started = std::time::Instant::now();
    let r = client()
        .get(format!("{gate_url}/limited"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
}

/// With no budget, nothing is retried: retries cannot amplify an overload.
#[tokio::test]
async fn an_empty_budget_retries_nothing() {
    let (up, seen) = upstream().await;
    let (url, _) = serve_gate(Options {
        retry: RetryOptions {
            ratio: 0.0,
            min_per_sec: 0.0,
            ..RETRY
        },
        ..options(&up, 2, 2, Duration::from_secs(1))
    })
    .await;
    let r = client().get(format!("{url}/warming")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(seen.warming.load(Ordering::SeqCst), 1);
}

/// `limit = "adaptive"` learns nothing from a non-streamed answer: its time to first byte is
/// the whole generation, long or short as the model writes, not the upstream's queue. Answers
/// of 10 and 400 ms from an upstream with room for all leave the limit at its ceiling (taken
/// as queueing, they had brought it down to 2 or 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_streamed_answers_teach_the_adaptive_limit_nothing() {
    let (up, _) = upstream().await;
    let (url, gate) = serve_gate(Options {
        adaptive: Some(vitals_gate::adaptive::AdaptiveOptions::new(1, 8)),
        ..options(&up, 8, 64, Duration::from_secs(20))
    })
    .await;
    let stop = std::time::Instant::now() + Duration::from_secs(3);
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let c = reqwest::Client::builder().no_proxy().build().unwrap();
                let mut n = 0;
                while std::time::Instant::now() < stop {
                    let ms = if (i + n) % 2 == 0 { 10 } else { 400 };
                    let r = c.get(format!("{url}/slow?ms={ms}")).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    let _ = r.bytes().await;
                    n += 1;
                }
            })
        })
        .collect();
    let mut seen_limits = Vec::new();
    while std::time::Instant::now() < stop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen_limits.push(gate.admission().max_concurrent());
    }
    for c in clients {
        c.await.unwrap();
    }
    assert!(seen_limits.iter().all(|l| *l == 8), "{seen_limits:?}");
}

/// Saturation's time to first byte, like the adaptive limit's, comes from streamed answers
/// only: non-streamed answers that grow from 10 to 300 ms (longer completions, not a slower
/// upstream) leave the load normal, and streamed ones that slow down as much degrade it.
#[tokio::test]
async fn saturation_reads_the_time_to_first_byte_of_streams_only() {
    for (sse, degrades) in [(0, false), (1, true)] {
        let (up, _) = upstream().await;
        let (url, gate) = serve_gate(Options {
            saturation: SaturationOptions {
                high_water: 0,
                degrade_after: Duration::ZERO,
                ..SATURATION
            },
            ..options(&up, 4, 4, Duration::from_secs(1))
        })
        .await;
        let mut load = None;
        for ms in [10, 10, 10, 300, 300, 300] {
            for _ in 0..2 {
                let r = client()
                    .get(format!("{url}/slow?ms={ms}&sse={sse}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await;
            }
            // A second's sample, taken at once.
            load = Some(gate.sample_load());
        }
        let degraded = matches!(load, Some(vitals_gate::saturation::Load::Degraded { .. }));
        assert_eq!(degraded, degrades, "sse={sse}: {load:?}");
    }
}

/// `limit = "adaptive"`: with 32 clients always waiting and an upstream of 4 slots that queues
/// the rest inside (as llama.cpp defers), the limit comes down from its ceiling of 32 to near
/// 4, so the upstream's own queue stays short; nothing is shed meanwhile that the queue can hold.
/// The answers are streamed: their time to first byte is the upstream's queue and its prompt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adaptive_limit_converges_to_the_upstreams_slots() {
    let (up, _) = upstream().await;
    let (url, gate) = serve_gate(Options {
        request_timeout: Duration::from_secs(30),
        adaptive: Some(vitals_gate::adaptive::AdaptiveOptions::new(1, 32)),
        ..options(&up, 32, 64, Duration::from_secs(20))
    })
    .await;
    let stop = std::time::Instant::now() + Duration::from_secs(6);
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let url = format!("{url}/model?sse=1");
            tokio::spawn(async move {
                let c = reqwest::Client::builder().no_proxy().build().unwrap();
                let mut limits = Vec::new();
                while std::time::Instant::now() < stop {
                    let r = c.get(&url).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    let _ = r.bytes().await;
                    limits.push(());
                }
                limits.len()
            })
        })
        .collect();
    let mut seen_limits = Vec::new();
    while std::time::Instant::now() < stop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen_limits.push(gate.admission().max_concurrent());
    }
    let answered: usize = futures_util::future::join_all(clients)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .sum();
    // The last two seconds, re-measures at the floor aside.
    let tail: Vec<usize> = seen_limits[seen_limits.len() - 20..]
        .iter()
        .copied()
        .filter(|l| *l > 1)
        .collect();
    assert!(!tail.is_empty(), "{seen_limits:?}");
    let (lo, hi) = (*tail.iter().min().unwrap(), *tail.iter().max().unwrap());
    assert!(
        lo >= 4 && hi <= 12,
        "settled in {lo}..={hi}: {seen_limits:?}"
    );
    assert!(
        answered > 500,
        "the upstream's 4 slots stayed busy: {answered} answers in 6 s"
    );
    assert_eq!(gate.count(Outcome::ShedQueueFull), 0);
}

/// A plain connection to the gate at `gate_url`, to write to it what a client library would not.
async fn raw(gate_url: &str) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(gate_url.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// A malformed request gets 400 from the gate itself; nothing reaches the upstream.
#[tokio::test]
async fn a_malformed_request_gets_400_from_the_gate() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (up, seen) = upstream().await;
    let (gate_url, _) = start_gate(&up, 2, 2, Duration::from_secs(1)).await;
    let mut s = raw(&gate_url).await;
    s.write_all(b"NOT AN HTTP REQUEST\x00\x01\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(seen.requests.load(Ordering::SeqCst), 0);

    // CONNECT asks for a tunnel, which a gate in front of an API never opens: forwarded, the
    // upstream's 200 would turn the client's connection into one with nothing at its end.
    let mut s = raw(&gate_url).await;
    s.write_all(b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nhost: 127.0.0.1:22\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = read_until_closed(&mut s, Duration::from_millis(500)).await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(
        answer.contains("\"code\":\"method_not_allowed\""),
        "{answer}"
    );
    assert_eq!(seen.requests.load(Ordering::SeqCst), 0);
}

/// A request head is bounded (64 KiB): one over it gets 431 from the gate and nothing reaches
/// the upstream. Without a bound hyper takes in about 400 KiB a head, so clients holding the
/// gate's connections with large unfinished heads made vitals hold 400 MiB (500 connections:
/// 11 MB resident to 220 MB, measured), enough for a sidecar's memory limit to kill it.
#[tokio::test]
async fn a_request_head_over_64_kib_gets_431() {
    use tokio::io::AsyncWriteExt as _;
    let (up, seen) = upstream().await;
    let (gate_url, _) = start_gate(&up, 2, 2, Duration::from_secs(1)).await;
    let head = |pad: usize| {
        format!(
            "GET /headers HTTP/1.1\r\nhost: gate\r\nx-pad: {}\r\nconnection: close\r\n\r\n",
            "v".repeat(pad)
        )
    };
    let mut s = raw(&gate_url).await;
    s.write_all(head(60 * 1024).as_bytes()).await.unwrap();
    let (answer, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "60 KiB passes: {answer:.200}"
    );
    assert_eq!(seen.requests.load(Ordering::SeqCst), 1);
    let mut s = raw(&gate_url).await;
    // Written as far as the gate reads: it answers once the head is over its bound.
    let _ = s.write_all(head(70 * 1024).as_bytes()).await;
    let (answer, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "70 KiB: {answer:.200}");
    assert_eq!(
        seen.requests.load(Ordering::SeqCst),
        1,
        "nothing more upstream"
    );
}

/// Request bodies are read whole before a request takes its place in the queue, so the bodies
/// held at once are bounded over all requests (`max_buffered`): a request whose body would pass
/// the bound is shed at once, 503 `buffers_full` with a Retry-After, and nothing reaches the
/// upstream; once the bodies held are done with, the same request passes.
#[tokio::test]
async fn request_bodies_held_at_once_are_bounded() {
    use tokio::io::AsyncWriteExt as _;
    let (up, seen) = upstream().await;
    let (gate_url, gate) = serve_gate(Options {
        max_body: 1 << 20,
        max_buffered: 1 << 20,
        ..options(&up, 4, 4, Duration::from_secs(1))
    })
    .await;
    // A client that has sent 700 KiB of a 1 MiB body, and waits (the gate holding it by now).
    let part_of_a_body = |connection: &'static str| {
        let gate_url = gate_url.clone();
        async move {
            let mut client = raw(&gate_url).await;
            let head = format!(
                "POST /sized HTTP/1.1\r\nhost: gate\r\ncontent-length: 1048576\r\n{connection}\r\n"
            );
            client.write_all(head.as_bytes()).await.unwrap();
            client.write_all(&vec![b'a'; 700 * 1024]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            client
        }
    };
    let mut slow = part_of_a_body("connection: close\r\n").await;
    let post = || {
        client()
            .post(format!("{gate_url}/sized"))
            .body(vec![b'b'; 500 * 1024])
            .send()
    };
    let r = post().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-vitals-overloaded"], "buffers_full");
    assert!(r.headers().contains_key("retry-after"));
    let json: serde_json::Value = r.json().await.unwrap();
    assert_eq!(json["error"]["code"], "buffers_full", "{json}");
    assert_eq!(seen.requests.load(Ordering::SeqCst), 0, "nothing upstream");
    assert_eq!(gate.count(Outcome::ShedQueueFull), 1);
    // The first body completes and is forwarded; then the second passes.
    slow.write_all(&vec![b'a'; 324 * 1024]).await.unwrap();
    let (answer, _) = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.200}");
    let r = post().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(seen.requests.load(Ordering::SeqCst), 2);
    // A client that goes away in the middle of its body frees what it held.
    let gone = part_of_a_body("").await;
    assert_eq!(post().await.unwrap().status(), 503, "held while it stays");
    drop(gone);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        post().await.unwrap().status(),
        200,
        "freed once it went away"
    );
}

/// The gate's own connection pool: one kept-alive connection serves sequential requests, each
/// with the upstream's `Host` and the URL's base path before the client's path and query; when
/// the upstream closes its idle connections, the next requests go on a fresh one, none failing.
#[tokio::test]
async fn connections_are_reused_and_replaced_when_the_upstream_closes_them() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let close_all = Arc::new(tokio::sync::Notify::new());
    let (a, s, c) = (accepted.clone(), seen.clone(), close_all.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            a.fetch_add(1, Ordering::SeqCst);
            let (s, c) = (s.clone(), c.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let host = req.headers()["host"].to_str().unwrap().to_owned();
                    s.lock().unwrap().push((req.uri().to_string(), host));
                    async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("{}")))) }
                });
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                // The upstream closes every idle connection when told (as a server's idle
                // timeout does).
                tokio::select! {
                    _ = conn => {}
                    () = c.notified() => {}
                }
            });
        }
    });
    let (gate_url, _gate) = start_gate(
        &format!("http://{addr}/base/"),
        4,
        4,
        Duration::from_secs(5),
    )
    .await;
    let c = client();
    for _ in 0..20 {
        let r = c
            .get(format!("{gate_url}/v1/models?x=1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one connection, kept alive"
    );
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 20);
        assert!(
            seen.iter()
                .all(|(uri, host)| uri == "/base/v1/models?x=1" && *host == addr.to_string()),
            "{seen:?}"
        );
    }
    close_all.notify_waiters();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..5 {
        let r = c.get(format!("{gate_url}/v1/models")).send().await.unwrap();
        assert_eq!(
            r.status(),
            200,
            "a closed idle connection is replaced, not a 502"
        );
        r.bytes().await.unwrap();
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// An upstream closes an idle kept-alive connection at the moment the gate sends on it (as
/// uvicorn, under llama-cpp-python and vLLM, does after its 5 s keep-alive: a client that waits
/// about that long between requests meets it a request in four). The request never reached the
/// upstream's application, so it is sent again on a fresh connection: the client gets its
/// answer, and the breaker counts nothing. A connection that fails the same way while busy is
/// an upstream fault: 502.
#[tokio::test]
async fn a_connection_closed_as_its_idle_reuse_begins_is_retried_on_a_fresh_one() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    // Answers the first request on each connection; the second one it reads and closes on,
    // unanswered (the keep-alive timer firing as it arrives).
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                let _ = s.read(&mut buf).await;
            });
        }
    });
    let (gate_url, gate) =
        start_gate(&format!("http://{addr}"), 2, 2, Duration::from_secs(1)).await;
    let post = || {
        client()
            .post(format!("{gate_url}/v1/completions"))
            .body("{}")
            .send()
    };
    for i in 0..3 {
        let r = post().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.text().await.unwrap(), "ok");
        // Idle long enough that a close by the upstream's keep-alive timer is the likely cause.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "a fresh connection for each reuse that failed"
    );
    assert_eq!(gate.count(Outcome::UpstreamError), 0);
    assert_eq!(gate.count(Outcome::Ok), 3);

    // Busy, not idle: the same failure is the upstream's.
    let answers = futures_util::future::join_all((0..2).map(|_| post())).await;
    let first = answers
        .into_iter()
        .map(|r| r.unwrap().status())
        .collect::<Vec<_>>();
    assert!(first.iter().all(|s| *s == 200), "{first:?}");
    let r = post().await.unwrap();
    assert_eq!(r.status(), 502, "reused at once, and closed unanswered");
    assert_eq!(gate.count(Outcome::UpstreamError), 1);
}

/// A waker that counts the wakes that come while its task is being polled. Each is the task
/// waking itself, and makes the runtime poll it once more for nothing.
struct CountsSelfWakes {
    inner: std::task::Waker,
    polling: Arc<std::sync::atomic::AtomicBool>,
    count: Arc<AtomicUsize>,
}

impl std::task::Wake for CountsSelfWakes {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.polling.load(Ordering::SeqCst) {
            self.count.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.wake_by_ref();
    }
}

/// Awaits `fut`, counting in `count` the wakes it gives itself while polled.
async fn counting_self_wakes<F: std::future::Future>(
    fut: F,
    count: &Arc<AtomicUsize>,
) -> F::Output {
    let polling = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        let waker = std::task::Waker::from(Arc::new(CountsSelfWakes {
            inner: cx.waker().clone(),
            polling: polling.clone(),
            count: count.clone(),
        }));
        polling.store(true, Ordering::SeqCst);
        let polled = fut
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker));
        polling.store(false, Ordering::SeqCst);
        polled
    })
    .await
}

/// A request on a kept-alive upstream connection wakes its task only when a socket has
/// something for it: never itself (hyper wakes whatever waker last drove a connection when its
/// answer or body is taken, which would poll every request's task once more for nothing).
/// On the current-thread runtime nothing else runs while the request is polled, so every wake
/// counted is one the request gave itself.
#[tokio::test]
async fn a_forwarded_request_never_wakes_its_own_task() {
    for batch_sends in [true, false] {
        never_wakes_its_own_task(batch_sends).await;
    }
}

async fn never_wakes_its_own_task(batch_sends: bool) {
    let (up, _) = upstream().await;
    let (_, gate) = serve_gate(Options {
        batch_sends,
        ..options(&up, 4, 4, Duration::from_secs(5))
    })
    .await;
    let request = || {
        Request::post("/v1/completions")
            .body(Full::new(Bytes::from_static(b"{\"prompt\":\"hi\"}")))
            .unwrap()
    };
    // The first request connects.
    let r = gate.handle(request()).await;
    r.into_body().collect().await.unwrap();
    let self_wakes = Arc::new(AtomicUsize::new(0));
    for _ in 0..20 {
        let r = counting_self_wakes(gate.handle(request()), &self_wakes).await;
        assert_eq!(r.status(), 200);
        let body = counting_self_wakes(r.into_body().collect(), &self_wakes)
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(
            &body[..],
            b"{\"prompt\":\"hi\"}",
            "the upstream echoes the body"
        );
    }
    assert_eq!(
        self_wakes.load(Ordering::SeqCst),
        0,
        "self-wakes in 20 requests (batch_sends {batch_sends})"
    );
}

/// Reads what the gate sends until it closes the connection or `within` passes: the text read,
/// and whether it closed.
async fn read_until_closed(s: &mut tokio::net::TcpStream, within: Duration) -> (String, bool) {
    use tokio::io::AsyncReadExt as _;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

/// The headers a message's `Connection` names are for that hop only (RFC 9110 §7.6.1): the gate
/// forwards neither those of the client's request nor those of the upstream's answer, whatever
/// their case and spacing in the list.
#[tokio::test]
async fn headers_named_in_connection_stay_on_their_hop() {
    use tokio::io::AsyncWriteExt as _;
    let (up, _seen) = upstream().await;
    let (gate_url, _gate) = start_gate(&up, 2, 2, Duration::from_secs(1)).await;
    let mut s = raw(&gate_url).await;
    s.write_all(
        b"GET /headers HTTP/1.1\r\nhost: gate\r\nconnection: close, X-Client-Private ,x-also\r\n\
          connection: x-third\r\nx-client-private: secret\r\nx-also: 1\r\nx-third: 3\r\n\
          expect: 100-continue\r\nx-kept: 2\r\n\r\n",
    )
    .await
    .unwrap();
    let (answer, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "the client asked to close: {answer}");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(body, "host,x-kept", "what the upstream received");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("x-upstream-kept: end"), "{head}");
    assert!(!head.contains("x-upstream-private"), "{head}");
}

/// An empty POST, PUT or PATCH goes upstream with `content-length: 0`, however the client framed
/// it (a chunked body of no chunks, or no framing at all): RFC 9110 §8.6 asks a client to send
/// it, and some servers (Google's front ends among them) refuse such a request without it
/// (411). A GET stays without one.
#[tokio::test]
async fn an_empty_post_goes_upstream_with_content_length_0() {
    use tokio::io::AsyncWriteExt as _;
    let (up, _seen) = upstream().await;
    let (gate_url, _gate) = start_gate(&up, 2, 2, Duration::from_secs(1)).await;
    for (request, seen) in [
        (
            "POST /headers HTTP/1.1\r\nhost: gate\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n0\r\n\r\n",
            "content-length,host",
        ),
        (
            "PUT /headers HTTP/1.1\r\nhost: gate\r\nconnection: close\r\n\r\n",
            "content-length,host",
        ),
        (
            "PATCH /headers HTTP/1.1\r\nhost: gate\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            "content-length,host",
        ),
        (
            "GET /headers HTTP/1.1\r\nhost: gate\r\nconnection: close\r\n\r\n",
            "host",
        ),
    ] {
        let mut s = raw(&gate_url).await;
        s.write_all(request.as_bytes()).await.unwrap();
        let (answer, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{request}: {answer}");
        assert_eq!(body, seen, "what the upstream received for {request}");
    }
}

/// At `max_connections`, a new connection is served and the oldest is asked to close: at once
/// when idle, and only after its answer when a request is in progress. A flood of idle
/// connections therefore never takes the process's file descriptors from the probe listener.
#[tokio::test]
async fn at_the_connection_cap_the_oldest_closes_and_a_request_in_progress_finishes() {
    use tokio::io::AsyncWriteExt as _;
    let (up, _) = upstream().await;
    let (url, _gate) = serve_gate(Options {
        max_connections: 3,
        ..options(&up, 4, 4, Duration::from_secs(5))
    })
    .await;
    let addr = url.trim_start_matches("http://").to_owned();
    // The oldest connection is in the middle of a slow request; two more are idle.
    let mut busy = tokio::net::TcpStream::connect(&addr).await.unwrap();
    busy.write_all(b"GET /slow?ms=600 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut idle1 = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut idle2 = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Two more: the busy one and then the first idle one are asked to close.
    let new1 = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let new2 = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (_, closed) = read_until_closed(&mut idle1, Duration::from_secs(2)).await;
    assert!(closed, "the oldest idle connection is closed to make room");
    let (text, closed) = read_until_closed(&mut busy, Duration::from_secs(3)).await;
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "the request in progress is answered first: {text:?}"
    );
    assert!(closed, "and then its connection closes");
    // The newest connections are served.
    let r = client()
        .get(format!("{url}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, closed) = read_until_closed(&mut idle2, Duration::from_millis(300)).await;
    assert!(closed, "the next oldest made room for the client above");
    drop((new1, new2));
}

/// A client that sends its headers and then trickles its body (a slowloris past the headers)
/// gets 408 once `header_read_timeout` has passed, instead of holding its connection for ever;
/// the upstream never sees the request.
#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408() {
    use tokio::io::AsyncWriteExt as _;
    let (up, seen) = upstream().await;
    let (url, gate) = serve_gate(Options {
        header_read_timeout: Duration::from_millis(300),
        ..options(&up, 4, 4, Duration::from_secs(5))
    })
    .await;
    let addr = url.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"pro")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (text, _) = read_until_closed(&mut s, Duration::from_secs(3)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(text.contains("request_timeout"), "{text:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(seen.requests.load(Ordering::SeqCst), 0);
    assert_eq!(gate.count(Outcome::BadRequest), 1);
}

/// A client that sends half its headers, or holds a connection idle after its answer, is cut
/// once `header_read_timeout` has passed; a client that keeps sending requests is not, however
/// long its connection lives: the limit starts again with each request's headers.
#[tokio::test]
async fn headers_must_arrive_within_header_read_timeout_of_each_request() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (up, _) = upstream().await;
    let (url, _gate) = serve_gate(Options {
        header_read_timeout: Duration::from_millis(400),
        ..options(&up, 4, 4, Duration::from_secs(5))
    })
    .await;
    let addr = url.trim_start_matches("http://").to_owned();
    let started = std::time::Instant::now();
    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let request = b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n";
    let mut busy = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    for s in [&mut idle, &mut busy] {
        s.write_all(request).await.unwrap();
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
    // The busy client sends a request every 100 ms for 1.2 s: three times the limit.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        busy.write_all(request).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(2), busy.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{:?} after {:?}",
            String::from_utf8_lossy(&buf[..n]),
            started.elapsed()
        );
    }
    for (name, s) in [("half-sent headers", &mut half), ("idle", &mut idle)] {
        let (_, closed) = read_until_closed(s, Duration::from_millis(50)).await;
        assert!(closed, "{name}: still open after {:?}", started.elapsed());
    }
}

/// The limit on the next request's headers never cuts a request in progress: an answer that
/// begins, or ends, later than `header_read_timeout` after its request reaches the client whole,
/// and the connection serves the next request; the limit counts again from each answer's end.
#[tokio::test]
async fn answers_longer_than_header_read_timeout_are_not_cut() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (up, _) = upstream().await;
    let (url, gate) = serve_gate(Options {
        header_read_timeout: Duration::from_millis(300),
        ..options(&up, 4, 4, Duration::from_secs(5))
    })
    .await;
    let mut s = raw(&url).await;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    // Slow to begin (800 ms), then slow to end (8 events 100 ms apart): each past the limit.
    let requests: [(&[u8], &[u8]); 2] = [
        (
            b"GET /slow?ms=800 HTTP/1.1\r\nhost: x\r\n\r\n",
            b"{\"ok\":true}",
        ),
        (
            b"GET /stream?chunks=8&every=100 HTTP/1.1\r\nhost: x\r\n\r\n",
            b"data: 7\n\n\r\n0\r\n\r\n",
        ),
    ];
    for (request, end) in requests {
        s.write_all(request).await.unwrap();
        got.clear();
        while !got.ends_with(end) {
            let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
                .await
                .expect("the answer goes on")
                .unwrap();
            assert!(n > 0, "cut: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
    }
    assert_eq!(gate.count(Outcome::Ok), 2);
    // Idle after its answer, the connection is closed once the limit has passed.
    let started = std::time::Instant::now();
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(2)).await;
    assert!(closed, "still open");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed after {:?}, before the limit",
        started.elapsed()
    );
}

/// A connection to `addr` with a 4 KiB receive buffer: what it does not read soon stalls the
/// writer.
async fn small_reader(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(addr).await.unwrap()
}

/// A client that stops reading a streamed answer is cut once the gate's writes to it have
/// stalled for `header_read_timeout`: the upstream request is cancelled and the slot freed, so
/// clients that never read cannot hold the gate's slots (or its connections) for ever. The
/// same for a client that pipelines requests and never reads their answers.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_and_frees_its_slot() {
    use tokio::io::AsyncWriteExt as _;
    let (up, seen) = upstream().await;
    let (url, gate) = serve_gate(Options {
        header_read_timeout: Duration::from_millis(300),
        ..options(&up, 1, 0, Duration::from_millis(100))
    })
    .await;
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let mut s = small_reader(addr).await;
    s.write_all(b"GET /flood HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    while seen.in_flight.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(gate.admission().in_flight(), 1, "the stream holds its slot");
    let started = std::time::Instant::now();
    while gate.admission().in_flight() > 0 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        gate.admission().in_flight(),
        0,
        "the slot is still held {:?} after the client stopped reading",
        started.elapsed()
    );
    assert_eq!(seen.cancelled.load(Ordering::SeqCst), 1);
    let r = client()
        .get(format!("{url}/slow?ms=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the freed slot serves the next request");

    // Pipelined requests whose answers are never read: the connection is cut.
    let mut s = small_reader(addr).await;
    let body = vec![b'y'; 60_000];
    let mut many = Vec::new();
    for _ in 0..40 {
        many.extend_from_slice(
            format!(
                "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        many.extend_from_slice(&body);
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), s.write_all(&many)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Cut: a write meets the reset. Held open: writes fill the buffers and block.
    let cut = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if s.write_all(&[b'z'; 65536]).await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(
        cut.is_ok(),
        "the connection is still open after its answers stalled"
    );
}

/// A large sized answer (an embeddings batch can be tens of MB) is passed on as it comes, like
/// a stream, not read whole into memory first: an upstream announcing 64 MiB has its first
/// megabytes at the client at once, and vitals' memory never holds the whole answer.
#[tokio::test]
async fn a_large_sized_answer_is_passed_on_as_it_comes() {
    let (up, _) = upstream().await;
    let (url, _gate) = serve_gate(options(&up, 4, 4, Duration::from_secs(1))).await;
    let started = std::time::Instant::now();
    let mut r = tokio::time::timeout(
        Duration::from_secs(2),
        client().get(format!("{url}/huge")).send(),
    )
    .await
    .expect("the head arrives before the whole answer")
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.content_length(), Some(64 << 20));
    let mut got = 0usize;
    while got < 2 << 20 {
        let chunk = tokio::time::timeout(Duration::from_secs(2), r.chunk())
            .await
            .expect("the first 2 MiB arrive as the upstream sends them")
            .unwrap()
            .unwrap();
        got += chunk.len();
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// A 503 or 429 is read to see whether it is transient (a model loading); one whose body runs
/// past 64 KiB is not read on (an endless body would hold the request until request_timeout
/// and fill vitals' memory): 502 upstream_garbage at once, with the reason.
#[tokio::test]
async fn a_transient_looking_answer_with_an_endless_body_is_not_read_whole() {
    let (up, _) = upstream().await;
    let (url, gate) = serve_gate(options(&up, 4, 4, Duration::from_secs(1))).await;
    let started = std::time::Instant::now();
    let r = client()
        .get(format!("{url}/endless503"))
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.status(), 502);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_garbage", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("64 KiB"),
        "{body}"
    );
    assert_eq!(gate.admission().in_flight(), 0);
}

/// An upstream that goes silent in the middle of a streamed answer (a hung model server) is cut
/// once it has sent nothing for `request_timeout`: the client's stream ends short, the upstream
/// request is cancelled and the slot freed. Hung streams cannot take every slot for ever.
#[tokio::test]
async fn a_stream_silent_for_request_timeout_is_cut_and_frees_its_slot() {
    let (up, seen) = upstream().await;
    let (url, gate) = serve_gate(Options {
        request_timeout: Duration::from_millis(500),
        ..options(&up, 1, 0, Duration::from_millis(100))
    })
    .await;
    let mut r = client().get(format!("{url}/forever")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"data: 0\n\n");
    let started = std::time::Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(3), r.chunk())
        .await
        .expect("the silent stream is cut");
    assert!(
        end.is_err(),
        "the client sees the stream end short: {end:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(gate.admission().in_flight(), 0);
    assert_eq!(seen.cancelled.load(Ordering::SeqCst), 1);
    // A stream that keeps sending is not cut, however long it lasts.
    let mut r = client()
        .get(format!("{url}/stream?chunks=8&every=200"))
        .send()
        .await
        .unwrap();
    let mut events = 0;
    while let Some(chunk) = r.chunk().await.unwrap() {
        events += chunk
            .split(|&b| b == b'\n')
            .filter(|l| l.starts_with(b"data:"))
            .count();
    }
    assert_eq!(events, 8, "1.4 s of events, each within 0.2 s of the last");
}

/// An answer read whole reaches the client with its length stated once, and true, however the
/// upstream stated it: twice, with zeros in front, or beside chunks that do not add up to it
/// (hyper writes a length it is given without checking it against the body, so the gate gives
/// it none).
#[tokio::test]
async fn an_answer_read_whole_states_its_length_once_and_truly() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let raw_url = raw_upstream(|mut s, path| async move {
        let length: &[u8] = match path.as_str() {
            "/twice" => b"content-length: 2\r\ncontent-length: 2\r\n",
            "/zeros" => b"content-length: 002\r\n",
            // Chunked, with a length that does not hold: hyper reads the chunks.
            "/both" => b"transfer-encoding: chunked\r\ncontent-length: 5\r\n",
            _ => b"content-length: 2\r\n",
        };
        let body: &[u8] = if path == "/both" {
            b"2\r\nok\r\n0\r\n\r\n"
        } else {
            b"ok"
        };
        let answer = [
            b"HTTP/1.1 200 OK\r\nconnection: close\r\n".as_slice(),
            length,
            b"\r\n",
            body,
        ]
        .concat();
        let _ = s.write_all(&answer).await;
    })
    .await;
    let (gate_url, _gate) = start_gate(&raw_url, 2, 2, Duration::from_secs(5)).await;
    for (path, length) in [
        ("/once", "2"),
        ("/zeros", "2"),
        ("/twice", "2"),
        ("/both", "2"),
    ] {
        let mut s = raw(&gate_url).await;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: gate\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer))
            .await
            .unwrap()
            .unwrap();
        let answer = String::from_utf8_lossy(&answer).to_lowercase();
        let lengths: Vec<&str> = answer
            .lines()
            .filter_map(|l| l.strip_prefix("content-length: "))
            .collect();
        assert_eq!(lengths, [length], "{path}: {answer}");
        assert!(answer.starts_with("http/1.1 200"), "{path}: {answer}");
        assert!(answer.ends_with("\r\n\r\nok"), "{path}: {answer}");
    }
}

/// A HEAD answer keeps the upstream's `Content-Length` (the size a GET would have), and the GET
/// beside it its body and length.
#[tokio::test]
async fn a_head_answer_keeps_the_upstreams_content_length() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = service_fn(|_req: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("hello"))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let (gate_url, _gate) =
        start_gate(&format!("http://{addr}"), 4, 4, Duration::from_secs(5)).await;
    let c = client();
    let head = c
        .head(format!("{gate_url}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()
            .get("content-length")
            .map(|v| v.to_str().unwrap()),
        Some("5"),
        "{:?}",
        head.headers()
    );
    let get = c.get(format!("{gate_url}/v1/models")).send().await.unwrap();
    assert_eq!(get.headers()["content-length"], "5");
    assert_eq!(get.text().await.unwrap(), "hello");
}
