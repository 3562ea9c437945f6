//! Holding past one process: the parent splits the connections into
//! shares, starts one child process per share (the same binary run again,
//! never `fork` after threads), steps them through the run over their
//! stdin and stdout, and merges their reports.
//!
//! The protocol, one line each way per step: the child reads its
//! [`Share`] as a JSON line on stdin, opens its connections, pings them and writes a
//! [`Ready`] line; the parent, once every child is ready, holds, then
//! writes `ping`; each child pings again and writes an [`End`] line.
//! `stop` makes a child stop opening (another child reached a limit); a
//! closed stdin makes it close its connections and exit. A child dies with
//! its parent (the parent-death signal, and the closed stdin), and the
//! parent kills every child when it stops early.

use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::share::{Failures, Limit, Plan};
use super::{plan, rate, HoldConfig, HoldReport};
use crate::TraceLines;

/// One child's part of the run.
#[derive(Debug, Serialize, Deserialize)]
pub struct Share {
    plan: Plan,
    /// The connections it opens: `first..first + count` of the plan.
    first: usize,
    count: usize,
    /// Its part of the connect rate.
    connect_rate: Option<f64>,
    /// Trace lines per second (`None`: off).
    trace: Option<u32>,
    /// The parent's process id: a child whose parent is already another
    /// process (the parent died before the child armed its death signal)
    /// exits at once.
    parent: u32,
}

/// A child's report once its connections are open and pinged.
#[derive(Debug, Serialize, Deserialize)]
struct Ready {
    connected: usize,
    failures: Failures,
    connect_secs: f64,
    alive_at_start: usize,
    limit: Option<Limit>,
}

/// A child's report after the hold.
#[derive(Debug, Serialize, Deserialize)]
struct End {
    alive_at_end: usize,
}

/// How long a child may take to answer `ping` (its pings each wait at
/// most 5 s, a batch of 1,024 at a time) before the run fails.
const END_TIMEOUT: Duration = Duration::from_secs(120);

/// [`hold_spread`](super::hold_spread) over `procs` child processes: each
/// opens its share of `config.conns` (numbered over the whole run, so the
/// source addresses and targets are those of one process), and the
/// reports are merged. `command` makes the command that runs
/// [`hold_share`] (the `sockloop` binary's hidden `bench hold-share`). A [`Limit`] in any child stops
/// every child's opening and skips the hold.
pub fn hold_in_processes(
    targets: &[Vec<SocketAddr>],
    config: HoldConfig,
    procs: usize,
    command: impl Fn() -> Command,
) -> io::Result<HoldReport> {
    let plan = plan(targets, &config)?;
    let procs = procs.clamp(1, config.conns.max(1));
    let (tx, lines) = mpsc::channel();
    let mut children = Children(Vec::with_capacity(procs));
    for k in 0..procs {
        let (first, end) = (k * config.conns / procs, (k + 1) * config.conns / procs);
        let share = Share {
            plan: plan.clone(),
            first,
            count: end - first,
            connect_rate: config
                .connect_rate
                .map(|r| r * (end - first).max(1) as f64 / config.conns.max(1) as f64),
            trace: config.trace,
            parent: std::process::id(),
        };
        let mut child = command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let mut stdin = child.stdin.take().expect("piped");
        // On stdin, not in argv: a long --ports list would pass ARG_MAX.
        let spec = serde_json::to_string(&share).map_err(io::Error::other)?;
        let sent = writeln!(stdin, "{spec}");
        children.0.push((child, Some(stdin)));
        sent?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((k, Some(line))).is_err() {
                    return;
                }
            }
            let _ = tx.send((k, None));
        });
    }
    drop(tx);

    let mut ready: Vec<Option<Ready>> = (0..procs).map(|_| None).collect();
    while ready.iter().any(Option::is_none) {
        let (k, line) = lines
            .recv()
            .map_err(|_| io::Error::other("bench processes lost"))?;
        let part: Ready = children.parse(k, line)?;
        if part.limit.is_some() {
            children.tell_all("stop");
        }
        ready[k] = Some(part);
    }
    let ready: Vec<Ready> = ready.into_iter().flatten().collect();
    let mut report = HoldReport {
        connected: ready.iter().map(|r| r.connected).sum(),
        failures: Failures::default(),
        connect_rate: 0.0,
        alive_at_start: ready.iter().map(|r| r.alive_at_start).sum(),
        alive_at_end: None,
        sources: plan.sources(config.conns),
        ports: targets.len(),
        procs,
        limit: ready.iter().find_map(|r| r.limit),
    };
    for part in &ready {
        report.failures.add(&part.failures);
    }
    let slowest = ready.iter().map(|r| r.connect_secs).fold(0.0, f64::max);
    report.connect_rate = rate(report.connected, Duration::from_secs_f64(slowest));
    if report.limit.is_none() {
        log::info!(
            "{} connections open in {procs} processes; holding them for {:?}",
            report.connected,
            config.duration
        );
        std::thread::sleep(config.duration);
        children.tell_all("ping");
        let deadline = Instant::now() + END_TIMEOUT;
        let mut ended = vec![None; procs];
        while ended.iter().any(Option::is_none) {
            let wait = deadline.saturating_duration_since(Instant::now());
            let (k, line) = lines
                .recv_timeout(wait)
                .map_err(|_| io::Error::other("a bench process did not answer the last ping"))?;
            let end: End = children.parse(k, line)?;
            ended[k] = Some(end.alive_at_end);
        }
        report.alive_at_end = Some(ended.into_iter().flatten().sum());
    }
    children.finish();
    Ok(report)
}

/// The children and the pipes to their stdin; every one killed on drop
/// unless [`Children::finish`] saw it exit.
struct Children(Vec<(Child, Option<ChildStdin>)>);

impl Children {
    /// Writes `word` to every child still listening.
    fn tell_all(&mut self, word: &str) {
        for (_, stdin) in &mut self.0 {
            if let Some(pipe) = stdin {
                if writeln!(pipe, "{word}").is_err() {
                    *stdin = None;
                }
            }
        }
    }

    /// Child `k`'s line as a `T`; its end (or nonsense) is an error naming
    /// how it exited.
    fn parse<T: for<'de> Deserialize<'de>>(
        &mut self,
        k: usize,
        line: Option<String>,
    ) -> io::Result<T> {
        let Some(line) = line else {
            let (child, _) = &mut self.0[k];
            let status = child.wait()?;
            return Err(io::Error::other(format!(
                "bench process {} ended early ({status})",
                child.id()
            )));
        };
        serde_json::from_str(&line)
            .map_err(|e| io::Error::other(format!("bench process {k} said {line:?}: {e}")))
    }

    /// Closes every stdin (the children close their connections and
    /// exit) and waits for them, killing any still there after 10 s.
    fn finish(mut self) {
        for (_, stdin) in &mut self.0 {
            stdin.take();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (child, _) in &mut self.0 {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (child, _) in &mut self.0 {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The child's side: reads its share (a JSON line) on stdin, opens it,
/// answers the parent on stdout, and closes everything when stdin closes.
/// Dies with the parent.
pub fn hold_share() -> io::Result<()> {
    let mut spec = String::new();
    io::stdin().read_line(&mut spec)?;
    let share: Share = serde_json::from_str(&spec).map_err(io::Error::other)?;
    die_with_parent(share.parent)?;
    crate::net::raise_nofile_limit()?;
    let stop = Arc::new(AtomicBool::new(false));
    let pings = listen_to_parent(Arc::clone(&stop));
    let range = share.first..share.first + share.count;
    let mut trace = TraceLines::new("bench hold", share.trace);
    let mut held = share
        .plan
        .open(range, share.connect_rate, &stop, &mut trace);
    let ready = Ready {
        connected: held.streams.len(),
        failures: held.failures,
        connect_secs: held.connect_time.as_secs_f64(),
        alive_at_start: held.ping(&mut trace),
        limit: held.limit,
    };
    say(&ready)?;
    if pings.recv().is_ok() {
        say(&End {
            alive_at_end: held.ping(&mut trace),
        })?;
        // Stay until the parent has every report and closes stdin.
        while pings.recv().is_ok() {}
    }
    held.close();
    Ok(())
}

/// Arms the parent-death signal (SIGKILL), then checks the parent did not
/// die before it was armed.
fn die_with_parent(parent: u32) -> io::Result<()> {
    match crate::net::sys::die_with_parent() {
        Err(e) if e.kind() != io::ErrorKind::Unsupported => return Err(e),
        _ => {}
    }
    if std::os::unix::process::parent_id() != parent {
        return Err(io::Error::other("the parent bench process is gone"));
    }
    Ok(())
}

/// Reads the parent's words on a thread: `stop` sets `stop`, `ping` is
/// passed on; the channel closes with stdin (and `stop` is set).
fn listen_to_parent(stop: Arc<AtomicBool>) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            match line.as_deref() {
                Ok("stop") => stop.store(true, Ordering::Relaxed),
                Ok("ping") => {
                    if tx.send(()).is_err() {
                        break;
                    }
                }
                _ => break,
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    rx
}

/// One JSON line to the parent.
fn say(message: &impl Serialize) -> io::Result<()> {
    let line = serde_json::to_string(message).map_err(io::Error::other)?;
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}
