//! `[fleet]`: Redis, shared by the instances of one deployment.

use super::Errors;
use crate::config::raw::*;
use crate::config::*;

pub(super) fn fleet(
    e: &mut Errors,
    raw: RawFleet,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Fleet> {
    let before = e.0.len();
    let redis_url = match raw.redis_url.as_deref() {
        None => {
            e.push(
                "fleet.redis_url",
                "missing; set the Redis every instance reaches, such as \"redis://redis.internal:6379/0\"",
            );
            None
        }
        Some(s) => match url::Url::parse(s) {
            // Never echo the value: it may hold a password.
            Err(_) => {
                e.push(
                    "fleet.redis_url",
                    "is not a URL; write it like \"redis://redis.internal:6379/0\"",
                );
                None
            }
            Ok(u) if u.password().is_some() || !u.username().is_empty() => {
                e.push(
                    "fleet.redis_url",
                    "holds credentials; remove them from the URL and name the environment variable that holds the password in fleet.password_env",
                );
                None
            }
            Ok(u) if u.scheme() != "redis" && u.scheme() != "rediss" => {
                e.push(
                    "fleet.redis_url",
                    format!(
                        "the scheme is \"{}\"; use redis://, or rediss:// for TLS",
                        u.scheme()
                    ),
                );
                None
            }
            Ok(u) if u.host_str().is_none_or(str::is_empty) => {
                e.push(
                    "fleet.redis_url",
                    "names no host; write it like \"redis://redis.internal:6379/0\"",
                );
                None
            }
            Ok(u) => Some(u),
        },
    };
    let password = raw
        .password_env
        .as_deref()
        .and_then(|var| e.env_secret("fleet.password_env", var, env));
    let key_prefix_set = raw.key_prefix.is_some();
    let key_prefix = raw
        .key_prefix
        .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
    if key_prefix.is_empty()
        || key_prefix.len() > 100
        || key_prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        e.push(
            "fleet.key_prefix",
            "must be 1 to 100 characters without spaces, such as \"vitals:checkout-agent\"",
        );
    }
    let ca_file = redis_url
        .as_ref()
        .and_then(|u| super::checks::ca_file(e, "fleet.ca_file", u, raw.ca_file.as_ref()));
    if e.0.len() > before {
        return None;
    }
    Some(Fleet {
        redis_url: redis_url?,
        password_env: raw.password_env,
        password,
        ca_file,
        key_prefix,
        key_prefix_set,
    })
}
