//! Reaping orphans: as PID 1 of a container, or as a child subreaper, vitals becomes the parent
//! of every process whose own parent died (an agent's worker whose agent crashed). Nobody else
//! waits for those, so without this they stay zombies until the container ends.
//!
//! vitals' own children are waited for by their owners (the supervisor, the `exec` checks), so
//! the reaper must not take their exit statuses. It leaves alone the pids the supervisor manages
//! and reaps only a zombie that was already a zombie one scan earlier (a second): an owner reaps
//! its child within milliseconds of its exit, an orphan is never reaped by anyone else.

use std::collections::HashSet;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Makes vitals the reaper of its descendants' orphans (a no-op where it is PID 1 already), and
/// reaps them until `stop`.
pub async fn run(stop: CancellationToken) {
    if rustix::process::getpid().as_raw_nonzero().get() != 1 {
        if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
            tracing::debug!(error = %e, "cannot become a child subreaper; orphans go to PID 1");
        }
    }
    let mut sigchld = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGCHLD; orphaned processes are not reaped");
            return;
        }
    };
    let mut seen: HashSet<i32> = HashSet::new();
    loop {
        let wait = if seen.is_empty() {
            Duration::from_secs(3600)
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            () = stop.cancelled() => return,
            _ = sigchld.recv() => {}
            () = tokio::time::sleep(wait) => {}
        }
        seen = reap(&seen);
    }
}

/// Reaps the zombie children in `before` that are still zombies, and returns the zombies seen now.
fn reap(before: &HashSet<i32>) -> HashSet<i32> {
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let managed = crate::child::MANAGED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_default();
    let mut now = HashSet::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return now;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if managed.contains(&pid) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (state, ppid) = (
            fields.next(),
            fields.next().and_then(|p| p.parse::<i32>().ok()),
        );
        if state != Some("Z") || ppid != Some(me) {
            continue;
        }
        if before.contains(&pid) {
            if let Some(p) = rustix::process::Pid::from_raw(pid) {
                if let Ok(Some(_)) =
                    rustix::process::waitpid(Some(p), rustix::process::WaitOptions::NOHANG)
                {
                    tracing::debug!(pid, "reaped an orphaned process");
                }
            }
        } else {
            now.insert(pid);
        }
    }
    now
}
