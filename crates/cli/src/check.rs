//! `vitals check URL`: the container health command (ECS, Docker). A minimal HTTP/1.1 GET over a
//! blocking socket: no runtime, no TLS, no shell, so it starts fast in every container every few
//! seconds. Exit 0 on 2xx/3xx, 1 otherwise, with a one-line reason on stderr.

// `vitals check` runs without a runtime (it starts in milliseconds): the std clock bounds it.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The longest status line read; a probe answer's first line is a few dozen bytes.
const MAX_HEAD: usize = 1024;

pub fn run(url: &str, timeout: Duration) -> ExitCode {
    match check(url, timeout) {
        Ok(status) if (200..400).contains(&status) => ExitCode::SUCCESS,
        Ok(status) => {
            report!("vitals check: {url} answered {status}");
            ExitCode::FAILURE
        }
        Err(reason) => {
            report!("vitals check: {url}: {reason}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug)]
struct Target<'a> {
    host: &'a str,
    port: u16,
    /// The request target: the URL's path and query, `/` when it has neither.
    path: String,
}

fn parse(url: &str) -> Result<Target<'_>, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        "only http:// URLs are supported (the probe routes are plain HTTP on loopback)".to_string()
    })?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            let port = p
                .parse::<u16>()
                .map_err(|_| format!("{p:?} is not a port number"))?;
            (h, port)
        }
        _ => (authority, 80),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    Ok(Target { host, port, path })
}

/// The status code, or why there is none.
fn check(url: &str, timeout: Duration) -> Result<u16, String> {
    let target = parse(url)?;
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("timed out after {}", humantime::format_duration(timeout)))
    };
    let addrs: Vec<_> = (target.host, target.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", target.host))?
        .collect();
    let mut last = String::from("no address to connect to");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, left()?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last)?;
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            format!("timed out after {}", humantime::format_duration(timeout))
        }
        _ => format!("connection failed: {e}"),
    };
    stream.set_write_timeout(Some(left()?)).map_err(io)?;
    let host_header = if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    };
    write!(
        stream,
        "GET {} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: vitals-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        target.path
    )
    .map_err(io)?;
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') {
        stream.set_read_timeout(Some(left()?)).map_err(io)?;
        let n = stream.read(&mut buf).map_err(io)?;
        if n == 0 {
            return Err("the server closed the connection without an answer".into());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return Err("the answer's status line is too long; is this an HTTP server?".into());
        }
    }
    status_code(&head)
}

fn status_code(head: &[u8]) -> Result<u16, String> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().splitn(3, ' ');
    match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => code
            .parse::<u16>()
            .ok()
            .filter(|c| (100..1000).contains(c))
            .ok_or_else(|| format!("not an HTTP answer: {:?}", line.trim_end())),
        _ => Err(format!("not an HTTP answer: {:?}", line.trim_end())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_and_path() {
        let t = parse("http://127.0.0.1:8080/healthz").unwrap();
        assert_eq!(
            (t.host, t.port, t.path.as_str()),
            ("127.0.0.1", 8080, "/healthz")
        );
        let t = parse("http://localhost/readyz?verbose").unwrap();
        assert_eq!(
            (t.host, t.port, t.path.as_str()),
            ("localhost", 80, "/readyz?verbose")
        );
        let t = parse("http://[::1]:9/x").unwrap();
        assert_eq!((t.host, t.port, t.path.as_str()), ("::1", 9, "/x"));
        let t = parse("http://h:1?q").unwrap();
        assert_eq!((t.host, t.port, t.path.as_str()), ("h", 1, "/?q"));
    }

    #[test]
    fn refuses_what_it_cannot_fetch() {
        assert!(parse("https://x/").unwrap_err().contains("only http://"));
        assert!(parse("http://:80/").unwrap_err().contains("no host"));
        assert!(parse("http://h:99999/").unwrap_err().contains("not a port"));
    }

    #[test]
    fn reads_the_status_code() {
        assert_eq!(
            status_code(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Ok(503)
        );
        assert_eq!(status_code(b"HTTP/1.0 200 OK\n"), Ok(200));
        assert!(status_code(b"<html>\n").is_err());
        assert!(status_code(b"HTTP/1.1 abc\r\n").is_err());
    }

    // ---- a proptest-driven fuzz of the response parser (no nightly toolchain for cargo-fuzz) ----
    // Seeds: the hostile answers below; proptest mixes them with arbitrary bytes. A longer run:
    // PROPTEST_CASES=20000 cargo test -p vitals-cli --bin vitals fuzz_.

    use proptest::prelude::*;

    const SEEDS: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 99999999999999999999 X\r\n",
        b"HTTP/1.1 -1\r\n",
        b"HTTP/ 200\n",
        b"\x16\x03\x01\x00\xa5\x01",
        b"\xff\xfe\xfd\n",
        b"\r\n",
        b"HTTP/1.1 200",
        b"",
    ];

    fn answer() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::sample::select(SEEDS).prop_map(<[u8]>::to_vec),
            prop::collection::vec(any::<u8>(), 0..2048),
            (
                prop::sample::select(SEEDS),
                prop::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(a, b)| [a, &b[..]].concat()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(512)
        ))]

        /// Any first line: a status in 100..1000 from an HTTP/ line, or a reason; never a panic.
        #[test]
        fn fuzz_status_line(head in answer()) {
            match status_code(&head) {
                Ok(code) => {
                    prop_assert!((100..1000).contains(&code));
                    prop_assert!(head.starts_with(b"HTTP/"));
                }
                Err(reason) => prop_assert!(reason.starts_with("not an HTTP answer")),
            }
        }

        #[test]
        fn fuzz_url(url in "(http://)?[^ ]{0,80}") {
            let _ = parse(&url);
        }
    }

    /// A real server answering arbitrary bytes, then closing or hanging: `check` returns a
    /// status or a reason within its timeout, and never panics.
    #[test]
    fn fuzz_live_answers_end_within_the_timeout() {
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(48));
        runner
            .run(&(answer(), any::<bool>()), |(bytes, hang)| {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let server = std::thread::spawn(move || {
                    let (mut s, _) = listener.accept().unwrap();
                    let mut req = [0u8; 512];
                    let _ = s.read(&mut req);
                    let _ = s.write_all(&bytes);
                    if hang {
                        std::thread::sleep(Duration::from_millis(400));
                    }
                });
                let start = Instant::now();
                let result = check(
                    &format!("http://{addr}/healthz"),
                    Duration::from_millis(200),
                );
                prop_assert!(start.elapsed() < Duration::from_secs(2), "{result:?}");
                if let Ok(code) = result {
                    prop_assert!((100..1000).contains(&code));
                }
                server.join().unwrap();
                Ok(())
            })
            .unwrap();
    }
}
