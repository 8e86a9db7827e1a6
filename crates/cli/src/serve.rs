//! `vitals serve`: wires the monitor and the server together and runs the drain sequence.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vitals_core::Config;
use vitals_probes::{Heartbeat, Metrics, Monitor};
use vitals_server::App;

pub fn run(mut config: Config, listen: Option<SocketAddr>) -> ExitCode {
    if let Some(listen) = listen {
        config.server.listen = listen;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let config = Arc::new(config);
    let listen = config.server.listen;
    let listener = TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen}; choose another address with --listen or server.listen")
    })?;
    let bound = listener.local_addr().unwrap_or(listen);
    let mut signals = Signals::new()?;

    let heartbeat = Heartbeat::new();
    let metrics = Arc::new(Metrics::new(&config));
    let (monitor, control) = Monitor::new(config.clone(), metrics.clone(), heartbeat.clone())?;
    let drain_requested = CancellationToken::new();
    let app = Arc::new(App::new(
        config.clone(),
        control.clone(),
        heartbeat,
        metrics,
        drain_requested.clone(),
    ));

    let tasks = TaskTracker::new();
    let stop_monitor = CancellationToken::new();
    let stop_server = CancellationToken::new();
    tasks.spawn(monitor.run(stop_monitor.clone()));
    let mut server = tasks.spawn(vitals_server::serve(listener, app, stop_server.clone()));
    tracing::info!(
        listen = %bound,
        dependencies = config.dependencies.len(),
        "serving /healthz /readyz /startupz /status /metrics"
    );

    let cause = tokio::select! {
        s = signals.next() => s,
        _ = drain_requested.cancelled() => "POST /drain",
        r = &mut server => {
            anyhow::bail!("the server stopped unexpectedly: {r:?}");
        }
    };
    let (delay, grace) = (config.drain.delay, config.drain.grace);
    tracing::info!(%cause, %delay, %grace, "draining: /readyz answers 503 while /healthz stays 200");
    control.drain();

    // Keep serving through the delay so load balancers see readiness fail before we go.
    tokio::select! {
        _ = tokio::time::sleep(delay.std()) => {}
        s = signals.next() => return Ok(second_signal(s)),
    }
    stop_server.cancel();
    tokio::select! {
        r = tokio::time::timeout(grace.std(), &mut server) => {
            if r.is_err() {
                tracing::warn!(%grace, "in-flight requests did not finish within drain.grace; exiting anyway");
            }
        }
        s = signals.next() => return Ok(second_signal(s)),
    }
    control.finish_drain();
    stop_monitor.cancel();
    server.abort();
    tasks.close();
    tasks.wait().await;
    tracing::info!("drained; exiting");
    Ok(ExitCode::SUCCESS)
}

fn second_signal(name: &str) -> ExitCode {
    tracing::warn!(signal = name, "second signal while draining: exiting now");
    // 128 + signal number, as a shell would report it.
    ExitCode::from(if name == "SIGINT" { 130 } else { 143 })
}
