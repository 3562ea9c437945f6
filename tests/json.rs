//! The JSON message service over real sockets.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;

use common::{connect, Running};
use sockloop::limit::IpLimits;
use sockloop::service::{CloseReason, ConnContext, ConnId, ShardContext, TcpService};
use sockloop::{services::JsonEcho, Server, ServerConfig};

/// Bans are off: these tests are about the replies (tests/limits.rs has
/// the strikes and bans).
fn json_server(max_line: usize) -> Running {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = ServerConfig {
        // The read buffer holds a whole line (the frame limit).
        max_read_buffer: max_line.max(ServerConfig::default().max_read_buffer),
        sources: IpLimits {
            ban_after: 0,
            ..IpLimits::default()
        },
        ..ServerConfig::default()
    };
    let server = Server::builder()
        .config(config)
        .tcp(any, move || JsonEcho::new(max_line))
        .build()
        .unwrap();
    Running::start(server)
}

#[test]
fn messages_come_back_re_encoded_and_bad_lines_get_an_error_line() {
    let server = json_server(1024);
    let mut client = connect(server.tcp[0]);
    let mut bystander = connect(server.tcp[0]);
    let mut replies = BufReader::new(client.try_clone().unwrap()).lines();

    // One message split across writes, then bad input, then a good one.
    client.write_all(b"{\"b\": [1, 2],").unwrap();
    client.write_all(b" \"a\": \"x\"}\n").unwrap();
    client
        .write_all(b"{\"unterminated\": \n42\n\n{\"ok\":true}\r\n")
        .unwrap();
    let expected = [
        r#"{"a":"x","b":[1,2]}"#,
        r#"{"error":"invalid message","detail":"incomplete JSON: the line ends at column 17 before the value is complete"}"#,
        r#"{"error":"invalid message","detail":"expected a JSON object, got a number at column 1"}"#,
        r#"{"ok":true}"#,
    ];
    for want in expected {
        assert_eq!(replies.next().unwrap().unwrap(), want);
    }

    // The bystander is served as if nothing happened.
    bystander.write_all(b"{\"still\":\"fine\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(&mut bystander).read_line(&mut line).unwrap();
    assert_eq!(line, "{\"still\":\"fine\"}\n");

    drop((client, bystander, replies));
    server.shutdown().unwrap();
}

#[test]
fn a_line_over_the_limit_gets_an_error_then_the_connection_closes() {
    let server = json_server(64);
    let mut client = connect(server.tcp[0]);
    client.write_all(&[b'x'; 100]).unwrap();
    let mut rest = String::new();
    client.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "{\"error\":\"line too long\",\"max\":64}\n");
    server.shutdown().unwrap();
}

#[test]
fn a_flood_of_bad_lines_gets_every_error_line() {
    // 20,000 one-byte bad lines answered with ~90-byte error lines: output
    // far larger than input, handed over in slices, all of it delivered.
    let server = json_server(1024);
    let client = connect(server.tcp[0]);
    let mut writer = client.try_clone().unwrap();
    let flood = std::thread::spawn(move || writer.write_all(&b"x\n".repeat(20_000)).unwrap());
    let mut replies = BufReader::new(client).lines();
    for _ in 0..20_000 {
        let line = replies.next().unwrap().unwrap();
        assert!(line.starts_with(r#"{"error":"invalid message""#), "{line}");
    }
    flood.join().unwrap();
    drop(replies);
    server.shutdown().unwrap();
}

/// Each kind of bad line gets an error line whose `detail` says what is
/// wrong in JSON's terms and at which column (the 1-based byte position in
/// the line), and the next good line is served as usual.
#[test]
fn error_details_say_plainly_what_is_wrong_and_where() {
    let server = json_server(1024);
    let mut client = connect(server.tcp[0]);
    let mut replies = BufReader::new(client.try_clone().unwrap()).lines();
    let mut deep = b"{\"a\":".to_vec();
    deep.extend_from_slice(&[b'['; 200]);
    let cases: [(&[u8], &str); 11] = [
        (
            br#"{"a":"\ud800"}"#,
            r#"lone surrogate escape \\ud800 at column 7: a high surrogate must be followed by a low one (\\udc00-\\udfff)"#,
        ),
        (
            br#"{"a":"ok","b":"\udc00"}"#,
            r#"lone surrogate escape \\udc00 at column 16: a low surrogate must follow a high one (\\ud800-\\udbff)"#,
        ),
        (
            b"{\"a\":\"caf\xe9\"}",
            "invalid UTF-8 at column 10 (byte 0xe9): messages must be UTF-8",
        ),
        (
            b"{\"a\":\"x\x07y\"}",
            r#"control character U+0007 in a string at column 8: write it escaped, as \\u0007"#,
        ),
        (
            b"{\"a\":\"x\ty\"}",
            r#"control character U+0009 in a string at column 8: write it escaped, as \\t"#,
        ),
        (
            br#"{"a":1} trailing"#,
            "data after the JSON value at column 9: one object per line",
        ),
        (
            br#"{"a":1}{"b":2}"#,
            "data after the JSON value at column 8: one object per line",
        ),
        (
            b"  [1,2]",
            "expected a JSON object, got an array at column 3",
        ),
        (
            br#""just a string""#,
            "expected a JSON object, got a string at column 1",
        ),
        (b"null", "expected a JSON object, got null at column 1"),
        (&deep, "nested more than 127 levels deep at column 132"),
    ];
    for (line, detail) in cases {
        client.write_all(line).unwrap();
        client.write_all(b"\n").unwrap();
        let want = format!(r#"{{"error":"invalid message","detail":"{detail}"}}"#);
        assert_eq!(replies.next().unwrap().unwrap(), want);
    }
    client.write_all(b"{\"still\":\"served\"}\n").unwrap();
    assert_eq!(replies.next().unwrap().unwrap(), r#"{"still":"served"}"#);
    drop((client, replies));
    server.shutdown().unwrap();
}

/// A line that arrives over many reads (here 400 KB in 4 KiB writes, under
/// a 512 KiB limit) is decoded once complete, exactly; the decoder remembers
/// how far it scanned, and the next line starts afresh.
#[test]
fn a_long_line_in_many_writes_comes_back_whole() {
    let server = json_server(512 * 1024);
    let client = connect(server.tcp[0]);
    let mut line = b"{\"z\":1,\"blob\":\"".to_vec();
    line.resize(400_000, b'x');
    line.extend_from_slice(b"\"}\n{\"next\":2}\n");
    let mut writer = client.try_clone().unwrap();
    let sent = line.clone();
    let sender = std::thread::spawn(move || {
        for piece in sent.chunks(4096) {
            writer.write_all(piece).unwrap();
        }
    });
    let mut replies = BufReader::new(client).lines();
    let first = replies.next().unwrap().unwrap();
    let blob = "x".repeat(400_000 - r#"{"z":1,"blob":""#.len());
    let want = format!(r#"{{"blob":"{blob}","z":1}}"#);
    assert!(
        first == want,
        "a reply of {} bytes, not {}",
        first.len(),
        want.len()
    );
    assert_eq!(replies.next().unwrap().unwrap(), r#"{"next":2}"#);
    sender.join().unwrap();
    drop(replies);
    server.shutdown().unwrap();
}

/// A call `Logged` saw for one connection.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Call {
    /// `on_data`: bytes offered, bytes consumed.
    Data(usize, usize),
    /// `on_timer` or `on_drained`: where a long reply goes on.
    Resumed,
}

/// `JsonEcho`, logging each call: (connection, call, bytes waiting to be
/// written after it).
struct Logged {
    inner: JsonEcho,
    log: std::sync::Arc<std::sync::Mutex<Vec<(ConnId, Call, usize)>>>,
}

impl Logged {
    fn note(&self, conn: &ConnContext<'_>, call: Call) {
        let entry = (conn.id(), call, conn.write_buffered());
        self.log.lock().unwrap().push(entry);
    }
}

impl TcpService for Logged {
    fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
        let used = self.inner.on_data(conn, data);
        self.note(conn, Call::Data(data.len(), used));
        used
    }
    fn on_timer(&mut self, conn: &mut ConnContext<'_>, key: u64) {
        self.inner.on_timer(conn, key);
        self.note(conn, Call::Resumed);
    }
    fn on_drained(&mut self, conn: &mut ConnContext<'_>) {
        self.inner.on_drained(conn);
        self.note(conn, Call::Resumed);
    }
    fn on_close(&mut self, shard: &mut ShardContext<'_>, id: ConnId, reason: CloseReason) {
        self.inner.on_close(shard, id, reason);
    }
}

#[test]
fn a_huge_line_is_parsed_and_answered_in_slices_and_a_neighbour_is_served_in_between() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let max_line = 8 << 20;
    let mut config = ServerConfig {
        shards: 1, // the neighbour shares the huge line's loop
        max_read_buffer: max_line,
        output_hard_limit: 2 * max_line, // room for the huge reply
        ..ServerConfig::default()
    };
    // A small socket buffer, so the reply waits in the server, where its
    // pending output can be seen.
    config.socket.send_buffer = Some(64 * 1024);
    let soft_limit = config.output_soft_limit;
    let log = std::sync::Arc::default();
    let shared = std::sync::Arc::clone(&log);
    let server = Server::builder()
        .config(config)
        .tcp(any, move || Logged {
            inner: JsonEcho::new(max_line),
            log: std::sync::Arc::clone(&shared),
        })
        .build()
        .unwrap();
    let server = Running::start(server);

    // About 4 MB of small values, duplicate keys and escapes included.
    let mut line = br#"{"z":"\u00e9\"","a":[1,"#.to_vec();
    for i in 0..600_000u32 {
        line.extend_from_slice(format!("{i},").as_bytes());
    }
    line.extend_from_slice(br#"-1.5e3,{"k":null}],"z":[true]}"#);
    let want = serde_json::to_string(
        &serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&line).unwrap(),
    )
    .unwrap();
    line.push(b'\n');
    let huge_len = line.len();
    // A line behind it in the same write, answered after the huge reply.
    line.extend_from_slice(b"{\"after\":1}\n");

    let neighbour = connect(server.tcp[0]);
    let mut neighbour_replies = BufReader::new(neighbour.try_clone().unwrap()).lines();
    let mut neighbour_writer = neighbour;
    neighbour_writer.write_all(b"{\"n\":0}\n").unwrap();
    assert_eq!(neighbour_replies.next().unwrap().unwrap(), r#"{"n":0}"#);

    let huge = connect(server.tcp[0]);
    let mut writer = huge.try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(&line).unwrap());
    // The neighbour keeps asking until the huge reply is in.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pinger = {
        let done = std::sync::Arc::clone(&done);
        std::thread::spawn(move || {
            let mut n = 1;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                neighbour_writer
                    .write_all(format!("{{\"n\":{n}}}\n").as_bytes())
                    .unwrap();
                let reply = neighbour_replies.next().unwrap().unwrap();
                assert_eq!(reply, format!("{{\"n\":{n}}}"));
                n += 1;
            }
        })
    };
    // A slow reader at first: the reply must wait in the server, bounded.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut huge_replies = BufReader::new(huge);
    let mut reply = String::new();
    huge_replies.read_line(&mut reply).unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.join().unwrap();
    pinger.join().unwrap();
    assert!(reply.ends_with('\n'));
    assert!(reply.trim_end() == want, "a reply of {} bytes", reply.len());
    let mut after = String::new();
    huge_replies.read_line(&mut after).unwrap();
    assert_eq!(after, "{\"after\":1}\n");

    // In the server's own order: from the call that first held the whole
    // line (and consumed none of it) to the one that consumed it, the huge
    // connection took several calls, and the neighbour was answered in
    // between; then the reply took several more (timers and drain
    // notices), with the neighbour answered in between again.
    let log = log.lock().unwrap();
    let is_huge_data = |&&(_, call, _): &&(ConnId, Call, usize)| matches!(call, Call::Data(offered, _) if offered >= huge_len);
    let huge_id = log.iter().find(is_huge_data).unwrap().0;
    let first = log.iter().position(|e| is_huge_data(&e)).unwrap();
    let consumed = log
        .iter()
        .position(|&(id, call, _)| {
            id == huge_id && matches!(call, Call::Data(_, used) if used == huge_len)
        })
        .unwrap();
    let replied = log
        .iter()
        .rposition(|&(id, call, _)| id == huge_id && call == Call::Resumed)
        .unwrap();
    let huge_calls = |range: std::ops::RangeInclusive<usize>| {
        log[range].iter().filter(|(id, ..)| *id == huge_id).count()
    };
    let neighbour_served = |range: std::ops::Range<usize>| {
        log[range]
            .iter()
            .filter(|&&(id, call, _)| {
                id != huge_id && matches!(call, Call::Data(_, used) if used > 0)
            })
            .count()
    };
    let slice = 256 * 1024;
    let parse_steps = huge_calls(first..=consumed);
    assert!(parse_steps >= huge_len / slice, "{parse_steps} calls"); // a 256 KiB slice each
    assert!(
        neighbour_served(first..consumed) > 0,
        "the neighbour waited for the whole parse"
    );
    let reply_steps = huge_calls(consumed + 1..=replied);
    assert!(reply_steps >= want.len() / slice - 1, "{reply_steps} calls");
    assert!(
        neighbour_served(consumed..replied) > 0,
        "the neighbour waited for the whole reply"
    );
    // The next line was offered only once the reply was out.
    assert!(!log[consumed + 1..replied]
        .iter()
        .any(|&(id, call, _)| id == huge_id && matches!(call, Call::Data(..))));
    // Pending output never went past the soft limit by more than a token.
    let most = log[consumed..=replied]
        .iter()
        .filter(|(id, ..)| *id == huge_id)
        .map(|&(.., buffered)| buffered)
        .max()
        .unwrap();
    // How much waited depends on what the kernel's autotuned buffers took
    // (119,298 bytes seen on a loaded machine, over 128 KiB on a quiet one).
    assert!(most > 0, "the reply never waited");
    assert!(most <= soft_limit.max(slice) + 16, "{most} bytes pending");
    drop(log);
    server.shutdown().unwrap();
}

#[test]
fn a_long_bad_line_gets_the_same_error_text_as_a_short_one() {
    let server = json_server(512 * 1024);
    let client = connect(server.tcp[0]);
    let mut writer = client.try_clone().unwrap();
    let mut replies = BufReader::new(client).lines();
    let numbers = (0..40_000)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    // Each over 64 KiB, so parsed in slices: a syntax error near the end,
    // a lone surrogate, a number out of range, and an array, not an object.
    let lines = [
        format!(r#"{{"a":[{numbers},]}}"#),
        format!(r#"{{"a":[{numbers}],"s":"\ud800"}}"#),
        format!(r#"{{"a":[{numbers},1e999]}}"#),
        format!("[{numbers}]"),
    ];
    for line in &lines {
        assert!(line.len() > 64 * 1024);
        let error =
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(line.as_bytes())
                .unwrap_err();
        let want = serde_json::json!({
            "error": "invalid message",
            "detail": sockloop::codec::describe_json_error(line.as_bytes(), &error),
        });
        writer.write_all(line.as_bytes()).unwrap();
        writer.write_all(b"\n{\"after\":1}\n").unwrap();
        let reply: serde_json::Value =
            serde_json::from_str(&replies.next().unwrap().unwrap()).unwrap();
        assert_eq!(reply, want);
        assert_eq!(replies.next().unwrap().unwrap(), r#"{"after":1}"#);
    }
    drop(replies);
    server.shutdown().unwrap();
}
