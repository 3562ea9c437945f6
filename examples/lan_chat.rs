//! The article's LAN broadcast chat (3.5): no server, every peer sends each
//! stdin line as one UDP datagram to a broadcast address, and prints what
//! the other peers send.
//!
//! ```sh
//! cargo run --example lan_chat -- ann          # 127.255.255.255:9002
//! cargo run --example lan_chat -- bob          # in another terminal
//! cargo run --example lan_chat -- ann 127.255.255.255:9100
//! ```
//!
//! It prints `ann on ADDR` once the socket is bound, then `[HH:MM:SS
//! from]: text` per message. The end of stdin stops it, with its counters
//! on stderr.
//!
//! The default address is loopback's broadcast address, so nothing
//! leaves the machine. Every peer binds the same port (`SO_REUSEADDR` and
//! `SO_REUSEPORT`), and the kernel gives each of them a copy of every
//! broadcast datagram. Unlike the article's peer, each datagram is checked
//! (size, JSON, field lengths), every sender is rate-limited in a bounded
//! table, and sequence numbers count gaps and duplicates (`LanPeer`).
//!
//! # One loop, two sources, never blocked
//!
//! stdin and the socket are both registered with one `mio::Poll`, which
//! waits (`epoll_wait`) until either has something. A read is only made
//! on a source epoll reported ready, so it returns at once; the socket is
//! drained until `WouldBlock`.

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use sockloop::client::chat::display;
use sockloop::client::lanchat::{Lan, LanConfig, LanPeer};

const STDIN: Token = Token(0);
const SOCKET: Token = Token(1);

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or("user".into());
    let addr = args.next().unwrap_or("127.255.255.255:9002".into());
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        eprintln!("usage: lan_chat [NAME [BROADCAST:PORT]]   e.g. ann 127.255.255.255:9002");
        std::process::exit(2);
    };
    let mut peer = LanPeer::new(LanConfig::new(Lan::Broadcast(addr)), &name)?;
    println!("{name} on {addr}");

    let mut poll = Poll::new()?;
    let registry = poll.registry();
    registry.register(peer.socket_mut(), SOCKET, Interest::READABLE)?;
    registry.register(&mut SourceFd(&0), STDIN, Interest::READABLE)?;
    let mut events = Events::with_capacity(16);
    let (mut line, mut chunk) = (Vec::new(), [0; 4096]);
    'run: loop {
        poll.poll(&mut events, None)?; // the only place this thread waits
        for event in events.iter() {
            if event.token() == STDIN {
                let n = std::io::stdin().read(&mut chunk)?; // ready: returns at once
                if n == 0 {
                    break 'run; // end of input
                }
                line.extend_from_slice(&chunk[..n]);
                // A read may hold half a line, or several: send whole ones.
                while let Some(end) = line.iter().position(|&b| b == b'\n') {
                    let text = String::from_utf8_lossy(&line[..end]).trim_end().to_string();
                    line.drain(..=end);
                    peer.send(&text, SystemTime::now())?;
                }
            }
        }
        // Every waiting datagram; `None` at WouldBlock. Our own datagrams
        // come back too (we are on the same port) and are skipped.
        while let Some(message) = peer.receive(Instant::now())? {
            println!("{}", display(&message));
        }
    }
    let s = peer.stats();
    eprintln!(
        "sent {}, received {}, gaps {}, duplicates {}, garbage {}, rate-limited {}",
        s.sent, s.received, s.gaps, s.duplicates, s.garbage, s.rate_limited
    );
    Ok(())
}
