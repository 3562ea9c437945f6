//! The server side: one socket's worth of rudp peers, keyed by address.
//!
//! A peer gets state only after its hello brings back a valid cookie, and
//! the number of peers is capped. Each peer's next deadline sits in a
//! timer wheel, so `handle_timeout` touches only the peers that are due
//! and a dead peer's state is dropped when its last retry times out.
//!
//! Who gets a place, when a proven newcomer arrives:
//!
//! - one source (an IPv4 address, an IPv6 /64) holds at most
//!   [`Config::max_peers_per_source`] peers (4): at that cap, the
//!   newcomer takes the place of the source's idlest peer;
//! - a full table (`max_peers`) makes room the same way, taking the
//!   idlest peer of all;
//! - the idlest peer is the one whose last progress (new data from it, or
//!   an ack of new data to it; pings do not count) is oldest, ties going
//!   to the lowest address, so the choice is the same on every run. Only
//!   a peer idle for at least [`Config::evict_idle_after`] (2 s) may be
//!   evicted: if there is none, the newcomer is refused with a `Close`,
//!   so an active peer never loses its place to a newcomer, and a fresh
//!   one has time for its first message.
//!
//! An evicted peer is sent a `Close` (as at shutdown) and ends with
//! [`CloseCause::Evicted`], through the same path as any other end: its
//! undelivered messages and then `Closed` as events, its timer cancelled.
//! Finding the idlest peer scans the table, only when it (or the source)
//! is full, once per proven hello: a new address costs the sender a round
//! trip for its cookie first.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::connection::{server_isn, CloseCause, Connection, Event};
use super::cookie::{CookieError, CookieJar};
use super::packet::Packet;
use super::peer_hash::PeerHash;
use super::send::SendError;
use super::Config;
use crate::limit::Source;
use crate::timer::{TimerHandle, Wheel};

/// How long a cookie key lives; a cookie is good for one to two of these.
const COOKIE_PERIOD: Duration = Duration::from_secs(10);

/// Counters of an endpoint (all peers).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EndpointStats {
    /// Datagrams that were not valid packets.
    pub malformed: u64,
    /// Cookies handed out (each for a hello without one).
    pub cookies_sent: u64,
    /// Hellos with a cookie that was not ours for that address.
    pub cookies_forged: u64,
    /// Hellos with a cookie too old.
    pub cookies_expired: u64,
    /// Packets other than hello from addresses with no connection.
    pub unknown_peer: u64,
    /// Hellos refused because `max_peers` are connected, none of them
    /// idle long enough to evict.
    pub refused_full: u64,
    /// Hellos refused because their source holds
    /// `Config::max_peers_per_source` peers, none of them idle long
    /// enough to evict.
    pub refused_source: u64,
    /// Peers closed to make room for a newcomer (`CloseCause::Evicted`).
    pub evicted: u64,
    /// Connections opened.
    pub accepted: u64,
    /// Connections whose peer stopped answering.
    pub timed_out: u64,
    /// Data packets resent, summed over connections that ended.
    pub retransmissions: u64,
}

#[derive(Debug)]
struct Peer {
    conn: Connection,
    timer: Option<(TimerHandle, Instant)>,
    /// On the `dirty` list.
    dirty: bool,
    /// On the `readable` list.
    readable: bool,
    /// The application asked not to be given its messages for now.
    held: bool,
}

impl Peer {
    /// This peer (at `addr`) may have datagrams to send, messages to
    /// deliver, and a new deadline: onto the lists it is not on yet.
    fn touch(
        &mut self,
        addr: SocketAddr,
        dirty: &mut VecDeque<SocketAddr>,
        readable: &mut VecDeque<SocketAddr>,
    ) {
        if !self.dirty {
            self.dirty = true;
            dirty.push_back(addr);
        }
        if !self.readable && !self.held {
            self.readable = true;
            readable.push_back(addr);
        }
    }
}

/// Many connections behind one socket.
#[derive(Debug)]
pub struct Endpoint {
    config: Config,
    jar: CookieJar,
    /// Boxed: the table's empty buckets (up to half of them after it
    /// grows) then cost a pointer each rather than a whole `Peer`. Looked
    /// up several times per datagram, so hashed with a keyed
    /// [`PeerHash`] rather than SipHash.
    peers: HashMap<SocketAddr, Box<Peer>, PeerHash>,
    /// Peers per source (no entry: none).
    sources: HashMap<Source, usize>,
    max_peers: usize,
    wheel: Wheel<SocketAddr>,
    /// Peers that may have datagrams to send or a deadline to move.
    dirty: VecDeque<SocketAddr>,
    /// Peers that may have messages.
    readable: VecDeque<SocketAddr>,
    /// Replies sent without a connection: cookies and refusals.
    stateless: VecDeque<(SocketAddr, Packet<'static>)>,
    events: VecDeque<(SocketAddr, Event)>,
    fired: Vec<(TimerHandle, SocketAddr)>,
    /// Packets all peers together may have in flight to this endpoint.
    receive_budget: Option<usize>,
    stats: EndpointStats,
}

impl Endpoint {
    /// An endpoint whose cookies are keyed from `secret` (random in real
    /// use), serving at most `max_peers` connections.
    pub fn new(config: Config, now: Instant, secret: &[u8; 32], max_peers: usize) -> Endpoint {
        let jar = CookieJar::new(secret, now, COOKIE_PERIOD);
        let peers = HashMap::with_hasher(PeerHash::new(jar.table_keys()));
        Endpoint {
            config,
            jar,
            peers,
            sources: HashMap::new(),
            max_peers,
            wheel: Wheel::new(now, Duration::from_millis(1)),
            dirty: VecDeque::new(),
            readable: VecDeque::new(),
            stateless: VecDeque::new(),
            events: VecDeque::new(),
            fired: Vec::new(),
            receive_budget: None,
            stats: EndpointStats::default(),
        }
    }

    /// Bounds the packets all peers together may have in flight to this
    /// endpoint (`None`: each peer its own window): each peer's advertised
    /// window is capped at an equal share (at least 2 packets), so the
    /// peers' bursts together fit the socket's receive buffer, and no
    /// peer's window crowds out the others'. Shares are redone as peers
    /// come and go, and reach each peer with its next ack.
    pub fn set_receive_budget(&mut self, packets: Option<usize>) {
        self.receive_budget = packets;
        self.share_budget();
    }

    /// Gives every peer its share of the receive budget.
    fn share_budget(&mut self) {
        let share = match self.receive_budget {
            Some(budget) => budget / self.peers.len().max(1),
            None => usize::MAX,
        };
        for peer in self.peers.values_mut() {
            peer.conn.cap_window(share);
        }
    }

    /// Handles one datagram from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let packet = match Packet::parse(datagram, self.config.max_payload) {
            Ok(packet) => packet,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        if let Some(peer) = self.peers.get_mut(&from) {
            peer.conn.handle(now, packet);
            return peer.touch(from, &mut self.dirty, &mut self.readable);
        }
        match packet {
            Packet::Hello { cookie: None, .. } => {
                // Stateless, and smaller than the hello that asked.
                let cookie = self.jar.mint(now, from);
                self.stateless.push_back((from, Packet::Cookie(cookie)));
                self.stats.cookies_sent += 1;
            }
            Packet::Hello {
                mode,
                isn,
                cookie: Some(cookie),
            } => {
                match self.jar.verify(now, from, &cookie) {
                    Err(CookieError::Forged) => return self.stats.cookies_forged += 1,
                    Err(CookieError::Expired) => return self.stats.cookies_expired += 1,
                    Ok(()) => {}
                }
                // The address is proven, so a reply is safe: a refusal
                // says no with a `Close`.
                let source = Source::from(from.ip());
                if self.peers_from_source(source) >= self.config.max_peers_per_source {
                    match self.idlest(now, Some(source)) {
                        Some(victim) => self.evict(victim),
                        None => {
                            self.stats.refused_source += 1;
                            return self.stateless.push_back((from, Packet::Close));
                        }
                    }
                }
                if self.peers.len() >= self.max_peers {
                    match self.idlest(now, None) {
                        Some(victim) => self.evict(victim),
                        None => {
                            self.stats.refused_full += 1;
                            return self.stateless.push_back((from, Packet::Close));
                        }
                    }
                }
                let config = Config {
                    mode,
                    ..self.config
                };
                let conn = Connection::accept(config, now, isn, server_isn(&cookie));
                let peer = Box::new(Peer {
                    conn,
                    timer: None,
                    dirty: false,
                    readable: false,
                    held: false,
                });
                self.peers.insert(from, peer);
                self.share_budget();
                *self.sources.entry(source).or_default() += 1;
                self.stats.accepted += 1;
                self.touch(from);
            }
            _ => self.stats.unknown_peer += 1,
        }
    }

    /// The peer to evict for a newcomer (among `source`'s peers, or all),
    /// if any may be: one already closed and about to go, else the one
    /// whose last progress is oldest, if that was at least
    /// `evict_idle_after` ago; ties go to the lowest address.
    fn idlest(&self, now: Instant, source: Option<Source>) -> Option<SocketAddr> {
        let idle = |p: &Peer| {
            now.saturating_duration_since(p.conn.last_progress()) >= self.config.evict_idle_after
        };
        self.peers
            .iter()
            .filter(|(addr, _)| source.is_none_or(|s| Source::from(addr.ip()) == s))
            .filter(|(_, p)| p.conn.is_closed() || idle(p))
            .min_by_key(|(addr, p)| (!p.conn.is_closed(), p.conn.last_progress(), **addr))
            .map(|(addr, _)| *addr)
    }

    /// Makes room: `victim` is sent a `Close` and its state dropped as at
    /// any other end (its messages and `Closed` become events, its timer
    /// is cancelled).
    fn evict(&mut self, victim: SocketAddr) {
        let Some(p) = self.peers.get_mut(&victim) else {
            return;
        };
        if !p.conn.is_closed() {
            p.conn.close_as(CloseCause::Evicted);
            self.stats.evicted += 1;
        }
        if p.conn.take_close() {
            self.stateless.push_back((victim, Packet::Close));
        }
        self.settle(victim);
    }

    /// Peers connected from `source` (an IPv4 address or an IPv6 /64).
    pub fn peers_from_source(&self, source: Source) -> usize {
        self.sources.get(&source).copied().unwrap_or(0)
    }

    /// Queues a message for `peer`.
    pub fn send(&mut self, peer: SocketAddr, message: &[u8]) -> Result<(), SendError> {
        let p = self.peers.get_mut(&peer).ok_or(SendError::Closed)?;
        p.conn.send(message)?;
        p.touch(peer, &mut self.dirty, &mut self.readable);
        Ok(())
    }

    /// As [`send`](Self::send), taking the message's buffer (see
    /// [`Connection::send_vec`]); a refused message is handed back.
    pub fn send_vec(
        &mut self,
        peer: SocketAddr,
        message: Vec<u8>,
    ) -> Result<(), (SendError, Vec<u8>)> {
        let Some(p) = self.peers.get_mut(&peer) else {
            return Err((SendError::Closed, message));
        };
        p.conn.send_vec(message)?;
        p.touch(peer, &mut self.dirty, &mut self.readable);
        Ok(())
    }

    /// Whether `peer` has room for a message of `len` bytes now.
    pub fn can_send(&self, peer: SocketAddr, len: usize) -> bool {
        self.peers.get(&peer).is_some_and(|p| p.conn.can_send(len))
    }

    /// Something happened to `peer`: it may have datagrams to send,
    /// messages to deliver, and a new deadline.
    fn touch(&mut self, peer: SocketAddr) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.touch(peer, &mut self.dirty, &mut self.readable);
        }
    }

    /// Writes the next datagram into `out` (cleared first); returns where
    /// it goes.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<SocketAddr> {
        out.clear();
        self.append_transmit(now, out)
    }

    /// As [`poll_transmit`](Self::poll_transmit), appending the datagram
    /// to `out` (at most [`Config::max_datagram`] bytes): a send queue's
    /// buffer, so it is built where it is sent from.
    pub fn append_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<SocketAddr> {
        if let Some((to, packet)) = self.stateless.pop_front() {
            packet.encode(out);
            return Some(to);
        }
        while let Some(&peer) = self.dirty.front() {
            if let Some(p) = self.peers.get_mut(&peer) {
                if p.conn.append_transmit(now, out) {
                    return Some(peer);
                }
                p.dirty = false;
            }
            self.dirty.pop_front();
            self.settle(peer);
        }
        None
    }

    /// The next event: a peer's message (in order per peer), or the end
    /// of a connection (its last event).
    pub fn poll_event(&mut self) -> Option<(SocketAddr, Event)> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(event);
            }
            let peer = *self.readable.front()?;
            if let Some(p) = self.peers.get_mut(&peer).filter(|p| !p.held) {
                if let Some(event) = p.conn.poll_event() {
                    // Taking a message may reopen the peer's window: an ack.
                    if !p.dirty {
                        p.dirty = true;
                        self.dirty.push_back(peer);
                    }
                    return Some((peer, event));
                }
                p.readable = false;
            }
            self.readable.pop_front();
        }
    }

    /// Stops (`true`) or resumes giving out `peer`'s messages: a service
    /// that cannot act on more yet holds the peer, whose receive window
    /// then fills and slows the sender down, with nothing queued here.
    pub fn hold(&mut self, peer: SocketAddr, held: bool) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.held = held;
            if held {
                p.readable = false;
                self.readable.retain(|&r| r != peer);
            } else {
                self.touch(peer);
            }
        }
    }

    /// After a peer's datagrams are drained: collect its events, drop it if
    /// it ended, and keep its timer at its next deadline.
    fn settle(&mut self, peer: SocketAddr) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if let Some(cause) = p.conn.close_cause() {
            self.stats.timed_out += u64::from(cause == CloseCause::TimedOut);
            // Messages that arrived before the end are still delivered.
            while let Some(event) = p.conn.poll_event() {
                self.events.push_back((peer, event));
            }
            self.stats.retransmissions += p.conn.stats().retransmissions;
            if let Some((timer, _)) = p.timer.take() {
                self.wheel.cancel(timer);
            }
            self.peers.remove(&peer);
            self.share_budget();
            let source = Source::from(peer.ip());
            if let Some(count) = self.sources.get_mut(&source) {
                *count -= 1;
                if *count == 0 {
                    self.sources.remove(&source);
                }
            }
            return;
        }
        let due = p.conn.poll_timeout();
        if due != p.timer.map(|(_, at)| at) {
            if let Some((timer, _)) = p.timer.take() {
                self.wheel.cancel(timer);
            }
            p.timer = due.map(|at| (self.wheel.arm(at, peer), at));
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wheel.next_deadline()
    }

    /// Runs the deadlines of the peers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.wheel.expire(now, &mut self.fired);
        for (_, peer) in std::mem::take(&mut self.fired) {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.timer = None;
                p.conn.handle_timeout(now);
                self.touch(peer);
            }
        }
    }

    /// Closes every connection, each with a `Close` to its peer.
    pub fn close_all(&mut self) {
        let peers: Vec<SocketAddr> = self.peers.keys().copied().collect();
        for peer in peers {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.conn.close();
            }
            self.touch(peer);
        }
    }

    /// Connected peers.
    pub fn peers(&self) -> usize {
        self.peers.len()
    }

    /// The connection to `peer`, for its counters.
    pub fn connection(&self, peer: SocketAddr) -> Option<&Connection> {
        self.peers.get(&peer).map(|p| &p.conn)
    }

    /// Counters so far.
    pub fn stats(&self) -> EndpointStats {
        let live: u64 = self
            .peers
            .values()
            .map(|p| p.conn.stats().retransmissions)
            .sum();
        EndpointStats {
            retransmissions: self.stats.retransmissions + live,
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rudp::Seq;

    /// Carries datagrams between `clients` and `server` until both are quiet.
    fn exchange(now: Instant, server: &mut Endpoint, clients: &mut [(SocketAddr, Connection)]) {
        let mut buf = Vec::new();
        for _ in 0..10 {
            for (addr, client) in clients.iter_mut() {
                while client.poll_transmit(now, &mut buf) {
                    server.handle_datagram(now, *addr, &buf);
                }
            }
            while let Some(to) = server.poll_transmit(now, &mut buf) {
                if let Some((_, client)) = clients.iter_mut().find(|(a, _)| *a == to) {
                    client.handle_datagram(now, &buf).unwrap();
                }
            }
        }
    }

    /// The window the server advertises to each client in its next ack.
    fn advertised(
        now: Instant,
        server: &mut Endpoint,
        clients: &mut [(SocketAddr, Connection)],
    ) -> Vec<u16> {
        let mut windows = Vec::new();
        for (addr, client) in clients.iter_mut() {
            client.send(b"x").unwrap();
            let mut buf = Vec::new();
            while client.poll_transmit(now, &mut buf) {
                server.handle_datagram(now, *addr, &buf);
            }
            while let Some(to) = server.poll_transmit(now, &mut buf) {
                if let Ok(Packet::Ack { window, .. }) = Packet::parse(&buf, 1200) {
                    assert_eq!(to, *addr);
                    windows.push(window);
                }
            }
        }
        windows
    }

    #[test]
    fn the_receive_budget_is_shared_equally_as_peers_come_and_go() {
        let now = Instant::now();
        let config = Config {
            max_peers_per_source: 8,
            ..Config::default()
        };
        let mut server = Endpoint::new(config, now, &[3; 32], 16);
        server.set_receive_budget(Some(100));
        let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let mut clients: Vec<(SocketAddr, Connection)> = (0..4)
            .map(|i| (addr(1000 + i), Connection::connect(config, now, Seq(7))))
            .collect();
        exchange(now, &mut server, &mut clients);
        assert_eq!(server.peers(), 4);
        // 100 / 4 = 25 each, below the 128-slot receive window.
        assert_eq!(advertised(now, &mut server, &mut clients), [25; 4]);
        // One leaves: 33 each for the other three.
        clients[3].1.close();
        exchange(now, &mut server, &mut clients);
        assert_eq!(server.peers(), 3);
        assert_eq!(advertised(now, &mut server, &mut clients[..3]), [33; 3]);
        // A budget under 2 per peer still leaves 2; none: the full window.
        server.set_receive_budget(Some(3));
        assert_eq!(advertised(now, &mut server, &mut clients[..3]), [2; 3]);
        server.set_receive_budget(None);
        let free = config.window as u16 - 1; // the message not taken yet
        assert_eq!(
            advertised(now, &mut server, &mut clients[..3]),
            [free - 3; 3]
        );
    }
}
