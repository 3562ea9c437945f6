//! Outbound connections (`ShardContext::connect`) over real sockets: a
//! service that, for each client it accepts, connects to an upstream the
//! test holds, and reports what the loop told it.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use common::{connect, Running, IO_TIMEOUT};
use sockloop::service::{CloseReason, ConnContext, ConnId, ConnectError, ShardContext, TcpService};
use sockloop::{Server, ServerConfig};

/// On each accepted client: connects to `upstream` and sends it
/// `hello upstream\n` at once (before the connect completes). Tells the
/// client `connected`, `failed <ErrorKind>` or `refused <error>`, then
/// relays what the upstream sends, and `upstream closed <reason>`.
struct Dialer {
    upstream: SocketAddr,
    /// Outbound id -> the client it serves.
    client_of: HashMap<ConnId, ConnId>,
}

impl TcpService for Dialer {
    fn on_open(&mut self, conn: &mut ConnContext<'_>) {
        match conn.connect(self.upstream) {
            Ok(id) => {
                assert!(conn.is_outbound(id) && !conn.is_outbound(conn.id()));
                assert!(conn.send_to(id, b"hello upstream\n"));
                self.client_of.insert(id, conn.id());
            }
            Err(ConnectError::ServerFull) => conn.send(b"refused full\n"),
            Err(e) => conn.send(format!("refused {e}\n").as_bytes()),
        }
    }

    fn on_connected(&mut self, conn: &mut ConnContext<'_>) {
        assert_eq!(conn.peer_addr(), self.upstream);
        assert_eq!(conn.listener(), usize::from(u16::MAX));
        let client = self.client_of[&conn.id()];
        conn.send_to(client, b"connected\n");
    }

    fn on_connect_failed(&mut self, shard: &mut ShardContext<'_>, id: ConnId, e: std::io::Error) {
        let client = self.client_of.remove(&id).expect("a connect we began");
        shard.send_to(client, format!("failed {:?}\n", e.kind()).as_bytes());
        shard.close_conn(client);
    }

    fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
        if let Some(&client) = self.client_of.get(&conn.id()) {
            conn.send_to(client, data);
        }
        data.len()
    }

    fn on_close(&mut self, shard: &mut ShardContext<'_>, id: ConnId, reason: CloseReason) {
        if let Some(client) = self.client_of.remove(&id) {
            shard.send_to(client, format!("upstream closed {reason:?}\n").as_bytes());
            shard.close_conn(client);
        }
    }
}

fn dialer(upstream: SocketAddr, config: ServerConfig) -> Running {
    let config = ServerConfig {
        shards: 1,
        ..config
    };
    let server = Server::builder()
        .config(config)
        .tcp("127.0.0.1:0".parse().unwrap(), move || Dialer {
            upstream,
            client_of: HashMap::new(),
        })
        .build()
        .unwrap();
    Running::start(server)
}

fn line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line
}

#[test]
fn an_outbound_connection_is_served_like_an_accepted_one() {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = dialer(upstream.local_addr().unwrap(), ServerConfig::default());
    let mut client = BufReader::new(connect(server.tcp[0]));
    let (mut far, _) = upstream.accept().unwrap();
    far.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert_eq!(line(&mut client), "connected\n");
    let mut hello = [0; 15];
    far.read_exact(&mut hello).unwrap();
    assert_eq!(
        &hello, b"hello upstream\n",
        "sent before the connect completed"
    );
    far.write_all(b"from upstream\n").unwrap();
    assert_eq!(line(&mut client), "from upstream\n");
    drop(far);
    assert_eq!(line(&mut client), "upstream closed PeerClosed\n");
    assert_eq!(line(&mut client), "", "then the client is closed");
    let stats = server.handle.stats();
    assert_eq!(
        (
            stats.outbound_started,
            stats.outbound_connected,
            stats.outbound_failed
        ),
        (1, 1, 0)
    );
    assert_eq!(
        stats.conns_accepted, 1,
        "an outbound connection is not accepted"
    );
    common::wait_until("both closed", || server.handle.stats().conns_open == 0);
}

#[test]
fn a_refused_connect_is_reported_to_the_service() {
    // A port nobody listens on: bound, then released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = dialer(port, ServerConfig::default());
    let mut client = BufReader::new(connect(server.tcp[0]));
    assert_eq!(line(&mut client), "failed ConnectionRefused\n");
    assert_eq!(line(&mut client), "");
    let stats = server.handle.stats();
    assert_eq!((stats.outbound_started, stats.outbound_failed), (1, 1));
    assert_eq!(stats.outbound_connected, 0);
    common::wait_until("closed", || server.handle.stats().conns_open == 0);
}

#[test]
fn outbound_connections_count_towards_max_conns() {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let config = ServerConfig {
        max_conns: Some(1),
        ..ServerConfig::default()
    };
    let server = dialer(upstream.local_addr().unwrap(), config);
    // The client holds the one place: its upstream finds none.
    let mut client = BufReader::new(connect(server.tcp[0]));
    assert_eq!(line(&mut client), "refused full\n");
    let stats = server.handle.stats();
    assert_eq!((stats.outbound_started, stats.outbound_failed), (1, 1));
    assert_eq!(stats.conns_open, 1);
    upstream.set_nonblocking(true).unwrap();
    assert_eq!(
        upstream.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "nothing was opened"
    );
    drop(client);
}

#[test]
fn many_outbound_connections_at_once() {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = dialer(upstream.local_addr().unwrap(), ServerConfig::default());
    let mut clients: Vec<_> = (0..50)
        .map(|_| BufReader::new(connect(server.tcp[0])))
        .collect();
    let mut fars: Vec<TcpStream> = (0..50).map(|_| upstream.accept().unwrap().0).collect();
    for client in &mut clients {
        assert_eq!(line(client), "connected\n");
    }
    for far in &mut fars {
        far.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut hello = [0; 15];
        far.read_exact(&mut hello).unwrap();
        assert_eq!(&hello, b"hello upstream\n");
    }
    let stats = server.handle.stats();
    assert_eq!((stats.outbound_connected, stats.conns_open), (50, 100));
}
