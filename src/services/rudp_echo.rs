//! The `rudp` service: every message a peer delivers is sent back to it,
//! reliably and in order (a reliable echo).
//!
//! [`EchoCore`] is the policy, sans-IO, beside the protocol in
//! [`rudp::echo`](crate::rudp::echo) (how a full send window holds the
//! peer); [`RudpEcho`] drives it from the event loop.

use std::net::SocketAddr;
use std::time::Instant;

use crate::rudp::{Config, Endpoint};
use crate::service::{CounterKind, CounterSpec, DatagramContext, TimerId, UdpService};

/// Kept for compatibility: the policy lives beside rudp now.
pub use crate::rudp::echo::EchoCore;

/// What the echo counts, per shard; several rudp sockets on one shard
/// add up, since they share the names.
const COUNTERS: &[CounterSpec] = &[
    CounterSpec {
        name: "rudp_peers",
        help: "rudp connections open now.",
        kind: CounterKind::Gauge,
    },
    CounterSpec {
        name: "rudp_retransmissions",
        help: "rudp data packets resent by the server, over its whole life.",
        kind: CounterKind::Total,
    },
    CounterSpec {
        name: "rudp_evictions",
        help: "rudp peers closed to make room for a newcomer (idlest first).",
        kind: CounterKind::Total,
    },
];
const PEERS: usize = 0;
const RETRANSMISSIONS: usize = 1;
const EVICTIONS: usize = 2;

/// The peers one `rudp` socket serves per shard unless told otherwise
/// (4,096; `sockloop serve --rudp-max-peers`): beyond them a proven
/// newcomer takes the place of the peer idle longest, or is refused with a
/// `Close` if none has been idle long enough (see `rudp::Config`). Each
/// peer's windows are bounded, so this bounds the echo's memory.
pub const DEFAULT_MAX_PEERS: usize = 4096;

/// Packets all of one socket's peers together may have in flight to the
/// echo (1,024: 1.2 MB of 1200-byte packets, what a `--recv-buffer 1MiB`
/// socket holds, the kernel doubling it): each peer's advertised window
/// is an equal share of it, at most its 128-slot window, so 8 peers get
/// their full window and 64 get 16 packets each (see
/// [`Endpoint::set_receive_budget`]).
pub const RECEIVE_BUDGET: usize = 1024;

/// 32 bytes from the operating system's random number generator: a
/// cookie secret no one can guess.
pub fn random_secret() -> std::io::Result<[u8; 32]> {
    let mut secret = [0; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| std::io::Error::other("the system random number generator failed"))?;
    Ok(secret)
}

/// The `rudp` UDP service.
pub struct RudpEcho {
    core: EchoCore,
    /// The shard timer standing for the endpoint's next deadline.
    timer: Option<(TimerId, Instant)>,
    buf: Vec<u8>,
    /// The largest datagram the endpoint writes.
    max_datagram: usize,
    /// What this socket last added to the shard's counters: peers,
    /// retransmissions and evictions.
    reported: (u64, u64, u64),
}

impl RudpEcho {
    /// An echo for up to `max_peers` peers, keying its cookies from
    /// `secret` (see [`random_secret`]).
    pub fn new(config: Config, max_peers: usize, secret: &[u8; 32]) -> RudpEcho {
        let mut endpoint = Endpoint::new(config, Instant::now(), secret, max_peers);
        endpoint.set_receive_budget(Some(RECEIVE_BUDGET));
        RudpEcho {
            core: EchoCore::new(endpoint),
            timer: None,
            buf: Vec::new(),
            max_datagram: config.max_datagram(),
            reported: (0, 0, 0),
        }
    }

    /// Echoes, sends what is due and keeps one timer at the next deadline.
    fn drive(&mut self, out: &mut DatagramContext<'_>) {
        let now = out.now();
        self.core.pump(|_, _| {});
        let endpoint = self.core.endpoint_mut();
        let max = self.max_datagram;
        loop {
            // Built in the reply queue itself; through `buf` only when the
            // queue is full (then `send_to` drops and counts it).
            match out.send_with(max, |queue| endpoint.append_transmit(now, queue)) {
                Some(true) => {}
                Some(false) => break,
                None => match endpoint.poll_transmit(now, &mut self.buf) {
                    Some(to) => out.send_to(to, &self.buf),
                    None => break,
                },
            }
        }
        let stats = endpoint.stats();
        let (peers, resent, evicted) = (
            endpoint.peers() as u64,
            stats.retransmissions,
            stats.evicted,
        );
        let (was_peers, was_resent, was_evicted) = self.reported;
        match peers.checked_sub(was_peers) {
            Some(more) => out.add(PEERS, more),
            None => out.sub(PEERS, was_peers - peers),
        }
        out.add(RETRANSMISSIONS, resent - was_resent);
        out.add(EVICTIONS, evicted - was_evicted);
        self.reported = (peers, resent, evicted);
        let due = endpoint.poll_timeout();
        if due != self.timer.map(|(_, at)| at) {
            if let Some((timer, _)) = self.timer.take() {
                out.cancel_timer(timer);
            }
            self.timer = due.map(|at| (out.arm_timer(at.saturating_duration_since(now), 0), at));
        }
    }
}

impl UdpService for RudpEcho {
    fn counters(&self) -> &'static [CounterSpec] {
        COUNTERS
    }

    fn on_datagram(&mut self, out: &mut DatagramContext<'_>, from: SocketAddr, data: &[u8]) {
        let now = out.now();
        self.core.endpoint_mut().handle_datagram(now, from, data);
    }

    /// One round of echoes and acknowledgements per receive batch.
    fn on_batch_end(&mut self, out: &mut DatagramContext<'_>) {
        self.drive(out);
    }

    /// Every peer gets a `Close`, so it learns at once rather than by
    /// timing out.
    fn on_shutdown(&mut self, out: &mut DatagramContext<'_>) {
        self.core.endpoint_mut().close_all();
        self.drive(out);
    }

    /// Echoes go back to one peer in runs of equal datagrams: segmented
    /// sends carry them, and coalesced receives take a peer's bursts.
    fn offload(&self) -> bool {
        true
    }

    fn on_timer(&mut self, out: &mut DatagramContext<'_>, _key: u64) {
        self.timer = None;
        self.core.endpoint_mut().handle_timeout(out.now());
        self.drive(out);
    }
}
