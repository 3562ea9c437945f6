//! `sockloop serve --workers N`: worker processes under a supervisor that
//! shares their ports, restarts the ones that die, drains them all on
//! SIGTERM, never leaves one behind, and merges their metrics.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::{assert_usage_error, serve, Served};
use common::{connect, wait_until, Rng, IO_TIMEOUT};

/// `serve --workers 2` with TCP echo and the merged metrics (listening
/// lines: echo, then metrics), plus `extra` flags.
fn two_workers(extra: &[&str]) -> (Served, SocketAddr, SocketAddr) {
    let args = [
        &[
            "--workers",
            "2",
            "--tcp",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--log-level",
            "warn",
        ],
        extra,
    ]
    .concat();
    let served = Served::start(&args, 2);
    assert_eq!(served.listening[0].2, "echo");
    assert_eq!(served.listening[1].2, "metrics");
    let echo = served.addr(0).parse().unwrap();
    let metrics = served.addr(1).parse().unwrap();
    (served, echo, metrics)
}

/// The supervisor's `GET /metrics` body.
fn scrape(metrics: SocketAddr) -> Metrics {
    let mut stream = connect(metrics);
    stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    Metrics::parse(body)
}

/// Samples by metric name and labels (`worker="0",shard="1"`, or "").
struct Metrics(HashMap<(String, String), u64>);

impl Metrics {
    fn parse(body: &str) -> Metrics {
        let mut samples = HashMap::new();
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match name.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (name, ""),
            };
            let key = (name.to_string(), labels.to_string());
            assert!(
                samples.insert(key, value.parse().unwrap()).is_none(),
                "{line}"
            );
        }
        Metrics(samples)
    }

    /// The one sample `name{labels}`.
    fn get(&self, name: &str, labels: &str) -> u64 {
        let key = (name.to_string(), labels.to_string());
        *self
            .0
            .get(&key)
            .unwrap_or_else(|| panic!("no {name}{{{labels}}}"))
    }

    /// `name` summed over the samples whose labels start with `worker="I"`.
    fn worker_sum(&self, name: &str, worker: usize) -> u64 {
        let prefix = format!("worker=\"{worker}\"");
        (self.0.iter())
            .filter(|((n, labels), _)| n == name && labels.starts_with(&prefix))
            .map(|(_, value)| value)
            .sum()
    }

    fn pid(&self, worker: usize) -> u32 {
        let pid = self.get("sockloop_worker_pid", &format!("worker=\"{worker}\""));
        u32::try_from(pid).unwrap()
    }

    fn up(&self, worker: usize) -> bool {
        self.get("sockloop_worker_up", &format!("worker=\"{worker}\"")) == 1
    }
}

/// Whether process `pid` is gone: no `/proc` entry, or a zombie
/// waiting for its new parent to collect it.
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // `PID (comm) STATE ...`: the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// Whether every thread of process `pid` is stopped (state `T`).
fn stopped(pid: u32) -> bool {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .map(|task| task.unwrap().path().join("stat"))
        .all(|stat| {
            let stat = std::fs::read_to_string(stat).unwrap_or_default();
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T'))
        })
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// Kills the worker processes on drop, if a failed test left them.
struct Reap(Vec<u32>);

impl Drop for Reap {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if !gone(pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// One round trip of `data` on `stream`: the echo, byte-exact, or the
/// error that ended the connection.
fn echo(stream: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    stream.write_all(data)?;
    let mut reply = vec![0; data.len()];
    stream.read_exact(&mut reply)?;
    assert_eq!(reply, data, "an echo that is not byte-exact");
    Ok(())
}

#[test]
fn both_workers_serve_a_crash_costs_only_its_connections_and_sigterm_drains_all() {
    let (served, addr, metrics) = two_workers(&["--shards", "1", "--drain-timeout", "2s"]);
    let before = scrape(metrics);
    let pids = [before.pid(0), before.pid(1)];
    let mut reap = Reap(pids.to_vec());
    assert!(
        pids[0] != 0 && pids[1] != 0 && pids[0] != pids[1],
        "{pids:?}"
    );
    assert_eq!(before.get("sockloop_workers_up", ""), 2);

    // Enough connections that the kernel gives both workers some (each
    // lands on one at random: all on one is a 2^-63 chance).
    let mut rng = Rng::new(17);
    let mut conns: Vec<TcpStream> = (0..64).map(|_| connect(addr)).collect();
    for conn in &mut conns {
        echo(conn, &rng.bytes(512)).unwrap();
    }
    // Each worker also holds the supervisor's scrape connection (and, for
    // a moment, the one before it, until the supervisor's FIN arrives).
    let mut open = [0, 0];
    wait_until("64 connections and 2 scrapes open", || {
        let loaded = scrape(metrics);
        open = [0, 1].map(|w| loaded.worker_sum("sockloop_conns_open", w));
        open[0] + open[1] == 64 + 2
    });
    assert!(open[0] > 1 && open[1] > 1, "one worker took none: {open:?}");

    // Worker 0 dies: its connections end, worker 1's echo on.
    signal(pids[0], "-KILL");
    wait_until("the killed worker to be gone", || gone(pids[0]));
    let mut survivors = Vec::new();
    for mut conn in conns {
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        if echo(&mut conn, &rng.bytes(1024)).is_ok() {
            survivors.push(conn);
        }
    }
    assert_eq!(survivors.len() as u64, open[1] - 1);
    // New connections are served by worker 1 during the backoff...
    for _ in 0..8 {
        echo(&mut connect(addr), &rng.bytes(256)).unwrap();
    }
    // ... and the supervisor starts worker 0 again, while worker 1's
    // connections keep echoing byte-exact throughout.
    let deadline = Instant::now() + IO_TIMEOUT;
    let restarted = loop {
        for conn in &mut survivors {
            echo(conn, &rng.bytes(300)).unwrap();
        }
        let now = scrape(metrics);
        if now.up(0) && now.pid(0) != pids[0] {
            break now;
        }
        assert!(Instant::now() < deadline, "worker 0 was not restarted");
        std::thread::sleep(Duration::from_millis(50));
    };
    let new_pid = restarted.pid(0);
    reap.0.push(new_pid);
    assert_eq!(restarted.pid(1), pids[1]);
    assert_eq!(
        restarted.get("sockloop_worker_restarts_total", "worker=\"0\""),
        1
    );
    assert_eq!(
        restarted.get("sockloop_worker_restarts_total", "worker=\"1\""),
        0
    );
    assert_eq!(restarted.get("sockloop_workers_up", ""), 2);
    for _ in 0..8 {
        echo(&mut connect(addr), &rng.bytes(256)).unwrap();
    }
    for conn in &mut survivors {
        echo(conn, &rng.bytes(300)).unwrap();
    }

    // SIGTERM: every worker drains (the open connections within the 2 s
    // drain timeout) and the supervisor exits 0.
    let output = served.stop();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("(signal: 9 (SIGKILL)); starting it again in 1s"),
        "{stderr}"
    );
    for pid in [new_pid, pids[1]] {
        assert!(gone(pid), "worker {pid} outlived the supervisor");
    }
    for conn in &mut survivors {
        let mut byte = [0];
        assert_eq!(conn.read(&mut byte).ok(), Some(0), "closed by the drain");
    }
}

#[test]
fn a_second_sigterm_stops_workers_that_are_still_draining() {
    let (served, addr, metrics) = two_workers(&["--shards", "1", "--drain-timeout", "3600s"]);
    let now = scrape(metrics);
    let pids = [now.pid(0), now.pid(1)];
    let _reap = Reap(pids.to_vec());
    // A connection the drain would wait an hour for.
    let mut held = connect(addr);
    echo(&mut held, b"hold on").unwrap();
    let supervisor = served.child.id();
    signal(supervisor, "-TERM");
    // Draining: the listeners are closed; the held connection got its
    // FIN, and the drain waits for the peer to close.
    wait_until("the listeners to close", || {
        TcpStream::connect(addr).is_err()
    });
    let mut rest = Vec::new();
    held.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"");
    signal(supervisor, "-TERM");
    let output = served.child.finish();
    assert_eq!(output.status.code(), Some(0));
    for pid in pids {
        assert!(gone(pid), "worker {pid} outlived the supervisor");
    }
    drop(held);
}

#[test]
fn a_supervisor_killed_with_sigkill_leaves_no_worker() {
    let (served, _, metrics) = two_workers(&["--shards", "1"]);
    let now = scrape(metrics);
    let _reap = Reap(vec![now.pid(0), now.pid(1)]);
    signal(served.child.id(), "-KILL");
    for worker in 0..2 {
        let pid = now.pid(worker);
        wait_until("the worker to die with its supervisor", || gone(pid));
    }
}

#[test]
fn a_worker_that_cannot_start_stops_the_server_with_one_line() {
    let dir = std::env::temp_dir().join(format!("sockloop-workers-{}", std::process::id()));
    let missing = dir.join("no-such-cert.pem");
    let missing = missing.to_str().unwrap();
    let output = serve(&[
        "--workers",
        "2",
        "--tls",
        "127.0.0.1:0",
        "--cert",
        missing,
        "--key",
        missing,
        "--log-level",
        "warn",
    ]);
    assert_usage_error(&output, "could not start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("error: worker ") && lines[0].contains("no-such-cert.pem"),
        "{stderr}"
    );
    assert!(
        output.stdout.is_empty(),
        "listening lines for a failed start"
    );
}

#[test]
fn merged_metrics_sum_exactly_and_a_stopped_worker_costs_a_scrape_at_most_a_second() {
    let (served, addr, metrics) = two_workers(&["--shards", "2"]);
    let first = scrape(metrics);
    let _reap = Reap(vec![first.pid(0), first.pid(1)]);
    let mut scrapes = 1;
    // The workload: 30 connections, 3 echoes of 100 bytes each, closed.
    let mut rng = Rng::new(18);
    for _ in 0..30 {
        let mut conn = connect(addr);
        for _ in 0..3 {
            echo(&mut conn, &rng.bytes(100)).unwrap();
        }
    }
    let sum = |m: &Metrics, name| m.worker_sum(name, 0) + m.worker_sum(name, 1);
    let done = loop {
        let now = scrape(metrics);
        scrapes += 1;
        if sum(&now, "sockloop_closed_peer_total") >= 30 {
            break now;
        }
        assert!(scrapes < 400, "the closes were never counted");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(sum(&done, "sockloop_closed_peer_total"), 30);
    // Every scrape so far reached both workers once, this one included.
    assert_eq!(
        sum(&done, "sockloop_conns_accepted_total"),
        30 + 2 * scrapes
    );
    for worker in 0..2 {
        for shard in 0..2 {
            let labels = format!("worker=\"{worker}\",shard=\"{shard}\"");
            done.get("sockloop_conns_accepted_total", &labels);
        }
        assert_eq!(
            done.get("sockloop_worker_scrape_ok", &format!("worker=\"{worker}\"")),
            1
        );
    }

    // A worker that does not answer (stopped) is reported, not waited for.
    signal(first.pid(1), "-STOP");
    wait_until("every thread of worker 1 to stop", || stopped(first.pid(1)));
    let partial = scrape(metrics);
    signal(first.pid(1), "-CONT");
    assert_eq!(partial.get("sockloop_worker_scrape_ok", "worker=\"0\""), 1);
    assert_eq!(partial.get("sockloop_worker_scrape_ok", "worker=\"1\""), 0);
    assert_eq!(partial.worker_sum("sockloop_conns_accepted_total", 1), 0);
    assert!(partial.worker_sum("sockloop_conns_accepted_total", 0) > 0);
    let output = served.stop();
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn workers_refuse_a_chat_listener_and_no_reuseport() {
    let output = serve(&["--workers", "2", "--tcp", "127.0.0.1:0=chat"]);
    assert_usage_error(
        &output,
        "a chat's rooms and names cannot span worker processes",
    );
    let output = serve(&["--workers", "2", "--tcp", "127.0.0.1:0", "--no-reuseport"]);
    assert_usage_error(&output, "drop --no-reuseport");
    let output = serve(&["--workers", "0", "--tcp", "127.0.0.1:0"]);
    assert_usage_error(&output, "--workers 0 is out of range");
}

#[test]
fn a_worker_that_cannot_start_again_is_retried_while_the_other_serves() {
    let dir = std::env::temp_dir().join(format!("sockloop-workers-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let served = Served::start(
        &[
            "--workers",
            "2",
            "--shards",
            "1",
            "--tcp",
            "127.0.0.1:0",
            "--tls",
            "127.0.0.1:0",
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--metrics",
            "127.0.0.1:0",
            "--log-level",
            "warn",
        ],
        3,
    );
    let addr: SocketAddr = served.addr(0).parse().unwrap();
    let metrics: SocketAddr = served.addr(2).parse().unwrap();
    let first = scrape(metrics);
    let mut reap = Reap(vec![first.pid(0), first.pid(1)]);

    // The certificate goes away, then worker 0 dies: its restarts fail.
    std::fs::remove_file(&cert).unwrap();
    signal(first.pid(0), "-KILL");
    let restarts = |m: &Metrics| m.get("sockloop_worker_restarts_total", "worker=\"0\"");
    wait_until("the supervisor to see worker 0 die", || {
        !scrape(metrics).up(0)
    });
    wait_until("two failed restarts", || {
        let now = scrape(metrics);
        assert!(!now.up(0), "worker 0 up without its certificate");
        restarts(&now) >= 2
    });
    // Worker 1 serves meanwhile.
    let mut rng = Rng::new(19);
    for _ in 0..4 {
        echo(&mut connect(addr), &rng.bytes(200)).unwrap();
    }
    // The certificate is back: the next try (after 4 s) succeeds.
    std::fs::write(&cert, made.cert.pem()).unwrap();
    wait_until("worker 0 to start again", || scrape(metrics).up(0));
    let now = scrape(metrics);
    reap.0.push(now.pid(0));
    assert_eq!(restarts(&now), 3);
    assert_eq!(now.pid(1), first.pid(1));

    let output = served.stop();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let failed = stderr
        .lines()
        .filter(|l| l.contains("could not start again"))
        .count();
    assert_eq!(failed, 2, "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
