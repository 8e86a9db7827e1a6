//! Every provider failure mode against a mock server (mockito), and the requests each mode sends.

use mockito::Matcher;
use vitals_core::config::{from_toml, Check};

use super::*;
use crate::checks::assert_no_part_of;

const KEY: &str = "sk-test-9f8e7d6c5b4a";

fn checker(kind: &str, base_url: &str, extra: &str) -> LlmChecker {
    checker_with_key(kind, base_url, extra, KEY)
}

fn checker_with_key(kind: &str, base_url: &str, extra: &str, key: &str) -> LlmChecker {
    let toml = format!(
        "[[dependencies]]\nname = \"llm\"\nkind = \"{kind}\"\nbase_url = \"{base_url}\"\napi_key_env = \"LLM_KEY\"\n{extra}\n"
    );
    let config = from_toml(&toml, &|k| (k == "LLM_KEY").then(|| key.to_owned()))
        .unwrap_or_else(|e| panic!("{e}"));
    let Check::Llm(c) = &config.dependencies[0].check else {
        panic!("not an llm check")
    };
    LlmChecker::new("llm", c).unwrap()
}

/// One check against the mock `server`'s `/v1`.
async fn check_at(kind: &str, server: &mockito::ServerGuard, extra: &str) -> Report {
    checker(kind, &format!("{}/v1", server.url()), extra)
        .check()
        .await
}

fn reason(r: &Report) -> String {
    match &r.outcome {
        Outcome::Failed { reason } => {
            assert!(!reason.contains(KEY), "the key leaked into {reason:?}");
            reason.clone()
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

async fn openai_answer(
    status: usize,
    content_type: &str,
    body: &str,
) -> (mockito::ServerGuard, mockito::Mock) {
    let mut server = mockito::Server::new_async().await;
    let m = server
        .mock("POST", "/v1/chat/completions")
        .with_status(status)
        .with_header("content-type", content_type)
        .with_body(body)
        .create_async()
        .await;
    (server, m)
}

const COMPLETION: &str = r#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"READY"},"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":1,"total_tokens":15}}"#;

#[tokio::test]
async fn models_lists_the_model_or_says_which_are_listed() {
    let mut server = mockito::Server::new_async().await;
    let m = server
        .mock("GET", "/v1/models")
        .match_header("authorization", format!("Bearer {KEY}").as_str())
        .with_status(200)
        .with_body(r#"{"object":"list","data":[{"id":"tiny"},{"id":"other"}]}"#)
        .expect(2)
        .create_async()
        .await;
    let base = format!("{}/v1", server.url());
    let ok = checker("openai", &base, "model = \"tiny\"").check().await;
    assert_eq!(ok.outcome, Outcome::Success);
    let missing = checker("openai", &base, "model = \"gpt-9\"").check().await;
    assert_eq!(
        reason(&missing),
        "model \"gpt-9\" is not listed by /models (2 listed: tiny, other)"
    );
    m.assert_async().await;
}

#[tokio::test]
async fn completion_asks_for_one_token_and_counts_usage() {
    let mut server = mockito::Server::new_async().await;
    let m = server
        .mock("POST", "/v1/chat/completions")
        .match_header("authorization", format!("Bearer {KEY}").as_str())
        .match_body(Matcher::PartialJson(
            serde_json::json!({"model": "tiny", "max_tokens": 1}),
        ))
        .with_status(200)
        .with_body(COMPLETION)
        .create_async()
        .await;
    let r = check_at(
        "openai",
        &server,
        "model = \"tiny\"\ncheck = \"completion\"",
    )
    .await;
    assert_eq!(r.outcome, Outcome::Success);
    assert_eq!(
        r.usage,
        Some(Usage {
            prompt: 14,
            completion: 1
        })
    );
    m.assert_async().await;
}

#[tokio::test]
async fn max_completion_tokens_is_selectable() {
    let mut server = mockito::Server::new_async().await;
    let m = server
        .mock("POST", "/v1/chat/completions")
        .match_body(Matcher::PartialJson(
            serde_json::json!({"max_completion_tokens": 1}),
        ))
        .with_status(200)
        .with_body(COMPLETION)
        .create_async()
        .await;
    let r = check_at(
        "openai",
        &server,
        "model = \"o-mini\"\ncheck = \"completion\"\nmax_tokens_field = \"max_completion_tokens\"",
    )
    .await;
    assert_eq!(r.outcome, Outcome::Success);
    m.assert_async().await;
}

#[tokio::test]
async fn a_refused_key_names_its_variable_and_never_echoes_it() {
    let (server, _m) = openai_answer(
        401,
        "application/json",
        &format!(r#"{{"error":{{"message":"Incorrect API key provided: {KEY}","type":"invalid_request_error"}}}}"#),
    )
    .await;
    let r = check_at(
        "openai",
        &server,
        "model = \"tiny\"\ncheck = \"completion\"",
    )
    .await;
    assert_eq!(
        reason(&r),
        "HTTP 401: the API key was refused; check the key in LLM_KEY"
    );
}

#[tokio::test]
async fn each_failure_mode_has_its_own_short_reason() {
    let cases: &[(usize, &str, &str, &str)] = &[
        (403, "application/json", r#"{"error":{"message":"forbidden"}}"#, "HTTP 403: the API key was refused; check the key in LLM_KEY"),
        (404, "application/json", r#"{"error":{"message":"The model `tiny` does not exist"}}"#, "HTTP 404: unknown model \"tiny\" or wrong base_url: \"The model `tiny` does not exist\""),
        (503, "application/json", r#"{"error":{"message":"overloaded"}}"#, "HTTP 503: provider error: \"overloaded\""),
        (502, "text/html", "<html><body>Bad gateway</body></html>", "HTTP 502 with an HTML page, not the API's JSON (a proxy, gateway or login page?)"),
        (200, "text/html", "<!DOCTYPE html><html>login</html>", "HTTP 200 with an HTML page, not the API's JSON (a proxy, gateway or login page?)"),
        (200, "application/json", "not json at all", "HTTP 200 but the answer is not valid JSON (expected ident at line 1 column 2)"),
        (200, "application/json", r#"{"choices":[{"message":{"content":"REA"#, "HTTP 200 but the JSON answer is truncated (38 bytes)"),
        (200, "application/json", r#"{"choices":[]}"#, "the answer's \"choices\" list is empty"),
        (200, "application/json", r#"{"object":"error"}"#, "HTTP 200 but the answer has no \"choices\""),
    ];
    for (status, ct, body, want) in cases {
        let (server, _m) = openai_answer(*status, ct, body).await;
        let r = check_at(
            "openai",
            &server,
            "model = \"tiny\"\ncheck = \"completion\"",
        )
        .await;
        assert_eq!(&reason(&r), want, "HTTP {status} {body}");
    }
}

#[tokio::test]
async fn a_rate_limit_with_retry_after_asks_the_poller_to_wait() {
    let mut server = mockito::Server::new_async().await;
    let _m = server
        .mock("POST", "/v1/chat/completions")
        .with_status(429)
        .with_header("retry-after", "7")
        .with_body(r#"{"error":{"message":"Rate limit reached"}}"#)
        .create_async()
        .await;
    let r = check_at(
        "openai",
        &server,
        "model = \"tiny\"\ncheck = \"completion\"",
    )
    .await;
    assert_eq!(
        reason(&r),
        "HTTP 429: rate limited; next probe in 7s (Retry-After): \"Rate limit reached\""
    );
    assert_eq!(r.retry_after, Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn semantic_checks_what_the_answer_says() {
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("READY", "expect = \"READY\"", None),
        ("ready.", "expect = \"/(?i)^ready/\"", None),
        ("Sure! Here is a poem", "expect = \"READY\"", Some("the answer does not match \"READY\": \"Sure! Here is a poem\"")),
        ("", "", Some("the answer is empty")),
        ("I'm sorry, but I can't help with that.", "", Some("the answer is a refusal or an error (starts with \"i'm sorry\"): \"I'm sorry, but I can't help with that.\"")),
        ("<html><body>oops</body></html>", "", Some("the answer is an HTML page, not text")),
    ];
    for (answer, extra, want) in cases {
        let body = serde_json::json!({
            "choices": [{ "message": { "role": "assistant", "content": answer } }],
            "usage": { "prompt_tokens": 20, "completion_tokens": 3 }
        });
        let mut server = mockito::Server::new_async().await;
        let _m = server
            .mock("POST", "/v1/chat/completions")
            .match_body(Matcher::PartialJson(serde_json::json!({
                "messages": [{ "role": "user", "content": "Reply with the single word READY." }],
                "max_tokens": 16
            })))
            .with_status(200)
            .with_body(body.to_string())
            .create_async()
            .await;
        let r = check_at(
            "openai",
            &server,
            &format!("model = \"tiny\"\ncheck = \"semantic\"\n{extra}"),
        )
        .await;
        match want {
            None => assert_eq!(r.outcome, Outcome::Success, "{answer:?}"),
            Some(w) => assert_eq!(&reason(&r), w),
        }
        assert_eq!(
            r.usage,
            Some(Usage {
                prompt: 20,
                completion: 3
            }),
            "usage counts, pass or fail"
        );
    }
}

#[tokio::test]
async fn max_latency_fails_a_slow_answer() {
    let mut server = mockito::Server::new_async().await;
    let _m = server
        .mock("POST", "/v1/chat/completions")
        .with_status(200)
        .with_body_from_request(|_| {
            std::thread::sleep(std::time::Duration::from_millis(120));
            COMPLETION.into()
        })
        .create_async()
        .await;
    let r = check_at(
        "openai",
        &server,
        "model = \"tiny\"\ncheck = \"completion\"\nmax_latency = \"50ms\"",
    )
    .await;
    let why = reason(&r);
    assert!(
        why.starts_with("answered in ") && why.ends_with("ms, over max_latency (50ms)"),
        "{why}"
    );
}

#[tokio::test]
async fn azure_uses_api_key_and_api_version() {
    let mut server = mockito::Server::new_async().await;
    let m = server
        .mock("POST", "/openai/deployments/gpt4o/chat/completions")
        .match_query(Matcher::UrlEncoded(
            "api-version".into(),
            "2024-06-01".into(),
        ))
        .match_header("api-key", KEY)
        .match_header("authorization", Matcher::Missing)
        .with_status(200)
        .with_body(COMPLETION)
        .create_async()
        .await;
    let r = checker(
        "openai",
        &format!("{}/openai/deployments/gpt4o", server.url()),
        "check = \"completion\"\napi_version = \"2024-06-01\"",
    )
    .check()
    .await;
    assert_eq!(r.outcome, Outcome::Success);
    m.assert_async().await;
}

#[tokio::test]
async fn anthropic_speaks_the_messages_api() {
    let mut server = mockito::Server::new_async().await;
    let m = server
        .mock("POST", "/v1/messages")
        .match_header("x-api-key", KEY)
        .match_header("anthropic-version", "2023-06-01")
        .match_body(Matcher::PartialJson(serde_json::json!({"model": "claude-3-5-haiku-latest", "max_tokens": 16})))
        .with_status(200)
        .with_body(r#"{"type":"message","content":[{"type":"text","text":"READY"}],"usage":{"input_tokens":12,"output_tokens":2}}"#)
        .create_async()
        .await;
    let r = check_at(
        "anthropic",
        &server,
        "model = \"claude-3-5-haiku-latest\"\ncheck = \"semantic\"\nexpect = \"READY\"",
    )
    .await;
    assert_eq!(r.outcome, Outcome::Success);
    assert_eq!(
        r.usage,
        Some(Usage {
            prompt: 12,
            completion: 2
        })
    );
    m.assert_async().await;
}

#[tokio::test]
async fn a_loading_llamacpp_server_says_it_is_loading() {
    let mut server = mockito::Server::new_async().await;
    let health = server
        .mock("GET", "/health")
        .with_status(503)
        .with_body(r#"{"error":{"code":503,"message":"Loading model"}}"#)
        .create_async()
        .await;
    let models = server
        .mock("GET", "/v1/models")
        .expect(0)
        .create_async()
        .await;
    let c = checker(
        "openai",
        &format!("{}/v1", server.url()),
        "health_path = \"/health\"",
    );
    assert_eq!(
        reason(&c.check().await),
        "model still loading: /health answered 503"
    );
    health.assert_async().await;
    models.assert_async().await;

    // Loaded: the configured check runs.
    health.remove_async().await;
    let _ok = server
        .mock("GET", "/health")
        .with_status(200)
        .with_body(r#"{"status":"ok"}"#)
        .create_async()
        .await;
    let _models = server
        .mock("GET", "/v1/models")
        .with_status(200)
        .with_body(r#"{"data":[{"id":"m"}]}"#)
        .create_async()
        .await;
    assert_eq!(c.check().await.outcome, Outcome::Success);
}

#[tokio::test]
async fn a_refused_connection_is_said_plainly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let r = checker("openai", &format!("http://{addr}/v1"), "")
        .check()
        .await;
    assert_eq!(reason(&r), "connection refused");
}

#[test]
fn the_key_never_shows_in_debug() {
    let c = checker("openai", "http://127.0.0.1:9/v1", "");
    let debug = format!("{c:?}");
    assert!(!debug.contains(KEY), "{debug}");
}

#[tokio::test]
async fn a_tls_failure_says_tls() {
    // A plain-HTTP server spoken to over https: the handshake fails.
    let server = mockito::Server::new_async().await;
    let base = format!("https://{}/v1", server.host_with_port());
    let r = checker("openai", &base, "").check().await;
    let why = reason(&r);
    assert!(why.starts_with("TLS error: "), "{why}");
}

#[tokio::test]
async fn an_absurd_retry_after_is_capped_not_a_crash() {
    for header in [
        "1e20",
        "1e400",
        "18446744073709551616",
        "inf",
        "NaN",
        "-5",
        "soon",
    ] {
        let mut server = mockito::Server::new_async().await;
        let _m = server
            .mock("POST", "/v1/chat/completions")
            .with_status(429)
            .with_header("retry-after", header)
            .with_body(r#"{"error":{"message":"Rate limit reached"}}"#)
            .create_async()
            .await;
        let r = check_at(
            "openai",
            &server,
            "model = \"tiny\"\ncheck = \"completion\"",
        )
        .await;
        let want = match header {
            // Large but finite: the cap. Infinite (1e400 parses as inf), NaN, negative or not a
            // number: ignored.
            "1e20" | "18446744073709551616" => Some(MAX_RETRY_AFTER),
            _ => None,
        };
        assert_eq!(r.retry_after, want, "Retry-After: {header}");
        assert!(
            reason(&r).starts_with("HTTP 429"),
            "{header}: {}",
            reason(&r)
        );
    }
}

#[tokio::test]
async fn no_part_of_the_key_survives_the_cut_of_a_long_provider_message() {
    // The provider echoes the key at every position around the 80-character cut of the quote.
    for offset in 40..100 {
        let message = format!("{} {KEY} was refused", "a".repeat(offset));
        let body = serde_json::json!({ "error": { "message": message } }).to_string();
        let (server, _m) = openai_answer(500, "application/json", &body).await;
        let r = check_at("openai", &server, "model = \"m\"\ncheck = \"completion\"").await;
        assert_no_part_of(KEY, &reason(&r));
    }
}

#[tokio::test]
async fn a_key_with_quotes_and_backslashes_is_masked_after_escaping() {
    let key = r#"sk-"quoted"\back-0123456789abcdef"#;
    let body = serde_json::json!({ "error": { "message": format!("invalid key {key} given") } })
        .to_string();
    let (server, _m) = openai_answer(500, "application/json", &body).await;
    let base = format!("{}/v1", server.url());
    let r = checker_with_key(
        "openai",
        &base,
        "model = \"m\"\ncheck = \"completion\"",
        key,
    )
    .check()
    .await;
    let Outcome::Failed { reason } = &r.outcome else {
        panic!("{r:?}")
    };
    assert_no_part_of(key, reason);
    assert!(reason.contains("<redacted>"), "{reason}");
}
