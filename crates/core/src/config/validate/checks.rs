//! Each dependency kind's own keys: http, LLM providers, stores, exec, tcp.

use super::Errors;
use crate::config::raw::*;
use crate::config::*;

pub(super) fn http_check(
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
    let url = url?;
    let ca_file = ca_file(e, &at("ca_file"), &url, d.ca_file.as_ref());
    Some(HttpCheck {
        url,
        method,
        expect_status,
        expect_body: d.expect_body.clone(),
        expect_json,
        headers,
        ca_file,
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

pub(super) fn llm_check(
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
    let base_url = base_url?;
    let ca_file = ca_file(e, &at("ca_file"), &base_url, d.ca_file.as_ref());
    Some(LlmCheck {
        api,
        mode,
        base_url,
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
        ca_file,
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

pub(super) fn redis_check(
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
    let url = url?;
    let ca_file = ca_file(e, &at("ca_file"), &url, d.ca_file.as_ref());
    Some(RedisCheck {
        url,
        password,
        command,
        expect,
        ca_file,
    })
}

pub(super) fn postgres_check(
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

pub(super) fn exec_check(e: &mut Errors, i: usize, d: &RawDependency) -> Option<ExecCheck> {
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

pub(super) fn tcp_check(e: &mut Errors, i: usize, d: &RawDependency) -> Option<TcpCheck> {
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

/// `ca_file`: only with TLS (`https://`, `rediss://`: a plain connection has no certificate to check), and a
/// path (whether the file is there and holds certificates is checked where vitals runs).
pub(super) fn ca_file(
    e: &mut Errors,
    key: &str,
    url: &url::Url,
    path: Option<&std::path::PathBuf>,
) -> Option<std::path::PathBuf> {
    let path = path?;
    let tls = if url.scheme().starts_with("redis") {
        "rediss"
    } else {
        "https"
    };
    if url.scheme() != tls {
        e.push(
            key,
            format!("is used only with TLS; make the URL {tls}://, or remove ca_file"),
        );
        return None;
    }
    if path.as_os_str().is_empty() {
        e.push(
            key,
            "is empty; give the path of a PEM file of the certificate authorities to trust",
        );
        return None;
    }
    Some(path.clone())
}
