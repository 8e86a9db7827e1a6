//! A stand-in for an agent, or for the services it depends on, to run beside the vitals image
//! in the container tests. No shell and no curl: it is the only program in its image.
//!
//! `STANDIN_ROLE=agent` (default): serves `GET /` on `AGENT_PORT` (8000), beats vitals'
//! `POST /heartbeat` on `127.0.0.1:VITALS_PORT` (8080) every second and says `POST /started`
//! once; the test steers it on its own port:
//! - `POST /control/hang`: stop beating, as an agent whose loop is stuck;
//! - `POST /control/signal/NAME/up` (or `/down`): report a `[[signals]]` entry to vitals.
//!
//! `STANDIN_ROLE=world`: the agent's dependencies. Listens on every port in `WORLD_PORTS`
//! (comma-separated) and answers any `GET` or `HEAD` with 200 and a body that satisfies the
//! examples' checks. `POST /control/PORT/down` (on `CONTROL_PORT`, 7000) closes that port, so
//! HTTP and TCP checks alike get a refused connection, as from a service that went away;
//! `POST /control/PORT/up` opens it again.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the world answers: `ok` for `expect_body`, Qdrant's `/result/id` and Weaviate's `/id`.
const WORLD_BODY: &str =
    r#"{"status":"ok","result":{"id":42},"id":"5b9c0a52-6a5b-4a5e-9a57-1c2d3e4f5a6b"}"#;

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

fn reply(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r
}

/// One HTTP/1.1 request to vitals on loopback; the status code, or 0 when it did not answer.
async fn to_vitals(port: &str, method: &str, path: &str, body: &str) -> u16 {
    let attempt = async {
        let mut s = TcpStream::connect(format!("127.0.0.1:{port}")).await.ok()?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let head = String::from_utf8_lossy(&buf);
        head.split(' ').nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

async fn serve<F, Fut>(port: u16, handle: F)
where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    serve_while(port, Arc::new(AtomicBool::new(false)), handle).await;
}

/// Serves `port` while `closed` is false; while it is true nothing listens there.
async fn serve_while<F, Fut>(port: u16, closed: Arc<AtomicBool>, handle: F)
where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    loop {
        if closed.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let listener = TcpListener::bind(("0.0.0.0", port))
            .await
            .unwrap_or_else(|e| panic!("cannot listen on port {port}: {e}"));
        eprintln!("agent-standin: listening on {port}");
        while !closed.load(Ordering::Relaxed) {
            let Ok(Ok((stream, _))) =
                tokio::time::timeout(Duration::from_millis(50), listener.accept()).await
            else {
                continue;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let handle = handle.clone();
                    async move { Ok::<_, Infallible>(handle(req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
        eprintln!("agent-standin: closed {port}");
    }
}

async fn agent() {
    let port: u16 = env_or("AGENT_PORT", "8000")
        .parse()
        .expect("AGENT_PORT is a port");
    let vitals = env_or("VITALS_PORT", "8080");
    let hung = Arc::new(AtomicBool::new(false));
    {
        let (hung, vitals) = (hung.clone(), vitals.clone());
        tokio::spawn(async move {
            let mut started = false;
            loop {
                if !hung.load(Ordering::Relaxed) {
                    to_vitals(&vitals, "POST", "/heartbeat", "").await;
                    if !started {
                        started = to_vitals(&vitals, "POST", "/started", "").await == 200;
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    serve(port, move |req| {
        let (hung, vitals) = (hung.clone(), vitals.clone());
        async move {
            let path = req.uri().path().to_owned();
            let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
            match (req.method(), parts.as_slice()) {
                (&Method::GET, [""]) => reply(StatusCode::OK, "agent ok\n"),
                (&Method::POST, ["control", "hang"]) => {
                    hung.store(true, Ordering::Relaxed);
                    reply(StatusCode::OK, "hung\n")
                }
                (&Method::POST, ["control", "signal", name, state @ ("up" | "down")]) => {
                    let body = format!(
                        r#"{{"up": {}, "reason": "set by the test"}}"#,
                        *state == "up"
                    );
                    let code = to_vitals(&vitals, "PUT", &format!("/signals/{name}"), &body).await;
                    reply(
                        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
                        &format!("vitals answered {code}\n"),
                    )
                }
                _ => reply(StatusCode::NOT_FOUND, "no such route\n"),
            }
        }
    })
    .await;
}

async fn world() {
    let ports: Vec<u16> = env_or("WORLD_PORTS", "8080")
        .split(',')
        .map(|p| p.trim().parse().expect("WORLD_PORTS holds ports"))
        .collect();
    let control: u16 = env_or("CONTROL_PORT", "7000")
        .parse()
        .expect("CONTROL_PORT is a port");
    let closed: Arc<HashMap<u16, Arc<AtomicBool>>> = Arc::new(
        ports
            .iter()
            .map(|p| (*p, Arc::new(AtomicBool::new(false))))
            .collect(),
    );
    for (port, flag) in closed.iter() {
        // No keep-alive: a closed port must fail the next check, not live on in a pooled
        // connection.
        tokio::spawn(serve_while(*port, flag.clone(), |_req| async {
            let mut r = reply(StatusCode::OK, WORLD_BODY);
            r.headers_mut()
                .insert(hyper::header::CONNECTION, "close".parse().unwrap());
            r
        }));
    }
    serve(control, move |req| {
        let closed = closed.clone();
        async move {
            let path = req.uri().path().to_owned();
            let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
            let (&Method::POST, ["control", target, state @ ("up" | "down")]) =
                (req.method(), parts.as_slice())
            else {
                return reply(StatusCode::NOT_FOUND, "POST /control/PORT/up|down\n");
            };
            let Some(flag) = target.parse::<u16>().ok().and_then(|p| closed.get(&p)) else {
                return reply(StatusCode::BAD_REQUEST, "not one of WORLD_PORTS\n");
            };
            flag.store(*state == "down", Ordering::Relaxed);
            reply(StatusCode::OK, &format!("{target} {state}\n"))
        }
    })
    .await;
}

#[tokio::main]
async fn main() {
    match env_or("STANDIN_ROLE", "agent").as_str() {
        "agent" => agent().await,
        "world" => world().await,
        other => panic!("STANDIN_ROLE is agent or world, not {other}"),
    }
}
