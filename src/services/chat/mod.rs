//! The chat room: `chat` (newline-delimited JSON) and `chat-proto`
//! (varint-delimited protobuf) members in the same rooms, on any shard.
//!
//! A member is prompted `Enter your username: ` and answers with a name
//! (JSON: a bare line; protobuf: a `ChatMessage` whose `content` is the
//! name; blank: a generated `guest-N`). Taken names get a `-2`, `-3`, ...
//! suffix, and the welcome says so; names that render alike (case,
//! Cyrillic and Greek look-alikes) are one name, and names holding
//! invisible characters are refused (see `names.rs`). Then every message's `content` goes to
//! the other members of the member's room, with `from`, `time` (UTC
//! `HH:MM:SS`) and `room` set by the server; the sender does not get it
//! back. Content starting with `/` is a command: `/join ROOM`, `/leave`,
//! `/list`, `/rooms`, `/quit`, `/help`. Everything the server itself says
//! comes from `System`; errors start with `error: `.
//!
//! How a member is dropped:
//! - a frame that is not a message (bad JSON, bad protobuf body, bad UTF-8
//!   name, over-long content) or an unknown command (answered with a fixed
//!   error, never echoed) gets an error and a strike; at
//!   [`ChatConfig::max_errors`] strikes the member is disconnected;
//! - a line or frame over [`ChatConfig::max_frame`] gets an error and a
//!   disconnect at once (the stream cannot be followed past it);
//! - a member that does not read what the room sends is closed by the
//!   server's output limits (`ServerConfig::output_hard_limit` at once,
//!   `output_soft_limit` after `output_soft_for`), so it never slows the
//!   room down.
//!
//! Joins and leaves are announced by `System`: at once in a small room,
//! in batches in a room of [`ChatConfig::notice_batch_from`] members or
//! more (one notice per room per shard per [`ChatConfig::notice_interval`],
//! flushed by the service timer), so a storm of joins costs each member a
//! notice per interval rather than one per join.
//!
//! Members on other shards are reached through the shards' mailboxes, in
//! order per sending shard, so each sender's messages arrive in order
//! everywhere. A shard whose inbox is full misses the message: the sender
//! is told, and the core counts it as `mailbox_dropped`.

mod command;
mod directory;
mod names;
mod outgoing;
mod room;

#[cfg(test)]
mod tests;

#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;

use std::sync::Arc;
use std::time::Duration;

use prost::Message;

use crate::protocol::chat::ChatMessage;
use crate::service::{
    CloseReason, ConnContext, ConnId, Loop, Refusal, ShardContext, Shards, TcpService,
};
use directory::Directory;
use room::{Outbox, Rooms};

/// Kept for compatibility: the chat's wire format lives in
/// [`protocol::chat`](crate::protocol::chat) now.
pub use crate::protocol::chat::Encoding;

/// The chat's limits. `Default` is what `sockloop serve` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatConfig {
    /// Longest line (JSON, terminator included) or protobuf body a member
    /// may send (16 KiB). Keep it within `ServerConfig::max_read_buffer`.
    pub max_frame: usize,
    /// Longest message content, in bytes (2 KiB). Longer ones get an error
    /// and a strike.
    pub max_content: usize,
    /// Invalid messages after which a member is disconnected (5).
    pub max_errors: u32,
    /// Rooms of at least this many members, on all shards together (64),
    /// hear of joins and leaves in batches: one notice per
    /// `notice_interval` per room from each shard ("12 joined lobby: ann,
    /// bob, carol, dan, eve and 7 more; 3 left lobby: ..."), so a storm of
    /// N joins costs O(N) notices rather than O(N²). Smaller rooms hear of
    /// each join and leave at once ("ann joined lobby"). `usize::MAX`
    /// never batches; 0 or 1 always does.
    pub notice_batch_from: usize,
    /// How long a large room's joins and leaves wait to be announced
    /// together (1 s).
    pub notice_interval: Duration,
}

impl Default for ChatConfig {
    fn default() -> ChatConfig {
        ChatConfig {
            max_frame: 16 * 1024,
            max_content: 2 * 1024,
            max_errors: 5,
            notice_batch_from: 64,
            notice_interval: Duration::from_secs(1),
        }
    }
}

/// The chat service on one shard. Make one per shard with [`Chat::maker`],
/// which shares the username directory between them.
///
/// ```
/// use sockloop::protocol::chat::Encoding;
/// use sockloop::services::chat::{Chat, ChatConfig};
/// use sockloop::Server;
/// use std::io::{BufRead, BufReader, Read, Write};
///
/// let any = "127.0.0.1:0".parse().unwrap();
/// let make = Chat::maker(ChatConfig::default(), &[Encoding::Json]);
/// let server = Server::builder().tcp_group(&[any], make).build()?;
/// let addr = server.tcp_addrs()[0];
/// let handle = server.handle();
/// let running = std::thread::spawn(move || server.run());
///
/// let mut ann = BufReader::new(std::net::TcpStream::connect(addr)?);
/// let mut prompt = [0; 21];
/// ann.read_exact(&mut prompt)?;
/// assert_eq!(&prompt, b"Enter your username: ");
/// ann.get_mut().write_all(b"ann\n")?;
/// let mut welcome = String::new();
/// ann.read_line(&mut welcome)?;
/// assert!(welcome.starts_with(r#"{"from":"System","content":"Welcome, ann!"#));
///
/// handle.stop();
/// running.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Chat {
    rooms: Rooms,
    /// The encoding of each listener of the group, by position.
    encodings: Arc<[Encoding]>,
}

impl Chat {
    /// Makes the per-shard services for a listener group (see
    /// [`Builder::tcp_group`](crate::Builder::tcp_group)):
    /// `encodings[i]` is how members of the group's `i`th listener speak
    /// (JSON for any listener past the end of `encodings`).
    pub fn maker(
        config: ChatConfig,
        encodings: &[Encoding],
    ) -> impl Fn() -> Chat + Send + Sync + 'static {
        let directory = Arc::new(Directory::default());
        let encodings: Arc<[Encoding]> = encodings.into();
        move || Chat {
            rooms: Rooms::new(config, Arc::clone(&directory)),
            encodings: Arc::clone(&encodings),
        }
    }
}

impl TcpService for Chat {
    fn on_open(&mut self, conn: &mut ConnContext<'_>) {
        let encoding = self.encodings.get(conn.listener()).copied();
        let id = conn.id();
        self.rooms
            .open(&mut **conn, id, encoding.unwrap_or(Encoding::Json));
    }

    /// A `System` error in the member's encoding.
    fn refusal(&self, listener: usize, reason: Refusal) -> Option<Vec<u8>> {
        let encoding = self
            .encodings
            .get(listener)
            .copied()
            .unwrap_or(Encoding::Json);
        Some(room::refusal(encoding, reason.reason()))
    }

    fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
        let (id, now) = (conn.id(), conn.wall_clock());
        let used = self.rooms.input(&mut **conn, id, data, now);
        let decoded = self.rooms.take_decoded();
        conn.count_frames(decoded, 0);
        used
    }

    fn on_message(&mut self, shard: &mut ShardContext<'_>, _from: usize, message: &[u8]) {
        match ChatMessage::decode(message) {
            Ok(message) => self.rooms.remote(shard, message),
            // Only chats post here, so this is a bug, not an attack.
            Err(e) => log::error!("chat: undecodable message from another shard: {e}"),
        }
    }

    fn on_close(&mut self, shard: &mut ShardContext<'_>, id: ConnId, _reason: CloseReason) {
        let now = shard.wall_clock();
        self.rooms.closed(shard, id, now);
    }

    /// The notice timer: large rooms' joins and leaves are due.
    fn on_shard_timer(&mut self, shard: &mut ShardContext<'_>, _key: u64) {
        let now = shard.wall_clock();
        self.rooms.timer(shard, now);
    }
}

/// The key of the chat's one service timer (the notice batches).
const NOTICE_TIMER: u64 = 0;

/// The chat's one way out, whatever it was called for: a connection's
/// input derefs to the same shard-wide context.
impl Outbox for ShardContext<'_> {
    fn send(&mut self, to: ConnId, bytes: &[u8]) {
        if self.send_to(to, bytes) {
            self.count_frames(0, 1);
        }
    }

    fn close(&mut self, id: ConnId) {
        self.close_conn(id);
    }

    fn post(&mut self, message: &ChatMessage) -> bool {
        let others = self.shards() - 1;
        others == 0 || Loop::post(self, Shards::Others, &message.encode_to_vec().into()) == others
    }

    fn take_token(&mut self, id: ConnId) -> bool {
        self.take_message_token_of(id)
    }

    fn strike(&mut self, id: ConnId, why: &str) -> bool {
        self.strike_conn(id, why)
    }

    fn arm_timer(&mut self, after: Duration) {
        Loop::arm_timer(self, after, NOTICE_TIMER);
    }
}
