//! Peers that do not read what is pushed to them: closed with a reset (the
//! kernel frees their unsent bytes at once), and counted against the
//! output limits even while the kernel's send queue would take more.

mod common;

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};

use common::room::push_past_a_slow_member;
use sockloop::ServerConfig;

/// A client whose receive buffer is small (asked before connecting, so
/// the window it advertises stays small): what it does not read stays on
/// the server's side, as with a peer across a network.
fn small_window_client(addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    socket.set_recv_buffer_size(8 * 1024).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Reads until the socket ends; returns the bytes and how it ended.
fn read_to_the_end(mut stream: TcpStream) -> (usize, io::Result<()>) {
    let mut total = 0;
    let mut buf = [0; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (total, Ok(())),
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (total, Err(e)),
        }
    }
}

#[test]
fn a_member_past_the_hard_limit_is_reset_and_the_others_lose_nothing() {
    let mut config = ServerConfig {
        shards: 1,
        output_hard_limit: 192 * 1024,
        output_soft_limit: 160 * 1024,
        output_soft_for: None,
        write_timeout: None,
        ..ServerConfig::default()
    };
    config.socket.send_buffer = Some(16 * 1024);
    let (slow, got, stats) = push_past_a_slow_member(config, 4096, small_window_client, true);
    assert_eq!((stats.closed_output_hard, stats.closed_output_soft), (1, 0));
    assert_eq!(got % 32, 0, "the fast member lost lines");
    // What reached the slow member's window is still readable; then the
    // reset, not an EOF.
    let (read, end) = read_to_the_end(slow);
    assert!(read >= b"welcome\n".len(), "read {read} bytes");
    let kind = end.expect_err("a FIN instead of a reset").kind();
    assert_eq!(kind, io::ErrorKind::ConnectionReset);
}

#[test]
fn output_the_kernel_would_queue_counts_against_the_limits() {
    // The kernel's send buffer left to autotune (no --send-buffer), as on
    // a default server: without a cap on its unsent bytes, the kernel
    // takes megabytes from a member that does not read and the server's
    // own buffer never reaches the limit.
    let config = ServerConfig {
        shards: 1,
        output_hard_limit: 256 * 1024,
        output_soft_for: None,
        write_timeout: None,
        ..ServerConfig::default()
    };
    assert_eq!(config.socket.notsent_lowat, Some(128 * 1024));
    assert_eq!(config.socket.send_buffer, None);
    // 1 MiB: less than an autotuned kernel queue takes (megabytes), more
    // than the limit plus the capped unsent bytes plus the slow member's
    // small window.
    let (slow, _, stats) = push_past_a_slow_member(config, 1024, small_window_client, true);
    assert_eq!((stats.closed_output_hard, stats.closed_output_soft), (1, 0));
    let (_, end) = read_to_the_end(slow);
    assert_eq!(end.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
}
