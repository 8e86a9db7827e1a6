//! The floor for the gate benchmark: the smallest hyper 1.x HTTP/1.1 reverse proxy, on a
//! single-threaded tokio runtime as the gate's own thread is. Each client connection gets one
//! upstream connection of its own, opened at its first request and kept (wrk sends one request
//! at a time on each connection, so no pool is needed); answers stream back as they come. No
//! limits, no timeouts, no metrics, no header rewriting: what hyper and tokio cost a proxied
//! request, and nothing else. Prints the address it bound on stdout.
//!
//! `hyper-proxy LISTEN_ADDR UPSTREAM_ADDR`

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let upstream: Arc<str> = args
        .next()
        .expect("usage: hyper-proxy LISTEN UPSTREAM")
        .into();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async move {
            let listener = TcpListener::bind(&listen).await.expect("bind");
            println!("{}", listener.local_addr().expect("local addr"));
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let conn: Arc<Mutex<Option<SendRequest<Incoming>>>> = Arc::default();
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (conn, upstream) = (conn.clone(), upstream.clone());
                        async move {
                            let mut held = conn.lock().await;
                            if held.as_ref().is_none_or(|s| s.is_closed()) {
                                let up = TcpStream::connect(&*upstream).await?;
                                let _ = up.set_nodelay(true);
                                let (sender, driver) = hyper::client::conn::http1::Builder::new()
                                    .writev(false)
                                    .handshake(TokioIo::new(up))
                                    .await
                                    .map_err(std::io::Error::other)?;
                                tokio::spawn(driver);
                                *held = Some(sender);
                            }
                            let sender = held.as_mut().expect("set above");
                            sender.ready().await.map_err(std::io::Error::other)?;
                            sender
                                .send_request(req)
                                .await
                                .map_err(std::io::Error::other)
                        }
                    });
                    let _ = http1::Builder::new()
                        .writev(false)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
}
