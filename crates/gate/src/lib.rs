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
//! - `request_timeout` bounds the wait for the upstream's answer to begin.
//! - A request body over `max_body` gets 413, a malformed request 400, from the gate itself;
//!   an upstream that refuses, resets or does not answer gives 502 or 504 with the reason.
//!
//! Probe routes never sit behind the gate: it has a listener of its own.

pub mod admission;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use admission::{Admission, Shed, Slot};

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
    /// How long a client may take to send its request's headers.
    pub header_read_timeout: Duration,
}

/// The body of every answer the gate gives.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// How a request ended: the `outcome` label of `vitals_gate_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    UpstreamError,
    ShedQueueFull,
    ShedQueueTimeout,
    BadRequest,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::UpstreamError,
        Outcome::ShedQueueFull,
        Outcome::ShedQueueTimeout,
        Outcome::BadRequest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::UpstreamError => "upstream_error",
            Outcome::ShedQueueFull => "shed_queue_full",
            Outcome::ShedQueueTimeout => "shed_queue_timeout",
            Outcome::BadRequest => "bad_request",
        }
    }
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
    client: reqwest::Client,
    outcomes: [AtomicU64; 5],
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and the ones the client library sets itself.
const NOT_FORWARDED: [header::HeaderName; 8] = [
    header::CONNECTION,
    header::HeaderName::from_static("keep-alive"),
    header::HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::HOST,
];

impl Gate {
    pub fn new(options: Options) -> Result<Gate, reqwest::Error> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(options.request_timeout)
            .build()?;
        Ok(Gate {
            inner: Arc::new(Inner {
                admission: Admission::new(
                    options.max_concurrent,
                    options.queue_depth,
                    options.queue_timeout,
                ),
                options,
                client,
                outcomes: Default::default(),
            }),
        })
    }

    pub fn admission(&self) -> &Admission {
        &self.inner.admission
    }

    /// Requests that ended with `outcome` so far.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.inner.outcomes[outcome as usize].load(Ordering::Relaxed)
    }

    fn counted(&self, outcome: Outcome, response: Response<Body>) -> Response<Body> {
        self.inner.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
        response
    }

    /// Answers one request: admitted and forwarded, or refused by the gate itself.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, self.inner.options.max_body)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                let limit = self.inner.options.max_body;
                return self.counted(
                    Outcome::BadRequest,
                    error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "invalid_request_error",
                        "request_too_large",
                        &format!("the request body is over the gate's limit of {limit} bytes"),
                    ),
                );
            }
            Err(_) => {
                return self.counted(
                    Outcome::BadRequest,
                    error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        "bad_request",
                        "the request body could not be read",
                    ),
                )
            }
        };
        let slot = match self.inner.admission.admit().await {
            Ok(slot) => slot,
            Err(shed) => return self.counted(outcome_of(shed), shed_response(shed)),
        };
        self.forward(parts, body, slot).await
    }

    async fn forward(
        &self,
        parts: http::request::Parts,
        body: Bytes,
        slot: Slot,
    ) -> Response<Body> {
        let options = &self.inner.options;
        let mut url = options.upstream.clone();
        let base = options.upstream.path().trim_end_matches('/');
        url.set_path(&format!("{base}{}", parts.uri.path()));
        url.set_query(parts.uri.query());
        let mut headers = parts.headers;
        strip(&mut headers);
        let request = self
            .inner
            .client
            .request(parts.method, url)
            .headers(headers)
            .body(body);
        let answer = tokio::time::timeout(options.request_timeout, request.send()).await;
        let upstream = match answer {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                let reason = if e.is_connect() {
                    "the upstream refused or dropped the connection"
                } else {
                    "the upstream connection failed before an answer"
                };
                tracing::warn!(error = %e, "gate: {reason}");
                return self.counted(
                    Outcome::UpstreamError,
                    error(
                        StatusCode::BAD_GATEWAY,
                        "upstream_error",
                        "upstream_unavailable",
                        reason,
                    ),
                );
            }
            Err(_) => {
                return self.counted(
                    Outcome::UpstreamError,
                    error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "upstream_error",
                        "upstream_timeout",
                        &format!(
                            "the upstream did not begin its answer within request_timeout ({:?})",
                            options.request_timeout
                        ),
                    ),
                )
            }
        };
        let status = upstream.status();
        let mut headers = upstream.headers().clone();
        strip(&mut headers);
        headers.remove(header::CONTENT_LENGTH);
        // The slot travels with the stream: held until the last byte, or until the client goes
        // away and hyper drops the body (which drops the upstream response, cancelling it).
        let stream = upstream.bytes_stream().map(move |chunk| {
            let _held = &slot;
            chunk.map(Frame::data).map_err(std::io::Error::other)
        });
        let mut response = Response::new(BoxBody::new(StreamBody::new(stream)));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        let outcome = if status.is_server_error() {
            Outcome::UpstreamError
        } else {
            Outcome::Ok
        };
        self.counted(outcome, response)
    }

    /// Serves the gate on `listener` until `shutdown` is cancelled.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else {
                // Out of file descriptors or a reset before accept: keep serving the others.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let gate = self.clone();
            let header_read_timeout = self.inner.options.header_read_timeout;
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let gate = gate.clone();
                    async move { Ok::<_, Infallible>(gate.handle(req).await) }
                });
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_read_timeout)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }
}

fn outcome_of(shed: Shed) -> Outcome {
    match shed {
        Shed::QueueFull { .. } => Outcome::ShedQueueFull,
        Shed::QueueTimeout { .. } => Outcome::ShedQueueTimeout,
    }
}

fn strip(headers: &mut HeaderMap) {
    for h in &NOT_FORWARDED {
        headers.remove(h);
    }
}

/// An OpenAI-shaped error: `{"error": {"message", "type", "code"}}`, never a 200 with an error
/// inside.
fn error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "error": { "message": message, "type": kind, "code": code }
    })
    .to_string();
    let mut r = Response::new(BoxBody::new(
        Full::new(Bytes::from(body)).map_err(|never| match never {}),
    ));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// 503 with `Retry-After` (whole seconds, rounded up) and `x-vitals-overloaded`.
fn shed_response(shed: Shed) -> Response<Body> {
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
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_overloaded",
        code,
        message,
    );
    let secs = shed.retry_after().as_secs_f64().ceil().max(1.0) as u64;
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r.headers_mut().insert(
        header::HeaderName::from_static("x-vitals-overloaded"),
        HeaderValue::from_static(code),
    );
    r
}
