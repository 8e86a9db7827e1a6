//! One `[[dependencies]]` entry: its name, kind, timing and the keys its kind takes.

use super::checks::*;
use super::Errors;
use crate::config::names::{invalid_name, valid_name};
use crate::config::raw::*;
use crate::config::*;

/// The shortest interval between two checks of one dependency.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest timeout of one check.
const MIN_TIMEOUT: Duration = Duration::from_millis(10);

/// Keys of `[[dependencies]]` that every kind takes.
const COMMON_KEYS: &[&str] = &[
    "name",
    "kind",
    "critical",
    "interval",
    "timeout",
    "failure_threshold",
    "success_threshold",
    "stale_after",
    "shared",
    "fleet_outage",
];

fn kind_keys(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::OpenAi => &[
            "base_url",
            "model",
            "api_key_env",
            "check",
            "prompt",
            "expect",
            "max_tokens_field",
            "max_latency",
            "api_version",
            "health_path",
            "max_probes_per_hour",
            "ca_file",
        ],
        Kind::Anthropic => &[
            "base_url",
            "model",
            "api_key_env",
            "check",
            "prompt",
            "expect",
            "max_latency",
            "api_version",
            "max_probes_per_hour",
            "ca_file",
        ],
        Kind::Http => &[
            "url",
            "method",
            "expect_status",
            "expect_body",
            "expect_json",
            "headers",
            "headers_env",
            "ca_file",
        ],
        Kind::Tcp => &["address"],
        Kind::Redis => &["url", "password_env", "command", "expect", "ca_file"],
        Kind::Postgres => &["url", "password_env", "query", "expect_rows"],
        Kind::Exec => &["command"],
    }
}

pub(super) fn dependency(
    e: &mut Errors,
    i: usize,
    d: RawDependency,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Dependency> {
    let at = |key: &str| format!("dependencies[{i}].{key}");
    let before = e.0.len();

    let name = match &d.name {
        None => {
            e.push(
                at("name"),
                "is required; give each dependency a unique name such as \"llm\"",
            );
            String::new()
        }
        Some(n) if !valid_name(n) => {
            e.push(at("name"), invalid_name(n));
            n.clone()
        }
        Some(n) => n.clone(),
    };
    let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
    let kind = match d.kind.as_deref() {
        None => {
            e.push(
                at("kind"),
                format!("is required; one of: {}", kinds.join(", ")),
            );
            return None;
        }
        Some(k) => match Kind::parse(k) {
            Some(kind) => kind,
            None => {
                e.push(
                    at("kind"),
                    format!(
                        "\"{k}\" is not a kind{}; one of: {}",
                        crate::config::names::suggest(k, &kinds),
                        kinds.join(", ")
                    ),
                );
                return None;
            }
        },
    };
    for key in &d.present {
        let key = key.as_str();
        if !COMMON_KEYS.contains(&key) && !kind_keys(kind).contains(&key) {
            e.push(
                at(key),
                format!(
                    "is not used by kind \"{kind}\"; remove it (kind \"{kind}\" takes: {})",
                    kind_keys(kind).join(", ")
                ),
            );
        }
    }

    let requested = e.at_least(
        &at("interval"),
        d.interval,
        MIN_INTERVAL,
        "a check more often than every second cannot be seen by a probe any faster, and on an LLM kind each one is a paid call",
        kind.default_interval(),
    );
    // A probe budget stretches the interval so that it can never be overspent.
    let budget_spacing = match d.max_probes_per_hour {
        Some(0) => {
            e.push(
                at("max_probes_per_hour"),
                "must be at least 1; remove it for no budget",
            );
            None
        }
        Some(n) => Some(Duration::from_millis(3_600_000u64.div_ceil(u64::from(n)))),
        None => None,
    };
    let interval = match budget_spacing {
        Some(spacing) if spacing > requested => spacing,
        _ => requested,
    };
    // Without an explicit timeout, stay well inside a short interval.
    let default_timeout = kind
        .default_timeout()
        .min(Duration::from(interval.std() / 2));
    let timeout = e.at_least(
        &at("timeout"),
        d.timeout,
        MIN_TIMEOUT,
        "no dependency answers that fast, so every check would fail",
        default_timeout,
    );
    if timeout >= interval {
        e.push(
            at("timeout"),
            format!("{timeout} must be shorter than interval ({interval}); lower the timeout or raise the interval"),
        );
    }
    let failure_threshold = e.at_least_one(&at("failure_threshold"), d.failure_threshold, 1);
    let success_threshold = e.at_least_one(&at("success_threshold"), d.success_threshold, 1);
    let floor = interval.saturating_add(timeout);
    let stale_after = match d.stale_after {
        Some(s) if s < floor => {
            e.push(
                at("stale_after"),
                format!("{s} is shorter than interval + timeout ({floor}); every result would go stale before the next check, so raise it"),
            );
            s
        }
        Some(s) => s,
        None => interval.saturating_mul(2).saturating_add(timeout),
    };

    let check = match kind {
        Kind::Http => http_check(e, i, &d, env).map(Check::Http),
        Kind::Tcp => tcp_check(e, i, &d).map(Check::Tcp),
        Kind::OpenAi | Kind::Anthropic => llm_check(e, i, kind, &d, env).map(|mut c| {
            if interval > requested {
                c.requested_interval = Some(requested);
            }
            Check::Llm(Box::new(c))
        }),
        Kind::Redis => redis_check(e, i, &d, env).map(Check::Redis),
        Kind::Postgres => postgres_check(e, i, &d, env).map(Check::Postgres),
        Kind::Exec => exec_check(e, i, &d).map(Check::Exec),
    };

    if e.0.len() > before {
        return None;
    }
    let mut dependency = Dependency {
        name,
        kind,
        critical: d.critical.unwrap_or(true),
        interval,
        timeout,
        failure_threshold,
        success_threshold,
        stale_after,
        check: check?,
        shared: false,
        fleet_outage: FleetOutage::NotReady,
    };
    let local = dependency.is_instance_local();
    dependency.shared = match d.shared {
        Some(true) if local => {
            e.push(
                at("shared"),
                "this dependency is this instance's own (loopback, or an exec check): another instance's result says nothing about it; remove shared or set it to false",
            );
            return None;
        }
        Some(shared) => shared,
        None => matches!(kind, Kind::OpenAi | Kind::Anthropic) && !local,
    };
    dependency.fleet_outage = match d.fleet_outage.as_deref() {
        None | Some("not-ready") => FleetOutage::NotReady,
        Some("degraded") if !dependency.shared => {
            e.push(
                at("fleet_outage"),
                "applies to a shared dependency only (the fleet must see the outage); set shared = true, or remove it",
            );
            return None;
        }
        Some("degraded") => FleetOutage::Degraded,
        Some(other) => {
            e.push(
                at("fleet_outage"),
                format!("\"{other}\" is not a choice; use \"not-ready\" or \"degraded\""),
            );
            return None;
        }
    };
    Some(dependency)
}
