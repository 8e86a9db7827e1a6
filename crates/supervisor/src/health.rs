//! The health check of one process: an HTTP path or a TCP connection on its port.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use vitals_core::config::ProcessHealth;

use crate::machine::Health;

/// Checks the process on `127.0.0.1:port`, within `timeout`.
pub(crate) async fn check(health: &ProcessHealth, port: Option<u16>, timeout: Duration) -> Health {
    let (ProcessHealth::Http { .. } | ProcessHealth::Tcp, Some(port)) = (health, port) else {
        return Health::Ok;
    };
    match tokio::time::timeout(timeout, attempt(health, port)).await {
        Ok(h) => h,
        Err(_) => Health::Failed(format!(
            "no answer within {}",
            vitals_core::Duration::from(timeout)
        )),
    }
}

async fn attempt(health: &ProcessHealth, port: u16) -> Health {
    let stream = match TcpStream::connect(("127.0.0.1", port)).await {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Health::Failed(format!("127.0.0.1:{port} refused the connection"))
        }
        Err(e) => return Health::Failed(format!("cannot connect to 127.0.0.1:{port}: {e}")),
    };
    let ProcessHealth::Http { path } = health else {
        return Health::Ok;
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(e) => return Health::Failed(format!("HTTP handshake failed: {e}")),
        };
    let connection = tokio::spawn(connection);
    let request = http::Request::get(path.as_str())
        .header(http::header::HOST, format!("127.0.0.1:{port}"))
        .header(http::header::USER_AGENT, "vitals-supervisor")
        .body(Empty::<Bytes>::new());
    let request = match request {
        Ok(r) => r,
        Err(e) => return Health::Failed(format!("cannot build GET {path}: {e}")),
    };
    let result = sender.send_request(request).await;
    connection.abort();
    match result {
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                Health::Ok
            } else if status == http::StatusCode::SERVICE_UNAVAILABLE {
                Health::Loading
            } else {
                Health::Failed(format!("GET {path} answered {}", status.as_u16()))
            }
        }
        Err(e) => Health::Failed(format!("GET {path} failed: {e}")),
    }
}
