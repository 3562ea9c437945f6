//! The `sockloop serve` command line: its listening lines, exit codes and
//! one-line errors.

mod common;

use common::process::{
    assert_usage_error, finish, next_line, serve, spawn_serve, terminate, BIN, TIMEOUT,
};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[test]
fn a_bad_address_exits_2_naming_it() {
    let output = serve(&["--tcp", "127.0.0.1:notaport"]);
    assert_usage_error(&output, "bad address \"127.0.0.1:notaport\"");
}

#[test]
fn a_port_in_use_exits_2_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = serve(&["--tcp", &addr]);
    assert_usage_error(
        &output,
        &format!("cannot bind tcp {addr}: address in use (another socket holds it"),
    );
}

#[test]
fn an_unknown_service_exits_2_naming_it_and_the_registrys_services() {
    use sockloop::services::registry::{self, Transport};

    for (flag, transport) in [
        ("--tcp", Transport::Tcp),
        ("--tls", Transport::Tls),
        ("--udp", Transport::Udp),
    ] {
        let names: Vec<_> = registry::on(transport).map(|s| s.name).collect();
        let output = serve(&[flag, "127.0.0.1:0=gopher"]);
        let expected = format!(
            "error: invalid configuration: unknown {transport} service \"gopher\" (known: {})\n",
            names.join(", ")
        );
        assert_usage_error(&output, &expected);
        assert_eq!(String::from_utf8_lossy(&output.stderr), expected);
        assert!(output.stdout.is_empty());
    }
    // The same list, written out: a new service must be seen here too.
    let output = serve(&["--tcp", "127.0.0.1:0=gopher"]);
    assert_usage_error(&output, "(known: echo, json, chat, chat-proto)\n");
    let output = serve(&["--udp", "127.0.0.1:0=gopher"]);
    assert_usage_error(&output, "(known: echo, rudp)\n");
    // A service on a transport it does not run on names where it runs.
    let output = serve(&["--tcp", "127.0.0.1:0=rudp"]);
    assert_usage_error(
        &output,
        "\"rudp\" is not a tcp service: it runs on udp (tcp services: echo, json, chat, chat-proto)",
    );
}

#[test]
fn serve_help_lists_every_service_of_each_listener_flag() {
    use sockloop::services::registry::{self, Transport};

    let output = finish(
        Command::new(BIN)
            .args(["serve", "--help"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8(output.stdout).unwrap();
    for (flag, transport) in [
        ("--tcp", Transport::Tcp),
        ("--tls", Transport::Tls),
        ("--udp", Transport::Udp),
    ] {
        // The flag's block: from its header to the next blank line.
        let start = help
            .find(&format!("      {flag} <ADDR[=SERVICE]>"))
            .unwrap();
        let block = help[start..].split("\n\n").next().unwrap();
        let listed: Vec<(&str, &str)> = block
            .lines()
            .skip(2)
            .map(|line| {
                let (name, description) = line.trim().split_once(' ').unwrap();
                (name, description.trim_start())
            })
            .collect();
        let registered: Vec<_> = registry::on(transport)
            .map(|s| (s.name, s.description))
            .collect();
        assert_eq!(listed, registered, "{flag}: {block}");
        assert!(!listed.is_empty());
    }
}

/// `sockloop serve --help` (or `-h`): each flag's `[default: ...]`.
fn help_defaults(flag: &str) -> Vec<(String, String)> {
    let output = finish(
        Command::new(BIN)
            .args(["serve", flag])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8(output.stdout).unwrap();
    // A flag's header starts at most 6 columns in (`-h, --help`,
    // `      --tcp`); its description follows on the same line (-h) or on
    // lines indented further (--help).
    let mut current = None;
    let mut defaults = Vec::new();
    for line in help.lines() {
        let indent = line.len() - line.trim_start().len();
        if indent <= 6 && line.trim_start().starts_with('-') {
            let long = line.split_whitespace().find(|w| w.starts_with("--"));
            current = long.map(|w| w.trim_end_matches(',').to_string());
        }
        if let (Some(flag), Some((_, rest))) = (&current, line.split_once("[default: ")) {
            let value = rest.split_once(']').unwrap().0;
            defaults.push((flag.clone(), value.to_string()));
        }
    }
    defaults
}

#[test]
fn serve_help_shows_the_librarys_defaults() {
    use sockloop::config::{duration, rate, size, timeout, CLI_UDP_RATE};
    use sockloop::limit::IpLimits;
    use sockloop::net::socket::SocketOptions;
    use sockloop::services::chat::ChatConfig;
    use sockloop::services::rudp_echo::DEFAULT_MAX_PEERS;
    use sockloop::ServerConfig;

    let lib = ServerConfig::default();
    let ip = IpLimits::default();
    let chat = ChatConfig::default();
    // Each flag: what the library says, and what the README's table says.
    let expected = [
        ("--workers", "1".to_string(), "1"),
        (
            "--trace-rate",
            sockloop::DEFAULT_TRACE_RATE.to_string(),
            "200",
        ),
        (
            "--backlog",
            SocketOptions::default().backlog.to_string(),
            "1024",
        ),
        (
            "--notsent-lowat",
            size(SocketOptions::default().notsent_lowat.unwrap()).to_string(),
            "128KiB",
        ),
        (
            "--idle-timeout",
            timeout(lib.idle_timeout).to_string(),
            "300s",
        ),
        (
            "--frame-timeout",
            timeout(lib.frame_timeout).to_string(),
            "10s",
        ),
        (
            "--write-timeout",
            timeout(lib.write_timeout).to_string(),
            "30s",
        ),
        (
            "--drain-timeout",
            duration(lib.drain_timeout).to_string(),
            "5s",
        ),
        (
            "--out-soft",
            size(lib.output_soft_limit).to_string(),
            "256KiB",
        ),
        (
            "--out-soft-for",
            timeout(lib.output_soft_for).to_string(),
            "10s",
        ),
        ("--chat-max-errors", chat.max_errors.to_string(), "5"),
        (
            "--chat-max-content",
            size(chat.max_content).to_string(),
            "2KiB",
        ),
        ("--trusted", lib.trusted.to_string(), "127.0.0.0/8,::1/128"),
        ("--proxy-from", lib.proxy_from.to_string(), "none"),
        ("--max-conns-per-ip", ip.max_conns_per_ip.to_string(), "256"),
        ("--conn-rate", rate(ip.connect_rate).to_string(), "50/s:100"),
        ("--msg-rate", rate(lib.message_rate).to_string(), "0"),
        ("--ban-after", ip.ban_after.to_string(), "10"),
        (
            "--strike-window",
            duration(ip.strike_window).to_string(),
            "60s",
        ),
        ("--ban-for", duration(ip.ban_for).to_string(), "60s"),
        (
            "--max-frame",
            size(lib.max_read_buffer).to_string(),
            "64KiB",
        ),
        (
            "--udp-rate",
            rate(Some(CLI_UDP_RATE)).to_string(),
            "10000/s:20000",
        ),
        ("--rudp-max-peers", DEFAULT_MAX_PEERS.to_string(), "4096"),
        ("--stats-interval", "0".to_string(), "0"),
    ];
    for (flag, library, readme) in &expected {
        assert_eq!(library, readme, "{flag}: the library and the README differ");
    }
    let expected: Vec<(String, String)> = (expected.iter())
        .map(|(flag, library, _)| (flag.to_string(), library.clone()))
        .collect();
    // Both layouts: -h (one line per flag) and --help (long help).
    for flag in ["--help", "-h"] {
        assert_eq!(help_defaults(flag), expected, "serve {flag}");
    }
}

#[test]
fn serve_prints_its_listeners_echoes_and_exits_0_on_sigterm() {
    let mut child = spawn_serve(&[
        "--tcp",
        "127.0.0.1:0",
        "--udp",
        "127.0.0.1:0=echo",
        "--idle-timeout",
        "0",
        "--frame-timeout",
        "500ms",
        "--write-timeout",
        "1m",
        "--shards",
        "2",
        "--pin",
        "--no-reuseport",
    ]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut listening = |proto: &str| -> SocketAddr {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.len(), 4, "unexpected line {line:?}");
        assert_eq!(
            (fields[0], fields[1], fields[3]),
            ("listening", proto, "echo")
        );
        fields[2].parse().unwrap()
    };
    let tcp = listening("tcp");
    let udp = listening("udp");

    let mut stream = TcpStream::connect(tcp).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(b"hello").unwrap();
    let mut reply = [0; 5];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"hello");

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    socket.send_to(b"datagram", udp).unwrap();
    let mut buf = [0; 64];
    let (n, from) = socket.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"datagram"[..], udp));

    drop(stream);
    let output = terminate(child);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn out_of_descriptors_the_reserve_refuses_the_excess_then_service_recovers() {
    // `ulimit -n` in sh lowers both limits, so the server cannot raise them.
    // One shard: with several, one can hold every descriptor while the
    // first connection waits in another's backlog.
    let script =
        format!("ulimit -n 32 && exec {BIN} serve --shards 1 --tcp 127.0.0.1:0 --log-level warn");
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line.split_whitespace().nth(2).unwrap().parse().unwrap();

    // More connections than the server has descriptors: the kernel completes
    // the handshakes; the server serves what it can and refuses the rest
    // (accepts with its reserve descriptor and closes) instead of leaving
    // them queued in silence.
    let mut clients: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let echo = |stream: &mut TcpStream| {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.write_all(b"x")?;
        let mut byte = [0];
        stream.read_exact(&mut byte).map(|_| byte[0])
    };
    let outcomes: Vec<bool> = clients.iter_mut().map(|c| echo(c).is_ok()).collect();
    let served = outcomes.iter().filter(|&&ok| ok).count();
    assert!(outcomes[0], "the first connection is served");
    assert!((10..40).contains(&served), "{served} of 40 served");
    assert!(
        outcomes[served..].iter().all(|&ok| !ok),
        "refusals come after the last served"
    );
    // Freeing descriptors lets new connections in again.
    clients.truncate(1);
    let mut late = TcpStream::connect(addr).unwrap();
    assert_eq!(echo(&mut late).unwrap(), b'x', "never recovered");

    drop((clients, late));
    let output = terminate(child);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    assert!(
        stderr.contains("out of file descriptors: refused 1 connection(s)"),
        "no refusal was logged: {stderr}"
    );
}

/// `[HH:MM:SS from]: content` with any time: `(from, content)`.
fn parse_shown(line: &str) -> (String, String) {
    let (head, content) = line.split_once("]: ").unwrap_or_else(|| panic!("{line:?}"));
    let (time, from) = head.trim_start_matches('[').split_once(' ').unwrap();
    let digits = time
        .split(':')
        .all(|t| t.len() == 2 && t.bytes().all(|b| b.is_ascii_digit()));
    assert!(digits && time.len() == 8, "not HH:MM:SS in {line:?}");
    (from.to_owned(), content.to_owned())
}

fn spawn_chat(args: &[&str]) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(BIN)
        .arg("chat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    (child, stdout)
}

#[test]
fn chat_clients_of_both_encodings_talk_through_serve() {
    let mut server = spawn_serve(&[
        "--tcp",
        "127.0.0.1:0=chat",
        "--tcp",
        "127.0.0.1:0=chat-proto",
        "--shards",
        "1",
    ]);
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let mut listening = |service: &str| {
        let line = next_line(&mut stdout);
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            (fields[0], fields[1], fields[3]),
            ("listening", "tcp", service)
        );
        fields[2].to_owned()
    };
    let (json, proto) = (listening("chat"), listening("chat-proto"));

    let (mut ann, mut ann_out) = spawn_chat(&[&json, "--name", "ann"]);
    let (from, welcome) = parse_shown(&next_line(&mut ann_out));
    assert_eq!(from, "System");
    assert!(
        welcome.starts_with("Welcome, ann! You are in lobby, alone so far."),
        "{welcome}"
    );
    let (mut bob, mut bob_out) = spawn_chat(&[&proto, "--proto", "--name", "bob"]);
    assert!(parse_shown(&next_line(&mut bob_out))
        .1
        .starts_with("Welcome, bob!"));
    let notice = parse_shown(&next_line(&mut ann_out));
    assert_eq!(notice, ("System".into(), "bob joined lobby".into()));

    // A control character from the network is shown escaped.
    let mut ann_in = ann.stdin.take().unwrap();
    ann_in.write_all(b"hello bob \x1b[2J\n").unwrap();
    let shown = parse_shown(&next_line(&mut bob_out));
    assert_eq!(shown, ("ann".into(), r"hello bob \u{1b}[2J".into()));

    let mut bob_in = bob.stdin.take().unwrap();
    bob_in.write_all(b"/quit\n").unwrap();
    assert_eq!(parse_shown(&next_line(&mut bob_out)).1, "goodbye");
    assert_eq!(
        finish(bob).status.code(),
        Some(0),
        "the server's close ends the client"
    );
    assert_eq!(parse_shown(&next_line(&mut ann_out)).1, "bob left lobby");
    drop(ann_in); // end of input: ann leaves
    assert_eq!(finish(ann).status.code(), Some(0));

    assert_eq!(terminate(server).status.code(), Some(0));
}

#[test]
fn chat_output_limits_are_checked_at_startup() {
    let output = serve(&["--tcp", "127.0.0.1:0=chat", "--out-hard", "64KiB"]);
    assert_usage_error(
        &output,
        "--out-hard (output_hard_limit) is 64KiB but must be above 128KiB: the write \
         high-water mark (64KiB) plus --max-frame (64KiB)",
    );
    // The old name still works, and so does a soft limit above the hard one, named.
    let output = serve(&[
        "--tcp",
        "127.0.0.1:0",
        "--chat-out-hard",
        "512KiB",
        "--out-soft",
        "1MiB",
    ]);
    assert_usage_error(
        &output,
        "--out-soft (output_soft_limit, 1MiB) must not be above --out-hard (output_hard_limit, 512KiB)",
    );
}

#[test]
fn the_rudp_client_reports_every_echo_from_serve() {
    let mut server = spawn_serve(&["--udp", "127.0.0.1:0=rudp", "--shards", "1"]);
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let line = next_line(&mut stdout);
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        (fields[0], fields[1], fields[3]),
        ("listening", "udp", "rudp"),
        "{line}"
    );
    let client = Command::new(BIN)
        .args(["rudp", fields[2], "--count", "300", "--size", "3000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = finish(client);
    let report = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        report.starts_with("delivered 300/300 messages of 3000 B in "),
        "{report}"
    );
    assert!(report.contains("\nrtt us: min "), "{report}");
    assert_eq!(terminate(server).status.code(), Some(0));
}

#[test]
fn tls_listeners_from_pem_files_and_their_usage_errors() {
    let dir = std::env::temp_dir().join(format!("sockloop-cli-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_, client, made) = common::tls::certificates();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());

    let output = serve(&["--tls", "127.0.0.1:0"]);
    assert_usage_error(&output, "--tls needs --cert and --key");
    let output = serve(&["--tls", "127.0.0.1:0", "--cert", key, "--key", key]);
    assert_usage_error(&output, "key.pem: no certificate in the file");

    let mut server = spawn_serve(&["--tls", "127.0.0.1:0=json", "--cert", cert, "--key", key]);
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let line = next_line(&mut stdout);
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        (fields[0], fields[1], fields[3]),
        ("listening", "tls", "json"),
        "{line}"
    );
    let mut stream = BufReader::new(common::tls::tls_connect(
        fields[2].parse().unwrap(),
        &client,
    ));
    stream.get_mut().write_all(b"{\"b\":1,\"a\":2}\n").unwrap();
    let mut reply = String::new();
    stream.read_line(&mut reply).unwrap();
    assert_eq!(reply, "{\"a\":2,\"b\":1}\n");
    drop(stream);
    assert_eq!(terminate(server).status.code(), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_reports_on_serve_and_exits_0_when_everything_came_back() {
    let mut server = spawn_serve(&["--tcp", "127.0.0.1:0", "--shards", "1"]);
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let addr = next_line(&mut stdout)
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_owned();
    let run = |extra: &[&str]| {
        let child = Command::new(BIN)
            .args(["bench", "tcp", &addr, "--conns", "4", "--duration", "300ms"])
            .args(["--warmup", "50ms"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        finish(child)
    };
    let text = run(&[]);
    let report = String::from_utf8_lossy(&text.stdout);
    assert_eq!(text.status.code(), Some(0), "{report}");
    assert!(
        report.contains(
            "\ncorrupted 0, lost 0, closed at once 0, reset 0, connection errors 0\nrtt us: min "
        ),
        "{report}"
    );
    let json = run(&["--json", "--rate", "2000"]);
    let summary: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        (summary["corrupted"].as_u64(), summary["lost"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(summary["received"].as_u64().unwrap() > 400, "{summary}");
    assert_eq!(terminate(server).status.code(), Some(0));
}

#[test]
fn serverless_chat_peers_in_a_group_talk_over_loopback() {
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let group = format!("239.1.2.6:{port}");
    let (mut bob, mut bob_out) = spawn_chat(&["--group", &group, "--name", "bob", "--stats"]);
    let (mut ann, _ann_out) = spawn_chat(&["--group", &group, "--name", "ann"]);
    std::thread::sleep(Duration::from_millis(300)); // both joined
    let mut ann_in = ann.stdin.take().unwrap();
    ann_in.write_all(b"hello over multicast\n").unwrap();
    let shown = parse_shown(&next_line(&mut bob_out));
    assert_eq!(shown, ("ann".into(), "hello over multicast".into()));
    drop(ann_in);
    assert_eq!(
        finish(ann).status.code(),
        Some(0),
        "end of input ends a peer"
    );
    drop(bob.stdin.take());
    let output = finish(bob);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("sent 0, received 1, gaps 0, duplicates 0, garbage 0"),
        "{stderr}"
    );
}
