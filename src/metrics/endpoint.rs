//! `GET /metrics`: the server's counters in the Prometheus text format,
//! answered by the event loop itself like any other connection (so its
//! deadlines and output limits bound a slow or garbage-sending client).

use std::sync::Arc;

use super::{prometheus, ServiceCounters, ShardStats};
use crate::limit::IpTable;
use crate::service::{ConnContext, TcpService};

/// The longest request head accepted; longer ones get `431` and a close.
const MAX_REQUEST: usize = 8 * 1024;

/// The metrics endpoint (see [`Builder::metrics`](crate::Builder::metrics)):
/// wired by the server to every shard's counters, the services' declared
/// counters and the per-source table.
pub(crate) struct MetricsService {
    shards: Arc<[Arc<ShardStats>]>,
    services: Arc<ServiceCounters>,
    sources: Arc<IpTable>,
}

impl MetricsService {
    pub(crate) fn new(
        shards: Arc<[Arc<ShardStats>]>,
        services: Arc<ServiceCounters>,
        sources: Arc<IpTable>,
    ) -> MetricsService {
        MetricsService {
            shards,
            services,
            sources,
        }
    }

    fn body(&self) -> String {
        let shards: Vec<_> = self.shards.iter().map(|s| s.snapshot()).collect();
        let service_values: Vec<Vec<u64>> =
            self.shards.iter().map(|s| s.service_snapshot()).collect();
        let services: Vec<_> = (self.services.specs.iter().enumerate())
            .map(|(slot, spec)| (*spec, service_values.iter().map(|v| v[slot]).collect()))
            .collect();
        let sources = self.sources.stats();
        let extra = [
            (
                "strikes_total",
                "Strikes counted against source addresses.",
                sources.strikes,
            ),
            (
                "bans_total",
                "Bans imposed, of addresses and of address blocks.",
                sources.bans,
            ),
            (
                "bans_active",
                "Bans in force now, of addresses and of blocks.",
                sources.bans_active as u64,
            ),
            (
                "block_bans_active",
                "Bans of whole address blocks (IPv4 /24, IPv6 /48) in force now.",
                sources.block_bans_active as u64,
            ),
            (
                "ban_evictions_total",
                "Bans dropped early to bound the ban list.",
                sources.ban_evictions,
            ),
            (
                "admitted_untracked_total",
                "Connections admitted untracked while the per-source table was full.",
                sources.admitted_untracked,
            ),
            (
                "sources_tracked",
                "Source addresses in the per-source table.",
                sources.sources as u64,
            ),
            (
                "source_evictions_total",
                "Sources forgotten to bound the table.",
                sources.evictions,
            ),
        ];
        prometheus(&shards, &services, &extra)
    }
}

impl TcpService for MetricsService {
    fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
        let line = match request_line(data) {
            Head::Complete(line) => line,
            Head::BareCr => {
                respond(conn, "400 Bad Request", "bare CR in the request head\n");
                return data.len();
            }
            Head::Partial if data.len() > MAX_REQUEST => {
                respond(
                    conn,
                    "431 Request Header Fields Too Large",
                    "request too large\n",
                );
                return data.len();
            }
            // The head is not complete yet (the frame timeout bounds the wait).
            Head::Partial => return 0,
        };
        let mut words = line.split(|&b| b == b' ');
        match (words.next(), words.next()) {
            (Some(b"GET"), Some(b"/metrics")) => {
                respond(conn, "200 OK", &self.body());
            }
            (Some(b"GET"), Some(_)) => respond(conn, "404 Not Found", "try /metrics\n"),
            (Some(_), Some(_)) => respond(conn, "405 Method Not Allowed", "GET only\n"),
            _ => respond(conn, "400 Bad Request", "not an HTTP request\n"),
        }
        data.len()
    }
}

/// How far a request head has arrived.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Head<'a> {
    /// The head ended (an empty line); its first line, without terminator.
    Complete(&'a [u8]),
    /// A CR not followed by LF: RFC 9112 §2.2 lets a recipient reject
    /// the message, and this endpoint does, at once.
    BareCr,
    /// No empty line yet.
    Partial,
}

/// Finds the end of the request head at the front of `data`: the first
/// empty line. Lines end in CRLF or, as RFC 9112 §2.2 allows a recipient
/// to accept, in a bare LF (the CR before an LF is dropped), so `\n\n`,
/// `\r\n\n` and `\n\r\n` end a head as `\r\n\r\n` does. A CR followed
/// by anything but LF is refused as soon as the byte after it arrives.
pub(crate) fn request_line(data: &[u8]) -> Head<'_> {
    let mut first: Option<&[u8]> = None;
    let mut line_start = 0;
    for (i, &byte) in data.iter().enumerate() {
        match byte {
            b'\n' => {
                let line = &data[line_start..i];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let request = *first.get_or_insert(line);
                if line.is_empty() {
                    return Head::Complete(request);
                }
                line_start = i + 1;
            }
            b'\r' if data.get(i + 1).is_some_and(|&next| next != b'\n') => return Head::BareCr,
            _ => {}
        }
    }
    Head::Partial
}

/// One response, then the connection closes (no keep-alive: a scrape is
/// one request).
fn respond(conn: &mut ConnContext<'_>, status: &str, body: &str) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.send(head.as_bytes());
    conn.send(body.as_bytes());
    conn.close();
}

#[cfg(test)]
mod tests {
    use super::{request_line, Head};

    #[test]
    fn heads_end_at_the_first_empty_line_with_either_line_ending() {
        for head in [
            &b"GET /metrics HTTP/1.1\r\n\r\n"[..],
            b"GET /metrics HTTP/1.1\n\n",
            b"GET /metrics HTTP/1.1\r\n\n",
            b"GET /metrics HTTP/1.1\nHost: a\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: a\n\r\nextra",
        ] {
            assert_eq!(
                request_line(head),
                Head::Complete(b"GET /metrics HTTP/1.1"),
                "{head:?}"
            );
        }
        // An empty first line is the end of an empty head.
        assert_eq!(request_line(b"\n"), Head::Complete(b""));
        assert_eq!(request_line(b"\r\n"), Head::Complete(b""));
    }

    #[test]
    fn partial_heads_wait_and_bare_cr_is_refused_once_its_next_byte_is_in() {
        for partial in [
            &b""[..],
            b"GET",
            b"GET /\r",
            b"GET /\r\n",
            b"GET /\nHost: a\r",
        ] {
            assert_eq!(request_line(partial), Head::Partial, "{partial:?}");
        }
        for bad in [
            &b"GET /\rX"[..],
            b"GET /\r\r\n\r\n",
            b"GET /\r\nHost: a\rb\r\n\r\n",
        ] {
            assert_eq!(request_line(bad), Head::BareCr, "{bad:?}");
        }
    }
}
