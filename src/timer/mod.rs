//! Timers for the event loop.
//!
//! [`Wheel`] is a hierarchical timing wheel: arming and cancelling are O(1)
//! and allocation-free in steady state, and the loop's poll timeout is a
//! handful of bit-scans. It never reads the clock; the loop passes `now` in,
//! which keeps it deterministic under test.

#![deny(unsafe_code)]

mod wheel;

pub use wheel::{TimerHandle, Wheel};
