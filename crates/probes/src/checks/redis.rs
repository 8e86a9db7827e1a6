//! `kind = "redis"`: a read command (default `PING`) whose reply must match `expect`: a
//! known-key lookup that exercises the store, not just its port.

use std::path::Path;

use redis::Value;
use vitals_core::config::RedisCheck;
use vitals_core::lifecycle::Outcome;
use vitals_core::Secret;

use super::{failed, scrubbed, BuildError};

#[derive(Debug)]
pub struct RedisChecker {
    client: redis::Client,
    check: RedisCheck,
}

/// Why a Redis client could not be made: its URL, its CA file, or opening it.
#[derive(Debug)]
pub(crate) enum ClientError {
    Url(redis::RedisError),
    Ca(String),
    Open(redis::RedisError),
}

/// A client for `url` with `password` (kept out of the URL, where logs and errors would show
/// it). `rediss://` verifies the server's certificate against `ca_file`'s authorities, or else
/// the bundled public roots (the same as HTTPS checks use, so an image without a system store
/// still works).
pub(crate) fn client(
    url: &str,
    password: Option<&Secret>,
    ca_file: Option<&Path>,
) -> Result<redis::Client, ClientError> {
    let mut info =
        redis::IntoConnectionInfo::into_connection_info(url).map_err(ClientError::Url)?;
    if let Some(p) = password {
        let settings = info.redis_settings().clone().set_password(p.expose());
        info = info.set_redis_settings(settings);
    }
    let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
    if tls {
        // rustls picks no provider when more than one is linked in (an agent may link another):
        // choose ring, unless the program already chose.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    match ca_file {
        Some(path) if tls => {
            let pem = vitals_core::tls::read_ca(path).map_err(ClientError::Ca)?;
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
            .map_err(|e| ClientError::Ca(format!("{}: {e}", path.display())))
        }
        _ => redis::Client::open(info).map_err(ClientError::Open),
    }
}

impl RedisChecker {
    pub fn new(name: &str, check: &RedisCheck) -> Result<Self, BuildError> {
        let client = client(
            check.url.as_str(),
            check.password.as_ref(),
            check.ca_file.as_deref(),
        )
        .map_err(|e| {
            let (key, reason) = match e {
                ClientError::Url(e) => ("url", format!("redis url: {e}")),
                ClientError::Ca(reason) => ("ca_file", reason),
                ClientError::Open(e) => ("", e.to_string()),
            };
            BuildError {
                name: name.to_owned(),
                key,
                reason,
            }
        })?;
        Ok(RedisChecker {
            client,
            check: check.clone(),
        })
    }

    pub async fn check(&self) -> Outcome {
        scrubbed(self.run().await, self.check.password.as_ref())
    }

    async fn run(&self) -> Outcome {
        let mut con = match self.client.get_multiplexed_async_connection().await {
            Ok(c) => c,
            Err(e) => return failed(format!("cannot connect: {}", self.short(&e))),
        };
        let mut cmd = redis::cmd(&self.check.command[0]);
        for arg in &self.check.command[1..] {
            cmd.arg(arg);
        }
        let reply: Value = match cmd.query_async(&mut con).await {
            Ok(v) => v,
            Err(e) => {
                return failed(format!(
                    "{} failed: {}",
                    self.check.command[0].to_uppercase(),
                    self.short(&e)
                ))
            }
        };
        let text = render(&reply);
        match &self.check.expect {
            None => Outcome::Success,
            Some(expect) if expect.matches_exactly(&text) => Outcome::Success,
            Some(expect) => failed(format!(
                "{} answered {}, expected {expect}",
                self.check.command.join(" "),
                self.clip(&text)
            )),
        }
    }
}

/// A reply as text: integers as digits, strings as themselves, nil as `(nil)`.
fn render(v: &Value) -> String {
    match v {
        Value::Nil => "(nil)".into(),
        Value::Int(i) => i.to_string(),
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".into(),
        Value::Array(items) | Value::Set(items) => {
            items.iter().map(render).collect::<Vec<_>>().join(" ")
        }
        Value::Double(d) => d.to_string(),
        Value::Boolean(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

impl RedisChecker {
    fn short(&self, e: &redis::RedisError) -> String {
        let s = e.to_string();
        if s.contains("Connection refused") {
            "connection refused".into()
        } else {
            self.clip(&s)
        }
    }

    /// The first 80 characters, with the password scrubbed before the cut.
    fn clip(&self, s: &str) -> String {
        match &self.check.password {
            Some(p) => clip(&p.scrub(s)),
            None => clip(s),
        }
    }
}

fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    format!("{out:?}").trim_matches('"').to_owned()
}
