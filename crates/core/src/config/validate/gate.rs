//! `[gate]`: the reverse proxy in front of the inference server.

use std::net::SocketAddr;

use super::Errors;
use crate::config::raw::*;
use crate::config::*;

/// The signal the gate's circuit (and a sustained overload) takes in readiness: critical.
pub const GATE_SIGNAL: &str = "gate";
/// The signal a saturated upstream takes in readiness: non-critical (degraded).
pub const GATE_SATURATION_SIGNAL: &str = "gate-saturation";

pub(super) fn gate(e: &mut Errors, raw: RawGate, probe: Option<SocketAddr>) -> Option<Gate> {
    let listen = match raw.listen.as_deref() {
        None => {
            e.push(
                "gate.listen",
                "missing; set the address clients send inference requests to, such as \"0.0.0.0:8081\"",
            );
            None
        }
        Some(s) => match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                e.push(
                    "gate.listen",
                    format!("\"{s}\" is not an address; write ip:port, such as \"0.0.0.0:8081\""),
                );
                None
            }
        },
    };
    if let (Some(listen), Some(probe)) = (listen, probe) {
        super::gate_on_probe(e, super::Probe::listen(probe), listen);
    }
    let upstream = match (raw.upstream.as_deref(), raw.process.as_deref()) {
        (None, None) => {
            e.push(
                "gate.upstream",
                "missing; set the inference server's base URL, such as \"http://127.0.0.1:8000\" or \"https://api.openai.com\", or gate.process to front a [[processes]] entry",
            );
            None
        }
        (Some(_), Some(_)) => {
            e.push(
                "gate.process",
                "gate.upstream is set too: the gate fronts either a URL or a supervised process; remove one of them",
            );
            None
        }
        // The port is the process's, filled in when it starts (validate checks the name).
        (None, Some(_)) => url::Url::parse("http://127.0.0.1/").ok(),
        (Some(s), None) => upstream(e, s, listen),
    };
    let max_concurrent = match raw.max_concurrent {
        None => {
            e.push(
                "gate.max_concurrent",
                "missing; set it to the upstream's slot count (llama.cpp's --parallel, vLLM's max_num_seqs) or to \"auto\" to read it from llama.cpp's /props",
            );
            None
        }
        Some(RawGateLimit::Number(n)) if n < 1 => {
            e.push(
                "gate.max_concurrent",
                "must be at least 1: with 0 the gate would shed every request",
            );
            None
        }
        Some(RawGateLimit::Number(n)) => match u32::try_from(n) {
            Ok(n) => Some(GateLimit::Fixed(n)),
            Err(_) => {
                e.push(
                    "gate.max_concurrent",
                    format!(
                        "{n} is more than a limit can be (at most {}); set it to the upstream's slot count",
                        u32::MAX
                    ),
                );
                None
            }
        },
        Some(RawGateLimit::Other(_)) => {
            e.push(
                "gate.max_concurrent",
                "write a number of requests (such as 4) or \"auto\"",
            );
            None
        }
        Some(RawGateLimit::Word(w)) if w == "auto" => Some(GateLimit::Auto),
        Some(RawGateLimit::Word(w)) => {
            e.push(
                "gate.max_concurrent",
                format!(
                    "\"{w}\" is not a limit; write a number of requests (such as 4) or \"auto\""
                ),
            );
            None
        }
    };
    let queue_timeout = e.positive(
        "gate.queue_timeout",
        raw.queue_timeout,
        Duration::from_secs(10),
    );
    let request_timeout = e.positive(
        "gate.request_timeout",
        raw.request_timeout,
        Duration::from_secs(60),
    );
    if queue_timeout >= request_timeout {
        e.push(
            "gate.queue_timeout",
            format!("{queue_timeout} is not shorter than gate.request_timeout ({request_timeout}): a request would wait in the queue longer than the upstream may take to begin answering; lower queue_timeout (or raise request_timeout)"),
        );
    }
    let max_body = match raw.max_body {
        Some(0) => {
            e.push("gate.max_body", "must be at least 1 byte");
            0
        }
        Some(n) => n,
        None => 4 * 1024 * 1024,
    };
    let max_buffered = match raw.max_buffered {
        Some(n) if n < max_body => {
            e.push(
                "gate.max_buffered",
                format!("{n} is less than gate.max_body ({max_body}): a request with a body at that limit could never be taken in; raise max_buffered (or lower max_body)"),
            );
            n
        }
        Some(n) => n,
        // Room for a few bodies at the limit, and for many of an ordinary size.
        None => (64 * 1024 * 1024).max(max_body.saturating_mul(4)),
    };
    let rb = raw.breaker.unwrap_or_default();
    let failure_threshold =
        e.at_least_one("gate.breaker.failure_threshold", rb.failure_threshold, 5);
    let open_for = e.positive("gate.breaker.open_for", rb.open_for, Duration::from_secs(1));
    let max_open_for = e.positive(
        "gate.breaker.max_open_for",
        rb.max_open_for,
        Duration::from_secs(60).max(open_for),
    );
    if max_open_for < open_for {
        e.push(
            "gate.breaker.max_open_for",
            format!("{max_open_for} is shorter than gate.breaker.open_for ({open_for}); raise it to at least {open_for}"),
        );
    }
    let ra = raw.adaptive.unwrap_or_default();
    let adaptive_min = match raw.limit.as_deref() {
        None | Some("fixed") => {
            if ra.min_limit.is_some() {
                e.push(
                    "gate.adaptive.min_limit",
                    "is read only with gate.limit = \"adaptive\"; set that, or remove [gate.adaptive]",
                );
            }
            None
        }
        Some("adaptive") => {
            let min = ra.min_limit.unwrap_or(1);
            if min == 0 {
                e.push("gate.adaptive.min_limit", "must be at least 1");
            }
            if let Some(GateLimit::Fixed(max)) = max_concurrent {
                if min > max {
                    e.push(
                        "gate.adaptive.min_limit",
                        format!("{min} is above gate.max_concurrent ({max}), the adaptive limit's ceiling; lower it"),
                    );
                }
            }
            Some(min.max(1))
        }
        Some(other) => {
            e.push(
                "gate.limit",
                format!("\"{other}\" is not a limit mode; use \"fixed\" (max_concurrent it is) or \"adaptive\" (up to max_concurrent)"),
            );
            None
        }
    };
    let queue_depth = raw.queue_depth.unwrap_or(8);
    let rs = raw.saturation.unwrap_or_default();
    let high_water = rs.high_water.unwrap_or(queue_depth.div_ceil(2));
    if queue_depth > 0 && high_water > queue_depth {
        e.push(
            "gate.saturation.high_water",
            format!("{high_water} is above gate.queue_depth ({queue_depth}): the queue never holds that many; lower it to {queue_depth} or less"),
        );
    }
    let ttfb_factor = match rs.ttfb_factor {
        Some(f) if !(f > 1.0 && f.is_finite()) => {
            e.push(
                "gate.saturation.ttfb_factor",
                format!("{f} must be a number above 1 (such as 3: three times the usual time to first byte)"),
            );
            3.0
        }
        Some(f) => f,
        None => 3.0,
    };
    let saturation = GateSaturation {
        high_water,
        degrade_after: e.positive(
            "gate.saturation.degrade_after",
            rs.degrade_after,
            Duration::from_secs(10),
        ),
        recover_after: e.positive(
            "gate.saturation.recover_after",
            rs.recover_after,
            Duration::from_secs(30),
        ),
        full_for: e.positive(
            "gate.saturation.full_for",
            rs.full_for,
            Duration::from_secs(30),
        ),
        ttfb_factor,
    };
    let rr = raw.retry.unwrap_or_default();
    let share = |e: &mut Errors, key: &str, v: Option<f64>, default: f64, max: f64| match v {
        Some(x) if !(0.0..=max).contains(&x) || !x.is_finite() => {
            e.push(key, format!("{x} must be between 0 and {max}"));
            default
        }
        Some(x) => x,
        None => default,
    };
    let retry_base = e.positive("gate.retry.base", rr.base, Duration::from_millis(100));
    let retry_cap = e.positive(
        "gate.retry.cap",
        rr.cap,
        Duration::from_secs(2).max(retry_base),
    );
    if retry_cap < retry_base {
        e.push(
            "gate.retry.cap",
            format!("{retry_cap} is shorter than gate.retry.base ({retry_base}); raise it to at least {retry_base}"),
        );
    }
    let retry = GateRetry {
        attempts: match rr.attempts {
            Some(n) if n > 10 => {
                e.push(
                    "gate.retry.attempts",
                    format!("{n} retries of one request is a storm; use 10 or fewer (2 is usual)"),
                );
                2
            }
            Some(n) => n,
            None => 2,
        },
        base: retry_base,
        cap: retry_cap,
        budget: share(e, "gate.retry.budget", rr.budget, 0.2, 1.0),
        budget_min_per_sec: share(
            e,
            "gate.retry.budget_min_per_sec",
            rr.budget_min_per_sec,
            1.0,
            1000.0,
        ),
    };
    let upstream = upstream?;
    let ca_file = if raw.process.is_some() && raw.ca_file.is_some() {
        e.push(
            "gate.ca_file",
            "gate.process is reached over plain HTTP on loopback; remove ca_file",
        );
        None
    } else {
        super::checks::ca_file(e, "gate.ca_file", &upstream, raw.ca_file.as_ref())
    };
    Some(Gate {
        listen: listen?,
        upstream,
        process: raw.process,
        max_concurrent: max_concurrent?,
        adaptive_min,
        queue_depth,
        queue_timeout,
        request_timeout,
        max_body,
        max_buffered,
        ca_file,
        breaker: GateBreaker {
            failure_threshold,
            open_for,
            max_open_for,
        },
        saturation,
        retry,
    })
}

fn upstream(e: &mut Errors, s: &str, listen: Option<SocketAddr>) -> Option<url::Url> {
    let url = match url::Url::parse(s) {
        Ok(u) => u,
        Err(err) => {
            e.push(
                "gate.upstream",
                format!(
                    "\"{s}\" is not a URL ({err}); write one such as \"http://127.0.0.1:8000\""
                ),
            );
            return None;
        }
    };
    if !matches!(url.scheme(), "http" | "https") {
        e.push(
            "gate.upstream",
            format!("the scheme \"{}\" is not http or https", url.scheme()),
        );
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Never echo the URL: it holds a secret.
        e.push(
            "gate.upstream",
            "holds credentials (user:password@); remove them: clients' own Authorization headers pass through the gate",
        );
        return None;
    }
    if url.query().is_some() || url.fragment().is_some() {
        e.push(
            "gate.upstream",
            "has a query or fragment; give the base URL alone: each request's own path and query are appended to it",
        );
        return None;
    }
    let loops = listen.is_some_and(|l| {
        url.host_str()
            .zip(url.port_or_known_default())
            .is_some_and(|(host, port)| reaches(l, host, port))
    });
    if loops {
        e.push(
            "gate.upstream",
            "points at the gate's own address (gate.listen): every request would loop back into the gate; point it at the inference server",
        );
        return None;
    }
    Some(url)
}
