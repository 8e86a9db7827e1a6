use std::process::Command;

use crate::bin;

fn validate(toml: &str, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    run_with_file(&["validate"], toml, env)
}

/// `vitals ARGS --config FILE` with `toml` in FILE and `env` set, to its end: exit code, stdout,
/// stderr.
fn run_with_file(args: &[&str], toml: &str, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("health.toml");
    std::fs::write(&path, toml).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(args).arg("--config").arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invalid_config_exits_64_listing_every_problem() {
    let (code, _, stderr) = validate(
        r#"
        [server]
        listen = "everywhere"
        [[dependencies]]
        name = "tool"
        kind = "http"
        url = "http://127.0.0.1:9/"
        interval = "2s"
        timeout = "0s"
        headers_env = { Authorization = "NOT_SET_ANYWHERE_E2E" }
        [[dependencies]]
        name = "tool"
        kind = "tcp"
        address = "x:1"
        bogus = 1
        "#,
        &[],
    );
    assert_eq!(code, Some(64), "{stderr}");
    for want in [
        "server.listen: \"everywhere\" is not an address",
        "dependencies[0].timeout: must be greater than zero",
        "dependencies[0].headers_env.Authorization: environment variable NOT_SET_ANYWHERE_E2E is not set",
        "dependencies[1].bogus: unknown key",
        "dependencies[1].name: \"tool\" is already used by dependencies[0]",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    assert!(stderr.contains("5 configuration problems"), "{stderr}");
}

#[test]
fn serve_refuses_a_bad_config_before_starting_anything() {
    let (code, _, stderr) = run_with_file(
        &["serve", "--listen", "127.0.0.1:0"],
        "[readiness]\ndegraded_status = 500\n",
        &[],
    );
    assert_eq!(code, Some(64));
    assert!(
        stderr.contains("readiness.degraded_status: 500 is not allowed"),
        "{stderr}"
    );
    assert!(!stderr.contains("serving"), "nothing may start: {stderr}");
}

#[test]
fn a_missing_file_is_a_config_error() {
    let out = Command::new(bin())
        .args(["validate", "--config", "/nonexistent/health.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/health.toml"));
}

#[test]
fn valid_config_summarises_and_env_overrides_the_file() {
    let (code, stdout, stderr) = validate(
        "[[dependencies]]\nname = \"crm\"\nkind = \"tcp\"\naddress = \"crm:5432\"\ncritical = false\n",
        &[("VITALS_SERVER__LISTEN", "127.0.0.1:9999")],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("listen 127.0.0.1:9999"), "{stdout}");
    assert!(
        stdout.contains("dependency crm (tcp, non-critical): every 30s, timeout 2s"),
        "{stdout}"
    );

    let (code, _, stderr) = validate(
        "# the rest from the environment\n",
        &[("VITALS_DRAIN__DELAY", "soon")],
    );
    assert_eq!(code, Some(64));
    assert!(
        stderr.contains("drain.delay: \"soon\" is not a duration"),
        "{stderr}"
    );
}

/// What `validate` accepts, `serve` runs: values only a dependency's client library refuses are
/// found by building every client during validation, each under its key, all at once.
#[test]
fn validate_builds_every_client_so_serve_cannot_refuse_what_it_accepted() {
    let toml = r#"
        [[dependencies]]
        name = "cache"
        kind = "redis"
        url = "redis://127.0.0.1:6399/abc"
        [[dependencies]]
        name = "db"
        kind = "postgres"
        url = "postgres://vitals@127.0.0.1:5499/vitals?sslmode=bogus"
        [[dependencies]]
        name = "llm"
        kind = "openai"
        base_url = "http://127.0.0.1:8000/v1"
        api_key_env = "E2E_KEY_WITH_NEWLINE"
        "#;
    let env = [("E2E_KEY_WITH_NEWLINE", "sk-abc\ndef")];
    let (code, _, stderr) = validate(toml, &env);
    assert_eq!(code, Some(64), "{stderr}");
    for want in [
        "dependencies[0].url: redis url: Invalid database number",
        "dependencies[1].url: postgres url: invalid value for option `sslmode`",
        "dependencies[2].api_key_env: the key in E2E_KEY_WITH_NEWLINE has characters a header cannot carry",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("sk-abc"), "the key leaked: {stderr}");

    let (code, _, _) = run_with_file(
        &["serve", "--listen", "127.0.0.1:0"],
        toml,
        &[("E2E_KEY_WITH_NEWLINE", "sk-abc\ndef")],
    );
    assert_eq!(code, Some(64), "serve exits 64 too, not 1");
}

#[test]
fn a_duration_that_would_overflow_the_clock_is_refused_not_a_crash() {
    let (code, _, stderr) = validate("[startup]\ntimeout = \"400000000000y\"\n", &[]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("startup.timeout"), "{stderr}");
    assert!(stderr.contains("longer than a day"), "{stderr}");
    let out = Command::new(bin())
        .args([
            "check",
            "http://127.0.0.1:9/healthz",
            "--timeout",
            "400000000000y",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error, not an abort");
    assert!(String::from_utf8_lossy(&out.stderr).contains("longer than a day"));
}

/// `vitals validate --config FILE` with `toml` in FILE, started with stdout and stderr piped, for
/// a test that closes one of them as a reader that goes away would. The directory holds FILE.
fn spawn_validate(toml: &str) -> (tempfile::TempDir, std::process::Child) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("health.toml");
    std::fs::write(&path, toml).unwrap();
    let child = Command::new(bin())
        .args(["validate", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    (dir, child)
}

#[test]
fn a_reader_that_goes_away_ends_validate_quietly() {
    // Like `vitals validate ... | head -0`: the pipe is closed before anything is written.
    let (_dir, mut child) = spawn_validate("[startup]\ntimeout = \"30s\"\n");
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// An error report whose reader went away (`vitals validate 2>&1 | head -0`): the exit status
/// still says what happened (64: the configuration), not an abort.
#[test]
fn a_reader_that_goes_away_leaves_validates_exit_status_as_it_is() {
    let (_dir, mut child) = spawn_validate("[server]\nlisten = \"everywhere\"\n");
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(64), "{status:?}");
}

#[test]
fn text_logs_carry_no_colour_escapes_when_stderr_is_not_a_terminal() {
    let mut child = Command::new(bin())
        .args(["--log-format", "text", "serve", "--listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("serving /healthz"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "colour escapes in {logs:?}");
}

#[test]
fn validate_offline_checks_the_file_without_the_secrets() {
    let toml = "[[dependencies]]\nname = \"llm\"\nkind = \"openai\"\nbase_url = \"https://api.openai.com/v1\"\napi_key_env = \"E2E_OFFLINE_KEY_NOT_SET\"\n";
    let (code, _, stderr) = validate(toml, &[]);
    assert_eq!(
        code,
        Some(64),
        "without --offline the secret must be set: {stderr}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("health.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(bin())
        .args(["validate", "--offline", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("secrets not read (--offline)"), "{stdout}");
    // Offline still finds every other problem.
    std::fs::write(&path, format!("{toml}interval = \"1ms\"\n")).unwrap();
    let out = Command::new(bin())
        .args(["validate", "--offline", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

/// ECS and Cloud Run mount no files: their renders hand vitals the configuration's text in
/// `VITALS_CONFIG_TOML`, and serve must run exactly that configuration.
#[tokio::test]
async fn serve_reads_the_configuration_from_vitals_config_toml() {
    let toml = "[[signals]]\nname = \"web-search\"\n[drain]\ndelay = \"0s\"\n";
    let vitals = vitals_test_util::VitalsProcess::start_inline(&bin(), toml, &[]);
    let status = crate::body(&vitals.url("/status")).await;
    assert!(status.contains("\"web-search\""), "{status}");
}

#[test]
fn a_file_and_vitals_config_toml_together_are_refused() {
    let (code, _, stderr) = run_with_file(
        &["serve", "--listen", "127.0.0.1:0"],
        "",
        &[("VITALS_CONFIG_TOML", "[drain]\ndelay = \"0s\"\n")],
    );
    assert_eq!(code, Some(64));
    assert!(
        stderr.contains("VITALS_CONFIG_TOML") && stderr.contains("--config"),
        "{stderr}"
    );
}

/// `VITALS_CONFIG_TOML` set but empty is a configuration that never arrived (an unfilled
/// parameter, a typo in the task definition), as an empty file is: refused, not served as the
/// defaults. Unset is how to serve without one.
#[test]
fn an_empty_vitals_config_toml_is_refused_not_served_as_defaults() {
    let out = Command::new(bin())
        .args(["validate", "--config", "/dev/null"])
        .env_remove("VITALS_CONFIG_TOML")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "an empty file, for comparison");
    for value in ["", " \n"] {
        // Under `timeout`: serving the defaults would run until stopped (exit 124 here).
        let out = Command::new("timeout")
            .arg("10")
            .arg(bin())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("VITALS_CONFIG_TOML", value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{value:?}: {stderr}");
        assert!(
            stderr.contains("VITALS_CONFIG_TOML is empty") && stderr.contains("unset it"),
            "{stderr}"
        );
    }
}

#[test]
fn a_bad_vitals_config_toml_names_its_source_and_key() {
    let out = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("VITALS_CONFIG_TOML", "[readiness]\ndegraded_status = 500\n")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("VITALS_CONFIG_TOML") && stderr.contains("readiness.degraded_status"),
        "{stderr}"
    );
}

/// A `ca_file` that is not there, or holds no certificate, is found by `validate` (and `serve`),
/// under its key, for the fleet, a Redis check, an HTTPS check, an LLM API and the gate alike.
#[test]
fn a_ca_file_that_cannot_be_used_is_refused_under_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not-a-cert.pem");
    std::fs::write(&not_pem, "just some text\n").unwrap();
    let toml = format!(
        r#"
        [fleet]
        redis_url = "rediss://redis.internal:6380/0"
        ca_file = "/nonexistent/fleet-ca.pem"
        [[dependencies]]
        name = "cache"
        kind = "redis"
        url = "rediss://cache.internal:6380/0"
        ca_file = "{pem}"
        [[dependencies]]
        name = "search"
        kind = "http"
        url = "https://search.internal/health"
        ca_file = "{pem}"
        [[dependencies]]
        name = "llm"
        kind = "openai"
        base_url = "https://vllm.internal/v1"
        ca_file = "/nonexistent/llm-ca.pem"
        [gate]
        listen = "127.0.0.1:0"
        upstream = "https://vllm.internal"
        max_concurrent = 2
        ca_file = "{pem}"
        "#,
        pem = not_pem.display()
    );
    let (code, _, stderr) = validate(&toml, &[]);
    assert_eq!(code, Some(64), "{stderr}");
    for want in [
        "fleet.ca_file: cannot read /nonexistent/fleet-ca.pem",
        "dependencies[0].ca_file: ",
        "dependencies[1].ca_file: ",
        "dependencies[2].ca_file: cannot read /nonexistent/llm-ca.pem",
        "gate.ca_file: ",
        "holds no PEM certificate",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
}

/// A `ca_file` naming something endless (a device) is refused under its key after a bound, not
/// read into memory for ever.
#[test]
fn a_ca_file_larger_than_any_bundle_is_refused_under_its_key() {
    let toml = "[gate]\nlisten = \"127.0.0.1:0\"\nupstream = \"https://vllm.internal\"\nmax_concurrent = 2\nca_file = \"/dev/zero\"\n";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("health.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new("timeout")
        .arg("20")
        .arg(bin())
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("gate.ca_file: /dev/zero is larger than"),
        "{stderr}"
    );
}

/// An empty file given to `--config` is a volume not written yet or the wrong mount, never a
/// configuration: after a moment's wait it is refused (validate and serve alike), instead of
/// serving the defaults as if the configuration had arrived.
#[test]
fn an_empty_config_file_is_refused_not_served_as_defaults() {
    let (code, _, err) = validate(" \n", &[]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("is empty"), "{err}");
    let (code, _, err) = run_with_file(&["serve", "--listen", "127.0.0.1:0"], "", &[]);
    assert_eq!(code, Some(64));
    assert!(err.contains("leave --config out"), "{err}");
}

/// `validate` passed and its summary names the dependency `db` the configuration holds.
fn assert_valid_with_db(out: &std::process::Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("db"), "{stdout}");
}

/// A ConfigMap volume shared by several pods can be read empty for a moment while it is being
/// written (seen with podman): the file is read again until it has content.
#[test]
fn a_config_file_written_just_after_start_is_the_one_used() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("health.toml");
    std::fs::write(&path, "").unwrap();
    let writer = {
        let path = path.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(400));
            std::fs::write(
                &path,
                "[[dependencies]]\nname = \"db\"\nkind = \"tcp\"\naddress = \"127.0.0.1:9\"\n",
            )
            .unwrap();
        })
    };
    let out = Command::new(bin())
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    writer.join().unwrap();
    assert_valid_with_db(&out);
}

/// The file is read once: what is checked for content is what is parsed and run. A pipe (a
/// generated configuration, `--config <(…)` or `--config /dev/stdin`) can only be read once,
/// and a ConfigMap being rewritten can change between two reads; a second read served the
/// defaults as if they were the configuration.
#[test]
fn the_config_file_is_read_once_so_a_pipe_is_not_served_as_defaults() {
    use std::io::Write;
    let mut child = Command::new(bin())
        .args(["validate", "--config", "/dev/stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"[[dependencies]]\nname = \"db\"\nkind = \"tcp\"\naddress = \"127.0.0.1:9\"\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_valid_with_db(&out);
}

/// `--config` pointed at something that never ends (a device, a log) is refused after a bound
/// instead of being read into memory for ever.
#[test]
fn a_config_file_larger_than_any_configuration_is_refused() {
    for command in [&["validate"][..], &["render", "kubernetes"]] {
        let out = Command::new("timeout")
            .arg("20")
            .arg(bin())
            .args(command)
            .args(["--config", "/dev/zero"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{command:?}: {stderr}");
        assert!(stderr.contains("/dev/zero is larger than"), "{stderr}");
    }
}

/// `validate`'s summary covers what the file sets up beside the checks: the gate (where it
/// listens, what it fronts, its limits, the CA it trusts) and the fleet's Redis.
#[test]
fn validate_summarises_the_gate_and_the_fleet() {
    let (code, stdout, stderr) = validate(
        r#"
        [gate]
        listen = "127.0.0.1:9000"
        upstream = "http://127.0.0.1:8000"
        max_concurrent = 4
        queue_depth = 8
        queue_timeout = "10s"
        request_timeout = "60s"
        [fleet]
        redis_url = "redis://redis.internal:6379/0"
        password_env = "REDIS_PASSWORD"
        "#,
        &[("REDIS_PASSWORD", "fleet-secret-3f9a")],
    );
    assert_eq!(code, Some(0), "{stderr}");
    for want in [
        "gate 127.0.0.1:9000 -> http://127.0.0.1:8000/: 4 at once, 8 more queued for up to 10s, an answer begun within 1m; readiness follows its circuit and queue",
        "fleet: results shared through redis://redis.internal:6379/0 (password from REDIS_PASSWORD), keys vitals:",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("fleet-secret-3f9a"), "{stdout}");
}

/// A fixed process port in the ephemeral range loads and runs, with a note naming the key and the
/// fix (a restart may find the port held by an outgoing connection); a port below it gets none.
#[test]
fn validate_advises_against_a_fixed_process_port_in_the_ephemeral_range() {
    let ephemeral = vitals_core::config::ephemeral_ports();
    let inside = ephemeral.start() + 100;
    let below = ephemeral.start() - 100;
    let toml = format!(
        "[[processes]]\nname = \"model\"\ncommand = [\"sleep\", \"60\"]\nenv = {{ PORT = \"{{port}}\" }}\nport = {inside}\n\n[[processes]]\nname = \"web\"\ncommand = [\"sleep\", \"60\"]\nenv = {{ PORT = \"{{port}}\" }}\nport = {below}\n"
    );
    let (code, stdout, stderr) = validate(&toml, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let notes: Vec<&str> = stdout.lines().filter(|l| l.contains("note:")).collect();
    assert_eq!(notes.len(), 1, "{stdout}");
    assert!(
        notes[0].contains(&format!(
            "processes[0].port {inside} is in the ephemeral port range"
        )) && notes[0].contains(&format!("a port below {}", ephemeral.start())),
        "{stdout}"
    );
}

/// Every TOML block in the README is what a reader copies first: each is valid as it stands,
/// with the environment variables it names set. The one thing a machine without the software
/// cannot give it is a command at its absolute path (`/usr/local/bin/llama-server`).
#[test]
fn the_readmes_toml_blocks_are_valid_as_written() {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
    )
    .unwrap();
    let mut blocks = Vec::new();
    let mut open: Option<String> = None;
    for line in readme.lines() {
        match (&mut open, line.trim_start()) {
            (None, "```toml") => open = Some(String::new()),
            (Some(_), "```") => blocks.extend(open.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(blocks.len() >= 5, "found {} TOML blocks", blocks.len());
    for block in &blocks {
        // Every quoted NAME_IN_CAPITALS is an environment variable the block reads.
        let vars: Vec<(&str, &str)> = block
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|s| {
                s.len() > 1
                    && s.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            })
            .map(|name| (name, "a-value"))
            .collect();
        let (code, stdout, stderr) = validate(block, &vars);
        let problems: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("  "))
            .filter(|l| !(l.contains(".command: /") && l.ends_with("does not exist")))
            .collect();
        assert!(
            problems.is_empty() && (code == Some(0) || stderr.contains("does not exist")),
            "README block refused ({code:?}):\n{block}\n{stdout}{stderr}"
        );
    }
}

/// `serve --listen` is where the probe routes are: what would collide with them is judged
/// there, not at the file's `server.listen` (nor its default, 8080, llama.cpp's default too).
#[test]
fn serve_judges_collisions_with_the_probe_server_at_its_listen_flag() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("health.toml");
    let check_port = |p: u16| {
        format!("[[processes]]\nname = \"model\"\ncommand = [\"sleep\", \"30\"]\nport = 8080\nhealth = \"none\"\n[[dependencies]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{p}/health\"\ncritical = false\n")
    };
    // Elsewhere than 8080, a process on 8080 and a check of it are fine: serve starts.
    std::fs::write(&path, check_port(8080)).unwrap();
    let mut serving = Command::new(bin())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--config",
        ])
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let up = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let early = serving.try_wait().unwrap();
    let _ = serving.kill();
    let out = serving.wait_with_output().unwrap();
    assert!(
        up && early.is_none(),
        "serve did not start ({early:?}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // At the flag's own port, the check would ask vitals about itself: refused, with the key.
    std::fs::write(&path, check_port(port)).unwrap();
    let out = Command::new(bin())
        .args(["serve", "--listen", &format!("0.0.0.0:{port}"), "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "dependencies[0]: \"web\" checks vitals' own probe server (server.listen = 0.0.0.0:{port})"
        )),
        "{stderr}"
    );
}
