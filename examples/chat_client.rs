//! A chat member (the article's chat client): each stdin line is sent as a
//! message, and what the room says is printed as `[HH:MM:SS from]: text`.
//!
//! ```sh
//! cargo run --example chat_server &
//! cargo run --example chat_client -- 127.0.0.1:9000 ann
//! cargo run --example chat_client -- 127.0.0.1:9000 bob    # in another terminal
//! ```
//!
//! Lines starting with `/` are commands (`/join ROOM`, `/list`, `/quit`,
//! `/help`). It exits 0 when stdin ends or after `/quit`, and 1 if the
//! server hangs up first.
//!
//! Two threads, because a blocking client has two things to wait on: this
//! one waits for stdin, the other for the socket. (A server cannot afford
//! a thread per wait; `lan_chat` shows the same two waits in one poll
//! loop.) `ChatClient::connect` reads the server's `Enter your username:`
//! prompt, answers it, and returns the welcome.

use std::io::BufRead;

use sockloop::client::chat::{display, ChatClient};
use sockloop::protocol::chat::Encoding;

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or("127.0.0.1:9000".into());
    let name = args.next().unwrap_or_default(); // empty: the server picks one
    if let Err(e) = run(&addr, &name) {
        eprintln!("chat_client: {e}");
        std::process::exit(1);
    }
}

fn run(addr: &str, name: &str) -> std::io::Result<()> {
    let (mut member, welcome) = ChatClient::connect(addr, Encoding::Json, name)?;
    println!("{}", display(&welcome));
    let mut reader = member.try_clone()?;
    let printer = std::thread::spawn(move || -> std::io::Result<()> {
        // Ok(None): the server closed the connection.
        while let Some(message) = reader.recv()? {
            println!("{}", display(&message)); // control characters escaped
        }
        Ok(())
    });
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        member.send(line.trim_end())?;
        if line.trim_end() == "/quit" {
            break;
        }
    }
    // Our FIN: the server sees EOF, the member leaves, and the server
    // closes its side, which ends the printer's `recv`.
    member.shutdown()?;
    printer.join().expect("printer panicked")
}
