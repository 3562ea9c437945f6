//! Chat fan-out, JSON against protobuf: what one message costs to encode and
//! decode, and how many deliveries per second one room sustains.
//!
//! * `codec`: one typical message (8-char sender, 64-byte content, `time`,
//!   `room`) encoded to and decoded from the wire form the server's members
//!   get: a `NdjsonCodec<ChatLine>` line or a `LengthDelimited`
//!   `ChatMessage` frame. One element = one message.
//! * `fanout`: a real chat server (one shard) on loopback with 100 members
//!   in the lobby, all of one encoding. One member sends numbered 64-byte
//!   messages, never more than `WINDOW` ahead of the slowest receiver; an
//!   iteration is one message read by each of the other 99 members, so the
//!   throughput is deliveries per second. The clients run on the bench's own
//!   thread (one mio `Poll` over the 99 receivers), the server on another.
//!
//! Every delivery is decoded and checked (sender, number, order), so a lost,
//! duplicated or reordered message fails the run instead of skewing it.
//! Run: `cargo bench --bench chat` (`-- --test` runs each bench once).

use std::hint::black_box;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use sockloop::codec::{ChatLine, LengthDelimited, NdjsonCodec};
use sockloop::proto::chat::ChatMessage;
use sockloop::services::chat::{Chat, ChatConfig, Encoding};
use sockloop::{Server, ServerConfig};

const ENCODINGS: [(&str, Encoding); 2] =
    [("json", Encoding::Json), ("protobuf", Encoding::Protobuf)];
const MEMBERS: usize = 100;
const RECEIVERS: u64 = MEMBERS as u64 - 1;
/// Messages a receiver may be owed; at ~100 bytes each far below the 1 MiB
/// per-member output hard limit. (1 to 128 measure the same: the server
/// writes each message to each member as it is relayed, without batching.)
const WINDOW: u64 = 32;
/// `ChatConfig::default().max_frame`: the clients accept what the server may send.
const MAX_FRAME: usize = 16 * 1024;
const CONTENT_LEN: usize = 64;
/// No progress for this long is a lost message, not noise: fail loudly.
const STALL: Duration = Duration::from_secs(10);
const SENDER: &str = "member00";

/// Message `seq`'s content: its number, padded to `CONTENT_LEN` bytes.
fn content(seq: u64) -> String {
    format!("{seq:010} {:x<width$}", "", width = CONTENT_LEN - 11)
}

fn codec(c: &mut Criterion) {
    let msg = ChatMessage {
        from: "member42".into(),
        content: content(42),
        time: "12:34:56".into(),
        room: "lobby".into(),
    };
    // JSON members get the same message without `room`.
    let line = ChatLine {
        from: msg.from.clone(),
        content: msg.content.clone(),
        time: msg.time.clone(),
    };
    let (mut json, mut proto) = (Vec::new(), Vec::new());
    NdjsonCodec::encode(&line, &mut json).unwrap();
    LengthDelimited::encode(&msg, &mut proto).unwrap();
    let (json_len, proto_len) = (json.len(), proto.len());
    println!("codec: wire size json {json_len} B, protobuf {proto_len} B");

    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    // One reused buffer: the encoder's work, not the allocator's.
    let mut out = Vec::with_capacity(256);
    group.bench_function(BenchmarkId::new("encode", "json"), |b| {
        b.iter(|| {
            out.clear();
            NdjsonCodec::encode(black_box(&line), &mut out).unwrap();
            black_box(out.len())
        })
    });
    group.bench_function(BenchmarkId::new("encode", "protobuf"), |b| {
        b.iter(|| {
            out.clear();
            LengthDelimited::encode(black_box(&msg), &mut out).unwrap();
            black_box(out.len())
        })
    });
    // Decoding allocates the message's strings, as a real receiver must
    // (and frees them: criterion drops what each iteration returns).
    let ndjson = NdjsonCodec::<ChatLine>::new(MAX_FRAME);
    assert_eq!(ndjson.decode(&json), Ok(Some((line.clone(), json_len))));
    group.bench_function(BenchmarkId::new("decode", "json"), |b| {
        b.iter(|| ndjson.decode(black_box(&json)))
    });
    let frames = LengthDelimited::new(MAX_FRAME);
    assert_eq!(frames.decode(&proto), Ok(Some((msg.clone(), proto_len))));
    group.bench_function(BenchmarkId::new("decode", "protobuf"), |b| {
        b.iter(|| frames.decode::<ChatMessage>(black_box(&proto)))
    });
    group.finish();
}

/// One member's socket and what was read from it but not yet decoded.
struct Member {
    stream: TcpStream,
    encoding: Encoding,
    buf: Vec<u8>,
}

impl Member {
    /// Connects and answers the prompt: a member of the lobby, welcomed.
    fn join(addr: SocketAddr, encoding: Encoding, name: &str) -> Member {
        let stream = TcpStream::connect(addr).expect("connect");
        // Pipelined small writes must not wait for ACKs (Nagle).
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(STALL)).unwrap();
        let mut member = Member {
            stream,
            encoding,
            buf: Vec::new(),
        };
        if encoding == Encoding::Json {
            // A bare prompt without a newline: not a JSON line.
            let mut prompt = [0; 21];
            member.stream.read_exact(&mut prompt).expect("prompt");
            assert_eq!(&prompt, b"Enter your username: ");
            writeln!(member.stream, "{name}").unwrap();
        } else {
            assert_eq!(member.next().1, "Enter your username: ");
            member.stream.write_all(&wire(encoding, name)).unwrap();
        }
        let (from, welcome) = member.next();
        assert!(from == "System" && welcome.starts_with(&format!("Welcome, {name}!")));
        member
    }

    /// The next message, blocking: `(from, content)`.
    fn next(&mut self) -> (String, String) {
        loop {
            if let Some((from, content, used)) = self.decode_at(0) {
                self.buf.drain(..used);
                return (from, content);
            }
            let mut chunk = [0; 4096];
            let n = self.stream.read(&mut chunk).expect("read (stalled?)");
            assert!(n > 0, "the server closed a member");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Decodes the message at `buf[at..]`, if complete: `(from, content, used)`.
    fn decode_at(&self, at: usize) -> Option<(String, String, usize)> {
        let data = &self.buf[at..];
        match self.encoding {
            Encoding::Json => {
                let codec = NdjsonCodec::<ChatLine>::new(MAX_FRAME);
                let (line, used) = codec.decode(data).expect("bad JSON line")?;
                Some((line.from, line.content, used))
            }
            Encoding::Protobuf => {
                let codec = LengthDelimited::new(MAX_FRAME);
                let (msg, used) = codec.decode::<ChatMessage>(data).expect("bad frame")?;
                Some((msg.from, msg.content, used))
            }
        }
    }

    /// Reads all that is there (non-blocking) and checks every complete
    /// message: from the sender, numbered `expect`, `expect + 1`, ...
    fn receive(&mut self, expect: &mut u64, chunk: &mut [u8]) {
        loop {
            match self.stream.read(chunk) {
                Ok(0) => panic!("the server closed a receiver"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        let mut at = 0;
        while let Some((from, content, used)) = self.decode_at(at) {
            let seq = content.get(..10).and_then(|n| n.parse::<u64>().ok());
            let ok = from == SENDER && content.len() == CONTENT_LEN && seq == Some(*expect);
            assert!(ok, "wanted {expect} from {SENDER}, got {from}: {content:?}");
            *expect += 1;
            at += used;
        }
        self.buf.drain(..at);
    }
}

/// What a client sends to say `content`: a `{"content"}` line (JSON), a
/// `ChatMessage` frame (protobuf).
fn wire(encoding: Encoding, content: &str) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        // No escaping needed: what is sent here is letters, digits, spaces.
        Encoding::Json => writeln!(out, "{{\"content\":\"{content}\"}}").unwrap(),
        Encoding::Protobuf => {
            let msg = ChatMessage {
                content: content.into(),
                ..ChatMessage::default()
            };
            LengthDelimited::encode(&msg, &mut out).unwrap();
        }
    }
    out
}

/// A running chat server with one full room: the sender and 99 receivers.
struct Room {
    handle: sockloop::Handle,
    server: JoinHandle<Result<(), sockloop::Error>>,
    sender: Member,
    receivers: Vec<Member>,
    /// Per receiver, the number of the next message it should get.
    expect: Vec<u64>,
    next_seq: u64,
    poll: Poll,
}

impl Room {
    fn open(encoding: Encoding) -> Room {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let encodings = [Encoding::Json, Encoding::Protobuf];
        let server = Server::builder()
            .config(ServerConfig {
                sources: sockloop::limit::IpLimits::unlimited(),
                shards: 1,
                ..ServerConfig::default()
            })
            .tcp_group(&[any, any], Chat::maker(ChatConfig::default(), &encodings))
            .build()
            .expect("chat server builds");
        let addr = server.tcp_addrs()[encodings.iter().position(|&e| e == encoding).unwrap()];
        let handle = server.handle();
        let server = thread::spawn(move || server.run());

        // One at a time, so each member's welcome precedes later joins.
        let names: Vec<String> = (0..MEMBERS).map(|i| format!("member{i:02}")).collect();
        let mut members: Vec<Member> = names
            .iter()
            .map(|name| Member::join(addr, encoding, name))
            .collect();
        // Member i was told of every later join, in order: read those
        // notices now so the measurement sees only the messages it sends.
        for (i, member) in members.iter_mut().enumerate() {
            for name in &names[i + 1..] {
                let notice = member.next();
                assert_eq!(notice, ("System".into(), format!("{name} joined lobby")));
            }
        }

        let poll = Poll::new().unwrap();
        let receivers = members.split_off(1);
        for (i, member) in receivers.iter().enumerate() {
            member.stream.set_nonblocking(true).unwrap();
            let fd = member.stream.as_raw_fd();
            poll.registry()
                .register(&mut SourceFd(&fd), Token(i), Interest::READABLE)
                .unwrap();
        }
        Room {
            handle,
            server,
            sender: members.pop().unwrap(),
            expect: vec![0; receivers.len()],
            receivers,
            next_seq: 0,
            poll,
        }
    }

    /// Sends `iters` messages and returns how long until all 99 receivers
    /// had each of them.
    fn run(&mut self, iters: u64) -> Duration {
        let end = self.next_seq + iters;
        let (mut chunk, mut burst) = (vec![0; 64 * 1024], Vec::new());
        let mut events = Events::with_capacity(MEMBERS);
        let start = Instant::now();
        loop {
            let slowest = self.expect.iter().copied().min().unwrap();
            if slowest == end {
                return start.elapsed();
            }
            // Top the window up, in one write. In the steady state that is
            // one message each time the slowest receiver moves on.
            burst.clear();
            while self.next_seq < end && self.next_seq - slowest < WINDOW {
                burst.extend(wire(self.sender.encoding, &content(self.next_seq)));
                self.next_seq += 1;
            }
            self.sender.stream.write_all(&burst).expect("send");
            match self.poll.poll(&mut events, Some(STALL)) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => other.unwrap(),
            }
            assert!(!events.is_empty(), "stalled at {slowest} of {end}");
            for event in events.iter() {
                let i = event.token().0;
                self.receivers[i].receive(&mut self.expect[i], &mut chunk);
            }
        }
    }

    /// Checks that nobody got more than was sent (the sender gets nothing:
    /// its own messages are not echoed), then stops the server.
    fn close(self) {
        self.sender.stream.set_nonblocking(true).unwrap();
        for member in self.receivers.iter().chain([&self.sender]) {
            let extra = (&member.stream).read(&mut [0; 4096]);
            let quiet = matches!(&extra, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
            assert!(quiet, "a member had unexpected input: {extra:?}");
        }
        assert_eq!(self.handle.stats().conns_open, MEMBERS as u64);
        drop((self.sender, self.receivers, self.poll));
        self.handle.stop();
        self.server.join().unwrap().unwrap();
    }
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(RECEIVERS));
    // ~0.5 ms an iteration: 20 samples of 5 s hold thousands of messages.
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    for (name, encoding) in ENCODINGS {
        // Opened on first use, so a filter skipping this bench starts no server.
        let mut room = None;
        group.bench_function(BenchmarkId::new("100_members", name), |b| {
            let room = room.get_or_insert_with(|| Room::open(encoding));
            b.iter_custom(|iters| room.run(iters))
        });
        if let Some(room) = room {
            room.close();
        }
    }
    group.finish();
}

criterion_group! {
    name = chat;
    // Four codec benches at ~4 s and two fan-outs at ~7 s: about half a minute.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = codec, fanout
}
criterion_main!(chat);
