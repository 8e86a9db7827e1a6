//! The gate: a reverse proxy in front of an OpenAI-compatible inference server that keeps the
//! server's own invisible queue empty.
//!
//! - At most `max_concurrent` requests reach the upstream; up to `queue_depth` more wait, each at
//!   most `queue_timeout`; the rest are **shed** at once: `503`, a `Retry-After` computed from
//!   the queue and the recent service time, an `x-vitals-overloaded` header and an OpenAI-shaped
//!   JSON error ([`admission`]).
//! - Answers stream through as the upstream sends them (server-sent events included): nothing is
//!   buffered, and a slot is held until the answer ends. A client that goes away cancels the
//!   upstream request and frees its slot.
//! - `request_timeout` bounds the wait for the upstream's answer to begin, and any silence of
//!   the upstream in the middle of a streamed answer.
//! - A circuit breaker ([`breaker`]) opens after consecutive upstream faults and fails fast
//!   while open; its state is published ([`Gate::circuit`]) for readiness.
//! - A client has `header_read_timeout` to send each request's headers and body, and may not
//!   stop reading its answer for longer: a stalled client is cut, and its slot freed.
//! - A request head over 64 KiB gets 431; the bodies held at once, over all requests, are
//!   bounded by `max_buffered` (a request whose body would pass it is shed, `buffers_full`).
//! - A request body over `max_body` gets 413, a malformed request (or a body that says it is
//!   JSON and is not) 400, from the gate itself; an upstream that refuses, resets or does not
//!   answer gives 502 or 504 with the reason, as does one that answers an HTML error page or
//!   cuts a sized answer short (an HTML page below 500 is an answer a client asked for, never a
//!   fault). An answer with a `Content-Length` of up to 1 MiB is read whole before it is
//!   passed on (so a truncation becomes a 502); a larger one, and one without (server-sent
//!   events, chunked streams), passes through as it comes.
//!
//! Probe routes never sit behind the gate: it has a listener of its own.

pub mod adaptive;
pub mod admission;
pub mod breaker;
mod deadlines;
pub mod metrics;
pub mod retry;
pub mod saturation;
mod upstream;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use deadlines::{Deadline, Deadlines};

pub use admission::{Admission, Shed, Slot};
use breaker::{Admit, Breaker};
pub use breaker::{BreakerOptions, CircuitState};

/// The gate's settings (the `[gate]` table).
#[derive(Debug, Clone)]
pub struct Options {
    /// The inference server: `http://127.0.0.1:8081`, or a hosted API's base such as
    /// `https://api.openai.com`. A request's path and query are appended to it.
    pub upstream: url::Url,
    pub max_concurrent: usize,
    pub queue_depth: usize,
    pub queue_timeout: Duration,
    /// How long the upstream may take to begin its answer.
    pub request_timeout: Duration,
    /// The largest request body the gate forwards.
    pub max_body: usize,
    /// The most bytes of request bodies the gate holds at once, over all requests (bodies are
    /// read whole before a request takes its place in the queue); a request whose body would
    /// pass it is shed.
    pub max_buffered: usize,
    /// With an `https://` upstream: a PEM file of the certificate authorities to trust instead
    /// of the bundled public roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// How long a client may take to send its request's headers, or its body.
    pub header_read_timeout: Duration,
    /// The most client connections the gate holds; at the cap, the oldest is asked to close
    /// (at once when idle, after its request otherwise) to make room for a new one.
    pub max_connections: usize,
    pub breaker: BreakerOptions,
    pub saturation: saturation::SaturationOptions,
    pub retry: retry::RetryOptions,
    /// `gate.limit = "adaptive"`: the limit follows the upstream's pace within these bounds
    /// (see [`adaptive`]); `None` keeps `max_concurrent`.
    pub adaptive: Option<adaptive::AdaptiveOptions>,
    /// Requests read together are sent to the upstream together: each admitted request lets
    /// the others ready now go first (one turn of the runtime's loop) before it is sent. For a
    /// gate with one CPU ([`one_cpu`]): there each write to a local upstream wakes it on the
    /// gate's own core, and batched writes wake it less often (less CPU a request, so more
    /// requests a second). With more CPUs the upstream answers on another core while the gate
    /// reads on, and a request sent at once is answered sooner. Measured both ways in
    /// BENCHMARKS.md.
    pub batch_sends: bool,
}

/// Whether this thread may run on one CPU only (its affinity, or a cgroup's CPU quota of one
/// core or less): the default of [`Options::batch_sends`].
pub fn one_cpu() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() == 1)
}

/// One attempt's result.
enum Got {
    Answer(upstream::Answer),
    /// A short answer (429, 503) read whole to see whether it is transient.
    Read(StatusCode, HeaderMap, Bytes),
    Failed(upstream::SendError),
    Timeout,
    Truncated,
    /// A 429 or 503 whose body ran past SHORT_ANSWER.
    TooLong(StatusCode),
}

/// The gate could not be built (its upstream's client).
#[derive(Debug)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// The body of every answer the gate gives.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// How a request ended: the `outcome` label of `vitals_gate_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    UpstreamError,
    ShedQueueFull,
    ShedQueueTimeout,
    CircuitOpen,
    /// The client went away before its answer ended.
    ClientCancelled,
    BadRequest,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Ok,
        Outcome::UpstreamError,
        Outcome::ShedQueueFull,
        Outcome::ShedQueueTimeout,
        Outcome::CircuitOpen,
        Outcome::ClientCancelled,
        Outcome::BadRequest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::UpstreamError => "upstream_error",
            Outcome::ShedQueueFull => "shed_queue_full",
            Outcome::ShedQueueTimeout => "shed_queue_timeout",
            Outcome::CircuitOpen => "circuit_open",
            Outcome::ClientCancelled => "client_cancelled",
            Outcome::BadRequest => "bad_request",
        }
    }
}

/// The circuit as readiness sees it: its state, and why it last opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Circuit {
    pub state: CircuitState,
    pub reason: String,
}

/// The gate. Cheap to clone: every clone shares the slots, the queue and the counts.
#[derive(Debug, Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    options: Options,
    admission: Admission,
    breaker: Mutex<Breaker>,
    /// The breaker is closed with no fault since its last success ([`Breaker::is_clean`]):
    /// then admitting a request and recording its success need no lock.
    clean: AtomicBool,
    circuit: watch::Sender<Circuit>,
    client: upstream::Client,
    metrics: metrics::GateMetrics,
    /// Time to first byte of forwarded requests: their sum (µs) and count, for the load samples.
    ttfb_micros: AtomicU64,
    ttfb_count: AtomicU64,
    load: Mutex<LoadSampler>,
    budget: Mutex<retry::Budget>,
    limiter: Option<Mutex<adaptive::Vegas>>,
    /// The upstream's port when it moves (a supervised process on a port range); 0: the URL's.
    port: AtomicU16,
    progress: Arc<Progress>,
    /// Answers below 500 passed on (a stream as it begins), for a supervisor: proof that the
    /// upstream answers.
    begun: AtomicU64,
    /// Requests sent to the upstream whose answer has not begun ([`Awaiting`]).
    awaiting: AtomicUsize,
    /// Connections closed for opening with HTTP/2's preface, for the log's rate limit.
    h2_clients: AtomicU64,
    /// Bytes of request bodies held now, against `max_buffered` ([`Charge`]).
    buffered: AtomicUsize,
    /// Requests shed for `max_buffered`, for the log's rate limit.
    buffers_full: AtomicU64,
}

/// A request sent to the upstream whose answer has not begun, counted in `Inner::awaiting` while
/// this lives (a client that goes away drops it too).
struct Awaiting<'a>(&'a AtomicUsize);

impl<'a> Awaiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Awaiting(count)
    }
}

impl Drop for Awaiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// When the upstream last showed progress: an answer began, a byte of one arrived, or a request
/// went to it while none was in flight. A hung upstream stops all three. And how often it went
/// silent on a request for `request_timeout`, for a supervisor.
#[derive(Debug)]
pub(crate) struct Progress {
    epoch: Instant,
    last_micros: AtomicU64,
    timed_out: AtomicU64,
}

impl Progress {
    /// The upstream sent nothing on a request for `request_timeout`.
    pub(crate) fn timed_out(&self) {
        self.timed_out.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn mark(&self) {
        self.mark_at(Instant::now());
    }

    fn mark_at(&self, now: Instant) {
        let micros = u64::try_from(now.saturating_duration_since(self.epoch).as_micros())
            .unwrap_or(u64::MAX);
        self.last_micros.store(micros, Ordering::Relaxed);
    }

    fn since(&self) -> Duration {
        let last = Duration::from_micros(self.last_micros.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }
}

/// What the gate has seen of the upstream's traffic, for a supervisor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Answers below 500 passed on since the gate started (a stream as it begins).
    pub answered: u64,
    /// Requests holding a slot now (waiting for or streaming an answer).
    pub in_flight: usize,
    /// Of those, the ones sent whose answer has not begun: a non-streamed answer shows nothing
    /// until it is whole, so their silence is no sign of a hang.
    pub awaiting: usize,
    /// With requests in flight: how long since the upstream last showed progress.
    pub since_progress: Option<Duration>,
    /// Times the upstream went silent on a request for `request_timeout`, before its answer
    /// began (a 504) or in its middle (the stream cut), since the gate started.
    pub timed_out: u64,
}

/// The saturation state machine and the counters at the last sample.
#[derive(Debug)]
struct LoadSampler {
    saturation: saturation::Saturation,
    shed_full: u64,
    ttfb_micros: u64,
    ttfb_count: u64,
}

impl Inner {
    fn circuit_state(&self) -> CircuitState {
        self.breaker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .state(Instant::now())
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), the ones the client library sets itself, and `Expect`.
const NOT_FORWARDED: [header::HeaderName; 9] = [
    // First: `strip` reads the names it lists.
    header::CONNECTION,
    header::HeaderName::from_static("keep-alive"),
    header::HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::HOST,
    // The gate has answered the client's `Expect: 100-continue` itself (hyper does, as it reads
    // the body) and sends the upstream the whole body at once: the upstream has nothing to wait
    // for, and one that does not do expectations would answer 417.
    header::EXPECT,
];

/// Builds the client a gate would use for `upstream` (reading `ca_file`), and says why it cannot
/// be built: `vitals validate` finds what `serve` would refuse. Nothing is connected to.
pub fn check_upstream(upstream: &url::Url, ca_file: Option<&std::path::Path>) -> Result<(), Error> {
    upstream::Client::new(upstream, Duration::from_secs(1), ca_file)
        .map(drop)
        .map_err(Error)
}

impl Gate {
    pub fn new(options: Options) -> Result<Gate, Error> {
        let client = upstream::Client::new(
            &options.upstream,
            options.request_timeout,
            options.ca_file.as_deref(),
        )
        .map_err(Error)?;
        let options_saturation = options.saturation;
        let options_retry = options.retry;
        let options_adaptive = options.adaptive;
        let options_max = options.max_concurrent;
        let (circuit, _) = watch::channel(Circuit {
            state: CircuitState::Closed,
            reason: String::new(),
        });
        Ok(Gate {
            inner: Arc::new(Inner {
                admission: Admission::new(
                    options.max_concurrent,
                    options.queue_depth,
                    options.queue_timeout,
                ),
                breaker: Mutex::new(Breaker::new(options.breaker)),
                clean: AtomicBool::new(true),
                circuit,
                options,
                client,
                metrics: metrics::GateMetrics::new(),
                budget: Mutex::new(retry::Budget::new(options_retry)),
                limiter: options_adaptive.map(|a| Mutex::new(adaptive::Vegas::new(a, options_max))),
                ttfb_micros: AtomicU64::new(0),
                ttfb_count: AtomicU64::new(0),
                port: AtomicU16::new(0),
                h2_clients: AtomicU64::new(0),
                buffered: AtomicUsize::new(0),
                buffers_full: AtomicU64::new(0),
                begun: AtomicU64::new(0),
                awaiting: AtomicUsize::new(0),
                progress: Arc::new(Progress {
                    epoch: Instant::now(),
                    last_micros: AtomicU64::new(0),
                    timed_out: AtomicU64::new(0),
                }),
                load: Mutex::new(LoadSampler {
                    saturation: saturation::Saturation::new(options_saturation),
                    shed_full: 0,
                    ttfb_micros: 0,
                    ttfb_count: 0,
                }),
            }),
        })
    }

    /// Takes this second's load sample (call it once a second) and returns the load readiness
    /// should report: see [`saturation`].
    pub fn sample_load(&self) -> saturation::Load {
        let now = Instant::now();
        let shed_full = self.count(Outcome::ShedQueueFull);
        let ttfb_micros = self.inner.ttfb_micros.load(Ordering::Relaxed);
        let ttfb_count = self.inner.ttfb_count.load(Ordering::Relaxed);
        let mut l = self.inner.load.lock().unwrap_or_else(|p| p.into_inner());
        let forwarded = ttfb_count.saturating_sub(l.ttfb_count);
        let sample = saturation::Sample {
            queued: self.inner.admission.queued(),
            shed_full: shed_full.saturating_sub(l.shed_full),
            ttfb: (forwarded > 0).then(|| {
                Duration::from_micros(ttfb_micros.saturating_sub(l.ttfb_micros) / forwarded)
            }),
        };
        l.shed_full = shed_full;
        l.ttfb_micros = ttfb_micros;
        l.ttfb_count = ttfb_count;
        l.saturation.sample(now, sample).clone()
    }

    /// The circuit's changes: open when it opens, closed when a trial succeeds.
    pub fn circuit(&self) -> watch::Receiver<Circuit> {
        self.inner.circuit.subscribe()
    }

    /// Registers the gate's metrics (`vitals_gate_*`) in `registry`.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        metrics::register(&self.inner, registry);
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.inner.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the circuit lets a request through now (see [`Breaker::admit`]).
    fn admit(&self, now: Instant) -> Admit {
        if self.inner.clean.load(Ordering::Acquire) {
            return Admit::Yes;
        }
        let mut b = self.breaker();
        let admit = b.admit(now);
        self.inner.clean.store(b.is_clean(), Ordering::Release);
        admit
    }

    /// Records a forwarded request's result in the breaker and publishes a change of state.
    fn record(&self, trial: bool, result: Result<(), &str>) {
        // The usual case: a success while nothing is wrong changes nothing.
        if !trial && result.is_ok() && self.inner.clean.load(Ordering::Acquire) {
            return;
        }
        self.change_breaker(|b, now| b.record(now, trial, result));
    }

    /// Applies `change` to the breaker and publishes a change of state.
    fn change_breaker(&self, change: impl FnOnce(&mut Breaker, Instant)) {
        let now = Instant::now();
        let (before, after, reason) = {
            let mut b = self.breaker();
            let before = b.state(now);
            change(&mut b, now);
            self.inner.clean.store(b.is_clean(), Ordering::Release);
            let after = b.state(now);
            // The reason is copied only for a change of state: not on every request.
            let reason = if before == after {
                String::new()
            } else {
                b.reason().to_owned()
            };
            (before, after, reason)
        };
        if before != after {
            if after == CircuitState::Open {
                tracing::warn!(reason = %reason, "gate: circuit open, failing fast");
            } else {
                tracing::info!(state = after.as_str(), "gate: circuit {}", after.as_str());
            }
            self.inner.circuit.send_replace(Circuit {
                state: after,
                reason,
            });
        }
    }

    /// The inference server's base URL.
    pub fn upstream(&self) -> &url::Url {
        &self.inner.options.upstream
    }

    /// Sends requests to `port` from now on (the upstream moved: a supervised process restarted
    /// on another port of its range).
    pub fn set_upstream_port(&self, port: u16) {
        self.inner.port.store(port, Ordering::Relaxed);
    }

    /// The upstream URL for `path`, on the port it runs on now (for messages).
    fn upstream_url(&self, path: &str) -> url::Url {
        let options = &self.inner.options;
        let mut url = options.upstream.clone();
        let base = options.upstream.path().trim_end_matches('/');
        url.set_path(&format!("{base}{path}"));
        match self.inner.port.load(Ordering::Relaxed) {
            0 => {}
            port => {
                let _ = url.set_port(Some(port));
            }
        }
        url
    }

    /// The port the upstream runs on now: 0 for the URL's.
    fn port(&self) -> u16 {
        self.inner.port.load(Ordering::Relaxed)
    }

    /// What the gate has seen of the upstream's traffic (see [`Traffic`]).
    pub fn traffic(&self) -> Traffic {
        let in_flight = self.inner.admission.in_flight();
        Traffic {
            answered: self.inner.begun.load(Ordering::Relaxed),
            in_flight,
            awaiting: self.inner.awaiting.load(Ordering::Relaxed),
            since_progress: (in_flight > 0).then(|| self.inner.progress.since()),
            timed_out: self.inner.progress.timed_out.load(Ordering::Relaxed),
        }
    }

    /// The ceiling learned at start (`"auto"`): the fixed limit, or the adaptive limit's
    /// ceiling.
    pub fn learned_limit(&self, slots: usize) {
        match &self.inner.limiter {
            Some(l) => {
                let mut l = l.lock().unwrap_or_else(|p| p.into_inner());
                l.set_max(slots);
                self.inner.admission.set_limit(l.limit());
            }
            None => self.inner.admission.raise_limit(slots),
        }
    }

    /// Feeds the adaptive limit, if there is one: a time to first byte with the requests in
    /// flight when it was sent, or a drop (`None`: a timeout or a failed connection).
    /// Tells the adaptive limit of an answer: `Measured(ttfb)` (a stream's), `Unmeasured` (an
    /// answer that says nothing of the upstream's queue), or `Failed`.
    fn adapt(&self, answer: Adapt, in_flight: usize) {
        let Some(l) = &self.inner.limiter else { return };
        let mut l = l.lock().unwrap_or_else(|p| p.into_inner());
        let limit = match answer {
            Adapt::Measured(t) => l.sample(t.as_secs_f64(), in_flight),
            Adapt::Unmeasured => l.unmeasured(in_flight),
            Adapt::Failed => l.drop_one(),
        };
        drop(l);
        if limit != self.inner.admission.max_concurrent() {
            self.inner.admission.set_limit(limit);
        }
    }

    /// The upstream's slot count, from llama.cpp's `GET /props` (`total_slots`). An error says
    /// whether asking again may help: a server still loading its model answers 503, or not yet
    /// at all; one that answers 404 or without `total_slots` will not change its mind.
    pub async fn upstream_slots(&self) -> Result<usize, NoSlots> {
        let url = self.upstream_url("/props");
        let answer = self
            .get("/props")
            .await
            .map_err(|_| NoSlots::later(format!("GET {url} did not answer")))?
            .map_err(|e| NoSlots::later(format!("GET {url}: {}", e.detail)))?;
        let status = answer.status;
        if !status.is_success() {
            let mut why = format!("GET {url} answered {status}");
            if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                // The gate holds no key of its own: clients bring theirs.
                why.push_str(" (llama-server started with --api-key answers /props only with the key, which the gate does not hold)");
            }
            let passing = status.is_server_error()
                || status == StatusCode::REQUEST_TIMEOUT
                || status == StatusCode::TOO_MANY_REQUESTS;
            return Err(if passing {
                NoSlots::later(why)
            } else {
                NoSlots::never(why)
            });
        }
        let body = tokio::time::timeout(
            self.inner.options.request_timeout,
            answer.bytes_within(SHORT_ANSWER),
        )
        .await
        .map_err(|_| NoSlots::later(format!("GET {url} did not finish its answer")))?
        .map_err(|e| match e {
            upstream::Unread::TooLong => {
                NoSlots::never(format!("GET {url} answered more than 64 KiB"))
            }
            upstream::Unread::Cut => NoSlots::later(format!("GET {url}: the answer was cut short")),
        })?;
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| NoSlots::never(format!("GET {url} did not answer JSON")))?;
        // The same bounds as a number in the configuration: a limit must be a semaphore's.
        match json.get("total_slots").and_then(serde_json::Value::as_u64) {
            Some(n) if (1..=u64::from(u32::MAX)).contains(&n) => {
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
            Some(n) if n >= 1 => Err(NoSlots::never(format!(
                "GET {url} says total_slots = {n}, more than a limit can be ({})",
                u32::MAX
            ))),
            _ => Err(NoSlots::never(format!(
                "GET {url} has no total_slots ≥ 1 (is it llama.cpp's server?)"
            ))),
        }
    }

    pub fn admission(&self) -> &Admission {
        &self.inner.admission
    }

    /// Requests that ended with `outcome` so far.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.inner.metrics.by_outcome[outcome as usize].get()
    }

    fn counted(&self, outcome: Outcome, response: Response<Out>) -> Response<Out> {
        self.count_only(outcome);
        response
    }

    /// The gate's own 4xx for a request it cannot forward, counted as `bad_request`.
    fn bad_request(&self, status: StatusCode, code: &str, message: &str) -> Response<Out> {
        self.counted(
            Outcome::BadRequest,
            error(status, "invalid_request_error", code, message),
        )
    }

    /// 503 for a request whose body would pass `max_buffered`, counted as `shed_queue_full`:
    /// the gate is full of bodies as its queue would be.
    fn buffers_full(&self) -> Response<Out> {
        let n = self.inner.buffers_full.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(
                shed = n,
                max_buffered = self.inner.options.max_buffered,
                "gate: the request bodies held at once reached gate.max_buffered; shed a request"
            );
        }
        self.counted(
            Outcome::ShedQueueFull,
            overloaded(
                "buffers_full",
                "the gate holds as many request bodies as gate.max_buffered allows; retry after the Retry-After delay",
                Duration::from_secs(1),
            ),
        )
    }

    fn count_only(&self, outcome: Outcome) {
        self.inner.metrics.by_outcome[outcome as usize].inc();
    }

    /// Answers one request: admitted and forwarded, or refused by the gate itself.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        self.clone().respond(req, None).await.map(Out::boxed)
    }

    /// [`Gate::handle`], with the deadlines of the connection it came on (`None`: tokio timers).
    ///
    /// Takes the gate and the deadlines as its own (each an `Arc`), so that the connection's
    /// service returns this future as it is: wrapped in an `async` block, the request would be
    /// held twice in it, once for the block and once for this.
    async fn respond<B>(self, req: Request<B>, timers: Option<Arc<Deadlines>>) -> Response<Out>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let timers = timers.as_ref();
        let (mut parts, body) = req.into_parts();
        // A tunnel is not an API request; forwarded, the upstream's 200 would leave the client
        // a connection with nothing at its other end.
        if parts.method == Method::CONNECT {
            return self.bad_request(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "the gate passes API requests to the inference server and opens no tunnels (CONNECT)",
            );
        }
        // A body still arriving must arrive within header_read_timeout: a client that trickles
        // one would otherwise hold its connection for ever (a slowloris past the headers).
        let options = &self.inner.options;
        // Held until the request is done with its body: after its answer began.
        let charge = Charge {
            buffered: &self.inner.buffered,
            limit: options.max_buffered,
            bytes: AtomicUsize::new(0),
        };
        // A request without a body (a GET, a `Content-Length: 0`) has nothing to read.
        let read = if body.is_end_stream() {
            Ok(Ok(None))
        } else {
            within(
                timers,
                || Instant::now() + options.header_read_timeout,
                Limited::new(
                    Charged {
                        body,
                        charge: &charge,
                    },
                    options.max_body,
                )
                .collect(),
            )
            .await
            .map(|read| read.map(Some))
        };
        let body = match read {
            Ok(Ok(collected)) => collected.map(|c| c.to_bytes()).unwrap_or_default(),
            Ok(Err(e)) if e.is::<BuffersFull>() => return self.buffers_full(),
            Err(_) => {
                let limit = options.header_read_timeout;
                return self.bad_request(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    &format!("the request body did not arrive within {limit:?} (server.header_read_timeout)"),
                );
            }
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                let limit = options.max_body;
                return self.bad_request(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request_too_large",
                    &format!("the request body is over the gate's limit of {limit} bytes"),
                );
            }
            Ok(Err(_)) => {
                return self.bad_request(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "the request body could not be read",
                )
            }
        };
        if let Some(broken) = not_json(&parts.headers, &body) {
            return self.bad_request(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                &format!(
                    "the request body says it is JSON (its Content-Type) and is not: {broken}"
                ),
            );
        }
        let arrived = Instant::now();
        // Fail fast while the circuit is open, before taking a place in the queue.
        let trial = match self.admit(arrived) {
            Admit::Yes => false,
            Admit::Trial => true,
            Admit::No { retry_after } => {
                return self.counted(Outcome::CircuitOpen, circuit_open(retry_after))
            }
        };
        // Until an answer begins, dropping this (the client went away) counts the request as
        // cancelled and hands a half-open trial to the next request.
        let mut pending = Pending {
            gate: &self,
            trial,
            done: false,
        };
        let slot = match self.inner.admission.admit_at(arrived).await {
            Ok(slot) => slot,
            Err(shed) => {
                pending.done = true;
                if trial {
                    self.breaker().abandon_trial();
                }
                return self.counted(outcome_of(shed), shed_response(shed));
            }
        };
        self.inner.metrics.queue_wait.observe(slot.waited);
        // Set where the answer is a stream: its duration runs to its end, observed there.
        let mut streamed = false;
        let response = self
            .forward(
                &mut parts,
                body,
                slot,
                arrived,
                trial,
                timers,
                &mut streamed,
            )
            .await;
        pending.done = true;
        if !streamed {
            self.inner.metrics.duration.observe(arrived.elapsed());
        }
        response
    }

    // The request's head is borrowed, not moved: it stays where `respond` holds it, and this
    // future holds no second copy of it. `streamed` is set where the answer is a stream that
    // observes the request's duration at its end.
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        parts: &mut http::request::Parts,
        body: Bytes,
        slot: Slot,
        arrived: Instant,
        trial: bool,
        timers: Option<&Arc<Deadlines>>,
        streamed: &mut bool,
    ) -> Response<Out> {
        let options = &self.inner.options;
        let target = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let port = self.port();
        // A HEAD answer's Content-Length is the size of the GET's: passed on as it is.
        let for_head = parts.method == Method::HEAD;
        let says_length = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
        let headers = &mut parts.headers;
        // The client's `Host` is replaced as the request is sent, not removed here: one lookup
        // rather than two.
        strip_but(headers, HOST);
        // A method that gives content a meaning says its length even when there is none (RFC
        // 9110 §8.6); hyper sends no Content-Length for an empty body, and some servers answer
        // such a POST 411.
        if says_length && body.is_empty() && !headers.contains_key(header::CONTENT_LENGTH) {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        // The slot's wait is measured: no clock to read.
        let sent = arrived + slot.waited;
        let in_flight_at_send = self.inner.admission.in_flight();
        if in_flight_at_send <= 1 {
            // The start of a busy spell: a stall is counted from here.
            self.inner.progress.mark_at(sent);
        }
        let deadline = sent + options.request_timeout;
        // Without retries the budget has nothing to pay for.
        if options.retry.attempts > 0 {
            self.budget().deposit(sent);
        }
        // With one CPU, sent once the requests read with this one are in: tokio runs a yielded
        // task after the others ready now and a look at the sockets. Every write to the upstream
        // wakes it, and a woken upstream takes the core from the gate (they share it, and the
        // upstream is owed time): writes spread over the batch made it answer a request or two
        // at a time. Sent together, 1.5 to 3 % more requests a second and p50 25 to 30 µs lower
        // in paired rounds at saturation (BENCHMARKS.md); a request alone waits one turn of the
        // loop. With more CPUs the wait is only latency: 3.9 % fewer requests a second.
        if options.batch_sends {
            tokio::task::yield_now().await;
        }
        let mut attempt = 0u32;
        let awaiting = Awaiting::new(&self.inner.awaiting);
        // Each attempt holds the same slot: retries never raise the upstream's concurrency.
        let answer = loop {
            // The last attempt this request may make takes the headers; one before it, a copy.
            let attempt_headers = if attempt < options.retry.attempts {
                headers.clone()
            } else {
                std::mem::take(headers)
            };
            let request = self.inner.client.send(
                parts.method.clone(),
                &target,
                port,
                attempt_headers,
                body.clone(),
                sent,
            );
            let got = match within(timers, || deadline, request).await {
                Err(_) => Got::Timeout,
                Ok(Err(e)) => Got::Failed(e),
                Ok(Ok(r)) => Got::Answer(r),
            };
            // Only where the upstream took nothing in, or said it is momentarily unable.
            let (got, wait_at_least) = match got {
                // A certificate refused now would be refused again: not retried.
                Got::Failed(e) if e.connect && !e.certificate => {
                    (Got::Failed(e), Some(Duration::ZERO))
                }
                Got::Answer(r)
                    if r.status == StatusCode::TOO_MANY_REQUESTS
                        || r.status == StatusCode::SERVICE_UNAVAILABLE =>
                {
                    let after = retry::retry_after(r.headers.get(header::RETRY_AFTER));
                    let status = r.status;
                    let head = r.headers.clone();
                    // These answers are short: read them to see whether they are transient.
                    match within(timers, || deadline, r.bytes_within(SHORT_ANSWER)).await {
                        Ok(Ok(bytes)) => {
                            let transient = (status == StatusCode::TOO_MANY_REQUESTS
                                && after.is_some())
                                || (status == StatusCode::SERVICE_UNAVAILABLE
                                    && (is_loading(&bytes) || after.is_some()));
                            (
                                Got::Read(status, head, bytes),
                                transient.then(|| after.unwrap_or(Duration::ZERO)),
                            )
                        }
                        Ok(Err(upstream::Unread::TooLong)) => (Got::TooLong(status), None),
                        _ => (Got::Truncated, None),
                    }
                }
                other => (other, None),
            };
            if let Some(at_least) = wait_at_least {
                if attempt < options.retry.attempts {
                    let wait = self.budget().backoff(attempt, at_least);
                    let now = Instant::now();
                    if now + wait < deadline && self.budget().withdraw(now) {
                        attempt += 1;
                        self.inner.metrics.retries.inc();
                        tracing::debug!(attempt, ?wait, "gate: retrying");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                }
            }
            break got;
        };
        drop(awaiting);
        let mut upstream = match answer {
            Got::Answer(r) => r,
            Got::Read(status, mut head, bytes) => {
                strip(&mut head);
                let now = Instant::now();
                return self.finish_read(trial, status, head, bytes, slot, for_head, now);
            }
            Got::Failed(e) if e.malformed => {
                self.adapt(Adapt::Failed, in_flight_at_send);
                tracing::warn!(error = %e.detail, "gate: the upstream's answer is not HTTP/1.1");
                return self.garbage(
                    trial,
                    &format!("the upstream's answer is not HTTP/1.1 ({})", e.detail),
                );
            }
            Got::Failed(e) => {
                self.adapt(Adapt::Failed, in_flight_at_send);
                let reason = if e.certificate {
                    "the upstream's TLS certificate is not trusted (a private CA goes in gate.ca_file)"
                } else if e.connect {
                    "the upstream refused the connection"
                } else {
                    "the upstream connection failed before an answer"
                };
                tracing::warn!(error = %e.detail, "gate: {reason}");
                return self.upstream_fault(
                    trial,
                    StatusCode::BAD_GATEWAY,
                    "upstream_unavailable",
                    reason,
                );
            }
            Got::Timeout => {
                self.adapt(Adapt::Failed, in_flight_at_send);
                self.inner.progress.timed_out();
                let reason = format!(
                    "the upstream did not begin its answer within request_timeout ({:?})",
                    options.request_timeout
                );
                return self.upstream_fault(
                    trial,
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    &reason,
                );
            }
            Got::Truncated => return self.truncated(trial),
            Got::TooLong(status) => {
                let reason = format!(
                    "the upstream's {} answer ran past 64 KiB: not a transient answer",
                    status.as_u16()
                );
                return self.garbage(trial, &reason);
            }
        };
        let answered = Instant::now();
        let ttfb = answered.saturating_duration_since(sent);
        self.inner.metrics.ttfb.observe(ttfb);
        // A stream's first byte comes after the upstream's queue and the prompt; a non-streamed
        // answer's after the whole generation, as long as the model writes: no measure of the
        // upstream's pace, so neither the adaptive limit nor saturation takes it as a sample.
        // The Content-Type, looked up once: a stream of events, an HTML page, or another.
        let (events, html) = upstream
            .headers
            .get(header::CONTENT_TYPE)
            .map_or((false, false), |v| {
                (media_is(v, b"text/event-stream"), media_is(v, b"text/html"))
            });
        if events {
            self.adapt(Adapt::Measured(ttfb), in_flight_at_send);
            self.inner.ttfb_micros.fetch_add(
                u64::try_from(ttfb.as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            self.inner.ttfb_count.fetch_add(1, Ordering::Relaxed);
        } else {
            self.adapt(Adapt::Unmeasured, in_flight_at_send);
        }
        let status = upstream.status;
        // hyper passes on no 1xx but a 101, which switches the connection to another protocol:
        // the gate asks for no upgrade (it strips `Upgrade`), so that is no answer to pass on.
        if status.is_informational() {
            return self.garbage(
                trial,
                &format!("the upstream answered {status}, which is no final answer to this request (the gate passes no protocol upgrades)"),
            );
        }
        // hyper reads any three digits; 600 and above belong to no class of RFC 9110 §15, and a
        // client's library may refuse them or take them for anything.
        if status.as_u16() > 599 {
            return self.garbage(
                trial,
                &format!(
                    "the upstream answered status {}, outside HTTP's 100 to 599",
                    status.as_u16()
                ),
            );
        }
        let read_whole = upstream
            .content_length()
            .is_some_and(|n| n <= READ_WHOLE_UP_TO);
        let mut headers = std::mem::take(&mut upstream.headers);
        strip(&mut headers);
        if html {
            return self.html_page(trial, status, answered);
        }
        // A sized answer is read whole (within request_timeout more), so a truncated one
        // becomes a 502; an unsized one (a stream), or one larger than READ_WHOLE_UP_TO, passes
        // through as it comes (cut short, the client sees it short of its Content-Length).
        if read_whole {
            // Usually all there already: then no timer is set.
            let read = within(
                timers,
                || answered + options.request_timeout,
                upstream.bytes(),
            )
            .await;
            return match read {
                Ok(Ok(bytes)) => {
                    self.finish_read(trial, status, headers, bytes, slot, for_head, answered)
                }
                Ok(Err(_)) | Err(_) => self.truncated(trial),
            };
        }
        // The slot travels with the stream: held until the last byte, or until the client goes
        // away and hyper drops the body (which drops the upstream response, cancelling it).
        self.inner.progress.mark_at(answered);
        let mut body = upstream.body;
        let ahead = match upstream::Ahead::peek(&mut body) {
            Ok(ahead) => ahead,
            Err(e) if upstream::cut_short(&e) => {
                tracing::warn!("gate: the upstream hung up in the start of its answer");
                return self.truncated(trial);
            }
            Err(e) => {
                let detail = chain(&e);
                tracing::warn!(error = %detail, "gate: the upstream's answer broke at its start");
                return self.garbage(
                    trial,
                    &format!("the upstream's answer is malformed or broke at its start ({detail})"),
                );
            }
        };
        // An error status is judged as it begins; any other answer by how its stream ends.
        let fault = status.is_server_error();
        let settle = (!fault).then(|| {
            self.inner.begun.fetch_add(1, Ordering::Relaxed);
            // A half-open trial's success is the upstream answering again: the circuit closes
            // now, not at the end of a stream that may last minutes.
            if trial {
                self.record(true, Ok(()));
            }
            *streamed = true;
            Settle {
                gate: self.clone(),
                arrived,
                recorded: trial,
                done: false,
            }
        });
        let body = Out::Stream(BoxBody::new(upstream::Held {
            body,
            ahead,
            _slot: slot,
            progress: self.inner.progress.clone(),
            silence: deadlines::Stall::new(timers.cloned(), options.request_timeout),
            settle,
        }));
        if fault {
            return self.pass_on(trial, status, headers, body, false, for_head, answered);
        }
        answer_with(status, headers, body, for_head)
    }

    /// An answer read whole (its headers stripped), `now` being when it was read: its status
    /// decides the breaker, and it goes to the client as is (`for_head`: to a HEAD request).
    // The request's facts (a trial, a HEAD) beside the answer's.
    #[allow(clippy::too_many_arguments)]
    fn finish_read(
        &self,
        trial: bool,
        status: StatusCode,
        headers: HeaderMap,
        bytes: Bytes,
        slot: Slot,
        for_head: bool,
        now: Instant,
    ) -> Response<Out> {
        slot.release_at(now);
        let loading = status == StatusCode::SERVICE_UNAVAILABLE && is_loading(&bytes);
        let body = Out::Whole(Full::new(bytes));
        self.pass_on(trial, status, headers, body, loading, for_head, now)
    }

    /// Passes the upstream's answer on: a 5xx is a fault for the breaker (unless the model is
    /// only loading, which is the upstream coming up) and counts as `upstream_error`.
    // The request's facts (a trial, a HEAD) beside the answer's.
    #[allow(clippy::too_many_arguments)]
    fn pass_on(
        &self,
        trial: bool,
        status: StatusCode,
        headers: HeaderMap,
        body: Out,
        loading: bool,
        for_head: bool,
        now: Instant,
    ) -> Response<Out> {
        // An answer, even a 5xx, is the upstream making progress.
        self.inner.progress.mark_at(now);
        let fault = status.is_server_error();
        if fault && !loading {
            self.record(trial, Err(&format!("the upstream answered {status}")));
        } else {
            self.record(trial, Ok(()));
        }
        let outcome = if fault {
            Outcome::UpstreamError
        } else {
            self.inner.begun.fetch_add(1, Ordering::Relaxed);
            Outcome::Ok
        };
        self.counted(outcome, answer_with(status, headers, body, for_head))
    }

    /// The gate's own answer for an upstream fault (`status`, error `code`, `reason`): a fault
    /// for the breaker, counted as `upstream_error`.
    fn upstream_fault(
        &self,
        trial: bool,
        status: StatusCode,
        code: &str,
        reason: &str,
    ) -> Response<Out> {
        self.record(trial, Err(reason));
        self.counted(
            Outcome::UpstreamError,
            error(status, "upstream_error", code, reason),
        )
    }

    /// 502 for an answer that is not an API answer, with `reason`.
    fn garbage(&self, trial: bool, reason: &str) -> Response<Out> {
        self.upstream_fault(trial, StatusCode::BAD_GATEWAY, "upstream_garbage", reason)
    }

    /// An HTML page where an API answer belongs, begun at `now`. With a 5xx it is an error page
    /// (a proxy's in the way, or the upstream's own): a fault, as any 5xx. With any other status
    /// the upstream answered what it was asked, and a client chooses what it asks: llama.cpp
    /// serves its web UI at `/`, vLLM its docs at `/docs`, a proxy a 404 page. Counting those as
    /// faults would let any client open the circuit and take the instance out of readiness, so
    /// they count as answers. The client gets the reason as an API error: a 4xx keeps its status
    /// (a client's library retries a 502, not a 404 or a 401); a 2xx or 3xx becomes a 502.
    fn html_page(&self, trial: bool, status: StatusCode, now: Instant) -> Response<Out> {
        let reason = format!(
            "the upstream answered {} with an HTML page, not an API answer (a web page of the server's, or a proxy or error page in the way?)",
            status.as_u16()
        );
        if status.is_server_error() {
            return self.garbage(trial, &reason);
        }
        self.inner.progress.mark_at(now);
        self.record(trial, Ok(()));
        self.inner.begun.fetch_add(1, Ordering::Relaxed);
        if status.is_client_error() {
            return self.counted(
                Outcome::Ok,
                error(status, "upstream_error", "upstream_html", &reason),
            );
        }
        self.counted(
            Outcome::UpstreamError,
            error(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "upstream_garbage",
                &reason,
            ),
        )
    }

    fn truncated(&self, trial: bool) -> Response<Out> {
        self.upstream_fault(
            trial,
            StatusCode::BAD_GATEWAY,
            "upstream_truncated",
            "the upstream cut its answer short",
        )
    }

    fn budget(&self) -> std::sync::MutexGuard<'_, retry::Budget> {
        self.inner.budget.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a trial of the gate's own while the circuit is open and no client's request comes
    /// to be one. An open circuit takes the instance out of traffic (readiness), so the agent,
    /// receiving nothing, may send nothing: a circuit that waited for a client's trial could
    /// stay open, and the instance out of traffic, long after the upstream recovered. Once the
    /// open period has passed and a second more has gone by with no client's request taking
    /// the trial, the gate sends `GET /v1/models` (cheap on every OpenAI-compatible server; no
    /// inference), judged as any answer is: a fault opens the circuit again for longer, any
    /// other answer (a 401 from a hosted API without the client's key included) closes it,
    /// though less firmly than a client's answer would ([`Breaker::record_own_trial`]).
    async fn trials(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut due_since: Option<Instant> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if self.inner.clean.load(Ordering::Acquire) {
                due_since = None;
                continue;
            }
            let now = Instant::now();
            if !self.breaker().trial_due(now) {
                due_since = None;
                continue;
            }
            // A client's request that comes meanwhile is the better trial: give it a second.
            let since = *due_since.get_or_insert(now);
            if now.saturating_duration_since(since) < Duration::from_secs(1) {
                continue;
            }
            due_since = None;
            if let Admit::Trial = self.admit(now) {
                let result = self.own_trial().await;
                let result = result.as_ref().map(|_| ()).map_err(String::as_str);
                self.change_breaker(|b, now| b.record_own_trial(now, result));
            }
        }
    }

    /// A `GET` of the gate's own to the upstream (no client's headers), within
    /// `request_timeout`.
    async fn get(
        &self,
        path: &'static str,
    ) -> Result<Result<upstream::Answer, upstream::SendError>, tokio::time::error::Elapsed> {
        tokio::time::timeout(
            self.inner.options.request_timeout,
            self.inner.client.send(
                Method::GET,
                &http::uri::PathAndQuery::from_static(path),
                self.port(),
                HeaderMap::new(),
                Bytes::new(),
                Instant::now(),
            ),
        )
        .await
    }

    /// The gate's own trial request: `Err` with the reason for an upstream fault.
    async fn own_trial(&self) -> Result<(), String> {
        const TRIAL: &str = "/v1/models";
        let timeout = self.inner.options.request_timeout;
        let answer = match self.get(TRIAL).await {
            Err(_) => {
                return Err(format!(
                    "the upstream did not answer the gate's trial request (GET {TRIAL}) within request_timeout"
                ))
            }
            Ok(Err(e)) => {
                return Err(format!(
                    "the gate's trial request (GET {TRIAL}) failed: {}",
                    e.detail
                ))
            }
            Ok(Ok(answer)) => answer,
        };
        let status = answer.status;
        if !status.is_server_error() {
            return Ok(());
        }
        // As for a client's request: a model still loading is the upstream coming up.
        let loading = status == StatusCode::SERVICE_UNAVAILABLE
            && matches!(
                tokio::time::timeout(timeout, answer.bytes_within(SHORT_ANSWER)).await,
                Ok(Ok(body)) if is_loading(&body)
            );
        if loading {
            return Ok(());
        }
        Err(format!(
            "the upstream answered the gate's trial request (GET {TRIAL}) with {status}"
        ))
    }

    /// Serves the gate on `listener` until `shutdown` is cancelled.
    ///
    /// At most `max_connections` connections are held. At the cap, a new connection is served
    /// and the oldest is asked to close: at once when idle, after its request otherwise (a
    /// request's body must arrive within `header_read_timeout`). So a flood of idle connections
    /// runs into this cap, never into the process's open-file limit, which the probe listener
    /// shares: a probe's connection is always accepted.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        let open = Arc::new(Mutex::new(
            std::collections::BTreeMap::<u64, Arc<Deadlines>>::new(),
        ));
        let max = self.inner.options.max_connections.max(1);
        let (mut next_id, mut evicted, mut failed) = (0u64, 0u64, 0u64);
        let evictions = Arc::new(vitals_core::evictions::Evictions::default());
        tokio::spawn(self.clone().trials(shutdown.clone()));
        loop {
            // The connections evicted for the last ones accepted are closed first: their
            // sockets count against the open-file limit the probe listener shares.
            evictions.settle().await;
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors or a reset before accept: keep serving the others.
                    failed += 1;
                    if failed.is_power_of_two() {
                        tracing::warn!(error = %e, failed, "gate: accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let header_read_timeout = self.inner.options.header_read_timeout;
            let (id, deadlines) = (next_id, Deadlines::with_head_limit(header_read_timeout));
            next_id += 1;
            {
                let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
                if open.len() >= max {
                    if let Some((_, oldest)) = open.pop_first() {
                        oldest.evict(&evictions);
                        evicted += 1;
                        if evicted.is_power_of_two() {
                            tracing::warn!(
                                evicted,
                                max_connections = max,
                                "gate: connection cap reached; asked the oldest connection to close"
                            );
                        }
                    }
                }
                open.insert(id, deadlines.clone());
            }
            let (open, evictions) = (open.clone(), evictions.clone());
            let here = Arc::new((self.clone(), deadlines));
            tokio::spawn(async move {
                let svc = {
                    let here = here.clone();
                    service_fn(move |req: Request<Incoming>| {
                        here.1.request_began();
                        let ended = AnswerEnd(here.1.clone());
                        here.0
                            .clone()
                            .respond(req, Some(here.1.clone()))
                            .map(move |r| Ok::<_, Infallible>(r.map(|body| Ending { body, ended })))
                    })
                };
                // One buffer and send(2) per write, not writev(2) of a head and a body: on
                // loopback writev measured 200-400 ns more a call (kernel iovec import and its
                // checks), and the gate writes twice a request (BENCHMARKS.md).
                let conn = http1::Builder::new()
                    .writev(false)
                    .max_header_size(MAX_HEAD_BYTES)
                    .max_buf_size(MAX_HEAD_BYTES)
                    // hyper's own (30 s once it has a timer) allocates a timer a request: the
                    // next request's headers have the connection's deadline (`Deadlines`).
                    .header_read_timeout(None)
                    .serve_connection(
                        TokioIo::new(deadlines::WriteStall::new(
                            stream,
                            here.1.clone(),
                            header_read_timeout,
                        )),
                        svc,
                    );
                // Closes at once when idle; a request in progress finishes first.
                let served = deadlines::drive(&here.1, conn, |conn| conn.graceful_shutdown()).await;
                if served.is_some_and(|s| s.is_err_and(|e| e.is_parse_version_h2())) {
                    let n = here.0.inner.h2_clients.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        tracing::warn!(
                            clients = n,
                            "gate: a client spoke HTTP/2 with prior knowledge; the gate speaks \
                             HTTP/1.1, so its connection was closed (configure the client for \
                             HTTP/1.1)"
                        );
                    }
                }
                // The connection and its socket were dropped as `drive` returned.
                open.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                if here.1.evicted_idle() {
                    evictions.closed();
                }
            });
        }
    }
}

/// `fut`'s output, or [`TimedOut`] once `deadline` passes: on a slot of the connection's
/// `timers`, or (without) a tokio timer. A future ready at its first poll (a body already read
/// in, the usual case) sets no deadline and reads no clock: `deadline` is asked for only when
/// it has to wait.
///
/// A future of its own rather than an `async fn`: an `async fn` keeps its arguments in its
/// state beside what it pins, so `fut` (the upstream request, about 1 KB) would be held twice,
/// and every request's future moved with it.
fn within<'t, F, D>(timers: Option<&'t Arc<Deadlines>>, deadline: D, fut: F) -> Within<'t, F, D>
where
    F: std::future::Future,
    D: FnOnce() -> Instant,
{
    Within {
        fut,
        timers,
        deadline: Some(deadline),
        timer: None,
    }
}

pin_project_lite::pin_project! {
    /// [`within`]'s future.
    struct Within<'t, F, D> {
        #[pin]
        fut: F,
        timers: Option<&'t Arc<Deadlines>>,
        deadline: Option<D>,
        timer: Option<Deadline<&'t Deadlines>>,
    }
}

impl<F: std::future::Future, D: FnOnce() -> Instant> std::future::Future for Within<'_, F, D> {
    type Output = Result<F::Output, TimedOut>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        let timer = match (this.timer, this.deadline.take()) {
            (Some(timer), _) => timer,
            (slot, Some(deadline)) => slot.insert(match this.timers {
                Some(timers) => timers.until_ref(deadline()),
                None => Deadline::timer(deadline()),
            }),
            (None, None) => unreachable!("the deadline is taken once, for the timer"),
        };
        std::future::Future::poll(std::pin::Pin::new(timer), cx).map(|()| Err(TimedOut))
    }
}

/// A deadline passed.
#[derive(Debug)]
struct TimedOut;

/// The most read of an answer only looked at (a 429 or 503 to see whether it is transient,
/// llama.cpp's `/props`): 64 KiB.
const SHORT_ANSWER: usize = 64 << 10;

/// The largest sized answer read whole before it is passed on (to turn a truncation into a
/// 502). Larger ones (an embeddings batch can be tens of MB) pass through as they come, so
/// memory never holds a whole answer of whatever size the upstream announces.
const READ_WHOLE_UP_TO: u64 = 1 << 20;

/// Counts a request whose client went away before its answer began.
struct Pending<'a> {
    gate: &'a Gate,
    trial: bool,
    done: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.gate.count_only(Outcome::ClientCancelled);
            if self.trial {
                self.gate.breaker().abandon_trial();
            }
        }
    }
}

/// A request's share of `max_buffered`, the bytes of request bodies the gate holds at once over
/// all requests: charged as each piece of its body arrives, freed when it is dropped.
struct Charge<'a> {
    buffered: &'a AtomicUsize,
    limit: usize,
    bytes: AtomicUsize,
}

impl Charge<'_> {
    /// Charges `n` bytes more; `false`, with nothing charged, where that would pass the limit.
    fn add(&self, n: usize) -> bool {
        let before = self.buffered.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n) > self.limit {
            self.buffered.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        self.bytes.fetch_add(n, Ordering::Relaxed);
        true
    }
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        let bytes = *self.bytes.get_mut();
        if bytes > 0 {
            self.buffered.fetch_sub(bytes, Ordering::Relaxed);
        }
    }
}

/// The bodies held at once would pass `max_buffered`.
#[derive(Debug)]
struct BuffersFull;

impl std::fmt::Display for BuffersFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request bodies held at once would pass gate.max_buffered")
    }
}

impl std::error::Error for BuffersFull {}

pin_project_lite::pin_project! {
    /// A request body whose pieces are charged to its request's [`Charge`] as they arrive.
    struct Charged<'a, B> {
        #[pin]
        body: B,
        charge: &'a Charge<'a>,
    }
}

impl<B> http_body::Body for Charged<'_, B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        match std::task::ready!(this.body.poll_frame(cx)) {
            Some(Ok(frame)) => {
                let n = frame.data_ref().map_or(0, Bytes::len);
                if n > 0 && !this.charge.add(n) {
                    return Poll::Ready(Some(Err(Box::new(BuffersFull))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// An answer's body as the gate makes it: whole (its own answers, and the upstream's read whole)
/// or a stream. Not boxed: a whole answer, the usual one, goes to hyper with no allocation.
pub(crate) enum Out {
    Whole(Full<Bytes>),
    Stream(Body),
}

impl Out {
    fn boxed(self) -> Body {
        match self {
            Out::Whole(full) => BoxBody::new(full.map_err(|never| match never {})),
            Out::Stream(body) => body,
        }
    }
}

impl http_body::Body for Out {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Out::Whole(full) => std::pin::Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            Out::Stream(body) => std::pin::Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Out::Whole(full) => full.is_end_stream(),
            Out::Stream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Out::Whole(full) => full.size_hint(),
            Out::Stream(body) => body.size_hint(),
        }
    }
}

/// Tells a connection's [`Deadlines`] that its request's answer ended, when dropped: hyper drops
/// an answer's body once it has taken its last piece (or the connection closed).
struct AnswerEnd(Arc<Deadlines>);

impl Drop for AnswerEnd {
    fn drop(&mut self) {
        self.0.answer_ended();
    }
}

pin_project_lite::pin_project! {
    /// An answer's body on a client connection of the gate's: ends its request for the
    /// connection's deadline on the next request's headers ([`AnswerEnd`]).
    struct Ending {
        #[pin]
        body: Out,
        ended: AnswerEnd,
    }
}

impl http_body::Body for Ending {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The upstream's answer as it goes to the client: its status, headers and body (`for_head`:
/// to a HEAD request).
fn answer_with(
    status: StatusCode,
    mut headers: HeaderMap,
    body: Out,
    for_head: bool,
) -> Response<Out> {
    // hyper frames the answer itself: the upstream's length may not hold for it (one sent
    // chunked as well). A HEAD answer has no body to frame, and its length is the GET's.
    if !for_head {
        headers.remove(header::CONTENT_LENGTH);
    }
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Counts a streamed answer's request, and judges it for the breaker, by how the stream ends:
/// `ok` at its end, `upstream_error` (a fault) when the upstream broke it, `client_cancelled`
/// when it was dropped before (the client went away). Its request's duration ends there too.
pub(crate) struct Settle {
    gate: Gate,
    /// When its request arrived: its duration runs from there to the stream's end.
    arrived: Instant,
    /// Its success was recorded as it began (a half-open trial).
    recorded: bool,
    done: bool,
}

impl Settle {
    /// The stream reached its end.
    pub(crate) fn ended(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if !self.recorded {
            self.gate.record(false, Ok(()));
        }
        self.counted(Outcome::Ok);
    }

    /// The upstream broke the stream, for `reason`.
    pub(crate) fn broke(&mut self, reason: &str) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.gate.record(false, Err(reason));
        self.counted(Outcome::UpstreamError);
    }

    fn counted(&self, outcome: Outcome) {
        self.gate.count_only(outcome);
        self.gate
            .inner
            .metrics
            .duration
            .observe(self.arrived.elapsed());
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        if !self.done {
            self.counted(Outcome::ClientCancelled);
        }
    }
}

/// The largest request head the gate takes in (hyper answers 431 beyond it), and the most a
/// connection's read buffer grows to: AWS's load balancers allow 64 KiB of headers. hyper's own
/// bound, about 400 KiB, let clients holding the connections with unfinished heads make vitals
/// hold 400 MiB.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// llama.cpp's `503 {"error":{"message":"Loading model", ...}}` and its kin.
fn is_loading(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]).to_ascii_lowercase();
    text.contains("loading model") || text.contains("model is loading")
}

/// 503 while the circuit is open, with when to come back.
fn circuit_open(retry_after: Duration) -> Response<Out> {
    overloaded(
        "circuit_open",
        "the upstream is failing and the gate's circuit is open; retry after the Retry-After delay",
        retry_after,
    )
}

fn outcome_of(shed: Shed) -> Outcome {
    match shed {
        Shed::QueueFull { .. } => Outcome::ShedQueueFull,
        Shed::QueueTimeout { .. } => Outcome::ShedQueueTimeout,
    }
}

/// `error` and its causes, `: `-separated.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let next = e.to_string();
        if !text.ends_with(&next) {
            text = format!("{text}: {next}");
        }
        cause = e.source();
    }
    text
}

fn strip(headers: &mut HeaderMap) {
    strip_but(headers, 0);
}

/// `name`'s bit in [`NOT_FORWARDED`] (`1 << index`), 0 for a name not in it: a match on the
/// name's text (its length, then its bytes) rather than nine comparisons.
fn hop_bit(name: &header::HeaderName) -> u16 {
    match name.as_str() {
        "connection" => 1 << 0,
        "keep-alive" => 1 << 1,
        "proxy-connection" => 1 << 2,
        "transfer-encoding" => 1 << 3,
        "te" => 1 << 4,
        "trailer" => 1 << 5,
        "upgrade" => 1 << 6,
        "host" => 1 << 7,
        "expect" => 1 << 8,
        _ => 0,
    }
}

/// [`NOT_FORWARDED`]'s bit for `Host`.
const HOST: u16 = 1 << 7;

/// [`strip`], keeping the headers of [`NOT_FORWARDED`] whose bits are in `keep`.
fn strip_but(headers: &mut HeaderMap, keep: u16) {
    // One pass over the few names present, and removals only for those listed: a request always
    // carries `host`, and looking up all nine would cost eight lookups of absent names.
    let mut present = 0u16;
    for k in headers.keys() {
        present |= hop_bit(k);
    }
    present &= !keep;
    // The fields a Connection header names are for this hop only, as it is (RFC 9110 §7.6.1).
    if present & 1 != 0 {
        let named: Vec<header::HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            // The usual options name no header, or one removed below: nothing to allocate.
            .filter(|name| {
                !name.eq_ignore_ascii_case(b"close")
                    && !name.eq_ignore_ascii_case(b"keep-alive")
                    && !name.eq_ignore_ascii_case(b"upgrade")
            })
            .filter_map(|name| header::HeaderName::from_bytes(name).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, h) in NOT_FORWARDED.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(h);
        }
    }
}

/// An OpenAI-shaped error: `{"error": {"message", "type", "code"}}`, never a 200 with an error
/// inside.
fn error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response<Out> {
    let body = serde_json::json!({
        "error": { "message": message, "type": kind, "code": code }
    })
    .to_string();
    let mut r = Response::new(Out::Whole(Full::new(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// What an answer tells the adaptive limit ([`Gate::adapt`]).
enum Adapt {
    Measured(Duration),
    Unmeasured,
    Failed,
}

/// Whether a `Content-Type` value begins with `media` (ASCII case ignored, parameters after
/// it).
fn media_is(content_type: &HeaderValue, media: &[u8]) -> bool {
    let v = content_type.as_bytes().trim_ascii_start();
    v.len() >= media.len() && v[..media.len()].eq_ignore_ascii_case(media)
}

/// Where a body that says it is JSON (`application/json`, or a `+json` type) fails to parse,
/// as serde_json says it: the line and column, never the body's text. `None` for any other
/// body, an empty one, an encoded one (compressed JSON is JSON once the upstream decodes it),
/// and JSON nested past serde_json's depth limit (valid, for all the gate knows: the upstream
/// judges it).
///
/// A malformed request is the gate's to refuse: sent on, llama-cpp-python answers it with a
/// 500, which the breaker would count against the upstream.
fn not_json(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    let encoded = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|e| !e.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return None;
    }
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let json = essence.eq_ignore_ascii_case("application/json")
        || essence.len() > 5
            && essence.is_char_boundary(essence.len() - 5)
            && essence[essence.len() - 5..].eq_ignore_ascii_case("+json");
    if !json {
        return None;
    }
    let e = serde_json::from_slice::<serde::de::IgnoredAny>(body).err()?;
    let said = e.to_string();
    (!said.starts_with("recursion limit exceeded")).then_some(said)
}

/// 503 with `Retry-After` (whole seconds, rounded up) and `x-vitals-overloaded`.
fn shed_response(shed: Shed) -> Response<Out> {
    let (code, message) = match shed {
        Shed::QueueFull { .. } => (
            "queue_full",
            "the inference server is saturated and the gate's queue is full; retry after the Retry-After delay",
        ),
        Shed::QueueTimeout { .. } => (
            "queue_timeout",
            "the request waited the gate's queue_timeout without a free slot; retry after the Retry-After delay",
        ),
    };
    overloaded(code, message, shed.retry_after())
}

/// 503 `server_overloaded` with `Retry-After` (whole seconds, rounded up, at least 1) and
/// `x-vitals-overloaded: code`: what every refusal of the gate's own says.
fn overloaded(code: &'static str, message: &str, retry_after: Duration) -> Response<Out> {
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_overloaded",
        code,
        message,
    );
    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r.headers_mut().insert(
        header::HeaderName::from_static("x-vitals-overloaded"),
        HeaderValue::from_static(code),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `one_cpu` as a process started by `taskset -c CPUS` (util-linux) sees it: this test
    /// binary again, running only `one_cpu_as_pinned_reports`.
    fn one_cpu_under(cpus: &str) -> bool {
        let out = std::process::Command::new("taskset")
            .args(["-c", cpus])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", "tests::one_cpu_as_pinned_reports", "--nocapture"])
            .env("VITALS_ONE_CPU_CHILD", "1")
            .output()
            .expect("taskset runs (apt-get install util-linux)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "taskset -c {cpus}: {out:?}");
        // The harness prints the test's name on the same line.
        match text.split("one_cpu=").nth(1) {
            Some(said) => said.starts_with("true"),
            None => panic!("no answer from the child: {text}"),
        }
    }

    /// The child's half of the test below: says what `one_cpu` is where it runs.
    #[test]
    fn one_cpu_as_pinned_reports() {
        if std::env::var_os("VITALS_ONE_CPU_CHILD").is_some() {
            println!("one_cpu={}", one_cpu());
        }
    }

    /// Pinned to one CPU, the gate batches its sends; free to run on two, it sends at once.
    #[test]
    fn one_cpu_follows_the_cpus_the_process_may_run_on() {
        assert!(one_cpu_under("0"));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!(
            cpus >= 2,
            "this test needs two CPUs to tell the cases apart: {cpus}"
        );
        assert!(!one_cpu_under("0,1"));
    }

    #[test]
    fn each_header_not_forwarded_has_its_own_bit() {
        for (i, name) in NOT_FORWARDED.iter().enumerate() {
            assert_eq!(hop_bit(name), 1 << i, "{name}");
        }
        assert_eq!(hop_bit(&header::CONTENT_TYPE), 0);
        assert_eq!(hop_bit(&header::HeaderName::from_static("x-te")), 0);
    }

    #[test]
    fn host_is_the_bit_named_for_it() {
        assert_eq!(NOT_FORWARDED[HOST.trailing_zeros() as usize], header::HOST);
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("gate"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_but(&mut h, HOST);
        assert_eq!(h.len(), 1);
        assert_eq!(h[header::HOST], "gate");
    }

    #[test]
    fn strip_removes_every_hop_by_hop_header_and_keeps_the_rest() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("host", "agent:8080"),
            ("connection", "keep-alive, upgrade"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("upgrade", "h2c"),
            ("expect", "100-continue"),
            ("authorization", "Bearer k"),
            ("content-type", "application/json"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        h.append("x-request-id", HeaderValue::from_static("1"));
        h.append("x-request-id", HeaderValue::from_static("2"));
        strip(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "content-type", "x-request-id"]);
        assert_eq!(h.get_all("x-request-id").iter().count(), 2);

        // Only some present: those go, the others are untouched.
        let mut h = HeaderMap::new();
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["accept"]);

        // None present: nothing changes.
        let mut h = HeaderMap::new();
        h.insert("content-length", HeaderValue::from_static("5"));
        strip(&mut h);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn strip_removes_the_headers_connection_names() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "Keep-Alive, X-Hop ,,x-other"),
            ("connection", "x-third, not a name"),
            ("x-hop", "1"),
            ("x-other", "2"),
            ("x-third", "3"),
            ("x-end", "4"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        strip(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-end"]);
    }
}

/// Why the upstream's slot count is not known (`max_concurrent = "auto"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoSlots {
    /// What the upstream did, for the log and the error.
    pub why: String,
    /// Whether asking again may help (the server may still be loading its model).
    pub may_change: bool,
}

impl NoSlots {
    fn later(why: String) -> Self {
        NoSlots {
            why,
            may_change: true,
        }
    }

    fn never(why: String) -> Self {
        NoSlots {
            why,
            may_change: false,
        }
    }
}
