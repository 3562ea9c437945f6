//! The supervisor's watch over its workers: starting them, reading their
//! reports, collecting their exits, restarting, signalling.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use signal_hook::consts::SIGTERM;

use super::{Backoff, Board, Report, WorkerView, MAX_REPORT, TICK};
use crate::net::sys;
use crate::Error;

/// Where the server is in its life, for what a worker's exit means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Not every worker has been ready yet: an exit stops the server.
    Starting,
    /// An exit is a crash: the worker is started again.
    Running,
    /// A signal came: exits are expected.
    Stopping,
}

/// One worker process and what the supervisor knows of it.
struct Worker {
    child: Option<Child>,
    started: Instant,
    ready: bool,
    /// What it reported if it could not start.
    failure: Option<String>,
    backoff: Backoff,
    restart_at: Option<Instant>,
    restarts: u64,
    metrics: Option<SocketAddr>,
}

impl Worker {
    fn new(child: Child) -> Worker {
        Worker {
            child: Some(child),
            started: Instant::now(),
            ready: false,
            failure: None,
            backoff: Backoff::default(),
            restart_at: None,
            restarts: 0,
            metrics: None,
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// A worker's report, or `None` for a stdout that closed (or said
/// something else) first; with the worker and pid it came from.
type Reported = (usize, u32, Option<Report>);

/// The supervisor at work.
pub(super) struct Run {
    command: Box<dyn Fn(usize) -> Command>,
    workers: Vec<Worker>,
    reports: Sender<Reported>,
    reported: Receiver<Reported>,
    board: Arc<Mutex<Board>>,
}

impl Run {
    /// Starts `workers` workers made by `command`; if one cannot be run,
    /// kills those started.
    pub(super) fn start(
        command: Box<dyn Fn(usize) -> Command>,
        workers: usize,
    ) -> Result<Run, Error> {
        let (reports, reported) = mpsc::channel();
        let mut run = Run {
            command,
            workers: Vec::with_capacity(workers),
            reports,
            reported,
            board: Arc::new(Mutex::new(Board::default())),
        };
        for i in 0..workers {
            match run.spawn(i) {
                Ok(child) => run.workers.push(Worker::new(child)),
                Err(e) => {
                    run.kill_all();
                    let reason = format!("cannot run the worker process: {e}");
                    return Err(Error::WorkerStart { worker: i, reason });
                }
            }
        }
        run.publish();
        Ok(run)
    }

    /// The first worker that has not reported ready.
    pub(super) fn first_not_ready(&self) -> Option<usize> {
        self.workers.iter().position(|w| !w.ready)
    }

    /// Whether every worker has exited (and been collected).
    pub(super) fn all_exited(&self) -> bool {
        self.workers.iter().all(|w| w.child.is_none())
    }

    /// The running workers' pids, in worker order.
    pub(super) fn pids(&self) -> Vec<u32> {
        self.workers.iter().filter_map(Worker::pid).collect()
    }

    /// What the metrics endpoint reads.
    pub(super) fn board(&self) -> Arc<Mutex<Board>> {
        Arc::clone(&self.board)
    }

    /// Starts worker `i`, with a thread that reads its report.
    fn spawn(&self, i: usize) -> std::io::Result<Child> {
        let mut command = (self.command)(i);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // A terminal's Ctrl-C reaches the supervisor only; it forwards.
            .process_group(0);
        let mut child = command.spawn()?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped");
        let reports = self.reports.clone();
        let reader = std::thread::Builder::new()
            .name(format!("sockloop-worker-{i}"))
            .spawn(move || {
                let mut stdout = BufReader::new(stdout);
                let mut line = String::new();
                let read = (&mut stdout).take(MAX_REPORT as u64).read_line(&mut line);
                let report = read.ok().and_then(|_| Report::parse(&line));
                let _ = reports.send((i, pid, report));
                // Whatever else it writes goes nowhere, until it exits.
                let _ = std::io::copy(&mut stdout, &mut std::io::sink());
            });
        if let Err(e) = reader {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        log::info!("worker {i} started, pid {pid}");
        Ok(child)
    }

    /// Records the reports that came, waiting up to a tick for the first.
    pub(super) fn take_reports(&mut self) {
        let mut next = self.reported.recv_timeout(TICK).ok();
        while let Some((i, pid, report)) = next {
            self.record(i, pid, report);
            next = self.reported.try_recv().ok();
        }
    }

    fn record(&mut self, i: usize, pid: u32, report: Option<Report>) {
        let worker = &mut self.workers[i];
        if worker.pid() != Some(pid) {
            return; // from a process already replaced
        }
        match report {
            Some(Report::Ready(metrics)) => {
                worker.ready = true;
                worker.metrics = metrics;
                log::debug!("worker {i} (pid {pid}) ready");
                self.publish();
            }
            Some(Report::Failed(reason)) => {
                if worker.restarts > 0 {
                    log::error!("worker {i} (pid {pid}) could not start again: {reason}");
                }
                worker.failure = Some(reason);
            }
            // Its status tells more: see `reap`.
            None => {}
        }
    }

    /// Collects the workers that exited. Starting, the first is an error;
    /// running, each is scheduled to start again.
    pub(super) fn reap(&mut self, phase: Phase, now: Instant) -> Result<(), Error> {
        for i in 0..self.workers.len() {
            let Some(child) = self.workers[i].child.as_mut() else {
                continue;
            };
            let pid = child.id();
            let status = match child.try_wait() {
                Ok(Some(status)) => status,
                Ok(None) => continue,
                Err(e) => {
                    log::warn!("worker {i} (pid {pid}): cannot wait for it: {e}");
                    continue;
                }
            };
            if phase == Phase::Starting {
                // Its report may still be on its way from the reader.
                let reason = (self.report_of(i, pid))
                    .unwrap_or_else(|| format!("it exited before it was ready ({status})"));
                self.workers[i].child = None;
                return Err(Error::WorkerStart { worker: i, reason });
            }
            let worker = &mut self.workers[i];
            worker.child = None;
            worker.ready = false;
            worker.failure = None;
            worker.metrics = None;
            if phase == Phase::Stopping {
                log::info!("worker {i} (pid {pid}) exited ({status})");
                continue;
            }
            let up = now.saturating_duration_since(worker.started);
            let delay = worker.backoff.after_crash(up);
            worker.restart_at = Some(now + delay);
            log::warn!(
                "worker {i} (pid {pid}) died after {:.1}s ({}); starting it again in {delay:?}",
                up.as_secs_f64(),
                status
            );
            self.publish();
        }
        Ok(())
    }

    /// What worker `i` (pid `pid`) reported before it exited; waits a
    /// moment for its reader, which sends exactly once per process.
    fn report_of(&mut self, i: usize, pid: u32) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.workers[i].failure.is_none() {
            let left = deadline.checked_duration_since(Instant::now())?;
            let (j, from, report) = self.reported.recv_timeout(left).ok()?;
            self.record(j, from, report);
            if (j, from) == (i, pid) {
                break;
            }
        }
        self.workers[i].failure.take()
    }

    /// Starts again the workers whose backoff is over.
    pub(super) fn restart_due(&mut self, now: Instant) {
        for i in 0..self.workers.len() {
            if self.workers[i].restart_at.is_none_or(|at| at > now) {
                continue;
            }
            let worker = &mut self.workers[i];
            worker.restart_at = None;
            worker.restarts += 1;
            match self.spawn(i) {
                Ok(child) => {
                    let worker = &mut self.workers[i];
                    worker.child = Some(child);
                    worker.started = now;
                }
                Err(e) => {
                    let worker = &mut self.workers[i];
                    let delay = worker.backoff.after_crash(Duration::ZERO);
                    worker.restart_at = Some(now + delay);
                    log::error!("worker {i}: cannot start it again: {e}; next try in {delay:?}");
                }
            }
            self.publish();
        }
    }

    /// The first signal drains every worker (SIGTERM), a second kills them.
    pub(super) fn stop(&mut self, signalled: usize) {
        let (signal, name) = match signalled {
            1 => {
                log::info!("shutting down: every worker drains (signal again to stop now)");
                (SIGTERM, "SIGTERM")
            }
            _ => {
                log::info!("stopping now");
                (libc::SIGKILL, "SIGKILL")
            }
        };
        for worker in &mut self.workers {
            worker.restart_at = None;
            if let Some(pid) = worker.pid() {
                // Not reaped yet, so the pid is still this child's.
                if let Err(e) = sys::send_signal(pid, signal) {
                    log::warn!("cannot send {name} to worker pid {pid}: {e}");
                }
            }
        }
    }

    /// SIGKILL to every worker, and wait for each.
    pub(super) fn kill_all(&mut self) {
        for worker in &mut self.workers {
            if let Some(mut child) = worker.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Copies what the metrics endpoint shows.
    fn publish(&self) {
        let views = self.workers.iter().map(|w| WorkerView {
            pid: w.pid(),
            up: w.ready && w.child.is_some(),
            metrics: w.metrics,
            restarts: w.restarts,
        });
        let mut board = self.board.lock().unwrap_or_else(|e| e.into_inner());
        board.workers = views.collect();
    }
}
