//! A blocking TCP connection pool: [`Pool`] hands out [`Pooled`]
//! connections to one address and takes them back when they are dropped.
//!
//! It is bounded in both directions: never more than
//! [`PoolConfig::max_total`] connections open (idle, in use or being
//! connected), never more than [`PoolConfig::max_idle`] of them idle. A
//! checkout prefers the most recently returned idle connection (its socket
//! is the likeliest to be warm and alive), checks it with a non-blocking
//! `peek` (see [`Pool::get`]), opens a new connection when none is idle and
//! there is room, and otherwise waits up to [`PoolConfig::checkout_timeout`]
//! for one to come back.
//!
//! There is no background thread: idle connections past
//! [`PoolConfig::idle_timeout`] are closed on the next checkout, or at once
//! by [`Pool::expire`].

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How a [`Pool`] sizes itself and how long it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Connections open at most, idle and in use together (and those
    /// being connected). Default 16. With 0 every checkout times out.
    pub max_total: usize,
    /// Idle connections kept at most; one returned past this is closed.
    /// Default 8.
    pub max_idle: usize,
    /// An idle connection older than this is closed instead of handed out.
    /// Default 60 s: well under most servers' idle timeouts, so the pool
    /// closes first rather than offering a connection the server is about
    /// to drop.
    pub idle_timeout: Duration,
    /// How long [`Pool::get`] waits for a connection when all
    /// `max_total` are in use. Default 5 s.
    pub checkout_timeout: Duration,
    /// How long opening one new connection may take. Default 5 s.
    pub connect_timeout: Duration,
    /// Sets `TCP_NODELAY` on new connections (request/response traffic
    /// wants it). Default true.
    pub nodelay: bool,
}

impl Default for PoolConfig {
    /// 16 connections at most, 8 idle, idle ones closed after 60 s, 5 s to
    /// wait for a free connection and 5 s to connect, `TCP_NODELAY` on.
    fn default() -> PoolConfig {
        PoolConfig {
            max_total: 16,
            max_idle: 8,
            idle_timeout: Duration::from_secs(60),
            checkout_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            nodelay: true,
        }
    }
}

/// Why [`Pool::get`] gave no connection.
#[derive(Debug)]
pub enum PoolError {
    /// All `max_total` connections stayed in use for the whole
    /// [`PoolConfig::checkout_timeout`] (or the [`Pool::get_timeout`]
    /// timeout).
    Timeout {
        /// How long the checkout waited.
        waited: Duration,
        /// The pool's [`PoolConfig::max_total`].
        max_total: usize,
    },
    /// Opening a new connection failed (its slot was given back).
    Connect(io::Error),
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::Timeout { waited, max_total } => {
                // Whole milliseconds: "200ms", "5s", not "200.183412ms".
                let waited = Duration::from_millis(waited.as_millis() as u64);
                write!(
                    f,
                    "no connection free within {}: all {max_total} in use",
                    crate::config::duration(waited)
                )
            }
            PoolError::Connect(error) => write!(f, "cannot open a pooled connection: {error}"),
        }
    }
}

impl std::error::Error for PoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PoolError::Timeout { .. } => None,
            PoolError::Connect(error) => Some(error),
        }
    }
}

/// A snapshot of a [`Pool`]'s counters ([`Pool::stats`]). Counters count
/// since the pool was made; `idle` and `in_use` are now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections opened.
    pub created: u64,
    /// Checkouts served by an idle connection.
    pub reused: u64,
    /// Idle connections closed by the checkout health check: the peer had
    /// closed them, sent unexpected data, or the socket reported an error.
    pub discarded_closed: u64,
    /// Idle connections closed for being idle longer than `idle_timeout`.
    pub discarded_expired: u64,
    /// Returned connections closed because `max_idle` were already idle.
    pub discarded_overflow: u64,
    /// Connections closed by [`Pooled::discard`] or dropped while their
    /// thread panicked.
    pub discarded_by_caller: u64,
    /// Checkouts that had to wait for a connection to come back.
    pub waited: u64,
    /// Checkouts that gave up: [`PoolError::Timeout`].
    pub timeouts: u64,
    /// New connections that failed: [`PoolError::Connect`].
    pub connect_errors: u64,
    /// Idle connections now.
    pub idle: usize,
    /// Connections checked out now (including those being opened or
    /// health-checked).
    pub in_use: usize,
}

/// A thread-safe pool of TCP connections to one address.
///
/// Cloning is cheap and every clone shares the same connections.
///
/// ```
/// use std::io::{Read, Write};
/// use sockloop::client::pool::{Pool, PoolConfig};
///
/// let server = sockloop::Server::builder()
///     .tcp("127.0.0.1:0".parse().unwrap(), || sockloop::services::Echo)
///     .build()?;
/// let addr = server.tcp_addrs()[0];
/// let handle = server.handle();
/// let running = std::thread::spawn(move || server.run());
///
/// let pool = Pool::new(addr, PoolConfig::default());
/// for _ in 0..3 {
///     let mut conn = pool.get()?; // a `Pooled`: derefs to `TcpStream`
///     conn.write_all(b"ping")?;
///     let mut reply = [0; 4];
///     conn.read_exact(&mut reply)?;
///     assert_eq!(&reply, b"ping");
/// } // dropped: back to the pool
/// let stats = pool.stats();
/// assert_eq!((stats.created, stats.reused, stats.idle), (1, 2, 1));
///
/// drop(pool);
/// handle.stop();
/// running.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    config: PoolConfig,
    state: Mutex<State>,
    /// Signalled once for each connection returned or slot freed.
    freed: Condvar,
}

#[derive(Default)]
struct State {
    /// Oldest return first, so the expired ones are a prefix and the most
    /// recently used is last.
    idle: Vec<Idle>,
    /// Connections counted against `max_total`: idle, in use, being opened.
    total: usize,
    stats: PoolStats,
}

struct Idle {
    stream: TcpStream,
    since: Instant,
}

impl Pool {
    /// A pool of connections to `addr`. Opens nothing until the first
    /// [`get`](Pool::get).
    pub fn new(addr: SocketAddr, config: PoolConfig) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                addr,
                config,
                state: Mutex::new(State::default()),
                freed: Condvar::new(),
            }),
        }
    }

    /// The address connections go to.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The pool's configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    /// Checks out a connection: the most recently used idle one that is
    /// still healthy, else a new one if fewer than `max_total` are open,
    /// else the first one returned within `checkout_timeout`.
    ///
    /// The health check is a non-blocking one-byte `peek`: the connection
    /// is handed out only when there is nothing to read. End of stream
    /// (the peer closed it), an error, or bytes nobody asked for (a reply
    /// left over would desynchronise the next request) all close it and
    /// the checkout goes on with the next one. A peer that closes while
    /// the connection is checked out is the caller's to notice.
    ///
    /// Connections come back in blocking mode with `TCP_NODELAY` as
    /// configured; timeouts and other options a caller set stay set.
    pub fn get(&self) -> Result<Pooled, PoolError> {
        self.get_timeout(self.inner.config.checkout_timeout)
    }

    /// [`get`](Pool::get), waiting up to `timeout` instead of the
    /// configured `checkout_timeout` when the pool is exhausted.
    pub fn get_timeout(&self, timeout: Duration) -> Result<Pooled, PoolError> {
        let inner = &self.inner;
        let start = Instant::now();
        // `None`: a timeout too large to add, so no deadline.
        let deadline = start.checked_add(timeout);
        let mut counted_wait = false;
        let mut state = inner.lock();
        loop {
            let expired = inner.take_expired(&mut state, Instant::now());
            if let Some(idle) = state.idle.pop() {
                // Checked without the lock; the slot stays counted.
                drop(state);
                drop(expired);
                if healthy(&idle.stream) {
                    inner.lock().stats.reused += 1;
                    return Ok(Pooled::new(inner, idle.stream));
                }
                drop(idle.stream);
                state = inner.lock();
                state.total -= 1;
                state.stats.discarded_closed += 1;
                continue; // the freed slot is ours to reuse
            }
            if state.total < inner.config.max_total {
                state.total += 1;
                drop(state);
                drop(expired);
                return match inner.connect() {
                    Ok(stream) => {
                        inner.lock().stats.created += 1;
                        Ok(Pooled::new(inner, stream))
                    }
                    Err(error) => {
                        let mut state = inner.lock();
                        state.total -= 1;
                        state.stats.connect_errors += 1;
                        drop(state);
                        inner.freed.notify_one();
                        Err(PoolError::Connect(error))
                    }
                };
            }
            if !counted_wait {
                counted_wait = true;
                state.stats.waited += 1;
            }
            let now = Instant::now();
            state = match deadline {
                Some(deadline) if now >= deadline => {
                    state.stats.timeouts += 1;
                    return Err(PoolError::Timeout {
                        waited: now - start,
                        max_total: inner.config.max_total,
                    });
                }
                Some(deadline) => {
                    inner
                        .freed
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0
                }
                None => inner
                    .freed
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            };
        }
    }

    /// Closes the idle connections older than `idle_timeout` now rather
    /// than at the next checkout (the pool has no background thread).
    /// Returns how many it closed.
    pub fn expire(&self) -> usize {
        let mut state = self.inner.lock();
        let expired = self.inner.take_expired(&mut state, Instant::now());
        drop(state);
        expired.len()
    }

    /// The counters now.
    pub fn stats(&self) -> PoolStats {
        let state = self.inner.lock();
        PoolStats {
            idle: state.idle.len(),
            in_use: state.total - state.idle.len(),
            ..state.stats
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("addr", &self.inner.addr)
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Inner {
    /// The state, even if a thread panicked holding it: every update
    /// leaves it consistent.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Removes the idle connections past `idle_timeout`, to be closed
    /// once the lock is released.
    fn take_expired(&self, state: &mut State, now: Instant) -> Vec<Idle> {
        let fresh = state
            .idle
            .iter()
            .position(|idle| now.saturating_duration_since(idle.since) <= self.config.idle_timeout)
            .unwrap_or(state.idle.len());
        let expired: Vec<Idle> = state.idle.drain(..fresh).collect();
        state.total -= expired.len();
        state.stats.discarded_expired += expired.len() as u64;
        expired
    }

    fn connect(&self) -> io::Result<TcpStream> {
        let stream = TcpStream::connect_timeout(&self.addr, self.config.connect_timeout)?;
        stream.set_nodelay(self.config.nodelay)?;
        Ok(stream)
    }

    /// Takes back a checked-out connection: idle if there is room, closed
    /// otherwise (`None`: closed by the caller).
    fn put_back(&self, stream: Option<TcpStream>) {
        let mut state = self.lock();
        let closing = match stream {
            Some(stream) if state.idle.len() < self.config.max_idle => {
                state.idle.push(Idle {
                    stream,
                    since: Instant::now(),
                });
                None
            }
            Some(stream) => {
                state.total -= 1;
                state.stats.discarded_overflow += 1;
                Some(stream)
            }
            None => {
                state.total -= 1;
                state.stats.discarded_by_caller += 1;
                None
            }
        };
        drop(state);
        self.freed.notify_one();
        drop(closing);
    }
}

/// Whether an idle connection may be handed out: nothing to read now
/// (`WouldBlock`), and back in blocking mode.
fn healthy(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let quiet = matches!(
        stream.peek(&mut [0; 1]),
        Err(error) if error.kind() == io::ErrorKind::WouldBlock
    );
    stream.set_nonblocking(false).is_ok() && quiet
}

/// A connection checked out of a [`Pool`]. Derefs to [`TcpStream`] and
/// implements `Read` and `Write`; dropping it returns it to the pool.
///
/// Return only a connection at a request boundary: one with a reply still
/// unread is closed by the next checkout's health check at best, and at
/// worst (the reply not yet arrived) handed out with the reply to come. A
/// connection whose state is unknown (an error or timeout mid-exchange)
/// should go to [`discard`](Pooled::discard). One dropped while its thread
/// panics is closed, not returned.
pub struct Pooled {
    /// `None` only once given back.
    stream: Option<TcpStream>,
    pool: Arc<Inner>,
}

impl Pooled {
    fn new(pool: &Arc<Inner>, stream: TcpStream) -> Pooled {
        Pooled {
            stream: Some(stream),
            pool: Arc::clone(pool),
        }
    }

    /// Closes the connection instead of returning it, freeing its slot:
    /// for one the caller knows or suspects is broken.
    pub fn discard(mut self) {
        let stream = self.stream.take();
        drop(stream);
        self.pool.put_back(None);
    }
}

impl Deref for Pooled {
    type Target = TcpStream;

    fn deref(&self) -> &TcpStream {
        self.stream
            .as_ref()
            .expect("a Pooled holds its stream until dropped")
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut TcpStream {
        self.stream
            .as_mut()
            .expect("a Pooled holds its stream until dropped")
    }
}

impl Read for Pooled {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (**self).read(buf)
    }
}

impl Write for Pooled {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (**self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (**self).flush()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            if std::thread::panicking() {
                drop(stream);
                self.pool.put_back(None);
            } else {
                self.pool.put_back(Some(stream));
            }
        }
    }
}

impl fmt::Debug for Pooled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pooled")
            .field("stream", &self.stream)
            .field("pool", &self.pool.addr)
            .finish()
    }
}
