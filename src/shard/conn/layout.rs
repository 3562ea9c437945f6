//! What an idle connection costs the shard in user space, byte by byte:
//! its slab entry (`TcpConn`) and its deadline timer (a 32-byte entry in
//! the deadline wheel, checked in `timer/tests.rs`). Each field is sized
//! here so a change that widens the entry fails a test, not only the
//! `idle_memory` benchmark.
//!
//! Test builds add a fake variant to `Transport` (32 bytes instead of 16),
//! so the entry is checked as the sum of its parts with no padding: 96
//! bytes in a release build.

use std::mem::size_of;
use std::net::SocketAddr;

use super::{Flags, State, TcpConn, Transport};
use crate::limit::TokenBucket;
use crate::net::buffer::Buffer;
use crate::net::peer_addr::PeerAddr;
use crate::shard::deadline::Deadlines;
use crate::shard::gate::HeldPass;

#[test]
fn every_field_of_the_slab_entry_is_as_small_as_planned() {
    assert_eq!(size_of::<PeerAddr>(), 16, "peer (SocketAddr: 32)");
    assert_eq!(size_of::<SocketAddr>(), 32);
    assert_eq!(size_of::<Option<Box<Buffer>>>(), 8, "read_buf, write_buf");
    assert_eq!(size_of::<Option<Box<TokenBucket>>>(), 8, "message_tokens");
    assert_eq!(
        size_of::<Deadlines>(),
        28,
        "deadlines, with the timer handle"
    );
    assert_eq!(size_of::<Option<HeldPass>>(), 1, "admission (a Pass: 10)");
    assert_eq!(size_of::<Flags>(), 2);
    assert_eq!(size_of::<u8>(), 1, "bulk");
    // 16 + 8 + 8 + 8 + 28 + 1 + 2 + 1 = 72, no padding.
    assert_eq!(size_of::<State>(), 72);
}

#[test]
fn the_slab_entry_has_no_padding() {
    // State, transport, generation (4), service and listener (2 + 2).
    let parts = size_of::<State>() + size_of::<Transport>() + 8;
    assert_eq!(size_of::<TcpConn>(), parts);
    // The slab's slot (`Vacant(usize) | Occupied(conn)`) keeps its tag in
    // a niche of the entry: nothing added per connection.
    assert_eq!(size_of::<Result<usize, TcpConn>>(), parts);
}
