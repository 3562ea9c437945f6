//! Timers for the event loop.
//!
//! [`Wheel`] is a hierarchical timing wheel: arming and cancelling are O(1)
//! and allocation-free in steady state, and the loop's poll timeout is a
//! handful of bit-scans. It never reads the clock; the loop passes `now` in,
//! which keeps it deterministic under test.
//!
//! Files: `wheel.rs` (the `Wheel` and its API), `levels.rs` (which level
//! and slot a timer is filed in, and cascading), `lists.rs` (the entry slab
//! and its linked lists), `ticks.rs` (instants to ticks and back),
//! `tests.rs` (with `tests/model.rs`, property tests against a `BTreeMap`).

#![deny(unsafe_code)]

mod levels;
mod lists;
mod ticks;
mod wheel;

#[cfg(test)]
mod tests;

pub use wheel::{TimerHandle, Wheel};
