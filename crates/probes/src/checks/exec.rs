//! `kind = "exec"`: runs a program (no shell) with the poller's timeout; exit 0 is healthy.
//! Its output, bounded, gives the reason of a failure.

use std::process::Stdio;

use tokio::io::AsyncReadExt;
use vitals_core::config::ExecCheck;
use vitals_core::lifecycle::Outcome;

use super::failed;

/// The most output kept from one run.
const OUTPUT_LIMIT: usize = 4096;

#[derive(Debug)]
pub struct ExecChecker {
    check: ExecCheck,
}

impl ExecChecker {
    pub fn new(check: &ExecCheck) -> Self {
        ExecChecker {
            check: check.clone(),
        }
    }

    pub async fn check(&self) -> Outcome {
        let program = &self.check.command[0];
        let mut child = match tokio::process::Command::new(program)
            .args(&self.check.command[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // The poller's timeout drops this future; the child must not outlive it.
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => return failed(format!("cannot run {program}: {e}")),
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let read_out = async {
            if let Some(s) = stdout {
                let _ = s.take(OUTPUT_LIMIT as u64).read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(s) = stderr {
                let _ = s.take(OUTPUT_LIMIT as u64).read_to_end(&mut err).await;
            }
        };
        let (status, _, _) = tokio::join!(child.wait(), read_out, read_err);
        let status = match status {
            Ok(s) => s,
            Err(e) => return failed(format!("{program}: {e}")),
        };
        if status.success() {
            return Outcome::Success;
        }
        let code = status
            .code()
            .map(|c| format!("exit status {c}"))
            .unwrap_or_else(|| "killed by a signal".to_owned());
        let text = String::from_utf8_lossy(if err.is_empty() { &out } else { &err }).into_owned();
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let last: String = last.trim().chars().take(120).collect();
        if last.is_empty() {
            failed(format!("{program}: {code}"))
        } else {
            failed(format!("{program}: {code}: {last}"))
        }
    }
}
