//! The `vitals` binary: `serve` (the sidecar), `validate`, `check` and `render`.

/// `println!` for the commands' output, for a reader that may go away: `vitals validate | head -1`
/// closes the pipe early, and `println!` would panic on it. A closed stdout ends the process
/// quietly, as a reader that has seen enough expects.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_out(format_args!($($arg)*))
    };
}

/// `eprintln!` for errors and notes, for a reader that may go away: `eprintln!` panics on a
/// closed stderr (`vitals validate 2>&1 | head -0`), and the release build aborts on a panic, so
/// the exit status that says what went wrong would be lost. A line that cannot be written is
/// dropped.
macro_rules! report {
    ($($arg:tt)*) => {
        $crate::write_err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// [`report!`] without the newline, for a text that ends with its own.
macro_rules! report_text {
    ($($arg:tt)*) => {
        $crate::write_err(format_args!($($arg)*))
    };
}

mod check;
mod config;
#[cfg(feature = "ecs-live")]
mod ecs;
mod logging;
mod render;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Health probes for AI agents that orchestrators can trust.
///
/// vitals runs beside an agent (or inside it) and serves /healthz (liveness from an in-process
/// heartbeat), /readyz (readiness from a cached background check of the agent's dependencies),
/// /startupz, /status, /metrics and POST /drain.
#[derive(Debug, Parser)]
#[command(name = "vitals", version, propagate_version = true, after_help = EXAMPLES)]
struct Cli {
    /// Log format on stderr. The level comes from RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "VITALS_LOG_FORMAT")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "\
Examples:
  vitals serve                                  no dependencies: ready at once on 0.0.0.0:8080
  vitals serve --config health.toml             check the dependencies health.toml lists
  vitals serve --config health.toml -- python agent.py
                                                entrypoint mode: run and supervise the agent
  vitals validate --config health.toml          report every configuration problem, then exit
  VITALS_DRAIN__DELAY=10s vitals serve          any key can come from VITALS_<SECTION>__<KEY>
  vitals check http://127.0.0.1:8080/healthz    the container health command (ECS, Docker)
  vitals render kubernetes --config health.toml print a Deployment with matching probes
  vitals render all --config health.toml --out deploy/
                                                every platform's files under deploy/<platform>/
  vitals ecs apply --config health.toml --task-definition agent --container vitals --dry-run
                                                what a new revision would change, before it does

Exit status: 0 on success, 64 for an invalid configuration, 1 for other errors.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the probe routes and check dependencies in the background.
    ///
    /// Without --config, the configuration's text may come in VITALS_CONFIG_TOML (for platforms
    /// that mount no files: ECS, Cloud Run); with neither there are no dependencies and the
    /// instance is ready at once. On SIGTERM
    /// or SIGINT (or POST /drain) /readyz turns 503 while /healthz stays 200 for drain.delay, then
    /// in-flight requests get drain.grace, then vitals exits 0. A second signal exits at once.
    Serve {
        /// The health configuration (TOML). Keys can also come from VITALS_<SECTION>__<KEY>.
        #[arg(long, short, env = "VITALS_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Listen address, overriding server.listen (such as 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// Entrypoint mode: run the agent itself as the supervised process `agent`. On SIGTERM
        /// it gets SIGTERM after drain.delay and SIGKILL after drain.grace; vitals exits with its
        /// exit status, and reaps orphaned processes (it can be a container's PID 1).
        #[arg(last = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Check a configuration and report every problem with its key path; exit 0 or 64.
    Validate {
        /// The health configuration (TOML).
        #[arg(long, short, env = "VITALS_CONFIG", value_name = "FILE")]
        config: PathBuf,
        /// Do not read the secrets that `*_env` keys name (a CI lint, where they are not set);
        /// everything else is checked as for serve.
        #[arg(long)]
        offline: bool,
    },
    /// Fetch URL once and exit 0 on 2xx/3xx, 1 otherwise: the container health command.
    ///
    /// A minimal HTTP/1.1 client with no shell, curl or TLS, so it runs in distroless images:
    /// `["CMD", "/usr/local/bin/vitals", "check", "http://127.0.0.1:8080/healthz"]`. The reason
    /// for a failure goes to stderr on one line.
    Check {
        /// The URL to fetch (http:// only).
        url: String,
        /// Give up after this long (connect, send and read together).
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        timeout: std::time::Duration,
    },
    /// Render health.toml into a platform's probe settings, refusing what the platform refuses.
    ///
    /// kubernetes: a Deployment (or --patch) with startup, liveness and readiness probes and a
    /// drain-sized grace period. nomad: a job in HCL and JSON for the Consul or the Nomad
    /// provider. ecs: a task definition with a `vitals check` health command, the target group
    /// and service settings. cloudrun: a Knative Service for `gcloud run services replace`.
    /// alerts: Prometheus rules with a promtool test file. dashboard: a Grafana dashboard.
    /// Exits 64, writing nothing, when a platform would refuse a setting; each refusal names the
    /// platform field, the limit, the health.toml key and a fix.
    Render(render::RenderArgs),
    /// Live ECS: apply the health settings to a task definition, or show a service's health.
    #[cfg(feature = "ecs-live")]
    #[command(subcommand)]
    Ecs(ecs::EcsCommand),
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    s.parse::<vitals_core::Duration>().map(Into::into)
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// `EX_USAGE` from sysexits.h: the configuration is wrong.
pub const EXIT_CONFIG: u8 = 64;

/// Writes to stderr, dropping what cannot be written; see [`report!`].
pub fn write_err(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = std::io::stderr().lock().write_fmt(text);
}

/// Writes one line of output; see [`out!`].
pub fn write_out(line: std::fmt::Arguments<'_>) {
    write_text(&format!("{line}\n"));
}

/// Writes `text` as it is to stdout; a closed stdout ends the process quietly (see [`out!`]).
pub fn write_text(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        report!("error: cannot write the output: {e}");
        std::process::exit(1);
    }
}

/// The log's writer thread, once started: flushed, within a bound, before the process exits.
static LOG: std::sync::OnceLock<logging::Log> = std::sync::OnceLock::new();

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: in a container, escapes end up in the log store.
    // A log whose reader went away (a log shipper restarting, `vitals serve 2>&1 | head`) loses
    // its lines, not vitals: tracing-subscriber would report the failed write with `eprintln!`,
    // which panics on the same broken stderr (and the release build aborts on a panic).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .log_internal_errors(false);
    // A reader that stops reading and stays costs lines, never a thread (see `logging`).
    let log = logging::start(std::io::stderr());
    let writer = match log {
        Some(log) => {
            let _ = LOG.set(log.clone());
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(log)
        }
        None => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
    };
    let builder = builder.with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Waits up to a second for the log's last lines to be written.
fn flush_log() {
    if let Some(log) = LOG.get() {
        log.flush(std::time::Duration::from_secs(1));
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The health command runs every few seconds in every container: no logging set-up.
    if let Command::Check { url, timeout } = &cli.command {
        return check::run(url, *timeout);
    }
    init_logging(cli.log_format);
    let code = run(cli.command);
    flush_log();
    code
}

fn run(command: Command) -> ExitCode {
    match command {
        Command::Check { .. } => unreachable!("handled above"),
        Command::Render(args) => render::run(&args),
        #[cfg(feature = "ecs-live")]
        Command::Ecs(command) => ecs::run(command),
        Command::Validate { config, offline } => config::validate_command(&config, offline),
        Command::Serve {
            config,
            listen,
            command,
        } => {
            let config =
                match config::Source::from_args(config).and_then(|s| config::load(&s, listen)) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
            let path = std::env::var("PATH").ok();
            if let Some(problem) = command
                .first()
                .and_then(|program| vitals_core::config::program_problem(program, path.as_deref()))
            {
                report!("error: the agent's command (after --): {problem}");
                return ExitCode::from(EXIT_CONFIG);
            }
            serve::run(config, command)
        }
    }
}
