//! The article's JSON chat room (2.5), as sockloop's chat service: members
//! send `{"content":"..."}` lines and every other member of the room gets
//! `{"from":"ann","content":"...","time":"HH:MM:SS"}`.
//!
//! ```sh
//! cargo run --example chat_server                    # 127.0.0.1:9000, the article's port
//! cargo run --example chat_client -- 127.0.0.1:9000 ann
//! nc 127.0.0.1 9000                                  # answer the prompt, then {"content":"hi"}
//! cargo run --example chat_server -- 127.0.0.1:0 2   # any port, 2 shards
//! ```
//!
//! It prints `chat on tcp ADDR` once bound; Ctrl-C drains and exits.
//!
//! # Where the article's chat loses messages, and this one does not
//!
//! The Go room hands each message to every member's outbound channel of
//! 10 and drops it when the channel is full ("client slow"): in a burst
//! of 100 messages each member got 11 (`benches/chat_burst_members.py`;
//! the README's "From the article" has the runs).
//! Here there is no per-member channel. In one shard, `ShardContext::
//! send_to` writes to the member's socket at once; what the kernel does
//! not take is queued in that member's output and flushed when epoll says
//! the socket is writable again. A member that stops reading is not
//! silently skipped: past the soft output limit for a while, or the hard
//! limit at once, it is disconnected (and counted); everyone else gets
//! every message. Members on other shards are reached through the shard
//! mailboxes; when one is full the sender is paused (TCP slows it down)
//! and its message waits, bounded, instead of being dropped.
//!
//! What one message costs: one `recvfrom` of the sender's line, one
//! decode, one encode per encoding, and one `sendto` per member.

use sockloop::protocol::chat::Encoding;
use sockloop::services::chat::{Chat, ChatConfig};
use sockloop::{Server, ServerConfig};

fn main() -> Result<(), sockloop::Error> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or("127.0.0.1:9000".into());
    let shards = args.next().unwrap_or("1".into());
    let (Ok(addr), Ok(shards)) = (addr.parse(), shards.parse()) else {
        eprintln!("usage: chat_server [ADDR [SHARDS]]   e.g. 127.0.0.1:9000 1");
        std::process::exit(2);
    };
    let config = ServerConfig {
        shards,
        ..ServerConfig::default()
    };
    // One Chat value per shard; `maker` shares the name directory and the
    // room rosters between them.
    let make = Chat::maker(ChatConfig::default(), &[Encoding::Json]);
    let server = Server::builder()
        .config(config)
        .tcp_group(&[addr], make)
        .build()?;
    println!("chat on tcp {}", server.tcp_addrs()[0]);
    server.handle().stop_on_signals()?; // Ctrl-C: drain; again: stop now
    server.run()
}
