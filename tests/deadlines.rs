//! Per-connection deadlines, service timers and the drain deadline, over
//! real sockets. Deadlines must never fire early; "late" allows two timer
//! ticks plus `SLACK` for a loaded test machine.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{connect, wait_until, Running, IO_TIMEOUT};
use sockloop::service::{ConnContext, DatagramContext, TcpService, UdpService};
use sockloop::{services::Echo, Server, ServerConfig};

const SLACK: Duration = Duration::from_millis(1000);

fn only(idle: u64, frame: u64, write: u64) -> ServerConfig {
    let ms = |n| (n > 0).then(|| Duration::from_millis(n));
    ServerConfig {
        idle_timeout: ms(idle),
        frame_timeout: ms(frame),
        write_timeout: ms(write),
        // One shard, so the busy neighbour shares the idle one's loop.
        shards: 1,
        ..ServerConfig::default()
    }
}

/// Echoes complete lines; a partial line is an open frame.
struct Lines;

impl TcpService for Lines {
    fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
        let end = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        conn.send(&data[..end]);
        end
    }
}

fn lines_server(config: ServerConfig) -> Running {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = Server::builder()
        .config(config)
        .tcp(any, || Lines)
        .build()
        .unwrap();
    Running::start(server)
}

/// Reads until EOF or reset; returns when that happened.
fn wait_for_close(stream: &mut std::net::TcpStream) -> Instant {
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Instant::now(),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Instant::now(),
            Err(e) => panic!("waiting for the server to close: {e}"),
        }
    }
}

fn assert_on_time(elapsed: Duration, deadline: Duration, tick: Duration) {
    assert!(
        elapsed >= deadline,
        "closed early: {elapsed:?} < {deadline:?}"
    );
    assert!(
        elapsed <= deadline + 2 * tick + SLACK,
        "closed late: {elapsed:?} for a {deadline:?} deadline"
    );
}

/// A neighbour on the same shard that echoes until told to stop.
fn busy_neighbour(addr: SocketAddr, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut stream = connect(addr);
        let mut rounds = 0;
        while !stop.load(Ordering::Relaxed) {
            stream.write_all(b"still here\n").unwrap();
            let mut got = [0; 11];
            stream.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"still here\n");
            rounds += 1;
            thread::sleep(Duration::from_millis(20));
        }
        rounds
    })
}

#[test]
fn the_idle_timeout_closes_only_the_idle_connection() {
    let config = only(300, 0, 0);
    let tick = config.timer_tick;
    let server = lines_server(config);
    let stop = Arc::new(AtomicBool::new(false));
    let neighbour = busy_neighbour(server.tcp[0], Arc::clone(&stop));

    let mut idle = connect(server.tcp[0]);
    let opened = Instant::now();
    let closed = wait_for_close(&mut idle);
    assert_on_time(closed - opened, Duration::from_millis(300), tick);
    let stats = server.handle.stats();
    assert_eq!((stats.closed_idle_timeout, stats.conns_open), (1, 1));

    stop.store(true, Ordering::Relaxed);
    assert!(neighbour.join().unwrap() > 5, "the neighbour was starved");
    server.shutdown().unwrap();
}

#[test]
fn a_slowloris_line_is_closed_at_the_frame_deadline_though_never_idle() {
    // Idle 600 ms would never fire: a byte arrives every 200 ms.
    let config = only(600, 1000, 0);
    let tick = config.timer_tick;
    let server = lines_server(config);
    let stop = Arc::new(AtomicBool::new(false));
    let neighbour = busy_neighbour(server.tcp[0], Arc::clone(&stop));

    let mut slow = connect(server.tcp[0]);
    let first_byte = Instant::now();
    let trickle = {
        let mut slow = slow.try_clone().unwrap();
        thread::spawn(move || {
            // Stops when the server has closed the connection.
            while slow.write_all(b"a").is_ok() {
                thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let closed = wait_for_close(&mut slow);
    assert_on_time(closed - first_byte, Duration::from_millis(1000), tick);
    trickle.join().unwrap();

    stop.store(true, Ordering::Relaxed);
    neighbour.join().unwrap();
    let stats = server.handle.stats();
    assert_eq!(
        (stats.closed_frame_timeout, stats.closed_idle_timeout),
        (1, 0)
    );
    server.shutdown().unwrap();
}

#[test]
fn a_reader_that_stalls_is_closed_by_the_write_timeout_and_its_buffers_freed() {
    let mut config = only(0, 0, 500);
    config.socket.send_buffer = Some(16 * 1024);
    config.socket.recv_buffer = Some(16 * 1024);
    let server = Running::echo(config);

    let stalled = connect(server.tcp[0]);
    let mut writer = stalled.try_clone().unwrap();
    // Never reads: the echo backs up until the server stops making progress.
    let write = thread::spawn(move || {
        let chunk = [7u8; 64 * 1024];
        while writer.write_all(&chunk).is_ok() {}
    });
    let handle = server.handle.clone();
    wait_until("the write timeout", || {
        handle.stats().closed_write_timeout == 1
    });
    write.join().unwrap();
    // The counters are separate relaxed atomics: the close can be counted a
    // moment before the buffers' bytes are given back (131,072 seen).
    wait_until("the connection and its buffers freed", || {
        let stats = handle.stats();
        (stats.conns_open, stats.buffer_bytes) == (0, 0)
    });
    drop(stalled);
    server.shutdown().unwrap();
}

/// Arms two timers per connection, cancels one; replies when one fires.
struct Alarm;

impl TcpService for Alarm {
    fn on_open(&mut self, conn: &mut ConnContext<'_>) {
        let cancelled = conn.arm_timer(Duration::from_millis(50), 1);
        conn.arm_timer(Duration::from_millis(100), 2);
        assert!(conn.cancel_timer(cancelled));
        assert!(!conn.cancel_timer(cancelled), "cancelled twice");
    }

    fn on_data(&mut self, _conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
        data.len()
    }

    fn on_timer(&mut self, conn: &mut ConnContext<'_>, key: u64) {
        conn.send(format!("timer {key}\n").as_bytes());
        conn.close();
    }
}

/// Answers each datagram 100 ms later, from a timer.
#[derive(Default)]
struct Delayed {
    pending: Vec<SocketAddr>,
}

impl UdpService for Delayed {
    fn on_datagram(&mut self, out: &mut DatagramContext<'_>, from: SocketAddr, _data: &[u8]) {
        out.arm_timer(Duration::from_millis(100), self.pending.len() as u64);
        self.pending.push(from);
    }

    fn on_timer(&mut self, out: &mut DatagramContext<'_>, key: u64) {
        out.send_to(
            self.pending[key as usize],
            format!("later {key}").as_bytes(),
        );
    }
}

#[test]
fn service_timers_fire_once_not_early_and_cancelled_ones_never() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = Server::builder()
        .tcp(any, || Alarm)
        .udp(any, Delayed::default)
        .build()
        .unwrap();
    let server = Running::start(server);

    let mut stream = connect(server.tcp[0]);
    let opened = Instant::now();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "timer 2\n");
    assert!(
        opened.elapsed() >= Duration::from_millis(100),
        "fired early"
    );

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let sent = Instant::now();
    socket.send_to(b"x", server.udp[0]).unwrap();
    let mut buf = [0; 32];
    let (n, _) = socket.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"later 0");
    assert!(sent.elapsed() >= Duration::from_millis(100), "fired early");
    server.shutdown().unwrap();
}

#[test]
fn shutdown_closes_a_connection_that_never_finishes_at_the_drain_deadline() {
    let config = ServerConfig {
        drain_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = Server::builder()
        .config(config)
        .tcp(any, || Echo)
        .build()
        .unwrap();
    let server = Running::start(server);
    // Reads its echo but never closes, so draining cannot finish by itself.
    let mut lingering = connect(server.tcp[0]);
    lingering.write_all(b"hi").unwrap();
    let mut got = [0; 2];
    lingering.read_exact(&mut got).unwrap();

    let handle = server.handle.clone();
    let asked = Instant::now();
    server.shutdown().unwrap();
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "drained early: {took:?}"
    );
    assert!(
        took <= Duration::from_millis(300) + SLACK,
        "drained late: {took:?}"
    );
    assert_eq!(handle.stats().closed_shutdown, 1);
}

/// Answers the first bytes with "bye" and closes.
struct Bye;

impl TcpService for Bye {
    fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
        conn.send(b"bye\n");
        conn.close();
        data.len()
    }
}

fn bye_server(close_linger: Option<Duration>) -> Running {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = ServerConfig {
        close_linger,
        ..only(0, 0, 0)
    };
    let server = Server::builder()
        .config(config)
        .tcp(any, || Bye)
        .build()
        .unwrap();
    Running::start(server)
}

#[test]
fn a_closing_connection_reads_on_so_a_peer_still_sending_gets_the_reply() {
    const SENT: usize = 64 << 20;
    let server = bye_server(Some(Duration::from_secs(5)));
    let mut client = connect(server.tcp[0]);
    let writer = {
        let mut client = client.try_clone().unwrap();
        thread::spawn(move || {
            let chunk = vec![b'x'; 64 << 10];
            for _ in 0..SENT / chunk.len() {
                client.write_all(&chunk)?;
            }
            client.shutdown(std::net::Shutdown::Write)
        })
    };
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"bye\n");
    // Closing with input unread would have reset the connection under the
    // writer (and could have destroyed the reply).
    writer
        .join()
        .unwrap()
        .expect("the server read on until our FIN");
    let handle = server.handle.clone();
    wait_until("the close", || handle.stats().closed_service == 1);
    assert_eq!(handle.stats().tcp_bytes_in, SENT as u64);
}

#[test]
fn the_linger_ends_for_a_peer_that_never_closes() {
    let linger = Duration::from_millis(300);
    let server = bye_server(Some(linger));
    let mut client = connect(server.tcp[0]);
    client.write_all(b"x").unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap(); // our FIN's arrival
    let fin = Instant::now();
    assert_eq!(got, b"bye\n");
    let handle = server.handle.clone();
    wait_until("the linger's end", || handle.stats().closed_service == 1);
    let waited = fin.elapsed();
    assert!(
        waited + Duration::from_millis(5) >= linger,
        "early: {waited:?}"
    );
    assert!(waited < linger + SLACK, "late: {waited:?}");
    drop(client);
}
