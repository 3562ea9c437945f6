//! Listening and datagram sockets, tuned with `socket2` before they are
//! handed to mio.
//!
//! Every option is set between `socket()` and `bind()`, which is the only
//! window where `SO_REUSEPORT` and buffer sizes reliably take effect for a
//! listener and are inherited by the connections it accepts.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};

/// Socket options shared by listeners, accepted streams and UDP sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOptions {
    /// Listen backlog (`listen(2)`); the kernel caps it at `somaxconn`.
    pub backlog: u32,
    /// `SO_REUSEPORT`, so several shards can each bind the same port (on by
    /// default; used only with more than one shard). The price: a second
    /// server of the same user can bind the port too and silently share the
    /// traffic instead of failing. Off, shard 0 alone listens and hands
    /// connections to the others.
    pub reuse_port: bool,
    /// `TCP_NODELAY` on accepted streams: echo-style request/response
    /// traffic must not wait for Nagle's algorithm.
    pub nodelay: bool,
    /// `SO_RCVBUF` for every socket, or the kernel's default (for TCP,
    /// autotuned; for UDP, `udp_recv_buffer`).
    pub recv_buffer: Option<usize>,
    /// `SO_RCVBUF` for UDP sockets when `recv_buffer` is not set (4 MiB):
    /// the kernel's default (about 208 KiB) overflows under a burst, and a
    /// flood from one source then costs its neighbours datagrams before the
    /// per-source rate can act. The kernel caps it at `net.core.rmem_max`.
    pub udp_recv_buffer: Option<usize>,
    /// `SO_SNDBUF`, or the kernel's autotuned default.
    pub send_buffer: Option<usize>,
    /// TCP keepalive idle time on accepted streams, or off.
    pub keepalive: Option<Duration>,
    /// The most bytes an accepted stream's kernel send queue holds unsent
    /// (`TCP_NOTSENT_LOWAT`, Linux; 128 KiB; `None`: the kernel's, no
    /// cap). With the kernel left to autotune, a peer that stops reading
    /// parks megabytes in the kernel's queue, which the output limits do
    /// not see; capped, what the kernel will not take waits in the
    /// connection's write buffer, where they do. Bytes sent but not yet
    /// acknowledged are bounded by the peer's window, and their time by
    /// `user_timeout`.
    pub notsent_lowat: Option<usize>,
    /// How long data an accepted stream sent may stay unacknowledged
    /// before the kernel drops the connection (`TCP_USER_TIMEOUT`, Linux;
    /// 30 s, the write timeout's default; `None`: the kernel's
    /// retransmission limit, about 15 minutes). Also bounds a connection
    /// already closed whose last bytes the peer never acknowledges.
    pub user_timeout: Option<Duration>,
    /// The ports are shared with sibling processes (the workers of
    /// `sockloop serve --workers`), whose supervisor checked and holds them
    /// (see [`hold`]): every socket is bound with `SO_REUSEPORT` even with
    /// one shard, and no port is [`claim`]ed first (default off).
    pub shared_ports: bool,
}

impl Default for SocketOptions {
    fn default() -> SocketOptions {
        SocketOptions {
            backlog: 1024,
            reuse_port: true,
            nodelay: true,
            recv_buffer: None,
            udp_recv_buffer: Some(4 << 20),
            send_buffer: None,
            keepalive: None,
            notsent_lowat: Some(128 * 1024),
            user_timeout: Some(Duration::from_secs(30)),
            shared_ports: false,
        }
    }
}

/// Binds a non-blocking TCP listener on `addr` (IPv4 or IPv6).
///
/// ```
/// use sockloop::net::socket::{tcp_listener, SocketOptions};
///
/// let listener = tcp_listener("127.0.0.1:0".parse().unwrap(), &SocketOptions::default())?;
/// assert_ne!(listener.local_addr()?.port(), 0);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn tcp_listener(addr: SocketAddr, opts: &SocketOptions) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Lets a restarted server rebind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    prepare(&socket, addr, opts)?;
    // Set once on the listener: accepted streams inherit both, so an
    // accept costs no extra syscall for them.
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    if let Some(timeout) = opts.user_timeout {
        socket.set_tcp_user_timeout(Some(timeout))?;
    }
    if let Some(bytes) = opts.notsent_lowat {
        use std::os::fd::AsFd;
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        crate::net::sys::set_notsent_lowat(socket.as_fd(), bytes)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(opts.backlog).unwrap_or(i32::MAX))?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// Binds a non-blocking UDP socket on `addr` (IPv4 or IPv6).
///
/// ```
/// use sockloop::net::socket::{udp_socket, SocketOptions};
///
/// let socket = udp_socket("127.0.0.1:0".parse().unwrap(), &SocketOptions::default())?;
/// assert_ne!(socket.local_addr()?.port(), 0);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn udp_socket(addr: SocketAddr, opts: &SocketOptions) -> io::Result<mio::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    prepare(&socket, addr, opts)?;
    if let (None, Some(size)) = (opts.recv_buffer, opts.udp_recv_buffer) {
        socket.set_recv_buffer_size(size)?;
    }
    socket.bind(&addr.into())?;
    Ok(mio::net::UdpSocket::from_std(socket.into()))
}

/// Checks that no socket, of this process or another, holds `addr` (or an
/// address overlapping it) for `proto`, by binding it without
/// `SO_REUSEPORT` and letting go; returns the address with the port the
/// kernel picked where port 0 was asked.
///
/// A `SO_REUSEPORT` group admits any socket of the same user that sets
/// the option too, so binding the group directly would silently share a
/// port another server owns. The probe closes that door; the window left
/// is the moment between the probe and the group's first bind.
///
/// ```
/// use sockloop::net::socket::{claim, tcp_listener, Proto, SocketOptions};
///
/// let free = claim(Proto::Tcp, "127.0.0.1:0".parse().unwrap())?;
/// let held = tcp_listener(free, &SocketOptions::default())?;
/// assert!(claim(Proto::Tcp, free).is_err()); // in use, even with SO_REUSEPORT on `held`
/// # drop(held);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn claim(proto: Proto, addr: SocketAddr) -> io::Result<SocketAddr> {
    let (kind, protocol) = match proto {
        Proto::Tcp => (Type::STREAM, Protocol::TCP),
        Proto::Udp => (Type::DGRAM, Protocol::UDP),
    };
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
    if proto == Proto::Tcp {
        // As the listener will: TIME_WAIT leftovers are no owner.
        socket.set_reuse_address(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound to a non-IP address"))
}

/// Claims `addr` for `proto` (see [`claim`]; a TCP port 0 is left to the
/// kernel, whose pick for a `SO_REUSEPORT` socket avoids ports in use) and
/// keeps it: the socket returned is bound with `SO_REUSEPORT` (and, for
/// TCP, `SO_REUSEADDR`) but never listens, so worker processes can bind
/// the same address while a server that claims its ports first (as
/// sockloop does) cannot. A TCP socket that does not
/// listen is given no connections; a UDP one does receive datagrams, so a
/// UDP holder is let go once the workers have bound theirs.
///
/// ```
/// use sockloop::net::socket::{claim, hold, tcp_listener, Proto, SocketOptions};
///
/// let held = hold(Proto::Tcp, "127.0.0.1:0".parse().unwrap())?;
/// let addr = held.local_addr()?.as_socket().unwrap();
/// let opts = SocketOptions { shared_ports: true, ..SocketOptions::default() };
/// let worker = tcp_listener(addr, &opts)?; // a sibling binds it too
/// assert!(claim(Proto::Tcp, addr).is_err()); // nobody else can
/// # drop(worker);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn hold(proto: Proto, addr: SocketAddr) -> io::Result<Socket> {
    let addr = match (proto, addr.port()) {
        (Proto::Tcp, 0) => addr,
        _ => claim(proto, addr)?,
    };
    let kind = match proto {
        Proto::Tcp => Type::STREAM,
        Proto::Udp => Type::DGRAM,
    };
    let socket = Socket::new(Domain::for_address(addr), kind, None)?;
    if proto == Proto::Tcp {
        socket.set_reuse_address(true)?;
    }
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// A transport, for [`claim`] and [`overlap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// TCP (plain or TLS listeners, the metrics endpoint).
    Tcp,
    /// UDP.
    Udp,
}

/// Whether two listen addresses of one transport would share a port: the
/// same port (not 0, which means a fresh one each), and the same address
/// or one a wildcard of the other's family.
///
/// ```
/// use sockloop::net::socket::overlap;
///
/// let at = |s: &str| s.parse().unwrap();
/// assert!(overlap(at("127.0.0.1:7000"), at("0.0.0.0:7000")));
/// assert!(!overlap(at("127.0.0.1:7000"), at("127.0.0.2:7000")));
/// assert!(!overlap(at("127.0.0.1:0"), at("127.0.0.1:0")));
/// assert!(!overlap(at("[::]:7000"), at("0.0.0.0:7000"))); // IPv6-only sockets
/// ```
pub fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// The receive buffer the kernel granted a socket (`SO_RCVBUF` as read
/// back: Linux doubles what was asked, for its bookkeeping, after capping
/// it at `net.core.rmem_max`).
///
/// ```
/// use sockloop::net::socket::{recv_buffer, udp_socket, SocketOptions};
///
/// // 64 KiB is under every Linux's default cap (`rmem_max`, 208 KiB).
/// let opts = SocketOptions { udp_recv_buffer: Some(64 * 1024), ..SocketOptions::default() };
/// let socket = udp_socket("127.0.0.1:0".parse().unwrap(), &opts)?;
/// assert_eq!(recv_buffer(&socket)?, 2 * 64 * 1024);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn recv_buffer(socket: &mio::net::UdpSocket) -> io::Result<usize> {
    SockRef::from(socket).recv_buffer_size()
}

/// The first pair of addresses in `addrs` that [`overlap`], as positions
/// (earlier, later): two listeners that would share a port.
///
/// ```
/// use sockloop::net::socket::first_overlap;
///
/// let at = |s: &str| s.parse().unwrap();
/// let addrs = [at("127.0.0.1:7000"), at("127.0.0.1:7001"), at("0.0.0.0:7001")];
/// assert_eq!(first_overlap(&addrs), Some((1, 2)));
/// assert_eq!(first_overlap(&addrs[..2]), None);
/// ```
pub fn first_overlap(addrs: &[std::net::SocketAddr]) -> Option<(usize, usize)> {
    addrs.iter().enumerate().find_map(|(j, &b)| {
        let i = addrs[..j].iter().position(|&a| overlap(a, b))?;
        Some((i, j))
    })
}

/// Applies the per-connection options to a freshly accepted stream.
pub fn tune_accepted(stream: &mio::net::TcpStream, opts: &SocketOptions) -> io::Result<()> {
    let socket = SockRef::from(stream);
    if opts.nodelay {
        socket.set_tcp_nodelay(true)?;
    }
    if let Some(idle) = opts.keepalive {
        socket.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?;
    }
    Ok(())
}

fn prepare(socket: &Socket, addr: SocketAddr, opts: &SocketOptions) -> io::Result<()> {
    socket.set_nonblocking(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    if opts.reuse_port || opts.shared_ports {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        // `[::]` means IPv6 only; bind `0.0.0.0` too for IPv4.
        socket.set_only_v6(true)?;
    }
    if let Some(size) = opts.recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    if let Some(size) = opts.send_buffer {
        socket.set_send_buffer_size(size)?;
    }
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn accepted_streams_inherit_the_send_queue_cap_and_user_timeout() {
        let opts = SocketOptions {
            notsent_lowat: Some(64 * 1024),
            user_timeout: Some(Duration::from_millis(7500)),
            ..SocketOptions::default()
        };
        let listener = tcp_listener("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let accepted = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        let lowat = crate::net::sys::notsent_lowat(accepted.as_fd()).unwrap();
        assert_eq!(lowat, 64 * 1024);
        let timeout = SockRef::from(&accepted).tcp_user_timeout().unwrap();
        assert_eq!(timeout, Some(Duration::from_millis(7500)));
    }
}
