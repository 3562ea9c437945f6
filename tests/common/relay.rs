//! A lossy UDP relay between clients and a server, on loopback: it drops,
//! duplicates and reorders datagrams with a fixed seed, in both directions.
//! Each client gets its own upstream socket, so the server sees one peer
//! per client.
//!
//! So that it is not itself the bottleneck, it moves datagrams as the rudp
//! ends do: receives coalesced (`UDP_GRO`), runs forwarded in segmented
//! sends (`UDP_SEGMENT`), 4 MiB socket buffers (as the kernel allows).

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use sockloop::net::gso::{self, Offload, OffloadMode};
use sockloop::net::udp_batch::SendQueue;
use sockloop::rng::Rng;

/// What happens to each datagram, in each direction.
#[derive(Debug, Clone, Copy)]
pub struct Fates {
    pub loss: f64,
    pub duplicate: f64,
    /// Held back and sent after the next datagram.
    pub reorder: f64,
    pub seed: u64,
}

impl Fates {
    pub fn lossy(loss: f64, seed: u64) -> Fates {
        Fates {
            loss,
            duplicate: loss / 5.0,
            reorder: loss / 5.0,
            seed,
        }
    }
}

/// What the relay did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayStats {
    pub forwarded: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

pub struct Relay {
    /// Where clients send.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<RelayStats>>,
}

const FRONT: Token = Token(usize::MAX);

impl Relay {
    pub fn start(server: SocketAddr, fates: Fates) -> Relay {
        let front = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = front.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || run(front, server, fates, &stopping));
        Relay {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the relay and returns what it did.
    pub fn finish(mut self) -> RelayStats {
        self.stop.store(true, Ordering::Release);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One direction's fates and the datagram it holds back (with the index
/// of the client it belongs to).
struct Direction {
    rng: Rng,
    held: Option<(usize, Vec<u8>)>,
}

impl Direction {
    /// What to send now for client `peer`'s `datagram`, in order.
    fn pass(
        &mut self,
        peer: usize,
        datagram: &[u8],
        fates: &Fates,
        stats: &mut RelayStats,
    ) -> Vec<(usize, Vec<u8>)> {
        if self.rng.chance(fates.loss) {
            stats.dropped += 1;
            return self.held.take().into_iter().collect();
        }
        if self.held.is_none() && self.rng.chance(fates.reorder) {
            stats.reordered += 1;
            self.held = Some((peer, datagram.to_vec()));
            return Vec::new();
        }
        let mut out = vec![(peer, datagram.to_vec())];
        if self.rng.chance(fates.duplicate) {
            stats.duplicated += 1;
            out.push((peer, datagram.to_vec()));
        }
        out.extend(self.held.take());
        out
    }
}

/// A socket with its offload state and the datagrams waiting to leave it.
struct Out {
    socket: UdpSocket,
    offload: Offload,
    queue: SendQueue,
}

impl Out {
    fn new(socket: UdpSocket) -> Out {
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20);
        let _ = socket2::SockRef::from(&socket).set_send_buffer_size(4 << 20);
        Out {
            offload: Offload::enable(socket.as_fd(), OffloadMode::Auto),
            socket,
            queue: SendQueue::new(1024, 1 << 20),
        }
    }

    fn push(&mut self, to: SocketAddr, datagram: &[u8]) {
        if self.queue.push(to, datagram).is_err() {
            self.flush();
            let _ = self.queue.push(to, datagram); // else lost, as UDP may
        }
    }

    /// Sends what is queued; what the socket does not take waits for the
    /// next turn.
    fn flush(&mut self) {
        self.offload.flush(&mut self.queue, self.socket.as_fd());
    }
}

/// Queues what a direction let through: to the server on the client's
/// upstream socket, or to the client on the front socket.
fn deliver(
    out: Vec<(usize, Vec<u8>)>,
    to_server: bool,
    front: &mut Out,
    upstreams: &mut [(SocketAddr, Out)],
    server: SocketAddr,
    stats: &mut RelayStats,
) {
    for (peer, datagram) in out {
        stats.forwarded += 1;
        let (client, upstream) = &mut upstreams[peer];
        match to_server {
            true => upstream.push(server, &datagram),
            false => front.push(*client, &datagram),
        }
    }
}

fn run(mut front: UdpSocket, server: SocketAddr, fates: Fates, stop: &AtomicBool) -> RelayStats {
    let mut poll = Poll::new().unwrap();
    poll.registry()
        .register(&mut front, FRONT, Interest::READABLE)
        .unwrap();
    let mut front = Out::new(front);
    let mut events = Events::with_capacity(256);
    let mut upstreams: Vec<(SocketAddr, Out)> = Vec::new();
    let mut by_client: HashMap<SocketAddr, usize> = HashMap::new();
    let mut to_server = Direction {
        rng: Rng::new(fates.seed | 1),
        held: None,
    };
    let mut to_client = Direction {
        rng: Rng::new(fates.seed.rotate_left(17) | 1),
        held: None,
    };
    let mut stats = RelayStats::default();
    let mut buf = vec![0; 65_536];
    while !stop.load(Ordering::Acquire) {
        poll.poll(&mut events, Some(Duration::from_millis(5)))
            .unwrap();
        if events.is_empty() {
            // Quiet: a held datagram goes now rather than being stranded.
            let held = to_server.held.take().into_iter().collect();
            deliver(held, true, &mut front, &mut upstreams, server, &mut stats);
            let held = to_client.held.take().into_iter().collect();
            deliver(held, false, &mut front, &mut upstreams, server, &mut stats);
        }
        for event in events.iter() {
            if event.token() == FRONT {
                loop {
                    let got = match gso::recv_segments(front.socket.as_fd(), &mut buf, false) {
                        Ok(got) => got,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => panic!("relay front: {e}"),
                    };
                    let client = got.from;
                    let peer = *by_client.entry(client).or_insert_with(|| {
                        let mut upstream = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
                        upstream.connect(server).unwrap();
                        let token = Token(upstreams.len());
                        poll.registry()
                            .register(&mut upstream, token, Interest::READABLE)
                            .unwrap();
                        upstreams.push((client, Out::new(upstream)));
                        upstreams.len() - 1
                    });
                    for datagram in gso::split(&buf[..got.len], got.segment) {
                        let out = to_server.pass(peer, datagram, &fates, &mut stats);
                        deliver(out, true, &mut front, &mut upstreams, server, &mut stats);
                    }
                }
            } else {
                let peer = event.token().0;
                loop {
                    let fd = upstreams[peer].1.socket.as_fd();
                    let got = match gso::recv_segments(fd, &mut buf, false) {
                        Ok(got) => got,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                        Err(e) => panic!("relay upstream: {e}"),
                    };
                    for datagram in gso::split(&buf[..got.len], got.segment) {
                        let out = to_client.pass(peer, datagram, &fates, &mut stats);
                        deliver(out, false, &mut front, &mut upstreams, server, &mut stats);
                    }
                }
            }
        }
        front.flush();
        for (_, upstream) in &mut upstreams {
            upstream.flush();
        }
    }
    stats
}
