//! `vitals serve`: the sidecar, a thin shell over the `vitals` runtime.

use std::net::SocketAddr;
use std::process::ExitCode;

use vitals::{Builder, Error};
use vitals_core::Config;

use crate::EXIT_CONFIG;

pub fn run(mut config: Config, listen: Option<SocketAddr>, entrypoint: Vec<String>) -> ExitCode {
    if let Some(listen) = listen {
        config.server.listen = listen;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
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
            eprint!("error: configuration: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
