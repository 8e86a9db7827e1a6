//! A real Prometheus server (Debian's `prometheus` package) on a loopback port it picked itself.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::output::{Logs, Watch};

/// A running `prometheus`, killed on drop.
#[derive(Debug)]
pub struct PrometheusProcess {
    child: Child,
    addr: SocketAddr,
    logs: Logs,
}

impl PrometheusProcess {
    /// Starts `prometheus` with `config` (prometheus.yml text) written into `dir`, its data under
    /// `dir/data`, listening on `127.0.0.1:0`; waits until it says which port it bound and that it is ready.
    pub fn start(dir: &Path, config: &str) -> PrometheusProcess {
        let path = dir.join("prometheus.yml");
        std::fs::write(&path, config).expect("write prometheus.yml");
        let mut child = Command::new("prometheus")
            .arg(format!("--config.file={}", path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start prometheus ({e}); install it with scripts/setup-test-deps")
            });
        let watch = Watch::start(&mut child);
        let mut startup = Startup::default();
        let addr = watch.wait_for(&mut child, "prometheus", Duration::from_secs(30), |line| {
            startup.see(line)
        });
        let logs = watch.logs;
        PrometheusProcess { child, addr, logs }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn logs(&self) -> String {
        self.logs.text()
    }
}

/// What Prometheus says as it starts: `msg="Listening on" address=127.0.0.1:44213`, and
/// `msg="Server is ready to receive web requests."`. Two goroutines print them, in either
/// order (the same millisecond, as often as not).
#[derive(Debug, Default)]
struct Startup {
    listening: Option<SocketAddr>,
    ready: bool,
}

impl Startup {
    /// Takes in one line of its output: the address once both lines are in.
    fn see(&mut self, line: &str) -> Option<SocketAddr> {
        if line.contains("msg=\"Listening on\"") {
            self.listening = line
                .split("address=")
                .nth(1)
                .and_then(|a| a.split_whitespace().next())
                .and_then(|a| a.parse().ok());
        }
        if line.contains("Server is ready to receive web requests") {
            self.ready = true;
        }
        self.listening.filter(|_| self.ready)
    }
}

impl Drop for PrometheusProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The address, once it is listening and ready, whichever it says first.
    #[test]
    fn startup_is_seen_in_either_order() {
        let listening = r#"ts=x caller=tls_config.go:232 level=info component=web msg="Listening on" address=127.0.0.1:38523"#;
        let ready =
            r#"ts=x caller=main.go:973 level=info msg="Server is ready to receive web requests.""#;
        let addr: SocketAddr = "127.0.0.1:38523".parse().unwrap();
        for order in [[listening, ready], [ready, listening]] {
            let mut s = Startup::default();
            assert_eq!(s.see(order[0]), None);
            assert_eq!(s.see(order[1]), Some(addr), "{order:?}");
        }
    }
}
