//! `GET /metrics` over real sockets: the scrape matches the workload, the
//! text follows the exposition format, and bad requests get HTTP errors.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::{connect, udp_client, wait_until, Running};
use sockloop::limit::IpLimits;
use sockloop::services::Echo;
use sockloop::{Server, ServerConfig};

fn server(max_conns: Option<usize>) -> Running {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = ServerConfig {
        shards: 2,
        max_conns,
        sources: IpLimits::unlimited(),
        ..ServerConfig::default()
    };
    let server = Server::builder()
        .config(config)
        .tcp(any, || Echo)
        .udp(any, || Echo)
        .metrics(any)
        .build()
        .unwrap();
    Running::start(server)
}

/// Sends `request` and returns the whole response.
fn http(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = connect(addr);
    stream.write_all(request).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// `metric{shard="i"}` and `metric` sample lines, by name and shard.
fn samples(body: &str) -> HashMap<(String, Option<usize>), u64> {
    let mut out = HashMap::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap();
        let (name, shard) = match name.split_once("{shard=\"") {
            Some((name, rest)) => (name, Some(rest.trim_end_matches("\"}").parse().unwrap())),
            None => (name, None),
        };
        out.insert((name.to_owned(), shard), value.parse().unwrap());
    }
    out
}

#[test]
fn a_scrape_counts_exactly_what_the_workload_did() {
    let server = server(Some(5));
    let (echo, metrics) = (server.tcp[0], server.tcp[1]);
    let mut held: Vec<TcpStream> = (0..5).map(|_| connect(echo)).collect();
    for stream in &mut held {
        stream.write_all(&[7; 100]).unwrap();
        let mut back = [0; 100];
        stream.read_exact(&mut back).unwrap();
    }
    // The sixth is refused: the server holds max_conns already.
    let mut refused = connect(echo);
    let mut nothing = Vec::new();
    refused.read_to_end(&mut nothing).unwrap();
    drop(held);
    let handle = server.handle.clone();
    wait_until("all closed", || handle.stats().conns_open == 0);
    let udp = udp_client(server.udp[0]);
    for _ in 0..10 {
        udp.send(&[1; 50]).unwrap();
        udp.recv(&mut [0; 64]).unwrap();
    }
    // A reply can arrive before its shard counts it sent.
    wait_until("the replies counted", || handle.stats().udp_out == 10);

    let request = b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n";
    let response = http(metrics, request);
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    let got = samples(body);
    let total = |name: &str| {
        (0..2)
            .map(|s| got[&(name.to_owned(), Some(s))])
            .sum::<u64>()
    };
    // Five echo connections and the scrape itself; the sixth refused.
    assert_eq!(total("sockloop_conns_accepted_total"), 6);
    assert_eq!(total("sockloop_refused_server_full_total"), 1);
    assert_eq!(total("sockloop_closed_peer_total"), 5);
    assert_eq!(
        total("sockloop_tcp_bytes_in_total"),
        500 + request.len() as u64
    );
    assert_eq!(total("sockloop_udp_in_total"), 10);
    assert_eq!(total("sockloop_udp_out_total"), 10);
    assert_eq!(
        total("sockloop_conns_open"),
        1,
        "the scrape, while it is answered"
    );
    // Per shard, the same as the library's own view (stable counters only).
    for (shard, stats) in server.handle.shard_stats().iter().enumerate() {
        let at = |name: &str| got[&(name.to_owned(), Some(shard))];
        assert_eq!(at("sockloop_conns_accepted_total"), stats.conns_accepted);
        assert_eq!(
            at("sockloop_refused_server_full_total"),
            stats.refused_server_full
        );
        assert_eq!(at("sockloop_udp_in_total"), stats.udp_in);
    }
    server.shutdown().unwrap();
}

#[test]
fn the_text_follows_the_exposition_format() {
    let server = server(None);
    let response = http(server.tcp[1], b"GET /metrics HTTP/1.0\r\n\r\n");
    let body = response.split_once("\r\n\r\n").unwrap().1;
    let mut declared = HashMap::new();
    let mut last_type = None;
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            assert!(!help.is_empty() && !help.contains('\n'), "{line}");
            declared.insert(name.to_owned(), ());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(declared.contains_key(name), "TYPE before HELP: {line}");
            assert!(kind == "counter" || kind == "gauge", "{line}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
            last_type = Some(name.to_owned());
        } else {
            let (name, value) = line.rsplit_once(' ').unwrap();
            let bare = name.split('{').next().unwrap();
            assert_eq!(
                Some(bare),
                last_type.as_deref(),
                "a sample outside its family: {line}"
            );
            assert!(
                bare.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{line}"
            );
            assert!(value.parse::<u64>().is_ok(), "{line}");
            if let Some(labels) = name.strip_prefix(bare) {
                let ok = labels.is_empty()
                    || (labels.starts_with("{shard=\"") && labels.ends_with("\"}"));
                assert!(ok, "{line}");
            }
        }
    }
    assert!(declared.len() > 40, "{} metric families", declared.len());
    server.shutdown().unwrap();
}

#[test]
fn bad_requests_get_http_errors_and_the_endpoint_keeps_serving() {
    let server = server(None);
    let metrics = server.tcp[1];
    let status = |request: &[u8]| {
        let response = http(metrics, request);
        response.lines().next().unwrap_or_default().to_owned()
    };
    assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), "HTTP/1.1 404 Not Found");
    assert_eq!(
        status(b"POST /metrics HTTP/1.1\r\n\r\n"),
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert_eq!(
        status(b"\x00\xff garbage\r\n\r\n"),
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert_eq!(status(b"nonsense\r\n\r\n"), "HTTP/1.1 400 Bad Request");
    // A head that never ends is cut off at 8 KiB.
    let mut endless = connect(metrics);
    let _ = endless.write_all(&[b'x'; 16 * 1024]);
    let mut response = String::new();
    let _ = endless.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    // A client that asks and never reads costs nothing: the next is served.
    let mut idle = connect(metrics);
    idle.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(status(b"GET /metrics HTTP/1.1\r\n\r\n"), "HTTP/1.1 200 OK");
    drop(idle);
    server.shutdown().unwrap();
}

/// RFC 9112 §2.2: a recipient may take a bare LF for a line end, so heads
/// ended by `\n\n` (or any mix of LF and CRLF) are answered as CRLF ones
/// are, at once; a CR not followed by LF gets 400 at once. Neither waits
/// for the frame timeout (10 s): the exact status proves it, since a
/// timed-out connection closes without a word.
#[test]
fn bare_lf_heads_are_answered_and_bare_cr_gets_400_at_once() {
    let server = server(None);
    let metrics = server.tcp[1];
    let status = |request: &[u8]| {
        let response = http(metrics, request);
        response.lines().next().unwrap_or_default().to_owned()
    };
    let ok = "HTTP/1.1 200 OK";
    assert_eq!(status(b"GET /metrics HTTP/1.1\n\n"), ok);
    assert_eq!(
        status(b"GET /metrics HTTP/1.1\nHost: a\nAccept: */*\n\n"),
        ok
    );
    assert_eq!(status(b"GET /metrics HTTP/1.1\r\nHost: a\n\r\n"), ok);
    assert_eq!(status(b"GET /metrics HTTP/1.1\nHost: a\r\n\n"), ok);
    assert_eq!(status(b"GET / HTTP/1.1\n\n"), "HTTP/1.1 404 Not Found");
    assert_eq!(
        status(b"POST /metrics HTTP/1.1\n\n"),
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert_eq!(status(b"nonsense\n\n"), "HTTP/1.1 400 Bad Request");
    assert_eq!(status(b"\n\n"), "HTTP/1.1 400 Bad Request");
    // A bare CR: refused as soon as the byte after it arrives, whatever
    // follows (here the client never ends the head at all).
    let bare_cr = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; version=0.0.4\r\n\
                   Content-Length: 28\r\nConnection: close\r\n\r\nbare CR in the request head\n";
    assert_eq!(http(metrics, b"GET /metrics HTTP/1.1\rHost: a"), bare_cr);
    assert_eq!(http(metrics, b"GET /metrics HTTP/1.1\r\r\n\r\n"), bare_cr);
    // And a CRLF scrape still works after all of them.
    assert_eq!(status(b"GET /metrics HTTP/1.1\r\n\r\n"), ok);
    server.shutdown().unwrap();
}

#[test]
fn services_report_frames_and_rudp_peers() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let secret = sockloop::services::rudp_echo::random_secret().unwrap();
    let server = Server::builder()
        .config(ServerConfig {
            shards: 1,
            sources: IpLimits::unlimited(),
            ..ServerConfig::default()
        })
        .tcp(any, || sockloop::services::JsonEcho::new(1024))
        .udp(any, move || {
            sockloop::services::RudpEcho::new(sockloop::rudp::Config::default(), 8, &secret)
        })
        .metrics(any)
        .build()
        .unwrap();
    let server = Running::start(server);
    let mut json = connect(server.tcp[0]);
    json.write_all(b"{\"a\":1}\n{\"b\":2}\nnope\n{\"c\":3}\n")
        .unwrap();
    let mut replies = vec![0; 4];
    let mut got = 0;
    while got < 4 {
        let mut byte = [0];
        json.read_exact(&mut byte).unwrap();
        got += usize::from(byte[0] == b'\n');
        replies.push(byte[0]);
    }
    let timeout = std::time::Duration::from_secs(10);
    let rudp_config = sockloop::rudp::Config::default();
    let mut client =
        sockloop::client::rudp::Client::connect(server.udp[0], rudp_config, timeout).unwrap();
    client.send(b"hi").unwrap();
    assert_eq!(client.recv(timeout).unwrap(), Some(b"hi".to_vec()));
    let response = http(server.tcp[1], b"GET /metrics HTTP/1.1\r\n\r\n");
    let got = samples(response.split_once("\r\n\r\n").unwrap().1);
    let at = |name: &str| got[&(name.to_owned(), Some(0))];
    assert_eq!(
        (
            at("sockloop_frames_in_total"),
            at("sockloop_frames_out_total")
        ),
        (3, 3)
    );
    assert_eq!(at("sockloop_rudp_peers"), 1);
    drop((json, client));
    server.shutdown().unwrap();
}

#[test]
fn rudp_sockets_on_one_shard_sum_their_peers() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let secret = sockloop::services::rudp_echo::random_secret().unwrap();
    let rudp =
        move || sockloop::services::RudpEcho::new(sockloop::rudp::Config::default(), 8, &secret);
    let server = Server::builder()
        .config(ServerConfig {
            shards: 1,
            sources: IpLimits::unlimited(),
            ..ServerConfig::default()
        })
        .udp(any, rudp)
        .udp(any, rudp)
        .metrics(any)
        .build()
        .unwrap();
    let server = Running::start(server);
    let timeout = std::time::Duration::from_secs(10);
    let clients: Vec<_> = [server.udp[0], server.udp[1], server.udp[1]]
        .into_iter()
        .map(|addr| {
            let config = sockloop::rudp::Config::default();
            let mut client =
                sockloop::client::rudp::Client::connect(addr, config, timeout).unwrap();
            client.send(b"hi").unwrap();
            assert_eq!(client.recv(timeout).unwrap(), Some(b"hi".to_vec()));
            client
        })
        .collect();
    let response = http(server.tcp[0], b"GET /metrics HTTP/1.1\r\n\r\n");
    let got = samples(response.split_once("\r\n\r\n").unwrap().1);
    assert_eq!(got[&("sockloop_rudp_peers".to_owned(), Some(0))], 3);
    drop(clients);
    server.shutdown().unwrap();
}

#[test]
fn a_full_server_still_answers_its_scrapes_from_their_own_reserve() {
    let server = server(Some(2));
    let (echo, metrics) = (server.tcp[0], server.tcp[1]);
    let held: Vec<TcpStream> = (0..2).map(|_| connect(echo)).collect();
    let handle = server.handle.clone();
    wait_until("both open", || handle.stats().conns_open == 2);
    let mut refused = Vec::new();
    connect(echo).read_to_end(&mut refused).unwrap();
    assert_eq!(refused, b"", "the echo is full");
    // Scrapes are admitted apart from --max-conns: the operator sees the
    // server exactly when it is full.
    for _ in 0..3 {
        // The last scrape's connection is closed by the server after its
        // reply, which the client may read first: wait until it is gone.
        wait_until("the last scrape closed", || handle.stats().conns_open == 2);
        let response = http(metrics, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        let got = samples(response.split_once("\r\n\r\n").unwrap().1);
        let open: u64 = (0..2)
            .map(|s| got[&("sockloop_conns_open".to_owned(), Some(s))])
            .sum();
        assert_eq!(open, 3, "two echoes and this scrape");
    }
    assert_eq!(server.handle.stats().refused_server_full, 1);
    drop(held);
    server.shutdown().unwrap();
}
