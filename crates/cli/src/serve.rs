//! `vitals serve`: the sidecar, a thin shell over the `vitals` runtime.

use std::process::ExitCode;

use vitals::{Builder, Error};
use vitals_core::config::GateLimit;
use vitals_core::Config;

use crate::EXIT_CONFIG;

/// `config` as loaded, `--listen` already in its `server.listen` ([`crate::config::load`]).
pub fn run(mut config: Config, entrypoint: Vec<String>) -> ExitCode {
    fit_open_files(&mut config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listen = config.server.listen;
    let result = runtime.block_on(async move {
        let mut builder = Builder::from_config(config).listen(listen).os_signals(true);
        if !entrypoint.is_empty() {
            builder = builder.entrypoint(entrypoint);
        }
        let (vitals, _handle) = builder.build()?;
        vitals.run().await
    });
    // Drained, or cut short: nothing left is worth waiting for. Dropping the runtime would wait
    // for its blocking threads, and a DNS lookup (getaddrinfo runs on one) against a resolver
    // that never answers holds one for the resolver's own timeout, far past drain.grace, where
    // the platform would SIGKILL vitals. Leave them to the process exit.
    runtime.shutdown_background();
    match result {
        Ok(exit) => ExitCode::from(exit.code),
        Err(e @ (Error::Config(_) | Error::Build(_))) => {
            report_text!("error: configuration: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Files vitals keeps open besides its listeners' client connections and the gate's
/// connections to its upstream: the listeners, dependency checks, supervised processes' pipes,
/// the runtime's own.
const RESERVED_FILES: u64 = 128;

/// The most connections the gate holds to its upstream with `per_listener` client connections:
/// one for each request in flight, so no more than `gate.max_concurrent` (`"auto"`: learned
/// later, and bounded by the client connections alone) and no more than one a client
/// connection.
fn upstream_files(config: &Config, per_listener: u64) -> u64 {
    match config.gate.as_ref().map(|g| &g.max_concurrent) {
        None => 0,
        Some(GateLimit::Fixed(n)) => u64::from(*n).min(per_listener),
        Some(GateLimit::Auto) => per_listener,
    }
}

/// The listeners that take client connections: the probe port, and the gate's.
fn listeners(config: &Config) -> u64 {
    1 + u64::from(config.gate.is_some())
}

/// The files `per_listener` connections on each listener take, with the gate's upstream
/// connections and vitals' own.
fn files_for(config: &Config, per_listener: u64) -> u64 {
    per_listener * listeners(config) + upstream_files(config, per_listener) + RESERVED_FILES
}

/// The most connections a listener that `files` hold ([`files_for`] grows with it: one file a
/// connection on each listener and up to one more to the gate's upstream), and at least 16.
fn connections_that_fit(config: &Config, files: u64) -> u64 {
    let (mut low, mut high) = (0, files);
    while low < high {
        let mid = (low + high).div_ceil(2);
        if files_for(config, mid) <= files {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    low.max(16)
}

/// Makes room for every listener's connections and vitals' own files: raises the open-file limit
/// as far as needed (within the ceiling the platform allows; children then inherit it), and
/// when even the ceiling is too low, lowers `server.max_connections` to fit. A connection flood
/// must run into vitals' own cap, which makes room by closing the oldest connection, and never
/// into the process's limit, where accepting a probe's connection fails and the probe with it
/// (a container's limit is often 1024 files, and `server.max_connections` defaults to 1024 on
/// each listener: the probe port, and the gate's).
fn fit_open_files(config: &mut Config) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let max = u64::from(config.server.max_connections);
    let needed = files_for(config, max);
    let mut limit = getrlimit(Resource::Nofile);
    // None: unlimited.
    let Some(soft) = limit.current else { return };
    if soft >= needed {
        return;
    }
    let raised = limit.maximum.map_or(needed, |hard| hard.min(needed));
    if raised > soft {
        limit.current = Some(raised);
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::debug!(error = %e, "cannot raise the open-file limit");
        }
    }
    let Some(files) = getrlimit(Resource::Nofile).current else {
        return;
    };
    if files >= needed {
        tracing::debug!(from = soft, to = files, "raised the open-file limit");
        return;
    }
    let fit = connections_that_fit(config, files);
    config.server.max_connections = u32::try_from(fit).unwrap_or(u32::MAX);
    let upstream = upstream_files(config, fit);
    // Info, not a warning: under a container's usual 1024 files, the default cap on one listener
    // does not fit either, and every start would warn about a default.
    tracing::info!(
        open_files = files,
        listeners = listeners(config),
        "the open-file limit ({files}) cannot hold server.max_connections ({max}) connections on \
         each listener, the gate's connections to its upstream and vitals' own files \
         ({RESERVED_FILES}): server.max_connections lowered to {fit} (with {upstream} upstream \
         connections); raise the limit (ulimit -n, the container's nofile) or set \
         server.max_connections to at most {fit}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Config {
        vitals_core::config::from_toml(toml, &|_| None).unwrap()
    }

    const GATE: &str =
        "[gate]\nlisten = \"127.0.0.1:8081\"\nupstream = \"http://127.0.0.1:9000\"\n";

    /// Each listener's connections, the gate's upstream connections and vitals' own files all fit
    /// in the limit, and one connection more would not.
    #[test]
    fn the_connections_that_fit_leave_room_for_the_upstream() {
        let cases = [
            // No gate: one listener and vitals' own.
            (String::new(), 256, 128),
            // Two listeners and two upstream connections (max_concurrent).
            (format!("{GATE}max_concurrent = 2\n"), 256, 63),
            // max_concurrent above the connections: one upstream connection a client connection.
            (format!("{GATE}max_concurrent = 1000\n"), 512, 128),
            (format!("{GATE}max_concurrent = \"auto\"\n"), 512, 128),
            (format!("{GATE}max_concurrent = 100\n"), 1024, 398),
            // Too few files for anything: the floor.
            (format!("{GATE}max_concurrent = 2\n"), 100, 16),
        ];
        for (toml, files, fit) in cases {
            let c = config(&toml);
            assert_eq!(
                connections_that_fit(&c, files),
                fit,
                "{toml} with {files} files"
            );
            if fit > 16 {
                assert!(files_for(&c, fit) <= files, "{toml}");
                assert!(files_for(&c, fit + 1) > files, "{toml}");
            }
        }
    }
}
