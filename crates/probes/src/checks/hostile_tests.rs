//! Hostile dependencies against the HTTP and LLM checks: each answer below comes from a raw TCP
//! server, byte for byte. Every check ends (within the poller's timeout) with a short reason,
//! never a panic, never an unbounded read, never a success.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use vitals_core::config::{from_toml, Check};
use vitals_core::lifecycle::Outcome;

use super::*;

/// What the hostile server does once a request arrives.
#[derive(Debug, Clone)]
enum Answer {
    /// These bytes, then close.
    Bytes(&'static [u8]),
    /// These bytes, then an endless stream of `filler`.
    Endless(&'static [u8], &'static [u8]),
    /// Accept, read, never answer.
    Silence,
    /// Accept and never read.
    Deaf,
}

async fn hostile(answer: Answer) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                if !matches!(answer, Answer::Deaf) {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                }
                match answer {
                    Answer::Bytes(b) => {
                        let _ = s.write_all(b).await;
                    }
                    Answer::Endless(head, filler) => {
                        let _ = s.write_all(head).await;
                        while s.write_all(filler).await.is_ok() {}
                    }
                    Answer::Silence | Answer::Deaf => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                }
            });
        }
    });
    addr.to_string()
}

const CASES: &[(&str, Answer)] = &[
    ("an endless body", Answer::Endless(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n", b"[[[[[[[[[[")),
    ("a huge length", Answer::Bytes(b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999\r\n\r\n{")),
    ("endless chunks", Answer::Endless(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", b"a\r\n0123456789\r\n")),
    ("HTML", Answer::Bytes(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/html\r\ncontent-length: 27\r\n\r\n<html><body>down</body></html>")),
    ("invalid UTF-8", Answer::Bytes(b"HTTP/1.1 500 Oops\r\ncontent-length: 6\r\n\r\n\xff\xfe\xfd\xfc\xc3\x28")),
    ("not HTTP", Answer::Bytes(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 garbage\r\n\r\n")),
    ("a redirect loop", Answer::Bytes(b"HTTP/1.1 302 Found\r\nlocation: /loop\r\ncontent-length: 0\r\n\r\n")),
    ("absurd headers", Answer::Endless(b"HTTP/1.1 200 OK\r\n", b"x-a: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n")),
    ("silence", Answer::Silence),
    ("a server that never reads", Answer::Deaf),
];

/// Runs `checker` against every case, bounded as the poller bounds it.
async fn each_case(make: impl Fn(&str) -> Checker) {
    for (name, answer) in CASES {
        let addr = hostile(answer.clone()).await;
        let checker = make(&addr);
        let started = tokio::time::Instant::now();
        let report = tokio::time::timeout(Duration::from_secs(2), checker.check()).await;
        let took = started.elapsed();
        let outcome = match report {
            Ok(r) => r.outcome,
            Err(_) => Outcome::TimedOut {
                after: Duration::from_secs(2),
            },
        };
        assert!(
            !outcome.is_success(),
            "{name}: a hostile answer passed the check"
        );
        if let Outcome::Failed { reason } = &outcome {
            assert!(
                reason.chars().count() <= 300,
                "{name}: a long reason: {reason}"
            );
            assert!(
                !reason.chars().any(|c| c.is_control()),
                "{name}: control characters in {reason:?}"
            );
        }
        assert!(took <= Duration::from_millis(2100), "{name}: took {took:?}");
    }
}

fn dependency(toml: &str) -> vitals_core::config::Dependency {
    let config = from_toml(toml, &|k| {
        (k == "KEY").then(|| "sk-hostile-0000".to_owned())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    config.dependencies.into_iter().next().unwrap()
}

#[tokio::test]
async fn the_http_check_survives_every_hostile_answer() {
    each_case(|addr| {
        let d = dependency(&format!(
            "[[dependencies]]\nname = \"tool\"\nkind = \"http\"\nurl = \"http://{addr}/health\"\nexpect_json = {{ pointer = \"/ok\" }}\n"
        ));
        Checker::new(&d).unwrap()
    })
    .await;
}

#[tokio::test]
async fn the_llm_check_survives_every_hostile_answer() {
    each_case(|addr| {
        let d = dependency(&format!(
            "[[dependencies]]\nname = \"llm\"\nkind = \"openai\"\nbase_url = \"http://{addr}/v1\"\nmodel = \"m\"\napi_key_env = \"KEY\"\ncheck = \"semantic\"\nexpect = \"READY\"\n"
        ));
        assert!(matches!(d.check, Check::Llm(_)));
        Checker::new(&d).unwrap()
    })
    .await;
}

#[tokio::test]
async fn tls_to_a_plain_port_fails_with_a_tls_reason() {
    let addr = hostile(Answer::Bytes(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    ))
    .await;
    let d = dependency(&format!(
        "[[dependencies]]\nname = \"tool\"\nkind = \"http\"\nurl = \"https://{addr}/health\"\n"
    ));
    let report = tokio::time::timeout(Duration::from_secs(2), Checker::new(&d).unwrap().check())
        .await
        .expect("the handshake did not end");
    let Outcome::Failed { reason } = report.outcome else {
        panic!("{report:?}")
    };
    assert!(reason.to_lowercase().contains("tls"), "{reason}");
}
