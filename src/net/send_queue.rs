//! [`SendQueue`]: datagrams the socket could not take yet, held in one
//! byte arena and flushed in batches on writable events.
//!
//! Within one receive batch an entry may instead name a slot of the
//! [`RecvBatch`] (a reply that is the received datagram itself: an echo),
//! sent straight from there by [`SendQueue::flush_batch`], which copies
//! into the arena only what the socket did not take before the batch is
//! reused.
//!
//! It allocates once, in `new`, and never again, so memory per socket is
//! fixed no matter how much traffic passes through.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use log::debug;
use mio::net::UdpSocket;

use super::recv_batch::RecvBatch;
use super::sys;

/// Returned by [`SendQueue::push`] when the queue is at its datagram or byte
/// bound (or the datagram alone exceeds the byte bound). The datagram was not
/// queued; the caller drops and counts it.
///
/// ```
/// use sockloop::net::udp_batch::{QueueFull, SendQueue};
///
/// let mut q = SendQueue::new(1, 16);
/// let to = "127.0.0.1:9".parse()?;
/// q.push(to, b"first")?;
/// assert_eq!(q.push(to, b"second"), Err(QueueFull));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

impl fmt::Display for QueueFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UDP send queue full")
    }
}

impl std::error::Error for QueueFull {}

/// What one [`SendQueue::flush`] did.
///
/// `would_block` is true exactly when datagrams remain queued: keep WRITABLE
/// interest and flush again on the next writable event. When false the queue
/// is empty and WRITABLE interest can be dropped.
///
/// ```
/// use mio::net::UdpSocket;
/// use sockloop::net::udp_batch::{FlushOutcome, SendQueue};
///
/// let socket = UdpSocket::bind("127.0.0.1:0".parse()?)?;
/// let mut q = SendQueue::new(8, 1024);
/// assert_eq!(q.flush(&socket), FlushOutcome::default());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlushOutcome {
    /// Datagrams the kernel accepted.
    pub sent: usize,
    /// Datagrams dropped because sending them failed (EMSGSIZE, EACCES,
    /// address family mismatch, ...); each is logged at debug level.
    pub dropped_errors: usize,
    /// The socket stopped accepting datagrams before the queue emptied.
    pub would_block: bool,
}

/// Bounded FIFO of outgoing datagrams stored back to back in one byte arena.
///
/// Intended use: while the queue is empty, `send_to` directly; on
/// `WouldBlock`, [`push`](Self::push) and register WRITABLE; on writable
/// events, [`flush`](Self::flush).
///
/// ```
/// use mio::net::UdpSocket;
/// use sockloop::net::udp_batch::{FlushOutcome, SendQueue};
///
/// let tx = UdpSocket::bind("127.0.0.1:0".parse()?)?;
/// let rx = std::net::UdpSocket::bind("127.0.0.1:0")?;
/// rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
///
/// let mut q = SendQueue::new(1024, 64 * 1024);
/// q.push(rx.local_addr()?, b"one")?;
/// q.push(rx.local_addr()?, b"two")?;
/// let out = q.flush(&tx);
/// assert_eq!(out, FlushOutcome { sent: 2, dropped_errors: 0, would_block: false });
///
/// let mut buf = [0; 16];
/// let (n, from) = rx.recv_from(&mut buf)?;
/// assert_eq!((&buf[..n], from), (&b"one"[..], tx.local_addr()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SendQueue {
    /// Live bytes are `arena[head..]`. Capacity is reserved once at
    /// `max_bytes` and `arena.len()` never exceeds it, so it never reallocates.
    arena: Vec<u8>,
    head: usize,
    /// Entries held in the arena are contiguous there, in order: the front
    /// one starts at `head`, each next one where the previous ends. Slot
    /// entries hold no arena bytes.
    entries: VecDeque<Entry>,
    /// Slot entries queued (empty datagrams included), and their bytes:
    /// counted against `max_bytes` like arena bytes, so copying them into
    /// the arena always fits.
    slot_entries: usize,
    slot_bytes: usize,
    max_datagrams: usize,
    max_bytes: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    to: SocketAddr,
    len: usize,
    /// The receive batch slot holding the bytes, or `None`: in the arena.
    slot: Option<usize>,
}

impl SendQueue {
    /// Allocates room for up to `max_datagrams` datagrams totalling at most
    /// `max_bytes` payload bytes.
    pub fn new(max_datagrams: usize, max_bytes: usize) -> Self {
        SendQueue {
            arena: Vec::with_capacity(max_bytes),
            head: 0,
            entries: VecDeque::with_capacity(max_datagrams),
            slot_entries: 0,
            slot_bytes: 0,
            max_datagrams,
            max_bytes,
        }
    }

    /// Appends a datagram, or returns [`QueueFull`] (leaving the queue as is)
    /// if it would exceed either bound.
    pub fn push(&mut self, to: SocketAddr, data: &[u8]) -> Result<(), QueueFull> {
        self.make_room(data.len())?;
        self.arena.extend_from_slice(data);
        self.entries.push_back(Entry {
            to,
            len: data.len(),
            slot: None,
        });
        Ok(())
    }

    /// Appends a datagram that `write` builds in place, with no copy:
    /// `write` appends at most `max_len` bytes to the vector it is given
    /// and returns the destination, or `None` to queue nothing (then what
    /// it appended is discarded, as it is if longer than `max_len`: a bug
    /// of the writer). Returns what `write` returned, or
    /// [`QueueFull`] without calling it if `max_len` bytes do not fit.
    ///
    /// ```
    /// use sockloop::net::udp_batch::SendQueue;
    ///
    /// let mut q = SendQueue::new(4, 64);
    /// let to = "127.0.0.1:9".parse()?;
    /// let queued = q.push_with(16, |buf| {
    ///     buf.extend_from_slice(b"built here");
    ///     Some(to)
    /// })?;
    /// assert_eq!((queued, q.len(), q.bytes()), (Some(to), 1, 10));
    /// assert_eq!(q.push_with(16, |buf| { buf.push(1); None })?, None);
    /// assert_eq!((q.len(), q.bytes()), (1, 10));
    /// assert!(q.push_with(64, |_| Some(to)).is_err(), "64 bytes do not fit");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn push_with(
        &mut self,
        max_len: usize,
        write: impl FnOnce(&mut Vec<u8>) -> Option<SocketAddr>,
    ) -> Result<Option<SocketAddr>, QueueFull> {
        self.make_room(max_len)?;
        let start = self.arena.len();
        let to = write(&mut self.arena);
        let len = self.arena.len() - start;
        debug_assert!(len <= max_len, "wrote {len} bytes of at most {max_len}");
        match to {
            Some(to) if len <= max_len => {
                self.entries.push_back(Entry {
                    to,
                    len,
                    slot: None,
                });
                Ok(Some(to))
            }
            _ => {
                self.arena.truncate(start);
                Ok(None)
            }
        }
    }

    /// Makes room at the arena's end for a datagram of `len` bytes, or
    /// returns [`QueueFull`] if it would exceed either bound.
    fn make_room(&mut self, len: usize) -> Result<(), QueueFull> {
        self.check_room(len)?;
        if self.arena.len() + len > self.max_bytes {
            // The space freed at the front is needed: slide the live bytes
            // down. Costs at most `max_bytes` of memmove, and only happens
            // once the tail has reached the end of the reservation.
            self.arena.copy_within(self.head.., 0);
            self.arena.truncate(self.arena.len() - self.head);
            self.head = 0;
        }
        Ok(())
    }

    /// Appends datagram `slot` of the receive batch that
    /// [`flush_batch`](Self::flush_batch) will be given, whole (`len`
    /// bytes), to `to`, its source, by reference: nothing is copied unless
    /// the socket cannot take it in that flush. Bounds as
    /// [`push`](Self::push).
    pub(crate) fn push_slot(
        &mut self,
        to: SocketAddr,
        slot: usize,
        len: usize,
    ) -> Result<(), QueueFull> {
        self.check_room(len)?;
        self.slot_entries += 1;
        self.slot_bytes += len;
        self.entries.push_back(Entry {
            to,
            len,
            slot: Some(slot),
        });
        Ok(())
    }

    fn check_room(&self, len: usize) -> Result<(), QueueFull> {
        if self.entries.len() >= self.max_datagrams || len > self.max_bytes - self.bytes() {
            return Err(QueueFull);
        }
        Ok(())
    }

    /// Sends from the front in batches until the queue is empty or the socket
    /// would block. Datagrams that fail with any other error are dropped and
    /// counted so one bad destination can never wedge the queue; every loop
    /// iteration either removes a datagram or returns, so this cannot spin.
    ///
    /// # Panics
    /// If slot entries are queued: those go through
    /// [`flush_batch`](Self::flush_batch).
    pub fn flush(&mut self, socket: &UdpSocket) -> FlushOutcome {
        assert_eq!(self.slot_entries, 0, "slot entries need their batch");
        self.flush_from(socket, None)
    }

    /// [`flush`](Self::flush) for a queue whose slot entries (from
    /// [`push_slot`](Self::push_slot)) name slots of `batch`; what the
    /// socket does not take is then copied into the arena, so the queue no
    /// longer refers to `batch` and it may receive again.
    pub(crate) fn flush_batch(
        &mut self,
        socket: &UdpSocket,
        batch: &mut RecvBatch,
    ) -> FlushOutcome {
        let out = self.flush_from(socket, Some(&mut *batch));
        if self.slot_entries > 0 {
            self.own_slot_bytes(batch);
        }
        out
    }

    fn flush_from(
        &mut self,
        socket: &UdpSocket,
        mut slots: Option<&mut RecvBatch>,
    ) -> FlushOutcome {
        let mut out = FlushOutcome::default();
        while !self.entries.is_empty() {
            let sent = match (slots.as_deref_mut(), self.slot_run()) {
                // Every entry goes back to where it came from, slots in a
                // row: the slots' own headers serve (an echo's batch).
                (Some(batch), Some(first)) => batch.send_back(socket, first, self.entries.len()),
                (slots, _) => {
                    let mut start = self.head;
                    let batch = self.entries.iter().map(|e| match e.slot {
                        None => {
                            let data = &self.arena[start..start + e.len];
                            start += e.len;
                            (e.to, data)
                        }
                        Some(slot) => {
                            let slots = slots.as_deref().expect("slot entries need their batch");
                            (e.to, &slots.payload(slot)[..e.len])
                        }
                    });
                    sys::send_batch(socket.as_fd(), batch)
                }
            };
            match sent {
                Ok(0) => {
                    // Not expected from a non-empty batch; stop rather than spin.
                    debug_assert!(false, "send_batch sent nothing without an error");
                    out.would_block = true;
                    break;
                }
                Ok(n) => {
                    self.pop_front_n(n);
                    out.sent += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    out.would_block = true;
                    break;
                }
                Err(e) => {
                    let (to, len) = self.pop_front();
                    out.dropped_errors += 1;
                    debug!("dropping queued {len}-byte datagram to {to}: {e}");
                }
            }
        }
        out
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first slot if every entry is a slot entry and each names the
    /// slot after the previous one's.
    fn slot_run(&self) -> Option<usize> {
        let first = self.entries.front()?.slot?;
        let in_a_row = (first..)
            .zip(&self.entries)
            .all(|(want, e)| e.slot == Some(want));
        in_a_row.then_some(first)
    }

    /// Payload bytes queued.
    pub fn bytes(&self) -> usize {
        self.arena.len() - self.head + self.slot_bytes
    }

    /// Copies the bytes of every slot entry into the arena, in queue order,
    /// so that all entries are contiguous from offset 0 again.
    ///
    /// Back to front, each arena entry moves right (by the slot bytes queued
    /// before it), never onto bytes not yet moved, and each slot's bytes
    /// land in the gap left for them. Fits: slot bytes were counted against
    /// `max_bytes` when pushed.
    fn own_slot_bytes(&mut self, batch: &RecvBatch) {
        self.arena.copy_within(self.head.., 0);
        self.arena.truncate(self.arena.len() - self.head);
        self.head = 0;
        let mut src_end = self.arena.len();
        let mut dst_end = src_end + self.slot_bytes;
        debug_assert!(dst_end <= self.max_bytes);
        self.arena.resize(dst_end, 0);
        for e in self.entries.iter_mut().rev() {
            dst_end -= e.len;
            match e.slot.take() {
                None => {
                    src_end -= e.len;
                    self.arena.copy_within(src_end..src_end + e.len, dst_end);
                }
                Some(slot) => {
                    let data = &batch.payload(slot)[..e.len];
                    self.arena[dst_end..dst_end + e.len].copy_from_slice(data);
                }
            }
        }
        debug_assert_eq!((src_end, dst_end), (0, 0));
        self.slot_entries = 0;
        self.slot_bytes = 0;
    }

    /// Bytes reserved for payloads: fixed at construction (at least
    /// `max_bytes`), exposed so tests and metrics can check it never grows.
    pub fn arena_capacity(&self) -> usize {
        self.arena.capacity()
    }

    /// Destination and length of each queued datagram, front first; their
    /// bytes follow one another in [`live_bytes`](Self::live_bytes), so a
    /// run of them is one slice (what a segmented send takes).
    pub(crate) fn entries(&self) -> impl Iterator<Item = (SocketAddr, usize)> + '_ {
        self.entries.iter().map(|e| (e.to, e.len))
    }

    /// Every queued datagram's bytes, back to back, front first (a queue
    /// without slot entries).
    pub(crate) fn live_bytes(&self) -> &[u8] {
        debug_assert_eq!(self.slot_entries, 0, "slot entries are not in the arena");
        &self.arena[self.head..]
    }

    /// Drops the `n` datagrams at the front (sent, or failed).
    pub(crate) fn pop_front_n(&mut self, n: usize) {
        if n == self.entries.len() {
            // All sent, the usual case: no entry needs looking at.
            self.clear();
            return;
        }
        for _ in 0..n {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) -> (SocketAddr, usize) {
        let e = self.entries.pop_front().expect("pop_front on empty queue");
        match e.slot {
            None => self.head += e.len,
            Some(_) => {
                self.slot_entries -= 1;
                self.slot_bytes -= e.len;
            }
        }
        if self.entries.is_empty() {
            // Free rewind: nothing live to move.
            self.clear();
        }
        (e.to, e.len)
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.arena.clear();
        self.head = 0;
        self.slot_entries = 0;
        self.slot_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::udp_batch::testing::*;
    use crate::rng::Rng;
    use std::time::Duration;

    fn std_rx() -> std::net::UdpSocket {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        rx
    }

    fn recv_one(rx: &std::net::UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0; 65536];
        let (n, from) = rx.recv_from(&mut buf).unwrap();
        (buf[..n].to_vec(), from)
    }

    #[test]
    fn send_queue_flushes_all_in_order() {
        let tx = bind("127.0.0.1:0");
        let rx = std_rx();
        let to = rx.local_addr().unwrap();
        let mut q = SendQueue::new(128, 16 * 1024);
        // More than one sendmmsg worth, varying sizes including empty.
        let n = sys::MAX_BATCH + 36;
        for i in 0..n {
            q.push(to, &payload(i, i % 97)).unwrap();
        }
        assert_eq!(q.len(), n);
        let out = q.flush(&tx);
        assert_eq!(
            out,
            FlushOutcome {
                sent: n,
                dropped_errors: 0,
                would_block: false
            }
        );
        assert_eq!((q.len(), q.bytes(), q.is_empty()), (0, 0, true));
        for i in 0..n {
            assert_eq!(recv_one(&rx), (payload(i, i % 97), addr(&tx)));
        }
    }

    #[test]
    fn send_queue_full_by_count_and_by_bytes() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut q = SendQueue::new(3, 10);
        q.push(to, &[1; 4]).unwrap();
        q.push(to, &[2; 4]).unwrap();
        assert_eq!(q.push(to, &[3; 3]), Err(QueueFull)); // 11 bytes > 10
        assert_eq!((q.len(), q.bytes()), (2, 8));
        q.push(to, &[4; 2]).unwrap(); // exactly 10 bytes
        assert_eq!(q.push(to, &[]), Err(QueueFull)); // 4 datagrams > 3
        assert_eq!((q.len(), q.bytes()), (3, 10));
        assert_eq!(SendQueue::new(8, 10).push(to, &[0; 11]), Err(QueueFull));
    }

    #[test]
    fn send_queue_drops_failing_datagrams_and_continues() {
        let tx = bind("127.0.0.1:0");
        let rx = std_rx();
        let to = rx.local_addr().unwrap();
        let mut q = SendQueue::new(8, 128 * 1024);
        q.push(to, b"first").unwrap();
        q.push(to, &[0; 65508]).unwrap(); // one over the IPv4 UDP max: EMSGSIZE
        q.push("[::1]:9".parse().unwrap(), b"v6 on v4").unwrap(); // EAFNOSUPPORT
        q.push(to, b"last").unwrap();
        let out = q.flush(&tx);
        assert_eq!(
            out,
            FlushOutcome {
                sent: 2,
                dropped_errors: 2,
                would_block: false
            }
        );
        assert!(q.is_empty());
        assert_eq!(recv_one(&rx), (b"first".to_vec(), addr(&tx)));
        assert_eq!(recv_one(&rx), (b"last".to_vec(), addr(&tx)));
    }

    /// Partial flushes (as after WouldBlock) with a model queue alongside:
    /// contents stay exact and in order while the arena compacts in place.
    #[test]
    fn send_queue_arena_compacts_without_growing() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut q = SendQueue::new(16, 1000);
        let (arena_cap, entries_cap) = (q.arena_capacity(), q.entries.capacity());
        assert!(arena_cap >= 1000);
        let mut model: VecDeque<Vec<u8>> = VecDeque::new();
        let mut rng = Rng::new(12345);
        let mut rand = move |m: u32| rng.below(u64::from(m)) as u32;
        let (mut pushed, mut refused, mut compactions) = (0, 0, 0);
        for i in 0..20_000 {
            if rand(3) == 0 && !model.is_empty() {
                for _ in 0..=rand(model.len() as u32) {
                    let want = model.pop_front().unwrap();
                    let start = q.head;
                    assert_eq!(&q.arena[start..start + want.len()], &want[..]);
                    q.pop_front();
                }
            } else {
                let data = payload(i, rand(200) as usize);
                let must_compact = q.head > 0 && q.arena.len() + data.len() > 1000;
                match q.push(to, &data) {
                    Ok(()) => {
                        compactions += usize::from(must_compact);
                        model.push_back(data);
                        pushed += 1;
                    }
                    Err(QueueFull) => refused += 1,
                }
            }
            assert_eq!(q.len(), model.len());
            assert_eq!(q.bytes(), model.iter().map(Vec::len).sum::<usize>());
            assert!(q.arena.len() <= 1000);
        }
        assert!(
            pushed > 1000 && refused > 100 && compactions > 100,
            "pushed {pushed} refused {refused} compactions {compactions}"
        );
        assert_eq!(
            (q.arena_capacity(), q.entries.capacity()),
            (arena_cap, entries_cap)
        );
    }

    /// A server socket and a batch holding `datagrams` from the clients
    /// (client `i % clients.len()` sent datagram `i`).
    fn received(clients: &[std::net::UdpSocket], datagrams: &[&[u8]]) -> (UdpSocket, RecvBatch) {
        let server = bind("127.0.0.1:0");
        for (i, d) in datagrams.iter().enumerate() {
            clients[i % clients.len()]
                .send_to(d, addr(&server))
                .unwrap();
        }
        // Loopback delivers within the send; the pause is only a margin.
        std::thread::sleep(Duration::from_millis(50));
        let mut batch = RecvBatch::new(8, 64);
        assert_eq!(batch.recv(&server).unwrap(), datagrams.len());
        (server, batch)
    }

    fn slot_of(q: &mut SendQueue, batch: &RecvBatch, i: usize) {
        let d = batch.get(i);
        q.push_slot(d.from, i, d.data.len()).unwrap();
    }

    #[test]
    fn slot_entries_are_sent_from_the_batch_in_queue_order() {
        let clients = [std_rx(), std_rx()];
        let (server, mut batch) = received(&clients, &[b"a1", b"b22", b"a333"]);
        // A run of slots in order: the slots' own headers carry it.
        let mut q = SendQueue::new(8, 1024);
        for i in 0..3 {
            slot_of(&mut q, &batch, i);
        }
        assert_eq!((q.len(), q.bytes(), q.slot_run()), (3, 9, Some(0)));
        let all_sent = FlushOutcome {
            sent: 3,
            dropped_errors: 0,
            would_block: false,
        };
        assert_eq!(q.flush_batch(&server, &mut batch), all_sent);
        assert_eq!((q.len(), q.bytes(), q.slot_bytes), (0, 0, 0));
        let from = addr(&server);
        assert_eq!(recv_one(&clients[0]), (b"a1".to_vec(), from));
        assert_eq!(recv_one(&clients[0]), (b"a333".to_vec(), from));
        assert_eq!(recv_one(&clients[1]), (b"b22".to_vec(), from));
        // Mixed with a copied datagram and out of slot order: one batch of
        // addresses and slices, still in queue order.
        let mut q = SendQueue::new(8, 1024);
        slot_of(&mut q, &batch, 2);
        q.push(clients[1].local_addr().unwrap(), b"copied").unwrap();
        slot_of(&mut q, &batch, 1);
        slot_of(&mut q, &batch, 0);
        assert_eq!((q.len(), q.bytes(), q.slot_run()), (4, 15, None));
        let out = q.flush_batch(&server, &mut batch);
        assert_eq!(
            out,
            FlushOutcome {
                sent: 4,
                ..all_sent
            }
        );
        assert!(q.is_empty());
        assert_eq!(recv_one(&clients[0]), (b"a333".to_vec(), from));
        assert_eq!(recv_one(&clients[0]), (b"a1".to_vec(), from));
        assert_eq!(recv_one(&clients[1]), (b"copied".to_vec(), from));
        assert_eq!(recv_one(&clients[1]), (b"b22".to_vec(), from));
    }

    /// What the socket did not take is copied out of the batch, in queue
    /// order around the arena's own entries, before the batch is reused.
    #[test]
    fn unsent_slot_entries_are_copied_into_the_arena_in_order() {
        let clients = [std_rx()];
        let (server, batch) = received(&clients, &[b"s0", b"s1-", b"s2--", b""]);
        let to = clients[0].local_addr().unwrap();
        let mut q = SendQueue::new(8, 30);
        q.push(to, b"gone").unwrap();
        q.push(to, b"x1").unwrap();
        q.pop_front(); // live bytes now start past the arena's front
        slot_of(&mut q, &batch, 0);
        q.push(to, b"mid").unwrap();
        slot_of(&mut q, &batch, 2);
        slot_of(&mut q, &batch, 1);
        slot_of(&mut q, &batch, 3); // empty: no bytes, still an entry
        assert_eq!((q.len(), q.bytes(), q.head), (6, 14, 4));
        assert_eq!((q.slot_entries, q.slot_bytes), (4, 9));
        q.own_slot_bytes(&batch);
        assert_eq!((q.len(), q.bytes(), q.head), (6, 14, 0));
        assert_eq!((q.slot_entries, q.slot_bytes), (0, 0));
        assert_eq!(q.live_bytes(), b"x1s0mids2--s1-");
        assert!(q.entries.iter().all(|e| e.slot.is_none()));
        drop(batch); // the queue no longer needs it
        let out = q.flush(&server);
        assert_eq!((out.sent, q.is_empty()), (6, true));
        let from = addr(&server);
        for want in [&b"x1"[..], b"s0", b"mid", b"s2--", b"s1-", b""] {
            assert_eq!(recv_one(&clients[0]), (want.to_vec(), from));
        }
    }

    /// Random pushes (copied and slot), pops and copy-outs against a model
    /// queue: after each copy-out the arena holds exactly the model's bytes
    /// in order, and the arena never grows.
    #[test]
    fn copying_slot_entries_out_keeps_every_byte_in_order() {
        let clients = [std_rx()];
        let sent: Vec<Vec<u8>> = (0..8).map(|i| payload(i, i * 5)).collect();
        let sent_refs: Vec<&[u8]> = sent.iter().map(Vec::as_slice).collect();
        let (_server, batch) = received(&clients, &sent_refs);
        let to = clients[0].local_addr().unwrap();
        let mut q = SendQueue::new(12, 100);
        let arena_cap = q.arena_capacity();
        let mut model: VecDeque<Vec<u8>> = VecDeque::new();
        let mut rng = Rng::new(7);
        let mut rand = move |m: u64| rng.below(m) as usize;
        let mut copied_out = 0;
        for i in 0..5000 {
            match rand(4) {
                0 => {
                    let data = payload(i, rand(30));
                    if q.push(to, &data).is_ok() {
                        model.push_back(data);
                    }
                }
                1 => {
                    let slot = rand(8);
                    if q.push_slot(to, slot, sent[slot].len()).is_ok() {
                        model.push_back(sent[slot].clone());
                    }
                }
                2 => {
                    for _ in 0..rand(model.len() as u64 + 1) {
                        q.pop_front();
                        model.pop_front();
                    }
                }
                _ => {
                    copied_out += usize::from(q.slot_entries > 0);
                    q.own_slot_bytes(&batch);
                    assert_eq!(q.slot_entries, 0);
                    assert_eq!(
                        q.live_bytes(),
                        model.iter().flatten().copied().collect::<Vec<u8>>()
                    );
                }
            }
            assert_eq!(q.len(), model.len());
            assert_eq!(q.bytes(), model.iter().map(Vec::len).sum::<usize>());
            assert!(q.arena.len() <= 100);
        }
        assert!(copied_out > 100, "copied out {copied_out} times");
        assert_eq!(q.arena_capacity(), arena_cap);
    }

    #[test]
    fn slot_entries_count_against_both_bounds() {
        let clients = [std_rx()];
        let (_server, batch) = received(&clients, &[b"123456", b""]);
        let to = clients[0].local_addr().unwrap();
        let mut q = SendQueue::new(2, 10);
        slot_of(&mut q, &batch, 0);
        assert_eq!(q.push(to, &[0; 5]), Err(QueueFull)); // 11 bytes > 10
        q.push(to, &[0; 4]).unwrap(); // exactly 10
        assert_eq!(q.push_slot(to, 1, 0), Err(QueueFull)); // 3 datagrams > 2
        assert_eq!((q.len(), q.bytes()), (2, 10));
    }

    #[test]
    #[should_panic(expected = "slot entries need their batch")]
    fn slot_entries_cannot_be_flushed_without_their_batch() {
        let clients = [std_rx()];
        let (server, batch) = received(&clients, &[b""]); // empty: still an entry
        let mut q = SendQueue::new(2, 10);
        slot_of(&mut q, &batch, 0);
        q.flush(&server);
    }
}
