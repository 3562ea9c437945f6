//! `serve --workers N` with N above 1: the supervisor's side. It checks
//! the flags, claims and holds every port (resolving port 0 once, so all
//! workers share the same ports), starts the workers as this very program
//! with the resolved addresses, and prints the `listening` lines once all
//! are ready.

use std::ffi::OsString;
use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;

use sockloop::net::socket::{hold, Proto};
use sockloop::services::registry::Transport;
use sockloop::services::registry::{self, TcpFactory};
use sockloop::supervisor::Supervisor;
use sockloop::Error;

use super::ServeArgs;

/// What `--workers` above 1 cannot do: a service whose state spans
/// connections (the chat) without a bus to carry it between the workers,
/// or listeners without `SO_REUSEPORT`.
pub(super) fn check_workers(args: &ServeArgs) -> Result<(), Error> {
    // With --bus each worker is one more process on the bus, as a second
    // host would be: rooms, notices, /list and names span them.
    let chat_allowed = args.bus.is_some();
    let tcp = (args.tcp.iter().map(|l| (Transport::Tcp, l)))
        .chain(args.tls.iter().map(|l| (Transport::Tls, l)));
    for (transport, listen) in tcp {
        let service = registry::lookup(transport, &listen.service)?.tcp;
        if !chat_allowed && matches!(service, Some(TcpFactory::Chat(_))) {
            return Err(Error::Config(format!(
                "--{transport} {}={}: a chat's rooms and names cannot span worker processes \
                 without a message bus: add --bus nats://HOST:PORT, or serve chat with --workers 1",
                listen.addr, listen.service
            )));
        }
    }
    if args.no_reuseport {
        return Err(Error::Config(
            "--workers shares every port between the workers with SO_REUSEPORT: drop \
             --no-reuseport, or use --workers 1"
                .into(),
        ));
    }
    Ok(())
}

pub(super) fn supervise(args: ServeArgs) -> Result<(), Error> {
    let tcp = (args.tcp.iter().map(|l| (Transport::Tcp, l)))
        .chain(args.tls.iter().map(|l| (Transport::Tls, l)));
    let udp = args.udp.iter().map(|l| (Transport::Udp, l));
    // Claimed alone, then held with SO_REUSEPORT: no other server can take
    // a port while the workers bind it, and port 0 is resolved once.
    let bind_error = |proto, addr| {
        move |source| Error::Bind {
            proto,
            addr,
            source,
        }
    };
    let held_addr = |socket: &socket2::Socket| {
        let addr = socket.local_addr()?.as_socket();
        addr.ok_or_else(|| Error::Config("a listener bound to a non-IP address".into()))
    };
    let mut tcp_held = Vec::new();
    let mut listening = Vec::new();
    let mut addrs = Vec::new();
    for (transport, listen) in tcp {
        let socket = hold(Proto::Tcp, listen.addr).map_err(bind_error("tcp", listen.addr))?;
        let addr = held_addr(&socket)?;
        listening.push(format!("{transport} {addr} {}", listen.service));
        addrs.push(addr);
        tcp_held.push(socket);
    }
    let mut udp_held = Vec::new();
    for (_, listen) in udp {
        let socket = hold(Proto::Udp, listen.addr).map_err(bind_error("udp", listen.addr))?;
        let addr = held_addr(&socket)?;
        listening.push(format!("udp {addr} {}", listen.service));
        addrs.push(addr);
        udp_held.push(socket);
    }
    let metrics = match &args.metrics {
        None => None,
        Some(at) => {
            let at = at.first();
            let listener = std::net::TcpListener::bind(at).map_err(bind_error("tcp", at))?;
            listening.push(format!("tcp {} metrics", listener.local_addr()?));
            Some(listener)
        }
    };

    let program = std::env::current_exe()?;
    let given: Vec<OsString> = std::env::args_os().skip(1).collect();
    let addrs: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
    let addrs = addrs.join(",");
    let me = std::process::id().to_string();
    let mut supervisor = Supervisor::new(args.workers, move |i| {
        let mut command = Command::new(&program);
        command.args(&given).arg("--worker").arg(i.to_string());
        command.arg("--worker-of").arg(&me);
        command.arg("--worker-addrs").arg(&addrs);
        command
    });
    if let Some(listener) = metrics {
        supervisor = supervisor.metrics(listener);
    }
    supervisor.run(|pids| {
        // Every worker has its own UDP sockets now; the supervisor's would
        // take a share of the datagrams.
        drop(udp_held);
        log::info!("{} workers ready, pids {pids:?}", pids.len());
        let mut stdout = std::io::stdout().lock();
        for line in &listening {
            let _ = writeln!(stdout, "listening {line}");
        }
        let _ = stdout.flush();
    })?;
    drop(tcp_held);
    log::info!("stopped");
    Ok(())
}
