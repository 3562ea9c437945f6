//! Addresses on the command line: an IP literal or a host name, resolved
//! once when the flags are read.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// `HOST:PORT` as typed (`127.0.0.1:7000`, `[::1]:7000`, `localhost:7001`),
/// with every address it resolved to, in the resolver's order (never empty).
#[derive(Clone, Debug)]
pub(crate) struct HostPort {
    text: String,
    addrs: Vec<SocketAddr>,
}

impl HostPort {
    /// The address to bind or to send datagrams to: the resolver's first.
    pub(crate) fn first(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Every address, for a TCP connect that tries each in turn.
    pub(crate) fn all(&self) -> &[SocketAddr] {
        &self.addrs
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(text: &str) -> Result<HostPort, String> {
        let usage = "expected HOST:PORT, e.g. 127.0.0.1:7000, [::1]:7000 or localhost:7000";
        // A literal never touches the resolver.
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(HostPort {
                text: text.to_string(),
                addrs: vec![addr],
            });
        }
        match text.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => return Err(format!("bad address {text:?}: {usage}")),
        }
        let addrs: Vec<SocketAddr> = text
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {text:?}: {e}"))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("cannot resolve {text:?}: no addresses"));
        }
        Ok(HostPort {
            text: text.to_string(),
            addrs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_parse_without_the_resolver() {
        let v4: HostPort = "127.0.0.1:7000".parse().unwrap();
        assert_eq!(v4.all(), ["127.0.0.1:7000".parse().unwrap()]);
        let v6: HostPort = "[::1]:7000".parse().unwrap();
        assert_eq!(v6.first(), "[::1]:7000".parse().unwrap());
        assert_eq!(v6.to_string(), "[::1]:7000");
    }

    #[test]
    fn localhost_resolves_to_loopback() {
        let local: HostPort = "localhost:7001".parse().unwrap();
        assert!(local.all().iter().all(|a| a.ip().is_loopback()));
        assert!(local.all().iter().all(|a| a.port() == 7001));
    }

    #[test]
    fn malformed_addresses_say_what_is_expected() {
        for bad in ["7000", "localhost", ":7000", "localhost:99999"] {
            let err = bad.parse::<HostPort>().unwrap_err();
            assert!(
                err.starts_with(&format!("bad address {bad:?}: expected HOST:PORT")),
                "{bad}: {err}"
            );
        }
    }
}
