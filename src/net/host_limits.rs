//! The kernel settings that bound how many connections one machine holds,
//! read once so `serve` and `bench` can say at start what they run under.

use std::fmt;

/// The kernel's connection-related limits (`None`: not readable here,
/// e.g. not Linux).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    /// `net.ipv4.ip_local_port_range`: the ports a connection from one
    /// source address can take, low and high, inclusive.
    pub ephemeral_ports: Option<(u16, u16)>,
    /// `net.core.somaxconn`: the longest accept queue a listener gets.
    pub somaxconn: Option<u32>,
}

impl HostLimits {
    /// Reads them from `/proc/sys`.
    pub fn read() -> HostLimits {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        HostLimits {
            ephemeral_ports: read("/proc/sys/net/ipv4/ip_local_port_range")
                .and_then(|text| parse_range(&text)),
            somaxconn: read("/proc/sys/net/core/somaxconn").and_then(|t| t.trim().parse().ok()),
        }
    }

    /// How many ephemeral ports one source address has.
    pub fn ports_per_source(&self) -> Option<u32> {
        let (low, high) = self.ephemeral_ports?;
        Some(u32::from(high.checked_sub(low)?) + 1)
    }
}

/// `ephemeral ports 32768-60999 (28232 per source address), somaxconn 4096`.
impl fmt::Display for HostLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.ephemeral_ports, self.ports_per_source()) {
            (Some((low, high)), Some(n)) => {
                write!(f, "ephemeral ports {low}-{high} ({n} per source address)")?
            }
            _ => f.write_str("ephemeral ports unknown")?,
        }
        match self.somaxconn {
            Some(n) => write!(f, ", somaxconn {n}"),
            None => f.write_str(", somaxconn unknown"),
        }
    }
}

/// `"32768\t60999\n"` as the kernel writes it.
fn parse_range(text: &str) -> Option<(u16, u16)> {
    let mut fields = text.split_whitespace().map(str::parse::<u16>);
    match (fields.next(), fields.next(), fields.next()) {
        (Some(Ok(low)), Some(Ok(high)), None) if low <= high => Some((low, high)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_port_range_format_parses_and_anything_else_does_not() {
        assert_eq!(parse_range("32768\t60999\n"), Some((32768, 60999)));
        for bad in ["", "32768", "60999 32768", "1 2 3", "a b", "1 70000"] {
            assert_eq!(parse_range(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_line_names_the_range_its_size_and_somaxconn() {
        let limits = HostLimits {
            ephemeral_ports: Some((32768, 60999)),
            somaxconn: Some(4096),
        };
        assert_eq!(limits.ports_per_source(), Some(28232));
        assert_eq!(
            limits.to_string(),
            "ephemeral ports 32768-60999 (28232 per source address), somaxconn 4096"
        );
        let unknown = HostLimits {
            ephemeral_ports: None,
            somaxconn: None,
        };
        assert_eq!(
            unknown.to_string(),
            "ephemeral ports unknown, somaxconn unknown"
        );
    }
}
