//! Local servers a test controls.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Status 0 means "hang": accept the request and never answer.
const HANG: u16 = 0;

/// An HTTP server whose answer the test changes at will. Dropping it stops it.
#[derive(Debug)]
pub struct StubServer {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    requests: Arc<AtomicUsize>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl StubServer {
    /// Starts answering `status` to every request.
    pub async fn start(status: u16) -> StubServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let status = Arc::new(AtomicU16::new(status));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (s, r, st, t) = (
            status.clone(),
            requests.clone(),
            stop.clone(),
            tasks.clone(),
        );
        tasks.spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = st.cancelled() => return,
                    a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
                };
                let (s, r, st) = (s.clone(), r.clone(), st.clone());
                t.spawn(async move {
                    let stop_conn = st.clone();
                    let svc = service_fn(move |_req| {
                        let (s, r, st) = (s.clone(), r.clone(), st.clone());
                        async move {
                            r.fetch_add(1, Ordering::SeqCst);
                            let code = s.load(Ordering::SeqCst);
                            if code == HANG {
                                st.cancelled().await;
                            }
                            let mut resp = Response::new(Full::new(Bytes::from_static(b"stub\n")));
                            *resp.status_mut() = StatusCode::from_u16(code)
                                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                    tokio::select! { _ = conn => {}, _ = stop_conn.cancelled() => {} }
                });
            }
        });
        StubServer {
            addr,
            status,
            requests,
            stop,
            tasks,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answer `status` from now on.
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Accept requests and never answer them.
    pub fn hang(&self) {
        self.status.store(HANG, Ordering::SeqCst);
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for StubServer {
    fn drop(&mut self) {
        self.stop.cancel();
        self.tasks.close();
    }
}

/// A TCP server that accepts connections and holds them open without reading or writing.
#[derive(Debug)]
pub struct HangingTcp {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl HangingTcp {
    pub async fn start() -> HangingTcp {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (a, st) = (accepted.clone(), stop.clone());
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                tokio::select! {
                    _ = st.cancelled() => return,
                    r = listener.accept() => if let Ok((s, _)) = r {
                        a.fetch_add(1, Ordering::SeqCst);
                        held.push(s);
                    },
                }
            }
        });
        HangingTcp {
            addr,
            accepted,
            stop,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Connections accepted (and held) so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for HangingTcp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
