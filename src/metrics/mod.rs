//! Per-shard counters and gauges, the counters services declare, and the
//! `/metrics` endpoint that serves them.
//!
//! Each shard owns one `ShardStats` and is its only writer, so the atomics
//! are never contended: `Relaxed` adds on a cache line no other core writes.
//! Readers (tests, the metrics endpoint) take a [`Stats`] snapshot and sum
//! shards themselves.

mod endpoint;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::service::{CounterKind, CounterSpec};

pub(crate) use endpoint::MetricsService;
#[cfg(feature = "signals")] // the supervisor's endpoint reads requests alike
pub(crate) use endpoint::{request_line, Head};

/// Connections the metrics endpoint may hold at once from its own reserve,
/// outside `max_conns` and the per-source limits (16): an operator can
/// scrape a server that is full or under attack.
pub const METRICS_RESERVE: usize = 16;

macro_rules! stats {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// The live counters of one shard; see [`Stats`] for their meaning.
        #[derive(Debug)]
        pub(crate) struct ShardStats {
            $(pub(crate) $name: Counter,)*
            /// The services' own counters, by slot (see [`ServiceCounters`]).
            pub(crate) service: Box<[Counter]>,
        }

        /// A snapshot of one shard's counters (or a sum of several).
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct Stats {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        impl ShardStats {
            /// Counters for a shard whose services declared `service_counters`
            /// slots.
            pub(crate) fn new(service_counters: usize) -> ShardStats {
                ShardStats {
                    $($name: Counter::default(),)*
                    service: (0..service_counters).map(|_| Counter::default()).collect(),
                }
            }

            /// The current values.
            pub fn snapshot(&self) -> Stats {
                Stats { $($name: self.$name.get(),)* }
            }

            /// The current values of the services' counters, by slot.
            pub fn service_snapshot(&self) -> Vec<u64> {
                self.service.iter().map(Counter::get).collect()
            }
        }

        impl Stats {
            /// Every counter: its name, its documentation, its value.
            pub fn fields(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($name), concat!($($doc, " ",)*), self.$name),)*]
            }
        }

        impl std::ops::Add for Stats {
            type Output = Stats;
            fn add(self, other: Stats) -> Stats {
                Stats { $($name: self.$name + other.$name,)* }
            }
        }
    };
}

stats! {
    /// Connections open now (gauge).
    conns_open,
    /// Connections accepted.
    conns_accepted,
    /// Connections closed after the peer closed its side.
    closed_peer,
    /// Connections closed by a reset or socket error.
    closed_error,
    /// Outbound connections services began (`ShardContext::connect`).
    outbound_started,
    /// Outbound connections that connected (`TcpService::on_connected`).
    outbound_connected,
    /// Outbound connections that did not connect: refused, unreachable,
    /// timed out, given up by their service or by shutdown, or refused a
    /// slot (`max_conns`).
    outbound_failed,
    /// Connections admitted from a trusted source (`ServerConfig::trusted`),
    /// past the per-source cap, connect rate and bans.
    conns_trusted,
    /// Protocol errors by trusted sources: logged, never counted towards a ban.
    strikes_trusted,
    /// Datagrams from trusted sources, exempt from the per-source UDP rate
    /// (counted only while a rate is set).
    udp_trusted,
    /// PROXY protocol headers taken from `proxy_from` peers.
    proxy_headers,
    /// Connections closed for a PROXY header from a peer outside `proxy_from`.
    proxy_untrusted,
    /// Connections from `proxy_from` peers closed for a malformed or
    /// oversized PROXY header.
    proxy_malformed,
    /// Connections from `proxy_from` peers closed with no complete PROXY
    /// header within the frame timeout.
    proxy_timeouts,
    /// Connections refused: `max_conns` reached.
    refused_server_full,
    /// Connections refused: the per-IP cap reached.
    refused_per_ip,
    /// Connections refused: the per-IP connect rate exceeded.
    refused_connect_rate,
    /// Connections refused: the source is banned.
    refused_banned,
    /// Connections refused: too many new addresses at once (the
    /// per-source table full of connected ones, the untracked rate spent).
    refused_busy,
    /// Connections taken with the reserve descriptor and closed: out of
    /// descriptors.
    refused_no_descriptors,
    /// Messages (frames) services decoded from their peers.
    frames_in,
    /// Messages (frames) services sent.
    frames_out,
    /// TLS connections that broke the protocol (a plaintext client, a bad
    /// handshake); each got an alert and was closed.
    tls_errors,
    /// Connections closed by their service.
    closed_service,
    /// Connections closed because unconsumed input outgrew the read buffer.
    closed_read_buffer_full,
    /// Connections closed by shutdown.
    closed_shutdown,
    /// Connections closed by the idle timeout.
    closed_idle_timeout,
    /// Connections closed by the frame timeout (slow or stuck senders).
    closed_frame_timeout,
    /// Connections closed by the write timeout (peers that stopped reading).
    closed_write_timeout,
    /// Connections closed for pending output past the hard limit.
    closed_output_hard,
    /// Connections closed for pending output above the soft limit too long.
    closed_output_soft,
    /// `accept` errors other than running out of descriptors.
    accept_errors,
    /// Times accepting paused because the process or system ran out of descriptors.
    accept_pauses,
    /// Read events that used up their byte budget and were revisited.
    read_budget_hits,
    /// Times a connection stopped being read because its write buffer passed the high-water mark.
    backpressure_pauses,
    /// TCP bytes read.
    tcp_bytes_in,
    /// TCP bytes read while draining for shutdown, and so discarded.
    tcp_bytes_discarded,
    /// TCP bytes written.
    tcp_bytes_out,
    /// TCP bytes echoed in the kernel (`splice` in and out again; a
    /// socket's leftover copied out of the pipe is not): counted in
    /// `tcp_bytes_in` and `tcp_bytes_out` too.
    tcp_bytes_spliced,
    /// Times splicing failed on a shard (no pipe, or `splice` refused):
    /// that shard echoes by copying from then on.
    splice_failures,
    /// UDP datagrams received.
    udp_in,
    /// UDP datagrams sent.
    udp_out,
    /// UDP datagrams dropped: larger than the receive slot.
    udp_dropped_truncated,
    /// UDP replies dropped: the send queue was full.
    udp_dropped_queue_full,
    /// Datagrams dropped: their source was over the per-source rate.
    udp_dropped_rate,
    /// Replies dropped: larger than what an unproven sender sent.
    udp_dropped_amplification,
    /// UDP replies dropped: the send failed (e.g. ICMP unreachable, too large).
    udp_send_errors,
    /// Service messages to other shards dropped: the target's inbox was full.
    mailbox_dropped,
    /// Connections this shard accepted and handed to another shard.
    handed_off,
    /// Connections another shard accepted and handed to this one.
    adopted,
    /// Buffer bytes lent to connections and sockets now (gauge).
    buffer_bytes,
    /// The most buffer bytes ever lent at once (gauge).
    buffer_bytes_peak,
}

/// One counter or gauge, written by its shard only.
///
/// Being the one writer, the shard updates it with a plain load and store
/// (`Relaxed`), not a locked read-modify-write: readers on other threads
/// still see whole values, and a counter bumped on every read and write
/// costs a store rather than a bus lock.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    pub(crate) fn incr(&self) {
        self.add(1);
    }

    pub(crate) fn decr(&self) {
        self.sub(1);
    }

    #[inline]
    pub(crate) fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    pub(crate) fn set(&self, value: u64) {
        self.0.store(value, Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// The counters every service declared, one slot per distinct name (so
/// services that name the same counter share it), and which slot each
/// service's counters go to. One per server, shared by its shards.
#[derive(Debug, Default)]
pub(crate) struct ServiceCounters {
    /// One spec per slot.
    pub(crate) specs: Vec<CounterSpec>,
    /// Per TCP service, then per UDP socket: the slot of each counter it
    /// declared, by position.
    tcp: Vec<Box<[usize]>>,
    udp: Vec<Box<[usize]>>,
}

impl ServiceCounters {
    /// Slots for what `tcp` and `udp` services declared, in order. A name
    /// declared twice with different kinds is a bug in the services.
    pub(crate) fn register(tcp: &[&[CounterSpec]], udp: &[&[CounterSpec]]) -> ServiceCounters {
        let mut registry = ServiceCounters::default();
        let slots_of = |declared: &[CounterSpec], specs: &mut Vec<CounterSpec>| {
            declared
                .iter()
                .map(
                    |spec| match specs.iter().position(|s| s.name == spec.name) {
                        Some(slot) => {
                            debug_assert_eq!(specs[slot].kind, spec.kind, "{}", spec.name);
                            slot
                        }
                        None => {
                            specs.push(*spec);
                            specs.len() - 1
                        }
                    },
                )
                .collect::<Box<[usize]>>()
        };
        for declared in tcp {
            let slots = slots_of(declared, &mut registry.specs);
            registry.tcp.push(slots);
        }
        for declared in udp {
            let slots = slots_of(declared, &mut registry.specs);
            registry.udp.push(slots);
        }
        registry
    }

    /// The slot of counter `counter` of TCP (or UDP) service `service`.
    pub(crate) fn slot(&self, tcp: bool, service: usize, counter: usize) -> Option<usize> {
        let services = if tcp { &self.tcp } else { &self.udp };
        services.get(service)?.get(counter).copied()
    }
}

/// Counters that are levels, not running totals.
const GAUGES: [&str; 3] = ["conns_open", "buffer_bytes", "buffer_bytes_peak"];

/// The Prometheus text exposition format (version 0.0.4) of every shard's
/// counters, labelled `shard`: the core's (`shards`), then the services'
/// (`services`: each declared counter with its value on every shard), then
/// `extra` server-wide values (name, help, value; counters end in
/// `_total`).
///
/// ```
/// use sockloop::metrics::{prometheus, Stats};
/// use sockloop::service::{CounterKind, CounterSpec};
///
/// let shard = Stats { conns_accepted: 3, ..Stats::default() };
/// let peers = CounterSpec { name: "peers", help: "Peers.", kind: CounterKind::Gauge };
/// let text = prometheus(&[shard], &[(peers, vec![2])], &[]);
/// assert!(text.contains("# TYPE sockloop_conns_accepted_total counter\n"));
/// assert!(text.contains("sockloop_conns_accepted_total{shard=\"0\"} 3\n"));
/// assert!(text.contains("# TYPE sockloop_peers gauge\nsockloop_peers{shard=\"0\"} 2\n"));
/// ```
pub fn prometheus(
    shards: &[Stats],
    services: &[(CounterSpec, Vec<u64>)],
    extra: &[(&str, &str, u64)],
) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let per_shard: Vec<_> = shards.iter().map(Stats::fields).collect();
    let Some(first) = per_shard.first() else {
        return out;
    };
    let core = first.iter().enumerate().map(|(i, &(name, help, _))| {
        let kind = match GAUGES.contains(&name) {
            true => CounterKind::Gauge,
            false => CounterKind::Total,
        };
        let values: Vec<u64> = per_shard.iter().map(|fields| fields[i].2).collect();
        (CounterSpec { name, help, kind }, values)
    });
    for (spec, values) in core.chain(services.iter().cloned()) {
        let metric = spec.metric();
        let kind = match spec.kind {
            CounterKind::Gauge => "gauge",
            CounterKind::Total => "counter",
        };
        out.push_str(&format!(
            "# HELP {metric} {}\n# TYPE {metric} {kind}\n",
            help_text(spec.help)
        ));
        for (shard, value) in values.iter().enumerate() {
            out.push_str(&format!("{metric}{{shard=\"{shard}\"}} {value}\n"));
        }
    }
    for (name, help, value) in extra {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let metric = format!("sockloop_{name}");
        out.push_str(&format!(
            "# HELP {metric} {}\n# TYPE {metric} {kind}\n{metric} {value}\n",
            help_text(help)
        ));
    }
    out
}

/// HELP text: one line, backslashes escaped, as the format requires.
fn help_text(doc: &str) -> String {
    let words: Vec<&str> = doc.split_whitespace().collect();
    words.join(" ").replace('\\', "\\\\")
}

#[cfg(test)]
mod service_counter_tests {
    use super::*;

    const PEERS: CounterSpec = CounterSpec {
        name: "peers",
        help: "Peers.",
        kind: CounterKind::Gauge,
    };
    const RESENT: CounterSpec = CounterSpec {
        name: "resent",
        help: "Resent.",
        kind: CounterKind::Total,
    };

    #[test]
    fn services_naming_one_counter_share_its_slot() {
        let registry = ServiceCounters::register(&[&[], &[RESENT]], &[&[PEERS, RESENT], &[PEERS]]);
        assert_eq!(registry.specs, [RESENT, PEERS]);
        assert_eq!(registry.slot(true, 0, 0), None);
        assert_eq!(registry.slot(true, 1, 0), Some(0));
        assert_eq!(registry.slot(false, 0, 0), Some(1));
        assert_eq!(registry.slot(false, 0, 1), Some(0));
        assert_eq!(registry.slot(false, 1, 0), Some(1));
        assert_eq!(registry.slot(false, 1, 1), None);
        assert_eq!(registry.slot(false, 2, 0), None);
    }
}
