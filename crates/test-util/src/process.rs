//! Runs the `vitals` binary as a user would, on a port the OS picked.

// Real child processes run on the wall clock, not on tokio's.
#![allow(clippy::disallowed_methods)]

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::output::{Logs, Watch};

/// A running `vitals serve`. Killed on drop.
#[derive(Debug)]
pub struct VitalsProcess {
    child: Child,
    addr: SocketAddr,
    logs: Logs,
    _dir: tempfile::TempDir,
}

impl VitalsProcess {
    /// Starts `bin serve --listen 127.0.0.1:0` with `config` (TOML; empty: no `--config`) and
    /// `env`, and waits until it logs the address it bound.
    pub fn start(bin: &Path, config: &str, env: &[(&str, &str)]) -> VitalsProcess {
        Self::start_wrapped(&[], bin, config, env)
    }

    /// Like [`VitalsProcess::start`], run through `wrapper` (a program and its arguments that
    /// end by executing the rest of the command line in the same process, as `unshare` does).
    pub fn start_wrapped(
        wrapper: &[&str],
        bin: &Path,
        config: &str,
        env: &[(&str, &str)],
    ) -> VitalsProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        // No configuration: no --config (an empty file is refused).
        if config.is_empty() {
            return Self::spawn(wrapper, bin, &[], env, dir);
        }
        let path: PathBuf = dir.path().join("health.toml");
        std::fs::write(&path, config).expect("write config");
        let config_args = [OsString::from("--config"), path.into_os_string()];
        Self::spawn(wrapper, bin, &config_args, env, dir)
    }

    /// Like [`VitalsProcess::start`], in entrypoint mode: `vitals serve ... -- command`.
    pub fn start_entrypoint(
        bin: &Path,
        config: &str,
        env: &[(&str, &str)],
        command: &[&str],
    ) -> VitalsProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let path: PathBuf = dir.path().join("health.toml");
        std::fs::write(&path, config).expect("write config");
        let mut args = vec![
            OsString::from("--config"),
            path.into_os_string(),
            "--".into(),
        ];
        args.extend(command.iter().map(OsString::from));
        Self::spawn(&[], bin, &args, env, dir)
    }

    /// Like [`VitalsProcess::start`], with the configuration's text in `VITALS_CONFIG_TOML`
    /// instead of a file, as the ECS and Cloud Run renders deliver it.
    pub fn start_inline(bin: &Path, config: &str, env: &[(&str, &str)]) -> VitalsProcess {
        let mut env = env.to_vec();
        env.push(("VITALS_CONFIG_TOML", config));
        Self::spawn(&[], bin, &[], &env, tempfile::tempdir().expect("temp dir"))
    }

    fn spawn(
        wrapper: &[&str],
        bin: &Path,
        config_args: &[OsString],
        env: &[(&str, &str)],
        dir: tempfile::TempDir,
    ) -> VitalsProcess {
        let mut cmd = match wrapper.split_first() {
            None => Command::new(bin),
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
        };
        cmd.args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
            .args(config_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let watch = Watch::start(&mut child);
        let addr = watch.wait_for(&mut child, "vitals", Duration::from_secs(20), |line| {
            let v = serde_json::from_str::<serde_json::Value>(line).ok()?;
            v.get("listen")?.as_str()?.parse().ok()
        });
        let logs = watch.logs;
        VitalsProcess {
            child,
            addr,
            logs,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `INT`) with the system's `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits at most `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lines()
    }
}

impl Drop for VitalsProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
