//! The connection to the upstream: hyper's own client for `http://` (the usual case: a model
//! server beside the agent, where every microsecond of the proxy shows), reqwest with rustls for
//! `https://` (a hosted API).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::{Body, Slot};

#[derive(Debug, Clone)]
pub(crate) enum Client {
    Plain(Box<hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>>),
    Tls(reqwest::Client),
}

/// Why no answer came.
#[derive(Debug)]
pub(crate) struct SendError {
    /// The connection was refused or failed before a byte was sent: safe to retry.
    pub connect: bool,
    pub detail: String,
}

/// An answer's head, and its body still to come.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Body,
}

impl Answer {
    pub fn content_length(&self) -> Option<u64> {
        self.headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
    }

    /// The whole body; an error when the upstream cut it short.
    pub async fn bytes(self) -> Result<Bytes, std::io::Error> {
        Ok(self.body.collect().await?.to_bytes())
    }
}

impl Client {
    pub fn new(upstream: &url::Url, connect_timeout: Duration) -> Result<Client, String> {
        if upstream.scheme() == "http" {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            connector.set_connect_timeout(Some(connect_timeout));
            Ok(Client::Plain(Box::new(
                hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector),
            )))
        } else {
            reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(connect_timeout)
                .build()
                .map(Client::Tls)
                .map_err(|e| e.to_string())
        }
    }

    pub async fn send(
        &self,
        method: Method,
        url: &url::Url,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Answer, SendError> {
        match self {
            Client::Plain(client) => {
                let mut request = Request::builder()
                    .method(method)
                    .uri(url.as_str())
                    .body(Full::new(body))
                    .map_err(|e| SendError {
                        connect: false,
                        detail: e.to_string(),
                    })?;
                *request.headers_mut() = headers;
                let response = client.request(request).await.map_err(|e| SendError {
                    connect: e.is_connect(),
                    detail: e.to_string(),
                })?;
                let (parts, body) = response.into_parts();
                Ok(Answer {
                    status: parts.status,
                    headers: parts.headers,
                    body: BoxBody::new(body.map_err(std::io::Error::other)),
                })
            }
            Client::Tls(client) => {
                let response = client
                    .request(method, url.clone())
                    .headers(headers)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| SendError {
                        connect: e.is_connect(),
                        detail: e.to_string(),
                    })?;
                let (status, headers) = (response.status(), response.headers().clone());
                let stream = response
                    .bytes_stream()
                    .map(|chunk| chunk.map(Frame::data).map_err(std::io::Error::other));
                Ok(Answer {
                    status,
                    headers,
                    body: BoxBody::new(StreamBody::new(stream)),
                })
            }
        }
    }
}

/// A streamed answer that holds its request's slot until the last byte, or until the client
/// goes away and hyper drops it (which drops the upstream's body, cancelling the request).
pub(crate) struct Held {
    pub body: Body,
    /// Released when the body is dropped.
    pub _slot: Slot,
    /// Marked as each piece arrives.
    pub progress: std::sync::Arc<crate::Progress>,
}

impl http_body::Body for Held {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            self.progress.mark();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
