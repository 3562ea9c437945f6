//! [`RecvBatch`]: many datagrams per syscall into preallocated slots.
//!
//! It allocates once, in `new`, and never again, so memory per socket is
//! fixed no matter how much traffic passes through.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use mio::net::UdpSocket;

use super::sys;

/// One received datagram, borrowed from a [`RecvBatch`].
///
/// ```
/// use sockloop::net::udp_batch::{Datagram, RecvBatch};
/// # use mio::net::UdpSocket;
/// # let rx = UdpSocket::bind("127.0.0.1:0".parse()?)?;
/// # let tx = UdpSocket::bind("127.0.0.1:0".parse()?)?;
/// # tx.send_to(b"ping", rx.local_addr()?)?;
/// # let mut batch = RecvBatch::new(4, 512);
/// # while batch.recv(&rx).is_err() { std::thread::sleep(std::time::Duration::from_millis(1)); }
/// for Datagram { from, data, truncated } in batch.iter() {
///     if truncated {
///         continue; // caller's policy: drop and count
///     }
///     assert_eq!((from, data), (tx.local_addr()?, &b"ping"[..]));
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// Source address.
    pub from: SocketAddr,
    /// Payload; if `truncated`, only its first `slot_size` bytes.
    pub data: &'a [u8],
    /// The datagram did not fit its slot and its tail was discarded.
    pub truncated: bool,
}

/// Preallocated slots for receiving many datagrams per syscall.
///
/// On Linux one [`recv`](Self::recv) is a single `recvmmsg` (one per 1,024
/// slots for larger batches) through headers built once, in `new`;
/// elsewhere it loops `recvmsg` until `WouldBlock` or full.
///
/// ```
/// use mio::net::UdpSocket;
/// use mio::{Events, Interest, Poll, Token};
/// use sockloop::net::udp_batch::RecvBatch;
///
/// let mut rx = UdpSocket::bind("127.0.0.1:0".parse()?)?;
/// let tx = UdpSocket::bind("127.0.0.1:0".parse()?)?;
/// let mut poll = Poll::new()?;
/// poll.registry().register(&mut rx, Token(0), Interest::READABLE)?;
/// tx.send_to(b"hello", rx.local_addr()?)?;
///
/// let mut batch = RecvBatch::new(32, 2048);
/// let mut events = Events::with_capacity(8);
/// loop {
///     match batch.recv(&rx) {
///         Ok(_) => break,
///         Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
///             poll.poll(&mut events, None)?
///         }
///         Err(e) => return Err(e.into()),
///     }
/// }
/// let d = batch.get(0);
/// assert_eq!((d.from, d.data, d.truncated), (tx.local_addr()?, &b"hello"[..], false));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RecvBatch {
    slots: sys::RecvSlots,
    meta: Vec<sys::RecvMeta>,
    len: usize,
}

impl RecvBatch {
    /// Allocates `slots * slot_size` bytes of payload space plus per-slot
    /// metadata. Datagrams longer than `slot_size` are reported truncated.
    ///
    /// # Panics
    /// If `slots` or `slot_size` is 0, or their product overflows `usize`.
    pub fn new(slots: usize, slot_size: usize) -> Self {
        assert!(slots > 0 && slot_size > 0, "RecvBatch needs room");
        RecvBatch {
            slots: sys::RecvSlots::new(slots, slot_size),
            meta: vec![sys::RecvMeta::default(); slots],
            len: 0,
        }
    }

    /// Replaces the batch contents with up to `slots` waiting datagrams and
    /// returns how many arrived. `Err(WouldBlock)` when none were waiting;
    /// on any error the batch is left empty. Other errors are not fatal for
    /// UDP: e.g. a connected socket reports an ICMP port-unreachable once as
    /// `ConnectionRefused`, and the next call receives normally.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.len = 0;
        let n = self.slots.recv(socket.as_fd(), &mut self.meta)?;
        self.len = n;
        Ok(n)
    }

    /// Datagrams held from the last [`recv`](Self::recv).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the last [`recv`](Self::recv) got nothing (or failed).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Size of each slot: the largest datagram received untruncated.
    pub fn slot_size(&self) -> usize {
        self.slots.slot_size()
    }

    /// Datagram `i` of the last [`recv`](Self::recv).
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn get(&self, i: usize) -> Datagram<'_> {
        assert!(i < self.len, "datagram {i} out of {}", self.len);
        let m = &self.meta[i];
        Datagram {
            from: m.from,
            data: self.slots.slot(i, m.len),
            truncated: m.truncated,
        }
    }

    /// The payload of datagram `i` of the last [`recv`](Self::recv).
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub(crate) fn payload(&self, i: usize) -> &[u8] {
        assert!(i < self.len, "datagram {i} out of {}", self.len);
        self.slots.slot(i, self.meta[i].len)
    }

    /// Sends datagrams `first..first + count` of the last
    /// [`recv`](Self::recv) back to their sources as they arrived (at most
    /// [`sys::MAX_RECV_BATCH`] of them), in one syscall from the slots
    /// themselves; results as [`sys::send_batch`].
    ///
    /// # Panics
    /// If the datagrams are out of range.
    pub(crate) fn send_back(
        &mut self,
        socket: &UdpSocket,
        first: usize,
        count: usize,
    ) -> io::Result<usize> {
        let sent = &self.meta[..self.len][first..first + count];
        self.slots.send_back(socket.as_fd(), first, sent)
    }

    /// As [`iter`](Self::iter), each with its slot and with the source by
    /// reference: the shard's per-datagram loop, where copying every
    /// source address shows.
    pub(crate) fn iter_slots(&self) -> impl Iterator<Item = (usize, &SocketAddr, &[u8], bool)> {
        let slots = &self.slots;
        self.meta[..self.len]
            .iter()
            .enumerate()
            .map(move |(i, m)| (i, &m.from, slots.slot(i, m.len), m.truncated))
    }

    /// The datagrams of the last [`recv`](Self::recv), in arrival order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Datagram<'_>> + '_ {
        let slots = &self.slots;
        self.meta[..self.len]
            .iter()
            .enumerate()
            .map(move |(i, m)| Datagram {
                from: m.from,
                data: slots.slot(i, m.len),
                truncated: m.truncated,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::udp_batch::testing::*;

    #[test]
    fn recv_batch_100_datagrams_from_3_senders() {
        let rx = bind("127.0.0.1:0");
        let senders = [
            bind("127.0.0.1:0"),
            bind("127.0.0.1:0"),
            bind("127.0.0.1:0"),
        ];
        let mut batch = RecvBatch::new(32, 2048);
        let (mut expected, mut got) = (Vec::new(), Vec::new());
        let mut largest = 0;
        // Drain every 20 so the default receive buffer can never overflow.
        for chunk in (0..100).collect::<Vec<usize>>().chunks(20) {
            for &i in chunk {
                let tx = &senders[i % 3];
                let data = payload(i, 1 + i * 13);
                assert_eq!(tx.send_to(&data, addr(&rx)).unwrap(), data.len());
                expected.push((addr(tx), data, false));
            }
            let (part, big) = recv_n(&mut batch, &rx, chunk.len());
            got.extend(part);
            largest = largest.max(big);
        }
        assert!(matches!(batch.recv(&rx), Err(e) if e.kind() == io::ErrorKind::WouldBlock));
        assert!(batch.is_empty());
        // Loopback may interleave senders, so compare as multisets.
        expected.sort();
        got.sort();
        assert_eq!(got, expected);
        assert!(
            largest > 1,
            "recvmmsg never returned more than one datagram"
        );
    }

    #[test]
    fn recv_batch_larger_than_a_send_batch() {
        // One recvmmsg takes more than the 64 the stack arrays of sendmmsg
        // hold (150 small datagrams fit the default receive buffer).
        let rx = bind("127.0.0.1:0");
        let tx = bind("127.0.0.1:0");
        let mut batch = RecvBatch::new(200, 64);
        let n = 150;
        for i in 0..n {
            tx.send_to(&payload(i, 8), addr(&rx)).unwrap();
        }
        let (got, largest) = recv_n(&mut batch, &rx, n);
        assert_eq!(got.len(), n);
        assert!(largest > sys::MAX_BATCH, "largest batch was {largest}");
    }

    #[test]
    fn recv_batch_reports_truncation() {
        let rx = bind("127.0.0.1:0");
        let tx = bind("127.0.0.1:0");
        let mut batch = RecvBatch::new(8, 256);
        for len in [300, 10, 256] {
            tx.send_to(&payload(len, len), addr(&rx)).unwrap();
        }
        let (got, _) = recv_n(&mut batch, &rx, 3);
        let from = addr(&tx);
        let big = payload(300, 300);
        assert_eq!(
            got,
            vec![
                (from, big[..256].to_vec(), true),
                (from, payload(10, 10), false),
                (from, payload(256, 256), false),
            ]
        );
    }

    #[test]
    fn recv_batch_would_block_when_empty() {
        let rx = bind("127.0.0.1:0");
        let mut batch = RecvBatch::new(4, 64);
        let err = batch.recv(&rx).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(batch.len(), 0);
    }
}
