use figment::providers::{Format, Toml};
use figment::Figment;

use super::*;

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}

fn parse(toml: &str) -> Result<Config, ConfigErrors> {
    load(
        &Figment::from(Toml::string(toml)),
        &env(&[("TOOL_TOKEN", "s3cret-token-value")]),
    )
}

fn errors(toml: &str) -> Vec<String> {
    parse(toml)
        .unwrap_err()
        .0
        .into_iter()
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn empty_file_gives_documented_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(c.startup.timeout, Duration::from_secs(120));
    assert_eq!(c.liveness.stall_after, Duration::from_secs(10));
    assert_eq!(c.readiness.degraded_status, 200);
    assert_eq!(
        (c.drain.delay, c.drain.grace),
        (Duration::from_secs(5), Duration::from_secs(20))
    );
    assert_eq!(c.probes.liveness.period, Duration::from_secs(10));
    assert_eq!(c.probes.liveness.failure_threshold, 3);
    assert_eq!(c.probes.readiness.timeout, Duration::from_secs(2));
    // 120 s of startup budget at a 5 s period.
    assert_eq!(c.probes.startup.failure_threshold, 24);
    assert!(c.dependencies.is_empty());
}

#[test]
fn full_example_reads() {
    let c = parse(
        r#"
        [server]
        listen = "127.0.0.1:9000"
        [startup]
        timeout = "240s"
        require = ["search-tool"]
        [readiness]
        degraded_status = 429
        [probes]
        startup = { period = "10s", timeout = "2s" }
        [[dependencies]]
        name = "crm"
        kind = "tcp"
        address = "crm.internal:5432"
        critical = false
        [[dependencies]]
        name = "search-tool"
        kind = "http"
        url = "http://127.0.0.1:9000/health"
        method = "head"
        expect_status = [200, 204]
        headers_env = { Authorization = "TOOL_TOKEN" }
        interval = "3s"
        "#,
    )
    .unwrap();
    assert_eq!(c.probes.startup.failure_threshold, 24);
    assert_eq!(c.startup.require, vec![1]);
    let tool = &c.dependencies[1];
    assert!(tool.critical, "critical is the default");
    assert_eq!(
        tool.timeout,
        Duration::from_millis(1500),
        "default timeout stays inside a short interval"
    );
    assert_eq!(tool.stale_after, Duration::from_millis(7500));
    let Check::Http(h) = &tool.check else {
        panic!("http")
    };
    assert_eq!(h.method, HttpMethod::Head);
    assert!(
        matches!(&h.headers[0].1, HeaderValue::Secret(s) if s.expose() == "s3cret-token-value")
    );
    assert!(
        !format!("{c:?}").contains("s3cret"),
        "Debug never shows a secret"
    );
}

#[test]
fn every_problem_is_reported_at_once_with_its_key() {
    let errs = errors(
        r#"
        [server]
        listen = "nowhere"
        lisen = "x"
        [liveness]
        stall_after = 5
        [drain]
        delay = "-3s"
        [probes]
        liveness = { period = "0s", timeout = "1s" }
        [[dependencies]]
        name = "a"
        kind = "http"
        url = "http://x/"
        interval = "5s"
        timeout = "5s"
        failure_threshold = "three"
        [[dependencies]]
        name = "a"
        kind = "tcp"
        address = "nohost"
        url = "http://x/"
        [[dependencies]]
        name = "b"
        kind = "http"
        headers_env = { Authorization = "MISSING_VAR" }
        url = "ftp://x/"
        "#,
    );
    let expect = [
        "server.lisen: unknown key (did you mean \"listen\"?)",
        "liveness.stall_after: 5 has no unit",
        "drain.delay: \"-3s\" is negative",
        "dependencies[0].failure_threshold: expected u32",
        "server.listen: \"nowhere\" is not an address",
        "probes.liveness.period: must be greater than zero",
        "dependencies[0].timeout: 5s must be shorter than interval (5s)",
        "dependencies[1].url: is not used by kind \"tcp\"",
        "dependencies[1].address: \"nohost\" is not host:port",
        "dependencies[2].url: \"ftp://x/\" must be an http:// or https:// URL",
        "dependencies[2].headers_env.Authorization: environment variable MISSING_VAR is not set",
    ];
    for want in expect {
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {errs:#?}"
        );
    }
}

#[test]
fn duplicate_names_and_unknown_startup_requirements() {
    let errs = errors(
        r#"
        [startup]
        require = ["lm"]
        [[dependencies]]
        name = "llm"
        kind = "tcp"
        address = "a:1"
        [[dependencies]]
        name = "llm"
        kind = "tcp"
        address = "b:1"
        "#,
    );
    assert!(
        errs.iter()
            .any(|e| e
                .starts_with("dependencies[1].name: \"llm\" is already used by dependencies[0]")),
        "{errs:#?}"
    );
    assert!(
        errs.iter().any(|e| e.starts_with(
            "startup.require[0]: no dependency is named \"lm\" (did you mean \"llm\"?)"
        )),
        "{errs:#?}"
    );
}

#[test]
fn unknown_sections_kinds_and_not_yet_supported_kinds() {
    let errs = errors(
        r#"
        [servre]
        [[dependencies]]
        name = "x"
        kind = "htp"
        [[dependencies]]
        name = "llm"
        kind = "openai"
        "#,
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("servre: unknown section (did you mean \"server\"?)")),
        "{errs:#?}"
    );
    assert!(
        errs.iter().any(|e| e
            .starts_with("dependencies[0].kind: \"htp\" is not a kind (did you mean \"http\"?)")),
        "{errs:#?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("dependencies[1].kind: \"openai\" is not supported yet")),
        "{errs:#?}"
    );
}

#[test]
fn probe_rules_the_platforms_share() {
    let errs = errors(
        r#"
        [readiness]
        degraded_status = 503
        [probes]
        liveness = { period = "5s", timeout = "6s", success_threshold = 2 }
        startup = { failure_threshold = 10 }
        "#,
    );
    for want in [
        "readiness.degraded_status: 503 is not allowed",
        "probes.liveness.timeout: 6s is longer than period (5s)",
        "probes.liveness.success_threshold: 2 is not allowed",
        "probes.startup.failure_threshold: is derived from startup.timeout",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {errs:#?}"
        );
    }
}

#[test]
fn stale_after_must_outlive_one_check() {
    let errs = errors(
        r#"
        [[dependencies]]
        name = "t"
        kind = "tcp"
        address = "a:1"
        interval = "10s"
        timeout = "2s"
        stale_after = "11s"
        "#,
    );
    assert!(
        errs[0].starts_with(
            "dependencies[0].stale_after: 11s is shorter than interval + timeout (12s)"
        ),
        "{errs:#?}"
    );
}

#[test]
fn toml_syntax_errors_are_reported() {
    let errs = errors("[server\nlisten = 1");
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].contains("TOML") || errs[0].contains("expected"),
        "{errs:?}"
    );
}

#[test]
fn admin_token_comes_from_the_environment() {
    let c = parse("[server]\nadmin_token_env = \"TOOL_TOKEN\"").unwrap();
    assert_eq!(c.server.admin_token.unwrap().expose(), "s3cret-token-value");
    let errs = errors("[server]\nadmin_token_env = \"NOPE\"");
    assert!(errs[0].starts_with("server.admin_token_env: environment variable NOPE is not set"));
}
