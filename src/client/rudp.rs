//! A blocking rudp client: one [`Connection`] driven over a std UDP socket.
//!
//! Datagrams go out in runs, one segmented send (`UDP_SEGMENT`) per up
//! to 64, and come in coalesced (`UDP_GRO`) where the kernel allows; see
//! [`crate::net::gso`] for the fallbacks and `SOCKLOOP_UDP_OFFLOAD`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use crate::net::gso::{self, Offload, OffloadMode};
use crate::net::udp_batch::SendQueue;
use crate::rudp::{Config, Connection, ConnectionStats, Event, RttEstimator, SendError, Seq};
use crate::TraceLines;

/// Messages received but not yet taken with `recv` (while `send` waits
/// for window room) beyond which the client stops taking more.
const READY_MAX: usize = 1024;

/// A connection to a rudp server.
///
/// ```
/// use std::time::Duration;
/// use sockloop::client::rudp::Client;
/// use sockloop::rudp::Config;
/// use sockloop::services::rudp_echo::{random_secret, RudpEcho};
/// use sockloop::Server;
///
/// let secret = random_secret()?;
/// let server = Server::builder()
///     .udp("127.0.0.1:0".parse().unwrap(), move || RudpEcho::new(Config::default(), 16, &secret))
///     .build()?;
/// let addr = server.udp_addrs()[0];
/// let handle = server.handle();
/// let running = std::thread::spawn(move || server.run());
///
/// let mut client = Client::connect(addr, Config::default(), Duration::from_secs(5))?;
/// client.send(b"hello")?;
/// assert_eq!(client.recv(Duration::from_secs(5))?, Some(b"hello".to_vec()));
///
/// handle.stop();
/// running.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Client {
    socket: UdpSocket,
    server: SocketAddr,
    conn: Connection,
    /// Where a datagram goes that finds the send queue full.
    buf: Vec<u8>,
    /// The largest datagram the connection writes.
    max_datagram: usize,
    /// Datagrams polled from the connection, sent in runs by `flush`.
    out: SendQueue,
    offload: Offload,
    /// Receives that brought more than one datagram.
    coalesced: u64,
    /// When the last datagram was taken off the socket.
    received_at: Instant,
    /// One receive: a datagram, or several coalesced.
    datagram: Box<[u8]>,
    /// Messages received while waiting for something else, with when.
    ready: std::collections::VecDeque<(Instant, Vec<u8>)>,
    /// `sockloop rudp --trace`.
    trace: TraceLines,
}

impl Client {
    /// Binds an ephemeral port, runs the handshake, and returns once the
    /// server accepted (or fails after `timeout`).
    pub fn connect(server: SocketAddr, config: Config, timeout: Duration) -> io::Result<Client> {
        Client::open(
            server,
            config,
            timeout,
            OffloadMode::from_env(),
            TraceLines::off(),
        )
    }

    /// As [`connect`](Self::connect), with segmentation offload as `offload`
    /// says rather than as `SOCKLOOP_UDP_OFFLOAD` does.
    pub fn connect_with(
        server: SocketAddr,
        config: Config,
        timeout: Duration,
        offload: OffloadMode,
    ) -> io::Result<Client> {
        Client::open(server, config, timeout, offload, TraceLines::off())
    }

    /// As [`connect`](Self::connect), writing a line per datagram sent and
    /// received, timer fired (with the retransmissions so far), and the
    /// handshake's end, through `trace`.
    pub fn connect_traced(
        server: SocketAddr,
        config: Config,
        timeout: Duration,
        trace: TraceLines,
    ) -> io::Result<Client> {
        Client::open(server, config, timeout, OffloadMode::from_env(), trace)
    }

    fn open(
        server: SocketAddr,
        config: Config,
        timeout: Duration,
        offload: OffloadMode,
        trace: TraceLines,
    ) -> io::Result<Client> {
        let local: SocketAddr = match server {
            SocketAddr::V4(_) => "0.0.0.0:0".parse(),
            SocketAddr::V6(_) => "[::]:0".parse(),
        }
        .map_err(io::Error::other)?;
        let socket = UdpSocket::bind(local)?;
        // Room for a full window of echoes and acks at once; the kernel
        // caps it at net.core.rmem_max, which is fine.
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20);
        socket.connect(server)?; // only the server's datagrams get through
        let isn = Seq(initial_sequence());
        let offload = Offload::enable(socket.as_fd(), offload);
        // A window of data packets and as many acks; past that, `flush`
        // sends before polling more.
        let datagram = config.max_payload + 64;
        let queued = 2 * config.window + 16;
        let mut client = Client {
            socket,
            server,
            conn: Connection::connect(config, Instant::now(), isn),
            buf: Vec::with_capacity(datagram),
            max_datagram: config.max_datagram(),
            out: SendQueue::new(queued, queued * datagram),
            offload,
            coalesced: 0,
            received_at: Instant::now(),
            datagram: vec![0; gso::GRO_BUFFER].into_boxed_slice(),
            ready: Default::default(),
            trace,
        };
        let deadline = Instant::now() + timeout;
        loop {
            match client.next_event(deadline)? {
                Some(Event::Connected) => {
                    let now = Instant::now();
                    client
                        .trace
                        .line(now, format_args!("connected to {server}"));
                    return Ok(client);
                }
                Some(Event::Closed(cause)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        cause.to_string(),
                    ))
                }
                Some(Event::Message(message)) => client.ready.push_back((Instant::now(), message)),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{server} did not answer the handshake within {timeout:?}"),
                    ))
                }
            }
        }
    }

    /// Sends one message, waiting (and serving the connection) while the
    /// send window is full.
    pub fn send(&mut self, message: &[u8]) -> io::Result<()> {
        while !self.try_send(message)? {
            let deadline = Instant::now() + Duration::from_millis(10);
            if let Some(event) = self.next_event(deadline)? {
                self.keep(event)?;
            }
        }
        Ok(())
    }

    /// Sends one message if the send window has room now; false if not.
    pub fn try_send(&mut self, message: &[u8]) -> io::Result<bool> {
        let queued = self.try_queue(message)?;
        if queued {
            self.flush()?;
        }
        Ok(queued)
    }

    /// Queues one message if the send window has room now (false if not),
    /// without sending yet: it leaves with the next [`flush`](Self::flush)
    /// or wait ([`send`](Self::send), [`recv`](Self::recv)), in one
    /// segmented send with the messages queued beside it.
    pub fn try_queue(&mut self, message: &[u8]) -> io::Result<bool> {
        match self.conn.send(message) {
            Ok(()) => Ok(true),
            Err(SendError::WindowFull) => Ok(false),
            Err(e) => Err(io::Error::other(e)),
        }
    }

    /// As [`try_queue`](Self::try_queue), taking the message's buffer: a
    /// message that fits one packet leaves from it, not copied (a buffer
    /// [`recv`](Self::recv) returned, rewritten, serves well).
    /// `Ok(Some(message))`: no room now, the message handed back.
    pub fn try_queue_vec(&mut self, message: Vec<u8>) -> io::Result<Option<Vec<u8>>> {
        match self.conn.send_vec(message) {
            Ok(()) => Ok(None),
            Err((SendError::WindowFull, message)) => Ok(Some(message)),
            Err((e, _)) => Err(io::Error::other(e)),
        }
    }

    /// Hands back the buffer of a message [`recv`](Self::recv) returned,
    /// to hold a later packet (optional: saves an allocation per message).
    pub fn recycle(&mut self, message: Vec<u8>) {
        self.conn.recycle(message);
    }

    /// The next message, waiting up to `timeout`; `None` on timeout.
    pub fn recv(&mut self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        Ok(self.recv_at(timeout)?.map(|(_, message)| message))
    }

    /// As [`recv`](Self::recv), with the time the message was taken off
    /// the socket (for latency measurements).
    pub fn recv_at(&mut self, timeout: Duration) -> io::Result<Option<(Instant, Vec<u8>)>> {
        if let Some(message) = self.ready.pop_front() {
            return Ok(Some(message)); // no clock read for the common case
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(message) = self.ready.pop_front() {
                return Ok(Some(message));
            }
            match self.next_event(deadline)? {
                Some(event) => self.keep(event)?,
                None => return Ok(None),
            }
        }
    }

    fn keep(&mut self, event: Event) -> io::Result<()> {
        match event {
            Event::Message(message) => self.ready.push_back((self.received_at, message)),
            Event::Connected => {}
            Event::Closed(cause) => {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    cause.to_string(),
                ))
            }
        }
        Ok(())
    }

    /// Serves the connection until it has an event or `deadline` passes.
    fn next_event(&mut self, deadline: Instant) -> io::Result<Option<Event>> {
        loop {
            // With `READY_MAX` messages untaken, leave the rest in the
            // connection: its receive window closes and the server waits,
            // rather than this client buffering without bound.
            if self.ready.len() < READY_MAX {
                if let Some(event) = self.conn.poll_event() {
                    return Ok(Some(event));
                }
            }
            // Only before waiting: what was queued while the events of one
            // receive were taken leaves together, in one wake-up of the
            // server rather than one per event.
            self.flush()?;
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let wake = self
                .conn
                .poll_timeout()
                .map_or(deadline, |at| at.min(deadline));
            let wait = wake
                .saturating_duration_since(now)
                .max(Duration::from_micros(100));
            self.socket.set_read_timeout(Some(wait))?;
            self.receive()?;
            let now = Instant::now();
            if self.conn.poll_timeout().is_some_and(|at| at <= now) {
                self.conn.handle_timeout(now);
                let retransmissions = self.conn.stats().retransmissions;
                let what = format_args!("timer fired, {retransmissions} retransmissions so far");
                self.trace.line(now, what);
            }
        }
    }

    /// Waits for a datagram (up to the read timeout), then takes every one
    /// already queued, so one acknowledgement answers them all.
    fn receive(&mut self) -> io::Result<()> {
        let mut wait = true;
        loop {
            match gso::recv_segments(self.socket.as_fd(), &mut self.datagram, wait) {
                // Over 64 KiB: no rudp datagram, dropped.
                Ok(got) if got.truncated => {}
                Ok(got) => {
                    self.coalesced += u64::from(got.len > got.segment);
                    let now = Instant::now();
                    self.received_at = now;
                    let (len, segment) = (got.len, got.segment);
                    let what = format_args!("read {len}B in segments of {segment}B (recvmsg)");
                    self.trace.line(now, what);
                    for datagram in gso::split(&self.datagram[..got.len], got.segment) {
                        // A bad datagram is dropped, as the protocol says.
                        let _ = self.conn.handle_datagram(now, datagram);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                // An ICMP "port unreachable" from an earlier send: keep
                // trying until the protocol itself gives up.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break,
                Err(e) => return Err(e),
            }
            wait = false;
        }
        Ok(())
    }

    /// Sends every datagram the connection has ready, in runs. What the
    /// socket cannot take now waits for the next flush; a datagram that
    /// finds even the queue full, or that an ICMP error from an earlier
    /// send refuses, is lost like any other: the protocol resends.
    pub fn flush(&mut self) -> io::Result<()> {
        let now = Instant::now();
        loop {
            // Built in the send queue itself, not copied there.
            let (conn, server) = (&mut self.conn, self.server);
            let write = |queue: &mut Vec<u8>| conn.append_transmit(now, queue).then_some(server);
            match self.out.push_with(self.max_datagram, write) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    // Full: send what is queued; if the socket takes
                    // none, the next datagram is lost like any other.
                    let queued = self.out.len();
                    self.send_queued(now);
                    if self.out.len() == queued && !self.conn.poll_transmit(now, &mut self.buf) {
                        break;
                    }
                }
            }
        }
        self.send_queued(now);
        Ok(())
    }

    /// Hands the queue to the socket, in runs where the kernel segments.
    fn send_queued(&mut self, now: Instant) {
        let sent = self.offload.flush(&mut self.out, self.socket.as_fd()).sent;
        if sent > 0 {
            let what = format_args!("write {sent} datagrams (sendmmsg)");
            self.trace.line(now, what);
        }
    }

    /// Whether sends are segmented (`UDP_SEGMENT`) and receives may be
    /// coalesced (`UDP_GRO`) now: a refusal turns the first off for good.
    pub fn offload(&self) -> (bool, bool) {
        (self.offload.max_segments() > 1, self.offload.gro())
    }

    /// Receives that brought more than one datagram (runs the server sent
    /// segmented, glued by `UDP_GRO`).
    pub fn coalesced_receives(&self) -> u64 {
        self.coalesced
    }

    /// Says goodbye to the server.
    pub fn close(mut self) -> io::Result<()> {
        self.conn.close();
        self.flush()
    }

    /// The connection's counters.
    pub fn stats(&self) -> ConnectionStats {
        self.conn.stats()
    }

    /// The RTT estimate.
    pub fn rtt(&self) -> &RttEstimator {
        self.conn.rtt()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// A first sequence number no off-path attacker can guess.
fn initial_sequence() -> u32 {
    let mut bytes = [0; 4];
    match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes) {
        Ok(()) => u32::from_be_bytes(bytes),
        // Guessability only matters against spoofing; still connect.
        Err(_) => std::process::id().wrapping_mul(2_654_435_761),
    }
}
