//! The connection to the upstream: hyper's own HTTP/1.1 connections in a pool of the gate's for
//! `http://` (the usual case: a model server beside the agent, where every microsecond of the
//! proxy shows), reqwest with rustls for `https://` (a hosted API).

use std::future::Future as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::Either;
use futures_util::StreamExt as _;
use http::uri::PathAndQuery;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::deadlines::Stall;
use crate::{Body, Slot};

#[derive(Debug, Clone)]
pub(crate) enum Client {
    Plain(Arc<Plain>),
    Tls(Box<Tls>),
}

#[derive(Debug, Clone)]
pub(crate) struct Tls {
    client: reqwest::Client,
    base: url::Url,
}

/// Why no answer came.
#[derive(Debug)]
pub(crate) struct SendError {
    /// The connection was refused or failed before a byte was sent: safe to retry.
    pub connect: bool,
    /// The upstream's TLS certificate was not trusted (a private CA not given in `ca_file`, a
    /// name that does not match, an expired certificate).
    pub certificate: bool,
    /// What came back is not an HTTP/1.1 answer: no status line, a head too large, a header
    /// that does not parse.
    pub malformed: bool,
    pub detail: String,
}

/// Whether `error`'s causes include rustls refusing the peer's certificate.
fn untrusted_certificate(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if matches!(
            e.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidCertificate(_))
        ) {
            return true;
        }
        // An io::Error's `source` skips the error it wraps (rustls' sits two io::Errors deep).
        cause = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    false
}

/// Whether `error`'s causes say the upstream closed the connection before its answer's end.
pub(crate) fn cut_short(error: &std::io::Error) -> bool {
    let mut cause = error
        .get_ref()
        .map(|inner| inner as &(dyn std::error::Error + 'static));
    while let Some(e) = cause {
        // hyper's own for a sized body; an end of file in a chunk's frame for a chunked one.
        let ended = e
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
            || e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof);
        if ended {
            return true;
        }
        cause = e.source();
    }
    false
}

/// An answer's head, and its body still to come.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Answered,
}

/// An upstream answer's body: on a connection of the plain pool, or through reqwest. Not boxed:
/// an answer read whole (the usual one) is read and dropped where it is, with no allocation.
pub(crate) enum Answered {
    Plain(Returning),
    Other(Body),
}

impl http_body::Body for Answered {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            Answered::Plain(body) => Pin::new(body).poll_frame(cx),
            Answered::Other(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Answered::Plain(body) => body.is_end_stream(),
            Answered::Other(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Answered::Plain(body) => body.size_hint(),
            Answered::Other(body) => body.size_hint(),
        }
    }
}

impl Answer {
    /// The answer's length when it is known: hyper's own reading of `Content-Length` (no header
    /// parsed twice), or else the header (an answer through reqwest).
    pub fn content_length(&self) -> Option<u64> {
        if let Some(n) = http_body::Body::size_hint(&self.body).exact() {
            return Some(n);
        }
        self.headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
    }

    /// The whole body; an error when the upstream cut it short. A body that comes in one piece
    /// (the usual answer) is that piece, with nothing copied or allocated.
    pub async fn bytes(self) -> Result<Bytes, std::io::Error> {
        let mut body = self.body;
        let mut first: Option<Bytes> = None;
        let mut more: Option<bytes::BytesMut> = None;
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            match (&mut first, &mut more) {
                (None, _) => first = Some(data),
                (Some(head), None) => {
                    let mut joined = bytes::BytesMut::with_capacity(head.len() + data.len());
                    joined.extend_from_slice(head);
                    joined.extend_from_slice(&data);
                    more = Some(joined);
                }
                (Some(_), Some(joined)) => joined.extend_from_slice(&data),
            }
        }
        Ok(match more {
            Some(joined) => joined.freeze(),
            None => first.unwrap_or_default(),
        })
    }

    /// The whole body if it ends within `limit` bytes; `Unread::TooLong` as soon as it runs
    /// past them (the rest is never read), `Unread::Cut` when the upstream cut it short.
    pub async fn bytes_within(self, limit: usize) -> Result<Bytes, Unread> {
        match http_body_util::Limited::new(self.body, limit)
            .collect()
            .await
        {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Unread::TooLong),
            Err(_) => Err(Unread::Cut),
        }
    }
}

/// Why an answer was not read whole.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unread {
    TooLong,
    Cut,
}

impl Client {
    /// A client for `upstream`; an `https://` one trusts `ca_file`'s certificate authorities
    /// instead of the bundled public roots when one is given.
    pub fn new(
        upstream: &url::Url,
        connect_timeout: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Client, String> {
        if upstream.scheme() == "http" {
            Plain::new(upstream, connect_timeout).map(|p| Client::Plain(Arc::new(p)))
        } else {
            let mut builder = reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(connect_timeout)
                // As the plain pool: closed by the gate before an upstream behind uvicorn or
                // llama.cpp's server closes it under a request.
                .pool_idle_timeout(IDLE_FOR);
            if let Some(path) = ca_file {
                let pem = vitals_core::tls::read_ca(path)?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    format!("{}: {e}; give the CA's certificate in PEM", path.display())
                })?;
                builder = certs
                    .into_iter()
                    .fold(builder.tls_built_in_root_certs(false), |b, cert| {
                        b.add_root_certificate(cert)
                    });
            }
            builder
                .build()
                .map(|client| {
                    Client::Tls(Box::new(Tls {
                        client,
                        base: upstream.clone(),
                    }))
                })
                .map_err(|e| e.to_string())
        }
    }

    /// Sends `method` `target` (the client's path and query, appended to the upstream's base)
    /// to the upstream, on `port` when it moved (0: the URL's). A `Host` in `headers` (the
    /// client's) is replaced by the upstream's.
    ///
    /// Not an `async fn`: one would hold these arguments beside the future it passes them to.
    pub fn send<'a>(
        &'a self,
        method: Method,
        target: &'a PathAndQuery,
        port: u16,
        headers: HeaderMap,
        body: Bytes,
        now: Instant,
    ) -> impl std::future::Future<Output = Result<Answer, SendError>> + Send + 'a {
        match self {
            Client::Plain(plain) => {
                Either::Left(plain.send(method, target, port, headers, body, now))
            }
            // Boxed: reqwest's future is large, and the plain path's future (every request's,
            // moved on every request) would be as large as it.
            Client::Tls(tls) => Either::Right(Box::pin(tls.send(method, target, headers, body))),
        }
    }
}

impl Tls {
    async fn send(
        &self,
        method: Method,
        target: &PathAndQuery,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<Answer, SendError> {
        // reqwest keeps a `Host` it is given: the client's is for the gate, not the upstream.
        headers.remove(header::HOST);
        let mut url = self.base.clone();
        let base = self.base.path().trim_end_matches('/');
        url.set_path(&format!("{base}{}", target.path()));
        url.set_query(target.query());
        let response = self
            .client
            .request(method, url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| SendError {
                connect: e.is_connect(),
                certificate: untrusted_certificate(&e),
                malformed: false,
                // The URL holds the client's query, which may carry a key.
                detail: crate::chain(&e.without_url()),
            })?;
        let (status, headers) = (response.status(), response.headers().clone());
        let stream = response
            .bytes_stream()
            .map(|chunk| chunk.map(Frame::data).map_err(std::io::Error::other));
        Ok(Answer {
            status,
            headers,
            body: Answered::Other(BoxBody::new(StreamBody::new(stream))),
        })
    }
}

/// How long a kept-alive connection may sit unused before it is closed rather than reused:
/// under the 5 s after which uvicorn (llama-cpp-python, vLLM), llama.cpp's own server and
/// Node close theirs, so that the gate, not the upstream, closes it.
const IDLE_FOR: Duration = Duration::from_secs(4);
/// A connection reused after sitting idle this long may meet the upstream's keep-alive timer
/// closing it just as the request arrives (an upstream that closes sooner than `IDLE_FOR`):
/// the request is kept, to be sent again on a fresh connection if the reused one closes
/// without an answer. A busy connection that does that is the upstream failing.
const MAY_MEET_A_CLOSE_AFTER: Duration = Duration::from_millis(500);
/// At most this many idle connections are kept.
const MAX_IDLE: usize = 1024;

/// `http://` upstreams (the usual case: a model server beside the agent, where every
/// microsecond of the proxy shows): hyper's HTTP/1.1 connections, kept alive in a last-in
/// first-out pool. A connection goes back to the pool when its answer has been read to the end;
/// an answer dropped before its end (the client went away) closes its connection, which is
/// how the upstream learns the request is cancelled. The gate's admission bounds how many are
/// in use at once.
#[derive(Debug)]
pub(crate) struct Plain {
    /// The host to connect to (an IPv6 address without brackets).
    host: String,
    port: u16,
    /// `host[:port]` for the `Host` header, at the URL's port.
    host_header: HeaderValue,
    /// The URL's path without its trailing `/`; empty for none.
    base_path: String,
    connect_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
}

#[derive(Debug)]
struct Idle {
    port: u16,
    since: Instant,
    conn: Box<Conn>,
}

/// One HTTP/1.1 connection: the handle that sends on it, and the state machine that reads and
/// writes it. The connection is driven by whoever uses it (the request's own task), not by a
/// task of its own: no hop between tasks for each request and each answer. It is kept boxed: it
/// is large (about 700 bytes), and it moves from the pool to a request, to its answer's body and
/// back on every request.
#[derive(Debug)]
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: Driver,
}

type Driver = hyper::client::conn::http1::Connection<TokioIo<tokio::net::TcpStream>, Full<Bytes>>;

impl Conn {
    /// Drives the connection: `false` once it is closed (or failed) and must be dropped.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        Pin::new(&mut self.driver)
            .poll_without_shutdown(cx)
            .is_pending()
    }
}

/// Drives `conn` and polls `target`, which only driving the connection completes (its answer,
/// or its answer's body), and which is therefore polled with a waker that does nothing.
///
/// hyper wakes the waker that last drove a connection when its answer or a piece of its body is
/// taken. The task's own waker would then poll the task once more for nothing, on every request.
/// So the connection is driven with the do-nothing waker first, and with the task's waker only
/// when `target` is not ready yet: then the connection waits on its socket, whose readiness
/// wakes the task. A connection that ends or fails is dropped (`None`), which fails or ends
/// what it held.
fn poll_driven<T>(
    conn: &mut Option<Box<Conn>>,
    cx: &mut Context<'_>,
    target: impl FnMut(&mut Context<'_>) -> Poll<T>,
) -> Poll<T> {
    poll_driven_by(conn, |c| c, cx, target)
}

/// [`poll_driven`] where `target` is not expected to be ready (a request just handed to the
/// connection): the connection is driven once, with the task's waker, rather than once to see
/// and once more to wait. Should `target` be ready after all, the task's waker may be woken
/// for nothing, once.
fn poll_driven_first<T>(
    conn: &mut Option<Box<Conn>>,
    cx: &mut Context<'_>,
    mut target: impl FnMut(&mut Context<'_>) -> Poll<T>,
) -> Poll<T> {
    if conn.as_mut().is_some_and(|c| !c.drive(cx)) {
        *conn = None;
    }
    let mut quiet = Context::from_waker(std::task::Waker::noop());
    target(&mut quiet)
}

fn poll_driven_by<C, T>(
    holder: &mut Option<C>,
    conn: impl Fn(&mut C) -> &mut Conn,
    cx: &mut Context<'_>,
    mut target: impl FnMut(&mut Context<'_>) -> Poll<T>,
) -> Poll<T> {
    let mut quiet = Context::from_waker(std::task::Waker::noop());
    if holder.as_mut().is_some_and(|h| !conn(h).drive(&mut quiet)) {
        *holder = None;
    }
    if let Poll::Ready(t) = target(&mut quiet) {
        return Poll::Ready(t);
    }
    if holder.as_mut().is_some_and(|h| !conn(h).drive(cx)) {
        *holder = None;
    }
    target(&mut quiet)
}

impl Plain {
    fn new(upstream: &url::Url, connect_timeout: Duration) -> Result<Plain, String> {
        let host = match upstream.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string(),
            None => return Err(format!("{upstream} names no host")),
        };
        let port = upstream.port_or_known_default().unwrap_or(80);
        let authority = upstream
            .host_str()
            .map(|h| match upstream.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            })
            .unwrap_or_default();
        let host_header = HeaderValue::from_str(&authority)
            .map_err(|_| format!("{upstream}: the host cannot be a Host header"))?;
        Ok(Plain {
            host,
            port,
            host_header,
            base_path: upstream.path().trim_end_matches('/').to_owned(),
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle connection to `port`, `now`. Whether the upstream closed it
    /// meanwhile is not asked here: the request's first drive of it reads that close, and the
    /// request comes back unsent (`send` then takes the next one). Asking first would drive
    /// every connection twice a request.
    /// Also says how long it sat idle.
    fn checkout(&self, port: u16, now: Instant) -> Option<(Box<Conn>, Duration)> {
        loop {
            let i = self.idle().pop()?;
            let idle = now.saturating_duration_since(i.since);
            if i.port == port && idle < IDLE_FOR && !i.conn.sender.is_closed() {
                return Some((i.conn, idle));
            }
        }
    }

    fn put_back(&self, port: u16, conn: Box<Conn>) {
        if conn.sender.is_closed() {
            return;
        }
        let mut idle = self.idle();
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push(Idle {
            port,
            since: Instant::now(),
            conn,
        });
    }

    async fn connect(&self, port: u16) -> Result<Box<Conn>, SendError> {
        let failed = |detail: String| SendError {
            connect: true,
            certificate: false,
            malformed: false,
            detail,
        };
        let stream = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect((self.host.as_str(), port)),
        )
        .await
        .map_err(|_| failed(format!("connecting to {}:{port} timed out", self.host)))?
        .map_err(|e| failed(format!("connecting to {}:{port}: {e}", self.host)))?;
        let _ = stream.set_nodelay(true);
        let (sender, driver) = hyper::client::conn::http1::Builder::new()
            // send(2) of one buffer rather than writev(2), as on the client side (`Gate::serve`).
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed(e.to_string()))?;
        Ok(Box::new(Conn { sender, driver }))
    }

    async fn send(
        self: &Arc<Self>,
        method: Method,
        target: &PathAndQuery,
        port: u16,
        mut headers: HeaderMap,
        body: Bytes,
        now: Instant,
    ) -> Result<Answer, SendError> {
        let port = if port == 0 { self.port } else { port };
        let uri = if self.base_path.is_empty() {
            Uri::from(target.clone())
        } else {
            let joined = match target.query() {
                Some(q) => format!("{}{}?{q}", self.base_path, target.path()),
                None => format!("{}{}", self.base_path, target.path()),
            };
            Uri::try_from(joined).map_err(|e| SendError {
                connect: false,
                certificate: false,
                malformed: false,
                detail: e.to_string(),
            })?
        };
        let host = if port == self.port {
            self.host_header.clone()
        } else {
            HeaderValue::from_str(&format!("{}:{port}", self.host))
                .unwrap_or_else(|_| self.host_header.clone())
        };
        headers.insert(header::HOST, host);
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        // A pooled connection the upstream closed meanwhile takes the request back unsent: then
        // it goes on a fresh connection.
        let mut pooled = self.checkout(port, now);
        loop {
            let reused = pooled.is_some();
            // Boxed, and only after an idle spell: a busy connection never needs it.
            let mut again = match &pooled {
                Some((_, idle)) if *idle >= MAY_MEET_A_CLOSE_AFTER => {
                    Some(Box::new(copy(&request)))
                }
                _ => None,
            };
            let mut conn = Some(match pooled.take() {
                Some((c, _)) => c,
                // Boxed: connecting is rare, and its future would make every request's larger.
                None => Box::pin(self.connect(port)).await?,
            });
            let sent = conn
                .as_mut()
                .map(|c| c.sender.try_send_request(request))
                .expect("set above");
            let mut sent = std::pin::pin!(sent);
            // The request's task drives its connection until the answer's head arrives. A
            // connection that ends is dropped, which fails what it held: the request comes back
            // unsent, or fails.
            // Its first poll writes the request: no answer can be there yet, so the connection
            // is driven once, with the task's waker (`poll_driven_first`).
            let mut first = true;
            let got = std::future::poll_fn(|cx| {
                if std::mem::take(&mut first) {
                    poll_driven_first(&mut conn, cx, |q| sent.as_mut().poll(q))
                } else {
                    poll_driven(&mut conn, cx, |q| sent.as_mut().poll(q))
                }
            })
            .await;
            match got {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    return Ok(Answer {
                        status: parts.status,
                        headers: parts.headers,
                        body: Answered::Plain(Returning {
                            body,
                            back: conn.map(|c| (self.clone(), port, c)),
                        }),
                    });
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => {
                        request = unsent;
                        pooled = self.checkout(port, now);
                    }
                    _ => {
                        let error = e.into_error();
                        if let Some(kept) = again.take().filter(|_| closed_unanswered(&error)) {
                            tracing::debug!(error = %error, "gate: a connection reused after an idle spell closed without an answer; sending again on a fresh one");
                            request = *kept;
                            continue;
                        }
                        return Err(SendError {
                            connect: false,
                            certificate: false,
                            malformed: error.is_parse()
                                || error.is_parse_status()
                                || error.is_parse_too_large(),
                            detail: error.to_string(),
                        });
                    }
                },
            }
        }
    }
}

/// A request to send again: the same method, target, headers and body.
fn copy(request: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut again = Request::new(request.body().clone());
    *again.method_mut() = request.method().clone();
    *again.uri_mut() = request.uri().clone();
    *again.headers_mut() = request.headers().clone();
    again
}

/// Whether `error` is a connection that ended (closed, reset) before its answer: what an
/// upstream's keep-alive timer closing it as the request arrived looks like.
fn closed_unanswered(error: &hyper::Error) -> bool {
    if error.is_incomplete_message() || error.is_closed() || error.is_canceled() {
        return true;
    }
    let mut cause = std::error::Error::source(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        cause = e.source();
    }
    false
}

/// An upstream answer's body, driving its connection as it is read, that puts the connection
/// back in the pool once read to the end (and closes it when dropped before).
pub(crate) struct Returning {
    body: hyper::body::Incoming,
    /// The pool, the port and the connection, until the end of the answer.
    back: Option<(Arc<Plain>, u16, Box<Conn>)>,
}

impl http_body::Body for Returning {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let Returning { body, back } = &mut *self;
        // A connection that ends is dropped: what it read is in the body; what it did not, the
        // body reports.
        let polled = poll_driven_by(
            back,
            |(_, _, c)| c,
            cx,
            |q| Pin::new(&mut *body).poll_frame(q),
        );
        match &polled {
            Poll::Ready(None) => {
                if let Some((pool, port, conn)) = back.take() {
                    pool.put_back(port, conn);
                }
            }
            Poll::Ready(Some(Err(_))) => *back = None,
            _ => {}
        }
        polled.map_err(std::io::Error::other)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A streamed answer that holds its request's slot until the last byte, or until the client
/// goes away and hyper drops it (which drops the upstream's body, cancelling the request). An
/// upstream that sends nothing for `silence` ends it with an error: the client's stream ends
/// short, and the slot is freed.
pub(crate) struct Held {
    pub body: Answered,
    /// What had arrived with the answer's head ([`Ahead::peek`]), given out first.
    pub ahead: Ahead,
    /// Counts the request, and judges it for the breaker, by how the stream ends; `None` where
    /// that was done as it began (an error status). Dropped before the slot: the request is
    /// counted by the time its slot is free.
    pub settle: Option<crate::Settle>,
    /// Released when the body is dropped.
    pub _slot: Slot,
    /// Marked as each piece arrives; told of a silence that cuts the stream.
    pub progress: std::sync::Arc<crate::Progress>,
    /// The longest the upstream may stay silent mid-answer (`request_timeout`).
    pub silence: Stall,
}

impl Held {
    fn ended(&mut self) {
        if let Some(settle) = self.settle.as_mut() {
            settle.ended();
        }
    }

    fn broke(&mut self, reason: &str) {
        if let Some(settle) = self.settle.as_mut() {
            settle.broke(reason);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // hyper ends a sized answer at its last byte, without asking for the end.
        if http_body::Body::is_end_stream(self) {
            self.ended();
        }
    }
}

impl http_body::Body for Held {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let polled = if let Some(frame) = self.ahead.frames.pop_front() {
            self.ahead.len -= frame.data_ref().map_or(0, |d| d.len() as u64);
            Poll::Ready(Some(Ok(frame)))
        } else if self.ahead.end {
            Poll::Ready(None)
        } else {
            Pin::new(&mut self.body).poll_frame(cx)
        };
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                self.progress.mark();
                self.silence.progressed();
            }
            Poll::Ready(Some(Err(e))) => {
                let reason = format!(
                    "the upstream broke its answer in the middle ({})",
                    crate::chain(e)
                );
                tracing::warn!("gate: {reason}");
                self.broke(&reason);
            }
            Poll::Ready(None) => self.ended(),
            Poll::Pending if self.silence.waiting(cx).is_ready() => {
                self.progress.timed_out();
                tracing::warn!(
                    silence = ?self.silence.limit(),
                    "gate: the upstream sent nothing for request_timeout in the middle of an answer; cut"
                );
                self.broke(
                    "the upstream went silent for request_timeout in the middle of its answer",
                );
                return Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the upstream went silent in the middle of its answer",
                ))));
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        // As `poll_frame` gives them out: what was taken in first, then the rest.
        if !self.ahead.frames.is_empty() {
            false
        } else {
            self.ahead.end || self.body.is_end_stream()
        }
    }

    fn size_hint(&self) -> SizeHint {
        // What is still to come: what was taken in and not yet given out, and the rest.
        let held = self.ahead.len;
        if self.ahead.end {
            return SizeHint::with_exact(held);
        }
        let mut hint = self.body.size_hint();
        // The upper bound first: each setter checks the bounds against the other.
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper.saturating_add(held));
        }
        hint.set_lower(hint.lower().saturating_add(held));
        hint
    }
}

/// What of a streamed answer's body had arrived with its head: the pieces, in order, and
/// whether the body ended there.
pub(crate) struct Ahead {
    frames: std::collections::VecDeque<Frame<Bytes>>,
    /// The bytes of data in `frames`.
    len: u64,
    end: bool,
}

/// How much of a stream [`Ahead::peek`] takes in: past it, the rest passes on as it comes.
const PEEK_UP_TO: u64 = 64 << 10;

impl Ahead {
    /// Takes what `body` already holds, without waiting, up to `PEEK_UP_TO` bytes: its pieces,
    /// its end, or its error. A body that breaks anywhere in what came with the head is then a
    /// 502 while nothing has gone to the client. Given on to hyper, the break would come as
    /// hyper writes the head: the client would see its connection close without an answer.
    pub fn peek(body: &mut Answered) -> Result<Ahead, std::io::Error> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut ahead = Ahead {
            frames: std::collections::VecDeque::new(),
            len: 0,
            end: false,
        };
        while ahead.len < PEEK_UP_TO {
            match http_body::Body::poll_frame(Pin::new(&mut *body), &mut cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    ahead.len += frame.data_ref().map_or(0, |d| d.len() as u64);
                    ahead.frames.push_back(frame);
                }
                Poll::Ready(Some(Err(e))) => return Err(e),
                Poll::Ready(None) => {
                    ahead.end = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        Ok(ahead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(frames: Vec<Result<Frame<Bytes>, std::io::Error>>) -> Answer {
        Answer {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Answered::Other(BoxBody::new(StreamBody::new(futures_util::stream::iter(
                frames,
            )))),
        }
    }

    /// An answer read whole is its pieces joined in order, trailers aside; one in a single
    /// piece is that piece, not a copy.
    #[tokio::test]
    async fn an_answer_read_whole_is_its_pieces_joined() {
        let data = |s: &'static str| Ok(Frame::data(Bytes::from_static(s.as_bytes())));
        let joined = answer(vec![
            data("{\"a\":"),
            data("1,"),
            Ok(Frame::trailers(HeaderMap::new())),
            data("\"b\":2}"),
        ]);
        assert_eq!(joined.bytes().await.unwrap(), "{\"a\":1,\"b\":2}");

        let piece = Bytes::from_static(b"{\"ok\":true}");
        let one = answer(vec![Ok(Frame::data(piece.clone()))]);
        let got = one.bytes().await.unwrap();
        assert_eq!(got, piece);
        assert_eq!(got.as_ptr(), piece.as_ptr(), "the piece itself");

        assert!(answer(vec![]).bytes().await.unwrap().is_empty());
        let cut = answer(vec![data("{\"a\""), Err(std::io::Error::other("reset"))]);
        assert!(cut.bytes().await.is_err());
    }
}
