//! The chat's bus connection, driven by the loop: one [`ChatBus`] on one
//! shard of the process (the one that made the first chat), on an
//! outbound connection of that shard ([`ShardContext::connect`]).
//!
//! That shard sees every message of the process (its own members' and,
//! through the mailboxes, the other shards'), so it publishes each once;
//! what other processes publish it delivers to its members and posts to
//! the other shards, as it does for a local message.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::room::Rooms;
use crate::bus::chat::{ChatBus, ChatBusConfig, ChatEvent};
use crate::bus::{BusConfig, BusCounters};
use crate::service::{ConnId, Loop, ShardContext, TimerId};

/// What members are told when the bus goes down ...
pub(crate) const DEGRADED: &str =
    "the bus is down: rooms reach this server's members only until it is back";
/// ... and when it is back.
pub(crate) const RECOVERED: &str = "the bus is back: rooms span servers again";

/// The key of the bus's shard timer.
pub(crate) const BUS_TIMER: u64 = 2;

/// Bytes the bus connection's write buffer may hold before the rest
/// waits in the bus's own bounded queue (256 KiB).
const WRITE_AHEAD: usize = 256 * 1024;

/// How often the rosters are synced with the directory at most (1 s,
/// within the 2 s heartbeat).
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// How soon a queue the socket could not take is offered again.
const FLUSH_RETRY: Duration = Duration::from_millis(5);

/// The bus, its socket, and its timer.
#[derive(Debug)]
pub(crate) struct BusLink {
    config: Option<BusConfig>,
    origin: u64,
    bus: Option<ChatBus>,
    conn: Option<ConnId>,
    timer: Option<(Instant, TimerId)>,
    /// When the rosters were last synced.
    synced: Option<Instant>,
    /// The connection's counters as last added to the service's.
    reported: BusCounters,
}

impl BusLink {
    pub(crate) fn new(config: BusConfig, origin: u64) -> BusLink {
        BusLink {
            config: Some(config),
            origin,
            bus: None,
            conn: None,
            timer: None,
            synced: None,
            reported: BusCounters::default(),
        }
    }

    /// Whether `id` is the bus's socket.
    pub(crate) fn owns(&self, id: ConnId) -> bool {
        self.conn == Some(id)
    }

    /// Starts the bus on its shard's first callback (there is no earlier
    /// one), then hands it what the rooms relayed and runs its events.
    pub(crate) fn drive(&mut self, shard: &mut ShardContext<'_>, rooms: &mut Rooms) {
        let now = shard.now();
        if let Some(config) = self.config.take() {
            rooms.tap();
            match ChatBus::new(config, ChatBusConfig::default(), self.origin, now) {
                Ok(bus) => self.bus = Some(bus),
                Err(e) => log::error!("bus: {e}"),
            }
        }
        let Some(bus) = &mut self.bus else { return };
        for message in rooms.take_tapped() {
            // A full queue is counted by the connection; local delivery
            // has happened already.
            let _ = bus.send(
                &message.from,
                &message.room,
                &message.content,
                &message.time,
            );
        }
        self.events(shard, rooms, now);
    }

    pub(crate) fn connected(&mut self, shard: &mut ShardContext<'_>, rooms: &mut Rooms) {
        if let Some(bus) = &mut self.bus {
            bus.handle_connected(shard.now());
        }
        self.drive(shard, rooms);
    }

    /// The socket failed to connect or closed.
    pub(crate) fn lost(&mut self, shard: &mut ShardContext<'_>, rooms: &mut Rooms) {
        self.conn = None;
        if let Some(bus) = &mut self.bus {
            bus.handle_disconnected(shard.now());
        }
        self.drive(shard, rooms);
    }

    pub(crate) fn input(&mut self, shard: &mut ShardContext<'_>, rooms: &mut Rooms, data: &[u8]) {
        if let Some(bus) = &mut self.bus {
            bus.handle_input(shard.now(), data);
        }
        self.drive(shard, rooms);
    }

    /// The bus's timer: its deadlines, and the rosters synced both ways
    /// (this process's members for the heartbeats, the others' into the
    /// directory for `/list`, `/rooms` and names).
    pub(crate) fn timer(&mut self, shard: &mut ShardContext<'_>, rooms: &mut Rooms) {
        self.timer = None;
        let now = shard.now();
        if let Some(bus) = &mut self.bus {
            // Not on every flush retry: the sync walks every roster.
            let sync = self.synced.is_none_or(|at| now >= at + SYNC_EVERY);
            if sync {
                self.synced = Some(now);
                bus.set_local(&rooms.directory().local_members());
            }
            bus.handle_timeout(now);
            if sync {
                rooms.directory().set_remote(bus.rosters());
            }
        }
        self.drive(shard, rooms);
    }

    fn events(&mut self, shard: &mut ShardContext<'_>, rooms: &mut Rooms, now: Instant) {
        let Some(bus) = &mut self.bus else { return };
        while let Some(event) = bus.poll_event() {
            match event {
                ChatEvent::Dial(url) => {
                    // `--bus` resolved names to addresses at start.
                    let addr = url
                        .host
                        .parse::<IpAddr>()
                        .map(|ip| SocketAddr::new(ip, url.port));
                    match addr
                        .map_err(|e| e.to_string())
                        .and_then(|addr| shard.connect(addr).map_err(|e| format!("{e:?}")))
                    {
                        Ok(id) => self.conn = Some(id),
                        Err(e) => {
                            log::warn!("bus: cannot connect to {url}: {e}");
                            bus.handle_disconnected(now);
                        }
                    }
                }
                ChatEvent::Close => {
                    if let Some(id) = self.conn.take() {
                        shard.close_conn(id);
                    }
                }
                ChatEvent::Deliver(message) => rooms.relay_from_bus(shard, message),
                ChatEvent::Degraded => {
                    log::warn!("bus: down; chat is local only until it is back");
                    rooms.bus_notice(shard, DEGRADED, shard.wall_clock());
                }
                ChatEvent::Recovered => {
                    log::info!("bus: connected again");
                    rooms.bus_notice(shard, RECOVERED, shard.wall_clock());
                }
                // Notices travel as `System` messages; rosters are synced
                // on the timer.
                ChatEvent::Joined { .. } | ChatEvent::Left { .. } => {}
                // A lower origin holds the name: ours takes the next free
                // suffix, announced on the bus at once.
                ChatEvent::NameConflict { name } => {
                    if let Some((new, room)) = rooms.directory().rename(&name) {
                        log::info!("bus: {name:?} is held on another server: renamed {new:?}");
                        bus.left(&name);
                        bus.joined(&new, &room);
                        rooms.rename(shard, &name, &new, shard.wall_clock());
                    }
                }
            }
        }
        let mut backlog = false;
        if let Some(id) = self.conn {
            while shard.write_buffered_of(id).is_some_and(|n| n < WRITE_AHEAD) {
                match bus.poll_transmit() {
                    Some(bytes) => {
                        shard.send_to(id, &bytes);
                    }
                    None => break,
                }
            }
            backlog = bus.connection().queued() > 0 && bus.connection().is_connected();
        }
        let now_counted = bus.connection().counters();
        report(shard, &mut self.reported, now_counted);
        let mut due = bus.poll_timeout().unwrap_or(now + Duration::from_secs(1));
        if backlog {
            due = due.min(now + FLUSH_RETRY);
        }
        self.arm(shard, now, due);
    }

    /// Keeps one timer armed, at the earliest deadline asked.
    fn arm(&mut self, shard: &mut ShardContext<'_>, now: Instant, due: Instant) {
        if let Some((at, id)) = self.timer {
            if at <= due {
                return;
            }
            shard.cancel_timer(id);
        }
        let id = Loop::arm_timer(shard, due.saturating_duration_since(now), BUS_TIMER);
        self.timer = Some((due, id));
    }
}

/// Adds what the connection counted since `reported` to the chat's
/// service counters (`BUS_COUNTERS` in the chat's list, from
/// [`BUS_COUNTER_BASE`]).
fn report(shard: &mut ShardContext<'_>, reported: &mut BusCounters, now: BusCounters) {
    let base = BUS_COUNTER_BASE;
    match (reported.connected, now.connected) {
        (false, true) => shard.add(base, 1),
        (true, false) => shard.sub(base, 1),
        _ => {}
    }
    shard.add(base + 1, now.published - reported.published);
    shard.add(base + 2, now.received - reported.received);
    shard.add(base + 3, now.dropped - reported.dropped);
    shard.add(base + 4, now.reconnects - reported.reconnects);
    *reported = now;
}

/// Where the bus's counters start in the chat's counter list.
pub(crate) const BUS_COUNTER_BASE: usize = 2;
