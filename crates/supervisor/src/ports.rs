//! Choosing a port, and naming who holds a taken one.
//!
//! A free port is found by binding it and letting it go, which races with any other program
//! that binds ports (Ollama's comment on its own runner says the same). vitals does not hide the
//! race: a process that exits during its start after saying its address is in use (or that
//! cannot bind at all) is moved to the next port of its range, at once, and counted as a
//! `port_in_use` restart.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// Whether nothing listens on `port` (on any local address). A trial bind alone is not enough:
/// the standard library binds with `SO_REUSEADDR`, which Linux lets share a port with a
/// listener on another address that set it too (Python's servers do), so the kernel's table of
/// listening sockets is read first.
pub(crate) fn is_free(port: u16) -> bool {
    listening_socket(port).is_none()
        && TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_ok()
}

/// Who listens on `port`: its address, and the program when this user can see it.
pub(crate) fn holder(port: u16) -> String {
    let Some((address, inode)) = listening_socket(port) else {
        return format!("port {port} is in use");
    };
    match owner_of(inode) {
        Some((pid, program)) => {
            format!("port {port} is in use: {program} (pid {pid}) listens on {address}")
        }
        None => format!("port {port} is in use: something listens on {address}"),
    }
}

/// The listening socket on `port` from `/proc/net/tcp{,6}`: its address and inode.
fn listening_socket(port: u16) -> Option<(String, u64)> {
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            if fields.len() < 10 || fields[3] != "0A" {
                continue;
            }
            let Some((addr, p)) = fields[1].split_once(':') else {
                continue;
            };
            if u16::from_str_radix(p, 16).ok() != Some(port) {
                continue;
            }
            let inode = fields[9].parse().unwrap_or(0);
            return Some((format!("{}:{port}", decode_addr(addr, v6)), inode));
        }
    }
    None
}

fn decode_addr(hex: &str, v6: bool) -> String {
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect();
    if !v6 && bytes.len() == 4 {
        // Little-endian on the machines vitals runs on.
        return Ipv4Addr::new(bytes[3], bytes[2], bytes[1], bytes[0]).to_string();
    }
    if v6 && bytes.len() == 16 {
        let mut octets = [0u8; 16];
        for word in 0..4 {
            for b in 0..4 {
                octets[word * 4 + b] = bytes[word * 4 + (3 - b)];
            }
        }
        return format!("[{}]", std::net::Ipv6Addr::from(octets));
    }
    hex.to_owned()
}

/// The process holding socket `inode`, if this user may read its descriptors.
fn owner_of(inode: u64) -> Option<(i32, String)> {
    if inode == 0 {
        return None;
    }
    let target = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()) {
                let program = std::fs::read_to_string(entry.path().join("comm"))
                    .map(|c| c.trim().to_owned())
                    .unwrap_or_else(|_| "a process".to_owned());
                return Some((pid, program));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_not_free_and_its_holder_is_named() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!is_free(port));
        let holder = holder(port);
        assert!(
            holder.contains(&format!("listens on 127.0.0.1:{port}"))
                && holder.contains(&format!("pid {}", std::process::id())),
            "{holder}"
        );
        drop(listener);
        assert!(is_free(port));
    }
}
