//! `[agent]` and `[[signals]]`: what the agent itself reports.

use super::Errors;
use crate::config::names::{invalid_name, suggest, valid_name};
use crate::config::raw::*;
use crate::config::*;

pub(super) fn agent(e: &mut Errors, raw: RawAgent) -> Agent {
    let default = Agent::default();
    let heartbeat = match raw.heartbeat.as_deref() {
        None | Some("off") => HeartbeatMode::Off,
        Some("required") => HeartbeatMode::Required,
        Some(other) => {
            e.push(
                "agent.heartbeat",
                format!(
                    "\"{other}\" is not a heartbeat mode{}; use \"off\" (liveness is vitals' own) or \"required\" (/healthz also needs the agent's POST /heartbeat)",
                    suggest(other, &["off", "required"])
                ),
            );
            default.heartbeat
        }
    };
    let startup = match raw.startup.as_deref() {
        None | Some("dependencies") => StartupMode::Dependencies,
        Some("signal") => StartupMode::Signal,
        Some(other) => {
            e.push(
                "agent.startup",
                format!(
                    "\"{other}\" is not a startup mode{}; use \"dependencies\" (startup.require only) or \"signal\" (also wait for the agent's POST /started)",
                    suggest(other, &["dependencies", "signal"])
                ),
            );
            default.startup
        }
    };
    let stall_after = e.positive("agent.stall_after", raw.stall_after, default.stall_after);
    if raw.stall_after.is_some() && heartbeat == HeartbeatMode::Off {
        e.push(
            "agent.stall_after",
            "has no effect while agent.heartbeat is \"off\"; set agent.heartbeat = \"required\" or remove it",
        );
    }
    Agent {
        heartbeat,
        stall_after,
        startup,
    }
}

pub(super) fn signal(e: &mut Errors, i: usize, raw: RawSignal) -> Option<Signal> {
    let at = |key: &str| format!("signals[{i}].{key}");
    let before = e.0.len();
    let name = match raw.name {
        None => {
            e.push(
                at("name"),
                "is required; give each signal a unique name such as \"web-search\"",
            );
            String::new()
        }
        Some(n) if !valid_name(&n) => {
            e.push(at("name"), invalid_name(&n));
            n
        }
        Some(n) => n,
    };
    let ttl = e.positive(&at("ttl"), raw.ttl, Duration::from_secs(60));
    if e.0.len() > before {
        return None;
    }
    Some(Signal {
        name,
        critical: raw.critical.unwrap_or(false),
        ttl,
    })
}
