//! vitals' log on stderr, written by a thread of its own.
//!
//! A reader of the log that stops reading and stays (a container runtime whose log driver
//! blocks while its destination is down, as Docker's and ECS's `awslogs` do by default) fills
//! the pipe, and a write to a full pipe waits. Written where each line is logged, that wait
//! would take the runtime's threads one by one, and with them the probe routes: a liveness
//! probe would fail because a log store is down. So each line goes into a bounded queue that a
//! writer thread empties; when the queue is full the line is dropped and counted, and the
//! writer says how many were dropped once it can write again.
//!
//! (tracing-appender's non-blocking writer does the same, but its guard prints to stdout when
//! its queue is full at exit: on the same stalled pipe that print waits for ever, and on a
//! closed one it panics.)

// A plain thread, outside tokio: its clock is std's.
#![allow(clippy::disallowed_methods)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lines held for the writer at most: about a megabyte of typical lines.
const QUEUE_LINES: usize = 4096;

enum Msg {
    Line(Vec<u8>),
    /// Answered once every line before it is written.
    Flush(SyncSender<()>),
}

/// Where the log's lines go: a handle to the writer thread's queue (a `MakeWriter` for
/// tracing-subscriber).
#[derive(Clone)]
pub(crate) struct Log {
    queue: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

/// One line on its way: tracing-subscriber formats an event and writes it in one call.
pub(crate) struct Line<'a>(&'a Log);

std::thread_local! {
    /// Set on the writer thread while it logs its own note: the note's line comes back here,
    /// formatted as the log is, to be written at once (the queue may be full).
    static NOTE: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
}

impl std::io::Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let noted = NOTE.with(|note| {
            note.borrow_mut()
                .as_mut()
                .map(|note| note.extend_from_slice(buf))
                .is_some()
        });
        if noted {
            return Ok(buf.len());
        }
        match self.0.queue.try_send(Msg::Line(buf.to_vec())) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                self.0.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Log {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line(self)
    }
}

impl Log {
    /// Waits, up to `within`, for the lines logged so far to be written; `false` if they were
    /// not (the reader is stalled). Never waits longer.
    pub(crate) fn flush(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let (ack, acked) = mpsc::sync_channel(1);
        let mut msg = Msg::Flush(ack);
        loop {
            match self.queue.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return true,
                Err(TrySendError::Full(back)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    msg = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        acked
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

/// Starts the writer thread on `out` (stderr); `None` if the thread cannot be started.
pub(crate) fn start<W>(out: W) -> Option<Log>
where
    W: std::io::Write + Send + 'static,
{
    start_with(out, QUEUE_LINES)
}

fn start_with<W>(mut out: W, lines: usize) -> Option<Log>
where
    W: std::io::Write + Send + 'static,
{
    let (queue, lines_in) = mpsc::sync_channel(lines);
    let log = Log {
        queue,
        dropped: Arc::new(AtomicU64::new(0)),
    };
    let dropped = log.dropped.clone();
    std::thread::Builder::new()
        .name("vitals-log".into())
        .spawn(move || write_lines(&mut out, &lines_in, &dropped))
        .ok()?;
    Some(log)
}

/// How often, at most, the writer says how many lines it dropped.
const DROPPED_EVERY: Duration = Duration::from_secs(10);

fn write_lines<W: std::io::Write>(out: &mut W, lines: &Receiver<Msg>, dropped: &AtomicU64) {
    let mut said: Option<Instant> = None;
    for msg in lines {
        match msg {
            // A reader that went away loses the line; there is no one to tell.
            Msg::Line(line) => {
                let due = said.is_none_or(|at| at.elapsed() >= DROPPED_EVERY);
                if out.write_all(&line).is_ok() && due {
                    let n = dropped.swap(0, Ordering::Relaxed);
                    if n > 0 {
                        said = Some(Instant::now());
                        // Through tracing, so that it has the log's format; written here, not
                        // queued, where the lines that keep the queue full would crowd it out.
                        NOTE.with(|note| *note.borrow_mut() = Some(Vec::new()));
                        tracing::warn!(
                            dropped = n,
                            "{n} log line{} dropped: the log's reader did not keep up",
                            if n == 1 { "" } else { "s" }
                        );
                        let note = NOTE
                            .with(|note| note.borrow_mut().take())
                            .unwrap_or_default();
                        let _ = out.write_all(&note);
                    }
                }
            }
            Msg::Flush(ack) => {
                let _ = out.flush();
                let _ = ack.try_send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::sync::Mutex;

    /// A writer that blocks until `open` is set, then keeps what it is given.
    #[derive(Clone, Default)]
    struct Gated {
        open: Arc<(Mutex<bool>, std::sync::Condvar)>,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl std::io::Write for Gated {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (lock, cvar) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cvar.wait(open).unwrap();
            }
            self.got.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Gated {
        fn open(&self) {
            let (lock, cvar) = &*self.open;
            *lock.lock().unwrap() = true;
            cvar.notify_all();
        }
    }

    #[test]
    fn a_stalled_writer_costs_lines_never_the_caller() {
        let out = Gated::default();
        let log = start_with(out.clone(), 4).unwrap();
        // The writer thread takes the first line and waits in it; 4 more fill the queue; the
        // rest are dropped, at once.
        for i in 0..100 {
            Line(&log)
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        assert!(
            !log.flush(Duration::from_millis(50)),
            "a stalled writer is not waited for past the bound"
        );
        let dropped = log.dropped.load(Ordering::Relaxed);
        assert!((95..=96).contains(&dropped), "{dropped}");
        out.open();
        assert!(log.flush(Duration::from_secs(5)));
        let got = String::from_utf8(out.got.lock().unwrap().clone()).unwrap();
        assert!(got.starts_with("line 0\nline 1\n"), "{got}");
        assert_eq!(got.lines().count(), 100 - dropped as usize, "{got}");
        assert_eq!(log.dropped.load(Ordering::Relaxed), 0, "counted as said");
    }

    #[test]
    fn flush_waits_for_the_lines_before_it() {
        let out = Gated::default();
        out.open();
        let log = start_with(out.clone(), 64).unwrap();
        for i in 0..50 {
            Line(&log).write_all(format!("{i}\n").as_bytes()).unwrap();
        }
        assert!(log.flush(Duration::from_secs(5)));
        assert_eq!(
            String::from_utf8(out.got.lock().unwrap().clone())
                .unwrap()
                .lines()
                .count(),
            50
        );
    }
}
