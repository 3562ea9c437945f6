//! Members of the other processes, from presence: who is in which room,
//! when each was last heard of, and which names (folded) they hold.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::services::chat::names::fold;

#[derive(Debug)]
struct Entry {
    room: String,
    seen: Instant,
}

/// What [`Roster::upsert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Upsert {
    /// Not known before.
    New,
    /// Known, in this other room before.
    Moved(String),
    /// Known, same room: only refreshed.
    Same,
    /// Not known, and the roster is full: ignored.
    Full,
}

/// Remote members, at most `max`.
#[derive(Debug)]
pub(crate) struct Roster {
    members: HashMap<(u64, String), Entry>,
    /// Folded name to the origins holding it.
    claims: HashMap<String, BTreeSet<u64>>,
    max: usize,
}

impl Roster {
    pub(crate) fn new(max: usize) -> Roster {
        Roster {
            members: HashMap::new(),
            claims: HashMap::new(),
            max,
        }
    }

    /// Records `name` of `origin` in `room`, seen `now`.
    pub(crate) fn upsert(&mut self, origin: u64, name: &str, room: &str, now: Instant) -> Upsert {
        if let Some(entry) = self.members.get_mut(&(origin, name.to_owned())) {
            entry.seen = now;
            if entry.room == room {
                return Upsert::Same;
            }
            return Upsert::Moved(std::mem::replace(&mut entry.room, room.to_owned()));
        }
        if self.members.len() >= self.max {
            return Upsert::Full;
        }
        let entry = Entry {
            room: room.to_owned(),
            seen: now,
        };
        self.members.insert((origin, name.to_owned()), entry);
        self.claims.entry(fold(name)).or_default().insert(origin);
        Upsert::New
    }

    /// Forgets `name` of `origin`; the room it was in.
    pub(crate) fn remove(&mut self, origin: u64, name: &str) -> Option<String> {
        let entry = self.members.remove(&(origin, name.to_owned()))?;
        let folded = fold(name);
        if let Some(origins) = self.claims.get_mut(&folded) {
            origins.remove(&origin);
            if origins.is_empty() {
                self.claims.remove(&folded);
            }
        }
        Some(entry.room)
    }

    /// Forgets members not heard of for `ttl`: their `(room, name)`,
    /// sorted.
    pub(crate) fn expire(&mut self, now: Instant, ttl: Duration) -> Vec<(String, String)> {
        let stale: Vec<(u64, String)> = self
            .members
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.seen) >= ttl)
            .map(|(key, _)| key.clone())
            .collect();
        let mut gone: Vec<(String, String)> = stale
            .into_iter()
            .filter_map(|(origin, name)| Some((self.remove(origin, &name)?, name)))
            .collect();
        gone.sort();
        gone
    }

    /// The names in `room`, sorted.
    pub(crate) fn room(&self, room: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .members
            .iter()
            .filter(|(_, e)| e.room == room)
            .map(|((_, name), _)| name.clone())
            .collect();
        names.sort();
        names
    }

    /// The lowest origin holding a name that folds like `name`.
    pub(crate) fn holder(&self, name: &str) -> Option<u64> {
        self.claims.get(&fold(name))?.first().copied()
    }

    /// Every room's names, sorted.
    pub(crate) fn all(&self) -> BTreeMap<String, Vec<String>> {
        let mut rooms: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for ((_, name), entry) in &self.members {
            rooms
                .entry(entry.room.clone())
                .or_default()
                .push(name.clone());
        }
        rooms.values_mut().for_each(|names| names.sort());
        rooms
    }

    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }
}
