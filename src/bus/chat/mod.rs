//! The chat over the bus, sans-IO: what a chat service calls to span
//! processes. One [`ChatBus`] per process (or per shard) owns one NATS
//! [`Connection`] and the chat's state about the other processes.
//!
//! - **Messages.** [`ChatBus::send`] publishes a member's message once,
//!   on its room's subject ([`room_subject`]), in an [`Envelope`] that
//!   carries the origin (this process's random 64-bit id), the sender,
//!   the origin's sequence number, the room, the text and the time.
//!   Every process subscribes to all rooms (`sockloop.chat.room.*`) and
//!   turns what others sent into [`ChatEvent::Deliver`] for its local
//!   members of that room, in both encodings. Its own envelopes are never
//!   delivered back (`echo` is off, and the origin is checked too), so
//!   the origin delivers locally at once and never twice. NATS keeps each
//!   publisher's order, and the sequence number proves it: one going
//!   backwards is dropped and counted (`out_of_order`), one skipping ahead
//!   counts what was lost (`lost`). Delivery across processes is at most
//!   once.
//! - **Presence.** [`ChatBus::joined`] and [`ChatBus::left`] publish
//!   joins and leaves on `sockloop.chat.presence`; every
//!   [`ChatBusConfig::heartbeat`] each process also publishes its whole
//!   local roster (in parts of at most [`ChatBusConfig::heartbeat_part`]
//!   members). Each process keeps a roster of the others' members from
//!   these ([`ChatBus::roster`], for `/list`), in which a member not
//!   heard of for [`ChatBusConfig::presence_ttl`] expires (its process
//!   stopped): a [`ChatEvent::Left`] tells its room. Joins and leaves
//!   from other processes are [`ChatEvent::Joined`] and
//!   [`ChatEvent::Left`] (for the notices); members first learned of from
//!   a heartbeat are added silently.
//! - **Names across processes: claim by presence, lowest origin wins.**
//!   A process grants a name only if no other process is known to hold
//!   it ([`ChatBus::is_taken`]: the same folding as the local
//!   directory, so `Ann` and `ann` are one name). Two processes granting
//!   the same name at the same moment both announce it; whichever sees a
//!   claim from a *lower* origin gets [`ChatEvent::NameConflict`] for its
//!   member once and must rename it (the chat gives it the next free
//!   suffix, tells the member and its room, and calls [`ChatBus::left`]
//!   and [`ChatBus::joined`] for the old and new names); the lowest
//!   origin keeps the name, so exactly one process yields.
//! - **Broker down.** Publications queue in the connection (bounded,
//!   dropped and counted past it); local delivery never waits. The first
//!   failure after being up (or the first failed attempt) gives one
//!   [`ChatEvent::Degraded`], the next ready connection one
//!   [`ChatEvent::Recovered`]: the chat tells its members once each.
//!   Heartbeats are not queued while down (they would be stale); one goes
//!   out at once on every (re)connection.
//!
//! The driver feeds it exactly like a [`Connection`]: `handle_*`,
//! `poll_transmit`, `poll_timeout`, and [`ChatBus::poll_event`], which
//! also passes on the connection's [`ChatEvent::Dial`] and
//! [`ChatEvent::Close`].

mod envelope;
mod roster;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

pub use envelope::{
    room_subject, subject_room, Envelope, MAX_CONTENT, PRESENCE, ROOMS_FILTER, ROOM_PREFIX,
};
use roster::{Roster, Upsert};

use super::{BusConfig, Connection, Event, PublishError, ServerUrl};
use crate::protocol::chat::ChatMessage;
use crate::services::chat::names::fold;

/// The chat bus's own settings (the connection's are a [`BusConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatBusConfig {
    /// How often the local roster is published (2 s).
    pub heartbeat: Duration,
    /// A remote member not heard of for this long is dropped (7 s: three
    /// heartbeats lost and some slack).
    pub presence_ttl: Duration,
    /// Members per heartbeat envelope at most (256, about 16 KiB).
    pub heartbeat_part: usize,
    /// Remote members kept at most (100,000); past it new ones are
    /// ignored and counted (`roster_full`).
    pub max_remote_members: usize,
}

impl Default for ChatBusConfig {
    fn default() -> ChatBusConfig {
        ChatBusConfig {
            heartbeat: Duration::from_secs(2),
            presence_ttl: Duration::from_secs(7),
            heartbeat_part: 256,
            max_remote_members: 100_000,
        }
    }
}

/// What the chat bus asks of its driver and tells its chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatEvent {
    /// Driver: dial this server (see [`Event::Dial`]).
    Dial(ServerUrl),
    /// Driver: close the socket (see [`Event::Close`]).
    Close,
    /// Deliver to the local members of `message.room`.
    Deliver(ChatMessage),
    /// A member of another process joined `room`.
    Joined {
        /// The room.
        room: String,
        /// The member.
        name: String,
    },
    /// A member of another process left `room` (or its process went
    /// silent).
    Left {
        /// The room.
        room: String,
        /// The member.
        name: String,
    },
    /// A lower origin holds this local member's name: rename the member.
    NameConflict {
        /// The local member's name.
        name: String,
    },
    /// The bus is down: other processes are out of reach for now.
    Degraded,
    /// The bus is back.
    Recovered,
}

/// The chat bus's counters (the connection's are
/// [`ChatBus::connection`]`.counters()`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChatBusCounters {
    /// Messages from other processes delivered.
    pub delivered: u64,
    /// Messages an origin's sequence shows were lost.
    pub lost: u64,
    /// Messages dropped for going backwards in their origin's sequence.
    pub out_of_order: u64,
    /// Envelopes that did not decode or validate.
    pub invalid: u64,
    /// Remote members ignored because the roster was full.
    pub roster_full: u64,
}

/// See the module docs.
#[derive(Debug)]
pub struct ChatBus {
    origin: u64,
    config: ChatBusConfig,
    connection: Connection,
    /// This process's message counter.
    seq: u64,
    /// Local members: name to room.
    local: BTreeMap<String, String>,
    /// Local names, folded, to the names.
    local_folded: HashMap<String, String>,
    /// Local names (folded) already told of a conflict.
    conflicted: HashSet<String>,
    roster: Roster,
    /// The last sequence number and time heard from each origin.
    origins: HashMap<u64, (u64, Instant)>,
    next_heartbeat: Instant,
    degraded: bool,
    events: VecDeque<ChatEvent>,
    counters: ChatBusCounters,
}

impl ChatBus {
    /// A chat bus for process `origin` (pick it at random, e.g. from
    /// `/dev/urandom` or the pid and the clock: two processes must not
    /// share one), dialing at once.
    pub fn new(
        bus: BusConfig,
        config: ChatBusConfig,
        origin: u64,
        now: Instant,
    ) -> Result<ChatBus, crate::Error> {
        if config.heartbeat.is_zero() || config.presence_ttl <= config.heartbeat {
            return Err(crate::Error::Config(
                "bus: the presence TTL must be over the (non-zero) heartbeat interval".into(),
            ));
        }
        if config.heartbeat_part == 0 {
            return Err(crate::Error::Config(
                "bus: heartbeat_part must not be 0".into(),
            ));
        }
        let mut connection = Connection::new(bus, now)?;
        // Both filters are valid and far under the subscription limit.
        connection.subscribe(ROOMS_FILTER).expect("rooms filter");
        connection.subscribe(PRESENCE).expect("presence subject");
        let mut chat = ChatBus {
            origin,
            config,
            connection,
            seq: 0,
            local: BTreeMap::new(),
            local_folded: HashMap::new(),
            conflicted: HashSet::new(),
            roster: Roster::new(config.max_remote_members),
            origins: HashMap::new(),
            next_heartbeat: now + config.heartbeat,
            degraded: false,
            events: VecDeque::new(),
            counters: ChatBusCounters::default(),
        };
        chat.pump(now);
        Ok(chat)
    }

    /// Publishes a local member's message to its room (once, whatever
    /// the number of processes). Never waits.
    pub fn send(
        &mut self,
        from: &str,
        room: &str,
        content: &str,
        time: &str,
    ) -> Result<(), PublishError> {
        self.seq += 1;
        let envelope = Envelope::Message {
            origin: self.origin,
            seq: self.seq,
            from: from.into(),
            room: room.into(),
            content: content.into(),
            time: time.into(),
        };
        self.connection
            .publish(&room_subject(room), &envelope.encode())
    }

    /// A local member joined `room` (or moved to it).
    pub fn joined(&mut self, name: &str, room: &str) {
        self.local.insert(name.into(), room.into());
        self.local_folded.insert(fold(name), name.into());
        self.presence(Envelope::Join {
            origin: self.origin,
            name: name.into(),
            room: room.into(),
        });
    }

    /// A local member left the chat.
    pub fn left(&mut self, name: &str) {
        if let Some(room) = self.local.remove(name) {
            let folded = fold(name);
            self.local_folded.remove(&folded);
            self.conflicted.remove(&folded);
            self.presence(Envelope::Leave {
                origin: self.origin,
                name: name.into(),
                room,
            });
        }
    }

    /// Makes the local roster `members` (name to room): joins, moves and
    /// leaves for the differences (for a chat that keeps its roster
    /// elsewhere and syncs it now and then).
    pub fn set_local(&mut self, members: &BTreeMap<String, String>) {
        let gone: Vec<String> = (self.local.keys())
            .filter(|name| !members.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            self.left(&name);
        }
        for (name, room) in members {
            if self.local.get(name) != Some(room) {
                self.joined(name, room);
            }
        }
    }

    /// Every room of the other processes with its members' names, sorted.
    pub fn rosters(&self) -> BTreeMap<String, Vec<String>> {
        self.roster.all()
    }

    /// Whether another process is known to hold a name that folds like
    /// `name` (the chat then grants a suffixed one).
    pub fn is_taken(&self, name: &str) -> bool {
        self.roster.holder(name).is_some()
    }

    /// The other processes' members in `room`, sorted (the chat adds its
    /// own for `/list`).
    pub fn roster(&self, room: &str) -> Vec<String> {
        self.roster.room(room)
    }

    /// Remote members known.
    pub fn remote_members(&self) -> usize {
        self.roster.len()
    }

    /// The connection, for its counters and state.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The chat bus's own counters.
    pub fn counters(&self) -> ChatBusCounters {
        self.counters
    }

    /// See [`Connection::handle_connected`].
    pub fn handle_connected(&mut self, now: Instant) {
        self.connection.handle_connected(now);
        self.pump(now);
    }

    /// See [`Connection::handle_disconnected`].
    pub fn handle_disconnected(&mut self, now: Instant) {
        self.connection.handle_disconnected(now);
        self.down();
        self.pump(now);
    }

    /// See [`Connection::handle_input`].
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        self.connection.handle_input(now, data);
        self.pump(now);
    }

    /// The connection's timers, the heartbeat, and expiry of silent
    /// members (checked on each heartbeat tick).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.connection.handle_timeout(now);
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.config.heartbeat;
            self.heartbeat();
            for (room, name) in self.roster.expire(now, self.config.presence_ttl) {
                self.events.push_back(ChatEvent::Left { room, name });
            }
            let ttl = self.config.presence_ttl;
            self.origins
                .retain(|_, (_, seen)| now.saturating_duration_since(*seen) < ttl);
        }
        self.pump(now);
    }

    /// The earlier of the connection's deadline and the next heartbeat.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let connection = self.connection.poll_timeout();
        Some(connection.map_or(self.next_heartbeat, |t| t.min(self.next_heartbeat)))
    }

    /// See [`Connection::poll_transmit`].
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.connection.poll_transmit()
    }

    /// The next event, oldest first. Drain after every `handle_*` call.
    pub fn poll_event(&mut self) -> Option<ChatEvent> {
        self.events.pop_front()
    }

    /// Publishes presence (only while connected: a queued join would be
    /// replaced by the heartbeat on reconnection anyway).
    fn presence(&mut self, envelope: Envelope) {
        if self.connection.is_connected() {
            // Names and rooms are short: a presence envelope fits any
            // server's max_payload; a full queue drops and counts it.
            let _ = self.connection.publish(PRESENCE, &envelope.encode());
        }
    }

    fn heartbeat(&mut self) {
        let members: Vec<(String, String)> = self
            .local
            .iter()
            .map(|(name, room)| (room.clone(), name.clone()))
            .collect();
        for part in members.chunks(self.config.heartbeat_part) {
            self.presence(Envelope::Heartbeat {
                origin: self.origin,
                members: part.to_vec(),
            });
        }
    }

    fn down(&mut self) {
        if !self.connection.is_connected() && !self.degraded {
            self.degraded = true;
            self.events.push_back(ChatEvent::Degraded);
        }
    }

    /// Handles what the connection has to say.
    fn pump(&mut self, now: Instant) {
        while let Some(event) = self.connection.poll_event() {
            match event {
                Event::Dial(url) => self.events.push_back(ChatEvent::Dial(url)),
                Event::Close => self.events.push_back(ChatEvent::Close),
                Event::Connected => {
                    if std::mem::replace(&mut self.degraded, false) {
                        self.events.push_back(ChatEvent::Recovered);
                    }
                    self.heartbeat();
                }
                Event::Disconnected => self.down(),
                Event::Error(error) => {
                    log::warn!("bus: {error}");
                    self.down();
                }
                Event::Message {
                    subject, payload, ..
                } => self.envelope(now, &subject, &payload),
            }
        }
    }

    fn envelope(&mut self, now: Instant, subject: &str, payload: &[u8]) {
        let Some(envelope) = Envelope::decode(payload) else {
            self.counters.invalid += 1;
            return;
        };
        let origin = envelope.origin();
        if origin == self.origin {
            return;
        }
        match envelope {
            Envelope::Message {
                seq,
                from,
                room,
                content,
                time,
                ..
            } => {
                if subject_room(subject).as_deref() != Some(room.as_str()) {
                    self.counters.invalid += 1;
                    return;
                }
                let (last, seen) = self.origins.entry(origin).or_insert((0, now));
                *seen = now;
                if seq <= *last {
                    self.counters.out_of_order += 1;
                    return;
                }
                // The first message heard from an origin sets its base.
                if *last > 0 {
                    self.counters.lost += seq - *last - 1;
                }
                *last = seq;
                self.counters.delivered += 1;
                let message = ChatMessage {
                    from,
                    content,
                    time,
                    room,
                };
                self.events.push_back(ChatEvent::Deliver(message));
            }
            Envelope::Join { name, room, .. } => {
                self.remote_member(origin, &name, &room, now, true);
            }
            Envelope::Leave { name, .. } => {
                if let Some(room) = self.roster.remove(origin, &name) {
                    self.events.push_back(ChatEvent::Left { room, name });
                }
            }
            Envelope::Heartbeat { members, .. } => {
                for (room, name) in members {
                    self.remote_member(origin, &name, &room, now, false);
                }
            }
        }
    }

    /// Records a remote member; `announce`: a join (notice), not a
    /// heartbeat.
    fn remote_member(&mut self, origin: u64, name: &str, room: &str, now: Instant, announce: bool) {
        let upsert = self.roster.upsert(origin, name, room, now);
        match upsert {
            Upsert::Full => {
                self.counters.roster_full += 1;
                return;
            }
            Upsert::Moved(ref from) if announce => self.events.push_back(ChatEvent::Left {
                room: from.clone(),
                name: name.into(),
            }),
            _ => {}
        }
        if announce && upsert != Upsert::Same {
            self.events.push_back(ChatEvent::Joined {
                room: room.into(),
                name: name.into(),
            });
        }
        // A lower origin claiming one of our names wins it.
        if origin < self.origin {
            let folded = fold(name);
            if let Some(local) = self.local_folded.get(&folded) {
                let name = local.clone();
                if self.conflicted.insert(folded) {
                    self.events.push_back(ChatEvent::NameConflict { name });
                }
            }
        }
    }
}
