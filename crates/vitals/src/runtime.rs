//! The runtime: the driver, the poller, the optional listener and the drain policy, under one
//! cancellation tree.
//!
//! On a drain (SIGTERM, SIGINT or SIGHUP when asked to watch them, `POST /drain`, or
//! [`Handle::drain`](crate::Handle::drain)) readiness answers 503 at once while liveness stays
//! 200; the runtime keeps serving for `drain.delay`, then stops its listener and gives in-flight
//! requests up to `drain.grace`, then the state becomes `Drained` and [`Runtime::run`] returns. A
//! second signal returns at once with the shell's exit code for it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vitals_core::lifecycle::Event;
use vitals_probes::Poller;
use vitals_server::{Inbox, Routes, Shared};

use crate::{driver, Error, Handle};

/// Where the runtime serves its routes, if it serves them itself.
#[derive(Debug)]
pub(crate) enum Listen {
    Addr(SocketAddr),
    Bound(TcpListener),
}

/// What started the drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainCause {
    /// A process signal, by name (`SIGTERM`, `SIGINT`, `SIGHUP`).
    Signal(&'static str),
    /// `POST /drain` or [`Handle::drain`](crate::Handle::drain).
    Requested,
    /// Entrypoint mode: the agent exited by itself.
    AgentExited,
}

/// How the runtime ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// What started the drain.
    pub cause: DrainCause,
    /// 0 after a full drain; 128 + the signal's number when a second signal cut it short. In
    /// entrypoint mode, the agent's exit status (as a shell reports it).
    pub code: u8,
}

/// The health runtime. Run it with [`Runtime::run`] on a task you own; it returns once drained.
#[derive(Debug)]
pub struct Runtime {
    pub(crate) shared: Shared,
    pub(crate) inbox: Inbox,
    pub(crate) poller: Poller,
    pub(crate) listen: Option<Listen>,
    pub(crate) os_signals: bool,
    pub(crate) handle: Handle,
    #[cfg(feature = "gate")]
    pub(crate) gate: Option<crate::gate::GatePart>,
    #[cfg(feature = "supervisor")]
    pub(crate) supervisor: Option<crate::supervise::SupervisorPart>,
}

/// How long the last steps (stopping the poller and the driver) may take once drained. They
/// only cancel and join tasks, so this bound is only hit by a task that ignores cancellation.
const FINAL_JOIN: Duration = Duration::from_secs(1);

impl Runtime {
    /// Runs until drained. Binds the listener first, if one was asked for, so a port in use is
    /// an error before anything else starts.
    pub async fn run(self) -> Result<Exit, Error> {
        let Runtime {
            shared,
            inbox,
            poller,
            listen,
            os_signals,
            handle,
            #[cfg(feature = "gate")]
            gate,
            #[cfg(feature = "supervisor")]
            supervisor,
        } = self;
        let listener = match listen {
            None => None,
            Some(Listen::Bound(l)) => Some(l),
            Some(Listen::Addr(addr)) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| Error::Bind { addr, source })?,
            ),
        };
        #[cfg(feature = "gate")]
        let gate_listener = match &gate {
            Some(g) => Some(g.bind().await?),
            None => None,
        };
        let mut signals = if os_signals {
            Some(OsSignals::new()?)
        } else {
            None
        };

        let root = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (checks_tx, checks_rx) = mpsc::channel(256);
        let dependencies = poller.len();
        tasks.spawn(poller.run(checks_tx, root.child_token()));
        tasks.spawn(driver::drive(
            shared.clone(),
            inbox,
            checks_rx,
            root.child_token(),
        ));
        let stop_server = root.child_token();
        let mut server = match listener {
            Some(listener) => {
                let bound = listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                let task = tasks.spawn(vitals_server::serve(
                    listener,
                    Routes::new(shared.clone()),
                    stop_server.clone(),
                ));
                tracing::info!(
                    listen = %bound,
                    dependencies,
                    signals = shared.config().signals.len(),
                    "serving /healthz /readyz /startupz /status /metrics"
                );
                Some(task)
            }
            None => None,
        };
        #[cfg(feature = "gate")]
        let mut gate_failed = match (&gate, gate_listener) {
            (Some(g), Some(listener)) => {
                Some(g.start(listener, &shared, &tasks, stop_server.clone(), root.clone()))
            }
            _ => None,
        };
        #[cfg(not(feature = "gate"))]
        let mut gate_failed: Option<tokio::sync::oneshot::Receiver<Error>> = None;
        #[cfg(feature = "supervisor")]
        if let Some(s) = &supervisor {
            s.start(&shared);
        }
        #[cfg(feature = "supervisor")]
        let agent_ended = async {
            match &supervisor {
                Some(s) => s.agent_ended().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(feature = "supervisor"))]
        let agent_ended = std::future::pending::<u8>();

        let cause = tokio::select! {
            s = next_signal(&mut signals) => DrainCause::Signal(s),
            _ = shared.drain_requested().cancelled() => DrainCause::Requested,
            r = async { server.as_mut().expect("guarded").await }, if server.is_some() => {
                root.cancel();
                tracing::error!(result = ?r, "the probe server stopped unexpectedly");
                return Err(Error::ServerStopped);
            }
            Ok(e) = async { gate_failed.as_mut().expect("guarded").await }, if gate_failed.is_some() => {
                root.cancel();
                #[cfg(feature = "supervisor")]
                if let Some(s) = &supervisor {
                    s.stop().await;
                }
                return Err(e);
            }
            exit = agent_ended => {
                tracing::info!("the agent {exit}: vitals stops and exits with its status");
                shared.request_drain();
                stop_server.cancel();
                #[cfg(feature = "supervisor")]
                if let Some(s) = &supervisor {
                    s.stop().await;
                }
                // As at the end of any drain: an embedder's stopping() completes, and the state
                // says drained.
                handle.stopping_token().cancel();
                let _ = shared.apply(Event::DrainFinished, FINAL_JOIN).await;
                stop_tasks(&root, server, &tasks).await;
                return Ok(Exit { cause: DrainCause::AgentExited, code: exit_code(exit) });
            }
        };
        let config = shared.config().clone();
        let (delay, grace) = (config.drain.delay, config.drain.grace);
        let cause_text = match cause {
            DrainCause::Signal(s) => s,
            DrainCause::Requested => "a drain request",
            DrainCause::AgentExited => "the agent's exit",
        };
        tracing::info!(cause = cause_text, %delay, %grace, "draining: /readyz answers 503 while /healthz stays 200");
        // The event carries the drain into the state; request_drain is idempotent.
        shared.request_drain();

        // Keep serving through the delay so load balancers see readiness fail before we go.
        tokio::select! {
            _ = tokio::time::sleep(delay.std()) => {}
            s = next_signal(&mut signals) => return Ok(second_signal(cause, s, &root)),
        }
        stop_server.cancel();
        if let Some(server) = server.as_mut() {
            tokio::select! {
                r = tokio::time::timeout(grace.std(), server) => {
                    if r.is_err() {
                        tracing::warn!(%grace, "in-flight requests did not finish within drain.grace; exiting anyway");
                    }
                }
                s = next_signal(&mut signals) => return Ok(second_signal(cause, s, &root)),
            }
        }
        // The gate stopped accepting with the probe server; its in-flight requests (streams
        // included) get what is left of the grace.
        #[cfg(feature = "gate")]
        if let Some(g) = &gate {
            tokio::select! {
                drained = g.drained(grace.std()) => if !drained {
                    tracing::warn!(%grace, "gate: requests still in flight at the end of drain.grace; exiting anyway");
                },
                s = next_signal(&mut signals) => return Ok(second_signal(cause, s, &root)),
            }
        }
        // Then the supervised processes (the agent in entrypoint mode): SIGTERM, and SIGKILL after
        // their stop_timeout (the agent's is drain.grace).
        #[allow(unused_mut)]
        let mut code = 0;
        #[cfg(feature = "supervisor")]
        if let Some(s) = &supervisor {
            tokio::select! {
                agent = s.stop() => if let Some(exit) = agent {
                    code = exit_code(exit);
                },
                sig = next_signal(&mut signals) => return Ok(second_signal(cause, sig, &root)),
            }
        }
        handle.stopping_token().cancel();
        let _ = shared.apply(Event::DrainFinished, FINAL_JOIN).await;
        stop_tasks(&root, server, &tasks).await;
        tracing::info!("drained");
        Ok(Exit { cause, code })
    }
}

/// The last step of every way out: cancels the tree, stops the listener, and waits
/// [`FINAL_JOIN`] for the tasks.
async fn stop_tasks(
    root: &CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
    tasks: &TaskTracker,
) {
    root.cancel();
    if let Some(server) = server {
        server.abort();
    }
    tasks.close();
    if tokio::time::timeout(FINAL_JOIN, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("a task did not stop when cancelled; exiting without it");
    }
}

struct OsSignals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr1: Signal,
    usr2: Signal,
}

impl OsSignals {
    fn new() -> Result<Self, Error> {
        let listen = |kind: SignalKind, name: &'static str| {
            signal(kind).map_err(|source| Error::OsSignal {
                signal: name,
                source,
            })
        };
        Ok(OsSignals {
            term: listen(SignalKind::terminate(), "SIGTERM")?,
            int: listen(SignalKind::interrupt(), "SIGINT")?,
            // A closed terminal or a supervisor's reload: drain as for SIGTERM rather than die
            // with no drain, which is what SIGHUP's default action would do.
            hup: listen(SignalKind::hangup(), "SIGHUP")?,
            // Their default action also ends the process with no drain; nothing here uses them,
            // so a stray one (a log rotator's, say) is logged and ignored.
            usr1: listen(SignalKind::user_defined1(), "SIGUSR1")?,
            usr2: listen(SignalKind::user_defined2(), "SIGUSR2")?,
        })
    }
}

/// The next signal that drains, or never when the runtime does not watch them.
async fn next_signal(signals: &mut Option<OsSignals>) -> &'static str {
    match signals {
        None => std::future::pending().await,
        Some(s) => loop {
            let ignored = tokio::select! {
                _ = s.term.recv() => return "SIGTERM",
                _ = s.int.recv() => return "SIGINT",
                _ = s.hup.recv() => return "SIGHUP",
                _ = s.usr1.recv() => "SIGUSR1",
                _ = s.usr2.recv() => "SIGUSR2",
            };
            tracing::info!(
                signal = ignored,
                "ignored: vitals drains on SIGTERM, SIGINT or SIGHUP"
            );
        },
    }
}

fn second_signal(cause: DrainCause, name: &str, root: &CancellationToken) -> Exit {
    tracing::warn!(signal = name, "second signal while draining: exiting now");
    root.cancel();
    // 128 + the signal's number, as a shell reports it.
    let code = match name {
        "SIGHUP" => 129,
        "SIGINT" => 130,
        _ => 143,
    };
    Exit { cause, code }
}

#[cfg(feature = "supervisor")]
fn exit_code(exit: vitals_supervisor::machine::Exit) -> u8 {
    exit.shell_code()
}

#[cfg(not(feature = "supervisor"))]
fn exit_code(code: u8) -> u8 {
    code
}
