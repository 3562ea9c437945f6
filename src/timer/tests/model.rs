//! Property tests: random arms, cancels and clock moves (backwards too),
//! checked step by step against a `BTreeMap` of what should be pending.

use super::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// Offset from now in ns; negative is in the past.
    Arm(i128),
    /// Index into every handle ever issued, live or stale.
    Cancel(usize),
    /// Moves now forward by this many ns and expires.
    Advance(u128),
    /// Expires at now minus this many ns, without moving now.
    ExpireBack(u128),
}

fn ops(tick: u64) -> impl Strategy<Value = Vec<Op>> {
    let t = i128::from(tick);
    let offset = prop_oneof![
        3 => (0..200i128).prop_map(move |k| k * t), // on a tick: ties
        3 => 0..200 * t,
        2 => -2000 * t..0,
        2 => 0..300_000 * t,
        1 => 0..(1i128 << 38) * t, // beyond 64^6 ticks
        1 => 0..1i128 << 66,       // saturates 1 ns ticks
    ];
    let u = t as u128;
    let step = prop_oneof![
        4 => 0..3 * u,
        3 => 0..100 * u,
        2 => 0..5000 * u,
        1 => 0..(1u128 << 20) * u,
        1 => 0..(1u128 << 40) * u,
        1 => 0..1u128 << 65,
    ];
    let op = prop_oneof![
        6 => offset.prop_map(Op::Arm),
        2 => any::<usize>().prop_map(Op::Cancel),
        3 => step.prop_map(Op::Advance),
        1 => (0..3000 * u).prop_map(Op::ExpireBack),
    ];
    prop::collection::vec(op, 1..200)
}

fn span(ns: u128) -> Duration {
    let secs = (ns / 1_000_000_000) as u64;
    Duration::new(secs, (ns % 1_000_000_000) as u32)
}

fn run(tick: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let origin = Instant::now();
    let mut w = Wheel::new(origin, Duration::from_nanos(tick));
    let tick = u128::from(tick);
    let to_tick = |ns: u128, up: bool| {
        let t = ns / tick + u128::from(up && !ns.is_multiple_of(tick));
        u64::try_from(t).unwrap_or(u64::MAX)
    };
    let instant = |ticks: u64| origin + span(u128::from(ticks) * tick);
    // (rounded tick, arm seq) -> (handle, value, raw deadline ns)
    let mut model: BTreeMap<(u64, u64), (TimerHandle, u64, u128)> = BTreeMap::new();
    let mut keys: HashMap<TimerHandle, (u64, u64)> = HashMap::new();
    let mut handles = Vec::new();
    let (mut now, mut seq) = (0u128, 0u64);
    let mut fired = Vec::new();

    for op in ops {
        let expire_at = match op {
            Op::Arm(offset) => {
                let raw = (now as i128 + offset).max(0) as u128;
                let when = to_tick(raw, true);
                let h = w.arm(origin + span(raw), seq);
                prop_assert_eq!(w.deadline(h), Some(instant(when)));
                model.insert((when, seq), (h, seq, raw));
                keys.insert(h, (when, seq));
                handles.push(h);
                seq += 1;
                None
            }
            Op::Cancel(i) if !handles.is_empty() => {
                let h = handles[i % handles.len()];
                let want = keys.remove(&h).map(|k| model.remove(&k).unwrap().1);
                prop_assert_eq!(w.cancel(h), want);
                prop_assert_eq!(w.deadline(h), None);
                None
            }
            Op::Cancel(_) => None,
            Op::Advance(step) => {
                now += step;
                Some(now)
            }
            Op::ExpireBack(back) => Some(now.saturating_sub(back)),
        };
        if let Some(at_ns) = expire_at {
            let now_tick = to_tick(at_ns, false).min(u64::MAX - 1);
            let rest = model.split_off(&(now_tick + 1, 0));
            let due = std::mem::replace(&mut model, rest);
            fired.clear();
            w.expire(origin + span(at_ns), &mut fired);
            let want: Vec<_> = due.values().map(|&(h, v, _)| (h, v)).collect();
            prop_assert_eq!(&fired, &want);
            for (&(when, _), &(h, _, raw)) in &due {
                keys.remove(&h);
                // Never early, and less than one tick late.
                prop_assert!(raw <= at_ns);
                prop_assert!(u128::from(when) * tick - raw < tick);
            }
        }
        w.check_invariants();
        prop_assert_eq!(w.len(), model.len());
        match model.keys().next() {
            None => prop_assert_eq!(w.next_deadline(), None),
            Some(&(when, _)) => {
                let bound = w.next_deadline();
                prop_assert!(bound.is_some_and(|b| b <= instant(when)));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn matches_btreemap_model_1ms(ops in ops(1_000_000)) {
        run(1_000_000, ops)?;
    }

    #[test]
    fn matches_btreemap_model_odd_tick(ops in ops(3_333_333)) {
        run(3_333_333, ops)?;
    }

    #[test]
    fn matches_btreemap_model_1ns(ops in ops(1)) {
        run(1, ops)?;
    }
}
