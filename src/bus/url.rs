//! Where a NATS server is: `nats://HOST:PORT`, as `--bus` takes them.

use std::fmt;
use std::str::FromStr;

/// The port a URL without one means.
pub const DEFAULT_PORT: u16 = 4222;

/// One server of the bus. The host is a name or an address; resolving it
/// is the driver's job (the state machine never touches the network).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerUrl {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl ServerUrl {
    /// A comma-separated list, as `--bus` takes it.
    ///
    /// ```
    /// use sockloop::bus::ServerUrl;
    ///
    /// let urls = ServerUrl::parse_list("nats://127.0.0.1:4222,nats://[::1]:5000,bus.local")?;
    /// let shown: Vec<String> = urls.iter().map(ToString::to_string).collect();
    /// assert_eq!(shown, ["nats://127.0.0.1:4222", "nats://[::1]:5000", "nats://bus.local:4222"]);
    /// # Ok::<(), String>(())
    /// ```
    pub fn parse_list(list: &str) -> Result<Vec<ServerUrl>, String> {
        list.split(',').map(str::parse).collect()
    }
}

impl FromStr for ServerUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<ServerUrl, String> {
        let bad = |why: &str| Err(format!("bad NATS URL {text:?}: {why}"));
        let rest = text.trim();
        let rest = match rest.split_once("://") {
            Some(("nats", rest)) => rest,
            Some(_) => return bad("the scheme must be nats://"),
            None => rest,
        };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            match v6.split_once(']') {
                Some((host, "")) => (host, None),
                Some((host, port)) => match port.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return bad("junk after ]"),
                },
                None => return bad("no closing ]"),
            }
        } else {
            match rest.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || "/@?#".contains(c)) {
            return bad("no host, or a path, user or query (not supported)");
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(port) => match port.parse() {
                Ok(port) if port > 0 => port,
                _ => return bad("the port must be 1 to 65535"),
            },
        };
        Ok(ServerUrl {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "nats://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "nats://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let url = |host: &str, port| ServerUrl {
            host: host.into(),
            port,
        };
        assert_eq!("nats://h:1".parse(), Ok(url("h", 1)));
        assert_eq!("h".parse(), Ok(url("h", 4222)));
        assert_eq!(" 10.0.0.1:99 ".parse(), Ok(url("10.0.0.1", 99)));
        assert_eq!("[::1]".parse(), Ok(url("::1", 4222)));
        assert_eq!("nats://[::1]:7".parse(), Ok(url("::1", 7)));
        for bad in [
            "",
            "tls://h:1",
            "h:0",
            "h:x",
            "h:70000",
            "[::1",
            "[::1]x",
            "u@h",
            "h/p",
            "nats://",
        ] {
            assert!(bad.parse::<ServerUrl>().is_err(), "{bad}");
        }
        assert!(ServerUrl::parse_list("a,,b").is_err());
    }
}
