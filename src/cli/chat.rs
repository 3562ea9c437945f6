//! `sockloop chat`: a member of a chat room on the terminal, through a
//! server, or serverless on a LAN (broadcast or multicast).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use sockloop::client::chat::{display, ChatClient};
use sockloop::client::lanchat::{Lan, LanConfig, LanPeer};
use sockloop::services::chat::Encoding;

#[derive(Args)]
pub(crate) struct ChatArgs {
    /// The server's chat listener (chat-proto's with --proto).
    #[arg(value_name = "ADDR", required_unless_present_any = ["broadcast", "group"])]
    addr: Option<SocketAddr>,
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
}

/// `sockloop chat`: this thread prints what arrives; another sends stdin.
/// The server closing the connection (after `/quit`, or end of input)
/// ends it.
pub(crate) fn chat(args: ChatArgs) -> std::io::Result<()> {
    let lan = match (&args.broadcast, args.group) {
        (Some(target), _) => Some(Lan::Broadcast(broadcast_target(target)?)),
        (None, Some(group)) => Some(Lan::Group(group)),
        (None, None) => None,
    };
    if let Some(lan) = lan {
        let name = args.name.clone().unwrap_or_else(|| "anonymous".into());
        let config = LanConfig {
            interface: args.interface,
            ..LanConfig::new(lan)
        };
        return lan_chat(config, &name, args.stats);
    }
    let Some(addr) = args.addr else {
        return Err(std::io::Error::other("give ADDR, --broadcast or --group"));
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
    let (mut client, welcome) = ChatClient::connect(addr, encoding, &name)?;
    println!("{}", display(&welcome));
    let mut sender = client.try_clone()?;
    // Not joined: it may be blocked on stdin when the server hangs up.
    std::thread::spawn(move || -> std::io::Result<()> {
        for line in std::io::stdin().lines() {
            sender.send(&line?)?;
        }
        sender.shutdown() // end of input: leave the room
    });
    while let Some(message) = client.recv()? {
        println!("{}", display(&message));
    }
    Ok(())
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
fn lan_chat(config: LanConfig, name: &str, show_stats: bool) -> std::io::Result<()> {
    const STDIN: Token = Token(0);
    const SOCKET: Token = Token(1);
    let mut peer = LanPeer::new(config, name)?;
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
