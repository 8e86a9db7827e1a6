//! Starting and stopping one child: its own process group, a parent-death signal, its output
//! forwarded to vitals' log line by line, and SIGTERM-then-SIGKILL to the whole group.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::process::{Child, Command};

use crate::machine::Exit;

/// The pids vitals spawned and waits for itself; the reaper leaves them alone.
pub(crate) static MANAGED: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// A running child.
#[derive(Debug)]
pub(crate) struct Running {
    pub child: Child,
    pub pid: i32,
    /// Set when its output said its address was in use.
    pub port_conflict: Arc<AtomicBool>,
    /// The tasks forwarding its output: they end when its output closes.
    pub forwarders: Vec<tokio::task::JoinHandle<()>>,
}

/// The longest output line forwarded; the rest of a longer one is dropped, so a process that
/// writes without newlines cannot grow vitals' memory.
const MAX_LINE: usize = 16 * 1024;

/// Starts `argv` with `env` added, in its own process group, with SIGKILL as its parent-death
/// signal: if vitals dies, even by SIGKILL, the kernel kills the child (its group is stopped by
/// vitals itself on every orderly exit).
///
/// Must be called from a runtime worker thread, never from `spawn_blocking`: the kernel sends
/// the parent-death signal when the *thread* that forked exits, and blocking-pool threads exit
/// when idle, while worker threads live as long as the runtime.
pub(crate) fn spawn(
    name: &str,
    argv: &[String],
    env: &[(String, String)],
) -> std::io::Result<Running> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command"))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    let parent = rustix::process::getpid();
    set_parent_death_signal(&mut command, parent);
    let mut managed = MANAGED.lock().unwrap_or_else(|p| p.into_inner());
    let mut child = command.spawn()?;
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .ok_or_else(|| std::io::Error::other("the child has no pid"))?;
    managed.get_or_insert_with(HashSet::new).insert(pid);
    drop(managed);
    let port_conflict = Arc::new(AtomicBool::new(false));
    let mut forwarders = Vec::new();
    for (stream, reader) in [
        (
            "stdout",
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
        ),
        (
            "stderr",
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
        ),
    ] {
        if let Some(reader) = reader {
            forwarders.push(tokio::spawn(forward(
                name.to_owned(),
                stream,
                reader,
                port_conflict.clone(),
            )));
        }
    }
    Ok(Running {
        child,
        pid,
        port_conflict,
        forwarders,
    })
}

#[allow(unsafe_code)]
fn set_parent_death_signal(command: &mut Command, parent: rustix::process::Pid) {
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed. It makes two raw system calls (prctl and getppid) through rustix, which
    // neither allocates nor takes locks, and builds an io::Error from a raw errno, which does not
    // allocate either.
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error()))?;
            // vitals may have died between fork and prctl: then no signal would ever come.
            if rustix::process::getppid() != Some(parent) {
                return Err(std::io::Error::from_raw_os_error(libc_esrch()));
            }
            Ok(())
        });
    }
}

const fn libc_esrch() -> i32 {
    3 // ESRCH
}

/// Waits for the child, and forgets its pid.
pub(crate) async fn wait(running: &mut Running) -> Exit {
    let exit = match running.child.wait().await {
        Ok(status) => Exit::from_status(status),
        Err(_) => Exit::Code(-1),
    };
    forget(running.pid);
    exit
}

fn forget(pid: i32) {
    if let Some(set) = MANAGED.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        set.remove(&pid);
    }
}

/// Sends `signal` to the child's whole process group (it leads it).
pub(crate) fn signal_group(pid: i32, signal: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// SIGTERM to the group, SIGKILL after `timeout`; returns how it ended.
pub(crate) async fn stop(name: &str, running: &mut Running, timeout: Duration) -> Exit {
    // A stopped (SIGSTOP) process would never act on SIGTERM: wake it first.
    signal_group(running.pid, rustix::process::Signal::TERM);
    signal_group(running.pid, rustix::process::Signal::CONT);
    match tokio::time::timeout(timeout, wait(running)).await {
        Ok(exit) => {
            // Anything of its group still running is not waited for by anyone: end it.
            signal_group(running.pid, rustix::process::Signal::KILL);
            exit
        }
        Err(_) => {
            tracing::warn!(process = name, timeout = %vitals_core::Duration::from(timeout), "did not exit after SIGTERM within stop_timeout: SIGKILL");
            signal_group(running.pid, rustix::process::Signal::KILL);
            wait(running).await
        }
    }
}

/// Forwards one output stream to the log, a line per event, with the process's name.
async fn forward(
    name: String,
    stream: &'static str,
    mut reader: Box<dyn AsyncRead + Send + Unpin>,
    port_conflict: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let mut dropping = false;
    let emit = |line: &[u8], truncated: bool| {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        if is_address_in_use(text) {
            port_conflict.store(true, Ordering::Relaxed);
        }
        if truncated {
            tracing::info!(process = %name, stream, truncated = true, "{text}");
        } else {
            tracing::info!(process = %name, stream, "{text}");
        }
    };
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                if !dropping {
                    emit(&line, false);
                }
                line.clear();
                dropping = false;
            } else if !dropping {
                line.push(b);
                if line.len() >= MAX_LINE {
                    emit(&line, true);
                    line.clear();
                    dropping = true;
                }
            }
        }
    }
    if !line.is_empty() && !dropping {
        emit(&line, false);
    }
}

/// A line in which a server says it could not bind its port (llama.cpp's "couldn't bind",
/// Python's "Address already in use", Go's "bind: address already in use").
pub(crate) fn is_address_in_use(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    lower.contains("address already in use")
        || lower.contains("eaddrinuse")
        || lower.contains("couldn't bind")
        || lower.contains("could not bind")
}

#[cfg(test)]
mod tests {
    #[test]
    fn address_in_use_lines_from_real_servers() {
        for line in [
            "OSError: [Errno 98] Address already in use",
            "main: couldn't bind HTTP server socket, hostname: 127.0.0.1, port: 8080",
            "listen tcp 127.0.0.1:8080: bind: address already in use",
            "Error: listen EADDRINUSE: address already in use :::3000",
        ] {
            assert!(super::is_address_in_use(line), "{line}");
        }
        assert!(!super::is_address_in_use(
            "llama server listening at http://127.0.0.1:8080"
        ));
    }
}
