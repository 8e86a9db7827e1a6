//! `kind = "http"`: a GET or HEAD that must answer an expected status, and optionally contain a
//! substring in the first 64 KiB of its body.

use reqwest::header::{HeaderMap, HeaderValue as ReqHeaderValue};
use vitals_core::config::{ExpectJson, HeaderValue, HttpCheck, HttpMethod};
use vitals_core::lifecycle::Outcome;
use vitals_core::Secret;

use super::{failed, root_cause, BuildError};

/// How much of a body is read at most: enough for any health document, bounded for a hostile one.
const BODY_LIMIT: usize = 64 * 1024;

#[derive(Debug)]
pub struct HttpChecker {
    client: reqwest::Client,
    url: reqwest::Url,
    method: HttpMethod,
    expect_status: Vec<u16>,
    expect_body: Option<String>,
    expect_json: Option<ExpectJson>,
    headers: HeaderMap,
    secrets: Vec<Secret>,
}

impl HttpChecker {
    pub fn new(dependency: &str, check: &HttpCheck) -> Result<Self, BuildError> {
        let mut headers = HeaderMap::new();
        let mut secrets = Vec::new();
        for (name, value) in &check.headers {
            let v = match value {
                HeaderValue::Plain(v) => ReqHeaderValue::from_str(v),
                HeaderValue::Secret(s) => {
                    secrets.push(s.clone());
                    ReqHeaderValue::from_str(s.expose()).map(|mut v| {
                        v.set_sensitive(true);
                        v
                    })
                }
            };
            let v = v.map_err(|_| BuildError {
                name: dependency.to_owned(),
                key: if matches!(value, HeaderValue::Secret(_)) {
                    "headers_env"
                } else {
                    "headers"
                },
                reason: format!(
                    "the value of header {name} has characters a header cannot carry (a newline, say)"
                ),
            })?;
            headers.insert(name.clone(), v);
        }
        // No client timeout: the poller bounds every check with the dependency's timeout, and one
        // clock keeps the reason the same ("timed out after 300ms") whichever phase was slow.
        let builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("vitals/", env!("CARGO_PKG_VERSION")));
        let client = trusting(builder, check.ca_file.as_deref())
            .map_err(|reason| BuildError {
                name: dependency.to_owned(),
                key: "ca_file",
                reason,
            })?
            .build()
            .map_err(|e| BuildError {
                name: dependency.to_owned(),
                key: "",
                reason: root_cause(&e),
            })?;
        Ok(HttpChecker {
            client,
            url: check.url.clone(),
            method: check.method,
            expect_status: check.expect_status.clone(),
            expect_body: check.expect_body.clone(),
            expect_json: check.expect_json.clone(),
            headers,
            secrets,
        })
    }

    pub async fn check(&self) -> Outcome {
        let outcome = self.run().await;
        match outcome {
            Outcome::Failed { reason } => failed(self.scrub(reason)),
            other => other,
        }
    }

    fn scrub(&self, mut reason: String) -> String {
        for s in &self.secrets {
            reason = s.scrub(&reason);
        }
        reason
    }

    async fn run(&self) -> Outcome {
        let method = match self.method {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Head => reqwest::Method::HEAD,
        };
        let response = match self
            .client
            .request(method, self.url.clone())
            .headers(self.headers.clone())
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return failed(describe_reqwest_error(&e)),
        };
        let status = response.status().as_u16();
        let html = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("html"));
        let status_ok = if self.expect_status.is_empty() {
            (200..300).contains(&status)
        } else {
            self.expect_status.contains(&status)
        };
        if !status_ok {
            let expected = if self.expect_status.is_empty() {
                "2xx".to_owned()
            } else {
                self.expect_status
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(" or ")
            };
            return failed(format!(
                "HTTP {status} (expected {expected}){}",
                if html { ", an HTML error page" } else { "" }
            ));
        }
        if self.expect_body.is_none() && self.expect_json.is_none() {
            return Outcome::Success;
        }
        let body = match read_bounded(response, BODY_LIMIT).await {
            Ok(body) => body,
            Err(e) => {
                return failed(format!(
                    "HTTP {status} but reading the body failed: {}",
                    describe_reqwest_error(&e)
                ))
            }
        };
        if let Some(expect) = &self.expect_json {
            if let Err(reason) = json_matches(&body, expect, &self.secrets) {
                return failed(format!("HTTP {status} but {reason}"));
            }
        }
        let Some(needle) = &self.expect_body else {
            return Outcome::Success;
        };
        if contains(&body, needle.as_bytes()) {
            return Outcome::Success;
        }
        failed(format!(
            "HTTP {status} but the body ({} bytes{}) does not contain {needle:?}",
            body.len(),
            if body.len() >= BODY_LIMIT {
                " read"
            } else {
                ""
            }
        ))
    }
}

/// At most `limit` bytes of the body: enough for any answer a check reads, bounded for a hostile
/// one.
pub(crate) async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    Ok(body)
}

/// Whether the JSON `body` holds `expect.equals` at `expect.pointer` (or anything, without
/// `equals`); the error says what was there instead, with `secrets` scrubbed before it is cut.
fn json_matches(body: &[u8], expect: &ExpectJson, secrets: &[Secret]) -> Result<(), String> {
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        if e.is_eof() {
            format!("the JSON body is truncated ({} bytes)", body.len())
        } else {
            format!("the body is not JSON ({e})")
        }
    })?;
    let Some(found) = json.pointer(&expect.pointer) else {
        return Err(format!("the JSON has nothing at {}", expect.pointer));
    };
    match &expect.equals {
        Some(want) if want != found => {
            let mut shown = found.to_string();
            for s in secrets {
                shown = s.scrub(&shown);
            }
            if shown.chars().count() > 60 {
                shown = format!("{}…", shown.chars().take(60).collect::<String>());
            }
            Err(format!("{} is {shown}, expected {want}", expect.pointer))
        }
        _ => Ok(()),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// A short, specific reason; never the URL's query or any header.
pub(crate) fn describe_reqwest_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_owned();
    }
    let cause = root_cause(e);
    if e.is_connect() {
        if cause.contains("dns error")
            || cause.contains("failed to lookup")
            || cause.contains("Name or service not known")
        {
            return format!("cannot resolve host: {cause}");
        }
        let lower = cause.to_lowercase();
        // rustls' errors name what went wrong in the handshake, never "connect".
        if [
            "certificate",
            "tls",
            "handshake",
            "corrupt message",
            "peer sent",
            "alert",
        ]
        .iter()
        .any(|w| lower.contains(w))
        {
            return format!("TLS error: {cause}");
        }
        if cause.contains("Connection refused") {
            return "connection refused".to_owned();
        }
        return format!("cannot connect: {cause}");
    }
    if e.is_redirect() {
        return "too many redirects".to_owned();
    }
    if e.is_body() || e.is_decode() {
        return format!("bad response body: {cause}");
    }
    cause
}

/// `builder` trusting `ca_file`'s certificate authorities instead of the bundled public roots,
/// when one is given (a server behind a private CA).
pub(crate) fn trusting(
    builder: reqwest::ClientBuilder,
    ca_file: Option<&std::path::Path>,
) -> Result<reqwest::ClientBuilder, String> {
    let Some(path) = ca_file else {
        return Ok(builder);
    };
    let pem = vitals_core::tls::read_ca(path)?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        format!(
            "{}: {}; give the CA's certificate in PEM",
            path.display(),
            root_cause(&e)
        )
    })?;
    Ok(certs
        .into_iter()
        .fold(builder.tls_built_in_root_certs(false), |b, cert| {
            b.add_root_certificate(cert)
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(url: &str, f: impl FnOnce(&mut HttpCheck)) -> HttpChecker {
        let mut c = HttpCheck {
            url: url.parse().unwrap(),
            method: HttpMethod::Get,
            expect_status: vec![],
            expect_body: None,
            expect_json: None,
            headers: vec![],
            ca_file: None,
        };
        f(&mut c);
        HttpChecker::new("t", &c).unwrap()
    }

    #[tokio::test]
    async fn two_hundred_is_up() {
        let mut server = mockito::Server::new_async().await;
        let m = server
            .mock("GET", "/health")
            .with_status(200)
            .create_async()
            .await;
        let c = checker(&format!("{}/health", server.url()), |_| {});
        assert_eq!(c.check().await, Outcome::Success);
        m.assert_async().await;
    }

    #[tokio::test]
    async fn html_error_page_says_so() {
        let mut server = mockito::Server::new_async().await;
        server
            .mock("GET", "/health")
            .with_status(502)
            .with_header("content-type", "text/html")
            .with_body("<html><body>Bad gateway</body></html>")
            .create_async()
            .await;
        let c = checker(&format!("{}/health", server.url()), |_| {});
        assert_eq!(
            c.check().await,
            failed("HTTP 502 (expected 2xx), an HTML error page")
        );
    }

    #[tokio::test]
    async fn expected_statuses_and_body() {
        let mut server = mockito::Server::new_async().await;
        server
            .mock("GET", "/s")
            .with_status(204)
            .create_async()
            .await;
        server
            .mock("GET", "/b")
            .with_status(200)
            .with_body("{\"status\":\"degraded\"}")
            .create_async()
            .await;
        let c = checker(&format!("{}/s", server.url()), |c| {
            c.expect_status = vec![200]
        });
        assert_eq!(c.check().await, failed("HTTP 204 (expected 200)"));
        let c = checker(&format!("{}/b", server.url()), |c| {
            c.expect_body = Some("\"ok\"".into())
        });
        assert_eq!(
            c.check().await,
            failed("HTTP 200 but the body (21 bytes) does not contain \"\\\"ok\\\"\"")
        );
        let c = checker(&format!("{}/b", server.url()), |c| {
            c.expect_body = Some("degraded".into())
        });
        assert_eq!(c.check().await, Outcome::Success);
    }

    #[tokio::test]
    async fn secret_header_is_sent_and_never_reported() {
        let mut server = mockito::Server::new_async().await;
        let m = server
            .mock("HEAD", "/h")
            .match_header("authorization", "Bearer tok-123456")
            .with_status(401)
            .create_async()
            .await;
        let c = checker(&format!("{}/h", server.url()), |c| {
            c.method = HttpMethod::Head;
            c.headers = vec![(
                "authorization".parse().unwrap(),
                HeaderValue::Secret(Secret::new("Bearer tok-123456")),
            )];
        });
        let outcome = c.check().await;
        m.assert_async().await;
        assert_eq!(outcome, failed("HTTP 401 (expected 2xx)"));
        assert!(!format!("{c:?}").contains("tok-123456"));
    }

    #[tokio::test]
    async fn expect_json_reads_a_pointer() {
        let mut server = mockito::Server::new_async().await;
        let _m = server
            .mock("GET", "/points/42")
            .with_status(200)
            .with_header("content-type", "application/json")
            .with_body(r#"{"result": {"id": 42, "payload": {"title": "x"}}}"#)
            .create_async()
            .await;
        let url = format!("{}/points/42", server.url());
        let expect = |pointer: &str, equals: Option<serde_json::Value>| {
            checker(&url, |c| {
                c.expect_json = Some(ExpectJson {
                    pointer: pointer.into(),
                    equals,
                })
            })
        };
        assert_eq!(
            expect("/result/id", Some(serde_json::json!(42)))
                .check()
                .await,
            Outcome::Success
        );
        assert_eq!(
            expect("/result/payload", None).check().await,
            Outcome::Success
        );
        assert_eq!(
            expect("/result/id", Some(serde_json::json!(7)))
                .check()
                .await,
            failed("HTTP 200 but /result/id is 42, expected 7")
        );
        assert_eq!(
            expect("/result/vector", None).check().await,
            failed("HTTP 200 but the JSON has nothing at /result/vector")
        );
    }

    #[tokio::test]
    async fn expect_json_on_a_non_json_body() {
        let mut server = mockito::Server::new_async().await;
        let _m = server
            .mock("GET", "/")
            .with_status(200)
            .with_body(r#"{"result": {"id": 4"#)
            .create_async()
            .await;
        let c = checker(&format!("{}/", server.url()), |c| {
            c.expect_json = Some(ExpectJson {
                pointer: "/result/id".into(),
                equals: None,
            })
        });
        assert_eq!(
            c.check().await,
            failed("HTTP 200 but the JSON body is truncated (19 bytes)")
        );
    }

    #[tokio::test]
    async fn refused_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let c = checker(&format!("http://{addr}/"), |_| {});
        assert_eq!(c.check().await, failed("connection refused"));
    }

    #[tokio::test]
    async fn no_part_of_a_header_secret_survives_the_cut_of_a_json_value() {
        let token = "tok-5f4e3d2c1b0a99887766";
        for offset in 20..80 {
            let mut server = mockito::Server::new_async().await;
            let value = format!("{}{token} end", "v".repeat(offset));
            let body = serde_json::json!({ "status": value }).to_string();
            server
                .mock("GET", "/health")
                .with_status(200)
                .with_body(body)
                .create_async()
                .await;
            let c = checker(&format!("{}/health", server.url()), |c| {
                c.expect_json = Some(ExpectJson {
                    pointer: "/status".into(),
                    equals: Some(serde_json::json!("ok")),
                });
                c.headers = vec![(
                    reqwest::header::HeaderName::from_static("authorization"),
                    HeaderValue::Secret(vitals_core::Secret::new(token)),
                )];
            });
            let Outcome::Failed { reason } = c.check().await else {
                panic!("expected a failure")
            };
            crate::checks::assert_no_part_of(token, &reason);
        }
    }
}
