//! A closed-loop HTTP/1.1 load generator for the gate benchmark: `C` keep-alive connections, each
//! sending its next request as soon as the last answer ends, for `D` seconds, with latency kept
//! per status code (wrk mixes a shed 503 and a served 200 in one distribution).
//!
//! Usage: load URL CONNECTIONS SECONDS [METHOD] [RATE]
//! With RATE (requests a second, all connections together), each connection paces its requests
//! on a fixed schedule (open loop: a fast answer does not bring the next request sooner), so the
//! offered load is RATE however the server answers.
//! Prints one JSON line: {"status": {"200": {"count", "rps", "p50_ms", "p99_ms", "max_ms"}, …},
//! "errors": n}.

// A load generator measures the wall clock.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (url, conns, secs) = match args.as_slice() {
        [_, url, c, s, ..] => (
            url.clone(),
            c.parse::<usize>().unwrap(),
            s.parse::<f64>().unwrap(),
        ),
        _ => {
            eprintln!("usage: load URL CONNECTIONS SECONDS [METHOD]");
            std::process::exit(2);
        }
    };
    let method = args.get(4).cloned().unwrap_or_else(|| "GET".into());
    let every: Option<Duration> = args
        .get(5)
        .and_then(|r| r.parse::<f64>().ok())
        .filter(|r| *r > 0.0)
        .map(|rate| Duration::from_secs_f64(conns as f64 / rate));
    let rest = url.strip_prefix("http://").expect("http:// URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path }.to_owned();
    let authority = authority.to_owned();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for i in 0..conns {
        let (authority, path, method) = (authority.clone(), path.clone(), method.clone());
        // Connection i starts i/conns of an interval late, so the offered load is even, not a
        // burst of every connection at once.
        let offset = every.map_or(Duration::ZERO, |e| e.mul_f64(i as f64 / conns as f64));
        tasks.push(tokio::spawn(async move {
            let mut seen: Vec<(u16, Duration)> = Vec::new();
            let mut errors = 0u64;
            let mut next = Instant::now() + offset;
            while Instant::now() < deadline {
                let Ok(stream) = TcpStream::connect(&authority).await else {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let mut stream = BufReader::new(stream);
                let request = format!(
                    "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{{}}"
                );
                while Instant::now() < deadline {
                    if let Some(every) = every {
                        tokio::time::sleep_until(next.into()).await;
                        next += every;
                    }
                    let start = Instant::now();
                    if stream.get_mut().write_all(request.as_bytes()).await.is_err() {
                        errors += 1;
                        break;
                    }
                    match read_response(&mut stream).await {
                        Some((status, close)) => {
                            seen.push((status, start.elapsed()));
                            if close {
                                break;
                            }
                        }
                        None => {
                            errors += 1;
                            break;
                        }
                    }
                }
            }
            (seen, errors)
        }));
    }
    let mut by_status: BTreeMap<u16, Vec<Duration>> = BTreeMap::new();
    let mut errors = 0;
    for t in tasks {
        let (seen, e) = t.await.unwrap();
        errors += e;
        for (s, d) in seen {
            by_status.entry(s).or_default().push(d);
        }
    }
    let mut out = serde_json::Map::new();
    for (status, mut ds) in by_status {
        ds.sort();
        let q = |p: f64| ds[((ds.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3;
        out.insert(
            status.to_string(),
            serde_json::json!({
                "count": ds.len(),
                "rps": ds.len() as f64 / secs,
                "p50_ms": q(0.5),
                "p99_ms": q(0.99),
                "max_ms": q(1.0),
            }),
        );
    }
    println!("{}", serde_json::json!({ "status": out, "errors": errors }));
}

/// Reads one response (head and body); its status, and whether the server closes after it.
async fn read_response(stream: &mut BufReader<TcpStream>) -> Option<(u16, bool)> {
    let mut line = String::new();
    stream.read_line(&mut line).await.ok()?;
    let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut length = 0usize;
    let mut chunked = false;
    let mut close = false;
    loop {
        line.clear();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
        match k.as_str() {
            "content-length" => length = v.parse().ok()?,
            "transfer-encoding" => chunked = v.contains("chunked"),
            "connection" => close = v == "close",
            _ => {}
        }
    }
    if chunked {
        loop {
            line.clear();
            stream.read_line(&mut line).await.ok()?;
            let size = usize::from_str_radix(line.trim(), 16).ok()?;
            let mut chunk = vec![0u8; size + 2];
            stream.read_exact(&mut chunk).await.ok()?;
            if size == 0 {
                break;
            }
        }
    } else {
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await.ok()?;
    }
    Some((status, close))
}
