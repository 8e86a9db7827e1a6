//! `vitals serve`: the sidecar, a thin shell over the `vitals` runtime.

use std::process::ExitCode;

use vitals::{Builder, Error};
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

/// Files vitals keeps open besides its listeners' client connections: the listeners, the
/// upstream's connections, dependency checks, supervised processes' pipes, the runtime's own.
const RESERVED_FILES: u64 = 128;

/// Makes room for every listener's connections and vitals' own files: raises the open-file limit
/// as far as needed (within the ceiling the platform allows; children then inherit it), and
/// when even the ceiling is too low, lowers `server.max_connections` to fit. A connection flood
/// must run into vitals' own cap, which makes room by closing the oldest connection, and never
/// into the process's limit, where accepting a probe's connection fails and the probe with it
/// (a container's limit is often 1024 files, and `server.max_connections` defaults to 1024 on
/// each listener: the probe port, and the gate's).
fn fit_open_files(config: &mut Config) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let listeners = 1 + u64::from(config.gate.is_some());
    let max = u64::from(config.server.max_connections);
    let needed = max * listeners + RESERVED_FILES;
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
    let fit = (files.saturating_sub(RESERVED_FILES) / listeners).max(16);
    config.server.max_connections = u32::try_from(fit).unwrap_or(u32::MAX);
    // Info, not a warning: under a container's usual 1024 files, the default cap on one listener
    // does not fit either, and every start would warn about a default.
    tracing::info!(
        open_files = files,
        listeners,
        "the open-file limit ({files}) cannot hold server.max_connections ({max}) connections on \
         each listener and vitals' own files ({RESERVED_FILES}): server.max_connections lowered \
         to {fit}; raise the limit (ulimit -n, the container's nofile) or set \
         server.max_connections to at most {fit}"
    );
}
