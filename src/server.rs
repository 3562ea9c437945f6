//! Building, running and stopping a server: the library's front door.

use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use mio::net::{TcpListener, UdpSocket};
use mio::{Poll, Waker};
#[cfg(feature = "signals")]
use signal_hook::consts::{SIGINT, SIGTERM};
#[cfg(feature = "signals")]
use signal_hook::iterator::Signals;

use crate::config::ServerConfig;
use crate::metrics::{MetricsService, ServiceCounters, ShardStats, Stats};
use crate::net::socket::{
    claim, first_overlap, recv_buffer, tcp_listener, udp_socket, Proto, SocketOptions,
};
use crate::net::tls::TlsConfig;
use crate::service::{TcpService, UdpService};
use crate::shard::gate::Gate;
use crate::shard::mailbox::{mailbox, Control, MailboxSender, Postbox};
use crate::shard::token::Slot;
use crate::shard::udp::ServedUdpSocket;
use crate::shard::{ServedListener, Shard};
use crate::Error;

/// One TCP listener of a group: its address, and TLS if it speaks TLS.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Where to listen (port 0: any free port).
    pub addr: SocketAddr,
    /// The certificate and key, for a TLS listener.
    #[cfg(feature = "tls")]
    pub tls: Option<TlsConfig>,
}

impl Listener {
    /// A plaintext listener.
    pub fn plain(addr: SocketAddr) -> Listener {
        Listener {
            addr,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// A TLS listener.
    #[cfg(feature = "tls")]
    pub fn tls(addr: SocketAddr, tls: TlsConfig) -> Listener {
        Listener {
            addr,
            tls: Some(tls),
        }
    }
}

type TcpFactory = Arc<dyn Fn() -> Box<dyn TcpService> + Send + Sync>;
type UdpFactory = Arc<dyn Fn() -> Box<dyn UdpService> + Send + Sync>;

/// Collects listeners and configuration; [`Builder::build`] binds them.
///
/// Services are given as factories because each shard gets its own
/// instance: a service is never shared between threads.
#[must_use]
pub struct Builder {
    config: ServerConfig,
    /// Each TCP listener's address and the index of its service factory.
    tcp: Vec<(SocketAddr, usize)>,
    /// Each TCP listener's TLS configuration, if it speaks TLS.
    tcp_tls: Vec<Option<TlsConfig>>,
    tcp_services: Vec<TcpFactory>,
    udp: Vec<(SocketAddr, UdpFactory)>,
    /// Where `GET /metrics` is served, if anywhere.
    metrics: Vec<SocketAddr>,
}

impl Builder {
    /// Replaces the configuration (default: [`ServerConfig::default`]).
    pub fn config(mut self, config: ServerConfig) -> Builder {
        self.config = config;
        self
    }

    /// Traces every shard's loop: one line per event and per action
    /// (readiness, bytes read and written with their syscall, buffers lent
    /// and returned, timers, backpressure, closes and their reasons, UDP
    /// batches, a marker per turn), logged under the target
    /// `sockloop::trace` at info level, at most `lines_per_second` per
    /// shard (one line then counts those held back). Off by default, and
    /// then a single branch per hook. Call after [`Builder::config`],
    /// which replaces it.
    ///
    /// ```no_run
    /// use sockloop::Server;
    /// # use sockloop::services::Echo;
    /// let server = Server::builder()
    ///     .trace(200)
    ///     .tcp("127.0.0.1:0".parse().unwrap(), || Echo)
    ///     .build();
    /// ```
    pub fn trace(mut self, lines_per_second: u32) -> Builder {
        self.config.trace = Some(lines_per_second);
        self
    }

    /// Adds a TCP listener on `addr` (port 0: any free port) whose
    /// connections are served by the service `make` creates.
    pub fn tcp<S, F>(self, addr: SocketAddr, make: F) -> Builder
    where
        S: TcpService + 'static,
        F: Fn() -> S + Send + Sync + 'static,
    {
        self.tcp_group(&[addr], make)
    }

    /// Adds TCP listeners whose connections all go to one service value
    /// per shard, so they share its state: a chat room whose JSON and
    /// protobuf members listen on different ports.
    /// [`ConnContext::listener`](crate::service::ConnContext::listener)
    /// tells a connection's listener by its position in `addrs`.
    pub fn tcp_group<S, F>(self, addrs: &[SocketAddr], make: F) -> Builder
    where
        S: TcpService + 'static,
        F: Fn() -> S + Send + Sync + 'static,
    {
        let listeners = addrs.iter().map(|&addr| Listener::plain(addr)).collect();
        self.listeners(listeners, make)
    }

    /// Adds a TLS listener on `addr`: the service sees plaintext, the
    /// peer speaks TLS 1.2 or 1.3. Any TCP service works over it.
    #[cfg(feature = "tls")]
    pub fn tls<S, F>(self, addr: SocketAddr, tls: TlsConfig, make: F) -> Builder
    where
        S: TcpService + 'static,
        F: Fn() -> S + Send + Sync + 'static,
    {
        self.listeners(vec![Listener::tls(addr, tls)], make)
    }

    /// Adds listeners, plain or TLS, that share one service value per
    /// shard (see [`tcp_group`](Self::tcp_group)).
    pub fn listeners<S, F>(mut self, listeners: Vec<Listener>, make: F) -> Builder
    where
        S: TcpService + 'static,
        F: Fn() -> S + Send + Sync + 'static,
    {
        let service = self.tcp_services.len();
        self.tcp_services.push(Arc::new(move || Box::new(make())));
        for listener in listeners {
            self.tcp.push((listener.addr, service));
            #[cfg(feature = "tls")]
            self.tcp_tls.push(listener.tls);
            #[cfg(not(feature = "tls"))]
            self.tcp_tls.push(None);
        }
        self
    }

    /// Serves `GET /metrics` (the Prometheus text format, every shard's
    /// counters labelled `shard`) on `addr`, from the event loop itself.
    /// The endpoint is added after every other listener.
    pub fn metrics(mut self, addr: SocketAddr) -> Builder {
        self.metrics.push(addr);
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

    /// Validates the configuration and binds every listener on every
    /// shard, so that errors like an address in use surface here, before
    /// anything runs.
    ///
    /// With several shards each binds its own copy of every listener with
    /// `SO_REUSEPORT` and the kernel spreads connections and datagrams
    /// over them. Where that is turned off (`reuse_port: false`) or the
    /// platform refuses it, shard 0 alone listens and hands each accepted
    /// connection to the shard with the fewest; UDP is then served by
    /// shard 0 only.
    pub fn build(mut self) -> Result<Server, Error> {
        self.config.validate()?;
        let shards = self.config.shards;
        // Each shard's own service values, made first: their declared
        // counters size the shards' stats.
        let mut tcp_services: Vec<Vec<Box<dyn TcpService>>> = (0..shards)
            .map(|_| self.tcp_services.iter().map(|make| make()).collect())
            .collect();
        let udp_services: Vec<Vec<Box<dyn UdpService>>> = (0..shards)
            .map(|_| self.udp.iter().map(|(_, make)| make()).collect())
            .collect();
        let counters = Arc::new(ServiceCounters::register(
            &tcp_services[0]
                .iter()
                .map(|s| s.counters())
                .collect::<Vec<_>>(),
            &udp_services[0]
                .iter()
                .map(|s| s.counters())
                .collect::<Vec<_>>(),
        ));
        let stats: Arc<[Arc<ShardStats>]> = (0..shards)
            .map(|_| Arc::new(ShardStats::new(counters.specs.len())))
            .collect();
        let gate = Arc::new(Gate::new(
            self.config.max_conns,
            self.config.sources,
            self.config.trusted.clone(),
        ));
        // The metrics endpoint comes last: it reads what the others count.
        let metrics_services = self.tcp_services.len();
        for addr in std::mem::take(&mut self.metrics) {
            let (stats, counters) = (Arc::clone(&stats), Arc::clone(&counters));
            let sources = Arc::clone(&gate.sources);
            self = self.tcp(addr, move || {
                MetricsService::new(
                    Arc::clone(&stats),
                    Arc::clone(&counters),
                    Arc::clone(&sources),
                )
            });
            let make = self.tcp_services.last().expect("just added");
            tcp_services.iter_mut().for_each(|mine| mine.push(make()));
        }
        if self.tcp.len() > usize::from(u16::MAX) {
            return Err(Error::Config("at most 65535 TCP listeners".into()));
        }
        if self.tcp.is_empty() && self.udp.is_empty() {
            return Err(Error::Config("no listeners".into()));
        }
        let tcp_addrs: Vec<SocketAddr> = self.tcp.iter().map(|l| l.0).collect();
        let udp_addrs: Vec<SocketAddr> = self.udp.iter().map(|l| l.0).collect();
        one_owner_per_port("tcp", &tcp_addrs)?;
        one_owner_per_port("udp", &udp_addrs)?;
        let config = Arc::new(self.config);
        let (bound, handoff) = bind_shards(&self.tcp, &self.udp, &config)?;
        let tcp_addrs = bound[0].tcp_addrs()?;
        let udp_addrs = bound[0].udp_addrs()?;

        let mut polls = Vec::new();
        let mut mailboxes = Vec::new();
        let mut senders = Vec::new();
        for _ in 0..shards {
            let poll = Poll::new()?;
            let waker = Waker::new(poll.registry(), Slot::Waker.token())?;
            let (sender, mailbox) = mailbox(waker, config.mailbox_capacity);
            polls.push(poll);
            mailboxes.push(mailbox);
            senders.push(sender);
        }
        let peers: Arc<[MailboxSender]> = senders.into();

        let mut built = Vec::new();
        let per_shard = polls.into_iter().zip(mailboxes).zip(bound);
        let services = tcp_services.into_iter().zip(udp_services);
        for (id, (((poll, mailbox), listeners), (services, udp_services))) in
            per_shard.zip(services).enumerate()
        {
            let mut tcp_listeners = listeners.tcp.into_iter();
            let tcp = self
                .tcp
                .iter()
                .enumerate()
                .map(|(i, &(_, service))| {
                    // Its place among the listeners of the same service.
                    let place = self.tcp[..i].iter().filter(|l| l.1 == service).count();
                    let tls = self.tcp_tls[i].clone();
                    let reserved = service >= metrics_services;
                    ServedListener::new(tcp_listeners.next(), service, place, tls, reserved)
                })
                .collect();
            let udp = listeners
                .udp
                .into_iter()
                .zip(udp_services)
                .map(|(socket, service)| ServedUdpSocket::new(socket, service, &config))
                .collect();
            let postbox = Postbox::new(id, Arc::clone(&peers), Arc::clone(&stats[id]));
            let handoff = (handoff && id == 0).then(|| Arc::clone(&stats));
            let shard = Shard::new(
                poll,
                Arc::clone(&config),
                mailbox,
                (postbox, Arc::clone(&gate), Arc::clone(&counters)),
                (services, tcp),
                udp,
                handoff,
            )?;
            built.push(shard);
        }
        Ok(Server {
            shards: built,
            pin: config.pin_shards,
            handle: Handle {
                peers,
                stats,
                drain: config.drain_timeout,
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
    pin: bool,
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
            tcp_tls: Vec::new(),
            metrics: Vec::new(),
            tcp_services: Vec::new(),
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
        let pin = self.pin;
        let mut threads = Vec::new();
        for (id, shard) in self.shards.into_iter().enumerate() {
            let done = done_tx.clone();
            let thread = thread::Builder::new()
                .name(format!("sockloop-shard-{id}"))
                .spawn(move || {
                    if pin {
                        pin_to_core(id);
                    }
                    let outcome = match panic::catch_unwind(AssertUnwindSafe(|| shard.run())) {
                        Ok(result) => result.map_err(Error::Io),
                        Err(_) => Err(Error::ShardPanicked(id)),
                    };
                    let _ = done.send(outcome);
                });
            let thread = match thread {
                Ok(thread) => thread,
                Err(e) => {
                    // The shards already started must not run on alone.
                    self.handle.stop();
                    threads.into_iter().for_each(|t: thread::JoinHandle<()>| {
                        let _ = t.join();
                    });
                    return Err(Error::Io(e));
                }
            };
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
    peers: Arc<[MailboxSender]>,
    stats: Arc<[Arc<ShardStats>]>,
    /// The configured drain timeout, for the shutdown log line.
    #[cfg_attr(not(feature = "signals"), allow(dead_code))]
    drain: Duration,
}

impl Handle {
    /// Graceful shutdown: listeners close at once, connections flush what
    /// they owe and are closed by the drain deadline; then `run` returns.
    pub fn shutdown(&self) {
        self.peers
            .iter()
            .for_each(|shard| shard.request(Control::Shutdown));
    }

    /// Immediate stop: every connection is closed now.
    pub fn stop(&self) {
        self.peers
            .iter()
            .for_each(|shard| shard.request(Control::Stop));
    }

    /// Stops the server on SIGINT or SIGTERM, the way `sockloop serve`
    /// does: the first signal starts a graceful [`shutdown`](Self::shutdown)
    /// and logs `shutting down: draining for up to 5s (signal again to stop
    /// now)` at info; a second one logs `stopping now` and
    /// [`stop`](Self::stop)s at once (a peer that holds its connection open
    /// no longer holds up the exit).
    ///
    /// A thread named `sockloop-signals` waits for the signals. Their
    /// handlers stay installed for the rest of the process, and after the
    /// server stopped a signal does nothing, so this suits a program whose
    /// work is the server (a test or a larger program should call
    /// [`shutdown`](Self::shutdown) itself). Each call adds such a thread,
    /// so one signal can stop several servers. Fails if the handlers
    /// cannot be registered or the thread cannot start.
    ///
    /// ```no_run
    /// use sockloop::{services::Echo, Server};
    ///
    /// let server = Server::builder()
    ///     .tcp("127.0.0.1:7000".parse().unwrap(), || Echo)
    ///     .build()?;
    /// server.handle().stop_on_signals()?; // Ctrl-C drains, a second Ctrl-C stops now
    /// server.run()?; // returns once every connection is closed
    /// # Ok::<(), sockloop::Error>(())
    /// ```
    #[cfg(feature = "signals")]
    pub fn stop_on_signals(&self) -> Result<(), Error> {
        // Registered here, before the thread starts, so a signal that
        // arrives before it runs is not lost.
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        let handle = self.clone();
        thread::Builder::new()
            .name("sockloop-signals".into())
            .spawn(move || {
                let mut signals = signals.forever();
                if signals.next().is_some() {
                    let drain = handle.drain;
                    log::info!(
                        "shutting down: draining for up to {drain:?} (signal again to stop now)"
                    );
                    handle.shutdown();
                }
                if signals.next().is_some() {
                    log::info!("stopping now");
                    handle.stop();
                }
            })?;
        Ok(())
    }

    /// Each shard's counters, in shard order.
    pub fn shard_stats(&self) -> Vec<Stats> {
        self.stats.iter().map(|shard| shard.snapshot()).collect()
    }

    /// All shards' counters summed.
    pub fn stats(&self) -> Stats {
        self.shard_stats()
            .into_iter()
            .fold(Stats::default(), |a, b| a + b)
    }
}

/// Binds every shard's listeners: each its own copies behind
/// `SO_REUSEPORT`, or, where that is off or refused, shard 0 alone.
/// Returns one `Bound` per shard and whether shard 0 must hand off.
fn bind_shards(
    tcp: &[(SocketAddr, usize)],
    udp: &[(SocketAddr, UdpFactory)],
    config: &ServerConfig,
) -> Result<(Vec<Bound>, bool), Error> {
    let shards = config.shards;
    let mut opts = config.socket.clone();
    // Sibling processes share the ports even when this one has one shard.
    opts.reuse_port = (shards > 1 || opts.shared_ports) && opts.reuse_port;
    // A SO_REUSEPORT group would silently share a port another server
    // holds: claim each port alone first. A TCP port 0 is left to the
    // kernel, whose pick for a SO_REUSEPORT listener avoids ports in use
    // (a port claimed and let go could go to another server's claim in
    // between). Its pick for a UDP socket does not (146 of 3,000 such
    // binds here shared a port), so a UDP port 0 is claimed.
    // Shared ports were claimed, and are held, by the supervisor.
    let claimed = if opts.reuse_port && !opts.shared_ports {
        let claim = |proto, name, addr: SocketAddr| match (proto, addr.port()) {
            (Proto::Tcp, 0) => Ok(addr),
            _ => claim(proto, addr).map_err(|source| Error::Bind {
                proto: name,
                addr,
                source,
            }),
        };
        let tcp = tcp.iter().map(|l| claim(Proto::Tcp, "tcp", l.0));
        let udp = udp.iter().map(|l| claim(Proto::Udp, "udp", l.0));
        Some((
            tcp.collect::<Result<Vec<_>, _>>()?,
            udp.collect::<Result<Vec<_>, _>>()?,
        ))
    } else {
        None
    };
    let claimed = claimed.as_ref().map(|(t, u)| (&t[..], &u[..]));
    // Shard 0 binds first, so that port 0 is resolved once and the other
    // shards bind the very same addresses.
    let first = Bound::bind(tcp, udp, claimed, &opts)?;
    let resolved = (first.tcp_addrs()?, first.udp_addrs()?);
    if let Some(asked) = opts.recv_buffer.or(opts.udp_recv_buffer) {
        for (socket, addr) in first.udp.iter().zip(&resolved.1) {
            // What a burst can queue before the kernel drops: worth a line.
            let granted = recv_buffer(socket)?;
            log::info!(
                "udp {addr}: receive buffer {} asked, the kernel reports {} (it doubles what it \
                 grants, capped at net.core.rmem_max)",
                crate::config::size(asked),
                crate::config::size(granted)
            );
        }
    }
    let mut bound = vec![first];
    if opts.reuse_port {
        for _ in 1..shards {
            match Bound::bind(tcp, udp, Some((&resolved.0, &resolved.1)), &opts) {
                Ok(more) => bound.push(more),
                Err(e) => {
                    log::warn!("SO_REUSEPORT refused ({e}); shard 0 will hand connections off");
                    bound.truncate(1);
                    opts.reuse_port = false;
                    break;
                }
            }
        }
    }
    bound.resize_with(shards, Bound::default);
    Ok((bound, shards > 1 && !opts.reuse_port))
}

/// One shard's copies of the listeners.
#[derive(Default)]
struct Bound {
    tcp: Vec<TcpListener>,
    udp: Vec<UdpSocket>,
}

impl Bound {
    /// Binds every listener at the addresses asked for, or at `resolved`
    /// (the addresses shard 0 got, ports included).
    fn bind(
        tcp: &[(SocketAddr, usize)],
        udp: &[(SocketAddr, UdpFactory)],
        resolved: Option<(&[SocketAddr], &[SocketAddr])>,
        opts: &SocketOptions,
    ) -> Result<Bound, Error> {
        let bind_error = |proto, addr| {
            move |source| Error::Bind {
                proto,
                addr,
                source,
            }
        };
        let mut bound = Bound::default();
        for (i, (asked, _)) in tcp.iter().enumerate() {
            let addr = resolved.map_or(*asked, |(tcp, _)| tcp[i]);
            bound
                .tcp
                .push(tcp_listener(addr, opts).map_err(bind_error("tcp", addr))?);
        }
        for (i, (asked, _)) in udp.iter().enumerate() {
            let addr = resolved.map_or(*asked, |(_, udp)| udp[i]);
            bound
                .udp
                .push(udp_socket(addr, opts).map_err(bind_error("udp", addr))?);
        }
        Ok(bound)
    }

    fn tcp_addrs(&self) -> Result<Vec<SocketAddr>, Error> {
        Ok(self
            .tcp
            .iter()
            .map(TcpListener::local_addr)
            .collect::<Result<_, _>>()?)
    }

    fn udp_addrs(&self) -> Result<Vec<SocketAddr>, Error> {
        Ok(self
            .udp
            .iter()
            .map(UdpSocket::local_addr)
            .collect::<Result<_, _>>()?)
    }
}

/// No two listeners of one transport may share a port (see
/// [`overlap`]): with `SO_REUSEPORT` the kernel would split their
/// connections at random.
fn one_owner_per_port(proto: &str, addrs: &[SocketAddr]) -> Result<(), Error> {
    match first_overlap(addrs) {
        None => Ok(()),
        Some((i, j)) => Err(Error::Config(format!(
            "{proto} {} overlaps {proto} {} (listeners {} and {} of that transport, in the \
             order added; the metrics endpoint comes last): one owner per port",
            addrs[j],
            addrs[i],
            i + 1,
            j + 1
        ))),
    }
}

/// Pins the calling shard thread to core `id` (modulo the cores there are).
fn pin_to_core(id: usize) {
    match crate::net::sys::pin_current_thread(id) {
        Ok(core) => log::debug!("shard {id} pinned to core {core}"),
        Err(e) => log::warn!("shard {id}: could not pin to a core: {e}"),
    }
}
