//! The `vitals` binary: `serve` (the sidecar) and `validate`.

mod config;
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
  vitals validate --config health.toml          report every configuration problem, then exit
  VITALS_DRAIN__DELAY=10s vitals serve          any key can come from VITALS_<SECTION>__<KEY>

Exit status: 0 on success, 64 for an invalid configuration, 1 for other errors.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the probe routes and check dependencies in the background.
    ///
    /// Without --config there are no dependencies and the instance is ready at once. On SIGTERM
    /// or SIGINT (or POST /drain) /readyz turns 503 while /healthz stays 200 for drain.delay, then
    /// in-flight requests get drain.grace, then vitals exits 0. A second signal exits at once.
    Serve {
        /// The health configuration (TOML). Keys can also come from VITALS_<SECTION>__<KEY>.
        #[arg(long, short, env = "VITALS_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Listen address, overriding server.listen (such as 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Check a configuration and report every problem with its key path; exit 0 or 64.
    Validate {
        /// The health configuration (TOML).
        #[arg(long, short, env = "VITALS_CONFIG", value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// `EX_USAGE` from sysexits.h: the configuration is wrong.
pub const EXIT_CONFIG: u8 = 64;

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Validate { config } => config::validate_command(&config),
        Command::Serve { config, listen } => {
            let config = match config::load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            serve::run(config, listen)
        }
    }
}
