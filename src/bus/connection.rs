//! One NATS connection as a sans-IO state machine: bytes and time in,
//! bytes, events and a deadline out. The driver owns the socket.
//!
//! ```text
//!  Waiting --timeout--> Dialing --handle_connected--> Handshake --INFO: CONNECT, SUBs, PING
//!     ^                    |                              |        --PONG--> Ready (Connected)
//!     |                    +-- failure / timeout ---------+                    |
//!     +------------- backoff with jitter <------ disconnected / stale ---------+
//! ```
//!
//! Publications are encoded into one bounded queue whether or not the
//! server is there; a ready connection hands them out through
//! [`poll_transmit`](Connection::poll_transmit) after the protocol's own
//! bytes. What the driver was given and had not written when the socket
//! died is lost: delivery is at most once, as in NATS core.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::mem;
use std::time::{Duration, Instant};

use super::{BusConfig, ServerUrl};
use crate::protocol::nats::{
    encode_pub, encode_sub, encode_unsub, parse_server_op, pub_len, valid_filter, valid_subject,
    Connect, Limits, ParseError, ServerOp, PING, PONG,
};
use crate::rng::Rng;

/// The largest `max_payload` a server's `INFO` may raise the limit to
/// (64 MiB, the server's own ceiling): bounds what is buffered for one
/// message.
pub const MAX_PAYLOAD_CEILING: usize = 64 * 1024 * 1024;

/// What the connection tells its driver and its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Driver: open a TCP connection to this server, then call
    /// [`handle_connected`](Connection::handle_connected) or
    /// [`handle_disconnected`](Connection::handle_disconnected).
    Dial(ServerUrl),
    /// Driver: close the current TCP connection (the state machine has
    /// already let go of it; no `handle_disconnected` is needed).
    Close,
    /// The server confirmed `CONNECT`: subscriptions are in place and
    /// queued publications flow.
    Connected,
    /// A ready connection was lost; publications queue until the next.
    Disconnected,
    /// A message for one of this connection's subscriptions.
    Message {
        /// The subject it was published to.
        subject: String,
        /// The subscription ([`Connection::subscribe`]'s id).
        sid: u64,
        /// The payload.
        payload: Vec<u8>,
    },
    /// Something went wrong; the connection recovers on its own.
    Error(BusError),
}

/// Why an attempt or a connection failed, or what the server objected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusError {
    /// The server's `-ERR` text. During the handshake (e.g.
    /// `Authorization Violation`) the attempt is given up.
    Server(String),
    /// The server sent what is not its protocol; the connection is closed.
    Protocol(ParseError),
    /// No `PONG` confirming `CONNECT` within the handshake timeout.
    HandshakeTimeout,
    /// [`BusConfig::max_pings_out`] pings went unanswered.
    StaleConnection,
    /// The server asks for credentials or TLS, which this client lacks.
    Unsupported(&'static str),
}

/// Why [`Connection::publish`] did not take a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishError {
    /// Not a valid subject to publish to.
    BadSubject,
    /// Over the server's `max_payload`.
    TooLarge {
        /// The payload's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The queue is full ([`BusConfig::max_pending`]); the message was
    /// dropped and counted.
    QueueFull,
}

/// Why [`Connection::subscribe`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeError {
    /// Not a valid subject or wildcard filter.
    BadFilter,
    /// [`BusConfig::max_subscriptions`] already.
    TooMany,
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusError::Server(text) => write!(f, "server error: {text}"),
            BusError::Protocol(e) => write!(f, "protocol error: {e}"),
            BusError::HandshakeTimeout => f.write_str("handshake timed out"),
            BusError::StaleConnection => f.write_str("server stopped answering pings"),
            BusError::Unsupported(what) => write!(f, "server requires {what} (unsupported)"),
        }
    }
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::BadSubject => f.write_str("invalid subject"),
            PublishError::TooLarge { len, max } => write!(f, "payload of {len} bytes over {max}"),
            PublishError::QueueFull => f.write_str("publication queue full: dropped"),
        }
    }
}

impl fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubscribeError::BadFilter => f.write_str("invalid subject filter"),
            SubscribeError::TooMany => f.write_str("too many subscriptions"),
        }
    }
}

impl std::error::Error for BusError {}
impl std::error::Error for PublishError {}
impl std::error::Error for SubscribeError {}

/// What the connection has done, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusCounters {
    /// Whether a connection is ready now.
    pub connected: bool,
    /// Publications accepted (queued or handed to the driver).
    pub published: u64,
    /// Messages received for a subscription.
    pub received: u64,
    /// Publications refused because the queue was full.
    pub dropped: u64,
    /// Connections made ready after the first.
    pub reconnects: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Backing off until the next dial.
    Waiting { until: Instant },
    /// A `Dial` is out; no socket yet.
    Dialing { deadline: Instant },
    /// A socket; `CONNECT` goes after `INFO`, ready at the `PONG`.
    Handshake { deadline: Instant, got_info: bool },
    /// Confirmed: publications flow, pings keep it honest.
    Ready { next_ping: Instant },
}

/// The state machine. See the module docs.
///
/// ```
/// use std::time::Instant;
/// use sockloop::bus::{BusConfig, Connection, Event, ServerUrl};
///
/// let now = Instant::now();
/// let config = BusConfig::new(vec!["nats://127.0.0.1:4222".parse()?]);
/// let mut bus = Connection::new(config, now)?;
/// assert_eq!(bus.poll_event(), Some(Event::Dial("127.0.0.1:4222".parse()?)));
/// bus.handle_connected(now);
/// bus.handle_input(now, b"INFO {\"max_payload\":1048576}\r\n");
/// let hello = bus.poll_transmit().unwrap();
/// assert!(hello.starts_with(b"CONNECT {") && hello.ends_with(b"\r\nPING\r\n"));
/// bus.handle_input(now, b"PONG\r\n");
/// assert_eq!(bus.poll_event(), Some(Event::Connected));
/// bus.publish("greetings", b"hi")?;
/// assert_eq!(bus.poll_transmit().unwrap(), b"PUB greetings 2\r\nhi\r\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Connection {
    config: BusConfig,
    state: State,
    rng: Rng,
    /// Index of the server the next dial goes to.
    next_server: usize,
    /// Failed attempts since the last ready connection.
    failures: u32,
    limits: Limits,
    /// Received bytes not yet parsed (at most one incomplete operation
    /// between calls).
    inbox: Vec<u8>,
    /// Protocol bytes for the current socket (CONNECT, SUB, PING, PONG).
    control: Vec<u8>,
    /// Encoded publications; `pending[sent..]` is not yet handed out.
    pending: Vec<u8>,
    sent: usize,
    subscriptions: BTreeMap<u64, String>,
    next_sid: u64,
    pings_out: u32,
    ever_ready: bool,
    events: VecDeque<Event>,
    counters: BusCounters,
}

impl Connection {
    /// A connection that dials its first server at once (the first event
    /// is a [`Event::Dial`]). Fails if `config` does not validate.
    pub fn new(config: BusConfig, now: Instant) -> Result<Connection, crate::Error> {
        config.validate()?;
        let mut connection = Connection {
            rng: Rng::new(config.seed),
            config,
            state: State::Waiting { until: now },
            next_server: 0,
            failures: 0,
            limits: Limits::default(),
            inbox: Vec::new(),
            control: Vec::new(),
            pending: Vec::new(),
            sent: 0,
            subscriptions: BTreeMap::new(),
            next_sid: 1,
            pings_out: 0,
            ever_ready: false,
            events: VecDeque::new(),
            counters: BusCounters::default(),
        };
        connection.handle_timeout(now);
        Ok(connection)
    }

    /// Queues `payload` for `subject`. Never waits: while the server is
    /// away or slow it queues up to [`BusConfig::max_pending`] bytes, past
    /// which the message is dropped and counted.
    pub fn publish(&mut self, subject: &str, payload: &[u8]) -> Result<(), PublishError> {
        if !valid_subject(subject) {
            return Err(PublishError::BadSubject);
        }
        if payload.len() > self.limits.max_payload {
            return Err(PublishError::TooLarge {
                len: payload.len(),
                max: self.limits.max_payload,
            });
        }
        let queued = self.pending.len() - self.sent;
        if queued + pub_len(subject, payload.len()) > self.config.max_pending {
            self.counters.dropped += 1;
            return Err(PublishError::QueueFull);
        }
        if self.sent > 0 && self.sent >= self.pending.len() / 2 {
            // Compact now and then, not on every transmit.
            self.pending.drain(..self.sent);
            self.sent = 0;
        }
        encode_pub(subject, payload, &mut self.pending);
        self.counters.published += 1;
        Ok(())
    }

    /// Subscribes to `filter` (wildcards allowed), now and after every
    /// reconnect; messages arrive as [`Event::Message`] with the returned
    /// sid.
    pub fn subscribe(&mut self, filter: &str) -> Result<u64, SubscribeError> {
        if !valid_filter(filter) {
            return Err(SubscribeError::BadFilter);
        }
        if self.subscriptions.len() >= self.config.max_subscriptions {
            return Err(SubscribeError::TooMany);
        }
        let sid = self.next_sid;
        self.next_sid += 1;
        self.subscriptions.insert(sid, filter.to_owned());
        if let State::Ready { .. } = self.state {
            encode_sub(filter, sid, &mut self.control);
        }
        Ok(sid)
    }

    /// Ends a subscription; false if there was none by that sid.
    pub fn unsubscribe(&mut self, sid: u64) -> bool {
        let had = self.subscriptions.remove(&sid).is_some();
        if had && matches!(self.state, State::Ready { .. }) {
            encode_unsub(sid, &mut self.control);
        }
        had
    }

    /// The socket asked for by the last [`Event::Dial`] is connected.
    pub fn handle_connected(&mut self, _now: Instant) {
        if let State::Dialing { deadline } = self.state {
            self.state = State::Handshake {
                deadline,
                got_info: false,
            };
        }
    }

    /// The socket failed to connect or was closed by the peer.
    pub fn handle_disconnected(&mut self, now: Instant) {
        if !matches!(self.state, State::Waiting { .. }) {
            self.lose(now, false);
        }
    }

    /// Bytes read from the socket. Parses every whole operation; a
    /// protocol error closes the connection ([`Event::Error`], then
    /// [`Event::Close`]). Bytes arriving while there is no socket are
    /// ignored.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        if !matches!(self.state, State::Handshake { .. } | State::Ready { .. }) {
            return;
        }
        self.inbox.extend_from_slice(data);
        let mut used = 0;
        loop {
            match parse_server_op(&self.inbox[used..], &self.limits) {
                Ok(Some((op, n))) => {
                    used += n;
                    self.handle_op(now, op);
                    if matches!(self.state, State::Waiting { .. }) {
                        return; // the op ended the connection; inbox cleared
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.fail(now, BusError::Protocol(e));
                    return;
                }
            }
        }
        self.inbox.drain(..used);
    }

    /// Time passed: dial after a backoff, give up a slow handshake, ping,
    /// or declare a silent server dead.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Waiting { until } if now >= until => {
                let server =
                    self.config.servers[self.next_server % self.config.servers.len()].clone();
                self.next_server = self.next_server.wrapping_add(1);
                self.state = State::Dialing {
                    deadline: now + self.config.handshake_timeout,
                };
                self.events.push_back(Event::Dial(server));
            }
            State::Dialing { deadline } | State::Handshake { deadline, .. } if now >= deadline => {
                self.fail(now, BusError::HandshakeTimeout);
            }
            State::Ready { next_ping } if now >= next_ping => {
                if self.pings_out >= self.config.max_pings_out {
                    self.fail(now, BusError::StaleConnection);
                } else {
                    self.pings_out += 1;
                    self.control.extend_from_slice(PING);
                    self.state = State::Ready {
                        next_ping: now + self.config.ping_interval,
                    };
                }
            }
            _ => {}
        }
    }

    /// When [`handle_timeout`](Connection::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(match self.state {
            State::Waiting { until } => until,
            State::Dialing { deadline } | State::Handshake { deadline, .. } => deadline,
            State::Ready { next_ping } => next_ping,
        })
    }

    /// Bytes to write to the socket, at most [`BusConfig::max_transmit`]
    /// at a time: the protocol's first, then (once ready) publications.
    /// Call it while the socket takes more; stop when it pushes back and
    /// publications wait here, within their bound.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let socket = matches!(self.state, State::Handshake { .. } | State::Ready { .. });
        if !socket {
            return None;
        }
        if !self.control.is_empty() {
            return Some(mem::take(&mut self.control));
        }
        let queued = self.pending.len() - self.sent;
        if !matches!(self.state, State::Ready { .. }) || queued == 0 {
            return None;
        }
        let n = queued.min(self.config.max_transmit);
        let chunk = self.pending[self.sent..self.sent + n].to_vec();
        self.sent += n;
        if self.sent == self.pending.len() {
            self.pending.clear();
            self.sent = 0;
        }
        Some(chunk)
    }

    /// The next event, oldest first. Drain after every `handle_*` call.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Counters for metrics.
    pub fn counters(&self) -> BusCounters {
        self.counters
    }

    /// Whether a connection is ready now.
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Ready { .. })
    }

    /// Bytes of publications queued and not yet handed to the driver.
    pub fn queued(&self) -> usize {
        self.pending.len() - self.sent
    }

    fn handle_op(&mut self, now: Instant, op: ServerOp) {
        match op {
            ServerOp::Info(info) => {
                if info.max_payload > 0 {
                    self.limits.max_payload = (info.max_payload as usize).min(MAX_PAYLOAD_CEILING);
                }
                if let State::Handshake {
                    deadline,
                    got_info: false,
                } = self.state
                {
                    if info.auth_required || info.tls_required {
                        let what = if info.tls_required {
                            "TLS"
                        } else {
                            "credentials"
                        };
                        return self.fail(now, BusError::Unsupported(what));
                    }
                    Connect::named(&self.config.name).encode(&mut self.control);
                    for (sid, filter) in &self.subscriptions {
                        encode_sub(filter, *sid, &mut self.control);
                    }
                    self.control.extend_from_slice(PING);
                    self.state = State::Handshake {
                        deadline,
                        got_info: true,
                    };
                }
            }
            ServerOp::Ping => self.control.extend_from_slice(PONG),
            ServerOp::Pong => match self.state {
                State::Handshake { got_info: true, .. } => self.ready(now),
                State::Ready { .. } => self.pings_out = 0,
                _ => {}
            },
            ServerOp::Ok => {}
            ServerOp::Err(text) => {
                let handshake = matches!(self.state, State::Handshake { .. });
                self.events.push_back(Event::Error(BusError::Server(text)));
                if handshake {
                    self.lose(now, true);
                }
            }
            ServerOp::Msg(msg) => {
                // A message racing an UNSUB is not wanted any more.
                if self.subscriptions.contains_key(&msg.sid) {
                    self.counters.received += 1;
                    self.events.push_back(Event::Message {
                        subject: msg.subject,
                        sid: msg.sid,
                        payload: msg.payload,
                    });
                }
            }
        }
    }

    fn ready(&mut self, now: Instant) {
        self.state = State::Ready {
            next_ping: now + self.config.ping_interval,
        };
        self.pings_out = 0;
        self.failures = 0;
        if mem::replace(&mut self.ever_ready, true) {
            self.counters.reconnects += 1;
        }
        self.counters.connected = true;
        self.events.push_back(Event::Connected);
    }

    /// Reports `error` and drops the socket.
    fn fail(&mut self, now: Instant, error: BusError) {
        self.events.push_back(Event::Error(error));
        self.lose(now, true);
    }

    /// Lets go of the socket (asking the driver to close it if `close`)
    /// and backs off before the next dial.
    fn lose(&mut self, now: Instant, close: bool) {
        let was_ready = matches!(self.state, State::Ready { .. });
        let socket = !matches!(self.state, State::Waiting { .. });
        if close && socket {
            self.events.push_back(Event::Close);
        }
        if was_ready {
            self.counters.connected = false;
            self.events.push_back(Event::Disconnected);
        }
        self.inbox.clear();
        self.control.clear();
        self.limits = Limits::default();
        let until = now + self.backoff();
        self.failures = self.failures.saturating_add(1);
        self.state = State::Waiting { until };
    }

    /// `reconnect_min * 2^failures`, at most `reconnect_max`, shortened by
    /// up to `jitter` of itself.
    fn backoff(&mut self) -> Duration {
        let doubled = self
            .config
            .reconnect_min
            .saturating_mul(1 << self.failures.min(20));
        let wait = doubled.min(self.config.reconnect_max);
        let cut = self.config.jitter * self.rng.unit();
        wait.mul_f64(1.0 - cut)
    }
}
