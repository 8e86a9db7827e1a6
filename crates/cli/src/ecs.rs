//! `vitals ecs apply|status`: live ECS through aws-sdk-ecs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use vitals_core::spec::Workload;
use vitals_core::HealthSpec;
use vitals_ecs::live::{self, ApplyRequest, Endpoint, LiveError};

use crate::EXIT_CONFIG;

#[derive(Debug, Subcommand)]
pub enum EcsCommand {
    /// Write the rendered health settings into a new revision of a task definition.
    ///
    /// Reads FAMILY[:REVISION], replaces the named container's healthCheck and stopTimeout with
    /// what `vitals render ecs` renders from health.toml, keeps every other field (other
    /// containers, volumes, secrets, tags, roles) exactly, registers the result and prints its
    /// ARN and what changed. Nothing is registered when nothing changes. Out-of-range settings
    /// are refused before any call.
    Apply(ApplyArgs),
    /// Show every task of a service: status, health, each container's health and exit reason,
    /// the revision, and the service's deployments. Exits 1 when a task is UNHEALTHY.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct Connection {
    /// ECS endpoint, for tests or private endpoints (default: the region's).
    #[arg(long, env = "AWS_ENDPOINT_URL_ECS", value_name = "URL")]
    endpoint_url: Option<String>,
    /// AWS region (default: AWS_REGION or the profile's).
    #[arg(long)]
    region: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The health configuration (TOML).
    #[arg(long, short, env = "VITALS_CONFIG", value_name = "FILE")]
    config: PathBuf,
    /// The task definition to read: FAMILY (the latest ACTIVE revision) or FAMILY:REVISION.
    #[arg(long, value_name = "FAMILY[:REV]")]
    task_definition: String,
    /// The container whose health settings change (the one that runs vitals).
    #[arg(long, value_name = "NAME")]
    container: String,
    /// Print what would change; register nothing.
    #[arg(long)]
    dry_run: bool,
    /// Then point CLUSTER/SERVICE at the new revision (and set its health-check grace period
    /// when the startup budget exceeds 300 s).
    #[arg(long, value_name = "CLUSTER/SERVICE")]
    update_service: Option<String>,
    /// Path of the vitals binary in that container's image (the health command runs it).
    #[arg(long, default_value = "/usr/local/bin/vitals")]
    vitals_path: String,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long)]
    cluster: String,
    #[arg(long)]
    service: String,
    #[command(flatten)]
    connection: Connection,
}

fn endpoint(c: &Connection) -> Endpoint {
    Endpoint {
        url: c.endpoint_url.clone(),
        region: c.region.clone(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

fn fail(e: LiveError) -> ExitCode {
    match e {
        LiveError::Refused(r) => {
            report!("error: settings ECS would refuse; nothing was called:");
            for r in &r.0 {
                report!("  {r}");
            }
            ExitCode::from(EXIT_CONFIG)
        }
        other => {
            report!("error: {other}");
            ExitCode::FAILURE
        }
    }
}

pub fn run(command: EcsCommand) -> ExitCode {
    match command {
        EcsCommand::Apply(args) => apply(args),
        EcsCommand::Status(args) => status(args),
    }
}

fn apply(args: ApplyArgs) -> ExitCode {
    // Only the health settings are applied; the container keeps its own configuration.
    let config = match crate::config::load_for_render(&args.config) {
        Ok((c, _, _)) => c,
        Err(code) => return code,
    };
    if let Some(target) = &args.update_service {
        if let Err(e) = live::split_service(target) {
            return fail(e);
        }
    }
    let spec = HealthSpec::from_config(&config);
    let workload = Workload {
        vitals_path: args.vitals_path.clone(),
        ..Workload::default()
    };
    let request = ApplyRequest {
        task_definition: args.task_definition.clone(),
        container: args.container.clone(),
        dry_run: args.dry_run,
        update_service: args.update_service.clone(),
    };
    let result = runtime().block_on(async {
        let client = live::client(&endpoint(&args.connection)).await;
        live::apply(&client, &spec, &workload, &request).await
    });
    let applied = match result {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    if args.connection.output == Output::Json {
        out!(
            "{}",
            serde_json::to_string_pretty(&applied).expect("serializable")
        );
        return ExitCode::SUCCESS;
    }
    if applied.changes.is_empty() {
        out!(
            "{} container {}: health settings already match health.toml; nothing registered",
            applied.from,
            applied.container
        );
        return ExitCode::SUCCESS;
    }
    out!("{} container {}:", applied.from, applied.container);
    for c in &applied.changes {
        out!("  {c}");
    }
    match &applied.registered {
        None => out!("dry run: nothing registered"),
        Some(arn) => out!("registered {arn}"),
    }
    if let Some(s) = &applied.service_updated {
        out!("service {s} now uses it");
    }
    if let Some(g) = applied.grace_period_seconds {
        let how = if applied.service_updated.is_some() {
            "set"
        } else {
            "set it on the service (--update-service does)"
        };
        out!("the startup budget exceeds startPeriod's 300s: healthCheckGracePeriodSeconds = {g} ({how})");
    }
    ExitCode::SUCCESS
}

fn status(args: StatusArgs) -> ExitCode {
    let result = runtime().block_on(async {
        let client = live::client(&endpoint(&args.connection)).await;
        live::status(&client, &args.cluster, &args.service).await
    });
    let status = match result {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    match args.connection.output {
        Output::Json => out!(
            "{}",
            serde_json::to_string_pretty(&status).expect("serializable")
        ),
        Output::Text => crate::write_text(&status.to_string()),
    }
    if status.any_unhealthy() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
