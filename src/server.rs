//! Building, running and stopping a server: the library's front door.

use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::thread;

use mio::{Poll, Waker};

use crate::config::ServerConfig;
use crate::metrics::{ShardStats, Stats};
use crate::net::socket::{tcp_listener, udp_socket};
use crate::service::{TcpService, UdpService};
use crate::shard::mailbox::{mailbox, Command, MailboxSender};
use crate::shard::token::Slot;
use crate::shard::udp::UdpEndpoint;
use crate::shard::{Shard, TcpEndpoint};
use crate::Error;

type TcpFactory = Arc<dyn Fn() -> Box<dyn TcpService> + Send + Sync>;
type UdpFactory = Arc<dyn Fn() -> Box<dyn UdpService> + Send + Sync>;

/// Collects listeners and configuration; [`Builder::build`] binds them.
///
/// Services are given as factories because each shard gets its own
/// instance: a service is never shared between threads.
#[must_use]
pub struct Builder {
    config: ServerConfig,
    tcp: Vec<(SocketAddr, TcpFactory)>,
    udp: Vec<(SocketAddr, UdpFactory)>,
}

impl Builder {
    /// Replaces the configuration (default: [`ServerConfig::default`]).
    pub fn config(mut self, config: ServerConfig) -> Builder {
        self.config = config;
        self
    }

    /// Adds a TCP listener on `addr` (port 0: any free port) whose
    /// connections are served by the service `make` creates.
    pub fn tcp<S, F>(mut self, addr: SocketAddr, make: F) -> Builder
    where
        S: TcpService + 'static,
        F: Fn() -> S + Send + Sync + 'static,
    {
        self.tcp.push((addr, Arc::new(move || Box::new(make()))));
        self
    }

    /// Adds a UDP socket on `addr` served by the service `make` creates.
    pub fn udp<S, F>(mut self, addr: SocketAddr, make: F) -> Builder
    where
        S: UdpService + 'static,
        F: Fn() -> S + Send + Sync + 'static,
    {
        self.udp.push((addr, Arc::new(move || Box::new(make()))));
        self
    }

    /// Validates the configuration and binds every listener, so that
    /// errors like an address in use surface here, before anything runs.
    pub fn build(self) -> Result<Server, Error> {
        self.config.validate()?;
        if self.tcp.is_empty() && self.udp.is_empty() {
            return Err(Error::Config("no listeners".into()));
        }
        let config = Arc::new(self.config);
        let mut tcp = Vec::new();
        let mut tcp_addrs = Vec::new();
        for (addr, make) in &self.tcp {
            let bind_error = |source| Error::Bind {
                proto: "tcp",
                addr: *addr,
                source,
            };
            let listener = tcp_listener(*addr, &config.socket).map_err(bind_error)?;
            tcp_addrs.push(listener.local_addr().map_err(bind_error)?);
            tcp.push(TcpEndpoint::new(listener, make()));
        }
        let mut udp = Vec::new();
        let mut udp_addrs = Vec::new();
        for (addr, make) in &self.udp {
            let bind_error = |source| Error::Bind {
                proto: "udp",
                addr: *addr,
                source,
            };
            let socket = udp_socket(*addr, &config.socket).map_err(bind_error)?;
            udp_addrs.push(socket.local_addr().map_err(bind_error)?);
            udp.push(UdpEndpoint::new(socket, make(), &config));
        }
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), Slot::Waker.token())?;
        let (sender, inbox) = mailbox(waker);
        let stats = Arc::new(ShardStats::default());
        let shard = Shard::new(poll, config, Arc::clone(&stats), inbox, tcp, udp)?;
        Ok(Server {
            shards: vec![shard],
            handle: Handle {
                mailboxes: vec![sender],
                stats: vec![stats],
            },
            tcp_addrs,
            udp_addrs,
        })
    }
}

/// A bound server, ready to [`run`](Server::run).
///
/// ```
/// use sockloop::{services::Echo, Server};
/// use std::io::{Read, Write};
///
/// let server = Server::builder()
///     .tcp("127.0.0.1:0".parse().unwrap(), || Echo)
///     .build()?;
/// let addr = server.tcp_addrs()[0];
/// let handle = server.handle();
/// let running = std::thread::spawn(move || server.run());
///
/// let mut client = std::net::TcpStream::connect(addr)?;
/// client.write_all(b"ping")?;
/// let mut reply = [0; 4];
/// client.read_exact(&mut reply)?;
/// assert_eq!(&reply, b"ping");
///
/// handle.shutdown();
/// drop(client);
/// running.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Server {
    shards: Vec<Shard>,
    handle: Handle,
    tcp_addrs: Vec<SocketAddr>,
    udp_addrs: Vec<SocketAddr>,
}

impl Server {
    /// Starts describing a server.
    pub fn builder() -> Builder {
        Builder {
            config: ServerConfig::default(),
            tcp: Vec::new(),
            udp: Vec::new(),
        }
    }

    /// The bound TCP addresses, in the order the listeners were added (with
    /// the real port where port 0 was asked for).
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp_addrs
    }

    /// The bound UDP addresses, in the order they were added.
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }

    /// A handle to stop the server and read its counters from any thread.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Runs every shard on its own thread until shutdown completes.
    ///
    /// If a shard fails or panics, the others are stopped and the first
    /// failure is returned.
    pub fn run(self) -> Result<(), Error> {
        let (done_tx, done_rx) = mpsc::channel();
        let mut threads = Vec::new();
        for (id, shard) in self.shards.into_iter().enumerate() {
            let done = done_tx.clone();
            let thread = thread::Builder::new()
                .name(format!("sockloop-shard-{id}"))
                .spawn(move || {
                    let outcome = match panic::catch_unwind(AssertUnwindSafe(|| shard.run())) {
                        Ok(result) => result.map_err(Error::Io),
                        Err(_) => Err(Error::ShardPanicked(id)),
                    };
                    let _ = done.send(outcome);
                })?;
            threads.push(thread);
        }
        drop(done_tx);
        let mut first_error = None;
        for outcome in done_rx {
            if let Err(e) = outcome {
                log::error!("{e}; stopping the server");
                self.handle.stop();
                first_error.get_or_insert(e);
            }
        }
        for thread in threads {
            let _ = thread.join();
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Stops a running server and reads its counters; cheap to clone and send
/// to other threads (a signal handler, a test).
#[derive(Debug, Clone)]
pub struct Handle {
    mailboxes: Vec<MailboxSender>,
    stats: Vec<Arc<ShardStats>>,
}

impl Handle {
    /// Graceful shutdown: listeners close at once, connections flush what
    /// they owe and are closed by the drain deadline; then `run` returns.
    pub fn shutdown(&self) {
        self.post(Command::Shutdown);
    }

    /// Immediate stop: every connection is closed now.
    pub fn stop(&self) {
        self.post(Command::Stop);
    }

    /// Each shard's counters.
    pub fn shard_stats(&self) -> Vec<Stats> {
        self.stats.iter().map(|shard| shard.snapshot()).collect()
    }

    /// All shards' counters summed.
    pub fn stats(&self) -> Stats {
        self.shard_stats()
            .into_iter()
            .fold(Stats::default(), |a, b| a + b)
    }

    fn post(&self, command: Command) {
        for mailbox in &self.mailboxes {
            if !mailbox.post(command) {
                log::debug!("shard inbox refused {command:?} (full or stopped)");
            }
        }
    }
}
