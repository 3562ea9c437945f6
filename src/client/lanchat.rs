//! A serverless chat over UDP: every peer sends its messages to a
//! broadcast address or a multicast group and shows what the others send.
//! Messages are the TCP chat's JSON (`{"from","content","time"}`) plus the
//! sender's random `id` (to recognise one's own) and a per-sender `seq`
//! (to count gaps and duplicates).
//!
//! Nothing from the network is trusted: every datagram is size-checked,
//! parsed and field-checked before it is shown, control characters are
//! escaped when displayed, each sender's messages are rate-limited, and
//! the per-sender table is bounded.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Instant, SystemTime};

use mio::net::UdpSocket;
use serde::{Deserialize, Serialize};

use crate::limit::{Rate, TokenBucket};
use crate::protocol::chat::{clock, ChatMessage};

/// The largest datagram accepted; larger ones are dropped and counted.
pub const MAX_DATAGRAM: usize = 2048;
/// The longest name and content accepted.
const MAX_NAME: usize = 32;
const MAX_CONTENT: usize = 1024;
/// Senders tracked for sequence numbers and rates; beyond, the oldest is
/// forgotten.
const MAX_SENDERS: usize = 1024;

/// Where the peer sends and listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lan {
    /// A broadcast address and port, e.g. `127.255.255.255:9002`.
    Broadcast(SocketAddr),
    /// An IPv4 multicast group and port, e.g. `239.1.2.3:9002`.
    Group(SocketAddr),
}

/// How a peer is set up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LanConfig {
    /// The broadcast address or group.
    pub lan: Lan,
    /// The interface multicast goes out of and is joined on (default
    /// `127.0.0.1`: loopback, so nothing leaves the machine unless asked).
    pub interface: Ipv4Addr,
    /// Multicast TTL (default 0: this host only).
    pub ttl: u32,
    /// Messages shown per sender (default 20/s, bursts of 40); beyond,
    /// dropped and counted.
    pub rate: Rate,
}

impl LanConfig {
    /// Defaults for `lan`: loopback, TTL 0, 20 messages/s per sender.
    pub fn new(lan: Lan) -> LanConfig {
        LanConfig {
            lan,
            interface: Ipv4Addr::LOCALHOST,
            ttl: 0,
            rate: Rate::per_second(20).with_burst(40),
        }
    }
}

/// The wire message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Wire {
    from: String,
    content: String,
    time: String,
    id: u64,
    seq: u64,
}

/// Counters of a peer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LanStats {
    /// Messages sent.
    pub sent: u64,
    /// Messages shown.
    pub received: u64,
    /// Datagrams that were not valid messages (size, JSON, fields).
    pub garbage: u64,
    /// Messages with control characters (shown escaped).
    pub escaped: u64,
    /// Messages a sender's sequence skipped.
    pub gaps: u64,
    /// Messages seen twice (or older than the newest).
    pub duplicates: u64,
    /// Messages over their sender's rate.
    pub rate_limited: u64,
    /// Own messages looped back (not shown).
    pub own: u64,
}

struct Sender {
    next_seq: u64,
    bucket: TokenBucket,
}

/// The group's IPv4 address, once `group` is a multicast address and
/// `interface` could be an interface's; otherwise an `InvalidInput` error
/// that names them and what to try.
fn check_group(group: SocketAddr, interface: Ipv4Addr) -> io::Result<Ipv4Addr> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
    let ip = match group.ip() {
        IpAddr::V4(ip) if ip.is_multicast() => ip,
        ip => {
            return Err(bad(format!(
                "group {group}: {ip} is not an IPv4 multicast address (224.0.0.0 to \
                 239.255.255.255); try 239.1.2.3:{}",
                group.port()
            )))
        }
    };
    if interface.is_multicast() || interface.is_broadcast() {
        return Err(bad(format!(
            "group {group}: interface {interface} is not an address of a host's \
             interface; try 127.0.0.1 (this machine) or this host's LAN address"
        )));
    }
    Ok(ip)
}

/// One chat peer on a LAN.
pub struct LanPeer {
    socket: UdpSocket,
    dest: SocketAddr,
    name: String,
    id: u64,
    seq: u64,
    rate: Rate,
    senders: HashMap<u64, Sender>,
    order: VecDeque<u64>,
    stats: LanStats,
    /// Test hook: every `n`th message is counted sent but not sent.
    drop_every: Option<u64>,
    buf: Vec<u8>,
}

impl LanPeer {
    /// Binds the port (with `SO_REUSEADDR` and `SO_REUSEPORT`, so several
    /// peers share it on one host), joins the group or enables broadcast.
    pub fn new(config: LanConfig, name: &str) -> io::Result<LanPeer> {
        use socket2::{Domain, Protocol, Socket, Type};
        let dest = match config.lan {
            Lan::Broadcast(addr) | Lan::Group(addr) => addr,
        };
        // Checked before any socket exists, so a wrong address is never
        // sent to.
        let group = match config.lan {
            Lan::Group(group) => Some(check_group(group, config.interface)?),
            Lan::Broadcast(_) => None,
        };
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        match group {
            None => socket.set_broadcast(true)?,
            Some(ip) => {
                let interface = config.interface;
                socket
                    .join_multicast_v4(&ip, &interface)
                    .and_then(|()| socket.set_multicast_if_v4(&interface))
                    .map_err(|e| {
                        let what = format!(
                            "cannot join group {dest} on interface {interface}: {e}; \
                             the interface must be an IPv4 address of this host \
                             (127.0.0.1 keeps the chat on this machine)"
                        );
                        io::Error::new(e.kind(), what)
                    })?;
                socket.set_multicast_loop_v4(true)?;
                socket.set_multicast_ttl_v4(config.ttl)?;
            }
        }
        // Bound to the destination address itself: only its traffic arrives.
        socket.bind(&dest.into())?;
        let mut id = [0; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
            .map_err(|_| io::Error::other("no randomness for the peer id"))?;
        Ok(LanPeer {
            socket: UdpSocket::from_std(socket.into()),
            dest,
            name: name.chars().take(MAX_NAME).collect(),
            id: u64::from_le_bytes(id),
            seq: 0,
            rate: config.rate,
            senders: HashMap::new(),
            order: VecDeque::new(),
            stats: LanStats::default(),
            drop_every: None,
            buf: vec![0; MAX_DATAGRAM + 1],
        })
    }

    /// Sends one message to everyone.
    pub fn send(&mut self, content: &str, now: SystemTime) -> io::Result<()> {
        let wire = Wire {
            from: self.name.clone(),
            content: content.chars().take(MAX_CONTENT).collect(),
            time: clock(now),
            id: self.id,
            seq: self.seq,
        };
        self.seq += 1;
        self.stats.sent += 1;
        if self.drop_every.is_some_and(|n| self.seq.is_multiple_of(n)) {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&wire).map_err(io::Error::other)?;
        self.socket.send_to(&bytes, self.dest).map(drop)
    }

    /// The next message from another peer, if one is waiting (non-blocking).
    pub fn receive(&mut self, now: Instant) -> io::Result<Option<ChatMessage>> {
        loop {
            let n = match self.socket.recv_from(&mut self.buf) {
                Ok((n, _)) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e),
            };
            if let Some(message) = self.accept(n, now) {
                return Ok(Some(message));
            }
        }
    }

    /// Checks one datagram; a message to show, or `None` (counted).
    fn accept(&mut self, n: usize, now: Instant) -> Option<ChatMessage> {
        let valid = (n <= MAX_DATAGRAM)
            .then(|| serde_json::from_slice::<Wire>(&self.buf[..n]).ok())
            .flatten()
            .filter(|w| {
                w.from.len() <= MAX_NAME && w.content.len() <= MAX_CONTENT && w.time.len() <= 8
            });
        let Some(wire) = valid else {
            self.stats.garbage += 1;
            return None;
        };
        if wire.id == self.id {
            self.stats.own += 1;
            return None;
        }
        if !self.senders.contains_key(&wire.id) {
            if self.senders.len() >= MAX_SENDERS {
                if let Some(oldest) = self.order.pop_front() {
                    self.senders.remove(&oldest);
                }
            }
            let sender = Sender {
                next_seq: wire.seq,
                bucket: TokenBucket::new(&self.rate, now),
            };
            self.senders.insert(wire.id, sender);
            self.order.push_back(wire.id);
        }
        let sender = self.senders.get_mut(&wire.id)?;
        if wire.seq < sender.next_seq {
            self.stats.duplicates += 1;
            return None;
        }
        self.stats.gaps += wire.seq - sender.next_seq;
        sender.next_seq = wire.seq + 1;
        if !sender.bucket.take(&self.rate, now) {
            self.stats.rate_limited += 1;
            return None;
        }
        let text = [&wire.from, &wire.content, &wire.time];
        if text.iter().any(|t| t.chars().any(char::is_control)) {
            self.stats.escaped += 1;
        }
        self.stats.received += 1;
        Some(ChatMessage {
            from: wire.from,
            content: wire.content,
            time: wire.time,
            room: String::new(),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> LanStats {
        self.stats
    }

    /// The socket, to register with a `mio::Poll` (readable).
    pub fn socket_mut(&mut self) -> &mut UdpSocket {
        &mut self.socket
    }

    /// Test hook: count every `n`th message sent but do not send it, so
    /// receivers see gaps.
    #[doc(hidden)]
    pub fn drop_every(&mut self, n: u64) {
        self.drop_every = Some(n.max(1));
    }
}
