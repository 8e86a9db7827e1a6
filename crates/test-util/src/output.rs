//! A started process's output: every line kept for failure messages, and a wait for the line
//! that says where it listens.

// Real child processes run on the wall clock, not on tokio's.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read};
use std::process::Child;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The lines a child printed so far, on stdout and stderr alike.
#[derive(Debug, Clone, Default)]
pub(crate) struct Logs(Arc<Mutex<Vec<String>>>);

impl Logs {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        self.lines().join("\n")
    }
}

/// Reads the child's piped stdout and stderr into [`Logs`] from here on.
#[derive(Debug)]
pub(crate) struct Watch {
    pub logs: Logs,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    pub fn start(child: &mut Child) -> Watch {
        let logs = Logs::default();
        let (tx, lines) = mpsc::channel();
        let streams: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ];
        for stream in streams.into_iter().flatten() {
            let (tx, sink) = (tx.clone(), logs.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.0.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        Watch { logs, lines }
    }

    /// Waits up to `within` for a line for which `find` gives a value; otherwise kills the child
    /// and fails with everything it printed.
    pub fn wait_for<T>(
        &self,
        child: &mut Child,
        what: &str,
        within: Duration,
        mut find: impl FnMut(&str) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(found) = find(&line) {
                        return found;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "{what} did not start listening; its output:\n{}",
                        self.logs.text()
                    );
                }
            }
        }
    }
}
