//! Memory per idle rudp peer: what one more connection costs a server
//! `Endpoint`, counted by the allocator.
//!
//! A counting global allocator keeps the bytes live on the heap. The bench
//! builds an `Endpoint` for N peers, then brings N clients (each at its own
//! IPv4 address) through the cookie handshake by hand (hello, cookie, hello
//! with the cookie, the server's ack), keeping no client state, and reports
//! the heap growth over N, plus `size_of` of a `Connection` (the bulk of
//! each peer's boxed entry in the peer table). The goal is at most
//! 2,048 bytes per idle peer; the bench fails above it. Then each peer delivers one 100-byte message (taken by
//! the application, as the echo would), and finally the clock moves past
//! the keepalive so every peer has been quiet for a while: the bytes per
//! peer are reported at each stage. Everything runs on a virtual clock, so
//! the numbers are exact and the same on every run.
//!
//! `cargo bench --bench rudp_peers` (N = 4,096, the attack's count). With
//! `--test` (or under `cargo test --benches`) N = 256.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::quick_mode;
use sockloop::rudp::{Config, Connection, Endpoint, Mode, Packet, Seq};

/// The system allocator, keeping count of the bytes live.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`, which upholds
// the `GlobalAlloc` contract; the counter only observes sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's layout is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from this allocator (that is, `System`) with
        // this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `dealloc`; `new_size` is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Peer `i`'s address: one per IPv4 address, so no per-source cap applies.
fn addr(i: usize) -> SocketAddr {
    let ip = Ipv4Addr::from(0x0a00_0000 + i as u32 + 1);
    SocketAddr::new(ip.into(), 5000)
}

fn encode(packet: Packet<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    packet.encode(&mut out);
    out
}

/// Drains what the server wants to send, returning the last datagram to
/// `to` (the others are dropped: no client keeps state here).
fn drain(server: &mut Endpoint, now: Instant, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut last = None;
    while server.poll_transmit(now, buf).is_some() {
        last = Some(buf.clone());
    }
    last
}

/// Brings peer `i` through the cookie handshake.
fn handshake(server: &mut Endpoint, now: Instant, i: usize, buf: &mut Vec<u8>) {
    let hello = |cookie| {
        encode(Packet::Hello {
            mode: Mode::Reliable,
            isn: Seq(i as u32),
            cookie,
        })
    };
    server.handle_datagram(now, addr(i), &hello(None));
    let reply = drain(server, now, buf).expect("a cookie");
    let Ok(Packet::Cookie(cookie)) = Packet::parse(&reply, 1200) else {
        panic!("not a cookie: {reply:?}");
    };
    server.handle_datagram(now, addr(i), &hello(Some(cookie)));
    drain(server, now, buf).expect("the ack that completes the handshake");
}

/// Heap bytes an idle peer may cost.
const GOAL_BYTES: f64 = 2048.0;

fn per_peer(before: usize, after: usize, peers: usize) -> f64 {
    (after as f64 - before as f64) / peers as f64
}

fn main() {
    let peers = if quick_mode() { 256 } else { 4096 };
    let config = Config::default();
    let t0 = Instant::now();
    let mut buf = Vec::with_capacity(2048);
    let mut server = Endpoint::new(config, t0, &[7; 32], peers);
    // One peer in and out first, so lazily built parts of the endpoint
    // itself (queues, the wheel's levels) are not charged to the peers.
    handshake(&mut server, t0, peers + 1, &mut buf);
    server.close_all();
    drain(&mut server, t0, &mut buf);
    while server.poll_event().is_some() {}
    assert_eq!(server.peers(), 0);

    let before = live();
    for i in 0..peers {
        handshake(&mut server, t0, i, &mut buf);
    }
    assert_eq!(server.peers(), peers);
    let idle = live();

    // One message from each, taken by the application.
    let t1 = t0 + Duration::from_millis(10);
    for i in 0..peers {
        let data = encode(Packet::Data {
            seq: Seq(i as u32),
            fragment: 0,
            fragments: 1,
            payload: &[0x55; 100],
        });
        server.handle_datagram(t1, addr(i), &data);
    }
    let mut taken = 0;
    while server.poll_event().is_some() {
        taken += 1;
    }
    assert_eq!(taken, peers);
    drain(&mut server, t1, &mut buf);
    let used = live();

    // Quiet past the keepalive: every peer has been pinged.
    let t2 = t1 + config.keepalive + Duration::from_millis(10);
    server.handle_timeout(t2);
    drain(&mut server, t2, &mut buf);
    assert_eq!(server.peers(), peers);
    let quiet = live();

    println!("rudp_peers: heap bytes per peer of an Endpoint, {peers} peers through the handshake");
    println!(
        "  size_of::<Connection>()            {:>8} bytes (in each peer's entry)",
        std::mem::size_of::<Connection>()
    );
    println!(
        "  idle, just after the handshake     {:>8.0} bytes/peer",
        per_peer(before, idle, peers)
    );
    println!(
        "  after one message each             {:>8.0} bytes/peer",
        per_peer(before, used, peers)
    );
    println!(
        "  then quiet past the keepalive      {:>8.0} bytes/peer",
        per_peer(before, quiet, peers)
    );
    let idle = per_peer(before, idle, peers);
    assert!(
        idle <= GOAL_BYTES,
        "{idle:.0} bytes per idle peer, over the goal of {GOAL_BYTES}"
    );
}
