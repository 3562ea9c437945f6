//! `sockloop chat`: a member of a chat room on the terminal, through a
//! server, or serverless on a LAN (broadcast or multicast).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use sockloop::client::chat::{display, ChatClient, GreetingError, GREETING_TIMEOUT};
use sockloop::client::lanchat::{Lan, LanConfig, LanPeer};
use sockloop::protocol::chat::Encoding;

use super::addr::HostPort;
use crate::Failure;

#[derive(Args)]
pub(crate) struct ChatArgs {
    /// The server's chat listener (chat-proto's with --proto), HOST:PORT.
    #[arg(value_name = "ADDR", required_unless_present_any = ["broadcast", "group"])]
    addr: Option<HostPort>,
    /// Serverless: broadcast to [ADDR:]PORT (default address 127.255.255.255).
    #[arg(long, value_name = "[ADDR:]PORT", conflicts_with_all = ["addr", "group"])]
    broadcast: Option<String>,
    /// Serverless: an IPv4 multicast GROUP:PORT, e.g. 239.1.2.3:9002.
    #[arg(long, value_name = "GROUP:PORT", conflicts_with = "addr")]
    group: Option<SocketAddr>,
    /// The interface multicast leaves by and is joined on (default 127.0.0.1: this host).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    interface: Ipv4Addr,
    /// Serverless: print the counters (gaps, duplicates, garbage) on exit.
    #[arg(long)]
    stats: bool,
    /// Username (default: asked on stdin; blank: the server picks one).
    #[arg(long)]
    name: Option<String>,
    /// Speak protobuf (a chat-proto listener) instead of JSON lines.
    #[arg(long)]
    proto: bool,
    /// Print what the client does (to a server, not --broadcast/--group):
    /// a line per connect, read, write and message decoded, under the log
    /// target `sockloop::trace` (the sender and the receiver thread each
    /// have their own rate).
    #[arg(long)]
    trace: bool,
    /// Trace lines per second per thread; beyond it lines are held back
    /// and one line counts them when the second ends.
    #[arg(long, value_name = "N", default_value_t = sockloop::DEFAULT_TRACE_RATE)]
    trace_rate: u32,
}

/// `sockloop chat`: this thread prints what arrives; another sends stdin.
/// The member's own `/quit` or the end of its input ends it with exit 0;
/// the server hanging up unasked is an error (exit 1), after whatever the
/// server said last (a refusal, a ban) is shown.
pub(crate) fn chat(args: ChatArgs) -> Result<(), Failure> {
    let lan = match (&args.broadcast, args.group) {
        (Some(target), _) => {
            let target = broadcast_target(target).map_err(|e| Failure::usage(e.to_string()))?;
            Some(Lan::Broadcast(target))
        }
        (None, Some(group)) => Some(Lan::Group(group)),
        (None, None) => None,
    };
    if let Some(lan) = lan {
        let name = args.name.clone().unwrap_or_else(|| "anonymous".into());
        let config = LanConfig {
            interface: args.interface,
            ..LanConfig::new(lan)
        };
        // A group or interface that cannot be one is a usage error.
        let peer = LanPeer::new(config, &name).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidInput => Failure::usage(e.to_string()),
            _ => Failure::from(e),
        })?;
        return Ok(lan_chat(peer, args.stats)?);
    }
    let Some(addr) = args.addr else {
        return Err(Failure::usage("give ADDR, --broadcast or --group"));
    };
    let encoding = match args.proto {
        true => Encoding::Protobuf,
        false => Encoding::Json,
    };
    let name = match args.name {
        Some(name) => name,
        None => {
            print!("Enter your username: ");
            std::io::stdout().flush()?;
            let mut name = String::new();
            std::io::stdin().read_line(&mut name)?;
            name
        }
    };
    let trace = sockloop::TraceLines::new("chat client", args.trace.then_some(args.trace_rate));
    let (mut client, welcome) = ChatClient::connect_traced(addr.all(), encoding, &name, trace)
        .map_err(|e| explain(e, &addr))?;
    println!("{}", display(&welcome));
    let mut sender = client.try_clone()?;
    // Set before the member's last word goes out, so the close it causes
    // is expected.
    let leaving = Arc::new(AtomicBool::new(false));
    let member_leaves = Arc::clone(&leaving);
    // Not joined: it may be blocked on stdin when the server hangs up.
    std::thread::spawn(move || -> std::io::Result<()> {
        for line in std::io::stdin().lines() {
            let line = line?;
            if line.trim() == "/quit" {
                member_leaves.store(true, Ordering::SeqCst);
            }
            sender.send(&line)?;
        }
        member_leaves.store(true, Ordering::SeqCst);
        sender.shutdown() // end of input: leave the room
    });
    let hung_up = loop {
        match client.recv() {
            Ok(Some(message)) => println!("{}", display(&message)),
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    if leaving.load(Ordering::SeqCst) {
        return Ok(());
    }
    Err(match hung_up {
        None => std::io::Error::other("server closed the connection"),
        Some(e) => std::io::Error::other(format!("server closed the connection: {e}")),
    }
    .into())
}

/// The greeting's verdict in the command line's terms: which flag to
/// change, which address was meant. A refusal is shown as the message it
/// is, then the close.
fn explain(error: std::io::Error, addr: &HostPort) -> std::io::Error {
    let Some(greeting) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<GreetingError>())
    else {
        return error;
    };
    let text = match greeting {
        GreetingError::WrongEncoding(Encoding::Json) => {
            "this port speaks JSON; drop --proto".into()
        }
        GreetingError::WrongEncoding(Encoding::Protobuf) => {
            "this port speaks protobuf; add --proto".into()
        }
        GreetingError::NoPrompt(_) => format!(
            "no chat prompt arrived within {} s: {addr} may not be a chat port",
            GREETING_TIMEOUT.as_secs()
        ),
        GreetingError::Refused(message) => {
            println!("{}", display(message));
            "server closed the connection".into()
        }
        other => other.to_string(),
    };
    std::io::Error::new(error.kind(), text)
}

/// `PORT` or `ADDR:PORT`; the address defaults to loopback's broadcast.
fn broadcast_target(text: &str) -> std::io::Result<SocketAddr> {
    let bad = |_| std::io::Error::other(format!("bad --broadcast {text:?}: expected [ADDR:]PORT"));
    match text.parse::<u16>() {
        Ok(port) => Ok(SocketAddr::from(([127, 255, 255, 255], port))),
        Err(_) => text.parse().map_err(bad),
    }
}

/// The serverless chat: one mio loop over stdin and the UDP socket.
fn lan_chat(mut peer: LanPeer, show_stats: bool) -> std::io::Result<()> {
    const STDIN: Token = Token(0);
    const SOCKET: Token = Token(1);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(peer.socket_mut(), SOCKET, Interest::READABLE)?;
    poll.registry()
        .register(&mut SourceFd(&0), STDIN, Interest::READABLE)?;
    let mut events = Events::with_capacity(16);
    let mut line = Vec::new();
    let mut chunk = [0; 4096];
    'run: loop {
        poll.poll(&mut events, Some(Duration::from_millis(500)))?;
        for event in events.iter() {
            if event.token() == STDIN {
                // Readable: this read returns what is there without waiting.
                let n = std::io::stdin().read(&mut chunk)?;
                if n == 0 {
                    break 'run; // end of input
                }
                line.extend_from_slice(&chunk[..n]);
                while let Some(end) = line.iter().position(|&b| b == b'\n') {
                    let text = String::from_utf8_lossy(&line[..end]).into_owned();
                    line.drain(..=end);
                    peer.send(text.trim_end_matches('\r'), SystemTime::now())?;
                }
            }
        }
        while let Some(message) = peer.receive(Instant::now())? {
            println!("{}", display(&message));
        }
    }
    if show_stats {
        let s = peer.stats();
        eprintln!(
            "sent {}, received {}, gaps {}, duplicates {}, garbage {}, escaped {}, rate-limited {}",
            s.sent, s.received, s.gaps, s.duplicates, s.garbage, s.escaped, s.rate_limited
        );
    }
    Ok(())
}
