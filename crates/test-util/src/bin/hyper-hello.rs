//! The baseline for the probe benchmark: the smallest hyper 1.x HTTP/1.1 server, answering
//! `200 ok` to everything. Prints the address it bound on stdout.
//!
//! `hyper-hello ADDR MS` answers each request after MS milliseconds instead: the stand-in for a
//! model's service time in the gate benchmark.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let delay = std::time::Duration::from_millis(
        std::env::args()
            .nth(2)
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(0),
    );
    let listener = TcpListener::bind(&addr).await.expect("bind");
    println!("{}", listener.local_addr().expect("local addr"));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(move |_req| async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
