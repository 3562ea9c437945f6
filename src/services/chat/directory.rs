//! Who is in the chat: usernames and room rosters, shared by every shard.
//!
//! Messages travel between shards through their mailboxes; names do not.
//! A username must be unique across shards the moment it is granted, and
//! one table behind a lock is the simplest authority for that. It is
//! touched only when a member joins, moves, lists or leaves, never per
//! message, and never held across I/O. Its size follows the members: one
//! name each, and a room exists only while someone is in it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use super::names::{fold, reserved};

/// `-2` to `-16` are tried in order for a taken name; past them the suffix
/// comes from one counter that only grows, so granting a name costs a few
/// tries however many members asked for the same one.
const SUFFIXES_TRIED: u64 = 16;

/// The shared table; clone the `Arc` into every shard's chat.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    inner: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    /// The granted names, folded (see [`fold`]): two names that render
    /// alike are one name.
    names: HashSet<String>,
    /// Rosters hold names as shown.
    rooms: BTreeMap<Arc<str>, BTreeSet<Arc<str>>>,
    guests: u64,
    /// The last suffix handed out past [`SUFFIXES_TRIED`].
    suffixes: u64,
    /// Other processes' members by room, from the bus's presence (empty
    /// without a bus): listed by `/list` and `/rooms`, and their names
    /// (folded, in `remote_names`) are taken here too.
    remote: BTreeMap<String, BTreeSet<String>>,
    remote_names: HashSet<String>,
}

impl Directory {
    fn table(&self) -> MutexGuard<'_, Table> {
        // A shard that panicked mid-update leaves at worst a stale name:
        // keep serving the others.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Grants `wanted` if free (neither taken nor reserved, once folded),
    /// else the first free of `wanted-2` to `wanted-16`, else `wanted-N`
    /// for the next free N of a shared counter; `None` asks for a
    /// generated `guest-N`. The name is granted as typed.
    pub(crate) fn claim(&self, wanted: Option<&str>) -> Arc<str> {
        let mut table = self.table();
        let (name, folded) = match wanted {
            Some(wanted) => table.first_free(wanted, 1),
            None => loop {
                table.guests += 1;
                let name = format!("guest-{}", table.guests);
                let folded = fold(&name);
                if table.free(&name, &folded) {
                    break (name, folded);
                }
            },
        };
        table.names.insert(folded);
        name.into()
    }

    /// Another process won local member `name`: it becomes the first free
    /// of `name-2`, `name-3`, ... (as [`claim`](Self::claim) suffixes a
    /// taken name), in the same room. Returns the new name and the room;
    /// `None` if `name` is no longer here (it left meanwhile).
    pub(crate) fn rename(&self, name: &str) -> Option<(Arc<str>, Arc<str>)> {
        let mut table = self.table();
        let room = (table.rooms.iter())
            .find(|(_, roster)| roster.contains(name))
            .map(|(room, _)| Arc::clone(room))?;
        let (new, folded) = table.first_free(name, 2);
        table.names.remove(&fold(name));
        table.names.insert(folded);
        let new: Arc<str> = new.into();
        table.exit(&room, name);
        table.enter(&new, &room);
        Some((new, room))
    }

    /// Gives a name back, taking it out of `room`'s roster; returns how
    /// many members `room` still has.
    pub(crate) fn release(&self, name: &str, room: &str) -> usize {
        let mut table = self.table();
        table.names.remove(&fold(name));
        table.exit(room, name)
    }

    /// Moves `name` from room `from` (if any) into room `to`; returns how
    /// many members `to` then has.
    pub(crate) fn enter(&self, name: &Arc<str>, from: Option<&str>, to: &Arc<str>) -> usize {
        let mut table = self.table();
        if let Some(from) = from {
            table.exit(from, name);
        }
        table.enter(name, to)
    }

    /// Moves `name` from room `from` into room `to`; returns how many
    /// members `from` has left and `to` then has.
    pub(crate) fn move_to(&self, name: &Arc<str>, from: &str, to: &Arc<str>) -> (usize, usize) {
        let mut table = self.table();
        let left = table.exit(from, name);
        (left, table.enter(name, to))
    }

    /// Up to `max` members of `room` (this process's and, with a bus,
    /// the others'), sorted, and how many there are.
    pub(crate) fn roster(&self, room: &str, max: usize) -> (Vec<Arc<str>>, usize) {
        let table = self.table();
        let local = table.rooms.get(room).into_iter().flatten().map(|n| &**n);
        let remote = table
            .remote
            .get(room)
            .into_iter()
            .flatten()
            .map(String::as_str);
        let all: BTreeSet<&str> = local.chain(remote).collect();
        (all.iter().take(max).map(|&n| n.into()).collect(), all.len())
    }

    /// Up to `max` rooms with their member counts (all processes'),
    /// sorted, and how many rooms there are.
    pub(crate) fn rooms(&self, max: usize) -> (Vec<(Arc<str>, usize)>, usize) {
        let table = self.table();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (room, roster) in &table.rooms {
            *counts.entry(room).or_default() += roster.len();
        }
        for (room, roster) in &table.remote {
            *counts.entry(room).or_default() += roster.len();
        }
        let listed = counts.iter().take(max).map(|(&room, &n)| (room.into(), n));
        (listed.collect(), counts.len())
    }

    /// This process's members: name to room.
    pub(crate) fn local_members(&self) -> BTreeMap<String, String> {
        let table = self.table();
        let mut members = BTreeMap::new();
        for (room, roster) in &table.rooms {
            for name in roster {
                members.insert(name.to_string(), room.to_string());
            }
        }
        members
    }

    /// Replaces what is known of the other processes' members (room to
    /// names).
    pub(crate) fn set_remote(&self, rosters: BTreeMap<String, Vec<String>>) {
        let mut table = self.table();
        table.remote_names = rosters.values().flatten().map(|n| fold(n)).collect();
        table.remote = rosters
            .into_iter()
            .map(|(room, names)| (room, names.into_iter().collect()))
            .collect();
    }
}

impl Table {
    fn free(&self, name: &str, folded: &str) -> bool {
        !reserved(name) && !self.names.contains(folded) && !self.remote_names.contains(folded)
    }

    /// The first free of `wanted-n` (`n == 1`: `wanted` itself), then of
    /// the next suffixes (up to `-16`, then the shared counter), with its
    /// folded form.
    fn first_free(&mut self, wanted: &str, mut n: u64) -> (String, String) {
        loop {
            let name = match n {
                1 => wanted.to_owned(),
                n => format!("{wanted}-{n}"),
            };
            let folded = fold(&name);
            if self.free(&name, &folded) {
                return (name, folded);
            }
            if n < SUFFIXES_TRIED {
                n += 1;
            } else {
                self.suffixes = self.suffixes.max(SUFFIXES_TRIED) + 1;
                n = self.suffixes;
            }
        }
    }

    /// Takes `name` out of `room`; returns how many are left in it.
    fn exit(&mut self, room: &str, name: &str) -> usize {
        let Some(roster) = self.rooms.get_mut(room) else {
            return 0;
        };
        roster.remove(name);
        let left = roster.len();
        if left == 0 {
            self.rooms.remove(room);
        }
        left
    }

    /// Puts `name` in `room`; returns how many are in it then.
    fn enter(&mut self, name: &Arc<str>, room: &Arc<str>) -> usize {
        let roster = self.rooms.entry(Arc::clone(room)).or_default();
        roster.insert(Arc::clone(name));
        roster.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_members_are_listed_and_their_names_taken() {
        let dir = Directory::default();
        let ann = dir.claim(Some("ann"));
        dir.enter(&ann, None, &Arc::from("lobby"));
        let remote = BTreeMap::from([
            ("lobby".to_owned(), vec!["bob".to_owned(), "cy".to_owned()]),
            ("den".to_owned(), vec!["dee".to_owned()]),
        ]);
        dir.set_remote(remote);
        let (names, total) = dir.roster("lobby", 2);
        assert_eq!((names, total), (vec!["ann".into(), "bob".into()], 3));
        assert_eq!(
            dir.rooms(10),
            (vec![("den".into(), 1), ("lobby".into(), 3)], 2)
        );
        assert_eq!(&*dir.claim(Some("Bob")), "Bob-2");
        assert_eq!(
            dir.local_members(),
            BTreeMap::from([("ann".to_owned(), "lobby".to_owned())])
        );
        dir.set_remote(BTreeMap::new());
        assert_eq!(&*dir.claim(Some("bob")), "bob");
    }

    #[test]
    fn names_are_unique_and_system_is_reserved() {
        let dir = Directory::default();
        assert_eq!(&*dir.claim(Some("ann")), "ann");
        assert_eq!(&*dir.claim(Some("ann")), "ann-2");
        assert_eq!(&*dir.claim(Some("ann")), "ann-3");
        assert_eq!(&*dir.claim(Some("system")), "system-2");
        assert_eq!(&*dir.claim(Some("ann-2")), "ann-2-2");
        dir.release("ann", "lobby");
        assert_eq!(&*dir.claim(Some("ann")), "ann");
    }

    #[test]
    fn names_that_render_alike_are_one_name() {
        let dir = Directory::default();
        assert_eq!(&*dir.claim(Some("ann")), "ann");
        assert_eq!(&*dir.claim(Some("Ann")), "Ann-2");
        assert_eq!(&*dir.claim(Some("\u{430}nn")), "\u{430}nn-3"); // Cyrillic а
                                                                   // The reserved name, and then each other's suffixed names.
        let systems = ["SYSTEM", "S\u{443}stem", "\u{405}ystem", "Syst\u{435}m"];
        for (n, system) in systems.into_iter().enumerate() {
            let want = format!("{system}-{}", n + 2);
            assert_eq!(*dir.claim(Some(system)), want, "{system}");
        }
        // Shown as typed, freed by any spelling of the granted name.
        dir.release("Ann-2", "lobby");
        assert_eq!(&*dir.claim(Some("ANN-2")), "ANN-2");
    }

    #[test]
    fn a_much_asked_name_costs_a_few_tries() {
        let dir = Directory::default();
        let granted: Vec<Arc<str>> = (0..40).map(|_| dir.claim(Some("x"))).collect();
        let want: Vec<String> = std::iter::once("x".to_owned())
            .chain((2..=16).map(|n| format!("x-{n}")))
            .chain((17..41).map(|n| format!("x-{n}")))
            .collect();
        assert_eq!(
            granted.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            want
        );
        // Past the tried suffixes the counter only grows: a freed x-2 is
        // found again, a freed x-20 is not.
        dir.release("x-2", "lobby");
        dir.release("x-20", "lobby");
        assert_eq!(&*dir.claim(Some("x")), "x-2");
        assert_eq!(&*dir.claim(Some("x")), "x-41");
        assert_eq!(&*dir.claim(Some("y")), "y");
    }

    #[test]
    fn a_name_lost_to_another_process_takes_the_next_free_suffix() {
        let dir = Directory::default();
        let lobby: Arc<str> = "lobby".into();
        for name in ["ann", "ann-2", "bob"] {
            let name = dir.claim(Some(name));
            dir.enter(&name, None, &lobby);
        }
        let (new, room) = dir.rename("ann").unwrap();
        assert_eq!((&*new, &*room), ("ann-3", "lobby"));
        let listed: Vec<String> = dir
            .roster("lobby", 10)
            .0
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(listed, ["ann-2", "ann-3", "bob"]);
        // The old name is free here again; one no longer here is not renamed.
        assert_eq!(&*dir.claim(Some("ann")), "ann");
        assert_eq!(dir.rename("carol"), None);
    }

    #[test]
    fn guests_skip_taken_names() {
        let dir = Directory::default();
        assert_eq!(&*dir.claim(Some("guest-2")), "guest-2");
        assert_eq!(&*dir.claim(None), "guest-1");
        assert_eq!(&*dir.claim(None), "guest-3");
    }

    #[test]
    fn rosters_follow_members_and_empty_rooms_vanish() {
        let dir = Directory::default();
        let (ann, bob) = (dir.claim(Some("ann")), dir.claim(Some("bob")));
        let (lobby, den): (Arc<str>, Arc<str>) = ("lobby".into(), "den".into());
        assert_eq!(dir.enter(&ann, None, &lobby), 1);
        assert_eq!(dir.enter(&bob, None, &lobby), 2);
        assert_eq!(dir.enter(&ann, Some("lobby"), &den), 1);
        assert_eq!(dir.roster("lobby", 10), (vec![bob.clone()], 1));
        assert_eq!(dir.rooms(10), (vec![(den, 1), (lobby, 1)], 2));
        assert_eq!(dir.rooms(1).1, 2);
        dir.release("ann", "den");
        assert_eq!(dir.rooms(10).1, 1);
        assert_eq!(dir.roster("den", 10), (vec![], 0));
        dir.release("bob", "lobby");
        assert_eq!(dir.rooms(10), (vec![], 0));
    }
}
