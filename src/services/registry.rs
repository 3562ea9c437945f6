//! The built-in services by name: what `sockloop serve --tcp ADDR=NAME`
//! looks up, and what its help and its unknown-service error list.
//!
//! Each [`Service`] has a name, the transports it runs on, a one-line
//! description and a factory that adds its listeners to a
//! [`Builder`](crate::Builder) from what it needs (a [`ServiceConfig`]).
//! [`install`] adds a whole set of listeners in the order the CLI
//! documents: TCP and TLS listeners of single services in the order given,
//! then every chat listener in one group (one set of rooms shared by JSON
//! and protobuf members), then the UDP sockets.
//!
//! ```
//! use sockloop::services::registry::{self, ServiceConfig, Transport};
//! use sockloop::{Listener, Server};
//!
//! let any = "127.0.0.1:0".parse().unwrap();
//! let json = registry::lookup(Transport::Tcp, "json")?;
//! let rudp = registry::lookup(Transport::Udp, "rudp")?;
//! assert!(registry::lookup(Transport::Tcp, "rudp").is_err());
//!
//! let needs = ServiceConfig::new(registry::random_secret()?);
//! let (builder, order) =
//!     registry::install(Server::builder(), &[(Listener::plain(any), json)], &[(any, rudp)], &needs);
//! let server = builder.build()?;
//! assert_eq!((order, server.tcp_addrs().len(), server.udp_addrs().len()), (vec![0], 1, 1));
//! # Ok::<(), sockloop::Error>(())
//! ```

use std::fmt;
use std::net::SocketAddr;

use crate::config::ServerConfig;
use crate::rudp;
use crate::server::{Builder, Listener};
use crate::services::chat::{Chat, ChatConfig, Encoding};
use crate::services::rudp_echo::{self, RudpEcho};
use crate::services::{Echo, JsonEcho};
use crate::Error;

/// Where a service listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A plain TCP listener (`--tcp`).
    Tcp,
    /// A TLS listener (`--tls`): any TCP service, over TLS.
    Tls,
    /// A UDP socket (`--udp`).
    Udp,
}

impl Transport {
    /// All three, in the order the CLI's flags come.
    pub const ALL: [Transport; 3] = [Transport::Tcp, Transport::Tls, Transport::Udp];
}

impl fmt::Display for Transport {
    /// `tcp`, `tls`, `udp`: as the `listening` lines and errors name them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Udp => "udp",
        })
    }
}

/// What the built-in services are made from. The defaults are the
/// library's: [`ServiceConfig::new`].
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The chat's limits (`chat`, `chat-proto`).
    pub chat: ChatConfig,
    /// The longest line the `json` service accepts, terminator included
    /// (default: [`ServerConfig::max_read_buffer`], 64 KiB).
    pub max_line: usize,
    /// The `rudp` protocol's tunables.
    pub rudp: rudp::Config,
    /// `rudp` peers per socket per shard ([`rudp_echo::DEFAULT_MAX_PEERS`];
    /// `usize::MAX`: no cap).
    pub rudp_max_peers: usize,
    /// The key `rudp` cookies are made with ([`random_secret`]).
    pub rudp_secret: [u8; 32],
    /// The NATS bus the chat's rooms span processes over (`--bus`; none:
    /// the rooms are this process's alone).
    pub bus: Option<crate::bus::BusConfig>,
}

impl ServiceConfig {
    /// The library's defaults, with `rudp_secret` for the cookies.
    pub fn new(rudp_secret: [u8; 32]) -> ServiceConfig {
        ServiceConfig {
            chat: ChatConfig::default(),
            max_line: ServerConfig::default().max_read_buffer,
            rudp: rudp::Config::default(),
            rudp_max_peers: rudp_echo::DEFAULT_MAX_PEERS,
            rudp_secret,
            bus: None,
        }
    }
}

pub use rudp_echo::random_secret;

/// How a TCP service (plain or TLS) joins a server.
#[derive(Clone, Copy)]
pub enum TcpFactory {
    /// Adds one listener with its own service value per shard.
    Single(fn(Builder, Listener, &ServiceConfig) -> Builder),
    /// A chat encoding: every chat listener joins one group, one set of
    /// rooms (made by [`Chat::maker`] once the other listeners are added),
    /// where this listener's members speak `Encoding`.
    Chat(Encoding),
}

/// Adds a UDP socket served by the service to a builder.
pub type UdpFactory = fn(Builder, SocketAddr, &ServiceConfig) -> Builder;

/// One built-in service.
#[derive(Clone, Copy)]
pub struct Service {
    /// What `--tcp ADDR=NAME` calls it; the `listening` line's last word.
    pub name: &'static str,
    /// One line: what a client gets.
    pub description: &'static str,
    /// The factory for TCP and TLS listeners, if it serves streams.
    pub tcp: Option<TcpFactory>,
    /// The factory for UDP sockets, if it serves datagrams.
    pub udp: Option<UdpFactory>,
}

impl Service {
    /// Whether it runs on `transport` (every TCP service runs over TLS).
    pub fn serves(&self, transport: Transport) -> bool {
        match transport {
            Transport::Tcp | Transport::Tls => self.tcp.is_some(),
            Transport::Udp => self.udp.is_some(),
        }
    }

    /// The transports it runs on, in [`Transport::ALL`]'s order.
    pub fn transports(&self) -> Vec<Transport> {
        (Transport::ALL.into_iter())
            .filter(|&t| self.serves(t))
            .collect()
    }
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("transports", &self.transports())
            .finish_non_exhaustive()
    }
}

/// Every built-in service, in the order help and errors list them.
pub static SERVICES: &[Service] = &[
    Service {
        name: "echo",
        description: "every byte (TCP) or datagram (UDP) back, unchanged",
        tcp: Some(TcpFactory::Single(|builder, listener, _| {
            builder.listeners(vec![listener], || Echo)
        })),
        udp: Some(|builder, addr, _| builder.udp(addr, || Echo)),
    },
    Service {
        name: "json",
        description: "one JSON object per line, echoed back compact with keys sorted",
        tcp: Some(TcpFactory::Single(|builder, listener, needs| {
            let max_line = needs.max_line;
            builder.listeners(vec![listener], move || JsonEcho::new(max_line))
        })),
        udp: None,
    },
    Service {
        name: "chat",
        description: "the chat room, newline-delimited JSON members",
        tcp: Some(TcpFactory::Chat(Encoding::Json)),
        udp: None,
    },
    Service {
        name: "chat-proto",
        description: "the same chat rooms, varint-delimited protobuf members",
        tcp: Some(TcpFactory::Chat(Encoding::Protobuf)),
        udp: None,
    },
    Service {
        name: "rudp",
        description: "reliable UDP: every message a peer delivers comes back, in order",
        tcp: None,
        udp: Some(|builder, addr, needs| {
            let (config, max_peers, secret) = (needs.rudp, needs.rudp_max_peers, needs.rudp_secret);
            builder.udp(addr, move || RudpEcho::new(config, max_peers, &secret))
        }),
    },
];

/// The service called `name`, whatever its transports.
pub fn find(name: &str) -> Option<&'static Service> {
    SERVICES.iter().find(|s| s.name == name)
}

/// The service called `name` if it runs on `transport`; else a usage
/// error ([`Error::Config`]) naming it and listing those that do.
pub fn lookup(transport: Transport, name: &str) -> Result<&'static Service, Error> {
    let known = || {
        let names: Vec<_> = on(transport).map(|s| s.name).collect();
        names.join(", ")
    };
    match find(name) {
        Some(service) if service.serves(transport) => Ok(service),
        Some(service) => Err(Error::Config(format!(
            "{name:?} is not a {transport} service: it runs on {} ({transport} services: {})",
            join(&service.transports()),
            known()
        ))),
        None => Err(Error::Config(format!(
            "unknown {transport} service {name:?} (known: {})",
            known()
        ))),
    }
}

/// The services that run on `transport`, in [`SERVICES`]' order.
pub fn on(transport: Transport) -> impl Iterator<Item = &'static Service> {
    SERVICES.iter().filter(move |s| s.serves(transport))
}

/// One line per service that runs on `transport`, `  NAME  DESCRIPTION`,
/// names aligned: for a flag's help.
pub fn describe(transport: Transport) -> String {
    let width = on(transport).map(|s| s.name.len()).max().unwrap_or(0);
    let lines: Vec<_> = on(transport)
        .map(|s| format!("  {:width$}  {}", s.name, s.description))
        .collect();
    lines.join("\n")
}

fn join(transports: &[Transport]) -> String {
    let names: Vec<_> = transports.iter().map(Transport::to_string).collect();
    names.join(", ")
}

/// Adds listeners to `builder`: `tcp` (plain or TLS, each with the
/// service from [`lookup`]) and `udp` sockets. Single services come
/// first, in the order given, each listener with its own service values;
/// then every chat listener, in the order given, in one group (one set of
/// rooms); then the UDP sockets, in the order given.
///
/// Returns the builder and the order the TCP listeners were added in (as
/// indices into `tcp`), which is the order of
/// [`Server::tcp_addrs`](crate::Server::tcp_addrs).
///
/// # Panics
///
/// If a service does not run on the transport it is given for (one
/// [`lookup`] did not return).
pub fn install(
    mut builder: Builder,
    tcp: &[(Listener, &'static Service)],
    udp: &[(SocketAddr, &'static Service)],
    needs: &ServiceConfig,
) -> (Builder, Vec<usize>) {
    let factory = |service: &Service| {
        (service.tcp).unwrap_or_else(|| panic!("{} is not a TCP service", service.name))
    };
    let mut order = Vec::with_capacity(tcp.len());
    for (i, (listener, service)) in tcp.iter().enumerate() {
        if let TcpFactory::Single(add) = factory(service) {
            builder = add(builder, listener.clone(), needs);
            order.push(i);
        }
    }
    let (mut group, mut encodings) = (Vec::new(), Vec::new());
    for (i, (listener, service)) in tcp.iter().enumerate() {
        if let TcpFactory::Chat(encoding) = factory(service) {
            group.push(listener.clone());
            encodings.push(encoding);
            order.push(i);
        }
    }
    if !group.is_empty() {
        builder = builder.listeners(
            group,
            Chat::maker_on_bus(needs.chat, &encodings, needs.bus.clone()),
        );
    }
    for &(addr, service) in udp {
        let add = (service.udp).unwrap_or_else(|| panic!("{} is not a UDP service", service.name));
        builder = add(builder, addr, needs);
    }
    (builder, order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tls::TlsConfig;
    use crate::Server;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    fn tls() -> TlsConfig {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert: CertificateDer<'static> = made.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
        TlsConfig::from_der(vec![cert], key).unwrap()
    }

    /// A server with `service` on `transport`, built (bound), run and
    /// stopped: the factory makes a service every shard can run.
    fn build_and_run(service: &'static Service, transport: Transport, tls: &TlsConfig) {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let needs = ServiceConfig::new([7; 32]);
        let config = ServerConfig {
            shards: 2,
            ..ServerConfig::default()
        };
        let builder = Server::builder().config(config);
        let (builder, order) = match transport {
            Transport::Tcp => install(builder, &[(Listener::plain(any), service)], &[], &needs),
            Transport::Tls => install(
                builder,
                &[(Listener::tls(any, tls.clone()), service)],
                &[],
                &needs,
            ),
            Transport::Udp => install(builder, &[], &[(any, service)], &needs),
        };
        let server = builder.build().unwrap();
        let (tcp, udp) = if transport == Transport::Udp {
            (0, 1)
        } else {
            (1, 0)
        };
        assert_eq!(order.len(), tcp, "{} on {transport}", service.name);
        assert_eq!(
            (server.tcp_addrs().len(), server.udp_addrs().len()),
            (tcp, udp),
            "{} on {transport}",
            service.name
        );
        let handle = server.handle();
        let running = std::thread::spawn(move || server.run());
        handle.stop();
        running.join().unwrap().unwrap();
    }

    #[test]
    fn every_service_builds_on_each_of_its_transports() {
        let tls = tls();
        let mut built = Vec::new();
        for service in SERVICES {
            for transport in service.transports() {
                build_and_run(service, transport, &tls);
                built.push(format!("{}/{transport}", service.name));
            }
        }
        assert_eq!(
            built,
            [
                "echo/tcp",
                "echo/tls",
                "echo/udp",
                "json/tcp",
                "json/tls",
                "chat/tcp",
                "chat/tls",
                "chat-proto/tcp",
                "chat-proto/tls",
                "rudp/udp",
            ]
        );
    }

    #[test]
    fn names_are_unique_and_every_service_runs_somewhere() {
        for (i, service) in SERVICES.iter().enumerate() {
            assert!(!service.transports().is_empty(), "{}", service.name);
            assert!(!service.description.is_empty(), "{}", service.name);
            assert!(!service.description.contains('\n'), "{}", service.name);
            assert_eq!(find(service.name).map(|s| s.name), Some(service.name));
            assert!(SERVICES[..i].iter().all(|s| s.name != service.name));
        }
    }

    #[test]
    fn help_and_unknown_service_errors_list_every_name() {
        for transport in Transport::ALL {
            let help = describe(transport);
            let error = lookup(transport, "gopher").unwrap_err().to_string();
            let names: Vec<_> = on(transport).map(|s| s.name).collect();
            for service in SERVICES {
                let listed = help.lines().any(|line| {
                    let mut words = line.split_whitespace();
                    words.next() == Some(service.name) && line.ends_with(service.description)
                });
                assert_eq!(listed, service.serves(transport), "{transport}: {help}");
            }
            assert_eq!(
                error,
                format!(
                    "invalid configuration: unknown {transport} service \"gopher\" (known: {})",
                    names.join(", ")
                )
            );
        }
        assert_eq!(
            lookup(Transport::Tcp, "gopher").unwrap_err().to_string(),
            "invalid configuration: unknown tcp service \"gopher\" (known: echo, json, chat, chat-proto)"
        );
        assert_eq!(
            lookup(Transport::Udp, "gopher").unwrap_err().to_string(),
            "invalid configuration: unknown udp service \"gopher\" (known: echo, rudp)"
        );
    }

    #[test]
    fn a_service_on_a_transport_it_does_not_run_on_is_refused() {
        assert_eq!(
            lookup(Transport::Tcp, "rudp").unwrap_err().to_string(),
            "invalid configuration: \"rudp\" is not a tcp service: it runs on udp \
             (tcp services: echo, json, chat, chat-proto)"
        );
        assert_eq!(
            lookup(Transport::Udp, "chat").unwrap_err().to_string(),
            "invalid configuration: \"chat\" is not a udp service: it runs on tcp, tls \
             (udp services: echo, rudp)"
        );
    }

    #[test]
    fn chat_listeners_come_last() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let tcp: Vec<_> = ["chat", "echo", "chat-proto", "json"]
            .into_iter()
            .map(|name| (Listener::plain(any), lookup(Transport::Tcp, name).unwrap()))
            .collect();
        let (builder, order) = install(Server::builder(), &tcp, &[], &ServiceConfig::new([0; 32]));
        assert_eq!(order, [1, 3, 0, 2]);
        assert_eq!(builder.build().unwrap().tcp_addrs().len(), 4);
    }
}
