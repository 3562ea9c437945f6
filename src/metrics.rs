//! Per-shard counters and gauges.
//!
//! Each shard owns one [`ShardStats`] and is its only writer, so the atomics
//! are never contended: `Relaxed` adds on a cache line no other core writes.
//! Readers (tests, the metrics endpoint) take a [`Stats`] snapshot and sum
//! shards themselves.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! stats {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// The live counters of one shard; see [`Stats`] for their meaning.
        #[derive(Debug, Default)]
        pub struct ShardStats {
            $(pub(crate) $name: Counter,)*
        }

        /// A snapshot of one shard's counters (or a sum of several).
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct Stats {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        impl ShardStats {
            /// The current values.
            pub fn snapshot(&self) -> Stats {
                Stats { $($name: self.$name.get(),)* }
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
    /// Connections admitted from a trusted source (`ServerConfig::trusted`),
    /// past the per-source cap, connect rate and bans.
    conns_trusted,
    /// Protocol errors by trusted sources: logged, never counted towards a ban.
    strikes_trusted,
    /// Datagrams from trusted sources, exempt from the per-source UDP rate
    /// (counted only while a rate is set).
    udp_trusted,
    /// Connections refused: `max_conns` reached.
    refused_server_full,
    /// Connections refused: the per-IP cap reached.
    refused_per_ip,
    /// Connections refused: the per-IP connect rate exceeded.
    refused_connect_rate,
    /// Connections refused: the source is banned.
    refused_banned,
    /// Connections taken with the reserve descriptor and closed: out of
    /// descriptors.
    refused_no_descriptors,
    /// Messages (frames) services decoded from their peers.
    frames_in,
    /// Messages (frames) services sent.
    frames_out,
    /// rudp connections open now (gauge).
    rudp_peers,
    /// rudp data packets resent by the server, over its whole life.
    rudp_retransmissions,
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
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    pub(crate) fn incr(&self) {
        self.add(1);
    }

    pub(crate) fn decr(&self) {
        self.0.fetch_sub(1, Relaxed);
    }

    pub(crate) fn set(&self, value: u64) {
        self.0.store(value, Relaxed);
    }

    /// Moves a share of this counter from `was` to `now`: each of several
    /// writers tracks its own share, the counter holds their sum.
    pub(crate) fn shift(&self, was: u64, now: u64) {
        // Wrapping: a shrinking share is a subtraction.
        self.add(now.wrapping_sub(was));
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// One rudp socket's share of its shard's rudp metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RudpTotals {
    /// Connections open now.
    pub(crate) peers: u64,
    /// Data packets resent so far.
    pub(crate) retransmissions: u64,
}

/// Counters that are levels, not running totals.
const GAUGES: [&str; 4] = [
    "conns_open",
    "buffer_bytes",
    "buffer_bytes_peak",
    "rudp_peers",
];

/// The Prometheus text exposition format (version 0.0.4) of every shard's
/// counters, labelled `shard`, plus `extra` server-wide values (name,
/// help, value; counters end in `_total`).
///
/// ```
/// use sockloop::metrics::{prometheus, Stats};
///
/// let shard = Stats { conns_accepted: 3, ..Stats::default() };
/// let text = prometheus(&[shard], &[]);
/// assert!(text.contains("# TYPE sockloop_conns_accepted_total counter\n"));
/// assert!(text.contains("sockloop_conns_accepted_total{shard=\"0\"} 3\n"));
/// ```
pub fn prometheus(shards: &[Stats], extra: &[(&str, &str, u64)]) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let per_shard: Vec<_> = shards.iter().map(Stats::fields).collect();
    let Some(first) = per_shard.first() else {
        return out;
    };
    for (i, (name, help, _)) in first.iter().enumerate() {
        let gauge = GAUGES.contains(name);
        let metric = match gauge {
            true => format!("sockloop_{name}"),
            false => format!("sockloop_{name}_total"),
        };
        let kind = if gauge { "gauge" } else { "counter" };
        out.push_str(&format!(
            "# HELP {metric} {}\n# TYPE {metric} {kind}\n",
            help_text(help)
        ));
        for (shard, fields) in per_shard.iter().enumerate() {
            out.push_str(&format!("{metric}{{shard=\"{shard}\"}} {}\n", fields[i].2));
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
