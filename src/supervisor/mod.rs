//! Worker processes under a supervisor (`sockloop serve --workers N`), the
//! way nginx runs its workers: each worker is the same program, started
//! again, serving the same ports through `SO_REUSEPORT`, so a crash costs
//! only that worker's connections and the descriptor cap is per worker.
//!
//! The supervisor serves no traffic. It starts the workers, waits until
//! each reports [`Report::Ready`] on its stdout, and then watches them:
//!
//! - **Signals.** SIGINT or SIGTERM sends SIGTERM to every worker (each
//!   drains gracefully) and the supervisor returns once all have exited; a
//!   second signal sends SIGKILL. Workers run in their own process group,
//!   so a Ctrl-C in a terminal reaches the supervisor alone.
//! - **Crashes.** A worker that exits while the server runs (a signal, a
//!   panic, any exit status) is logged with its status, counted, and
//!   started again after its [`Backoff`]. A worker that fails before it is
//!   ready the first time stops the whole server with
//!   [`Error::WorkerStart`](crate::Error::WorkerStart): no restart loop.
//! - **Orphans.** A worker calls [`become_worker`] first: the kernel kills
//!   it when the supervisor dies, even by SIGKILL.
//! - **Metrics.** With a metrics listener, `GET /metrics` merges every
//!   worker's own endpoint (see [`endpoint`]).

mod backoff;
mod endpoint;
mod merge;
mod report;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::net::sys;
use crate::Error;

pub use backoff::{Backoff, FIRST_DELAY, HEALTHY_AFTER, MAX_DELAY};
pub use endpoint::SCRAPE_TIMEOUT;
pub use merge::merge;
pub use report::{Report, MAX_REPORT};

/// The most workers a supervisor runs.
pub const MAX_WORKERS: usize = 256;

/// How long a worker may take to report ready at the first start.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the supervisor looks at its workers and signals.
const TICK: Duration = Duration::from_millis(20);

/// Makes the calling process a worker of the process `supervisor`: the
/// kernel sends it SIGKILL when the supervisor dies. Call it first thing.
///
/// Fails if the supervisor is already gone (it died between starting this
/// process and the request, so no signal would ever come), or where the
/// platform has no parent-death signal.
pub fn become_worker(supervisor: u32) -> std::io::Result<()> {
    sys::die_with_parent()?;
    // Set after the fork: had the supervisor died before, this process
    // was handed to another parent and the signal will never come.
    if std::os::unix::process::parent_id() != supervisor {
        return Err(std::io::Error::other(
            "the supervisor exited before this worker started",
        ));
    }
    Ok(())
}

/// What the metrics endpoint knows of the workers, kept by the supervisor.
#[derive(Debug, Clone, Default)]
pub(crate) struct Board {
    workers: Vec<WorkerView>,
}

#[derive(Debug, Clone, Default)]
struct WorkerView {
    pid: Option<u32>,
    up: bool,
    metrics: Option<SocketAddr>,
    restarts: u64,
}

/// Runs `workers` copies of the command `command(i)` makes for worker `i`.
pub struct Supervisor {
    workers: usize,
    command: Box<dyn Fn(usize) -> Command>,
    metrics: Option<TcpListener>,
}

impl Supervisor {
    /// A supervisor of `workers` processes (1 to [`MAX_WORKERS`]); the
    /// command for worker `i` is `command(i)`. Its stdout is taken for
    /// the report; stdin is closed; stderr is the supervisor's.
    pub fn new(workers: usize, command: impl Fn(usize) -> Command + 'static) -> Supervisor {
        Supervisor {
            workers,
            command: Box::new(command),
            metrics: None,
        }
    }

    /// Serves the merged `GET /metrics` on `listener` once every worker
    /// is ready. Each worker then reports its own metrics address.
    pub fn metrics(mut self, listener: TcpListener) -> Supervisor {
        self.metrics = Some(listener);
        self
    }

    /// Starts the workers; once all are ready calls `ready` with their
    /// pids (e.g. to print where the server listens), then watches them
    /// until a signal stops them all, and returns.
    ///
    /// Returns an error if a worker fails before it is first ready (the
    /// others are killed), if one is not ready within [`START_TIMEOUT`],
    /// or if the signal handlers cannot be installed. Call it from the
    /// thread that lives as long as the supervisor (the main thread): a
    /// worker's parent-death signal follows the thread that spawned it.
    pub fn run(self, ready: impl FnOnce(&[u32])) -> Result<(), Error> {
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return Err(Error::Config(format!(
                "--workers {} is out of range: 1 to {MAX_WORKERS}",
                self.workers
            )));
        }
        // Installed before any worker starts, so no signal is missed.
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        let (reports, reported) = mpsc::channel();
        let mut run = Run {
            command: self.command,
            workers: Vec::new(),
            reports,
            reported,
            board: Arc::new(Mutex::new(Board::default())),
        };
        for i in 0..self.workers {
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
        let (mut ready, mut metrics) = (Some(ready), self.metrics);
        let start_by = Instant::now() + START_TIMEOUT;
        let (mut phase, mut signalled) = (Phase::Starting, 0);
        loop {
            for _ in signals.pending() {
                signalled += 1;
                run.stop(signalled);
                phase = Phase::Stopping;
            }
            run.take_reports();
            let now = Instant::now();
            let reaped = run.reap(phase, now);
            match phase {
                Phase::Starting => {
                    let late = (run.workers.iter().position(|w| !w.ready))
                        .filter(|_| now >= start_by)
                        .map(|worker| {
                            let reason = format!("not ready within {START_TIMEOUT:?}");
                            Error::WorkerStart { worker, reason }
                        });
                    if let Some(failure) = reaped.err().or(late) {
                        run.kill_all();
                        return Err(failure);
                    }
                    if run.workers.iter().all(|w| w.ready) {
                        if let Some(listener) = metrics.take() {
                            endpoint::spawn(listener, Arc::clone(&run.board))?;
                        }
                        let pids: Vec<u32> = run.workers.iter().filter_map(Worker::pid).collect();
                        if let Some(ready) = ready.take() {
                            ready(&pids);
                        }
                        phase = Phase::Running;
                    }
                }
                Phase::Running => run.restart_due(now),
                Phase::Stopping => {
                    if run.workers.iter().all(|w| w.child.is_none()) {
                        log::info!("every worker has exited");
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Where the server is in its life, for what a worker's exit means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
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
struct Run {
    command: Box<dyn Fn(usize) -> Command>,
    workers: Vec<Worker>,
    reports: Sender<Reported>,
    reported: Receiver<Reported>,
    board: Arc<Mutex<Board>>,
}

impl Run {
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
    fn take_reports(&mut self) {
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
            None => worker.failure = Some("it exited before it was ready".into()),
        }
    }

    /// Collects the workers that exited. Starting, the first is an error;
    /// running, each is scheduled to start again.
    fn reap(&mut self, phase: Phase, now: Instant) -> Result<(), Error> {
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
                let reason = self.report_of(i, pid).unwrap_or_else(|| status.to_string());
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
    fn restart_due(&mut self, now: Instant) {
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
    fn stop(&mut self, signalled: usize) {
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
    fn kill_all(&mut self) {
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
