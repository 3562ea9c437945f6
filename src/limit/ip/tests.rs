//! The table's tests: through its public API, on a virtual clock.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use super::*;

const NS: Duration = Duration::from_nanos(1);
const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn no_rate() -> IpLimits {
    IpLimits {
        connect_rate: None,
        ..IpLimits::default()
    }
}

fn v4(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n))
}

/// A distinct /64 per `n`, with varying low bits.
fn v6(n: u32) -> IpAddr {
    let prefix = 0x2001_0db8_0000_0000_u64 | u64::from(n);
    IpAddr::V6(Ipv6Addr::from(
        (u128::from(prefix) << 64) | (u128::from(n) * 7919),
    ))
}

#[test]
fn table_is_shareable() {
    fn shareable<T: Send + Sync>() {}
    shareable::<IpTable>();
}

#[test]
fn counts_up_to_the_cap_and_back() {
    let table = IpTable::new(IpLimits {
        max_conns_per_ip: 3,
        ..no_rate()
    });
    let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
    let t0 = Instant::now();
    let held: Vec<_> = (0..3).map(|_| table.admit(a, t0).unwrap()).collect();
    assert_eq!(table.open_connections(a), 3);
    assert_eq!(table.admit(a, t0), Err(Refusal::TooManyFromIp { limit: 3 }));
    // Another source is counted on its own.
    let other = table.admit(b, t0).unwrap();
    assert_eq!(other.source().to_string(), "192.0.2.2");
    assert_eq!(table.open_connections(b), 1);
    for (released, admission) in held.into_iter().enumerate() {
        table.release(admission);
        assert_eq!(table.open_connections(a), 2 - released as u32);
    }
    let again = table.admit(a, t0).unwrap();
    assert_eq!(table.open_connections(a), 1);
    table.release(again);
    table.release(other);
    assert_eq!(table.open_connections(a), 0);
    assert_eq!(table.open_connections(b), 0);
    let stats = table.stats();
    assert_eq!((stats.admitted, stats.refused_too_many), (5, 1));
    assert_eq!(stats.sources, 2);
}

#[test]
fn zero_cap_means_no_cap() {
    let table = IpTable::new(IpLimits {
        max_conns_per_ip: 0,
        ..no_rate()
    });
    let t0 = Instant::now();
    let held: Vec<_> = (0..1000)
        .map(|_| table.admit(ip("192.0.2.1"), t0).unwrap())
        .collect();
    assert_eq!(table.open_connections(ip("192.0.2.1")), 1000);
    held.into_iter().for_each(|a| table.release(a));
}

#[test]
fn ipv6_is_counted_per_64() {
    let table = IpTable::new(IpLimits {
        max_conns_per_ip: 2,
        ..no_rate()
    });
    let t0 = Instant::now();
    let one = table.admit(ip("2001:db8:1:2::1"), t0).unwrap();
    let two = table
        .admit(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), t0)
        .unwrap();
    assert_eq!(one, two);
    assert_eq!(
        table.admit(ip("2001:db8:1:2:abcd::7"), t0),
        Err(Refusal::TooManyFromIp { limit: 2 })
    );
    // The neighbouring /64 is another source.
    let three = table.admit(ip("2001:db8:1:3::1"), t0).unwrap();
    assert_eq!(table.open_connections(ip("2001:db8:1:2::99")), 2);
    // IPv4 peers seen through a dual-stack socket count as IPv4.
    let mapped = table.admit(ip("::ffff:192.0.2.9"), t0).unwrap();
    assert_eq!(table.open_connections(ip("192.0.2.9")), 1);
    assert_eq!(table.open_connections(ip("::ffff:192.0.2.10")), 0);
    for admission in [one, two, three, mapped] {
        table.release(admission);
    }
    assert_eq!(table.open_connections(ip("2001:db8:1:2::")), 0);
}

#[test]
fn connect_rate_refuses_then_refills() {
    let table = IpTable::new(IpLimits {
        connect_rate: Some(Rate::per_second(10).with_burst(3)), // a token every 100 ms
        ..IpLimits::default()
    });
    let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
    let t0 = Instant::now();
    for _ in 0..3 {
        let admission = table.admit(a, t0).unwrap();
        table.release(admission); // a closed connection still spent its token
    }
    assert_eq!(table.admit(a, t0), Err(Refusal::ConnectRate));
    assert_eq!(
        table.admit(a, t0 + 100 * MS - NS),
        Err(Refusal::ConnectRate)
    );
    // Other sources have their own bucket.
    table.release(table.admit(b, t0).unwrap());
    let refilled = table.admit(a, t0 + 100 * MS).unwrap();
    assert_eq!(table.admit(a, t0 + 100 * MS), Err(Refusal::ConnectRate));
    table.release(refilled);
    assert_eq!(table.stats().refused_connect_rate, 3);
}

#[test]
fn a_refused_attempt_still_spends_a_token() {
    let table = IpTable::new(IpLimits {
        max_conns_per_ip: 1,
        connect_rate: Some(Rate::per_second(1).with_burst(2)),
        ..IpLimits::default()
    });
    let a = ip("192.0.2.1");
    let t0 = Instant::now();
    let held = table.admit(a, t0).unwrap();
    assert_eq!(table.admit(a, t0), Err(Refusal::TooManyFromIp { limit: 1 }));
    table.release(held);
    assert_eq!(table.admit(a, t0), Err(Refusal::ConnectRate));
}

#[test]
fn strikes_count_within_the_window_only() {
    let table = IpTable::new(IpLimits {
        ban_after: 3,
        strike_window: 10 * SEC,
        ..no_rate()
    });
    let a = ip("192.0.2.1");
    let t0 = Instant::now();
    assert_eq!(table.strike(a, t0), StrikeOutcome::Counted { strikes: 1 });
    assert_eq!(
        table.strike(a, t0 + 10 * SEC - NS),
        StrikeOutcome::Counted { strikes: 2 }
    );
    // The window opened at t0 ends at t0 + 10 s: a new one opens.
    let t1 = t0 + 10 * SEC;
    assert_eq!(table.strike(a, t1), StrikeOutcome::Counted { strikes: 1 });
    assert_eq!(
        table.strike(a, t1 + 9 * SEC),
        StrikeOutcome::Counted { strikes: 2 }
    );
    assert!(!table.is_banned(a, t1 + 9 * SEC));
    assert_eq!(table.stats().strikes, 4);
    assert_eq!(table.stats().bans, 0);
}

#[test]
fn ban_at_exactly_ban_after_and_expiry_at_exactly_ban_for() {
    let table = IpTable::new(IpLimits {
        ban_after: 3,
        strike_window: 10 * SEC,
        ban_for: 30 * SEC,
        ..no_rate()
    });
    let a = ip("192.0.2.1");
    let t0 = Instant::now();
    assert_eq!(table.strike(a, t0), StrikeOutcome::Counted { strikes: 1 });
    assert_eq!(
        table.strike(a, t0 + SEC),
        StrikeOutcome::Counted { strikes: 2 }
    );
    let banned_at = t0 + 2 * SEC;
    assert_eq!(
        table.strike(a, banned_at),
        StrikeOutcome::Banned { until_in: 30 * SEC }
    );
    let until = banned_at + 30 * SEC;
    assert_eq!(table.stats().bans_active, 1);
    // Banned with no connection open at all.
    assert_eq!(table.open_connections(a), 0);
    assert_eq!(
        table.admit(a, banned_at + 10 * SEC),
        Err(Refusal::Banned { until_in: 20 * SEC })
    );
    assert_eq!(
        table.strike(a, until - NS),
        StrikeOutcome::AlreadyBanned { until_in: NS }
    );
    assert!(table.is_banned(a, until - NS));
    assert_eq!(
        table.admit(a, until - NS),
        Err(Refusal::Banned { until_in: NS })
    );
    assert!(!table.is_banned(a, until));
    assert_eq!(table.stats().bans_active, 0);
    let admitted = table.admit(a, until).unwrap();
    table.release(admitted);
    // Strikes were reset by the ban: counting starts over.
    assert_eq!(
        table.strike(a, until),
        StrikeOutcome::Counted { strikes: 1 }
    );
    let stats = table.stats();
    assert_eq!((stats.bans, stats.refused_banned, stats.strikes), (1, 2, 4));
}

#[test]
fn a_ban_ends_exactly_even_between_timer_ticks() {
    let ban_for = 5 * MS + NS; // off the 1 ms tick: the timer fires after the end
    let table = IpTable::new(IpLimits {
        ban_after: 2,
        ban_for,
        ..no_rate()
    });
    let a = ip("192.0.2.1");
    let t0 = Instant::now();
    assert_eq!(table.strike(a, t0), StrikeOutcome::Counted { strikes: 1 });
    assert_eq!(
        table.strike(a, t0),
        StrikeOutcome::Banned { until_in: ban_for }
    );
    let until = t0 + ban_for;
    assert!(table.is_banned(a, until - NS));
    assert!(!table.is_banned(a, until));
    // A strike at the end opens a new window, before the timer fires.
    assert_eq!(
        table.strike(a, until),
        StrikeOutcome::Counted { strikes: 1 }
    );
    assert_eq!(table.stats().bans_active, 0);
    assert_eq!(
        table.strike(a, until),
        StrikeOutcome::Banned { until_in: ban_for }
    );
    assert_eq!(table.stats().bans_active, 1);
    // The first ban's timer fires in between and must not end the second.
    assert!(table.is_banned(a, until + ban_for - NS));
    assert!(!table.is_banned(a, until + ban_for));
    // The count follows the timer, within a tick.
    assert!(!table.is_banned(a, until + ban_for + MS));
    assert_eq!(table.stats().bans_active, 0);
    assert_eq!(table.stats().bans, 2);
}

#[test]
fn ban_after_zero_or_ban_for_zero_never_bans() {
    let t0 = Instant::now();
    for limits in [
        IpLimits {
            ban_after: 0,
            ..no_rate()
        },
        IpLimits {
            ban_for: Duration::ZERO,
            ..no_rate()
        },
    ] {
        let table = IpTable::new(limits);
        for _ in 0..50 {
            assert!(matches!(
                table.strike(ip("192.0.2.1"), t0),
                StrikeOutcome::Counted { .. }
            ));
        }
        assert!(!table.is_banned(ip("192.0.2.1"), t0));
    }
}

#[test]
fn evicts_the_least_recently_used_unpinned_source() {
    // One stripe of 3. A source at 1/m burst 1 is refused a second
    // connection while remembered; a forgotten one gets a fresh bucket.
    let table = IpTable::new(IpLimits {
        max_sources: 3,
        connect_rate: Some(Rate::per_minute(1)),
        ..IpLimits::default()
    });
    let t0 = Instant::now();
    let (a, b, c, d) = (
        ip("192.0.2.1"),
        ip("192.0.2.2"),
        ip("192.0.2.3"),
        ip("192.0.2.4"),
    );
    for source in [a, b, c] {
        table.release(table.admit(source, t0).unwrap());
    }
    // A is used again (refused, but a use), so B is now the oldest.
    assert_eq!(table.admit(a, t0), Err(Refusal::ConnectRate));
    table.release(table.admit(d, t0).unwrap());
    assert_eq!(table.stats().evictions, 1);
    assert_eq!(table.stats().sources, 3);
    // B was forgotten, so it gets a fresh bucket; its return evicts C,
    // the oldest now, while A and D are still remembered.
    table.release(table.admit(b, t0).unwrap());
    assert_eq!(table.admit(a, t0), Err(Refusal::ConnectRate));
    assert_eq!(table.admit(d, t0), Err(Refusal::ConnectRate));
    table.release(table.admit(c, t0).unwrap());
    assert_eq!(table.stats().evictions, 3);
}

#[test]
fn bans_take_no_room_from_new_sources() {
    let table = IpTable::new(IpLimits {
        max_sources: 2,
        ban_after: 1,
        ..no_rate()
    });
    let t0 = Instant::now();
    let connected = table.admit(ip("192.0.2.1"), t0).unwrap();
    assert!(matches!(
        table.strike(ip("198.51.100.2"), t0),
        StrikeOutcome::Banned { .. }
    ));
    // The banned source's entry is not pinned: a new source takes its
    // place, and the ban holds all the same.
    let third = table.admit(ip("203.0.113.3"), t0).unwrap();
    assert_eq!(table.stats().evictions, 1);
    assert!(table.is_banned(ip("198.51.100.2"), t0));
    assert!(matches!(
        table.admit(ip("198.51.100.2"), t0),
        Err(Refusal::Banned { .. })
    ));
    let ban_end = t0 + table.limits().ban_for;
    assert!(!table.is_banned(ip("198.51.100.2"), ban_end));
    assert_eq!(table.stats().bans_active, 0);
    table.release(connected);
    table.release(third);
}

#[test]
fn a_table_full_of_connected_sources_admits_new_ones_untracked_within_a_rate() {
    let table = IpTable::new(IpLimits {
        max_sources: 2,
        untracked_rate: Some(Rate::per_minute(2)),
        ban_after: 1,
        ..no_rate()
    });
    let t0 = Instant::now();
    let held: Vec<_> = ["192.0.2.1", "192.0.2.2"]
        .iter()
        .map(|a| table.admit(ip(a), t0).unwrap())
        .collect();
    let new = ip("192.0.2.3");
    let first = table.admit(new, t0).unwrap();
    let second = table.admit(ip("192.0.2.4"), t0).unwrap();
    assert_eq!(table.admit(ip("192.0.2.5"), t0), Err(Refusal::Busy));
    // Untracked: no count to keep, no strike to record.
    assert_eq!(table.open_connections(new), 0);
    assert_eq!(table.strike(new, t0), StrikeOutcome::Untracked);
    table.release(first);
    table.release(second);
    let stats = table.stats();
    assert_eq!(
        (
            stats.admitted,
            stats.admitted_untracked,
            stats.refused_table_full
        ),
        (2, 2, 1)
    );
    assert_eq!((stats.sources, stats.strikes_untracked), (2, 1));
    // The rate refills for the whole table: one more 30 s later.
    assert!(table.admit(ip("192.0.2.5"), t0 + 30 * SEC).is_ok());
    // Without a rate, a full table refuses at once.
    let strict = IpTable::new(IpLimits {
        max_sources: 1,
        untracked_rate: None,
        ..no_rate()
    });
    let only = strict.admit(ip("192.0.2.1"), t0).unwrap();
    assert_eq!(strict.admit(ip("192.0.2.2"), t0), Err(Refusal::Busy));
    strict.release(only);
    held.into_iter().for_each(|a| table.release(a));
}

#[test]
fn eighty_thousand_banned_sources_never_lock_out_a_new_one() {
    // The attack: many addresses, each striking until banned. Bans are
    // bounded apart (the soonest ending dropped first), so the table keeps
    // room and a newcomer is served.
    let table = IpTable::new(IpLimits {
        max_sources: 4096,
        max_bans: 1024,
        ban_after: 1,
        ban_block_after: 0,
        ..no_rate()
    });
    let t0 = Instant::now();
    for n in 0..80_000_u32 {
        let now = t0 + Duration::from_micros(u64::from(n));
        let source = if n % 2 == 0 { v4(n) } else { v6(n) };
        assert!(matches!(
            table.strike(source, now),
            StrikeOutcome::Banned { .. }
        ));
    }
    let end = t0 + SEC / 10;
    let stats = table.stats();
    assert!(stats.bans_active <= 1024, "{}", stats.bans_active);
    assert_eq!(stats.bans, 80_000);
    assert_eq!(stats.ban_evictions, 80_000 - stats.bans_active as u64);
    let newcomer = table.admit(ip("203.0.113.77"), end).unwrap();
    // The latest bans are the ones kept.
    assert!(table.is_banned(v6(79_999), end));
    assert!(!table.is_banned(v4(0), end));
    table.release(newcomer);
}

#[test]
fn enough_banned_sources_of_one_block_ban_the_block() {
    let table = IpTable::new(IpLimits {
        ban_after: 1,
        ban_block_after: 3,
        ..no_rate()
    });
    let t0 = Instant::now();
    for n in 1..=2 {
        let _ = table.strike(ip(&format!("192.0.2.{n}")), t0);
    }
    assert!(table.admit(ip("192.0.2.9"), t0).is_ok_and(|a| {
        table.release(a);
        true
    }));
    let _ = table.strike(ip("192.0.2.3"), t0);
    // Now the whole /24 is banned, for ban_for; not its neighbour.
    let ban_for = table.limits().ban_for;
    assert_eq!(
        table.admit(ip("192.0.2.200"), t0),
        Err(Refusal::Banned { until_in: ban_for })
    );
    assert_eq!(
        table.strike(ip("192.0.2.201"), t0),
        StrikeOutcome::AlreadyBanned { until_in: ban_for }
    );
    table.release(table.admit(ip("192.0.3.1"), t0).unwrap());
    // IPv6: a /48's /64s.
    for n in 1..=3 {
        let _ = table.strike(ip(&format!("2001:db8:7:{n}::1")), t0);
    }
    assert!(table.is_banned(ip("2001:db8:7:ffff::1"), t0));
    assert!(!table.is_banned(ip("2001:db8:8::1"), t0));
    let stats = table.stats();
    assert_eq!(
        (stats.bans, stats.block_bans_active, stats.bans_active),
        (8, 2, 8)
    );
    assert!(!table.is_banned(ip("192.0.2.200"), t0 + ban_for));
}

#[test]
fn stays_bounded_through_100_000_sources_and_keeps_pinned_ones() {
    let table = IpTable::new(IpLimits {
        max_sources: 4096,
        ban_after: 3,
        ..IpLimits::default()
    });
    let t0 = Instant::now();
    let (banned, connected) = (ip("198.51.100.1"), ip("2001:db8:ffff:1::1"));
    for _ in 0..3 {
        let _ = table.strike(banned, t0);
    }
    let held = table.admit(connected, t0).unwrap();
    for n in 0..100_000_u32 {
        let now = t0 + Duration::from_micros(u64::from(n)); // 0.1 s in all
        let source = if n % 2 == 0 { v4(n) } else { v6(n) };
        let admission = table.admit(source, now).unwrap();
        table.release(admission);
        assert!(table.stats().sources <= 4096, "step {n}");
    }
    let end = t0 + SEC / 10;
    assert!(table.is_banned(banned, end));
    assert_eq!(table.open_connections(connected), 1);
    let stats = table.stats();
    assert_eq!(stats.admitted, 100_001);
    assert_eq!(stats.evictions, 100_002 - stats.sources as u64);
    // 100,000 sources fill every one of the 16 stripes of 256.
    assert_eq!(stats.sources, 4096);
    assert_eq!((stats.bans_active, stats.refused_table_full), (1, 0));
    table.release(held);
    assert_eq!(table.open_connections(connected), 0);
}

#[test]
fn threads_admitting_and_releasing_leave_zero() {
    let table = Arc::new(IpTable::new(IpLimits {
        max_conns_per_ip: 5,
        ..no_rate()
    }));
    let sources = [
        ip("192.0.2.1"),
        ip("192.0.2.2"),
        ip("2001:db8::1"),
        ip("2001:db8::2"),
    ];
    let t0 = Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|thread| {
            let table = Arc::clone(&table);
            std::thread::spawn(move || {
                let mut held = Vec::new();
                let mut admitted = 0;
                for round in 0..2_000_usize {
                    let source = sources[(round + thread) % sources.len()];
                    if let Ok(admission) = table.admit(source, t0) {
                        admitted += 1;
                        held.push(admission);
                    }
                    assert!(table.open_connections(source) <= 5);
                    if held.len() > 3 || round % 7 == 0 {
                        held.drain(..).for_each(|a| table.release(a));
                    }
                }
                held.into_iter().for_each(|a| table.release(a));
                admitted
            })
        })
        .collect();
    let admitted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    for source in sources {
        assert_eq!(table.open_connections(source), 0);
    }
    let stats = table.stats();
    assert_eq!(stats.admitted, admitted);
    assert_eq!(stats.admitted + stats.refused_too_many, 16_000);
}

#[test]
fn refusals_read_well() {
    assert_eq!(
        Refusal::Banned {
            until_in: 1500 * MS
        }
        .to_string(),
        "banned for another 1.5s"
    );
    assert_eq!(
        Refusal::TooManyFromIp { limit: 256 }.to_string(),
        "too many connections from this address (limit 256)"
    );
    assert_eq!(Refusal::ConnectRate.to_string(), "connecting too fast");
    assert_eq!(
        Refusal::Busy.to_string(),
        "too many connected addresses to track a new one, and the rate for untracked ones is spent"
    );
}
