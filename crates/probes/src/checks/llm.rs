//! `kind = "openai"` and `kind = "anthropic"`: three depths of LLM check.
//!
//! - `models`: `GET {base_url}/models`. Free; proves reachability, the key, and that `model` is
//!   listed.
//! - `completion`: one chat completion limited to one token. Proves inference capacity.
//! - `semantic`: a validation prompt whose answer must be non-empty, not an error or a refusal,
//!   not HTML, match `expect` when set, and arrive within `max_latency` when set.
//!
//! Every way a provider can fail (bad key, unknown model, rate limit with `Retry-After`, 5xx,
//! HTML error pages, malformed or truncated JSON, no choices) gives a short reason free of the
//! key. Tokens spent are read from the provider's `usage`.

use std::time::Duration;

use tokio::time::Instant;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde_json::{json, Value};
use vitals_core::config::{LlmApi, LlmCheck, LlmMode};
use vitals_core::lifecycle::Outcome;

use super::http::{describe_reqwest_error, read_bounded};
use super::{root_cause, BuildError, Report, Usage};

/// The most of an answer read: a chat completion of a few tokens is far smaller.
const BODY_LIMIT: usize = 256 * 1024;
/// Tokens a semantic answer may use: enough for a word or a short sentence.
const SEMANTIC_MAX_TOKENS: u32 = 16;
/// The longest `Retry-After` honoured: a provider's hint, not a reason to stop probing for a day.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// Openings of answers that are refusals or errors rather than answers.
const REFUSALS: &[&str] = &[
    "i'm sorry",
    "i am sorry",
    "i cannot",
    "i can't",
    "i can not",
    "i am unable",
    "i'm unable",
    "as an ai",
    "error:",
    "error ",
    "internal server error",
    "service unavailable",
    "rate limit",
];

#[derive(Debug)]
pub struct LlmChecker {
    client: reqwest::Client,
    check: LlmCheck,
    headers: HeaderMap,
}

impl LlmChecker {
    pub fn new(name: &str, check: &LlmCheck) -> Result<Self, BuildError> {
        let build = |key: &'static str, reason: String| BuildError {
            name: name.to_owned(),
            key,
            reason,
        };
        let mut headers = HeaderMap::new();
        let azure = check.api == LlmApi::OpenAi && check.api_version.is_some();
        if let Some(key) = &check.api_key {
            let (name, value) = match (check.api, azure) {
                (LlmApi::Anthropic, _) => ("x-api-key", key.expose().to_owned()),
                (LlmApi::OpenAi, true) => ("api-key", key.expose().to_owned()),
                (LlmApi::OpenAi, false) => {
                    (AUTHORIZATION.as_str(), format!("Bearer {}", key.expose()))
                }
            };
            let mut v = HeaderValue::from_str(&value).map_err(|_| {
                build(
                    "api_key_env",
                    format!(
                        "the key in {} has characters a header cannot carry",
                        check.api_key_env.as_deref().unwrap_or("api_key_env")
                    ),
                )
            })?;
            v.set_sensitive(true);
            headers.insert(name, v);
        }
        if check.api == LlmApi::Anthropic {
            let version = check
                .api_version
                .as_deref()
                .unwrap_or(DEFAULT_ANTHROPIC_VERSION);
            headers.insert(
                "anthropic-version",
                HeaderValue::from_str(version).map_err(|_| {
                    build(
                        "api_version",
                        format!("api_version {version:?} is not a header value"),
                    )
                })?,
            );
        }
        // The poller's timeout bounds every check; see the http checker.
        let builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("vitals/", env!("CARGO_PKG_VERSION")));
        let client = super::http::trusting(builder, check.ca_file.as_deref())
            .map_err(|reason| build("ca_file", reason))?
            .build()
            .map_err(|e| build("", root_cause(&e)))?;
        Ok(LlmChecker {
            client,
            check: check.clone(),
            headers,
        })
    }

    pub async fn check(&self) -> Report {
        let mut report = self.run().await;
        if let Outcome::Failed { reason } = &mut report.outcome {
            if let Some(key) = &self.check.api_key {
                *reason = key.scrub(reason);
            }
        }
        report
    }

    /// `{base_url}/{path}`, with Azure's `api-version` when set.
    fn url(&self, path: &str) -> reqwest::Url {
        let mut url = self.check.base_url.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}/{path}"));
        if self.check.api == LlmApi::OpenAi {
            if let Some(v) = &self.check.api_version {
                url.query_pairs_mut().append_pair("api-version", v);
            }
        }
        url
    }

    async fn run(&self) -> Report {
        if let Some(path) = &self.check.health_path {
            if let Some(report) = self.loading(path).await {
                return report;
            }
        }
        match self.check.mode {
            LlmMode::Models => self.models().await,
            LlmMode::Completion | LlmMode::Semantic => self.complete().await,
        }
    }

    /// A local server's loading route (llama.cpp's `/health`): 503 means "still loading", which
    /// is a failure that says so; anything but 2xx is a failure; 2xx goes on to the check.
    async fn loading(&self, path: &str) -> Option<Report> {
        let mut url = self.check.base_url.clone();
        url.set_path(path);
        url.set_query(None);
        let response = match self.client.get(url).send().await {
            Ok(r) => r,
            Err(e) => return Some(Report::failed(describe_reqwest_error(&e))),
        };
        match response.status().as_u16() {
            200..=299 => None,
            503 => Some(Report::failed(format!(
                "model still loading: {path} answered 503"
            ))),
            status => Some(Report::failed(format!(
                "{path} answered HTTP {status}, not 200"
            ))),
        }
    }

    async fn models(&self) -> Report {
        let (status, body, _) = match self.send(self.client.get(self.url("models"))).await {
            Ok(r) => r,
            Err(report) => return report,
        };
        let json = match parse_json(status, &body) {
            Ok(v) => v,
            Err(reason) => return Report::failed(reason),
        };
        let Some(list) = json["data"].as_array() else {
            return Report::failed(format!(
                "HTTP {status} but the answer has no \"data\" list of models"
            ));
        };
        let Some(model) = &self.check.model else {
            return Report::success();
        };
        let ids: Vec<&str> = list.iter().filter_map(|m| m["id"].as_str()).collect();
        if ids.iter().any(|id| id == model) {
            return Report::success();
        }
        let shown: Vec<&str> = ids.iter().take(5).copied().collect();
        Report::failed(format!(
            "model \"{model}\" is not listed by /models ({} listed{}{})",
            ids.len(),
            if shown.is_empty() { "" } else { ": " },
            shown.join(", ") + if ids.len() > 5 { ", …" } else { "" }
        ))
    }

    async fn complete(&self) -> Report {
        let semantic = self.check.mode == LlmMode::Semantic;
        let max_tokens = if semantic { SEMANTIC_MAX_TOKENS } else { 1 };
        let prompt = if semantic {
            self.check.prompt.as_str()
        } else {
            "ping"
        };
        let (path, body) = match self.check.api {
            LlmApi::OpenAi => {
                let mut body = json!({
                    "messages": [{ "role": "user", "content": prompt }],
                    "temperature": 0,
                });
                body[&self.check.max_tokens_field] = json!(max_tokens);
                if let Some(m) = &self.check.model {
                    body["model"] = json!(m);
                }
                ("chat/completions", body)
            }
            LlmApi::Anthropic => (
                "messages",
                json!({
                    "model": self.check.model,
                    "max_tokens": max_tokens,
                    "messages": [{ "role": "user", "content": prompt }],
                }),
            ),
        };
        let started = Instant::now();
        let request = self.client.post(self.url(path)).json(&body);
        let (status, body, _) = match self.send(request).await {
            Ok(r) => r,
            Err(report) => return report,
        };
        let took = started.elapsed();
        let json = match parse_json(status, &body) {
            Ok(v) => v,
            Err(reason) => return Report::failed(reason),
        };
        let usage = usage(self.check.api, &json);
        let answer = match self.check.api {
            LlmApi::OpenAi => match json["choices"].as_array() {
                None => {
                    return Report::failed(format!(
                        "HTTP {status} but the answer has no \"choices\""
                    ))
                    .with_usage(usage)
                }
                Some(c) if c.is_empty() => {
                    return Report::failed("the answer's \"choices\" list is empty")
                        .with_usage(usage)
                }
                Some(c) => c[0]["message"]["content"]
                    .as_str()
                    .or_else(|| c[0]["text"].as_str())
                    .unwrap_or_default()
                    .to_owned(),
            },
            LlmApi::Anthropic => match json["content"].as_array() {
                None => {
                    return Report::failed(format!(
                        "HTTP {status} but the answer has no \"content\""
                    ))
                    .with_usage(usage)
                }
                Some(parts) => parts
                    .iter()
                    .filter_map(|p| p["text"].as_str())
                    .collect::<Vec<_>>()
                    .join(""),
            },
        };
        if let Some(max) = self.check.max_latency {
            if took > max.std() {
                return Report::failed(format!(
                    "answered in {} ms, over max_latency ({max})",
                    took.as_millis()
                ))
                .with_usage(usage);
            }
        }
        if semantic {
            if let Some(reason) = self.judge(&answer) {
                return Report::failed(reason).with_usage(usage);
            }
        }
        Report::success().with_usage(usage)
    }

    /// Why a semantic answer is not acceptable, or `None`.
    fn judge(&self, answer: &str) -> Option<String> {
        let text = answer.trim();
        if text.is_empty() {
            return Some("the answer is empty".into());
        }
        let lower = text.to_lowercase();
        if lower.starts_with("<!doctype") || lower.starts_with("<html") {
            return Some("the answer is an HTML page, not text".into());
        }
        if let Some(r) = REFUSALS.iter().find(|r| lower.starts_with(*r)) {
            return Some(format!(
                "the answer is a refusal or an error (starts with {r:?}): {}",
                quote(text, self.check.api_key.as_ref())
            ));
        }
        match &self.check.expect {
            Some(expect) if !expect.matches(text) => Some(format!(
                "the answer does not match {expect}: {}",
                quote(text, self.check.api_key.as_ref())
            )),
            _ => None,
        }
    }

    /// Sends `request`; a transport failure or a non-2xx status becomes the failing report.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Vec<u8>, HeaderMap), Report> {
        let response = request
            .headers(self.headers.clone())
            .send()
            .await
            .map_err(|e| Report::failed(describe_reqwest_error(&e)))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let html = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("html"));
        let body = read_bounded(response, BODY_LIMIT).await.map_err(|e| {
            Report::failed(format!(
                "HTTP {status} but reading the answer failed: {}",
                describe_reqwest_error(&e)
            ))
        })?;
        if (200..300).contains(&status) {
            return Ok((status, body, headers));
        }
        Err(self.status_failure(status, &headers, &body, html))
    }

    fn status_failure(&self, status: u16, headers: &HeaderMap, body: &[u8], html: bool) -> Report {
        if html || looks_like_html(body) {
            return Report::failed(format!(
                "HTTP {status} with an HTML page, not the API's JSON (a proxy, gateway or login page?)"
            ));
        }
        let detail = provider_message(body)
            .map(|m| format!(": {}", quote(&m, self.check.api_key.as_ref())))
            .unwrap_or_default();
        let key_var = self.check.api_key_env.as_deref().unwrap_or("api_key_env");
        match status {
            401 | 403 => Report::failed(format!(
                "HTTP {status}: the API key was refused; check the key in {key_var}"
            )),
            404 => Report::failed(format!(
                "HTTP 404: unknown model{} or wrong base_url{detail}",
                self.check
                    .model
                    .as_deref()
                    .map(|m| format!(" \"{m}\""))
                    .unwrap_or_default()
            )),
            429 => {
                let retry = retry_after(headers);
                let reason = match retry {
                    Some(d) => format!(
                        "HTTP 429: rate limited; next probe in {}s (Retry-After){detail}",
                        d.as_secs()
                    ),
                    None => format!("HTTP 429: rate limited{detail}"),
                };
                Report {
                    retry_after: retry,
                    ..Report::failed(reason)
                }
            }
            500..=599 => Report::failed(format!("HTTP {status}: provider error{detail}")),
            _ => Report::failed(format!("HTTP {status}{detail}")),
        }
    }
}

fn looks_like_html(body: &[u8]) -> bool {
    let start: String = String::from_utf8_lossy(&body[..body.len().min(64)])
        .trim_start()
        .to_lowercase();
    start.starts_with("<!doctype") || start.starts_with("<html")
}

fn parse_json(status: u16, body: &[u8]) -> Result<Value, String> {
    if looks_like_html(body) {
        return Err(format!(
            "HTTP {status} with an HTML page, not the API's JSON (a proxy, gateway or login page?)"
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        if e.is_eof() {
            format!(
                "HTTP {status} but the JSON answer is truncated ({} bytes)",
                body.len()
            )
        } else {
            format!("HTTP {status} but the answer is not valid JSON ({e})")
        }
    })
}

/// The provider's own error message, when the body has one (`{"error": {"message": ...}}`).
fn provider_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v["error"]["message"]
        .as_str()
        .or_else(|| v["error"].as_str())
        .or_else(|| v["message"].as_str())
        .map(str::to_owned)
}

/// `Retry-After` in seconds (the form providers use), capped.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: f64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // Convert only what fits: `from_secs_f64` panics past u64::MAX seconds, and a provider (or a
    // proxy) decides what this header says.
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(Duration::try_from_secs_f64(secs).map_or(MAX_RETRY_AFTER, |d| d.min(MAX_RETRY_AFTER)))
}

fn usage(api: LlmApi, json: &Value) -> Option<Usage> {
    let u = &json["usage"];
    let (p, c) = match api {
        LlmApi::OpenAi => (&u["prompt_tokens"], &u["completion_tokens"]),
        LlmApi::Anthropic => (&u["input_tokens"], &u["output_tokens"]),
    };
    Some(Usage {
        prompt: p.as_u64()?,
        completion: c.as_u64().unwrap_or(0),
    })
}

/// The first 80 characters of `text`, quoted, on one line, with `key` scrubbed before the cut
/// (after it, a key that straddles the cut would be only partly masked).
fn quote(text: &str, key: Option<&vitals_core::Secret>) -> String {
    let scrubbed;
    let text = match key {
        Some(k) => {
            scrubbed = k.scrub(text);
            scrubbed.as_str()
        }
        None => text,
    };
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut s: String = one_line.chars().take(80).collect();
    if one_line.chars().count() > 80 {
        s.push('…');
    }
    format!("{s:?}")
}

#[cfg(test)]
#[path = "llm_tests.rs"]
mod tests;
