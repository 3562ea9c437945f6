//! The article's UDP client (3.5): each line of stdin goes out as one
//! datagram, and the reply is printed. `quit` or the end of input stops.
//!
//! ```sh
//! cargo run --example udp_server &
//! cargo run --example udp_client                   # 127.0.0.1:9001; type lines
//! printf 'hi\nthere\n' | cargo run --example udp_client -- 127.0.0.1:9001
//! ```
//!
//! It prints `Connected to UDP server at ADDR`, then per line `Server
//! response: TEXT`, or `Timeout: no reply to "TEXT"` when none came
//! within a second (UDP may lose it: nothing resends).
//!
//! `connect` on a UDP socket sends nothing: it only fixes the peer, so
//! `send` needs no address and the kernel drops datagrams from anyone
//! else. An ICMP "port unreachable" (no server there) then comes back as
//! a `ConnectionRefused` error on the next `recv`.

use std::io::BufRead;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:9001".into());
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        eprintln!("usage: udp_client [ADDR]   e.g. 127.0.0.1:9001");
        std::process::exit(2);
    };
    let socket = UdpSocket::bind("127.0.0.1:0")?; // any free local port
    socket.connect(addr)?;
    // Without a deadline a lost datagram would hang the client forever.
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    println!("Connected to UDP server at {addr}");

    let mut reply = vec![0; 65_536]; // the largest UDP payload fits
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let text = line.trim();
        if text == "quit" {
            break;
        }
        socket.send(text.as_bytes())?; // one datagram, whole or not at all
        match socket.recv(&mut reply) {
            Ok(n) => println!("Server response: {}", String::from_utf8_lossy(&reply[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                println!("Timeout: no reply to {text:?}")
            }
            Err(e) => println!("Error: {e}"),
        }
    }
    Ok(())
}
