//! `[[processes]]` and entrypoint mode in the runtime: each process's state as its signal of
//! readiness, its metrics in `/metrics`, the gate following its port and feeding its stall
//! detection, and its stop at the end of the drain.

use std::sync::Arc;

use vitals_core::lifecycle::{Event, Observation};
use vitals_server::Shared;
use vitals_supervisor::machine::Exit;
use vitals_supervisor::Supervisor;

/// The supervisor of a runtime, built with the other parts.
#[derive(Debug, Clone)]
pub(crate) struct SupervisorPart {
    supervisor: Supervisor,
    /// Entrypoint mode: vitals ends with the agent's exit status.
    entrypoint: bool,
}

impl SupervisorPart {
    pub(crate) fn from_config(config: &vitals_core::Config, entrypoint: bool) -> Option<Self> {
        if config.processes.is_empty() {
            return None;
        }
        let supervisor = Supervisor::new(config.processes.clone());
        #[cfg(feature = "gpu")]
        let supervisor = supervisor.with_gpu_metrics();
        Some(SupervisorPart {
            supervisor,
            entrypoint,
        })
    }

    pub(crate) fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// The gate fronts `process`: requests follow its port, and its traffic stands in for
    /// health polling and shows a hang.
    #[cfg(feature = "gate")]
    pub(crate) fn front(&self, process: &str, gate: &vitals_gate::Gate) {
        use vitals_supervisor::{Traffic, TrafficSample};

        #[derive(Debug)]
        struct GateTraffic(vitals_gate::Gate);
        impl Traffic for GateTraffic {
            fn sample(&self) -> TrafficSample {
                let t = self.0.traffic();
                TrafficSample {
                    answered: t.answered,
                    in_flight: t.in_flight,
                    awaiting: t.awaiting,
                    since_progress: t.since_progress,
                    timed_out: t.timed_out,
                }
            }
        }
        self.supervisor
            .set_traffic(process, Arc::new(GateTraffic(gate.clone())));
        if let Some(mut port) = self.supervisor.port(process) {
            let gate = gate.clone();
            tokio::spawn(async move {
                loop {
                    if let Some(p) = *port.borrow_and_update() {
                        gate.set_upstream_port(p);
                    }
                    if port.changed().await.is_err() {
                        return;
                    }
                }
            });
        }
    }

    /// Starts the processes, each reporting its state as its signal.
    pub(crate) fn start(&self, shared: &Shared) {
        let rules = shared.snapshot().rules().clone();
        let ids: Vec<_> = self
            .supervisor
            .names()
            .map(|n| {
                rules
                    .signals
                    .id(n)
                    .expect("every process registers its signal")
            })
            .collect();
        let shared = shared.clone();
        self.supervisor.start(Arc::new(move |index, up, reason| {
            if let Some(&signal) = ids.get(index) {
                let _ = shared.send(Event::Observed {
                    signal,
                    observation: Observation::reported(up, &reason, None),
                });
            }
        }));
    }

    /// Entrypoint mode: resolves with the agent's exit once it is down for good.
    pub(crate) async fn agent_ended(&self) -> Exit {
        let Some(mut ended) = self
            .entrypoint
            .then(|| self.supervisor.ended(vitals_core::config::AGENT_PROCESS))
            .flatten()
        else {
            return std::future::pending().await;
        };
        loop {
            if let Some(exit) = *ended.borrow_and_update() {
                return exit;
            }
            if ended.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Stops every process, and returns the agent's exit in entrypoint mode.
    pub(crate) async fn stop(&self) -> Option<Exit> {
        self.supervisor.stop().await;
        if !self.entrypoint {
            return None;
        }
        let ended = self.supervisor.ended(vitals_core::config::AGENT_PROCESS)?;
        let exit = *ended.borrow();
        exit
    }
}
