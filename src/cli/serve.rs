//! `sockloop serve`: its flags, the listeners they make, and signals.

mod workers;

use std::io::Write;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;

use crate::cli::addr::HostPort;
use sockloop::bus::{BusConfig, ServerUrl};
use sockloop::config::{
    duration, parse_duration, parse_size, rate, size, timeout, CLI_UDP_RATE, MIN_FRAME,
};
use sockloop::limit::{parse_rate, IpLimits, Rate, Trusted};
use sockloop::metrics::METRICS_RESERVE;
use sockloop::net::raise_nofile_limit;
use sockloop::net::socket::{first_overlap, SocketOptions};
use sockloop::net::tls::TlsConfig;
use sockloop::services::chat::ChatConfig;
use sockloop::services::registry::{self, ServiceConfig, Transport};
use sockloop::services::rudp_echo;
use sockloop::supervisor::{become_worker, Report, MAX_WORKERS};
use sockloop::{Error, Handle, Listener, Server, ServerConfig};

#[derive(Args)]
pub(crate) struct ServeArgs {
    // The listener flags' help lists the registry's services.
    #[arg(long = "tcp", value_name = "ADDR[=SERVICE]", help = listen_help(Transport::Tcp, false), long_help = listen_help(Transport::Tcp, true))]
    tcp: Vec<Listen>,
    #[arg(long = "tls", value_name = "ADDR[=SERVICE]", help = listen_help(Transport::Tls, false), long_help = listen_help(Transport::Tls, true))]
    tls: Vec<Listen>,
    /// PEM certificate chain for --tls listeners (leaf first).
    #[arg(long, value_name = "FILE")]
    cert: Option<std::path::PathBuf>,
    /// PEM private key for --tls listeners.
    #[arg(long, value_name = "FILE")]
    key: Option<std::path::PathBuf>,
    #[arg(long = "udp", value_name = "ADDR[=SERVICE]", help = listen_help(Transport::Udp, false), long_help = listen_help(Transport::Udp, true))]
    udp: Vec<Listen>,
    /// Worker processes; above 1 a supervisor starts them (each runs --shards
    /// event loops on the same ports), restarts any that dies, forwards
    /// signals and serves the merged --metrics. Not with chat listeners.
    #[arg(long, default_value_t = 1, value_name = "N")]
    workers: usize,
    /// Set by the supervisor: this process is worker I.
    #[arg(long, hide = true, value_name = "I")]
    worker: Option<usize>,
    /// Set by the supervisor: its pid.
    #[arg(long, hide = true, value_name = "PID")]
    worker_of: Option<u32>,
    /// Set by the supervisor: the listeners' addresses, ports resolved, in
    /// the order --tcp, --tls, --udp.
    #[arg(long, hide = true, value_delimiter = ',', value_name = "ADDR,...")]
    worker_addrs: Vec<SocketAddr>,
    /// Print every shard's loop turn: one line per event and action
    /// (readiness, reads and writes with their syscall, buffers, timers,
    /// backpressure, closes, UDP batches), to stderr under the log target
    /// `sockloop::trace`.
    #[arg(long)]
    trace: bool,
    /// Trace lines per second per shard; beyond it lines are held back and
    /// one line counts them when the second ends.
    #[arg(long, value_name = "N", default_value_t = sockloop::DEFAULT_TRACE_RATE)]
    trace_rate: u32,
    /// Echo large reads by copying, never in the kernel: by default an echo
    /// listener's plain TCP connections that send in bulk (reads of 16 KiB
    /// or more) are echoed with splice(2) through a pipe per shard, without
    /// copying the bytes.
    #[arg(long)]
    no_splice: bool,
    /// Event loops, one thread each (default: the number of available cores).
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
    /// Don't bind one listener per shard with SO_REUSEPORT: shard 0 accepts and
    /// hands connections to the least loaded shard (UDP is served by shard 0).
    #[arg(long)]
    no_reuseport: bool,
    /// Pin shard i to core i.
    #[arg(long)]
    pin: bool,
    /// Listen backlog.
    #[arg(long, default_value_t = SocketOptions::default().backlog)]
    backlog: u32,
    /// Leave Nagle's algorithm on for accepted connections.
    #[arg(long)]
    no_nodelay: bool,
    /// SO_RCVBUF for every socket, e.g. 256KiB (default: the kernel's).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    recv_buffer: Option<usize>,
    /// SO_SNDBUF for every socket, e.g. 256KiB (default: the kernel's).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    send_buffer: Option<usize>,
    /// TCP keepalive idle time for accepted connections, e.g. 60s (default: off).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    keepalive: Option<Duration>,
    /// Unsent bytes an accepted connection's kernel send queue may hold
    /// (TCP_NOTSENT_LOWAT); what it will not take waits where the output limits
    /// see it; 0: the kernel's (no cap).
    #[arg(long, value_parser = parse_size, default_value = size(SocketOptions::default().notsent_lowat.unwrap_or(0)).to_string(), value_name = "SIZE")]
    notsent_lowat: usize,
    /// How long sent data may stay unacknowledged before the kernel drops the
    /// connection (TCP_USER_TIMEOUT) (default: the write timeout); 0: the kernel's.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    user_timeout: Option<Duration>,
    /// Close connections idle (no bytes either way) this long; 0 disables.
    #[arg(long, value_parser = parse_duration, default_value = timeout(lib().idle_timeout).to_string(), value_name = "DURATION")]
    idle_timeout: Duration,
    /// Close connections whose frame stays incomplete this long after its first byte
    /// (slowloris); 0 disables.
    #[arg(long, value_parser = parse_duration, default_value = timeout(lib().frame_timeout).to_string(), value_name = "DURATION")]
    frame_timeout: Duration,
    /// Close connections whose output makes no progress this long; 0 disables.
    #[arg(long, value_parser = parse_duration, default_value = timeout(lib().write_timeout).to_string(), value_name = "DURATION")]
    write_timeout: Duration,
    /// How long a graceful shutdown waits for connections to flush.
    #[arg(long, value_parser = parse_duration, default_value = duration(lib().drain_timeout).to_string(), value_name = "DURATION")]
    drain_timeout: Duration,
    // Pending output that disconnects a TCP connection at once; its default (the
    // library's, raised to fit --max-frame) is in the help.
    #[arg(long, alias = "chat-out-hard", value_parser = parse_size, value_name = "SIZE", help = out_hard_help())]
    out_hard: Option<usize>,
    /// Pending output that disconnects a TCP connection held above it for --out-soft-for;
    /// 0: no soft limit.
    #[arg(long, alias = "chat-out-soft", value_parser = parse_size, default_value = size(lib().output_soft_limit).to_string(), value_name = "SIZE")]
    out_soft: usize,
    /// How long output may stay above --out-soft; 0: no soft limit.
    #[arg(long, value_parser = parse_duration, default_value = timeout(lib().output_soft_for).to_string(), value_name = "DURATION")]
    out_soft_for: Duration,
    /// The old name of --out-soft-for, in whole seconds.
    #[arg(long, hide = true, value_parser = parse_secs, conflicts_with = "out_soft_for")]
    chat_out_soft_secs: Option<Duration>,
    /// Invalid messages after which a chat member is disconnected; 0: never.
    #[arg(long, default_value_t = ChatConfig::default().max_errors, value_name = "N")]
    chat_max_errors: u32,
    /// NATS servers the chat's rooms span processes over, e.g.
    /// nats://127.0.0.1:4222[,nats://HOST:PORT...] (tried in turn; host names are
    /// resolved at start). Default: none, the rooms are this process's alone.
    #[arg(long, value_parser = parse_bus, value_name = "URLS")]
    bus: Option<BusServers>,
    /// Longest chat message content; 0: as long as a frame allows.
    #[arg(long, value_parser = parse_size, default_value = size(ChatConfig::default().max_content).to_string(), value_name = "SIZE")]
    chat_max_content: usize,
    /// Connections across all shards beyond which new ones are refused (default: the
    /// open-files cap minus a reserve for listeners and the like); 0: no cap.
    #[arg(long, value_name = "N")]
    max_conns: Option<usize>,
    /// Networks exempt from the per-source limits (cap, connect rate, UDP rate, strikes,
    /// bans), CIDR[,CIDR...]; `none` limits loopback like anyone else.
    #[arg(long, default_value_t = lib().trusted, value_name = "CIDR,...")]
    trusted: Trusted,
    /// Load balancers allowed to send a PROXY protocol header (v1 or v2), CIDR[,CIDR...]:
    /// their connections must start with one (within --frame-timeout), and its client
    /// address is what limits, bans and logs see; a header from anyone else is refused.
    #[arg(long, default_value_t = lib().proxy_from, value_name = "CIDR,...")]
    proxy_from: Trusted,
    /// Connections from one address (an IPv6 /64) beyond which new ones are refused; 0: no cap.
    #[arg(long, default_value_t = lib().sources.max_conns_per_ip, value_name = "N")]
    max_conns_per_ip: u32,
    /// Connection attempts per address, e.g. 50/s or 50/s:100 (a burst of 100); 0: no limit.
    #[arg(long, default_value_t = RateLimit(lib().sources.connect_rate), value_name = "RATE")]
    conn_rate: RateLimit,
    /// Messages per connection, e.g. 100/s:200; over it a message is dropped with an error and
    /// a strike. 0: no limit.
    #[arg(long, default_value_t = RateLimit(lib().message_rate), value_name = "RATE")]
    msg_rate: RateLimit,
    /// Strikes (protocol errors, limit violations) within --strike-window that ban an
    /// address; 0: no bans.
    #[arg(long, default_value_t = lib().sources.ban_after, value_name = "N")]
    ban_after: u32,
    /// The window strikes are counted in.
    #[arg(long, value_parser = parse_duration, default_value = duration(lib().sources.strike_window).to_string(), value_name = "DURATION")]
    strike_window: Duration,
    /// How long a ban lasts.
    #[arg(long, value_parser = parse_duration, default_value = duration(lib().sources.ban_for).to_string(), value_name = "DURATION")]
    ban_for: Duration,
    /// Largest frame (a line, a protobuf record) a TCP service accepts, at least 256B; also
    /// the most unconsumed input a connection may hold.
    #[arg(long, value_parser = parse_size, default_value = size(lib().max_read_buffer).to_string(), value_name = "SIZE")]
    max_frame: usize,
    /// Datagrams per second from one address on each UDP socket (e.g. 500/s:1000); over
    /// it they are dropped and counted. 0: no limit.
    #[arg(long, default_value_t = RateLimit(Some(CLI_UDP_RATE)), value_name = "RATE")]
    udp_rate: RateLimit,
    /// rudp peers per shard; hellos beyond it are refused with a close. 0: no cap.
    #[arg(long, default_value_t = rudp_echo::DEFAULT_MAX_PEERS, value_name = "N")]
    rudp_max_peers: usize,
    /// Serve the counters at GET /metrics (Prometheus text format) on ADDR (with no
    /// listener flags: 127.0.0.1:9090).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<HostPort>,
    /// Log the headline numbers every DURATION (e.g. 10s, at least 100ms); 0: never.
    #[arg(long, value_parser = parse_duration, default_value = "0", value_name = "DURATION")]
    stats_interval: Duration,
}

/// The help of `--tcp`, `--tls` or `--udp`: the registry's services, with
/// their descriptions in the long help.
fn listen_help(transport: Transport, long: bool) -> String {
    let what = match transport {
        Transport::Tcp => "A TCP listener",
        Transport::Tls => "A TLS listener",
        Transport::Udp => "A UDP socket",
    };
    let tls = if transport == Transport::Tls {
        "; needs --cert and --key"
    } else {
        ""
    };
    if long {
        format!(
            "{what}, ADDR[=SERVICE]; repeatable{tls}. SERVICE (default echo) is one of:\n{}",
            registry::describe(transport)
        )
    } else {
        let names: Vec<_> = registry::on(transport).map(|s| s.name).collect();
        format!(
            "{what}, ADDR[=SERVICE] (services: {}); repeatable{tls}",
            names.join(", ")
        )
    }
}

/// The library's defaults, which the flags' defaults are read from.
fn lib() -> ServerConfig {
    ServerConfig::default()
}

fn out_hard_help() -> String {
    format!(
        "Pending output that disconnects a TCP connection at once: a peer (a chat member) \
         that does not keep up with what is pushed to it. Default {}, raised to fit \
         --max-frame; 0: no cap",
        size(lib().output_hard_limit)
    )
}

/// A rate flag: `50/s`, `50/s:100`, `600/m`, or `0` for no limit.
#[derive(Clone, Copy)]
struct RateLimit(Option<Rate>);

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", rate(self.0))
    }
}

impl FromStr for RateLimit {
    type Err = String;

    fn from_str(text: &str) -> Result<RateLimit, String> {
        parse_rate(text).map(RateLimit)
    }
}

/// `ADDR[=SERVICE]`, as given on the command line.
#[derive(Clone)]
struct Listen {
    addr: SocketAddr,
    service: String,
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(text: &str) -> Result<Listen, String> {
        let (addr, service) = text.split_once('=').unwrap_or((text, "echo"));
        Ok(Listen {
            addr: addr.parse::<HostPort>()?.first(),
            service: service.to_string(),
        })
    }
}

pub(crate) fn serve(mut args: ServeArgs) -> Result<(), Error> {
    if args.tcp.is_empty() && args.udp.is_empty() && args.tls.is_empty() {
        let default = |text: &str| text.parse::<Listen>().expect("a valid listener");
        args.tcp.push(default("127.0.0.1:7000"));
        args.tcp.push(default("127.0.0.1:7001=chat"));
        args.tcp.push(default("127.0.0.1:7002=chat-proto"));
        args.tcp.push(default("127.0.0.1:7003=json"));
        args.udp.push(default("127.0.0.1:7000"));
        args.udp.push(default("127.0.0.1:7004=rudp"));
        args.metrics
            .get_or_insert_with(|| "127.0.0.1:9090".parse().expect("a valid address"));
    }
    check_flags(&args)?;
    if let Some(index) = args.worker {
        return worker(index, args);
    }
    let open_files = raise_open_files();
    log_host_limits(open_files);
    if args.workers > 1 {
        return workers::supervise(args);
    }
    let built = build(&args, open_files)?;
    let mut stdout = std::io::stdout().lock();
    for line in &built.listening {
        let _ = writeln!(stdout, "listening {line}");
    }
    let _ = stdout.flush();
    drop(stdout);
    built.server.handle().stop_on_signals()?;
    run(built.server, &args)
}

/// A server built from the flags, and what it listens on.
struct Built {
    server: Server,
    /// `PROTO ADDR SERVICE` of every bound listener, the metrics endpoint last.
    listening: Vec<String>,
    /// Where the metrics endpoint listens, if it does.
    metrics: Option<SocketAddr>,
}

/// Raises the descriptor cap as far as the hard limit allows; the cap.
fn raise_open_files() -> Option<u64> {
    raise_nofile_limit()
        .inspect_err(|e| log::warn!("could not raise the open files limit: {e}"))
        .ok()
}

/// The limits a server with many connections runs into, at info: the
/// descriptor cap, the ephemeral port range and the listen backlog cap
/// (the line `bench` logs too).
fn log_host_limits(open_files: Option<u64>) {
    let cap = open_files.map_or("unknown".to_string(), |n| n.to_string());
    log::info!(
        "descriptor cap {cap}, {}",
        sockloop::net::HostLimits::read()
    );
}

/// One worker process of `--workers N`: the supervisor's listeners at the
/// addresses it resolved, its own metrics endpoint on a loopback port, and
/// a report on stdout instead of the `listening` lines.
fn worker(index: usize, mut args: ServeArgs) -> Result<(), Error> {
    // Whatever fails before the report is reported, and ends the process.
    let fail = |e: Error| -> ! {
        let _ = Report::Failed(e.to_string()).send();
        std::process::exit(if e.is_usage() { 2 } else { 1 })
    };
    if let Err(e) = become_worker(args.worker_of.unwrap_or(0)) {
        fail(Error::Io(e));
    }
    let listeners = (args.tcp.iter_mut())
        .chain(args.tls.iter_mut())
        .chain(args.udp.iter_mut());
    let count = listeners.size_hint().0;
    if count != args.worker_addrs.len() {
        fail(Error::Config(format!(
            "worker {index}: {} addresses for {count} listeners",
            args.worker_addrs.len()
        )));
    }
    for (listen, &addr) in listeners.zip(&args.worker_addrs) {
        listen.addr = addr;
    }
    if args.metrics.is_some() {
        args.metrics = Some("127.0.0.1:0".parse().expect("a valid address"));
    }
    let built = build(&args, raise_open_files()).unwrap_or_else(|e| fail(e));
    // Before the report: a SIGTERM right after it drains.
    built.server.handle().stop_on_signals()?;
    Report::Ready(built.metrics).send()?;
    run(built.server, &args)
}

/// Runs a built server until it stops (its signal handlers installed).
fn run(server: Server, args: &ServeArgs) -> Result<(), Error> {
    if !args.stats_interval.is_zero() {
        log_stats_every(server.handle(), args.stats_interval)?;
    }
    server.run()?;
    log::info!("stopped");
    Ok(())
}

/// The server the flags describe, bound (at the addresses asked for; a
/// worker's are its supervisor's).
fn build(args: &ServeArgs, open_files: Option<u64>) -> Result<Built, Error> {
    let mut config = ServerConfig::default();
    // Descriptors the server needs besides connections: listeners and UDP
    // sockets on every shard, pollers, wakers, stdio, the reserves, the
    // metrics endpoint's own connections (at most a quarter of a small cap).
    let shards = args.shards.unwrap_or(config.shards);
    let sockets = 2 * shards * (args.tcp.len() + args.tls.len() + args.udp.len() + 4)
        + args.metrics.as_ref().map_or(0, |_| METRICS_RESERVE);
    config.max_conns = args.max_conns.map(cap).unwrap_or_else(|| {
        open_files.map(|limit| {
            let limit = limit as usize;
            limit - (16 + sockets).min(limit / 4)
        })
    });
    if let Some(shards) = args.shards {
        config.shards = shards;
    }
    config.pin_shards = args.pin;
    config.trace = args.trace.then_some(args.trace_rate);
    config.splice = !args.no_splice;
    config.socket.reuse_port = !args.no_reuseport;
    config.socket.shared_ports = args.worker.is_some();
    config.socket.backlog = args.backlog;
    config.socket.nodelay = !args.no_nodelay;
    config.socket.recv_buffer = args.recv_buffer;
    config.socket.send_buffer = args.send_buffer;
    config.socket.keepalive = args.keepalive;
    config.idle_timeout = enabled(args.idle_timeout);
    config.frame_timeout = enabled(args.frame_timeout);
    config.write_timeout = enabled(args.write_timeout);
    config.socket.notsent_lowat = Some(args.notsent_lowat).filter(|&n| n > 0);
    config.socket.user_timeout = args.user_timeout.map_or(config.write_timeout, enabled);
    config.drain_timeout = args.drain_timeout;
    config.trusted = args.trusted.clone();
    config.proxy_from = args.proxy_from.clone();
    config.sources = IpLimits {
        max_conns_per_ip: args.max_conns_per_ip,
        connect_rate: args.conn_rate.0,
        ban_after: args.ban_after,
        strike_window: args.strike_window,
        ban_for: args.ban_for,
        ..IpLimits::default()
    };
    config.message_rate = args.msg_rate.0;
    config.udp_rate = args.udp_rate.0;
    config.max_read_buffer = args.max_frame;
    config.output_hard_limit = match args.out_hard {
        Some(0) => usize::MAX,
        Some(hard) => hard,
        None => config.output_hard_limit.max(config.min_output_hard_limit()),
    };
    config.output_soft_limit = args.out_soft;
    let soft_for = args.chat_out_soft_secs.unwrap_or(args.out_soft_for);
    config.output_soft_for = enabled(soft_for).filter(|_| args.out_soft != 0);
    let chat = ChatConfig {
        max_errors: Some(args.chat_max_errors)
            .filter(|&n| n != 0)
            .unwrap_or(u32::MAX),
        max_content: cap(args.chat_max_content).unwrap_or(usize::MAX),
        max_frame: ChatConfig::default().max_frame.min(args.max_frame),
        ..ChatConfig::default()
    };

    let max_line = config.max_read_buffer;
    let builder = Server::builder().config(config);
    // check_flags made sure --tls comes with both files, and only it.
    let tls = match (&args.tls[..], &args.cert, &args.key) {
        ([_, ..], Some(cert), Some(key)) => Some(TlsConfig::from_pem_files(cert, key)?),
        _ => None,
    };
    // Every listener's service, by name, from the registry.
    let plain =
        (args.tcp.iter()).map(|listen| (Transport::Tcp, listen, Listener::plain(listen.addr)));
    let secure = args.tls.iter().filter_map(|listen| {
        let config = tls.clone()?;
        Some((Transport::Tls, listen, Listener::tls(listen.addr, config)))
    });
    let mut tcp = Vec::new();
    let mut tcp_names = Vec::new();
    for (transport, listen, listener) in plain.chain(secure) {
        tcp.push((listener, registry::lookup(transport, &listen.service)?));
        tcp_names.push((transport, listen));
    }
    let udp = (args.udp.iter())
        .map(|listen| {
            Ok((
                listen.addr,
                registry::lookup(Transport::Udp, &listen.service)?,
            ))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let needs = ServiceConfig {
        chat,
        max_line,
        rudp_max_peers: cap(args.rudp_max_peers).unwrap_or(usize::MAX),
        bus: args.bus.clone().map(|BusServers(servers)| BusConfig {
            seed: u64::from(std::process::id()),
            ..BusConfig::new(servers)
        }),
        ..ServiceConfig::new(registry::random_secret()?)
    };
    // Single services first, then the chat group: the order `tcp_addrs` follows.
    let (mut builder, order) = registry::install(builder, &tcp, &udp, &needs);
    if let Some(addr) = &args.metrics {
        builder = builder.metrics(addr.first());
    }
    let server = builder.build()?;

    let mut listening = Vec::new();
    for (&i, addr) in order.iter().zip(server.tcp_addrs()) {
        let (proto, listen) = tcp_names[i];
        listening.push(format!("{proto} {addr} {}", listen.service));
    }
    for (listen, addr) in args.udp.iter().zip(server.udp_addrs()) {
        listening.push(format!("udp {addr} {}", listen.service));
    }
    // The metrics endpoint is the last TCP listener.
    let metrics = server.tcp_addrs().get(order.len()).copied();
    if let Some(addr) = metrics {
        listening.push(format!("tcp {addr} metrics"));
    }
    Ok(Built {
        server,
        listening,
        metrics,
    })
}

/// A cap flag: `0` means no cap.
fn cap(n: usize) -> Option<usize> {
    (n != 0).then_some(n)
}

impl ServeArgs {
    /// The worker index, in a worker process of `--workers N`.
    pub(crate) fn worker(&self) -> Option<usize> {
        self.worker
    }
}

/// What clap cannot check: values that need another flag, or that would
/// quietly do something else than asked.
fn check_flags(args: &ServeArgs) -> Result<(), Error> {
    if !(1..=MAX_WORKERS).contains(&args.workers) {
        return Err(Error::Config(format!(
            "--workers {} is out of range: 1 to {MAX_WORKERS}",
            args.workers
        )));
    }
    let interval = args.stats_interval;
    if !interval.is_zero() && interval < Duration::from_millis(100) {
        return Err(Error::Config(format!(
            "--stats-interval {interval:?} would flood the log: use at least 100ms, or 0 for never"
        )));
    }
    if args.max_frame < MIN_FRAME {
        return Err(Error::Config(format!(
            "--max-frame {} is below the smallest frame, {}: a frame limit cannot be turned off",
            size(args.max_frame),
            size(MIN_FRAME)
        )));
    }
    // Every service by name, before any file is read or socket bound.
    let listeners = (args.tcp.iter().map(|l| (Transport::Tcp, l)))
        .chain(args.tls.iter().map(|l| (Transport::Tls, l)))
        .chain(args.udp.iter().map(|l| (Transport::Udp, l)));
    for (transport, listen) in listeners {
        registry::lookup(transport, &listen.service)?;
    }
    match (&args.tls[..], &args.cert, &args.key) {
        ([_, ..], None, _) | ([_, ..], _, None) => {
            return Err(Error::Config("--tls needs --cert and --key".into()))
        }
        ([], Some(_), _) | ([], _, Some(_)) => {
            return Err(Error::Config(
                "--cert and --key are for --tls listeners".into(),
            ))
        }
        _ => {}
    }
    if args.workers > 1 && args.worker.is_none() {
        workers::check_workers(args)?;
    }
    // One owner per port, named by the flags that asked for it.
    let tcp = (args.tcp.iter().map(|l| ("--tcp", l.addr)))
        .chain(args.tls.iter().map(|l| ("--tls", l.addr)))
        .chain(args.metrics.iter().map(|m| ("--metrics", m.first())));
    let tcp: Vec<_> = tcp.collect();
    let udp: Vec<_> = args.udp.iter().map(|l| ("--udp", l.addr)).collect();
    for list in [tcp, udp] {
        let addrs: Vec<SocketAddr> = list.iter().map(|&(_, addr)| addr).collect();
        if let Some((i, j)) = first_overlap(&addrs) {
            let ((flag_a, a), (flag_b, b)) = (list[i], list[j]);
            return Err(Error::Config(format!(
                "{flag_b} {b} and {flag_a} {a} would share a port: one owner per port"
            )));
        }
    }
    Ok(())
}

/// A timeout flag: `0` disables it.
fn enabled(timeout: Duration) -> Option<Duration> {
    (!timeout.is_zero()).then_some(timeout)
}

/// Whole seconds (`10`), or any duration (`500ms`).
fn parse_secs(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => parse_duration(text),
    }
}

/// One info line per `interval`: open connections and what changed since
/// the last line.
fn log_stats_every(handle: Handle, interval: Duration) -> Result<(), Error> {
    std::thread::Builder::new()
        .name("sockloop-stats".into())
        .spawn(move || {
            let mut last = handle.stats();
            loop {
                std::thread::sleep(interval);
                let now = handle.stats();
                let refused = |s: &sockloop::Stats| {
                    s.refused_server_full
                        + s.refused_per_ip
                        + s.refused_connect_rate
                        + s.refused_banned
                        + s.refused_no_descriptors
                };
                log::info!(
                    "open {} | +{} accepted, +{} refused | tcp +{} B in, +{} B out | udp +{} in, +{} out, +{} dropped",
                    now.conns_open,
                    now.conns_accepted - last.conns_accepted,
                    refused(&now) - refused(&last),
                    now.tcp_bytes_in - last.tcp_bytes_in,
                    now.tcp_bytes_out - last.tcp_bytes_out,
                    now.udp_in - last.udp_in,
                    now.udp_out - last.udp_out,
                    (now.udp_dropped_queue_full + now.udp_dropped_rate + now.udp_dropped_truncated)
                        - (last.udp_dropped_queue_full + last.udp_dropped_rate + last.udp_dropped_truncated),
                );
                last = now;
            }
        })?;
    Ok(())
}

/// `--bus`'s servers (a newtype: clap reads `Option<Vec<_>>` as a
/// repeated flag).
#[derive(Debug, Clone)]
struct BusServers(Vec<ServerUrl>);

/// `--bus`: NATS URLs, each host resolved now to its first address (the
/// loop does not resolve names).
fn parse_bus(list: &str) -> Result<BusServers, String> {
    use std::net::ToSocketAddrs;
    let servers = ServerUrl::parse_list(list)?
        .into_iter()
        .map(|url| {
            let addr = (url.host.as_str(), url.port)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve {url}: {e}"))?
                .next()
                .ok_or_else(|| format!("{url} has no address"))?;
            Ok(ServerUrl {
                host: addr.ip().to_string(),
                port: addr.port(),
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(BusServers(servers))
}
