//! The supervisor: vitals starts the processes it guards (`[[processes]]`, or the agent itself
//! with `vitals serve -- CMD`), checks their health, restarts them with backoff, and stops them
//! with the drain.
//!
//! - Each process runs in its own process group with SIGKILL as its parent-death signal, so
//!   neither it nor its children outlive vitals, even a vitals killed by SIGKILL.
//! - Its output goes to vitals' log, a line per event with `process = NAME`.
//! - Its state is a signal of readiness (see [`machine`]): starting, ready, restarting in Ns,
//!   given up. A process still loading keeps vitals in startup.
//! - A port range gives each start a free port (`{port}` in its command); a conflict moves it to
//!   the next (see [`ports`]-level docs in the source).
//! - With the gate in front of it ([`Traffic`]), an answer in flight with no byte for
//!   `stall_after`, or a request it goes silent on for the gate's `request_timeout`, counts as
//!   a hung process, and real traffic stands in for health polling. A request whose answer has
//!   not begun is given `request_timeout`, not `stall_after`: a non-streamed answer sends
//!   nothing until the whole generation is done.

pub mod machine;

mod child;
#[cfg(feature = "gpu")]
mod gpu;
mod health;
mod metrics;
mod ports;
pub mod reaper;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vitals_core::config::{Ports, Process, PORT_PLACEHOLDER};

use machine::{Action, Exit, Health, Machine, Reason, Rules, Stall, State};

/// What the gate in front of a process has seen of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficSample {
    /// Answers the process began (any status below 500), since vitals started.
    pub answered: u64,
    /// Requests waiting for the process now.
    pub in_flight: usize,
    /// Of those, the ones whose answer has not begun.
    pub awaiting: usize,
    /// While requests are in flight: how long since the process last sent a byte to any of them.
    pub since_progress: Option<Duration>,
    /// Times it went silent on a request for the gate's `request_timeout`, before the answer
    /// began or in its middle, since vitals started.
    pub timed_out: u64,
}

/// The gate's view of one process's traffic.
pub trait Traffic: Send + Sync + std::fmt::Debug + 'static {
    fn sample(&self) -> TrafficSample;
}

/// Receives each process's state for readiness: its index in the configuration, up, and why not.
pub type Reporter = Arc<dyn Fn(usize, bool, String) + Send + Sync>;

/// What `/status` and the metrics show of one process.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub phase: &'static str,
    pub ready: bool,
    pub pid: Option<i32>,
    pub port: Option<u16>,
    /// Seconds since the epoch of the last start.
    pub started_at: Option<f64>,
    /// By [`Reason::LABELS`].
    pub restarts_by_reason: [u64; Reason::LABELS.len()],
    pub reason: String,
}

#[derive(Debug)]
pub(crate) struct Managed {
    pub(crate) spec: Process,
    view: Mutex<View>,
    port: watch::Sender<Option<u16>>,
    /// How it ended, once it is down for good (restart = "never", given up, or stopped).
    ended: watch::Sender<Option<Exit>>,
}

impl Managed {
    pub(crate) fn view(&self) -> View {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut View)) {
        f(&mut self.view.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// The supervised processes of one runtime.
#[derive(Debug, Clone)]
pub struct Supervisor {
    processes: Vec<Arc<Managed>>,
    traffic: Arc<Mutex<HashMap<String, Arc<dyn Traffic>>>>,
    stop: CancellationToken,
    tasks: TaskTracker,
    #[cfg(feature = "gpu")]
    gpu: Option<Arc<gpu::Gpu>>,
}

impl Supervisor {
    pub fn new(processes: Vec<Process>) -> Supervisor {
        Supervisor {
            processes: processes
                .into_iter()
                .map(|spec| {
                    Arc::new(Managed {
                        spec,
                        view: Mutex::new(View {
                            phase: "idle",
                            ..View::default()
                        }),
                        port: watch::Sender::new(None),
                        ended: watch::Sender::new(None),
                    })
                })
                .collect(),
            traffic: Arc::default(),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            #[cfg(feature = "gpu")]
            gpu: None,
        }
    }

    /// Loads NVML for the GPU metrics, if the machine has it; says in the log either way.
    ///
    /// Not in a statically linked vitals (the image's): glibc's `dlopen` from a static binary
    /// needs the very glibc it was linked with, and loading NVML that way was seen to kill
    /// vitals with SIGFPE on a GPU machine. Such a build says so in the log instead.
    #[cfg(feature = "gpu")]
    pub fn with_gpu_metrics(mut self) -> Supervisor {
        if cfg!(target_feature = "crt-static") {
            tracing::info!("no GPU metrics: this vitals is statically linked and cannot load NVML; run a dynamically linked vitals (cargo install, or a release built without crt-static) for them");
            return self;
        }
        match gpu::Gpu::load() {
            Ok(g) => {
                tracing::info!(gpus = g.device_count(), "NVML loaded: GPU metrics on");
                self.gpu = Some(Arc::new(g));
            }
            Err(e) => tracing::debug!(reason = %e, "no NVML: no GPU metrics"),
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.processes.iter().map(|p| p.spec.name.as_str())
    }

    /// The port `name` runs on now (`None` before its first start), as it changes.
    pub fn port(&self, name: &str) -> Option<watch::Receiver<Option<u16>>> {
        self.find(name).map(|p| p.port.subscribe())
    }

    /// How `name` ended, once it is down for good.
    pub fn ended(&self, name: &str) -> Option<watch::Receiver<Option<Exit>>> {
        self.find(name).map(|p| p.ended.subscribe())
    }

    /// Every process's view, in configuration order.
    pub fn views(&self) -> Vec<(String, View)> {
        self.processes
            .iter()
            .map(|p| (p.spec.name.clone(), p.view()))
            .collect()
    }

    fn find(&self, name: &str) -> Option<&Arc<Managed>> {
        self.processes.iter().find(|p| p.spec.name == name)
    }

    /// Lets `name` see the gate's traffic to it (before [`Supervisor::start`]).
    pub fn set_traffic(&self, name: &str, traffic: Arc<dyn Traffic>) {
        self.traffic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), traffic);
    }

    /// Registers `vitals_process_*` (and the GPU metrics) into `registry`.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register_collector(Box::new(metrics::ProcessCollector {
            processes: self.processes.clone(),
            #[cfg(feature = "gpu")]
            gpu: self.gpu.clone(),
        }));
    }

    /// Starts every process, and the orphan reaper. Must be called within a multi-threaded
    /// runtime (see `child::spawn` on the parent-death signal).
    pub fn start(&self, report: Reporter) {
        if self.processes.is_empty() {
            return;
        }
        self.tasks.spawn(reaper::run(self.stop.clone()));
        let traffic = self
            .traffic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (index, managed) in self.processes.iter().enumerate() {
            self.tasks.spawn(supervise(
                managed.clone(),
                index,
                report.clone(),
                traffic.get(&managed.spec.name).cloned(),
                self.stop.clone(),
            ));
        }
    }

    /// Stops every process (SIGTERM to its group, SIGKILL after its `stop_timeout`) and waits
    /// for them all.
    pub async fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// `argv` and `env` with `{port}` replaced.
fn with_port(spec: &Process, port: Option<u16>) -> (Vec<String>, Vec<(String, String)>) {
    let fill = |s: &String| match port {
        Some(p) => s.replace(PORT_PLACEHOLDER, &p.to_string()),
        None => s.clone(),
    };
    (
        spec.command.iter().map(fill).collect(),
        spec.env.iter().map(|(k, v)| (k.clone(), fill(v))).collect(),
    )
}

/// How often a starting process is checked: it may be ready any moment. In its first second,
/// more often: a process that restarts fast (a crash, not a model load) is back in traffic
/// without waiting out a whole step.
const START_CHECK_EVERY: Duration = Duration::from_millis(250);
const START_CHECK_FAST: Duration = Duration::from_millis(50);
const FAST_FOR: Duration = Duration::from_secs(1);
/// How often the state is reported while it holds (the signal's staleness bound is 5 minutes).
const REFRESH: Duration = Duration::from_secs(60);
/// Traffic that proves a process healthy stretches health polling up to this many intervals.
const MAX_QUIET_FACTOR: u32 = 8;

/// The life of one process, until `stop`.
async fn supervise(
    m: Arc<Managed>,
    index: usize,
    report: Reporter,
    traffic: Option<Arc<dyn Traffic>>,
    stop: CancellationToken,
) {
    let spec = &m.spec;
    let name = spec.name.as_str();
    for advice in
        vitals_core::config::port_advice(index, spec, &vitals_core::config::ephemeral_ports())
    {
        tracing::warn!(process = name, "{advice}");
    }
    let mut machine = Machine::new(Rules::from(spec));
    let candidates: Vec<u16> = spec
        .port
        .map(|p| p.candidates().collect())
        .unwrap_or_default();
    let ranged = matches!(spec.port, Some(Ports::Range { .. }));
    let mut port_at = 0usize;
    let mut moves = 0usize;
    let mut last_report: Option<((bool, String), Instant)> = None;
    let mut publish = |machine: &Machine, force: bool| {
        let now = Instant::now();
        let (up, why) = machine.report(now.into_std());
        let changed = last_report.as_ref().map(|(r, _)| r) != Some(&(up, why.clone()));
        m.update(|v| {
            v.phase = machine.phase();
            v.ready = up;
            v.reason = why.clone();
        });
        if force
            || changed
            || last_report
                .as_ref()
                .is_none_or(|(_, at)| at.elapsed() >= REFRESH)
        {
            if changed {
                if up {
                    tracing::info!(process = name, "ready");
                } else {
                    tracing::info!(process = name, state = machine.phase(), "{why}");
                }
            }
            report(index, up, why.clone());
            last_report = Some(((up, why), now));
        }
    };
    publish(&machine, true);
    'life: loop {
        // A port: the one used last if it is still free, else the next free one of the range.
        let port = if candidates.is_empty() {
            None
        } else {
            match (0..candidates.len())
                .map(|k| (port_at + k) % candidates.len())
                .find(|&i| ports::is_free(candidates[i]))
            {
                Some(i) => {
                    port_at = i;
                    Some(candidates[i])
                }
                None => {
                    let taken = candidates[port_at];
                    let why = if ranged {
                        format!(
                            "every port of {} is in use",
                            spec.port.map(|p| p.to_string()).unwrap_or_default()
                        )
                    } else {
                        format!(
                            "{}; stop that program, or give processes[{index}].port a range such as \"{}-{}\"",
                            ports::holder(taken),
                            taken,
                            taken.saturating_add(99)
                        )
                    };
                    let _ = taken;
                    tracing::error!(process = name, "cannot start: {why}");
                    machine.failed_to_start(Reason::PortInUse(why), Instant::now().into_std());
                    count_restart(&m, &machine);
                    if !backoff(&mut machine, &mut publish, &stop).await {
                        break 'life;
                    }
                    continue 'life;
                }
            }
        };
        let (argv, env) = with_port(spec, port);
        let mut running = match child::spawn(name, &argv, &env) {
            Ok(r) => r,
            Err(e) => {
                let why = format!("{}: {e}", argv.first().map(String::as_str).unwrap_or(""));
                tracing::error!(process = name, "cannot start {why}");
                machine.failed_to_start(Reason::SpawnFailed(why), Instant::now().into_std());
                count_restart(&m, &machine);
                if !backoff(&mut machine, &mut publish, &stop).await {
                    break 'life;
                }
                continue 'life;
            }
        };
        let started = Instant::now();
        machine.started(started.into_std());
        let epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        m.update(|v| {
            v.pid = Some(running.pid);
            v.port = port;
            v.started_at = Some(epoch);
        });
        m.port.send_replace(port);
        tracing::info!(process = name, pid = running.pid, port, "started");
        publish(&machine, false);

        // Watch it until it exits, or until it is stopped.
        let mut next_check = started;
        let mut every = spec.interval.std();
        let first = traffic.as_ref().map(|t| t.sample());
        let mut answered = first.map(|s| s.answered);
        // Timeouts before this life are the last life's.
        let mut timed_out = first.map_or(0, |s| s.timed_out);
        // Made once, not in each turn of the loop: health checks due more often than once a
        // second would otherwise put it off for ever.
        let mut stall_ticks = tokio::time::interval_at(
            Instant::now() + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        stall_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let exit = loop {
            let deadline = [
                Some(next_check),
                machine.next_deadline().map(Instant::from_std),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_check);
            let action = tokio::select! {
                biased;
                () = stop.cancelled() => {
                    let exit = child::stop(name, &mut running, spec.stop_timeout.std()).await;
                    tracing::info!(process = name, "stopped: {exit}");
                    machine.stopped();
                    m.update(|v| v.pid = None);
                    m.ended.send_replace(Some(exit));
                    publish(&machine, true);
                    break 'life;
                }
                exit = child::wait(&mut running) => break exit,
                () = tokio::time::sleep_until(deadline) => {
                    let now = Instant::now();
                    match machine.tick(now.into_std()) {
                        Action::Nothing if now >= next_check => {
                            let starting = matches!(machine.state(), State::Starting { .. });
                            let proven = match (&traffic, answered) {
                                (Some(t), Some(before)) if !starting => {
                                    let s = t.sample();
                                    answered = Some(s.answered);
                                    s.answered > before
                                }
                                _ => false,
                            };
                            let health = if proven {
                                // Real answers since the last check: no need to ask.
                                Health::Ok
                            } else {
                                health::check(&spec.health, port, spec.timeout.std()).await
                            };
                            let action = machine.health(health, Instant::now().into_std());
                            every = if proven {
                                (every * 2).min(spec.interval.std() * MAX_QUIET_FACTOR)
                            } else {
                                spec.interval.std()
                            };
                            next_check = Instant::now()
                                + if matches!(machine.state(), State::Starting { .. }) {
                                    if started.elapsed() < FAST_FOR {
                                        START_CHECK_FAST
                                    } else {
                                        START_CHECK_EVERY.min(spec.interval.std())
                                    }
                                } else {
                                    every
                                };
                            action
                        }
                        other => other,
                    }
                }
                _ = stall_ticks.tick(), if traffic.is_some() => {
                    let s = traffic.as_ref().map(|t| t.sample()).unwrap_or_default();
                    let timed_out_now = s.timed_out > timed_out;
                    timed_out = s.timed_out;
                    // Silence counts where an answer has begun: a stream goes on sending.
                    let answering = s.in_flight > s.awaiting;
                    match s.since_progress {
                        Some(quiet) if answering && quiet >= spec.stall_after.std() => {
                            machine.stalled(Stall::Silent(spec.stall_after.std()))
                        }
                        _ if timed_out_now => machine.stalled(Stall::TimedOut),
                        _ => Action::Nothing,
                    }
                }
            };
            if let Action::Stop(reason) = action {
                tracing::warn!(
                    process = name,
                    pid = running.pid,
                    "stopping to restart it: {reason}"
                );
                publish(&machine, false);
                break child::stop(name, &mut running, spec.stop_timeout.std()).await;
            }
            publish(&machine, false);
        };

        // It ended. Its last lines may still be on their way (they say whether the port was
        // taken): its output closes with it, unless a child it left holds the pipe open.
        let _ = tokio::time::timeout(
            Duration::from_millis(50),
            futures_util::future::join_all(running.forwarders.drain(..)),
        )
        .await;
        let now = Instant::now();
        let starting = matches!(machine.state(), State::Starting { .. });
        let conflict = running
            .port_conflict
            .load(std::sync::atomic::Ordering::Relaxed);
        m.update(|v| v.pid = None);
        match port {
            Some(p) if starting && conflict && ranged && moves < candidates.len() => {
                // Another program took the port between the check and the bind: next port, now.
                moves += 1;
                port_at = (port_at + 1) % candidates.len();
                tracing::warn!(
                    process = name,
                    port = p,
                    "its port was taken as it started; moving to the next port of the range"
                );
                m.update(|v| {
                    v.restarts_by_reason[label_index(&Reason::PortInUse(String::new()))] += 1
                });
                // No backoff for a move: the range is bounded, and the next port is untried.
                continue 'life;
            }
            Some(p) if starting && conflict => {
                let why = format!("port {p} was taken as it started (it said so on its output)");
                machine.failed_to_start(Reason::PortInUse(why), now.into_std());
            }
            _ => machine.exited(exit, now.into_std()),
        }
        moves = 0;
        tracing::warn!(
            process = name,
            "{exit}; {}",
            machine.report(now.into_std()).1
        );
        count_restart(&m, &machine);
        if !backoff(&mut machine, &mut publish, &stop).await {
            break 'life;
        }
    }
}

/// After a failure: counts the restart the machine decided on, waits out its backoff (true) or,
/// if it is down for good, waits for the stop (false).
async fn backoff(
    machine: &mut Machine,
    publish: &mut impl FnMut(&Machine, bool),
    stop: &CancellationToken,
) -> bool {
    publish(machine, true);
    loop {
        match machine.tick(Instant::now().into_std()) {
            Action::Start => return true,
            _ => {
                let until = machine.next_deadline().map(Instant::from_std);
                let refresh = tokio::time::sleep(REFRESH);
                tokio::select! {
                    () = stop.cancelled() => {
                        if !matches!(machine.state(), State::Down { .. }) {
                            machine.stopped();
                        }
                        publish(machine, true);
                        return false;
                    }
                    () = async { match until { Some(u) => tokio::time::sleep_until(u).await, None => std::future::pending().await } } => {}
                    () = refresh => publish(machine, true),
                }
            }
        }
    }
}

fn label_index(reason: &Reason) -> usize {
    Reason::LABELS
        .iter()
        .position(|l| *l == reason.label())
        .unwrap_or(0)
}

/// Counts the restart a failure led to, and records the end of a process that is down for good.
fn count_restart(m: &Managed, machine: &Machine) {
    match machine.state() {
        State::BackingOff { reason, .. } => {
            m.update(|v| v.restarts_by_reason[label_index(reason)] += 1);
        }
        State::Down { reason, .. } => {
            let exit = match reason {
                Reason::Exited(e) => *e,
                _ => Exit::Code(1),
            };
            m.ended.send_replace(Some(exit));
        }
        _ => {}
    }
}
