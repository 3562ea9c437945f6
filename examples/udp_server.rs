//! The article's UDP echo server (3.5), on the event loop: every datagram
//! is printed and sent back to its sender.
//!
//! ```sh
//! cargo run --example udp_server                   # 127.0.0.1:9001, the article's port
//! cargo run --example udp_client                   # or: nc -u 127.0.0.1 9001
//! cargo run --example udp_server -- 127.0.0.1:0    # any free port
//! ```
//!
//! It prints `listening on udp ADDR` once bound and `Received from PEER:
//! TEXT` per datagram.
//!
//! # What happens, step by step
//!
//! There is no connection: the kernel queues each datagram whole on the
//! socket, with its sender's address, and the socket becomes readable.
//! The shard then takes up to 32 datagrams with *one* `recvmmsg` into
//! buffers allocated once at start (the Go server makes one `ReadFromUDP`
//! per datagram), calls `on_datagram` for each, and sends every reply of
//! the batch with one `sendmmsg`. If the kernel's send buffer is full the
//! replies wait in a bounded queue and the shard asks for writability; a
//! full queue drops (UDP promises no delivery), it never grows.
//!
//! # Why the reply is not `Echo: ` + the message, as in the article
//!
//! A UDP source address can be forged. A server that answers 10 bytes
//! with 16 lets anyone aim it at a victim with a 1.6x amplification. So
//! sockloop sends an unverified sender at most as many bytes as it sent
//! (`DatagramContext::send_to` drops and counts the rest), and this echo
//! answers with exactly what it got.

use std::net::SocketAddr;

use sockloop::service::{DatagramContext, UdpService};
use sockloop::Server;

struct Echo;

impl UdpService for Echo {
    fn on_datagram(&mut self, out: &mut DatagramContext<'_>, from: SocketAddr, data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        println!("Received from {from}: {}", text.trim_end());
        out.send_to(from, data); // queued; sent with the batch's sendmmsg
    }
}

fn main() -> Result<(), sockloop::Error> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:9001".into());
    let Ok(addr) = addr.parse() else {
        eprintln!("usage: udp_server [ADDR]   e.g. 127.0.0.1:9001");
        std::process::exit(2);
    };
    let server = Server::builder().udp(addr, || Echo).build()?;
    println!("listening on udp {}", server.udp_addrs()[0]);
    server.run()
}
