//! Real programs the tests start beside the server (nats-server; haproxy
//! has its own config in tests/haproxy.rs), on loopback ports free a moment
//! before.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a program gets to start listening.
const START: Duration = Duration::from_secs(20);

/// A loopback port that was free a moment ago, for a program that binds
/// its own sockets (or a flag checked before binding).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where `name` is on the `PATH`, if it is.
pub fn find_program(name: &str) -> Option<String> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()?;
    let path = String::from_utf8(found.stdout).ok()?.trim().to_owned();
    (found.status.success() && !path.is_empty()).then_some(path)
}

/// `nats-server` on a loopback port, killed (by its pid) when dropped.
pub struct NatsServer(Child);

impl NatsServer {
    /// Starts `binary` on 127.0.0.1:`port` and waits until it listens.
    pub fn start(binary: &str, port: u16) -> NatsServer {
        let child = Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        let server = NatsServer(child);
        let until = Instant::now() + START;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A nats-server started on a free loopback port, with the binary and the
/// port (to start it again there); `None`, after saying so, when it is not
/// installed.
pub fn local_nats() -> Option<(NatsServer, String, u16)> {
    let Some(binary) = find_program("nats-server") else {
        println!("skipping: nats-server not found");
        return None;
    };
    let port = free_port();
    Some((NatsServer::start(&binary, port), binary, port))
}
