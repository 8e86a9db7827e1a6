//! Vector-store and command checks against real Redis and PostgreSQL (started by
//! scripts/setup-test-deps), each reached through a proxy the test cuts to make it go away.

use std::process::Command;
use std::time::Duration;

use vitals_test_util::{postgres_addr, redis_addr, TcpProxy, VitalsProcess, POSTGRES_PASSWORD};

use crate::{bin, client, expect_body_within, expect_status_within};

fn redis_cli(args: &[&str]) {
    let addr = redis_addr();
    let (host, port) = addr.split_once(':').unwrap();
    let out = Command::new("redis-cli")
        .args(["-h", host, "-p", port])
        .args(args)
        .output()
        .expect("redis-cli (from Debian's redis-server package; run scripts/setup-test-deps)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_known_key_lookup_and_the_server_going_away() {
    redis_cli(&["SET", "vitals:e2e:doc42", "the known document"]);
    let proxy = TcpProxy::start(&redis_addr()).await;
    let config = format!(
        r#"
        [[dependencies]]
        name = "vectors"
        kind = "redis"
        url = "redis://{addr}/0"
        command = "EXISTS vitals:e2e:doc42"
        expect = "1"
        interval = "1s"
        timeout = "500ms"
        [[dependencies]]
        name = "cache"
        kind = "redis"
        url = "redis://{direct}/0"
        command = ["GET", "vitals:e2e:missing"]
        expect = "/^the known/"
        critical = false
        interval = "1s"
        timeout = "500ms"
        "#,
        addr = proxy.addr(),
        direct = redis_addr(),
    );
    let v = VitalsProcess::start(&bin(), &config, &[]);
    expect_body_within(
        &v.url("/readyz?verbose"),
        "[-]cache failed (non-critical): GET vitals:e2e:missing answered (nil), expected /^the known/",
        Duration::from_secs(5),
    )
    .await;
    let body = expect_body_within(
        &v.url("/readyz?verbose"),
        "[+]vectors ok",
        Duration::from_secs(5),
    )
    .await;
    assert!(body.contains("readyz check passed (degraded)"), "{body}");
    proxy.cut().await;
    expect_status_within(&v.url("/readyz"), 503, Duration::from_millis(1900)).await;
    let body = client()
        .get(v.url("/readyz/vectors"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("cannot connect") || body.contains("connection"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_known_row_lookup_and_the_server_going_away() {
    let proxy = TcpProxy::start(&postgres_addr()).await;
    let config = format!(
        r#"
        [[dependencies]]
        name = "pgvector"
        kind = "postgres"
        url = "postgres://vitals@{addr}/vitals"
        password_env = "E2E_PG_PASSWORD"
        query = "SELECT title FROM items WHERE id = 42"
        expect_rows = 1
        interval = "1s"
        timeout = "800ms"
        [[dependencies]]
        name = "catalog"
        kind = "postgres"
        url = "postgres://vitals@{direct}/vitals"
        password_env = "E2E_PG_PASSWORD"
        query = "SELECT title FROM items WHERE id = 7"
        expect_rows = 1
        critical = false
        interval = "1s"
        timeout = "800ms"
        [[dependencies]]
        name = "typo"
        kind = "postgres"
        url = "postgres://vitals@{direct}/vitals"
        password_env = "E2E_PG_PASSWORD"
        query = "SELECT 1 FROM itemz"
        critical = false
        interval = "1s"
        timeout = "800ms"
        "#,
        addr = proxy.addr(),
        direct = postgres_addr(),
    );
    let v = VitalsProcess::start(&bin(), &config, &[("E2E_PG_PASSWORD", POSTGRES_PASSWORD)]);
    expect_body_within(
        &v.url("/readyz?verbose"),
        "[-]catalog failed (non-critical): the query returned 0 rows, expected 1",
        Duration::from_secs(5),
    )
    .await;
    expect_body_within(
        &v.url("/readyz?verbose"),
        "[-]typo failed (non-critical): query failed",
        Duration::from_secs(5),
    )
    .await;
    let body = expect_body_within(
        &v.url("/readyz?verbose"),
        "[+]pgvector ok",
        Duration::from_secs(5),
    )
    .await;
    assert!(body.contains("readyz check passed (degraded)"), "{body}");
    assert!(
        body.contains("[-]typo failed (non-critical): query failed: relation \"itemz\" does not exist (42P01)"),
        "{body}"
    );
    proxy.cut().await;
    expect_status_within(&v.url("/readyz"), 503, Duration::from_millis(2200)).await;
    let status = client()
        .get(v.url("/status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!status.contains(POSTGRES_PASSWORD), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_exit_zero_is_healthy_and_a_failure_says_why() {
    let config = r#"
        [[dependencies]]
        name = "index"
        kind = "exec"
        command = ["/bin/true"]
        interval = "1s"
        timeout = "500ms"
        [[dependencies]]
        name = "reindex"
        kind = "exec"
        command = ["/bin/sh", "-c", "echo checking; echo index is 3 days stale >&2; exit 3"]
        critical = false
        interval = "1s"
        timeout = "500ms"
        [[dependencies]]
        name = "stuck"
        kind = "exec"
        command = ["/bin/sleep", "30"]
        critical = false
        interval = "1s"
        timeout = "300ms"
    "#;
    let v = VitalsProcess::start(&bin(), config, &[]);
    expect_body_within(
        &v.url("/readyz?verbose"),
        "[-]reindex failed (non-critical): /bin/sh",
        Duration::from_secs(5),
    )
    .await;
    let body = expect_body_within(
        &v.url("/readyz?verbose"),
        "[-]stuck failed (non-critical): timed out",
        Duration::from_secs(5),
    )
    .await;
    assert!(body.contains("[+]index ok"), "{body}");
    assert!(
        body.contains(
            "[-]reindex failed (non-critical): /bin/sh: exit status 3: index is 3 days stale"
        ),
        "{body}"
    );
    assert!(
        body.contains("[-]stuck failed (non-critical): timed out after 300ms"),
        "{body}"
    );
}

/// `rediss://`: a Redis that speaks TLS only, with a password. Trusted through `ca_file`, the
/// check passes; with the bundled public roots alone, the private CA is not trusted and the
/// check says so; the password appears nowhere.
#[tokio::test(flavor = "multi_thread")]
async fn rediss_verifies_the_server_against_the_ca_it_is_given() {
    let tls = vitals_test_util::TlsRedis::start();
    let config = format!(
        r#"
        [[dependencies]]
        name = "trusted"
        kind = "redis"
        url = "rediss://{addr}/0"
        password_env = "TLS_REDIS_PASSWORD"
        ca_file = "{ca}"
        interval = "2s"
        timeout = "1500ms"
        [[dependencies]]
        name = "public-roots"
        kind = "redis"
        url = "rediss://{addr}/0"
        password_env = "TLS_REDIS_PASSWORD"
        critical = false
        interval = "2s"
        timeout = "1500ms"
        [[dependencies]]
        name = "plain-server"
        kind = "redis"
        url = "rediss://{plain}/0"
        critical = false
        interval = "2s"
        timeout = "1s"
        "#,
        addr = tls.addr,
        ca = tls.ca_file.display(),
        plain = redis_addr(),
    );
    let v = VitalsProcess::start(&bin(), &config, &[("TLS_REDIS_PASSWORD", tls.password)]);
    // Each check's own result, not "no result yet".
    let checked = |body: &str, name: &str| {
        body.lines()
            .any(|l| l.contains(name) && !l.contains("no result yet"))
    };
    let body = crate::expect_body_where(
        &v.url("/readyz?verbose"),
        "a result of each check",
        Duration::from_secs(10),
        |b| checked(b, "trusted") && checked(b, "public-roots") && checked(b, "plain-server"),
    )
    .await;
    assert!(body.contains("[+]trusted ok"), "{body}");
    assert!(
        body.contains("[-]plain-server failed (non-critical): "),
        "{body}"
    );
    assert!(!body.contains("no result yet"), "{body}");
    assert!(
        body.contains("[-]public-roots failed (non-critical): cannot connect:"),
        "{body}"
    );
    let reason = body
        .lines()
        .find(|l| l.contains("public-roots"))
        .unwrap()
        .to_lowercase();
    assert!(
        reason.contains("certificate") || reason.contains("issuer"),
        "the reason names the certificate: {reason}"
    );
    assert!(body.contains("readyz check passed (degraded)"), "{body}");
    // Wrong password: refused, and the refusal does not echo it.
    drop(v);
    let v = VitalsProcess::start(
        &bin(),
        &config,
        &[("TLS_REDIS_PASSWORD", "wrong-password-77aa")],
    );
    let body = crate::expect_body_where(
        &v.url("/readyz?verbose"),
        "Redis' refusal",
        Duration::from_secs(10),
        |b| {
            b.lines()
                .any(|l| l.starts_with("[-]trusted failed") && !l.contains("no result yet"))
        },
    )
    .await;
    let refused = body
        .lines()
        .find(|l| l.starts_with("[-]trusted failed"))
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        refused.contains("password") || refused.contains("auth"),
        "Redis' refusal, not a missing result: {body}"
    );
    let status = crate::body(&v.url("/status")).await;
    let logs = v.logs().join("\n");
    for text in [&body, &status, &logs] {
        assert!(!text.contains(tls.password), "{text}");
        assert!(!text.contains("wrong-password"), "{text}");
    }
}
