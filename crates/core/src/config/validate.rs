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
    let raw_names: Vec<String> = raw
        .dependencies
        .iter()
        .filter_map(|d| d.name.clone())
        .collect();
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
                    // A dependency with problems of its own is left out; its errors say why.
                    None if raw_names.iter().any(|n| n == name) => {}
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
        ],
        Kind::Http => &[
            "url",
            "method",
            "expect_status",
            "expect_body",
            "expect_json",
            "headers",
            "headers_env",
        ],
        Kind::Tcp => &["address"],
        Kind::Redis => &["url", "password_env", "command", "expect"],
        Kind::Postgres => &["url", "password_env", "query", "expect_rows"],
        Kind::Exec => &["command"],
    }
}

/// The keys set in `d`, by name.
fn set_keys(d: &RawDependency) -> Vec<&'static str> {
    let fields: [(&'static str, bool); 31] = [
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
        ("expect_json", d.expect_json.is_some()),
        ("max_tokens_field", d.max_tokens_field.is_some()),
        ("max_latency", d.max_latency.is_some()),
        ("api_version", d.api_version.is_some()),
        ("health_path", d.health_path.is_some()),
        ("max_probes_per_hour", d.max_probes_per_hour.is_some()),
        ("password_env", d.password_env.is_some()),
        ("command", d.command.is_some()),
        ("query", d.query.is_some()),
        ("expect_rows", d.expect_rows.is_some()),
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

    let requested = e.positive(&at("interval"), d.interval, kind.default_interval());
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
    let expect_json = match &d.expect_json {
        None => None,
        Some(j) => {
            match j.pointer.as_deref() {
                Some(p) if p.is_empty() || p.starts_with('/') => Some(ExpectJson {
                    pointer: p.to_owned(),
                    equals: j.equals.clone(),
                }),
                Some(p) => {
                    e.push(
                    at("expect_json.pointer"),
                    format!("\"{p}\" is not a JSON pointer; start it with '/', such as \"/result/id\""),
                );
                    None
                }
                None => {
                    e.push(
                        at("expect_json.pointer"),
                        "is required; give the JSON pointer to read, such as \"/result/id\"",
                    );
                    None
                }
            }
        }
    };
    if method == HttpMethod::Head && d.expect_json.is_some() {
        e.push(
            at("expect_json"),
            "cannot be checked with method \"HEAD\" (no body); use \"GET\"",
        );
    }
    Some(HttpCheck {
        url: url?,
        method,
        expect_status,
        expect_body: d.expect_body.clone(),
        expect_json,
        headers,
    })
}

/// `value` with any `user:password@` masked, for messages.
fn masked(value: &str) -> String {
    match (value.find("://"), value.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => format!("{}***{}", &value[..s + 3], &value[at..]),
        _ => value.to_owned(),
    }
}

/// A URL with one of `schemes` and a host, or an error under `key` with an example.
fn parse_url(
    e: &mut Errors,
    key: &str,
    value: &str,
    schemes: &[&str],
    example: &str,
) -> Option<url::Url> {
    let shown = masked(value);
    match url::Url::parse(value) {
        Ok(url) if schemes.contains(&url.scheme()) && url.has_host() => Some(url),
        Ok(url) => {
            e.push(
                key,
                format!(
                    "\"{shown}\" must be a {} URL with a host (scheme is \"{}\"); write it like \"{example}\"",
                    schemes.join(" or "),
                    url.scheme()
                ),
            );
            None
        }
        Err(err) => {
            e.push(
                key,
                format!("\"{shown}\" is not a URL ({err}); write it like \"{example}\""),
            );
            None
        }
    }
}

fn expect(e: &mut Errors, key: &str, value: Option<&str>) -> Option<Expect> {
    match Expect::parse(value?) {
        Ok(x) => Some(x),
        Err(msg) => {
            e.push(
                key,
                format!("{msg}; fix the pattern, or drop the slashes for a plain substring"),
            );
            None
        }
    }
}

fn llm_check(
    e: &mut Errors,
    i: usize,
    kind: Kind,
    d: &RawDependency,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<LlmCheck> {
    let at = |key: &str| format!("dependencies[{i}].{key}");
    let (api, example) = match kind {
        Kind::Anthropic => (LlmApi::Anthropic, "https://api.anthropic.com/v1"),
        _ => (LlmApi::OpenAi, "https://api.openai.com/v1"),
    };
    let base_url = match d.base_url.as_deref() {
        Some(u) => parse_url(e, &at("base_url"), u, &["http", "https"], example),
        None if api == LlmApi::Anthropic => url::Url::parse(example).ok(),
        None => {
            e.push(
                at("base_url"),
                format!("is required for kind \"openai\"; give the API's base URL, such as \"{example}\" or \"http://127.0.0.1:8000/v1\""),
            );
            None
        }
    };
    let mode = match d.check.as_deref() {
        None | Some("models") => LlmMode::Models,
        Some("completion") => LlmMode::Completion,
        Some("semantic") => LlmMode::Semantic,
        Some(other) => {
            e.push(
                at("check"),
                format!("\"{other}\" is not a check mode; use \"models\" (free), \"completion\" (one token) or \"semantic\" (a validated answer)"),
            );
            LlmMode::Models
        }
    };
    let model = d.model.clone();
    // Azure names the model in the deployment URL; everyone else needs it in the request.
    let azure = api == LlmApi::OpenAi && d.api_version.is_some();
    if model.is_none() && mode != LlmMode::Models && !azure {
        e.push(
            at("model"),
            format!(
                "is required for check = \"{}\"; name the model to call, such as \"gpt-4o-mini\"",
                mode.as_str()
            ),
        );
    }
    if mode != LlmMode::Semantic {
        for key in ["prompt", "expect"] {
            let set = if key == "prompt" {
                d.prompt.is_some()
            } else {
                d.expect.is_some()
            };
            if set {
                e.push(
                    at(key),
                    "is only used by check = \"semantic\"; remove it or set check = \"semantic\"",
                );
            }
        }
    }
    let api_key = d
        .api_key_env
        .as_deref()
        .and_then(|var| e.env_secret(&at("api_key_env"), var, env));
    let max_tokens_field = match d.max_tokens_field.as_deref() {
        None => "max_tokens".to_owned(),
        Some(f @ ("max_tokens" | "max_completion_tokens")) => f.to_owned(),
        Some(other) => {
            e.push(
                at("max_tokens_field"),
                format!(
                    "\"{other}\" is not supported; use \"max_tokens\" or \"max_completion_tokens\""
                ),
            );
            "max_tokens".to_owned()
        }
    };
    let health_path = match d.health_path.as_deref() {
        Some(p) if !p.starts_with('/') => {
            e.push(
                at("health_path"),
                format!("\"{p}\" must be a path starting with '/', such as \"/health\""),
            );
            None
        }
        other => other.map(str::to_owned),
    };
    if let Some(l) = d.max_latency {
        if l.is_zero() {
            e.push(at("max_latency"), "must be greater than zero");
        }
        if mode == LlmMode::Models {
            e.push(
                at("max_latency"),
                "is only used by check = \"completion\" or \"semantic\"",
            );
        }
    }
    let expect = expect(e, &at("expect"), d.expect.as_deref());
    Some(LlmCheck {
        api,
        mode,
        base_url: base_url?,
        model,
        api_key,
        api_key_env: d.api_key_env.clone(),
        prompt: d
            .prompt
            .clone()
            .unwrap_or_else(|| DEFAULT_PROMPT.to_owned()),
        expect,
        max_tokens_field,
        max_latency: d.max_latency,
        api_version: d.api_version.clone(),
        health_path,
        max_probes_per_hour: d.max_probes_per_hour,
        requested_interval: None,
    })
}

/// A URL whose password, if any, must move to `password_env`.
fn store_url(
    e: &mut Errors,
    i: usize,
    d: &RawDependency,
    env: &dyn Fn(&str) -> Option<String>,
    schemes: &[&str],
    example: &str,
) -> (Option<url::Url>, Option<Secret>) {
    let at = |key: &str| format!("dependencies[{i}].{key}");
    let url = match d.url.as_deref() {
        None => {
            e.push(
                at("url"),
                format!("is required; write it like \"{example}\""),
            );
            None
        }
        Some(u) => parse_url(e, &at("url"), u, schemes, example),
    };
    if url.as_ref().is_some_and(|u| u.password().is_some()) {
        e.push(
            at("url"),
            "holds a password; secrets never go in the file: remove it from the URL and name an environment variable in password_env",
        );
    }
    let password = d
        .password_env
        .as_deref()
        .and_then(|var| e.env_secret(&at("password_env"), var, env));
    (url, password)
}

fn redis_check(
    e: &mut Errors,
    i: usize,
    d: &RawDependency,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<RedisCheck> {
    let at = |key: &str| format!("dependencies[{i}].{key}");
    let (url, password) = store_url(
        e,
        i,
        d,
        env,
        &["redis", "rediss"],
        "redis://127.0.0.1:6379/0",
    );
    let command = match &d.command {
        None => vec!["PING".to_owned()],
        Some(StringOrList::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(StringOrList::List(l)) => l.clone(),
    };
    if command.is_empty() {
        e.push(
            at("command"),
            "is empty; give a read command such as \"EXISTS doc:42\"",
        );
    }
    let expect = expect(e, &at("expect"), d.expect.as_deref());
    Some(RedisCheck {
        url: url?,
        password,
        command,
        expect,
    })
}

fn postgres_check(
    e: &mut Errors,
    i: usize,
    d: &RawDependency,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<PostgresCheck> {
    let at = |key: &str| format!("dependencies[{i}].{key}");
    let (url, password) = store_url(
        e,
        i,
        d,
        env,
        &["postgres", "postgresql"],
        "postgres://vitals@127.0.0.1:5432/app",
    );
    let query = match d.query.as_deref().map(str::trim) {
        Some(q) if !q.is_empty() => q.to_owned(),
        Some(_) => {
            e.push(
                at("query"),
                "is empty; give a query, such as \"SELECT 1 FROM items WHERE id = 42\"",
            );
            String::new()
        }
        None => "SELECT 1".to_owned(),
    };
    Some(PostgresCheck {
        url: url?,
        password,
        query,
        expect_rows: d.expect_rows,
    })
}

fn exec_check(e: &mut Errors, i: usize, d: &RawDependency) -> Option<ExecCheck> {
    let key = format!("dependencies[{i}].command");
    match &d.command {
        Some(StringOrList::List(l)) if !l.is_empty() && !l[0].is_empty() => {
            Some(ExecCheck { command: l.clone() })
        }
        Some(StringOrList::String(s)) => {
            e.push(
                key,
                format!(
                    "must be a list (it runs without a shell), such as [\"{}\"]",
                    s.split_whitespace().collect::<Vec<_>>().join("\", \"")
                ),
            );
            None
        }
        _ => {
            e.push(key, "is required for kind \"exec\"; give the program and its arguments as a list, such as [\"/usr/local/bin/check-index\", \"--quick\"]");
            None
        }
    }
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
