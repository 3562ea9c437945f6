//! The article's UDP packet ordering (4.3): datagrams `SEQ:n MSG:text`
//! arrive in any order and are printed in sequence order.
//!
//! ```sh
//! cargo run --example packet_ordering                          # receiver on 127.0.0.1:9601
//! cargo run --example packet_ordering -- --send 127.0.0.1:9601 # the article's shuffled 5
//! echo -n 'SEQ:0 MSG:hello' | nc -u -w0 127.0.0.1 9601
//! ```
//!
//! The receiver prints `listening on udp ADDR`, then `In order: SEQ:n
//! MSG:text` per datagram in sequence order (per sender), `gap: SEQ:a to
//! SEQ:b never came` when it gives up waiting, and `dropped from PEER:
//! why` for what it will not hold. The sender prints `sent 5 datagrams`.
//!
//! # Why not sort a batch, as the article does
//!
//! The Go receiver reads exactly 5 datagrams, then sorts them: if one is
//! lost it waits forever, and nothing is shown before the batch is full.
//! A stream has no batches. Here each sender has a cursor `next`: a
//! datagram with `SEQ:next` is shown at once, with the held ones that
//! follow it; one from the future is held, at most `WINDOW` ahead; one
//! from the past is a duplicate. A hole is waited for at most `GAP`, by a
//! timer on the shard's wheel, then skipped. Memory is bounded: `WINDOW`
//! datagrams per sender, `MAX_SENDERS` senders (when full, those
//! holding nothing are forgotten).

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use sockloop::service::{DatagramContext, UdpService};
use sockloop::{Server, ServerConfig};

/// How far ahead of the cursor a datagram may be held.
const WINDOW: u64 = 64;
/// How long a hole is waited for.
const GAP: Duration = Duration::from_millis(300);
/// Senders tracked at once; a new one past this is dropped.
const MAX_SENDERS: usize = 1024;

#[derive(Default)]
struct Stream {
    next: u64,
    held: BTreeMap<u64, String>,
    /// When the hole before `held` opened.
    waiting_since: Option<Instant>,
}

impl Stream {
    /// Shows `next` and every held datagram right after it.
    fn deliver(&mut self) {
        while let Some(text) = self.held.remove(&self.next) {
            println!("In order: SEQ:{} MSG:{text}", self.next);
            self.next += 1;
        }
    }
}

#[derive(Default)]
struct Reorder {
    streams: HashMap<SocketAddr, Stream>,
    timer_armed: bool,
}

impl UdpService for Reorder {
    fn on_datagram(&mut self, out: &mut DatagramContext<'_>, from: SocketAddr, data: &[u8]) {
        let Some((seq, text)) = parse(data) else {
            return println!("dropped from {from}: not SEQ:n MSG:text");
        };
        if !self.streams.contains_key(&from) && self.streams.len() >= MAX_SENDERS {
            // Full: forget the senders that hold nothing (their cursors go).
            self.streams.retain(|_, s| !s.held.is_empty());
            if self.streams.len() >= MAX_SENDERS {
                return println!("dropped from {from}: {MAX_SENDERS} senders waiting");
            }
        }
        let stream = self.streams.entry(from).or_default();
        if seq < stream.next || stream.held.contains_key(&seq) {
            return println!("dropped from {from}: SEQ:{seq} came late or twice");
        }
        if seq >= stream.next + WINDOW {
            return println!("dropped from {from}: SEQ:{seq} is over {WINDOW} ahead");
        }
        stream.held.insert(seq, text);
        stream.deliver();
        if stream.held.is_empty() {
            stream.waiting_since = None;
        } else if stream.waiting_since.is_none() {
            stream.waiting_since = Some(out.now()); // the loop's clock, read once per turn
            if !self.timer_armed {
                out.arm_timer(GAP, 0); // one timer for all senders
                self.timer_armed = true;
            }
        }
    }

    fn on_timer(&mut self, out: &mut DatagramContext<'_>, _key: u64) {
        self.timer_armed = false;
        let now = out.now();
        for stream in self.streams.values_mut() {
            if stream.waiting_since.is_some_and(|since| now - since >= GAP) {
                let first_held = *stream.held.keys().next().expect("a hole before held data");
                println!(
                    "gap: SEQ:{} to SEQ:{} never came",
                    stream.next,
                    first_held - 1
                );
                stream.next = first_held;
                stream.deliver();
                stream.waiting_since = (!stream.held.is_empty()).then_some(now);
            }
        }
        // Wake again while any sender still waits.
        if self.streams.values().any(|s| s.waiting_since.is_some()) {
            out.arm_timer(GAP, 0);
            self.timer_armed = true;
        }
    }
}

/// `SEQ:n MSG:text`, validated once.
fn parse(data: &[u8]) -> Option<(u64, String)> {
    let text = std::str::from_utf8(data).ok()?.trim_end();
    let (seq, message) = text.strip_prefix("SEQ:")?.split_once(" MSG:")?;
    Some((seq.parse().ok()?, message.to_string()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--send") {
        let to: SocketAddr = args.get(1).map_or("127.0.0.1:9601", |a| a).parse()?;
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        // The article's packets, shuffled as it sends them.
        for (seq, text) in [(3, "foo"), (0, "bar"), (2, "baz"), (4, "hi"), (1, "bye")] {
            socket.send_to(format!("SEQ:{seq} MSG:{text}").as_bytes(), to)?;
        }
        println!("sent 5 datagrams");
        return Ok(());
    }
    let addr: SocketAddr = args.first().map_or("127.0.0.1:9601", |a| a).parse()?;
    // One shard: one sender's datagrams always reach the same shard anyway
    // (the kernel picks it by a hash of the addresses), so more would work.
    let config = ServerConfig {
        shards: 1,
        ..ServerConfig::default()
    };
    let server = Server::builder()
        .config(config)
        .udp(addr, Reorder::default)
        .build()?;
    println!("listening on udp {}", server.udp_addrs()[0]);
    Ok(server.run()?)
}
