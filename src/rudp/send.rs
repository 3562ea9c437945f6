//! The sending side: a bounded window of numbered packets, what the peer
//! acknowledged, and which packets to send (again).
//!
//! Loss is detected three ways:
//!
//! - packet threshold (fast retransmit): a packet is suspect once three
//!   transmissions after it are acknowledged, and lost if it is still
//!   missing a reordering window later (a quarter of the RTT), so a few
//!   packets overtaking many is taken for reordering, not loss;
//! - time (RACK, RFC 8985): a packet is lost once a packet sent more than
//!   a reordering window after it is acknowledged; after a timeout this
//!   recovers a whole lost burst in one round trip;
//! - timeout: the connection's RTO timer hands the oldest outstanding
//!   packet back for retransmission.
//!
//! Every transmission is numbered and timed, so a lost retransmission is
//! detected the same way as a lost original.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::packet::Packet;
use super::seq::Seq;
use super::spare::Spare;
use super::Mode;

/// How many later packets must be acknowledged before one is declared lost.
pub(crate) const LOSS_THRESHOLD: u64 = 3;

/// `send` was refused: the window has no room for the message now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendError {
    /// Not enough free slots; try again after acknowledgements arrive.
    WindowFull,
    /// Larger than the maximum message; it never fits.
    TooLarge,
    /// The connection is closed.
    Closed,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SendError::WindowFull => "send window full",
            SendError::TooLarge => "message over the maximum size",
            SendError::Closed => "connection closed",
        })
    }
}

impl std::error::Error for SendError {}

#[derive(Debug)]
struct Unacked {
    fragment: u8,
    fragments: u8,
    /// Kept until acknowledged in reliable mode; dropped once sent otherwise.
    payload: Vec<u8>,
    /// Transmission number of the latest send (0: not sent yet).
    tx: u64,
    /// When it was last sent.
    sent_at: Option<Instant>,
    retransmitted: bool,
    /// Since when three later transmissions were acknowledged.
    suspect_since: Option<Instant>,
    acked: bool,
    /// Queued for retransmission.
    lost: bool,
}

/// What an ack changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Acked {
    /// Packets acknowledged for the first time.
    pub(crate) newly: usize,
    /// RTT of the newest packet among them that was sent only once.
    pub(crate) rtt: Option<Duration>,
}

#[derive(Debug)]
pub(crate) struct SendWindow {
    mode: Mode,
    /// The oldest packet not yet acknowledged (cumulatively).
    base: Seq,
    /// `slots[i]` is packet `base + i`.
    slots: VecDeque<Unacked>,
    capacity: usize,
    max_payload: usize,
    /// First slot never sent.
    unsent: usize,
    /// Sequence numbers queued for retransmission, oldest first.
    lost: VecDeque<Seq>,
    /// Free slots the peer last advertised.
    peer_window: usize,
    /// Sent packets neither acknowledged nor given up as lost, kept as a
    /// count: the window checks it for every packet it sends.
    in_flight: usize,
    tx: u64,
    /// When the most recently sent of the acknowledged packets was sent.
    newest_acked_sent: Option<Instant>,
    /// The congestion window, in packets (AIMD: slow start to `ssthresh`,
    /// then one more per window acknowledged; halved on loss).
    cwnd: f64,
    ssthresh: f64,
    /// Losses of packets sent up to this transmission belong to the
    /// reduction already made: one halving per window of data.
    recovery_until_tx: u64,
    /// A tail loss probe is due as the next new packet.
    probe_new: bool,
    pub(crate) retransmissions: u64,
    /// Scratch for `on_ack`: the acknowledged transmissions still in the
    /// window (at most a window of them), kept between acks so an ack
    /// allocates nothing; freed by `release`.
    acked_tx: Vec<u64>,
    /// Buffers of acknowledged packets and of delivered messages, for the
    /// next ones (two windows' worth at most; see [`Spare`]).
    pub(crate) spare: Spare,
}

/// The first flight, as TCP's initial window (RFC 6928).
const INITIAL_CWND: f64 = 10.0;
/// The window never shrinks below this, so acks keep coming.
const MIN_CWND: f64 = 2.0;

impl SendWindow {
    pub(crate) fn new(mode: Mode, isn: Seq, capacity: usize, max_payload: usize) -> SendWindow {
        SendWindow {
            mode,
            base: isn,
            // Allocated on first use, not at the handshake: an idle peer
            // holds none of its window.
            slots: VecDeque::new(),
            capacity,
            max_payload,
            unsent: 0,
            lost: VecDeque::new(),
            peer_window: capacity,
            in_flight: 0,
            tx: 0,
            newest_acked_sent: None,
            cwnd: INITIAL_CWND.min(capacity as f64),
            ssthresh: capacity as f64,
            recovery_until_tx: 0,
            probe_new: false,
            retransmissions: 0,
            acked_tx: Vec::new(),
            // Both directions draw on it (sent packets' buffers come back
            // with acks, received ones when the application is done), so
            // it holds up to two windows: one would overflow when a full
            // window of acks and of echoes return together, freeing
            // buffers the next packets then allocate again.
            spare: Spare::new(2 * capacity, max_payload),
        }
    }

    /// Free slots: how many packets `push` can still take.
    pub(crate) fn free(&self) -> usize {
        self.capacity - self.slots.len()
    }

    /// Packets `message` needs.
    pub(crate) fn packets_for(&self, len: usize) -> usize {
        len.div_ceil(self.max_payload).max(1)
    }

    /// Queues `message` as one or more fragments.
    pub(crate) fn push(&mut self, message: &[u8]) -> Result<(), SendError> {
        let count = self.room_for(message.len())?;
        if message.is_empty() {
            self.queue(0, 1, Vec::new());
        }
        for (i, chunk) in message.chunks(self.max_payload).enumerate() {
            let payload = self.spare.copy_of(chunk);
            self.queue(i as u8, count, payload);
        }
        Ok(())
    }

    /// As [`push`](Self::push), taking the message's buffer: a message
    /// that fits one packet becomes its payload as it is, not copied. A
    /// refused message is handed back with the error.
    pub(crate) fn push_vec(&mut self, message: Vec<u8>) -> Result<(), (SendError, Vec<u8>)> {
        if message.len() > self.max_payload {
            return match self.push(&message) {
                Ok(()) => Ok(()),
                Err(e) => Err((e, message)),
            };
        }
        if let Err(e) = self.room_for(message.len()) {
            return Err((e, message));
        }
        self.queue(0, 1, message);
        Ok(())
    }

    /// The fragments a message of `len` bytes needs, if the window has
    /// room for them now.
    fn room_for(&self, len: usize) -> Result<u8, SendError> {
        let count = self.packets_for(len);
        if count > super::packet::MAX_FRAGMENTS {
            return Err(SendError::TooLarge);
        }
        if count > self.free() {
            return Err(SendError::WindowFull);
        }
        Ok(count as u8)
    }

    fn queue(&mut self, fragment: u8, fragments: u8, payload: Vec<u8>) {
        self.slots.push_back(Unacked {
            fragment,
            fragments,
            payload,
            tx: 0,
            sent_at: None,
            retransmitted: false,
            suspect_since: None,
            acked: false,
            lost: false,
        });
    }

    /// The next data packet to send, if any: retransmissions first, then
    /// new packets while the peer's window allows.
    pub(crate) fn poll(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        #[cfg(debug_assertions)]
        debug_assert_eq!(self.in_flight, self.count_in_flight());
        let index = loop {
            match self.lost.pop_front() {
                Some(seq) => {
                    let Some(i) = self.index(seq) else { continue };
                    let slot = &mut self.slots[i];
                    if slot.acked || !slot.lost {
                        continue;
                    }
                    slot.lost = false;
                    self.in_flight += 1;
                    slot.suspect_since = None;
                    slot.retransmitted = true;
                    self.retransmissions += 1;
                    break i;
                }
                None if self.unsent < self.slots.len()
                    && self.unsent < self.peer_window
                    && (self.probe_new || self.in_flight < self.cwnd as usize) =>
                {
                    self.probe_new = false;
                    self.unsent += 1;
                    self.in_flight += 1;
                    break self.unsent - 1;
                }
                None => return false,
            }
        };
        self.tx += 1;
        let slot = &mut self.slots[index];
        slot.tx = self.tx;
        slot.sent_at = Some(now);
        let packet = Packet::Data {
            seq: self.base.plus(index as u32),
            fragment: slot.fragment,
            fragments: slot.fragments,
            payload: &slot.payload,
        };
        packet.encode(out);
        if self.mode == Mode::Unreliable {
            // Never sent again.
            self.spare.give(std::mem::take(&mut slot.payload));
        }
        true
    }

    fn index(&self, seq: Seq) -> Option<usize> {
        let offset = seq.since(self.base);
        (offset >= 0 && (offset as usize) < self.slots.len()).then_some(offset as usize)
    }

    /// Applies an ack: `next` cumulative, `sack` bits for `next + 1 + i`.
    pub(crate) fn on_ack(
        &mut self,
        now: Instant,
        (next, sack, window): (Seq, u64, u16),
        reorder_window: Duration,
    ) -> Acked {
        let offset = i64::from(next.since(self.base));
        if offset > self.unsent as i64 {
            return Acked::default(); // acknowledges what was never sent: bogus
        }
        self.peer_window = usize::from(window);
        // An old ack (reordered) may sit before the base: its bits still
        // count from its own `next`.
        let cumulative = offset.max(0) as usize;
        let mut acked = Acked::default();
        let mut newest: Option<(u64, Instant)> = None;
        let mut newest_sent = self.newest_acked_sent;
        let mut in_flight = self.in_flight;
        let mut ack = |slot: &mut Unacked| {
            if slot.acked || slot.tx == 0 {
                return;
            }
            slot.acked = true;
            in_flight -= usize::from(!slot.lost);
            acked.newly += 1;
            newest_sent = newest_sent.max(slot.sent_at);
            if !slot.retransmitted && newest.is_none_or(|(tx, _)| slot.tx > tx) {
                newest = slot.sent_at.map(|at| (slot.tx, at));
            }
        };
        for slot in self.slots.iter_mut().take(cumulative) {
            ack(slot);
        }
        for bit in (0..64).filter(|bit| sack & (1 << bit) != 0) {
            let index = offset + 1 + bit;
            if (0..self.unsent as i64).contains(&index) {
                ack(&mut self.slots[index as usize]);
            }
        }
        self.newest_acked_sent = newest_sent;
        self.in_flight = in_flight;
        // Transmissions acknowledged now or before, for the loss count.
        let mut later = std::mem::take(&mut self.acked_tx);
        later.clear();
        if self.mode == Mode::Reliable {
            let acked_tx = self.slots.iter().take(self.unsent).filter(|s| s.acked);
            later.extend(acked_tx.map(|s| s.tx));
        }
        for slot in self.slots.drain(..cumulative) {
            self.spare.give(slot.payload);
        }
        self.base = self.base.plus(cumulative as u32);
        self.unsent -= cumulative;
        if self.mode == Mode::Reliable {
            later.sort_unstable();
            self.detect_losses(now, &later, reorder_window);
        }
        self.acked_tx = later;
        acked.rtt = newest.map(|(_, at)| now.saturating_duration_since(at));
        // Additive increase: slow start below ssthresh, then about one
        // packet per window acknowledged.
        for _ in 0..acked.newly {
            self.cwnd += if self.cwnd < self.ssthresh {
                1.0
            } else {
                1.0 / self.cwnd
            };
        }
        self.cwnd = self.cwnd.min(self.capacity as f64);
        acked
    }

    /// Packet threshold: an unacknowledged packet with `LOSS_THRESHOLD`
    /// acknowledged transmissions after it (`acked`, sorted) is suspect,
    /// and lost once suspect for `reorder_window`. Only packets the ack
    /// could report (its 64 selective bits) are judged: one further out
    /// may have arrived unreported.
    fn detect_losses(&mut self, now: Instant, acked: &[u64], reorder_window: Duration) {
        let newest_acked_sent = self.newest_acked_sent;
        // A packet sent once was sent, and numbered, no later than any
        // packet after it (new ones leave in order; a resent one is
        // renumbered later still), so the first such packet neither
        // overtaken nor with enough acknowledged transmissions after it
        // ends the search: none after it can be either (with no losses,
        // the first packet unacknowledged ends it).
        for slot in self.slots.iter_mut().take(self.unsent.min(65)) {
            if slot.acked || slot.lost {
                continue;
            }
            let later = acked.len() - acked.partition_point(|&tx| tx <= slot.tx);
            let overtaken = slot
                .sent_at
                .zip(newest_acked_sent)
                .is_some_and(|(sent, newest)| newest >= sent + reorder_window);
            if overtaken {
                // Already a reordering window behind: no need to wait more.
                slot.suspect_since = Some(now - reorder_window);
            } else if later as u64 >= LOSS_THRESHOLD {
                slot.suspect_since.get_or_insert(now);
            } else if !slot.retransmitted {
                break;
            }
        }
        self.declare_losses(now, reorder_window);
    }

    /// Suspects missing for a reordering window are lost.
    pub(crate) fn declare_losses(&mut self, now: Instant, reorder_window: Duration) {
        let mut newest_lost_tx = None;
        for (i, slot) in self.slots.iter_mut().enumerate().take(self.unsent) {
            let due = slot
                .suspect_since
                .is_some_and(|since| now >= since + reorder_window);
            if due && !slot.acked && !slot.lost {
                slot.lost = true;
                self.in_flight -= 1;
                self.lost.push_back(self.base.plus(i as u32));
                newest_lost_tx = newest_lost_tx.max(Some(slot.tx));
            }
        }
        // Multiplicative decrease, once per window of data lost.
        if newest_lost_tx.is_some_and(|tx| tx > self.recovery_until_tx) {
            self.ssthresh = (self.cwnd / 2.0).max(MIN_CWND);
            self.cwnd = self.ssthresh;
            self.recovery_until_tx = self.tx;
        }
    }

    /// `in_flight` counted the slow way, to check the count.
    #[cfg(debug_assertions)]
    fn count_in_flight(&self) -> usize {
        self.slots
            .iter()
            .take(self.unsent)
            .filter(|s| !s.acked && !s.lost)
            .count()
    }

    /// The congestion window, in packets.
    #[cfg(test)]
    fn congestion_window(&self) -> f64 {
        self.cwnd
    }

    /// When the oldest suspect becomes lost, if any is waiting.
    pub(crate) fn loss_deadline(&self, reorder_window: Duration) -> Option<Instant> {
        self.slots
            .iter()
            .take(self.unsent)
            .filter(|s| !s.acked && !s.lost)
            .filter_map(|s| s.suspect_since)
            .min()
            .map(|since| since + reorder_window)
    }

    /// The retransmission timer expired. Reliable: the oldest outstanding
    /// packet goes again (its ack then shows, by time, which others are
    /// lost). Unreliable: everything sent is given up.
    pub(crate) fn on_timeout(&mut self) {
        // A timeout means the path lost a whole flight: start again small.
        self.ssthresh = (self.cwnd / 2.0).max(MIN_CWND);
        self.cwnd = MIN_CWND;
        self.recovery_until_tx = self.tx;
        match self.mode {
            Mode::Reliable => {
                let oldest = self
                    .slots
                    .iter()
                    .take(self.unsent)
                    .position(|s| !s.acked && !s.lost);
                if let Some(i) = oldest {
                    self.slots[i].lost = true;
                    self.in_flight -= 1;
                    self.lost.push_front(self.base.plus(i as u32));
                }
            }
            Mode::Unreliable => {
                self.slots.drain(..self.unsent);
                self.base = self.base.plus(self.unsent as u32);
                self.unsent = 0;
                self.in_flight = 0;
            }
        }
    }

    /// A tail loss probe (RFC 8985 7.3): a new packet if one waits and the
    /// peer's window has room, past the congestion window (its ack shows
    /// by time what was lost before it, a lost retransmission included);
    /// else the newest outstanding packet goes again. Returns false if
    /// there is nothing to send.
    pub(crate) fn probe(&mut self) -> bool {
        if self.mode == Mode::Reliable
            && self.unsent < self.slots.len()
            && self.unsent < self.peer_window
        {
            self.probe_new = true;
            return true;
        }
        let newest = self
            .slots
            .iter()
            .take(self.unsent)
            .rposition(|s| !s.acked && !s.lost);
        let Some(i) = newest.filter(|_| self.mode == Mode::Reliable) else {
            return false;
        };
        self.slots[i].lost = true;
        self.in_flight -= 1;
        self.lost.push_front(self.base.plus(i as u32));
        true
    }

    /// Gives the memory of an empty window back (a quiet peer's): it is
    /// allocated again on the next `push`.
    pub(crate) fn release(&mut self) {
        if self.slots.is_empty() {
            self.slots = VecDeque::new();
        }
        if self.lost.is_empty() {
            self.lost = VecDeque::new();
        }
        self.acked_tx = Vec::new();
        self.spare.release();
    }

    /// Slots allocated, used or not.
    #[cfg(test)]
    pub(crate) fn allocated(&self) -> usize {
        self.slots.capacity()
    }

    /// Sent packets not yet acknowledged.
    pub(crate) fn outstanding(&self) -> bool {
        self.slots.iter().take(self.unsent).any(|s| !s.acked)
    }

    /// Packets wait, none is in flight, and the peer's window is closed:
    /// only a probe can learn that it opened again.
    pub(crate) fn window_closed(&self) -> bool {
        self.unsent < self.slots.len() && self.unsent >= self.peer_window && !self.outstanding()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(bytes: &[u8]) -> (Seq, u8, u8, Vec<u8>) {
        match Packet::parse(bytes, 1200).unwrap() {
            Packet::Data {
                seq,
                fragment,
                fragments,
                payload,
            } => (seq, fragment, fragments, payload.to_vec()),
            other => panic!("{other:?}"),
        }
    }

    fn drain(window: &mut SendWindow, now: Instant) -> Vec<u32> {
        let mut seqs = Vec::new();
        let mut out = Vec::new();
        while window.poll(now, &mut out) {
            seqs.push(data(&out).0 .0);
            out.clear();
        }
        seqs
    }

    #[test]
    fn fragments_and_the_window_bound() {
        let t = Instant::now();
        let mut window = SendWindow::new(Mode::Reliable, Seq(u32::MAX), 4, 3);
        window.push(b"abcdefg").unwrap(); // 3 fragments
        assert_eq!(window.push(b"hijk"), Err(SendError::WindowFull));
        window.push(b"").unwrap();
        assert_eq!(window.free(), 0);
        let mut out = Vec::new();
        let mut got = Vec::new();
        while window.poll(t, &mut out) {
            got.push(data(&out));
            out.clear();
        }
        let want = [
            (Seq(u32::MAX), 0, 3, b"abc".to_vec()),
            (Seq(0), 1, 3, b"def".to_vec()),
            (Seq(1), 2, 3, b"g".to_vec()),
            (Seq(2), 0, 1, vec![]),
        ];
        assert_eq!(got, want);
        let big = vec![0; 3 * 256];
        assert_eq!(window.push(&big), Err(SendError::TooLarge));
    }

    #[test]
    fn cumulative_and_selective_acks_and_the_rtt_sample() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut window = SendWindow::new(Mode::Reliable, Seq(10), 8, 100);
        for _ in 0..5 {
            window.push(b"x").unwrap();
        }
        assert_eq!(drain(&mut window, t), [10, 11, 12, 13, 14]);
        // 10 and 11 cumulatively, 13 selectively (bit 0 is next + 1).
        let acked = window.on_ack(t + ms(30), (Seq(12), 0b1, 8), Duration::ZERO);
        assert_eq!(
            acked,
            Acked {
                newly: 3,
                rtt: Some(ms(30))
            }
        );
        assert_eq!(window.free(), 8 - 3);
        // The same ack again changes nothing.
        assert_eq!(
            window.on_ack(t + ms(31), (Seq(12), 0b1, 8), Duration::ZERO),
            Acked::default()
        );
        // An ack of what was never sent is ignored; an old one counts its
        // bits from its own base (bit 1 of next 11 is 13, already acked).
        assert_eq!(
            window.on_ack(t + ms(32), (Seq(99), 0, 8), Duration::ZERO),
            Acked::default()
        );
        assert_eq!(
            window.on_ack(t + ms(33), (Seq(11), 0b10, 8), Duration::ZERO),
            Acked::default()
        );
        assert!(window.outstanding());
        assert_eq!(
            window
                .on_ack(t + ms(34), (Seq(15), 0, 8), Duration::ZERO)
                .newly,
            2
        );
        assert!(!window.outstanding());
    }

    #[test]
    fn three_later_acks_mean_loss_and_karn_skips_the_retransmission() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut window = SendWindow::new(Mode::Reliable, Seq(0), 8, 100);
        for _ in 0..5 {
            window.push(b"x").unwrap();
        }
        drain(&mut window, t);
        let reorder = ms(5);
        // 0 is missing; 1 and 2 arrived: not yet suspect.
        window.on_ack(t + ms(10), (Seq(0), 0b11, 8), reorder);
        assert_eq!(window.loss_deadline(reorder), None);
        // 3 arrived too: three later packets, 0 is suspect for 5 ms...
        window.on_ack(t + ms(11), (Seq(0), 0b111, 8), reorder);
        assert_eq!(window.loss_deadline(reorder), Some(t + ms(16)));
        window.declare_losses(t + ms(15), reorder);
        assert!(
            drain(&mut window, t + ms(15)).is_empty(),
            "maybe just reordered"
        );
        // ... then lost.
        window.declare_losses(t + ms(16), reorder);
        assert_eq!(drain(&mut window, t + ms(16)), [0]);
        assert_eq!(window.loss_deadline(reorder), None);
        assert_eq!(window.retransmissions, 1);
        // Its ack gives no RTT sample (Karn); 4's does.
        let acked = window.on_ack(t + ms(20), (Seq(4), 0, 8), reorder);
        assert_eq!(
            acked,
            Acked {
                newly: 1,
                rtt: None
            }
        );
        let acked = window.on_ack(t + ms(25), (Seq(5), 0, 8), reorder);
        assert_eq!(
            acked,
            Acked {
                newly: 1,
                rtt: Some(ms(25))
            }
        );
    }

    #[test]
    fn a_timeout_resends_the_oldest_and_its_ack_reveals_the_rest_of_a_lost_burst() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let reorder = ms(10);
        let mut window = SendWindow::new(Mode::Reliable, Seq(0), 8, 100);
        for _ in 0..4 {
            window.push(b"x").unwrap();
        }
        assert_eq!(drain(&mut window, t), [0, 1, 2, 3]); // all four lost
        window.on_timeout();
        assert_eq!(drain(&mut window, t + ms(100)), [0]);
        // 0's second copy arrives: everything sent a reordering window
        // before it and still missing is lost, in one round trip.
        window.on_ack(t + ms(140), (Seq(1), 0, 8), reorder);
        assert_eq!(drain(&mut window, t + ms(140)), [1, 2, 3]);
        assert_eq!(window.retransmissions, 4);
    }

    #[test]
    fn the_congestion_window_grows_halves_once_per_window_and_collapses_on_timeout() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut window = SendWindow::new(Mode::Reliable, Seq(0), 64, 100);
        for _ in 0..64 {
            window.push(b"x").unwrap();
        }
        assert_eq!(drain(&mut window, t).len(), 10, "the initial window");
        // Slow start: every packet acknowledged opens one more.
        window.on_ack(t + ms(10), (Seq(10), 0, 64), ms(1));
        assert_eq!(window.congestion_window(), 20.0);
        assert_eq!(drain(&mut window, t + ms(10)).len(), 20);
        // 10..=12 lost, 13..=15 arrived (the window grows to 23): the three
        // are suspect, then lost: one halving for all of them.
        window.on_ack(t + ms(20), (Seq(10), 0b11100, 64), ms(1));
        assert_eq!(window.congestion_window(), 23.0);
        window.declare_losses(t + ms(21), ms(1));
        assert_eq!(window.congestion_window(), 11.5);
        // Resent at once; nothing new while 14 are in flight over 11.5.
        assert_eq!(drain(&mut window, t + ms(21)), [10, 11, 12]);
        // A timeout: back to the minimum.
        window.on_timeout();
        assert_eq!(window.congestion_window(), MIN_CWND);
    }

    #[test]
    fn a_tail_probe_sends_new_data_past_the_congestion_window_else_the_newest_again() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut window = SendWindow::new(Mode::Reliable, Seq(0), 16, 100);
        for _ in 0..11 {
            window.push(b"x").unwrap();
        }
        assert_eq!(drain(&mut window, t).len(), 10, "the initial window");
        // 0 is retransmitted, then lost again: nothing after it in flight
        // would show that, so the probe is new data, past the window.
        window.on_timeout();
        assert_eq!(drain(&mut window, t + ms(100)), [0]);
        assert!(window.probe());
        assert_eq!(drain(&mut window, t + ms(140)), [10]);
        assert!(drain(&mut window, t + ms(140)).is_empty(), "one only");
        // Its ack (the others arrived) shows by time that 0 was lost again.
        window.on_ack(t + ms(180), (Seq(0), (1 << 10) - 1, 16), ms(10));
        assert_eq!(drain(&mut window, t + ms(180)), [0]);
        // Nothing new waits: the probe sends the newest outstanding again.
        assert!(window.probe());
        assert_eq!(drain(&mut window, t + ms(200)), [0]);
        assert_eq!(window.retransmissions, 3);
        window.on_ack(t + ms(220), (Seq(11), 0, 16), ms(10));
        assert!(!window.probe(), "nothing outstanding");
    }

    #[test]
    fn the_peer_window_gates_new_packets() {
        let t = Instant::now();
        let mut window = SendWindow::new(Mode::Reliable, Seq(0), 8, 100);
        for _ in 0..4 {
            window.push(b"x").unwrap();
        }
        window.on_ack(t, (Seq(0), 0, 2), Duration::ZERO);
        assert_eq!(drain(&mut window, t), [0, 1]);
        window.on_ack(t, (Seq(2), 0, 0), Duration::ZERO);
        assert!(
            drain(&mut window, t).is_empty(),
            "the peer's window is closed"
        );
        window.on_ack(t, (Seq(2), 0, 1), Duration::ZERO);
        assert_eq!(drain(&mut window, t), [2]);
    }

    #[test]
    fn unreliable_gives_up_on_timeout_and_keeps_no_payloads() {
        let t = Instant::now();
        let mut window = SendWindow::new(Mode::Unreliable, Seq(0), 4, 100);
        for _ in 0..4 {
            window.push(b"x").unwrap();
        }
        assert_eq!(drain(&mut window, t), [0, 1, 2, 3]);
        assert!(window.slots.iter().all(|s| s.payload.is_empty()));
        window.on_ack(t, (Seq(0), 0b11, 4), Duration::ZERO); // 1 and 2: no loss detection here
        window.on_ack(t, (Seq(0), 0b111, 4), Duration::ZERO);
        assert!(drain(&mut window, t).is_empty());
        window.on_timeout();
        assert_eq!((window.free(), window.retransmissions), (4, 0));
        window.push(b"y").unwrap();
        assert_eq!(drain(&mut window, t), [4]);
    }
}
