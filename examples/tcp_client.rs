//! The article's TCP client (2.5): connect, send one line, print the
//! server's answer.
//!
//! ```sh
//! cargo run --example tcp_server &                 # or any line server
//! cargo run --example tcp_client                   # 127.0.0.1:8080
//! cargo run --example tcp_client -- 127.0.0.1:8080 "another message"
//! ```
//!
//! It prints `Server response: LINE` and exits 0, or names what failed
//! and exits 1.
//!
//! A client with one connection may block: there is nothing else for
//! its thread to do meanwhile. What it must not do is wait forever, so
//! both the connect and the read have a deadline (the Go client has
//! none: a server that accepts and never answers hangs it).
//!
//! What the kernel does: `connect` sends the SYN and returns once the
//! SYN-ACK came back and the ACK went out (the three-way handshake of the
//! article's 2.2); `write` copies the line into the socket's send buffer
//! and returns; the kernel sends it, retransmits it if it is lost, and
//! the server's kernel acknowledges it. `read` waits until the answer is
//! in our receive buffer.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(5);

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or("127.0.0.1:8080".into());
    let message = args.next().unwrap_or("Hello from TCP client!".into());
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        eprintln!("usage: tcp_client [ADDR [MESSAGE]]   e.g. 127.0.0.1:8080");
        std::process::exit(2);
    };
    match exchange(addr, &message) {
        Ok(answer) => println!("Server response: {answer}"),
        Err(e) => {
            eprintln!("tcp_client: {addr}: {e}");
            std::process::exit(1);
        }
    }
}

fn exchange(addr: SocketAddr, message: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, DEADLINE)?;
    stream.set_read_timeout(Some(DEADLINE))?;
    // One write for the whole line: two small writes could wait on Nagle's
    // algorithm and the server's delayed ACK.
    stream.write_all(format!("{message}\n").as_bytes())?;
    // TCP is a byte stream, not messages: read until the `\n` that ends
    // the answer, however many segments it came in.
    let mut answer = String::new();
    if BufReader::new(&stream).read_line(&mut answer)? == 0 {
        return Err(std::io::Error::other("the server closed without answering"));
    }
    Ok(answer.trim_end().to_string())
}
