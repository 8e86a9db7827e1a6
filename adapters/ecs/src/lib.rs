//! Amazon ECS: a task definition whose container health check runs `vitals check` (the `CMD`
//! form: no curl and no shell, so it works in distroless images), the ALB target group's health
//! check on `/readyz`, and the service's deployment settings, all from a [`HealthSpec`].
//!
//! - liveness → `healthCheck` (interval 5–300, timeout 2–60, retries 1–10), `startPeriod` ≤ 300;
//!   a longer startup budget goes to the service's `healthCheckGracePeriodSeconds`, with a note;
//! - readiness → target group health check (interval strictly greater than timeout, thresholds
//!   2–10, a matcher that accepts the degraded status);
//! - drain → `stopTimeout` (Fargate ≤ 120) = delay + grace, deregistration delay = grace.

#[cfg(feature = "live")]
pub mod live;

use serde::Serialize;
use serde_json::json;
use vitals_core::spec::{Layout, Limits, Refusals, Rendered, Workload};
use vitals_core::HealthSpec;

pub const PLATFORM: &str = "ecs";

/// The container health check: the shape of ECS's `HealthCheck`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    pub command: Vec<String>,
    pub interval: u64,
    pub timeout: u64,
    pub retries: u64,
    pub start_period: u64,
}

/// What an adapter run decides; the files are written from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub health_check: HealthCheck,
    pub stop_timeout: u64,
    pub grace_period: u64,
    pub target_group: TargetGroup,
}

/// The ELBv2 target group's health check (the `CreateTargetGroup` input's names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TargetGroup {
    pub health_check_protocol: &'static str,
    pub health_check_path: String,
    pub health_check_port: String,
    pub health_check_interval_seconds: u64,
    pub health_check_timeout_seconds: u64,
    pub healthy_threshold_count: u64,
    pub unhealthy_threshold_count: u64,
    pub matcher: Matcher,
    #[serde(skip)]
    pub deregistration_delay: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Matcher {
    pub http_code: String,
}

const START_PERIOD_MAX: u64 = 300;
/// CreateTargetGroup's `Name` limit.
const TARGET_GROUP_NAME_MAX: usize = 32;
const FARGATE_STOP_TIMEOUT_MAX: u64 = 120;

/// Decides every value and refuses what ECS or ELBv2 would refuse.
pub fn plan(spec: &HealthSpec, workload: &Workload) -> Result<(Plan, Vec<String>), Refusals> {
    let mut l = Limits::new(PLATFORM);
    let mut notes = Vec::new();
    if spec.agent_heartbeat && workload.layout == Layout::Sidecar {
        notes.push("ecs: with agent.heartbeat = \"required\", a hung agent fails the vitals container's health command; that container is essential, so ECS replaces the whole task, the agent with it".into());
    }
    // CreateTargetGroup: at most 32 characters, and not starting with "internal-".
    if workload.name.len() > TARGET_GROUP_NAME_MAX {
        l.refuse(
            "target group Name",
            &workload.name,
            format!(
                "is {} characters; an ELB target group name has at most {TARGET_GROUP_NAME_MAX}",
                workload.name.len()
            ),
            "--name",
            format!("pass a --name of {TARGET_GROUP_NAME_MAX} characters or fewer for ecs"),
        );
    } else if workload.name.starts_with("internal-") {
        l.refuse(
            "target group Name",
            &workload.name,
            "may not begin with \"internal-\"",
            "--name",
            "pass a --name that does not begin with internal-",
        );
    }
    let live = &spec.liveness;

    let interval = l.whole_secs("healthCheck.interval", live.period, &live.key("period"));
    l.range(
        "healthCheck.interval",
        interval,
        (5, 300),
        &live.key("period"),
        "raise probes.liveness.period to 5s or more",
        "lower probes.liveness.period to 300s or less",
    );
    let timeout = l.whole_secs("healthCheck.timeout", live.timeout, &live.key("timeout"));
    l.range(
        "healthCheck.timeout",
        timeout,
        (2, 60),
        &live.key("timeout"),
        "raise probes.liveness.timeout to 2s or more",
        "lower probes.liveness.timeout to 60s or less",
    );
    let retries = u64::from(live.failure_threshold);
    l.range(
        "healthCheck.retries",
        retries,
        (1, 10),
        &live.key("failure_threshold"),
        "raise it to 1 or more",
        "lower it or raise probes.liveness.period",
    );
    let budget = spec.startup_budget.as_secs_ceil();
    let start_period = budget.min(START_PERIOD_MAX);
    if budget > START_PERIOD_MAX {
        notes.push(format!(
            "ecs: the startup budget ({}s, startup.timeout) exceeds healthCheck.startPeriod's limit of {START_PERIOD_MAX}s; startPeriod is {START_PERIOD_MAX} and the service's healthCheckGracePeriodSeconds ({budget}) covers the rest: keep it when you create or update the service",
            budget
        ));
    }

    let stop_timeout = spec.stop_budget().as_secs_ceil();
    l.range(
        "containerDefinitions[].stopTimeout",
        stop_timeout,
        (2, FARGATE_STOP_TIMEOUT_MAX),
        "drain.delay, drain.grace",
        "raise drain.grace so that drain.delay + drain.grace is at least 2s",
        "lower drain.delay + drain.grace to 120s or less (Fargate's limit)",
    );

    let ready = &spec.readiness;
    let tg_interval = l.whole_secs(
        "HealthCheckIntervalSeconds",
        ready.period,
        &ready.key("period"),
    );
    l.range(
        "HealthCheckIntervalSeconds",
        tg_interval,
        (5, 300),
        &ready.key("period"),
        "raise probes.readiness.period to 5s or more",
        "lower probes.readiness.period to 300s or less",
    );
    let tg_timeout = l.whole_secs(
        "HealthCheckTimeoutSeconds",
        ready.timeout,
        &ready.key("timeout"),
    );
    l.range(
        "HealthCheckTimeoutSeconds",
        tg_timeout,
        (2, 120),
        &ready.key("timeout"),
        "raise probes.readiness.timeout to 2s or more",
        "lower probes.readiness.timeout to 120s or less",
    );
    if tg_interval <= tg_timeout {
        l.refuse(
            "HealthCheckIntervalSeconds",
            tg_interval,
            format!("must be greater than HealthCheckTimeoutSeconds ({tg_timeout})"),
            format!("{}, {}", ready.key("period"), ready.key("timeout")),
            "make probes.readiness.timeout shorter than probes.readiness.period",
        );
    }
    // ELBv2 wants at least 2 successes. Asking for more than configured only delays adding
    // traffic, never removing it, so 1 becomes 2 with a note instead of a refusal.
    let healthy = u64::from(ready.success_threshold).max(2);
    if ready.success_threshold < 2 {
        notes.push(format!(
            "ecs: HealthyThresholdCount is 2, the target group's minimum (probes.readiness.success_threshold = {})",
            ready.success_threshold
        ));
    }
    l.range(
        "HealthyThresholdCount",
        healthy,
        (2, 10),
        &ready.key("success_threshold"),
        "",
        "lower it to 10 or less",
    );
    let unhealthy = u64::from(ready.failure_threshold);
    l.range(
        "UnhealthyThresholdCount",
        unhealthy,
        (2, 10),
        &ready.key("failure_threshold"),
        "raise it to 2 or more",
        "lower it to 10 or less",
    );
    let http_code = match spec.degraded_status {
        200..=299 => "200-299".to_string(),
        code => format!("200-299,{code}"),
    };
    if !(200..=499).contains(&spec.degraded_status) {
        l.refuse(
            "Matcher.HttpCode",
            spec.degraded_status,
            "is outside 200-499",
            "readiness.degraded_status",
            "use 200 or 429",
        );
    }
    let deregistration_delay = spec.drain_grace.as_secs_ceil();
    l.range(
        "deregistration_delay.timeout_seconds",
        deregistration_delay,
        (0, 3600),
        "drain.grace",
        "",
        "lower drain.grace to 3600s or less",
    );

    // `vitals check` gives up a quarter second before ECS would kill it, so a slow answer is
    // reported with its own reason ("timed out after 1.75s") rather than as a killed command.
    let check_timeout_ms = timeout.saturating_mul(1000).saturating_sub(250).max(250);
    let command = vec![
        "CMD".to_string(),
        workload.vitals_path.clone(),
        "check".to_string(),
        format!(
            "http://127.0.0.1:{}{}",
            spec.port,
            vitals_core::spec::LIVENESS_PATH
        ),
        "--timeout".to_string(),
        format!("{check_timeout_ms}ms"),
    ];
    let plan = Plan {
        health_check: HealthCheck {
            command,
            interval,
            timeout,
            retries,
            start_period,
        },
        stop_timeout,
        grace_period: budget,
        target_group: TargetGroup {
            health_check_protocol: "HTTP",
            // ECS replaces tasks its target group calls unhealthy: only what a new task can
            // cure may fail this check (see `Scope::Instance`).
            health_check_path: format!("{}?scope=instance", vitals_core::spec::READINESS_PATH),
            health_check_port: match workload.layout {
                Layout::Embedded => "traffic-port".into(),
                Layout::Sidecar | Layout::Entrypoint => spec.port.to_string(),
            },
            health_check_interval_seconds: tg_interval,
            health_check_timeout_seconds: tg_timeout,
            healthy_threshold_count: healthy,
            unhealthy_threshold_count: unhealthy,
            matcher: Matcher { http_code },
            deregistration_delay,
        },
    };
    if workload.one_container() {
        notes.push(format!(
            "ecs: the health command runs {} inside the agent's image; ship the vitals binary there (it is static, and `vitals check` needs no shell)",
            workload.vitals_path
        ));
    }
    l.finish((plan, notes))
}

/// Stand-ins for what only the user's account knows; the notes say to replace them.
const PLACEHOLDER_VPC: &str = "vpc-REPLACE-ME";
const PLACEHOLDER_SUBNET: &str = "subnet-REPLACE-ME";
const PLACEHOLDER_SECURITY_GROUP: &str = "sg-REPLACE-ME";
const PLACEHOLDER_EXECUTION_ROLE: &str = "arn:aws:iam::ACCOUNT:role/ecsTaskExecutionRole";

/// The Secrets Manager secret a variable comes from: `NAME/VARIABLE`.
fn secret_arn(workload: &Workload, var: &str) -> String {
    format!(
        "arn:aws:secretsmanager:REGION:ACCOUNT:secret:{}/{var}",
        workload.name
    )
}

/// Renders the API inputs: `task-definition.json` (`RegisterTaskDefinition`),
/// `target-group.json` (`CreateTargetGroup`), `target-group-attributes.json`
/// (`ModifyTargetGroupAttributes`) and `service.json` (`CreateService`); and
/// `container-health-check.json`, the probe container's definition to merge into an existing
/// task definition.
pub fn render(spec: &HealthSpec, workload: &Workload) -> Result<Rendered, Refusals> {
    let (plan, notes) = plan(spec, workload)?;
    let mut probe_container = json!({
        "name": workload.probe_container(),
        "image": match workload.layout {
            Layout::Sidecar => &workload.vitals_image,
            Layout::Embedded | Layout::Entrypoint => &workload.image,
        },
        "essential": true,
        "portMappings": [{ "containerPort": spec.port, "protocol": "tcp" }],
        "healthCheck": plan.health_check,
        "stopTimeout": plan.stop_timeout,
    });
    if workload.layout == Layout::Entrypoint {
        // vitals replaces the image's entrypoint and runs the agent's command itself.
        probe_container["entryPoint"] = json!([workload.vitals_path]);
        probe_container["portMappings"] = json!([
            { "containerPort": workload.agent_port, "protocol": "tcp" },
            { "containerPort": spec.port, "protocol": "tcp" },
        ]);
    }
    if workload.delivers_config() {
        // ECS mounts no files: the configuration travels as text in VITALS_CONFIG_TOML, and
        // each secret comes from Secrets Manager (through the task's execution role).
        probe_container["command"] = json!(workload.vitals_args(false));
        let mut environment: Vec<serde_json::Value> = workload
            .config_toml
            .iter()
            .map(|toml| json!({ "name": vitals_core::contract::CONFIG_TOML_ENV, "value": toml }))
            .collect();
        environment.extend(
            workload
                .vitals_env
                .iter()
                .map(|(name, value)| json!({ "name": name, "value": value })),
        );
        if !environment.is_empty() {
            probe_container["environment"] = json!(environment);
        }
        if !workload.secret_env.is_empty() {
            probe_container["secrets"] = workload
                .secret_env
                .iter()
                .map(|var| json!({ "name": var, "valueFrom": secret_arn(workload, var) }))
                .collect();
        }
    }
    let containers = match workload.layout {
        Layout::Embedded | Layout::Entrypoint => vec![probe_container.clone()],
        Layout::Sidecar => vec![
            json!({
                "name": workload.name,
                "image": workload.image,
                "essential": true,
                "portMappings": [{ "containerPort": workload.agent_port, "protocol": "tcp" }],
                "stopTimeout": plan.stop_timeout,
                "dependsOn": [{ "containerName": "vitals", "condition": "START" }],
            }),
            probe_container.clone(),
        ],
    };
    let mut task_definition = json!({
        "family": workload.name,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "1024",
        "memory": "2048",
        "containerDefinitions": containers,
    });
    let secrets = workload.delivers_config() && !workload.secret_env.is_empty();
    if secrets {
        // The agent pulls secrets with the execution role, which needs
        // secretsmanager:GetSecretValue on them.
        task_definition["executionRoleArn"] = json!(PLACEHOLDER_EXECUTION_ROLE);
    }
    let tg = &plan.target_group;
    let target_group = json!({
        "Name": workload.name,
        "Protocol": "HTTP",
        "Port": workload.traffic_port(spec),
        "TargetType": "ip",
        "HealthCheckEnabled": true,
        "HealthCheckProtocol": tg.health_check_protocol,
        "HealthCheckPath": tg.health_check_path,
        "HealthCheckPort": tg.health_check_port,
        "HealthCheckIntervalSeconds": tg.health_check_interval_seconds,
        "HealthCheckTimeoutSeconds": tg.health_check_timeout_seconds,
        "HealthyThresholdCount": tg.healthy_threshold_count,
        "UnhealthyThresholdCount": tg.unhealthy_threshold_count,
        "Matcher": tg.matcher,
        "VpcId": PLACEHOLDER_VPC,
    });
    // Attributes are not CreateTargetGroup's: they are set afterwards, on the group's ARN.
    let target_group_arn = format!(
        "arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/{}/ID",
        workload.name
    );
    let target_group_attributes = json!({
        "TargetGroupArn": target_group_arn,
        "Attributes": [{
            "Key": "deregistration_delay.timeout_seconds",
            "Value": tg.deregistration_delay.to_string(),
        }],
    });
    let service = json!({
        "serviceName": workload.name,
        "taskDefinition": workload.name,
        "desiredCount": 2,
        "launchType": "FARGATE",
        "healthCheckGracePeriodSeconds": plan.grace_period,
        // awsvpc (which Fargate requires) needs the task's subnets and security groups.
        "networkConfiguration": {
            "awsvpcConfiguration": {
                "subnets": [PLACEHOLDER_SUBNET],
                "securityGroups": [PLACEHOLDER_SECURITY_GROUP],
                "assignPublicIp": "DISABLED",
            },
        },
        "loadBalancers": [{
            "targetGroupArn": target_group_arn,
            "containerName": workload.name,
            "containerPort": workload.traffic_port(spec),
        }],
        "deploymentConfiguration": {
            "minimumHealthyPercent": 100,
            "maximumPercent": 200,
            "deploymentCircuitBreaker": { "enable": true, "rollback": true },
        },
    });
    let mut rendered = Rendered::default();
    rendered.file("task-definition.json", pretty(&task_definition));
    rendered.file("container-health-check.json", pretty(&probe_container));
    rendered.file("target-group.json", pretty(&target_group));
    rendered.file(
        "target-group-attributes.json",
        pretty(&target_group_attributes),
    );
    rendered.file("service.json", pretty(&service));
    rendered.notes = notes;
    if secrets {
        rendered.notes.push(format!(
            "ecs: the {} container reads {} from Secrets Manager ({}); create them, and give the execution role ({PLACEHOLDER_EXECUTION_ROLE}) secretsmanager:GetSecretValue on them",
            workload.probe_container(),
            workload.secret_env.join(", "),
            workload
                .secret_env
                .iter()
                .map(|v| secret_arn(workload, v))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if workload.delivers_config() && workload.config_toml.is_some() {
        rendered.notes.push(format!(
            "ecs: health.toml travels in the {} container's {} variable (ECS mounts no files); render again after editing it",
            workload.probe_container(),
            vitals_core::contract::CONFIG_TOML_ENV
        ));
    }
    rendered.notes.push(format!(
        "ecs: the target group checks {} — ECS replaces tasks its target group calls unhealthy, so only causes local to a task (a loopback dependency, an exec check, startup, drain) fail it; a shared critical dependency down (an LLM provider) turns every task degraded, not replaced, and AgentNotReady still fires from vitals_ready",
        plan.target_group.health_check_path
    ));
    rendered.notes.push(format!(
        "ecs: target-group.json is a CreateTargetGroup input, target-group-attributes.json a ModifyTargetGroupAttributes input and service.json a CreateService input; replace {PLACEHOLDER_VPC}, {PLACEHOLDER_SUBNET}, {PLACEHOLDER_SECURITY_GROUP} and the target group ARN's REGION, ACCOUNT and ID with your own"
    ));
    Ok(rendered)
}

fn pretty(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("json values serialize");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests;
