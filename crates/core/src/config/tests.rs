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

/// Every message in `want` begins one of `errs`: each problem is reported, with its key first.
fn assert_reported(errs: &[String], want: &[&str]) {
    for w in want {
        assert!(
            errs.iter().any(|e| e.starts_with(w)),
            "no {w:?} in {errs:#?}"
        );
    }
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
        url = "http://127.0.0.1:9001/health"
        method = "head"
        expect_status = [200, 204]
        headers_env = { Authorization = "TOOL_TOKEN" }
        interval = "3s"
        "#,
    )
    .unwrap();
    assert_eq!(c.probes.startup.failure_threshold, 24);
    assert_eq!(c.startup.require, vec!["search-tool".to_owned()]);
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
        "dependencies[0].failure_threshold: expected a whole number from 0 to 4294967295, found string \"three\"; write a number",
        "server.listen: \"nowhere\" is not an address",
        "probes.liveness.period: must be greater than zero",
        "dependencies[0].timeout: 5s must be shorter than interval (5s)",
        "dependencies[1].url: is not used by kind \"tcp\"",
        "dependencies[1].address: \"nohost\" is not host:port",
        "dependencies[2].url: \"ftp://x/\" must be an http:// or https:// URL",
        "dependencies[2].headers_env.Authorization: environment variable MISSING_VAR is not set",
    ];
    assert_reported(&errs, &expect);
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
            "startup.require[0]: no dependency, signal or process is named \"lm\" (did you mean \"llm\"?)"
        )),
        "{errs:#?}"
    );
}

#[test]
fn unknown_sections_and_kinds_and_missing_kind_keys() {
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
            .any(|e| e.starts_with("dependencies[1].base_url: is required for kind \"openai\"")),
        "{errs:#?}"
    );
}

#[test]
fn llm_store_and_exec_kinds_validate_with_their_keys() {
    let env = |k: &str| match k {
        "OPENAI_KEY" => Some("sk-test-123".to_owned()),
        "PGPASS" => Some("pw".to_owned()),
        _ => None,
    };
    let c = super::from_toml(
        r#"
        [[dependencies]]
        name = "llm"
        kind = "openai"
        base_url = "http://127.0.0.1:8000/v1"
        model = "tiny"
        api_key_env = "OPENAI_KEY"
        check = "semantic"
        expect = "/^READY\\b/"
        interval = "30s"
        max_probes_per_hour = 60
        [[dependencies]]
        name = "claude"
        kind = "anthropic"
        model = "claude-3-5-haiku-latest"
        check = "completion"
        [[dependencies]]
        name = "cache"
        kind = "redis"
        url = "redis://127.0.0.1:6379/0"
        command = "EXISTS doc:42"
        expect = "1"
        [[dependencies]]
        name = "vectors"
        kind = "postgres"
        url = "postgres://vitals@127.0.0.1:5432/app"
        password_env = "PGPASS"
        query = "SELECT 1 FROM items WHERE id = 42"
        expect_rows = 1
        [[dependencies]]
        name = "index"
        kind = "exec"
        command = ["/bin/true"]
        [[dependencies]]
        name = "qdrant"
        kind = "http"
        url = "http://127.0.0.1:6333/collections/docs/points/42"
        expect_json = { pointer = "/result/id", equals = 42 }
        "#,
        &env,
    )
    .unwrap();
    let Check::Llm(llm) = &c.dependencies[0].check else {
        panic!()
    };
    assert_eq!(llm.mode, LlmMode::Semantic);
    assert!(llm.expect.as_ref().unwrap().matches("READY now"));
    assert!(!llm.expect.as_ref().unwrap().matches("NOT READY"));
    assert_eq!(llm.api_key.as_ref().unwrap().expose(), "sk-test-123");
    // 60 probes an hour: one a minute, not every 30s.
    assert_eq!(c.dependencies[0].interval, Duration::from_secs(60));
    assert_eq!(llm.requested_interval, Some(Duration::from_secs(30)));
    let Check::Llm(claude) = &c.dependencies[1].check else {
        panic!()
    };
    assert_eq!(claude.base_url.as_str(), "https://api.anthropic.com/v1");
    let Check::Redis(r) = &c.dependencies[2].check else {
        panic!()
    };
    assert_eq!(r.command, ["EXISTS", "doc:42"]);
    let Check::Postgres(p) = &c.dependencies[3].check else {
        panic!()
    };
    assert_eq!(p.expect_rows, Some(1));
    let Check::Http(h) = &c.dependencies[5].check else {
        panic!()
    };
    assert_eq!(
        h.expect_json.as_ref().unwrap().equals,
        Some(serde_json::json!(42))
    );
}

#[test]
fn new_kinds_name_the_key_and_the_fix() {
    let errs = errors(
        r#"
        [[dependencies]]
        name = "llm"
        kind = "openai"
        base_url = "http://127.0.0.1:8000/v1"
        check = "chat"
        prompt = "hi"
        [[dependencies]]
        name = "pg"
        kind = "postgres"
        url = "postgres://u:hunter2@db/app"
        [[dependencies]]
        name = "job"
        kind = "exec"
        command = "/bin/check --fast"
        [[dependencies]]
        name = "cache"
        kind = "redis"
        url = "http://127.0.0.1:6379"
        expect = "/(/"
        [[dependencies]]
        name = "budget"
        kind = "openai"
        base_url = "http://127.0.0.1:8000/v1"
        max_probes_per_hour = 0
        query = "SELECT 1"
        "#,
    );
    assert_reported(
        &errs,
        &[
            "dependencies[0].check: \"chat\" is not a check mode",
            "dependencies[0].prompt: is only used by check = \"semantic\"",
            "dependencies[1].url: holds a password; secrets never go in the file",
            "dependencies[2].command: must be a list (it runs without a shell), such as [\"/bin/check\", \"--fast\"]",
            "dependencies[3].url: \"http://127.0.0.1:6379\" must be a redis or rediss URL",
            "dependencies[3].expect: \"/(/\" is not a valid regex",
            "dependencies[4].max_probes_per_hour: must be at least 1",
            "dependencies[4].query: is not used by kind \"openai\"",
        ],
    );
    assert!(!errs.iter().any(|e| e.contains("hunter2")), "{errs:#?}");
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
    assert_reported(
        &errs,
        &[
            "readiness.degraded_status: 503 is not allowed",
            "probes.liveness.timeout: 6s is longer than period (5s)",
            "probes.liveness.success_threshold: 2 is not allowed",
            "probes.startup.failure_threshold: is derived from startup.timeout",
        ],
    );
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

#[test]
fn a_broken_dependency_is_not_also_reported_as_unknown_in_startup_require() {
    let errs = errors(
        r#"
        [startup]
        require = ["llm"]
        [[dependencies]]
        name = "llm"
        kind = "openai"
        base_url = "http://127.0.0.1:8000/v1"
        api_key_env = "NOT_SET_IN_THIS_TEST"
        "#,
    );
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with("dependencies[0].api_key_env"),
        "{errs:#?}"
    );
}

#[test]
fn agent_and_signals_are_read_with_their_defaults() {
    let c = parse(
        r#"
        [agent]
        heartbeat = "required"
        stall_after = "15s"
        startup = "signal"
        [[signals]]
        name = "web-search"
        [[signals]]
        name = "planner"
        critical = true
        ttl = "2m"
        [startup]
        require = ["planner"]
        "#,
    )
    .unwrap();
    assert_eq!(c.agent.heartbeat, HeartbeatMode::Required);
    assert_eq!(c.agent.stall_after, Duration::from_secs(15));
    assert_eq!(c.agent.startup, StartupMode::Signal);
    assert_eq!(
        c.signals,
        vec![
            Signal {
                name: "web-search".into(),
                critical: false,
                ttl: Duration::from_secs(60)
            },
            Signal {
                name: "planner".into(),
                critical: true,
                ttl: Duration::from_secs(120)
            },
        ]
    );
    assert_eq!(c.startup.require, vec!["planner".to_owned()]);
    let plain = parse("").unwrap();
    assert_eq!(plain.agent, Agent::default());
    assert!(plain.signals.is_empty());
}

#[test]
fn a_signal_and_a_dependency_of_one_name_are_refused_naming_both_keys() {
    let errs = errors(
        r#"
        [[dependencies]]
        name = "search"
        kind = "tcp"
        address = "a:1"
        [[signals]]
        name = "search"
        "#,
    );
    assert_eq!(
        errs,
        vec!["signals[0].name: \"search\" is already used by dependencies[0]; names must be unique across dependencies, signals and processes, so rename one of them"]
    );
}

#[test]
fn bad_agent_and_signal_values_name_their_keys() {
    let errs = errors(
        r#"
        [agent]
        heartbeat = "requird"
        startup = "signals"
        stall_after = "0s"
        [[signals]]
        name = "Web Search"
        ttl = "400000000000y"
        [[signals]]
        critical = true
        colour = "red"
        "#,
    );
    let want = [
        "agent.heartbeat: \"requird\" is not a heartbeat mode (did you mean \"required\"?)",
        "agent.startup: \"signals\" is not a startup mode (did you mean \"signal\"?)",
        "agent.stall_after: must be greater than zero",
        "signals[0].name: \"Web Search\" is not a valid name",
        "signals[0].ttl: ",
        "signals[1].colour: unknown key",
        "signals[1].name: is required",
    ];
    assert_reported(&errs, &want);
    assert_eq!(
        errors("[agent]\nstall_after = \"5s\"\n"),
        vec!["agent.stall_after: has no effect while agent.heartbeat is \"off\"; set agent.heartbeat = \"required\" or remove it"]
    );
}

#[test]
fn durations_that_would_overflow_the_clock_are_refused_where_they_are_written() {
    let errs = errors(
        r#"
        [server]
        header_read_timeout = "400000000000y"
        [startup]
        timeout = "400000000000y"
        [[dependencies]]
        name = "a"
        kind = "tcp"
        address = "a:1"
        interval = "400000000000y"
        "#,
    );
    for key in [
        "server.header_read_timeout",
        "startup.timeout",
        "dependencies[0].interval",
    ] {
        assert!(
            errs.iter()
                .any(|e| e.starts_with(key) && e.contains("longer than a day")),
            "{key}: {errs:#?}"
        );
    }
}

#[test]
fn intervals_and_timeouts_have_a_floor() {
    let errs = errors(
        r#"
        [[dependencies]]
        name = "llm"
        kind = "openai"
        base_url = "http://127.0.0.1:8000/v1"
        check = "completion"
        interval = "1ms"
        timeout = "1ns"
        "#,
    );
    assert!(
        errs.iter().any(|e| {
            e.starts_with(
            "dependencies[0].interval: 1ms is shorter than 1s: a check more often than every second"
        ) && e.ends_with("use at least \"1s\"")
        }),
        "{errs:#?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("dependencies[0].timeout: 1ns is shorter than 10ms")),
        "{errs:#?}"
    );
    assert!(parse("[[dependencies]]\nname = \"a\"\nkind = \"tcp\"\naddress = \"a:1\"\ninterval = \"1s\"\ntimeout = \"10ms\"\n").is_ok());
}

#[test]
fn a_gate_takes_its_defaults_and_no_gate_is_none() {
    assert!(parse("").unwrap().gate.is_none());
    let c = parse(
        r#"
        [gate]
        listen = "0.0.0.0:8081"
        upstream = "http://127.0.0.1:8000"
        max_concurrent = 4
        "#,
    );
    let g = c.unwrap().gate.unwrap();
    assert_eq!(g.max_concurrent, GateLimit::Fixed(4));
    assert_eq!(g.queue_depth, 8);
    assert_eq!(g.queue_timeout, Duration::from_secs(10));
    assert_eq!(g.request_timeout, Duration::from_secs(60));
    assert_eq!(g.max_body, 4 * 1024 * 1024);
    assert_eq!(g.max_buffered, 64 * 1024 * 1024);
    assert_eq!(g.breaker.failure_threshold, 5);
    assert_eq!((g.retry.attempts, g.retry.budget), (2, 0.2));
    assert_eq!(g.saturation.high_water, 4, "half the queue depth");
    let auto = parse(
        "[gate]\nlisten = \"0.0.0.0:8081\"\nupstream = \"http://127.0.0.1:9000\"\nmax_concurrent = \"auto\"\n",
    )
    .unwrap();
    assert_eq!(auto.gate.unwrap().max_concurrent, GateLimit::Auto);
}

/// The issue's bad input: each refused with its key and the fix, all at once, and never the
/// secret in an upstream URL.
#[test]
fn bad_gate_settings_name_their_keys_and_fixes() {
    let errs = errors(
        r#"
        [server]
        listen = "0.0.0.0:8080"
        [gate]
        listen = "127.0.0.1:8080"
        upstream = "https://user:sk-secret-in-url@api.example.com"
        max_concurrent = 0
        queue_timeout = "60s"
        request_timeout = "30s"
        max_body = 1000
        max_buffered = 999
        [gate.breaker]
        open_for = "10s"
        max_open_for = "5s"
        [gate.retry]
        attempts = 50
        budget = 3.0
        [gate.saturation]
        high_water = 9
        ttfb_factor = 0.5
        [[signals]]
        name = "gate"
        "#,
    );
    let want = [
        "gate.listen: 127.0.0.1:8080 is the probe server's address (server.listen = 0.0.0.0:8080); the probes must never sit behind the gate's limits",
        "gate.upstream: holds credentials (user:password@); remove them",
        "gate.max_concurrent: must be at least 1",
        "gate.queue_timeout: 1m is not shorter than gate.request_timeout (30s)",
        "gate.max_buffered: 999 is less than gate.max_body (1000): a request with a body at that limit could never be taken in; raise max_buffered (or lower max_body)",
        "gate.breaker.max_open_for: 5s is shorter than gate.breaker.open_for (10s)",
        "gate.retry.attempts: 50 retries of one request is a storm",
        "gate.retry.budget: 3 must be between 0 and 1",
        "gate.saturation.high_water: 9 is above gate.queue_depth (8)",
        "gate.saturation.ttfb_factor: 0.5 must be a number above 1",
        "signals[0].name: \"gate\" is a name [gate] takes in readiness",
    ];
    assert_reported(&errs, &want);
    assert!(
        !errs
            .iter()
            .any(|e| e.contains("sk-secret") || e.contains("api.example.com")),
        "{errs:#?}"
    );
    let missing = errors("[gate]\n");
    assert_reported(
        &missing,
        &[
            "gate.listen: missing",
            "gate.upstream: missing",
            "gate.max_concurrent: missing",
        ],
    );
    let loops = errors(
        "[gate]\nlisten = \"0.0.0.0:8081\"\nupstream = \"http://localhost:8081\"\nmax_concurrent = 2\n",
    );
    assert_reported(&loops, &["gate.upstream: points at the gate's own address"]);
    let word = errors(
        "[gate]\nlisten = \"0.0.0.0:8081\"\nupstream = \"http://127.0.0.1:9\"\nmax_concurrent = \"lots\"\nsurprise = 1\n",
    );
    assert_reported(
        &word,
        &[
            "gate.max_concurrent: \"lots\" is not a limit",
            "gate.surprise: unknown key",
        ],
    );
    // A count out of its type's range, or quoted, says the range and the fix.
    for (value, says) in [
        ("-1", "gate.queue_depth: -1 is not a whole number from 0 to 4294967295"),
        ("5000000000", "gate.queue_depth: 5000000000 is not a whole number from 0 to 4294967295"),
        ("\"8\"", "gate.queue_depth: expected a whole number from 0 to 4294967295, found string \"8\"; write a number, without quotes"),
    ] {
        let errs = errors(&format!(
            "[gate]\nlisten = \"0.0.0.0:8081\"\nupstream = \"http://127.0.0.1:9\"\nmax_concurrent = 2\nqueue_depth = {value}\n"
        ));
        assert_reported(&errs, &[says]);
    }
    // Numbers out of range get the bounds, not a parser's words, and are not "missing".
    for (n, says) in [
        (
            "5000000000",
            "gate.max_concurrent: 5000000000 is more than a limit can be (at most 4294967295)",
        ),
        ("-2", "gate.max_concurrent: must be at least 1"),
    ] {
        let errs = errors(&format!(
            "[gate]\nlisten = \"0.0.0.0:8081\"\nupstream = \"http://127.0.0.1:9\"\nmax_concurrent = {n}\n"
        ));
        assert_reported(&errs, &[says]);
        assert_eq!(errs.len(), 1, "{errs:#?}");
    }
}

#[test]
fn an_adaptive_limit_takes_its_floor_and_refuses_what_it_cannot_use() {
    let base = "[gate]\nlisten = \"0.0.0.0:8081\"\nupstream = \"http://127.0.0.1:9000\"\nmax_concurrent = 8\n";
    let g = parse(&format!("{base}limit = \"adaptive\"\n"))
        .unwrap()
        .gate
        .unwrap();
    assert_eq!(g.adaptive_min, Some(1));
    assert_eq!(parse(base).unwrap().gate.unwrap().adaptive_min, None);
    let errs = errors(&format!("{base}limit = \"dynamic\"\n"));
    assert_reported(&errs, &["gate.limit: \"dynamic\" is not a limit mode"]);
    let errs = errors(&format!("{base}[gate.adaptive]\nmin_limit = 2\n"));
    assert_reported(
        &errs,
        &["gate.adaptive.min_limit: is read only with gate.limit = \"adaptive\""],
    );
    let errs = errors(&format!(
        "{base}limit = \"adaptive\"\n[gate.adaptive]\nmin_limit = 9\n"
    ));
    assert_reported(
        &errs,
        &["gate.adaptive.min_limit: 9 is above gate.max_concurrent (8)"],
    );
}

/// What counts as this instance's own address, for `/readyz?scope=instance` and the gate.
#[test]
fn loopback_hosts_are_localhost_and_loopback_addresses_only() {
    for local in [
        "localhost",
        "LOCALHOST",
        "127.0.0.1",
        "127.0.0.2",
        "[::1]",
        "::1",
    ] {
        assert!(is_loopback_host(local), "{local}");
    }
    for remote in [
        "10.0.0.1",
        "api.openai.com",
        "localhost.example.com",
        "[::2]",
        "0.0.0.0",
    ] {
        assert!(!is_loopback_host(remote), "{remote}");
    }
    let dep = |toml: &str| {
        parse(toml)
            .unwrap()
            .dependencies
            .remove(0)
            .is_instance_local()
    };
    assert!(dep(
        "[[dependencies]]\nname = \"m\"\nkind = \"tcp\"\naddress = \"localhost:8081\"\n"
    ));
    assert!(dep(
        "[[dependencies]]\nname = \"m\"\nkind = \"http\"\nurl = \"http://[::1]:8081/health\"\n"
    ));
    assert!(!dep(
        "[[dependencies]]\nname = \"m\"\nkind = \"tcp\"\naddress = \"db.internal:5432\"\n"
    ));
}

#[test]
fn a_process_reads_with_its_defaults_and_joins_startup() {
    let c = parse(
        r#"
        [[processes]]
        name = "llama"
        command = ["llama-server", "--port", "{port}"]
        port = "5800-5899"
        env = { CUDA_VISIBLE_DEVICES = "0", LLAMA_ARG_PORT = "{port}" }
        "#,
    )
    .unwrap();
    let p = &c.processes[0];
    assert_eq!(
        p.port,
        Some(Ports::Range {
            first: 5800,
            last: 5899
        })
    );
    assert_eq!(
        p.health,
        ProcessHealth::Http {
            path: "/health".into()
        }
    );
    assert_eq!(p.restart, RestartPolicy::OnFailure);
    assert_eq!(p.backoff, Backoff::default());
    assert_eq!(
        (p.interval, p.timeout),
        (Duration::from_secs(10), Duration::from_secs(5))
    );
    assert_eq!(p.start_timeout, Duration::from_secs(120));
    assert!(p.critical && p.give_up_after.is_none());
    assert_eq!(c.startup.require, vec!["llama".to_owned()]);
    let bare = parse("[[processes]]\nname = \"agentd\"\ncommand = [\"agentd\"]\n").unwrap();
    assert_eq!(bare.processes[0].health, ProcessHealth::None);
}

#[test]
fn every_process_problem_is_reported_with_its_key_and_fix() {
    let errs = errors(
        r#"
        [server]
        listen = "0.0.0.0:8080"

        [gate]
        listen = "127.0.0.1:8081"
        upstream = "http://127.0.0.1:9000"
        process = "llama"
        max_concurrent = 2

        [[processes]]
        name = "agent"
        command = ["x"]

        [[processes]]
        name = "a"
        command = ["srv"]
        port = "6000-5000"

        [[processes]]
        name = "b"
        command = ["srv"]
        port = "7000-7010"
        health = "/health"
        interval = "1s"
        timeout = "2s"
        restart = "allways"
        give_up_after = 0

        [[processes]]
        name = "c"
        command = ["srv", "{port}"]
        health = "tcp"

        [[processes]]
        name = "d"
        command = []
        port = 8080
        health = "grpc"
        [processes.backoff]
        initial = "10s"
        max = "1s"
        "#,
    );
    assert_reported(
        &errs,
        &[
            "gate.process: gate.upstream is set too",
            "processes[0].name: \"agent\" is the process `vitals serve -- CMD` runs",
            "processes[1].port: \"6000-5000\" runs backwards",
            "processes[2].port: is a range, but neither the command nor env holds \"{port}\"",
            "processes[2].timeout: 2s is not shorter than processes[2].interval (1s)",
            "processes[2].restart: \"allways\" is not a restart policy (did you mean \"always\"?)",
            "processes[2].give_up_after: must be at least 1",
            "processes[3].command: holds \"{port}\" but processes[].port is not set",
            "processes[3].health: \"tcp\" checks the process's port, but processes[].port is not set",
            "processes[4].command: names no program",
            "processes[4].port: 8080 is the probe server's port",
            "processes[4].health: \"grpc\" is not a health check",
            "processes[4].backoff.max: 1s is shorter than processes[4].backoff.initial (10s)",
        ],
    );
}

#[test]
fn a_gate_fronts_a_known_process_with_a_port() {
    let gate = |process: &str| {
        format!(
            "[gate]\nlisten = \"127.0.0.1:8081\"\nprocess = \"{process}\"\nmax_concurrent = 1\n\n[[processes]]\nname = \"llama\"\ncommand = [\"srv\", \"{{port}}\"]\nport = 9000\n\n[[processes]]\nname = \"plain\"\ncommand = [\"srv\"]\n"
        )
    };
    let c = parse(&gate("llama")).unwrap();
    assert_eq!(c.gate.unwrap().process.as_deref(), Some("llama"));
    assert_reported(
        &errors(&gate("lama")),
        &["gate.process: no [[processes]] entry is named \"lama\" (did you mean \"llama\"?)"],
    );
    assert_reported(
        &errors(&gate("plain")),
        &["gate.process: processes entry \"plain\" has no port"],
    );
}

#[test]
fn a_dependency_inside_a_processes_port_range_is_refused_with_the_way_out() {
    let errs = errors(
        r#"
        [[dependencies]]
        name = "local-llm"
        kind = "openai"
        base_url = "http://127.0.0.1:5805/v1"

        [[processes]]
        name = "llama"
        command = ["llama-server", "--port", "{port}"]
        port = "5800-5899"
        "#,
    );
    assert_reported(
        &errs,
        &["dependencies[0]: \"local-llm\" checks 127.0.0.1:5805, inside the port range of process \"llama\" (5800-5899)"],
    );
    // A fixed port is fine, and so is a port outside the range.
    parse("[[dependencies]]\nname = \"t\"\nkind = \"tcp\"\naddress = \"127.0.0.1:5900\"\n[[processes]]\nname = \"llama\"\ncommand = [\"srv\", \"{port}\"]\nport = \"5800-5899\"\n").unwrap();
}

#[test]
fn fleet_reads_and_shares_remote_llm_dependencies_by_default() {
    let c = parse(
        r#"
        [fleet]
        redis_url = "redis://redis.internal:6379/0"

        [[dependencies]]
        name = "llm"
        kind = "openai"
        base_url = "https://api.openai.com/v1"

        [[dependencies]]
        name = "local"
        kind = "openai"
        base_url = "http://127.0.0.1:8000/v1"

        [[dependencies]]
        name = "tool"
        kind = "http"
        url = "https://tool.internal/health"

        [[dependencies]]
        name = "tool-shared"
        kind = "http"
        url = "https://tool.internal/health"
        shared = true
        "#,
    )
    .unwrap();
    let shared: Vec<bool> = c.dependencies.iter().map(|d| d.shared).collect();
    assert_eq!(shared, [true, false, false, true]);
    let f = c.fleet.unwrap();
    assert_eq!(f.key_prefix, "vitals");
    assert!(f.password.is_none());
}

#[test]
fn every_fleet_problem_is_reported_with_its_key_and_never_the_password() {
    let errs = errors(
        r#"
        [fleet]
        redis_url = "redis://:hunter2-secret@redis.internal:6379/0"
        key_prefix = "has space"

        [[dependencies]]
        name = "local"
        kind = "tcp"
        address = "127.0.0.1:5432"
        shared = true
        "#,
    );
    assert_reported(
        &errs,
        &[
            "fleet.redis_url: holds credentials; remove them from the URL",
            "fleet.key_prefix: must be 1 to 100 characters without spaces",
            "dependencies[0].shared: this dependency is this instance's own",
        ],
    );
    assert!(errs.iter().all(|e| !e.contains("hunter2")), "{errs:?}");
    assert_reported(
        &errors("[fleet]\nredis_url = \"http://r:6380\"\n"),
        &["fleet.redis_url: the scheme is \"http\"; use redis://, or rediss:// for TLS"],
    );
    assert_reported(
        &errors("[fleet]\nredis_url = \"redis://r:6379\"\nca_file = \"/etc/ca.pem\"\n"),
        &["fleet.ca_file: is used only with TLS; make the URL rediss://"],
    );
    assert_reported(&errors("[fleet]\n"), &["fleet.redis_url: missing"]);
    assert_reported(
        &errors("[[dependencies]]\nname = \"t\"\nkind = \"http\"\nurl = \"https://t.example/\"\nshared = true\n"),
        &["dependencies[0].shared: needs [fleet]"],
    );
}

#[test]
fn fleet_outage_applies_to_shared_dependencies_only() {
    let fleet = "[fleet]\nredis_url = \"redis://r:6379\"\n";
    let c = parse(&format!(
        "{fleet}[[dependencies]]\nname = \"llm\"\nkind = \"openai\"\nbase_url = \"https://api.example.com/v1\"\nfleet_outage = \"degraded\"\n"
    ))
    .unwrap();
    assert_eq!(c.dependencies[0].fleet_outage, FleetOutage::Degraded);
    assert_reported(
        &errors(&format!(
            "{fleet}[[dependencies]]\nname = \"t\"\nkind = \"http\"\nurl = \"https://t.example/\"\nfleet_outage = \"degraded\"\n"
        )),
        &["dependencies[0].fleet_outage: applies to a shared dependency only"],
    );
    assert_reported(
        &errors(&format!(
            "{fleet}[[dependencies]]\nname = \"llm\"\nkind = \"openai\"\nbase_url = \"https://api.example.com/v1\"\nfleet_outage = \"ignore\"\n"
        )),
        &["dependencies[0].fleet_outage: \"ignore\" is not a choice"],
    );
}

#[test]
fn rediss_takes_a_private_ca_for_the_fleet_and_for_redis_checks() {
    let c = parse(
        r#"
        [fleet]
        redis_url = "rediss://redis.internal:6380/0"
        ca_file = "/etc/vitals/redis-ca.pem"

        [[dependencies]]
        name = "cache"
        kind = "redis"
        url = "rediss://cache.internal:6380/0"
        ca_file = "/etc/vitals/cache-ca.pem"
        "#,
    )
    .unwrap();
    let f = c.fleet.as_ref().unwrap();
    assert_eq!(f.redis_url.scheme(), "rediss");
    assert_eq!(
        f.ca_file.as_deref(),
        Some(std::path::Path::new("/etc/vitals/redis-ca.pem"))
    );
    let Check::Redis(r) = &c.dependencies[0].check else {
        panic!("a redis check")
    };
    assert_eq!(
        r.ca_file.as_deref(),
        Some(std::path::Path::new("/etc/vitals/cache-ca.pem"))
    );
    // Without TLS there is no certificate to check; another kind takes no ca_file.
    assert_reported(
        &errors("[[dependencies]]\nname = \"c\"\nkind = \"redis\"\nurl = \"redis://c:6379\"\nca_file = \"/ca.pem\"\n"),
        &["dependencies[0].ca_file: is used only with TLS; make the URL rediss://, or remove ca_file"],
    );
    assert_reported(
        &errors("[[dependencies]]\nname = \"p\"\nkind = \"postgres\"\nurl = \"postgres://u@p/db\"\nca_file = \"/ca.pem\"\n"),
        &["dependencies[0].ca_file: is not used by kind \"postgres\""],
    );
}

#[test]
fn https_takes_a_private_ca_for_http_and_llm_checks_and_the_gate() {
    let c = parse(
        r#"
        [[dependencies]]
        name = "search"
        kind = "http"
        url = "https://search.internal/health"
        ca_file = "/etc/vitals/search-ca.pem"

        [[dependencies]]
        name = "llm"
        kind = "openai"
        base_url = "https://vllm.internal/v1"
        ca_file = "/etc/vitals/llm-ca.pem"

        [[dependencies]]
        name = "claude"
        kind = "anthropic"
        ca_file = "/etc/vitals/proxy-ca.pem"

        [gate]
        listen = "127.0.0.1:9000"
        upstream = "https://vllm.internal"
        max_concurrent = 4
        ca_file = "/etc/vitals/llm-ca.pem"
        "#,
    )
    .unwrap();
    let path = |p: &str| Some(std::path::PathBuf::from(p));
    let Check::Http(h) = &c.dependencies[0].check else {
        panic!("an http check")
    };
    assert_eq!(h.ca_file, path("/etc/vitals/search-ca.pem"));
    let Check::Llm(l) = &c.dependencies[1].check else {
        panic!("an llm check")
    };
    assert_eq!(l.ca_file, path("/etc/vitals/llm-ca.pem"));
    let Check::Llm(a) = &c.dependencies[2].check else {
        panic!("an llm check")
    };
    assert_eq!(a.ca_file, path("/etc/vitals/proxy-ca.pem"));
    assert_eq!(
        c.gate.as_ref().unwrap().ca_file,
        path("/etc/vitals/llm-ca.pem")
    );
    // Plain HTTP has no certificate to check.
    assert_reported(
        &errors("[[dependencies]]\nname = \"s\"\nkind = \"http\"\nurl = \"http://s/health\"\nca_file = \"/ca.pem\"\n"),
        &["dependencies[0].ca_file: is used only with TLS; make the URL https://, or remove ca_file"],
    );
    assert_reported(
        &errors("[[dependencies]]\nname = \"l\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:8000/v1\"\nca_file = \"/ca.pem\"\n"),
        &["dependencies[0].ca_file: is used only with TLS; make the URL https://, or remove ca_file"],
    );
    assert_reported(
        &errors("[gate]\nlisten = \"127.0.0.1:9000\"\nupstream = \"http://127.0.0.1:8000\"\nmax_concurrent = 2\nca_file = \"/ca.pem\"\n"),
        &["gate.ca_file: is used only with TLS; make the URL https://, or remove ca_file"],
    );
    assert_reported(
        &errors("[[dependencies]]\nname = \"t\"\nkind = \"tcp\"\naddress = \"t:1\"\nca_file = \"/ca.pem\"\n"),
        &["dependencies[0].ca_file: is not used by kind \"tcp\""],
    );
    // A supervised process is reached over plain HTTP on loopback: there is no URL to change.
    assert_reported(
        &errors("[[processes]]\nname = \"llm\"\ncommand = [\"llama-server\"]\nport = 8081\n[gate]\nlisten = \"127.0.0.1:9000\"\nprocess = \"llm\"\nmax_concurrent = 2\nca_file = \"/ca.pem\"\n"),
        &["gate.ca_file: gate.process is reached over plain HTTP on loopback; remove ca_file"],
    );
}

#[test]
fn a_fixed_process_port_in_the_ephemeral_range_is_advised_against() {
    let config = parse(
        r#"
        [[processes]]
        name = "model"
        command = ["llama-server", "--port", "{port}"]
        port = 40000

        [[processes]]
        name = "low"
        command = ["web", "{port}"]
        port = 8000

        [[processes]]
        name = "ranged"
        command = ["web", "{port}"]
        port = "40010-40019"
        "#,
    )
    .unwrap();
    let linux = 32768..=60999;
    let advice = advice(&config, &linux);
    assert_eq!(advice.len(), 1, "{advice:?}");
    let a = &advice[0];
    assert!(
        a.starts_with("processes[0].port 40000 is in the ephemeral port range (32768-60999)"),
        "{a}"
    );
    assert!(
        a.contains("a port below 32768") && a.contains("\"40000-40009\""),
        "{a}"
    );
    // Where this machine's range is elsewhere, so is the advice.
    assert!(super::advice(&config, &(41000..=50000)).is_empty());
    assert_eq!(super::advice(&config, &(1024..=9000)).len(), 1);
}

#[test]
fn the_ephemeral_range_is_read_as_the_kernel_writes_it() {
    assert_eq!(parse_port_range("32768\t60999\n"), Some(32768..=60999));
    assert_eq!(parse_port_range("1024 65535"), Some(1024..=65535));
    assert_eq!(parse_port_range("60999 32768"), None);
    assert_eq!(parse_port_range("x"), None);
    assert_eq!(parse_port_range("70000 80000"), None);
}

/// A process that startup waits for may take its whole `start_timeout` to become healthy (a
/// large model loading): left unset, the startup budget (and the platforms' startup probes,
/// derived from it) grows to cover it; set shorter, it is refused, since the orchestrator would
/// stop the container while the process may still be starting.
#[test]
fn the_startup_budget_covers_the_slowest_start_it_waits_for() {
    let slow =
        "[[processes]]\nname = \"llama\"\ncommand = [\"sleep\", \"1\"]\nstart_timeout = \"10m\"\n";
    let c = parse(slow).unwrap();
    assert_eq!(c.startup.timeout, Duration::from_secs(600));
    assert_eq!(c.probes.startup.failure_threshold, 120, "10m in 5s periods");

    let errs = errors(&format!("[startup]\ntimeout = \"2m\"\n{slow}"));
    assert_reported(&errs, &["startup.timeout"]);
    let said = errs
        .iter()
        .find(|e| e.starts_with("startup.timeout"))
        .unwrap();
    assert!(
        said.contains("llama") && said.contains("10m") && said.contains("raise startup.timeout"),
        "{said}"
    );

    // A process that startup does not wait for (not critical) leaves the budget alone.
    let c = parse(&format!(
        "[startup]\ntimeout = \"2m\"\n{slow}critical = false\n"
    ))
    .unwrap();
    assert_eq!(c.startup.timeout, Duration::from_secs(120));
    let c = parse(&format!("{slow}critical = false\n")).unwrap();
    assert_eq!(c.startup.timeout, Duration::from_secs(120));
}

/// A critical signal reported only on use never comes back: once down, the instance leaves
/// traffic, sees no use, and its silence reads as down. `validate` says so for each critical
/// signal (a note, not an error: reported on a timer, it is right).
#[test]
fn a_critical_signal_gets_a_note_to_report_it_without_traffic() {
    let config = parse(
        "[[signals]]\nname = \"db-writes\"\ncritical = true\n[[signals]]\nname = \"search\"\n",
    )
    .unwrap();
    let advice = advice(&config, &(32768..=60999));
    assert_eq!(advice.len(), 1, "{advice:?}");
    let a = &advice[0];
    assert!(
        a.starts_with("signals[0]") && a.contains("db-writes") && a.contains("timer"),
        "{a}"
    );
}

#[test]
fn nothing_is_sent_to_vitals_own_probe_server() {
    // llama.cpp's server defaults to port 8080, as vitals' probe server does. Pointed there on
    // loopback, the gate would send completions to /readyz's listener and a check would ask
    // vitals about itself: each answers 404 for ever, and nothing says why.
    let gate = errors(
        "[gate]\nlisten = \"127.0.0.1:8081\"\nupstream = \"http://127.0.0.1:8080\"\nmax_concurrent = 2\n",
    );
    assert_reported(
        &gate,
        &["gate.upstream: 127.0.0.1:8080 is vitals' own probe server (server.listen = 0.0.0.0:8080)"],
    );
    let checks = errors(
        "[server]\nlisten = \"[::]:9000\"\n\
         [[dependencies]]\nname = \"llm\"\nkind = \"openai\"\nbase_url = \"http://localhost:9000/v1\"\nmodel = \"m\"\n\
         [[dependencies]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://[::1]:9000/health\"\n\
         [[dependencies]]\nname = \"port\"\nkind = \"tcp\"\naddress = \"127.0.0.1:9000\"\n",
    );
    assert_reported(
        &checks,
        &[
            "dependencies[0]: \"llm\" checks vitals' own probe server (server.listen = [::]:9000)",
            "dependencies[1]: \"web\" checks vitals' own probe server",
            "dependencies[2]: \"port\" checks vitals' own probe server",
        ],
    );
    // A probe server on one address leaves that port free on the others, and the gate's own
    // address is a loop only where it listens.
    for toml in [
        "[server]\nlisten = \"10.1.2.3:8080\"\n[gate]\nlisten = \"127.0.0.1:8081\"\nupstream = \"http://127.0.0.1:8080\"\nmax_concurrent = 2\n",
        "[server]\nlisten = \"127.0.0.1:8080\"\n[[dependencies]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://10.1.2.3:8080/\"\n",
        "[gate]\nlisten = \"10.1.2.3:8081\"\nupstream = \"http://127.0.0.1:8081\"\nmax_concurrent = 2\n",
    ] {
        assert!(parse(toml).is_ok(), "{toml}: {:#?}", parse(toml).err());
    }
}

#[test]
fn a_fixed_port_the_command_never_mentions_is_noted() {
    // llama-server listens on 8080 unless given --port: with port = 8000 and no --port, vitals
    // checks 8000 while the server binds 8080 (or fails to, beside vitals), and restarts it.
    let config = parse(
        r#"
        [[processes]]
        name = "llama"
        command = ["llama-server", "-m", "model.gguf"]
        port = 8000
        [[processes]]
        name = "given"
        command = ["llama-server", "--port", "8001"]
        port = 8001
        [[processes]]
        name = "joined"
        command = ["python", "-m", "app", "--bind=127.0.0.1:8002"]
        port = 8002
        [[processes]]
        name = "by-env"
        command = ["app"]
        env = { PORT = "8003" }
        port = 8003
        [[processes]]
        name = "placeholder"
        command = ["app", "--port={port}"]
        port = 8004
        [[processes]]
        name = "longer-number"
        command = ["app", "--port", "18005"]
        port = 8005
        "#,
    )
    .unwrap();
    let advice = advice(&config, &(32768..=60999));
    assert_eq!(advice.len(), 2, "{advice:#?}");
    assert!(
        advice[0].starts_with("processes[0].port 8000 appears nowhere in its command or env"),
        "{}",
        advice[0]
    );
    assert!(
        advice[0].contains("\"--port\", \"{port}\""),
        "{}",
        advice[0]
    );
    assert!(
        advice[1].starts_with("processes[5].port 8005"),
        "{}",
        advice[1]
    );
}
