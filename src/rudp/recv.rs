//! The receiving side: a bounded reorder window, duplicate suppression,
//! in-order delivery and reassembly of fragmented messages.
//!
//! Everything is bounded by the window: packets are accepted only within
//! `capacity` minus the messages delivered but not yet taken, so a peer
//! cannot make the receiver hold more than `capacity` packets plus one
//! message in reassembly.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::seq::Seq;
use super::Mode;

/// What became of a data packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// Stored (and perhaps delivered).
    New,
    /// Already had it.
    Duplicate,
    /// Beyond the window: dropped, the sender will send it again.
    OutOfWindow,
}

#[derive(Debug)]
struct Fragment {
    index: u8,
    count: u8,
    payload: Vec<u8>,
}

#[derive(Debug)]
struct Partial {
    count: u8,
    got: u8,
    bytes: Vec<u8>,
}

/// Counters of what the receiver threw away.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveStats {
    /// Packets received more than once.
    pub duplicates: u64,
    /// Packets beyond the window.
    pub out_of_window: u64,
    /// Packets given up on (unreliable mode) after the gap timeout.
    pub skipped: u64,
    /// Messages dropped because a fragment was missing or inconsistent.
    pub broken_messages: u64,
}

#[derive(Debug)]
pub(crate) struct ReceiveWindow {
    mode: Mode,
    /// The first packet not yet delivered.
    next: Seq,
    /// `slots[i]` is packet `next + i`, if it arrived.
    slots: VecDeque<Option<Fragment>>,
    capacity: usize,
    max_message: usize,
    partial: Option<Partial>,
    ready: VecDeque<Vec<u8>>,
    /// Since when a gap has held up delivery (unreliable mode).
    gap_since: Option<Instant>,
    pub(crate) stats: ReceiveStats,
}

impl ReceiveWindow {
    pub(crate) fn new(mode: Mode, isn: Seq, capacity: usize, max_message: usize) -> ReceiveWindow {
        ReceiveWindow {
            mode,
            next: isn,
            // Allocated on first use, not at the handshake.
            slots: VecDeque::new(),
            capacity,
            max_message,
            partial: None,
            ready: VecDeque::new(),
            gap_since: None,
            stats: ReceiveStats::default(),
        }
    }

    /// Packets the sender may have outstanding beyond `next`.
    pub(crate) fn window(&self) -> usize {
        self.capacity.saturating_sub(self.ready.len())
    }

    pub(crate) fn on_data(
        &mut self,
        now: Instant,
        seq: Seq,
        index: u8,
        count: u8,
        payload: Vec<u8>,
    ) -> Arrival {
        let offset = seq.since(self.next);
        if offset < 0 {
            self.stats.duplicates += 1;
            return Arrival::Duplicate;
        }
        let offset = offset as usize;
        if offset >= self.window() {
            self.stats.out_of_window += 1;
            return Arrival::OutOfWindow;
        }
        let fragment = Fragment {
            index,
            count,
            payload,
        };
        if offset == 0 && self.slots.is_empty() {
            // In order with nothing held back (the common case): straight
            // to reassembly, not through the reorder slots.
            self.next = self.next.next();
            self.reassemble(fragment);
            self.note_gap(now);
            return Arrival::New;
        }
        if self.slots.len() <= offset {
            self.slots.resize_with(offset + 1, || None);
        }
        if self.slots[offset].is_some() {
            self.stats.duplicates += 1;
            return Arrival::Duplicate;
        }
        self.slots[offset] = Some(fragment);
        self.deliver();
        self.note_gap(now);
        Arrival::New
    }

    /// Moves every in-order packet to reassembly.
    fn deliver(&mut self) {
        while let Some(Some(_)) = self.slots.front() {
            let Some(Some(fragment)) = self.slots.pop_front() else {
                break;
            };
            self.next = self.next.next();
            self.reassemble(fragment);
        }
    }

    fn reassemble(&mut self, fragment: Fragment) {
        let continues = self
            .partial
            .as_ref()
            .is_some_and(|p| p.got == fragment.index && p.count == fragment.count);
        if !continues {
            if self.partial.take().is_some() {
                self.stats.broken_messages += 1; // its tail never came
            }
            if fragment.index != 0 {
                self.stats.broken_messages += 1; // its head never came
                return;
            }
            if fragment.count == 1 && fragment.payload.len() <= self.max_message {
                // A whole message in one packet: its buffer is the message.
                return self.ready.push_back(fragment.payload);
            }
            self.partial = Some(Partial {
                count: fragment.count,
                got: 0,
                bytes: Vec::new(),
            });
        }
        let Some(partial) = self.partial.as_mut() else {
            return;
        };
        if partial.bytes.len() + fragment.payload.len() > self.max_message {
            self.partial = None;
            self.stats.broken_messages += 1;
            return;
        }
        partial.bytes.extend_from_slice(&fragment.payload);
        partial.got += 1;
        if partial.got == partial.count {
            let done = self.partial.take().map(|p| p.bytes).unwrap_or_default();
            self.ready.push_back(done);
        }
    }

    fn note_gap(&mut self, now: Instant) {
        let gap = self.mode == Mode::Unreliable && !self.slots.is_empty();
        match (gap, self.gap_since) {
            (true, None) => self.gap_since = Some(now),
            (false, _) => self.gap_since = None,
            (true, Some(_)) => {}
        }
    }

    /// When the current gap will be skipped (unreliable mode).
    pub(crate) fn skip_deadline(&self, skip_after: Duration) -> Option<Instant> {
        self.gap_since.map(|since| since + skip_after)
    }

    /// Gives up on the missing packets in front of the first one held.
    pub(crate) fn skip_gap(&mut self, now: Instant) {
        let mut skipped = false;
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.next = self.next.next();
            self.stats.skipped += 1;
            skipped = true;
        }
        // A message half assembled before the gap may have lost fragments
        // in it: finishing it with what follows would splice two messages.
        if skipped && self.partial.take().is_some() {
            self.stats.broken_messages += 1;
        }
        self.gap_since = None;
        self.deliver();
        self.note_gap(now);
    }

    /// Gives the memory of an empty window back (a quiet peer's): nothing
    /// held, nothing in reassembly, nothing waiting to be taken.
    pub(crate) fn release(&mut self) {
        if self.slots.is_empty() {
            self.slots = VecDeque::new();
        }
        if self.ready.is_empty() {
            self.ready = VecDeque::new();
        }
    }

    /// Slots allocated, used or not.
    #[cfg(test)]
    pub(crate) fn allocated(&self) -> usize {
        self.slots.capacity()
    }

    /// The next complete message, in order.
    pub(crate) fn pop(&mut self) -> Option<Vec<u8>> {
        self.ready.pop_front()
    }

    /// Whether taking messages would reopen a window the peer saw closed.
    pub(crate) fn full(&self) -> bool {
        self.window() == 0
    }

    /// The ack to send: `next`, and bit `i` for packet `next + 1 + i`.
    pub(crate) fn ack(&self) -> (Seq, u64, u16) {
        let sack = self
            .slots
            .iter()
            .skip(1)
            .take(64)
            .enumerate()
            .filter(|(_, slot)| slot.is_some())
            .fold(0u64, |bits, (i, _)| bits | 1 << i);
        let window = u16::try_from(self.window()).unwrap_or(u16::MAX);
        (self.next, sack, window)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn window(mode: Mode) -> ReceiveWindow {
        ReceiveWindow::new(mode, Seq(u32::MAX - 1), 8, 10)
    }

    fn take(window: &mut ReceiveWindow) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| window.pop()).collect()
    }

    #[test]
    fn reorders_drops_duplicates_and_acks_selectively() {
        let t = Instant::now();
        let mut w = window(Mode::Reliable);
        let first = Seq(u32::MAX - 1);
        assert_eq!(
            w.on_data(t, first.plus(2), 0, 1, b"c".to_vec()),
            Arrival::New
        );
        assert_eq!(
            w.on_data(t, first.plus(3), 0, 1, b"d".to_vec()),
            Arrival::New
        );
        assert_eq!(w.ack(), (first, 0b110, 8)); // bit i is next + 1 + i
        assert!(take(&mut w).is_empty());
        assert_eq!(
            w.on_data(t, first.plus(2), 0, 1, b"c".to_vec()),
            Arrival::Duplicate
        );
        assert_eq!(w.on_data(t, first, 0, 1, b"a".to_vec()), Arrival::New);
        assert_eq!(
            w.on_data(t, first.plus(1), 0, 1, b"b".to_vec()),
            Arrival::New
        );
        assert_eq!(take(&mut w), [b"a", b"b", b"c", b"d"]);
        assert_eq!(w.ack(), (first.plus(4), 0, 8));
        assert_eq!(w.on_data(t, first, 0, 1, b"a".to_vec()), Arrival::Duplicate);
        assert_eq!(
            w.on_data(t, first.plus(12), 0, 1, b"z".to_vec()),
            Arrival::OutOfWindow
        );
        assert_eq!((w.stats.duplicates, w.stats.out_of_window), (2, 1));
    }

    #[test]
    fn undelivered_messages_shrink_the_window() {
        let t = Instant::now();
        let mut w = window(Mode::Reliable);
        let first = Seq(u32::MAX - 1);
        for i in 0..8 {
            assert_eq!(
                w.on_data(t, first.plus(i), 0, 1, b"m".to_vec()),
                Arrival::New
            );
        }
        assert!(w.full());
        assert_eq!(w.ack().2, 0);
        assert_eq!(
            w.on_data(t, first.plus(8), 0, 1, b"m".to_vec()),
            Arrival::OutOfWindow
        );
        w.pop();
        assert_eq!(w.ack().2, 1);
        assert_eq!(
            w.on_data(t, first.plus(8), 0, 1, b"m".to_vec()),
            Arrival::New
        );
    }

    #[test]
    fn reassembles_and_bounds_messages() {
        let t = Instant::now();
        let mut w = window(Mode::Reliable);
        let s = Seq(u32::MAX - 1);
        w.on_data(t, s.plus(1), 1, 2, b"world".to_vec());
        w.on_data(t, s, 0, 2, b"hello".to_vec());
        assert_eq!(take(&mut w), [b"helloworld"]);
        // 11 bytes is over the 10-byte maximum: dropped, counted.
        w.on_data(t, s.plus(2), 0, 2, b"hello".to_vec());
        w.on_data(t, s.plus(3), 1, 2, b"world!".to_vec());
        w.on_data(t, s.plus(4), 0, 1, b"next".to_vec());
        assert_eq!(take(&mut w), [b"next"]);
        assert_eq!(w.stats.broken_messages, 1);
    }

    #[test]
    fn unreliable_skips_a_gap_after_the_timeout() {
        let t = Instant::now();
        let after = Duration::from_millis(50);
        let mut w = window(Mode::Unreliable);
        let s = Seq(u32::MAX - 1);
        w.on_data(t, s, 0, 1, b"a".to_vec());
        assert_eq!(w.skip_deadline(after), None);
        // s+1 (head of a 2-fragment message) is lost; its tail and s+3 wait.
        w.on_data(t, s.plus(2), 1, 2, b"tail".to_vec());
        w.on_data(t, s.plus(3), 0, 1, b"b".to_vec());
        assert_eq!(w.skip_deadline(after), Some(t + after));
        w.skip_gap(t + after);
        assert_eq!(take(&mut w), [b"a", b"b"]);
        assert_eq!((w.stats.skipped, w.stats.broken_messages), (1, 1));
        assert_eq!(w.skip_deadline(after), None);
        assert_eq!(w.ack().0, s.plus(4));
    }

    #[test]
    fn a_skipped_gap_never_splices_two_messages() {
        // Found by the rudp_connection fuzz target: A (3 fragments) loses
        // its last, B (3 fragments) its first two; B's last fragment has
        // the index A expects next.
        let t = Instant::now();
        let mut w = window(Mode::Unreliable);
        let s = Seq(u32::MAX - 1);
        w.on_data(t, s, 0, 3, b"A0".to_vec());
        w.on_data(t, s.plus(1), 1, 3, b"A1".to_vec());
        w.on_data(t, s.plus(5), 2, 3, b"B2".to_vec());
        w.skip_gap(t + Duration::from_millis(50));
        assert!(take(&mut w).is_empty(), "no message was whole");
        assert_eq!((w.stats.skipped, w.stats.broken_messages), (3, 2));
        w.on_data(t, s.plus(6), 0, 1, b"C".to_vec());
        assert_eq!(take(&mut w), [b"C"]);
    }

    proptest! {
        /// Any arrival order with duplicates delivers each message once, in
        /// order (the reference: the sorted, deduplicated input).
        #[test]
        fn any_order_delivers_in_order(order in proptest::collection::vec(0u32..40, 0..200)) {
            let t = Instant::now();
            let mut w = ReceiveWindow::new(Mode::Reliable, Seq(u32::MAX - 20), 64, 100);
            let mut got = Vec::new();
            for n in order.iter().copied() {
                w.on_data(t, Seq(u32::MAX - 20).plus(n), 0, 1, n.to_be_bytes().to_vec());
                got.extend(std::iter::from_fn(|| w.pop()));
            }
            let mut seen: Vec<u32> = order.clone();
            seen.sort_unstable();
            seen.dedup();
            let prefix: Vec<u32> = seen.iter().copied().enumerate()
                .take_while(|&(i, n)| i as u32 == n).map(|(_, n)| n).collect();
            let got: Vec<u32> = got.iter().map(|b| u32::from_be_bytes(b[..].try_into().unwrap())).collect();
            prop_assert_eq!(got, prefix);
        }
    }
}
