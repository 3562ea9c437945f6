//! The `rudp` service: every message a peer delivers is sent back to it,
//! reliably and in order (a reliable echo).
//!
//! [`EchoCore`] is the policy, sans-IO; [`RudpEcho`] drives it from the
//! event loop. An echo that does not fit the peer's send window waits (one
//! per peer) and the peer is held: its messages stay in its receive
//! window, which fills and slows the peer down. Nothing queues without
//! bound.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use crate::rudp::{Config, Endpoint, Event, SendError};
use crate::service::{CounterKind, CounterSpec, DatagramContext, TimerId, UdpService};

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

/// The echo policy over an [`Endpoint`].
#[derive(Debug)]
pub struct EchoCore {
    endpoint: Endpoint,
    /// Echoes waiting for room in their peer's send window.
    waiting: HashMap<SocketAddr, Vec<u8>>,
}

impl EchoCore {
    /// An echo over `endpoint`.
    pub fn new(endpoint: Endpoint) -> EchoCore {
        EchoCore {
            endpoint,
            waiting: HashMap::new(),
        }
    }

    /// The endpoint, for its counters.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The endpoint, for its inputs and outputs.
    pub fn endpoint_mut(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }

    /// Turns delivered messages into echoes; `seen` observes each message.
    /// Call after feeding the endpoint input, before polling its output.
    pub fn pump(&mut self, mut seen: impl FnMut(SocketAddr, &Event)) {
        let waiting: Vec<SocketAddr> = self.waiting.keys().copied().collect();
        for peer in waiting {
            match self.waiting.get(&peer).map(|m| self.endpoint.send(peer, m)) {
                Some(Err(SendError::WindowFull)) => continue,
                _ => {
                    self.waiting.remove(&peer);
                    self.endpoint.hold(peer, false);
                }
            }
        }
        while let Some((peer, event)) = self.endpoint.poll_event() {
            seen(peer, &event);
            match event {
                Event::Message(message) => {
                    if let Err(SendError::WindowFull) = self.endpoint.send(peer, &message) {
                        self.waiting.insert(peer, message);
                        self.endpoint.hold(peer, true);
                    }
                }
                Event::Closed(_) => {
                    self.waiting.remove(&peer);
                }
                Event::Connected => {}
            }
        }
    }
}

/// The peers one `rudp` socket serves per shard unless told otherwise
/// (4,096; `sockloop serve --rudp-max-peers`): a hello beyond them is
/// refused with a `Close`. Each peer's windows are bounded, so this bounds
/// the echo's memory.
pub const DEFAULT_MAX_PEERS: usize = 4096;

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
    /// What this socket last added to the shard's counters: peers,
    /// retransmissions and evictions.
    reported: (u64, u64, u64),
}

impl RudpEcho {
    /// An echo for up to `max_peers` peers, keying its cookies from
    /// `secret` (see [`random_secret`]).
    pub fn new(config: Config, max_peers: usize, secret: &[u8; 32]) -> RudpEcho {
        let endpoint = Endpoint::new(config, Instant::now(), secret, max_peers);
        RudpEcho {
            core: EchoCore::new(endpoint),
            timer: None,
            buf: Vec::new(),
            reported: (0, 0, 0),
        }
    }

    /// Echoes, sends what is due and keeps one timer at the next deadline.
    fn drive(&mut self, out: &mut DatagramContext<'_>) {
        let now = out.now();
        self.core.pump(|_, _| {});
        let endpoint = self.core.endpoint_mut();
        while let Some(to) = endpoint.poll_transmit(now, &mut self.buf) {
            out.send_to(to, &self.buf);
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

    fn on_timer(&mut self, out: &mut DatagramContext<'_>, _key: u64) {
        self.timer = None;
        self.core.endpoint_mut().handle_timeout(out.now());
        self.drive(out);
    }
}
