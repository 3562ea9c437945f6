//! A burst across shards: does every message reach the other shard?
//!
//! A real chat server with 2 shards on loopback (handoff mode, so members
//! alternate between the shards): one sender and three readers, two of
//! them on the other shard. The sender writes `BURST` numbered messages
//! as fast as the socket takes them; each reader reads until it has the
//! last one, or nothing came for `QUIET`. A run reports the messages the
//! worst reader missed (the goal is 0: a full inbox slows the sender
//! instead of losing messages) and the time from the first write to the
//! last reader's last message. Every run starts a fresh server.
//!
//! Run: `cargo bench --bench chat_burst` (`-- --runs N --burst N
//! --mailbox N` to change the 20 runs of 20,000 messages through the
//! default 4,096-mail inbox).

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use sockloop::client::chat::ChatClient;
use sockloop::services::chat::{Chat, ChatConfig, Encoding};
use sockloop::{Server, ServerConfig};

/// A reader that heard nothing for this long has everything it will get.
const QUIET: Duration = Duration::from_secs(2);
const READERS: usize = 3;

struct Options {
    runs: usize,
    burst: usize,
    mailbox: usize,
}

fn options() -> Options {
    let mut options = Options {
        runs: 20,
        burst: 20_000,
        mailbox: ServerConfig::default().mailbox_capacity,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().and_then(|v| v.parse().ok());
        match arg.as_str() {
            "--runs" => options.runs = value().expect("--runs N"),
            "--burst" => options.burst = value().expect("--burst N"),
            "--mailbox" => options.mailbox = value().expect("--mailbox N"),
            "--test" => options.runs = 1, // `cargo bench -- --test`
            _ => {}                       // cargo's own, such as --bench
        }
    }
    options
}

/// What one reader got: messages, and whether they came in order.
fn read(mut reader: ChatClient, burst: usize) -> (usize, bool, Instant) {
    reader.set_read_timeout(Some(QUIET)).unwrap();
    let (mut got, mut in_order, mut last) = (0, true, Instant::now());
    let mut expect = 0;
    while let Ok(Some(message)) = reader.recv() {
        if message.from != "sender" {
            continue; // join notices
        }
        let n: usize = message.content.parse().expect("a numbered message");
        in_order &= n >= expect;
        expect = n + 1;
        got += 1;
        last = Instant::now();
        if n + 1 == burst {
            break;
        }
    }
    (got, in_order, last)
}

/// One burst on a fresh server: the most messages a reader missed, and
/// the time the burst took to reach every reader.
fn run(options: &Options) -> (usize, Duration) {
    let mut config = ServerConfig {
        shards: 2,
        mailbox_capacity: options.mailbox,
        ..ServerConfig::default()
    };
    config.socket.reuse_port = false;
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = Server::builder()
        .config(config)
        .tcp_group(
            &[any],
            Chat::maker(ChatConfig::default(), &[Encoding::Json]),
        )
        .build()
        .expect("bind the chat");
    let addr = server.tcp_addrs()[0];
    let handle = server.handle();
    let serving = thread::spawn(move || server.run());
    let join = |name: &str| {
        ChatClient::connect(addr, Encoding::Json, name)
            .expect("join")
            .0
    };
    let mut sender = join("sender");
    let readers: Vec<ChatClient> = (0..READERS).map(|i| join(&format!("r{i}"))).collect();
    let per_shard: Vec<u64> = handle.shard_stats().iter().map(|s| s.conns_open).collect();
    assert_eq!(per_shard, [2, 2], "two readers on the other shard");
    let burst = options.burst;
    let readers: Vec<_> = readers
        .into_iter()
        .map(|reader| thread::spawn(move || read(reader, burst)))
        .collect();
    let start = Instant::now();
    for n in 0..burst {
        sender.send(&n.to_string()).expect("send");
    }
    let mut lost = 0;
    let mut end = start;
    for reader in readers {
        let (got, in_order, last) = reader.join().unwrap();
        assert!(in_order, "a reader got the burst out of order");
        lost = lost.max(burst - got);
        end = end.max(last);
    }
    let dropped = handle.stats().mailbox_dropped;
    assert!(dropped as usize <= lost * READERS, "{dropped} dropped");
    drop(sender);
    handle.stop();
    serving.join().unwrap().expect("the server ran");
    (lost, end - start)
}

fn main() {
    let options = options();
    println!(
        "chat_burst: {} runs of {} messages, 2 shards, inbox {}",
        options.runs, options.burst, options.mailbox
    );
    let mut times = Vec::new();
    let mut lossy = 0;
    for i in 0..options.runs {
        let (lost, took) = run(&options);
        lossy += usize::from(lost > 0);
        println!("run {i:2}: lost {lost:5} (worst reader), burst {took:>10.1?}");
        times.push(took);
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "chat_burst: {lossy} of {} runs lost messages; time per burst median {median:.1?}, \
         min {:.1?}, max {:.1?}",
        options.runs,
        times[0],
        times[times.len() - 1]
    );
}
