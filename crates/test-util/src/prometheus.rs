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
        // `msg="Listening on" address=127.0.0.1:44213`, then, once the API answers,
        // `msg="Server is ready to receive web requests."`.
        let mut listening: Option<SocketAddr> = None;
        let addr = watch.wait_for(&mut child, "prometheus", Duration::from_secs(30), |line| {
            if line.contains("msg=\"Listening on\"") {
                listening = line
                    .split("address=")
                    .nth(1)
                    .and_then(|a| a.split_whitespace().next())
                    .and_then(|a| a.parse().ok());
            }
            if line.contains("Server is ready to receive web requests") {
                return listening;
            }
            None
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

impl Drop for PrometheusProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
