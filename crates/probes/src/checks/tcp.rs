//! `kind = "tcp"`: the dependency accepts a TCP connection.

use tokio::net::TcpStream;
use vitals_core::config::TcpCheck;
use vitals_core::lifecycle::Outcome;

use super::failed;

#[derive(Debug)]
pub struct TcpChecker {
    address: String,
}

impl TcpChecker {
    pub fn new(check: &TcpCheck) -> Self {
        TcpChecker {
            address: check.address.clone(),
        }
    }

    pub async fn check(&self) -> Outcome {
        let addrs = match tokio::net::lookup_host(&self.address).await {
            Ok(addrs) => addrs.collect::<Vec<_>>(),
            Err(e) => return failed(format!("cannot resolve {}: {e}", self.address)),
        };
        if addrs.is_empty() {
            return failed(format!("{} resolves to no address", self.address));
        }
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(_) => return Outcome::Success,
                Err(e) => last = Some(e),
            }
        }
        let e = last.expect("at least one address was tried");
        failed(format!(
            "cannot connect to {}: {}",
            self.address,
            describe_io(&e)
        ))
    }
}

pub(crate) fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        std::io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepting_listener_is_up_and_closed_port_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = TcpChecker {
            address: addr.to_string(),
        };
        assert_eq!(up.check().await, Outcome::Success);
        drop(listener);
        let down = TcpChecker {
            address: addr.to_string(),
        };
        assert_eq!(
            down.check().await,
            failed(format!("cannot connect to {addr}: connection refused"))
        );
    }

    #[tokio::test]
    async fn unresolvable_host_says_so() {
        let c = TcpChecker {
            address: "no-such-host.invalid:80".into(),
        };
        let reason = c.check().await.reason().unwrap();
        assert!(
            reason.starts_with("cannot resolve no-such-host.invalid:80"),
            "{reason}"
        );
    }
}
