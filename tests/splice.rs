//! Bulk echo in the kernel (`splice`, `src/shard/conn/splice.rs`): byte
//! exact, counted, off when asked, never for small messages, and a shard
//! that cannot splice echoes by copying.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::process::Served;
use common::{connect, wait_until, Rng, Running};
use sockloop::{ServerConfig, Stats};

/// Writes `data` from a thread while reading its echo `chunk` bytes at a
/// time, pausing `pause` after each read; returns what came back.
fn echo(stream: &TcpStream, data: &[u8], chunk: usize, pause: Duration) -> Vec<u8> {
    let mut writer = stream.try_clone().unwrap();
    let to_send = data.to_vec();
    let write = thread::spawn(move || writer.write_all(&to_send));
    let mut got = Vec::with_capacity(data.len());
    let mut buf = vec![0; chunk];
    while got.len() < data.len() {
        let n = (&*stream).read(&mut buf).unwrap();
        assert!(n > 0, "EOF after {} of {} bytes", got.len(), data.len());
        got.extend_from_slice(&buf[..n]);
        if !pause.is_zero() {
            thread::sleep(pause);
        }
    }
    write.join().unwrap().unwrap();
    got
}

/// Every byte of a `len`-byte echo counted in and out.
fn assert_counted(stats: &Stats, len: usize) {
    assert_eq!(stats.tcp_bytes_in, len as u64);
    assert_eq!(stats.tcp_bytes_out, len as u64);
}

/// Closes `stream`; the server lets go of its connection and every
/// buffer, then shuts down.
fn closes_without_buffers(server: Running, stream: TcpStream) {
    drop(stream);
    wait_until("close", || server.handle.stats().conns_open == 0);
    assert_eq!(server.handle.stats().buffer_bytes, 0, "buffers kept");
    server.shutdown().unwrap();
}

fn one_shard(splice: bool) -> ServerConfig {
    ServerConfig {
        shards: 1,
        splice,
        ..ServerConfig::default()
    }
}

#[test]
fn a_bulk_echo_is_spliced_and_byte_exact() {
    let server = Running::echo(one_shard(true));
    let data = Rng::new(11).bytes(8 * 1024 * 1024);
    let stream = connect(server.tcp[0]);
    let got = echo(&stream, &data, 256 * 1024, Duration::ZERO);
    assert!(got == data, "the echo differs from what was sent");
    let stats = server.handle.stats();
    assert_counted(&stats, data.len());
    // The first large read is copied, and so is any step while output
    // waits in the write buffer (the share depends on timing); the rest
    // goes by splice.
    let spliced = stats.tcp_bytes_spliced;
    assert!(
        spliced > 0 && spliced < data.len() as u64,
        "spliced {spliced} of {}",
        data.len()
    );
    assert_eq!(stats.splice_failures, 0);
    closes_without_buffers(server, stream);
}

#[test]
fn urgent_data_does_not_stall_a_spliced_echo() {
    // A splice stops at TCP urgent data and says "would block" with bytes
    // still waiting; a `recv` reads on past the mark (the urgent byte
    // itself is out of band, not echoed). The echo must go on.
    let server = Running::echo(one_shard(true));
    let (before, after) = (Rng::new(15).bytes(1 << 20), Rng::new(16).bytes(1 << 20));
    let stream = connect(server.tcp[0]);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // Bulk, and idle with nothing pending: the next input is spliced.
    assert!(echo(&stream, &before, 256 * 1024, Duration::ZERO) == before);
    assert!(
        server.handle.stats().tcp_bytes_spliced > 0,
        "nothing spliced"
    );
    socket2::SockRef::from(&stream)
        .send_out_of_band(b"X")
        .unwrap();
    thread::sleep(Duration::from_millis(50));
    assert!(echo(&stream, &after, 256 * 1024, Duration::ZERO) == after);
    assert_eq!(server.handle.stats().tcp_bytes_out, 2 << 20);
    server.shutdown().unwrap();
}

#[test]
fn a_slow_reader_gets_every_byte_through_the_leftover_copy() {
    // Small kernel buffers on the server, and a client that reads 4 KiB
    // at a time with pauses: splices back out fall short, and the rest
    // is copied from the pipe into the write buffer.
    let mut config = one_shard(true);
    config.socket.send_buffer = Some(32 * 1024);
    let bound = config.max_conn_buffer_bytes() as u64;
    let server = Running::echo(config);
    let data = Rng::new(12).bytes(4 * 1024 * 1024);
    let stream = connect(server.tcp[0]);
    let got = echo(&stream, &data, 4096, Duration::from_micros(200));
    assert!(got == data, "the echo differs from what was sent");
    let stats = server.handle.stats();
    assert_counted(&stats, data.len());
    assert!(stats.tcp_bytes_spliced > 0, "nothing spliced");
    assert!(stats.backpressure_pauses > 0, "the reader never held it up");
    assert!(
        stats.buffer_bytes_peak <= bound,
        "peak buffer {} over the bound {bound}",
        stats.buffer_bytes_peak
    );
    closes_without_buffers(server, stream);
}

#[test]
fn with_splice_off_bulk_is_copied() {
    let server = Running::echo(one_shard(false));
    let data = Rng::new(13).bytes(2 * 1024 * 1024);
    let stream = connect(server.tcp[0]);
    let got = echo(&stream, &data, 256 * 1024, Duration::ZERO);
    assert!(got == data, "the echo differs from what was sent");
    let stats = server.handle.stats();
    assert_counted(&stats, data.len());
    assert_eq!(stats.tcp_bytes_spliced, 0);
    assert_eq!(stats.splice_failures, 0);
    server.shutdown().unwrap();
}

#[test]
fn small_messages_are_never_spliced() {
    let server = Running::echo(one_shard(true));
    let mut stream = connect(server.tcp[0]);
    let mut rng = Rng::new(14);
    for _ in 0..500 {
        let message = rng.bytes(64);
        stream.write_all(&message).unwrap();
        let mut got = [0; 64];
        stream.read_exact(&mut got).unwrap();
        assert_eq!(got[..], message[..]);
    }
    let stats = server.handle.stats();
    assert_eq!(stats.tcp_bytes_in, 500 * 64);
    assert_eq!(stats.tcp_bytes_spliced, 0);
    server.shutdown().unwrap();
}

/// The lowest descriptor number `pid` has free: the next it will open.
fn lowest_free_descriptor(pid: u32) -> usize {
    let open: Vec<usize> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|entry| {
            entry
                .unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    (0..).find(|n| !open.contains(n)).unwrap()
}

#[test]
fn a_shard_that_cannot_make_its_pipe_echoes_by_copying() {
    let Some(prlimit) = common::external::find_program("prlimit") else {
        eprintln!("skipping: prlimit not found");
        return;
    };
    let served = Served::start(&["--tcp", "127.0.0.1:0=echo", "--shards", "1"], 1);
    let pid = served.child.id();
    let addr = served.addr(0).parse().unwrap();
    // A small echo first: the shard is up, every descriptor it keeps open.
    let mut first = connect(addr);
    first.write_all(b"ping").unwrap();
    let mut pong = [0; 4];
    first.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"ping");
    drop(first);
    thread::sleep(Duration::from_millis(100)); // its descriptor freed
                                               // Room for the connection's descriptor and not one more: the pipe
                                               // (two) cannot be made. A new descriptor takes the lowest free
                                               // number, which must be below the cap.
    let cap = format!("--nofile={}", lowest_free_descriptor(pid) + 1);
    let status = std::process::Command::new(prlimit)
        .args(["--pid", &pid.to_string(), &cap])
        .status()
        .unwrap();
    assert!(status.success());

    for seed in [15, 16] {
        let data = Rng::new(seed).bytes(2 * 1024 * 1024);
        let stream = connect(addr);
        let got = echo(&stream, &data, 256 * 1024, Duration::ZERO);
        assert!(got == data, "the echo differs from what was sent");
        drop(stream);
        thread::sleep(Duration::from_millis(50)); // its descriptor freed
    }
    let output = served.stop();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("splice: making its pipe failed"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning, not {warnings:?}\n{stderr}");
    assert!(
        warnings[0].contains("this shard echoes by copying from now on"),
        "{}",
        warnings[0]
    );
}

#[test]
fn what_a_slow_reader_leaves_in_the_pipe_is_buffered_and_traced() {
    let served = Served::start(
        &[
            "--tcp",
            "127.0.0.1:0=echo",
            "--shards",
            "1",
            "--send-buffer",
            "32768",
            "--trace",
            "--trace-rate",
            "1000000",
        ],
        1,
    );
    let data = Rng::new(17).bytes(2 * 1024 * 1024);
    let stream = connect(served.addr(0).parse().unwrap());
    let got = echo(&stream, &data, 4096, Duration::from_micros(200));
    assert!(got == data, "the echo differs from what was sent");
    drop(stream);
    let output = served.stop();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // "write PEER NB (splice from the pipe), MB buffered", M > 0.
    let leftovers = stderr
        .lines()
        .filter_map(|line| line.split("(splice from the pipe), ").nth(1))
        .filter(|rest| !rest.starts_with("0B"))
        .count();
    assert!(leftovers > 0, "no splice left bytes to buffer");
}
