//! The `sockloop` binary as a child process: start it, read its lines,
//! stop it, and check how it ended.

use std::io::{BufRead, BufReader};
use std::ops::{Deref, DerefMut};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_sockloop");
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A child process, killed if the test ends (or panics) before it exits;
/// otherwise it derefs to the `Child`.
pub struct Spawned(Option<Child>);

impl Spawned {
    /// `sockloop ARGS` with `stdin`, its stdout and stderr captured.
    pub fn sockloop(args: &[&str], stdin: Stdio) -> Spawned {
        let child = Command::new(BIN)
            .args(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Spawned(Some(child))
    }

    /// Waits for the exit, killing the child and failing after `TIMEOUT`.
    pub fn finish(mut self) -> Output {
        let deadline = Instant::now() + TIMEOUT;
        while self.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "sockloop did not exit in time");
            std::thread::sleep(Duration::from_millis(10));
        }
        self.0.take().unwrap().wait_with_output().unwrap()
    }

    /// SIGTERM (a graceful shutdown), then the exit.
    pub fn terminate(self) -> Output {
        let kill = Command::new("kill")
            .args(["-TERM", &self.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        self.finish()
    }
}

impl From<Child> for Spawned {
    fn from(child: Child) -> Spawned {
        Spawned(Some(child))
    }
}

impl Deref for Spawned {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("still running")
    }
}

impl DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("still running")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for `child` to exit, killing it after `TIMEOUT`.
pub fn finish(child: impl Into<Spawned>) -> Output {
    child.into().finish()
}

/// Sends SIGTERM (a graceful shutdown) and waits for the exit.
pub fn terminate(child: impl Into<Spawned>) -> Output {
    child.into().terminate()
}

/// Starts `sockloop serve ARGS` with its output captured.
pub fn spawn_serve(args: &[&str]) -> Spawned {
    Spawned::sockloop(&[&["serve"], args].concat(), Stdio::null())
}

/// Runs `sockloop serve ARGS` to its exit (for flags it refuses).
pub fn serve(args: &[&str]) -> Output {
    finish(spawn_serve(args))
}

/// Exit 2 with `expected` in the one-line error, and no panic.
pub fn assert_usage_error(output: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains(expected),
        "stderr lacks {expected:?}: {stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "a panic instead of an error: {stderr}"
    );
}

/// Reads one line of a child's output.
pub fn next_line(out: &mut impl BufRead) -> String {
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    line.trim_end_matches('\n').to_owned()
}

/// A running `sockloop serve` and the addresses it printed; killed on drop.
pub struct Served {
    pub child: Spawned,
    /// `(proto, addr, service)` per `listening` line, in order.
    pub listening: Vec<(String, String, String)>,
}

impl Served {
    /// Starts `serve ARGS` and reads its `listening` lines: `listeners`
    /// of them.
    pub fn start(args: &[&str], listeners: usize) -> Served {
        let mut child = spawn_serve(args);
        let mut stdout: BufReader<ChildStdout> = BufReader::new(child.stdout.take().unwrap());
        let listening = (0..listeners)
            .map(|_| {
                let line = next_line(&mut stdout);
                let fields: Vec<&str> = line.split_whitespace().collect();
                assert_eq!((fields.len(), fields[0]), (4, "listening"), "{line}");
                (fields[1].into(), fields[2].into(), fields[3].into())
            })
            .collect();
        Served { child, listening }
    }

    /// The address of the `n`th listening line.
    pub fn addr(&self, n: usize) -> &str {
        &self.listening[n].1
    }

    /// SIGTERM, and how it ended.
    pub fn stop(self) -> Output {
        self.child.terminate()
    }
}
