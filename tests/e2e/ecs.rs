//! `vitals ecs apply|status` against moto's ECS endpoint (real SDK, real protocol) and against a
//! mock that counts each call and plays each AWS error.

use std::path::Path;
use std::process::{Command, Output};

use mockito::Matcher;
use vitals_test_util::MotoServer;

use crate::{bin, DEFAULTS};

const TARGET: &str = "x-amz-target";
fn op(name: &str) -> String {
    format!("AmazonEC2ContainerServiceV20141113.{name}")
}

fn vitals_ecs(env: &[(&str, String)], args: &[&str]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.arg("ecs").args(args);
    // Only what the test gives: no profile, no instance metadata, no stray credentials.
    for k in [
        "AWS_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_ECS",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("AWS_CONFIG_FILE", "/nonexistent/vitals-test")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/vitals-test");
    cmd.env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write_config(dir: &Path, toml: &str) -> String {
    let p = dir.join("health.toml");
    std::fs::write(&p, toml).unwrap();
    p.display().to_string()
}

/// A realistic task definition: two containers, secrets, environment, volumes, mount points,
/// logging, tags, roles, task-level cpu and memory.
const REGISTER: &str = r#"
td = dict(
    family="agent",
    taskRoleArn="arn:aws:iam::123456789012:role/agent-task",
    executionRoleArn="arn:aws:iam::123456789012:role/agent-exec",
    networkMode="bridge",
    cpu="1024",
    memory="2048",
    volumes=[{"name": "models", "host": {"sourcePath": "/srv/models"}}],
    tags=[{"key": "team", "value": "agents"}, {"key": "cost-center", "value": "ai-42"}],
    containerDefinitions=[
        {
            "name": "agent",
            "image": "registry.example.com/agent:1.0.0",
            "essential": True,
            "memoryReservation": 1024,
            "portMappings": [{"containerPort": 8000, "protocol": "tcp"}],
            "environment": [{"name": "MODE", "value": "prod"}],
            "secrets": [{"name": "OPENAI_API_KEY", "valueFrom": "arn:aws:secretsmanager:us-east-1:123456789012:secret:openai"}],
            "mountPoints": [{"sourceVolume": "models", "containerPath": "/models", "readOnly": True}],
            "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/agents", "awslogs-region": "us-east-1", "awslogs-stream-prefix": "agent"}},
            "healthCheck": {"command": ["CMD-SHELL", "curl -f http://localhost:8000/ || exit 1"], "interval": 30, "timeout": 5, "retries": 3},
        },
        {
            "name": "vitals",
            "image": "registry.example.com/vitals:0.1.0",
            "essential": True,
            "memoryReservation": 64,
            "command": ["serve", "--config", "/etc/vitals/health.toml"],
            "portMappings": [{"containerPort": 8080, "protocol": "tcp"}],
            "secrets": [{"name": "VITALS_ADMIN", "valueFrom": "arn:aws:ssm:us-east-1:123456789012:parameter/vitals-admin"}],
        },
    ],
)
r = ecs.register_task_definition(**td)
print(json.dumps(r["taskDefinition"]["revision"]))
"#;

fn describe(moto: &MotoServer, which: &str) -> serde_json::Value {
    moto.boto3(&format!(
        "d = ecs.describe_task_definition(taskDefinition='{which}', include=['TAGS'])\nd.pop('ResponseMetadata')\nprint(json.dumps(d, default=str))"
    ))
}

/// Everything but the fields `apply` may change and the ones ECS sets itself.
fn without_health_and_readonly(mut d: serde_json::Value) -> serde_json::Value {
    let td = d["taskDefinition"].as_object_mut().unwrap();
    for k in [
        "taskDefinitionArn",
        "revision",
        "status",
        "requiresAttributes",
        "compatibilities",
        "registeredAt",
        "registeredBy",
    ] {
        td.remove(k);
    }
    for c in td["containerDefinitions"].as_array_mut().unwrap() {
        if c["name"] == "vitals" {
            let c = c.as_object_mut().unwrap();
            c.remove("healthCheck");
            c.remove("stopTimeout");
        }
    }
    d
}

#[test]
fn apply_registers_a_revision_that_changes_only_the_health_fields() {
    let moto = MotoServer::start();
    assert_eq!(moto.boto3(REGISTER), 1);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[startup]\ntimeout = \"6m\"\n[drain]\ndelay = \"5s\"\ngrace = \"25s\"\n",
    );
    let env = moto.env();
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.clone())).collect();
    let url = moto.url();
    let apply = |td: &str, extra: &[&str]| {
        let mut args = vec!["apply", "--config", &cfg, "--task-definition", td];
        args.extend(["--container", "vitals", "--endpoint-url", &url]);
        args.extend(extra);
        vitals_ecs(&env, &args)
    };

    // A dry run shows the diff and registers nothing.
    let out = apply("agent", &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("healthCheck.interval: (unset) -> 10"),
        "{stdout}"
    );
    assert!(stdout.contains("stopTimeout: (unset) -> 30"), "{stdout}");
    assert!(stdout.contains("dry run: nothing registered"), "{stdout}");
    assert_eq!(describe(&moto, "agent")["taskDefinition"]["revision"], 1);

    let before = describe(&moto, "agent:1");
    let out = apply("agent:1", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("registered arn:aws:ecs:us-east-1:123456789012:task-definition/agent:2"),
        "{stdout}"
    );
    assert!(
        stdout.contains("healthCheckGracePeriodSeconds = 360"),
        "{stdout}"
    );

    let after = describe(&moto, "agent:2");
    let vitals = after["taskDefinition"]["containerDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "vitals")
        .unwrap()
        .clone();
    assert_eq!(
        vitals["healthCheck"],
        serde_json::json!({
            "command": ["CMD", "/usr/local/bin/vitals", "check", "http://127.0.0.1:8080/healthz", "--timeout", "1750ms"],
            "interval": 10, "timeout": 2, "retries": 3, "startPeriod": 300
        })
    );
    assert_eq!(vitals["stopTimeout"], 30);
    // Everything else, the agent container's own health check included, is as it was.
    assert_eq!(
        without_health_and_readonly(before),
        without_health_and_readonly(after)
    );

    // Applying again changes nothing and registers nothing.
    let out = apply("agent", &[]);
    assert!(
        text(&out.stdout).contains("already match health.toml; nothing registered"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(describe(&moto, "agent")["taskDefinition"]["revision"], 2);
}

#[test]
fn status_lists_the_tasks_of_a_service() {
    let moto = MotoServer::start();
    // moto launches no tasks for a service, and its ListTasks ignores serviceName: the task is
    // run by hand in the service's cluster (bridge networking and container memory are moto's
    // RunTask workarounds).
    let task = moto.boto3(
        r#"
ecs.create_cluster(clusterName="prod")
ecs.register_task_definition(family="agent", networkMode="bridge", containerDefinitions=[
    {"name": "agent", "image": "a:1", "memoryReservation": 256, "essential": True},
    {"name": "vitals", "image": "v:1", "memoryReservation": 64, "essential": True,
     "healthCheck": {"command": ["CMD", "/usr/local/bin/vitals", "check", "http://127.0.0.1:8080/healthz"], "interval": 10, "timeout": 2, "retries": 3}}])
ecs.create_service(cluster="prod", serviceName="agent", taskDefinition="agent", desiredCount=1)
r = ecs.run_task(cluster="prod", taskDefinition="agent", count=1, launchType="FARGATE")
print(json.dumps(r["tasks"][0]["taskArn"].rsplit("/", 1)[1]))
"#,
    );
    let env: Vec<(&str, String)> = moto.env().iter().map(|(k, v)| (*k, v.clone())).collect();
    let out = vitals_ecs(
        &env,
        &[
            "status",
            "--cluster",
            "prod",
            "--service",
            "agent",
            "--endpoint-url",
            &moto.url(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.contains("service prod/agent: ACTIVE, task definition agent:1"),
        "{table}"
    );
    // moto moves the task through its states as it is described; the row and its containers
    // are what this shows.
    let row = table
        .lines()
        .find(|l| l.starts_with(task.as_str().unwrap()))
        .unwrap_or_else(|| panic!("no row for task {task}:\n{table}"));
    assert!(row.contains(" agent:1 ") && row.contains("agent="), "{row}");

    let out = vitals_ecs(
        &env,
        &[
            "status",
            "--cluster",
            "prod",
            "--service",
            "agent",
            "--endpoint-url",
            &moto.url(),
            "--output",
            "json",
        ],
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(json["tasks"][0]["task"], task);
    assert!(!json["tasks"][0]["containers"]
        .as_array()
        .unwrap()
        .is_empty());

    let out = vitals_ecs(
        &env,
        &[
            "status",
            "--cluster",
            "prod",
            "--service",
            "nope",
            "--endpoint-url",
            &moto.url(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("service nope not found in cluster prod"),
        "{}",
        text(&out.stderr)
    );
}

fn static_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "AKIDTEST".into()),
        ("AWS_SECRET_ACCESS_KEY", "secret".into()),
        ("AWS_REGION", "us-east-1".into()),
    ]
}

const DESCRIBED: &str = r#"{"taskDefinition":{"taskDefinitionArn":"arn:aws:ecs:us-east-1:1:task-definition/agent:3","family":"agent","revision":3,"status":"ACTIVE","containerDefinitions":[{"name":"vitals","image":"v:1","essential":true}]},"tags":[]}"#;

/// A mock of one ECS operation (`None`: any request) answering `status` with `body`, expected
/// `hits` times when given (mockito reads the expectation when the mock is created).
async fn ecs_mock(
    aws: &mut mockito::ServerGuard,
    operation: Option<&str>,
    status: usize,
    body: &str,
    hits: Option<usize>,
) -> mockito::Mock {
    let mut m = aws.mock("POST", "/");
    if let Some(op_name) = operation {
        m = m.match_header(TARGET, op(op_name).as_str());
    }
    if let Some(n) = hits {
        m = m.expect(n);
    }
    m.with_status(status)
        .with_header("content-type", "application/x-amz-json-1.1")
        .with_body(body)
        .create_async()
        .await
}

/// `vitals ecs apply --config <toml> --task-definition <td> --container <c> <extra>` against `url`.
async fn apply_against(
    url: String,
    toml: &str,
    td: &str,
    container: &str,
    extra: &[&str],
) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), toml);
    let mut args: Vec<String> = [
        "apply",
        "--config",
        &cfg,
        "--task-definition",
        td,
        "--container",
        container,
        "--endpoint-url",
        &url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        vitals_ecs(&static_env(), &args)
    })
    .await
    .unwrap()
}

/// describe, register, update-service: each exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn apply_makes_exactly_the_calls_it_needs() {
    let mut aws = mockito::Server::new_async().await;
    let describe = ecs_mock(
        &mut aws,
        Some("DescribeTaskDefinition"),
        200,
        DESCRIBED,
        Some(1),
    )
    .await;
    let register = aws
        .mock("POST", "/")
        .match_header(TARGET, op("RegisterTaskDefinition").as_str())
        .match_body(Matcher::PartialJson(serde_json::json!({"family": "agent", "containerDefinitions": [{"name": "vitals", "stopTimeout": 25}]})))
        .with_status(200)
        .with_header("content-type", "application/x-amz-json-1.1")
        .with_body(r#"{"taskDefinition":{"taskDefinitionArn":"arn:aws:ecs:us-east-1:1:task-definition/agent:4","revision":4}}"#)
        .expect(1)
        .create_async()
        .await;
    let update = aws
        .mock("POST", "/")
        .match_header(TARGET, op("UpdateService").as_str())
        .match_body(Matcher::PartialJson(serde_json::json!({"cluster": "prod", "service": "agent", "taskDefinition": "arn:aws:ecs:us-east-1:1:task-definition/agent:4"})))
        .with_status(200)
        .with_header("content-type", "application/x-amz-json-1.1")
        .with_body(r#"{"service":{}}"#)
        .expect(1)
        .create_async()
        .await;
    let out = apply_against(
        aws.url(),
        DEFAULTS,
        "agent",
        "vitals",
        &["--update-service", "prod/agent"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("service prod/agent now uses it"));
    describe.assert_async().await;
    register.assert_async().await;
    update.assert_async().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_range_settings_are_refused_before_any_call() {
    let mut aws = mockito::Server::new_async().await;
    let any = aws
        .mock("POST", Matcher::Any)
        .expect(0)
        .create_async()
        .await;
    let toml =
        "[probes]\nliveness = { period = \"10s\", timeout = \"2s\", failure_threshold = 24 }\n";
    let out = apply_against(aws.url(), toml, "agent", "vitals", &[]).await;
    assert_eq!(out.status.code(), Some(64));
    let err = text(&out.stderr);
    assert!(
        err.contains("ecs: healthCheck.retries = 24 exceeds 10"),
        "{err}"
    );
    any.assert_async().await;
}

/// Each AWS error, as the user reads it.
#[tokio::test(flavor = "multi_thread")]
async fn aws_errors_say_what_to_do() {
    let cases: &[(&str, &str, &str)] = &[
        ("AccessDeniedException", "User: arn:aws:iam::1:user/ci is not authorized to perform: ecs:DescribeTaskDefinition", "access denied: the caller may not call ecs:DescribeTaskDefinition; allow ecs:DescribeTaskDefinition in its IAM policy"),
        ("ExpiredTokenException", "The security token included in the request is expired", "the AWS credentials have expired; refresh them"),
        ("ClientException", "Unable to describe task definition.", "task definition agent:9 not found (Unable to describe task definition.)"),
        ("InvalidParameterException", "Task definition family must match ^[a-zA-Z0-9_-]+$", "ecs:DescribeTaskDefinition: InvalidParameterException: Task definition family must match"),
        ("UnrecognizedClientException", "The security token included in the request is invalid.", "AWS does not accept these credentials (UnrecognizedClientException)"),
    ];
    for (code, message, want) in cases {
        let mut aws = mockito::Server::new_async().await;
        let body = serde_json::json!({"__type": code, "message": message}).to_string();
        let _m = ecs_mock(&mut aws, None, 400, &body, None).await;
        let out = apply_against(aws.url(), DEFAULTS, "agent:9", "vitals", &[]).await;
        assert_eq!(out.status.code(), Some(1), "{code}");
        assert!(
            text(&out.stderr).contains(want),
            "{code}: {}",
            text(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_container_names_the_ones_there() {
    let mut aws = mockito::Server::new_async().await;
    let _m = ecs_mock(
        &mut aws,
        Some("DescribeTaskDefinition"),
        200,
        DESCRIBED,
        None,
    )
    .await;
    let out = apply_against(aws.url(), DEFAULTS, "agent", "sidecar", &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("agent:3 has no container named \"sidecar\"; its containers: vitals"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_is_retried_with_backoff_then_explained() {
    let mut aws = mockito::Server::new_async().await;
    let throttled = ecs_mock(
        &mut aws,
        None,
        400,
        r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
        Some(5),
    )
    .await;
    let out = apply_against(aws.url(), DEFAULTS, "agent", "vitals", &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("ECS throttled ecs:DescribeTaskDefinition through 5 attempts with backoff"),
        "{err}"
    );
    throttled.assert_async().await;
}

#[test]
fn no_credentials_says_where_they_come_from() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), DEFAULTS);
    let out = vitals_ecs(
        &[("AWS_REGION", "us-east-1".into())],
        &[
            "apply",
            "--config",
            &cfg,
            "--task-definition",
            "agent",
            "--container",
            "vitals",
            "--endpoint-url",
            "http://127.0.0.1:9",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no AWS credentials found"),
        "{}",
        text(&out.stderr)
    );
}
