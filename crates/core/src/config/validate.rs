//! Checks a [`RawConfig`] and builds the [`Config`]: pure, every problem reported with its key.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::raw::*;
use super::*;

/// The raw sections, each already read on its own.
#[derive(Debug, Default)]
pub struct RawConfig {
    pub server: RawServer,
    pub startup: RawStartup,
    pub liveness: RawLiveness,
    pub readiness: RawReadiness,
    pub drain: RawDrain,
    pub probes: RawProbes,
    pub dependencies: Vec<RawDependency>,
}

/// Kinds this build can check. The others are named by the configuration model and refused with
/// a clear message until their checker exists.
const SUPPORTED: &[Kind] = &[Kind::Http, Kind::Tcp];

struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::new(key, message));
    }

    /// A duration that must be greater than zero.
    fn positive(&mut self, key: &str, value: Option<Duration>, default: Duration) -> Duration {
        match value {
            Some(d) if d.is_zero() => {
                self.push(key, "must be greater than zero");
                default
            }
            Some(d) => d,
            None => default,
        }
    }

    fn at_least_one(&mut self, key: &str, value: Option<u32>, default: u32) -> u32 {
        match value {
            Some(0) => {
                self.push(key, "must be at least 1");
                default
            }
            Some(n) => n,
            None => default,
        }
    }

    /// Resolves the environment variable that `key` names. A missing one is an error now rather
    /// than a failing check later.
    fn env_secret(
        &mut self,
        key: &str,
        var: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Secret> {
        if var.is_empty() {
            self.push(
                key,
                "names no environment variable; give the variable's name",
            );
            return None;
        }
        match env(var) {
            Some(v) if !v.is_empty() => Some(Secret::new(v)),
            Some(_) => {
                self.push(
                    key,
                    format!("environment variable {var} is empty; set it to the secret's value"),
                );
                None
            }
            None => {
                self.push(
                    key,
                    format!(
                        "environment variable {var} is not set; export it before starting vitals, \
                         or remove this key"
                    ),
                );
                None
            }
        }
    }
}

/// Validates `raw`. `env` resolves the environment variables named by `*_env` keys.
pub fn validate(
    raw: RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut e = Errors(Vec::new());

    let server = server(&mut e, raw.server, env);
    let liveness = Liveness {
        stall_after: e.positive(
            "liveness.stall_after",
            raw.liveness.stall_after,
            Duration::from_secs(10),
        ),
    };
    let readiness = Readiness {
        degraded_status: match raw.readiness.degraded_status {
            Some(code) if !is_valid_degraded_status(code) => {
                e.push(
                    "readiness.degraded_status",
                    format!("{code} is not allowed; use 200 (degraded still serves) or 429 (Consul shows a warning)"),
                );
                200
            }
            Some(code) => code,
            None => 200,
        },
    };
    let drain = Drain {
        // Zero is meaningful here: no delay, or no wait for in-flight work.
        delay: raw.drain.delay.unwrap_or(Duration::from_secs(5)),
        grace: raw.drain.grace.unwrap_or(Duration::from_secs(20)),
    };
    let startup_timeout = e.positive(
        "startup.timeout",
        raw.startup.timeout,
        Duration::from_secs(120),
    );
    let probes = probes(&mut e, raw.probes, startup_timeout);

    // Names are compared as written, so a duplicate is reported even when either entry has
    // other problems.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, d) in raw.dependencies.iter().enumerate() {
        let Some(name) = d.name.as_deref() else {
            continue;
        };
        if let Some(first) = seen.insert(name, i) {
            e.push(
                format!("dependencies[{i}].name"),
                format!(
                    "\"{name}\" is already used by dependencies[{first}]; names must be unique"
                ),
            );
            seen.insert(name, first);
        }
    }
    let dependencies: Vec<Dependency> = raw
        .dependencies
        .into_iter()
        .enumerate()
        .filter_map(|(i, d)| dependency(&mut e, i, d, env))
        .collect();

    let require = match raw.startup.require {
        None => dependencies
            .iter()
            .enumerate()
            .filter(|(_, d)| d.critical)
            .map(|(i, _)| i)
            .collect(),
        Some(names) => {
            let mut require = Vec::new();
            for (j, name) in names.iter().enumerate() {
                match dependencies.iter().position(|d| &d.name == name) {
                    Some(i) if !require.contains(&i) => require.push(i),
                    Some(_) => {}
                    None => {
                        let known: Vec<&str> =
                            dependencies.iter().map(|d| d.name.as_str()).collect();
                        e.push(
                            format!("startup.require[{j}]"),
                            format!(
                                "no dependency is named \"{name}\"{}; known: {}",
                                super::load::suggest(name, &known),
                                if known.is_empty() {
                                    "none".to_owned()
                                } else {
                                    known.join(", ")
                                }
                            ),
                        );
                    }
                }
            }
            require
        }
    };

    if !e.0.is_empty() {
        return Err(ConfigErrors(e.0));
    }
    Ok(Config {
        server,
        startup: Startup {
            timeout: startup_timeout,
            require,
        },
        liveness,
        readiness,
        drain,
        probes,
        dependencies,
    })
}

fn server(e: &mut Errors, raw: RawServer, env: &dyn Fn(&str) -> Option<String>) -> Server {
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

fn probes(e: &mut Errors, raw: RawProbes, startup_timeout: Duration) -> Probes {
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
];

fn kind_keys(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::OpenAi | Kind::Anthropic => &[
            "base_url",
            "model",
            "api_key_env",
            "check",
            "prompt",
            "expect",
        ],
        Kind::Http => &[
            "url",
            "method",
            "expect_status",
            "expect_body",
            "headers",
            "headers_env",
        ],
        Kind::Tcp => &["address"],
        Kind::Redis | Kind::Postgres | Kind::Exec => &[],
    }
}

/// The keys set in `d`, by name.
fn set_keys(d: &RawDependency) -> Vec<&'static str> {
    let fields: [(&'static str, bool); 21] = [
        ("name", d.name.is_some()),
        ("kind", d.kind.is_some()),
        ("critical", d.critical.is_some()),
        ("interval", d.interval.is_some()),
        ("timeout", d.timeout.is_some()),
        ("failure_threshold", d.failure_threshold.is_some()),
        ("success_threshold", d.success_threshold.is_some()),
        ("stale_after", d.stale_after.is_some()),
        ("base_url", d.base_url.is_some()),
        ("model", d.model.is_some()),
        ("api_key_env", d.api_key_env.is_some()),
        ("check", d.check.is_some()),
        ("prompt", d.prompt.is_some()),
        ("expect", d.expect.is_some()),
        ("address", d.address.is_some()),
        ("url", d.url.is_some()),
        ("method", d.method.is_some()),
        ("expect_status", d.expect_status.is_some()),
        ("expect_body", d.expect_body.is_some()),
        ("headers", d.headers.is_some()),
        ("headers_env", d.headers_env.is_some()),
    ];
    fields
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| k)
        .collect()
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
        && name.len() <= 63
}

fn dependency(
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
            e.push(
                at("name"),
                format!("\"{n}\" is not a valid name; use lowercase letters, digits, '-', '_' or '.', starting with a letter or digit, at most 63 characters"),
            );
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
                        super::load::suggest(k, &kinds),
                        kinds.join(", ")
                    ),
                );
                return None;
            }
        },
    };
    if !SUPPORTED.contains(&kind) {
        let supported: Vec<&str> = SUPPORTED.iter().map(|k| k.as_str()).collect();
        e.push(
            at("kind"),
            format!(
                "\"{kind}\" is not supported yet by this version of vitals; supported kinds: {}",
                supported.join(", ")
            ),
        );
        return None;
    }
    for key in set_keys(&d) {
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

    let interval = e.positive(&at("interval"), d.interval, kind.default_interval());
    // Without an explicit timeout, stay well inside a short interval.
    let default_timeout = kind
        .default_timeout()
        .min(Duration::from(interval.std() / 2));
    let timeout = e.positive(&at("timeout"), d.timeout, default_timeout);
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
        _ => None,
    };

    if e.0.len() > before {
        return None;
    }
    Some(Dependency {
        name,
        kind,
        critical: d.critical.unwrap_or(true),
        interval,
        timeout,
        failure_threshold,
        success_threshold,
        stale_after,
        check: check?,
    })
}

fn http_check(
    e: &mut Errors,
    i: usize,
    d: &RawDependency,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<HttpCheck> {
    let at = |key: &str| format!("dependencies[{i}].{key}");
    let url = match d.url.as_deref() {
        None => {
            e.push(at("url"), "is required for kind \"http\"; give the URL to request, such as \"http://127.0.0.1:9000/health\"");
            None
        }
        Some(u) => {
            match url::Url::parse(u) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Some(url),
                Ok(url) => {
                    e.push(at("url"), format!("\"{u}\" must be an http:// or https:// URL with a host (scheme is \"{}\")", url.scheme()));
                    None
                }
                Err(err) => {
                    e.push(at("url"), format!("\"{u}\" is not a URL ({err}); write it like \"http://127.0.0.1:9000/health\""));
                    None
                }
            }
        }
    };
    let method = match d.method.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("GET") => HttpMethod::Get,
        Some("HEAD") => HttpMethod::Head,
        Some(_) => {
            e.push(
                at("method"),
                format!(
                    "\"{}\" is not supported; use \"GET\" or \"HEAD\"",
                    d.method.as_deref().unwrap_or_default()
                ),
            );
            HttpMethod::Get
        }
    };
    let expect_status = d.expect_status.clone().unwrap_or_default();
    for (j, code) in expect_status.iter().enumerate() {
        if !(100..=599).contains(code) {
            e.push(
                format!("dependencies[{i}].expect_status[{j}]"),
                format!("{code} is not an HTTP status; use 100 to 599"),
            );
        }
    }
    if d.expect_status.as_ref().is_some_and(Vec::is_empty) {
        e.push(
            at("expect_status"),
            "is empty; list at least one status, or remove it to accept any 2xx",
        );
    }
    if method == HttpMethod::Head && d.expect_body.is_some() {
        e.push(
            at("expect_body"),
            "cannot be checked with method \"HEAD\" (no body); use \"GET\"",
        );
    }
    let mut headers = Vec::new();
    for (name, value) in d.headers.iter().flatten() {
        match (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(_)) => headers.push((n, HeaderValue::Plain(value.clone()))),
            (Err(_), _) => e.push(
                format!("dependencies[{i}].headers.{name}"),
                "is not a valid header name",
            ),
            (_, Err(_)) => e.push(
                format!("dependencies[{i}].headers.{name}"),
                "has characters a header value cannot carry",
            ),
        }
    }
    for (name, var) in d.headers_env.iter().flatten() {
        let key = format!("dependencies[{i}].headers_env.{name}");
        let Ok(n) = http::HeaderName::from_bytes(name.as_bytes()) else {
            e.push(key, "is not a valid header name");
            continue;
        };
        if let Some(secret) = e.env_secret(&key, var, env) {
            if http::HeaderValue::from_str(secret.expose()).is_err() {
                e.push(
                    key,
                    format!(
                        "environment variable {var} has characters a header value cannot carry"
                    ),
                );
            } else {
                headers.push((n, HeaderValue::Secret(secret)));
            }
        }
    }
    Some(HttpCheck {
        url: url?,
        method,
        expect_status,
        expect_body: d.expect_body.clone(),
        headers,
    })
}

fn tcp_check(e: &mut Errors, i: usize, d: &RawDependency) -> Option<TcpCheck> {
    let key = format!("dependencies[{i}].address");
    let Some(address) = d.address.as_deref() else {
        e.push(
            key,
            "is required for kind \"tcp\"; give host:port, such as \"crm.internal:5432\"",
        );
        return None;
    };
    let port_ok = address
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty())
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .is_some_and(|p| p != 0);
    if !port_ok {
        e.push(key, format!("\"{address}\" is not host:port; write it like \"crm.internal:5432\" or \"[::1]:6379\""));
        return None;
    }
    Some(TcpCheck {
        address: address.to_owned(),
    })
}
