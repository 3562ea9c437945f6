//! One rudp connection, client or server side: handshake, the two
//! windows, acknowledgements, the RTO timer, keepalive and dead-peer
//! detection.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::packet::{Cookie, Packet};
use super::recv::{Arrival, ReceiveStats, ReceiveWindow};
use super::rtt::RttEstimator;
use super::send::{SendError, SendWindow};
use super::seq::Seq;
use super::{Config, Mode};

/// Something the application should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The handshake completed (client side).
    Connected,
    /// A message, complete and in order.
    Message(Vec<u8>),
    /// The connection is over; nothing more will happen on it.
    Closed(CloseCause),
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCause {
    /// The peer sent `Close`.
    PeerClosed,
    /// `max_retries` timeouts in a row: the peer is gone.
    TimedOut,
    /// This side called [`Connection::close`].
    Local,
    /// The server closed it to make room for a newcomer: the peer was the
    /// idlest in a full table (or of its source's peers).
    Evicted,
}

impl std::fmt::Display for CloseCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CloseCause::PeerClosed => "the peer closed the connection",
            CloseCause::TimedOut => "the peer stopped answering",
            CloseCause::Local => "closed here",
            CloseCause::Evicted => "evicted to make room for another peer",
        })
    }
}

/// Counters of one connection.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Datagrams sent, of every kind.
    pub packets_sent: u64,
    /// Datagrams received and parsed, of every kind.
    pub packets_received: u64,
    /// Data packets sent again.
    pub retransmissions: u64,
    /// Retransmission timeouts that fired.
    pub timeouts: u64,
    /// Tail loss probes sent.
    pub tail_probes: u64,
    /// What the receive window discarded.
    pub receive: ReceiveStats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Client: hello sent, waiting for the cookie and then the server's ack.
    Connecting,
    Established,
    Closed(CloseCause),
}

/// One side of a connection. Feed it packets from its peer and the time;
/// poll it for datagrams to send, its next deadline and events.
///
/// ```
/// use std::time::Instant;
/// use sockloop::rudp::{Config, Connection, Endpoint, Event, Seq};
///
/// let (now, config) = (Instant::now(), Config::default());
/// let client_addr = "127.0.0.1:4000".parse().unwrap();
/// let mut server = Endpoint::new(config, now, &[7; 32], 1000);
/// let mut client = Connection::connect(config, now, Seq(1));
/// client.send(b"hello").unwrap(); // queued until the handshake is done
///
/// // Carry datagrams both ways until both sides are quiet.
/// let mut buf = Vec::new();
/// for _ in 0..10 {
///     while client.poll_transmit(now, &mut buf) {
///         server.handle_datagram(now, client_addr, &buf);
///         buf.clear();
///     }
///     while let Some(to) = server.poll_transmit(now, &mut buf) {
///         assert_eq!(to, client_addr);
///         client.handle_datagram(now, &buf);
///         buf.clear();
///     }
/// }
/// assert_eq!(client.poll_event(), Some(Event::Connected));
/// assert_eq!(server.poll_event(), Some((client_addr, Event::Message(b"hello".to_vec()))));
/// ```
#[derive(Debug)]
pub struct Connection {
    config: Config,
    state: State,
    /// The client's own first sequence number, sent in its hello.
    isn: Seq,
    cookie: Option<Cookie>,
    sender: SendWindow,
    /// `None` on a client until the cookie tells it the server's ISN.
    receiver: Option<ReceiveWindow>,
    rtt: RttEstimator,
    hello_due: bool,
    ack_due: bool,
    ping_due: bool,
    close_due: bool,
    /// A ping awaiting its ack.
    pinging: bool,
    /// The most packets the peer may have in flight to us, below the
    /// receive window's free slots: a server shares its socket's receive
    /// buffer among its peers this way (see `Endpoint::set_receive_budget`).
    window_cap: u16,
    /// When the retransmission timer fires, if running.
    rto_at: Option<Instant>,
    /// When a tail loss probe goes out, if armed.
    probe_at: Option<Instant>,
    /// Timeouts with the peer silent, since it last acknowledged anything.
    probes: u32,
    last_heard: Instant,
    /// When the peer last made progress: new data from it, or an ack of
    /// new data to it (the start, until then).
    last_progress: Instant,
    /// When the peer last acknowledged new data, or had none to: a peer
    /// heard from but acknowledging nothing is dead after `dead_after`.
    last_acked: Instant,
    events: VecDeque<Event>,
    stats: ConnectionStats,
}

impl Connection {
    /// A client connection; its first datagram is the hello. `isn` is the
    /// first sequence number it will send (random in real use).
    pub fn connect(config: Config, now: Instant, isn: Seq) -> Connection {
        let mut conn = Connection::new(config, now, isn, None);
        conn.state = State::Connecting;
        conn.hello_due = true;
        conn
    }

    /// A server connection for a client whose hello carried a valid cookie:
    /// `peer_isn` from the hello, `isn` derived from the cookie.
    pub(crate) fn accept(config: Config, now: Instant, peer_isn: Seq, isn: Seq) -> Connection {
        let receiver = ReceiveWindow::new(config.mode, peer_isn, config.window, config.max_message);
        let mut conn = Connection::new(config, now, isn, Some(receiver));
        conn.ack_due = true; // the ack completes the client's handshake
        conn
    }

    fn new(config: Config, now: Instant, isn: Seq, receiver: Option<ReceiveWindow>) -> Connection {
        Connection {
            config,
            state: State::Established,
            isn,
            cookie: None,
            sender: SendWindow::new(config.mode, isn, config.window, config.max_payload),
            receiver,
            rtt: RttEstimator::new(config.initial_rto, config.min_rto, config.max_rto),
            hello_due: false,
            ack_due: false,
            ping_due: false,
            close_due: false,
            pinging: false,
            window_cap: u16::MAX,
            rto_at: None,
            probe_at: None,
            probes: 0,
            last_heard: now,
            last_progress: now,
            last_acked: now,
            events: VecDeque::new(),
            stats: ConnectionStats::default(),
        }
    }

    /// Queues a message. It is refused, not queued without bound, when the
    /// send window lacks room for all its fragments.
    pub fn send(&mut self, message: &[u8]) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        if message.len() > self.config.max_message {
            return Err(SendError::TooLarge);
        }
        self.sender.push(message)
    }

    /// As [`send`](Self::send), taking the message's buffer: one that fits
    /// a packet is sent from it without a copy (an echo sends back the
    /// buffer it was given). A refused message is handed back.
    pub fn send_vec(&mut self, message: Vec<u8>) -> Result<(), (SendError, Vec<u8>)> {
        if self.is_closed() {
            return Err((SendError::Closed, message));
        }
        if message.len() > self.config.max_message {
            return Err((SendError::TooLarge, message));
        }
        self.sender.push_vec(message)
    }

    /// Hands back the buffer of a message taken with
    /// [`poll_event`](Self::poll_event), to hold a later packet: a busy
    /// connection then allocates nothing per message. Optional.
    pub fn recycle(&mut self, message: Vec<u8>) {
        self.sender.spare.give(message);
    }

    /// Whether a message of `len` bytes fits in the send window now.
    pub fn can_send(&self, len: usize) -> bool {
        !self.is_closed() && self.sender.packets_for(len) <= self.sender.free()
    }

    /// Parses and handles one datagram from the peer. A datagram that is
    /// not a valid packet is dropped; the error says why.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        datagram: &[u8],
    ) -> Result<(), super::PacketError> {
        let packet = Packet::parse(datagram, self.config.max_payload)?;
        self.handle(now, packet);
        Ok(())
    }

    pub(crate) fn handle(&mut self, now: Instant, packet: Packet<'_>) {
        if self.is_closed() {
            return;
        }
        self.stats.packets_received += 1;
        self.last_heard = now;
        match packet {
            Packet::Hello { .. } => self.ack_due = true, // our first ack was lost
            Packet::Cookie(cookie) => {
                if self.state == State::Connecting && self.cookie.is_none() {
                    let peer_isn = server_isn(&cookie);
                    let (mode, window, max) = (
                        self.config.mode,
                        self.config.window,
                        self.config.max_message,
                    );
                    self.receiver = Some(ReceiveWindow::new(mode, peer_isn, window, max));
                    self.cookie = Some(cookie);
                    self.hello_due = true;
                }
            }
            Packet::Data {
                seq,
                fragment,
                fragments,
                payload,
            } => {
                self.established();
                if let Some(receiver) = self
                    .receiver
                    .as_mut()
                    .filter(|_| self.state == State::Established)
                {
                    let payload = self.sender.spare.copy_of(payload);
                    if receiver.on_data(now, seq, fragment, fragments, payload) == Arrival::New {
                        self.last_progress = now;
                    }
                    self.ack_due = true; // duplicates too: our last ack may be lost
                }
            }
            Packet::Ack { next, sack, window } => {
                self.established();
                if self.state != State::Established {
                    return;
                }
                self.pinging = false;
                let reorder = self.reorder_window();
                let acked = self.sender.on_ack(now, (next, sack, window), reorder);
                if let Some(rtt) = acked.rtt {
                    self.rtt.sample(rtt);
                } else if acked.newly > 0 || !self.sender.outstanding() {
                    // New data acknowledged, or a ping answered: the peer
                    // is there, and the backoff of its silence ends (pings
                    // to a peer busy elsewhere left the RTO at its maximum
                    // for its first data: a bench peer stalled 3 s).
                    self.rtt.reset_backoff();
                }
                if acked.newly > 0 {
                    self.last_progress = now;
                }
                if acked.newly > 0 || !self.sender.outstanding() {
                    self.probes = 0;
                    self.last_acked = now;
                    // RFC 6298 5.2/5.3: stop the timer or restart it.
                    let outstanding = self.sender.outstanding();
                    self.rto_at = outstanding.then(|| now + self.rtt.rto());
                    self.probe_at = self
                        .probe_timeout()
                        .filter(|_| outstanding)
                        .map(|pto| now + pto);
                }
            }
            Packet::Ping => self.ack_due = true,
            Packet::Close => self.end(CloseCause::PeerClosed),
        }
    }

    /// A client with a cookie takes the server's first ack (or data) as
    /// the end of the handshake.
    fn established(&mut self) {
        if self.state == State::Connecting && self.cookie.is_some() {
            self.state = State::Established;
            self.hello_due = false;
            self.rto_at = None;
            // Lost hellos backed the RTO off; the first data must not
            // inherit it.
            self.rtt.reset_backoff();
            self.probes = 0;
            self.events.push_back(Event::Connected);
        }
    }

    fn end(&mut self, cause: CloseCause) {
        self.state = State::Closed(cause);
        self.rto_at = None;
        self.events.push_back(Event::Closed(cause));
    }

    /// Says goodbye: one `Close` datagram goes out and the connection ends.
    pub fn close(&mut self) {
        self.close_as(CloseCause::Local);
    }

    /// Ends the connection with `cause`, a `Close` to go out.
    pub(crate) fn close_as(&mut self, cause: CloseCause) {
        if !self.is_closed() {
            self.close_due = true;
            self.end(cause);
        }
    }

    /// Advertises at most `packets` free slots from the next ack on (at
    /// least [`MIN_WINDOW_CAP`], so acks keep coming).
    pub(crate) fn cap_window(&mut self, packets: usize) {
        let packets = packets.max(MIN_WINDOW_CAP);
        self.window_cap = u16::try_from(packets).unwrap_or(u16::MAX);
    }

    /// Takes the `Close` still to be sent, if any: whoever takes it sends
    /// it.
    pub(crate) fn take_close(&mut self) -> bool {
        std::mem::take(&mut self.close_due)
    }

    /// Writes the next datagram to send into `out` (cleared first);
    /// false when there is nothing to send now.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        out.clear();
        self.append_transmit(now, out)
    }

    /// As [`poll_transmit`](Self::poll_transmit), appending the datagram
    /// to `out` (at most [`Config::max_datagram`] bytes): a send queue's
    /// buffer, so it is built where it is sent from.
    pub fn append_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        let packet = match self.state {
            State::Closed(_) if self.close_due => {
                self.close_due = false;
                Some(Packet::Close)
            }
            State::Closed(_) => None,
            State::Connecting if self.hello_due => {
                self.hello_due = false;
                self.rto_at.get_or_insert(now + self.rtt.rto());
                Some(Packet::Hello {
                    mode: self.config.mode,
                    isn: self.isn,
                    cookie: self.cookie,
                })
            }
            State::Connecting => None,
            State::Established if self.ack_due => {
                self.ack_due = false;
                self.receiver.as_ref().map(|r| {
                    let (next, sack, window) = r.ack();
                    let window = window.min(self.window_cap);
                    Packet::Ack { next, sack, window }
                })
            }
            State::Established if self.ping_due => {
                self.ping_due = false;
                Some(Packet::Ping)
            }
            State::Established => None,
        };
        match packet {
            Some(packet) => packet.encode(out),
            None if self.state == State::Established && self.sender.poll(now, out) => {
                // Only the first packet of a flight arms them.
                if self.rto_at.is_none() {
                    self.rto_at = Some(now + self.rtt.rto());
                }
                if self.probe_at.is_none() {
                    self.probe_at = self.probe_timeout().map(|pto| now + pto);
                }
            }
            None => {
                if self.state == State::Established
                    && self.sender.window_closed()
                    && self.rto_at.is_none()
                {
                    // The persist timer: probe until the window opens, in
                    // case the ack that opens it is lost.
                    self.pinging = true;
                    self.rto_at = Some(now + self.rtt.rto());
                }
                return false;
            }
        }
        self.stats.packets_sent += 1;
        true
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        let keepalive = (self.state == State::Established && self.rto_at.is_none())
            .then(|| self.last_heard + self.config.keepalive);
        let skip = self
            .receiver
            .as_ref()
            .and_then(|r| r.skip_deadline(self.config.skip_after));
        let loss = self.sender.loss_deadline(self.reorder_window());
        [self.rto_at, self.probe_at, keepalive, skip, loss]
            .into_iter()
            .flatten()
            .min()
    }

    /// Acts on whatever deadline passed by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        if let Some(receiver) = self.receiver.as_mut() {
            if receiver
                .skip_deadline(self.config.skip_after)
                .is_some_and(|at| at <= now)
            {
                receiver.skip_gap(now);
                self.ack_due = true;
            }
        }
        self.sender.declare_losses(now, self.reorder_window());
        if self.probe_at.is_some_and(|at| at <= now) && self.rto_at.is_some_and(|at| at > now) {
            // The tail of a flight may be lost with nothing after it to
            // reveal that: resend its last packet once, and let its ack
            // (with the selective bits) show what else is missing.
            self.probe_at = None;
            if self.sender.probe() {
                self.stats.tail_probes += 1;
            }
        }
        if self.rto_at.is_some_and(|at| at <= now) {
            self.probe_at = None;
            self.stats.timeouts += 1;
            // Only silence is a sign of a dead peer or a collapsed path. A
            // peer heard from within the RTO is there and the loss was
            // the path's: the next try waits no longer (doubling per lost
            // retransmission stalled a peer of the rudp bench for 5 s at
            // 10% loss) and does not count towards `max_retries`; one that
            // acknowledges nothing for `dead_after` is dead all the same.
            if now.saturating_duration_since(self.last_heard) >= self.rtt.rto() {
                self.probes += 1;
                self.rtt.back_off();
            }
            let stuck = now.saturating_duration_since(self.last_acked) >= self.config.dead_after();
            if self.probes > self.config.max_retries || stuck {
                return self.end(CloseCause::TimedOut);
            }
            match self.state {
                State::Connecting => self.hello_due = true,
                _ if self.sender.outstanding() => self.sender.on_timeout(),
                _ => self.ping_due = self.pinging,
            }
            let waiting =
                self.state == State::Connecting || self.sender.outstanding() || self.pinging;
            self.rto_at = waiting.then(|| now + self.rtt.rto());
        } else if self.rto_at.is_none() && now >= self.last_heard + self.config.keepalive {
            // Quiet, or blocked by a closed window: ask for an ack. A quiet
            // peer's empty windows give their memory back meanwhile.
            self.sender.release();
            if let Some(receiver) = self.receiver.as_mut() {
                receiver.release();
            }
            self.pinging = true;
            self.ping_due = true;
            self.rto_at = Some(now + self.rtt.rto());
        }
    }

    /// How long after the last ack a tail loss probe goes out: two RTTs
    /// (RFC 8985), if that is sooner than the RTO; none before an RTT
    /// sample.
    fn probe_timeout(&self) -> Option<Duration> {
        let pto = (self.rtt.srtt()? * 2).max(Duration::from_millis(1));
        (pto < self.rtt.rto()).then_some(pto)
    }

    /// How long a suspect packet may just be late: a quarter of the RTT
    /// (RACK's choice), before any sample a quarter of the initial RTO.
    fn reorder_window(&self) -> Duration {
        self.rtt.srtt().unwrap_or(self.config.initial_rto) / 4
    }

    /// The next event: `Connected` first, then messages in order, and
    /// `Closed` last, after every message that arrived before the end.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(Event::Connected) = self.events.front() {
            return self.events.pop_front();
        }
        if let Some(receiver) = self.receiver.as_mut() {
            let was_full = receiver.full();
            if let Some(message) = receiver.pop() {
                // Taking a message from a full window reopens it: tell the peer.
                self.ack_due |= was_full;
                return Some(Event::Message(message));
            }
        }
        self.events.pop_front()
    }

    /// Counters so far.
    pub fn stats(&self) -> ConnectionStats {
        let receive = self.receiver.as_ref().map(|r| r.stats).unwrap_or_default();
        ConnectionStats {
            retransmissions: self.sender.retransmissions,
            receive,
            ..self.stats
        }
    }

    /// The RTT estimator (SRTT and the current RTO).
    pub fn rtt(&self) -> &RttEstimator {
        &self.rtt
    }

    /// Why the connection ended, once it has.
    pub fn close_cause(&self) -> Option<CloseCause> {
        match self.state {
            State::Closed(cause) => Some(cause),
            _ => None,
        }
    }

    /// When the peer last made progress: a new data packet from it, or an
    /// ack of new data to it (pings and their acks do not count); the
    /// start of the connection until then.
    pub fn last_progress(&self) -> Instant {
        self.last_progress
    }

    /// Whether the connection is over.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed(_))
    }

    /// The delivery mode.
    pub fn mode(&self) -> Mode {
        self.config.mode
    }
}

/// The smallest window cap: two packets keep the peer's acks flowing.
pub(crate) const MIN_WINDOW_CAP: usize = 2;

/// The server's first sequence number, taken from the cookie: random to an
/// outsider, and known to both sides without another message.
pub(crate) fn server_isn(cookie: &Cookie) -> Seq {
    Seq(u32::from_be_bytes([
        cookie.mac[0],
        cookie.mac[1],
        cookie.mac[2],
        cookie.mac[3],
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(seq: Seq) -> Vec<u8> {
        let mut wire = Vec::new();
        Packet::Data {
            seq,
            fragment: 0,
            fragments: 1,
            payload: b"x",
        }
        .encode(&mut wire);
        wire
    }

    #[test]
    fn the_backoff_of_lost_hellos_ends_with_the_handshake() {
        let t = Instant::now();
        let config = Config::default();
        let mut server = super::super::Endpoint::new(config, t, &[3; 32], 4);
        let addr = "10.0.0.9:1".parse().unwrap();
        let mut client = Connection::connect(config, t, Seq(7));
        let (mut out, mut now) = (Vec::new(), t);
        for _ in 0..2 {
            assert!(client.poll_transmit(now, &mut out), "a hello, lost");
            now = client.poll_timeout().unwrap();
            client.handle_timeout(now);
        }
        assert_eq!(client.rtt().rto(), config.initial_rto * 4);
        for _ in 0..3 {
            while client.poll_transmit(now, &mut out) {
                server.handle_datagram(now, addr, &out);
            }
            while server.poll_transmit(now, &mut out).is_some() {
                client.handle_datagram(now, &out).unwrap();
            }
        }
        assert_eq!(client.poll_event(), Some(Event::Connected));
        assert_eq!(client.rtt().rto(), config.initial_rto);
    }

    #[test]
    fn a_peer_heard_from_is_retried_at_the_plain_rto_until_dead_after() {
        let t = Instant::now();
        let config = Config::default();
        let mut conn = Connection::accept(config, t, Seq(100), Seq(200));
        conn.send(b"never acknowledged").unwrap();
        let mut out = Vec::new();
        while conn.poll_transmit(t, &mut out) {}
        // The peer keeps sending (every 50 ms, new data) and never acks ours.
        let (mut now, mut seq, mut retries) = (t, Seq(100), Vec::new());
        while !conn.is_closed() {
            let due = conn.poll_timeout().unwrap();
            let heard = now + Duration::from_millis(50);
            if heard < due {
                now = heard;
                conn.handle_datagram(now, &data(seq)).unwrap();
                seq = seq.plus(1);
            } else {
                now = due;
                conn.handle_timeout(now);
            }
            while conn.poll_transmit(now, &mut out) {
                if let Ok(Packet::Data { .. }) = Packet::parse(&out, 1200) {
                    retries.push(now);
                }
            }
        }
        // The initial RTO (500 ms), never doubled: no sample yet, and the
        // peer is never silent. Not dead after `max_retries`, but once
        // nothing was acknowledged for `dead_after` (19 s).
        let gaps: Vec<Duration> = retries.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.iter().all(|&gap| gap == config.initial_rto),
            "{gaps:?}"
        );
        assert_eq!(retries.len(), 37, "at 0.5, 1, ... 18.5 s");
        assert_eq!(now - t, config.dead_after());
        assert_eq!(conn.close_cause(), Some(CloseCause::TimedOut));
    }

    /// Slots allocated in the send and the receive window.
    fn allocated(conn: &Connection) -> (usize, usize) {
        let receiver = conn.receiver.as_ref().map_or(0, |r| r.allocated());
        (conn.sender.allocated(), receiver)
    }

    #[test]
    fn an_echo_reuses_its_packet_buffers() {
        let t = Instant::now();
        let mut server = Connection::accept(Config::default(), t, Seq(100), Seq(200));
        let mut wire = Vec::new();
        let mut data = |seq: u32, payload: &'static [u8]| {
            wire.clear();
            let (fragment, fragments) = (0, 1);
            let seq = Seq(seq);
            Packet::Data {
                seq,
                fragment,
                fragments,
                payload,
            }
            .encode(&mut wire);
            wire.clone()
        };
        server.handle_datagram(t, &data(100, b"one")).unwrap();
        let Some(Event::Message(one)) = server.poll_event() else {
            panic!("no message");
        };
        let buffer = one.as_ptr();
        // Echoed in its own buffer, sent, then acknowledged...
        server.send_vec(one).unwrap();
        let mut out = Vec::new();
        while server.poll_transmit(t, &mut out) {}
        let mut ack = Vec::new();
        let (next, sack, window) = (Seq(201), 0, 128);
        Packet::Ack { next, sack, window }.encode(&mut ack);
        server.handle_datagram(t, &ack).unwrap();
        // ... that buffer holds the next message received.
        server.handle_datagram(t, &data(101, b"two")).unwrap();
        let Some(Event::Message(two)) = server.poll_event() else {
            panic!("no message");
        };
        assert_eq!((two.as_slice(), two.as_ptr()), (&b"two"[..], buffer));
        // A refused message is handed back whole.
        server.close();
        assert_eq!(
            server.send_vec(two),
            Err((SendError::Closed, b"two".to_vec()))
        );
    }

    #[test]
    fn windows_are_allocated_on_first_use_and_given_back_when_quiet() {
        let t = Instant::now();
        let config = Config::default();
        let mut server = Connection::accept(config, t, Seq(100), Seq(200));
        assert_eq!(allocated(&server), (0, 0), "nothing at the handshake");
        let mut wire = Vec::new();
        // Data in order goes straight to the application: no reorder slots.
        let data = |seq, wire: &mut Vec<u8>| {
            wire.clear();
            let payload = b"hi";
            Packet::Data {
                seq: Seq(seq),
                fragment: 0,
                fragments: 1,
                payload,
            }
            .encode(wire);
        };
        data(100, &mut wire);
        server.handle_datagram(t, &wire).unwrap();
        assert_eq!(allocated(&server), (0, 0), "in order: no slots");
        // Out of order, 102 waits for 101 in the reorder slots.
        data(102, &mut wire);
        server.handle_datagram(t, &wire).unwrap();
        data(101, &mut wire);
        server.handle_datagram(t, &wire).unwrap();
        for _ in 0..3 {
            assert_eq!(server.poll_event(), Some(Event::Message(b"hi".to_vec())));
        }
        server.send(b"hi").unwrap();
        let mut out = Vec::new();
        while server.poll_transmit(t, &mut out) {}
        let (send, receive) = allocated(&server);
        assert!(send > 0 && receive > 0, "({send}, {receive})");
        // The echo is acknowledged, then the peer goes quiet: at the
        // keepalive both windows are empty and given back.
        wire.clear();
        Packet::Ack {
            next: Seq(201),
            sack: 0,
            window: 128,
        }
        .encode(&mut wire);
        server.handle_datagram(t, &wire).unwrap();
        let ping_at = server.poll_timeout().unwrap();
        assert_eq!(ping_at, t + config.keepalive);
        server.handle_timeout(ping_at);
        assert_eq!(allocated(&server), (0, 0));
        assert!(server.poll_transmit(ping_at, &mut out));
        assert_eq!(Packet::parse(&out, 1200), Ok(Packet::Ping));
    }
}
