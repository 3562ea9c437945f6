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
//!   [`Error::WorkerStart`]: no restart loop.
//! - **Orphans.** A worker calls [`become_worker`] first: the kernel kills
//!   it when the supervisor dies, even by SIGKILL.
//! - **Metrics.** With a metrics listener, `GET /metrics` merges every
//!   worker's own endpoint, each within [`SCRAPE_TIMEOUT`].

mod backoff;
mod endpoint;
mod merge;
mod report;
mod watch;

use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::net::sys;
use crate::Error;
use watch::{Phase, Run};

pub use backoff::{Backoff, FIRST_DELAY, HEALTHY_AFTER, MAX_DELAY};
pub use endpoint::SCRAPE_TIMEOUT;
pub use merge::merge;
pub use report::{Report, MAX_REPORT};

/// The most workers a supervisor runs.
pub const MAX_WORKERS: usize = 256;

/// How long a worker may take to report ready at the first start.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the supervisor looks at its workers and signals.
pub(crate) const TICK: Duration = Duration::from_millis(20);

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
        let mut run = Run::start(self.command, self.workers)?;
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
                    let late = (run.first_not_ready())
                        .filter(|_| now >= start_by)
                        .map(|worker| {
                            let reason = format!("not ready within {START_TIMEOUT:?}");
                            Error::WorkerStart { worker, reason }
                        });
                    if let Some(failure) = reaped.err().or(late) {
                        run.kill_all();
                        return Err(failure);
                    }
                    if run.first_not_ready().is_none() {
                        if let Some(listener) = metrics.take() {
                            endpoint::spawn(listener, run.board())?;
                        }
                        if let Some(ready) = ready.take() {
                            ready(&run.pids());
                        }
                        phase = Phase::Running;
                    }
                }
                Phase::Running => run.restart_due(now),
                Phase::Stopping => {
                    if run.all_exited() {
                        log::info!("every worker has exited");
                        return Ok(());
                    }
                }
            }
        }
    }
}
