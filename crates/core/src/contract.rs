//! The names vitals promises to users, defined once: route paths and metric names. The server
//! serves these paths and registers these metrics; the adapters render probes, alerts and
//! dashboards from the same constants.

/// The environment variable that carries the whole `health.toml` as text, for platforms that
/// mount no files (ECS, Cloud Run): `vitals serve` reads it when no `--config` is given.
pub const CONFIG_TOML_ENV: &str = "VITALS_CONFIG_TOML";

/// Route paths of the HTTP contract.
pub mod paths {
    /// Liveness: vitals' own heartbeat, and the agent's when `[agent] heartbeat = "required"`.
    pub const HEALTHZ: &str = "/healthz";
    /// Liveness, the other name some platforms use.
    pub const LIVEZ: &str = "/livez";
    /// The agent's heartbeat alone, for a probe on the agent's container.
    pub const HEALTHZ_AGENT: &str = "/healthz/agent";
    /// vitals' own liveness alone (its heartbeat, not drained), for a probe on the vitals
    /// sidecar's container: a hung agent must restart the agent, not vitals.
    pub const HEALTHZ_VITALS: &str = "/healthz/vitals";
    pub const READYZ: &str = "/readyz";
    /// `/readyz/{name}`: one dependency or signal.
    pub const READYZ_PREFIX: &str = "/readyz/";
    pub const STARTUPZ: &str = "/startupz";
    pub const STATUS: &str = "/status";
    pub const METRICS: &str = "/metrics";
    pub const DRAIN: &str = "/drain";
    pub const HEARTBEAT: &str = "/heartbeat";
    pub const STARTED: &str = "/started";
    /// `/signals/{name}`: a capability the agent reports.
    pub const SIGNALS_PREFIX: &str = "/signals/";
}

/// Metric names as scraped (counters with their `_total`).
pub mod metrics {
    pub const LIVE: &str = "vitals_live";
    pub const STARTED: &str = "vitals_started";
    pub const READY: &str = "vitals_ready";
    pub const DEGRADED: &str = "vitals_degraded";
    pub const DRAINING: &str = "vitals_draining";
    pub const AGENT_LIVE: &str = "vitals_agent_live";
    pub const AGENT_HEARTBEAT_AGE: &str = "vitals_agent_heartbeat_age_seconds";
    pub const DEPENDENCY_UP: &str = "vitals_dependency_up";
    pub const CHECK_DURATION: &str = "vitals_dependency_check_duration_seconds";
    pub const CHECKS_TOTAL: &str = "vitals_dependency_checks_total";
    pub const LAST_SUCCESS: &str = "vitals_dependency_last_success_timestamp_seconds";
    pub const LLM_TOKENS_TOTAL: &str = "vitals_llm_probe_tokens_total";
    pub const PROCESS_START: &str = "process_start_time_seconds";
    // `[gate]`'s.
    pub const GATE_REQUESTS_TOTAL: &str = "vitals_gate_requests_total";
    pub const GATE_REQUEST_DURATION: &str = "vitals_gate_request_duration_seconds";
    pub const GATE_TIME_TO_FIRST_BYTE: &str = "vitals_gate_time_to_first_byte_seconds";
    pub const GATE_QUEUE_WAIT: &str = "vitals_gate_queue_wait_seconds";
    pub const GATE_IN_FLIGHT: &str = "vitals_gate_in_flight";
    pub const GATE_QUEUE_DEPTH: &str = "vitals_gate_queue_depth";
    pub const GATE_CONCURRENCY_LIMIT: &str = "vitals_gate_concurrency_limit";
    pub const GATE_CIRCUIT_STATE: &str = "vitals_gate_circuit_state";
    pub const GATE_RETRIES_TOTAL: &str = "vitals_gate_retries_total";
    // `[[processes]]`'.
    pub const PROCESS_UP: &str = "vitals_process_up";
    pub const PROCESS_RESTARTS_TOTAL: &str = "vitals_process_restarts_total";
    pub const PROCESS_START_TIME: &str = "vitals_process_start_time_seconds";
    pub const PROCESS_RESIDENT_MEMORY: &str = "vitals_process_resident_memory_bytes";
    pub const PROCESS_CPU_SECONDS_TOTAL: &str = "vitals_process_cpu_seconds_total";
    /// Per supervised process and GPU, where NVML is present.
    pub const PROCESS_GPU_MEMORY: &str = "vitals_process_gpu_memory_bytes";
    pub const GPU_UTILIZATION: &str = "vitals_gpu_utilization_ratio";
    pub const GPU_MEMORY_USED: &str = "vitals_gpu_memory_used_bytes";
    pub const GPU_MEMORY_TOTAL: &str = "vitals_gpu_memory_total_bytes";
    // `[fleet]`'s.
    pub const FLEET_CHECKS_TOTAL: &str = "vitals_fleet_checks_total";
    pub const FLEET_RESULT_AGE: &str = "vitals_fleet_result_age_seconds";
    pub const FLEET_CONNECTED: &str = "vitals_fleet_connected";
    /// 1 for the place of a shared dependency's failure this instance last took (`scope`:
    /// `fleet-wide`, `this-instance`, `unplaced`); 0 for the others and while it is up.
    pub const FLEET_OUTAGE: &str = "vitals_fleet_outage";

    /// A counter's registered name: prometheus-client appends `_total` itself.
    pub fn counter_base(name: &str) -> &str {
        name.strip_suffix("_total").unwrap_or(name)
    }
}
