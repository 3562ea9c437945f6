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
pub(crate) struct MetricsEndpoint {
    shards: Arc<[Arc<ShardStats>]>,
    services: Arc<ServiceCounters>,
    sources: Arc<IpTable>,
}

impl MetricsEndpoint {
    pub(crate) fn new(
        shards: Arc<[Arc<ShardStats>]>,
        services: Arc<ServiceCounters>,
        sources: Arc<IpTable>,
    ) -> MetricsEndpoint {
        MetricsEndpoint {
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

impl TcpService for MetricsEndpoint {
    fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            if data.len() > MAX_REQUEST {
                respond(
                    conn,
                    "431 Request Header Fields Too Large",
                    "request too large\n",
                );
                return data.len();
            }
            return 0; // the head is not complete yet (the frame timeout bounds the wait)
        };
        let line = data[..end]
            .split(|&b| b == b'\r')
            .next()
            .unwrap_or_default();
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
