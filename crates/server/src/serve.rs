//! The socket side: accept with a connection cap, HTTP/1.1 with a header-read timeout and a
//! bounded header buffer, graceful shutdown on request.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Routes;

/// Largest request head accepted; a probe needs a few hundred bytes.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Serves `routes` on `listener` until `shutdown` fires, then stops accepting, asks every open
/// connection to finish its request and close, and returns when they have. The caller bounds
/// that wait with `drain.grace`.
pub async fn serve(listener: TcpListener, routes: Routes, shutdown: CancellationToken) {
    let config = routes.shared().config().clone();
    let slots = Arc::new(Semaphore::new(config.server.max_connections as usize));
    let header_read_timeout: Duration = config.server.header_read_timeout.std();
    let graceful = GracefulShutdown::new();
    let connections = TaskTracker::new();
    let mut refused: u64 = 0;

    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off a little instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(%peer, refused, max_connections = config.server.max_connections, "connection cap reached; closing new connections");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let routes = routes.clone();
        // The peer goes straight to the handler: no per-request extension map to allocate.
        let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let routes = routes.clone();
            async move { Ok::<_, Infallible>(routes.handle(req, Some(peer)).await) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .max_buf_size(MAX_HEAD_BYTES)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        connections.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    connections.close();
    connections.wait().await;
}
