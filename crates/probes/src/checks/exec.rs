//! `kind = "exec"`: runs a program (no shell) with the poller's timeout; exit 0 is healthy.
//! The end of its output, bounded, gives the reason of a failure.

use std::process::Stdio;

use tokio::io::AsyncReadExt;
use vitals_core::config::ExecCheck;
use vitals_core::lifecycle::Outcome;

use super::failed;

/// The most output kept from one run, per stream: its end, where the reason is.
const OUTPUT_LIMIT: usize = 4096;

/// Reads `stream` to its end, keeping the last [`OUTPUT_LIMIT`] bytes in `tail`. It keeps reading
/// past the limit: a pipe closed early kills a chatty but healthy command with SIGPIPE.
async fn drain_tail(mut stream: impl tokio::io::AsyncRead + Unpin, tail: &mut Vec<u8>) {
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * OUTPUT_LIMIT {
                    tail.drain(..tail.len() - OUTPUT_LIMIT);
                }
            }
        }
    }
}

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
                drain_tail(s, &mut out).await;
            }
        };
        let read_err = async {
            if let Some(s) = stderr {
                drain_tail(s, &mut err).await;
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
        let kept = if err.is_empty() { &out } else { &err };
        let kept = &kept[kept.len().saturating_sub(OUTPUT_LIMIT)..];
        let text = String::from_utf8_lossy(kept).into_owned();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(script: &str) -> ExecChecker {
        ExecChecker::new(&ExecCheck {
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        })
    }

    #[tokio::test]
    async fn a_healthy_command_that_prints_a_lot_is_healthy() {
        // 1 MiB on stdout and on stderr, far past what is kept: the pipes must keep draining or
        // the command dies of SIGPIPE and a healthy dependency reads as down.
        let c = exec("head -c 1048576 /dev/zero >&2; exec head -c 1048576 /dev/zero");
        assert_eq!(c.check().await, Outcome::Success);
    }

    #[tokio::test]
    async fn a_failure_after_much_output_gives_its_last_line() {
        let c = exec("seq 1 100000; echo 'index not loaded' >&2; head -c 70000 /dev/zero | tr '\\0' x >&2; echo >&2; echo 'final: index not loaded' >&2; exit 3");
        assert_eq!(
            c.check().await,
            failed("/bin/sh: exit status 3: final: index not loaded")
        );
    }
}
