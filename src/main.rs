//! The `sockloop` command line.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use log::LevelFilter;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use sockloop::client::bench::{
    hgrm, hold, run_tcp, run_udp, svg_plot, HoldConfig, LoadConfig, Report,
};
use sockloop::client::chat::{display, ChatClient};
use sockloop::client::rudp::Client as RudpClient;
use sockloop::config::{parse_duration, parse_size};
use sockloop::limit::{parse_rate, IpLimits, Rate};
use sockloop::net::sys::raise_nofile_limit;
use sockloop::net::tls::TlsConfig;
use sockloop::rudp;
use sockloop::services::chat::{Chat, ChatConfig, Encoding};
use sockloop::services::JsonEcho;
use sockloop::services::RudpEcho;
use sockloop::{services, Error, Handle, Listener, Server, ServerConfig};

#[derive(Parser)]
#[command(name = "sockloop", version, about = "A TCP + UDP server core on mio")]
struct Cli {
    /// Log level (error, warn, info, debug, trace); overrides RUST_LOG.
    #[arg(long, global = true)]
    log_level: Option<LevelFilter>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (with no listener flags: TCP and UDP echo on 127.0.0.1:7000, chat on
    /// 7001, chat-proto on 7002, json on 7003, rudp on UDP 7004).
    Serve(Box<ServeArgs>),
    /// Join a chat room: stdin lines become messages, received ones print as
    /// `[HH:MM:SS from]: content`.
    Chat(ChatArgs),
    /// Send messages reliably to a rudp echo server, wait for every echo, and
    /// report delivery, retransmissions and round-trip times.
    Rudp(RudpArgs),
    /// Load an echo server and measure it: every echoed byte is checked.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// TCP echo load: closed loop (--depth in flight) or open loop (--rate).
    Tcp(BenchArgs),
    /// UDP echo load: a socket per connection, a datagram per message; an echo
    /// later than 1 s is lost.
    Udp(BenchArgs),
    /// Hold many idle connections, pinging each at the start and the end.
    Hold(HoldArgs),
}

#[derive(Args)]
struct HoldArgs {
    /// The echo server.
    #[arg(value_name = "ADDR")]
    addr: SocketAddr,
    /// Connections to hold.
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// How long to hold them.
    #[arg(long, value_parser = parse_duration, default_value = "10s", value_name = "DURATION")]
    duration: Duration,
    /// Connections per source address (127.0.0.1, .2, ... towards a loopback server).
    #[arg(long, default_value_t = 16_384, value_name = "N")]
    per_source: usize,
}

#[derive(Args)]
struct BenchArgs {
    /// The echo server.
    #[arg(value_name = "ADDR")]
    addr: SocketAddr,
    /// Connections.
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Bytes per message (at least 16).
    #[arg(long, value_parser = parse_size, default_value = "64", value_name = "BYTES")]
    size: usize,
    /// Messages in flight per connection (closed loop).
    #[arg(long, default_value_t = 1, value_name = "D")]
    depth: usize,
    /// Measured time.
    #[arg(long, value_parser = parse_duration, default_value = "10s", value_name = "DURATION")]
    duration: Duration,
    /// Load before measuring.
    #[arg(long, value_parser = parse_duration, default_value = "1s", value_name = "DURATION")]
    warmup: Duration,
    /// Generator threads.
    #[arg(long, default_value_t = 1, value_name = "N")]
    threads: usize,
    /// Open loop: messages per second over all connections; latency counts from each
    /// message's intended send time (coordinated omission corrected).
    #[arg(long, value_name = "R")]
    rate: Option<f64>,
    /// Print a JSON summary instead of the text report.
    #[arg(long)]
    json: bool,
    /// Write one RTT per line in microseconds under an `RTT_us` header.
    #[arg(long, value_name = "FILE")]
    csv: Option<std::path::PathBuf>,
    /// Write the HDR histogram's percentile distribution (.hgrm).
    #[arg(long, value_name = "FILE")]
    hgrm: Option<std::path::PathBuf>,
    /// Draw the latency percentile curve into an SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<std::path::PathBuf>,
}

#[derive(Args)]
struct RudpArgs {
    /// The server's rudp socket.
    #[arg(value_name = "ADDR")]
    addr: SocketAddr,
    /// Messages to send.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Bytes per message (at least 8; over 1200 they are fragmented).
    #[arg(long, value_parser = parse_size, default_value = "100", value_name = "BYTES")]
    size: usize,
    /// Ordered but not reliable: gaps are skipped, nothing is resent.
    #[arg(long)]
    unreliable: bool,
    /// Give up waiting for echoes after this long.
    #[arg(long, value_parser = parse_duration, default_value = "30s", value_name = "DURATION")]
    timeout: Duration,
}

#[derive(Args)]
struct ChatArgs {
    /// The server's chat listener (chat-proto's with --proto).
    #[arg(value_name = "ADDR")]
    addr: SocketAddr,
    /// Username (default: asked on stdin; blank: the server picks one).
    #[arg(long)]
    name: Option<String>,
    /// Speak protobuf (a chat-proto listener) instead of JSON lines.
    #[arg(long)]
    proto: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// A TCP listener, ADDR[=SERVICE] (services: echo, json, chat, chat-proto); repeatable.
    #[arg(long = "tcp", value_name = "ADDR[=SERVICE]")]
    tcp: Vec<Listen>,
    /// A TLS listener, ADDR[=SERVICE] (any TCP service); repeatable. Needs --cert and --key.
    #[arg(long = "tls", value_name = "ADDR[=SERVICE]")]
    tls: Vec<Listen>,
    /// PEM certificate chain for --tls listeners (leaf first).
    #[arg(long, value_name = "FILE")]
    cert: Option<std::path::PathBuf>,
    /// PEM private key for --tls listeners.
    #[arg(long, value_name = "FILE")]
    key: Option<std::path::PathBuf>,
    /// A UDP socket, ADDR[=SERVICE] (services: echo, rudp); repeatable.
    #[arg(long = "udp", value_name = "ADDR[=SERVICE]")]
    udp: Vec<Listen>,
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
    #[arg(long, default_value_t = 1024)]
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
    /// Close connections idle (no bytes either way) this long; 0 disables.
    #[arg(long, value_parser = parse_duration, default_value = "300s", value_name = "DURATION")]
    idle_timeout: Duration,
    /// Close connections whose frame stays incomplete this long after its first byte
    /// (slowloris); 0 disables.
    #[arg(long, value_parser = parse_duration, default_value = "10s", value_name = "DURATION")]
    frame_timeout: Duration,
    /// Close connections whose output makes no progress this long; 0 disables.
    #[arg(long, value_parser = parse_duration, default_value = "30s", value_name = "DURATION")]
    write_timeout: Duration,
    /// How long a graceful shutdown waits for connections to flush.
    #[arg(long, value_parser = parse_duration, default_value = "5s", value_name = "DURATION")]
    drain_timeout: Duration,
    /// Pending output that disconnects a connection at once: a chat member that does not
    /// keep up with its room. Applies to every TCP connection.
    #[arg(long, value_parser = parse_size, default_value = "1MiB", value_name = "SIZE")]
    chat_out_hard: usize,
    /// Pending output that disconnects a connection held above it for --chat-out-soft-secs.
    #[arg(long, value_parser = parse_size, default_value = "256KiB", value_name = "SIZE")]
    chat_out_soft: usize,
    /// How long output may stay above --chat-out-soft (seconds, or e.g. 500ms); 0 disables.
    #[arg(long, value_parser = parse_secs, default_value = "10", value_name = "SECS")]
    chat_out_soft_secs: Duration,
    /// Invalid messages after which a chat member is disconnected.
    #[arg(long, default_value_t = ChatConfig::default().max_errors, value_name = "N")]
    chat_max_errors: u32,
    /// Longest chat message content.
    #[arg(long, value_parser = parse_size, default_value = "2KiB", value_name = "SIZE")]
    chat_max_content: usize,
    /// Connections across all shards beyond which new ones are refused (default: the
    /// open-files cap minus a reserve for listeners and the like).
    #[arg(long, value_name = "N")]
    max_conns: Option<usize>,
    /// Connections from one address (an IPv6 /64) beyond which new ones are refused; 0: no cap.
    #[arg(long, default_value_t = 256, value_name = "N")]
    max_conns_per_ip: u32,
    /// Connection attempts per address, e.g. 50/s or 50/s:100 (a burst of 100); 0: no limit.
    #[arg(long, default_value = "50/s:100", value_name = "RATE")]
    conn_rate: RateLimit,
    /// Messages per connection, e.g. 100/s:200; over it a message is dropped with an error and
    /// a strike. 0 (the default): no limit.
    #[arg(long, default_value = "0", value_name = "RATE")]
    msg_rate: RateLimit,
    /// Strikes (protocol errors, limit violations) within --strike-window that ban an
    /// address; 0: no bans.
    #[arg(long, default_value_t = 10, value_name = "N")]
    ban_after: u32,
    /// The window strikes are counted in.
    #[arg(long, value_parser = parse_duration, default_value = "60s", value_name = "DURATION")]
    strike_window: Duration,
    /// How long a ban lasts.
    #[arg(long, value_parser = parse_duration, default_value = "60s", value_name = "DURATION")]
    ban_for: Duration,
    /// Largest frame (a line, a protobuf record) a TCP service accepts; also the most
    /// unconsumed input a connection may hold.
    #[arg(long, value_parser = parse_size, default_value = "64KiB", value_name = "SIZE")]
    max_frame: usize,
    /// Datagrams per second from one address on each UDP socket (e.g. 10000/s:20000); over
    /// it they are dropped and counted. 0: no limit.
    #[arg(long, default_value = "10000/s:20000", value_name = "RATE")]
    udp_rate: RateLimit,
    /// rudp peers per shard; hellos beyond it are refused with a close.
    #[arg(long, default_value_t = 4096, value_name = "N")]
    rudp_max_peers: usize,
}

/// A rate flag: `50/s`, `50/s:100`, `600/m`, or `0` for no limit.
#[derive(Clone, Copy)]
struct RateLimit(Option<Rate>);

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
        let addr = addr.parse().map_err(|_| {
            format!("bad address {addr:?}: expected IP:PORT, e.g. 127.0.0.1:7000 or [::1]:7000")
        })?;
        Ok(Listen {
            addr,
            service: service.to_string(),
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if let Some(level) = cli.log_level {
        logger.filter_level(level);
    }
    logger.init();
    let result = match cli.command {
        Command::Serve(args) => serve(*args).map_err(Failure::from),
        Command::Chat(args) => chat(args).map_err(Failure::from),
        Command::Rudp(args) => rudp_client(args),
        Command::Bench(BenchCommand::Tcp(args)) => bench(args, run_tcp),
        Command::Bench(BenchCommand::Udp(args)) => bench(args, run_udp),
        Command::Bench(BenchCommand::Hold(args)) => bench_hold(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// Why a command failed, and its exit code: 2 for usage and
/// configuration errors, 1 for the rest.
struct Failure {
    message: String,
    code: u8,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let code = if e.is_usage() { 2 } else { 1 };
        Failure {
            message: e.to_string(),
            code,
        }
    }
}

/// A client's failure: what the network or the peer did.
impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure {
            message: e.to_string(),
            code: 1,
        }
    }
}

fn serve(mut args: ServeArgs) -> Result<(), Error> {
    if args.tcp.is_empty() && args.udp.is_empty() && args.tls.is_empty() {
        let default = |text: &str| text.parse::<Listen>().expect("a valid listener");
        args.tcp.push(default("127.0.0.1:7000"));
        args.tcp.push(default("127.0.0.1:7001=chat"));
        args.tcp.push(default("127.0.0.1:7002=chat-proto"));
        args.tcp.push(default("127.0.0.1:7003=json"));
        args.udp.push(default("127.0.0.1:7000"));
        args.udp.push(default("127.0.0.1:7004=rudp"));
    }
    let mut config = ServerConfig::default();
    let open_files = match raise_nofile_limit() {
        Ok(limit) => {
            log::info!("open files limit: {limit}");
            Some(limit)
        }
        Err(e) => {
            log::warn!("could not raise the open files limit: {e}");
            None
        }
    };
    // Descriptors the server needs besides connections: listeners and UDP
    // sockets on every shard, pollers, wakers, stdio, the reserves (at most
    // a quarter of a small cap).
    let shards = args.shards.unwrap_or(config.shards);
    let sockets = 2 * shards * (args.tcp.len() + args.tls.len() + args.udp.len() + 4);
    config.max_conns = args.max_conns.or_else(|| {
        open_files.map(|limit| {
            let limit = limit as usize;
            limit - (16 + sockets).min(limit / 4)
        })
    });
    if let Some(shards) = args.shards {
        config.shards = shards;
    }
    config.pin_shards = args.pin;
    config.socket.reuse_port = !args.no_reuseport;
    config.socket.backlog = args.backlog;
    config.socket.nodelay = !args.no_nodelay;
    config.socket.recv_buffer = args.recv_buffer;
    config.socket.send_buffer = args.send_buffer;
    config.socket.keepalive = args.keepalive;
    config.idle_timeout = enabled(args.idle_timeout);
    config.frame_timeout = enabled(args.frame_timeout);
    config.write_timeout = enabled(args.write_timeout);
    config.drain_timeout = args.drain_timeout;
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
    config.output_hard_limit = args.chat_out_hard;
    config.output_soft_limit = args.chat_out_soft;
    config.output_soft_for = enabled(args.chat_out_soft_secs);
    let chat = ChatConfig {
        max_errors: args.chat_max_errors,
        max_content: args.chat_max_content,
        max_frame: ChatConfig::default().max_frame.min(args.max_frame),
    };

    let max_line = config.max_read_buffer;
    let mut builder = Server::builder().config(config);
    // The order listeners are added in, which `tcp_addrs` follows.
    let tls = match (&args.tls[..], &args.cert, &args.key) {
        ([], None, None) => None,
        ([_, ..], Some(cert), Some(key)) => Some(TlsConfig::from_pem_files(cert, key)?),
        ([_, ..], _, _) => return Err(Error::Config("--tls needs --cert and --key".into())),
        ([], _, _) => {
            return Err(Error::Config(
                "--cert and --key are for --tls listeners".into(),
            ))
        }
    };
    let plain = args
        .tcp
        .iter()
        .map(|listen| ("tcp", listen, Listener::plain(listen.addr)));
    let secure = args.tls.iter().filter_map(|listen| {
        let config = tls.clone()?;
        Some(("tls", listen, Listener::tls(listen.addr, config)))
    });
    // The order listeners are added in, which `tcp_addrs` follows.
    let mut tcp_order = Vec::new();
    let mut chat_group = (Vec::new(), Vec::new(), Vec::new());
    for (proto, listen, listener) in plain.chain(secure) {
        let encoding = match listen.service.as_str() {
            "echo" => {
                builder = builder.listeners(vec![listener], || services::Echo);
                tcp_order.push((proto, listen));
                continue;
            }
            "json" => {
                builder = builder.listeners(vec![listener], move || JsonEcho::new(max_line));
                tcp_order.push((proto, listen));
                continue;
            }
            "chat" => Encoding::Json,
            "chat-proto" => Encoding::Protobuf,
            other => return Err(unknown_service(proto, other)),
        };
        // Every chat listener joins one group: one set of rooms.
        chat_group.0.push(listener);
        chat_group.1.push(encoding);
        chat_group.2.push((proto, listen));
    }
    if !chat_group.0.is_empty() {
        builder = builder.listeners(chat_group.0, Chat::maker(chat, &chat_group.1));
        tcp_order.extend(chat_group.2);
    }
    let secret = services::rudp_echo::random_secret()?;
    let max_peers = args.rudp_max_peers;
    for listen in &args.udp {
        builder = match listen.service.as_str() {
            "echo" => builder.udp(listen.addr, || services::Echo),
            "rudp" => builder.udp(listen.addr, move || {
                RudpEcho::new(rudp::Config::default(), max_peers, &secret)
            }),
            other => return Err(unknown_service("udp", other)),
        };
    }
    let server = builder.build()?;

    let mut stdout = std::io::stdout().lock();
    for ((proto, listen), addr) in tcp_order.iter().zip(server.tcp_addrs()) {
        let _ = writeln!(stdout, "listening {proto} {addr} {}", listen.service);
    }
    for (listen, addr) in args.udp.iter().zip(server.udp_addrs()) {
        let _ = writeln!(stdout, "listening udp {addr} {}", listen.service);
    }
    let _ = stdout.flush();
    drop(stdout);

    stop_on_signals(server.handle(), args.drain_timeout)?;
    server.run()?;
    log::info!("stopped");
    Ok(())
}

/// `sockloop chat`: this thread prints what arrives; another sends stdin.
/// The server closing the connection (after `/quit`, or end of input)
/// ends it.
fn chat(args: ChatArgs) -> std::io::Result<()> {
    let encoding = match args.proto {
        true => Encoding::Protobuf,
        false => Encoding::Json,
    };
    let name = match args.name {
        Some(name) => name,
        None => {
            print!("Enter your username: ");
            std::io::stdout().flush()?;
            let mut name = String::new();
            std::io::stdin().read_line(&mut name)?;
            name
        }
    };
    let (mut client, welcome) = ChatClient::connect(args.addr, encoding, &name)?;
    println!("{}", display(&welcome));
    let mut sender = client.try_clone()?;
    // Not joined: it may be blocked on stdin when the server hangs up.
    std::thread::spawn(move || -> std::io::Result<()> {
        for line in std::io::stdin().lines() {
            sender.send(&line?)?;
        }
        sender.shutdown() // end of input: leave the room
    });
    while let Some(message) = client.recv()? {
        println!("{}", display(&message));
    }
    Ok(())
}

/// `sockloop bench tcp|udp`: the load, the report, the files. Exit 1 if
/// any byte came back wrong or any message or connection was lost.
fn bench(
    args: BenchArgs,
    run: fn(SocketAddr, LoadConfig) -> std::io::Result<Report>,
) -> Result<(), Failure> {
    if args.size < 16 || args.conns == 0 || args.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        let error = "--size must be at least 16, --conns and --rate above 0";
        return Err(Error::Config(error.into()).into());
    }
    let config = LoadConfig {
        conns: args.conns,
        size: args.size,
        depth: args.depth,
        duration: args.duration,
        warmup: args.warmup,
        threads: args.threads,
        rate: args.rate,
        progress: !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let report = run(args.addr, config)?;
    if args.json {
        println!("{}", report.json());
    } else {
        println!("{}", report.text());
    }
    if let Some(path) = &args.csv {
        std::fs::write(path, report.csv())?;
    }
    if let Some(path) = &args.hgrm {
        std::fs::write(path, hgrm(&report.rtt_us))?;
    }
    if let Some(path) = &args.plot {
        let title = format!("{} echo latency, {} connections", args.addr, args.conns);
        std::fs::write(path, svg_plot(&report.rtt_us, &title))?;
    }
    if !report.clean() {
        let error = format!(
            "{} corrupted, {} lost, {} connection errors",
            report.corrupted, report.lost, report.conn_errors
        );
        return Err(std::io::Error::other(error).into());
    }
    Ok(())
}

/// `sockloop bench hold`: exit 1 unless every connection held.
fn bench_hold(args: HoldArgs) -> Result<(), Failure> {
    let config = HoldConfig {
        conns: args.conns,
        duration: args.duration,
        per_source: args.per_source,
    };
    let report = hold(args.addr, config)?;
    println!("{}", report.text());
    if report.alive_at_end < args.conns {
        let lost = args.conns - report.alive_at_end;
        return Err(std::io::Error::other(format!("{lost} connection(s) not held")).into());
    }
    Ok(())
}

/// `sockloop rudp`: numbered messages out, echoes back, checked in order.
fn rudp_client(args: RudpArgs) -> Result<(), Failure> {
    let size = args.size.max(8);
    let mode = match args.unreliable {
        true => rudp::Mode::Unreliable,
        false => rudp::Mode::Reliable,
    };
    let config = rudp::Config {
        mode,
        ..rudp::Config::default()
    };
    if size > config.max_message {
        let max = config.max_message;
        return Err(Error::Config(format!("--size is over the {max}-byte maximum")).into());
    }
    let mut client = RudpClient::connect(args.addr, config, Duration::from_secs(5))?;
    let message = |n: u64| {
        let mut bytes = vec![(n % 251) as u8; size];
        bytes[..8].copy_from_slice(&n.to_be_bytes());
        bytes
    };
    let start = Instant::now();
    let deadline = start + args.timeout;
    let mut sent_at = Vec::with_capacity(args.count as usize);
    let mut rtts = hdrhistogram::Histogram::<u64>::new(3).expect("3 significant digits are valid");
    let (mut next, mut delivered, mut expected) = (0, 0u64, 0u64);
    while delivered < args.count && Instant::now() < deadline {
        while next < args.count && client.try_send(&message(next))? {
            sent_at.push(Instant::now());
            next += 1;
        }
        let Some((at, echo)) = client.recv_at(Duration::from_millis(10))? else {
            continue;
        };
        // Reliable: exactly the next one. Unreliable: a later one may skip a gap.
        let n = echo.get(..8).map_or(u64::MAX, |b| {
            u64::from_be_bytes(b.try_into().unwrap_or_default())
        });
        let in_order = n == expected || (args.unreliable && n > expected);
        if !in_order || n >= next || echo != message(n) {
            let error = format!("echo {n} out of order or damaged (expected {expected})");
            return Err(std::io::Error::other(error).into());
        }
        let rtt = at.saturating_duration_since(sent_at[n as usize]);
        let _ = rtts.record(rtt.as_micros() as u64);
        expected = n + 1;
        delivered += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let stats = client.stats();
    println!(
        "delivered {delivered}/{} messages of {size} B in {elapsed:.3} s ({:.0} msg/s, {:.2} MB/s)",
        args.count,
        delivered as f64 / elapsed,
        (delivered * size as u64) as f64 / elapsed / 1e6
    );
    println!(
        "retransmissions {}, timeouts {}, duplicates {}, skipped {}",
        stats.retransmissions, stats.timeouts, stats.receive.duplicates, stats.receive.skipped
    );
    let p = |q: f64| rtts.value_at_quantile(q);
    println!(
        "rtt us: min {} p50 {} p90 {} p99 {} max {}",
        rtts.min(),
        p(0.5),
        p(0.9),
        p(0.99),
        rtts.max()
    );
    let _ = client.close();
    if delivered < args.count && !args.unreliable {
        let missing = args.count - delivered;
        let error = format!("{missing} echoes missing after {:?}", args.timeout);
        return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, error).into());
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

fn unknown_service(proto: &str, name: &str) -> Error {
    let known = if proto == "udp" {
        "echo, rudp"
    } else {
        "echo, json, chat, chat-proto"
    };
    Error::Config(format!("unknown {proto} service {name:?} (known: {known})"))
}

/// First SIGINT/SIGTERM: graceful shutdown. A second one: stop at once.
fn stop_on_signals(handle: Handle, drain: Duration) -> Result<(), Error> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("sockloop-signals".into())
        .spawn(move || {
            let mut signals = signals.forever();
            if signals.next().is_some() {
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
