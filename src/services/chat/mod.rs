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
//! everywhere. Delivery to them is lossless within bounds: a message a
//! shard's inbox refuses waits in a queue for that shard (later ones
//! behind it), its sender stops being read (TCP slows it down), and a
//! 1 ms service timer posts the queue again until it drains, then
//! resumes the senders. A queue holds at most 1,024 messages or 1 MiB
//! (`room::BACKLOG_MESSAGES`, `BACKLOG_BYTES`); past that a message for
//! that shard is dropped, its sender told, and
//! `chat_relay_dropped_total` counts it. `chat_relay_paused_total`
//! counts the pauses.
//!
//! With a bus ([`Chat::maker_on_bus`], `serve --bus`), rooms span
//! processes: see `bus_link.rs` and [`bus::chat`](crate::bus::chat).

mod bus_link;
pub(crate) mod command;
mod directory;
pub(crate) mod names;
mod outgoing;
mod room;

#[cfg(test)]
mod tests;

#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;

use crate::bus::BusConfig;
use crate::protocol::chat::ChatMessage;
use crate::service::{
    CloseReason, ConnContext, ConnId, CounterKind, CounterSpec, Loop, Refusal, ShardContext,
    TcpService,
};
use bus_link::{BusLink, BUS_TIMER};
use directory::Directory;
use room::{Counted, Outbox, Rooms};

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
    /// The process's bus connection, on the shard whose chat was made
    /// first (`None` on the others, and without a bus).
    bus: Option<BusLink>,
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
        Chat::maker_on_bus(config, encodings, None)
    }

    /// [`maker`](Chat::maker), with rooms that span processes over a NATS
    /// bus when `bus` is given: one connection per process, held by the
    /// shard whose chat is made first, opened at that shard's first
    /// callback (the first member anywhere in the process). Messages
    /// cross processes; presence, `/list` and names do not yet (see
    /// [`bus::chat`](crate::bus::chat) for what is built).
    pub fn maker_on_bus(
        config: ChatConfig,
        encodings: &[Encoding],
        bus: Option<BusConfig>,
    ) -> impl Fn() -> Chat + Send + Sync + 'static {
        let directory = Arc::new(Directory::default());
        let encodings: Arc<[Encoding]> = encodings.into();
        let origin = random_origin();
        let bus = std::sync::Mutex::new(bus);
        move || Chat {
            rooms: Rooms::new(config, Arc::clone(&directory)),
            bus: bus
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take()
                .map(|config| BusLink::new(config, origin)),
            encodings: Arc::clone(&encodings),
        }
    }

    /// Runs the bus, if this shard holds it, after a callback.
    fn drive_bus(&mut self, shard: &mut ShardContext<'_>) {
        if let Some(bus) = &mut self.bus {
            bus.drive(shard, &mut self.rooms);
        }
    }

    fn is_bus(&self, id: ConnId) -> bool {
        self.bus.as_ref().is_some_and(|bus| bus.owns(id))
    }
}

/// This process's id on the bus: 64 bits from std's per-process random
/// hash keys, the process id and the clock (no cryptographic need: two
/// processes must merely not collide).
fn random_origin() -> u64 {
    use std::hash::BuildHasher;
    let now = std::time::SystemTime::now();
    std::collections::hash_map::RandomState::new().hash_one((std::process::id(), now))
}

impl TcpService for Chat {
    fn on_open(&mut self, conn: &mut ConnContext<'_>) {
        let encoding = self.encodings.get(conn.listener()).copied();
        let id = conn.id();
        self.rooms
            .open(&mut **conn, id, encoding.unwrap_or(Encoding::Json));
        self.drive_bus(conn);
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
        let id = conn.id();
        if let Some(bus) = self.bus.as_mut().filter(|bus| bus.owns(id)) {
            bus.input(conn, &mut self.rooms, data);
            return data.len();
        }
        let now = conn.wall_clock();
        let used = self.rooms.input(&mut **conn, id, data, now);
        let decoded = self.rooms.take_decoded();
        conn.count_frames(decoded, 0);
        self.drive_bus(conn);
        used
    }

    fn on_connected(&mut self, conn: &mut ConnContext<'_>) {
        if let Some(bus) = self.bus.as_mut().filter(|bus| bus.owns(conn.id())) {
            bus.connected(conn, &mut self.rooms);
        }
    }

    fn on_connect_failed(&mut self, shard: &mut ShardContext<'_>, id: ConnId, error: io::Error) {
        if let Some(bus) = self.bus.as_mut().filter(|bus| bus.owns(id)) {
            log::warn!("bus: connect failed: {error}");
            bus.lost(shard, &mut self.rooms);
        }
    }

    fn on_message(&mut self, shard: &mut ShardContext<'_>, _from: usize, message: &[u8]) {
        let now = shard.wall_clock();
        match ChatMessage::decode(message) {
            Ok(message) => self.rooms.remote(shard, message, now),
            // Only chats post here, so this is a bug, not an attack.
            Err(e) => log::error!("chat: undecodable message from another shard: {e}"),
        }
        self.drive_bus(shard);
    }

    fn on_close(&mut self, shard: &mut ShardContext<'_>, id: ConnId, _reason: CloseReason) {
        if self.is_bus(id) {
            if let Some(bus) = &mut self.bus {
                bus.lost(shard, &mut self.rooms);
            }
            return;
        }
        let now = shard.wall_clock();
        self.rooms.closed(shard, id, now);
        self.drive_bus(shard);
    }

    /// The notice timer (large rooms' joins and leaves are due), the
    /// retry timer (messages wait for other shards' inboxes) or the bus's.
    fn on_shard_timer(&mut self, shard: &mut ShardContext<'_>, key: u64) {
        match key {
            RETRY_TIMER => self.rooms.retry(shard),
            BUS_TIMER => {
                if let Some(bus) = &mut self.bus {
                    bus.timer(shard, &mut self.rooms);
                }
                return;
            }
            _ => {
                let now = shard.wall_clock();
                self.rooms.timer(shard, now);
            }
        }
        self.drive_bus(shard);
    }

    fn counters(&self) -> &'static [CounterSpec] {
        &COUNTERS
    }
}

/// The key of the chat's notice timer (the notice batches).
const NOTICE_TIMER: u64 = 0;
/// The key of the chat's retry timer (messages for full inboxes).
const RETRY_TIMER: u64 = 1;

/// The chat's counters, by [`Counted`] in order, then the bus's (from
/// `bus_link::BUS_COUNTER_BASE`; zero without `--bus`).
const COUNTERS: [CounterSpec; 7] = [
    CounterSpec {
        name: "chat_relay_dropped",
        help: "Chat messages for another shard dropped: its queue of messages waiting for a full inbox was full.",
        kind: CounterKind::Total,
    },
    CounterSpec {
        name: "chat_relay_paused",
        help: "Chat members paused because a message of theirs waited for another shard's full inbox.",
        kind: CounterKind::Total,
    },
    CounterSpec {
        name: "bus_connected",
        help: "1 while the chat's NATS bus connection is ready.",
        kind: CounterKind::Gauge,
    },
    CounterSpec {
        name: "bus_published",
        help: "Chat messages accepted for the bus (queued or sent).",
        kind: CounterKind::Total,
    },
    CounterSpec {
        name: "bus_received",
        help: "Bus messages received (chat messages of other processes).",
        kind: CounterKind::Total,
    },
    CounterSpec {
        name: "bus_dropped",
        help: "Chat messages dropped because the bus queue was full.",
        kind: CounterKind::Total,
    },
    CounterSpec {
        name: "bus_reconnects",
        help: "Bus connections made after the first.",
        kind: CounterKind::Total,
    },
];

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

    fn shards(&self) -> (usize, usize) {
        (Loop::shard(self), Loop::shards(self))
    }

    fn post_to(&mut self, shard: usize, message: &Arc<[u8]>) -> bool {
        self.try_post(shard, message)
    }

    fn pause(&mut self, id: ConnId) {
        self.pause_reading_of(id);
    }

    fn resume(&mut self, id: ConnId) {
        self.resume_reading_of(id);
    }

    fn arm_retry(&mut self, after: Duration) {
        Loop::arm_timer(self, after, RETRY_TIMER);
    }

    fn count(&mut self, what: Counted) {
        let counter = match what {
            Counted::Dropped => 0,
            Counted::Paused => 1,
        };
        self.add(counter, 1);
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
