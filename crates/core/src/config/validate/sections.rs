//! The top-level sections: `[server]` and `[probes]`.

use std::net::SocketAddr;

use super::Errors;
use crate::config::raw::*;
use crate::config::*;

pub(super) fn server(
    e: &mut Errors,
    raw: RawServer,
    env: &dyn Fn(&str) -> Option<String>,
) -> Server {
    let default_listen: SocketAddr = ([0, 0, 0, 0], 8080).into();
    let listen = match raw.listen {
        None => default_listen,
        Some(s) => match s.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                e.push(
                    "server.listen",
                    format!("\"{s}\" is not an address; write ip:port, such as \"0.0.0.0:8080\" or \"[::]:8080\""),
                );
                default_listen
            }
        },
    };
    let admin_token = raw
        .admin_token_env
        .as_deref()
        .and_then(|var| e.env_secret("server.admin_token_env", var, env));
    Server {
        listen,
        admin_token_env: raw.admin_token_env,
        admin_token,
        header_read_timeout: e.positive(
            "server.header_read_timeout",
            raw.header_read_timeout,
            Duration::from_secs(5),
        ),
        max_connections: match raw.max_connections {
            Some(0) => {
                e.push("server.max_connections", "must be at least 1");
                1024
            }
            Some(n) => n,
            None => 1024,
        },
    }
}

pub(super) fn probes(e: &mut Errors, raw: RawProbes, startup_timeout: Duration) -> Probes {
    let liveness = timing(
        e,
        "probes.liveness",
        raw.liveness.unwrap_or_default(),
        (Duration::from_secs(10), Duration::from_secs(2), 3),
        false,
    );
    let readiness = timing(
        e,
        "probes.readiness",
        raw.readiness.unwrap_or_default(),
        (Duration::from_secs(5), Duration::from_secs(2), 2),
        true,
    );
    let raw_startup = raw.startup.unwrap_or_default();
    if raw_startup.failure_threshold.is_some() {
        e.push(
            "probes.startup.failure_threshold",
            "is derived from startup.timeout (ceil(timeout / period)); set startup.timeout instead",
        );
    }
    let mut startup = timing(
        e,
        "probes.startup",
        RawProbeTiming {
            failure_threshold: None,
            ..raw_startup
        },
        (Duration::from_secs(5), Duration::from_secs(2), 1),
        false,
    );
    startup.failure_threshold = startup_failure_threshold(startup_timeout, startup.period);
    Probes {
        liveness,
        readiness,
        startup,
    }
}

/// Enough startup probes to cover the whole budget: `ceil(budget / period)`, at least 1.
pub fn startup_failure_threshold(budget: Duration, period: Duration) -> u32 {
    let period = period.as_nanos().max(1);
    let n = budget.as_nanos().div_ceil(period);
    u32::try_from(n).unwrap_or(u32::MAX).max(1)
}

fn timing(
    e: &mut Errors,
    key: &str,
    raw: RawProbeTiming,
    (period, timeout, failures): (Duration, Duration, u32),
    success_may_vary: bool,
) -> ProbeTiming {
    let period = e.positive(&format!("{key}.period"), raw.period, period);
    let timeout = e.positive(&format!("{key}.timeout"), raw.timeout, timeout.min(period));
    if timeout > period {
        e.push(
            format!("{key}.timeout"),
            format!("{timeout} is longer than period ({period}); make it at most the period"),
        );
    }
    let failure_threshold = e.at_least_one(
        &format!("{key}.failure_threshold"),
        raw.failure_threshold,
        failures,
    );
    let success_threshold = match raw.success_threshold {
        Some(n) if n != 1 && !success_may_vary => {
            e.push(
                format!("{key}.success_threshold"),
                format!("{n} is not allowed: liveness and startup probes must use 1 (Kubernetes refuses anything else)"),
            );
            1
        }
        other => e.at_least_one(&format!("{key}.success_threshold"), other, 1),
    };
    ProbeTiming {
        period,
        timeout,
        failure_threshold,
        success_threshold,
    }
}
