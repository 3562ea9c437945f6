//! A child process for tests: its stdout and stderr read line by line on
//! threads (so neither pipe fills up and blocks it), every wait bounded,
//! and killed on drop if the test ends early.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader, Read};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// How long any wait on the child lasts before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(20);

pub struct Child {
    process: std::process::Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    /// Every stderr line taken so far, for failure messages.
    stderr_seen: Vec<String>,
}

/// Sends each line `from` yields to the returned receiver.
fn lines(from: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Child {
    /// Starts `command` with stdin closed and stdout and stderr captured.
    pub fn spawn(command: &mut Command) -> Child {
        Child::start(command, Stdio::null())
    }

    /// Starts `command` as [`spawn`](Self::spawn) does, but with a pipe to
    /// its stdin (dropping the pipe ends its input).
    pub fn spawn_with_stdin(command: &mut Command) -> (Child, ChildStdin) {
        let mut child = Child::start(command, Stdio::piped());
        let stdin = child.process.stdin.take().unwrap();
        (child, stdin)
    }

    fn start(command: &mut Command, stdin: Stdio) -> Child {
        let mut process = command
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stdout = lines(process.stdout.take().unwrap());
        let stderr = lines(process.stderr.take().unwrap());
        Child {
            process,
            stdout,
            stderr,
            stderr_seen: Vec::new(),
        }
    }

    /// The next line of its stdout.
    pub fn stdout_line(&mut self) -> String {
        match self.stdout.recv_timeout(TIMEOUT) {
            Ok(line) => line,
            Err(e) => panic!("no stdout line ({e}); stderr: {:?}", self.stderr_seen),
        }
    }

    /// Reads stderr until a line containing `needle`, and returns it.
    pub fn stderr_until(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.stderr_seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => panic!("no {needle:?} on stderr ({e}): {:?}", self.stderr_seen),
            }
        }
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.process.id()
    }

    /// Sends it `signal` (`TERM`, `INT`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &self.process.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// Reads its stdout to the end, then waits as [`wait`](Self::wait):
    /// every line it printed, its status and its stderr.
    pub fn wait_with_stdout(self) -> (Vec<String>, ExitStatus, Vec<String>) {
        let deadline = Instant::now() + TIMEOUT;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(e) => panic!("stdout did not end ({e}): {lines:?}"),
            }
        }
        let (status, stderr) = self.wait();
        (lines, status, stderr)
    }

    /// Waits for it to exit (killing it and failing after `TIMEOUT`), and
    /// returns its status and the rest of its stderr.
    pub fn wait(mut self) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = self.process.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                panic!("it did not exit in time; stderr: {:?}", self.stderr_seen);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // The pipe ends with the process: the reader thread stops.
        let mut rest = std::mem::take(&mut self.stderr_seen);
        rest.extend(self.stderr.iter());
        (status, rest)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.process.try_wait().ok().flatten().is_none() {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }
}
