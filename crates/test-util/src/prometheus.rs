//! A real Prometheus server (Debian's `prometheus` package) on a loopback port it picked itself.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running `prometheus`, killed on drop.
#[derive(Debug)]
pub struct PrometheusProcess {
    child: Child,
    addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
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
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut addr = None;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // `msg="Listening on" address=127.0.0.1:44213`, then, once the API answers,
                // `msg="Server is ready to receive web requests."`.
                if line.contains("msg=\"Listening on\"") {
                    addr = line
                        .split("address=")
                        .nth(1)
                        .and_then(|a| a.split_whitespace().next())
                        .map(str::to_owned);
                }
                if line.contains("Server is ready to receive web requests") {
                    if let Some(a) = addr.take() {
                        let _ = tx.send(a);
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a.parse().expect("prometheus listen address"),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "prometheus did not start listening; its logs:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        PrometheusProcess { child, addr, logs }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

impl Drop for PrometheusProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
