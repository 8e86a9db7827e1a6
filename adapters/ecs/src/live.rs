//! Live ECS through aws-sdk-ecs: `apply` writes the rendered health settings into a new revision
//! of an existing task definition (every other field kept as it was), `status` reports the
//! health of a service's tasks.

use std::fmt;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecs::types::{
    ContainerDefinition, HealthCheck as EcsHealthCheck, TaskDefinition, TaskDefinitionField,
};
use aws_sdk_ecs::Client;
use serde::Serialize;
use vitals_core::spec::{Refusals, Workload};
use vitals_core::HealthSpec;

/// Attempts per call, including the first: throttling and transient errors back off in between.
const MAX_ATTEMPTS: u32 = 5;

/// Where and how to reach ECS.
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    /// A custom endpoint (moto, a VPC endpoint); default: the region's.
    pub url: Option<String>,
    /// Default: the standard chain (`AWS_REGION`, the profile).
    pub region: Option<String>,
}

/// A client on the standard credential chain (environment, profile, SSO, container, instance).
pub async fn client(endpoint: &Endpoint) -> Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS));
    if let Some(r) = &endpoint.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(u) = &endpoint.url {
        loader = loader.endpoint_url(u);
    }
    Client::new(&loader.load().await)
}

/// Why a live call failed, said so that the user can act.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The rendered settings break ECS's limits: nothing was called.
    #[error("{0}")]
    Refused(Refusals),
    #[error("{0}")]
    Aws(String),
    #[error("{0}")]
    NotFound(String),
}

/// Turns an SDK error into one line that names the cause and the fix.
fn explain<E>(action: &str, err: SdkError<E, aws_sdk_ecs::config::http::HttpResponse>) -> LiveError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if let SdkError::ServiceError(se) = &err {
        let e = se.err();
        let code = e.code().unwrap_or("");
        let message = e.message().unwrap_or("").to_owned();
        return LiveError::Aws(match code {
            "AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation" => format!(
                "access denied: the caller may not call ecs:{action}; allow ecs:{action} in its IAM policy ({message})"
            ),
            "ExpiredTokenException" | "ExpiredToken" | "RequestExpired" => {
                "the AWS credentials have expired; refresh them (aws sso login, or new STS credentials) and try again".to_owned()
            }
            "UnrecognizedClientException" | "InvalidClientTokenId" | "InvalidSignatureException" => format!(
                "AWS does not accept these credentials ({code}); check AWS_ACCESS_KEY_ID, AWS_PROFILE or the role"
            ),
            "ThrottlingException" | "TooManyRequestsException" => format!(
                "ECS throttled ecs:{action} through {MAX_ATTEMPTS} attempts with backoff; try again in a minute"
            ),
            "" => format!("ecs:{action} failed: {message}"),
            _ => format!("ecs:{action}: {code}: {message}"),
        });
    }
    let chain = root_chain(&err);
    let lower = chain.to_lowercase();
    LiveError::Aws(if lower.contains("credential") {
        "no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run where a role is attached".to_owned()
    } else if lower.contains("region") && lower.contains("not") {
        "no AWS region; set AWS_REGION or pass --region".to_owned()
    } else if matches!(err, SdkError::TimeoutError(_)) {
        format!("ecs:{action} timed out")
    } else {
        format!("cannot reach ECS for ecs:{action}: {chain}")
    })
}

fn root_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut cause = err.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !parts.contains(&s) {
            parts.push(s);
        }
        cause = c.source();
    }
    parts.join(": ")
}

/// One field that `apply` changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub field: String,
    pub before: String,
    pub after: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} -> {}", self.field, self.before, self.after)
    }
}

/// What `apply` did or would do.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    /// The revision read, as `family:revision`.
    pub from: String,
    pub container: String,
    pub changes: Vec<Change>,
    /// The new revision's ARN; `None` on a dry run or when nothing changed.
    pub registered: Option<String>,
    /// `cluster/service` pointed at the new revision.
    pub service_updated: Option<String>,
    /// Set when the startup budget exceeds `startPeriod`'s 300 s.
    pub grace_period_seconds: Option<i32>,
}

#[derive(Debug, Clone)]
pub struct ApplyRequest {
    pub task_definition: String,
    pub container: String,
    pub dry_run: bool,
    /// `cluster/service`.
    pub update_service: Option<String>,
}

fn show<T: fmt::Debug>(v: &Option<T>) -> String {
    match v {
        None => "(unset)".to_owned(),
        Some(v) => format!("{v:?}"),
    }
}

/// The container's health fields as vitals renders them, and the changes from `current`.
fn desired(
    current: &ContainerDefinition,
    plan: &crate::Plan,
) -> Result<(ContainerDefinition, Vec<Change>), LiveError> {
    let hc = &plan.health_check;
    let want = EcsHealthCheck::builder()
        .set_command(Some(hc.command.clone()))
        .interval(hc.interval as i32)
        .timeout(hc.timeout as i32)
        .retries(hc.retries as i32)
        .start_period(hc.start_period as i32)
        .build()
        .map_err(|e| LiveError::Aws(format!("cannot build the health check: {e}")))?;
    let have = current.health_check.as_ref();
    let mut changes = Vec::new();
    let mut diff = |field: &str, before: String, after: String| {
        if before != after {
            changes.push(Change {
                field: field.to_owned(),
                before,
                after,
            });
        }
    };
    diff(
        "healthCheck.command",
        show(&have.map(|h| h.command.clone())),
        show(&Some(want.command.clone())),
    );
    diff(
        "healthCheck.interval",
        show(&have.and_then(|h| h.interval)),
        show(&want.interval),
    );
    diff(
        "healthCheck.timeout",
        show(&have.and_then(|h| h.timeout)),
        show(&want.timeout),
    );
    diff(
        "healthCheck.retries",
        show(&have.and_then(|h| h.retries)),
        show(&want.retries),
    );
    diff(
        "healthCheck.startPeriod",
        show(&have.and_then(|h| h.start_period)),
        show(&want.start_period),
    );
    let stop = Some(plan.stop_timeout as i32);
    diff("stopTimeout", show(&current.stop_timeout), show(&stop));
    let mut next = current.clone();
    next.health_check = Some(want);
    next.stop_timeout = stop;
    Ok((next, changes))
}

/// Reads the task definition, replaces the named container's health fields with what vitals
/// renders from `spec`, and (unless a dry run, or nothing changed) registers the result as a new
/// revision, keeping every other field as it was. Refuses before any call when ECS would.
#[allow(deprecated)] // inference accelerators: deprecated by AWS, still copied as read
pub async fn apply(
    client: &Client,
    spec: &HealthSpec,
    workload: &Workload,
    request: &ApplyRequest,
) -> Result<Applied, LiveError> {
    let (plan, _notes) = crate::plan(spec, workload).map_err(LiveError::Refused)?;
    let described = client
        .describe_task_definition()
        .task_definition(&request.task_definition)
        .include(TaskDefinitionField::Tags)
        .send()
        .await
        .map_err(|e| {
            if let SdkError::ServiceError(se) = &e {
                if se.err().code() == Some("ClientException") {
                    return LiveError::NotFound(format!(
                        "task definition {} not found ({}); check the family and revision, or list them with `aws ecs list-task-definitions`",
                        request.task_definition,
                        se.err().message().unwrap_or("")
                    ));
                }
            }
            explain("DescribeTaskDefinition", e)
        })?;
    let tags = described.tags.clone();
    let td: TaskDefinition = described.task_definition.ok_or_else(|| {
        LiveError::NotFound(format!(
            "ECS returned no task definition for {}",
            request.task_definition
        ))
    })?;
    let from = format!("{}:{}", td.family.as_deref().unwrap_or("?"), td.revision);
    let containers = td.container_definitions.clone().unwrap_or_default();
    let Some(index) = containers
        .iter()
        .position(|c| c.name.as_deref() == Some(request.container.as_str()))
    else {
        let names: Vec<&str> = containers
            .iter()
            .filter_map(|c| c.name.as_deref())
            .collect();
        return Err(LiveError::NotFound(format!(
            "{from} has no container named {:?}; its containers: {}",
            request.container,
            names.join(", ")
        )));
    };
    let (container, changes) = desired(&containers[index], &plan)?;
    let budget = spec.startup_budget.as_secs_ceil();
    let grace = (budget > 300).then(|| i32::try_from(budget).unwrap_or(i32::MAX));
    let mut applied = Applied {
        from,
        container: request.container.clone(),
        changes,
        registered: None,
        service_updated: None,
        grace_period_seconds: grace,
    };
    if request.dry_run || applied.changes.is_empty() {
        return Ok(applied);
    }
    let mut new_containers = containers;
    new_containers[index] = container;
    // Every writable field of the revision read, as it was; only the container changed.
    let registered = client
        .register_task_definition()
        .set_family(td.family.clone())
        .set_task_role_arn(td.task_role_arn.clone())
        .set_execution_role_arn(td.execution_role_arn.clone())
        .set_network_mode(td.network_mode.clone())
        .set_container_definitions(Some(new_containers))
        .set_volumes(td.volumes.clone())
        .set_placement_constraints(td.placement_constraints.clone())
        .set_requires_compatibilities(td.requires_compatibilities.clone())
        .set_cpu(td.cpu.clone())
        .set_memory(td.memory.clone())
        .set_tags(tags.filter(|t| !t.is_empty()))
        .set_pid_mode(td.pid_mode.clone())
        .set_ipc_mode(td.ipc_mode.clone())
        .set_proxy_configuration(td.proxy_configuration.clone())
        .set_inference_accelerators(td.inference_accelerators.clone()) // kept as read, like the rest
        .set_ephemeral_storage(td.ephemeral_storage.clone())
        .set_runtime_platform(td.runtime_platform.clone())
        .set_enable_fault_injection(td.enable_fault_injection)
        .send()
        .await
        .map_err(|e| explain("RegisterTaskDefinition", e))?;
    let arn = registered
        .task_definition
        .and_then(|t| t.task_definition_arn)
        .ok_or_else(|| LiveError::Aws("ECS registered the revision but returned no ARN".into()))?;
    applied.registered = Some(arn.clone());
    if let Some(target) = &request.update_service {
        let (cluster, service) = split_service(target)?;
        client
            .update_service()
            .cluster(cluster)
            .service(service)
            .task_definition(&arn)
            .set_health_check_grace_period_seconds(grace)
            .send()
            .await
            .map_err(|e| explain("UpdateService", e))?;
        applied.service_updated = Some(target.clone());
    }
    Ok(applied)
}

/// `cluster/service`, or an error that shows the form.
pub fn split_service(target: &str) -> Result<(&str, &str), LiveError> {
    match target.split_once('/') {
        Some((c, s)) if !c.is_empty() && !s.is_empty() && !s.contains('/') => Ok((c, s)),
        _ => Err(LiveError::NotFound(format!(
            "{target:?} is not CLUSTER/SERVICE; write it like \"prod/agent\""
        ))),
    }
}

/// A service's tasks and deployments, for `vitals ecs status`.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub cluster: String,
    pub service: String,
    pub status: String,
    pub task_definition: String,
    pub desired: i32,
    pub running: i32,
    pub pending: i32,
    pub deployments: Vec<DeploymentStatus>,
    pub tasks: Vec<TaskStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeploymentStatus {
    pub status: String,
    pub rollout_state: String,
    pub task_definition: String,
    pub desired: i32,
    pub running: i32,
    pub failed_tasks: i32,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskStatus {
    pub task: String,
    pub task_definition: String,
    pub last_status: String,
    pub health: String,
    pub stopped_reason: Option<String>,
    pub containers: Vec<ContainerStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContainerStatus {
    pub name: String,
    pub last_status: String,
    pub health: String,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
}

impl ServiceStatus {
    /// A task whose health is UNHEALTHY: ECS derives it from its essential containers.
    pub fn any_unhealthy(&self) -> bool {
        self.tasks.iter().any(|t| t.health == "UNHEALTHY")
    }
}

/// The last part of an ARN: `.../task/prod/0123abcd` → `0123abcd`, `...:task-definition/agent:7` → `agent:7`.
fn short(arn: &str) -> String {
    arn.rsplit('/').next().unwrap_or(arn).to_owned()
}

pub async fn status(
    client: &Client,
    cluster: &str,
    service: &str,
) -> Result<ServiceStatus, LiveError> {
    let services = client
        .describe_services()
        .cluster(cluster)
        .services(service)
        .send()
        .await
        .map_err(|e| explain("DescribeServices", e))?;
    let Some(svc) = services.services.unwrap_or_default().into_iter().next() else {
        let why = services
            .failures
            .unwrap_or_default()
            .into_iter()
            .filter_map(|f| f.reason)
            .collect::<Vec<_>>()
            .join(", ");
        return Err(LiveError::NotFound(format!(
            "service {service} not found in cluster {cluster}{}",
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({why})")
            }
        )));
    };
    let arns = client
        .list_tasks()
        .cluster(cluster)
        .service_name(service)
        .send()
        .await
        .map_err(|e| explain("ListTasks", e))?
        .task_arns
        .unwrap_or_default();
    let mut tasks = Vec::new();
    if !arns.is_empty() {
        let described = client
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(arns))
            .send()
            .await
            .map_err(|e| explain("DescribeTasks", e))?;
        for t in described.tasks.unwrap_or_default() {
            tasks.push(TaskStatus {
                task: short(t.task_arn.as_deref().unwrap_or("?")),
                task_definition: short(t.task_definition_arn.as_deref().unwrap_or("?")),
                last_status: t.last_status.clone().unwrap_or_default(),
                health: t
                    .health_status
                    .as_ref()
                    .map(|h| h.as_str().to_owned())
                    .unwrap_or_else(|| "UNKNOWN".into()),
                stopped_reason: t.stopped_reason.clone().filter(|r| !r.is_empty()),
                containers: t
                    .containers
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| ContainerStatus {
                        name: c.name.unwrap_or_default(),
                        last_status: c.last_status.unwrap_or_default(),
                        health: c
                            .health_status
                            .map(|h| h.as_str().to_owned())
                            .unwrap_or_else(|| "UNKNOWN".into()),
                        exit_code: c.exit_code,
                        reason: c.reason,
                    })
                    .collect(),
            });
        }
    }
    Ok(ServiceStatus {
        cluster: cluster.to_owned(),
        service: service.to_owned(),
        status: svc.status.unwrap_or_default(),
        task_definition: short(svc.task_definition.as_deref().unwrap_or("?")),
        desired: svc.desired_count,
        running: svc.running_count,
        pending: svc.pending_count,
        deployments: svc
            .deployments
            .unwrap_or_default()
            .into_iter()
            .map(|d| DeploymentStatus {
                status: d.status.unwrap_or_default(),
                rollout_state: d
                    .rollout_state
                    .map(|r| r.as_str().to_owned())
                    .unwrap_or_else(|| "-".into()),
                task_definition: short(d.task_definition.as_deref().unwrap_or("?")),
                desired: d.desired_count,
                running: d.running_count,
                failed_tasks: d.failed_tasks,
            })
            .collect(),
        tasks,
    })
}

impl fmt::Display for ServiceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "service {}/{}: {}, task definition {}, {} running / {} desired ({} pending)",
            self.cluster,
            self.service,
            self.status,
            self.task_definition,
            self.running,
            self.desired,
            self.pending
        )?;
        for d in &self.deployments {
            writeln!(
                f,
                "  deployment {} ({}): {}, {} running / {} desired, {} failed tasks",
                d.status, d.rollout_state, d.task_definition, d.running, d.desired, d.failed_tasks
            )?;
        }
        if self.tasks.is_empty() {
            return writeln!(f, "  no tasks");
        }
        writeln!(
            f,
            "{:<36} {:<18} {:<14} {:<10} containers",
            "TASK", "REVISION", "STATUS", "HEALTH"
        )?;
        for t in &self.tasks {
            let containers: Vec<String> = t
                .containers
                .iter()
                .map(|c| {
                    let mut s = format!("{}={}/{}", c.name, c.last_status, c.health);
                    if let Some(code) = c.exit_code {
                        s.push_str(&format!(" exit {code}"));
                    }
                    if let Some(r) = &c.reason {
                        s.push_str(&format!(" ({r})"));
                    }
                    s
                })
                .collect();
            writeln!(
                f,
                "{:<36} {:<18} {:<14} {:<10} {}",
                t.task,
                t.task_definition,
                t.last_status,
                t.health,
                containers.join(", ")
            )?;
            if let Some(r) = &t.stopped_reason {
                writeln!(f, "  stopped: {r}")?;
            }
        }
        Ok(())
    }
}
