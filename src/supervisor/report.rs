//! The one line a worker writes to its supervisor (on its stdout) once it
//! has bound its sockets, or failed to.

use std::io::{self, Write};
use std::net::SocketAddr;

/// The longest report line the supervisor reads; the rest is cut off.
pub const MAX_REPORT: usize = 4096;

/// What a worker reports at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// It serves; its own metrics endpoint, if it has one, is at this address.
    Ready(Option<SocketAddr>),
    /// It could not start, for this reason.
    Failed(String),
}

impl Report {
    /// The report as a line: `ready [ADDR]` or `error REASON`.
    ///
    /// ```
    /// use sockloop::supervisor::Report;
    ///
    /// let ready = Report::Ready(Some("127.0.0.1:9000".parse().unwrap()));
    /// assert_eq!(ready.line(), "ready 127.0.0.1:9000\n");
    /// assert_eq!(Report::parse(&ready.line()), Some(ready));
    /// let failed = Report::Failed("no\ncertificate".into());
    /// assert_eq!(Report::parse(&failed.line()), Some(Report::Failed("no certificate".into())));
    /// ```
    pub fn line(&self) -> String {
        match self {
            Report::Ready(None) => "ready\n".into(),
            Report::Ready(Some(addr)) => format!("ready {addr}\n"),
            Report::Failed(reason) => {
                let words: Vec<&str> = reason.split_whitespace().collect();
                format!("error {}\n", words.join(" "))
            }
        }
    }

    /// Reads a report line back; `None` for anything else.
    pub fn parse(line: &str) -> Option<Report> {
        let line = line.trim_end_matches(['\r', '\n']);
        match line.split_once(' ').unwrap_or((line, "")) {
            ("ready", "") => Some(Report::Ready(None)),
            ("ready", addr) => addr.parse().ok().map(|addr| Report::Ready(Some(addr))),
            ("error", reason) => Some(Report::Failed(reason.to_string())),
            _ => None,
        }
    }

    /// Writes the report to stdout, which the supervisor reads.
    pub fn send(&self) -> io::Result<()> {
        let mut stdout = io::stdout().lock();
        stdout.write_all(self.line().as_bytes())?;
        stdout.flush()
    }
}
