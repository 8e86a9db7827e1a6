//! `kind = "postgres"`: a query (default `SELECT 1`) that must return `expect_rows` rows: a
//! known-row lookup, such as one in a pgvector table, exercises the index and not just the port.

use std::str::FromStr;

use tokio_postgres::NoTls;
use vitals_core::config::PostgresCheck;
use vitals_core::lifecycle::Outcome;

use super::{failed, scrubbed, BuildError};

#[derive(Debug)]
pub struct PostgresChecker {
    config: tokio_postgres::Config,
    check: PostgresCheck,
}

impl PostgresChecker {
    pub fn new(name: &str, check: &PostgresCheck) -> Result<Self, BuildError> {
        let mut config =
            tokio_postgres::Config::from_str(check.url.as_str()).map_err(|e| BuildError {
                name: name.to_owned(),
                key: "url",
                reason: format!("postgres url: {}", super::root_cause(&e)),
            })?;
        if let Some(p) = &check.password {
            config.password(p.expose());
        }
        config.application_name("vitals");
        Ok(PostgresChecker {
            config,
            check: check.clone(),
        })
    }

    pub async fn check(&self) -> Outcome {
        scrubbed(self.run().await, self.check.password.as_ref())
    }

    async fn run(&self) -> Outcome {
        let (client, connection) = match self.config.connect(NoTls).await {
            Ok(c) => c,
            Err(e) => return failed(format!("cannot connect: {}", describe(&e))),
        };
        // The connection does the I/O; it runs beside the query in this future (nothing is
        // spawned), and both end when the check does.
        let query = client.query(self.check.query.as_str(), &[]);
        tokio::pin!(connection);
        let rows = tokio::select! {
            r = query => r,
            r = &mut connection => {
                return failed(match r {
                    Ok(()) => "the server closed the connection".to_owned(),
                    Err(e) => format!("connection lost: {}", describe(&e)),
                })
            }
        };
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => return failed(format!("query failed: {}", describe(&e))),
        };
        match self.check.expect_rows {
            Some(n) if rows.len() as u64 != n => failed(format!(
                "the query returned {} row{}, expected {n}",
                rows.len(),
                if rows.len() == 1 { "" } else { "s" }
            )),
            _ => Outcome::Success,
        }
    }
}

/// The server's message when there is one ("relation \"items\" does not exist"), else the
/// innermost cause ("Connection refused").
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let cause = super::root_cause(e);
    if cause.contains("Connection refused") {
        "connection refused".into()
    } else {
        cause
    }
}
