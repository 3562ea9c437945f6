//! `sockloop chat`: a member of a chat room on the terminal.

use std::io::Write;
use std::net::SocketAddr;

use clap::Args;

use sockloop::client::chat::{display, ChatClient};
use sockloop::services::chat::Encoding;

#[derive(Args)]
pub(crate) struct ChatArgs {
    /// The server's chat listener (chat-proto's with --proto).
    #[arg(value_name = "ADDR")]
    addr: SocketAddr,
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
    let (mut client, welcome) = ChatClient::connect(args.addr, encoding, &name)?;
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
