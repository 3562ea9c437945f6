//! The serverless chat: peers on one host, over loopback only (multicast
//! goes out of 127.0.0.1 with TTL 0; broadcast to 127.255.255.255), so no
//! datagram leaves the machine.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

use sockloop::client::lanchat::{Lan, LanConfig, LanPeer};
use sockloop::proto::chat::ChatMessage;

/// A port no one else uses right now.
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Three peers on `lan`, or `None` (with the reason printed) where this
/// machine cannot do it.
fn peers(lan: Lan) -> Option<Vec<LanPeer>> {
    let made: Result<Vec<_>, _> = ["ann", "bob", "cy"]
        .iter()
        .map(|name| LanPeer::new(LanConfig::new(lan), name))
        .collect();
    match made {
        Ok(peers) => Some(peers),
        Err(e) => {
            eprintln!("skipping: {lan:?} is not available here: {e}");
            None
        }
    }
}

/// Receives on every peer until each has `want` messages (or 10 s pass).
fn collect(peers: &mut [LanPeer], want: usize) -> Vec<Vec<ChatMessage>> {
    let mut got = vec![Vec::new(); peers.len()];
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.iter().any(|g| g.len() < want) && Instant::now() < deadline {
        for (peer, got) in peers.iter_mut().zip(&mut got) {
            while let Some(message) = peer.receive(Instant::now()).unwrap() {
                got.push(message);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Anything extra would be a duplicate or an echo: wait a moment for it.
    std::thread::sleep(Duration::from_millis(50));
    for (peer, got) in peers.iter_mut().zip(&mut got) {
        while let Some(message) = peer.receive(Instant::now()).unwrap() {
            got.push(message);
        }
    }
    got
}

fn each_sees_the_others_once(lan: Lan) {
    let Some(mut peers) = peers(lan) else {
        return;
    };
    for round in 0..10 {
        for peer in &mut peers {
            peer.send(&format!("message {round}"), SystemTime::now())
                .unwrap();
        }
    }
    let got = collect(&mut peers, 20);
    let names = ["ann", "bob", "cy"];
    for (i, messages) in got.iter().enumerate() {
        assert_eq!(messages.len(), 20, "{} got {messages:?}", names[i]);
        assert!(
            messages.iter().all(|m| m.from != names[i]),
            "{} got its own",
            names[i]
        );
        for other in names.iter().filter(|&&n| n != names[i]) {
            let from: Vec<&str> = messages
                .iter()
                .filter(|m| m.from == *other)
                .map(|m| m.content.as_str())
                .collect();
            let want: Vec<String> = (0..10).map(|r| format!("message {r}")).collect();
            assert_eq!(from, want, "{} from {other}", names[i]);
        }
    }
    for peer in &peers {
        let stats = peer.stats();
        assert_eq!(
            (stats.sent, stats.received, stats.gaps, stats.duplicates),
            (10, 20, 0, 0)
        );
    }
}

#[test]
fn three_peers_in_a_multicast_group_see_each_other_once() {
    let group: SocketAddr = format!("239.1.2.3:{}", free_port()).parse().unwrap();
    each_sees_the_others_once(Lan::Group(group));
}

#[test]
fn three_peers_on_loopback_broadcast_see_each_other_once() {
    let target: SocketAddr = format!("127.255.255.255:{}", free_port()).parse().unwrap();
    each_sees_the_others_once(Lan::Broadcast(target));
}

#[test]
fn garbage_is_counted_not_shown_and_control_characters_are_escaped() {
    let group: SocketAddr = format!("239.1.2.4:{}", free_port()).parse().unwrap();
    let Some(mut peers) = peers(Lan::Group(group)) else {
        return;
    };
    let raw = UdpSocket::bind("127.0.0.1:0").unwrap();
    let field = |from: &str, content: &str| {
        format!(r#"{{"from":"{from}","content":"{content}","time":"12:00:00","id":7,"seq":0}}"#)
    };
    let long_name = "n".repeat(40);
    let garbage: Vec<Vec<u8>> = vec![
        b"not json".to_vec(),
        vec![b'{'; 3000],                          // oversized
        field(&long_name, "x").into_bytes(),       // a field too long
        br#"{"from":"a","content":"b"}"#.to_vec(), // fields missing
    ];
    for datagram in &garbage {
        raw.send_to(datagram, group).unwrap();
    }
    raw.send_to(field("evil", "\\u001b[2Jcleared").as_bytes(), group)
        .unwrap();
    peers[1].send("still fine", SystemTime::now()).unwrap();
    let got = collect(&mut peers[..1], 2);
    let contents: Vec<&str> = got[0].iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["\u{1b}[2Jcleared", "still fine"]);
    let shown = sockloop::client::chat::display(&got[0][0]);
    assert_eq!(
        shown, r"[12:00:00 evil]: \u{1b}[2Jcleared",
        "escaped when shown"
    );
    let stats = peers[0].stats();
    assert_eq!((stats.garbage, stats.escaped, stats.received), (4, 1, 2));
}

#[test]
fn gaps_in_a_senders_sequence_are_counted() {
    let group: SocketAddr = format!("239.1.2.5:{}", free_port()).parse().unwrap();
    let Some(mut peers) = peers(Lan::Group(group)) else {
        return;
    };
    // Every third message is never sent: sequence numbers 2, 5 and 8.
    peers[0].drop_every(3);
    for n in 0..10 {
        peers[0].send(&n.to_string(), SystemTime::now()).unwrap();
    }
    let got = collect(&mut peers[1..2], 7);
    let contents: Vec<&str> = got[0].iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["0", "1", "3", "4", "6", "7", "9"]);
    assert_eq!(peers[1].stats().gaps, 3);
    assert_eq!(peers[0].stats().sent, 10);
}
