//! The wheel against the two usual alternatives, on the same workloads:
//! a `BinaryHeap` with lazy deletion and a `BTreeMap` keyed by deadline.
//!
//! * `arm_cancel`: arm at now + U(0, 60 s), cancel it at once, with N other
//!   timers pending (the common case: a timeout that never fires).
//! * `arm_expire`: steady churn; each iteration moves now forward by
//!   30 s / N, arms one timer at now + U(0, 60 s) and expires, which keeps
//!   about N pending and fires one per iteration on average.
//!
//! Deadlines start uniform over 0..60 s; `harness_overhead` is the RNG and
//! `Instant` math every iteration also pays. Run: `cargo bench --bench timer`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use slab::Slab;
use sockloop::rng::Rng;
use sockloop::timer::{TimerHandle, Wheel};

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];
const SPREAD_NS: u64 = 60_000_000_000;

/// A deadline up to `SPREAD_NS` after `from`, from the crate's seeded
/// xorshift64* (far cheaper than what is measured), scaled by a multiply
/// rather than a modulo.
fn spread(rng: &mut Rng, from: Instant) -> Instant {
    let below = (u128::from(rng.next_u64()) * u128::from(SPREAD_NS)) >> 64;
    from + Duration::from_nanos(below as u64)
}

trait Timers {
    type Handle: Copy;
    fn new(origin: Instant, cap: usize) -> Self;
    fn arm(&mut self, at: Instant, value: u64) -> Self::Handle;
    fn cancel(&mut self, h: Self::Handle) -> Option<u64>;
    /// Fires everything due by `now`; returns how many fired.
    fn expire(&mut self, now: Instant) -> usize;
}

struct WheelTimers(Wheel<u64>, Vec<(TimerHandle, u64)>);

impl Timers for WheelTimers {
    type Handle = TimerHandle;
    fn new(origin: Instant, cap: usize) -> Self {
        WheelTimers(
            Wheel::with_capacity(origin, Duration::from_millis(1), cap),
            Vec::new(),
        )
    }
    fn arm(&mut self, at: Instant, value: u64) -> TimerHandle {
        self.0.arm(at, value)
    }
    fn cancel(&mut self, h: TimerHandle) -> Option<u64> {
        self.0.cancel(h)
    }
    fn expire(&mut self, now: Instant) -> usize {
        self.1.clear();
        self.0.expire(now, &mut self.1);
        self.1.len()
    }
}

/// Lazy deletion: cancel frees the slab entry and leaves the heap entry to
/// be skipped on pop (its sequence no longer matches), compacting when
/// tombstones outnumber live timers.
struct HeapTimers {
    heap: BinaryHeap<Reverse<(Instant, u64, u32)>>,
    live: Slab<(u64, u64)>,
    seq: u64,
}

impl Timers for HeapTimers {
    type Handle = (u32, u64);
    fn new(_: Instant, cap: usize) -> Self {
        HeapTimers {
            heap: BinaryHeap::with_capacity(cap),
            live: Slab::with_capacity(cap),
            seq: 0,
        }
    }
    fn arm(&mut self, at: Instant, value: u64) -> (u32, u64) {
        self.seq += 1;
        let key = self.live.insert((self.seq, value)) as u32;
        self.heap.push(Reverse((at, self.seq, key)));
        (key, self.seq)
    }
    fn cancel(&mut self, (key, seq): (u32, u64)) -> Option<u64> {
        if self.live.get(key as usize)?.0 != seq {
            return None;
        }
        let (_, value) = self.live.remove(key as usize);
        if self.heap.len() > 2 * self.live.len() + 1024 {
            let live = &self.live;
            self.heap
                .retain(|Reverse((_, s, k))| live.get(*k as usize).is_some_and(|e| e.0 == *s));
        }
        Some(value)
    }
    fn expire(&mut self, now: Instant) -> usize {
        let mut fired = 0;
        while let Some(&Reverse((at, seq, key))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            if self.live.get(key as usize).is_some_and(|e| e.0 == seq) {
                black_box(self.live.remove(key as usize));
                fired += 1;
            }
        }
        fired
    }
}

struct BTreeTimers {
    map: BTreeMap<(Instant, u64), u64>,
    seq: u64,
}

impl Timers for BTreeTimers {
    type Handle = (Instant, u64);
    fn new(_: Instant, _: usize) -> Self {
        BTreeTimers {
            map: BTreeMap::new(),
            seq: 0,
        }
    }
    fn arm(&mut self, at: Instant, value: u64) -> (Instant, u64) {
        self.seq += 1;
        self.map.insert((at, self.seq), value);
        (at, self.seq)
    }
    fn cancel(&mut self, h: (Instant, u64)) -> Option<u64> {
        self.map.remove(&h)
    }
    fn expire(&mut self, now: Instant) -> usize {
        let mut fired = 0;
        while let Some(entry) = self.map.first_entry() {
            if entry.key().0 > now {
                break;
            }
            black_box(entry.remove());
            fired += 1;
        }
        fired
    }
}

fn prefilled<S: Timers>(origin: Instant, n: usize, rng: &mut Rng) -> S {
    let mut s = S::new(origin, n + 1024);
    for i in 0..n {
        s.arm(spread(rng, origin), i as u64);
    }
    s
}

fn arm_cancel<S: Timers>(c: &mut Criterion, name: &str, origin: Instant) {
    let mut group = c.benchmark_group("arm_cancel");
    for n in SIZES {
        let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
        let mut s: S = prefilled(origin, n, &mut rng);
        s.expire(origin);
        group.bench_function(BenchmarkId::new(name, n), |b| {
            b.iter(|| {
                let h = s.arm(spread(&mut rng, origin), 7);
                black_box(s.cancel(h))
            })
        });
    }
    group.finish();
}

fn arm_expire<S: Timers>(c: &mut Criterion, name: &str, origin: Instant) {
    let mut group = c.benchmark_group("arm_expire");
    for n in SIZES {
        let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
        let mut s: S = prefilled(origin, n, &mut rng);
        let step = Duration::from_nanos(SPREAD_NS / 2 / n as u64);
        let mut now = origin;
        group.bench_function(BenchmarkId::new(name, n), |b| {
            b.iter(|| {
                now += step;
                s.arm(spread(&mut rng, now), 7);
                black_box(s.expire(now))
            })
        });
    }
    group.finish();
}

/// What the loops above spend outside the structures: the RNG and the
/// `Instant` arithmetic, to subtract when reading the other numbers.
fn harness(c: &mut Criterion, origin: Instant) {
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let mut now = origin;
    c.bench_function("harness_overhead", |b| {
        b.iter(|| {
            now += Duration::from_nanos(30);
            black_box(spread(&mut rng, now))
        })
    });
}

fn benches(c: &mut Criterion) {
    // The one clock read; all deadlines are offsets from it.
    let origin = Instant::now();
    harness(c, origin);
    arm_cancel::<WheelTimers>(c, "wheel", origin);
    arm_cancel::<HeapTimers>(c, "heap", origin);
    arm_cancel::<BTreeTimers>(c, "btree", origin);
    arm_expire::<WheelTimers>(c, "wheel", origin);
    arm_expire::<HeapTimers>(c, "heap", origin);
    arm_expire::<BTreeTimers>(c, "btree", origin);
}

criterion_group! {
    name = timer;
    // 19 benchmarks at ~2.5 s each plus prefill keeps the run near a minute.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(timer);
