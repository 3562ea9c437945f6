//! Shared test scaffolding: a server on an ephemeral port in a thread, and
//! a seeded byte generator so every test is reproducible.

#![allow(dead_code)] // each test binary uses a different subset

pub mod child;
pub mod external;
pub mod process;
pub mod relay;
pub mod room;
#[cfg(feature = "tls")]
pub mod tls;

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::thread::JoinHandle;
use std::time::Duration;

use sockloop::{services::Echo, Error, Handle, Server, ServerConfig};

/// Every blocking socket call in the tests gives up after this.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A server running on its own thread; shut down and joined on drop.
pub struct Running {
    pub tcp: Vec<SocketAddr>,
    pub udp: Vec<SocketAddr>,
    pub handle: Handle,
    thread: Option<JoinHandle<Result<(), Error>>>,
}

impl Running {
    /// Starts `server`.
    pub fn start(server: Server) -> Running {
        let tcp = server.tcp_addrs().to_vec();
        let udp = server.udp_addrs().to_vec();
        let handle = server.handle();
        let thread = std::thread::spawn(move || server.run());
        Running {
            tcp,
            udp,
            handle,
            thread: Some(thread),
        }
    }

    /// TCP and UDP echo on 127.0.0.1:0 with `config`, its per-source
    /// limits off: every test client comes from 127.0.0.1, and these tests
    /// are about the core (tests/limits.rs tests the limits).
    pub fn echo(config: ServerConfig) -> Running {
        let config = ServerConfig {
            sources: sockloop::limit::IpLimits::unlimited(),
            ..config
        };
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let server = Server::builder()
            .config(config)
            .tcp(any, || Echo)
            .udp(any, || Echo)
            .build()
            .expect("bind echo server");
        Running::start(server)
    }

    /// Stops gracefully and waits for `run` to return.
    pub fn shutdown(mut self) -> Result<(), Error> {
        self.handle.shutdown();
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("server thread panicked")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.handle.stop();
            let _ = thread.join();
        }
    }
}

/// A blocking client with timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// A connection to `to` from the loopback address `from` (any port),
/// for the per-source limits; reads time out.
pub fn connect_from(from: &str, to: SocketAddr) -> std::io::BufReader<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local = SocketAddr::new(from.parse().unwrap(), 0);
    socket.bind(&local.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    std::io::BufReader::new(stream)
}

/// A UDP socket on 127.0.0.1 connected to `addr`, with timeouts.
pub fn udp_client(addr: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP client");
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    socket.connect(addr).unwrap();
    socket
}

/// The crate's one seeded generator (xorshift64*), for test data.
#[allow(unused_imports)] // not every test binary makes data
pub use sockloop::rng::Rng;

/// Polls `condition` every 10 ms until it holds or `IO_TIMEOUT` passes.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
