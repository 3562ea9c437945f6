//! The load generator against servers of known behaviour: an honest echo,
//! one that corrupts a byte, one that stalls once.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::Running;
use sockloop::client::bench::{run_tcp, LoadConfig};
use sockloop::limit::{IpLimits, Rate, Trusted};
use sockloop::service::{ConnContext, Refusal, TcpService};
use sockloop::{services::Echo, Server, ServerConfig};

fn serve<S: TcpService + 'static>(make: impl Fn() -> S + Send + Sync + 'static) -> Running {
    let config = ServerConfig {
        sources: sockloop::limit::IpLimits::unlimited(),
        ..ServerConfig::default()
    };
    serve_with(config, make)
}

/// `make`'s service on 127.0.0.1:0, one shard, `config` otherwise.
fn serve_with<S: TcpService + 'static>(
    config: ServerConfig,
    make: impl Fn() -> S + Send + Sync + 'static,
) -> Running {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = ServerConfig {
        shards: 1,
        ..config
    };
    Running::start(
        Server::builder()
            .config(config)
            .tcp(any, make)
            .build()
            .unwrap(),
    )
}

fn short(conns: usize) -> LoadConfig {
    LoadConfig {
        conns,
        size: 100,
        depth: 4,
        duration: Duration::from_millis(300),
        warmup: Duration::from_millis(50),
        threads: 2,
        rate: None,
        progress: false,
        trace: None,
        samples: true,
    }
}

#[test]
fn against_an_honest_echo_every_count_adds_up() {
    let server = Running::echo(ServerConfig::default());
    let report = run_tcp(server.tcp[0], short(8)).unwrap();
    assert!(report.received > 100, "{}", report.text());
    assert_eq!(
        report.sent, report.received,
        "every message of the window came back"
    );
    assert!(report.clean(), "{}", report.text());
    assert_eq!(report.rtt_us.len(), report.received);
    assert_eq!(report.samples.len() as u64, report.received);
    assert!(report.csv().starts_with("RTT_us\n"));
    server.shutdown().unwrap();
}

/// Echoes, but flips one byte of the 1000th byte it echoes.
#[derive(Default)]
struct Corrupter {
    echoed: usize,
}

impl TcpService for Corrupter {
    fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
        let mut out = data.to_vec();
        let at = 1000usize.wrapping_sub(self.echoed);
        if let Some(byte) = out.get_mut(at) {
            *byte ^= 0x40;
        }
        self.echoed += data.len();
        conn.send(&out);
        data.len()
    }
}

#[test]
fn a_corrupted_echo_is_detected_and_reported() {
    let server = serve(Corrupter::default);
    let report = run_tcp(server.tcp[0], short(1)).unwrap();
    assert_eq!(
        (report.corrupted, report.conn_errors),
        (1, 1),
        "{}",
        report.text()
    );
    assert!(!report.clean());
    server.shutdown().unwrap();
}

/// Echoes, except that once, after 150 messages, it holds everything for
/// 200 ms.
#[derive(Default)]
struct Stall {
    seen: usize,
    held: Vec<u8>,
    stalled: bool,
    holding: bool,
}

impl TcpService for Stall {
    fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
        self.seen += data.len();
        if !self.stalled && self.seen >= 150 * 100 {
            self.stalled = true;
            self.holding = true;
            conn.arm_timer(Duration::from_millis(200), 0);
        }
        if self.holding {
            self.held.extend_from_slice(data);
        } else {
            conn.send(data);
        }
        data.len()
    }

    fn on_timer(&mut self, conn: &mut ConnContext<'_>, _key: u64) {
        self.holding = false;
        conn.send(&std::mem::take(&mut self.held));
    }
}

#[test]
fn the_open_loop_counts_a_stall_against_every_message_it_delayed() {
    let config = LoadConfig {
        conns: 1,
        depth: 1,
        rate: Some(1000.0),
        duration: Duration::from_millis(800),
        warmup: Duration::ZERO,
        threads: 1,
        ..short(1)
    };
    // Open loop: ~200 messages fall due during the 200 ms stall, each
    // waiting up to its end, so well over 1% of them see 100 ms or more.
    let server = serve(Stall::default);
    let open = run_tcp(server.tcp[0], config).unwrap();
    assert!(open.clean(), "{}", open.text());
    let p99 = open.rtt_us.value_at_quantile(0.99);
    assert!(
        p99 >= 100_000,
        "open loop p99 {p99} us: the stall was hidden"
    );
    server.shutdown().unwrap();

    // Closed loop, same stall: one message waits, the sender waits with
    // it, and the percentiles hide it (coordinated omission).
    let server = serve(Stall::default);
    let closed = run_tcp(
        server.tcp[0],
        LoadConfig {
            rate: None,
            ..config
        },
    )
    .unwrap();
    assert!(closed.clean(), "{}", closed.text());
    assert!(closed.rtt_us.max() >= 150_000, "the one stalled message");
    assert!(
        closed.rtt_us.value_at_quantile(0.99) < 100_000,
        "{}",
        closed.text()
    );
    server.shutdown().unwrap();
}

#[test]
fn hold_keeps_two_thousand_connections_alive_from_start_to_end() {
    let server = Running::echo(ServerConfig::default());
    let config = sockloop::client::bench::HoldConfig {
        conns: 2000,
        duration: Duration::from_millis(300),
        per_source: 1000,
        ..Default::default()
    };
    let report = sockloop::client::bench::hold(server.tcp[0], config).unwrap();
    assert_eq!(
        (
            report.connected,
            report.failures.total(),
            report.alive_at_start,
            report.alive_at_end
        ),
        (2000, 0, 2000, Some(2000)),
        "{}",
        report.text()
    );
    assert_eq!(report.sources, 2);
    assert_eq!(server.handle.stats().conns_accepted, 2000);
    server.shutdown().unwrap();
}

#[test]
fn udp_against_an_honest_echo_every_count_adds_up() {
    let server = Running::echo(ServerConfig::default());
    let report = sockloop::client::bench::run_udp(server.udp[0], short(4)).unwrap();
    assert!(report.received > 100, "{}", report.text());
    assert_eq!(report.sent, report.received, "{}", report.text());
    assert!(report.clean(), "{}", report.text());
    server.shutdown().unwrap();
}

#[test]
fn the_reports_files_have_their_formats() {
    let server = Running::echo(ServerConfig::default());
    let report = run_tcp(server.tcp[0], short(2)).unwrap();
    let csv = report.csv();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("RTT_us"));
    assert_eq!(lines.clone().count() as u64, report.received);
    assert!(lines.all(|l| l.parse::<u32>().is_ok()));
    let hgrm = sockloop::client::bench::hgrm(&report.rtt_us);
    assert!(hgrm.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"));
    assert!(
        hgrm.contains(&format!("Total count    = {:>12}]", report.received)),
        "{hgrm}"
    );
    let svg = sockloop::client::bench::svg_plot(&report.rtt_us, "echo <test>");
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.contains("echo &lt;test&gt;") && svg.contains("<polyline"));
    assert!(svg.trim_end().ends_with("</svg>"));
    let json = report.json();
    assert_eq!(json["received"], report.received);
    assert_eq!(json["corrupted"], 0);
    server.shutdown().unwrap();
}

/// Echoes; a connection it turns away gets the json service's refusal.
struct RefusingEcho;

impl TcpService for RefusingEcho {
    fn refusal(&self, _listener: usize, reason: Refusal) -> Option<Vec<u8>> {
        Some(format!("{{\"error\":\"{}\"}}\n", reason.reason()).into_bytes())
    }

    fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
        conn.send(data);
        data.len()
    }
}

/// A server that takes two connections from an address and turns the
/// rest away.
fn two_per_address<S: TcpService + 'static>(
    make: impl Fn() -> S + Send + Sync + 'static,
) -> Running {
    let config = ServerConfig {
        sources: IpLimits {
            max_conns_per_ip: 2,
            connect_rate: None,
            ban_after: 0,
            ..IpLimits::default()
        },
        trusted: Trusted::none(), // the load comes from loopback
        ..ServerConfig::default()
    };
    serve_with(config, make)
}

#[test]
fn connections_turned_away_are_counted_apart_with_the_refusal() {
    let config = LoadConfig {
        threads: 1,
        warmup: Duration::ZERO,
        ..short(5)
    };
    let server = two_per_address(|| RefusingEcho);
    let report = run_tcp(server.tcp[0], config).unwrap();
    let counts = |r: &sockloop::client::bench::Report| {
        (
            r.closed_at_once,
            r.resets,
            r.conn_errors,
            r.corrupted,
            r.lost,
        )
    };
    assert_eq!(counts(&report), (3, 0, 0, 0, 0), "{}", report.text());
    let refusal = r#"{"error":"too many connections from your address"}"#;
    assert_eq!(report.refusal.as_deref(), Some(refusal));
    assert!(report.received > 0 && !report.clean());
    let text = report.text();
    let expected = format!(
        "\ncorrupted 0, lost 0, closed at once 3, reset 0, connection errors 0\n\
         the server refused with: {refusal}\nrtt us: "
    );
    assert!(text.contains(&expected), "{text}");
    assert_eq!(report.json()["closed_at_once"], 3);
    assert_eq!(report.json()["refusal"], refusal);
    assert_eq!(server.handle.stats().refused_per_ip, 3);
    server.shutdown().unwrap();

    // Echo says nothing to a connection it refuses: counted all the same.
    let server = two_per_address(|| Echo);
    let report = run_tcp(server.tcp[0], config).unwrap();
    assert_eq!(counts(&report), (3, 0, 0, 0, 0), "{}", report.text());
    assert_eq!(report.refusal, None);
    server.shutdown().unwrap();
}

#[test]
fn udp_loss_comes_with_a_hint_about_the_servers_limits() {
    // Ten datagrams, then one a minute: the eleventh is dropped.
    let config = ServerConfig {
        shards: 1,
        udp_rate: Some(Rate::per_minute(1).with_burst(10)),
        trusted: Trusted::none(),
        ..ServerConfig::default()
    };
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = Running::start(
        Server::builder()
            .config(config)
            .udp(any, || Echo)
            .build()
            .unwrap(),
    );
    let load = LoadConfig {
        depth: 1,
        threads: 1,
        warmup: Duration::ZERO,
        ..short(1)
    };
    let report = sockloop::client::bench::run_udp(server.udp[0], load).unwrap();
    assert_eq!((report.received, report.lost), (10, 1), "{}", report.text());
    let hint = "a sockloop server drops datagrams beyond its --udp-rate (datagrams per \
                address per socket; serve --udp-rate 0 lifts it) and any over its datagram \
                limit (65,507 B)";
    assert_eq!(report.hint.as_deref(), Some(hint));
    assert!(report.text().contains(&format!("\nhint: {hint}\nrtt us: ")));
    server.shutdown().unwrap();
}
