//! An axum agent that embeds vitals.
//!
//! - its main loop beats ([`vitals::Handle::beat`]) every turn, so a blocked loop fails
//!   `/healthz` and `/healthz/agent` while the process still answers;
//! - it says [`started`](vitals::Handle::started) once its warm-up is done;
//! - `GET /ask` uses a tool (a TCP service at `TOOL_ADDR`): a failure on real traffic flips the
//!   `tool` signal down (degraded, still in traffic), a success flips it back;
//! - vitals' routes are mounted in the same app, on the same port, beside `/ask`;
//! - on SIGTERM vitals drains: `/readyz` 503 at once, then after `drain.delay` the app stops
//!   accepting and finishes in-flight requests.
//!
//! `POST /debug/block-loop` blocks the main loop, to show what a deadlock looks like.
//!
//! Environment: `LISTEN` (default `127.0.0.1:8000`), `TOOL_ADDR` (default `127.0.0.1:9000`),
//! `WARMUP_MS` (default 1000).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone)]
struct App {
    vitals: vitals::Handle,
    tool: String,
    blocked: Arc<AtomicBool>,
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(std::io::stderr)
        .init();
    match run().await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<u8, Box<dyn std::error::Error>> {
    let warmup = Duration::from_millis(env("WARMUP_MS", "1000").parse()?);
    let (runtime, handle) = vitals::Builder::new()
        .heartbeat_required(Duration::from_secs(2))
        .startup_signal()
        .signal("tool", false, Duration::from_secs(30))
        .drain(Duration::from_secs(1), Duration::from_secs(5))
        .os_signals(true)
        .build()?;
    let runtime = tokio::spawn(runtime.run());

    let app = App {
        vitals: handle.clone(),
        tool: env("TOOL_ADDR", "127.0.0.1:9000"),
        blocked: Arc::default(),
    };
    tokio::spawn(main_loop(app.clone()));
    tokio::spawn({
        let handle = handle.clone();
        async move {
            tokio::time::sleep(warmup).await; // load a model, fetch a tool catalogue...
            let _ = handle.started();
            tracing::info!("warm-up done");
        }
    });

    let routes = Router::new()
        .route("/ask", get(ask))
        .route("/debug/block-loop", post(block_loop))
        .with_state(app)
        // Everything else is vitals: /healthz, /readyz, /metrics, the agent API...
        .fallback_service(handle.routes())
        // ...which lets loopback callers use its agent API once it knows who is calling.
        .layer(axum::middleware::map_request(peer_addr));
    let listener = TcpListener::bind(env("LISTEN", "127.0.0.1:8000")).await?;
    tracing::info!(listen = %listener.local_addr()?, "serving /ask and vitals' routes");
    let stopping = handle.clone();
    axum::serve(
        listener,
        routes.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { stopping.stopping().await })
    .await?;
    let exit = runtime.await??;
    tracing::info!(code = exit.code, "drained");
    Ok(exit.code)
}

async fn peer_addr(ConnectInfo(peer): ConnectInfo<SocketAddr>, mut req: Request) -> Request {
    req.extensions_mut().insert(vitals::PeerAddr(peer));
    req
}

/// The agent's main loop: one turn of real work, one beat.
async fn main_loop(app: App) {
    loop {
        if app.blocked.load(Ordering::SeqCst) {
            // A deadlock: the loop never turns again, so it never beats again.
            std::future::pending::<()>().await;
        }
        app.vitals.beat();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn ask(State(app): State<App>) -> (StatusCode, String) {
    let called = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(&app.tool)).await;
    let problem = match called {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(format!("tool unreachable: {e}")),
        Err(_) => Some("tool timed out after 1s".to_owned()),
    };
    let _ = app.vitals.set_signal(
        "tool",
        problem.is_none(),
        problem.clone().unwrap_or_default(),
    );
    match problem {
        None => (StatusCode::OK, "answer\n".into()),
        Some(p) => (StatusCode::BAD_GATEWAY, format!("{p}\n")),
    }
}

async fn block_loop(State(app): State<App>) -> &'static str {
    app.blocked.store(true, Ordering::SeqCst);
    "the main loop is blocked\n"
}
