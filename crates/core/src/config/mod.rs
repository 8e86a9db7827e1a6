//! The `health.toml` model: raw serde structs in, a validated [`Config`] out.
//!
//! [`load`] reads a [`figment::Figment`] (the binary builds it from the file and `VITALS_*`
//! variables), reports every problem at once, each under its key path with a fix, and yields a
//! [`Config`] whose invariants the rest of vitals relies on: unique names, timeouts shorter than
//! intervals, secrets resolved from the environment.

mod load;
mod names;
pub mod raw;
mod validate;

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::{Duration, Secret};

pub use load::{from_toml, from_toml_for, load, load_for};
pub use names::{invalid_name, valid_name};
pub use validate::{
    check_probe_address, check_programs, program_problem, startup_failure_threshold, validate,
    Routes, GATE_SATURATION_SIGNAL, GATE_SIGNAL, PORT_PLACEHOLDER,
};

/// One problem in the configuration, under the key that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path, such as `dependencies[2].timeout`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Every problem found, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} configuration problem{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub startup: Startup,
    pub liveness: Liveness,
    pub readiness: Readiness,
    pub drain: Drain,
    pub probes: Probes,
    pub agent: Agent,
    pub dependencies: Vec<Dependency>,
    /// Capabilities the agent reports (`[[signals]]`).
    pub signals: Vec<Signal>,
    /// `[gate]`: backpressure in front of the inference server.
    pub gate: Option<Gate>,
    /// `[[processes]]`: programs vitals supervises.
    pub processes: Vec<Process>,
    /// `[fleet]`: shared checks through Redis.
    pub fleet: Option<Fleet>,
}

/// `[fleet]`, checked.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// `redis://` or `rediss://`, without a password (validation refuses one in the URL).
    pub redis_url: url::Url,
    pub password_env: Option<String>,
    pub password: Option<Secret>,
    /// With `rediss://`: the certificate authorities to trust instead of the bundled roots.
    pub ca_file: Option<std::path::PathBuf>,
    pub key_prefix: String,
    /// Whether the configuration set `key_prefix` (else it is [`DEFAULT_KEY_PREFIX`], and a
    /// render gives each service its own).
    pub key_prefix_set: bool,
}

/// `fleet.key_prefix` when nothing sets it; renders set `vitals:NAME` instead (through
/// [`FLEET_KEY_PREFIX_ENV`]), so two services sharing a Redis never share results or budgets.
pub const DEFAULT_KEY_PREFIX: &str = "vitals";

/// The variable that sets `fleet.key_prefix` (the `VITALS_<SECTION>__<KEY>` form).
pub const FLEET_KEY_PREFIX_ENV: &str = "VITALS_FLEET__KEY_PREFIX";

/// The name of the process `vitals serve -- CMD` runs (entrypoint mode); no `[[processes]]`
/// entry may take it.
pub const AGENT_PROCESS: &str = "agent";

/// One `[[processes]]` entry, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    pub name: String,
    /// The program and its arguments; `{port}` still in place.
    pub command: Vec<String>,
    /// Added to the inherited environment; `{port}` still in place.
    pub env: Vec<(String, String)>,
    pub port: Option<Ports>,
    pub health: ProcessHealth,
    pub interval: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub start_timeout: Duration,
    pub stop_timeout: Duration,
    pub restart: RestartPolicy,
    pub critical: bool,
    pub backoff: Backoff,
    pub give_up_after: Option<u32>,
    pub stall_after: Duration,
}

impl Process {
    /// The `agent` process of entrypoint mode: `command` run as it is, healthy while alive,
    /// never restarted (its exit ends vitals with its status).
    pub fn entrypoint(command: Vec<String>) -> Process {
        Process {
            name: AGENT_PROCESS.to_owned(),
            command,
            env: Vec::new(),
            port: None,
            health: ProcessHealth::None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            failure_threshold: 3,
            start_timeout: Duration::from_secs(120),
            stop_timeout: Duration::from_secs(10),
            restart: RestartPolicy::Never,
            critical: true,
            backoff: Backoff::default(),
            give_up_after: None,
            stall_after: Duration::from_secs(60),
        }
    }
}

/// `processes[].port`: one port, or an inclusive range to choose from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    Fixed(u16),
    Range { first: u16, last: u16 },
}

impl Ports {
    /// The ports to try, in order.
    pub fn candidates(self) -> std::ops::RangeInclusive<u16> {
        match self {
            Ports::Fixed(p) => p..=p,
            Ports::Range { first, last } => first..=last,
        }
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ports::Fixed(p) => write!(f, "{p}"),
            Ports::Range { first, last } => write!(f, "{first}-{last}"),
        }
    }
}

/// Linux's ephemeral port range (`net.ipv4.ip_local_port_range`) where none can be read.
pub const LINUX_EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 32768..=60999;

/// The ports from which outgoing connections take their local port here:
/// `/proc/sys/net/ipv4/ip_local_port_range`, which a container reads for its own network
/// namespace (a pod's), or [`LINUX_EPHEMERAL_PORTS`] where it cannot be read.
pub fn ephemeral_ports() -> std::ops::RangeInclusive<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| parse_port_range(&s))
        .unwrap_or(LINUX_EPHEMERAL_PORTS)
}

/// `ip_local_port_range`'s two numbers.
fn parse_port_range(s: &str) -> Option<std::ops::RangeInclusive<u16>> {
    let mut it = s.split_whitespace().map(|n| n.parse::<u16>().ok());
    let (low, high) = (it.next()??, it.next()??);
    (low <= high).then_some(low..=high)
}

/// What loads and runs but may not do what its author expects, each naming its key and the
/// fix: `validate` prints these as notes, and a supervised process's start logs its own.
///
/// A fixed process port in the ephemeral range (`ephemeral`, see [`ephemeral_ports`]): every
/// outgoing connection in the network namespace (the agent's, vitals' checks', the process's
/// own) takes its local port from that range and holds it for up to a minute after it closes
/// (TIME_WAIT), so when the process restarts, its port may be taken and it cannot start on it.
/// A range is not advised against: the process moves to the next free port of it.
///
/// A critical signal: down, it takes the instance out of traffic, and a report that comes only
/// when the capability is used then never comes, so its silence keeps it down for good.
pub fn advice(config: &Config, ephemeral: &std::ops::RangeInclusive<u16>) -> Vec<String> {
    let ports = config
        .processes
        .iter()
        .enumerate()
        .flat_map(|(index, p)| port_advice(index, p, ephemeral));
    let signals = config
        .signals
        .iter()
        .enumerate()
        .filter(|(_, s)| s.critical)
        .map(|(index, s)| {
            format!(
                "signals[{index}] (\"{}\") is critical: once it is down the instance leaves traffic, so a report sent only when the capability is used may never come again, and silence past its ttl ({}) reads as down. Fix: report it from a timer (a check of the agent's own) as well, or make it critical = false (degraded, still in traffic)",
                s.name, s.ttl
            )
        });
    ports.chain(signals).collect()
}

/// [`advice`] on process `index`'s port: a fixed port in the ephemeral range, or one that the
/// process is never told.
pub fn port_advice(
    index: usize,
    process: &Process,
    ephemeral: &std::ops::RangeInclusive<u16>,
) -> Vec<String> {
    let Some(Ports::Fixed(port)) = process.port else {
        return Vec::new();
    };
    let mut advice = Vec::new();
    if ephemeral.contains(&port) {
        advice.push(format!(
            "processes[{index}].port {port} is in the ephemeral port range ({}-{}), from which every outgoing connection takes its local port and holds it up to a minute after it closes: when {} restarts, its port may be taken and it cannot start on it. Fix: a port below {}, or a range such as \"{port}-{}\" (it then moves to a free one, and the gate follows it)",
            ephemeral.start(),
            ephemeral.end(),
            process.name,
            ephemeral.start(),
            port.saturating_add(9)
        ));
    }
    if !mentions_port(process, port) {
        advice.push(format!(
            "processes[{index}].port {port} appears nowhere in its command or env: vitals checks {port} and sends the gate's requests there, so {} must listen there of its own accord (llama-server listens on 8080 unless told otherwise). Fix: pass it, such as \"--port\", \"{{port}}\" (vitals puts the port in its place)",
            process.name
        ));
    }
    advice
}

/// Whether `process`'s command or env holds `{port}` or the number `port` on its own (not
/// inside a longer number).
fn mentions_port(process: &Process, port: u16) -> bool {
    let digits = port.to_string();
    let alone = |text: &str| {
        text.match_indices(&digits).any(|(at, _)| {
            let before = text[..at].chars().next_back();
            let after = text[at + digits.len()..].chars().next();
            !before.is_some_and(|c| c.is_ascii_digit())
                && !after.is_some_and(|c| c.is_ascii_digit())
        })
    };
    process
        .command
        .iter()
        .chain(process.env.iter().map(|(_, v)| v))
        .any(|a| a.contains(PORT_PLACEHOLDER) || alone(a))
}

/// `processes[].health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessHealth {
    /// `GET http://127.0.0.1:{port}{path}`: 2xx healthy, 503 still loading (during start).
    Http { path: String },
    /// A TCP connection to the port.
    Tcp,
    /// Alive is healthy.
    None,
}

/// `processes[].restart`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// After an exit with a status other than 0, a signal, or an unhealthy spell.
    OnFailure,
    /// After any exit.
    Always,
    /// Never: an exited process stays down (and readiness says so).
    Never,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
            RestartPolicy::Never => "never",
        }
    }
}

/// `[processes.backoff]`: `initial` doubling up to `max`, back to `initial` after `reset_after`
/// of health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        }
    }
}

/// `[gate]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    pub listen: std::net::SocketAddr,
    pub upstream: url::Url,
    /// `gate.process`: the `[[processes]]` entry the gate fronts; the upstream's port follows it.
    pub process: Option<String>,
    pub max_concurrent: GateLimit,
    /// `gate.limit = "adaptive"`: the lowest the limit goes (`[gate.adaptive] min_limit`);
    /// `None` for a fixed limit.
    pub adaptive_min: Option<u32>,
    pub queue_depth: u32,
    pub queue_timeout: Duration,
    pub request_timeout: Duration,
    pub max_body: usize,
    /// The most bytes of request bodies held at once, over all requests; at least `max_body`.
    pub max_buffered: usize,
    /// With an `https://` upstream: the certificate authorities to trust instead of the bundled
    /// roots.
    pub ca_file: Option<std::path::PathBuf>,
    pub breaker: GateBreaker,
    pub saturation: GateSaturation,
    pub retry: GateRetry,
}

/// `[gate.retry]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateRetry {
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
    pub budget: f64,
    pub budget_min_per_sec: f64,
}

/// `[gate.saturation]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateSaturation {
    pub high_water: u32,
    pub degrade_after: Duration,
    pub recover_after: Duration,
    pub full_for: Duration,
    pub ttfb_factor: f64,
}

impl Gate {
    /// Whether the upstream is on this instance (loopback): a model server beside the agent,
    /// whose failure a new instance can cure, rather than a hosted API the fleet shares.
    pub fn is_instance_local(&self) -> bool {
        self.upstream.host_str().is_some_and(is_loopback_host)
    }
}

/// `localhost` or a loopback address (`127.0.0.1`, `[::1]`), as a URL or an address writes it.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host_ip(host).is_some_and(|ip| ip.is_loopback())
}

/// Whether connecting to `host`:`port` from this machine reaches a socket listening on `listen`.
/// Only what the names say for certain: a host named other than by a loopback name or the
/// listener's own address is taken to be elsewhere.
pub fn reaches(listen: SocketAddr, host: &str, port: u16) -> bool {
    if port != listen.port() {
        return false;
    }
    let to = if host.eq_ignore_ascii_case("localhost") {
        None
    } else {
        match host_ip(host) {
            Some(ip) => Some(ip),
            None => return false,
        }
    };
    // Connecting to 0.0.0.0 or :: reaches this machine's loopback, as localhost does.
    let local = to.is_none_or(|ip| ip.is_loopback() || ip.is_unspecified());
    match listen.ip() {
        // An IPv6 wildcard takes IPv4 too (Linux's default, net.ipv6.bindv6only = 0).
        IpAddr::V6(ip) if ip.is_unspecified() => local,
        IpAddr::V4(ip) if ip.is_unspecified() => local && to.is_none_or(|ip| ip.is_ipv4()),
        ip if ip.is_loopback() => to.is_none_or(|to| to == ip || to.is_unspecified()),
        ip => to == Some(ip),
    }
}

/// The address a host names literally (brackets around IPv6 allowed), if it is one.
pub fn host_ip(host: &str) -> Option<std::net::IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// `gate.max_concurrent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateLimit {
    Fixed(u32),
    /// Read from the upstream at start (llama.cpp's `/props` `total_slots`).
    Auto,
}

/// `[gate.breaker]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateBreaker {
    pub failure_threshold: u32,
    pub open_for: Duration,
    pub max_open_for: Duration,
}

impl Default for Config {
    /// No dependencies: ready as soon as it starts.
    fn default() -> Self {
        validate(Default::default(), &|_| None, Routes::Elsewhere)
            .expect("the empty configuration is valid")
    }
}

impl Config {
    pub fn dependency(&self, name: &str) -> Option<(usize, &Dependency)> {
        self.dependencies
            .iter()
            .enumerate()
            .find(|(_, d)| d.name == name)
    }
}

/// `[agent]`: the agent's own part in its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agent {
    pub heartbeat: HeartbeatMode,
    /// With a required heartbeat: how old the last beat may be.
    pub stall_after: Duration,
    pub startup: StartupMode,
}

impl Default for Agent {
    fn default() -> Self {
        Agent {
            heartbeat: HeartbeatMode::Off,
            stall_after: Duration::from_secs(30),
            startup: StartupMode::Dependencies,
        }
    }
}

/// Whether liveness needs the agent's `POST /heartbeat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatMode {
    /// Liveness is vitals' own heartbeat only.
    Off,
    /// `/healthz` also fails once the agent's last beat is older than `agent.stall_after`.
    Required,
}

impl HeartbeatMode {
    pub fn as_str(self) -> &'static str {
        match self {
            HeartbeatMode::Off => "off",
            HeartbeatMode::Required => "required",
        }
    }
}

/// What `/startupz` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupMode {
    /// The dependencies in `startup.require`.
    Dependencies,
    /// Those, and the agent's own `POST /started`.
    Signal,
}

impl StartupMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StartupMode::Dependencies => "dependencies",
            StartupMode::Signal => "signal",
        }
    }
}

/// One `[[signals]]` entry: a capability the agent reports from real traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    pub name: String,
    pub critical: bool,
    /// A report older than this counts as down, unless the report carried its own ttl.
    pub ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    /// Environment variable name the admin token came from (kept for messages).
    pub admin_token_env: Option<String>,
    pub admin_token: Option<Secret>,
    pub header_read_timeout: Duration,
    pub max_connections: u32,
}

#[derive(Debug, Clone)]
pub struct Startup {
    pub timeout: Duration,
    /// Names of the dependencies and signals that must be up once before startup passes.
    pub require: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    pub stall_after: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct Readiness {
    pub degraded_status: u16,
}

/// Statuses `/readyz` may answer while degraded: any 2xx, or 429 (Consul's "warning").
pub fn is_valid_degraded_status(code: u16) -> bool {
    (200..300).contains(&code) || code == 429
}

#[derive(Debug, Clone, Copy)]
pub struct Drain {
    pub delay: Duration,
    pub grace: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct Probes {
    pub liveness: ProbeTiming,
    pub readiness: ProbeTiming,
    pub startup: ProbeTiming,
}

/// How an orchestrator should probe one vitals route. Read by the platform adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    OpenAi,
    Anthropic,
    Http,
    Tcp,
    Redis,
    Postgres,
    Exec,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::OpenAi,
        Kind::Anthropic,
        Kind::Http,
        Kind::Tcp,
        Kind::Redis,
        Kind::Postgres,
        Kind::Exec,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::OpenAi => "openai",
            Kind::Anthropic => "anthropic",
            Kind::Http => "http",
            Kind::Tcp => "tcp",
            Kind::Redis => "redis",
            Kind::Postgres => "postgres",
            Kind::Exec => "exec",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Default check interval: LLM calls cost money and are rationed; vector stores are cheap.
    pub fn default_interval(self) -> Duration {
        match self {
            Kind::OpenAi | Kind::Anthropic => Duration::from_secs(30),
            Kind::Redis | Kind::Postgres => Duration::from_secs(15),
            Kind::Http | Kind::Tcp | Kind::Exec => Duration::from_secs(30),
        }
    }

    pub fn default_timeout(self) -> Duration {
        match self {
            Kind::OpenAi | Kind::Anthropic => Duration::from_secs(10),
            Kind::Tcp => Duration::from_secs(2),
            _ => Duration::from_secs(5),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Dependency {
    pub name: String,
    pub kind: Kind,
    pub critical: bool,
    pub interval: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
    /// A result older than this counts as failing.
    pub stale_after: Duration,
    pub check: Check,
    /// With `[fleet]`: checked by one instance per interval, read by the others.
    pub shared: bool,
    /// With `shared`: what an outage the whole fleet sees does to readiness.
    pub fleet_outage: FleetOutage,
}

/// `dependencies[].fleet_outage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FleetOutage {
    /// Not ready, as a local outage (the default).
    #[default]
    NotReady,
    /// Degraded: in traffic, not replaced; a provider outage cannot be fixed by draining.
    Degraded,
}

impl Dependency {
    /// Whether the dependency lives in this instance: on a loopback address (a model server or
    /// tool in the same pod or task) or an `exec` check run in vitals' own container. Its failure
    /// says this instance is broken; a remote dependency's failure is shared by every replica.
    pub fn is_instance_local(&self) -> bool {
        let loopback = |host: Option<&str>| host.is_some_and(is_loopback_host);
        match &self.check {
            Check::Http(c) => loopback(c.url.host_str()),
            Check::Llm(c) => loopback(c.base_url.host_str()),
            Check::Redis(c) => loopback(c.url.host_str()),
            Check::Postgres(c) => loopback(c.url.host_str()),
            Check::Tcp(c) => loopback(c.address.rsplit_once(':').map(|(host, _)| host)),
            Check::Exec(_) => true,
        }
    }

    /// The host and port this dependency's check connects to (none for `exec`).
    pub fn address(&self) -> Option<(&str, u16)> {
        fn of(u: &url::Url) -> Option<(&str, u16)> {
            Some((u.host_str()?, u.port_or_known_default()?))
        }
        match &self.check {
            Check::Http(c) => of(&c.url),
            Check::Llm(c) => of(&c.base_url),
            Check::Redis(c) => of(&c.url),
            Check::Postgres(c) => of(&c.url),
            Check::Tcp(c) => c
                .address
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host, port.parse().ok()?))),
            Check::Exec(_) => None,
        }
    }

    /// The port this dependency reaches on loopback, if it reaches one.
    pub fn loopback_port(&self) -> Option<u16> {
        self.address()
            .filter(|(host, _)| is_loopback_host(host))
            .map(|(_, port)| port)
    }
}

/// What to do to check one dependency.
#[derive(Debug, Clone)]
pub enum Check {
    Http(HttpCheck),
    Tcp(TcpCheck),
    Llm(Box<LlmCheck>),
    Redis(RedisCheck),
    Postgres(PostgresCheck),
    Exec(ExecCheck),
}

/// Which API an LLM check speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmApi {
    /// OpenAI's, or any compatible server's (vLLM, llama.cpp, Ollama, LiteLLM, Azure OpenAI).
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
}

/// How much an LLM check asks of the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmMode {
    /// `GET /models`: free; reachability, the key, and that the model is listed.
    Models,
    /// One chat completion limited to one token: inference capacity.
    Completion,
    /// A validation prompt whose answer is checked.
    Semantic,
}

impl LlmMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LlmMode::Models => "models",
            LlmMode::Completion => "completion",
            LlmMode::Semantic => "semantic",
        }
    }
}

/// What an answer (or a reply) must match: a substring, or a regex written `/.../`.
#[derive(Debug, Clone)]
pub enum Expect {
    Contains(String),
    Regex(regex::Regex),
}

impl Expect {
    pub fn parse(s: &str) -> Result<Expect, String> {
        match s.strip_prefix('/').and_then(|r| r.strip_suffix('/')) {
            Some(re) if !re.is_empty() => regex::Regex::new(re)
                .map(Expect::Regex)
                .map_err(|e| format!("{s:?} is not a valid regex: {e}")),
            _ => Ok(Expect::Contains(s.to_owned())),
        }
    }

    pub fn matches(&self, text: &str) -> bool {
        match self {
            Expect::Contains(s) => text.contains(s.as_str()),
            Expect::Regex(r) => r.is_match(text),
        }
    }

    /// Exact equality for a substring, a match for a regex (Redis replies).
    pub fn matches_exactly(&self, text: &str) -> bool {
        match self {
            Expect::Contains(s) => text == s,
            Expect::Regex(r) => r.is_match(text),
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Contains(s) => write!(f, "{s:?}"),
            Expect::Regex(r) => write!(f, "/{}/", r.as_str()),
        }
    }
}

/// The built-in validation prompt of the semantic check.
pub const DEFAULT_PROMPT: &str = "Reply with the single word READY.";

#[derive(Debug, Clone)]
pub struct LlmCheck {
    pub api: LlmApi,
    pub mode: LlmMode,
    /// Ends before the API's paths: `https://api.openai.com/v1`, `http://127.0.0.1:8000/v1`.
    pub base_url: url::Url,
    pub model: Option<String>,
    pub api_key: Option<Secret>,
    /// The environment variable the key came from, to name in reasons.
    pub api_key_env: Option<String>,
    pub prompt: String,
    pub expect: Option<Expect>,
    /// `max_tokens` or `max_completion_tokens`.
    pub max_tokens_field: String,
    pub max_latency: Option<Duration>,
    /// Azure's `api-version` (OpenAI) or the `anthropic-version` header (Anthropic).
    pub api_version: Option<String>,
    /// A loading-aware health route on the server's root, such as llama.cpp's `/health`.
    pub health_path: Option<String>,
    /// The probe budget, when one is set; the interval already honours it.
    pub max_probes_per_hour: Option<u32>,
    /// The interval the file asked for, when the budget stretched it.
    pub requested_interval: Option<Duration>,
    /// With `https://`: the certificate authorities to trust instead of the bundled roots.
    pub ca_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone)]
pub struct RedisCheck {
    /// `redis://host:port/db` (no password: that comes from `password_env`).
    pub url: url::Url,
    pub password: Option<Secret>,
    /// The command and its arguments.
    pub command: Vec<String>,
    pub expect: Option<Expect>,
    /// With `rediss://`: the certificate authorities to trust instead of the bundled roots.
    pub ca_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone)]
pub struct PostgresCheck {
    /// `postgres://user@host:port/db` (no password: that comes from `password_env`).
    pub url: url::Url,
    pub password: Option<Secret>,
    pub query: String,
    pub expect_rows: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct ExecCheck {
    /// The program and its arguments; run without a shell.
    pub command: Vec<String>,
}

/// `expect_json`: the body's value at `pointer` must equal `equals`, or exist.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectJson {
    pub pointer: String,
    pub equals: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    Get,
    Head,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
        }
    }
}

#[derive(Debug, Clone)]
pub struct HttpCheck {
    pub url: url::Url,
    pub method: HttpMethod,
    /// Empty means any 2xx.
    pub expect_status: Vec<u16>,
    pub expect_body: Option<String>,
    pub expect_json: Option<ExpectJson>,
    pub headers: Vec<(http::HeaderName, HeaderValue)>,
    /// With `https://`: the certificate authorities to trust instead of the bundled roots.
    pub ca_file: Option<std::path::PathBuf>,
}

/// A request header's value: written in the file, or read from the environment and kept secret.
#[derive(Debug, Clone)]
pub enum HeaderValue {
    Plain(String),
    Secret(Secret),
}

#[derive(Debug, Clone)]
pub struct TcpCheck {
    /// `host:port`.
    pub address: String,
}

#[cfg(test)]
mod tests;
