//! `client::Pool` against the echo server (and a hand-driven listener):
//! reuse, idle expiry, the checkout health check, exhaustion and
//! concurrency.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{wait_until, Running, IO_TIMEOUT};
use sockloop::client::{Pool, PoolConfig, PoolError, Pooled};
use sockloop::ServerConfig;

/// A checkout with the tests' IO timeouts set.
fn checkout(pool: &Pool) -> Pooled {
    let conn = pool.get().expect("checkout");
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    conn.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    conn
}

/// Sends `message` and asserts it comes back.
fn echo(conn: &mut Pooled, message: &[u8]) {
    conn.write_all(message).unwrap();
    let mut reply = vec![0; message.len()];
    conn.read_exact(&mut reply).unwrap();
    assert_eq!(reply, message);
}

fn port(conn: &Pooled) -> u16 {
    conn.local_addr().unwrap().port()
}

#[test]
fn reuses_a_returned_connection() {
    let server = Running::echo(ServerConfig::default());
    let pool = Pool::new(server.tcp[0], PoolConfig::default());

    let mut conn = checkout(&pool);
    echo(&mut conn, b"first");
    let first = port(&conn);
    assert_eq!(pool.stats().in_use, 1);
    drop(conn);
    assert_eq!((pool.stats().idle, pool.stats().in_use), (1, 0));

    let mut conn = checkout(&pool);
    echo(&mut conn, b"second");
    assert_eq!(port(&conn), first, "the idle connection was reused");
    drop(conn);

    let stats = pool.stats();
    assert_eq!((stats.created, stats.reused), (1, 1));
    assert_eq!((stats.idle, stats.in_use), (1, 0));
    drop(pool); // a graceful shutdown waits for open connections
    server.shutdown().unwrap();
}

#[test]
fn idle_connections_expire() {
    let server = Running::echo(ServerConfig::default());
    let idle_timeout = Duration::from_millis(100);
    let config = PoolConfig {
        idle_timeout,
        ..PoolConfig::default()
    };
    let pool = Pool::new(server.tcp[0], config);

    let mut conn = checkout(&pool);
    echo(&mut conn, b"before");
    let first = port(&conn);
    drop(conn);
    // Both ends of the old connection stay open (held idle, then closed by
    // the pool), so the new one cannot get the same local port.
    std::thread::sleep(idle_timeout + Duration::from_millis(50));

    let mut conn = checkout(&pool);
    echo(&mut conn, b"after");
    assert_ne!(
        port(&conn),
        first,
        "the expired connection was not handed out"
    );
    let stats = pool.stats();
    assert_eq!((stats.created, stats.reused), (2, 0));
    assert_eq!(stats.discarded_expired, 1);
    drop(conn);

    // `expire` closes them eagerly.
    std::thread::sleep(idle_timeout + Duration::from_millis(50));
    assert_eq!(pool.expire(), 1);
    let stats = pool.stats();
    assert_eq!(
        (stats.discarded_expired, stats.idle, stats.in_use),
        (2, 0, 0)
    );
    drop(pool);
    server.shutdown().unwrap();
}

#[test]
fn a_connection_the_server_closed_is_never_handed_out() {
    let server = Running::echo(ServerConfig {
        idle_timeout: Some(Duration::from_millis(100)),
        ..ServerConfig::default()
    });
    let pool = Pool::new(server.tcp[0], PoolConfig::default());

    let mut conn = checkout(&pool);
    echo(&mut conn, b"hello");
    let first = port(&conn);
    drop(conn);
    wait_until("the server to close the idle connection", || {
        server.handle.stats().closed_idle_timeout == 1
    });

    let mut conn = checkout(&pool);
    assert_ne!(port(&conn), first);
    echo(&mut conn, b"fresh");
    let stats = pool.stats();
    assert_eq!(stats.discarded_closed, 1);
    assert_eq!((stats.created, stats.reused), (2, 0));
    drop(conn);
    drop(pool);
    server.shutdown().unwrap();
}

/// A listener whose accepted connections the test drives by hand.
fn manual_listener() -> (SocketAddr, mpsc::Receiver<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if accepted.send(stream.unwrap()).is_err() {
                return; // the test is over
            }
        }
    });
    (addr, rx)
}

#[test]
fn the_health_check_drops_closed_and_chatty_connections() {
    let (addr, accepted) = manual_listener();
    let pool = Pool::new(addr, PoolConfig::default());
    let next = || accepted.recv_timeout(IO_TIMEOUT).expect("accept");

    // Closed by the peer.
    let conn = checkout(&pool);
    let first = port(&conn);
    drop(next());
    wait_readable(&conn);
    drop(conn);
    // Unexpected data waiting: a stale reply would desynchronise the next
    // request, so that one goes too.
    let conn = checkout(&pool);
    let second = port(&conn);
    assert_ne!(second, first);
    let mut server_side = next();
    server_side.write_all(b"stale").unwrap();
    wait_readable(&conn);
    drop(conn);

    let mut conn = checkout(&pool);
    assert!(![first, second].contains(&port(&conn)));
    let mut server_side = next();
    conn.write_all(b"ping").unwrap();
    let mut got = [0; 4];
    server_side.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    server_side.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    assert!(
        !conn.is_nonblocking_for_test(),
        "the connection is back in blocking mode"
    );
    drop(conn);

    let stats = pool.stats();
    assert_eq!(stats.discarded_closed, 2);
    assert_eq!((stats.created, stats.reused, stats.idle), (3, 0, 1));
}

/// Waits until `conn` has data or end of stream to read.
fn wait_readable(conn: &Pooled) {
    wait_until("the client side to become readable", || {
        conn.set_nonblocking(true).unwrap();
        let readable = conn.peek(&mut [0]).is_ok();
        conn.set_nonblocking(false).unwrap();
        readable
    });
}

/// Whether a read would not block: a blocking socket with a short read
/// timeout times out, a non-blocking one returns `WouldBlock` at once.
trait BlockingProbe {
    fn is_nonblocking_for_test(&self) -> bool;
}

impl BlockingProbe for Pooled {
    fn is_nonblocking_for_test(&self) -> bool {
        let before = self.read_timeout().unwrap();
        self.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let start = Instant::now();
        let _ = self.peek(&mut [0]);
        let quick = start.elapsed() < Duration::from_millis(40);
        self.set_read_timeout(before).unwrap();
        quick
    }
}

#[test]
fn exhaustion_waits_then_times_out() {
    let server = Running::echo(ServerConfig::default());
    let checkout_timeout = Duration::from_millis(200);
    let config = PoolConfig {
        max_total: 2,
        checkout_timeout,
        ..PoolConfig::default()
    };
    let pool = Pool::new(server.tcp[0], config);
    let mut held = [checkout(&pool), checkout(&pool)];

    let start = Instant::now();
    let error = pool.get().expect_err("the pool is exhausted");
    assert!(start.elapsed() >= checkout_timeout, "gave up early");
    match &error {
        PoolError::Timeout { waited, max_total } => {
            assert!(*waited >= checkout_timeout);
            assert_eq!(*max_total, 2);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.starts_with("no connection free within ") && message.ends_with(": all 2 in use"),
        "{message}"
    );
    let stats = pool.stats();
    assert_eq!((stats.waited, stats.timeouts, stats.in_use), (1, 1, 2));

    // A checkout waiting when a connection comes back gets it.
    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            let mut conn = pool.get_timeout(IO_TIMEOUT).expect("a returned connection");
            conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            echo(&mut conn, b"waited");
            port(&conn)
        })
    };
    wait_until("the second checkout to wait", || pool.stats().waited == 2);
    echo(&mut held[0], b"held");
    let returned = port(&held[0]);
    let [first, second] = held;
    drop(first);
    assert_eq!(waiter.join().unwrap(), returned);
    drop(second);

    let stats = pool.stats();
    assert_eq!((stats.created, stats.reused, stats.timeouts), (2, 1, 1));
    assert_eq!((stats.idle, stats.in_use), (2, 0));
    drop(pool);
    server.shutdown().unwrap();
}

#[test]
fn connect_errors_give_the_slot_back() {
    // A port nothing listens on: bind one, note it, close it.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = PoolConfig {
        max_total: 1,
        ..PoolConfig::default()
    };
    let pool = Pool::new(addr, config);
    for _ in 0..2 {
        match pool.get() {
            Err(PoolError::Connect(_)) => {}
            other => panic!("expected a connect error, got {other:?}"),
        }
    }
    let stats = pool.stats();
    assert_eq!(
        (stats.connect_errors, stats.timeouts, stats.in_use),
        (2, 0, 0)
    );
}

#[test]
fn sixteen_threads_share_four_connections() {
    const THREADS: usize = 16;
    const CHECKOUTS: usize = 200;
    let server = Running::echo(ServerConfig::default());
    let config = PoolConfig {
        max_total: 4,
        checkout_timeout: IO_TIMEOUT,
        ..PoolConfig::default()
    };
    let pool = Pool::new(server.tcp[0], config);

    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                for i in 0..CHECKOUTS {
                    let mut conn = checkout(&pool);
                    echo(
                        &mut conn,
                        format!("thread {thread} checkout {i};").as_bytes(),
                    );
                    let stats = pool.stats();
                    assert!(stats.idle + stats.in_use <= 4, "{stats:?}");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a client thread panicked");
    }

    let stats = pool.stats();
    assert!(stats.created <= 4, "{stats:?}");
    assert_eq!(stats.in_use, 0);
    assert_eq!(
        stats.created + stats.reused,
        (THREADS * CHECKOUTS) as u64,
        "{stats:?}"
    );
    assert_eq!((stats.timeouts, stats.connect_errors), (0, 0));
    drop(pool);
    server.shutdown().unwrap();
}

#[test]
fn returns_past_max_idle_are_closed_and_discard_frees_the_slot() {
    let server = Running::echo(ServerConfig::default());
    let config = PoolConfig {
        max_total: 3,
        max_idle: 1,
        ..PoolConfig::default()
    };
    let pool = Pool::new(server.tcp[0], config);
    let conns = [checkout(&pool), checkout(&pool), checkout(&pool)];
    let [a, b, c] = conns;
    drop(a);
    drop(b);
    assert_eq!(pool.stats().discarded_overflow, 1);
    c.discard();
    let stats = pool.stats();
    assert_eq!(
        (stats.discarded_by_caller, stats.idle, stats.in_use),
        (1, 1, 0)
    );
    drop(pool);
    server.shutdown().unwrap();
}
