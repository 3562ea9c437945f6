//! One shard's side of the chat, sans-IO: members' bytes and the time come
//! in, bytes for members and messages for the other shards go out through
//! an [`Outbox`]. The service adapter drives it from the event loop; tests
//! drive it with a recorder and a fixed clock.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prost::Message;

use super::command::{valid_name, valid_room, Command, HELP};
use super::directory::Directory;
use super::names::{self, BadName};
use super::outgoing::Outgoing;
use super::ChatConfig;
use crate::codec::{drive, Decoder, Flow};
use crate::protocol::chat::{
    clock, decode_message, decode_name, ChatMessage, DecodeError, Encoding, PROMPT, SYSTEM,
};
use crate::service::ConnId;

/// Where everyone starts, and where `/leave` goes back to.
pub(crate) const LOBBY: &str = "lobby";
/// Most names a `/list` or `/rooms` reply spells out.
const LIST_MAX: usize = 100;
/// Most names a batched notice spells out for its joins, and for its
/// leaves ("12 joined lobby: ann, bob, carol, dan, eve and 7 more").
const NOTICE_NAMES: usize = 5;
/// Most rooms with a notice batch waiting on one shard; a join or leave
/// that would start one more is announced at once, as in a small room.
/// (A batch needs a room of `notice_batch_from` members, so this binds
/// only with a low threshold.)
const MAX_BATCHES: usize = 1024;
/// What an unknown command gets (after `error: `), whatever it was: a
/// fixed reply, so a long one is not sent back, and a strike.
const UNKNOWN_COMMAND: &str = "unknown command; /help lists the commands";
/// Most messages waiting for one other shard whose inbox was full, and
/// most bytes (1,024 messages, 1 MiB): beyond either, a message for that
/// shard is dropped, counted, and its sender told. Each waiting sender is
/// paused, so it adds at most one message (and the notice of a move) to
/// the queue: the bound is reached only by that many senders at once.
pub(crate) const BACKLOG_MESSAGES: usize = 1024;
/// See [`BACKLOG_MESSAGES`].
pub(crate) const BACKLOG_BYTES: usize = 1024 * 1024;
/// How soon a waiting queue is posted again (the server's timer tick,
/// 1 ms by default, is the finest step).
pub(crate) const RETRY_AFTER: Duration = Duration::from_millis(1);

/// What the chat does to the world.
pub(crate) trait Outbox {
    /// Queues `bytes` for connection `to` on this shard.
    fn send(&mut self, to: ConnId, bytes: &[u8]);
    /// Closes connection `id` once what it was sent is flushed.
    fn close(&mut self, id: ConnId);
    /// This shard's index, and how many shards there are.
    fn shards(&self) -> (usize, usize);
    /// Hands `message` (an encoded [`ChatMessage`]) to the chat on shard
    /// `shard`, for the members of its room there; false if that shard's
    /// inbox is full (nothing is counted: the chat keeps it and retries).
    fn post_to(&mut self, shard: usize, message: &Arc<[u8]>) -> bool;
    /// Stops reading member `id` until [`resume`](Self::resume): its
    /// messages wait for a full inbox.
    fn pause(&mut self, id: ConnId);
    /// Reads member `id` again, first what it sent and the chat did not
    /// take when it was paused.
    fn resume(&mut self, id: ConnId);
    /// Asks for one call of [`Rooms::retry`] after `after`: messages wait
    /// for other shards' inboxes.
    fn arm_retry(&mut self, after: Duration);
    /// Counts a message for another shard given up (its queue was full),
    /// and a pause of a sender.
    fn count(&mut self, what: Counted);
    /// Whether member `id` may send one more message now (the server's
    /// message rate).
    fn take_token(&mut self, id: ConnId) -> bool;
    /// Counts a protocol error against member `id`'s address; true if that
    /// got the address banned (the server then closes the connection).
    fn strike(&mut self, id: ConnId, why: &str) -> bool;
    /// Asks for one call of [`Rooms::timer`] after `after`: the waiting
    /// notice batches are due.
    fn arm_timer(&mut self, after: Duration);
}

/// What the chat counts besides frames (its service counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    /// A message for another shard dropped: that shard's queue was full.
    Dropped,
    /// A member paused because its message waits for a full inbox.
    Paused,
}

/// Messages for one other shard that its inbox refused, oldest first:
/// while any wait, later ones queue behind them, so every sender's order
/// holds. The senders whose messages wait here are paused.
#[derive(Debug, Default)]
struct Backlog {
    queue: VecDeque<Arc<[u8]>>,
    bytes: usize,
    senders: HashSet<ConnId>,
}

/// Joins and leaves in a large room waiting to be announced together.
#[derive(Debug, Default)]
struct Batch {
    joined: Names,
    left: Names,
    /// The member of the batch's first event: told nothing if it is the
    /// only one (as in a small room, nobody hears of their own move).
    first: Option<ConnId>,
}

/// How many joined (or left), and the first few names.
#[derive(Debug, Default)]
struct Names {
    count: usize,
    shown: Vec<Arc<str>>,
}

impl Names {
    fn add(&mut self, name: &Arc<str>) {
        self.count += 1;
        if self.shown.len() < NOTICE_NAMES {
            self.shown.push(Arc::clone(name));
        }
    }

    /// "12 joined lobby: ann, bob, carol, dan, eve and 7 more".
    fn text(&self, verb: &str, room: &str) -> String {
        let shown: Vec<&str> = self.shown.iter().map(|name| &**name).collect();
        let (count, listed) = (self.count, shown.join(", "));
        format!(
            "{count} {verb} {room}: {listed}{}",
            more(count, shown.len())
        )
    }
}

impl Batch {
    /// The one notice for the batch: today's text for a single event.
    fn text(&self, room: &str) -> String {
        match (&self.joined, &self.left) {
            (one, none) if one.count == 1 && none.count == 0 => {
                format!("{} joined {room}", one.shown[0])
            }
            (none, one) if one.count == 1 && none.count == 0 => {
                format!("{} left {room}", one.shown[0])
            }
            (joined, left) => {
                let parts = [(joined, "joined"), (left, "left")];
                let parts = parts.iter().filter(|(names, _)| names.count > 0);
                let parts: Vec<String> = parts.map(|(n, verb)| n.text(verb, room)).collect();
                parts.join("; ")
            }
        }
    }
}

/// A join or a leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Move {
    Joined,
    Left,
}

/// One member's frames: its name while it has none (a bare line, or a
/// protobuf message whose content is the name), then messages. The room
/// says which through `naming`, since a refused name is asked for again.
struct MemberDecoder<'n> {
    encoding: Encoding,
    max_frame: usize,
    naming: &'n Cell<bool>,
}

impl Decoder for MemberDecoder<'_> {
    /// The name, or the message's content.
    type Frame<'a> = String;
    type Error = DecodeError;

    fn decode(&mut self, data: &[u8]) -> Result<Option<(String, usize)>, DecodeError> {
        let (encoding, max) = (self.encoding, self.max_frame);
        match self.naming.get() {
            true => decode_name(encoding, max, data),
            false => decode_message(encoding, max, data)
                .map(|got| got.map(|(message, used)| (message.content, used))),
        }
    }
}

#[derive(Debug)]
struct Member {
    encoding: Encoding,
    /// `None` until the username arrives.
    name: Option<Arc<str>>,
    room: Arc<str>,
    errors: u32,
}

/// The members served by one shard, and the rooms they are in.
#[derive(Debug)]
pub(crate) struct Rooms {
    config: ChatConfig,
    directory: Arc<Directory>,
    members: HashMap<ConnId, Member>,
    /// Named members on this shard, per room; a room with none is removed.
    rooms: HashMap<Arc<str>, Vec<ConnId>>,
    lobby: Arc<str>,
    /// Frames decoded since [`take_decoded`](Self::take_decoded), for the
    /// metrics.
    decoded: u64,
    /// Large rooms' joins and leaves not yet announced, by room.
    batches: BTreeMap<Arc<str>, Batch>,
    /// Whether [`Outbox::arm_timer`] was asked and has not fired yet.
    timer_armed: bool,
    /// Per other shard, messages its inbox refused (empty until a shard
    /// first refuses one).
    backlogs: Vec<Backlog>,
    /// Paused members, and how many backlogs hold their messages.
    paused: HashMap<ConnId, usize>,
    /// Whether [`Outbox::arm_retry`] was asked and has not fired yet.
    retry_armed: bool,
    /// On the shard that holds the bus connection: every message of this
    /// process's members (and `System`'s), for the bus. Drained after
    /// every callback.
    tap: Option<Vec<ChatMessage>>,
}

impl Rooms {
    pub(crate) fn new(config: ChatConfig, directory: Arc<Directory>) -> Rooms {
        Rooms {
            config,
            directory,
            members: HashMap::new(),
            rooms: HashMap::new(),
            lobby: LOBBY.into(),
            decoded: 0,
            batches: BTreeMap::new(),
            timer_armed: false,
            backlogs: Vec::new(),
            paused: HashMap::new(),
            retry_armed: false,
            tap: None,
        }
    }

    /// A connection arrived: prompt it for a username.
    pub(crate) fn open(&mut self, out: &mut impl Outbox, id: ConnId, encoding: Encoding) {
        let member = Member {
            encoding,
            name: None,
            room: Arc::clone(&self.lobby),
            errors: 0,
        };
        self.members.insert(id, member);
        self.prompt(out, id);
    }

    /// Handles what member `id` sent; returns the bytes used. After the
    /// member is closed, everything counts as used; once it is paused (a
    /// message of its waits for a full inbox), the rest is left to be
    /// offered again when it is resumed.
    pub(crate) fn input(
        &mut self,
        out: &mut impl Outbox,
        id: ConnId,
        data: &[u8],
        now: SystemTime,
    ) -> usize {
        let Some(member) = self.members.get(&id) else {
            return data.len();
        };
        if self.paused.contains_key(&id) {
            return 0; // waiting for another shard's inbox: input stays put
        }
        let naming = Cell::new(member.name.is_none());
        let mut decoder = MemberDecoder {
            encoding: member.encoding,
            max_frame: self.config.max_frame,
            naming: &naming,
        };
        drive(&mut decoder, data, |frame| {
            match frame {
                Ok(text) => {
                    self.decoded += 1;
                    match naming.get() {
                        true => self.name(out, id, &text, now),
                        false => self.command(out, id, &text, now),
                    }
                }
                // A frame that is not a message: a strike, then go on.
                Err(e) if e.used().is_some() => {
                    self.strike(out, id, &e.to_string(), now);
                }
                // The stream cannot be followed past it: reply, close.
                Err(e) => {
                    let reason = e.to_string();
                    self.reply(out, id, &format!("error: {reason}; disconnecting"), now);
                    out.strike(id, &reason);
                    self.leave(out, id, now);
                    out.close(id);
                }
            }
            // The member may be gone (a ban, /quit), paused (another
            // shard's inbox is full), or now named.
            match self.members.get(&id) {
                None => Flow::Close,
                Some(_) if self.paused.contains_key(&id) => Flow::Pause,
                Some(member) => {
                    naming.set(member.name.is_none());
                    Flow::Continue
                }
            }
        })
    }

    /// Frames decoded since the last call.
    pub(crate) fn take_decoded(&mut self) -> u64 {
        std::mem::take(&mut self.decoded)
    }

    /// The names and rosters shared by the shards.
    pub(crate) fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Makes this shard the one that publishes to the bus: every message
    /// relayed here or received from another shard is kept for
    /// [`take_tapped`](Self::take_tapped).
    pub(crate) fn tap(&mut self) {
        self.tap.get_or_insert_with(Vec::new);
    }

    /// The messages kept for the bus since the last call.
    pub(crate) fn take_tapped(&mut self) -> Vec<ChatMessage> {
        self.tap.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// A message from another process (through the bus): to this shard's
    /// members of its room and to the other shards, not back to the bus.
    pub(crate) fn relay_from_bus(&mut self, out: &mut impl Outbox, message: ChatMessage) {
        self.post(out, &message, None);
        self.deliver(out, Outgoing::new(message), None);
    }

    /// Tells every room of the process (all shards) `text` from
    /// `System`, not through the bus: the bus going down or coming back.
    pub(crate) fn bus_notice(&mut self, out: &mut impl Outbox, text: &str, now: SystemTime) {
        let (rooms, _) = self.directory.rooms(usize::MAX);
        for (room, _) in rooms {
            self.relay_from_bus(out, system(text.into(), clock(now), &room));
        }
    }

    /// Another process won local member `old`'s name, and the directory
    /// renamed it `new` (see [`Directory::rename`]): the member, on this
    /// shard or another, is told, and its room sees "old is now new".
    pub(crate) fn rename(&mut self, out: &mut impl Outbox, old: &str, new: &str, now: SystemTime) {
        if !self.renamed(out, old, new, now) {
            self.post(out, &rename_note(old, new), None);
        }
    }

    /// Renames member `old` if it is on this shard; false if it is not.
    fn renamed(&mut self, out: &mut impl Outbox, old: &str, new: &str, now: SystemTime) -> bool {
        let Some((&id, member)) =
            (self.members.iter_mut()).find(|(_, member)| member.name.as_deref() == Some(old))
        else {
            return false;
        };
        member.name = Some(new.into());
        let room = Arc::clone(&member.room);
        let told = format!("{old} is taken on another server, so you are {new}.");
        self.reply(out, id, &told, now);
        let notice = system(format!("{old} is now {new}"), clock(now), &room);
        self.relay(out, notice, Some(id), None);
        true
    }

    /// A message from another shard's member: deliver it to this shard's
    /// members of its room (or a [`rename_note`]: rename its member).
    pub(crate) fn remote(&mut self, out: &mut impl Outbox, message: ChatMessage, now: SystemTime) {
        if message.from.is_empty() {
            self.renamed(out, &message.room, &message.content, now);
            return;
        }
        if let Some(tap) = &mut self.tap {
            tap.push(message.clone());
        }
        self.deliver(out, Outgoing::new(message), None);
    }

    /// The timer asked with [`Outbox::arm_timer`] fired: announce each
    /// waiting batch, one notice per room, here and on the other shards.
    pub(crate) fn timer(&mut self, out: &mut impl Outbox, now: SystemTime) {
        self.timer_armed = false;
        for (room, batch) in std::mem::take(&mut self.batches) {
            let except = match batch.joined.count + batch.left.count {
                1 => batch.first,
                _ => None,
            };
            let text = batch.text(&room);
            self.relay(out, system(text, clock(now), &room), except, None);
        }
    }

    /// The timer asked with [`Outbox::arm_retry`] fired: posts what waits
    /// for each shard, in order, until its inbox refuses again; a queue
    /// emptied resumes its senders (those with nothing waiting elsewhere).
    pub(crate) fn retry(&mut self, out: &mut impl Outbox) {
        self.retry_armed = false;
        let mut waiting = false;
        for (shard, backlog) in self.backlogs.iter_mut().enumerate() {
            while let Some(message) = backlog.queue.front() {
                if !out.post_to(shard, message) {
                    break;
                }
                backlog.bytes -= message.len();
                backlog.queue.pop_front();
            }
            if !backlog.queue.is_empty() {
                waiting = true;
                continue;
            }
            for id in backlog.senders.drain() {
                if let Some(count) = self.paused.get_mut(&id) {
                    *count -= 1;
                    if *count == 0 {
                        self.paused.remove(&id);
                        out.resume(id);
                    }
                }
            }
        }
        if waiting {
            self.arm_retry(out);
        }
    }

    /// Messages waiting for other shards' inboxes, in all.
    #[cfg(test)]
    pub(crate) fn backlog(&self) -> usize {
        self.backlogs.iter().map(|b| b.queue.len()).sum()
    }

    /// Connection `id` is gone (for members the chat closed itself, this
    /// already happened).
    pub(crate) fn closed(&mut self, out: &mut impl Outbox, id: ConnId, now: SystemTime) {
        self.leave(out, id, now);
        // Its messages still go out; only the resume is forgotten.
        if self.paused.remove(&id).is_some() {
            for backlog in &mut self.backlogs {
                backlog.senders.remove(&id);
            }
        }
    }

    fn prompt(&mut self, out: &mut impl Outbox, id: ConnId) {
        match self.members[&id].encoding {
            Encoding::Json => out.send(id, PROMPT.as_bytes()),
            Encoding::Protobuf => {
                let message = system(PROMPT.into(), String::new(), &self.lobby);
                out.send(id, Outgoing::new(message).bytes(Encoding::Protobuf));
            }
        }
    }

    fn name(&mut self, out: &mut impl Outbox, id: ConnId, text: &str, now: SystemTime) {
        let wanted = text.trim();
        let name = match wanted {
            "" => self.directory.claim(None),
            wanted if valid_name(wanted) => self.directory.claim(Some(wanted)),
            wanted => {
                let bad = names::check(wanted).err().unwrap_or(BadName::Length);
                if !self.strike(out, id, &bad.message(), now) {
                    self.prompt(out, id);
                }
                return;
            }
        };
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        member.name = Some(Arc::clone(&name));
        let lobby = Arc::clone(&self.lobby);
        let count = self.directory.enter(&name, None, &lobby);
        self.rooms.entry(Arc::clone(&lobby)).or_default().push(id);
        let taken = match wanted {
            "" => String::new(),
            wanted if wanted != &*name => format!("{wanted} is taken, so you are {name}. "),
            _ => String::new(),
        };
        let welcome = format!("Welcome, {name}! {taken}{}. {HELP}", here(&lobby, count));
        self.reply(out, id, &welcome, now);
        self.announce(out, id, &lobby, &name, Move::Joined, count, now);
    }

    fn command(&mut self, out: &mut impl Outbox, id: ConnId, content: &str, now: SystemTime) {
        let room = Arc::clone(&self.members[&id].room);
        match Command::parse(content) {
            Command::Say("") => {}
            Command::Say(text) if text.len() > self.config.max_content => {
                let max = self.config.max_content;
                let error = format!(
                    "message of {} bytes is over the {max}-byte limit",
                    text.len()
                );
                self.strike(out, id, &error, now);
            }
            Command::Say(_) if !out.take_token(id) => {
                self.strike(out, id, "over the message rate; message dropped", now);
            }
            Command::Say(text) => {
                let from = self.members[&id].name.as_deref().unwrap_or_default();
                let message = ChatMessage {
                    from: from.to_owned(),
                    content: text.to_owned(),
                    time: clock(now),
                    room: room.to_string(),
                };
                if !self.relay(out, message, Some(id), Some(id)) {
                    let error = "error: the server is busy: members on another shard missed that";
                    self.reply(out, id, error, now);
                }
            }
            Command::Join(to) if !valid_room(to) => {
                let error = "error: room names are 1 to 32 of A-Z a-z 0-9 _ - .";
                self.reply(out, id, error, now);
            }
            Command::Join(to) if to == &*room => {
                self.reply(out, id, &format!("you are in {room} already"), now);
            }
            Command::Join(to) => self.move_to(out, id, to.into(), now),
            Command::Leave if room == self.lobby => {
                let text = "you are in the lobby already; /quit leaves the chat";
                self.reply(out, id, text, now);
            }
            Command::Leave => self.move_to(out, id, Arc::clone(&self.lobby), now),
            Command::List => {
                let (names, total) = self.directory.roster(&room, LIST_MAX);
                let names: Vec<&str> = names.iter().map(|name| &**name).collect();
                let text = format!(
                    "{total} in {room}: {}{}",
                    names.join(", "),
                    more(total, LIST_MAX)
                );
                self.reply(out, id, &text, now);
            }
            Command::Rooms => {
                let (rooms, total) = self.directory.rooms(LIST_MAX);
                let rooms: Vec<String> = rooms.iter().map(|(r, n)| format!("{r} ({n})")).collect();
                let text = format!(
                    "{total} rooms: {}{}",
                    rooms.join(", "),
                    more(total, LIST_MAX)
                );
                self.reply(out, id, &text, now);
            }
            Command::Quit => {
                self.reply(out, id, "goodbye", now);
                self.leave(out, id, now);
                out.close(id);
            }
            Command::Help => self.reply(out, id, HELP, now),
            // Never echoed: the command may be 16 KiB of anything.
            Command::Unknown(_) => {
                self.strike(out, id, UNKNOWN_COMMAND, now);
            }
        }
    }

    fn move_to(&mut self, out: &mut impl Outbox, id: ConnId, to: Arc<str>, now: SystemTime) {
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        let from = std::mem::replace(&mut member.room, Arc::clone(&to));
        let Some(name) = member.name.clone() else {
            return;
        };
        let (left, count) = self.directory.move_to(&name, &from, &to);
        self.exit_local(id, &from);
        self.announce(out, id, &from, &name, Move::Left, left + 1, now);
        self.rooms.entry(Arc::clone(&to)).or_default().push(id);
        self.reply(out, id, &format!("{}.", here(&to, count)), now);
        self.announce(out, id, &to, &name, Move::Joined, count, now);
    }

    /// Counts a protocol error against `id` and tells it so; at the limit
    /// the member is disconnected. Returns true if it was.
    fn strike(&mut self, out: &mut impl Outbox, id: ConnId, error: &str, now: SystemTime) -> bool {
        let Some(member) = self.members.get_mut(&id) else {
            return true;
        };
        member.errors += 1;
        let last = member.errors >= self.config.max_errors;
        self.reply(out, id, &format!("error: {error}"), now);
        if out.strike(id, error) {
            // The address is banned: the server is closing the connection.
            self.leave(out, id, now);
            return true;
        }
        if last {
            let max = self.config.max_errors;
            self.reply(
                out,
                id,
                &format!("{max} invalid messages: disconnecting"),
                now,
            );
            self.leave(out, id, now);
            out.close(id);
        }
        last
    }

    /// Forgets `id`: out of its room (with a notice) and its name freed.
    fn leave(&mut self, out: &mut impl Outbox, id: ConnId, now: SystemTime) {
        let Some(member) = self.members.remove(&id) else {
            return;
        };
        if let Some(name) = member.name {
            let left = self.directory.release(&name, &member.room);
            self.exit_local(id, &member.room);
            self.announce(out, id, &member.room, &name, Move::Left, left + 1, now);
        }
    }

    fn exit_local(&mut self, id: ConnId, room: &str) {
        if let Some(members) = self.rooms.get_mut(room) {
            members.retain(|&m| m != id);
            if members.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    /// A `System` message to one member.
    fn reply(&mut self, out: &mut impl Outbox, id: ConnId, text: &str, now: SystemTime) {
        if let Some(member) = self.members.get(&id) {
            let message = system(text.into(), clock(now), &member.room);
            out.send(id, Outgoing::new(message).bytes(member.encoding));
        }
    }

    /// Tells `room` that `who` (member `id`) joined or left it; `size` is
    /// how many members the room has counting `who`, on every shard. In a
    /// room of fewer than `notice_batch_from` members that is one notice
    /// now, to everyone else in the room; in a larger one (or one with a
    /// batch waiting) the move joins the room's batch, announced when the
    /// notice timer fires, so a room hears at most one such notice from
    /// this shard per `notice_interval`.
    #[allow(clippy::too_many_arguments)]
    fn announce(
        &mut self,
        out: &mut impl Outbox,
        id: ConnId,
        room: &Arc<str>,
        who: &Arc<str>,
        what: Move,
        size: usize,
        now: SystemTime,
    ) {
        let waiting = self.batches.contains_key(room);
        let large = size >= self.config.notice_batch_from && self.batches.len() < MAX_BATCHES;
        if !waiting && !large {
            let verb = match what {
                Move::Joined => "joined",
                Move::Left => "left",
            };
            let text = format!("{who} {verb} {room}");
            self.relay(out, system(text, clock(now), room), Some(id), Some(id));
            return;
        }
        let batch = self.batches.entry(Arc::clone(room)).or_default();
        batch.first.get_or_insert(id);
        match what {
            Move::Joined => batch.joined.add(who),
            Move::Left => batch.left.add(who),
        }
        if !self.timer_armed {
            self.timer_armed = true;
            out.arm_timer(self.config.notice_interval);
        }
    }

    /// Sends `message` to its room here (but to `except`) and on the other
    /// shards; false if some shard's queue was full, so its members missed
    /// it. Member `sender`, whose input it comes from, is paused while it
    /// waits for a full inbox.
    fn relay(
        &mut self,
        out: &mut impl Outbox,
        message: ChatMessage,
        except: Option<ConnId>,
        sender: Option<ConnId>,
    ) -> bool {
        if let Some(tap) = &mut self.tap {
            tap.push(message.clone());
        }
        let all = self.post(out, &message, sender);
        self.deliver(out, Outgoing::new(message), except);
        all
    }

    /// Posts `message` to every other shard: at once to a shard with
    /// nothing waiting whose inbox takes it, otherwise into that shard's
    /// backlog, `sender` paused, and the retry timer armed; dropped and
    /// counted when the backlog is full. False if it was dropped anywhere.
    fn post(
        &mut self,
        out: &mut impl Outbox,
        message: &ChatMessage,
        sender: Option<ConnId>,
    ) -> bool {
        let (me, shards) = out.shards();
        if shards <= 1 {
            return true;
        }
        if self.backlogs.len() < shards {
            self.backlogs.resize_with(shards, Backlog::default);
        }
        // A member that left is not paused; its messages still go out.
        let sender = sender.filter(|id| self.members.contains_key(id));
        let bytes: Arc<[u8]> = message.encode_to_vec().into();
        let (mut all, mut queued) = (true, false);
        for (shard, backlog) in self.backlogs.iter_mut().enumerate().take(shards) {
            if shard == me || (backlog.queue.is_empty() && out.post_to(shard, &bytes)) {
                continue;
            }
            let full = backlog.queue.len() >= BACKLOG_MESSAGES
                || backlog.bytes + bytes.len() > BACKLOG_BYTES;
            if full {
                out.count(Counted::Dropped);
                all = false;
                continue;
            }
            backlog.queue.push_back(Arc::clone(&bytes));
            backlog.bytes += bytes.len();
            queued = true;
            if let Some(id) = sender.filter(|&id| backlog.senders.insert(id)) {
                let count = self.paused.entry(id).or_default();
                *count += 1;
                if *count == 1 {
                    out.pause(id);
                    out.count(Counted::Paused);
                }
            }
        }
        if queued {
            self.arm_retry(out);
        }
        all
    }

    fn arm_retry(&mut self, out: &mut impl Outbox) {
        if !self.retry_armed {
            self.retry_armed = true;
            out.arm_retry(RETRY_AFTER);
        }
    }

    fn deliver(&mut self, out: &mut impl Outbox, mut message: Outgoing, except: Option<ConnId>) {
        let Some(ids) = self.rooms.get(message.message.room.as_str()) else {
            return;
        };
        for &id in ids.iter().filter(|&&id| Some(id) != except) {
            if let Some(member) = self.members.get(&id) {
                out.send(id, message.bytes(member.encoding));
            }
        }
    }
}

/// What a refused connection is told: one `System` error, no time (the
/// service is not running a turn for it).
pub(crate) fn refusal(encoding: Encoding, reason: &str) -> Vec<u8> {
    let message = system(
        format!("error: {reason}; try again later"),
        String::new(),
        "",
    );
    Outgoing::new(message).bytes(encoding).to_vec()
}

/// A rename between shards: a message from nobody (no member, nor
/// `System`, has an empty name), `room` the old name, `content` the new.
fn rename_note(old: &str, new: &str) -> ChatMessage {
    ChatMessage {
        from: String::new(),
        content: new.into(),
        room: old.into(),
        ..ChatMessage::default()
    }
}

fn system(content: String, time: String, room: &str) -> ChatMessage {
    ChatMessage {
        from: SYSTEM.into(),
        content,
        time,
        room: room.into(),
    }
}

/// "You are in den with 2 others", from the room's member count.
fn here(room: &str, count: usize) -> String {
    match count.saturating_sub(1) {
        0 => format!("You are in {room}, alone so far"),
        1 => format!("You are in {room} with 1 other"),
        others => format!("You are in {room} with {others} others"),
    }
}

fn more(total: usize, listed: usize) -> String {
    match total.saturating_sub(listed) {
        0 => String::new(),
        rest => format!(" and {rest} more"),
    }
}
