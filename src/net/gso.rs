//! UDP segmentation offload: runs of datagrams to one peer leave in one
//! send (`UDP_SEGMENT`, "GSO") and arrive in one receive (`UDP_GRO`),
//! the kernel cutting and gluing them, so a bulk transfer crosses the
//! kernel once per up to 64 datagrams rather than once per datagram.
//!
//! The sans-IO half: [`runs`] groups a queue of datagrams into segmented
//! sends (one peer, equal sizes, the last one possibly shorter, at most
//! [`MAX_SEGMENTS`] and [`MAX_RUN_BYTES`]); [`split`] cuts a coalesced
//! receive back into datagrams. [`Offload`] holds what a socket may do and
//! falls back when the kernel refuses:
//!
//! - `UDP_GRO` refused by `setsockopt` (a kernel before 5.0): plain
//!   receives, one datagram each;
//! - a segmented send failing with `EIO` (a device without checksum
//!   offload) or `EINVAL` (a kernel that does not take the cmsg):
//!   segmentation is turned off for that socket for good and the same
//!   datagrams are sent again one by one (in `sendmmsg` batches), so
//!   nothing is lost to the refusal.
//!
//! [`OffloadMode`] can force either side from the environment
//! (`SOCKLOOP_UDP_OFFLOAD=off|refuse`), which is how the tests exercise
//! the fallback on a kernel that would accept everything.

use std::io;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;

use log::{debug, warn};

use super::send_queue::{FlushOutcome, SendQueue};
use super::sys;
pub use super::sys::{recv_segments, Segments};

/// Most datagrams in one segmented send (the kernel's `UDP_MAX_SEGMENTS`
/// before Linux 6.9; later kernels take 128).
pub const MAX_SEGMENTS: usize = 64;

/// Most bytes in one segmented send: the largest UDP payload over IPv4.
pub const MAX_RUN_BYTES: usize = 65_507;

/// A receive buffer that holds the largest coalesced receive.
pub const GRO_BUFFER: usize = 65_536;

/// The environment variable [`OffloadMode::from_env`] reads.
pub const OFFLOAD_ENV: &str = "SOCKLOOP_UDP_OFFLOAD";

/// Whether a socket tries segmentation offload.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum OffloadMode {
    /// Use GSO and GRO where the kernel takes them (the default).
    #[default]
    Auto,
    /// Never try: one datagram per send and per receive.
    Off,
    /// Act as a kernel that refuses both would make us act: `UDP_GRO` is
    /// taken as refused, and the first segmented send as failed with
    /// `EIO` (without reaching the kernel; plain sends queued before it
    /// go), so the fallback runs. For tests.
    Refuse,
}

impl OffloadMode {
    /// `auto`, `off` or `refuse`.
    ///
    /// ```
    /// use sockloop::net::gso::OffloadMode;
    ///
    /// assert_eq!(OffloadMode::parse("refuse"), Some(OffloadMode::Refuse));
    /// assert_eq!(OffloadMode::parse("on"), None);
    /// ```
    pub fn parse(s: &str) -> Option<OffloadMode> {
        match s {
            "auto" => Some(OffloadMode::Auto),
            "off" => Some(OffloadMode::Off),
            "refuse" => Some(OffloadMode::Refuse),
            _ => None,
        }
    }

    /// From `SOCKLOOP_UDP_OFFLOAD` (unset: `Auto`; an unknown value is
    /// logged and taken as `Auto`).
    pub fn from_env() -> OffloadMode {
        match std::env::var(OFFLOAD_ENV) {
            Ok(value) => OffloadMode::parse(&value).unwrap_or_else(|| {
                warn!("{OFFLOAD_ENV}={value:?} is not auto, off or refuse: taken as auto");
                OffloadMode::Auto
            }),
            Err(_) => OffloadMode::Auto,
        }
    }
}

/// Datagrams that leave in one segmented send: `count` of them to `to`,
/// the bytes `start..start + len` of the queue, each `segment` bytes but
/// the last, which may be shorter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// The peer.
    pub to: SocketAddr,
    /// Where the run's bytes start.
    pub start: usize,
    /// The run's bytes.
    pub len: usize,
    /// The size of every datagram but the last.
    pub segment: usize,
    /// Datagrams in the run.
    pub count: usize,
}

/// Cuts `datagrams` (destination and length, in sending order, their
/// bytes back to back) into runs for segmented sends: a run continues
/// while the destination is the same, the datagram is no longer than the
/// first, the one before it was not shorter (only the last may be), and
/// it stays within `max_segments` and [`MAX_RUN_BYTES`].
///
/// ```
/// use sockloop::net::gso::{runs, Run};
///
/// let (a, b) = ("127.0.0.1:1".parse()?, "127.0.0.1:2".parse()?);
/// let queue = [(a, 1200), (a, 1200), (a, 40), (a, 1200), (b, 1200)];
/// let cut: Vec<(usize, usize)> = runs(queue, 64).map(|r| (r.count, r.segment)).collect();
/// assert_eq!(cut, [(3, 1200), (1, 1200), (1, 1200)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn runs<I>(datagrams: I, max_segments: usize) -> Runs<I::IntoIter>
where
    I: IntoIterator<Item = (SocketAddr, usize)>,
{
    Runs {
        datagrams: datagrams.into_iter().peekable(),
        max_segments: max_segments.clamp(1, MAX_SEGMENTS),
        offset: 0,
    }
}

/// The iterator [`runs`] returns.
#[derive(Debug)]
pub struct Runs<I: Iterator<Item = (SocketAddr, usize)>> {
    datagrams: std::iter::Peekable<I>,
    max_segments: usize,
    offset: usize,
}

impl<I: Iterator<Item = (SocketAddr, usize)>> Iterator for Runs<I> {
    type Item = Run;

    fn next(&mut self) -> Option<Run> {
        let (to, segment) = self.datagrams.next()?;
        let mut run = Run {
            to,
            start: self.offset,
            len: segment,
            segment,
            count: 1,
        };
        let mut last = segment;
        while let Some(&(next_to, len)) = self.datagrams.peek() {
            let fits = next_to == to
                && segment > 0
                && last == segment
                && len <= segment
                && run.count < self.max_segments
                && run.len + len <= MAX_RUN_BYTES;
            if !fits {
                break;
            }
            self.datagrams.next();
            run.len += len;
            run.count += 1;
            last = len;
        }
        self.offset += run.len;
        Some(run)
    }
}

/// Cuts a receive of `buf` (one datagram, or several coalesced by GRO)
/// into its datagrams of `segment` bytes, the last possibly shorter. An
/// empty `buf` is one empty datagram.
///
/// ```
/// use sockloop::net::gso::split;
///
/// let parts: Vec<&[u8]> = split(b"aaabbbc", 3).collect();
/// assert_eq!(parts, [&b"aaa"[..], b"bbb", b"c"]);
/// ```
pub fn split(buf: &[u8], segment: usize) -> impl Iterator<Item = &[u8]> {
    let empty = buf.is_empty().then_some(buf);
    buf.chunks(segment.max(1)).chain(empty)
}

/// What one socket may do: segmented sends (up to how many datagrams
/// each) and coalesced receives; see the module docs for the fallbacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offload {
    mode: OffloadMode,
    max_segments: usize,
    gro: bool,
    refusals: u64,
}

impl Offload {
    /// Sets `socket` up as `mode` allows: `UDP_GRO` on if the kernel takes
    /// it, segmented sends if it knows `UDP_SEGMENT`.
    pub fn enable(socket: BorrowedFd<'_>, mode: OffloadMode) -> Offload {
        let gro = match mode {
            OffloadMode::Auto => match sys::set_udp_gro(socket, true) {
                Ok(()) => true,
                Err(e) => {
                    debug!("UDP_GRO refused ({e}): one datagram per receive");
                    false
                }
            },
            OffloadMode::Off | OffloadMode::Refuse => false,
        };
        Offload {
            gro,
            ..Offload::sending(socket, mode)
        }
    }

    /// Segmented sends on `socket` as `mode` allows (if the kernel knows
    /// `UDP_SEGMENT`), receives left alone: for a sender whose peer
    /// answers one datagram at a time, so there is nothing to coalesce.
    pub fn sending(socket: BorrowedFd<'_>, mode: OffloadMode) -> Offload {
        let gso = match mode {
            OffloadMode::Auto => sys::udp_segment_supported(socket),
            OffloadMode::Refuse => true, // refused at the first send
            OffloadMode::Off => false,
        };
        Offload::new(mode, gso, false)
    }

    /// The state for a socket of which `gso` and `gro` are known.
    pub fn new(mode: OffloadMode, gso: bool, gro: bool) -> Offload {
        Offload {
            mode,
            max_segments: if gso { MAX_SEGMENTS } else { 1 },
            gro,
            refusals: 0,
        }
    }

    /// Most datagrams per send: [`MAX_SEGMENTS`], or 1 without GSO.
    pub fn max_segments(&self) -> usize {
        self.max_segments
    }

    /// Whether receives may be coalesced (then read into a
    /// [`GRO_BUFFER`]).
    pub fn gro(&self) -> bool {
        self.gro
    }

    /// Segmented sends the kernel refused (at most 1: the first turns
    /// segmentation off).
    pub fn refusals(&self) -> u64 {
        self.refusals
    }

    /// Judges the error of a send whose first message was a run of
    /// `count` datagrams: a refusal of segmentation (`EIO`, `EINVAL`)
    /// turns it off for this socket and returns true (send them again,
    /// one by one); any other error is the datagrams' own.
    pub fn refused(&mut self, error: &io::Error, count: usize) -> bool {
        let refusal = matches!(error.raw_os_error(), Some(libc::EIO | libc::EINVAL));
        if count < 2 || self.max_segments < 2 || !refusal {
            return false;
        }
        warn!("the kernel refused a segmented UDP send ({error}): one datagram per send on this socket from now on");
        self.max_segments = 1;
        self.refusals += 1;
        true
    }

    /// Sends the first datagrams of `data` (back to back, `size` bytes
    /// each, the last possibly shorter) on a connected socket, naming no
    /// destination ([`sys::send_connected`]), as many as one call takes: a
    /// segmented run of up to [`MAX_SEGMENTS`] and [`MAX_RUN_BYTES`], or
    /// without segmentation a `sendmmsg` batch. `Ok((n, segmented))`: the
    /// first `n` left, in one segmented send or not. `Err((e, n))`: the
    /// first `n` failed with `e` (a whole run when segmented, else one).
    /// A refusal of segmentation turns it off, and the same datagrams go
    /// again one by one.
    pub fn send_connected(
        &mut self,
        socket: BorrowedFd<'_>,
        data: &[u8],
        size: usize,
    ) -> Result<(usize, bool), (io::Error, usize)> {
        let size = size.max(1);
        loop {
            let per_run = self.max_segments.min(MAX_RUN_BYTES / size);
            if per_run < 2 || data.len() <= size {
                return match sys::send_connected(socket, data, size, false) {
                    Ok(n) => Ok((n, false)),
                    Err(e) => Err((e, 1)),
                };
            }
            let run = &data[..data.len().min(per_run * size)];
            let count = run.len().div_ceil(size);
            let sent = match self.mode {
                OffloadMode::Refuse => Err(io::Error::from_raw_os_error(libc::EIO)),
                _ => sys::send_connected(socket, run, size, true),
            };
            match sent {
                Ok(n) => return Ok((n, true)),
                Err(e) if self.refused(&e, count) => {}
                Err(e) => return Err((e, count)),
            }
        }
    }

    /// Sends `queue` from the front, each run of datagrams to one peer in
    /// one segmented message, up to 64 messages per `sendmmsg`, until it
    /// is empty or the socket would block. As [`SendQueue::flush`]:
    /// datagrams failing with an error other than `WouldBlock` are
    /// dropped and counted; a refusal of segmentation is not an error of
    /// the datagrams: they go again, one by one.
    pub fn flush(&mut self, queue: &mut SendQueue, socket: BorrowedFd<'_>) -> FlushOutcome {
        let mut out = FlushOutcome::default();
        while !queue.is_empty() {
            let max = self.max_segments;
            let first = runs(queue.entries(), max).next().map_or(0, |r| r.count);
            let sent = {
                let bytes = queue.live_bytes();
                let batch = runs(queue.entries(), max).map(|r| {
                    let data = &bytes[r.start..r.start + r.len];
                    (r.to, data, r.segment as u16)
                });
                if max == 1 {
                    sys::send_batch(socket, batch.map(|(to, data, _)| (to, data)))
                } else if self.mode == OffloadMode::Refuse {
                    // As a refusing kernel's `sendmmsg`: the messages
                    // before the first segmented one go, that one fails
                    // (then it is first, and judged as a refusal).
                    let plain = runs(queue.entries(), max).take_while(|r| r.count == 1);
                    match plain.count() {
                        0 => Err(io::Error::from_raw_os_error(libc::EIO)),
                        plain => sys::send_segmented_batch(socket, batch.take(plain)),
                    }
                } else {
                    sys::send_segmented_batch(socket, batch)
                }
            };
            match sent {
                Ok(0) => {
                    debug_assert!(false, "a send of a non-empty batch sent nothing");
                    out.would_block = true;
                    break;
                }
                Ok(n) => {
                    let count = runs(queue.entries(), max).take(n).map(|r| r.count).sum();
                    queue.pop_front_n(count);
                    out.sent += count;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    out.would_block = true;
                    break;
                }
                Err(e) if self.refused(&e, first) => {}
                Err(e) => {
                    debug!("dropping {first} queued datagram(s): {e}");
                    queue.pop_front_n(first);
                    out.dropped_errors += first;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_long_run_to_one_peer_is_cut_every_64_segments() {
        let queue = vec![(addr(1), 1200); 150];
        let cut: Vec<Run> = runs(queue, MAX_SEGMENTS).collect();
        let run = |start, count| Run {
            to: addr(1),
            start,
            len: count * 1200,
            segment: 1200,
            count,
        };
        // 64 × 1200 = 76,800 is over MAX_RUN_BYTES: 54 fit (64,800).
        assert_eq!(cut, [run(0, 54), run(64_800, 54), run(129_600, 42)]);
    }

    #[test]
    fn runs_end_at_a_short_datagram_a_longer_one_or_another_peer() {
        let queue = [
            (addr(1), 100),
            (addr(1), 100),
            (addr(1), 30), // shorter: the last of its run
            (addr(1), 100),
            (addr(1), 200), // longer than the segment: a new run
            (addr(2), 200), // another peer
            (addr(2), 200),
            (addr(1), 0), // empty: alone
            (addr(1), 0),
        ];
        let cut: Vec<(u16, usize, usize, usize, usize)> = runs(queue, 64)
            .map(|r| (r.to.port(), r.start, r.len, r.segment, r.count))
            .collect();
        assert_eq!(
            cut,
            [
                (1, 0, 230, 100, 3),
                (1, 230, 100, 100, 1),
                (1, 330, 200, 200, 1),
                (2, 530, 400, 200, 2),
                (1, 930, 0, 0, 1),
                (1, 930, 0, 0, 1),
            ]
        );
    }

    #[test]
    fn max_segments_one_sends_every_datagram_alone() {
        let queue = [(addr(1), 10); 3];
        let counts: Vec<usize> = runs(queue, 1).map(|r| r.count).collect();
        assert_eq!(counts, [1, 1, 1]);
        let counts: Vec<usize> = runs(queue, 2).map(|r| r.count).collect();
        assert_eq!(counts, [2, 1]);
    }

    #[test]
    fn split_cuts_by_the_segment_size_with_a_short_last_one() {
        let buf: Vec<u8> = (0..10).collect();
        let parts: Vec<&[u8]> = split(&buf, 4).collect();
        assert_eq!(parts, [&buf[0..4], &buf[4..8], &buf[8..10]]);
        let parts: Vec<&[u8]> = split(&buf, 5).collect();
        assert_eq!(parts, [&buf[0..5], &buf[5..10]]);
        let parts: Vec<&[u8]> = split(&buf, 10).collect();
        assert_eq!(parts, [&buf[..]]);
        let empty: &[u8] = &[];
        assert_eq!(split(empty, 1200).collect::<Vec<_>>(), [empty]);
    }

    #[test]
    fn a_refusal_turns_segmentation_off_once_other_errors_do_not() {
        let mut offload = Offload::new(OffloadMode::Auto, true, true);
        let eio = io::Error::from_raw_os_error(libc::EIO);
        let eacces = io::Error::from_raw_os_error(libc::EACCES);
        assert!(!offload.refused(&eacces, 10), "not a refusal");
        assert!(!offload.refused(&eio, 1), "a lone datagram is no GSO send");
        assert_eq!(offload.max_segments(), MAX_SEGMENTS);
        assert!(offload.refused(&io::Error::from_raw_os_error(libc::EINVAL), 2));
        assert_eq!((offload.max_segments(), offload.refusals()), (1, 1));
        assert!(!offload.refused(&eio, 10), "already off");
        assert!(offload.gro(), "receives are another matter");
    }

    /// A receiver with room for every datagram of a test sent one by one.
    fn receiver() -> std::net::UdpSocket {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket2::SockRef::from(&rx)
            .set_recv_buffer_size(1 << 20)
            .unwrap();
        rx
    }

    /// Receives `want` datagrams on `rx` through `recv_segments`, split.
    fn receive(rx: &std::net::UdpSocket, want: usize) -> (Vec<Vec<u8>>, usize) {
        use std::os::fd::AsFd;
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = vec![0; GRO_BUFFER];
        let (mut got, mut reads) = (Vec::new(), 0);
        while got.len() < want {
            let s = sys::recv_segments(rx.as_fd(), &mut buf, true).unwrap();
            assert!(!s.truncated);
            got.extend(split(&buf[..s.len], s.segment).map(<[u8]>::to_vec));
            reads += 1;
        }
        (got, reads)
    }

    fn queue_of(to: SocketAddr, sizes: &[usize]) -> (SendQueue, Vec<Vec<u8>>) {
        let mut queue = SendQueue::new(1024, 1 << 20);
        let mut sent = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let data: Vec<u8> = (0..size).map(|j| (i * 7 + j) as u8).collect();
            queue.push(to, &data).unwrap();
            sent.push(data);
        }
        (queue, sent)
    }

    #[test]
    fn segmented_sends_arrive_whole_with_gro_or_without() {
        use std::os::fd::AsFd;
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut sizes = vec![1200; 100];
        sizes.push(17);
        for mode in [OffloadMode::Auto, OffloadMode::Off] {
            let rx = receiver();
            let receiving = Offload::enable(rx.as_fd(), mode);
            let mut sending = Offload::enable(tx.as_fd(), mode);
            let (mut queue, sent) = queue_of(rx.local_addr().unwrap(), &sizes);
            let out = sending.flush(&mut queue, tx.as_fd());
            assert_eq!((out.sent, out.dropped_errors), (101, 0), "{mode:?}");
            let (got, reads) = receive(&rx, 101);
            assert_eq!(got, sent, "{mode:?}");
            if mode == OffloadMode::Off {
                assert_eq!(reads, 101);
            } else if receiving.gro() && sending.max_segments() > 1 {
                assert!(reads < 10, "{reads} receives for 101 datagrams");
            }
        }
    }

    #[test]
    fn a_refused_segmented_send_goes_again_one_by_one() {
        use std::os::fd::AsFd;
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx = receiver();
        assert!(!Offload::enable(rx.as_fd(), OffloadMode::Refuse).gro());
        let mut sending = Offload::enable(tx.as_fd(), OffloadMode::Refuse);
        assert_eq!(sending.max_segments(), MAX_SEGMENTS);
        let (mut queue, sent) = queue_of(rx.local_addr().unwrap(), &[500, 500, 500, 20]);
        let out = sending.flush(&mut queue, tx.as_fd());
        assert_eq!(
            (out.sent, out.dropped_errors, out.would_block),
            (4, 0, false)
        );
        assert_eq!((sending.max_segments(), sending.refusals()), (1, 1));
        let (got, reads) = receive(&rx, 4);
        assert_eq!((got, reads), (sent, 4));
    }

    #[test]
    fn a_refusal_behind_a_plain_send_is_still_a_refusal() {
        use std::os::fd::AsFd;
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx = receiver();
        let mut sending = Offload::enable(tx.as_fd(), OffloadMode::Refuse);
        // An ack-sized datagram, then a run: the first goes as it is, the
        // run is refused and goes again one by one.
        let (mut queue, sent) = queue_of(rx.local_addr().unwrap(), &[20, 500, 500]);
        let out = sending.flush(&mut queue, tx.as_fd());
        assert_eq!(
            (out.sent, out.dropped_errors, out.would_block),
            (3, 0, false)
        );
        assert_eq!((sending.max_segments(), sending.refusals()), (1, 1));
        let (got, reads) = receive(&rx, 3);
        assert_eq!((got, reads), (sent, 3));
    }

    #[test]
    fn connected_sends_name_no_peer_and_fall_back_when_refused() {
        use std::os::fd::AsFd;
        // 150 datagrams of 100 B (the last 40 B): 64 per segmented run.
        let data: Vec<u8> = (0..14_940).map(|i| (i % 251) as u8).collect();
        let expected: Vec<Vec<u8>> = data.chunks(100).map(<[u8]>::to_vec).collect();
        for mode in [OffloadMode::Auto, OffloadMode::Off, OffloadMode::Refuse] {
            let rx = receiver();
            let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            tx.connect(rx.local_addr().unwrap()).unwrap();
            let mut sending = Offload::sending(tx.as_fd(), mode);
            let gso = sending.max_segments() > 1 && mode == OffloadMode::Auto;
            let (mut left, mut calls) = (&data[..], Vec::new());
            while !left.is_empty() {
                let (n, segmented) = sending.send_connected(tx.as_fd(), left, 100).unwrap();
                calls.push((n, segmented));
                left = &left[(n * 100).min(left.len())..];
            }
            let want = match (mode, gso) {
                (OffloadMode::Auto, true) => vec![(64, true), (64, true), (22, true)],
                _ => vec![(64, false), (64, false), (22, false)],
            };
            assert_eq!(calls, want, "{mode:?}");
            assert_eq!(sending.refusals(), u64::from(mode == OffloadMode::Refuse));
            let (got, reads) = receive(&rx, 150);
            assert_eq!(
                (got, reads),
                (expected.clone(), 150),
                "{mode:?}: one by one"
            );
        }
    }
}
